//! Where records wait to be sent: one open batch per partition, encoded as
//! records arrive (`BatchEncoder`), and the batches that are closed and
//! wait for a send slot. Everything here runs under the producer's one
//! lock, taken once per `send` or `send_all` call, never per record of a
//! bulk call; nothing here allocates, reads a clock or wakes anyone per
//! record.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use protocol::batch::{BatchEncoder, RecordRef};
use protocol::partitioner::partition_for_key;
use protocol::types::Timestamp;

use super::{BatchSlot, Record};
use crate::error::ClientError;

/// The buffer a batch starts with when the open batches' buffers would not
/// fit in the buffer bound at full size.
const BATCH_START_BYTES: usize = 16 << 10;

/// A partition's batch that still takes records.
pub(super) struct OpenBatch {
    pub encoder: BatchEncoder,
    pub slot: Arc<BatchSlot>,
    /// What its records count against `buffer_bytes_max`.
    pub buffered_bytes: usize,
    /// Order of opening: `flush` waits for the batches opened before it.
    pub seq: u64,
}

/// A batch closed to new records: full, or taken by the sender.
pub(super) struct ClosedBatch {
    pub topic: usize,
    pub partition: u32,
    pub batch: OpenBatch,
}

/// One topic's partitions as the producer sees them.
pub(super) struct TopicBuffers {
    pub name: Arc<str>,
    pub partitions: u32,
    pub open: Vec<Option<OpenBatch>>,
    /// Batches of each partition in flight (sent, not yet settled).
    pub in_flight: Vec<u32>,
    /// Encoded bytes of each partition's last batch: the next one's buffer
    /// starts that big, so a loaded partition's batch never copies itself
    /// while it grows and a light one does not hold a buffer it never fills.
    last_bytes: Vec<u32>,
    /// The partition unkeyed records stick to until its batch closes.
    sticky: Option<u32>,
    /// A produce failed with a metadata error: learn the partitions again.
    pub stale: bool,
}

/// Where one pushed record went.
pub(super) struct Placed {
    pub partition: u32,
    /// The record's index in its batch.
    pub index: u32,
    /// The batch's sequence number, and its slot when that is not the one
    /// the caller already holds (one clone per batch a call reaches, not
    /// per record).
    pub seq: u64,
    pub slot: Option<Arc<BatchSlot>>,
    /// The sender has something new to look at: a batch opened (its
    /// linger starts) or closed.
    pub wake: bool,
}

/// Why a record was not taken.
pub(super) enum Refused {
    /// The buffer is full: wait for acknowledgements to free it.
    Full,
    Invalid(ClientError),
}

pub(super) struct Accumulator {
    by_name: HashMap<Arc<str>, usize>,
    pub topics: Vec<TopicBuffers>,
    /// Closed batches, oldest first, waiting for a send slot.
    pub closed: VecDeque<ClosedBatch>,
    next_seq: u64,
    /// Open batches with a lower sequence number are due now (a flush).
    pub flush_below: u64,
    /// Sequence numbers of batches opened and not yet settled.
    pub unsettled: BTreeSet<u64>,
    /// Bytes of records taken and not yet settled (`buffer_bytes_max`).
    pub buffered_bytes: usize,
    /// Requests in flight per route (a broker's shard).
    pub route_in_flight: HashMap<crate::client::Route, usize>,
    /// Batches open to records (they hold buffers of their own).
    open_count: usize,

    next_sticky: u32,
    batch_bytes_max: usize,
    buffer_bytes_max: usize,
}

impl Accumulator {
    pub fn new(batch_bytes_max: usize, buffer_bytes_max: usize) -> Accumulator {
        Accumulator {
            by_name: HashMap::new(),
            topics: Vec::new(),
            closed: VecDeque::new(),
            next_seq: 0,
            flush_below: 0,
            unsettled: BTreeSet::new(),
            buffered_bytes: 0,
            route_in_flight: HashMap::new(),
            open_count: 0,
            next_sticky: 0,
            batch_bytes_max,
            buffer_bytes_max,
        }
    }

    /// The topic's index, unless it is unknown or its partitions must be
    /// learned again.
    pub fn topic(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied().filter(|&t| !self.topics[t].stale)
    }

    /// A produce to this topic failed with a metadata error.
    pub fn mark_stale(&mut self, name: &str) {
        if let Some(&t) = self.by_name.get(name) {
            self.topics[t].stale = true;
        }
    }

    /// Registers a topic with its partition count (at least 1), or updates
    /// the count. Partitions are only ever added, so a count below the one
    /// known is a stale answer and keeps the known one.
    pub fn set_topic(&mut self, name: &str, partitions: u32) -> usize {
        assert!(partitions > 0, "the caller refuses a topic without partitions");
        if let Some(&t) = self.by_name.get(name) {
            let topic = &mut self.topics[t];
            topic.stale = false;
            if partitions > topic.partitions {
                topic.partitions = partitions;
                topic.open.resize_with(partitions as usize, || None);
                topic.in_flight.resize(partitions as usize, 0);
                topic.last_bytes.resize(partitions as usize, 0);
            }
            return t;
        }
        let name: Arc<str> = name.into();
        self.topics.push(TopicBuffers {
            name: name.clone(),
            partitions,
            open: (0..partitions).map(|_| None).collect(),
            in_flight: vec![0; partitions as usize],
            last_bytes: vec![0; partitions as usize],
            sticky: None,
            stale: false,
        });
        self.by_name.insert(name, self.topics.len() - 1);
        self.topics.len() - 1
    }

