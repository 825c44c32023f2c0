//! Elections: a pre-vote round that changes nothing durable (KIP-996), so
//! a replica cut off and back does not disturb a healthy leader; the vote,
//! persisted before it is sent; leader stickiness; and the transfer that
//! skips both waits (docs/replication.md §2, Elections).

use protocol::ErrorCode;
use protocol::replica::{PeerMessage, ReplicaKey, VoteAnswer, VoteRequest};
use protocol::types::{LeaderEpoch, NodeId};

use super::{Mutation, Output, Replica, Role};
use crate::config::{ConfigExt, names};

impl Replica {
    fn vote_request(&self, epoch: LeaderEpoch, transfer: bool) -> VoteRequest {
        VoteRequest {
            epoch,
            incarnation: self.hard.incarnation,
            last_epoch: self.last_epoch(),
            log_end: self.log_end,
            transfer,
        }
    }

    /// Whether a candidate's log is at least as complete as this one:
    /// (last epoch, log end), compared in that order.
    fn is_up_to_date(&self, request: &VoteRequest) -> bool {
        (request.last_epoch, request.log_end) >= (self.last_epoch(), self.log_end)
    }

    /// Leader stickiness: a replica that heard from a live leader lately
    /// grants no (pre-)vote, unless the leader itself hands over.
    fn heard_from_leader(&self, now_ms: u64) -> bool {
        self.role == Role::Leader
            || (self.leader.is_some()
                && self.leader_contact_ms.is_some_and(|t| now_ms < t + self.params.election_timeout_min_ms))
    }

    fn voter_peers(&self) -> Vec<NodeId> {
        let me = self.me();
        let mut peers: Vec<NodeId> =
            self.config().voter_sets().flatten().map(|k| k.node).filter(|&n| n != me).collect();
        peers.sort_unstable();
        peers.dedup();
        peers
    }

    pub(super) fn start_pre_vote(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        debug_assert!(self.can_campaign());
        self.fetch_in_flight = None;
        self.set_role(Role::PreCandidate, None, out);
        self.granted = vec![self.key()];
        self.reset_election_timer(now_ms);
        if self.config().is_quorum(|k| self.granted.iter().any(|g| names(k, g))) {
            self.start_election(now_ms, false, out);
            return;
        }
        let Some(next) = self.hard.epoch.0.checked_add(1) else { return };
        let request = self.vote_request(LeaderEpoch(next), false);
        for peer in self.voter_peers() {
            self.send(peer, PeerMessage::PreVote(request), out);
        }
    }

    /// A new epoch, a vote for itself, persisted before any request
    /// leaves (the barrier holds them).
    pub(super) fn start_election(&mut self, now_ms: u64, transfer: bool, out: &mut Vec<Output>) {
        let Some(next) = self.hard.epoch.0.checked_add(1) else {
            // The last epoch there is: nothing can be elected after it.
            return;
        };
        self.step_down(None, out);
        self.hard.epoch = LeaderEpoch(next);
        self.hard.voted_for = Some(self.me());
        self.persist(out);
        self.fetch_in_flight = None;
        self.set_role(Role::Candidate, None, out);
        self.granted = vec![self.key()];
        self.transfer_campaign = transfer;
        self.reset_election_timer(now_ms);
        if self.config().is_quorum(|k| self.granted.iter().any(|g| names(k, g))) {
            self.become_leader(now_ms, out);
            return;
        }
        let request = self.vote_request(self.hard.epoch, transfer);
        for peer in self.voter_peers() {
            self.send(peer, PeerMessage::Vote(request), out);
        }
    }

    fn vote_answer(&self, asked: LeaderEpoch, granted: bool) -> VoteAnswer {
        VoteAnswer {
            error: ErrorCode::NONE,
            epoch: self.hard.epoch,
            asked,
            incarnation: self.hard.incarnation,
            granted,
        }
    }

    pub(super) fn on_pre_vote(&mut self, now_ms: u64, from: NodeId, request: VoteRequest, out: &mut Vec<Output>) {
        let candidate = ReplicaKey { node: from, incarnation: request.incarnation };
        let granted = request.epoch > self.hard.epoch
            && self.is_up_to_date(&request)
            && self.may_elect(&candidate)
            && !self.heard_from_leader(now_ms);
        let answer = self.vote_answer(request.epoch, granted);
        self.send(from, PeerMessage::PreVoteAnswer(answer), out);
    }

