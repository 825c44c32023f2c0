//! A leader's side: answering fetches from memory (the batch cache, or a
//! replica's prefetch slot filled in the background, so a heartbeat never
//! waits for the disk), counting durable offsets into the commit point,
//! and acknowledging proposals (docs/replication.md §2, Leader answer,
//! Commit, A new leader, Proposals).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use protocol::ErrorCode;
use protocol::replica::{Control, FetchAnswer, FetchRequest, PeerMessage, ReplicaBatch, ReplicaKey};
use protocol::types::{Incarnation, NodeId, Offset};

use super::{Acks, Mutation, Output, ProposalId, ProposeError, ReadMode, ReadResult, ReadToken, Replica, Role};
use crate::config::{ConfigExt, names};
use crate::reconcile::{FetchPosition, check_fetch};

/// What the leader knows of one other replica, this epoch.
#[derive(Debug, Default)]
pub(super) struct Progress {
    incarnation: Option<Incarnation>,
    /// The incarnation of its latest fetch, whether it counted or not.
    fetched_as: Option<Incarnation>,
    /// The offset of its latest valid fetch: its log matches up to here.
    matched: Option<Offset>,
    /// Its durable offset, capped at `matched`.
    durable: Offset,
    last_fetch_ms: Option<u64>,
    /// Kafka's `lastCaughtUpTimeMs`: the newest time at which its log
    /// reached the leader's log end of that time (a valid fetch at the
    /// log end then, or at the log end of its previous fetch).
    caught_up_ms: Option<u64>,
    /// The leader's log end when its previous valid fetch came.
    log_end_at_last_fetch: Offset,
    /// When its previous valid fetch came.
    previous_fetch_ms: Option<u64>,
    /// A fetch at the log end (or waiting on a disk read), and until when.
    parked: Option<(FetchRequest, u64)>,
    /// A background read's batches, for the fetch at that offset.
    prefetch: Option<(Offset, Vec<ReplicaBatch>)>,
    disk_read: Option<(ReadToken, Offset)>,
}

/// The leader's volatile state; gone when it steps down.
#[derive(Debug)]
pub(super) struct LeaderState {
    /// The offset of this epoch's `LeaderChange` batch.
    epoch_start: Offset,
    pub(super) serving: bool,
    since_ms: u64,
    next_tick_ms: u64,
    pub(super) peers: BTreeMap<NodeId, Progress>,
    /// Proposals waiting for the leader's fdatasync, and for commit:
    /// (id, base, end), in offset order.
    waiting_durable: VecDeque<(ProposalId, Offset, Offset)>,
    waiting_commit: VecDeque<(ProposalId, Offset, Offset)>,
    /// A cache read in flight for a peer's fetch.
    reads: BTreeMap<ReadToken, (NodeId, FetchRequest, ReadMode)>,
    /// Handing leadership to this node, until then; whether told yet.
    pub(super) transfer: Option<(NodeId, u64, bool)>,
}

impl Progress {
    pub(super) fn fetched_as(&self) -> Option<Incarnation> {
        self.fetched_as
    }

    pub(super) fn matched_offset(&self) -> Option<Offset> {
        self.matched
    }

    /// Fetching under `incarnation`, holding the commit point, and caught
    /// up within the last `lag_ms` (ready to be promoted to voter).
    pub(super) fn caught_up_as(&self, incarnation: Incarnation, now_ms: u64, lag_ms: u64, hw: Offset) -> bool {
        self.incarnation == Some(incarnation)
            && self.matched.is_some_and(|m| m >= hw)
            && self.caught_up_ms.is_some_and(|t| t + lag_ms >= now_ms)
    }
}

impl LeaderState {
    pub(super) fn next_tick_ms(&self) -> u64 {
        self.next_tick_ms
    }

    fn pending(&self) -> usize {
        self.waiting_durable.len() + self.waiting_commit.len()
    }
}

