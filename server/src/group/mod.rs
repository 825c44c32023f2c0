//! Consumer groups in the broker: the driver of `groups::Coordinator`.
//!
//! Group `G` lives in partition `crc32c(G) mod N` of the internal,
//! compacted topic [`OFFSETS_TOPIC`] (created on first use, replicated like
//! any topic in a cluster). The shard that owns that partition, on the
//! broker that leads it, runs the group's coordinator: it loads it by
//! replaying the partition (again whenever its leader epoch moved, since
//! another leader may have changed the groups meanwhile), applies each call
//! in memory, appends the call's records, and answers once they are
//! committed — as durable as an acknowledged produce. An append that fails
//! drops the loaded state, so the next call replays the log and nothing
//! the log lacks is ever answered from memory. Elsewhere a call gets
//! `NOT_COORDINATOR` and the client finds the leader again.
//!
//! Owned by one shard (`Rc`, `RefCell`): the slots never leave their core.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use engine::rt::Runtime;
use engine::types::Offset;
use groups::coordinator::{GroupDescription, validate_group_id};
use groups::{CommitOffset, Coordinator, GroupRecord, Heartbeat, MemberEpoch, Millis};
use protocol::ErrorCode;
use protocol::api::groups::{
    CommitEntry, CommittedEntry, GroupHeartbeatResponse, GroupInfo, GroupListing, MemberInfo, TopicPartitions,
};
use protocol::api::{GroupRequest, GroupResponse};
use protocol::batch::{BatchBuilder, RecordInput};
use protocol::types::Timestamp;

mod queue;

use crate::partition::{Acks, Partition};
use crate::service::{ConnContext, ServiceError};
use crate::shard::Shard;

/// The internal topic of committed offsets and group state.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Encoded bytes per appended batch at most, well under the broker's
/// batch limit (1 MiB by default), so forgetting a large group does not
/// make a batch the log refuses.
const BATCH_RECORD_BYTES_MAX: usize = 256 << 10;

/// Which offsets partition holds `group`.
pub fn partition_of(group: &str, partitions: u32) -> u32 {
    assert!(partitions > 0);
    crc32c::crc32c(group.as_bytes()) % partitions
}

fn now() -> Millis {
    Millis(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64))
}

fn group_error(code: ErrorCode, message: impl Into<String>) -> ServiceError {
    ServiceError::Group { code, message: message.into() }
}

fn from_code(code: ErrorCode, group: &str) -> ServiceError {
    group_error(code, format!("group {group:?}: {}", code.description()))
}

/// One offsets partition's coordinator on this shard.
#[derive(Default)]
struct Slot {
    /// Loaded at this leader epoch (`None`: not loaded, or dropped).
    state: RefCell<Option<(u64, Coordinator)>>,
    /// Held while loading, so one replay runs at a time.
    loading: futures::lock::Mutex<()>,
    /// Held by a call from its change in memory until its records are
    /// committed: no call sees, or builds on, state the log may yet lose,
    /// and a failed append drops the state before the next call runs.
    turn: futures::lock::Mutex<()>,
}

impl Slot {
    /// Runs `f` on the loaded coordinator (the caller holds the turn and
    /// loaded it: no await in between).
    fn with<T>(&self, f: impl FnOnce(&mut Coordinator) -> T) -> T {
        let mut state = self.state.borrow_mut();
        let (_, c) = state.as_mut().expect("loaded by the caller");
        f(c)
    }
}

/// The coordinators of the offsets partitions this shard owns.
#[derive(Default)]
pub struct GroupShard {
    slots: RefCell<HashMap<u32, Rc<Slot>>>,
    /// Lag per (group, topic, partition), refreshed by the tick: what the
    /// metrics endpoint shows.
    pub lag: RefCell<BTreeMap<(String, String, u32), u64>>,
    ticking: Cell<bool>,
}

fn to_assignment(tps: &[TopicPartitions]) -> groups::Assignment {
    let mut a = groups::Assignment::new();
    for tp in tps {
        a.entry(tp.topic.clone()).or_default().extend(tp.partitions.iter().copied());
    }
    a.retain(|_, ps| !ps.is_empty());
    a
}

