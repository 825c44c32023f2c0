//! Builds a batch from owned records (tests, tools, a compacted copy): the
//! records are kept and encoded at `build` by [`BatchEncoder`], the one
//! encoder of the format. A producer encodes as records arrive instead.

use super::BatchError;
use super::encoder::{BatchEncoder, HeaderRef, RecordRef};
use super::header::{BATCH_VERSION, BATCH_VERSION_V1};
use super::record::{Record, RecordHeader};
use crate::types::{ProducerEpoch, ProducerId, Sequence, Timestamp};

/// A record as a producer hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordInput {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<RecordHeader>,
    pub timestamp: Timestamp,
}

impl RecordInput {
    #[must_use]
    pub fn new(key: Option<&[u8]>, value: Option<&[u8]>, timestamp: Timestamp) -> RecordInput {
        RecordInput { key: key.map(<[u8]>::to_vec), value: value.map(<[u8]>::to_vec), headers: Vec::new(), timestamp }
    }
}

/// Collects records and encodes them as one batch.
#[derive(Debug, Default)]
pub struct BatchBuilder {
    records: Vec<Record>,
    first_timestamp: Option<Timestamp>,
    max_timestamp: Timestamp,
    producer_id: Option<(ProducerId, ProducerEpoch, Sequence)>,
}

impl BatchBuilder {
    #[must_use]
    pub fn new() -> BatchBuilder {
        BatchBuilder::default()
    }

    /// Marks the batch as coming from an idempotent producer.
    #[must_use]
    pub fn with_producer(mut self, id: ProducerId, epoch: ProducerEpoch, base_sequence: Sequence) -> BatchBuilder {
        self.producer_id = Some((id, epoch, base_sequence));
        self
    }

    /// Adds a record at the next offset.
    pub fn push(&mut self, record: RecordInput) {
        let offset_delta =
            self.records.last().map_or(0, |r| r.offset_delta.checked_add(1).expect("offset delta fits u32"));
        self.push_at(offset_delta, record);
    }

    /// Adds a record at `offset_delta`, above the last one's: a compacted
    /// batch keeps its records' offsets, with gaps where records were removed.
    pub fn push_at(&mut self, offset_delta: u32, record: RecordInput) {
        assert!(
            self.records.last().is_none_or(|r| offset_delta > r.offset_delta),
            "offset deltas increase within a batch"
        );
        let first = *self.first_timestamp.get_or_insert(record.timestamp);
        self.max_timestamp =
            if self.records.is_empty() { record.timestamp } else { self.max_timestamp.max(record.timestamp) };
        self.records.push(Record {
            offset_delta,
            timestamp_delta: record.timestamp.0 - first.0,
            key: record.key,
            value: record.value,
            headers: record.headers,
        });
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.records.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Encodes the batch (format version 2) with base offset 0; the log
    /// assigns the real one and stamps the envelope.
    pub fn build(&self) -> Result<Vec<u8>, BatchError> {
        self.build_version(BATCH_VERSION)
    }

    /// Encodes the batch in format version 1, as builds before version 2
    /// did: for tests that logs and producers of earlier versions still work.
    pub fn build_v1(&self) -> Result<Vec<u8>, BatchError> {
        self.build_version(BATCH_VERSION_V1)
    }

    fn build_version(&self, version: u16) -> Result<Vec<u8>, BatchError> {
        assert!(!self.records.is_empty(), "a batch holds at least one record");
        let first = self.first_timestamp.expect("non-empty");
        let mut encoder = BatchEncoder::with_version(version, 0);
        if let Some((id, epoch, sequence)) = self.producer_id {
            encoder.set_producer(id, epoch, sequence);
        }
        for r in &self.records {
            let headers: Vec<HeaderRef<'_>> =
                r.headers.iter().map(|h| HeaderRef { key: &h.key, value: &h.value }).collect();
            let record = RecordRef {
                key: r.key.as_deref(),
                value: r.value.as_deref(),
                headers: &headers,
                timestamp: Timestamp(first.0 + r.timestamp_delta),
            };
            encoder.push_at(r.offset_delta, &record)?;
        }
        encoder.finish()
    }
}
