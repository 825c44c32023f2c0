//! A consumer in a queue group (docs/groups.md, "Queue groups"): any number
//! of them share a topic's records, each record locked to one consumer at a
//! time. [`QueueConsumer::poll`] sends the acks gathered since the last
//! call and acquires the next records in the same request, then reads the
//! acquired offsets from the partitions' leaders.
//!
//! The data path is the consumer's: the coordinator only says which offsets
//! are whose. Offsets with no record (compaction, control batches, records
//! the log no longer holds) are reported as gaps; records the coordinator
//! marked for the dead-letter topic (rejected, or past the delivery limit)
//! are copied there with headers naming their origin, then reported
//! dead-lettered. Delivery is at least once, and in no particular order.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use protocol::ErrorCode;
pub use protocol::api::groups::AckKind;
use protocol::api::groups::{
    AcquiredRange, DeadLetterReason, QueueAck, QueueFetchRequest, QueueFetchResponse, QueueInfo,
};
use protocol::api::{FetchPartition, FetchRequest, FetchTopic, GroupRequest, GroupResponse, Request, Response};
use protocol::types::Offset;

use crate::client::{Client, is_routing_error, unexpected};
use crate::conn::check;
use crate::error::{ClientError, Result};
use crate::record::{ConsumerRecord, decode_batch};
use crate::{Producer, ProducerConfig, ProducerRecord};

/// Header names on a dead-lettered copy.
pub const DLQ_TOPIC: &str = "cairn.dlq.topic";
pub const DLQ_PARTITION: &str = "cairn.dlq.partition";
pub const DLQ_OFFSET: &str = "cairn.dlq.offset";
pub const DLQ_REASON: &str = "cairn.dlq.reason";
pub const DLQ_DELIVERIES: &str = "cairn.dlq.deliveries";
pub const DLQ_QUEUE: &str = "cairn.dlq.queue";

/// Reads of one acquired range before it is given back.
const READ_TRIES_MAX: u32 = 20;

#[derive(Debug, Clone)]
pub struct QueueConsumerConfig {
    pub queue: String,
    pub topics: Vec<String>,
    /// How long acquired records stay locked to this consumer; unacked
    /// past it, they go to another.
    pub lock: Duration,
    /// Records acquired per poll at most.
    pub records_max: u32,
    /// How long a poll that found nothing waits before it returns.
    pub idle_wait: Duration,
    /// Ack ranges sent per call at most (the coordinator's
    /// `acks_per_call_max` refuses a call with more); the rest go with
    /// the next calls.
    pub acks_per_call_max: usize,
}

impl QueueConsumerConfig {
    pub fn new(queue: impl Into<String>, topics: &[&str]) -> QueueConsumerConfig {
        QueueConsumerConfig {
            queue: queue.into(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            lock: Duration::from_secs(30),
            records_max: 500,
            idle_wait: Duration::from_millis(100),
            acks_per_call_max: 10_000,
        }
    }
}

/// A record to process, and how often it was delivered (1 the first time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRecord {
    pub topic: String,
    pub record: ConsumerRecord,
    pub deliveries: u16,
}

/// The coordinator's answer to one ack, for `first..=last`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckResult {
    pub topic: String,
    pub partition: u32,
    pub first: u64,
    pub last: u64,
    pub kind: AckKind,
    pub error: ErrorCode,
}

fn member_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("q-{:x}-{:x}-{}", std::process::id(), nanos, NEXT.fetch_add(1, Ordering::Relaxed))
}

pub struct QueueConsumer {
    client: Client,
    config: QueueConsumerConfig,
    member: String,
    /// Acks not yet sent, by (topic, partition, offset).
    pending: BTreeMap<(String, u32, u64), AckKind>,
    /// Records returned by `poll` and not yet acked.
    held: BTreeMap<(String, u32, u64), u16>,
    results: Vec<AckResult>,
    producer: Option<Producer>,
    dead_letter_topic: Option<String>,
}