impl Replica {
    /// Won the epoch: its `LeaderChange` batch goes first (it takes an
    /// offset), and every replica hears of the epoch.
    pub(super) fn become_leader(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        assert!(matches!(self.role, Role::Candidate), "only a candidate wins");
        assert_eq!(self.hard.voted_for, Some(self.me()), "a leader voted for itself");
        self.granted.clear();
        self.transfer_campaign = false;
        self.fetch_in_flight = None;
        let peers = self.config().peers(self.me()).into_iter().map(|n| (n, Progress::default())).collect();
        let epoch_start = self.log_end;
        self.leading = Some(LeaderState {
            epoch_start,
            serving: false,
            since_ms: now_ms,
            next_tick_ms: now_ms + self.params.tick_interval_ms,
            peers,
            waiting_durable: VecDeque::new(),
            waiting_commit: VecDeque::new(),
            reads: BTreeMap::new(),
            transfer: None,
        });
        self.sync_peers();
        self.set_role(Role::Leader, Some(self.me()), out);
        let control =
            Control::LeaderChange { epoch: self.hard.epoch, leader: self.me(), config: self.config().clone() };
        let batch = ReplicaBatch {
            base: epoch_start,
            end: epoch_start.next(),
            epoch: self.hard.epoch,
            control: Some(control),
            // The driver builds a control batch's bytes.
            bytes: Bytes::new(),
        };
        self.place_own(batch, None, out);
        let peers: Vec<NodeId> = self.leading.as_ref().expect("just set").peers.keys().copied().collect();
        for peer in peers {
            self.send(peer, PeerMessage::BeginEpoch { epoch: self.hard.epoch }, out);
        }
        self.advance_commit(out);
    }

    /// What this leader knows of `node`'s replica.
    pub(super) fn progress_of(&self, node: NodeId) -> Option<&Progress> {
        self.leading.as_ref()?.peers.get(&node)
    }

    /// Appends a batch this leader made, at the log end, in its epoch.
    pub(super) fn place_own(&mut self, batch: ReplicaBatch, proposal: Option<ProposalId>, out: &mut Vec<Output>) {
        assert_eq!(batch.base, self.log_end, "a leader appends at its log end");
        assert_eq!(batch.epoch, self.hard.epoch, "a leader appends in its own epoch");
        let epochs_before = self.epochs.entries().len();
        self.epochs.assign(batch.epoch, batch.base).expect("a leader's epoch is its log's newest");
        self.log_end = batch.end;
        let new_config =
            batch.control.clone().is_some_and(|c| self.take_config(batch.base, batch.epoch, &c, self.hw, out));
        // A new epoch (or config) is in the hard state before its batch lands.
        if new_config || self.epochs.entries().len() != epochs_before {
            self.persist(out);
        }
        self.emit(Output::Append { batches: vec![batch], proposal }, out);
        self.wake_parked(out);
    }

    /// Steps down from leading (a no-op otherwise): pending proposals fail
    /// with where to go instead.
    pub(super) fn step_down(&mut self, leader: Option<NodeId>, out: &mut Vec<Output>) {
        let Some(leading) = self.leading.take() else { return };
        let error = ProposeError::NotLeader { leader, epoch: self.hard.epoch };
        let error = if matches!(self.role, Role::Offline) { ProposeError::Storage } else { error };
        for (proposal, _, _) in leading.waiting_durable.into_iter().chain(leading.waiting_commit) {
            out.push(Output::Fail { proposal, error });
        }
    }

    pub(super) fn on_propose(
        &mut self,
        _now_ms: u64,
        id: ProposalId,
        batch: Bytes,
        records: u32,
        acks: Acks,
        out: &mut Vec<Output>,
    ) {
        assert!(records > 0, "a batch takes at least one offset");
        let refusal = match &self.leading {
            _ if self.role != Role::Leader => {
                Some(ProposeError::NotLeader { leader: self.leader, epoch: self.hard.epoch })
            }
            Some(l) if l.transfer.is_some() => {
                Some(ProposeError::NotLeader { leader: l.transfer.map(|t| t.0), epoch: self.hard.epoch })
            }
            Some(l) if !l.serving || l.pending() >= self.params.proposals_pending_max => {
                Some(ProposeError::LeaderNotAvailable)
            }
            _ => None,
        };
        if let Some(error) = refusal {
            out.push(Output::Fail { proposal: id, error });
            return;
        }
        let base = self.log_end;
        let end = base.plus(u64::from(records));
        let batch = ReplicaBatch { base, end, epoch: self.hard.epoch, control: None, bytes: batch };
        self.place_own(batch, Some(id), out);
        let leading = self.leading.as_mut().expect("checked: leading");
        match acks {
            Acks::None => out.push(Output::Ack { proposal: id, base }),
            Acks::Leader => leading.waiting_durable.push_back((id, base, end)),
            Acks::All => leading.waiting_commit.push_back((id, base, end)),
        }
        self.leader_durable(out);
    }

