//! Checking a batch and reading its records in place.

use rkyv::vec::ArchivedVec;

use super::BatchError;
use super::header::{BatchHeader, stored_crc};
use super::record::ArchivedRecord;
use crate::types::Timestamp;

/// A batch whose header and CRCs have been checked.
#[derive(Debug, Clone, Copy)]
pub struct BatchView<'a> {
    pub header: BatchHeader,
    pub bytes: &'a [u8],
}

/// What [`validate_records`] learned while it walked the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordStats {
    /// The smallest record timestamp (a record may be older than the
    /// batch's first: timestamp deltas can be negative).
    pub min_timestamp: Timestamp,
    /// Offset deltas are exactly `0..record_count`: no record was removed,
    /// as in every batch a producer builds (compaction leaves gaps).
    pub dense: bool,
}

/// Checks the header (and, in version 2, its CRC) and the body CRC of the
/// batch at the front of `bytes`, and returns a view of exactly that batch.
/// Cheap: no record is decoded.
pub fn validate_batch(bytes: &[u8]) -> Result<BatchView<'_>, BatchError> {
    let header = BatchHeader::decode(bytes)?;
    let length = header.batch_length as usize;
    if bytes.len() < length {
        return Err(BatchError::Truncated { needed: length, available: bytes.len() });
    }
    let bytes = &bytes[..length];
    let computed = crc32c::crc32c(&bytes[header.crc_start()..]);
    let stored = stored_crc(bytes, header.version);
    if computed != stored {
        return Err(BatchError::CrcMismatch { stored, computed });
    }
    Ok(BatchView { header, bytes })
}

/// Checks the records archive of a CRC-checked batch (rkyv bytecheck) and
/// that it agrees with the header. `PartitionLog::append` runs this on every
/// batch it stores; readers of the log rely on the CRC and [`BatchView::records`].
pub fn validate_records(view: &BatchView<'_>) -> Result<RecordStats, BatchError> {
    let records = view.records()?;
    if records.len() != view.header.record_count as usize {
        return Err(BatchError::RecordsMismatch { reason: "record count differs from the header" });
    }
    let mut previous: Option<u32> = None;
    let mut max_delta = i64::MIN;
    let mut min_delta = i64::MAX;
    for record in records.iter() {
        let delta = record.offset_delta.to_native();
        if previous.is_some_and(|p| delta <= p) {
            return Err(BatchError::RecordsMismatch { reason: "offset deltas are not increasing" });
        }
        previous = Some(delta);
        let t = record.timestamp_delta.to_native();
        max_delta = max_delta.max(t);
        min_delta = min_delta.min(t);
    }
    // The last record sits at `last_offset_delta`, or below it in a batch
    // compaction rewrote: the batch keeps the offsets it covered (as in
    // Kafka), so a segment still ends where it ended.
    if previous.is_some_and(|p| p > view.header.last_offset_delta) {
        return Err(BatchError::RecordsMismatch { reason: "a record lies past the header's last offset delta" });
    }
    // An emptied batch keeps its timestamps (the time index still finds it).
    let span = view.header.max_timestamp.0.checked_sub(view.header.first_timestamp.0);
    if previous.is_some() && span != Some(max_delta) {
        return Err(BatchError::RecordsMismatch { reason: "max timestamp differs from the records" });
    }
    if previous.is_none() {
        return Ok(RecordStats { min_timestamp: view.header.first_timestamp, dense: false });
    }
    Ok(RecordStats {
        min_timestamp: Timestamp(view.header.first_timestamp.0.saturating_add(min_delta)),
        // Increasing deltas at most last_offset_delta with count = last + 1
        // can only be 0, 1, …, last.
        dense: u64::from(view.header.record_count) == u64::from(view.header.last_offset_delta) + 1,
    })
}

impl<'a> BatchView<'a> {
    /// The records, read in place (rkyv bytecheck, no copy, no decode).
    pub fn records(&self) -> Result<&'a ArchivedVec<ArchivedRecord>, BatchError> {
        rkyv::access::<ArchivedVec<ArchivedRecord>, rkyv::rancor::Error>(&self.bytes[self.header.header_bytes()..])
            .map_err(|e| BatchError::InvalidRecords { reason: e.to_string() })
    }
}
