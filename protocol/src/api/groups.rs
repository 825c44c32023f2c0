//! The consumer-group APIs (docs/groups.md, docs/protocol.md): find the
//! coordinator, heartbeat, commit and fetch offsets, list, describe,
//! delete, reset. A whole-call error travels in the response header, as
//! for the topic APIs; these bodies are the success cases.

use crate::ErrorCode;
use crate::codec::{DecodeError, Reader, Writer};

use super::ApiKey;

/// Partitions of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPartitions {
    pub topic: String,
    pub partitions: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupHeartbeatRequest {
    pub group: String,
    pub member: String,
    /// 0 joins, -1 leaves, else the epoch of the last answer.
    pub member_epoch: i32,
    /// On join and when it changes.
    pub subscription: Option<Vec<String>>,
    pub assignor: Option<String>,
    /// What the member holds now.
    pub owned: Option<Vec<TopicPartitions>>,
    pub session_timeout_ms: u32,
    pub rebalance_timeout_ms: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupHeartbeatResponse {
    pub member_epoch: i32,
    pub heartbeat_interval_ms: u32,
    pub assignment: Vec<TopicPartitions>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitEntry {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub metadata: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedEntry {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub metadata: String,
    pub committed_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group: String,
    pub state: String,
    pub members: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub member: String,
    pub client_id: String,
    pub epoch: i32,
    pub state: String,
    pub subscription: Vec<String>,
    pub assigned: Vec<TopicPartitions>,
    pub revoking: Vec<TopicPartitions>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub group: String,
    pub state: String,
    pub epoch: u32,
    pub assignor: String,
    pub members: Vec<MemberInfo>,
    pub offsets: Vec<CommittedEntry>,
}

/// What a queue consumer says of records it holds. On the wire a `u8`
/// (0 accept, 1 release, 2 reject, 3 gap, 4 dead-lettered) then a `u32`
/// release delay (0 for the others).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AckKind {
    /// Processed: never delivered to this queue again.
    Accept,
    /// Give it back, to be delivered again after `delay_ms`.
    Release { delay_ms: u32 },
    /// Cannot be processed: to the dead-letter topic.
    Reject,
    /// The offset holds no record (compaction, a control batch, retention).
    Gap,
    /// Copied to the dead-letter topic as the coordinator said.
    DeadLettered,
}

impl AckKind {
    fn write(self, w: &mut Writer) {
        let (kind, delay_ms) = match self {
            AckKind::Accept => (0, 0),
            AckKind::Release { delay_ms } => (1, delay_ms),
            AckKind::Reject => (2, 0),
            AckKind::Gap => (3, 0),
            AckKind::DeadLettered => (4, 0),
        };
        w.u8(kind);
        w.u32(delay_ms);
    }

    fn read(r: &mut Reader) -> Result<AckKind, DecodeError> {
        let kind = r.u8()?;
        let delay_ms = r.u32()?;
        Ok(match kind {
            0 => AckKind::Accept,
            1 => AckKind::Release { delay_ms },
            2 => AckKind::Reject,
            3 => AckKind::Gap,
            4 => AckKind::DeadLettered,
            k => return Err(DecodeError::Invalid { what: "ack kind", value: i64::from(k) }),
        })
    }
}

/// Why a record goes to the dead-letter topic. On the wire, in an
/// acquired range, a `u8`: 0 (not a dead letter), 1, 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeadLetterReason {
    /// A consumer rejected it.
    Rejected,
    /// It was delivered as often as the queue allows without an ack.
    DeliveryLimit,
}

impl DeadLetterReason {
    /// As the `cairn.dlq.reason` header says it.
    pub fn name(self) -> &'static str {
        match self {
            DeadLetterReason::Rejected => "rejected",
            DeadLetterReason::DeliveryLimit => "delivery-limit",
        }
    }
}

/// A consumer's ack of `first..=last` of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueAck {
    pub topic: String,
    pub partition: u32,
    pub first: u64,
    pub last: u64,
    pub kind: AckKind,
}

/// A consumer's call: its acks of what it held, then up to `records_max`
/// more records locked to it for `lock_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueFetchRequest {
    pub queue: String,
    pub member: String,
    pub topics: Vec<String>,
    pub acks: Vec<QueueAck>,
    /// 0: acks alone.
    pub records_max: u32,
    pub lock_ms: u32,
}

