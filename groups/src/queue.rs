//! Queue groups (Kafka's share groups, Pulsar's shared subscriptions): any
//! number of consumers work through a topic's records, whatever its
//! partition count, each record handed to one consumer at a time.
//!
//! Why the coordinator holds only offsets and states, never record data:
//! consumers read the records from the partitions' leaders themselves (the
//! path every consumer already has, with its routing and failover), so a
//! queue works wherever those leaders are. The coordinator decides who may
//! work on which offset, and the records of each change are committed to the
//! offsets topic before the answer, like a group's: after a failover no
//! acknowledged record is handed out again and no unacknowledged one is
//! lost. The state of a partition is one record, rewritten whole (run-length
//! encoded) on each change, so compaction keeps exactly the latest state.
//!
//! Dead letters take the same path: a record past its delivery limit, or
//! rejected, is handed to the next consumer to acquire as *bound for the
//! dead-letter topic*; that consumer copies it there and reports it
//! dead-lettered. A consumer that dies in between leaves it to the next one
//! (the copy may then be written twice; the state counts it once).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use protocol::ErrorCode;
use protocol::api::groups::{
    AckKind, AcquiredRange, DeadLetterReason, QueueAck, QueueFetchRequest, QueueFetchResponse, QueueInfo,
    QueueMemberInfo, QueuePartitionInfo,
};

use crate::coordinator::validate_group_id;
use crate::records::GroupRecord;
use crate::types::Millis;

/// Where one in-flight record stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// May be handed out from `at` on (a release may ask for a delay).
    Available { at: Millis },
    /// Locked to `member` until `until`.
    Acquired { member: Arc<str>, until: Millis },
    /// Bound for the dead-letter topic; `holder`: the consumer copying it
    /// there now, and until when.
    DeadLetter { reason: DeadLetterReason, holder: Option<(Arc<str>, Millis)> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub state: State,
    /// How often it was handed out for processing.
    pub deliveries: u16,
}

/// One partition of a queue. Invariant ([`QueuePartition::check`]): every
/// entry's offset is below `next`. Offsets below `next` without an entry
/// are done (acked, dead-lettered or skipped); [`QueuePartition::start`],
/// the first offset not done, follows from the entries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueuePartition {
    /// The first offset never handed out.
    pub next: u64,
    pub entries: BTreeMap<u64, Entry>,
    pub acked: u64,
    pub dead_lettered: u64,
    /// Offsets without a record (compaction, control batches), and records
    /// the log dropped by retention before they were handed out.
    pub skipped: u64,
}

/// Bounds on queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueLimits {
    pub queues_max: usize,
    /// Records in flight per partition (Kafka's
    /// `group.share.partition.max.record.locks`): past `start + this`,
    /// nothing new is handed out until the oldest are done.
    pub partition_in_flight_max: u32,
    /// Deliveries after which a released or timed-out record is
    /// dead-lettered (Kafka's `share.delivery.count.limit`).
    pub delivery_count_max: u16,
    pub lock_ms_min: u32,
    pub lock_ms_max: u32,
    pub release_delay_ms_max: u32,
    pub fetch_records_max: u32,
    pub acks_per_call_max: usize,
    pub topics_max: usize,
    /// Consumers remembered per queue (for describe; not durable).
    pub members_max: usize,
    /// A consumer not seen for this long is no longer listed.
    pub member_forget_ms: u64,
}

impl Default for QueueLimits {
    fn default() -> QueueLimits {
        QueueLimits {
            queues_max: 10_000,
            partition_in_flight_max: 2000,
            delivery_count_max: 5,
            lock_ms_min: 100,
            lock_ms_max: 3_600_000,
            release_delay_ms_max: 3_600_000,
            fetch_records_max: 10_000,
            acks_per_call_max: 10_000,
            topics_max: 100,
            members_max: 1000,
            member_forget_ms: 300_000,
        }
    }
}

/// One queue group.
#[derive(Debug, Clone, Default)]
pub struct Queue {
    pub partitions: BTreeMap<(String, u32), QueuePartition>,
    /// Consumers by when each was last seen (memory only).
    pub members: BTreeMap<Arc<str>, Millis>,
    /// Which partition the next fetch starts at (fairness).
    cursor: usize,
}