    /// The leader's own durable offset moved: `acks=leader` proposals
    /// below it are done, and it counts towards commit.
    pub(super) fn leader_durable(&mut self, out: &mut Vec<Output>) {
        let durable = self.durable_for_commit();
        let Some(leading) = self.leading.as_mut() else { return };
        while let Some(&(proposal, base, end)) = leading.waiting_durable.front() {
            if end > durable {
                break;
            }
            leading.waiting_durable.pop_front();
            out.push(Output::Ack { proposal, base });
        }
        self.advance_commit(out);
    }

    /// The commit rule: the largest offset a quorum holds durably, taken
    /// only once it covers this epoch's own first batch (Raft §5.4.2).
    fn advance_commit(&mut self, out: &mut Vec<Output>) {
        let own = self.durable_for_commit();
        let me = self.key();
        let Some(leading) = self.leading.as_ref() else { return };
        let candidate = self.config().quorum_offset(|k| {
            if k.node == me.node {
                names(k, &me).then_some(own)
            } else {
                let p = leading.peers.get(&k.node)?;
                (p.matched.is_some()
                    && p.incarnation.is_some_and(|i| names(k, &ReplicaKey { node: k.node, incarnation: i })))
                .then_some(p.durable)
            }
        });
        let epoch_start = leading.epoch_start;
        if candidate <= self.hw {
            return;
        }
        if candidate <= epoch_start && !self.params.mutated(Mutation::CommitPriorEpochByCount) {
            return;
        }
        self.hw = candidate;
        out.push(Output::HighWatermark { offset: candidate });
        let configs_before = self.hard.configs.len();
        self.trim_configs();
        if self.hard.configs.len() != configs_before || self.hard.configs.last().is_some_and(|c| c.0 < candidate) {
            out.push(Output::ConfigChanged { config: self.config().clone(), committed: true });
        }
        if self.hard.configs.len() != configs_before {
            self.persist(out);
        }
        let leading = self.leading.as_mut().expect("checked: leading");
        if candidate > epoch_start {
            leading.serving = true;
        }
        while let Some(&(proposal, base, end)) = leading.waiting_commit.front() {
            if end > candidate {
                break;
            }
            leading.waiting_commit.pop_front();
            out.push(Output::Ack { proposal, base });
        }
        // A config may have committed: the next step of a move is due.
        self.reconfigure_due = self.target.is_some() || self.config().joint.is_some();
    }

    fn answer(&self, request: &FetchRequest, error: ErrorCode) -> FetchAnswer {
        FetchAnswer {
            error,
            epoch: self.hard.epoch,
            leader: self.leader,
            fetch_offset: request.fetch_offset,
            report: request.is_report(),
            high_watermark: self.hw,
            log_start: self.log_start,
            diverging: None,
            snapshot: None,
            batches: Vec::new(),
        }
    }

