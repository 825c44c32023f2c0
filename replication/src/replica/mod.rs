//! One partition's Raft, as a state machine that does no I/O
//! (docs/replication.md §2). The driver (the partition's core, or the
//! simulator) feeds it [`Input`]s with the time and carries out the
//! [`Output`]s in order; the machine keeps no clock and draws its election
//! jitter from a generator seeded at construction, so one seed gives one
//! run.
//!
//! The rules that keep acknowledged records safe live here, where the
//! simulator and the mutation tests can see them: a message that depends
//! on a hard-state change leaves only after that change is durable (the
//! persistence barrier, [`Replica::emit`]); commit counts durable offsets
//! only, and only once the leader's own epoch has a committed batch; a
//! replica cuts its log only where the leader's epochs say the logs part.
//!
//! Split by role: [`follower`] (fetching and appending), [`leader`]
//! (answering fetches, commit, proposals), [`election`] (pre-vote, vote,
//! check-quorum, transfer).

mod election;
mod follower;
mod leader;
mod reconfig;
pub(crate) mod rng;
mod types;

use std::collections::VecDeque;

use protocol::replica::{Config, Control, PeerMessage};
use protocol::types::{LeaderEpoch, NodeId, Offset};

pub use self::reconfig::{ReassignError, TARGET_REPLICAS_MAX, normalize_target, reached};
pub use self::types::{
    Acks, Admin, Input, LogView, Mutation, Output, Params, ProposalId, ProposeError, ReadMode, ReadResult, ReadToken,
    Role,
};
use crate::config::ConfigExt;
use crate::epochs::EpochCache;
use crate::hard_state::{HARD_STATE_CONFIGS_MAX, HardState};
use crate::replica::leader::LeaderState;
use crate::replica::rng::SplitMix;

/// A replicated partition's replica, owned by the core that owns the
/// partition (one per partition per broker).
// The flags are independent facts of the state (a cut under way, one that
// needs the hard state after it, a transfer's campaign, a move's step due):
// no two of them make one enum.
#[allow(clippy::struct_excessive_bools)]
pub struct Replica {
    params: Params,
    rng: SplitMix,
    /// The durable state as the machine wants it; `hard.sequence` is the
    /// newest version emitted, `persisted` the newest known durable.
    hard: HardState,
    persisted: u64,
    /// Outputs held back by the persistence barrier, each with the hard
    /// state sequence it waits for, in order.
    held: VecDeque<(u64, Output)>,

    log_start: Offset,
    /// The end of what is placed (emitted as `Append`), durable or not.
    log_end: Offset,
    durable: Offset,
    epochs: EpochCache,
    /// A `Truncate` or `Reset` is under way: nothing is appended or
    /// fetched until its `Truncated`.
    truncating: bool,
    /// The cut under way removes epochs or configs: the hard state is
    /// written once it is done.
    persist_after_cut: bool,
    /// The commit point as this replica knows it; volatile, never back.
    hw: Offset,

    role: Role,
    leader: Option<NodeId>,
    election_deadline_ms: u64,
    /// When this replica last heard from the leader of its epoch.
    leader_contact_ms: Option<u64>,
    /// The data fetch outstanding to the leader: when it left and at which
    /// offset.
    fetch_in_flight: Option<(u64, Offset)>,
    /// The voters that granted this round's (pre-)vote, by key.
    granted: Vec<protocol::replica::ReplicaKey>,
    /// This candidacy was started by a leadership transfer.
    transfer_campaign: bool,
    leading: Option<LeaderState>,
    next_token: u64,
    /// The nodes a move should end with, as the driver last named them.
    target: Option<Vec<NodeId>>,
    /// Nodes served and told the epoch though no config names them.
    observers: Vec<NodeId>,
    /// The commit point moved while a move is under way: its next step is
    /// looked at once the step that moved it is done.
    reconfigure_due: bool,
}

