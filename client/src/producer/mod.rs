//! The producer. Records are encoded into their partition's open batch as
//! they are sent (one copy, from the caller's memory into the bytes that go
//! on the wire); a sender task ships batches that are full
//! (`batch_bytes_max`) or old enough (`linger`; with 0, any waiting batch)
//! whenever one of a shard's `requests_in_flight_max` slots is free, in one
//! request per shard (Kafka's design). While every slot is busy, records
//! keep joining their batches, so a loaded producer batches by itself even
//! with `linger = 0`.
//!
//! Two ways in: [`Producer::send`] takes one record and returns a
//! [`Delivery`] per record, for services; [`Producer::send_all`] takes any
//! number of borrowed records of one topic with one clock read and one
//! lock per 64 records, and returns one [`Deliveries`] that resolves per
//! batch, for throughput. Either way a batch completes once, for all its
//! records.
//!
//! Partitioning: an explicit partition wins; a keyed record goes to
//! `protocol::partitioner::partition_for_key` (Kafka's murmur2 rule, so one
//! key always lands on one partition); an unkeyed record sticks to one
//! partition until that partition's batch closes, then moves round-robin
//! to the next (Kafka's sticky partitioner: big batches, even spread).
//!
//! Order: batches are queued on their connections in the order they were
//! taken, so without failures one partition's batches land in the order
//! sent. Retriable failures are retried with exponential backoff. As in
//! Kafka without idempotence, a retried batch may land twice if the first
//! attempt's acknowledgement was lost; with `requests_in_flight_max` above 1
//! it may also land after a later batch of the same partition. The default,
//! 1, keeps order across retries: a request carries at most one batch of a
//! partition, and a partition's next batch waits for it to settle.
//!
//! Memory is bounded in bytes (`buffer_bytes_max`, Kafka's `buffer.memory`):
//! a send waits while the records taken and not yet acknowledged hold that
//! many encoded bytes. The bound is also the queueing delay a saturated
//! producer adds: records wait behind at most `buffer_bytes_max` bytes, so
//! the default (1.5 MiB) keeps that to a few milliseconds at the rates one
//! broker takes (docs/benchmarks.md: p99 under 10 ms at about 3 M records/s
//! of 100 B, fsync before every acknowledgement), where Kafka's 32 MiB
//! would be tens of milliseconds to seconds. While a send waits for space,
//! every open batch is due, whatever its linger. Queue time (batch opened →
//! request sent) and request time (sent → acknowledged) are reported apart,
//! per record in [`RecordMetadata`] and in total by [`Producer::stats`].
//! Dropping the last handle fails the records not yet sent with `Closed`.
//!
//! A topic's partition count is learned at its first send and again after
//! a produce fails with a metadata error; it only ever grows (a topic
//! deleted and created again with fewer partitions needs a new producer).

mod accumulator;
mod sender;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use protocol::api::Acks;
use protocol::batch::HeaderRef;
use protocol::types::{Offset, Timestamp};
use tokio::sync::Notify;

use crate::client::Client;
use crate::error::{ClientError, Result};
use accumulator::{Accumulator, Placed, Refused};

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub acks: Acks,
    /// How long a batch waits for more records before it ships.
    pub linger: Duration,
    /// A partition's batch closes once it holds this many encoded bytes
    /// (header included): at most the broker's `limits.batch_bytes_max`
    /// (1 MiB by default). A request carries at most one batch of a
    /// partition (so a retry keeps order), so few partitions need big
    /// batches for big requests.
    pub batch_bytes_max: usize,
    /// Encoded bytes of records taken and not yet acknowledged before a
    /// send waits (Kafka's `buffer.memory`). Also the most a saturated
    /// producer queues: at 300 MB/s, 1.5 MiB is 5 ms of waiting.
    pub buffer_bytes_max: usize,
    /// A request takes no more batches once it holds this many bytes (so
    /// it may pass the mark by one batch).
    pub request_bytes_max: usize,
    /// Requests in flight at once per broker shard. 1, the default, keeps
    /// each partition's batches in order even across retries, and batches
    /// best under load: records pile up while a request is out. Raise it for
    /// links whose round trip is long next to a batch.
    pub requests_in_flight_max: usize,
    pub retries: u32,
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    /// Sent to the broker as the produce timeout.
    pub request_timeout: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(5),
            batch_bytes_max: 512 << 10,
            buffer_bytes_max: 3 << 19,
            request_bytes_max: 1 << 20,
            requests_in_flight_max: 1,
            retries: 5,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A record to send, owned (see [`Record`] for the borrowed form).
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    pub topic: String,
    pub partition: Option<u32>,
    pub key: Option<Bytes>,
    /// `None` sends a tombstone.
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Bytes)>,
    /// Defaults to now.
    pub timestamp: Option<Timestamp>,
}