impl QueueConsumer {
    pub fn new(client: Client, config: QueueConsumerConfig) -> Result<QueueConsumer> {
        if config.topics.is_empty() {
            return Err(ClientError::InvalidArgument("a queue consumer needs at least one topic".into()));
        }
        Ok(QueueConsumer {
            client,
            config,
            member: member_id(),
            pending: BTreeMap::new(),
            held: BTreeMap::new(),
            results: Vec::new(),
            producer: None,
            dead_letter_topic: None,
        })
    }

    pub fn member_id(&self) -> &str {
        &self.member
    }

    /// Processed: never delivered to this queue again (sent with the next
    /// poll or flush).
    pub fn ack(&mut self, r: &QueueRecord) {
        self.say(r, AckKind::Accept);
    }

    /// Give it back, to be delivered again after `delay`.
    pub fn release(&mut self, r: &QueueRecord, delay: Duration) {
        let delay_ms = delay.as_millis().min(u128::from(u32::MAX)) as u32;
        self.say(r, AckKind::Release { delay_ms });
    }

    /// Cannot be processed: it goes to the dead-letter topic.
    pub fn reject(&mut self, r: &QueueRecord) {
        self.say(r, AckKind::Reject);
    }

    fn say(&mut self, r: &QueueRecord, kind: AckKind) {
        let key = (r.topic.clone(), r.record.partition, r.record.offset.0);
        if self.held.remove(&key).is_some() {
            self.pending.insert(key, kind);
        }
    }

    /// The coordinator's answers to the acks sent since the last call.
    pub fn take_ack_results(&mut self) -> Vec<AckResult> {
        std::mem::take(&mut self.results)
    }

    /// Sends the pending acks, acquires up to `records_max` records and
    /// returns them (after `idle_wait` if there were none).
    pub async fn poll(&mut self) -> Result<Vec<QueueRecord>> {
        let response = self.call(self.config.records_max).await?;
        let mut out = Vec::new();
        for range in &response.acquired {
            self.take(range, &mut out).await;
        }
        if out.is_empty() && response.acquired.is_empty() {
            tokio::time::sleep(self.config.idle_wait).await;
        }
        Ok(out)
    }

    /// Sends the pending acks now (in as many calls as they take).
    pub async fn flush(&mut self) -> Result<()> {
        while !self.pending.is_empty() {
            self.call(0).await?;
        }
        Ok(())
    }

    /// Gives back what it holds unacked, and sends every pending ack.
    pub async fn close(mut self) -> Result<()> {
        let held: Vec<_> = std::mem::take(&mut self.held).into_keys().collect();
        for key in held {
            self.pending.insert(key, AckKind::Release { delay_ms: 0 });
        }
        self.flush().await?;
        if let Some(p) = self.producer.take() {
            p.close().await;
        }
        Ok(())
    }

    /// Pending acks as ranges (consecutive offsets of one partition with
    /// one kind), at most `acks_per_call_max`; the rest stay pending.
    fn ranges(&mut self) -> Vec<(String, u32, u64, u64, AckKind)> {
        let mut out: Vec<(String, u32, u64, u64, AckKind)> = Vec::new();
        for ((topic, partition, offset), kind) in std::mem::take(&mut self.pending) {
            if let Some(last) = out.last_mut()
                && last.0 == topic
                && last.1 == partition
                && last.3 + 1 == offset
                && last.4 == kind
            {
                last.3 = offset;
                continue;
            }
            out.push((topic, partition, offset, offset, kind));
        }
        let limit = self.config.acks_per_call_max.max(1);
        for (topic, partition, first, last, kind) in out.drain(limit.min(out.len())..) {
            for o in first..=last {
                self.pending.insert((topic.clone(), partition, o), kind);
            }
        }
        out
    }

