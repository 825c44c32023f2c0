//! Moving a partition's replicas while it serves (docs/replication.md §8,
//! Reassign). The controller records where a partition goes
//! (`ReassignmentStarted`); every broker of the old and the new set
//! applies it: the new ones open the partition (a fresh replica, told the
//! epoch by the leader), and every replica is given the target, which
//! its leader walks the Raft config to (`replication::replica::reconfig`:
//! learners, a joint config, the new set). When a leader's committed
//! config is the target's, its broker tells the controller, which records
//! `ReassignmentEnded`: the new set is the assignment, and the brokers left
//! out close the partition and delete their copy. A move is decided
//! once and finished by whoever leads, so a leader that dies mid-move
//! leaves nothing half done: the next one carries on from the log.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use engine::rt::Runtime;
use engine::types::Offset;
use protocol::types::NodeId;
use replication::replica::{Admin, Input, Role, TARGET_REPLICAS_MAX};
use serde::{Deserialize, Serialize};

use super::records::MetadataRecord;
use super::{API_REASSIGN, API_REASSIGN_DONE};
use crate::ids::{CONTROLLER, TopicId, TopicPartition};
use crate::metadata::TopicMeta;
use crate::partition::Partition;
use crate::service::ServiceError;
use crate::shard::Shard;

/// Moves under way over the whole cluster, at most.
pub const REASSIGNMENTS_IN_FLIGHT_MAX: usize = 4;

/// How often a replica of a moving partition looks again whether its
/// move is done, besides at every change of its role or config.
const DONE_RECHECK: Duration = Duration::from_secs(1);

#[derive(Debug, Serialize, Deserialize)]
struct ReassignCall {
    name: String,
    partition: u32,
    replicas: Vec<u32>,
}

#[derive(Debug, Serialize, Deserialize)]
struct DoneCall {
    topic: u64,
    partition: u32,
    voters: Vec<u32>,
}

/// The target as the replicas take it.
pub(crate) fn target_nodes(target: &[u32]) -> Vec<NodeId> {
    target.iter().map(|&n| NodeId(n)).collect()
}

impl<R: Runtime> Shard<R> {
    /// A client's `ReassignPartition`: decided by the controller, answered
    /// once the move is recorded (it finishes in the background).
    pub async fn reassign_partition(
        self: &Rc<Self>,
        name: String,
        partition: u32,
        replicas: Vec<u32>,
    ) -> Result<(), ServiceError> {
        if self.cluster().is_none() {
            return Err(ServiceError::InvalidRequest(
                "a broker without --peers is a one-broker cluster: its partitions cannot move".into(),
            ));
        }
        let body = Bytes::from(serde_json::to_vec(&ReassignCall { name, partition, replicas }).expect("serializes"));
        self.invoke_on(CONTROLLER, move |c| async move { c.controller_call(API_REASSIGN, body).await }).await?
    }

    /// The controller's check of a move, and its record.
    pub(super) async fn decide_and_commit_reassign(self: &Rc<Self>, body: &[u8]) -> Result<Offset, ServiceError> {
        let call: ReassignCall =
            serde_json::from_slice(body).map_err(|e| ServiceError::InvalidRequest(format!("a reassign call: {e}")))?;
        let (cluster, driver, _turn) = self.deciding().await?;
        let meta = self
            .controller()
            .metadata
            .borrow()
            .topics
            .get(&call.name)
            .cloned()
            .ok_or_else(|| ServiceError::UnknownTopic(call.name.clone()))?;
        if call.partition >= meta.partitions {
            return Err(ServiceError::UnknownPartition {
                topic: call.name,
                partition: call.partition,
                count: meta.partitions,
            });
        }
        let mut seen = call.replicas.clone();
        seen.sort_unstable();
        seen.dedup();
        if call.replicas.is_empty() || seen.len() != call.replicas.len() || seen.len() > TARGET_REPLICAS_MAX {
            return Err(ServiceError::InvalidReplicationFactor(format!(
                "replicas {:?}: 1 to {TARGET_REPLICAS_MAX} brokers, each once",
                call.replicas
            )));
        }
        let brokers = cluster.brokers();
        if let Some(unknown) = call.replicas.iter().find(|r| !brokers.contains(r)) {
            return Err(ServiceError::UnknownBroker(format!("the cluster has no broker {unknown}")));
        }
        if let Some(target) = meta.target_of(call.partition) {
            return if target == call.replicas.as_slice() {
                Ok(Offset(0))
            } else {
                Err(ServiceError::ReassignmentInProgress(format!(
                    "{}/{} is already moving to {target:?}",
                    call.name, call.partition
                )))
            };
        }
        if meta.replicas_of(call.partition) == Some(call.replicas.as_slice()) {
            return Ok(Offset(0));
        }
        let moving: usize = self.controller().metadata.borrow().topics.values().map(|t| t.moving.len()).sum();
        if moving >= REASSIGNMENTS_IN_FLIGHT_MAX {
            return Err(ServiceError::ReassignmentInProgress(format!(
                "{moving} partitions are moving already (at most {REASSIGNMENTS_IN_FLIGHT_MAX} at once): try again \
                 once one is done"
            )));
        }
        tracing::info!(topic = %call.name, partition = call.partition, from = ?meta.replicas_of(call.partition),
            to = ?call.replicas, "a partition starts moving");
        let record = MetadataRecord::ReassignmentStarted {
            id: meta.id,
            name: call.name,
            partition: call.partition,
            target: call.replicas,
        };
        self.commit_record(&driver, &record).await
    }

