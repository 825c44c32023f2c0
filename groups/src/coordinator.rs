//! The coordinator of the groups of one offsets-topic partition. Each call
//! takes the request and the time, changes the groups in memory and
//! returns the records that make the change durable; the driver appends
//! them to the partition and answers only once they are committed. If an
//! append fails, the driver drops this coordinator and builds a new one by
//! replaying the partition (what a new leader does too), so memory never
//! runs ahead of the log for long.

use std::collections::{BTreeMap, BTreeSet};

use protocol::ErrorCode;
use protocol::names::validate_topic_name;

use crate::assignor::Assignor;
use crate::group::{Group, Member, MemberState};
use crate::queue::{QueueLimits, Queues};
use crate::records::{Committed, GroupMeta, GroupRecord, MemberRecord, Target};
use crate::types::{Assignment, GroupEpoch, MemberEpoch, Millis, assignment_has, assignment_minus};

/// Bounds on what one coordinator holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub groups_max: usize,
    pub group_members_max: usize,
    pub subscription_topics_max: usize,
    pub commit_metadata_bytes_max: usize,
    /// Committed offsets (topic partitions) one group keeps at most.
    pub group_offsets_max: usize,
    pub session_timeout_ms_min: u32,
    pub session_timeout_ms_max: u32,
    /// How often members are told to heartbeat.
    pub heartbeat_interval_ms: u32,
    pub queue: QueueLimits,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            groups_max: 100_000,
            group_members_max: 1000,
            subscription_topics_max: 1000,
            commit_metadata_bytes_max: 4096,
            group_offsets_max: 100_000,
            session_timeout_ms_min: 1000,
            session_timeout_ms_max: 300_000,
            heartbeat_interval_ms: 1000,
            queue: QueueLimits::default(),
        }
    }
}

/// A member's heartbeat: how it joins, stays, reports what it dropped,
/// and leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub group: String,
    pub member: String,
    /// 0 to join (or rejoin, having dropped everything), -1 to leave,
    /// else the epoch of its last answer.
    pub member_epoch: MemberEpoch,
    pub client_id: String,
    /// On join, and whenever it changes; `None`: unchanged.
    pub subscription: Option<BTreeSet<String>>,
    /// The assignor it wants; `None`: the group's.
    pub assignor: Option<String>,
    /// What it holds now; `None`: what it last said.
    pub owned: Option<Assignment>,
    pub session_timeout_ms: u32,
    pub rebalance_timeout_ms: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatReply {
    pub member_epoch: MemberEpoch,
    pub heartbeat_interval_ms: u32,
    /// Everything it may read now (the whole set, not a change).
    pub assignment: Assignment,
}

/// A call's answer and the records to append before giving it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<T> {
    pub result: Result<T, ErrorCode>,
    pub records: Vec<GroupRecord>,
}

impl<T> Outcome<T> {
    fn err(code: ErrorCode) -> Outcome<T> {
        Outcome { result: Err(code), records: Vec::new() }
    }
}

/// One offset to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitOffset {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub metadata: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member: String,
    pub client_id: String,
    pub epoch: MemberEpoch,
    pub state: MemberState,
    pub subscription: BTreeSet<String>,
    pub assigned: Assignment,
    pub revoking: Assignment,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group: String,
    /// `empty`, `reconciling` or `stable`.
    pub state: &'static str,
    pub epoch: GroupEpoch,
    pub assignor: Assignor,
    pub members: Vec<MemberDescription>,
    pub offsets: BTreeMap<(String, u32), Committed>,
}

#[derive(Debug, Default)]
pub struct Coordinator {
    groups: BTreeMap<String, Group>,
    limits: Limits,
    queues: Queues,
}

pub fn validate_group_id(group: &str) -> Result<(), ErrorCode> {
    // The same rule as topic names: ids show up in metric labels and logs.
    validate_topic_name(group).map_err(|_| ErrorCode::INVALID_GROUP_ID)
}

fn meta_record(id: &str, g: &Group) -> GroupRecord {
    GroupRecord::Group {
        group: id.to_owned(),
        value: Some(GroupMeta { epoch: g.epoch, assignor: g.assignor, empty_since: g.empty_since }),
    }
}

fn target_record(id: &str, g: &Group) -> GroupRecord {
    GroupRecord::Target {
        group: id.to_owned(),
        value: Some(Target { epoch: g.target_epoch, topics: g.target_topics.clone(), members: g.target.clone() }),
    }
}