fn from_assignment(a: &groups::Assignment) -> Vec<TopicPartitions> {
    a.iter().map(|(t, ps)| TopicPartitions { topic: t.clone(), partitions: ps.iter().copied().collect() }).collect()
}

fn to_commits(offsets: Vec<CommitEntry>) -> Vec<CommitOffset> {
    offsets
        .into_iter()
        .map(|o| CommitOffset { topic: o.topic, partition: o.partition, offset: o.offset, metadata: o.metadata })
        .collect()
}

fn committed_entries(offsets: &BTreeMap<(String, u32), groups::records::Committed>) -> Vec<CommittedEntry> {
    offsets
        .iter()
        .map(|((topic, partition), c)| CommittedEntry {
            topic: topic.clone(),
            partition: *partition,
            offset: c.offset,
            metadata: c.metadata.clone(),
            committed_at_ms: c.committed_at.0,
        })
        .collect()
}

fn describe(d: GroupDescription) -> GroupInfo {
    GroupInfo {
        group: d.group,
        state: d.state.to_owned(),
        epoch: d.epoch.0,
        assignor: d.assignor.name().to_owned(),
        members: d
            .members
            .into_iter()
            .map(|m| MemberInfo {
                member: m.member,
                client_id: m.client_id,
                epoch: m.epoch.0,
                state: m.state.name().to_owned(),
                subscription: m.subscription.into_iter().collect(),
                assigned: from_assignment(&m.assigned),
                revoking: from_assignment(&m.revoking),
            })
            .collect(),
        offsets: committed_entries(&d.offsets),
    }
}

/// The records of one call as batches to append.
fn batches(records: &[GroupRecord], at: Millis) -> Result<Vec<Bytes>, ServiceError> {
    let mut out = Vec::new();
    let mut b = BatchBuilder::new();
    let mut bytes = 0;
    for r in records {
        let (k, v) = r.encode();
        let len = k.len() + v.as_ref().map_or(0, Bytes::len);
        if bytes > 0 && bytes + len > BATCH_RECORD_BYTES_MAX {
            out.push(Bytes::from(b.build().map_err(|e| ServiceError::InvalidRequest(e.to_string()))?));
            b = BatchBuilder::new();
            bytes = 0;
        }
        b.push(RecordInput::new(Some(&k), v.as_deref(), Timestamp(at.0 as i64)));
        bytes += len;
    }
    if bytes > 0 {
        out.push(Bytes::from(b.build().map_err(|e| ServiceError::InvalidRequest(e.to_string()))?));
    }
    Ok(out)
}

impl<R: Runtime> Shard<R> {
    /// A group API call, from any shard: routed to the owner of the group's
    /// offsets partition.
    pub async fn group_call(
        self: &Rc<Self>,
        ctx: &ConnContext,
        req: GroupRequest,
    ) -> Result<GroupResponse, ServiceError> {
        if let GroupRequest::ListGroups = req {
            return self.list_groups().await;
        }
        let group = match &req {
            GroupRequest::FindCoordinator { group }
            | GroupRequest::OffsetCommit { group, .. }
            | GroupRequest::OffsetFetch { group, .. }
            | GroupRequest::DescribeGroup { group }
            | GroupRequest::DeleteGroup { group }
            | GroupRequest::ResetOffsets { group, .. }
            | GroupRequest::DescribeQueue { queue: group }
            | GroupRequest::DeleteQueue { queue: group } => group.clone(),
            GroupRequest::Heartbeat(h) => h.group.clone(),
            GroupRequest::QueueFetch(q) => q.queue.clone(),
            GroupRequest::ListGroups => unreachable!("answered above"),
        };
        validate_group_id(&group).map_err(|code| from_code(code, &group))?;
        let names: Vec<&str> = match &req {
            GroupRequest::Heartbeat(h) => h.subscription.iter().flatten().map(String::as_str).collect(),
            GroupRequest::OffsetCommit { offsets, .. } | GroupRequest::ResetOffsets { offsets, .. } => {
                offsets.iter().map(|o| o.topic.as_str()).collect()
            }
            GroupRequest::QueueFetch(q) => {
                q.topics.iter().chain(q.acks.iter().map(|a| &a.topic)).map(String::as_str).collect()
            }
            _ => Vec::new(),
        };
        for name in names {
            protocol::names::validate_topic_name(name).map_err(ServiceError::InvalidTopicName)?;
        }
        let partitions = self.offsets_topic(ctx).await?;
        let partition = partition_of(&group, partitions);
        if let GroupRequest::FindCoordinator { .. } = req {
            return Ok(GroupResponse::FindCoordinator { topic: OFFSETS_TOPIC.to_owned(), partition });
        }
        let (tp, owner) = self.resolve(OFFSETS_TOPIC, partition)?;
        let client_id = ctx.client_id.clone();
        let response = self
            .invoke_on(owner, move |shard| async move {
                let partition = shard.partition(tp)?;
                shard.coordinate(&partition, &client_id, req).await
            })
            .await??;
        // A queue's dead-letter topic is made when it first has a dead
        // letter to copy: only queues that exist (at most `queues_max` per
        // coordinator) ever get one.
        if let GroupResponse::QueueFetch(r) = &response
            && r.acquired.iter().any(|a| a.dead_letter.is_some())
        {
            self.dead_letter_topic(ctx, &group).await?;
        }
        Ok(response)
    }

