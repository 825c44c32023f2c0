//! What the broker and its clients agree on, and nothing that needs a
//! runtime: the record batch format (the bytes of the log and of the wire
//! alike), the request and response frames of the native protocol
//! (`docs/protocol.md`), the stable error codes and the key partitioner. The
//! engine, the broker and the tokio client all build on this crate, so it
//! must never pull in glommio or tokio.

pub mod api;
pub mod batch;
pub mod codec;
pub mod error_code;
pub mod frame;
pub mod names;
pub mod partitioner;
pub mod replica;
pub mod types;

pub use error_code::ErrorCode;