    /// Encodes `record` into its partition's open batch. `timestamp` stands
    /// in for a record that has none (one clock read per call, not per record).
    pub fn push(
        &mut self,
        t: usize,
        record: &Record<'_>,
        timestamp: Timestamp,
        known_seq: Option<u64>,
    ) -> std::result::Result<Placed, Refused> {
        let encoded = RecordRef {
            key: record.key,
            value: record.value,
            headers: record.headers,
            timestamp: record.timestamp.unwrap_or(timestamp),
        };
        let size = BatchEncoder::record_bytes(&encoded);
        // One record larger than the whole buffer still goes, alone.
        if self.buffered_bytes > 0 && self.buffered_bytes + size > self.buffer_bytes_max {
            return Err(Refused::Full);
        }
        let mut partition = self.partition_for(t, record)?;
        let mut wake = false;
        // A record that does not fit closes the batch and starts the next;
        // an unkeyed one moves on with the sticky partition.
        if let Some(open) = &self.topics[t].open[partition as usize]
            && !open.encoder.is_empty()
            && open.encoder.encoded_bytes() + size > self.batch_bytes_max
        {
            self.close(t, partition);
            wake = true;
            partition = self.partition_for(t, record)?;
        }
        let opened = self.topics[t].open[partition as usize].is_none();
        if opened {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.unsettled.insert(seq);
            // As big as the partition's last batch (rounded up), while the
            // open batches' buffers stay within the buffer bound; past
            // that, batches start small and grow.
            self.open_count += 1;
            let last = self.topics[t].last_bytes[partition as usize] as usize;
            let capacity = if self.open_count * self.batch_bytes_max <= self.buffer_bytes_max {
                last.next_power_of_two().max(BATCH_START_BYTES).min(self.batch_bytes_max)
            } else {
                BATCH_START_BYTES.min(self.batch_bytes_max)
            };
            self.topics[t].open[partition as usize] = Some(OpenBatch {
                encoder: BatchEncoder::new(capacity),
                slot: Arc::new(BatchSlot::new(Instant::now())),
                buffered_bytes: 0,
                seq,
            });
            wake = true;
        }
        let open = self.topics[t].open[partition as usize].as_mut().expect("just ensured");
        let index = open.encoder.len() as u32;
        if let Err(e) = open.encoder.push_sized(&encoded, size) {
            // The refused record leaves nothing behind: a batch opened for
            // it alone is removed again (a batch is never empty).
            if opened {
                let batch = self.topics[t].open[partition as usize].take().expect("just opened");
                self.open_count -= 1;
                self.unsettled.remove(&batch.seq);
            }
            return Err(Refused::Invalid(ClientError::InvalidArgument(e.to_string())));
        }
        open.buffered_bytes += size;
        self.buffered_bytes += size;
        let seq = open.seq;
        let slot = (known_seq != Some(seq)).then(|| open.slot.clone());
        if open.encoder.encoded_bytes() >= self.batch_bytes_max {
            self.close(t, partition);
            wake = true;
        }
        Ok(Placed { partition, index, seq, slot, wake })
    }

    fn partition_for(&mut self, t: usize, record: &Record<'_>) -> std::result::Result<u32, Refused> {
        let topic = &mut self.topics[t];
        Ok(match (record.partition, record.key) {
            (Some(p), _) if p < topic.partitions => p,
            (Some(p), _) => {
                return Err(Refused::Invalid(ClientError::InvalidArgument(format!(
                    "topic {} has {} partitions; {p} is not one",
                    topic.name, topic.partitions
                ))));
            }
            (None, Some(key)) => partition_for_key(key, topic.partitions),
            (None, None) => {
                if let Some(p) = topic.sticky {
                    p
                } else {
                    let p = self.next_sticky % topic.partitions;
                    self.next_sticky = self.next_sticky.wrapping_add(1);
                    topic.sticky = Some(p);
                    p
                }
            }
        })
    }

    /// Closes a partition's open batch, if it has one, into the queue of
    /// closed batches.
    pub fn close(&mut self, t: usize, partition: u32) {
        if let Some(batch) = self.take_open(t, partition) {
            self.closed.push_back(ClosedBatch { topic: t, partition, batch });
        }
    }

    /// Takes a partition's open batch (to close it, or to send it now);
    /// unkeyed records move on to another partition (Kafka's sticky
    /// partitioner: big batches, even spread).
    pub fn take_open(&mut self, t: usize, partition: u32) -> Option<OpenBatch> {
        let topic = &mut self.topics[t];
        let batch = topic.open[partition as usize].take()?;
        topic.last_bytes[partition as usize] = batch.encoder.encoded_bytes() as u32;
        self.open_count -= 1;
        if topic.sticky == Some(partition) {
            topic.sticky = None;
        }
        Some(batch)
    }

    /// Every open batch, for the sender's scan: (topic, partition, batch).
    pub fn open_batches(&self) -> impl Iterator<Item = (usize, u32, &OpenBatch)> {
        self.topics.iter().enumerate().flat_map(|(t, topic)| {
            topic.open.iter().enumerate().filter_map(move |(p, b)| b.as_ref().map(|b| (t, p as u32, b)))
        })
    }

    /// Takes every batch, open or closed, for a producer that is going away.
    pub fn drain_all(&mut self) -> Vec<OpenBatch> {
        let mut all: Vec<OpenBatch> = self.closed.drain(..).map(|c| c.batch).collect();
        for topic in &mut self.topics {
            all.extend(topic.open.iter_mut().filter_map(Option::take));
        }
        self.open_count = 0;
        all
    }
}