impl ProducerRecord {
    pub fn new(topic: impl Into<String>, key: Option<impl Into<Bytes>>, value: impl Into<Bytes>) -> ProducerRecord {
        ProducerRecord {
            topic: topic.into(),
            key: key.map(Into::into),
            value: Some(value.into()),
            ..ProducerRecord::default()
        }
    }
}

/// A record borrowed from the caller, for [`Producer::send_all`]: its bytes
/// are copied once, into the batch, before the call returns.
#[derive(Debug, Clone, Copy, Default)]
pub struct Record<'a> {
    pub partition: Option<u32>,
    pub key: Option<&'a [u8]>,
    /// `None` sends a tombstone.
    pub value: Option<&'a [u8]>,
    pub headers: &'a [HeaderRef<'a>],
    /// Defaults to the time of the call.
    pub timestamp: Option<Timestamp>,
}

impl<'a> Record<'a> {
    pub fn value(value: &'a [u8]) -> Record<'a> {
        Record { value: Some(value), ..Record::default() }
    }

    pub fn keyed(key: &'a [u8], value: &'a [u8]) -> Record<'a> {
        Record { key: Some(key), value: Some(value), ..Record::default() }
    }
}

/// Where an acknowledged record landed, and when; `offset` is `None` with acks `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    pub partition: u32,
    pub offset: Option<Offset>,
    /// When the record's batch opened; a record joins it at or after this.
    pub batch_opened_at: Instant,
    /// When the batch's request was sent: queue time ends, request time starts.
    pub sent_at: Instant,
    /// When the producer received the acknowledgement.
    pub acknowledged_at: Instant,
}

/// How a batch ended, shared by its records.
#[derive(Debug, Clone)]
struct Outcome {
    result: Result<Option<Offset>>,
    sent_at: Instant,
    acknowledged_at: Instant,
}

/// The one completion of a batch: every record of it resolves from here.
pub(crate) struct BatchSlot {
    opened_at: Instant,
    outcome: OnceLock<Outcome>,
    notify: Notify,
}

impl BatchSlot {
    fn new(opened_at: Instant) -> BatchSlot {
        BatchSlot { opened_at, outcome: OnceLock::new(), notify: Notify::new() }
    }

    fn complete(&self, result: Result<Option<Offset>>, sent_at: Option<Instant>) {
        let now = Instant::now();
        let _ = self.outcome.set(Outcome { result, sent_at: sent_at.unwrap_or(now), acknowledged_at: now });
        self.notify.notify_waiters();
    }

    async fn wait(&self) -> &Outcome {
        loop {
            let notified = self.notify.notified();
            if let Some(outcome) = self.outcome.get() {
                return outcome;
            }
            notified.await;
        }
    }

    fn metadata(&self, outcome: &Outcome, partition: u32, index: u32) -> Result<RecordMetadata> {
        match &outcome.result {
            Ok(base) => Ok(RecordMetadata {
                partition,
                offset: base.map(|b| Offset(b.0 + u64::from(index))),
                batch_opened_at: self.opened_at,
                sent_at: outcome.sent_at,
                acknowledged_at: outcome.acknowledged_at,
            }),
            Err(e) => Err(e.clone()),
        }
    }
}

/// A sent record's pending acknowledgement.
pub struct Delivery {
    slot: Arc<BatchSlot>,
    partition: u32,
    index: u32,
}

