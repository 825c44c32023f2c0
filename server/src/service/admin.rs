//! Topic administration. The controller (shard 0) decides: it checks the
//! request, writes the metadata, and tells every shard (itself included) to
//! apply the change, answering only when all have, so a topic a create
//! acknowledged is usable from every shard. Any shard routes these calls
//! to it.

use std::collections::BTreeMap;
use std::rc::Rc;

use engine::rt::Runtime;
use engine::types::Offset;

use super::{ConnContext, ServiceError};
use crate::ids::{CONTROLLER, ShardId, TopicId, TopicPartition};
use crate::metadata::{self, Deleted, TopicMeta};
use crate::partition::PartitionState;
use crate::shard::Shard;
use crate::topic_config::{self, ConfigEntry};

/// One partition, as `describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    pub partition: u32,
    pub shard: ShardId,
    pub error: Option<ServiceError>,
    pub log_start_offset: Offset,
    pub high_watermark: Offset,
    pub log_end_offset: Offset,
    pub size_bytes: u64,
    /// Bytes of sealed, replicated segments, and of those not yet cleaned.
    pub cleanable_bytes: u64,
    pub dirty_bytes: u64,
    /// When the cleaner last finished a pass (ms since the epoch).
    pub last_clean_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub name: String,
    pub id: TopicId,
    pub config: Vec<ConfigEntry>,
    pub partitions: Vec<PartitionDescription>,
}

/// A change to a topic's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConfigChange {
    pub set: BTreeMap<String, String>,
    pub delete: Vec<String>,
}

/// The create-topic setting that is no topic setting: how many replicas
/// each partition has (cluster mode; default min(3, brokers)).
pub const REPLICATION_FACTOR: &str = "replication.factor";

fn store_error(what: &str, e: &std::io::Error) -> ServiceError {
    let message = format!("{what}: {e}");
    if engine::is_enospc(e) { ServiceError::DiskFull(message) } else { ServiceError::Storage(message) }
}

/// The internal topic of group state is the coordinators' alone: a client
/// that deleted it, changed its cleanup policy or wrote into it would lose
/// or corrupt every group's offsets.
pub(crate) fn refuse_internal(name: &str) -> Result<(), ServiceError> {
    if name == crate::group::OFFSETS_TOPIC {
        return Err(ServiceError::InvalidRequest(format!(
            "{name} is internal: it holds the consumer groups' state, written only by their coordinators"
        )));
    }
    Ok(())
}

impl<R: Runtime> Shard<R> {
    pub fn list_topics(&self) -> Vec<(String, u32)> {
        self.topic_list().iter().map(|t| (t.meta.name.clone(), t.meta.partitions)).collect()
    }

    pub async fn create_topic(
        self: &Rc<Self>,
        ctx: &ConnContext,
        name: String,
        partitions: u32,
        config: BTreeMap<String, String>,
    ) -> Result<(), ServiceError> {
        tracing::debug!(client = ctx.client_id, topic = name, "create topic");
        self.invoke_on(CONTROLLER, move |c| async move { c.controller_create(name, partitions, config).await }).await?
    }

    pub async fn delete_topic(self: &Rc<Self>, ctx: &ConnContext, name: String) -> Result<(), ServiceError> {
        tracing::debug!(client = ctx.client_id, topic = name, "delete topic");
        refuse_internal(&name)?;
        self.invoke_on(CONTROLLER, move |c| async move { c.controller_delete(name).await }).await?
    }

    pub async fn alter_topic_config(
        self: &Rc<Self>,
        ctx: &ConnContext,
        name: String,
        change: ConfigChange,
    ) -> Result<(), ServiceError> {
        tracing::debug!(client = ctx.client_id, topic = name, "alter topic config");
        refuse_internal(&name)?;
        self.invoke_on(CONTROLLER, move |c| async move { c.controller_alter(name, change).await }).await?
    }

    pub(crate) fn controller(&self) -> &crate::shard::Controller {
        self.controller.as_ref().expect("topic changes run on the controller")
    }

    /// Stores the metadata; the caller holds the controller's turn.
    pub(crate) async fn store_metadata(&self) -> Result<(), ServiceError> {
        let snapshot = self.controller().metadata.borrow().clone();
        metadata::store(self.rt.storage(), &self.config.data_dir, &snapshot)
            .await
            .map_err(|e| store_error("writing topic metadata", &e))
    }

    /// Tells every shard about a new or changed topic.
    async fn broadcast_adopt(self: &Rc<Self>, meta: TopicMeta) -> Result<(), ServiceError> {
        let results = self.invoke_on_all(move |shard| {
            let meta = meta.clone();
            async move { shard.adopt_topic(meta).await }
        });
        results.await.into_iter().collect::<Result<Vec<()>, _>>().map(|_| ())
    }

