//! Checking a batch and reading its records in place.

use rkyv::vec::ArchivedVec;

use super::BatchError;
use super::header::{BATCH_HEADER_BYTES, BatchHeader, CRC_START, stored_crc};
use super::record::ArchivedRecord;

/// A batch whose header and CRC have been checked.
#[derive(Debug, Clone, Copy)]
pub struct BatchView<'a> {
    pub header: BatchHeader,
    pub bytes: &'a [u8],
}

/// Checks the header and the CRC of the batch at the front of `bytes` and
/// returns a view of exactly that batch. Cheap: no record is decoded.
pub fn validate_batch(bytes: &[u8]) -> Result<BatchView<'_>, BatchError> {
    let header = BatchHeader::decode(bytes)?;
    let length = header.batch_length as usize;
    if bytes.len() < length {
        return Err(BatchError::Truncated { needed: length, available: bytes.len() });
    }
    let bytes = &bytes[..length];
    let computed = crc32c::crc32c(&bytes[CRC_START..]);
    let stored = stored_crc(bytes);
    if computed != stored {
        return Err(BatchError::CrcMismatch { stored, computed });
    }
    Ok(BatchView { header, bytes })
}

/// Checks the records archive of a CRC-checked batch (rkyv bytecheck) and
/// that it agrees with the header. `PartitionLog::append` runs this on every
/// batch it stores; readers of the log rely on the CRC and [`BatchView::records`].
pub fn validate_records(view: &BatchView<'_>) -> Result<(), BatchError> {
    let records = view.records()?;
    if records.len() != view.header.record_count as usize {
        return Err(BatchError::RecordsMismatch { reason: "record count differs from the header" });
    }
    let mut previous: Option<u32> = None;
    let mut max_delta = i64::MIN;
    for record in records.iter() {
        let delta = record.offset_delta.to_native();
        if previous.is_some_and(|p| delta <= p) {
            return Err(BatchError::RecordsMismatch { reason: "offset deltas are not increasing" });
        }
        previous = Some(delta);
        max_delta = max_delta.max(record.timestamp_delta.to_native());
    }
    if previous != Some(view.header.last_offset_delta) {
        return Err(BatchError::RecordsMismatch { reason: "last offset delta differs from the header" });
    }
    let span = view.header.max_timestamp.0.checked_sub(view.header.first_timestamp.0);
    if span != Some(max_delta) {
        return Err(BatchError::RecordsMismatch { reason: "max timestamp differs from the records" });
    }
    Ok(())
}

impl<'a> BatchView<'a> {
    /// The records, read in place (rkyv bytecheck, no copy, no decode).
    pub fn records(&self) -> Result<&'a ArchivedVec<ArchivedRecord>, BatchError> {
        rkyv::access::<ArchivedVec<ArchivedRecord>, rkyv::rancor::Error>(&self.bytes[BATCH_HEADER_BYTES..])
            .map_err(|e| BatchError::InvalidRecords { reason: e.to_string() })
    }
}