/// Records locked to the consumer: consecutive offsets with one delivery
/// count, to process, or (`dead_letter`) to copy to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcquiredRange {
    pub topic: String,
    pub partition: u32,
    pub first: u64,
    pub last: u64,
    pub deliveries: u16,
    pub dead_letter: Option<DeadLetterReason>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueFetchResponse {
    /// One code per ack, in order.
    pub ack_errors: Vec<ErrorCode>,
    pub acquired: Vec<AcquiredRange>,
    pub lock_until_ms: u64,
    pub dead_letter_topic: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMemberInfo {
    pub member: String,
    pub last_seen_ms: u64,
    pub holding: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePartitionInfo {
    pub topic: String,
    pub partition: u32,
    /// Every offset below is done; the first offset never handed out.
    pub start: u64,
    pub next: u64,
    pub acked: u64,
    pub dead_lettered: u64,
    pub skipped: u64,
    pub available: u64,
    pub acquired: u64,
    pub dead_letter_pending: u64,
    /// In-flight records by delivery count.
    pub deliveries: Vec<(u16, u64)>,
}

impl QueuePartitionInfo {
    /// The eight counters in wire (and `cairn queue describe` column)
    /// order: start, next, acked, dead-lettered, skipped, available,
    /// acquired, dead-letter pending.
    pub fn counts(&self) -> [u64; 8] {
        [
            self.start,
            self.next,
            self.acked,
            self.dead_lettered,
            self.skipped,
            self.available,
            self.acquired,
            self.dead_letter_pending,
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    pub queue: String,
    pub dead_letter_topic: String,
    pub members: Vec<QueueMemberInfo>,
    pub partitions: Vec<QueuePartitionInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRequest {
    /// Which partition of the offsets topic holds the group (creating the
    /// topic if it does not exist yet).
    FindCoordinator {
        group: String,
    },
    Heartbeat(GroupHeartbeatRequest),
    OffsetCommit {
        group: String,
        member: String,
        member_epoch: i32,
        offsets: Vec<CommitEntry>,
    },
    /// Empty `partitions`: every committed offset of the group.
    OffsetFetch {
        group: String,
        partitions: Vec<TopicPartitions>,
    },
    ListGroups,
    DescribeGroup {
        group: String,
    },
    DeleteGroup {
        group: String,
    },
    /// Sets an empty group's offsets.
    ResetOffsets {
        group: String,
        offsets: Vec<CommitEntry>,
    },
    /// A queue consumer's acks, then its next records.
    QueueFetch(QueueFetchRequest),
    DescribeQueue {
        queue: String,
    },
    /// Forgets a queue nobody holds records of.
    DeleteQueue {
        queue: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupResponse {
    FindCoordinator { topic: String, partition: u32 },
    Heartbeat(GroupHeartbeatResponse),
    OffsetCommit,
    OffsetFetch(Vec<CommittedEntry>),
    ListGroups(Vec<GroupListing>),
    DescribeGroup(GroupInfo),
    DeleteGroup,
    ResetOffsets,
    QueueFetch(QueueFetchResponse),
    DescribeQueue(QueueInfo),
    DeleteQueue,
}

impl GroupRequest {
    pub fn api_key(&self) -> ApiKey {
        match self {
            GroupRequest::FindCoordinator { .. } => ApiKey::FindCoordinator,
            GroupRequest::Heartbeat(_) => ApiKey::GroupHeartbeat,
            GroupRequest::OffsetCommit { .. } => ApiKey::OffsetCommit,
            GroupRequest::OffsetFetch { .. } => ApiKey::OffsetFetch,
            GroupRequest::ListGroups => ApiKey::ListGroups,
            GroupRequest::DescribeGroup { .. } => ApiKey::DescribeGroup,
            GroupRequest::DeleteGroup { .. } => ApiKey::DeleteGroup,
            GroupRequest::ResetOffsets { .. } => ApiKey::ResetOffsets,
            GroupRequest::QueueFetch(_) => ApiKey::QueueFetch,
            GroupRequest::DescribeQueue { .. } => ApiKey::DescribeQueue,
            GroupRequest::DeleteQueue { .. } => ApiKey::DeleteQueue,
        }
    }

    pub fn encode_body(&self, w: &mut Writer) {
        match self {
            GroupRequest::FindCoordinator { group }
            | GroupRequest::DescribeGroup { group }
            | GroupRequest::DeleteGroup { group }
            | GroupRequest::DescribeQueue { queue: group }
            | GroupRequest::DeleteQueue { queue: group } => w.string(group),
            GroupRequest::QueueFetch(q) => {
                w.string(&q.queue);
                w.string(&q.member);
                w.array(&q.topics, |w, t| w.string(t));
                w.array(&q.acks, |w, a| {
                    w.string(&a.topic);
                    w.u32(a.partition);
                    w.u64(a.first);
                    w.u64(a.last);
                    a.kind.write(w);
                });
                w.u32(q.records_max);
                w.u32(q.lock_ms);
            }
            GroupRequest::Heartbeat(h) => {
                w.string(&h.group);
                w.string(&h.member);
                w.i64(i64::from(h.member_epoch));
                opt(w, h.subscription.as_ref(), |w, s| w.array(s, |w, t| w.string(t)));
                opt(w, h.assignor.as_ref(), |w, a| w.string(a));
                opt(w, h.owned.as_ref(), |w, o| write_tps(w, o));
                w.u32(h.session_timeout_ms);
                w.u32(h.rebalance_timeout_ms);
            }
            GroupRequest::OffsetCommit { group, member, member_epoch, offsets } => {
                w.string(group);
                w.string(member);
                w.i64(i64::from(*member_epoch));
                write_commits(w, offsets);
            }
            GroupRequest::OffsetFetch { group, partitions } => {
                w.string(group);
                write_tps(w, partitions);
            }
            GroupRequest::ListGroups => {}
            GroupRequest::ResetOffsets { group, offsets } => {
                w.string(group);
                write_commits(w, offsets);
            }
        }
    }

    pub fn decode_body(api_key: ApiKey, r: &mut Reader) -> Result<Option<GroupRequest>, DecodeError> {
        Ok(Some(match api_key {
            ApiKey::FindCoordinator => GroupRequest::FindCoordinator { group: r.string()? },
            ApiKey::GroupHeartbeat => GroupRequest::Heartbeat(GroupHeartbeatRequest {
                group: r.string()?,
                member: r.string()?,
                member_epoch: read_i32(r, "member epoch")?,
                subscription: read_opt(r, |r| r.array("subscription", 2, Reader::string))?,
                assignor: read_opt(r, Reader::string)?,
                owned: read_opt(r, read_tps)?,
                session_timeout_ms: r.u32()?,
                rebalance_timeout_ms: r.u32()?,
            }),
            ApiKey::OffsetCommit => GroupRequest::OffsetCommit {
                group: r.string()?,
                member: r.string()?,
                member_epoch: read_i32(r, "member epoch")?,
                offsets: read_commits(r)?,
            },
            ApiKey::OffsetFetch => GroupRequest::OffsetFetch { group: r.string()?, partitions: read_tps(r)? },
            ApiKey::ListGroups => GroupRequest::ListGroups,
            ApiKey::DescribeGroup => GroupRequest::DescribeGroup { group: r.string()? },
            ApiKey::DeleteGroup => GroupRequest::DeleteGroup { group: r.string()? },
            ApiKey::ResetOffsets => GroupRequest::ResetOffsets { group: r.string()?, offsets: read_commits(r)? },
            ApiKey::QueueFetch => GroupRequest::QueueFetch(QueueFetchRequest {
                queue: r.string()?,
                member: r.string()?,
                topics: r.array("topics", 2, Reader::string)?,
                acks: r.array("acks", 27, |r| {
                    Ok(QueueAck {
                        topic: r.string()?,
                        partition: r.u32()?,
                        first: r.u64()?,
                        last: r.u64()?,
                        kind: AckKind::read(r)?,
                    })
                })?,
                records_max: r.u32()?,
                lock_ms: r.u32()?,
            }),
            ApiKey::DescribeQueue => GroupRequest::DescribeQueue { queue: r.string()? },
            ApiKey::DeleteQueue => GroupRequest::DeleteQueue { queue: r.string()? },
            _ => return Ok(None),
        }))
    }
}

impl GroupResponse {
    pub fn encode_body(&self, w: &mut Writer) {
        match self {
            GroupResponse::FindCoordinator { topic, partition } => {
                w.string(topic);
                w.u32(*partition);
            }
            GroupResponse::Heartbeat(h) => {
                w.i64(i64::from(h.member_epoch));
                w.u32(h.heartbeat_interval_ms);
                write_tps(w, &h.assignment);
            }
            GroupResponse::OffsetCommit
            | GroupResponse::DeleteGroup
            | GroupResponse::ResetOffsets
            | GroupResponse::DeleteQueue => {}
            GroupResponse::QueueFetch(q) => {
                w.array(&q.ack_errors, |w, c| w.u16(c.0));
                w.array(&q.acquired, |w, a| {
                    w.string(&a.topic);
                    w.u32(a.partition);
                    w.u64(a.first);
                    w.u64(a.last);
                    w.u16(a.deliveries);
                    w.u8(match a.dead_letter {
                        None => 0,
                        Some(DeadLetterReason::Rejected) => 1,
                        Some(DeadLetterReason::DeliveryLimit) => 2,
                    });
                });
                w.u64(q.lock_until_ms);
                w.string(&q.dead_letter_topic);
            }
            GroupResponse::DescribeQueue(q) => {
                w.string(&q.queue);
                w.string(&q.dead_letter_topic);
                w.array(&q.members, |w, m| {
                    w.string(&m.member);
                    w.u64(m.last_seen_ms);
                    w.u64(m.holding);
                });
                w.array(&q.partitions, |w, p| {
                    w.string(&p.topic);
                    w.u32(p.partition);
                    for v in p.counts() {
                        w.u64(v);
                    }
                    w.array(&p.deliveries, |w, (d, n)| {
                        w.u16(*d);
                        w.u64(*n);
                    });
                });
            }
            GroupResponse::OffsetFetch(entries) => write_committed(w, entries),
            GroupResponse::ListGroups(groups) => w.array(groups, |w, g| {
                w.string(&g.group);
                w.string(&g.state);
                w.u32(g.members);
            }),
            GroupResponse::DescribeGroup(g) => {
                w.string(&g.group);
                w.string(&g.state);
                w.u32(g.epoch);
                w.string(&g.assignor);
                w.array(&g.members, |w, m| {
                    w.string(&m.member);
                    w.string(&m.client_id);
                    w.i64(i64::from(m.epoch));
                    w.string(&m.state);
                    w.array(&m.subscription, |w, t| w.string(t));
                    write_tps(w, &m.assigned);
                    write_tps(w, &m.revoking);
                });
                write_committed(w, &g.offsets);
            }
        }
    }

    pub fn decode_body(api_key: ApiKey, r: &mut Reader) -> Result<Option<GroupResponse>, DecodeError> {
        Ok(Some(match api_key {
            ApiKey::FindCoordinator => GroupResponse::FindCoordinator { topic: r.string()?, partition: r.u32()? },
            ApiKey::GroupHeartbeat => GroupResponse::Heartbeat(GroupHeartbeatResponse {
                member_epoch: read_i32(r, "member epoch")?,
                heartbeat_interval_ms: r.u32()?,
                assignment: read_tps(r)?,
            }),
            ApiKey::OffsetCommit => GroupResponse::OffsetCommit,
            ApiKey::OffsetFetch => GroupResponse::OffsetFetch(read_committed(r)?),
            ApiKey::ListGroups => GroupResponse::ListGroups(r.array("groups", 10, |r| {
                Ok(GroupListing { group: r.string()?, state: r.string()?, members: r.u32()? })
            })?),
            ApiKey::DescribeGroup => GroupResponse::DescribeGroup(GroupInfo {
                group: r.string()?,
                state: r.string()?,
                epoch: r.u32()?,
                assignor: r.string()?,
                members: r.array("members", 24, |r| {
                    Ok(MemberInfo {
                        member: r.string()?,
                        client_id: r.string()?,
                        epoch: read_i32(r, "member epoch")?,
                        state: r.string()?,
                        subscription: r.array("subscription", 2, Reader::string)?,
                        assigned: read_tps(r)?,
                        revoking: read_tps(r)?,
                    })
                })?,
                offsets: read_committed(r)?,
            }),
            ApiKey::DeleteGroup => GroupResponse::DeleteGroup,
            ApiKey::ResetOffsets => GroupResponse::ResetOffsets,
            ApiKey::QueueFetch => GroupResponse::QueueFetch(QueueFetchResponse {
                ack_errors: r.array("ack errors", 2, |r| r.u16().map(ErrorCode))?,
                acquired: r.array("acquired", 29, |r| {
                    Ok(AcquiredRange {
                        topic: r.string()?,
                        partition: r.u32()?,
                        first: r.u64()?,
                        last: r.u64()?,
                        deliveries: r.u16()?,
                        dead_letter: match r.u8()? {
                            0 => None,
                            1 => Some(DeadLetterReason::Rejected),
                            2 => Some(DeadLetterReason::DeliveryLimit),
                            v => return Err(DecodeError::Invalid { what: "dead-letter reason", value: i64::from(v) }),
                        },
                    })
                })?,
                lock_until_ms: r.u64()?,
                dead_letter_topic: r.string()?,
            }),
            ApiKey::DescribeQueue => GroupResponse::DescribeQueue(QueueInfo {
                queue: r.string()?,
                dead_letter_topic: r.string()?,
                members: r.array("members", 18, |r| {
                    Ok(QueueMemberInfo { member: r.string()?, last_seen_ms: r.u64()?, holding: r.u64()? })
                })?,
                partitions: r.array("partitions", 74, |r| {
                    Ok(QueuePartitionInfo {
                        topic: r.string()?,
                        partition: r.u32()?,
                        start: r.u64()?,
                        next: r.u64()?,
                        acked: r.u64()?,
                        dead_lettered: r.u64()?,
                        skipped: r.u64()?,
                        available: r.u64()?,
                        acquired: r.u64()?,
                        dead_letter_pending: r.u64()?,
                        deliveries: r.array("deliveries", 10, |r| Ok((r.u16()?, r.u64()?)))?,
                    })
                })?,
            }),
            ApiKey::DeleteQueue => GroupResponse::DeleteQueue,
            _ => return Ok(None),
        }))
    }
}

fn opt<T>(w: &mut Writer, v: Option<&T>, f: impl FnOnce(&mut Writer, &T)) {
    match v {
        None => w.u8(0),
        Some(v) => {
            w.u8(1);
            f(w, v);
        }
    }
}

fn read_opt<T>(
    r: &mut Reader,
    f: impl FnOnce(&mut Reader) -> Result<T, DecodeError>,
) -> Result<Option<T>, DecodeError> {
    match r.u8()? {
        0 => Ok(None),
        1 => f(r).map(Some),
        v => Err(DecodeError::Invalid { what: "option flag", value: i64::from(v) }),
    }
}

fn read_i32(r: &mut Reader, what: &'static str) -> Result<i32, DecodeError> {
    let v = r.i64()?;
    i32::try_from(v).map_err(|_| DecodeError::Invalid { what, value: v })
}

fn write_tps(w: &mut Writer, tps: &[TopicPartitions]) {
    w.array(tps, |w, tp| {
        w.string(&tp.topic);
        w.array(&tp.partitions, |w, p| w.u32(*p));
    });
}

fn read_tps(r: &mut Reader) -> Result<Vec<TopicPartitions>, DecodeError> {
    r.array("topics", 6, |r| {
        Ok(TopicPartitions { topic: r.string()?, partitions: r.array("partitions", 4, Reader::u32)? })
    })
}

fn write_commits(w: &mut Writer, offsets: &[CommitEntry]) {
    w.array(offsets, |w, o| {
        w.string(&o.topic);
        w.u32(o.partition);
        w.u64(o.offset);
        w.string(&o.metadata);
    });
}

fn read_commits(r: &mut Reader) -> Result<Vec<CommitEntry>, DecodeError> {
    r.array("offsets", 16, |r| {
        Ok(CommitEntry { topic: r.string()?, partition: r.u32()?, offset: r.u64()?, metadata: r.string()? })
    })
}

fn write_committed(w: &mut Writer, entries: &[CommittedEntry]) {
    w.array(entries, |w, o| {
        w.string(&o.topic);
        w.u32(o.partition);
        w.u64(o.offset);
        w.string(&o.metadata);
        w.u64(o.committed_at_ms);
    });
}

fn read_committed(r: &mut Reader) -> Result<Vec<CommittedEntry>, DecodeError> {
    r.array("offsets", 24, |r| {
        Ok(CommittedEntry {
            topic: r.string()?,
            partition: r.u32()?,
            offset: r.u64()?,
            metadata: r.string()?,
            committed_at_ms: r.u64()?,
        })
    })
}
