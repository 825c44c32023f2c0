//! Encodes records into a batch as they arrive, so a producer copies each
//! key and value once, from the caller's memory into the bytes that go on
//! the wire, and never holds an owned record.
//!
//! The bytes are exactly what rkyv writes for the `Vec<Record>` (checked
//! against rkyv by a property test and the golden files), laid out the way
//! rkyv lays out a vector of structs: every record's out-of-line data
//! first (key bytes, value bytes, header strings and values, the header
//! array), in record order, then the array of 38-byte archived records,
//! then the 8-byte root vector. The array is written by [`finish`], when the
//! data's end is known; until then a record is a 48-byte [`Entry`].
//!
//! [`finish`]: BatchEncoder::finish

use core::mem::{offset_of, size_of};

use super::header::{
    BATCH_HEADER_BYTES, BATCH_HEADER_BYTES_V1, BATCH_VERSION, BATCH_VERSION_V1, BatchHeader, BrokerFlags, NOT_APPENDED,
    PayloadFormat, seal,
};
use super::record::{ArchivedRecord, ArchivedRecordHeader};
use super::{Attributes, BatchError};
use crate::types::{LeaderEpoch, Offset, ProducerEpoch, ProducerId, Sequence, Timestamp};

/// A record borrowed from the caller: what a producer hands over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub key: Option<&'a [u8]>,
    /// `None` is a tombstone.
    pub value: Option<&'a [u8]>,
    pub headers: &'a [HeaderRef<'a>],
    pub timestamp: Timestamp,
}

/// An application header, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRef<'a> {
    pub key: &'a str,
    pub value: &'a [u8],
}

/// Bytes of one archived record in the records array.
pub const ARCHIVED_RECORD_BYTES: usize = size_of::<ArchivedRecord>();
/// Bytes of the archive's root (a relative pointer and a length).
const ROOT_BYTES: usize = 8;
/// Bytes of an archived header in a record's header array.
const ARCHIVED_HEADER_BYTES: usize = size_of::<ArchivedRecordHeader>();
/// rkyv stores strings up to this long inside the 8-byte string itself.
const STRING_INLINE_BYTES: usize = 8;
/// The longest string rkyv stores out of line (30-bit length).
const STRING_BYTES_MAX: usize = (1 << 30) - 1;
/// 32-bit relative pointers: every position in the archive must be
/// reachable from every other.
const ARCHIVE_BYTES_MAX: usize = i32::MAX as usize;

const OFFSET_DELTA_AT: usize = offset_of!(ArchivedRecord, offset_delta);
const TIMESTAMP_DELTA_AT: usize = offset_of!(ArchivedRecord, timestamp_delta);
const KEY_AT: usize = offset_of!(ArchivedRecord, key);
const VALUE_AT: usize = offset_of!(ArchivedRecord, value);
const HEADERS_AT: usize = offset_of!(ArchivedRecord, headers);
const HEADER_KEY_AT: usize = offset_of!(ArchivedRecordHeader, key);
const HEADER_VALUE_AT: usize = offset_of!(ArchivedRecordHeader, value);
/// `ArchivedOption` is a `u8` tag (0 `None`, 1 `Some`) and the value behind it.
const OPTION_SOME: u8 = 1;
const OPTION_VALUE_AT: usize = 1;

/// A slice already in the buffer: where it starts and how long it is.
#[derive(Debug, Clone, Copy)]
struct Span {
    at: u32,
    len: u32,
}

/// A record whose data is in the buffer and whose archived form waits for
/// [`BatchEncoder::finish`].
#[derive(Debug, Clone, Copy)]
struct Entry {
    timestamp_delta: i64,
    offset_delta: u32,
    key: Option<Span>,
    value: Option<Span>,
    headers: Span,
}

/// Encodes one batch. Reusable: [`finish`](BatchEncoder::finish) hands the
/// bytes over and leaves the encoder empty, its record list allocated.
#[derive(Debug)]
pub struct BatchEncoder {
    version: u16,
    /// Header space, then the records' out-of-line data.
    buf: Vec<u8>,
    entries: Vec<Entry>,
    first_timestamp: Timestamp,
    max_timestamp: Timestamp,
    producer: Option<(ProducerId, ProducerEpoch, Sequence)>,
    capacity_bytes: usize,
}