    async fn call(&mut self, records_max: u32) -> Result<QueueFetchResponse> {
        let ranges = self.ranges();
        let acks = ranges
            .iter()
            .map(|(topic, partition, first, last, kind)| QueueAck {
                topic: topic.clone(),
                partition: *partition,
                first: *first,
                last: *last,
                kind: *kind,
            })
            .collect();
        let request = GroupRequest::QueueFetch(QueueFetchRequest {
            queue: self.config.queue.clone(),
            member: self.member.clone(),
            topics: self.config.topics.clone(),
            acks,
            records_max,
            lock_ms: self.config.lock.as_millis().min(u128::from(u32::MAX)) as u32,
        });
        let sent = ranges.len();
        let response = match self.client.group_call(&self.config.queue, request).await {
            Ok(GroupResponse::QueueFetch(r)) if r.ack_errors.len() == sent => r,
            answer => {
                // Not known to have been applied: the acks stay pending and
                // go with the next call (one applied meanwhile is refused
                // then with INVALID_RECORD_STATE, which is its answer).
                for (topic, partition, first, last, kind) in ranges {
                    for o in first..=last {
                        self.pending.entry((topic.clone(), partition, o)).or_insert(kind);
                    }
                }
                return Err(match answer {
                    Ok(GroupResponse::QueueFetch(r)) => {
                        ClientError::Protocol(format!("the coordinator answered {} of {sent} acks", r.ack_errors.len()))
                    }
                    Ok(other) => unexpected(&Response::Group(other)),
                    Err(e) => e,
                });
            }
        };
        for ((topic, partition, first, last, kind), code) in ranges.into_iter().zip(&response.ack_errors) {
            self.results.push(AckResult { topic, partition, first, last, kind, error: *code });
        }
        self.dead_letter_topic = Some(response.dead_letter_topic.clone());
        Ok(response)
    }

