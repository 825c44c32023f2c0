//! The model simulator (docs/replication.md §9): three to five replicas of
//! one partition, driven directly, over model disks and a model network
//! that lose, duplicate, delay and reorder messages, cut links one way,
//! crash nodes with power loss, pause them and slow their fsyncs. One seed
//! is one run: every event is folded into a trace hash, and each seed
//! draws its own mix of faults (swarm testing).
//!
//! The invariants (I1–I7) are checked against ground truth after every
//! event ([`check`]): the disks' durable bytes, not the replicas' beliefs.
//! A run ends with the faults healed and a liveness check: the cluster
//! must commit again.

mod check;
mod disk;

use std::collections::{BTreeMap, BinaryHeap};
use std::hash::{Hash, Hasher};

use bytes::Bytes;
use protocol::replica::{Config, PeerMessage, ReplicaKey};
use protocol::types::{Incarnation, LeaderEpoch, NodeId, Offset};

use self::check::Checker;
pub use self::check::Violation;
use self::disk::Disk;
use crate::config::ConfigExt;
use crate::hard_state::HardState;
use crate::replica::rng::SplitMix;
use crate::replica::{
    Acks, Admin, Input, Mutation, Output, Params, ProposalId, ProposeError, ReadMode, Replica, Role, reached,
};

/// What one run is allowed to do; [`Faults::draw`] picks a mix per seed.
#[derive(Debug, Clone)]
pub struct Faults {
    /// Per message, in thousandths.
    pub loss_permille: u64,
    pub duplicate_permille: u64,
    pub delay_max_ms: u64,
    /// Mean time between crashes (power loss), between pauses, between
    /// link cuts; 0: never.
    pub crash_every_ms: u64,
    pub pause_every_ms: u64,
    pub cut_every_ms: u64,
    /// fdatasync and hard-state write latencies, uniform up to these.
    pub fsync_max_ms: u64,
    pub persist_max_ms: u64,
    /// Batches of the model are this many bytes; fetches take 1–4.
    pub fetch_batches_max: u32,
    /// Mean time between failed fdatasyncs (the log fails and reopens
    /// with its unsynced tail torn), between lost disks (log and hard
    /// state wiped, a new incarnation), between new reassignment
    /// targets; 0: never.
    pub fsync_fail_every_ms: u64,
    pub lost_disk_every_ms: u64,
    pub reassign_every_ms: u64,
}

impl Faults {
    /// A seed's own mix: some runs are calm, some hostile in one way.
    #[must_use]
    pub(crate) fn draw(rng: &mut SplitMix) -> Faults {
        let pick = |rng: &mut SplitMix, options: &[u64]| {
            options[usize::try_from(rng.below(options.len() as u64)).expect("small")]
        };
        Faults {
            loss_permille: pick(rng, &[0, 0, 10, 50, 200]),
            duplicate_permille: pick(rng, &[0, 0, 10, 100]),
            delay_max_ms: pick(rng, &[1, 5, 20, 50]),
            crash_every_ms: pick(rng, &[0, 3_000, 1_500, 700, 300]),
            pause_every_ms: pick(rng, &[0, 0, 4_000, 2_000]),
            cut_every_ms: pick(rng, &[0, 0, 3_000, 1_000]),
            fsync_max_ms: pick(rng, &[1, 5, 20, 200]),
            persist_max_ms: pick(rng, &[1, 5, 30]),
            // Often one batch a fetch: a leader then replicates an older
            // epoch's batches one round trip at a time (Raft's figure 8).
            fetch_batches_max: u32::try_from(pick(rng, &[1, 1, 1, 2, 3, 4])).expect("small"),
            fsync_fail_every_ms: pick(rng, &[0, 0, 4_000, 1_500]),
            lost_disk_every_ms: pick(rng, &[0, 0, 6_000, 2_500]),
            reassign_every_ms: pick(rng, &[0, 0, 5_000, 2_000]),
        }
    }
}

/// The bytes a model batch stands for.
const BATCH_BYTES: u32 = 100;
/// The liveness budget after healing, per offset not yet committed.
const CATCH_UP_MS_PER_OFFSET: u64 = 150;
/// Batches the leader's cache holds (older reads go to "disk").
const CACHE_BATCHES: usize = 8;

