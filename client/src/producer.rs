//! The producer: records are grouped per partition into batches; a sender
//! task takes batches that are full (`batch_bytes_max`) or old enough
//! (`linger`; with 0, any waiting batch) whenever one of its
//! `requests_in_flight_max` request slots is free, and sends them together
//! in one request (Kafka's design). While every slot is busy, records keep
//! joining their partitions' batches, so a loaded producer batches by itself
//! even with `linger = 0`.
//!
//! Partitioning: an explicit partition wins; a keyed record goes to
//! `protocol::partitioner::partition_for_key` (Kafka's murmur2 rule, so one
//! key always lands on one partition); an unkeyed record sticks to one
//! partition until that partition's batch ships, then moves round-robin to
//! the next (Kafka's sticky partitioner: big batches, even spread).
//!
//! Order: batches are queued on their connections in the order they were
//! taken, so without failures one partition's batches land in the order
//! sent. Retriable failures are retried with exponential backoff. As in
//! Kafka without idempotence, a retried batch may land twice if the first
//! attempt's acknowledgement was lost; with `requests_in_flight_max` above 1
//! it may also land after a later batch of the same partition (the default,
//! 1, keeps order across retries).
//!
//! Memory is bounded: `send` waits while `buffer_bytes_max` bytes of
//! records are unacknowledged. Dropping the last handle fails the records
//! not yet sent with `Closed`.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use protocol::api::{Acks, ProducePartition, ProduceRequest, ProduceTopic, Request, Response};
use protocol::batch::{BatchBuilder, RecordHeader, RecordInput};
use protocol::partitioner::partition_for_key;
use protocol::types::{Offset, Timestamp};
use tokio::sync::{Notify, Semaphore};

use crate::client::{Client, is_metadata_error, unexpected};
use crate::conn::PendingCall;
use crate::error::{ClientError, Result};

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub acks: Acks,
    /// How long a batch waits for more records before it ships.
    pub linger: Duration,
    /// A partition's batch ships once its records hold this many bytes.
    pub batch_bytes_max: usize,
    /// Unacknowledged record bytes before `send` waits.
    pub buffer_bytes_max: usize,
    /// One request carries at most this many bytes of batches.
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
            acks: Acks::Leader,
            linger: Duration::from_millis(5),
            batch_bytes_max: 256 << 10,
            buffer_bytes_max: 64 << 20,
            request_bytes_max: 4 << 20,
            requests_in_flight_max: 1,
            retries: 5,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A record to send.
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

/// Where an acknowledged record landed; `offset` is `None` with acks `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    pub partition: u32,
    pub offset: Option<Offset>,
    /// When the producer received the acknowledgement (for latency measurements).
    pub acknowledged_at: Instant,
}

/// The outcome of one batch, shared by its records.
#[derive(Default)]
struct BatchSlot {
    result: OnceLock<(Result<Option<Offset>>, Instant)>,
    notify: Notify,
}

impl BatchSlot {
    fn complete(&self, r: Result<Option<Offset>>) {
        let _ = self.result.set((r, Instant::now()));
        self.notify.notify_waiters();
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
        loop {
            let notified = self.slot.notify.notified();
            if let Some((r, at)) = self.slot.result.get() {
                return match r {
                    Ok(base) => Ok(RecordMetadata {
                        partition: self.partition,
                        offset: base.map(|b| Offset(b.0 + u64::from(self.index))),
                        acknowledged_at: *at,
                    }),
                    Err(e) => Err(e.clone()),
                };
            }
            notified.await;
        }
    }
}

struct OpenBatch {
    builder: BatchBuilder,
    bytes: usize,
    created: Instant,
    slot: Arc<BatchSlot>,
    /// Order of opening, for `flush`.
    seq: u64,
}

struct ReadyBatch {
    topic: String,
    partition: u32,
    bytes: Bytes,
    record_bytes: usize,
    slot: Arc<BatchSlot>,
    seq: u64,
}

