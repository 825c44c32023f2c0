//! The records that make a coordinator durable, as they sit in the offsets
//! topic (`__consumer_offsets`, compacted): every change of state is one
//! record, keyed so that compaction keeps only the latest state of each
//! thing, and a tombstone (no value) deletes it. Replaying a partition's
//! records in order rebuilds its coordinator exactly (Kafka 4's group
//! coordinator works the same way). Byte layouts: docs/groups.md, pinned by
//! the golden test.
//!
//! Key: `u16` kind, then the group id, then the kind's fields.
//! Value: `u16` version (0), then the kind's fields. All integers
//! little-endian; strings `u16`-length-prefixed; arrays `u32`-counted.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use protocol::codec::{DecodeError, Reader, Writer};

use crate::assignor::Assignor;
use protocol::api::groups::DeadLetterReason;

use crate::queue::{Entry, QueuePartition, State};
use crate::types::{Assignment, GroupEpoch, MemberEpoch, Millis};

const KIND_OFFSET: u16 = 0;
const KIND_GROUP: u16 = 1;
const KIND_MEMBER: u16 = 2;
const KIND_TARGET: u16 = 3;
const KIND_QUEUE: u16 = 4;
const VALUE_VERSION: u16 = 0;

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: u64,
    pub metadata: String,
    pub committed_at: Millis,
}

/// The group itself: its epoch, assignor, and since when it has had no
/// members (offsets retention counts from there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMeta {
    pub epoch: GroupEpoch,
    pub assignor: Assignor,
    pub empty_since: Option<Millis>,
}

/// One member: what it asked for and where its reconciliation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    pub client_id: String,
    pub subscription: BTreeSet<String>,
    pub session_timeout_ms: u32,
    pub rebalance_timeout_ms: u32,
    pub epoch: MemberEpoch,
    pub previous_epoch: MemberEpoch,
    /// What it may read.
    pub assigned: Assignment,
    /// What it was asked to give up and has not yet said it dropped.
    pub revoking: Assignment,
}

/// The target assignment of the whole group, computed at `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub epoch: GroupEpoch,
    /// The partition counts it was computed from.
    pub topics: BTreeMap<String, u32>,
    pub members: BTreeMap<String, Assignment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRecord {
    Offset {
        group: String,
        topic: String,
        partition: u32,
        value: Option<Committed>,
    },
    Group {
        group: String,
        value: Option<GroupMeta>,
    },
    Member {
        group: String,
        member: String,
        value: Option<MemberRecord>,
    },
    Target {
        group: String,
        value: Option<Target>,
    },
    /// One partition of a queue group, whole.
    Queue {
        queue: String,
        topic: String,
        partition: u32,
        value: Option<QueuePartition>,
    },
}

impl GroupRecord {
    pub fn group(&self) -> &str {
        match self {
            GroupRecord::Offset { group, .. }
            | GroupRecord::Group { group, .. }
            | GroupRecord::Member { group, .. }
            | GroupRecord::Target { group, .. } => group,
            GroupRecord::Queue { queue, .. } => queue,
        }
    }

    /// The record's key and value (`None`: a tombstone).
    pub fn encode(&self) -> (Bytes, Option<Bytes>) {
        let mut k = Writer::new();
        let mut v = Writer::new();
        v.u16(VALUE_VERSION);
        let tombstone = match self {
            GroupRecord::Offset { group, topic, partition, value } => {
                k.u16(KIND_OFFSET);
                k.string(group);
                k.string(topic);
                k.u32(*partition);
                value.as_ref().map(|c| {
                    v.u64(c.offset);
                    v.string(&c.metadata);
                    v.u64(c.committed_at.0);
                })
            }
            GroupRecord::Group { group, value } => {
                k.u16(KIND_GROUP);
                k.string(group);
                value.as_ref().map(|g| {
                    v.u32(g.epoch.0);
                    v.string(g.assignor.name());
                    v.i64(g.empty_since.map_or(-1, |t| t.0 as i64));
                })
            }
            GroupRecord::Member { group, member, value } => {
                k.u16(KIND_MEMBER);
                k.string(group);
                k.string(member);
                value.as_ref().map(|m| {
                    v.string(&m.client_id);
                    let subs: Vec<&String> = m.subscription.iter().collect();
                    v.array(&subs, |w, t| w.string(t));
                    v.u32(m.session_timeout_ms);
                    v.u32(m.rebalance_timeout_ms);
                    v.i64(i64::from(m.epoch.0));
                    v.i64(i64::from(m.previous_epoch.0));
                    write_assignment(&mut v, &m.assigned);
                    write_assignment(&mut v, &m.revoking);
                })
            }
            GroupRecord::Target { group, value } => {
                k.u16(KIND_TARGET);
                k.string(group);
                value.as_ref().map(|t| {
                    v.u32(t.epoch.0);
                    let topics: Vec<(&String, &u32)> = t.topics.iter().collect();
                    v.array(&topics, |w, (name, n)| {
                        w.string(name);
                        w.u32(**n);
                    });
                    let members: Vec<(&String, &Assignment)> = t.members.iter().collect();
                    v.array(&members, |w, (id, a)| {
                        w.string(id);
                        write_assignment(w, a);
                    });
                })
            }
            GroupRecord::Queue { queue, topic, partition, value } => {
                k.u16(KIND_QUEUE);
                k.string(queue);
                k.string(topic);
                k.u32(*partition);
                value.as_ref().map(|p| write_queue_partition(&mut v, p))
            }
        };
        (k.into_bytes(), tombstone.map(|()| v.into_bytes()))
    }