    /// Reads an acquired range: records to process go to `out`; dead
    /// letters are copied; offsets without a record are gaps. A range it
    /// cannot read, or whose dead letters it cannot copy, is given back at
    /// once for another consumer (or a later poll) rather than left to its
    /// lock; the other ranges go on.
    async fn take(&mut self, range: &AcquiredRange, out: &mut Vec<QueueRecord>) {
        let read = self.read(&range.topic, range.partition, range.first, range.last).await;
        let (records, read_to) = match read {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, topic = range.topic, partition = range.partition, "queue read failed");
                self.give_back(range, range.first);
                return;
            }
        };
        let mut present = std::collections::BTreeSet::new();
        if let Some(reason) = range.dead_letter {
            match self.dead_letter(range, reason, records).await {
                Ok(copied) => {
                    for o in copied {
                        present.insert(o);
                        self.pending.insert((range.topic.clone(), range.partition, o), AckKind::DeadLettered);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, queue = self.config.queue, "dead letters not copied; given back");
                    self.give_back(range, range.first);
                    return;
                }
            }
        } else {
            for r in records {
                present.insert(r.offset.0);
                self.held.insert((range.topic.clone(), range.partition, r.offset.0), range.deliveries);
                out.push(QueueRecord { topic: range.topic.clone(), record: r, deliveries: range.deliveries });
            }
        }
        for o in range.first..=range.last.min(read_to.saturating_sub(1)) {
            if !present.contains(&o) {
                self.pending.insert((range.topic.clone(), range.partition, o), AckKind::Gap);
            }
        }
        self.give_back(range, read_to);
    }

    /// Releases `from..=last` of `range` (nothing if `from` is past it).
    fn give_back(&mut self, range: &AcquiredRange, from: u64) {
        for o in from.max(range.first)..=range.last {
            self.pending.insert((range.topic.clone(), range.partition, o), AckKind::Release { delay_ms: 0 });
        }
    }

    /// Copies dead letters to the queue's dead-letter topic; the offsets
    /// copied (all, or an error).
    async fn dead_letter(
        &mut self,
        range: &AcquiredRange,
        reason: DeadLetterReason,
        records: Vec<ConsumerRecord>,
    ) -> Result<Vec<u64>> {
        let topic = self
            .dead_letter_topic
            .clone()
            .ok_or_else(|| ClientError::Protocol("no dead-letter topic named by the coordinator".into()))?;
        let producer =
            self.producer.get_or_insert_with(|| Producer::new(self.client.clone(), ProducerConfig::default()));
        let mut deliveries = Vec::new();
        let mut offsets = Vec::new();
        for r in records {
            let mut headers = r.headers.clone();
            headers.push((DLQ_QUEUE.into(), Bytes::from(self.config.queue.clone())));
            headers.push((DLQ_TOPIC.into(), Bytes::from(range.topic.clone())));
            headers.push((DLQ_PARTITION.into(), Bytes::from(range.partition.to_string())));
            headers.push((DLQ_OFFSET.into(), Bytes::from(r.offset.0.to_string())));
            headers.push((DLQ_REASON.into(), Bytes::from_static(reason.name().as_bytes())));
            headers.push((DLQ_DELIVERIES.into(), Bytes::from(range.deliveries.to_string())));
            let copy = ProducerRecord {
                topic: topic.clone(),
                partition: None,
                key: r.key.clone(),
                value: r.value.clone(),
                headers,
                timestamp: Some(r.timestamp),
            };
            deliveries.push(producer.send(copy).await?);
            offsets.push(r.offset.0);
        }
        for d in deliveries {
            d.wait().await?;
        }
        Ok(offsets)
    }

    /// The records of `first..=last` of a partition, read from its leader,
    /// and the offset the read got to (every offset below it that is not
    /// among the records has none).
    async fn read(&self, topic: &str, partition: u32, first: u64, last: u64) -> Result<(Vec<ConsumerRecord>, u64)> {
        let mut out = Vec::new();
        let mut at = first;
        let mut tries = 0;
        while at <= last {
            tries += 1;
            let request = Request::Fetch(FetchRequest {
                max_wait_ms: 0,
                min_bytes: 0,
                max_bytes: 8 << 20,
                topics: vec![FetchTopic {
                    name: topic.to_owned(),
                    partitions: vec![FetchPartition { partition, offset: Offset(at), max_bytes: 4 << 20 }],
                }],
            });
            let route = self.client.route_of(topic, partition);
            if route == crate::client::Route::default() {
                self.client.refresh(topic).await;
            }
            let answer = match self.client.connection_for(self.client.route_of(topic, partition)).await {
                Ok(c) => c.call(&request).await,
                Err(e) => Err(e),
            };
            let topics = match answer {
                Ok(Response::Fetch(t)) => t,
                Ok(other) => return Err(unexpected(&other)),
                Err(e) if tries < READ_TRIES_MAX && is_routing_error(&e) => {
                    self.client.refresh(topic).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some(p) = topics.into_iter().flat_map(|t| t.partitions).find(|p| p.partition == partition) else {
                return Err(ClientError::Protocol(format!("the fetch answer lacks {topic}/{partition}")));
            };
            if p.error == ErrorCode::OFFSET_OUT_OF_RANGE && Offset(at) < p.log_start_offset {
                // Removed by retention: nothing to read up to the log start.
                at = p.log_start_offset.0.min(last + 1);
                continue;
            }
            if let Err(e) = check(p.error, || format!("reading {topic}/{partition} at {at}")) {
                if tries < READ_TRIES_MAX && (e.is_retriable() || is_routing_error(&e)) {
                    self.client.refresh(topic).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                return Err(e);
            }
            if p.batches.is_empty() {
                // The leader's high watermark is behind the coordinator's
                // replica (a new leader): try again shortly.
                if tries < READ_TRIES_MAX {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                break;
            }
            for batch in &p.batches {
                let records = decode_batch(partition, batch, Offset(at))
                    .map_err(|e| ClientError::Protocol(format!("corrupt batch from {topic}/{partition}: {e}")))?;
                out.extend(records.into_iter().filter(|r| r.offset.0 <= last));
                if let Ok(header) = protocol::batch::BatchHeader::decode(batch) {
                    at = at.max(header.next_offset().0);
                }
            }
        }
        Ok((out, at))
    }
}

impl Client {
    /// A queue group's state: its consumers, and per partition what is in
    /// flight, acked and dead-lettered.
    pub async fn describe_queue(&self, queue: &str) -> Result<QueueInfo> {
        match self.group_call(queue, GroupRequest::DescribeQueue { queue: queue.to_owned() }).await? {
            GroupResponse::DescribeQueue(info) => Ok(info),
            other => Err(unexpected(&Response::Group(other))),
        }
    }

    /// Forgets a queue group nobody holds records of.
    pub async fn delete_queue(&self, queue: &str) -> Result<()> {
        match self.group_call(queue, GroupRequest::DeleteQueue { queue: queue.to_owned() }).await? {
            GroupResponse::DeleteQueue => Ok(()),
            other => Err(unexpected(&Response::Group(other))),
        }
    }
}
