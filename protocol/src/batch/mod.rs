//! The record batch: the unit the broker stores, replicates and serves.
//!
//! A batch is built once, by the producer, and from then on only two header
//! fields outside the CRC (base offset and leader epoch) are ever patched; the
//! bytes travel network → disk → consumer unchanged, and a consumer reads the
//! records in place through rkyv. The layout is in `docs/format.md`.

mod builder;
mod error;
mod header;
mod record;
mod view;

pub use builder::{BatchBuilder, RecordInput};
pub use error::BatchError;
pub use header::{
    Attributes, BATCH_HEADER_BYTES, BATCH_MAGIC, BATCH_VERSION, BatchHeader, CRC_START, patch_base_offset,
    patch_leader_epoch,
};
pub use record::{ArchivedRecord, ArchivedRecordHeader, Record, RecordHeader};
pub use view::{BatchView, validate_batch, validate_records};

#[cfg(test)]
mod tests;