#[derive(Debug, Clone)]
pub struct SimSpec {
    pub seed: u64,
    /// The initial voters; one more node starts outside the config, for
    /// reassignments to move to.
    pub nodes: u32,
    /// Virtual time with faults, then healed time for the liveness check.
    pub faulty_ms: u64,
    pub healed_ms: u64,
    pub mutation: Option<Mutation>,
    /// Prints every event and output (for replaying a failing seed).
    pub verbose: bool,
}

impl SimSpec {
    #[must_use]
    pub fn new(seed: u64) -> SimSpec {
        SimSpec {
            seed,
            nodes: 3 + u32::try_from(seed % 3).expect("small"),
            faulty_ms: 20_000,
            healed_ms: 30_000,
            mutation: None,
            verbose: false,
        }
    }
}

/// What a run did, for the tests' own sanity checks.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    pub trace: u64,
    pub events: u64,
    pub proposals: u64,
    pub acked_all: u64,
    pub elections: u64,
    pub crashes: u64,
    pub truncations: u64,
    pub fsync_failures: u64,
    pub lost_disks: u64,
    pub reassigns: u64,
    /// Runs whose config reached their last target.
    pub reassigns_reached: u64,
}

#[derive(Debug)]
enum EventKind {
    Deliver {
        from: NodeId,
        message: PeerMessage,
    },
    Tick,
    FsyncDone {
        target: usize,
        round: u64,
    },
    PersistDone {
        state: Box<HardState>,
    },
    /// The cut reaches the disk (and is reported): to `log_end`, or a
    /// reset to an empty log starting there.
    TruncateDone {
        log_end: Offset,
        reset: bool,
    },
    DiskReadDone {
        token: crate::replica::ReadToken,
        from: Offset,
        bytes_max: u32,
    },
    Crash,
    Restart,
    Pause,
    Propose,
    Cut,
    FsyncFail,
    /// The failed log was recovered and is open again.
    LogReopen,
    LoseDisk,
    Reassign,
}

struct Event {
    at_ms: u64,
    seq: u64,
    node: usize,
    /// The node's life this event belongs to (a crash ends one), and its
    /// log's (a failed log ends one: its disk completions are gone).
    life: u64,
    log_life: u64,
    kind: EventKind,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ms, self.seq) == (other.at_ms, other.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // A max-heap: the earliest event first.
        (other.at_ms, other.seq).cmp(&(self.at_ms, self.seq))
    }
}

struct Node {
    id: NodeId,
    replica: Option<Replica>,
    life: u64,
    log_life: u64,
    disk: Disk,
    paused_until_ms: u64,
    tick_at_ms: u64,
    /// Hard-state writes complete in order: the last one's completion.
    persist_done_ms: u64,
    /// Disk completions that came while the process was stopped.
    deferred: Vec<Input>,
}

pub struct Sim {
    spec: SimSpec,
    faults: Faults,
    rng: SplitMix,
    now_ms: u64,
    seq: u64,
    events: BinaryHeap<Event>,
    nodes: Vec<Node>,
    config: Config,
    /// Directed links cut until then.
    cuts: BTreeMap<(usize, usize), u64>,
    checker: Checker,
    trace: std::collections::hash_map::DefaultHasher,
    stats: RunStats,
    next_proposal: u64,
    /// Proposals in flight: id → (payload, acks).
    proposals: BTreeMap<ProposalId, (u64, Acks)>,
    /// The node the client tries first.
    client_guess: usize,
    healed: bool,
    /// The move every replica was last given.
    target: Option<Vec<NodeId>>,
    next_incarnation: u64,
}

