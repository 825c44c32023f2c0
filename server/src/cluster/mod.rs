//! Cluster mode (`--peers`): partitions replicated by Raft between brokers
//! (docs/replication.md). Each shard has its replication transport
//! ([`net`]); each replicated partition its replica driver ([`driver`]) on
//! the shard that owns it; shard 0 of every broker holds a replica of the
//! metadata partition (topic id 0), whose leader is the controller: topic
//! creation and deletion are records in it ([`records`]), and every broker
//! applies the committed ones, in order, to its own topic table, opening
//! the partitions it holds a replica of.
//!
//! A broker without `--peers` never builds any of this.

pub mod driver;
pub mod join;
pub mod leaders;
pub mod net;
pub mod reassign;
pub mod records;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use engine::rt::Runtime;
use engine::types::Offset;
use futures::channel::oneshot;
use protocol::ErrorCode;
use protocol::replica::ControllerCallResponse;
use protocol::types::NodeId;
use replication::replica::{Acks, Params, Role};
use serde::{Deserialize, Serialize};

pub use self::join::parse_join;

use self::driver::Driver;
use self::net::{Inbound, Net};
use self::records::MetadataRecord;
use crate::ids::{CONTROLLER, PartitionId, ShardId, TopicId, TopicPartition};
use crate::partition::Partition;
use crate::service::ServiceError;
use crate::shard::Shard;
use crate::util::budget::Budget;

/// The metadata partition: topic id 0 (never a topic's), partition 0.
pub const METADATA: TopicPartition = TopicPartition { topic: TopicId(0), partition: PartitionId(0) };
/// Its directory under the data directory.
pub const METADATA_DIR: &str = "cluster/metadata";

/// Calls between brokers (`ControllerCall` frames).
const API_CREATE_TOPIC: u16 = 1;
const API_DELETE_TOPIC: u16 = 2;
/// A produce sent on to the partition's leader.
const API_PRODUCE: u16 = 3;
/// "Which partitions do you host, and whom do they follow?" ([`leaders`]).
const API_LEADERS: u16 = 4;
/// Hand a partition's leadership to another replica (to its leader).
const API_ELECT_LEADER: u16 = 5;
/// Change a topic's settings.
const API_ALTER_TOPIC: u16 = 6;
/// Move a partition's replicas ([`reassign`]), and the partition leader's
/// word that a move reached its target.
const API_REASSIGN: u16 = 7;
const API_REASSIGN_DONE: u16 = 8;
/// A broker joining (`--join`) registers with any member ([`join`]), which
/// asks the controller to add it.
const API_REGISTER: u16 = 9;
const API_ADD_BROKER: u16 = 10;
/// Take a broker that joined out of the cluster ([`join`]).
const API_REMOVE_BROKER: u16 = 11;

/// How long a forwarded produce waits for the leader's answer.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a broker waits for its own copy of the metadata to catch up
/// with a change the controller committed.
const APPLY_WAIT: Duration = Duration::from_secs(10);

/// This broker's place in the cluster, parsed from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub node: NodeId,
    pub replication_listen: SocketAddr,
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// `--join`: the member this broker registers through (then `peers` is
    /// empty).
    pub join: Option<SocketAddr>,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
}

/// `1=127.0.0.1:8071,2=127.0.0.1:8072`.
pub fn parse_peers(text: &str) -> Result<BTreeMap<NodeId, SocketAddr>, String> {
    let mut peers = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = item
            .split_once('=')
            .ok_or_else(|| format!("peers: {item:?} is not ID=ADDRESS (such as 1=127.0.0.1:8071)"))?;
        let id: u32 = id.trim().parse().map_err(|_| format!("peers: {id:?} is not a node id (1 or more)"))?;
        if id == 0 || id == net::CONTACT.0 {
            return Err(format!("peers: node ids are 1 to {}", net::CONTACT.0 - 1));
        }
        let addr: SocketAddr = addr.trim().parse().map_err(|_| format!("peers: {addr:?} is not an address"))?;
        if peers.insert(NodeId(id), addr).is_some() {
            return Err(format!("peers: node {id} is listed twice"));
        }
    }
    Ok(peers)
}

/// A shard's cluster state.
pub struct ClusterShard<R: Runtime> {
    pub config: ClusterConfig,
    pub net: Rc<Net<R>>,
    /// Shard 0: the metadata replica.
    metadata: RefCell<Option<Rc<Driver<R>>>>,
    /// Shard 0: the offset up to which the metadata log is applied.
    applied: Cell<Offset>,
    applying: Cell<bool>,
    apply_again: Cell<bool>,
    applied_waiters: RefCell<Vec<(Offset, oneshot::Sender<()>)>>,
    /// Shard 0: topic changes the controller decides, one at a time.
    decide_turn: Budget,
    /// The client address each peer reported last ([`leaders`]).
    client_addresses: RefCell<BTreeMap<NodeId, String>>,
    /// Inbound messages and calls in tasks of their own (on their way to
    /// another shard, or being answered), one unit each, at most
    /// [`INBOUND_TASKS_MAX`].
    inbound_tasks: Budget,
    /// Moving partitions of this shard whose end a task watches for.
    watching: RefCell<std::collections::BTreeSet<TopicPartition>>,
}