    /// Any replica's answer to a fetch: only a leader of the fetch's epoch
    /// serves it.
    pub(super) fn on_fetch(&mut self, now_ms: u64, from: NodeId, request: FetchRequest, out: &mut Vec<Output>) {
        // A target node is served as the learner it is about to be, under
        // the incarnation it fetches with.
        let prospective = self.role == Role::Leader && self.prospective(from);
        let key = match self.config().member_as(from, request.incarnation) {
            Some(key) => key,
            None if prospective => ReplicaKey { node: from, incarnation: request.incarnation },
            None => {
                let answer = self.answer(&request, ErrorCode::UNKNOWN_REPLICA);
                self.send(from, PeerMessage::FetchAnswer(answer), out);
                return;
            }
        };
        if request.epoch > self.hard.epoch {
            self.adopt_epoch(now_ms, request.epoch, None, out);
        }
        if request.epoch < self.hard.epoch {
            let answer = self.answer(&request, ErrorCode::FENCED_EPOCH);
            self.send(from, PeerMessage::FetchAnswer(answer), out);
            return;
        }
        if self.role != Role::Leader {
            let answer = self.answer(&request, ErrorCode::NOT_LEADER);
            self.send(from, PeerMessage::FetchAnswer(answer), out);
            return;
        }
        let position =
            check_fetch(&self.epochs, self.log_start, self.log_end, request.fetch_offset, request.last_fetched_epoch);
        match position {
            FetchPosition::Valid => {}
            FetchPosition::Diverging(end) => {
                let mut answer = self.answer(&request, ErrorCode::NONE);
                answer.diverging = Some((end.epoch, end.end_offset));
                self.touch(now_ms, from, None);
                self.send(from, PeerMessage::FetchAnswer(answer), out);
                return;
            }
            FetchPosition::StartOver { log_start } => {
                let mut answer = self.answer(&request, ErrorCode::OFFSET_OUT_OF_RANGE);
                answer.log_start = log_start;
                answer.snapshot = Some(self.snapshot_config().clone());
                self.touch(now_ms, from, None);
                self.send(from, PeerMessage::FetchAnswer(answer), out);
                return;
            }
        }
        // The fetch names its incarnation: only the one the config names
        // counts towards commit.
        let counts = names(&key, &ReplicaKey { node: from, incarnation: request.incarnation });
        if let Some(leading) = self.leading.as_mut() {
            leading.peers.entry(from).or_default().fetched_as = Some(request.incarnation);
        }
        let fetching = ReplicaKey { node: from, incarnation: request.incarnation };
        let stale_voter = self.config().voter_sets().flatten().any(|k| k.node == from && !names(k, &fetching));
        if stale_voter && self.target.is_none() && self.config().joint.is_none() {
            // A replica that lost its disk: bound again by a move to the
            // same voters (`reconfig`).
            self.target = Some(self.config().voters.iter().map(|k| k.node).collect());
            self.sync_peers();
            self.reconfigure_due = true;
        }
        self.touch(now_ms, from, counts.then_some(&request));
        // Only the incarnation the config names is caught up: a wiped
        // replica fetching under a new one is not what was voted in.
        if counts {
            self.note_caught_up(now_ms, from, request.fetch_offset);
        }
        self.advance_commit(out);
        self.transfer_if_caught_up(from, out);
        let newcomer = self.target.as_ref().is_some_and(|t| t.contains(&from)) && self.config().member(from).is_none();
        if std::mem::take(&mut self.reconfigure_due) || newcomer {
            self.reconfigure(now_ms, out);
        }
        if request.is_report() {
            let answer = self.answer(&request, ErrorCode::NONE);
            self.send(from, PeerMessage::FetchAnswer(answer), out);
        } else {
            self.serve(now_ms, from, request, out);
        }
    }

    /// The newest config known to be committed.
    fn snapshot_config(&self) -> &protocol::replica::Config {
        let hw = self.hw;
        self.hard.configs.iter().rev().find(|(o, e, _)| e.0 == 0 || *o < hw).map_or(self.config(), |c| &c.2)
    }

    /// Records a fetch of this epoch from `from`; a valid one moves its
    /// matched and durable offsets.
    fn touch(&mut self, now_ms: u64, from: NodeId, valid: Option<&FetchRequest>) {
        let leading = self.leading.as_mut().expect("only a leader records fetches");
        let progress = leading.peers.entry(from).or_default();
        progress.last_fetch_ms = Some(now_ms);
        if let Some(request) = valid {
            if progress.incarnation != Some(request.incarnation) {
                progress.incarnation = Some(request.incarnation);
                progress.durable = Offset(0);
            }
            progress.matched = Some(progress.matched.map_or(request.fetch_offset, |m| m.max(request.fetch_offset)));
            progress.durable = progress.durable.max(request.durable_offset.min(request.fetch_offset));
        }
    }

    /// Kafka's rule for "in sync", measured by time rather than offsets so
    /// a steady stream of appends never makes a healthy follower lag.
    fn note_caught_up(&mut self, now_ms: u64, from: NodeId, fetch_offset: Offset) {
        let log_end = self.log_end;
        let leading = self.leading.as_mut().expect("only a leader records fetches");
        let progress = leading.peers.entry(from).or_default();
        if fetch_offset >= log_end {
            progress.caught_up_ms = Some(now_ms);
        } else if fetch_offset >= progress.log_end_at_last_fetch {
            progress.caught_up_ms = progress.caught_up_ms.max(progress.previous_fetch_ms);
        }
        progress.log_end_at_last_fetch = log_end;
        progress.previous_fetch_ms = Some(now_ms);
    }