    pub(super) fn on_pre_vote_answer(&mut self, now_ms: u64, from: NodeId, answer: VoteAnswer, out: &mut Vec<Output>) {
        if answer.epoch > self.hard.epoch {
            self.adopt_epoch(now_ms, answer.epoch, None, out);
            return;
        }
        if self.role != Role::PreCandidate
            || Some(answer.asked.0) != self.hard.epoch.0.checked_add(1)
            || !answer.granted
        {
            return;
        }
        let key = ReplicaKey { node: from, incarnation: answer.incarnation };
        if !self.granted.contains(&key) {
            self.granted.push(key);
        }
        if self.config().is_quorum(|k| self.granted.iter().any(|g| names(k, g))) {
            self.start_election(now_ms, false, out);
        }
    }

    pub(super) fn on_vote(&mut self, now_ms: u64, from: NodeId, request: VoteRequest, out: &mut Vec<Output>) {
        if request.epoch < self.hard.epoch || (self.heard_from_leader(now_ms) && !request.transfer) {
            let answer = self.vote_answer(request.epoch, false);
            self.send(from, PeerMessage::VoteAnswer(answer), out);
            return;
        }
        if request.epoch > self.hard.epoch {
            self.adopt_epoch(now_ms, request.epoch, None, out);
        }
        let candidate = ReplicaKey { node: from, incarnation: request.incarnation };
        let granted = self.hard.voted_for.is_none_or(|v| v == from)
            && self.is_up_to_date(&request)
            && self.may_elect(&candidate)
            && self.role != Role::Leader;
        if granted && self.hard.voted_for.is_none() {
            self.hard.voted_for = Some(from);
            self.persist(out);
        }
        if granted {
            self.reset_election_timer(now_ms);
        }
        let answer = PeerMessage::VoteAnswer(self.vote_answer(request.epoch, granted));
        if self.params.mutated(Mutation::VoteBeforePersist) {
            out.push(Output::Send { to: from, message: answer });
        } else {
            self.send(from, answer, out);
        }
    }

    pub(super) fn on_vote_answer(&mut self, now_ms: u64, from: NodeId, answer: VoteAnswer, out: &mut Vec<Output>) {
        if answer.epoch > self.hard.epoch {
            self.adopt_epoch(now_ms, answer.epoch, None, out);
            return;
        }
        if self.role != Role::Candidate || answer.asked != self.hard.epoch || !answer.granted {
            return;
        }
        let key = ReplicaKey { node: from, incarnation: answer.incarnation };
        if !self.granted.contains(&key) {
            self.granted.push(key);
        }
        if self.config().is_quorum(|k| self.granted.iter().any(|g| names(k, g))) {
            self.become_leader(now_ms, out);
        }
    }

    /// Whether this replica may vote for `candidate`: any node, as Raft
    /// has it (this config may be behind: a move it has not seen yet made
    /// a learner or a stranger a voter; the candidate counts votes by its
    /// own config), but never an incarnation other than the one this
    /// config names (a replica that lost its disk is not the one that was
    /// voted in, and is bound again before it may lead).
    fn may_elect(&self, candidate: &ReplicaKey) -> bool {
        let config = self.config();
        let mut named = config.voter_sets().flatten().chain(&config.learners).filter(|k| k.node == candidate.node);
        let first = named.next();
        first.is_none() || first.into_iter().chain(named).any(|k| names(k, candidate))
    }

    /// The leader of `epoch` announced itself. Only a leader sends this,
    /// so it is taken whoever sends it: a replica whose config is behind
    /// (it missed a move) may not know its leader as a voter yet.
    pub(super) fn on_begin_epoch(&mut self, now_ms: u64, from: NodeId, epoch: LeaderEpoch, out: &mut Vec<Output>) {
        if epoch < self.hard.epoch && self.role != Role::Leader && self.leader.is_none() {
            // A leader of an older epoch is alive while this replica sits
            // in a newer one it could not win (its campaign was refused,
            // as a replica the config left out is): a report tells the
            // leader the newer epoch, it steps down, and the next
            // election, of an epoch after this one, takes this replica in.
            let report = self.fetch_request(0);
            self.send(from, PeerMessage::Fetch(report), out);
            return;
        }
        if epoch > self.hard.epoch {
            self.adopt_epoch(now_ms, epoch, Some(from), out);
        } else if epoch == self.hard.epoch && self.role != Role::Leader && self.leader.is_none_or(|l| l == from) {
            self.leader_contact_ms = Some(now_ms);
            if self.role == Role::Follower && self.leader == Some(from) {
                self.reset_election_timer(now_ms);
                self.maybe_fetch(now_ms, out);
            } else {
                self.become_follower(now_ms, Some(from), out);
            }
        }
    }

    /// The leader hands over: campaign at once, without a pre-vote.
    pub(super) fn on_start_election(&mut self, now_ms: u64, from: NodeId, epoch: LeaderEpoch, out: &mut Vec<Output>) {
        if epoch == self.hard.epoch && self.leader == Some(from) && self.role == Role::Follower && self.can_campaign() {
            self.start_election(now_ms, true, out);
        }
    }
}