fn member_record(id: &str, member: &str, m: Option<&Member>) -> GroupRecord {
    GroupRecord::Member { group: id.to_owned(), member: member.to_owned(), value: m.map(|m| m.record.clone()) }
}

impl Coordinator {
    pub fn new(limits: Limits) -> Coordinator {
        assert!(limits.groups_max >= 1 && limits.group_members_max >= 1, "{limits:?}");
        assert!(limits.session_timeout_ms_min <= limits.session_timeout_ms_max, "{limits:?}");
        let queues = Queues::new(limits.queue.clone());
        Coordinator { groups: BTreeMap::new(), limits, queues }
    }

    /// The queue groups of the same offsets partition.
    pub fn queues(&self) -> &Queues {
        &self.queues
    }

    pub fn queues_mut(&mut self) -> &mut Queues {
        &mut self.queues
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn group(&self, id: &str) -> Option<&Group> {
        self.groups.get(id)
    }

    pub fn groups(&self) -> impl Iterator<Item = (&String, &Group)> {
        self.groups.iter()
    }

    /// A member's heartbeat. `topics`: the partition counts of the topics
    /// the group subscribes to (a missing one does not exist).
    pub fn heartbeat(
        &mut self,
        req: &Heartbeat,
        topics: &BTreeMap<String, u32>,
        now: Millis,
    ) -> Outcome<HeartbeatReply> {
        if let Err(code) = validate_group_id(&req.group) {
            return Outcome::err(code);
        }
        let limits = self.limits.clone();
        if req.member.is_empty()
            || req.member.len() > 255
            || req.member_epoch.0 < -1
            || !(limits.session_timeout_ms_min..=limits.session_timeout_ms_max).contains(&req.session_timeout_ms)
            || req.subscription.as_ref().is_some_and(|s| s.len() > limits.subscription_topics_max)
        {
            return Outcome::err(ErrorCode::INVALID_REQUEST);
        }
        let assignor = match req.assignor.as_deref().map(Assignor::parse) {
            Some(None) => return Outcome::err(ErrorCode::UNSUPPORTED_ASSIGNOR),
            Some(Some(a)) => Some(a),
            None => None,
        };
        if req.member_epoch == MemberEpoch::JOIN && req.subscription.is_none() {
            return Outcome::err(ErrorCode::INVALID_REQUEST);
        }
        if !self.groups.contains_key(&req.group) {
            if req.member_epoch == MemberEpoch::LEAVE {
                return Outcome {
                    result: Ok(HeartbeatReply {
                        member_epoch: MemberEpoch::LEAVE,
                        heartbeat_interval_ms: limits.heartbeat_interval_ms,
                        assignment: Assignment::new(),
                    }),
                    records: Vec::new(),
                };
            }
            if self.groups.len() >= limits.groups_max {
                return Outcome::err(ErrorCode::GROUP_MAX_SIZE_REACHED);
            }
        }
        let id = req.group.as_str();
        let fresh = !self.groups.contains_key(id);
        let g = self.groups.entry(id.to_owned()).or_default();
        let meta_before = (g.epoch, g.assignor, g.empty_since);
        let mut records = Vec::new();
        let exists = g.members.contains_key(&req.member);
        let member_before = g.members.get(&req.member).map(|m| m.record.clone());
        match req.member_epoch {
            MemberEpoch::LEAVE => {
                if exists {
                    g.members.remove(&req.member);
                    g.epoch.0 += 1;
                    if g.members.is_empty() {
                        g.empty_since = Some(now);
                    }
                    records.push(member_record(id, &req.member, None));
                }
                if (g.epoch, g.assignor, g.empty_since) != meta_before {
                    records.insert(0, meta_record(id, g));
                }
                return Outcome {
                    result: Ok(HeartbeatReply {
                        member_epoch: MemberEpoch::LEAVE,
                        heartbeat_interval_ms: limits.heartbeat_interval_ms,
                        assignment: Assignment::new(),
                    }),
                    records,
                };
            }
            MemberEpoch::JOIN => {
                if !exists && g.members.len() >= limits.group_members_max {
                    return Outcome::err(ErrorCode::GROUP_MAX_SIZE_REACHED);
                }
                let subscription = req.subscription.clone().expect("checked above");
                let others = g.members.keys().any(|m| *m != req.member);
                match assignor {
                    Some(a) if others && a != g.assignor => return Outcome::err(ErrorCode::UNSUPPORTED_ASSIGNOR),
                    Some(a) => g.assignor = a,
                    None if !others => g.assignor = Assignor::default(),
                    None => {}
                }
                let record = MemberRecord {
                    client_id: req.client_id.clone(),
                    subscription,
                    session_timeout_ms: req.session_timeout_ms,
                    rebalance_timeout_ms: req.rebalance_timeout_ms,
                    epoch: MemberEpoch::JOIN,
                    previous_epoch: MemberEpoch::JOIN,
                    assigned: Assignment::new(),
                    revoking: Assignment::new(),
                };
                // A known member joining again has dropped everything it had.
                g.members.insert(req.member.clone(), Member { record, session_deadline: now, revoke_deadline: None });
                g.epoch.0 += 1;
                g.empty_since = None;
            }
            epoch => {
                let Some(m) = g.members.get_mut(&req.member) else {
                    if fresh {
                        self.groups.remove(id);
                    }
                    return Outcome::err(ErrorCode::UNKNOWN_MEMBER_ID);
                };
                if epoch != m.record.epoch && epoch != m.record.previous_epoch {
                    return Outcome::err(ErrorCode::FENCED_MEMBER_EPOCH);
                }
                // The previous epoch is a member that missed the reply
                // which moved it on (as in KIP-848): believed only while
                // what it owns is still its own — else it holds
                // partitions since given to another, and is fenced.
                if epoch != m.record.epoch
                    && !req.owned.as_ref().is_some_and(|owned| assignment_minus(owned, &m.record.assigned).is_empty())
                {
                    return Outcome::err(ErrorCode::FENCED_MEMBER_EPOCH);
                }
                if assignor.is_some_and(|a| a != g.assignor) {
                    return Outcome::err(ErrorCode::UNSUPPORTED_ASSIGNOR);
                }
                if let Some(s) = &req.subscription
                    && *s != m.record.subscription
                {
                    m.record.subscription.clone_from(s);
                    g.epoch.0 += 1;
                }
                m.record.session_timeout_ms = req.session_timeout_ms;
                m.record.rebalance_timeout_ms = req.rebalance_timeout_ms;
            }
        }
        let g = self.groups.get_mut(id).expect("group");
        let m = g.members.get_mut(&req.member).expect("member");
        m.session_deadline = now.plus_ms(u64::from(req.session_timeout_ms));
        let target_moved = g.refresh_target(topics);
        g.reconcile(&req.member, req.owned.as_ref(), now);
        if (g.epoch, g.assignor, g.empty_since) != meta_before {
            records.push(meta_record(id, g));
        }
        if target_moved {
            records.push(target_record(id, g));
        }
        let m = &g.members[&req.member];
        if member_before.as_ref() != Some(&m.record) || req.member_epoch == MemberEpoch::JOIN {
            records.push(member_record(id, &req.member, Some(m)));
        }
        Outcome {
            result: Ok(HeartbeatReply {
                member_epoch: m.record.epoch,
                heartbeat_interval_ms: limits.heartbeat_interval_ms,
                assignment: m.record.assigned.clone(),
            }),
            records,
        }
    }

    /// Commits offsets. A member commits only partitions it holds, with
    /// its current epoch; a client outside the group (empty member id,
    /// epoch -1: a consumer that assigns partitions itself, or an operator
    /// resetting offsets) only while the group has no members.
    pub fn commit(
        &mut self,
        group: &str,
        member: &str,
        member_epoch: MemberEpoch,
        offsets: &[CommitOffset],
        now: Millis,
    ) -> Outcome<()> {
        if let Err(code) = validate_group_id(group) {
            return Outcome::err(code);
        }
        if offsets
            .iter()
            .any(|o| o.metadata.len() > self.limits.commit_metadata_bytes_max || o.offset > i64::MAX as u64)
        {
            return Outcome::err(ErrorCode::INVALID_REQUEST);
        }
        if !self.groups.contains_key(group) && self.groups.len() >= self.limits.groups_max {
            return Outcome::err(ErrorCode::GROUP_MAX_SIZE_REACHED);
        }
        if let Some(g) = self.groups.get(group) {
            let new = offsets.iter().filter(|o| !g.offsets.contains_key(&(o.topic.clone(), o.partition))).count();
            if g.offsets.len() + new > self.limits.group_offsets_max {
                return Outcome::err(ErrorCode::INVALID_REQUEST);
            }
            if member.is_empty() {
                if !g.members.is_empty() {
                    return Outcome::err(ErrorCode::UNKNOWN_MEMBER_ID);
                }
            } else {
                let Some(m) = g.members.get(member) else { return Outcome::err(ErrorCode::UNKNOWN_MEMBER_ID) };
                if member_epoch < m.record.epoch {
                    return Outcome::err(ErrorCode::STALE_MEMBER_EPOCH);
                }
                if member_epoch > m.record.epoch {
                    return Outcome::err(ErrorCode::FENCED_MEMBER_EPOCH);
                }
                let holds = |o: &CommitOffset| {
                    assignment_has(&m.record.assigned, &o.topic, o.partition)
                        || assignment_has(&m.record.revoking, &o.topic, o.partition)
                };
                if !offsets.iter().all(holds) {
                    return Outcome::err(ErrorCode::PARTITION_NOT_ASSIGNED);
                }
            }
        } else if !member.is_empty() {
            return Outcome::err(ErrorCode::UNKNOWN_MEMBER_ID);
        } else if offsets.len() > self.limits.group_offsets_max {
            return Outcome::err(ErrorCode::INVALID_REQUEST);
        }
        let fresh = !self.groups.contains_key(group);
        let g = self.groups.entry(group.to_owned()).or_default();
        let mut records = Vec::with_capacity(offsets.len() + 1);
        // An outside committer (manual assignment, no members) is active:
        // retention counts from its last commit, as Kafka's does.
        if fresh || g.members.is_empty() {
            g.empty_since = Some(now);
            records.push(meta_record(group, g));
        }
        for o in offsets {
            let c = Committed { offset: o.offset, metadata: o.metadata.clone(), committed_at: now };
            g.offsets.insert((o.topic.clone(), o.partition), c.clone());
            records.push(GroupRecord::Offset {
                group: group.to_owned(),
                topic: o.topic.clone(),
                partition: o.partition,
                value: Some(c),
            });
        }
        Outcome { result: Ok(()), records }
    }

    /// The committed offsets of a group (all, or of `partitions`).
    pub fn committed(
        &self,
        group: &str,
        partitions: Option<&[(String, u32)]>,
    ) -> Result<BTreeMap<(String, u32), Committed>, ErrorCode> {
        validate_group_id(group)?;
        let Some(g) = self.groups.get(group) else { return Ok(BTreeMap::new()) };
        Ok(match partitions {
            None => g.offsets.clone(),
            Some(ps) => ps.iter().filter_map(|k| g.offsets.get(k).map(|c| (k.clone(), c.clone()))).collect(),
        })
    }

    pub fn describe(&self, group: &str) -> Result<GroupDescription, ErrorCode> {
        validate_group_id(group)?;
        let g = self.groups.get(group).ok_or(ErrorCode::UNKNOWN_GROUP)?;
        let members: Vec<MemberDescription> = g
            .members
            .iter()
            .map(|(id, m)| MemberDescription {
                member: id.clone(),
                client_id: m.record.client_id.clone(),
                epoch: m.record.epoch,
                state: m.state(g.target.get(id)),
                subscription: m.record.subscription.clone(),
                assigned: m.record.assigned.clone(),
                revoking: m.record.revoking.clone(),
            })
            .collect();
        let state = if members.is_empty() {
            "empty"
        } else if members.iter().all(|m| m.state == MemberState::Stable && m.epoch == MemberEpoch::of(g.epoch)) {
            "stable"
        } else {
            "reconciling"
        };
        Ok(GroupDescription {
            group: group.to_owned(),
            state,
            epoch: g.epoch,
            assignor: g.assignor,
            members,
            offsets: g.offsets.clone(),
        })
    }

    /// Replaces an empty group's committed offsets for the given partitions.
    pub fn reset_offsets(&mut self, group: &str, offsets: &[CommitOffset], now: Millis) -> Outcome<()> {
        if let Err(code) = validate_group_id(group) {
            return Outcome::err(code);
        }
        match self.groups.get(group) {
            Some(g) if !g.members.is_empty() => Outcome::err(ErrorCode::GROUP_NOT_EMPTY),
            _ => self.commit(group, "", MemberEpoch::LEAVE, offsets, now),
        }
    }

    /// Deletes an empty group: its offsets and all it knew.
    pub fn delete(&mut self, group: &str) -> Outcome<()> {
        if let Err(code) = validate_group_id(group) {
            return Outcome::err(code);
        }
        let Some(g) = self.groups.get(group) else { return Outcome::err(ErrorCode::UNKNOWN_GROUP) };
        if !g.members.is_empty() {
            return Outcome::err(ErrorCode::GROUP_NOT_EMPTY);
        }
        let g = self.groups.remove(group).expect("checked");
        Outcome { result: Ok(()), records: forget(group, &g) }
    }

    /// Time passing: members whose session or revocation time ran out are
    /// removed, and groups empty for `offsets_retention_ms` are forgotten.
    pub fn tick(&mut self, now: Millis, offsets_retention_ms: u64) -> Vec<GroupRecord> {
        let mut records = Vec::new();
        let mut gone = Vec::new();
        for (id, g) in &mut self.groups {
            let expired: Vec<String> = g
                .members
                .iter()
                .filter(|(_, m)| m.session_deadline < now || m.revoke_deadline.is_some_and(|d| d < now))
                .map(|(member, _)| member.clone())
                .collect();
            if !expired.is_empty() {
                for member in &expired {
                    g.members.remove(member);
                    records.push(member_record(id, member, None));
                }
                g.epoch.0 += 1;
                if g.members.is_empty() {
                    g.empty_since = Some(now);
                }
                records.push(meta_record(id, g));
            }
            if g.members.is_empty() && g.empty_since.is_some_and(|t| t.plus_ms(offsets_retention_ms) <= now) {
                gone.push(id.clone());
            }
        }
        for id in gone {
            let g = self.groups.remove(&id).expect("listed");
            records.extend(forget(&id, &g));
        }
        records
    }

    /// Applies one record read back from the offsets partition.
    pub fn replay(&mut self, record: GroupRecord, now: Millis) {
        let id = record.group().to_owned();
        match record {
            GroupRecord::Queue { queue, topic, partition, value } => self.queues.replay(queue, topic, partition, value),
            GroupRecord::Group { value: None, .. } => {
                self.groups.remove(&id);
            }
            GroupRecord::Group { value: Some(meta), .. } => {
                let g = self.groups.entry(id).or_default();
                g.epoch = meta.epoch;
                g.assignor = meta.assignor;
                g.empty_since = meta.empty_since;
            }
            GroupRecord::Offset { topic, partition, value, .. } => match value {
                Some(c) => {
                    self.groups.entry(id).or_default().offsets.insert((topic, partition), c);
                }
                None => {
                    if let Some(g) = self.groups.get_mut(&id) {
                        g.offsets.remove(&(topic, partition));
                    }
                }
            },
            GroupRecord::Member { member, value, .. } => match value {
                Some(record) => {
                    let session_deadline = now.plus_ms(u64::from(record.session_timeout_ms));
                    let revoke_deadline =
                        (!record.revoking.is_empty()).then(|| now.plus_ms(u64::from(record.rebalance_timeout_ms)));
                    self.groups
                        .entry(id)
                        .or_default()
                        .members
                        .insert(member, Member { record, session_deadline, revoke_deadline });
                }
                None => {
                    if let Some(g) = self.groups.get_mut(&id) {
                        g.members.remove(&member);
                    }
                }
            },
            GroupRecord::Target { value, .. } => {
                let g = self.groups.entry(id).or_default();
                if let Some(t) = value {
                    g.target_epoch = t.epoch;
                    g.target_topics = t.topics;
                    g.target = t.members;
                } else {
                    g.target_epoch = GroupEpoch::default();
                    g.target_topics.clear();
                    g.target.clear();
                }
            }
        }
    }
}

/// The tombstones that forget a group.
fn forget(id: &str, g: &Group) -> Vec<GroupRecord> {
    let mut records: Vec<GroupRecord> = g
        .offsets
        .keys()
        .map(|(topic, partition)| GroupRecord::Offset {
            group: id.to_owned(),
            topic: topic.clone(),
            partition: *partition,
            value: None,
        })
        .collect();
    records.push(GroupRecord::Target { group: id.to_owned(), value: None });
    records.push(GroupRecord::Group { group: id.to_owned(), value: None });
    records
}

#[cfg(test)]
#[path = "tests/coordinator.rs"]
mod tests;