    pub fn decode(key: Bytes, value: Option<Bytes>) -> Result<GroupRecord, DecodeError> {
        let mut k = Reader::new(key);
        let kind = k.u16()?;
        let group = k.string()?;
        let mut v = match value {
            Some(b) => {
                let mut r = Reader::new(b);
                let version = r.u16()?;
                if version != VALUE_VERSION {
                    return Err(DecodeError::Invalid { what: "group record value version", value: i64::from(version) });
                }
                Some(r)
            }
            None => None,
        };
        let record = match kind {
            KIND_OFFSET => {
                let topic = k.string()?;
                let partition = k.u32()?;
                let value = match v.as_mut() {
                    Some(r) => {
                        Some(Committed { offset: r.u64()?, metadata: r.string()?, committed_at: Millis(r.u64()?) })
                    }
                    None => None,
                };
                GroupRecord::Offset { group, topic, partition, value }
            }
            KIND_GROUP => {
                let value = match v.as_mut() {
                    Some(r) => {
                        let epoch = GroupEpoch(r.u32()?);
                        let name = r.string()?;
                        let assignor = Assignor::parse(&name)
                            .ok_or(DecodeError::Invalid { what: "assignor", value: name.len() as i64 })?;
                        let empty_since = match r.i64()? {
                            -1 => None,
                            t if t >= 0 => Some(Millis(t as u64)),
                            t => return Err(DecodeError::Invalid { what: "empty_since", value: t }),
                        };
                        Some(GroupMeta { epoch, assignor, empty_since })
                    }
                    None => None,
                };
                GroupRecord::Group { group, value }
            }
            KIND_MEMBER => {
                let member = k.string()?;
                let value = match v.as_mut() {
                    Some(r) => Some(MemberRecord {
                        client_id: r.string()?,
                        subscription: r.array("subscription", 2, Reader::string)?.into_iter().collect(),
                        session_timeout_ms: r.u32()?,
                        rebalance_timeout_ms: r.u32()?,
                        epoch: read_epoch(r)?,
                        previous_epoch: read_epoch(r)?,
                        assigned: read_assignment(r)?,
                        revoking: read_assignment(r)?,
                    }),
                    None => None,
                };
                GroupRecord::Member { group, member, value }
            }
            KIND_TARGET => {
                let value = match v.as_mut() {
                    Some(r) => {
                        let epoch = GroupEpoch(r.u32()?);
                        let topics =
                            r.array("target topics", 6, |r| Ok((r.string()?, r.u32()?)))?.into_iter().collect();
                        let members = r
                            .array("target members", 6, |r| Ok((r.string()?, read_assignment(r)?)))?
                            .into_iter()
                            .collect();
                        Some(Target { epoch, topics, members })
                    }
                    None => None,
                };
                GroupRecord::Target { group, value }
            }
            KIND_QUEUE => {
                let topic = k.string()?;
                let partition = k.u32()?;
                let value = match v.as_mut() {
                    Some(r) => Some(read_queue_partition(r)?),
                    None => None,
                };
                GroupRecord::Queue { queue: group, topic, partition, value }
            }
            other => return Err(DecodeError::Invalid { what: "group record kind", value: i64::from(other) }),
        };
        k.finish()?;
        if let Some(r) = v {
            r.finish()?;
        }
        Ok(record)
    }
}

/// A run: `first u64, count u32, deliveries u16, state u8` (0 available,
/// 1 acquired, 2 dead letter, 3 dead letter held), `reason u8`, `time u64`
/// (available from, or locked until; 0), `member string` (or empty).
/// In-flight records one partition's record may hold at most: far above
/// any in-flight limit, so a damaged record cannot make a replay allocate
/// without bound.
const QUEUE_ENTRIES_MAX: u64 = 1 << 20;

const QUEUE_RUN_BYTES_MIN: usize = 8 + 4 + 2 + 1 + 1 + 8 + 2;