impl Default for BatchEncoder {
    fn default() -> Self {
        BatchEncoder::new(0)
    }
}

impl BatchEncoder {
    /// An encoder of version 2 batches whose buffer starts with room for
    /// `capacity_bytes` (it grows past that as needed).
    #[must_use]
    pub fn new(capacity_bytes: usize) -> BatchEncoder {
        BatchEncoder::with_version(BATCH_VERSION, capacity_bytes)
    }

    /// An encoder of `version` batches (2, or 1 for tests of old producers).
    #[must_use]
    pub fn with_version(version: u16, capacity_bytes: usize) -> BatchEncoder {
        assert!(version == BATCH_VERSION || version == BATCH_VERSION_V1, "a version this build writes");
        let mut encoder = BatchEncoder {
            version,
            buf: Vec::new(),
            entries: Vec::new(),
            first_timestamp: Timestamp(0),
            max_timestamp: Timestamp(0),
            producer: None,
            capacity_bytes,
        };
        encoder.reset();
        encoder
    }

    fn header_bytes(&self) -> usize {
        if self.version == BATCH_VERSION_V1 { BATCH_HEADER_BYTES_V1 } else { BATCH_HEADER_BYTES }
    }

    /// Empty again; the next batch's buffer is allocated by its first
    /// record, so a finished encoder that is dropped costs nothing.
    fn reset(&mut self) {
        self.buf = Vec::new();
        self.entries.clear();
    }

    fn start(&mut self) {
        if self.buf.is_empty() {
            let header = self.header_bytes();
            self.buf.reserve(self.capacity_bytes.max(header));
            self.buf.resize(header, 0);
        }
    }

