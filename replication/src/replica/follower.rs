//! A follower's side: one data fetch outstanding to its leader, built from
//! machine state alone; batches placed as they come (the next fetch goes
//! at once, not after the write or its fdatasync); durable progress
//! reported on its own; a diverged log cut exactly where the leader's
//! epochs say (docs/replication.md §2, Follower fetch).

use protocol::ErrorCode;
use protocol::replica::{FetchAnswer, FetchRequest, PeerMessage, ReplicaBatch};
use protocol::types::{LeaderEpoch, NodeId, Offset};

use super::{Output, Replica, Role};
use crate::epochs::{EpochCache, EpochEnd};
use crate::hard_state::HARD_STATE_CONFIGS_MAX;
use crate::reconcile::truncation_point;

impl Replica {
    pub(super) fn fetch_request(&self, max_bytes: u32) -> FetchRequest {
        FetchRequest {
            incarnation: self.hard.incarnation,
            epoch: self.hard.epoch,
            fetch_offset: self.log_end,
            last_fetched_epoch: self.last_epoch(),
            durable_offset: self.durable_for_commit(),
            high_watermark: self.hw,
            max_bytes,
        }
    }

    /// Sends the data fetch if one is due: a follower that knows its
    /// leader, has none outstanding and is not cutting its log.
    pub(super) fn maybe_fetch(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        if self.role != Role::Follower || self.truncating || self.fetch_in_flight.is_some() {
            return;
        }
        // No room for another config: the fsync under way may make one
        // go (else the next answer's commit point may).
        if self.hard.configs.len() >= HARD_STATE_CONFIGS_MAX && self.durable < self.log_end {
            return;
        }
        let Some(leader) = self.leader else { return };
        let request = self.fetch_request(self.params.fetch_bytes_max);
        self.fetch_in_flight = Some((now_ms, self.log_end));
        self.send(leader, PeerMessage::Fetch(request), out);
    }

    pub(super) fn on_durable(&mut self, now_ms: u64, offset: Offset, out: &mut Vec<Output>) {
        let offset = offset.min(self.log_end);
        if offset <= self.durable {
            return;
        }
        self.durable = offset;
        if self.hard.configs.len() >= HARD_STATE_CONFIGS_MAX {
            self.trim_configs();
            self.maybe_fetch(now_ms, out);
            self.reconfigure_due = self.target.is_some();
        }
        match self.role {
            Role::Leader => self.leader_durable(out),
            // A report: the leader counts it at once, whatever the data
            // fetch is waiting for.
            Role::Follower if self.fetch_in_flight.is_some() => {
                if let Some(leader) = self.leader {
                    let report = self.fetch_request(0);
                    self.send(leader, PeerMessage::Fetch(report), out);
                }
            }
            _ => {}
        }
    }

    pub(super) fn truncate(&mut self, to: Offset, out: &mut Vec<Output>) {
        assert!(to <= self.log_end && to >= self.log_start, "a truncation point outside the log");
        self.truncating = true;
        self.log_end = to;
        self.durable = self.durable.min(to);
        let epochs_before = self.epochs.entries().len();
        self.epochs.truncate_to(to);
        // Once the cut is done, and before anything lands where it was,
        // the hard state forgets the epochs and configs that started
        // there (not before: a crash between would leave the cut epoch's
        // batches labelled with the epoch before it).
        let cut_epochs = self.epochs.entries().len() != epochs_before;
        self.persist_after_cut = self.forget_from(to) || cut_epochs;
        self.emit(Output::Truncate { to }, out);
    }

    fn reset(&mut self, log_start: Offset, snapshot: Option<protocol::replica::Config>, out: &mut Vec<Output>) {
        self.truncating = true;
        self.log_start = log_start;
        self.log_end = log_start;
        self.durable = log_start;
        self.epochs = EpochCache::new();
        if let Some(config) = snapshot {
            self.hard.configs = vec![(log_start, LeaderEpoch(0), config)];
        } else {
            self.forget_from(Offset(0));
        }
        self.persist(out);
        self.emit(Output::Reset { log_start }, out);
    }

    pub(super) fn on_truncated(&mut self, now_ms: u64, log_end: Offset, out: &mut Vec<Output>) {
        if !self.truncating {
            return;
        }
        assert_eq!(log_end, self.log_end, "the log was cut elsewhere than asked");
        self.truncating = false;
        self.fetch_in_flight = None;
        if std::mem::take(&mut self.persist_after_cut) {
            self.persist(out);
        }
        self.maybe_fetch(now_ms, out);
    }

