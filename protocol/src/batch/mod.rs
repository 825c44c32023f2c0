//! The record batch: the unit the broker stores, replicates and serves.
//!
//! A batch is built once, by the producer, and from then on only the
//! envelope (base offset, leader epoch, append time, broker flags) is ever
//! stamped, with a CRC over those 36 bytes; the body and its CRC travel
//! network → disk → consumer unchanged, and a consumer reads the records in
//! place through rkyv. The layouts are in `docs/format.md`.

mod builder;
mod encoder;
mod error;
mod header;
mod record;
mod view;

pub use builder::{BatchBuilder, RecordInput};
pub use encoder::{BatchEncoder, HeaderRef, RecordRef};
pub use error::BatchError;
pub use header::{
    Attributes, BATCH_HEADER_BYTES, BATCH_HEADER_BYTES_MIN, BATCH_HEADER_BYTES_V1, BATCH_MAGIC, BATCH_VERSION,
    BATCH_VERSION_V1, BROKER_FLAG_CONTROL, BatchHeader, BrokerFlags, NOT_APPENDED, PayloadFormat, Stamp,
    header_bytes_of, patch_base_offset, stamp, stamp_control,
};
pub use record::{ArchivedRecord, ArchivedRecordHeader, Record, RecordHeader};
pub use view::{BatchView, RecordStats, validate_batch, validate_records};

#[cfg(test)]
mod tests;