    async fn controller_create(
        self: &Rc<Self>,
        name: String,
        partitions: u32,
        mut config: BTreeMap<String, String>,
    ) -> Result<(), ServiceError> {
        let replication_factor = config.remove(REPLICATION_FACTOR);
        if self.cluster().is_some() {
            return self.cluster_create(name, partitions, config, replication_factor).await;
        }
        if replication_factor.as_deref().is_some_and(|rf| rf != "1") {
            return Err(ServiceError::InvalidReplicationFactor(
                "a broker without --peers holds one replica of each partition: the replication factor is 1".into(),
            ));
        }
        // Decided under the turn: two creates never take one id.
        let _turn = self.controller().turn.acquire(1).await.ok_or(ServiceError::ShuttingDown)?;
        let meta = self.decide_create(&name, partitions, &config, None)?;
        self.install_topic(meta).await
    }

    /// Checks a topic creation and gives the topic its id (the next one
    /// free) and, in a cluster, its replicas.
    pub(crate) fn decide_create(
        &self,
        name: &str,
        partitions: u32,
        config: &BTreeMap<String, String>,
        replicas: Option<Vec<Vec<u32>>>,
    ) -> Result<TopicMeta, ServiceError> {
        protocol::names::validate_topic_name(name).map_err(ServiceError::InvalidTopicName)?;
        let limits = &self.config.limits;
        if partitions == 0 || partitions > limits.topic_partitions_max {
            return Err(ServiceError::InvalidPartitions(format!(
                "partitions must be 1 to {}, got {partitions}",
                limits.topic_partitions_max
            )));
        }
        let config =
            topic_config::merge(&self.config, &BTreeMap::new(), config, &[]).map_err(ServiceError::InvalidConfig)?;
        let m = self.controller().metadata.borrow();
        if m.topics.contains_key(name) {
            return Err(ServiceError::TopicExists(name.to_owned()));
        }
        let total: u64 = m.topics.values().map(|t| u64::from(t.partitions)).sum::<u64>() + u64::from(partitions);
        if total > u64::from(limits.partitions_max) {
            return Err(ServiceError::InvalidPartitions(format!(
                "the broker would hold {total} partitions; limits.partitions_max is {}",
                limits.partitions_max
            )));
        }
        let id = TopicId(m.next_topic_id.max(1));
        Ok(TopicMeta {
            id,
            dir: metadata::topic_dir(name, id),
            name: name.to_owned(),
            partitions,
            config,
            replicas,
            moving: BTreeMap::new(),
        })
    }

    /// Writes a decided topic and opens it on every shard; the caller holds
    /// the controller's turn.
    pub(crate) async fn install_topic(self: &Rc<Self>, meta: TopicMeta) -> Result<(), ServiceError> {
        let name = meta.name.clone();
        let partitions = meta.partitions;
        {
            let mut m = self.controller().metadata.borrow_mut();
            m.next_topic_id = m.next_topic_id.max(meta.id.0 + 1);
        }
        // The topic's own copy first (it creates the directory), then the
        // metadata: once that is written, the topic exists.
        let written = async {
            metadata::store_topic_file(self.rt.storage(), &self.config.data_dir, &meta)
                .await
                .map_err(|e| store_error("writing the topic's directory", &e))?;
            self.controller().metadata.borrow_mut().topics.insert(name.clone(), meta.clone());
            self.store_metadata().await
        };
        if let Err(e) = written.await {
            self.controller().metadata.borrow_mut().topics.remove(&name);
            // The new directory holds only its `topic.json`: take it back, or
            // a rebuild would find a topic that was never created.
            let dir = self.config.data_dir.join(&meta.dir);
            if let Err(gone) = engine::rt::Storage::remove_dir_all(self.rt.storage(), &dir).await {
                tracing::warn!(dir = %dir.display(), error = %gone, "cannot remove the directory of a topic not created");
            }
            return Err(e);
        }
        tracing::info!(topic = %name, id = %meta.id, partitions, "topic created");
        self.broadcast_adopt(meta).await
    }

    async fn controller_delete(self: &Rc<Self>, name: String) -> Result<(), ServiceError> {
        if self.cluster().is_some() {
            return self.cluster_delete(name).await;
        }
        let _turn = self.controller().turn.acquire(1).await.ok_or(ServiceError::ShuttingDown)?;
        self.remove_topic(name).await
    }

