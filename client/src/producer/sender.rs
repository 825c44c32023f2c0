//! The sender task: takes batches that are due whenever a shard they belong
//! to has a free send slot (`requests_in_flight_max` per shard, and per
//! partition), finishes their encoding, and sends them, one request per
//! shard. A shard's slot stays taken through retries, so with one slot a
//! partition's batches land in order even when some are retried. Its work
//! is per batch and per request, never per record.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::api::{Acks, ProducePartition, ProduceRequest, ProduceTopic, Request, Response};
use protocol::types::Offset;

use super::accumulator::{Accumulator, OpenBatch};
use super::{BatchSlot, Inner};
use crate::client::{Route, is_metadata_error, is_routing_error, unexpected};
use crate::conn::PendingCall;
use crate::error::{ClientError, Result};

/// A batch whose bytes are final, on its way to the broker.
struct ReadyBatch {
    topic_index: usize,
    topic: Arc<str>,
    partition: u32,
    bytes: Bytes,
    buffered_bytes: usize,
    records: u32,
    slot: Arc<BatchSlot>,
    seq: u64,
    /// When its first request went out.
    sent_at: Option<Instant>,
}

/// Batches bound for one route (a leader's shard, or the bootstrap connection).
type RouteBatches = (Route, Vec<ReadyBatch>);

pub(super) async fn run(weak: Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let (taken, next) = {
            let mut acc = inner.lock();
            take_due(&inner, &mut acc)
        };
        // Encoding ends outside the lock: sends go on meanwhile.
        let groups: Vec<RouteBatches> = taken.into_iter().map(encode_group).collect();
        if groups.is_empty() {
            // `notify_one` leaves a permit when no one waits: no wake-up (a
            // batch opened or closed, a flush, a freed slot) is lost between
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
        for (shard, mut batches) in groups {
            // Queue the request here, in the order the batches were taken, so
            // one partition's batches reach the broker in order; only the
            // wait for the answer runs concurrently.
            let sent_at = Instant::now();
            for b in &mut batches {
                b.sent_at = Some(sent_at);
            }
            let started = start_by_shard(&inner, &batches).await;
            let inner = inner.clone();
            tokio::spawn(async move {
                // The slots go back however this task ends.
                let _slots = Slots {
                    inner: inner.clone(),
                    shard,
                    partitions: batches.iter().map(|b| (b.topic_index, b.partition)).collect(),
                };
                let outcomes = finish(&inner, &batches, started).await;
                retry_failed(&inner, batches, outcomes).await;
            });
        }
    }
}

/// A request's send slots, given back when dropped.
struct Slots {
    inner: Arc<Inner>,
    shard: Route,
    partitions: Vec<(usize, u32)>,
}

impl Drop for Slots {
    fn drop(&mut self) {
        release(&self.inner, self.shard, &self.partitions);
    }
}

/// Gives back a request's send slots: its shard's, and its partitions'.
fn release(inner: &Inner, shard: Route, partitions: &[(usize, u32)]) {
    {
        let mut acc = inner.lock();
        if let Some(n) = acc.route_in_flight.get_mut(&shard) {
            *n -= 1;
        }
        for &(t, p) in partitions {
            acc.topics[t].in_flight[p as usize] -= 1;
        }
    }
    inner.wake.notify_one();
}

/// A batch taken for sending, not yet encoded.
struct TakenBatch {
    topic: usize,
    name: Arc<str>,
    partition: u32,
    batch: OpenBatch,
}

/// One shard's request in the making.
struct Taken {
    shard: Route,
    /// Encoded bytes of its batches so far.
    bytes: usize,
    batches: Vec<TakenBatch>,
}