#[derive(Default)]
struct Accumulator {
    open: HashMap<(String, u32), OpenBatch>,
    /// Batches that reached `batch_bytes_max`, oldest first.
    full: VecDeque<((String, u32), OpenBatch)>,
    next_seq: u64,
    /// Open batches with a lower sequence number are due now (a flush).
    flush_below: u64,
    /// The partition unkeyed records of a topic stick to, until its batch ships.
    sticky: HashMap<String, u32>,
    next_sticky: u32,
}

struct Inner {
    client: Client,
    config: ProducerConfig,
    acc: Mutex<Accumulator>,
    /// Wakes the sender: a batch filled, a record arrived, a flush, or the
    /// last handle went. Shared so the sender can wait without holding `Inner`.
    wake: Arc<Notify>,
    memory: Arc<Semaphore>,
    /// Sequence numbers of batches opened and not yet settled.
    unsettled: Mutex<BTreeSet<u64>>,
    /// Sends in flight per shard (`None`: the bootstrap connection).
    busy: Mutex<HashMap<Option<u32>, usize>>,
    /// Batches in flight per partition.
    partitions_busy: Mutex<HashMap<(String, u32), usize>>,
    settled: Notify,
    closed: AtomicBool,
    /// Batches sent again after a retriable failure.
    retries: AtomicU64,
}

impl Drop for Inner {
    /// The last handle is gone: nothing will send what is still queued.
    fn drop(&mut self) {
        let acc = self.acc.get_mut().expect("not poisoned");
        for (_, batch) in acc.open.drain().chain(acc.full.drain(..)) {
            batch.slot.complete(Err(ClientError::Closed));
        }
        self.wake.notify_one();
    }
}

#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

/// Bytes a record costs beyond its key, value and headers (archive framing).
const RECORD_OVERHEAD_BYTES: usize = 40;

impl Producer {
    pub fn new(client: Client, config: ProducerConfig) -> Producer {
        assert!(config.batch_bytes_max > 0 && config.buffer_bytes_max >= config.batch_bytes_max);
        assert!(config.requests_in_flight_max > 0);
        let inner = Arc::new(Inner {
            client,
            memory: Arc::new(Semaphore::new(config.buffer_bytes_max)),
            config,
            acc: Mutex::new(Accumulator::default()),
            wake: Arc::new(Notify::new()),
            unsettled: Mutex::new(BTreeSet::new()),
            busy: Mutex::new(HashMap::new()),
            partitions_busy: Mutex::new(HashMap::new()),
            settled: Notify::new(),
            closed: AtomicBool::new(false),
            retries: AtomicU64::new(0),
        });
        tokio::spawn(send_loop(Arc::downgrade(&inner)));
        Producer { inner }
    }