/// The topic a queue's dead letters go to.
pub fn dead_letter_topic(queue: &str) -> String {
    format!("{queue}.dlq")
}

/// Queue ids follow group ids, leaving room for the dead-letter suffix.
pub fn validate_queue_id(queue: &str) -> Result<(), ErrorCode> {
    validate_group_id(queue)?;
    validate_group_id(&dead_letter_topic(queue))
}

impl QueuePartition {
    /// A partition whose first record to hand out is `from`.
    pub fn starting_at(from: u64) -> QueuePartition {
        QueuePartition { next: from, ..QueuePartition::default() }
    }

    /// Every offset below is done: the first in flight, or `next`.
    pub fn start(&self) -> u64 {
        self.entries.first_key_value().map_or(self.next, |(&o, _)| o)
    }

    /// The invariant, as an error (decoding uses it on untrusted input).
    pub fn check(&self) -> Result<(), &'static str> {
        if self.entries.last_key_value().is_some_and(|(&last, _)| last >= self.next) {
            return Err("an in-flight offset at or past next");
        }
        Ok(())
    }

    /// Locks that ran out: back to available, or bound for the dead-letter
    /// topic past the delivery limit. Whether anything changed.
    fn expire(&mut self, now: Millis, delivery_count_max: u16) -> bool {
        let mut changed = false;
        for e in self.entries.values_mut() {
            match &mut e.state {
                State::Acquired { until, .. } if *until <= now => {
                    e.state = released(e.deliveries, delivery_count_max, now);
                    changed = true;
                }
                State::DeadLetter { holder, .. } if holder.as_ref().is_some_and(|(_, until)| *until <= now) => {
                    *holder = None;
                    changed = true;
                }
                _ => {}
            }
        }
        changed
    }

    /// Applies one ack of `member`'s, all of the range or none of it.
    fn ack(&mut self, member: &str, ack: &QueueAck, now: Millis, limits: &QueueLimits) -> Result<(), ErrorCode> {
        if ack.last >= self.next {
            return Err(ErrorCode::INVALID_RECORD_STATE);
        }
        // The consumer must hold every offset of the range, in a state the
        // ack fits: a dead letter is copied (or has no record), or given
        // back for another consumer to copy.
        let held = |e: &Entry| match (&e.state, ack.kind) {
            (State::Acquired { .. }, AckKind::DeadLettered) => false,
            (State::Acquired { member: m, until }, _)
            | (
                State::DeadLetter { holder: Some((m, until)), .. },
                AckKind::DeadLettered | AckKind::Gap | AckKind::Release { .. },
            ) => &**m == member && *until > now,
            _ => false,
        };
        let range = self.entries.range(ack.first..=ack.last);
        if range.clone().count() as u64 != ack.last - ack.first + 1 || !range.map(|(_, e)| e).all(held) {
            return Err(ErrorCode::INVALID_RECORD_STATE);
        }
        let done = match ack.kind {
            AckKind::Accept => Some(&mut self.acked),
            AckKind::Gap => Some(&mut self.skipped),
            AckKind::DeadLettered => Some(&mut self.dead_lettered),
            AckKind::Release { .. } | AckKind::Reject => None,
        };
        if let Some(counter) = done {
            *counter += ack.last - ack.first + 1;
            for o in ack.first..=ack.last {
                self.entries.remove(&o);
            }
        } else {
            for (_, e) in self.entries.range_mut(ack.first..=ack.last) {
                e.state = match (ack.kind, &e.state) {
                    (_, State::DeadLetter { reason, .. }) => State::DeadLetter { reason: *reason, holder: None },
                    (AckKind::Release { delay_ms }, _) => {
                        released(e.deliveries, limits.delivery_count_max, now.plus_ms(u64::from(delay_ms)))
                    }
                    _ => State::DeadLetter { reason: DeadLetterReason::Rejected, holder: None },
                };
            }
        }
        Ok(())
    }

    /// Hands out up to `budget` records to `member`: first those waiting
    /// (redeliveries whose time came, dead letters nobody holds), in offset
    /// order, then new ones below `high_watermark`. The log dropped what is
    /// below `log_start`: waiting records there are skipped.
    #[allow(clippy::too_many_arguments)]
    fn acquire(
        &mut self,
        topic: &str,
        partition: u32,
        member: &Arc<str>,
        budget: &mut u32,
        until: Millis,
        now: Millis,
        (log_start, high_watermark): (u64, u64),
        limits: &QueueLimits,
        out: &mut Vec<AcquiredRange>,
    ) -> bool {
        let mut changed = false;
        if self.next < log_start {
            self.skipped += log_start - self.next;
            self.next = log_start;
            changed = true;
        }
        let lost: Vec<u64> = self
            .entries
            .range(..log_start)
            .filter(|(_, e)| matches!(e.state, State::Available { .. }))
            .map(|(&o, _)| o)
            .collect();
        for o in &lost {
            self.entries.remove(o);
            self.skipped += 1;
            changed = true;
        }
        for (&o, e) in &mut self.entries {
            if *budget == 0 {
                break;
            }
            match &mut e.state {
                State::Available { at } if *at <= now => {
                    e.deliveries = e.deliveries.saturating_add(1);
                    e.state = State::Acquired { member: member.clone(), until };
                    push_run(out, topic, partition, o, e.deliveries, None);
                }
                State::DeadLetter { reason, holder: holder @ None } => {
                    *holder = Some((member.clone(), until));
                    push_run(out, topic, partition, o, e.deliveries, Some(*reason));
                }
                _ => continue,
            }
            *budget -= 1;
            changed = true;
        }
        let room = self.start().saturating_add(u64::from(limits.partition_in_flight_max)).saturating_sub(self.next);
        let new = u64::from(*budget).min(high_watermark.saturating_sub(self.next)).min(room);
        for o in self.next..self.next + new {
            self.entries.insert(o, Entry { state: State::Acquired { member: member.clone(), until }, deliveries: 1 });
            push_run(out, topic, partition, o, 1, None);
        }
        if new > 0 {
            self.next += new;
            *budget -= new as u32;
            changed = true;
        }
        debug_assert_eq!(self.check(), Ok(()));
        changed
    }

    fn describe(&self, topic: &str, partition: u32) -> QueuePartitionInfo {
        let mut d = QueuePartitionInfo {
            topic: topic.to_owned(),
            partition,
            start: self.start(),
            next: self.next,
            acked: self.acked,
            dead_lettered: self.dead_lettered,
            skipped: self.skipped,
            available: 0,
            acquired: 0,
            dead_letter_pending: 0,
            deliveries: Vec::new(),
        };
        let mut deliveries: BTreeMap<u16, u64> = BTreeMap::new();
        for e in self.entries.values() {
            match e.state {
                State::Available { .. } => d.available += 1,
                State::Acquired { .. } => d.acquired += 1,
                State::DeadLetter { .. } => d.dead_letter_pending += 1,
            }
            *deliveries.entry(e.deliveries).or_default() += 1;
        }
        d.deliveries = deliveries.into_iter().collect();
        d
    }

    fn holds_locks(&self, now: Millis) -> bool {
        self.entries.values().any(|e| match &e.state {
            State::Acquired { until, .. } => *until > now,
            State::DeadLetter { holder, .. } => holder.as_ref().is_some_and(|(_, until)| *until > now),
            State::Available { .. } => false,
        })
    }
}