/// Takes every batch that is due and whose shard and partition have a free
/// send slot: closed ones in order, and open ones past `linger` (all of
/// them with `linger = 0`, those a flush waits for, and every one while a
/// send waits for buffer space), oldest first; at most one batch of a
/// partition per request, so a retried batch never lands after a later
/// one (with one slot per shard). Takes the slots, and returns the
/// batches by shard and the time the next open batch with room falls due.
fn take_due(inner: &Inner, acc: &mut Accumulator) -> (Vec<Taken>, Option<Instant>) {
    let slots_max = inner.config.requests_in_flight_max as u32;
    let bytes_max = inner.config.request_bytes_max;
    let linger = inner.config.linger;
    let now = Instant::now();
    let client = &inner.client;
    // Shards are looked up once per batch and cached for this pass.
    let mut shards: HashMap<(usize, u32), Route> = HashMap::new();
    let mut route_of = |acc: &Accumulator, t: usize, p: u32| {
        *shards.entry((t, p)).or_insert_with(|| client.route_of(&acc.topics[t].name, p))
    };
    let mut groups: Vec<Taken> = Vec::new();
    let room = |acc: &Accumulator, groups: &[Taken], shard: Route, t: usize, p: u32| {
        let room_on_shard = match groups.iter().find(|g| g.shard == shard) {
            // This pass already takes one of the shard's slots.
            Some(g) => g.bytes < bytes_max && !g.batches.iter().any(|b| b.topic == t && b.partition == p),
            None => (acc.route_in_flight.get(&shard).copied().unwrap_or(0) as u32) < slots_max,
        };
        room_on_shard && acc.topics[t].in_flight[p as usize] < slots_max
    };
    let add = |groups: &mut Vec<Taken>, acc: &Accumulator, shard: Route, t: usize, p: u32, batch: OpenBatch| {
        let i = groups.iter().position(|g| g.shard == shard).unwrap_or_else(|| {
            groups.push(Taken { shard, bytes: 0, batches: Vec::new() });
            groups.len() - 1
        });
        groups[i].bytes += batch.encoder.encoded_bytes();
        groups[i].batches.push(TakenBatch { topic: t, name: acc.topics[t].name.clone(), partition: p, batch });
    };
    let mut kept = VecDeque::new();
    while let Some(closed) = acc.closed.pop_front() {
        let shard = route_of(acc, closed.topic, closed.partition);
        if room(acc, &groups, shard, closed.topic, closed.partition) {
            add(&mut groups, acc, shard, closed.topic, closed.partition, closed.batch);
        } else {
            kept.push_back(closed);
        }
    }
    acc.closed = kept;
    let exhausted = inner.space_waiters.load(Ordering::Acquire) > 0;
    let mut due: Vec<(u64, usize, u32)> = acc
        .open_batches()
        .filter(|(_, _, b)| exhausted || b.seq < acc.flush_below || now.duration_since(b.slot.opened_at) >= linger)
        .map(|(t, p, b)| (b.seq, t, p))
        .collect();
    // Oldest first, so a request cut short by its size limit takes the
    // batches that waited longest.
    due.sort_unstable();
    for (_, t, p) in due {
        let shard = route_of(acc, t, p);
        if room(acc, &groups, shard, t, p) {
            let batch = acc.take_open(t, p).expect("listed");
            add(&mut groups, acc, shard, t, p, batch);
        }
    }
    let mut next = None;
    let open: Vec<(usize, u32, Instant)> = acc.open_batches().map(|(t, p, b)| (t, p, b.slot.opened_at)).collect();
    for (t, p, opened) in open {
        let shard = route_of(acc, t, p);
        if room(acc, &groups, shard, t, p) {
            next = Some(next.map_or(opened + linger, |n: Instant| n.min(opened + linger)));
        }
    }
    let closed: Vec<(usize, u32)> = acc.closed.iter().map(|c| (c.topic, c.partition)).collect();
    if closed.into_iter().any(|(t, p)| {
        let shard = route_of(acc, t, p);
        room(acc, &groups, shard, t, p)
    }) {
        next = Some(now);
    }
    // The slots are taken now, before the requests go out.
    for g in &groups {
        *acc.route_in_flight.entry(g.shard).or_insert(0) += 1;
        for b in &g.batches {
            acc.topics[b.topic].in_flight[b.partition as usize] += 1;
        }
    }
    (groups, next)
}

/// Finishes the encoding of a shard's taken batches. It cannot fail: a
/// batch is never empty (a refused record takes a batch opened for it
/// away again) and `push` keeps it within what 32-bit pointers reach.
fn encode_group(taken: Taken) -> RouteBatches {
    let Taken { shard, batches, .. } = taken;
    let ready = batches
        .into_iter()
        .map(|TakenBatch { topic: topic_index, name: topic, partition, batch }| {
            let OpenBatch { mut encoder, slot, buffered_bytes, seq } = batch;
            let records = encoder.len() as u32;
            let bytes = Bytes::from(encoder.finish().expect("a batch is never empty, and never past 2 GiB"));
            ReadyBatch { topic_index, topic, partition, bytes, buffered_bytes, records, slot, seq, sent_at: None }
        })
        .collect();
    (shard, ready)
}

