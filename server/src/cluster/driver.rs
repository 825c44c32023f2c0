//! Runs one partition's [`Replica`] over the real log and the transport
//! (docs/replication.md §2, the driver's contract): inputs are stepped one
//! at a time (an input that arrives while outputs are carried out waits
//! in line), outputs are carried out in order. An append takes its place
//! in the log's line when its output is carried out, so the log's order is
//! the machine's; `raft.state` writes are chained in order; timers come
//! from one ticker task.
//!
//! Owned by the partition's shard (`Rc`, `RefCell`).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::rt::{Runtime, Storage as _};
use engine::types::{LeaderEpoch, Offset, Timestamp};
use futures::channel::oneshot;
use protocol::batch::BatchHeader;
use protocol::replica::{Config, PeerMessage, ReplicaBatch, ReplicaKey};
use protocol::types::{Incarnation, NodeId};
use replication::replica::{
    Acks, Input, LogView, Output, Params, ProposalId, ProposeError, ReadMode, ReadResult, Replica, Role,
};
use replication::{EpochCache, HardState};

use super::net::Net;
use crate::ids::TopicPartition;
use crate::partition::{Log, Partition};
use crate::service::ServiceError;

/// The hard state's file, beside the segments.
pub const HARD_STATE_FILE: &str = "raft.state";
/// How long a cache read waits for a just-proposed batch to be placed.
const PLACED_WAIT: Duration = Duration::from_millis(20);
/// The ticker's longest sleep: timers fire at most this late.
const TICK_MAX: Duration = Duration::from_millis(20);

/// What `describe` shows of a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub role: Role,
    pub epoch: LeaderEpoch,
    pub leader: Option<NodeId>,
    pub high_watermark: Offset,
    pub voters: Vec<NodeId>,
    /// A leader whose epoch's first batch is committed.
    pub serving: bool,
    /// The committed config's voters while no change is under way (no
    /// joint set, no learners).
    pub settled: Option<Vec<NodeId>>,
}

type Reply = oneshot::Sender<Result<Offset, ServiceError>>;

pub struct Driver<R: Runtime> {
    pub tp: TopicPartition,
    node: NodeId,
    rt: R,
    partition: Rc<Partition<R>>,
    log: Rc<Log<R>>,
    net: Rc<Net<R>>,
    machine: RefCell<Replica>,
    inbox: RefCell<VecDeque<Input>>,
    stepping: Cell<bool>,
    replies: RefCell<HashMap<ProposalId, Reply>>,
    /// The leader's appends, checked and in line before the machine saw
    /// them: the next `Append` of that proposal takes it.
    prepared: RefCell<HashMap<ProposalId, AppendFuture>>,
    next_proposal: Cell<u64>,
    persists: RefCell<VecDeque<HardState>>,
    /// `raft.state` of this partition.
    state_path: PathBuf,
    persisting: Cell<bool>,
    started: Instant,
    stopped: Cell<bool>,
    /// Appends carried out whose outcome is not in yet: a cut waits for
    /// them, so none lands after it at offsets the cut freed.
    appends_in_flight: Rc<Cell<usize>>,
    status: RefCell<ReplicaStatus>,
    /// Woken once at the next change of role, epoch or leader.
    status_watchers: RefCell<Vec<oneshot::Sender<()>>>,
    /// Woken at every high-watermark advance (the metadata applier).
    pub on_commit: RefCell<Option<Rc<dyn Fn()>>>,
}

type AppendFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<engine::AppendInfo, engine::LogError>>>>;

/// A partition's config from its assignment: its replicas by node, under
/// incarnation 0 ("any", see `replication::config::names`).
pub fn config_of(replicas: &[u32]) -> Config {
    let voters =
        replicas.iter().map(|&n| ReplicaKey { node: NodeId(n), incarnation: Incarnation(0) }).collect::<Vec<_>>();
    Config { voters, joint: None, learners: vec![] }
}