fn reason_code(reason: DeadLetterReason) -> u8 {
    match reason {
        DeadLetterReason::Rejected => 0,
        DeadLetterReason::DeliveryLimit => 1,
    }
}

fn run_key(e: &Entry) -> (u16, u8, u8, u64, &str) {
    match &e.state {
        State::Available { at } => (e.deliveries, 0, 0, at.0, ""),
        State::Acquired { member, until } => (e.deliveries, 1, 0, until.0, member),
        State::DeadLetter { reason, holder: None } => (e.deliveries, 2, reason_code(*reason), 0, ""),
        State::DeadLetter { reason, holder: Some((member, until)) } => {
            (e.deliveries, 3, reason_code(*reason), until.0, member)
        }
    }
}

fn write_queue_partition(v: &mut Writer, p: &QueuePartition) {
    v.u64(p.start());
    v.u64(p.next);
    v.u64(p.acked);
    v.u64(p.dead_lettered);
    v.u64(p.skipped);
    let mut runs: Vec<(u64, u32, &Entry)> = Vec::new();
    for (&o, e) in &p.entries {
        if let Some((first, count, prev)) = runs.last_mut()
            && *first + u64::from(*count) == o
            && run_key(prev) == run_key(e)
        {
            *count += 1;
            continue;
        }
        runs.push((o, 1, e));
    }
    v.array(&runs, |w, (first, count, e)| {
        let (deliveries, state, reason, time, member) = run_key(e);
        w.u64(*first);
        w.u32(*count);
        w.u16(deliveries);
        w.u8(state);
        w.u8(reason);
        w.u64(time);
        w.string(member);
    });
}

fn read_queue_partition(r: &mut Reader) -> Result<QueuePartition, DecodeError> {
    let invalid = |what: &'static str, value: u64| DecodeError::Invalid { what, value: value as i64 };
    let start = r.u64()?;
    let mut p = QueuePartition {
        next: r.u64()?,
        acked: r.u64()?,
        dead_lettered: r.u64()?,
        skipped: r.u64()?,
        entries: std::collections::BTreeMap::new(),
    };
    let runs = r.count("queue runs", QUEUE_RUN_BYTES_MIN)?;
    let mut end = start;
    for _ in 0..runs {
        let first = r.u64()?;
        let count = r.u32()?;
        let deliveries = r.u16()?;
        let state = r.u8()?;
        let reason = r.u8()?;
        let time = Millis(r.u64()?);
        let member = r.string()?;
        let last = first.checked_add(u64::from(count)).ok_or(invalid("queue run end", first))?;
        if count == 0 || first < end || last > p.next || last - start > QUEUE_ENTRIES_MAX {
            return Err(invalid("queue run", first));
        }
        end = last;
        let reason = match reason {
            0 => DeadLetterReason::Rejected,
            1 => DeadLetterReason::DeliveryLimit,
            r => return Err(invalid("dead-letter reason", u64::from(r))),
        };
        let member: std::sync::Arc<str> = std::sync::Arc::from(member.as_str());
        let state = match state {
            0 => State::Available { at: time },
            1 => State::Acquired { member, until: time },
            2 => State::DeadLetter { reason, holder: None },
            3 => State::DeadLetter { reason, holder: Some((member, time)) },
            s => return Err(invalid("queue record state", u64::from(s))),
        };
        for o in first..last {
            p.entries.insert(o, Entry { state: state.clone(), deliveries });
        }
    }
    p.check().map_err(|what| invalid(what, start))?;
    if p.start() != start || start > p.next {
        return Err(invalid("queue start", start));
    }
    Ok(p)
}

fn read_epoch(r: &mut Reader) -> Result<MemberEpoch, DecodeError> {
    let e = r.i64()?;
    i32::try_from(e).map(MemberEpoch).map_err(|_| DecodeError::Invalid { what: "member epoch", value: e })
}

fn write_assignment(w: &mut Writer, a: &Assignment) {
    let topics: Vec<(&String, &BTreeSet<u32>)> = a.iter().collect();
    w.array(&topics, |w, (topic, parts)| {
        w.string(topic);
        let parts: Vec<u32> = parts.iter().copied().collect();
        w.array(&parts, |w, p| w.u32(*p));
    });
}

fn read_assignment(r: &mut Reader) -> Result<Assignment, DecodeError> {
    let topics = r.array("assignment topics", 6, |r| {
        let topic = r.string()?;
        let parts: BTreeSet<u32> = r.array("assignment partitions", 4, Reader::u32)?.into_iter().collect();
        Ok((topic, parts))
    })?;
    Ok(topics.into_iter().collect())
}

#[cfg(test)]
#[path = "tests/records.rs"]
mod tests;