impl Sim {
    #[must_use]
    pub fn new(spec: SimSpec) -> Sim {
        let mut rng = SplitMix::new(spec.seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5eed);
        let faults = Faults::draw(&mut rng);
        let keys: Vec<ReplicaKey> = (1..=spec.nodes + 1)
            .map(|n| ReplicaKey { node: NodeId(n), incarnation: Incarnation(1000 + u64::from(n)) })
            .collect();
        // Odd seeds name the voters as the broker does today, by node under
        // incarnation 0 ("any"); even seeds by exact incarnation.
        let named = |k: &ReplicaKey| {
            if spec.seed % 2 == 1 { ReplicaKey { node: k.node, incarnation: Incarnation(0) } } else { *k }
        };
        let voters = &keys[..spec.nodes as usize];
        let config = Config { voters: voters.iter().map(named).collect(), joint: None, learners: vec![] };
        let nodes = keys
            .iter()
            .map(|k| {
                let hard = HardState {
                    epoch: LeaderEpoch(0),
                    voted_for: None,
                    incarnation: k.incarnation,
                    initial: k.node.0 <= spec.nodes,
                    configs: vec![(Offset(0), LeaderEpoch(0), config.clone())],
                    sequence: 0,
                    epochs: vec![],
                };
                Node {
                    id: k.node,
                    replica: None,
                    life: 0,
                    log_life: 0,
                    disk: Disk::new(hard),
                    paused_until_ms: 0,
                    tick_at_ms: u64::MAX,
                    persist_done_ms: 0,
                    deferred: Vec::new(),
                }
            })
            .collect();
        let checker = Checker::new(spec.nodes as usize + 1);
        Sim {
            spec,
            faults,
            rng,
            now_ms: 0,
            seq: 0,
            events: BinaryHeap::new(),
            nodes,
            config,
            cuts: BTreeMap::new(),
            checker,
            trace: std::collections::hash_map::DefaultHasher::new(),
            stats: RunStats::default(),
            next_proposal: 0,
            proposals: BTreeMap::new(),
            client_guess: 0,
            healed: false,
            target: None,
            next_incarnation: 5_000,
        }
    }

    #[must_use]
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    fn schedule(&mut self, after_ms: u64, node: usize, kind: EventKind) {
        self.seq += 1;
        let life = self.nodes[node].life;
        let log_life = self.nodes[node].log_life;
        self.events.push(Event { at_ms: self.now_ms + after_ms, seq: self.seq, node, life, log_life, kind });
    }

    fn uniform(&mut self, max: u64) -> u64 {
        self.rng.below(max + 1)
    }

    fn chance(&mut self, permille: u64) -> bool {
        permille > 0 && self.rng.below(1000) < permille
    }

    fn every(&mut self, mean_ms: u64) -> u64 {
        mean_ms / 2 + self.uniform(mean_ms)
    }