fn max(a: &AtomicU64, v: u64) {
    a.fetch_max(v, Ordering::Relaxed);
}

/// Completes a batch: its records resolve, its bytes leave the buffer.
fn settle(inner: &Inner, batch: &ReadyBatch, result: Result<Option<Offset>>) {
    // In this order: whoever sees the batch complete (a delivery) or
    // settled (a flush) also sees it in the stats.
    let s = &inner.stats;
    s.batches.fetch_add(1, Ordering::Relaxed);
    s.records.fetch_add(u64::from(batch.records), Ordering::Relaxed);
    if let Some(sent) = batch.sent_at {
        let queued = sent.saturating_duration_since(batch.slot.opened_at).as_micros() as u64;
        let request = sent.elapsed().as_micros() as u64;
        s.queue_time_us.fetch_add(queued, Ordering::Relaxed);
        s.request_time_us.fetch_add(request, Ordering::Relaxed);
        max(&s.queue_time_us_max, queued);
        max(&s.request_time_us_max, request);
    }
    batch.slot.complete(result, batch.sent_at);
    {
        let mut acc = inner.lock();
        acc.buffered_bytes -= batch.buffered_bytes;
        acc.unsettled.remove(&batch.seq);
    }
    inner.space.notify_waiters();
    inner.settled.notify_waiters();
}

/// Attempts on which an unknown topic or partition is tried again (a
/// leader that has not yet applied a topic's creation).
const UNKNOWN_TOPIC_RETRIES: u32 = 5;

/// Settles what succeeded or failed for good; retries the rest with backoff.
async fn retry_failed(inner: &Arc<Inner>, mut batches: Vec<ReadyBatch>, mut outcomes: Vec<Result<Option<Offset>>>) {
    let config = &inner.config;
    let mut backoff = config.retry_backoff;
    for attempt in 1..=config.retries + 1 {
        let last = attempt > config.retries;
        let mut retry = Vec::new();
        let mut moved: Vec<Arc<str>> = Vec::new();
        for (batch, outcome) in batches.into_iter().zip(outcomes) {
            match outcome {
                // A leader that has not applied a topic the metadata named
                // yet says it is unknown: a few tries, then it is believed.
                Err(e)
                    if !last && (e.is_retriable() || (is_metadata_error(&e) && attempt <= UNKNOWN_TOPIC_RETRIES)) =>
                {
                    if (is_routing_error(&e) || is_metadata_error(&e)) && !moved.contains(&batch.topic) {
                        moved.push(batch.topic.clone());
                    }
                    retry.push(batch);
                }
                Err(e) => {
                    if is_metadata_error(&e) {
                        inner.client.forget_topic(&batch.topic);
                        inner.lock().mark_stale(&batch.topic);
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
        inner.stats.retries.fetch_add(retry.len() as u64, Ordering::Relaxed);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(config.retry_backoff_max);
        // A leader moved or died: learn where the partitions are now.
        for topic in &moved {
            inner.client.refresh(topic).await;
        }
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
    let mut groups: Vec<(Route, Vec<usize>)> = Vec::new();
    for (i, b) in batches.iter().enumerate() {
        let shard = inner.client.route_of(&b.topic, b.partition);
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
            match topics.iter_mut().find(|t| *t.name == *b.topic) {
                Some(t) => t.partitions.push(part),
                None => topics.push(ProduceTopic { name: b.topic.to_string(), partitions: vec![part] }),
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
    // A little past the broker's own bound (it answers REQUEST_TIMED_OUT
    // then), but not much: a frozen broker answers nothing.
    let wait = inner.config.request_timeout + Duration::from_millis(500);
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
                        if let Some(hint) = p.leader {
                            inner.client.learn_leader(&t.name, p.partition, hint.node, hint.epoch);
                        }
                        results.entry((t.name.as_str(), p.partition)).or_default().push_back((p.error, p.base_offset));
                    }
                }
                for &i in &idx {
                    let b = &batches[i];
                    out[i] = Some(match results.get_mut(&(&*b.topic, b.partition)).and_then(VecDeque::pop_front) {
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