impl Delivery {
    pub async fn wait(self) -> Result<RecordMetadata> {
        let outcome = self.slot.wait().await;
        self.slot.metadata(outcome, self.partition, self.index)
    }
}

/// The records of one `send_all` call that went into one batch.
struct Part {
    slot: Arc<BatchSlot>,
    partition: u32,
    first_index: u32,
    records: u32,
}

/// The pending acknowledgements of a `send_all` call: one per run of the
/// call's records that went into the same batch, in the call's order.
pub struct Deliveries {
    parts: Vec<Part>,
}

impl std::fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliveries").field("records", &self.len()).field("parts", &self.parts.len()).finish()
    }
}

/// What a run of a `send_all` call's records in one batch became:
/// `records` consecutive offsets from `metadata.offset`, in the order given.
#[derive(Debug, Clone)]
pub struct BatchDelivery {
    pub records: u32,
    pub metadata: Result<RecordMetadata>,
}

impl Deliveries {
    /// Records this call handed over.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.records as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Waits for every batch; one result per run of consecutive records in
    /// one batch, in the call's order (so the runs' `records` add up to the
    /// call's records, in order).
    pub async fn wait(self) -> Vec<BatchDelivery> {
        let mut out = Vec::with_capacity(self.parts.len());
        for part in self.parts {
            let outcome = part.slot.wait().await;
            let metadata = part.slot.metadata(outcome, part.partition, part.first_index);
            out.push(BatchDelivery { records: part.records, metadata });
        }
        out
    }
}

/// `send_all` stopped at a record it could not take.
#[derive(Debug)]
pub struct PartialSend {
    pub error: ClientError,
    /// The records of the call taken before it: queued, and tracked here.
    pub queued: Deliveries,
}

impl std::fmt::Display for PartialSend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (after {} records were queued)", self.error, self.queued.len())
    }
}

impl std::error::Error for PartialSend {}

impl From<PartialSend> for ClientError {
    fn from(p: PartialSend) -> ClientError {
        p.error
    }
}

/// Counts a send waiting for space for as long as it waits (also when its
/// future is dropped meanwhile).
struct SpaceWaiter<'a>(&'a AtomicUsize);

impl<'a> SpaceWaiter<'a> {
    fn new(count: &'a AtomicUsize) -> SpaceWaiter<'a> {
        count.fetch_add(1, Ordering::AcqRel);
        SpaceWaiter(count)
    }
}

impl Drop for SpaceWaiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Records pulled from a `send_all` iterator per lock.
const PUSH_CHUNK_RECORDS: usize = 64;

/// Totals since the producer started, for averages (Kafka's
/// `record-queue-time-avg` and `request-latency-avg`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProducerStats {
    /// Batches settled (acknowledged or failed for good), and their records.
    pub batches: u64,
    pub records: u64,
    /// Batches sent again after a retriable failure.
    pub retries: u64,
    /// Summed over settled batches: opened → first sent, and sent → settled.
    pub queue_time_us: u64,
    pub request_time_us: u64,
    pub queue_time_us_max: u64,
    pub request_time_us_max: u64,
}

#[derive(Default)]
struct Stats {
    batches: AtomicU64,
    records: AtomicU64,
    retries: AtomicU64,
    queue_time_us: AtomicU64,
    request_time_us: AtomicU64,
    queue_time_us_max: AtomicU64,
    request_time_us_max: AtomicU64,
}

struct Inner {
    client: Client,
    config: ProducerConfig,
    acc: Mutex<Accumulator>,
    /// Wakes the sender: a batch opened or closed, a flush, a freed slot,
    /// or the last handle went. Shared so the sender can wait without
    /// keeping `Inner` alive.
    wake: Arc<Notify>,
    /// Buffer space was freed.
    space: Notify,
    /// Sends waiting for buffer space: while any does, every open batch is
    /// due (Kafka's "exhausted" pool).
    space_waiters: AtomicUsize,
    /// A batch settled (for `flush`).
    settled: Notify,
    closed: AtomicBool,
    stats: Stats,
}

