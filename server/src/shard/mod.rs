//! A shard: one core's share of the broker. It owns the partitions the
//! placement rule gives it (`Rc`s that never leave its core), keeps a copy
//! of the topic table for routing, accepts its own connections, and reaches
//! other shards only by [`Shard::invoke_on`]: no locks, no shared mutable
//! state on the data path.

pub mod mesh;
pub mod run;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use engine::rt::Runtime;
use engine::{LogConfig, MemoryPool};
use futures::channel::oneshot;

use crate::config::ServerConfig;
use crate::ids::{CONTROLLER, PartitionId, ShardId, TopicId, TopicPartition};
use crate::metadata::{Metadata, TopicMeta, partition_dir};
use crate::metrics::{PartitionSnapshot, ShardMetrics, ShardSnapshot};
use crate::partition::Partition;
use crate::service::ServiceError;
use crate::util::budget::Budget;
use crate::util::signal::Signal;
use mesh::{Job, Mesh};

/// What every shard of one broker shares (atomics, off the data path).
#[derive(Default)]
pub struct Shared {
    pub connections: AtomicUsize,
    /// Set by the process on SIGTERM/SIGINT (or by a test).
    pub stop: AtomicBool,
    /// Shards done with a shutdown phase.
    pub drained: AtomicUsize,
    pub closed: AtomicUsize,
    /// Each shard's own port, in shard order, once all listen.
    pub shard_ports: std::sync::OnceLock<Vec<u16>>,
}

/// A topic as every shard knows it.
pub struct TopicEntry {
    pub meta: TopicMeta,
    pub name: Rc<str>,
    pub log_config: LogConfig,
    /// `crc32c(name)`: placement adds the partition to it.
    placement: u32,
}

#[derive(Default)]
struct TopicTable {
    by_name: HashMap<String, Rc<TopicEntry>>,
    by_id: HashMap<TopicId, Rc<TopicEntry>>,
}

/// The controller's state, on shard 0 only.
pub struct Controller {
    pub metadata: RefCell<Metadata>,
    /// Topic changes one at a time.
    pub turn: Budget,
}

/// One core's broker state. Owned by that core's executor; `!Send`.
pub struct Shard<R: Runtime> {
    pub id: ShardId,
    pub shards: usize,
    pub config: ServerConfig,
    pub rt: R,
    pub shared: Arc<Shared>,
    pub shutdown: Rc<Signal>,
    pub pool: MemoryPool,
    pub metrics: ShardMetrics,
    pub controller: Option<Controller>,
    mesh: Mesh<R>,
    topics: RefCell<TopicTable>,
    partitions: RefCell<BTreeMap<TopicPartition, Rc<Partition<R>>>>,
    /// Fired once the initial topic table is in place (or failed to be).
    booted: Rc<Signal>,
    boot_error: RefCell<Option<String>>,
    /// Cluster mode: the transport and replicas (built on first use).
    pub(crate) cluster_state: std::cell::OnceCell<Rc<crate::cluster::ClusterShard<R>>>,
    /// The group coordinators of the offsets partitions this shard owns.
    pub(crate) groups: crate::group::GroupShard,
}

impl<R: Runtime> Shard<R> {
    pub fn new(
        rt: R,
        config: ServerConfig,
        id: ShardId,
        shards: usize,
        mesh: Mesh<R>,
        shared: Arc<Shared>,
    ) -> Rc<Self> {
        assert!(id.0 < shards);
        let controller = (id == CONTROLLER)
            .then(|| Controller { metadata: RefCell::new(Metadata::default()), turn: Budget::new(1, |_| {}) });
        Rc::new(Shard {
            id,
            shards,
            pool: MemoryPool::new(config.pool_config()),
            config,
            rt,
            shared,
            shutdown: Signal::new(),
            metrics: ShardMetrics::default(),
            controller,
            mesh,
            topics: RefCell::new(TopicTable::default()),
            partitions: RefCell::new(BTreeMap::new()),
            booted: Signal::new(),
            boot_error: RefCell::new(None),
            cluster_state: std::cell::OnceCell::new(),
            groups: crate::group::GroupShard::default(),
        })
    }

    /// Runs `f` on shard `to` with that shard, and brings its result back.
    /// On this shard it runs here and now; on another, `f` is called there
    /// as soon as the job arrives (jobs start in the order they were sent),
    /// and its future runs in a task of that shard. If the caller stops
    /// waiting, that task is dropped (work that must finish, such as an
    /// append, runs in a task of its own inside `f`).
    pub async fn invoke_on<T, F, Fut>(self: &Rc<Self>, to: ShardId, f: F) -> Result<T, ServiceError>
    where
        F: FnOnce(Rc<Shard<R>>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        self.start_on(to, f).await.await
    }