    /// Runs the whole seed: faults, then healing and the liveness check.
    pub fn run(mut self) -> Result<RunStats, Violation> {
        for n in 0..self.nodes.len() {
            self.start_node(n)?;
        }
        self.schedule(10, 0, EventKind::Propose);
        if self.faults.crash_every_ms > 0 {
            let after = self.every(self.faults.crash_every_ms);
            self.schedule(after, 0, EventKind::Crash);
        }
        if self.faults.pause_every_ms > 0 {
            let after = self.every(self.faults.pause_every_ms);
            self.schedule(after, 0, EventKind::Pause);
        }
        if self.faults.cut_every_ms > 0 {
            let after = self.every(self.faults.cut_every_ms);
            self.schedule(after, 0, EventKind::Cut);
        }
        if self.faults.fsync_fail_every_ms > 0 {
            let after = self.every(self.faults.fsync_fail_every_ms);
            self.schedule(after, 0, EventKind::FsyncFail);
        }
        // A lost disk is only survivable where configs name incarnations
        // (even seeds): under "any incarnation" the wiped replica would
        // vote as the one that held the log.
        if self.faults.lost_disk_every_ms > 0 && self.spec.seed.is_multiple_of(2) {
            let after = self.every(self.faults.lost_disk_every_ms);
            self.schedule(after, 0, EventKind::LoseDisk);
        }
        if self.faults.reassign_every_ms > 0 {
            let after = self.every(self.faults.reassign_every_ms);
            self.schedule(after, 0, EventKind::Reassign);
        }
        let mut end_ms = self.spec.faulty_ms + self.spec.healed_ms;
        let mut committed_at_heal = None;
        while let Some(event) = self.events.pop() {
            if event.at_ms > end_ms {
                break;
            }
            self.now_ms = event.at_ms;
            if !self.healed && self.now_ms >= self.spec.faulty_ms {
                self.heal();
                committed_at_heal = Some(self.checker.committed_end());
                // A backlog to replicate first: small fetches move one batch
                // per round trip (≤ 50 ms each way, a disk read, a tick).
                let log_end_max = self.nodes.iter().map(|n| n.disk.end().0).max().unwrap_or(0);
                let backlog = log_end_max.saturating_sub(self.checker.committed_end().0);
                end_ms += backlog * CATCH_UP_MS_PER_OFFSET;
            }
            self.handle(event)?;
            self.checker.check_epochs(&self.nodes)?;
            if self.stats.events.is_multiple_of(500) {
                Checker::check_log_matching(&self.nodes)?;
            }
        }
        Checker::check_log_matching(&self.nodes)?;
        let before = committed_at_heal.unwrap_or(Offset(0));
        // Every replica is back: each one's commit point passed what was
        // committed when the faults stopped.
        let members = self.members();
        if let Some(n) = members.into_iter().find(|&n| self.checker.hw_of(n) < before) {
            return Err(Violation::new(
                "liveness",
                format!("node {} did not catch up after healing: hw {} < {before}", n + 1, self.checker.hw_of(n)),
            ));
        }
        // A node that stays (the move's target, or the first voters) and
        // lost its disk votes again by the end.
        if let Some(n) = self.unbound_in_effect().filter(|n| self.members().contains(n)) {
            return Err(Violation::new(
                "liveness",
                format!("node {} lost its disk and its new incarnation was never bound again", n + 1),
            ));
        }
        if self.checker.committed_end() <= before {
            return Err(Violation::new(
                "liveness",
                format!(
                    "nothing committed in {} ms after healing (committed end {before})",
                    end_ms - self.spec.faulty_ms
                ),
            ));
        }
        if let Some(target) = &self.target
            && self
                .nodes
                .iter()
                .filter_map(|n| n.replica.as_ref())
                .any(|r| reached(&r.hard_state().configs[0].2, target))
        {
            self.stats.reassigns_reached += 1;
        }
        self.stats.trace = self.trace.finish();
        Ok(self.stats)
    }

    fn heal(&mut self) {
        self.healed = true;
        self.cuts.clear();
        for n in 0..self.nodes.len() {
            self.nodes[n].paused_until_ms = 0;
            if self.nodes[n].replica.is_none() {
                self.schedule(0, n, EventKind::Restart);
            }
        }
        self.faults.loss_permille = 0;
        self.faults.duplicate_permille = 0;
    }

    fn params(&self, node: NodeId) -> Params {
        let mut params = Params::new(node, self.spec.seed);
        params.fetch_bytes_max = BATCH_BYTES * self.faults.fetch_batches_max;
        params.mutation = self.spec.mutation;
        params
    }

    fn start_node(&mut self, n: usize) -> Result<(), Violation> {
        let params = self.params(self.nodes[n].id);
        let (hard, view) = self.nodes[n].disk.recover();
        let mut out = Vec::new();
        let mut replica = Replica::open(params, hard, view, self.now_ms, &mut out);
        self.checker.restarted(n, &replica, &self.nodes[n].disk.batches)?;
        // The driver gives a replica its partition's move at every open.
        if self.target.is_some() {
            replica.step(self.now_ms, Input::Admin(Admin::Reassign { target: self.target.clone() }), &mut out);
        }
        self.nodes[n].replica = Some(replica);
        self.nodes[n].tick_at_ms = u64::MAX;
        self.carry_out(n, out)
    }