fn now_ms(started: Instant, rt_now: Instant) -> u64 {
    u64::try_from(rt_now.saturating_duration_since(started).as_millis()).unwrap_or(u64::MAX)
}

/// One stored batch as replication sees it.
pub fn replica_batch(bytes: Bytes) -> Option<ReplicaBatch> {
    let header = BatchHeader::decode(&bytes).ok()?;
    let control = if header.is_control() {
        let view = protocol::batch::validate_batch(&bytes).ok()?;
        Some(protocol::replica::control::read_batch(&view).ok()?)
    } else {
        None
    };
    Some(ReplicaBatch {
        base: header.base_offset,
        end: header.next_offset(),
        epoch: header.leader_epoch,
        control,
        bytes,
    })
}

impl<R: Runtime> Driver<R> {
    /// Starts the replica of `partition` (its log open) with `params`.
    pub async fn start(
        rt: R,
        partition: Rc<Partition<R>>,
        net: Rc<Net<R>>,
        params: Params,
        config: Config,
    ) -> Result<Rc<Driver<R>>, ServiceError> {
        let log = partition.log()?;
        // Readers see up to the high watermark this replica knows, which
        // starts at zero: it serves nothing it has not seen committed, and
        // a replica that cannot start serves nothing at all.
        log.set_high_watermark_limit(Some(Offset(0)));
        let node = params.node;
        let path = partition.dir().join(HARD_STATE_FILE);
        let storage = rt.storage().clone();
        let stored = storage
            .read_file(&path)
            .await
            .map_err(|e| ServiceError::Storage(format!("cannot read {}: {e}", path.display())))?;
        let log_start = log.log_start_offset();
        let log_end = log.log_end_offset();
        let hard = match stored {
            Some(bytes) => HardState::decode(&bytes, node).map_err(|e| {
                ServiceError::Storage(format!(
                    "{} cannot be read ({e}); the replica stays down rather than guess its votes",
                    path.display()
                ))
            })?,
            None if log_end == log_start => HardState {
                epoch: LeaderEpoch(0),
                voted_for: None,
                incarnation: Incarnation(fresh_incarnation(node, partition.tp)),
                initial: true,
                configs: vec![(Offset(0), LeaderEpoch(0), config)],
                sequence: 0,
                epochs: vec![],
            },
            None => {
                return Err(ServiceError::Storage(format!(
                    "{} is missing beside a log with data; the replica stays down rather than guess its votes",
                    path.display()
                )));
            }
        };
        let epochs = EpochCache::from_entries(&hard.epochs, log_start, log_end);
        let view = LogView { log_start, log_end, durable: log_end, epochs };
        let started = rt.now();
        let mut out = Vec::new();
        let machine = Replica::open(params, hard, view, 0, &mut out);
        let status = ReplicaStatus {
            role: machine.role(),
            epoch: machine.epoch(),
            leader: machine.leader(),
            high_watermark: machine.high_watermark(),
            voters: machine.config().voters.iter().map(|k| k.node).collect(),
            serving: machine.is_serving(),
            settled: None,
        };
        let driver = Rc::new(Driver {
            tp: partition.tp,
            node,
            rt: rt.clone(),
            partition,
            log,
            net,
            machine: RefCell::new(machine),
            inbox: RefCell::new(VecDeque::new()),
            stepping: Cell::new(false),
            replies: RefCell::new(HashMap::new()),
            prepared: RefCell::new(HashMap::new()),
            next_proposal: Cell::new(1),
            persists: RefCell::new(VecDeque::new()),
            state_path: path,
            persisting: Cell::new(false),
            started,
            stopped: Cell::new(false),
            appends_in_flight: Rc::new(Cell::new(0)),
            status: RefCell::new(status),
            status_watchers: RefCell::new(Vec::new()),
            on_commit: RefCell::new(None),
        });
        driver.carry_out(out);
        driver.drain();
        drop(rt.spawn(ticker(Rc::downgrade(&driver))));
        Ok(driver)
    }