impl Inner {
    /// The accumulator. Its state is consistent between any two of its
    /// calls, so a panic elsewhere while it was held (a caller's iterator
    /// cannot: it runs outside) leaves nothing to repair.
    fn lock(&self) -> std::sync::MutexGuard<'_, Accumulator> {
        self.acc.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Inner {
    /// The last handle is gone: nothing will send what is still queued.
    fn drop(&mut self) {
        let acc = self.acc.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        for batch in acc.drain_all() {
            batch.slot.complete(Err(ClientError::Closed), None);
        }
        self.wake.notify_one();
    }
}

#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

fn now() -> Timestamp {
    Timestamp(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64))
}

impl Producer {
    pub fn new(client: Client, config: ProducerConfig) -> Producer {
        assert!(config.batch_bytes_max > 0 && config.buffer_bytes_max >= config.batch_bytes_max);
        assert!(config.requests_in_flight_max > 0);
        let inner = Arc::new(Inner {
            client,
            acc: Mutex::new(Accumulator::new(config.batch_bytes_max, config.buffer_bytes_max)),
            config,
            wake: Arc::new(Notify::new()),
            space: Notify::new(),
            space_waiters: AtomicUsize::new(0),
            settled: Notify::new(),
            closed: AtomicBool::new(false),
            stats: Stats::default(),
        });
        tokio::spawn(sender::run(Arc::downgrade(&inner)));
        Producer { inner }
    }