/// Inbound work one shard holds in tasks at once; past it, messages are
/// dropped (Raft sends again what matters) and calls fail at the caller's
/// timeout, so a flood from a peer cannot grow a shard's memory.
const INBOUND_TASKS_MAX: u64 = 16_384;

#[derive(Serialize, Deserialize)]
struct CreateCall {
    name: String,
    partitions: u32,
    config: BTreeMap<String, String>,
    replication_factor: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct AlterCall {
    name: String,
    change: crate::service::admin::ConfigChange,
}

#[derive(Default, Serialize, Deserialize)]
struct CallAnswer {
    /// The record's offset in the metadata log, once committed.
    offset: Option<u64>,
    error: Option<String>,
    /// The answer to [`API_LEADERS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    report: Option<leaders::BrokerReport>,
    /// The answer to [`API_REGISTER`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    membership: Option<join::Membership>,
}

impl<R: Runtime> ClusterShard<R> {
    /// Every broker of the cluster, this one too, by node id.
    pub fn brokers(&self) -> Vec<u32> {
        self.net.members().keys().map(|n| n.0).collect()
    }

    pub fn params(&self, seed: u64) -> Params {
        let mut params = Params::new(self.config.node, seed);
        params.election_timeout_min_ms = self.config.election_timeout_min_ms;
        params.election_timeout_max_ms = self.config.election_timeout_max_ms;
        params.tick_interval_ms = (self.config.election_timeout_min_ms / 6).max(10);
        params.fetch_wait_max_ms = (self.config.election_timeout_min_ms / 3).max(20);
        params.request_timeout_ms = (self.config.election_timeout_min_ms * 2 / 3).max(50);
        // Kafka's replica.lag.time.max.ms is 30 s beside a 10 s session
        // timeout; a few election timeouts is the same spirit here.
        params.replica_lag_max_ms = self.config.election_timeout_max_ms * 5;
        params
    }

    pub fn metadata(&self) -> Option<Rc<Driver<R>>> {
        self.metadata.borrow().clone()
    }
}

impl<R: Runtime> Shard<R> {
    /// This shard's cluster state, if the broker is in a cluster.
    pub fn cluster(&self) -> Option<Rc<ClusterShard<R>>> {
        // On every replication message: parse the settings once.
        if let Some(state) = self.cluster_state.get() {
            return Some(state.clone());
        }
        let config = self.config.cluster_config()?;
        Some(
            self.cluster_state
                .get_or_init(|| {
                    let mut peers = config.peers.clone();
                    peers.insert(config.node, config.replication_listen);
                    let net = Net::new(
                        self.rt.clone(),
                        config.node,
                        u16::try_from(self.id.0).expect("shards fit in u16"),
                        peers,
                        self.config.listen.to_string(),
                    );
                    Rc::new(ClusterShard {
                        config,
                        net,
                        metadata: RefCell::new(None),
                        applied: Cell::new(Offset(0)),
                        applying: Cell::new(false),
                        apply_again: Cell::new(false),
                        applied_waiters: RefCell::new(Vec::new()),
                        decide_turn: Budget::new(1, |_| {}),
                        client_addresses: RefCell::new(BTreeMap::new()),
                        inbound_tasks: Budget::new(INBOUND_TASKS_MAX, |_| {}),
                        watching: RefCell::new(std::collections::BTreeSet::new()),
                    })
                })
                .clone(),
        )
    }

