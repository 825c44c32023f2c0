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
//! Memory is bounded: `send` waits while `buffer_bytes_max` bytes of
//! records are unacknowledged. Retriable failures are retried with
//! exponential backoff; as in Kafka without idempotence, a retried batch
//! may land after a later batch of the same partition, and may land twice if
//! the first attempt's acknowledgement was lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use protocol::api::{Acks, ProducePartition, ProduceRequest, ProduceTopic, Request, Response};
use protocol::batch::{BatchBuilder, RecordHeader, RecordInput};
use protocol::partitioner::partition_for_key;
use protocol::types::{Offset, Timestamp};
use tokio::sync::{Notify, Semaphore};

use crate::client::{Client, is_metadata_error, unexpected};
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
            requests_in_flight_max: 5,
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
}

/// The outcome of one batch, shared by its records.
#[derive(Default)]
struct BatchSlot {
    result: OnceLock<Result<Option<Offset>>>,
    notify: Notify,
}

impl BatchSlot {
    fn complete(&self, r: Result<Option<Offset>>) {
        let _ = self.result.set(r);
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
            if let Some(r) = self.slot.result.get() {
                return match r {
                    Ok(base) => Ok(RecordMetadata {
                        partition: self.partition,
                        offset: base.map(|b| Offset(b.0 + u64::from(self.index))),
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
}

struct ReadyBatch {
    topic: String,
    partition: u32,
    bytes: Bytes,
    record_bytes: usize,
    slot: Arc<BatchSlot>,
}

#[derive(Default)]
struct Accumulator {
    open: HashMap<(String, u32), OpenBatch>,
    /// Batches that reached `batch_bytes_max`, oldest first.
    full: std::collections::VecDeque<((String, u32), OpenBatch)>,
    /// Set by `flush`: every open batch is due now.
    flushing: bool,
    /// The partition unkeyed records of a topic stick to, until its batch ships.
    sticky: HashMap<String, u32>,
    next_sticky: u32,
}

struct Inner {
    client: Client,
    config: ProducerConfig,
    acc: Mutex<Accumulator>,
    /// Wakes the sender: a batch filled, a record arrived, or a flush.
    wake: Notify,
    memory: Arc<Semaphore>,
    /// Batches opened and not yet completed.
    outstanding: AtomicUsize,
    settled: Notify,
    closed: AtomicBool,
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
        let inner = Arc::new(Inner {
            client,
            memory: Arc::new(Semaphore::new(config.buffer_bytes_max)),
            config,
            acc: Mutex::new(Accumulator::default()),
            wake: Notify::new(),
            outstanding: AtomicUsize::new(0),
            settled: Notify::new(),
            closed: AtomicBool::new(false),
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
        let batch = acc.open.entry(key.clone()).or_insert_with(|| {
            inner.outstanding.fetch_add(1, Ordering::AcqRel);
            OpenBatch { builder: BatchBuilder::new(), bytes: 0, created: Instant::now(), slot: Arc::default() }
        });
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

    /// Sends everything queued and waits until every batch sent so far is
    /// acknowledged or failed.
    pub async fn flush(&self) {
        self.inner.acc.lock().expect("not poisoned").flushing = true;
        self.inner.wake.notify_one();
        loop {
            let settled = self.inner.settled.notified();
            if self.inner.outstanding.load(Ordering::Acquire) == 0 {
                break;
            }
            settled.await;
        }
        self.inner.acc.lock().expect("not poisoned").flushing = false;
    }

    /// Flushes, then refuses further sends.
    pub async fn close(&self) {
        self.flush().await;
        self.inner.closed.store(true, Ordering::Release);
    }
}

fn now() -> Timestamp {
    Timestamp(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64))
}

/// Takes every batch that is due: full ones, and open ones past `linger`
/// (all of them with `linger = 0` or during a flush). Returns the time the
/// next open batch falls due, if any is left.
fn take_due(inner: &Inner, acc: &mut Accumulator, bytes_max: usize) -> (Vec<ReadyBatch>, Option<Instant>) {
    let mut out = Vec::new();
    let mut bytes = 0;
    while bytes < bytes_max {
        let Some(((topic, partition), batch)) = acc.full.pop_front() else { break };
        bytes += batch.bytes;
        out.extend(encode(inner, topic, partition, batch));
    }
    let linger = inner.config.linger;
    let now = Instant::now();
    let due: Vec<(String, u32)> = acc
        .open
        .iter()
        .filter(|(_, b)| acc.flushing || now.duration_since(b.created) >= linger)
        .map(|(k, _)| k.clone())
        .collect();
    for key in due {
        if bytes >= bytes_max {
            break;
        }
        let batch = acc.open.remove(&key).expect("listed");
        if acc.sticky.get(&key.0) == Some(&key.1) {
            acc.sticky.remove(&key.0);
        }
        bytes += batch.bytes;
        out.extend(encode(inner, key.0, key.1, batch));
    }
    let next = if acc.full.is_empty() { acc.open.values().map(|b| b.created + linger).min() } else { Some(now) };
    (out, next)
}

/// Encodes a batch; a batch that cannot be encoded fails its records.
fn encode(inner: &Inner, topic: String, partition: u32, batch: OpenBatch) -> Option<ReadyBatch> {
    let record_bytes = batch.bytes;
    match batch.builder.build() {
        Ok(bytes) => Some(ReadyBatch { topic, partition, bytes: Bytes::from(bytes), record_bytes, slot: batch.slot }),
        Err(e) => {
            settle(inner, &batch.slot, record_bytes, Err(ClientError::InvalidArgument(e.to_string())));
            None
        }
    }
}

fn settle(inner: &Inner, slot: &BatchSlot, record_bytes: usize, result: Result<Option<Offset>>) {
    slot.complete(result);
    inner.memory.add_permits(record_bytes.min(inner.config.buffer_bytes_max));
    if inner.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
        inner.settled.notify_waiters();
    }
}

async fn send_loop(weak: std::sync::Weak<Inner>) {
    let requests = {
        let Some(inner) = weak.upgrade() else { return };
        Arc::new(Semaphore::new(inner.config.requests_in_flight_max))
    };
    loop {
        // A free request slot first: until then records keep joining batches.
        let Ok(permit) = requests.clone().acquire_owned().await else { return };
        let (inner, batches) = loop {
            let Some(inner) = weak.upgrade() else { return };
            let (batches, next) = {
                let mut acc = inner.acc.lock().expect("not poisoned");
                take_due(&inner, &mut acc, inner.config.request_bytes_max)
            };
            if !batches.is_empty() {
                break (inner, batches);
            }
            // `notify_one` leaves a permit when no one waits: no wake-up is lost
            // between the check above and this wait.
            let wake = inner.wake.notified();
            match next {
                Some(at) => {
                    let _ = tokio::time::timeout_at(at.into(), wake).await;
                }
                // Wakes for new records; a dropped producer leaves the
                // weak reference dead, checked every second.
                None => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), wake).await;
                }
            }
        };
        tokio::spawn(async move {
            send_with_retries(&inner, batches).await;
            drop(permit);
        });
    }
}

/// Sends batches in one request; retries the ones that failed retriably.
async fn send_with_retries(inner: &Arc<Inner>, mut batches: Vec<ReadyBatch>) {
    let config = &inner.config;
    let mut backoff = config.retry_backoff;
    for attempt in 0..=config.retries {
        let last = attempt == config.retries;
        let outcomes = send_by_shard(inner, &batches).await;
        let mut retry = Vec::new();
        for (batch, outcome) in batches.into_iter().zip(outcomes) {
            match outcome {
                Err(e) if !last && e.is_retriable() => retry.push(batch),
                Err(e) => {
                    if is_metadata_error(&e) {
                        inner.client.forget_topic(&batch.topic);
                    }
                    settle(inner, &batch.slot, batch.record_bytes, Err(e));
                }
                Ok(offset) => settle(inner, &batch.slot, batch.record_bytes, Ok(offset)),
            }
        }
        if retry.is_empty() {
            return;
        }
        tracing::debug!(batches = retry.len(), attempt, "retrying produce");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(config.retry_backoff_max);
        batches = retry;
    }
}

/// Sends each owning shard its batches, on its own connection, all at once.
async fn send_by_shard(inner: &Inner, batches: &[ReadyBatch]) -> Vec<Result<Option<Offset>>> {
    let mut groups: Vec<(Option<u32>, Vec<usize>)> = Vec::new();
    for (i, b) in batches.iter().enumerate() {
        let shard = inner.client.shard_of(&b.topic, b.partition);
        match groups.iter_mut().find(|(s, _)| *s == shard) {
            Some((_, v)) => v.push(i),
            None => groups.push((shard, vec![i])),
        }
    }
    let sends = groups.iter().map(|(shard, idx)| {
        let group: Vec<&ReadyBatch> = idx.iter().map(|&i| &batches[i]).collect();
        async move { send_once(inner, *shard, &group).await }
    });
    let results = futures::future::join_all(sends).await;
    let mut out: Vec<Option<Result<Option<Offset>>>> = batches.iter().map(|_| None).collect();
    for ((_, idx), res) in groups.iter().zip(results) {
        for (&i, r) in idx.iter().zip(res) {
            out[i] = Some(r);
        }
    }
    out.into_iter().map(|r| r.expect("every batch has a result")).collect()
}

async fn send_once(inner: &Inner, shard: Option<u32>, batches: &[&ReadyBatch]) -> Vec<Result<Option<Offset>>> {
    let config = &inner.config;
    let mut topics: Vec<ProduceTopic> = Vec::new();
    for b in batches {
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
    let all = |e: ClientError| batches.iter().map(|_| Err(e.clone())).collect();
    let conn = match inner.client.connection_for(shard).await {
        Ok(c) => c,
        Err(e) => return all(e),
    };
    if config.acks == Acks::None {
        return match conn.send_only(&request).await {
            Ok(()) => batches.iter().map(|_| Ok(None)).collect(),
            Err(e) => all(e),
        };
    }
    let wait = config.request_timeout + Duration::from_secs(5);
    let response = match tokio::time::timeout(wait, conn.call(&request)).await {
        Err(_) => return all(ClientError::Timeout(wait.as_millis() as u64)),
        Ok(Err(e)) => return all(e),
        Ok(Ok(Response::Produce(topics))) => topics,
        Ok(Ok(other)) => return all(unexpected(&other)),
    };
    let mut results: HashMap<(&str, u32), Vec<(protocol::ErrorCode, Offset)>> = HashMap::new();
    for t in &response {
        for p in &t.partitions {
            results.entry((t.name.as_str(), p.partition)).or_default().push((p.error, p.base_offset));
        }
    }
    // Batches of one partition are answered in request order.
    for v in results.values_mut() {
        v.reverse();
    }
    batches
        .iter()
        .map(|b| match results.get_mut(&(b.topic.as_str(), b.partition)).and_then(Vec::pop) {
            Some((code, offset)) if code.is_ok() => Ok(Some(offset)),
            Some((code, _)) => Err(ClientError::broker(code, format!("producing to {}/{}", b.topic, b.partition))),
            None => Err(ClientError::Protocol(format!("no result for {}/{}", b.topic, b.partition))),
        })
        .collect()
}