    /// [`Shard::invoke_on`] in two steps: this call returns once `f` has
    /// been called (here) or its job is queued on `to` (waiting while that
    /// shard's queue is full: backpressure); the future it returns brings
    /// the result. A caller that starts several in turn gets them started
    /// in that order.
    pub async fn start_on<T, F, Fut>(
        self: &Rc<Self>,
        to: ShardId,
        f: F,
    ) -> impl Future<Output = Result<T, ServiceError>> + 'static + use<T, F, Fut, R>
    where
        F: FnOnce(Rc<Shard<R>>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        if to == self.id {
            let work = f(self.clone());
            return futures::future::Either::Left(async move { Ok(work.await) });
        }
        let (tx, rx) = oneshot::channel::<T>();
        let job: Job<R> = Box::new(move |shard: &Rc<Shard<R>>| {
            let work = f(shard.clone());
            drop(shard.rt.spawn(async move {
                let mut tx = tx;
                let outcome = {
                    let cancelled = std::pin::pin!(tx.cancellation());
                    match futures::future::select(std::pin::pin!(work), cancelled).await {
                        futures::future::Either::Left((v, _)) => Some(v),
                        futures::future::Either::Right(_) => None,
                    }
                };
                if let Some(v) = outcome {
                    let _ = tx.send(v);
                }
            }));
        });
        let sent = self.mesh.send(to, job).await;
        futures::future::Either::Right(async move {
            sent?;
            rx.await.map_err(|_| ServiceError::ShuttingDown)
        })
    }