    /// Starts this shard's part of the cluster: the replication listener
    /// and, on shard 0, the metadata replica.
    pub async fn start_cluster(self: &Rc<Self>) -> Result<(), String> {
        let Some(cluster) = self.cluster() else { return Ok(()) };
        let addr = cluster.config.replication_listen;
        let listener = self.rt.listen(addr).map_err(|e| format!("cannot listen for replication on {addr}: {e}"))?;
        drop(self.rt.spawn(accept_replication(self.clone(), listener)));
        if self.id == CONTROLLER {
            self.restore_members(&cluster).await?;
            let dir = self.config.data_dir.join(METADATA_DIR);
            engine::rt::Storage::create_dir_all(self.rt.storage(), &dir)
                .await
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let mut log_config = self.config.log_config();
            log_config.retention_ms = None;
            log_config.retention_bytes = None;
            let partition = Partition::open(
                self.rt.clone(),
                METADATA,
                Rc::from("__cluster_metadata"),
                self.id,
                dir,
                log_config,
                self.pool.clone(),
            )
            .await;
            let config = driver::config_of(&self.voters(&cluster));
            let params = cluster.params(0x6d65_7461);
            let driver = Driver::start(self.rt.clone(), partition.clone(), cluster.net.clone(), params, config)
                .await
                .map_err(|e| format!("the metadata replica cannot start: {e}"))?;
            partition.set_driver(driver.clone());
            let weak = Rc::downgrade(self);
            *driver.on_commit.borrow_mut() = Some(Rc::new(move || {
                if let Some(shard) = weak.upgrade() {
                    let s = shard.clone();
                    drop(shard.rt.spawn(async move { s.apply_metadata().await }));
                }
            }));
            *cluster.metadata.borrow_mut() = Some(driver);
            self.update_observers(&cluster);
        }
        Ok(())
    }

    /// Starts the replica of a partition this shard just opened.
    pub(crate) async fn start_replica(self: &Rc<Self>, partition: &Rc<Partition<R>>, replicas: &[u32]) {
        let Some(cluster) = self.cluster() else { return };
        partition.mark_replicated();
        let seed = partition.tp.topic.0.rotate_left(17) ^ u64::from(partition.tp.partition.0);
        let mut params = cluster.params(seed);
        if replicas.first() == Some(&cluster.config.node.0) {
            // The preferred leader campaigns first (placement spread the
            // first replicas over the brokers, so leaders spread too).
            params.first_election_timeout_ms = Some(cluster.config.election_timeout_min_ms / 3);
        }
        let started =
            Driver::start(self.rt.clone(), partition.clone(), cluster.net.clone(), params, driver::config_of(replicas))
                .await;
        match started {
            Ok(driver) => partition.set_driver(driver),
            Err(e) => {
                tracing::error!(topic = %partition.topic, partition = partition.tp.partition.0, error = %e,
                    "the partition's replica cannot start: it stays unavailable (`cairn partition recover` tries again)");
                partition.set_replica_error(e);
            }
        }
    }