/// A record given back (or whose lock ran out) after `deliveries`.
fn released(deliveries: u16, delivery_count_max: u16, at: Millis) -> State {
    if deliveries >= delivery_count_max {
        State::DeadLetter { reason: DeadLetterReason::DeliveryLimit, holder: None }
    } else {
        State::Available { at }
    }
}

fn push_run(
    out: &mut Vec<AcquiredRange>,
    topic: &str,
    partition: u32,
    offset: u64,
    deliveries: u16,
    dl: Option<DeadLetterReason>,
) {
    if let Some(last) = out.last_mut()
        && last.partition == partition
        && last.topic == topic
        && last.last + 1 == offset
        && last.deliveries == deliveries
        && last.dead_letter == dl
    {
        last.last = offset;
        return;
    }
    out.push(AcquiredRange {
        topic: topic.to_owned(),
        partition,
        first: offset,
        last: offset,
        deliveries,
        dead_letter: dl,
    });
}

fn state_record(queue: &str, topic: &str, partition: u32, p: Option<&QueuePartition>) -> GroupRecord {
    GroupRecord::Queue { queue: queue.to_owned(), topic: topic.to_owned(), partition, value: p.cloned() }
}

/// The queues of one offsets partition.
#[derive(Debug, Default)]
pub struct Queues {
    queues: BTreeMap<String, Queue>,
    limits: QueueLimits,
}