    pub fn stop(&self) {
        self.stopped.set(true);
        for (_, reply) in self.replies.borrow_mut().drain() {
            let _ = reply.send(Err(ServiceError::ShuttingDown));
        }
        // Whoever waits for a change hears that there will be none.
        self.status_watchers.borrow_mut().clear();
    }

    pub fn status(&self) -> ReplicaStatus {
        self.status.borrow().clone()
    }

    pub fn log(&self) -> &Rc<Log<R>> {
        &self.log
    }

    fn now(&self) -> u64 {
        now_ms(self.started, self.rt.now())
    }

    /// Steps `input` (after any already waiting).
    pub fn input(self: &Rc<Self>, input: Input) {
        if self.stopped.get() {
            return;
        }
        self.inbox.borrow_mut().push_back(input);
        self.drain();
    }

    fn drain(self: &Rc<Self>) {
        if self.stepping.get() {
            return;
        }
        self.stepping.set(true);
        loop {
            let Some(input) = self.inbox.borrow_mut().pop_front() else { break };
            let mut out = Vec::new();
            let now = self.now();
            self.machine.borrow_mut().step(now, input, &mut out);
            self.carry_out(out);
        }
        self.stepping.set(false);
        let m = self.machine.borrow();
        let status = ReplicaStatus {
            role: m.role(),
            epoch: m.epoch(),
            leader: m.leader(),
            high_watermark: m.high_watermark(),
            voters: m.config().voters.iter().map(|k| k.node).collect(),
            serving: m.is_serving(),
            settled: {
                let c = m.committed_config();
                (c.joint.is_none() && c.learners.is_empty()).then(|| c.voters.iter().map(|k| k.node).collect())
            },
        };
        drop(m);
        let key = |s: &ReplicaStatus| (s.role, s.epoch, s.leader, s.serving, s.settled.clone());
        let changed = key(&self.status.borrow()) != key(&status);
        *self.status.borrow_mut() = status;
        if changed {
            for w in self.status_watchers.borrow_mut().drain(..) {
                let _ = w.send(());
            }
        }
    }

    fn cached(&self, from: Offset, bytes_max: u32) -> ReadResult {
        match self.log.read_cached(from, bytes_max as usize) {
            Some(batches) => ReadResult::Batches(batches.into_iter().map_while(replica_batch).collect()),
            None => ReadResult::Miss,
        }
    }

    /// Completes at the next change of role, epoch, leader or serving.
    pub fn status_changed(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut watchers = self.status_watchers.borrow_mut();
        watchers.retain(|w| !w.is_canceled());
        watchers.push(tx);
        rx
    }

    /// Completes once this replica no longer takes `leader` for its leader
    /// (it follows another, or none), or it stopped.
    pub async fn leader_moved_from(&self, leader: NodeId) {
        loop {
            let changed = self.status_changed();
            if self.stopped.get() || self.status().leader != Some(leader) {
                return;
            }
            // A dropped sender: the driver stopped.
            if changed.await.is_err() {
                return;
            }
        }
    }

    /// The voters caught up with this leader (empty unless it leads).
    pub fn caught_up(&self) -> Vec<u32> {
        self.machine.borrow().caught_up(self.now()).into_iter().map(|n| n.0).collect()
    }

    /// A message for this partition from a peer.
    pub fn deliver(self: &Rc<Self>, from: NodeId, message: PeerMessage) {
        self.input(Input::Message { from, message });
    }