    /// Runs `f` on every shard at once; the results in shard order.
    pub async fn invoke_on_all<T, F, Fut>(self: &Rc<Self>, f: F) -> Vec<Result<T, ServiceError>>
    where
        F: Fn(Rc<Shard<R>>) -> Fut + Send + Clone + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let calls = (0..self.shards).map(|s| {
            let f = f.clone();
            self.invoke_on(ShardId(s), f)
        });
        futures::future::join_all(calls).await
    }

    /// The topic called `name` and the shard that owns `partition` of it.
    pub fn resolve(&self, name: &str, partition: u32) -> Result<(TopicPartition, ShardId), ServiceError> {
        let topics = self.topics.borrow();
        let entry = topics.by_name.get(name).ok_or_else(|| ServiceError::UnknownTopic(name.to_owned()))?;
        if partition >= entry.meta.partitions {
            return Err(ServiceError::UnknownPartition {
                topic: name.to_owned(),
                partition,
                count: entry.meta.partitions,
            });
        }
        let tp = TopicPartition { topic: entry.meta.id, partition: PartitionId(partition) };
        Ok((tp, self.owner_of(entry.placement, partition)))
    }

    pub(crate) fn owner_of_entry(&self, entry: &TopicEntry, partition: u32) -> ShardId {
        self.owner_of(entry.placement, partition)
    }

    fn owner_of(&self, placement: u32, partition: u32) -> ShardId {
        ShardId(crate::placement::shard_for_hash(placement, partition, self.shards))
    }

    pub fn topic(&self, name: &str) -> Option<Rc<TopicEntry>> {
        self.topics.borrow().by_name.get(name).cloned()
    }

    pub fn topic_by_id(&self, id: TopicId) -> Option<Rc<TopicEntry>> {
        self.topics.borrow().by_id.get(&id).cloned()
    }

    pub fn topic_list(&self) -> Vec<Rc<TopicEntry>> {
        let mut list: Vec<Rc<TopicEntry>> = self.topics.borrow().by_name.values().cloned().collect();
        list.sort_by(|a, b| a.meta.name.cmp(&b.meta.name));
        list
    }

    /// A partition this shard owns.
    pub fn partition(&self, tp: TopicPartition) -> Result<Rc<Partition<R>>, ServiceError> {
        if let Some(p) = self.partitions.borrow().get(&tp) {
            return Ok(p.clone());
        }
        let name = self.topic_by_id(tp.topic).map_or_else(|| tp.topic.to_string(), |t| t.meta.name.clone());
        Err(ServiceError::PartitionUnavailable(format!("partition {name}/{} is not open on this shard", tp.partition)))
    }

    pub fn owned_partitions(&self) -> Vec<Rc<Partition<R>>> {
        self.partitions.borrow().values().cloned().collect()
    }

    /// Takes a topic (new or changed) into this shard's table and opens the
    /// partitions it owns; a changed one gets its new settings.
    pub async fn adopt_topic(self: &Rc<Self>, meta: TopicMeta) {
        let entry = Rc::new(TopicEntry {
            log_config: crate::topic_config::log_config(&self.config, &meta.config),
            name: Rc::from(meta.name.as_str()),
            placement: crc32c::crc32c(meta.name.as_bytes()),
            meta,
        });
        {
            let mut topics = self.topics.borrow_mut();
            topics.by_name.insert(entry.meta.name.clone(), entry.clone());
            topics.by_id.insert(entry.meta.id, entry.clone());
        }
        // In a cluster, a broker opens only the partitions it holds a
        // replica of.
        let node = self.config.cluster_config().map(|c| c.node.0);
        let hosted = |p: u32| match (&entry.meta.replicas, node) {
            (Some(_), Some(node)) => entry.meta.hosts(p, node),
            _ => true,
        };
        // A move that ended took these away from this broker.
        let gone: Vec<TopicPartition> = self
            .partitions
            .borrow()
            .keys()
            .filter(|tp| tp.topic == entry.meta.id && !hosted(tp.partition.0))
            .copied()
            .collect();
        for tp in gone {
            self.drop_replica(tp).await;
        }
        let owned: Vec<u32> =
            (0..entry.meta.partitions).filter(|&p| self.owner_of(entry.placement, p) == self.id && hosted(p)).collect();
        let opens = owned.iter().map(|&p| {
            let tp = TopicPartition { topic: entry.meta.id, partition: PartitionId(p) };
            let existing = self.partitions.borrow().get(&tp).cloned();
            let entry = entry.clone();
            async move {
                if let Some(existing) = existing {
                    existing.reconfigure(&entry.log_config);
                    self.steer_replicas(&entry.meta, tp, &existing);
                    return None;
                }
                let dir = partition_dir(&self.config.data_dir, &entry.meta, p);
                let partition = Partition::open(
                    self.rt.clone(),
                    tp,
                    entry.name.clone(),
                    self.id,
                    dir,
                    entry.log_config.clone(),
                    self.pool.clone(),
                )
                .await;
                Some((tp, partition))
            }
        });
        for (tp, partition) in futures::future::join_all(opens).await.into_iter().flatten() {
            if let Some(replicas) = entry.meta.replicas_of(tp.partition.0)
                && self.cluster().is_some()
            {
                self.start_replica(&partition, replicas).await;
            }
            self.partitions.borrow_mut().insert(tp, partition.clone());
            self.steer_replicas(&entry.meta, tp, &partition);
        }
    }

    /// Takes a partition out of this shard's table (the caller closes it).
    pub(crate) fn take_partition(&self, tp: TopicPartition) -> Option<Rc<Partition<R>>> {
        self.partitions.borrow_mut().remove(&tp)
    }

    /// Forgets a topic and closes the partitions of it this shard owns.
    pub async fn forget_topic(self: &Rc<Self>, id: TopicId) {
        let entry = {
            let mut topics = self.topics.borrow_mut();
            let entry = topics.by_id.remove(&id);
            if let Some(e) = &entry {
                topics.by_name.remove(&e.meta.name);
            }
            entry
        };
        let closing: Vec<Rc<Partition<R>>> = {
            let mut partitions = self.partitions.borrow_mut();
            let doomed: Vec<TopicPartition> = partitions.keys().filter(|tp| tp.topic == id).copied().collect();
            doomed.into_iter().filter_map(|tp| partitions.remove(&tp)).collect()
        };
        futures::future::join_all(closing.iter().map(|p| p.close())).await;
        if let Some(e) = entry {
            tracing::debug!(topic = %e.meta.name, shard = %self.id, "topic forgotten");
        }
    }

    /// The initial topic table, from the controller at boot.
    pub async fn boot(self: &Rc<Self>, topics: Result<Vec<TopicMeta>, String>) {
        match topics {
            Ok(topics) => {
                for meta in topics {
                    self.adopt_topic(meta).await;
                }
            }
            Err(e) => *self.boot_error.borrow_mut() = Some(e),
        }
        self.booted.fire();
    }

    /// Waits for [`Shard::boot`]; its error, if it failed.
    pub async fn booted(&self) -> Result<(), String> {
        self.booted.wait().await;
        self.boot_error.borrow().clone().map_or(Ok(()), Err)
    }

    /// Deletes old segments of every owned partition that has retention.
    pub async fn enforce_retention(&self) {
        for partition in self.owned_partitions() {
            partition.enforce_retention().await;
        }
    }

    /// Runs `work` every `period_ms` (at least 1) until the shard shuts
    /// down, as background work (it yields the CPU to requests).
    pub(crate) fn every(self: &Rc<Self>, period_ms: u64, work: impl AsyncFn(&Rc<Self>) + 'static) {
        let shard = self.clone();
        let every = Duration::from_millis(period_ms.max(1));
        drop(self.rt.spawn_background(async move {
            while !shard.shutdown.is_fired() {
                let stop = std::pin::pin!(shard.shutdown.wait());
                let _ = futures::future::select(std::pin::pin!(shard.rt.sleep(every)), stop).await;
                if !shard.shutdown.is_fired() {
                    work(&shard).await;
                }
            }
        }));
    }

    /// Runs a compaction pass on every owned partition of a compacted topic
    /// that is due one, one partition at a time, reading at most
    /// `log.cleaner_bytes_per_second_max`.
    pub async fn compact_due(&self) {
        let rate = self.config.log.cleaner_bytes_per_second_max;
        for partition in self.owned_partitions() {
            let Some(topic) = self.topic_by_id(partition.tp.topic) else { continue };
            let settings = crate::topic_config::cleaner_settings(&self.config, &topic.meta.config);
            let mut pace = RatePace { rt: self.rt.clone(), bytes_per_second: rate, started: self.rt.now(), bytes: 0 };
            partition.compact_if_due(&settings, &mut pace).await;
        }
    }

    /// Closes every owned partition (sync, indexes, clean-shutdown markers).
    pub async fn close_all(&self) {
        let partitions: Vec<Rc<Partition<R>>> =
            std::mem::take(&mut *self.partitions.borrow_mut()).into_values().collect();
        futures::future::join_all(partitions.iter().map(|p| p.close())).await;
    }

    /// This shard's metrics, for a scrape.
    pub fn metrics_snapshot(&self) -> ShardSnapshot {
        let partitions = self
            .owned_partitions()
            .iter()
            .map(|p| {
                let state = p.state();
                let fdatasync = p.log().map(|l| l.fdatasync_latency()).unwrap_or_default();
                PartitionSnapshot {
                    topic: p.topic.to_string(),
                    partition: p.tp.partition.0,
                    produce_records: p.metrics.produce_records.get(),
                    produce_bytes: p.metrics.produce_bytes.get(),
                    fetch_records: p.metrics.fetch_records.get(),
                    fetch_bytes: p.metrics.fetch_bytes.get(),
                    log_start_offset: state.log_start_offset.0,
                    high_watermark: state.high_watermark.0,
                    log_end_offset: state.log_end_offset.0,
                    size_bytes: state.size_bytes,
                    disk_bytes: state.disk_bytes,
                    cleaner_read_bytes: p.metrics.cleaner_read_bytes.get(),
                    cleaner_removed_bytes: p.metrics.cleaner_removed_bytes.get(),
                    cleaner_dirty_bytes: state.cleaner.dirty_bytes,
                    available: state.error.is_none(),
                    fdatasync,
                }
            })
            .collect();
        ShardSnapshot {
            shard: self.id.0,
            connections: self.metrics.connections.get(),
            inflight_bytes: self.metrics.inflight_bytes.get(),
            fetches_waiting: self.metrics.fetches_waiting.get(),
            requests: self.metrics.requests(),
            partitions,
            pool: self.pool.usage(),
            group_lag: self
                .groups
                .lag
                .borrow()
                .iter()
                .map(|((g, t, p), lag)| (g.clone(), t.clone(), *p, *lag))
                .collect(),
        }
    }

    /// Every shard's snapshot.
    pub async fn metrics_snapshots(self: &Rc<Self>) -> Vec<ShardSnapshot> {
        self.invoke_on_all(|shard| async move { shard.metrics_snapshot() }).await.into_iter().flatten().collect()
    }

    /// Counts a new connection against `connections_max`; `false` if over.
    pub fn connection_opened(&self) -> bool {
        let before = self.shared.connections.fetch_add(1, Ordering::Relaxed);
        if before >= self.config.limits.connections_max {
            self.shared.connections.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        ShardMetrics::add(&self.metrics.connections, 1);
        true
    }

    pub fn connection_closed(&self) {
        self.shared.connections.fetch_sub(1, Ordering::Relaxed);
        ShardMetrics::add(&self.metrics.connections, -1);
    }
}

/// The cleaner's rate limit: after each read it sleeps until its reads so
/// far fit the rate since the pass began.
struct RatePace<R: Runtime> {
    rt: R,
    /// 0: unlimited.
    bytes_per_second: u64,
    started: std::time::Instant,
    bytes: u64,
}

impl<R: Runtime> engine::Pace for RatePace<R> {
    async fn pace(&mut self, bytes: u64) {
        self.bytes += bytes;
        if self.bytes_per_second == 0 {
            return;
        }
        let due = Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_second as f64);
        let elapsed = self.rt.now().saturating_duration_since(self.started);
        if let Some(ahead) = due.checked_sub(elapsed).filter(|d| !d.is_zero()) {
            self.rt.sleep(ahead).await;
        }
    }
}
