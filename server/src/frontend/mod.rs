//! Wire protocols in front of the service layer. Each front end decodes its
//! requests into [`crate::service`] calls and encodes their typed results
//! and errors in its own format; the native protocol is the one today, and
//! a Kafka front end will sit beside it over the same calls.

pub mod native;