impl Replica {
    /// A replica over a log as recovery left it. `hard` is what
    /// `raft.state` holds (or a new one for a new replica).
    pub fn open(params: Params, hard: HardState, view: LogView, now_ms: u64, out: &mut Vec<Output>) -> Replica {
        assert!(params.election_timeout_min_ms > 0, "an election timeout of 0 elects forever");
        assert!(params.election_timeout_min_ms <= params.election_timeout_max_ms, "election timeouts out of order");
        assert!(!hard.configs.is_empty(), "a replica is opened with its assignment's config");
        let rng = SplitMix::new(params.seed ^ u64::from(params.node.0).rotate_left(32));
        let persisted = hard.sequence;
        let mut replica = Replica {
            params,
            rng,
            hard,
            persisted,
            held: VecDeque::new(),
            log_start: Offset(0),
            log_end: Offset(0),
            durable: Offset(0),
            epochs: EpochCache::new(),
            truncating: false,
            persist_after_cut: false,
            hw: Offset(0),
            role: Role::Offline,
            leader: None,
            election_deadline_ms: 0,
            leader_contact_ms: None,
            fetch_in_flight: None,
            granted: Vec::new(),
            transfer_campaign: false,
            leading: None,
            next_token: 1,
            target: None,
            observers: Vec::new(),
            reconfigure_due: false,
        };
        replica.take_view(view, now_ms, out);
        replica
    }

    fn take_view(&mut self, view: LogView, now_ms: u64, out: &mut Vec<Output>) {
        assert!(view.log_start <= view.log_end && view.durable <= view.log_end, "a log view out of order");
        self.log_start = view.log_start;
        self.log_end = view.log_end;
        self.durable = view.durable;
        self.epochs = view.epochs;
        self.truncating = false;
        // A config whose batch did not survive recovery is not in effect.
        let before = self.hard.configs.len();
        let log_end = self.log_end;
        self.hard.configs.retain(|(offset, epoch, _)| epoch.0 == 0 || *offset < log_end);
        let log_epoch = self.epochs.latest().map_or(LeaderEpoch(0), |(e, _)| e);
        let mut changed = self.hard.configs.len() != before;
        // Epoch at open = max(hard state, log): never lead an epoch again.
        if log_epoch > self.hard.epoch {
            self.hard.epoch = log_epoch;
            self.hard.voted_for = None;
            changed = true;
        }
        if changed {
            self.persist(out);
        }
        self.leading = None;
        self.set_role(Role::Follower, None, out);
        self.reset_election_timer(now_ms);
        if let Some(first) = self.params.first_election_timeout_ms {
            self.election_deadline_ms = now_ms + first;
        }
    }