    /// Deletes a topic here; the caller holds the controller's turn.
    pub(crate) async fn remove_topic(self: &Rc<Self>, name: String) -> Result<(), ServiceError> {
        let dir = {
            let m = self.controller().metadata.borrow();
            m.topics.get(&name).ok_or_else(|| ServiceError::UnknownTopic(name.clone()))?.dir.clone()
        };
        // The marker first: once the tombstone is recorded, the directory
        // says so too, should `topics.json` be lost before it is removed.
        metadata::mark_deleted(self.rt.storage(), &self.config.data_dir, &dir)
            .await
            .map_err(|e| store_error("marking the topic's directory deleted", &e))?;
        let meta = {
            let mut m = self.controller().metadata.borrow_mut();
            let meta = m.topics.remove(&name).ok_or_else(|| ServiceError::UnknownTopic(name.clone()))?;
            m.deleted.push(Deleted { id: meta.id, name: meta.name.clone(), dir: meta.dir.clone() });
            meta
        };
        if let Err(e) = self.store_metadata().await {
            {
                let mut m = self.controller().metadata.borrow_mut();
                m.deleted.retain(|d| d.id != meta.id);
                m.topics.insert(name, meta);
            }
            // The topic stays: so must its directory's standing (the next
            // start removes the marker if this fails too).
            let marker = self.config.data_dir.join(&dir).join(metadata::DELETED_MARKER);
            let _ = engine::rt::Storage::remove(self.rt.storage(), &marker).await;
            return Err(e);
        }
        // Every shard closes its partitions; then the files can go.
        let id = meta.id;
        let closed = self.invoke_on_all(move |shard| async move { shard.forget_topic(id).await }).await;
        let removed = {
            let mut m = self.controller().metadata.borrow().clone();
            let changed = metadata::finish_deletions(self.rt.storage(), &self.config.data_dir, &mut m).await;
            if changed {
                self.controller().metadata.borrow_mut().deleted = m.deleted;
                self.store_metadata().await
            } else {
                Ok(())
            }
        };
        tracing::info!(topic = %name, id = %meta.id, "topic deleted");
        closed.into_iter().collect::<Result<Vec<()>, _>>()?;
        // The topic is deleted even if its files are not gone yet: the next
        // start tries again (its tombstone stays in the metadata).
        if let Err(e) = removed {
            tracing::warn!(topic = %name, error = %e, "recording the removal of a deleted topic failed");
        }
        Ok(())
    }

    async fn controller_alter(self: &Rc<Self>, name: String, change: ConfigChange) -> Result<(), ServiceError> {
        if self.cluster().is_some() {
            return self.cluster_alter(name, change).await;
        }
        let _turn = self.controller().turn.acquire(1).await.ok_or(ServiceError::ShuttingDown)?;
        let current = self
            .controller()
            .metadata
            .borrow()
            .topics
            .get(&name)
            .map(|t| t.config.clone())
            .ok_or_else(|| ServiceError::UnknownTopic(name.clone()))?;
        let config = topic_config::merge(&self.config, &current, &change.set, &change.delete)
            .map_err(ServiceError::InvalidConfig)?;
        self.set_topic_config(name, config).await
    }

    /// Gives topic `name` the settings `config` (checked already): its
    /// directory's file, the topic table, every shard. The caller holds the
    /// controller's turn.
    pub(crate) async fn set_topic_config(
        self: &Rc<Self>,
        name: String,
        config: topic_config::TopicOverrides,
    ) -> Result<(), ServiceError> {
        let mut meta = self.topic_meta(&name)?;
        meta.config = config;
        self.replace_topic_meta(meta).await?;
        tracing::info!(topic = %name, "topic settings changed");
        Ok(())
    }

    /// Topic `name`'s entry in the controller's table.
    fn topic_meta(&self, name: &str) -> Result<TopicMeta, ServiceError> {
        let m = self.controller().metadata.borrow();
        m.topics.get(name).cloned().ok_or_else(|| ServiceError::UnknownTopic(name.to_owned()))
    }

    /// Replaces a topic's table entry (its directory's copy, then the
    /// metadata) and has every shard adopt it. The caller holds the turn.
    pub(crate) async fn replace_topic_meta(self: &Rc<Self>, meta: TopicMeta) -> Result<(), ServiceError> {
        let name = meta.name.clone();
        let previous = self.topic_meta(&name)?;
        metadata::store_topic_file(self.rt.storage(), &self.config.data_dir, &meta)
            .await
            .map_err(|e| store_error("writing the topic's directory", &e))?;
        self.controller().metadata.borrow_mut().topics.insert(name.clone(), meta.clone());
        if let Err(e) = self.store_metadata().await {
            self.controller().metadata.borrow_mut().topics.insert(name, previous);
            return Err(e);
        }
        self.broadcast_adopt(meta).await
    }