    /// Appends a producer's batch: proposed here on the leader, or (with
    /// `forward`) sent on to the leader this replica knows (one hop: a
    /// leader that moved meanwhile answers `NOT_LEADER`, which the producer
    /// retries); without `forward` a replica that does not lead answers
    /// `NOT_LEADER` with the leader and epoch it knows.
    pub fn append(
        self: &Rc<Self>,
        batch: &Bytes,
        acks: Acks,
        forward: bool,
    ) -> futures::future::LocalBoxFuture<'static, Result<Offset, ServiceError>> {
        let status = self.status();
        match (status.role, status.leader) {
            (role, Some(leader)) if forward && role != Role::Leader => {
                let net = self.net.clone();
                let body = super::forward_produce_body(self.tp, acks, batch);
                let this = self.clone();
                Box::pin(async move {
                    // A leader that dies with the call in flight never
                    // answers: once this replica follows another (or none),
                    // the producer hears at once and sends again.
                    let call = std::pin::pin!(super::forwarded_produce(&net, leader, body));
                    let moved = std::pin::pin!(this.leader_moved_from(leader));
                    match futures::future::select(call, moved).await {
                        futures::future::Either::Left((result, _)) => result,
                        futures::future::Either::Right(_) => Err(ServiceError::LeaderNotAvailable(format!(
                            "node {leader} stopped leading partition {} before it answered",
                            this.partition.topic
                        ))),
                    }
                })
            }
            // Leading, no leader known, or not forwarding: the machine
            // takes it or answers `NOT_LEADER` with what it knows.
            _ => {
                let reply = self.propose(batch, acks);
                Box::pin(async move { reply.await.map_err(|_| ServiceError::ShuttingDown)? })
            }
        }
    }

    /// Proposes a producer's batch: checked now (a refused batch never
    /// reaches the machine), then replicated; the answer comes when `acks`
    /// holds.
    pub fn propose(self: &Rc<Self>, batch: &Bytes, acks: Acks) -> oneshot::Receiver<Result<Offset, ServiceError>> {
        let (tx, rx) = oneshot::channel();
        let status = self.status();
        if status.role != Role::Leader {
            let _ = tx.send(Err(not_leader(self.tp, status.leader, status.epoch)));
            return rx;
        }
        let records = match BatchHeader::decode(batch) {
            Ok(h) => h.last_offset_delta + 1,
            Err(e) => {
                let _ = tx.send(Err(ServiceError::InvalidBatch(e.to_string())));
                return rx;
            }
        };
        let append = match self.log.append_in_epoch(batch.to_vec(), status.epoch) {
            Ok(append) => append,
            Err(e) => {
                let _ = tx.send(Err(ServiceError::from(&e)));
                return rx;
            }
        };
        let id = ProposalId(self.next_proposal.get());
        self.next_proposal.set(id.0 + 1);
        self.prepared.borrow_mut().insert(id, Box::pin(append));
        self.replies.borrow_mut().insert(id, tx);
        self.input(Input::Propose { id, batch: batch.clone(), records, acks });
        // Refused by the machine (its answer is already sent): the prepared
        // append is dropped, and gives its place in line away.
        self.prepared.borrow_mut().remove(&id);
        rx
    }

    fn carry_out(self: &Rc<Self>, out: Vec<Output>) {
        for output in out {
            match output {
                Output::PersistHardState { state } => {
                    self.persists.borrow_mut().push_back(state);
                    self.persist_next();
                }
                Output::Append { batches, proposal } => self.place(batches, proposal),
                Output::Truncate { to } => {
                    let this = self.clone();
                    drop(self.rt.spawn(async move {
                        this.appends_settled().await;
                        match this.log.truncate_to(to).await {
                            Ok(()) => this.input(Input::Truncated { log_end: to }),
                            Err(e) => this.failed(&format!("truncating to {to}: {e}")),
                        }
                    }));
                }
                Output::Reset { log_start } => {
                    // The log keeps its own start; what the leader sends next
                    // lands at `log_start` or later, after a gap.
                    let this = self.clone();
                    let own_start = self.log.log_start_offset();
                    drop(self.rt.spawn(async move {
                        this.appends_settled().await;
                        match this.log.truncate_to(own_start).await {
                            Ok(()) => this.input(Input::Truncated { log_end: log_start }),
                            Err(e) => this.failed(&format!("emptying the log: {e}")),
                        }
                    }));
                }
                Output::Read { token, from, bytes_max, mode } => match mode {
                    ReadMode::CacheOnly if from >= self.log.log_end_offset() => {
                        // The batch the fetch is for was just proposed and
                        // is not placed yet (its append task has not run):
                        // answer once it is, not a fetch wait later.
                        let this = self.clone();
                        drop(self.rt.spawn(async move {
                            let deadline = this.rt.now() + PLACED_WAIT;
                            let _ = engine::rt::until(&this.rt, deadline, this.log.wait_placed(from)).await;
                            let result = this.cached(from, bytes_max);
                            this.input(Input::ReadDone { token, result });
                        }));
                    }
                    ReadMode::CacheOnly => {
                        let result = self.cached(from, bytes_max);
                        self.inbox.borrow_mut().push_back(Input::ReadDone { token, result });
                    }
                    ReadMode::Disk => {
                        let this = self.clone();
                        drop(self.rt.spawn(async move {
                            let result = match this.log.read_replica(from, bytes_max as usize).await {
                                Ok(batches) => {
                                    ReadResult::Batches(batches.into_iter().map_while(replica_batch).collect())
                                }
                                Err(_) => ReadResult::Failed,
                            };
                            this.input(Input::ReadDone { token, result });
                        }));
                    }
                },
                Output::Send { to, message } => self.net.send(to, self.tp, message),
                Output::HighWatermark { offset } => {
                    self.log.set_high_watermark_limit(Some(offset));
                    if let Some(on_commit) = self.on_commit.borrow().clone() {
                        on_commit();
                    }
                }
                Output::Ack { proposal, base } => {
                    if let Some(reply) = self.replies.borrow_mut().remove(&proposal) {
                        let _ = reply.send(Ok(base));
                    }
                }
                Output::Fail { proposal, error } => {
                    if let Some(reply) = self.replies.borrow_mut().remove(&proposal) {
                        let error = match error {
                            ProposeError::NotLeader { leader, epoch } => not_leader(self.tp, leader, epoch),
                            ProposeError::LeaderNotAvailable => ServiceError::LeaderNotAvailable(format!(
                                "partition {} has no serving leader yet",
                                self.partition.topic
                            )),
                            ProposeError::Storage => {
                                ServiceError::Storage(format!("partition {}'s log failed", self.partition.topic))
                            }
                        };
                        let _ = reply.send(Err(error));
                    }
                }
                Output::RoleChanged { role, epoch, leader } => {
                    tracing::info!(
                        topic = %self.partition.topic, partition = self.tp.partition.0, ?role, epoch = epoch.0,
                        leader = leader.map(|l| l.0), "replica role"
                    );
                }
                Output::ConfigChanged { .. } => {}
            }
        }
    }

    fn place(self: &Rc<Self>, batches: Vec<ReplicaBatch>, proposal: Option<ProposalId>) {
        let mut futures: Vec<AppendFuture> = Vec::with_capacity(batches.len());
        for batch in batches {
            let prepared = proposal.and_then(|id| self.prepared.borrow_mut().remove(&id));
            let future: AppendFuture = match (prepared, &batch.control) {
                (Some(prepared), _) => prepared,
                (None, Some(control)) if batch.bytes.is_empty() => {
                    let time = Timestamp(self.rt.storage().now_ms());
                    let bytes = protocol::replica::control::build_batch(control, batch.base, batch.epoch, time);
                    Box::pin(self.log.append_at_owned(bytes))
                }
                (None, _) => Box::pin(self.log.append_at_owned(batch.bytes.to_vec())),
            };
            futures.push(future);
        }
        for future in futures {
            let this = self.clone();
            self.appends_in_flight.set(self.appends_in_flight.get() + 1);
            let in_flight = self.appends_in_flight.clone();
            drop(self.rt.spawn(async move {
                let outcome = future.await;
                in_flight.set(in_flight.get() - 1);
                match outcome {
                    Ok(info) => this.input(Input::Durable { offset: info.last_offset.next() }),
                    Err(engine::LogError::Truncated { .. }) => {}
                    Err(e) => this.failed(&format!("appending: {e}")),
                }
            }));
        }
    }

    /// Waits until every append carried out so far has its outcome (the
    /// machine emits no append between a cut and its `Truncated`, so this
    /// ends).
    async fn appends_settled(&self) {
        while self.appends_in_flight.get() > 0 {
            self.rt.sleep(Duration::from_millis(1)).await;
        }
    }

    /// Completes once nothing this stopped driver started can still touch
    /// the disk: its `raft.state` write in flight and its appends. A
    /// replica started again over the same files waits for this, so an old
    /// write never lands after the new replica read the file.
    pub async fn quiesced(&self) {
        debug_assert!(self.stopped.get(), "only a stopped driver quiesces");
        while self.persisting.get() {
            self.rt.sleep(Duration::from_millis(1)).await;
        }
        self.appends_settled().await;
    }

    fn persist_next(self: &Rc<Self>) {
        // Stopped: what is queued is dropped, as a crash before the write
        // would (the machine sent nothing that waited for it).
        if self.persisting.get() || self.stopped.get() {
            return;
        }
        let Some(state) = self.persists.borrow_mut().pop_front() else { return };
        self.persisting.set(true);
        let this = self.clone();
        drop(self.rt.spawn(async move {
            let bytes = state.encode(this.node);
            let written = this.rt.storage().write_file_atomic(&this.state_path, &bytes).await;
            this.persisting.set(false);
            match written {
                Ok(()) => {
                    this.input(Input::Persisted { sequence: state.sequence });
                    this.persist_next();
                }
                // Never retried: what reached the disk is unknown.
                Err(e) => this.failed(&format!("writing {}: {e}", this.state_path.display())),
            }
        }));
    }

    fn failed(self: &Rc<Self>, what: &str) {
        tracing::error!(topic = %self.partition.topic, partition = self.tp.partition.0, what, "replica storage failed");
        self.input(Input::LogFailed);
    }

    /// The high watermark the consumers of this replica read below.
    pub fn high_watermark(&self) -> Offset {
        self.status.borrow().high_watermark
    }
}