    fn handle(&mut self, event: Event) -> Result<(), Violation> {
        let n = event.node;
        self.stats.events += 1;
        (event.at_ms, n, std::mem::discriminant(&event.kind)).hash(&mut self.trace);
        if self.spec.verbose {
            eprintln!("{:>6} node {} <- {:?}", event.at_ms, n + 1, event.kind);
        }
        match event.kind {
            EventKind::Propose => return self.propose(),
            EventKind::Crash => {
                self.crash();
                return Ok(());
            }
            EventKind::Pause => {
                self.pause();
                return Ok(());
            }
            EventKind::Cut => {
                self.cut();
                return Ok(());
            }
            EventKind::FsyncFail => return self.fail_fsync(),
            EventKind::LoseDisk => {
                self.lose_disk();
                return Ok(());
            }
            EventKind::Reassign => return self.reassign(),
            _ => {}
        }
        let log_event = matches!(
            event.kind,
            EventKind::FsyncDone { .. } | EventKind::TruncateDone { .. } | EventKind::DiskReadDone { .. }
        );
        if log_event && event.log_life != self.nodes[n].log_life {
            return Ok(()); // of a log that failed since
        }
        if event.life != self.nodes[n].life {
            return Ok(()); // of a life a crash ended
        }
        if let EventKind::Restart = event.kind {
            return if self.nodes[n].replica.is_none() { self.start_node(n) } else { Ok(()) };
        }
        if let EventKind::LogReopen = event.kind {
            if self.nodes[n].replica.is_none() {
                return Ok(());
            }
            // As the broker does: the replica starts again from what is
            // durable (its hard state and the recovered log).
            self.nodes[n].replica = None;
            self.nodes[n].deferred.clear();
            self.checker.crashed(n);
            return self.start_node(n);
        }
        // The disk's side happens whatever the process does.
        let input = match event.kind {
            EventKind::FsyncDone { target, round } => match self.nodes[n].disk.fsync_done(target, round) {
                Some(durable) => {
                    if let Some(next) = self.nodes[n].disk.start_fsync() {
                        let latency = 1 + self.uniform(self.faults.fsync_max_ms);
                        self.schedule(latency, n, EventKind::FsyncDone { target: next.0, round: next.1 });
                    }
                    Input::Durable { offset: durable }
                }
                None => return Ok(()),
            },
            EventKind::PersistDone { state } => {
                let sequence = state.sequence;
                self.nodes[n].disk.hard = *state;
                Input::Persisted { sequence }
            }
            EventKind::TruncateDone { log_end, reset } => {
                if reset {
                    self.nodes[n].disk.reset(log_end);
                } else {
                    self.nodes[n].disk.truncate(log_end);
                }
                Input::Truncated { log_end }
            }
            EventKind::DiskReadDone { token, from, bytes_max } => {
                let result = self.nodes[n].disk.read(from, bytes_max, usize::MAX);
                Input::ReadDone { token, result }
            }
            EventKind::Deliver { from, message } => Input::Message { from, message },
            EventKind::Tick => {
                if self.nodes[n].tick_at_ms != event.at_ms {
                    return Ok(());
                }
                self.nodes[n].tick_at_ms = u64::MAX;
                Input::Tick
            }
            EventKind::Propose
            | EventKind::Crash
            | EventKind::Pause
            | EventKind::Cut
            | EventKind::Restart
            | EventKind::FsyncFail
            | EventKind::LogReopen
            | EventKind::LoseDisk
            | EventKind::Reassign => {
                unreachable!("handled above")
            }
        };
        if self.nodes[n].replica.is_none() {
            return Ok(());
        }
        if self.now_ms < self.nodes[n].paused_until_ms {
            // The process is stopped: it sees this when it runs again.
            let wait = self.nodes[n].paused_until_ms - self.now_ms;
            let kind = match input {
                Input::Message { from, message } => EventKind::Deliver { from, message },
                Input::Tick => {
                    self.nodes[n].tick_at_ms = self.nodes[n].paused_until_ms;
                    EventKind::Tick
                }
                other => {
                    self.nodes[n].deferred.push(other);
                    self.wake_later(n, wait);
                    return Ok(());
                }
            };
            self.schedule(wait, n, kind);
            return Ok(());
        }
        self.step(n, input)
    }

    fn wake_later(&mut self, n: usize, wait: u64) {
        self.nodes[n].tick_at_ms = self.now_ms + wait;
        self.schedule(wait, n, EventKind::Tick);
    }

    fn step(&mut self, n: usize, input: Input) -> Result<(), Violation> {
        let mut inputs = std::mem::take(&mut self.nodes[n].deferred);
        inputs.push(input);
        for input in inputs {
            let mut out = Vec::new();
            let replica = self.nodes[n].replica.as_mut().expect("a live node");
            replica.step(self.now_ms, input, &mut out);
            self.carry_out(n, out)?;
        }
        Ok(())
    }