    /// The controller records the end of a move a leader reports done.
    pub(super) async fn decide_and_commit_reassign_done(self: &Rc<Self>, body: &[u8]) -> Result<Offset, ServiceError> {
        let call: DoneCall = serde_json::from_slice(body)
            .map_err(|e| ServiceError::InvalidRequest(format!("a reassign-done call: {e}")))?;
        let (_, driver, _turn) = self.deciding().await?;
        let meta = self.topic_meta_by_id(TopicId(call.topic));
        let Some(meta) = meta else { return Ok(Offset(0)) };
        let Some(target) = meta.target_of(call.partition).map(<[u32]>::to_vec) else { return Ok(Offset(0)) };
        let mut wanted = target.clone();
        wanted.sort_unstable();
        let mut voters = call.voters;
        voters.sort_unstable();
        if wanted != voters {
            return Ok(Offset(0)); // a report from before the target changed
        }
        tracing::info!(topic = %meta.name, partition = call.partition, replicas = ?target, "a partition's move is done");
        let record = MetadataRecord::ReassignmentEnded {
            id: meta.id,
            name: meta.name,
            partition: call.partition,
            replicas: target,
        };
        self.commit_record(&driver, &record).await
    }

    fn topic_meta_by_id(&self, id: TopicId) -> Option<TopicMeta> {
        self.controller().metadata.borrow().topics.values().find(|t| t.id == id).cloned()
    }

    /// Applies a move's record to this broker's copy of the topic.
    pub(super) async fn apply_reassignment(
        self: &Rc<Self>,
        id: TopicId,
        name: &str,
        partition: u32,
        change: impl FnOnce(&mut TopicMeta),
    ) {
        let Some(mut meta) = self.controller().metadata.borrow().topics.get(name).filter(|t| t.id == id).cloned()
        else {
            return;
        };
        let before = meta.clone();
        change(&mut meta);
        if meta == before {
            return;
        }
        if let Err(e) = self.replace_topic_meta(meta).await {
            tracing::error!(topic = name, partition, error = %e, "applying a partition move failed");
        }
    }

    /// After adopting `meta`: every replica of a partition on this shard
    /// hears its target (or that there is none), and a moving one is
    /// watched until its move is done.
    pub(crate) fn steer_replicas(self: &Rc<Self>, meta: &TopicMeta, tp: TopicPartition, partition: &Rc<Partition<R>>) {
        let Some(driver) = partition.driver() else { return };
        let target = meta.target_of(tp.partition.0).map(target_nodes);
        let moving = target.is_some();
        driver.input(Input::Admin(Admin::Reassign { target }));
        if moving && self.cluster().is_some_and(|c| c.watching.borrow_mut().insert(tp)) {
            let s = self.clone();
            drop(self.rt.spawn(async move { s.watch_move(tp).await }));
        }
    }

    /// Tells the controller once this replica leads with the target's
    /// config committed; ends when the partition stops moving (or is gone
    /// from this shard).
    async fn watch_move(self: Rc<Self>, tp: TopicPartition) {
        loop {
            let target = self.topic_by_id(tp.topic).and_then(|t| t.meta.target_of(tp.partition.0).map(<[u32]>::to_vec));
            let (Some(target), Ok(partition)) = (target, self.partition(tp)) else { break };
            let Some(driver) = partition.driver() else { break };
            let changed = driver.status_changed();
            let status = driver.status();
            let mut wanted = target.clone();
            wanted.sort_unstable();
            let done = status.settled.as_ref().map(|v| {
                let mut v: Vec<u32> = v.iter().map(|n| n.0).collect();
                v.sort_unstable();
                v
            });
            // A leader the move leaves out hands over first: the end is
            // reported by one that stays, so no broker drops a replica that
            // still leads.
            let me = self.cluster().map(|c| c.config.node.0);
            let stays = me.is_some_and(|n| wanted.contains(&n));
            if status.role == Role::Leader && stays && done.as_ref() == Some(&wanted) {
                let call = DoneCall { topic: tp.topic.0, partition: tp.partition.0, voters: wanted };
                let body = Bytes::from(serde_json::to_vec(&call).expect("serializes"));
                let told = self
                    .invoke_on(CONTROLLER, move |c| async move { c.controller_call(API_REASSIGN_DONE, body).await });
                if let Err(e) = told.await.and_then(|r| r) {
                    tracing::debug!(error = %e, "telling the controller a move is done failed: trying again");
                }
            }
            let _ = engine::rt::until(&self.rt, self.rt.now() + DONE_RECHECK, changed).await;
        }
        if let Some(cluster) = self.cluster() {
            cluster.watching.borrow_mut().remove(&tp);
        }
    }

    /// A partition this broker no longer holds a replica of: closed, and
    /// its copy deleted (the move that took it away is committed).
    pub(crate) async fn drop_replica(self: &Rc<Self>, tp: TopicPartition) {
        let Some(partition) = self.take_partition(tp) else { return };
        partition.close().await;
        let dir = partition.dir().to_path_buf();
        match engine::rt::Storage::remove_dir_all(self.rt.storage(), &dir).await {
            Ok(()) => tracing::info!(topic = %partition.topic, partition = tp.partition.0,
                "the partition moved away: its copy here is deleted"),
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot delete a moved partition's copy"),
        }
    }
}