    /// Queues a record; the returned [`Delivery`] resolves once the broker
    /// acknowledged it. Waits while the producer's buffer is full.
    pub async fn send(&self, record: ProducerRecord) -> Result<Delivery> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(ClientError::Closed);
        }
        let partitions = inner.client.partitions(&record.topic).await?;
        if let Some(p) = record.partition
            && p >= partitions
        {
            return Err(ClientError::InvalidArgument(format!(
                "topic {} has {partitions} partitions; {p} is not one",
                record.topic
            )));
        }
        let size = RECORD_OVERHEAD_BYTES
            + record.key.as_ref().map_or(0, Bytes::len)
            + record.value.as_ref().map_or(0, Bytes::len)
            + record.headers.iter().map(|(k, v)| k.len() + v.len() + 16).sum::<usize>();
        let size = size.min(inner.config.buffer_bytes_max);
        inner.memory.acquire_many(size as u32).await.map_err(|_| ClientError::Closed)?.forget();
        let timestamp = record.timestamp.unwrap_or_else(now);
        let input = RecordInput {
            key: record.key.as_deref().map(<[u8]>::to_vec),
            value: record.value.as_deref().map(<[u8]>::to_vec),
            headers: record.headers.iter().map(|(k, v)| RecordHeader { key: k.clone(), value: v.to_vec() }).collect(),
            timestamp,
        };
        let mut acc = inner.acc.lock().expect("not poisoned");
        let partition = match (record.partition, &record.key) {
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => match acc.sticky.get(&record.topic) {
                Some(&p) if p < partitions => p,
                _ => {
                    let p = acc.next_sticky % partitions;
                    acc.next_sticky = acc.next_sticky.wrapping_add(1);
                    acc.sticky.insert(record.topic.clone(), p);
                    p
                }
            },
        };
        let key = (record.topic.clone(), partition);
        if !acc.open.contains_key(&key) {
            let seq = acc.next_seq;
            acc.next_seq += 1;
            inner.unsettled.lock().expect("not poisoned").insert(seq);
            let batch = OpenBatch {
                builder: BatchBuilder::new(),
                bytes: 0,
                created: Instant::now(),
                slot: Arc::default(),
                seq,
            };
            acc.open.insert(key.clone(), batch);
        }
        let batch = acc.open.get_mut(&key).expect("just ensured");
        let index = batch.builder.len() as u32;
        batch.builder.push(input);
        batch.bytes += size;
        let delivery = Delivery { slot: batch.slot.clone(), partition, index };
        let full = batch.bytes >= inner.config.batch_bytes_max;
        if full {
            let batch = acc.open.remove(&key).expect("just used");
            if acc.sticky.get(&key.0) == Some(&key.1) {
                acc.sticky.remove(&key.0);
            }
            acc.full.push_back((key, batch));
        }
        let first = index == 0;
        drop(acc);
        if full || first {
            inner.wake.notify_one();
        }
        Ok(delivery)
    }

    /// Sends everything queued so far and waits until each of those records
    /// is acknowledged or failed (records sent meanwhile do not hold it up).
    pub async fn flush(&self) {
        let below = {
            let mut acc = self.inner.acc.lock().expect("not poisoned");
            acc.flush_below = acc.next_seq;
            acc.next_seq
        };
        self.inner.wake.notify_one();
        loop {
            let settled = self.inner.settled.notified();
            if self.inner.unsettled.lock().expect("not poisoned").first().is_none_or(|&s| s >= below) {
                return;
            }
            settled.await;
        }
    }

    /// Batches sent again after a retriable failure, so far.
    pub fn retries(&self) -> u64 {
        self.inner.retries.load(Ordering::Relaxed)
    }

    /// Flushes, then refuses further sends.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.flush().await;
    }
}

fn now() -> Timestamp {
    Timestamp(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64))
}

/// A topic and one of its partitions.
type PartitionKey = (String, u32);

/// Batches bound for one shard (`None`: the bootstrap connection).
type ShardBatches = (Option<u32>, Vec<ReadyBatch>);