/// A call's answer and the records to append before giving it.
pub type QueueOutcome<T> = crate::coordinator::Outcome<T>;

impl Queues {
    pub fn new(limits: QueueLimits) -> Queues {
        assert!(limits.delivery_count_max >= 1 && limits.partition_in_flight_max >= 1, "{limits:?}");
        assert!(limits.lock_ms_min <= limits.lock_ms_max, "{limits:?}");
        Queues { queues: BTreeMap::new(), limits }
    }

    pub fn limits(&self) -> &QueueLimits {
        &self.limits
    }

    pub fn queue(&self, id: &str) -> Option<&Queue> {
        self.queues.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Queue)> {
        self.queues.iter()
    }

    /// A consumer's acks, then its next records. `ends`: `(log start, high
    /// watermark)` of each partition of the subscribed topics that the
    /// driver can see (only those are handed out from).
    pub fn fetch(
        &mut self,
        req: &QueueFetchRequest,
        ends: &BTreeMap<(String, u32), (u64, u64)>,
        now: Millis,
    ) -> QueueOutcome<QueueFetchResponse> {
        let limits = self.limits.clone();
        if let Err(code) = validate_queue_id(&req.queue) {
            return err(code);
        }
        if req.member.is_empty()
            || req.member.len() > 255
            || !(limits.lock_ms_min..=limits.lock_ms_max).contains(&req.lock_ms)
            || req.records_max > limits.fetch_records_max
            || req.acks.len() > limits.acks_per_call_max
            || req.topics.len() > limits.topics_max
            || req.acks.iter().any(|a| {
                a.first > a.last
                    || a.last - a.first >= u64::from(limits.partition_in_flight_max)
                    || matches!(a.kind, AckKind::Release { delay_ms } if delay_ms > limits.release_delay_ms_max)
            })
        {
            return err(ErrorCode::INVALID_REQUEST);
        }
        if !self.queues.contains_key(&req.queue) && self.queues.len() >= limits.queues_max {
            return err(ErrorCode::GROUP_MAX_SIZE_REACHED);
        }
        let q = self.queues.entry(req.queue.clone()).or_default();
        let member: Arc<str> = Arc::from(req.member.as_str());
        if !q.members.contains_key(&member) && q.members.len() >= limits.members_max {
            let oldest = q.members.iter().min_by_key(|(_, t)| **t).map(|(m, _)| m.clone());
            if let Some(m) = oldest {
                q.members.remove(&m);
            }
        }
        q.members.insert(member.clone(), now);
        let mut touched: BTreeSet<(String, u32)> = BTreeSet::new();
        // Each partition the call touches has its run-out locks released
        // once, before anything else (a scan of its in-flight records).
        let mut expired: BTreeSet<(String, u32)> = BTreeSet::new();
        let mut expire = |q: &mut Queue, key: &(String, u32), touched: &mut BTreeSet<(String, u32)>| {
            if expired.insert(key.clone())
                && q.partitions.get_mut(key).is_some_and(|p| p.expire(now, limits.delivery_count_max))
            {
                touched.insert(key.clone());
            }
        };
        let mut ack_errors = Vec::with_capacity(req.acks.len());
        for a in &req.acks {
            let key = (a.topic.clone(), a.partition);
            expire(q, &key, &mut touched);
            let Some(p) = q.partitions.get_mut(&key) else {
                ack_errors.push(ErrorCode::INVALID_RECORD_STATE);
                continue;
            };
            match p.ack(&member, a, now, &limits) {
                Ok(()) => {
                    ack_errors.push(ErrorCode::NONE);
                    touched.insert(key);
                }
                Err(code) => ack_errors.push(code),
            }
        }
        let until = now.plus_ms(u64::from(req.lock_ms));
        let mut acquired = Vec::new();
        let wanted: BTreeSet<&str> = req.topics.iter().map(String::as_str).collect();
        let keys: Vec<&(String, u32)> = ends.keys().filter(|(t, _)| wanted.contains(t.as_str())).collect();
        let mut budget = req.records_max;
        if !keys.is_empty() && budget > 0 {
            q.cursor = (q.cursor + 1) % keys.len();
            for i in 0..keys.len() {
                if budget == 0 {
                    break;
                }
                let key = keys[(q.cursor + i) % keys.len()];
                let bounds = ends[key];
                if !q.partitions.contains_key(key) {
                    q.partitions.insert(key.clone(), QueuePartition::starting_at(bounds.0));
                    touched.insert(key.clone());
                }
                expire(q, key, &mut touched);
                let p = q.partitions.get_mut(key).expect("inserted above");
                if p.acquire(&key.0, key.1, &member, &mut budget, until, now, bounds, &limits, &mut acquired) {
                    touched.insert(key.clone());
                }
            }
        }
        let records =
            touched.iter().map(|(t, p)| state_record(&req.queue, t, *p, q.partitions.get(&(t.clone(), *p)))).collect();
        let reply = QueueFetchResponse {
            ack_errors,
            acquired,
            lock_until_ms: until.0,
            dead_letter_topic: dead_letter_topic(&req.queue),
        };
        QueueOutcome { result: Ok(reply), records }
    }