    /// Starts a replicated partition's replica again, from what is durable
    /// (its `raft.state` and its log, reopened): after its log failed, or
    /// after its replica could not start. The machine starts as a restart
    /// starts it, so nothing it promised is forgotten.
    pub(crate) async fn restart_replica(self: &Rc<Self>, partition: &Rc<Partition<R>>) -> Result<(), ServiceError> {
        let replicas = self
            .topic_by_id(partition.tp.topic)
            .and_then(|t| t.meta.replicas_of(partition.tp.partition.0).map(<[u32]>::to_vec))
            .ok_or_else(|| ServiceError::PartitionUnavailable("the partition has no replica assignment".into()))?;
        if !partition.begin_replica_restart() {
            return Err(ServiceError::PartitionUnavailable("the replica is already being restarted".into()));
        }
        partition.stop_driver().await;
        self.start_replica(partition, &replicas).await;
        if let Some(entry) = self.topic_by_id(partition.tp.topic) {
            self.steer_replicas(&entry.meta, partition.tp, partition);
        }
        partition.end_replica_restart();
        match partition.replica_error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// A replicated partition's driver on this shard.
    fn driver_of(&self, tp: TopicPartition) -> Option<Rc<Driver<R>>> {
        if tp == METADATA {
            return self.cluster()?.metadata();
        }
        self.partition(tp).ok()?.driver()
    }

    fn owner_of_tp(&self, tp: TopicPartition) -> Option<ShardId> {
        if tp.topic == METADATA.topic {
            return Some(CONTROLLER);
        }
        let entry = self.topic_by_id(tp.topic)?;
        Some(self.owner_of_entry(&entry, tp.partition.0))
    }

    fn deliver_inbound(self: &Rc<Self>, inbound: Inbound) {
        let Some(cluster) = self.cluster() else { return };
        let needs_task = match &inbound {
            Inbound::Message { tp, .. } => self.owner_of_tp(*tp).is_some_and(|o| o != self.id),
            Inbound::Call { .. } => true,
            Inbound::Answer { header, .. } => usize::from(header.dest_shard) != self.id.0,
        };
        let task = if needs_task {
            let Some(t) = cluster.inbound_tasks.try_acquire(1) else {
                tracing::debug!("too much inbound replication work in flight: a message is dropped");
                return;
            };
            Some(t)
        } else {
            None
        };
        match inbound {
            Inbound::Message { from, tp, message } => {
                let Some(owner) = self.owner_of_tp(tp) else { return };
                if owner == self.id {
                    if let Some(driver) = self.driver_of(tp) {
                        driver.deliver(from, message);
                    }
                } else {
                    let shard = self.clone();
                    drop(self.rt.spawn(async move {
                        let _task = task;
                        let _ = shard
                            .invoke_on(owner, move |s| async move {
                                if let Some(driver) = s.driver_of(tp) {
                                    driver.deliver(from, message);
                                }
                            })
                            .await;
                    }));
                }
            }
            Inbound::Call { from, header, call, peer } => {
                let Some(reply_at) = join::reply_route(&cluster, from, peer, call.api, &call.body) else {
                    tracing::debug!(node = from.0, api = call.api, "a call from a node not in the cluster: dropped");
                    return;
                };
                let shard = self.clone();
                drop(self.rt.spawn(async move {
                    let _task = task;
                    let (api, body) = (call.api, call.body);
                    let answer = shard
                        .invoke_on(CONTROLLER, move |c| async move { c.answer_call(api, body).await })
                        .await
                        .unwrap_or_else(|e| CallAnswer { error: Some(e.to_string()), ..CallAnswer::default() });
                    let Some(cluster) = shard.cluster() else { return };
                    let leader = cluster_leader(&shard).await;
                    let body = Bytes::from(serde_json::to_vec(&answer).expect("serializes"));
                    let code = if answer.error.is_some() { ErrorCode::INVALID_REQUEST } else { ErrorCode::NONE };
                    let answer = ControllerCallResponse { controller_id: leader, body };
                    match reply_at {
                        join::ReplyRoute::At(addr) => cluster.net.answer_at(addr, from, &header, code, answer),
                        join::ReplyRoute::Member => cluster.net.answer(from, &header, code, answer),
                    }
                }));
            }
            Inbound::Answer { from, header, answer } => {
                let dest = ShardId(usize::from(header.dest_shard));
                if dest == self.id {
                    if let Some(c) = self.cluster() {
                        c.net.answered(from, &header, answer);
                    }
                } else if dest.0 < self.shards {
                    let shard = self.clone();
                    drop(self.rt.spawn(async move {
                        let _task = task;
                        let _ = shard
                            .invoke_on(dest, move |s| async move {
                                if let Some(c) = s.cluster() {
                                    c.net.answered(from, &header, answer);
                                }
                            })
                            .await;
                    }));
                }
            }
        }
    }

    /// Shard 0: applies the committed metadata records it has not yet, in
    /// order (one pass at a time; a commit during a pass makes another).
    async fn apply_metadata(self: &Rc<Self>) {
        let Some(cluster) = self.cluster() else { return };
        if cluster.applying.replace(true) {
            cluster.apply_again.set(true);
            return;
        }
        loop {
            cluster.apply_again.set(false);
            let Some(driver) = cluster.metadata() else { break };
            let from = cluster.applied.get();
            let read = match driver.log().read(from, 1 << 20).await {
                Ok(read) => read,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the metadata log failed");
                    break;
                }
            };
            if read.batches.is_empty() {
                if cluster.apply_again.get() {
                    continue;
                }
                // Committed, but not yet readable here: the log serves
                // only what its own flush policy holds too (a quorum of
                // followers may commit before the leader's fdatasync).
                // The limit the driver gave the log is the commit point
                // as of the last commit (its status may not show it yet).
                if driver.log().high_watermark_limit().is_some_and(|committed| committed > from) {
                    let _ = driver.log().wait_for_data(from).await;
                    continue;
                }
                break;
            }
            for batch in read.batches {
                let Ok(header) = protocol::batch::BatchHeader::decode(&batch) else { break };
                let stored = self.controller().metadata.borrow().metadata_applied;
                if header.next_offset().0 <= stored {
                    // Applied before a restart, and stored with its effect.
                    cluster.applied.set(header.next_offset());
                    continue;
                }
                match MetadataRecord::from_batch(&batch) {
                    Ok(list) => {
                        for record in list {
                            self.apply_record(record).await;
                        }
                        self.controller().metadata.borrow_mut().metadata_applied = header.next_offset().0;
                        if let Err(e) = self.store_metadata().await {
                            tracing::warn!(error = %e, "storing how far the metadata log is applied failed");
                        }
                    }
                    Err(e) => {
                        tracing::error!(offset = header.base_offset.0, error = %e, "a metadata record cannot be read: skipped");
                    }
                }
                cluster.applied.set(header.next_offset());
            }
            let applied = cluster.applied.get();
            let mut waiters = cluster.applied_waiters.borrow_mut();
            for (_, tx) in waiters.extract_if(.., |(at, _)| *at <= applied) {
                let _ = tx.send(());
            }
        }
        cluster.applying.set(false);
    }