/// Takes every batch that is due and whose shard has a free send slot:
/// full ones, and open ones past `linger` (all of them with `linger = 0`,
/// and those a flush waits for). Returns the batches by shard, and the time
/// the next open batch of a shard with room falls due.
fn take_due(
    inner: &Inner,
    acc: &mut Accumulator,
    has_room: &dyn Fn(Option<u32>, &PartitionKey) -> bool,
) -> (Vec<ShardBatches>, Option<Instant>) {
    let bytes_max = inner.config.request_bytes_max;
    let mut groups: Vec<(Option<u32>, usize, Vec<ReadyBatch>)> = Vec::new();
    let shard_of = |key: &(String, u32)| inner.client.shard_of(&key.0, key.1);
    let take = |groups: &mut Vec<(Option<u32>, usize, Vec<ReadyBatch>)>, key: (String, u32), batch: OpenBatch| {
        let shard = shard_of(&key);
        let i = groups.iter().position(|(s, _, _)| *s == shard).unwrap_or_else(|| {
            groups.push((shard, 0, Vec::new()));
            groups.len() - 1
        });
        groups[i].1 += batch.bytes;
        groups[i].2.extend(encode(inner, key.0, key.1, batch));
    };
    let group_bytes = |groups: &Vec<(Option<u32>, usize, Vec<ReadyBatch>)>, shard: Option<u32>| {
        groups.iter().find(|(s, _, _)| *s == shard).map_or(0, |(_, b, _)| *b)
    };
    // Full batches in order; those of a busy shard keep their place.
    let mut kept = VecDeque::new();
    while let Some((key, batch)) = acc.full.pop_front() {
        let shard = shard_of(&key);
        if has_room(shard, &key) && group_bytes(&groups, shard) < bytes_max {
            take(&mut groups, key, batch);
        } else {
            kept.push_back((key, batch));
        }
    }
    acc.full = kept;
    let linger = inner.config.linger;
    let now = Instant::now();
    let mut due: Vec<((String, u32), u64)> = acc
        .open
        .iter()
        .filter(|(k, b)| {
            (b.seq < acc.flush_below || now.duration_since(b.created) >= linger) && has_room(shard_of(k), k)
        })
        .map(|(k, b)| (k.clone(), b.seq))
        .collect();
    // Oldest first, so a request cut short by its size limit takes the
    // batches that waited longest.
    due.sort_by_key(|(_, seq)| *seq);
    for (key, _) in due {
        if group_bytes(&groups, shard_of(&key)) >= bytes_max {
            continue;
        }
        let batch = acc.open.remove(&key).expect("listed");
        if acc.sticky.get(&key.0) == Some(&key.1) {
            acc.sticky.remove(&key.0);
        }
        take(&mut groups, key, batch);
    }
    let next = acc.open.iter().filter(|(k, _)| has_room(shard_of(k), k)).map(|(_, b)| b.created + linger).min();
    let next = if acc.full.iter().any(|(k, _)| has_room(shard_of(k), k)) { Some(now) } else { next };
    (groups.into_iter().filter(|(_, _, b)| !b.is_empty()).map(|(s, _, b)| (s, b)).collect(), next)
}

/// Encodes a batch; a batch that cannot be encoded fails its records.
fn encode(inner: &Inner, topic: String, partition: u32, batch: OpenBatch) -> Option<ReadyBatch> {
    let record_bytes = batch.bytes;
    match batch.builder.build() {
        Ok(bytes) => Some(ReadyBatch {
            topic,
            partition,
            bytes: Bytes::from(bytes),
            record_bytes,
            slot: batch.slot,
            seq: batch.seq,
        }),
        Err(e) => {
            let ready =
                ReadyBatch { topic, partition, bytes: Bytes::new(), record_bytes, slot: batch.slot, seq: batch.seq };
            settle(inner, &ready, Err(ClientError::InvalidArgument(e.to_string())));
            None
        }
    }
}

fn settle(inner: &Inner, batch: &ReadyBatch, result: Result<Option<Offset>>) {
    batch.slot.complete(result);
    inner.memory.add_permits(batch.record_bytes.min(inner.config.buffer_bytes_max));
    inner.unsettled.lock().expect("not poisoned").remove(&batch.seq);
    inner.settled.notify_waiters();
}