    /// The offsets topic's partition count, creating the topic first if
    /// there is none yet.
    async fn offsets_topic(self: &Rc<Self>, ctx: &ConnContext) -> Result<u32, ServiceError> {
        if let Some(t) = self.topic(OFFSETS_TOPIC) {
            return Ok(t.meta.partitions);
        }
        let settings = &self.config.groups;
        // In a cluster the controller's default replication factor applies:
        // three copies, or as many as there are brokers.
        let config = BTreeMap::from([
            ("cleanup.policy".to_owned(), "compact".to_owned()),
            ("segment.bytes".to_owned(), settings.offsets_segment_bytes.to_string()),
        ]);
        match self.create_topic(ctx, OFFSETS_TOPIC.to_owned(), settings.offsets_topic_partitions, config).await {
            Ok(()) | Err(ServiceError::TopicExists(_)) => {}
            Err(e) => return Err(e),
        }
        // The topic table of this shard learns of it a moment later.
        for _ in 0..100 {
            if let Some(t) = self.topic(OFFSETS_TOPIC) {
                return Ok(t.meta.partitions);
            }
            self.rt.sleep(std::time::Duration::from_millis(10)).await;
        }
        Err(group_error(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS, "the offsets topic is being created"))
    }

    /// Creates the queue's dead-letter topic if it has none yet (one
    /// partition: dead letters are few, and kept in the order they came).
    async fn dead_letter_topic(self: &Rc<Self>, ctx: &ConnContext, queue: &str) -> Result<(), ServiceError> {
        let name = groups::queue::dead_letter_topic(queue);
        if self.topic(&name).is_some() {
            return Ok(());
        }
        match self.create_topic(ctx, name, 1, BTreeMap::new()).await {
            Ok(()) | Err(ServiceError::TopicExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// This shard leads `partition` (a standalone broker always does) at
    /// the returned epoch.
    fn leads(partition: &Partition<R>) -> Result<u64, ServiceError> {
        match partition.driver() {
            None if partition.is_replicated() => {
                Err(group_error(ErrorCode::NOT_COORDINATOR, "the offsets partition's replica is not running"))
            }
            None => Ok(0),
            Some(driver) => {
                let s = driver.status();
                if s.role == replication::replica::Role::Leader && s.serving {
                    Ok(u64::from(s.epoch.0))
                } else {
                    Err(group_error(
                        ErrorCode::NOT_COORDINATOR,
                        "this broker does not lead the group's offsets partition",
                    ))
                }
            }
        }
    }

    fn slot(&self, partition: u32) -> Rc<Slot> {
        self.groups.slots.borrow_mut().entry(partition).or_default().clone()
    }

    /// The slot's coordinator loaded at the current leader epoch.
    async fn loaded(&self, partition: &Rc<Partition<R>>) -> Result<Rc<Slot>, ServiceError> {
        let epoch = Self::leads(partition)?;
        let slot = self.slot(partition.tp.partition.0);
        if slot.state.borrow().as_ref().is_some_and(|(e, _)| *e == epoch) {
            return Ok(slot);
        }
        {
            let _turn = slot.loading.lock().await;
            if slot.state.borrow().as_ref().is_none_or(|(e, _)| *e != epoch) {
                *slot.state.borrow_mut() = None;
                let coordinator = self.replay(partition).await?;
                if Self::leads(partition)? != epoch {
                    return Err(group_error(ErrorCode::NOT_COORDINATOR, "leadership moved while loading"));
                }
                let groups = coordinator.groups().count();
                tracing::info!(partition = partition.tp.partition.0, groups, "group coordinator loaded");
                *slot.state.borrow_mut() = Some((epoch, coordinator));
            }
        }
        Ok(slot)
    }

    /// Builds a coordinator from the partition's committed records.
    async fn replay(&self, partition: &Rc<Partition<R>>) -> Result<Coordinator, ServiceError> {
        let mut c = Coordinator::new(self.config.groups.limits());
        let at = now();
        let high_watermark = partition.high_watermark()?;
        let mut next = partition.log_start_offset()?;
        while next < high_watermark {
            let read = partition.read(next, 1 << 20).await?;
            if read.batches.is_empty() {
                break;
            }
            for chunk in &read.batches {
                let pieces = protocol::api::split_batches(chunk)
                    .ok_or_else(|| ServiceError::Storage("a damaged batch in the offsets topic".into()))?;
                for batch in pieces {
                    let view = protocol::batch::validate_batch(&batch)
                        .map_err(|e| ServiceError::Storage(format!("offsets topic: {e}")))?;
                    let base = view.header.base_offset;
                    next = Offset(base.0 + u64::from(view.header.last_offset_delta) + 1);
                    if view.header.is_control() {
                        continue;
                    }
                    let records = view.records().map_err(|e| ServiceError::Storage(format!("offsets topic: {e}")))?;
                    for r in records.iter() {
                        if base.0 + u64::from(r.offset_delta.to_native()) >= high_watermark.0 {
                            break;
                        }
                        let Some(key) = r.key.as_ref() else { continue };
                        let value = r.value.as_ref().map(|v| Bytes::copy_from_slice(v.as_slice()));
                        match GroupRecord::decode(Bytes::copy_from_slice(key.as_slice()), value) {
                            Ok(record) => c.replay(record, at),
                            // A record this build cannot read is skipped, loudly: refusing
                            // to coordinate would stop every group of the partition.
                            Err(e) => tracing::warn!(error = %e, "an offsets-topic record was skipped"),
                        }
                    }
                }
            }
        }
        Ok(c)
    }

    /// Appends `records`; on failure the slot is dropped (the next call
    /// replays what the log holds).
    async fn persist(
        &self,
        partition: &Rc<Partition<R>>,
        slot: &Slot,
        records: &[GroupRecord],
    ) -> Result<(), ServiceError> {
        if records.is_empty() {
            return Ok(());
        }
        let batches = match batches(records, now()) {
            Ok(b) => b,
            Err(e) => {
                *slot.state.borrow_mut() = None;
                return Err(e);
            }
        };
        let appends: Vec<_> = batches.iter().map(|b| partition.append(b, Acks::All, false)).collect();
        let mut failed = None;
        for append in appends {
            if let Err(e) = append.await {
                failed.get_or_insert(e);
            }
        }
        match failed {
            None => Ok(()),
            Some(e) => {
                *slot.state.borrow_mut() = None;
                Err(match e {
                    ServiceError::NotLeader { .. } | ServiceError::LeaderNotAvailable(_) => {
                        group_error(ErrorCode::NOT_COORDINATOR, e.to_string())
                    }
                    e => e,
                })
            }
        }
    }

    /// Runs one call on the coordinator of `partition` (this shard owns it).
    async fn coordinate(
        self: &Rc<Self>,
        partition: &Rc<Partition<R>>,
        client_id: &str,
        req: GroupRequest,
    ) -> Result<GroupResponse, ServiceError> {
        // Read before the turn: a bound read earlier is only lower, which
        // hands out less, never an offset the log lacks.
        let bounds = match &req {
            GroupRequest::QueueFetch(q) => Some(self.queue_bounds(&q.topics, !q.acks.is_empty()).await?),
            _ => None,
        };
        let waiting = self.slot(partition.tp.partition.0);
        let _turn = waiting.turn.lock().await;
        let slot = self.loaded(partition).await?;
        let at = now();
        let mut records = Vec::new();
        let result: Result<GroupResponse, ErrorCode>;
        let group_name: String;
        match req {
            GroupRequest::Heartbeat(h) => {
                group_name = h.group.clone();
                let subscription: Option<BTreeSet<String>> = h.subscription.map(|s| s.into_iter().collect());
                let topics: BTreeMap<String, u32> = {
                    let state = slot.state.borrow();
                    let known = state
                        .as_ref()
                        .and_then(|(_, c)| c.group(&h.group))
                        .map(groups::group::Group::subscribed_topics);
                    let mut names: BTreeSet<String> = known.unwrap_or_default();
                    names.extend(subscription.iter().flatten().cloned());
                    names.into_iter().filter_map(|t| self.topic(&t).map(|e| (t, e.meta.partitions))).collect()
                };
                let call = Heartbeat {
                    group: h.group,
                    member: h.member,
                    member_epoch: MemberEpoch(h.member_epoch),
                    client_id: client_id.to_owned(),
                    subscription,
                    assignor: h.assignor,
                    owned: h.owned.as_deref().map(to_assignment),
                    session_timeout_ms: h.session_timeout_ms,
                    rebalance_timeout_ms: h.rebalance_timeout_ms,
                };
                let o = slot.with(|c| c.heartbeat(&call, &topics, at));
                records = o.records;
                result = o.result.map(|r| {
                    GroupResponse::Heartbeat(GroupHeartbeatResponse {
                        member_epoch: r.member_epoch.0,
                        heartbeat_interval_ms: r.heartbeat_interval_ms,
                        assignment: from_assignment(&r.assignment),
                    })
                });
            }
            GroupRequest::OffsetCommit { group, member, member_epoch, offsets } => {
                let offsets = to_commits(offsets);
                let o = slot.with(|c| c.commit(&group, &member, MemberEpoch(member_epoch), &offsets, at));
                records = o.records;
                result = o.result.map(|()| GroupResponse::OffsetCommit);
                group_name = group;
            }
            GroupRequest::ResetOffsets { group, offsets } => {
                let offsets = to_commits(offsets);
                let o = slot.with(|c| c.reset_offsets(&group, &offsets, at));
                records = o.records;
                result = o.result.map(|()| GroupResponse::ResetOffsets);
                group_name = group;
            }
            GroupRequest::DeleteGroup { group } => {
                let o = slot.with(|c| c.delete(&group));
                records = o.records;
                result = o.result.map(|()| GroupResponse::DeleteGroup);
                group_name = group;
            }
            GroupRequest::OffsetFetch { group, partitions } => {
                let wanted: Vec<(String, u32)> =
                    partitions.iter().flat_map(|tp| tp.partitions.iter().map(|p| (tp.topic.clone(), *p))).collect();
                result = slot
                    .with(|c| c.committed(&group, (!wanted.is_empty()).then_some(wanted.as_slice())))
                    .map(|o| GroupResponse::OffsetFetch(committed_entries(&o)));
                group_name = group;
            }
            GroupRequest::DescribeGroup { group } => {
                result = slot.with(|c| c.describe(&group)).map(|d| GroupResponse::DescribeGroup(describe(d)));
                group_name = group;
            }
            GroupRequest::QueueFetch(q) => {
                let bounds = bounds.unwrap_or_default();
                let o = slot.with(|c| c.queues_mut().fetch(&q, &bounds, at));
                records = o.records;
                result = o.result.map(GroupResponse::QueueFetch);
                group_name = q.queue;
            }
            GroupRequest::DescribeQueue { queue } => {
                result = slot.with(|c| c.queues().describe(&queue, at)).map(GroupResponse::DescribeQueue);
                group_name = queue;
            }
            GroupRequest::DeleteQueue { queue } => {
                let o = slot.with(|c| c.queues_mut().delete(&queue, at));
                records = o.records;
                result = o.result.map(|()| GroupResponse::DeleteQueue);
                group_name = queue;
            }
            GroupRequest::FindCoordinator { .. } | GroupRequest::ListGroups => {
                unreachable!("answered by group_call")
            }
        }
        // Even a refused call may carry records (none today); they go first.
        self.persist(partition, &slot, &records).await?;
        result.map_err(|code| from_code(code, &group_name))
    }

    /// Every group this broker coordinates, from all its shards.
    async fn list_groups(self: &Rc<Self>) -> Result<GroupResponse, ServiceError> {
        let all = self
            .invoke_on_all(|shard| async move {
                let mut out = Vec::new();
                for partition in shard.owned_offsets_partitions() {
                    let Ok(slot) = shard.loaded(&partition).await else { continue };
                    let state = slot.state.borrow();
                    let Some((_, c)) = state.as_ref() else { continue };
                    for (id, g) in c.groups() {
                        let state = c.describe(id).map_or("dead", |d| d.state);
                        out.push(GroupListing {
                            group: id.clone(),
                            state: state.to_owned(),
                            members: g.members.len() as u32,
                        });
                    }
                    for (id, q) in c.queues().iter() {
                        out.push(GroupListing {
                            group: id.clone(),
                            state: "queue".to_owned(),
                            members: q.members.len() as u32,
                        });
                    }
                }
                out
            })
            .await;
        let mut groups: Vec<GroupListing> = all.into_iter().filter_map(Result::ok).flatten().collect();
        groups.sort_by(|a, b| a.group.cmp(&b.group));
        Ok(GroupResponse::ListGroups(groups))
    }

    fn owned_offsets_partitions(&self) -> Vec<Rc<Partition<R>>> {
        let Some(topic) = self.topic(OFFSETS_TOPIC) else { return Vec::new() };
        self.owned_partitions().into_iter().filter(|p| p.tp.topic == topic.meta.id).collect()
    }

    /// Time passing for every coordinator this shard leads: expired
    /// sessions, retention, and the lag the metrics show.
    pub async fn groups_tick(self: &Rc<Self>) {
        if self.groups.ticking.replace(true) {
            return;
        }
        let retention = self.config.groups.offsets_retention_ms;
        let mut committed: Vec<(String, String, u32, u64)> = Vec::new();
        for partition in self.owned_offsets_partitions() {
            let waiting = self.slot(partition.tp.partition.0);
            let _turn = waiting.turn.lock().await;
            let Ok(slot) = self.loaded(&partition).await else { continue };
            let records = {
                let mut state = slot.state.borrow_mut();
                let Some((_, c)) = state.as_mut() else { continue };
                let at = now();
                let mut records = c.tick(at, retention);
                records.extend(c.queues_mut().tick(at));
                for (id, g) in c.groups() {
                    for ((topic, p), o) in &g.offsets {
                        committed.push((id.clone(), topic.clone(), *p, o.offset));
                    }
                }
                records
            };
            if let Err(e) = self.persist(&partition, &slot, &records).await {
                tracing::warn!(error = %e, "group expiry not written; the coordinator reloads");
            }
        }
        let wanted: BTreeSet<(String, u32)> = committed.iter().map(|(_, t, p, _)| (t.clone(), *p)).collect();
        let bounds = self.partition_bounds(wanted.into_iter().collect()).await;
        let mut lag = BTreeMap::new();
        for (group, topic, p, offset) in committed {
            if let Some((_, end)) = bounds.get(&(topic.clone(), p)) {
                lag.insert((group, topic, p), end.saturating_sub(offset));
            }
        }
        *self.groups.lag.borrow_mut() = lag;
        self.groups.ticking.set(false);
    }
}