    /// The topic's index in the accumulator, learning its partitions first
    /// if this producer has not sent to it yet (or a produce to it failed
    /// with a metadata error since).
    async fn topic(&self, topic: &str) -> Result<usize> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(ClientError::Closed);
        }
        if let Some(t) = self.inner.lock().topic(topic) {
            return Ok(t);
        }
        let partitions = self.inner.client.partitions(topic).await?;
        if partitions == 0 {
            return Err(ClientError::InvalidArgument(format!("topic {topic} has no partitions")));
        }
        Ok(self.inner.lock().set_topic(topic, partitions))
    }

    /// Queues a record; the returned [`Delivery`] resolves once the broker
    /// acknowledged it. Waits while the producer's buffer is full.
    pub async fn send(&self, record: ProducerRecord) -> Result<Delivery> {
        let headers: Vec<HeaderRef<'_>> = record.headers.iter().map(|(k, v)| HeaderRef { key: k, value: v }).collect();
        let r = Record {
            partition: record.partition,
            key: record.key.as_deref(),
            value: record.value.as_deref(),
            headers: &headers,
            timestamp: record.timestamp,
        };
        let mut delivery = None;
        self.push_each(&record.topic, std::iter::once(r), |p| {
            let slot = p.slot.expect("a first record gets its slot");
            delivery = Some(Delivery { slot, partition: p.partition, index: p.index });
        })
        .await?;
        Ok(delivery.expect("one record was taken"))
    }

    /// Queues records of one topic, in order, with one clock read (the
    /// timestamp of records that have none) and one lock per 64 records;
    /// waits while the buffer is full. The records are copied into their
    /// batches before this returns. On an error, the records before the
    /// one refused are queued and [`PartialSend::queued`] tracks them; the
    /// rest are not. Dropping the future while it waits for space leaves
    /// the records taken so far queued, untracked.
    ///
    /// In a task that must be `Send` (`tokio::spawn`), pass a `Vec` of
    /// records rather than a `map` over borrowed data: today's compiler
    /// cannot prove such a closure's future `Send` (rust-lang/rust#64552).
    pub async fn send_all<'r>(
        &self,
        topic: &str,
        records: impl IntoIterator<Item = Record<'r>>,
    ) -> std::result::Result<Deliveries, PartialSend> {
        let mut parts: Vec<Part> = Vec::new();
        let outcome = self
            .push_each(topic, records, |p| match (parts.last_mut(), p.slot) {
                (Some(part), None) => part.records += 1,
                (_, Some(slot)) => parts.push(Part { slot, partition: p.partition, first_index: p.index, records: 1 }),
                (None, None) => unreachable!("the first record of a call gets its batch's slot"),
            })
            .await;
        match outcome {
            Ok(()) => Ok(Deliveries { parts }),
            Err(error) => Err(PartialSend { error, queued: Deliveries { parts } }),
        }
    }

    /// The one path in: takes each record into its batch and tells
    /// `placed` where it went (with the batch's slot when it differs from
    /// the previous record's), waiting for buffer space when there is none.
    /// Records are pulled from the caller's iterator 64 at a time outside
    /// the lock, so a slow or panicking iterator never holds up the sender.
    async fn push_each<'r>(
        &self,
        topic: &str,
        records: impl IntoIterator<Item = Record<'r>>,
        mut placed: impl FnMut(Placed),
    ) -> Result<()> {
        let t = self.topic(topic).await?;
        let inner = &self.inner;
        let mut records = records.into_iter();
        let mut chunk = [Record::default(); PUSH_CHUNK_RECORDS];
        // chunk[at..len] is still to be taken.
        let (mut at, mut len) = (0, 0);
        let mut timestamp = None;
        // The batch of the previous record: a record in the same batch
        // extends its part, no slot clone.
        let mut known = None;
        loop {
            if at == len {
                (at, len) = (0, 0);
                for r in records.by_ref().take(PUSH_CHUNK_RECORDS) {
                    chunk[len] = r;
                    len += 1;
                }
                if len == 0 {
                    return Ok(());
                }
                // The lock was let go since the last record: others may
                // have joined its batch, so this chunk starts a part of
                // its own (one slot clone per chunk at most).
                known = None;
            }
            if timestamp.is_none() && chunk[at..len].iter().any(|r| r.timestamp.is_none()) {
                timestamp = Some(now());
            }
            let stand_in = timestamp.unwrap_or(Timestamp(0));
            let space = inner.space.notified();
            let mut wake = false;
            let mut refused = None;
            {
                let mut acc = self.inner.lock();
                while at < len {
                    match acc.push(t, &chunk[at], stand_in, known) {
                        Ok(p) => {
                            wake |= p.wake;
                            known = Some(p.seq);
                            placed(p);
                            at += 1;
                        }
                        Err(r) => {
                            refused = Some(r);
                            break;
                        }
                    }
                }
            }
            match refused {
                None => {}
                Some(Refused::Invalid(e)) => {
                    if wake {
                        inner.wake.notify_one();
                    }
                    return Err(e);
                }
                Some(Refused::Full) => {
                    if inner.closed.load(Ordering::Acquire) {
                        return Err(ClientError::Closed);
                    }
                    // While this waits, every open batch is due: the sender
                    // ships them so their acknowledgements free the space.
                    let _waiting = SpaceWaiter::new(&inner.space_waiters);
                    inner.wake.notify_one();
                    space.await;
                    // Others may have joined the batch meanwhile: what
                    // follows starts a part of its own.
                    known = None;
                    continue;
                }
            }
            if wake {
                inner.wake.notify_one();
            }
        }
    }

    /// Sends everything queued so far and waits until each of those records
    /// is acknowledged or failed (records sent meanwhile do not hold it up).
    pub async fn flush(&self) {
        let below = {
            let mut acc = self.inner.lock();
            acc.flush_below = acc.unsettled.last().map_or(0, |s| s + 1).max(acc.flush_below);
            acc.flush_below
        };
        self.inner.wake.notify_one();
        loop {
            let settled = self.inner.settled.notified();
            if self.inner.lock().unsettled.first().is_none_or(|&s| s >= below) {
                return;
            }
            settled.await;
        }
    }

    /// Batches sent again after a retriable failure, so far.
    pub fn retries(&self) -> u64 {
        self.inner.stats.retries.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> ProducerStats {
        let s = &self.inner.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ProducerStats {
            batches: get(&s.batches),
            records: get(&s.records),
            retries: get(&s.retries),
            queue_time_us: get(&s.queue_time_us),
            request_time_us: get(&s.request_time_us),
            queue_time_us_max: get(&s.queue_time_us_max),
            request_time_us_max: get(&s.request_time_us_max),
        }
    }

    /// Flushes, then refuses further sends.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.space.notify_waiters();
        self.flush().await;
    }
}