    /// The only entry point: `input` happened at `now_ms`.
    pub fn step(&mut self, now_ms: u64, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::Tick => self.on_tick(now_ms, out),
            Input::Message { from, message } => self.on_message(now_ms, from, message, out),
            Input::Propose { id, batch, records, acks } => self.on_propose(now_ms, id, batch, records, acks, out),
            Input::Durable { offset } => self.on_durable(now_ms, offset, out),
            Input::Truncated { log_end } => self.on_truncated(now_ms, log_end, out),
            Input::ReadDone { token, result } => self.on_read_done(now_ms, token, result, out),
            Input::Persisted { sequence } => self.on_persisted(sequence, out),
            Input::LogFailed => self.on_log_failed(out),
            Input::LogReopened { view } => self.take_view(view, now_ms, out),
            Input::Admin(Admin::TransferLeadership { to }) => self.on_transfer(now_ms, to, out),
            Input::Admin(Admin::Reassign { target }) => self.on_reassign(now_ms, target, out),
            Input::Admin(Admin::Observers { nodes }) => {
                self.observers = nodes;
                self.sync_peers();
            }
        }
        if std::mem::take(&mut self.reconfigure_due) {
            self.reconfigure(now_ms, out);
        }
    }

    /// When the machine next needs a `Tick`.
    #[must_use]
    pub fn next_deadline_ms(&self) -> u64 {
        match self.role {
            Role::Offline | Role::Observer => u64::MAX,
            Role::Leader => self.leading.as_ref().map_or(u64::MAX, LeaderState::next_tick_ms),
            Role::Follower | Role::PreCandidate | Role::Candidate => {
                let fetch = self.fetch_in_flight.map_or(u64::MAX, |(sent, _)| sent + self.params.request_timeout_ms);
                let election = if self.can_campaign() { self.election_deadline_ms } else { u64::MAX };
                fetch.min(election)
            }
        }
    }

    #[must_use]
    pub fn role(&self) -> Role {
        self.role
    }

    #[must_use]
    pub fn epoch(&self) -> LeaderEpoch {
        self.hard.epoch
    }

    #[must_use]
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    #[must_use]
    pub fn high_watermark(&self) -> Offset {
        self.hw
    }

    #[must_use]
    pub fn log_end(&self) -> Offset {
        self.log_end
    }

    #[must_use]
    pub fn durable(&self) -> Offset {
        self.durable
    }

    #[must_use]
    pub fn epochs(&self) -> &EpochCache {
        &self.epochs
    }

    #[must_use]
    pub fn hard_state(&self) -> &HardState {
        &self.hard
    }

    /// A leader whose first batch of its epoch is committed: it takes
    /// proposals and serves consumers.
    #[must_use]
    pub fn is_serving(&self) -> bool {
        self.leading.as_ref().is_some_and(|l| l.serving)
    }

    /// The newest config known committed (and durable here).
    #[must_use]
    pub fn committed_config(&self) -> &Config {
        &self.hard.configs.first().expect("a replica always has a config").2
    }

    /// The config in effect: the newest one appended.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.hard.configs.last().expect("a replica always has a config").2
    }

    fn me(&self) -> NodeId {
        self.params.node
    }

    fn key(&self) -> protocol::replica::ReplicaKey {
        protocol::replica::ReplicaKey { node: self.me(), incarnation: self.hard.incarnation }
    }

    /// Whether the config lets this replica vote and campaign: it names
    /// this exact incarnation (a replica that lost its state is another
    /// one, and waits to be named again).
    fn can_vote(&self) -> bool {
        !matches!(self.role, Role::Offline) && self.config().is_voter(&self.key())
    }

    /// Whether this replica may stand for election: a voter of the config
    /// in effect, or, while that config is not known to be committed, of
    /// the one before it. A leader removed by a change leads until the
    /// change commits (Raft's §6); without this, a removed replica that
    /// holds the only copy of the change (its voters lag, one lost its
    /// disk) refuses every other candidate, as its log is longer, and
    /// never stands itself: no election could ever be won. Quorums are
    /// still counted in the config in effect.
    fn can_campaign(&self) -> bool {
        if self.can_vote() {
            return true;
        }
        let previous = self.hard.configs.iter().rev().nth(1).map(|(_, _, c)| c);
        !matches!(self.role, Role::Offline | Role::Observer)
            && !self.config_committed()
            && previous.is_some_and(|c| c.is_voter(&self.key()))
    }

    /// The epoch of the last placed batch (`None`: an empty log).
    fn last_epoch(&self) -> Option<LeaderEpoch> {
        if self.log_end == self.log_start { None } else { self.epochs.latest().map(|(e, _)| e) }
    }

    /// What this replica calls durable, in fetches and its own commit.
    fn durable_for_commit(&self) -> Offset {
        if self.params.mutated(Mutation::AckBeforeFsync) { self.log_end } else { self.durable }
    }

    fn reset_election_timer(&mut self, now_ms: u64) {
        let spread = self.params.election_timeout_max_ms - self.params.election_timeout_min_ms;
        self.election_deadline_ms = now_ms + self.params.election_timeout_min_ms + self.rng.below(spread + 1);
    }

    fn set_role(&mut self, role: Role, leader: Option<NodeId>, out: &mut Vec<Output>) {
        if self.role != role || self.leader != leader {
            self.role = role;
            self.leader = leader;
            out.push(Output::RoleChanged { role, epoch: self.hard.epoch, leader });
        }
    }

    /// Writes the hard state as it now is (a new sequence). Everything
    /// emitted after this waits for its `Persisted`.
    fn persist(&mut self, out: &mut Vec<Output>) {
        self.hard.sequence += 1;
        self.hard.epochs = self.epochs.entries().to_vec();
        out.push(Output::PersistHardState { state: self.hard.clone() });
    }

    /// Emits an output that leaves the machine (a message or a change to
    /// the log): at once if every hard state is durable and nothing is
    /// held, else held, in order, behind the newest hard state.
    fn emit(&mut self, output: Output, out: &mut Vec<Output>) {
        debug_assert!(matches!(
            output,
            Output::Send { .. } | Output::Append { .. } | Output::Truncate { .. } | Output::Reset { .. }
        ));
        if self.held.is_empty() && self.persisted >= self.hard.sequence {
            out.push(output);
        } else {
            self.held.push_back((self.hard.sequence, output));
        }
    }

    fn send(&mut self, to: NodeId, message: PeerMessage, out: &mut Vec<Output>) {
        debug_assert_ne!(to, self.me(), "a replica never sends to itself");
        self.emit(Output::Send { to, message }, out);
    }

    fn on_persisted(&mut self, sequence: u64, out: &mut Vec<Output>) {
        assert!(sequence <= self.hard.sequence, "persisted a hard state never emitted");
        self.persisted = self.persisted.max(sequence);
        while self.held.front().is_some_and(|(s, _)| *s <= self.persisted) {
            out.push(self.held.pop_front().expect("checked").1);
        }
    }

    fn token(&mut self) -> ReadToken {
        self.next_token += 1;
        ReadToken(self.next_token)
    }

    /// A batch with a config was placed at `offset`: the config takes
    /// effect now (and goes into `raft.state` before the batch lands).
    /// `committed` bounds what is known committed besides the hw (a
    /// follower catching up takes many configs in one answer, most of them
    /// below its leader's commit point).
    fn take_config(
        &mut self,
        offset: Offset,
        epoch: LeaderEpoch,
        control: &Control,
        committed: Offset,
        out: &mut Vec<Output>,
    ) -> bool {
        if control.config() == self.config() {
            return false;
        }
        self.hard.configs.push((offset, epoch, control.config().clone()));
        self.trim_configs_below(committed.max(self.hw));
        assert!(self.hard.configs.len() <= HARD_STATE_CONFIGS_MAX, "more configs than raft.state keeps");
        out.push(Output::ConfigChanged { config: control.config().clone(), committed: false });
        true
    }

    /// Keeps the newest committed config (an epoch-0 config, the
    /// assignment's, counts as committed) and those after it.
    fn trim_configs(&mut self) {
        self.trim_configs_below(self.hw);
    }

    /// Keeps the newest config below `committed` that this log also holds
    /// durably (so a power loss cannot take every config `raft.state`
    /// knows), and those after it.
    fn trim_configs_below(&mut self, committed: Offset) {
        let hw = committed.min(self.durable);
        let newest_committed =
            self.hard.configs.iter().rposition(|(offset, epoch, _)| epoch.0 == 0 || *offset < hw).unwrap_or(0);
        self.hard.configs.drain(..newest_committed);
    }

    /// The log was cut to end at `to`: configs of the cut batches go.
    fn forget_from(&mut self, to: Offset) -> bool {
        let before = self.hard.configs.len();
        self.hard.configs.retain(|(offset, epoch, _)| epoch.0 == 0 || *offset < to);
        self.hard.configs.len() != before
    }

    fn on_log_failed(&mut self, out: &mut Vec<Output>) {
        // Changes to the log held behind a hard-state write were worked
        // out against the log as it was: once it reopens (its unsynced
        // tail perhaps gone) they would land at the wrong place.
        self.held.retain(|(_, o)| matches!(o, Output::Send { .. }));
        self.step_down(None, out);
        self.fetch_in_flight = None;
        self.set_role(Role::Offline, None, out);
    }

    fn on_tick(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        match self.role {
            Role::Offline | Role::Observer => {}
            Role::Leader => self.leader_tick(now_ms, out),
            Role::Follower | Role::PreCandidate | Role::Candidate => {
                if self.fetch_in_flight.is_some_and(|(sent, _)| now_ms >= sent + self.params.request_timeout_ms) {
                    self.fetch_in_flight = None;
                }
                if self.can_campaign() && now_ms >= self.election_deadline_ms {
                    self.start_pre_vote(now_ms, out);
                } else {
                    self.maybe_fetch(now_ms, out);
                }
            }
        }
    }

    fn on_message(&mut self, now_ms: u64, from: NodeId, message: PeerMessage, out: &mut Vec<Output>) {
        if matches!(self.role, Role::Offline) || from == self.me() {
            return;
        }
        // A node the config does not name has no say in elections here
        // (its fetch is answered, `UNKNOWN_REPLICA`). What only a leader
        // sends is taken from anyone: a config that is behind (a move it
        // has not seen yet) may not name the leader.
        // (and a leader handing over may be no voter of its own config).
        // Vote requests too: a candidate of a config this one has not seen
        // yet needs this replica's vote ([`Replica::may_elect`]).
        let from_a_leader = matches!(
            message,
            PeerMessage::BeginEpoch { .. }
                | PeerMessage::FetchAnswer(_)
                | PeerMessage::StartElection { .. }
                | PeerMessage::PreVote(_)
                | PeerMessage::Vote(_)
        );
        if self.config().member(from).is_none() && !matches!(message, PeerMessage::Fetch(_)) && !from_a_leader {
            return;
        }
        match message {
            PeerMessage::Fetch(request) => self.on_fetch(now_ms, from, request, out),
            PeerMessage::FetchAnswer(answer) => self.on_fetch_answer(now_ms, from, answer, out),
            PeerMessage::PreVote(request) => self.on_pre_vote(now_ms, from, request, out),
            PeerMessage::PreVoteAnswer(answer) => self.on_pre_vote_answer(now_ms, from, answer, out),
            PeerMessage::Vote(request) => self.on_vote(now_ms, from, request, out),
            PeerMessage::VoteAnswer(answer) => self.on_vote_answer(now_ms, from, answer, out),
            PeerMessage::BeginEpoch { epoch } => self.on_begin_epoch(now_ms, from, epoch, out),
            PeerMessage::StartElection { epoch } => self.on_start_election(now_ms, from, epoch, out),
        }
    }

    /// A newer epoch was seen: adopt it, as a follower of `leader` if
    /// known. Persisted before anything of the new epoch leaves.
    fn adopt_epoch(&mut self, now_ms: u64, epoch: LeaderEpoch, leader: Option<NodeId>, out: &mut Vec<Output>) {
        assert!(epoch > self.hard.epoch, "epochs never go back");
        self.step_down(leader, out);
        self.hard.epoch = epoch;
        self.hard.voted_for = None;
        self.persist(out);
        self.become_follower(now_ms, leader, out);
    }

    fn become_follower(&mut self, now_ms: u64, leader: Option<NodeId>, out: &mut Vec<Output>) {
        self.granted.clear();
        self.transfer_campaign = false;
        self.fetch_in_flight = None;
        self.set_role(Role::Follower, leader, out);
        self.reset_election_timer(now_ms);
        if self.params.mutated(Mutation::TruncateToHighWatermark) && self.hw < self.log_end && !self.truncating {
            self.truncate(self.hw, out);
        }
        self.maybe_fetch(now_ms, out);
    }
}

#[cfg(test)]
mod tests;