    pub fn describe(&self, queue: &str, now: Millis) -> Result<QueueInfo, ErrorCode> {
        validate_queue_id(queue)?;
        let q = self.queues.get(queue).ok_or(ErrorCode::UNKNOWN_GROUP)?;
        let mut holding: BTreeMap<&str, u64> = BTreeMap::new();
        for p in q.partitions.values() {
            for e in p.entries.values() {
                match &e.state {
                    State::Acquired { member, until } if *until > now => *holding.entry(member).or_default() += 1,
                    State::DeadLetter { holder: Some((member, until)), .. } if *until > now => {
                        *holding.entry(member).or_default() += 1;
                    }
                    _ => {}
                }
            }
        }
        Ok(QueueInfo {
            queue: queue.to_owned(),
            dead_letter_topic: dead_letter_topic(queue),
            members: q
                .members
                .iter()
                .map(|(m, t)| QueueMemberInfo {
                    member: m.to_string(),
                    last_seen_ms: t.0,
                    holding: holding.get(&**m).copied().unwrap_or(0),
                })
                .collect(),
            partitions: q.partitions.iter().map(|((t, p), s)| s.describe(t, *p)).collect(),
        })
    }

    /// Forgets a queue nobody holds records of.
    pub fn delete(&mut self, queue: &str, now: Millis) -> QueueOutcome<()> {
        if let Err(code) = validate_queue_id(queue) {
            return err(code);
        }
        let Some(q) = self.queues.get(queue) else { return err(ErrorCode::UNKNOWN_GROUP) };
        if q.partitions.values().any(|p| p.holds_locks(now)) {
            return err(ErrorCode::GROUP_NOT_EMPTY);
        }
        let q = self.queues.remove(queue).expect("checked");
        let records = q.partitions.keys().map(|(t, p)| state_record(queue, t, *p, None)).collect();
        QueueOutcome { result: Ok(()), records }
    }

    /// Time passing: locks that ran out are released (dead-lettered past
    /// the limit), and consumers not seen for long are no longer listed.
    pub fn tick(&mut self, now: Millis) -> Vec<GroupRecord> {
        let mut records = Vec::new();
        for (id, q) in &mut self.queues {
            for ((t, p), s) in &mut q.partitions {
                if s.expire(now, self.limits.delivery_count_max) {
                    records.push(state_record(id, t, *p, Some(s)));
                }
            }
            let forget = self.limits.member_forget_ms;
            q.members.retain(|_, seen| seen.plus_ms(forget) > now);
        }
        records
    }

    /// Applies a queue record read back from the offsets partition.
    pub fn replay(&mut self, queue: String, topic: String, partition: u32, value: Option<QueuePartition>) {
        match value {
            Some(p) => {
                self.queues.entry(queue).or_default().partitions.insert((topic, partition), p);
            }
            None => {
                if let Some(q) = self.queues.get_mut(&queue) {
                    q.partitions.remove(&(topic, partition));
                    if q.partitions.is_empty() {
                        self.queues.remove(&queue);
                    }
                }
            }
        }
    }
}

fn err<T>(code: ErrorCode) -> QueueOutcome<T> {
    QueueOutcome { result: Err(code), records: Vec::new() }
}

#[cfg(test)]
#[path = "tests/queue.rs"]
mod tests;