    /// Carries out a step's outputs in order, as the driver contract says;
    /// cache reads are answered at once, as the core's batch cache would.
    fn carry_out(&mut self, n: usize, out: Vec<Output>) -> Result<(), Violation> {
        let mut queue: std::collections::VecDeque<Output> = out.into();
        while let Some(output) = queue.pop_front() {
            if self.spec.verbose {
                eprintln!("{:>6} node {} -> {output:?}", self.now_ms, n + 1);
            }
            self.checker.output(n, &output, &self.nodes)?;
            match output {
                Output::PersistHardState { state } => {
                    let latency = 1 + self.uniform(self.faults.persist_max_ms);
                    let done = (self.now_ms + latency).max(self.nodes[n].persist_done_ms);
                    self.nodes[n].persist_done_ms = done;
                    let after = done - self.now_ms;
                    self.schedule(after, n, EventKind::PersistDone { state: Box::new(state) });
                }
                Output::Append { batches, proposal: _ } => {
                    self.nodes[n]
                        .disk
                        .append(&batches)
                        .map_err(|e| Violation::new("I2", format!("node {}: {e}", n + 1)))?;
                    if let Some((target, round)) = self.nodes[n].disk.start_fsync() {
                        let latency = 1 + self.uniform(self.faults.fsync_max_ms);
                        self.schedule(latency, n, EventKind::FsyncDone { target, round });
                    }
                }
                // The cut lands later: a crash before it leaves the log
                // (and `raft.state`) as they were.
                Output::Truncate { to } => {
                    self.stats.truncations += 1;
                    let after = 1 + self.uniform(20);
                    self.schedule(after, n, EventKind::TruncateDone { log_end: to, reset: false });
                }
                Output::Reset { log_start } => {
                    self.stats.truncations += 1;
                    let after = 1 + self.uniform(20);
                    self.schedule(after, n, EventKind::TruncateDone { log_end: log_start, reset: true });
                }
                Output::Read { token, from, bytes_max, mode } => match mode {
                    ReadMode::CacheOnly => {
                        let result = self.nodes[n].disk.read(from, bytes_max, CACHE_BATCHES);
                        let mut more = Vec::new();
                        let replica = self.nodes[n].replica.as_mut().expect("a live node");
                        replica.step(self.now_ms, Input::ReadDone { token, result }, &mut more);
                        for o in more.into_iter().rev() {
                            queue.push_front(o);
                        }
                    }
                    ReadMode::Disk => {
                        let after = 1 + self.uniform(20);
                        self.schedule(after, n, EventKind::DiskReadDone { token, from, bytes_max });
                    }
                },
                Output::Send { to, message } => self.send(n, to, &message),
                Output::Ack { proposal, base } => {
                    if let Some((payload, Acks::All)) = self.proposals.remove(&proposal) {
                        self.stats.acked_all += 1;
                        self.checker.acked(payload, base)?;
                    }
                }
                Output::Fail { proposal, error } => {
                    self.proposals.remove(&proposal);
                    if let ProposeError::NotLeader { leader: Some(l), .. } = error {
                        self.client_guess = (l.0 - 1) as usize;
                    } else {
                        self.client_guess = usize::try_from(self.rng.below(self.nodes.len() as u64)).expect("small");
                    }
                }
                Output::RoleChanged { role, .. } => {
                    if role == Role::Leader {
                        self.stats.elections += 1;
                        self.client_guess = n;
                    }
                }
                Output::HighWatermark { .. } | Output::ConfigChanged { .. } => {}
            }
        }
        let deadline = self.nodes[n].replica.as_ref().map_or(u64::MAX, Replica::next_deadline_ms);
        if deadline < self.nodes[n].tick_at_ms {
            let at = deadline.max(self.now_ms + 1);
            self.nodes[n].tick_at_ms = at;
            self.schedule(at - self.now_ms, n, EventKind::Tick);
        }
        Ok(())
    }

    fn send(&mut self, n: usize, to: NodeId, message: &PeerMessage) {
        let dest = (to.0 - 1) as usize;
        if self.cuts.get(&(n, dest)).is_some_and(|&until| until > self.now_ms) {
            return;
        }
        let copies = if self.chance(self.faults.duplicate_permille) { 2 } else { 1 };
        for _ in 0..copies {
            if self.chance(self.faults.loss_permille) {
                continue;
            }
            let delay = self.uniform(self.faults.delay_max_ms);
            let from = self.nodes[n].id;
            self.schedule(delay, dest, EventKind::Deliver { from, message: message.clone() });
        }
    }