    /// The voters whose logs reached this leader's log end within the last
    /// `replica_lag_max_ms` (the leader itself among them): Kafka's ISR,
    /// shown to operators. Empty on a replica that is not leading.
    #[must_use]
    pub fn caught_up(&self, now_ms: u64) -> Vec<NodeId> {
        let Some(leading) = self.leading.as_ref() else { return Vec::new() };
        let lag_ms = self.params.replica_lag_max_ms;
        let mut out: Vec<NodeId> = self
            .config()
            .voters
            .iter()
            .map(|k| k.node)
            .filter(|&n| {
                n == self.me()
                    || leading.peers.get(&n).and_then(|p| p.caught_up_ms).is_some_and(|t| t + lag_ms >= now_ms)
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// Answers a valid data fetch from memory, or parks it until there is
    /// something to send (or the heartbeat is due).
    fn serve(&mut self, now_ms: u64, from: NodeId, request: FetchRequest, out: &mut Vec<Output>) {
        let log_end = self.log_end;
        let until = now_ms + self.params.fetch_wait_max_ms;
        let leading = self.leading.as_mut().expect("only a leader serves");
        let progress = leading.peers.entry(from).or_default();
        if let Some((at, _)) = &progress.prefetch
            && *at == request.fetch_offset
        {
            let (_, batches) = progress.prefetch.take().expect("checked");
            let mut answer = self.answer(&request, ErrorCode::NONE);
            answer.batches = batches;
            self.send(from, PeerMessage::FetchAnswer(answer), out);
            return;
        }
        progress.prefetch = None;
        if request.fetch_offset >= log_end || progress.disk_read.is_some_and(|(_, at)| at == request.fetch_offset) {
            progress.parked = Some((request, until));
            return;
        }
        progress.parked = None;
        let token = self.token();
        // A follower asks for at most what this replica would ask.
        let bytes_max = request.max_bytes.min(self.params.fetch_bytes_max);
        let from_offset = request.fetch_offset;
        let leading = self.leading.as_mut().expect("checked: leading");
        leading.reads.insert(token, (from, request, ReadMode::CacheOnly));
        out.push(Output::Read { token, from: from_offset, bytes_max, mode: ReadMode::CacheOnly });
    }

    pub(super) fn on_read_done(&mut self, now_ms: u64, token: ReadToken, result: ReadResult, out: &mut Vec<Output>) {
        let Some(leading) = self.leading.as_mut() else { return };
        if let Some((from, request, _)) = leading.reads.remove(&token) {
            match result {
                ReadResult::Batches(batches) if !batches.is_empty() => {
                    let mut answer = self.answer(&request, ErrorCode::NONE);
                    answer.batches = batches;
                    self.send(from, PeerMessage::FetchAnswer(answer), out);
                }
                ReadResult::Miss => {
                    // Into the replica's prefetch slot, in the background;
                    // the fetch waits parked, the heartbeat does not.
                    let token = self.token();
                    let until = now_ms + self.params.fetch_wait_max_ms;
                    let leading = self.leading.as_mut().expect("checked: leading");
                    let progress = leading.peers.entry(from).or_default();
                    if progress.disk_read.is_none() {
                        progress.disk_read = Some((token, request.fetch_offset));
                        out.push(Output::Read {
                            token,
                            from: request.fetch_offset,
                            bytes_max: request.max_bytes.min(self.params.fetch_bytes_max),
                            mode: ReadMode::Disk,
                        });
                    }
                    progress.parked = Some((request, until));
                }
                ReadResult::Batches(_) | ReadResult::Failed => {
                    let until = now_ms + self.params.fetch_wait_max_ms;
                    let leading = self.leading.as_mut().expect("checked: leading");
                    leading.peers.entry(from).or_default().parked = Some((request, until));
                }
            }
            return;
        }
        // A background read finished.
        let Some((&from, progress)) =
            leading.peers.iter_mut().find(|(_, p)| p.disk_read.is_some_and(|(t, _)| t == token))
        else {
            return;
        };
        let (_, at) = progress.disk_read.take().expect("found by it");
        if let ReadResult::Batches(batches) = result
            && !batches.is_empty()
        {
            progress.prefetch = Some((at, batches));
            if let Some((request, _)) = progress.parked.take_if(|(r, _)| r.fetch_offset == at) {
                self.serve(now_ms, from, request, out);
            }
        }
    }

    /// New batches: parked fetches below the log end are served.
    fn wake_parked(&mut self, out: &mut Vec<Output>) {
        let log_end = self.log_end;
        let Some(leading) = self.leading.as_mut() else { return };
        let woken: Vec<(NodeId, FetchRequest)> = leading
            .peers
            .iter_mut()
            .filter(|(_, p)| p.disk_read.is_none())
            .filter_map(|(&n, p)| p.parked.take_if(|(r, _)| r.fetch_offset < log_end).map(|(r, _)| (n, r)))
            .collect();
        for (from, request) in woken {
            // The time only sets a new parking deadline, which a served
            // fetch does not take.
            self.serve(0, from, request, out);
        }
    }

    /// The leader's timers: heartbeats for parked fetches, `BeginEpoch`
    /// for replicas not heard from in this epoch, check-quorum and the
    /// transfer's deadline.
    pub(super) fn leader_tick(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        let min_ms = self.params.election_timeout_min_ms;
        let me = self.key();
        let epoch = self.hard.epoch;
        let tick = self.params.tick_interval_ms;
        let silent_ms = self.params.fetch_wait_max_ms + self.params.request_timeout_ms;
        let config = self.config().clone();
        let leading = self.leading.as_mut().expect("only a leader ticks as one");
        if now_ms < leading.next_tick_ms {
            return;
        }
        leading.next_tick_ms = now_ms + tick;
        let mut expired = Vec::new();
        let mut unheard = Vec::new();
        for (&node, progress) in &mut leading.peers {
            if let Some((request, _)) = progress.parked.take_if(|(_, until)| *until <= now_ms) {
                expired.push((node, request));
            }
            // Not heard from lately (a replica that restarted knows no
            // leader, and waits to be told): the epoch again.
            if progress.last_fetch_ms.is_none_or(|t| t + silent_ms <= now_ms) {
                unheard.push(node);
            }
        }
        // Check-quorum: a leader a quorum has not fetched from lately steps
        // down, so a partitioned leader stops taking writes.
        let quorum_heard = now_ms < leading.since_ms + min_ms
            || config.is_quorum(|k| {
                k.node == me.node
                    || leading.peers.get(&k.node).is_some_and(|p| p.last_fetch_ms.is_some_and(|t| t + min_ms >= now_ms))
            });
        let transfer_expired = leading.transfer.is_some_and(|(_, until, _)| until <= now_ms);
        if transfer_expired {
            leading.transfer = None;
        }
        for (node, request) in expired {
            let answer = self.answer(&request, ErrorCode::NONE);
            self.send(node, PeerMessage::FetchAnswer(answer), out);
        }
        for node in unheard {
            self.send(node, PeerMessage::BeginEpoch { epoch }, out);
        }
        if !quorum_heard {
            self.step_down(None, out);
            self.become_follower(now_ms, None, out);
            return;
        }
        self.reconfigure_due = false;
        self.reconfigure(now_ms, out);
    }

    pub(super) fn on_transfer(&mut self, now_ms: u64, to: NodeId, out: &mut Vec<Output>) {
        let timeout = self.params.leader_transfer_timeout_ms;
        let is_voter = self.config().voter_sets().flatten().any(|k| k.node == to);
        let Some(leading) = self.leading.as_mut() else { return };
        if !leading.serving || to == self.params.node || !is_voter || leading.transfer.is_some() {
            return;
        }
        leading.transfer = Some((to, now_ms + timeout, false));
        self.transfer_if_caught_up(to, out);
    }

    /// The transfer's target holds the whole log: tell it to campaign.
    fn transfer_if_caught_up(&mut self, from: NodeId, out: &mut Vec<Output>) {
        let log_end = self.log_end;
        let epoch = self.hard.epoch;
        let Some(leading) = self.leading.as_mut() else { return };
        let Some((to, until, false)) = leading.transfer else { return };
        if to != from || leading.peers.get(&to).and_then(|p| p.matched) != Some(log_end) {
            return;
        }
        leading.transfer = Some((to, until, true));
        self.send(to, PeerMessage::StartElection { epoch }, out);
    }
}