    async fn apply_record(self: &Rc<Self>, record: MetadataRecord) {
        let Some(_turn) = self.controller().turn.acquire(1).await else { return };
        match record {
            MetadataRecord::TopicCreated { meta } => {
                let known = {
                    let m = self.controller().metadata.borrow();
                    // An id below the next one that no topic has is one
                    // that was deleted (its tombstone may be gone): a replay
                    // must not bring it back.
                    let seen = m.topics.values().any(|t| t.id == meta.id)
                        || m.deleted.iter().any(|d| d.id == meta.id)
                        || meta.id.0 < m.next_topic_id;
                    (seen, m.topics.get(&meta.name).map(|t| t.id))
                };
                match known {
                    (true, _) => {}
                    (false, Some(other)) => tracing::error!(topic = %meta.name, id = %meta.id, local = %other,
                        "the cluster created a topic whose name a local topic has: not applied"),
                    (false, None) => {
                        if let Err(e) = self.install_topic(meta).await {
                            tracing::error!(error = %e, "applying a topic creation failed");
                        }
                    }
                }
            }
            MetadataRecord::TopicDeleted { id, name } => {
                let here = self.controller().metadata.borrow().topics.get(&name).is_some_and(|t| t.id == id);
                if here && let Err(e) = self.remove_topic(name).await {
                    tracing::error!(error = %e, "applying a topic deletion failed");
                }
            }
            MetadataRecord::TopicConfigChanged { id, name, config } => {
                let current = self
                    .controller()
                    .metadata
                    .borrow()
                    .topics
                    .get(&name)
                    .filter(|t| t.id == id)
                    .map(|t| t.config.clone());
                if current.is_some_and(|c| c != config)
                    && let Err(e) = self.set_topic_config(name, config).await
                {
                    tracing::error!(error = %e, "applying a topic's new settings failed");
                }
            }
            MetadataRecord::ReassignmentStarted { id, name, partition, target } => {
                self.apply_reassignment(id, &name, partition, |meta| {
                    meta.moving.insert(partition, target);
                })
                .await;
            }
            MetadataRecord::ReassignmentEnded { id, name, partition, replicas } => {
                self.apply_reassignment(id, &name, partition, |meta| {
                    meta.moving.remove(&partition);
                    if let Some(r) = meta.replicas.as_mut().and_then(|r| r.get_mut(partition as usize)) {
                        *r = replicas;
                    }
                })
                .await;
            }
            MetadataRecord::BrokerRegistered { node, replication } => {
                self.apply_registration(node, replication).await;
            }
            MetadataRecord::BrokerUnregistered { node } => self.apply_unregistration(node).await,
        }
    }