    fn propose(&mut self) -> Result<(), Violation> {
        // Once healed, a lighter load: a replica far behind (a new learner
        // fetching one small batch a round trip) must be able to catch up.
        let after = if self.healed { 100 + self.uniform(200) } else { 5 + self.uniform(25) };
        self.schedule(after, 0, EventKind::Propose);
        let n = self.client_guess;
        if self.nodes[n].replica.is_none() || self.now_ms < self.nodes[n].paused_until_ms {
            self.client_guess = usize::try_from(self.rng.below(self.nodes.len() as u64)).expect("small");
            return Ok(());
        }
        self.stats.proposals += 1;
        self.next_proposal += 1;
        let payload = self.next_proposal;
        let acks = match self.rng.below(4) {
            0 => Acks::None,
            1 => Acks::Leader,
            _ => Acks::All,
        };
        let id = ProposalId(payload);
        self.proposals.insert(id, (payload, acks));
        let records = u32::try_from(1 + self.rng.below(3)).expect("small");
        let batch = Bytes::copy_from_slice(&payload.to_le_bytes());
        self.step(n, Input::Propose { id, batch, records, acks })
    }

    fn random_node(&mut self) -> usize {
        usize::try_from(self.rng.below(self.nodes.len() as u64)).expect("small")
    }

    fn crash(&mut self) {
        if self.healed {
            return;
        }
        let after = self.every(self.faults.crash_every_ms);
        self.schedule(after, 0, EventKind::Crash);
        let n = self.random_node();
        if self.nodes[n].replica.is_none() {
            return;
        }
        self.crash_node(n);
    }

    /// Power loss on `n`; it restarts a little later.
    fn crash_node(&mut self, n: usize) {
        self.stats.crashes += 1;
        let keep = self.rng.next();
        self.nodes[n].disk.power_loss(keep);
        self.nodes[n].replica = None;
        self.nodes[n].life += 1;
        self.nodes[n].log_life += 1;
        self.nodes[n].paused_until_ms = 0;
        self.nodes[n].persist_done_ms = 0;
        self.nodes[n].deferred.clear();
        self.checker.crashed(n);
        let down = 50 + self.uniform(2_000);
        self.schedule(down, n, EventKind::Restart);
    }

    fn pause(&mut self) {
        if self.healed {
            return;
        }
        let after = self.every(self.faults.pause_every_ms);
        self.schedule(after, 0, EventKind::Pause);
        let n = self.random_node();
        let for_ms = 150 + self.uniform(1_800);
        self.nodes[n].paused_until_ms = self.now_ms + for_ms;
    }

    fn cut(&mut self) {
        if self.healed {
            return;
        }
        let after = self.every(self.faults.cut_every_ms);
        self.schedule(after, 0, EventKind::Cut);
        let a = self.random_node();
        let until = self.now_ms + 500 + self.uniform(4_000);
        if self.rng.below(2) == 0 {
            // One way.
            let b = (a + 1 + self.random_node() % (self.nodes.len() - 1)) % self.nodes.len();
            self.cuts.insert((a, b), until);
        } else {
            // Isolated both ways.
            for b in 0..self.nodes.len() {
                if b != a {
                    self.cuts.insert((a, b), until);
                    self.cuts.insert((b, a), until);
                }
            }
        }
    }

    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The nodes that should hold the log when the run ends: the move's
    /// target, else the first config's voters.
    fn members(&self) -> Vec<usize> {
        match &self.target {
            Some(target) => target.iter().map(|n| (n.0 - 1) as usize).collect(),
            None => self.config.voters.iter().map(|k| (k.node.0 - 1) as usize).collect(),
        }
    }