    pub(super) fn on_fetch_answer(
        &mut self,
        now_ms: u64,
        from: NodeId,
        mut answer: FetchAnswer,
        out: &mut Vec<Output>,
    ) {
        if answer.epoch > self.hard.epoch {
            // Only an answer from the epoch's leader names it for sure.
            let leader = answer.leader.filter(|&l| l != self.me());
            self.adopt_epoch(now_ms, answer.epoch, leader, out);
            return;
        }
        if answer.epoch < self.hard.epoch || self.role == Role::Leader {
            return;
        }
        let from_leader = answer.error == ErrorCode::NONE || answer.error == ErrorCode::OFFSET_OUT_OF_RANGE;
        if from_leader {
            if self.leader != Some(from) {
                if self.leader.is_some() {
                    // Two leaders in one epoch cannot be; a stale or wrong
                    // answer is dropped.
                    return;
                }
                self.become_follower(now_ms, Some(from), out);
            }
            self.leader_contact_ms = Some(now_ms);
            self.reset_election_timer(now_ms);
        }
        if answer.report {
            if answer.error == ErrorCode::NONE && answer.diverging.is_none() {
                self.follow_high_watermark(answer.high_watermark, answer.fetch_offset, out);
            }
            return;
        }
        let current = self.fetch_in_flight.is_some_and(|(_, at)| at == answer.fetch_offset)
            && answer.fetch_offset == self.log_end
            && !self.truncating;
        if self.fetch_in_flight.is_some_and(|(_, at)| at == answer.fetch_offset) {
            self.fetch_in_flight = None;
        }
        match (answer.error, answer.diverging) {
            (ErrorCode::NONE, None) => {
                let shared = if current {
                    self.place(answer.epoch, answer.high_watermark, std::mem::take(&mut answer.batches), out);
                    self.log_end
                } else {
                    answer.fetch_offset.min(self.log_end)
                };
                self.follow_high_watermark(answer.high_watermark, shared, out);
            }
            (ErrorCode::NONE, Some((epoch, end))) if current => {
                // Where the logs part (ADR 24): the only way a replica cuts
                // its log. No epoch at or below the leader's answer: all of
                // it parts.
                let to = truncation_point(&self.epochs, self.log_end, EpochEnd { epoch, end_offset: end })
                    .unwrap_or(self.log_start);
                // A true leader's answer always cuts something; one that
                // would not is not from one, and is dropped.
                if to < self.log_end {
                    self.truncate(to, out);
                }
            }
            (ErrorCode::OFFSET_OUT_OF_RANGE, _) if current => self.reset(answer.log_start, answer.snapshot, out),
            // Removed from the config (or never in it): nothing to fetch
            // until a leader names this replica again (`BeginEpoch`).
            (ErrorCode::UNKNOWN_REPLICA, _) if self.role == Role::Follower && self.leader == Some(from) => {
                self.set_role(Role::Observer, None, out);
                return;
            }
            (ErrorCode::NOT_LEADER, _) if self.role == Role::Follower && self.leader.is_none_or(|l| l == from) => {
                let hint = answer.leader.filter(|&l| l != from && l != self.me());
                self.set_role(Role::Follower, hint, out);
            }
            _ => {}
        }
        self.maybe_fetch(now_ms, out);
    }

    /// Places a valid answer's batches after checking they continue the
    /// log; an answer that does not is dropped whole.
    fn place(
        &mut self,
        leader_epoch: LeaderEpoch,
        leader_hw: Offset,
        mut batches: Vec<ReplicaBatch>,
        out: &mut Vec<Output>,
    ) {
        // `raft.state` keeps a bounded number of configs not yet both
        // committed and durable here: an answer's batches past the config
        // that would overflow it wait for the next fetch (after fsync).
        let mut room = HARD_STATE_CONFIGS_MAX - self.hard.configs.len();
        let mut newest = self.config().clone();
        let fits = batches
            .iter()
            .position(|b| {
                let Some(config) = b.control.as_ref().map(protocol::replica::Control::config) else { return false };
                if *config == newest {
                    return false;
                }
                if room == 0 {
                    return true;
                }
                room -= 1;
                newest = config.clone();
                false
            })
            .unwrap_or(batches.len());
        batches.truncate(fits);
        if batches.is_empty() {
            return;
        }
        let mut at = self.log_end;
        let mut epoch = self.epochs.latest().map_or(LeaderEpoch(0), |(e, _)| e);
        for batch in &batches {
            if batch.base < at || batch.end <= batch.base || batch.epoch < epoch || batch.epoch > leader_epoch {
                return;
            }
            at = batch.end;
            epoch = batch.epoch;
        }
        let epochs_before = self.epochs.entries().len();
        let mut persist = false;
        for batch in &batches {
            self.epochs.assign(batch.epoch, batch.base).expect("checked above");
            if let Some(control) = &batch.control {
                // Below the leader's commit point (and in this log, which
                // matches the leader's up to `at`): committed.
                persist |= self.take_config(batch.base, batch.epoch, control, leader_hw.min(at), out);
            }
        }
        self.log_end = at;
        // A new epoch is in the hard state before its first batch lands.
        persist |= self.epochs.entries().len() != epochs_before;
        if persist {
            self.persist(out);
        }
        self.emit(Output::Append { batches, proposal: None }, out);
    }

    /// A follower's commit point: the leader's, but never past what this
    /// log is known to share with the leader's.
    fn follow_high_watermark(&mut self, leader_hw: Offset, shared: Offset, out: &mut Vec<Output>) {
        let hw = leader_hw.min(shared);
        if hw > self.hw && !self.truncating {
            self.hw = hw;
            let before = self.hard.configs.len();
            self.trim_configs();
            out.push(Output::HighWatermark { offset: hw });
            // The commit point is volatile: what it let go is let go in
            // `raft.state` too, or a restart (its commit point back at 0)
            // finds every config still there and no room for the next.
            if self.hard.configs.len() != before {
                self.persist(out);
            }
        }
    }
}