    /// Waits until this broker applied the metadata log up to `offset`.
    async fn applied_past(self: &Rc<Self>, offset: Offset) -> Result<(), ServiceError> {
        let cluster = self.cluster().expect("cluster mode");
        if cluster.applied.get() > offset {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        cluster.applied_waiters.borrow_mut().push((offset.next(), tx));
        let s = self.clone();
        drop(self.rt.spawn(async move { s.apply_metadata().await }));
        match engine::rt::until(&self.rt, self.rt.now() + APPLY_WAIT, rx).await {
            Some(Ok(())) => Ok(()),
            _ => Err(ServiceError::Timeout(u64::try_from(APPLY_WAIT.as_millis()).unwrap_or(u64::MAX))),
        }
    }

    /// Shard 0: topic creation in a cluster. The controller (the metadata
    /// leader) decides; any other broker asks it, then waits for its own
    /// copy to catch up.
    pub(crate) async fn cluster_create(
        self: &Rc<Self>,
        name: String,
        partitions: u32,
        config: BTreeMap<String, String>,
        replication_factor: Option<String>,
    ) -> Result<(), ServiceError> {
        let call = CreateCall { name, partitions, config, replication_factor };
        let body = Bytes::from(serde_json::to_vec(&call).expect("serializes"));
        self.controller_call(API_CREATE_TOPIC, body).await
    }

    /// Shard 0: a topic's settings change, decided by the controller and
    /// applied by every broker from the metadata log.
    pub(crate) async fn cluster_alter(
        self: &Rc<Self>,
        name: String,
        change: crate::service::admin::ConfigChange,
    ) -> Result<(), ServiceError> {
        let body = Bytes::from(serde_json::to_vec(&AlterCall { name, change }).expect("serializes"));
        self.controller_call(API_ALTER_TOPIC, body).await
    }

    pub(crate) async fn cluster_delete(self: &Rc<Self>, name: String) -> Result<(), ServiceError> {
        self.controller_call(API_DELETE_TOPIC, Bytes::from(name.into_bytes())).await
    }

    async fn controller_call(self: &Rc<Self>, api: u16, body: Bytes) -> Result<(), ServiceError> {
        let cluster = self.cluster().expect("cluster mode");
        let metadata =
            cluster.metadata().ok_or_else(|| ServiceError::PartitionUnavailable("no metadata replica".into()))?;
        let status = metadata.status();
        let answer = if status.role == Role::Leader {
            self.answer_call(api, body).await
        } else {
            let Some(leader) = status.leader else {
                return Err(ServiceError::LeaderNotAvailable(
                    "the cluster has no controller yet (an election is on)".into(),
                ));
            };
            // A controller that stops being one (it died, or froze and was
            // replaced) may never answer: give up once another leads.
            let call = std::pin::pin!(cluster.net.call(leader, api, body, net::CALL_TIMEOUT));
            let moved = std::pin::pin!(metadata.leader_moved_from(leader));
            let (code, answer) = match futures::future::select(call, moved).await {
                futures::future::Either::Left((answer, _)) => answer.map_err(ServiceError::LeaderNotAvailable)?,
                futures::future::Either::Right(_) => {
                    return Err(ServiceError::LeaderNotAvailable(format!(
                        "the controller (node {leader}) changed before it answered: try again"
                    )));
                }
            };
            let parsed: CallAnswer = serde_json::from_slice(&answer.body)
                .map_err(|e| ServiceError::InvalidRequest(format!("the controller's answer: {e}")))?;
            if code != ErrorCode::NONE && parsed.error.is_none() {
                return Err(ServiceError::InvalidRequest(format!("the controller answered {code}")));
            }
            parsed
        };
        if let Some(error) = answer.error {
            return Err(decode_error(&error));
        }
        if let Some(offset) = answer.offset {
            self.applied_past(Offset(offset)).await?;
        }
        Ok(())
    }

    /// The controller's side of a call (shard 0 of the metadata leader).
    async fn answer_call(self: &Rc<Self>, api: u16, body: Bytes) -> CallAnswer {
        let result = match api {
            API_CREATE_TOPIC => match serde_json::from_slice::<CreateCall>(&body) {
                Ok(c) => self.decide_and_commit_create(c).await,
                Err(e) => Err(ServiceError::InvalidRequest(format!("a create call: {e}"))),
            },
            API_DELETE_TOPIC => self.decide_and_commit_delete(String::from_utf8_lossy(&body).into_owned()).await,
            API_PRODUCE => self.produce_forwarded(body).await,
            API_LEADERS => {
                let report = self.local_report().await;
                return CallAnswer { report: Some(report), ..CallAnswer::default() };
            }
            API_ELECT_LEADER => self.elect_leader_here(&body).await.map(|()| Offset(0)),
            API_ALTER_TOPIC => match serde_json::from_slice::<AlterCall>(&body) {
                Ok(c) => self.decide_and_commit_alter(c).await,
                Err(e) => Err(ServiceError::InvalidRequest(format!("an alter call: {e}"))),
            },
            API_REASSIGN => self.decide_and_commit_reassign(&body).await,
            API_REASSIGN_DONE => self.decide_and_commit_reassign_done(&body).await,
            API_REGISTER => return self.register_here(body).await,
            API_ADD_BROKER => self.decide_and_commit_register(&body).await,
            API_REMOVE_BROKER => self.decide_and_commit_unregister(&body).await,
            other => Err(ServiceError::InvalidRequest(format!("no controller call {other}"))),
        };
        match result {
            Ok(offset) => CallAnswer { offset: Some(offset.0), ..CallAnswer::default() },
            Err(e) => CallAnswer { error: Some(encode_error(&e)), ..CallAnswer::default() },
        }
    }

    /// The controller's turn to decide a change (one at a time): the
    /// cluster, its metadata replica and the turn, once everything
    /// committed before is applied here.
    async fn deciding(
        self: &Rc<Self>,
    ) -> Result<(Rc<ClusterShard<R>>, Rc<Driver<R>>, crate::util::budget::Permit), ServiceError> {
        let cluster = self.cluster().expect("cluster mode");
        let driver =
            cluster.metadata().ok_or_else(|| ServiceError::PartitionUnavailable("no metadata replica".into()))?;
        let turn = cluster.decide_turn.acquire(1).await.ok_or(ServiceError::ShuttingDown)?;
        self.caught_up(&driver).await?;
        Ok((cluster, driver, turn))
    }

    /// Waits until everything committed before is applied here, so the
    /// decision sees the whole topic table.
    async fn caught_up(self: &Rc<Self>, driver: &Rc<Driver<R>>) -> Result<(), ServiceError> {
        let status = driver.status();
        // Serving: its epoch's first batch is committed, so its high
        // watermark covers everything any earlier controller committed.
        if status.role != Role::Leader || !status.serving {
            return Err(ServiceError::LeaderNotAvailable(format!(
                "this broker stopped being the controller; the controller is {}",
                status.leader.map_or_else(|| "not known yet".to_owned(), |l| format!("node {l}"))
            )));
        }
        let hw = driver.high_watermark();
        if hw > Offset(0) {
            self.applied_past(Offset(hw.0 - 1)).await?;
        }
        Ok(())
    }

    async fn commit_record(
        self: &Rc<Self>,
        driver: &Rc<Driver<R>>,
        record: &MetadataRecord,
    ) -> Result<Offset, ServiceError> {
        let batch = Bytes::from(record.to_batch(engine::rt::Storage::now_ms(self.rt.storage())));
        let base = driver.propose(&batch, Acks::All).await.map_err(|_| ServiceError::ShuttingDown)??;
        self.applied_past(base).await?;
        Ok(base)
    }

    async fn decide_and_commit_create(self: &Rc<Self>, call: CreateCall) -> Result<Offset, ServiceError> {
        let (cluster, driver, _turn) = self.deciding().await?;
        let brokers = cluster.brokers();
        let rf = match call.replication_factor.as_deref() {
            None => brokers.len().min(3) as u32,
            Some(text) => text.parse::<u32>().map_err(|_| {
                ServiceError::InvalidReplicationFactor(format!("replication factor {text:?} is not a number"))
            })?,
        };
        if rf == 0 || rf as usize > brokers.len() {
            return Err(ServiceError::InvalidReplicationFactor(format!(
                "replication factor {rf}: the cluster has {} brokers",
                brokers.len()
            )));
        }
        let replicas = records::assign(&brokers, call.partitions, rf);
        let meta = self.decide_create(&call.name, call.partitions, &call.config, Some(replicas))?;
        self.commit_record(&driver, &MetadataRecord::TopicCreated { meta }).await
    }

    async fn decide_and_commit_alter(self: &Rc<Self>, call: AlterCall) -> Result<Offset, ServiceError> {
        let (_, driver, _turn) = self.deciding().await?;
        let AlterCall { name, change } = call;
        let (id, current) = self
            .controller()
            .metadata
            .borrow()
            .topics
            .get(&name)
            .map(|t| (t.id, t.config.clone()))
            .ok_or_else(|| ServiceError::UnknownTopic(name.clone()))?;
        let config = crate::topic_config::merge(&self.config, &current, &change.set, &change.delete)
            .map_err(ServiceError::InvalidConfig)?;
        self.commit_record(&driver, &MetadataRecord::TopicConfigChanged { id, name, config }).await
    }

    async fn decide_and_commit_delete(self: &Rc<Self>, name: String) -> Result<Offset, ServiceError> {
        let (_, driver, _turn) = self.deciding().await?;
        let id = self
            .controller()
            .metadata
            .borrow()
            .topics
            .get(&name)
            .map(|t| t.id)
            .ok_or_else(|| ServiceError::UnknownTopic(name.clone()))?;
        self.commit_record(&driver, &MetadataRecord::TopicDeleted { id, name }).await
    }
}

/// A forwarded produce: `topic_id u64, partition u32, acks u8`, the batch.
pub(crate) fn forward_produce_body(tp: TopicPartition, acks: Acks, batch: &Bytes) -> Bytes {
    let mut body = Vec::with_capacity(13 + batch.len());
    body.extend_from_slice(&tp.topic.0.to_le_bytes());
    body.extend_from_slice(&tp.partition.0.to_le_bytes());
    body.push(match acks {
        Acks::None => 0,
        Acks::Leader => 1,
        Acks::All => 2,
    });
    body.extend_from_slice(batch);
    Bytes::from(body)
}

pub(crate) async fn forwarded_produce<R: Runtime>(
    net: &Rc<Net<R>>,
    leader: NodeId,
    body: Bytes,
) -> Result<Offset, ServiceError> {
    // Short: a leader that died is replaced within an election timeout,
    // and the producer retries the retriable error this gives.
    let (_, answer) =
        net.call(leader, API_PRODUCE, body, FORWARD_TIMEOUT).await.map_err(ServiceError::LeaderNotAvailable)?;
    let parsed: CallAnswer = serde_json::from_slice(&answer.body)
        .map_err(|e| ServiceError::InvalidRequest(format!("the leader's answer: {e}")))?;
    match (parsed.offset, parsed.error) {
        (_, Some(e)) => Err(decode_error(&e)),
        (Some(offset), None) => Ok(Offset(offset)),
        (None, None) => Err(ServiceError::InvalidRequest("the leader's answer had no offset".into())),
    }
}

impl<R: Runtime> Shard<R> {
    /// The leader's side of a forwarded produce.
    async fn produce_forwarded(self: &Rc<Self>, body: Bytes) -> Result<Offset, ServiceError> {
        if body.len() < 13 {
            return Err(ServiceError::InvalidRequest("a forwarded produce too short".into()));
        }
        let topic = TopicId(u64::from_le_bytes(body[0..8].try_into().expect("8 bytes")));
        let partition = PartitionId(u32::from_le_bytes(body[8..12].try_into().expect("4 bytes")));
        let acks = match body[12] {
            0 => Acks::None,
            1 => Acks::Leader,
            _ => Acks::All,
        };
        let batch = body.slice(13..);
        let tp = TopicPartition { topic, partition };
        let owner = self.owner_of_tp(tp).ok_or_else(|| ServiceError::UnknownTopic(topic.to_string()))?;
        self.invoke_on(owner, move |s| async move {
            let partition = s.partition(tp)?;
            let Some(driver) = partition.driver() else {
                return Err(ServiceError::PartitionUnavailable("the partition is not replicated here".into()));
            };
            // One hop only: this replica must lead.
            let status = driver.status();
            if status.role != Role::Leader {
                return Err(driver::not_leader(tp, status.leader, status.epoch));
            }
            partition.append(&batch, acks, false).await
        })
        .await?
    }
}

async fn cluster_leader<R: Runtime>(shard: &Rc<Shard<R>>) -> Option<NodeId> {
    shard
        .invoke_on(
            CONTROLLER,
            |c| async move { c.cluster().and_then(|cl| cl.metadata()).and_then(|d| d.status().leader) },
        )
        .await
        .ok()
        .flatten()
}

/// An error across a controller call: its native code and message (for
/// the errors that carry a topic name, the name).
fn encode_error(e: &ServiceError) -> String {
    let text = match e {
        ServiceError::TopicExists(name) | ServiceError::UnknownTopic(name) => name.clone(),
        other => other.to_string(),
    };
    format!("{}:{text}", crate::frontend::native::code(e).0)
}

fn decode_error(text: &str) -> ServiceError {
    let (code, message) = text.split_once(':').unwrap_or(("0", text));
    let message = message.to_owned();
    match code.parse::<u16>().map(ErrorCode) {
        Ok(ErrorCode::TOPIC_ALREADY_EXISTS) => ServiceError::TopicExists(message),
        Ok(ErrorCode::UNKNOWN_TOPIC) => ServiceError::UnknownTopic(message),
        Ok(ErrorCode::INVALID_TOPIC_NAME) => ServiceError::InvalidTopicName(message),
        Ok(ErrorCode::INVALID_PARTITIONS) => ServiceError::InvalidPartitions(message),
        Ok(ErrorCode::INVALID_CONFIG) => ServiceError::InvalidConfig(message),
        Ok(ErrorCode::INVALID_REPLICATION_FACTOR) => ServiceError::InvalidReplicationFactor(message),
        Ok(ErrorCode::LEADER_NOT_AVAILABLE | ErrorCode::NOT_LEADER) => ServiceError::LeaderNotAvailable(message),
        Ok(ErrorCode::REQUEST_TIMED_OUT) => {
            ServiceError::Timeout(message.rsplit(' ').nth(1).and_then(|ms| ms.parse().ok()).unwrap_or(0))
        }
        Ok(ErrorCode::PARTITION_UNAVAILABLE) => ServiceError::PartitionUnavailable(message),
        Ok(ErrorCode::STORAGE_ERROR) => ServiceError::Storage(message),
        Ok(ErrorCode::SHUTTING_DOWN) => ServiceError::ShuttingDown,
        Ok(ErrorCode::INVALID_BATCH) => ServiceError::InvalidBatch(message),
        Ok(ErrorCode::BATCH_TOO_LARGE) => ServiceError::BatchTooLarge(message),
        Ok(ErrorCode::DISK_FULL) => ServiceError::DiskFull(message),
        Ok(ErrorCode::UNKNOWN_BROKER) => ServiceError::UnknownBroker(message),
        Ok(ErrorCode::REASSIGNMENT_IN_PROGRESS) => ServiceError::ReassignmentInProgress(message),
        Ok(ErrorCode::BROKER_ID_IN_USE) => ServiceError::BrokerIdInUse(message),
        _ => ServiceError::InvalidRequest(message),
    }
}

/// Accepts the connections peers open to this broker's replication port.
async fn accept_replication<R: Runtime>(shard: Rc<Shard<R>>, listener: R::Listener) {
    loop {
        match crate::shard::run::accept_until_shutdown(&shard, &listener).await {
            None => return,
            Some(Ok((stream, peer))) => {
                let s = shard.clone();
                drop(shard.rt.spawn(async move {
                    let cluster = s.cluster().expect("cluster mode");
                    let net = cluster.net.clone();
                    let s2 = s.clone();
                    net::serve::<R>(stream, peer, move |n| net.knows(n), move |inbound| s2.deliver_inbound(inbound))
                        .await;
                }));
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "accepting a replication connection failed");
                shard.rt.sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