    /// An fdatasync fails: the log is poisoned (the replica is told), its
    /// unsynced tail may be gone, and recovery reopens it a little later.
    fn fail_fsync(&mut self) -> Result<(), Violation> {
        if self.healed {
            return Ok(());
        }
        let after = self.every(self.faults.fsync_fail_every_ms);
        self.schedule(after, 0, EventKind::FsyncFail);
        let n = self.random_node();
        if self.nodes[n].replica.is_none() || self.now_ms < self.nodes[n].paused_until_ms {
            return Ok(());
        }
        self.stats.fsync_failures += 1;
        self.nodes[n].log_life += 1;
        let keep = self.rng.next();
        self.nodes[n].disk.power_loss(keep);
        let reopen = 20 + self.uniform(500);
        self.schedule(reopen, n, EventKind::LogReopen);
        self.step(n, Input::LogFailed)
    }

    /// A disk is lost: the node comes back empty, under a new incarnation,
    /// with the partition's first assignment (as a broker recreates a
    /// replica it lost). Its old key's vote is gone with it; the leader
    /// binds the new incarnation on its own (a learner, a joint config).
    /// One at a time: a second voter's disk goes only once the first is
    /// bound again (losing a majority's disks loses the log).
    fn lose_disk(&mut self) {
        if self.healed {
            return;
        }
        let after = self.every(self.faults.lost_disk_every_ms);
        self.schedule(after, 0, EventKind::LoseDisk);
        if self.unbound().is_some() {
            return;
        }
        let n = self.random_node();
        self.crash_node(n);
        let durable = self.nodes[n].disk.batches[..self.nodes[n].disk.durable].to_vec();
        self.checker.lost_disk(n, &durable);
        self.stats.lost_disks += 1;
        self.next_incarnation += 1;
        let hard = HardState {
            epoch: LeaderEpoch(0),
            voted_for: None,
            incarnation: Incarnation(self.next_incarnation),
            initial: false,
            configs: vec![(Offset(0), LeaderEpoch(0), self.config.clone())],
            sequence: 0,
            epochs: vec![],
        };
        self.nodes[n].disk = Disk::new(hard);
    }

    /// A node whose current incarnation the committed config of the replica
    /// furthest on names as a voter by another one.
    fn unbound_in_effect(&self) -> Option<usize> {
        let newest = self.nodes.iter().filter_map(|m| m.replica.as_ref()).max_by_key(|r| r.high_watermark())?;
        let committed = newest.committed_config();
        (0..self.nodes.len()).find(|&n| {
            let key = ReplicaKey { node: self.nodes[n].id, incarnation: self.nodes[n].disk.hard.incarnation };
            committed.voter_sets().flatten().any(|k| k.node == key.node && !crate::config::names(k, &key))
        })
    }

    /// A node whose current incarnation some config that may yet be in
    /// effect names as a voter by another one (a lost disk not bound again
    /// yet): any config a disk's `raft.state` holds (replicas may all be
    /// down, and an uncommitted config may be cut).
    fn unbound(&self) -> Option<usize> {
        let configs: Vec<&Config> = self.nodes.iter().flat_map(|m| m.disk.hard.configs.iter().map(|c| &c.2)).collect();
        (0..self.nodes.len()).find(|&n| {
            let key = ReplicaKey { node: self.nodes[n].id, incarnation: self.nodes[n].disk.hard.incarnation };
            configs
                .iter()
                .any(|c| c.voter_sets().flatten().any(|k| k.node == key.node && !crate::config::names(k, &key)))
        })
    }

    /// A new target for the voters, given to every replica (a replica that
    /// is down gets it when it opens).
    fn reassign(&mut self) -> Result<(), Violation> {
        if self.healed {
            return Ok(());
        }
        let after = self.every(self.faults.reassign_every_ms);
        self.schedule(after, 0, EventKind::Reassign);
        let total = self.nodes.len();
        let size = 3 + usize::try_from(self.rng.below((total.min(5) - 2) as u64)).expect("small");
        let mut pool: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let mut target = Vec::new();
        while target.len() < size {
            let i = usize::try_from(self.rng.below(pool.len() as u64)).expect("small");
            target.push(pool.swap_remove(i));
        }
        target.sort_unstable();
        self.stats.reassigns += 1;
        self.target = Some(target);
        for n in 0..total {
            if self.nodes[n].replica.is_none() {
                continue;
            }
            let input = Input::Admin(Admin::Reassign { target: self.target.clone() });
            if self.now_ms < self.nodes[n].paused_until_ms {
                self.nodes[n].deferred.push(input);
            } else {
                self.step(n, input)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