    /// Marks the batch as coming from an idempotent producer.
    pub fn set_producer(&mut self, id: ProducerId, epoch: ProducerEpoch, base_sequence: Sequence) {
        self.producer = Some((id, epoch, base_sequence));
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The batch's length if it were finished now, header included.
    #[must_use]
    pub fn encoded_bytes(&self) -> usize {
        self.buf.len().max(self.header_bytes()) + self.entries.len() * ARCHIVED_RECORD_BYTES + ROOT_BYTES
    }

    /// What `record` adds to [`encoded_bytes`](Self::encoded_bytes).
    #[must_use]
    pub fn record_bytes(record: &RecordRef<'_>) -> usize {
        let headers: usize = record
            .headers
            .iter()
            .map(|h| {
                ARCHIVED_HEADER_BYTES + h.value.len() + if h.key.len() > STRING_INLINE_BYTES { h.key.len() } else { 0 }
            })
            .sum();
        ARCHIVED_RECORD_BYTES + record.key.map_or(0, <[u8]>::len) + record.value.map_or(0, <[u8]>::len) + headers
    }

    /// Adds a record at the next offset.
    pub fn push(&mut self, record: &RecordRef<'_>) -> Result<(), BatchError> {
        self.push_sized(record, Self::record_bytes(record))
    }

    /// [`push`](Self::push) for a caller that has measured the record
    /// already (`record_bytes`): a producer accounts its buffer with it.
    pub fn push_sized(&mut self, record: &RecordRef<'_>, record_bytes: usize) -> Result<(), BatchError> {
        let delta = match self.entries.last() {
            None => 0,
            Some(e) => e.offset_delta.checked_add(1).ok_or(BatchError::BadOffsets)?,
        };
        self.push_at_sized(delta, record, record_bytes)
    }

    /// Adds a record at `offset_delta`, above the last one's: a compacted
    /// batch keeps its records' offsets, with gaps where records were removed.
    /// A record that would take the batch past what 32-bit relative pointers
    /// reach, or a header key longer than 2^30 bytes, is refused and the
    /// batch is left as it was.
    pub fn push_at(&mut self, offset_delta: u32, record: &RecordRef<'_>) -> Result<(), BatchError> {
        self.push_at_sized(offset_delta, record, Self::record_bytes(record))
    }

    fn push_at_sized(
        &mut self,
        offset_delta: u32,
        record: &RecordRef<'_>,
        record_bytes: usize,
    ) -> Result<(), BatchError> {
        debug_assert_eq!(record_bytes, Self::record_bytes(record), "the size given is the record's");
        assert!(
            self.entries.last().is_none_or(|e| offset_delta > e.offset_delta),
            "offset deltas increase within a batch"
        );
        let too_large = || BatchError::TooLarge { batch_length: u32::MAX, batch_bytes_max: ARCHIVE_BYTES_MAX as u32 };
        // `encoded_bytes` counts the root already.
        if self.encoded_bytes() + record_bytes > ARCHIVE_BYTES_MAX {
            return Err(too_large());
        }
        if record.headers.iter().any(|h| h.key.len() > STRING_BYTES_MAX) {
            return Err(BatchError::InvalidRecords { reason: "a header key is longer than 2^30 - 1 bytes".into() });
        }
        self.start();
        if self.entries.is_empty() {
            self.first_timestamp = record.timestamp;
            self.max_timestamp = record.timestamp;
        } else {
            self.max_timestamp = self.max_timestamp.max(record.timestamp);
        }
        let key = record.key.map(|k| self.append(k));
        let value = record.value.map(|v| self.append(v));
        let headers = self.append_headers(record.headers);
        self.entries.push(Entry {
            timestamp_delta: record.timestamp.0.wrapping_sub(self.first_timestamp.0),
            offset_delta,
            key,
            value,
            headers,
        });
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> Span {
        let at = self.buf.len();
        self.buf.extend_from_slice(bytes);
        Span { at: at as u32, len: bytes.len() as u32 }
    }

    /// Each header's out-of-line key (if longer than the inline 8 bytes) and
    /// value, then the header array; an empty list points at where it would be.
    fn append_headers(&mut self, headers: &[HeaderRef<'_>]) -> Span {
        if headers.is_empty() {
            return Span { at: self.buf.len() as u32, len: 0 };
        }
        let start = self.buf.len();
        for h in headers {
            if h.key.len() > STRING_INLINE_BYTES {
                self.buf.extend_from_slice(h.key.as_bytes());
            }
            self.buf.extend_from_slice(h.value);
        }
        let array = self.buf.len();
        self.buf.resize(array + headers.len() * ARCHIVED_HEADER_BYTES, 0);
        // The data went in at `start` in this order: walk it again.
        let mut data = start;
        let mut next = |len: usize| {
            let span = Span { at: data as u32, len: len as u32 };
            data += len;
            span
        };
        for (i, h) in headers.iter().enumerate() {
            let at = array + i * ARCHIVED_HEADER_BYTES;
            let key_at = at + HEADER_KEY_AT;
            if h.key.len() > STRING_INLINE_BYTES {
                // The length with `10` in the top bits of its first byte
                // (what marks a string as out of line), then the offset.
                let span = next(h.key.len());
                let len = span.len;
                let tagged = (len & 0x3f) | 0x80 | ((len & !0x3f) << 2);
                self.buf[key_at..key_at + 4].copy_from_slice(&tagged.to_le_bytes());
                put_offset(&mut self.buf, key_at + 4, key_at, span.at as usize);
            } else {
                let slot = &mut self.buf[key_at..key_at + STRING_INLINE_BYTES];
                slot.fill(0xff);
                slot[..h.key.len()].copy_from_slice(h.key.as_bytes());
            }
            let value = next(h.value.len());
            put_vec(&mut self.buf, at + HEADER_VALUE_AT, value);
        }
        Span { at: array as u32, len: headers.len() as u32 }
    }

    /// Writes the records array, the root, the header and the CRCs, and
    /// returns the batch (base offset 0: the log assigns the real one).
    /// The encoder is left empty, ready for the next batch. A batch holds
    /// at least one record: finishing an empty one is refused.
    pub fn finish(&mut self) -> Result<Vec<u8>, BatchError> {
        self.finish_with(|_| {})
    }

    /// Finishes the batch as a rewrite of the stored batch `template`
    /// (compaction): its base offset, leader epoch, flags, append time,
    /// producer fields and `last_offset_delta` are kept, so the batch still
    /// covers the offsets it covered; record count and timestamps come from
    /// the records kept. The records' deltas must be below the template's
    /// `last_offset_delta` + 1, and the template of version 2. With no
    /// record at all, the batch is an *emptied* one: no records, the
    /// template's timestamps (docs/format.md).
    pub fn finish_as(&mut self, template: &BatchHeader) -> Result<Vec<u8>, BatchError> {
        assert!(template.version == BATCH_VERSION && self.version == BATCH_VERSION, "only version 2 is rewritten");
        if self.entries.last().is_some_and(|e| e.offset_delta > template.last_offset_delta) {
            return Err(BatchError::BadOffsets);
        }
        let empty = self.entries.is_empty();
        if empty {
            self.start();
        }
        self.finish_with(|h| {
            if empty {
                h.first_timestamp = template.first_timestamp;
                h.max_timestamp = template.max_timestamp;
            }
            h.base_offset = template.base_offset;
            h.leader_epoch = template.leader_epoch;
            h.payload = template.payload;
            h.broker_flags = template.broker_flags;
            h.append_time = template.append_time;
            h.attributes = template.attributes;
            h.last_offset_delta = template.last_offset_delta;
            h.producer_id = template.producer_id;
            h.producer_epoch = template.producer_epoch;
            h.base_sequence = template.base_sequence;
        })
    }

    fn finish_with(&mut self, adjust: impl FnOnce(&mut BatchHeader)) -> Result<Vec<u8>, BatchError> {
        if self.buf.is_empty() {
            return Err(BatchError::BadRecordCount { record_count: 0, last_offset_delta: 0 });
        }
        let length = self.encoded_bytes();
        let batch_length = u32::try_from(length).map_err(|_| BatchError::BadLength { batch_length: u32::MAX })?;
        let mut out = std::mem::take(&mut self.buf);
        let array = out.len();
        out.resize(length, 0);
        for (i, e) in self.entries.iter().enumerate() {
            let at = array + i * ARCHIVED_RECORD_BYTES;
            out[at + OFFSET_DELTA_AT..at + OFFSET_DELTA_AT + 4].copy_from_slice(&e.offset_delta.to_le_bytes());
            out[at + TIMESTAMP_DELTA_AT..at + TIMESTAMP_DELTA_AT + 8].copy_from_slice(&e.timestamp_delta.to_le_bytes());
            for (field, span) in [(KEY_AT, e.key), (VALUE_AT, e.value)] {
                // `None` is the tag 0 and zeroes, as the resize left them.
                if let Some(span) = span {
                    out[at + field] = OPTION_SOME;
                    put_vec(&mut out, at + field + OPTION_VALUE_AT, span);
                }
            }
            put_vec(&mut out, at + HEADERS_AT, e.headers);
        }
        put_vec(&mut out, length - ROOT_BYTES, Span { at: array as u32, len: self.entries.len() as u32 });
        let (id, epoch, sequence) = self.producer.unwrap_or((ProducerId::NONE, ProducerEpoch::NONE, Sequence::NONE));
        let header = BatchHeader {
            version: self.version,
            base_offset: Offset(0),
            batch_length,
            leader_epoch: LeaderEpoch(0),
            payload: PayloadFormat::Cairn,
            broker_flags: BrokerFlags::default(),
            append_time: NOT_APPENDED,
            crc: 0,
            header_crc: 0,
            attributes: Attributes::default(),
            last_offset_delta: self.entries.last().map_or(0, |e| e.offset_delta),
            record_count: self.entries.len() as u32,
            first_timestamp: self.first_timestamp,
            max_timestamp: self.max_timestamp,
            producer_id: id,
            producer_epoch: epoch,
            base_sequence: sequence,
        };
        let mut header = header;
        adjust(&mut header);
        header.encode(&mut out);
        seal(&mut out, self.version);
        self.reset();
        Ok(out)
    }
}

/// An rkyv relative pointer at `at`, from `base` to `target`.
fn put_offset(buf: &mut [u8], at: usize, base: usize, target: usize) {
    let offset = (target as i64 - base as i64) as i32;
    buf[at..at + 4].copy_from_slice(&offset.to_le_bytes());
}

/// An rkyv vector at `at`: a relative pointer to its elements, then their count.
fn put_vec(buf: &mut [u8], at: usize, span: Span) {
    put_offset(buf, at, at, span.at as usize);
    buf[at + 4..at + 8].copy_from_slice(&span.len.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::batch::{BatchBuilder, Record, RecordHeader, RecordInput, validate_batch, validate_records};

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..max)
    }

    /// Key, value, headers and timestamp delta of one generated record.
    type Generated = (Option<Vec<u8>>, Option<Vec<u8>>, Vec<(String, Vec<u8>)>, i64);

    fn record() -> impl Strategy<Value = Generated> {
        // Header keys on both sides of rkyv's 8-byte inline limit.
        let header = ("[a-z]{0,20}", bytes(12));
        (
            proptest::option::of(bytes(40)),
            proptest::option::of(bytes(300)),
            proptest::collection::vec(header, 0..4),
            -1000i64..1000,
        )
    }

    proptest! {
        /// The bytes after the header are the ones rkyv writes for the same
        /// records, offset gaps and negative timestamp deltas included.
        #[test]
        fn the_archive_is_byte_for_byte_what_rkyv_writes(
            records in proptest::collection::vec(record(), 1..30),
            gaps in proptest::collection::vec(1u32..4, 30),
        ) {
            let first = 1_700_000_000_000i64;
            let mut encoder = BatchEncoder::new(64);
            let mut owned = Vec::new();
            let mut delta = 0;
            for (i, (key, value, headers, ts)) in records.iter().enumerate() {
                let refs: Vec<HeaderRef<'_>> = headers.iter().map(|(k, v)| HeaderRef { key: k, value: v }).collect();
                let timestamp = Timestamp(if i == 0 { first } else { first + ts });
                let r = RecordRef { key: key.as_deref(), value: value.as_deref(), headers: &refs, timestamp };
                let before = encoder.encoded_bytes();
                encoder.push_at(delta, &r).unwrap();
                prop_assert_eq!(encoder.encoded_bytes() - before, BatchEncoder::record_bytes(&r));
                owned.push(Record {
                    offset_delta: delta,
                    timestamp_delta: timestamp.0 - first,
                    key: key.clone(),
                    value: value.clone(),
                    headers: headers.iter().map(|(k, v)| RecordHeader { key: k.clone(), value: v.clone() }).collect(),
                });
                delta += gaps[i];
            }
            let batch = encoder.finish().unwrap();
            let rkyv = rkyv::to_bytes::<rkyv::rancor::Error>(&owned).unwrap();
            prop_assert_eq!(&batch[BATCH_HEADER_BYTES..], &rkyv[..]);
            let view = validate_batch(&batch).unwrap();
            validate_records(&view).unwrap();
            prop_assert_eq!(view.header.record_count as usize, owned.len());
        }
    }

    #[test]
    fn the_layout_constants_are_what_the_module_docs_say() {
        assert_eq!(ARCHIVED_RECORD_BYTES, 38);
        assert_eq!(ARCHIVED_HEADER_BYTES, 16);
        assert_eq!(size_of::<Entry>(), 48);
    }

    #[test]
    fn a_finished_encoder_starts_the_next_batch_empty() {
        let mut encoder = BatchEncoder::new(0);
        assert!(encoder.finish().is_err(), "an empty batch is refused, not built");
        let r = RecordRef { key: Some(b"k"), value: Some(b"one"), headers: &[], timestamp: Timestamp(5) };
        encoder.push(&r).unwrap();
        let one = encoder.finish().unwrap();
        assert!(encoder.is_empty());
        encoder.push(&r).unwrap();
        assert_eq!(encoder.finish().unwrap(), one);
        let mut builder = BatchBuilder::new();
        builder.push(RecordInput::new(Some(b"k"), Some(b"one"), Timestamp(5)));
        assert_eq!(builder.build().unwrap(), one);
    }
}
