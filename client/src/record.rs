//! Records as a consumer sees them, cut out of fetched batches without
//! copying: keys, values and header values are slices of the batch bytes.

use bytes::Bytes;
use protocol::batch::{BatchError, validate_batch};
use protocol::types::{Offset, Timestamp};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub partition: u32,
    pub offset: Offset,
    pub timestamp: Timestamp,
    pub key: Option<Bytes>,
    /// `None` is a tombstone.
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Bytes)>,
}

/// The records of one stored batch at or after `from`, CRC- and bytechecked
/// (none of a control batch).
/// Each record keeps its producer's timestamp, unless the topic stamps
/// log-append time (then every record has the batch's append time).
pub fn decode_batch(partition: u32, batch: &Bytes, from: Offset) -> Result<Vec<ConsumerRecord>, BatchError> {
    let view = validate_batch(batch)?;
    let header = view.header;
    // A control batch (a replicated partition's leader change) is the
    // broker's own: it takes an offset, which the consumer steps over.
    if header.last_offset() < from || header.is_control() {
        return Ok(Vec::new());
    }
    let records = view.records()?;
    let mut out = Vec::with_capacity(records.len());
    for r in records.iter() {
        let offset = Offset(header.base_offset.0 + u64::from(r.offset_delta.to_native()));
        if offset < from {
            continue;
        }
        out.push(ConsumerRecord {
            partition,
            offset,
            timestamp: header.record_timestamp(r.timestamp_delta.to_native()),
            key: r.key.as_ref().map(|k| batch.slice_ref(k.as_slice())),
            value: r.value.as_ref().map(|v| batch.slice_ref(v.as_slice())),
            headers: r
                .headers
                .iter()
                .map(|h| (h.key.as_str().to_owned(), batch.slice_ref(h.value.as_slice())))
                .collect(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::batch::{BatchBuilder, RecordInput, patch_base_offset};

    #[test]
    fn records_before_the_requested_offset_are_skipped_and_slices_are_zero_copy() {
        let mut b = BatchBuilder::new();
        for i in 0..5u8 {
            let value = [i, i];
            let value = if i == 3 { None } else { Some(&value[..]) };
            b.push(RecordInput::new(Some(&[i]), value, Timestamp(100 + i64::from(i))));
        }
        let mut bytes = b.build().unwrap();
        patch_base_offset(&mut bytes, Offset(10));
        let batch = Bytes::from(bytes);
        let records = decode_batch(2, &batch, Offset(12)).unwrap();
        assert_eq!(records.iter().map(|r| r.offset.0).collect::<Vec<_>>(), vec![12, 13, 14]);
        assert_eq!(records[0].timestamp, Timestamp(102));
        assert_eq!(records[1].value, None, "a tombstone stays a tombstone");
        let v = records[0].value.as_ref().unwrap();
        assert!(batch.as_ptr() <= v.as_ptr() && v.as_ptr() < batch.as_ptr().wrapping_add(batch.len()));
        assert!(decode_batch(2, &batch, Offset(15)).unwrap().is_empty());
    }
}