    /// Runs `f` on the owner of each of `partitions` of topic `name`, every
    /// owner at once with its share; the answers of all owners.
    async fn on_owners<T, F, Fut>(
        self: &Rc<Self>,
        name: &str,
        partitions: Vec<u32>,
        f: F,
    ) -> Result<Vec<T>, ServiceError>
    where
        T: Send + 'static,
        F: Fn(Rc<Shard<R>>, Vec<TopicPartition>) -> Fut + Send + Clone + 'static,
        Fut: std::future::Future<Output = Vec<T>> + 'static,
    {
        let mut by_owner: BTreeMap<ShardId, Vec<TopicPartition>> = BTreeMap::new();
        for p in partitions {
            let (tp, owner) = self.resolve(name, p)?;
            by_owner.entry(owner).or_default().push(tp);
        }
        let calls = by_owner.into_iter().map(|(owner, tps)| {
            let f = f.clone();
            self.invoke_on(owner, move |shard| f(shard, tps))
        });
        let mut out = Vec::new();
        for answer in futures::future::join_all(calls).await {
            out.extend(answer?);
        }
        Ok(out)
    }

    pub async fn describe_topic(self: &Rc<Self>, name: &str) -> Result<TopicDescription, ServiceError> {
        let entry = self.topic(name).ok_or_else(|| ServiceError::UnknownTopic(name.to_owned()))?;
        let mut partitions = self
            .on_owners(name, (0..entry.meta.partitions).collect(), |shard, tps| async move {
                tps.iter()
                    .map(|&tp| {
                        let s = shard.partition(tp).map_or_else(PartitionState::failed, |p| p.state());
                        PartitionDescription {
                            partition: tp.partition.0,
                            shard: shard.id,
                            error: s.error,
                            log_start_offset: s.log_start_offset,
                            high_watermark: s.high_watermark,
                            log_end_offset: s.log_end_offset,
                            size_bytes: s.size_bytes,
                            cleanable_bytes: s.cleaner.cleanable_bytes,
                            dirty_bytes: s.cleaner.dirty_bytes,
                            last_clean_ms: s.cleaner.last_clean_ms,
                        }
                    })
                    .collect()
            })
            .await?;
        partitions.sort_by_key(|p| p.partition);
        Ok(TopicDescription {
            name: entry.meta.name.clone(),
            id: entry.meta.id,
            config: topic_config::describe(&self.config, &entry.meta.config),
            partitions,
        })
    }

    /// Reopens partitions whose storage failed (or that could not open),
    /// without restarting the broker; `partitions` empty means every
    /// partition of the topic that needs it. One outcome per partition
    /// asked for (or recovered).
    pub async fn recover_partitions(
        self: &Rc<Self>,
        name: &str,
        partitions: Vec<u32>,
    ) -> Result<Vec<(u32, Result<(), ServiceError>)>, ServiceError> {
        let entry = self.topic(name).ok_or_else(|| ServiceError::UnknownTopic(name.to_owned()))?;
        let all = partitions.is_empty();
        let wanted: Vec<u32> = if all { (0..entry.meta.partitions).collect() } else { partitions };
        let mut out = self
            .on_owners(name, wanted, move |shard, tps| async move {
                let mut out = Vec::new();
                for tp in tps {
                    let partition = match shard.partition(tp) {
                        Ok(p) => p,
                        Err(e) => {
                            out.push((tp.partition.0, Err(e)));
                            continue;
                        }
                    };
                    if all && partition.state().error.is_none() {
                        continue;
                    }
                    // A replica whose log is healthy but which could not
                    // start (its raft.state) only needs starting again.
                    let log_failed = partition.log().map_or(true, |l| l.is_poisoned());
                    // A replica goes first: nothing of it may touch the log
                    // while the log is reopened.
                    if log_failed && partition.is_replicated() {
                        partition.stop_driver().await;
                    }
                    let mut outcome =
                        if log_failed || !partition.is_replicated() { partition.recover().await } else { Ok(()) };
                    if outcome.is_ok() && partition.is_replicated() && shard.cluster().is_some() {
                        if partition.replica_error().is_none() && !log_failed && partition.driver().is_some() {
                            outcome = Err(ServiceError::InvalidRequest(format!(
                                "partition {}/{} is healthy; nothing to recover",
                                partition.topic, tp.partition
                            )));
                        } else {
                            outcome = shard.restart_replica(&partition).await;
                        }
                    }
                    out.push((tp.partition.0, outcome));
                }
                out
            })
            .await?;
        out.sort_by_key(|(p, _)| *p);
        Ok(out)
    }
}