/// Takes due batches whenever a shard they belong to has a free send slot
/// (`requests_in_flight_max` per shard) and sends them, one request per
/// shard. A shard's slot stays taken through retries, so with one slot a
/// partition's batches land in order even when some are retried.
async fn send_loop(weak: std::sync::Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let slots_max = inner.config.requests_in_flight_max;
        let (groups, next) = {
            let busy = inner.busy.lock().expect("not poisoned").clone();
            let partitions = inner.partitions_busy.lock().expect("not poisoned").clone();
            // Room on the shard's connection, and for the partition itself:
            // a partition's batches never overtake each other, even if its
            // shard becomes unknown (and its batches go to the bootstrap
            // connection) while one is being retried.
            let has_room = |shard: Option<u32>, key: &(String, u32)| {
                busy.get(&shard).copied().unwrap_or(0) < slots_max
                    && partitions.get(key).copied().unwrap_or(0) < slots_max
            };
            let mut acc = inner.acc.lock().expect("not poisoned");
            take_due(&inner, &mut acc, &has_room)
        };
        if groups.is_empty() {
            // `notify_one` leaves a permit when no one waits: no wake-up (a
            // record, a full batch, a flush, a freed slot) is lost between
            // the check above and this wait.
            let wake = inner.wake.clone();
            let wake = wake.notified();
            // Waiting must not keep the producer alive: its last handle
            // dropping is what fails the records still queued.
            drop(inner);
            match next {
                Some(at) => {
                    let _ = tokio::time::timeout_at(at.into(), wake).await;
                }
                None => wake.await,
            }
            continue;
        }
        for (shard, batches) in groups {
            *inner.busy.lock().expect("not poisoned").entry(shard).or_insert(0) += 1;
            {
                let mut partitions = inner.partitions_busy.lock().expect("not poisoned");
                for b in &batches {
                    *partitions.entry((b.topic.clone(), b.partition)).or_insert(0) += 1;
                }
            }
            let keys: Vec<(String, u32)> = batches.iter().map(|b| (b.topic.clone(), b.partition)).collect();
            // Queue the request here, in the order the batches were taken, so
            // one partition's batches reach the broker in order; only the
            // wait for the answer runs concurrently.
            let started = start_by_shard(&inner, &batches).await;
            let inner = inner.clone();
            tokio::spawn(async move {
                let outcomes = finish(&inner, &batches, started).await;
                retry_failed(&inner, batches, outcomes).await;
                if let Some(n) = inner.busy.lock().expect("not poisoned").get_mut(&shard) {
                    *n -= 1;
                }
                {
                    let mut partitions = inner.partitions_busy.lock().expect("not poisoned");
                    for key in keys {
                        if let Some(n) = partitions.get_mut(&key) {
                            *n -= 1;
                            if *n == 0 {
                                partitions.remove(&key);
                            }
                        }
                    }
                }
                inner.wake.notify_one();
            });
        }
    }
}

/// Settles what succeeded or failed for good; retries the rest with backoff.
async fn retry_failed(inner: &Arc<Inner>, mut batches: Vec<ReadyBatch>, mut outcomes: Vec<Result<Option<Offset>>>) {
    let config = &inner.config;
    let mut backoff = config.retry_backoff;
    for attempt in 1..=config.retries + 1 {
        let last = attempt > config.retries;
        let mut retry = Vec::new();
        for (batch, outcome) in batches.into_iter().zip(outcomes) {
            match outcome {
                Err(e) if !last && e.is_retriable() => retry.push(batch),
                Err(e) => {
                    if is_metadata_error(&e) {
                        inner.client.forget_topic(&batch.topic);
                    }
                    settle(inner, &batch, Err(e));
                }
                Ok(offset) => settle(inner, &batch, Ok(offset)),
            }
        }
        if retry.is_empty() {
            return;
        }
        tracing::debug!(batches = retry.len(), attempt, "retrying produce");
        inner.retries.fetch_add(retry.len() as u64, Ordering::Relaxed);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(config.retry_backoff_max);
        batches = retry;
        let started = start_by_shard(inner, &batches).await;
        outcomes = finish(inner, &batches, started).await;
    }
}

/// A request queued on a connection, or why it could not be.
enum Started {
    Pending(PendingCall),
    /// acks `none`: sent, and no answer will come.
    Sent,
    Failed(ClientError),
}