/// A random-enough incarnation for a new replica (never 0).
fn fresh_incarnation(node: NodeId, tp: TopicPartition) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(node.0);
    h.write_u64(tp.topic.0);
    h.write_u32(tp.partition.0);
    h.finish().max(1)
}

pub fn not_leader(tp: TopicPartition, leader: Option<NodeId>, epoch: LeaderEpoch) -> ServiceError {
    ServiceError::NotLeader {
        message: format!(
            "this broker is not the leader of {}/{} (epoch {}); the leader is {}",
            tp.topic,
            tp.partition,
            epoch.0,
            leader.map_or_else(|| "not known yet".to_owned(), |l| format!("node {l}"))
        ),
        leader: leader.map(|l| l.0),
        epoch: epoch.0,
    }
}

async fn ticker<R: Runtime>(driver: std::rc::Weak<Driver<R>>) {
    loop {
        let (rt, sleep) = {
            let Some(d) = driver.upgrade() else { return };
            if d.stopped.get() {
                return;
            }
            let deadline = d.machine.borrow().next_deadline_ms();
            let now = d.now();
            if deadline <= now {
                d.input(Input::Tick);
            }
            let deadline = d.machine.borrow().next_deadline_ms();
            let wait = Duration::from_millis(deadline.saturating_sub(d.now()).max(1)).min(TICK_MAX);
            (d.rt.clone(), wait)
        };
        rt.sleep(sleep).await;
    }
}