/// Queues one produce request per owning shard, on that shard's connection.
async fn start_by_shard(inner: &Inner, batches: &[ReadyBatch]) -> Vec<(Vec<usize>, Started)> {
    let mut groups: Vec<(Option<u32>, Vec<usize>)> = Vec::new();
    for (i, b) in batches.iter().enumerate() {
        let shard = inner.client.shard_of(&b.topic, b.partition);
        match groups.iter_mut().find(|(s, _)| *s == shard) {
            Some((_, v)) => v.push(i),
            None => groups.push((shard, vec![i])),
        }
    }
    let config = &inner.config;
    let mut started = Vec::with_capacity(groups.len());
    for (shard, idx) in groups {
        let mut topics: Vec<ProduceTopic> = Vec::new();
        for &i in &idx {
            let b = &batches[i];
            let part = ProducePartition { partition: b.partition, batch: b.bytes.clone() };
            match topics.iter_mut().find(|t| t.name == b.topic) {
                Some(t) => t.partitions.push(part),
                None => topics.push(ProduceTopic { name: b.topic.clone(), partitions: vec![part] }),
            }
        }
        let request = Request::Produce(ProduceRequest {
            acks: config.acks,
            timeout_ms: config.request_timeout.as_millis().min(u128::from(u32::MAX)) as u32,
            topics,
        });
        let result = match inner.client.connection_for(shard).await {
            Err(e) => Started::Failed(e),
            Ok(conn) if config.acks == Acks::None => match conn.send_only(&request).await {
                Ok(()) => Started::Sent,
                Err(e) => Started::Failed(e),
            },
            Ok(conn) => match conn.start_call(&request).await {
                Ok(p) => Started::Pending(p),
                Err(e) => Started::Failed(e),
            },
        };
        started.push((idx, result));
    }
    started
}

/// Waits for the answers of started requests: one outcome per batch.
async fn finish(
    inner: &Inner,
    batches: &[ReadyBatch],
    started: Vec<(Vec<usize>, Started)>,
) -> Vec<Result<Option<Offset>>> {
    let wait = inner.config.request_timeout + Duration::from_secs(5);
    let answers = futures::future::join_all(started.into_iter().map(|(idx, s)| async move {
        let outcome = match s {
            Started::Failed(e) => Err(e),
            Started::Sent => Ok(None),
            Started::Pending(p) => match tokio::time::timeout(wait, p.finish()).await {
                Err(_) => Err(ClientError::Timeout(wait.as_millis() as u64)),
                Ok(r) => r.map(Some),
            },
        };
        (idx, outcome)
    }))
    .await;
    let mut out: Vec<Option<Result<Option<Offset>>>> = batches.iter().map(|_| None).collect();
    for (idx, outcome) in answers {
        match outcome {
            Ok(None) => {
                for &i in &idx {
                    out[i] = Some(Ok(None));
                }
            }
            Err(e) => {
                for &i in &idx {
                    out[i] = Some(Err(e.clone()));
                }
            }
            Ok(Some(response)) => {
                let topics = match response {
                    Response::Produce(t) => t,
                    other => {
                        let e = unexpected(&other);
                        for &i in &idx {
                            out[i] = Some(Err(e.clone()));
                        }
                        continue;
                    }
                };
                // Batches of one partition are answered in request order.
                let mut results: HashMap<(&str, u32), VecDeque<(protocol::ErrorCode, Offset)>> = HashMap::new();
                for t in &topics {
                    for p in &t.partitions {
                        results.entry((t.name.as_str(), p.partition)).or_default().push_back((p.error, p.base_offset));
                    }
                }
                for &i in &idx {
                    let b = &batches[i];
                    out[i] =
                        Some(match results.get_mut(&(b.topic.as_str(), b.partition)).and_then(VecDeque::pop_front) {
                            Some((code, offset)) if code.is_ok() => Ok(Some(offset)),
                            Some((code, _)) => {
                                Err(ClientError::broker(code, format!("producing to {}/{}", b.topic, b.partition)))
                            }
                            None => Err(ClientError::Protocol(format!("no result for {}/{}", b.topic, b.partition))),
                        });
                }
            }
        }
    }
    out.into_iter().map(|r| r.expect("every batch has an outcome")).collect()
}
