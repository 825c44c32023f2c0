//! Membership changes (docs/replication.md §2, Learners, config changes;
//! §8, Reassign). The driver names a *target* (the nodes that should end
//! up as the voters) on every replica; whichever replica leads walks the
//! config there one committed step at a time, and a new leader picks up
//! where the old one stopped, because each step is decided from the
//! config in the log and what the leader has seen, never from a plan held
//! somewhere:
//!
//! 1. a target node not yet in the config is told the epoch and, once it
//!    fetches, added as a *learner* bound to the incarnation it fetched
//!    with (it replicates, never votes, never counts);
//! 2. once every new member has caught up, a *joint* config (`voters` =
//!    the current set, `joint` = the target's): every decision needs a
//!    majority of both, so no two leaders can be elected by disjoint sets
//!    while replicas disagree about which config is in effect;
//! 3. once that commits, the target's set alone;
//! 4. a leader the target left out hands leadership to a caught-up voter.
//!
//! A voter that lost its disk fetches under a new incarnation, which the
//! config does not name: the same steps bind the new one (as a learner,
//! then through a joint config), so it votes again only once it holds
//! the log again. One uncommitted config at a time, as everywhere.

use bytes::Bytes;
use protocol::replica::{Config, Control, ReplicaBatch, ReplicaKey};
use protocol::types::NodeId;

use super::{Output, Replica, Role};
use crate::config::{ConfigExt, names};
use crate::hard_state::HARD_STATE_CONFIGS_MAX;

/// Target nodes, at most (a bound on what a request can ask for).
pub const TARGET_REPLICAS_MAX: usize = 16;

/// Why a target was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReassignError {
    Empty,
    TooMany { replicas: usize },
}

impl std::fmt::Display for ReassignError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReassignError::Empty => write!(f, "a partition needs at least one replica"),
            ReassignError::TooMany { replicas } => {
                write!(f, "{replicas} replicas asked, at most {TARGET_REPLICAS_MAX}")
            }
        }
    }
}

/// A target as the machine takes it: sorted, once each, bounded.
pub fn normalize_target(nodes: &[NodeId]) -> Result<Vec<NodeId>, ReassignError> {
    let mut target = nodes.to_vec();
    target.sort_unstable();
    target.dedup();
    if target.is_empty() {
        return Err(ReassignError::Empty);
    }
    if target.len() > TARGET_REPLICAS_MAX {
        return Err(ReassignError::TooMany { replicas: target.len() });
    }
    Ok(target)
}

/// Whether `config` is where `target` leads: its voters are the target's
/// nodes, no joint set, no learners.
#[must_use]
pub fn reached(config: &Config, target: &[NodeId]) -> bool {
    let mut voters: Vec<NodeId> = config.voters.iter().map(|k| k.node).collect();
    voters.sort_unstable();
    config.joint.is_none() && config.learners.is_empty() && voters == target
}

impl Replica {
    /// The driver's target for this partition (`None`: no move).
    pub(super) fn on_reassign(&mut self, now_ms: u64, target: Option<Vec<NodeId>>, out: &mut Vec<Output>) {
        self.target = target.and_then(|t| normalize_target(&t).ok());
        self.sync_peers();
        self.reconfigure(now_ms, out);
    }

    /// Whether `node` is served as a learner would be though no config
    /// names it: a target node of a move, or an observer.
    pub(super) fn prospective(&self, node: NodeId) -> bool {
        self.target.as_ref().is_some_and(|t| t.contains(&node)) || self.observers.contains(&node)
    }

    /// Whether the newest config in the log is committed (an epoch-0
    /// config, the assignment's, counts as committed).
    pub(super) fn config_committed(&self) -> bool {
        self.hard.configs.last().is_some_and(|(offset, epoch, _)| epoch.0 == 0 || *offset < self.hw)
    }

    /// The leader tracks every replica its config names, and the target's
    /// nodes too (they are told the epoch until they fetch).
    pub(super) fn sync_peers(&mut self) {
        let me = self.me();
        let mut wanted = self.config().peers(me);
        if let Some(target) = &self.target {
            wanted.extend(target.iter().copied().filter(|&n| n != me));
        }
        wanted.extend(self.observers.iter().copied().filter(|&n| n != me));
        let Some(leading) = self.leading.as_mut() else { return };
        leading.peers.retain(|n, _| wanted.contains(n));
        for n in wanted {
            leading.peers.entry(n).or_default();
        }
    }

    /// The key `node` should be named by: the config's own key while it
    /// names the incarnation `node` fetches with, else that incarnation
    /// (`None`: not heard from, so not known).
    fn wanted_key(&self, node: NodeId) -> Option<ReplicaKey> {
        let named = self.config().member(node);
        if node == self.me() {
            return Some(named.filter(|k| names(k, &self.key())).unwrap_or_else(|| self.key()));
        }
        let seen = self.progress_of(node).and_then(super::leader::Progress::fetched_as);
        match (named, seen) {
            (Some(k), Some(i)) if names(&k, &ReplicaKey { node, incarnation: i }) => Some(k),
            (_, Some(incarnation)) => Some(ReplicaKey { node, incarnation }),
            // A voter not heard from this epoch keeps its key.
            (Some(k), None) if self.config().is_voter(&k) => Some(k),
            (_, None) => None,
        }
    }

    /// The leader's next step towards the target, if one is due.
    pub(super) fn reconfigure(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        let Some(leading) = self.leading.as_ref() else { return };
        if !leading.serving || leading.transfer.is_some() || !self.config_committed() {
            return;
        }
        // `raft.state` holds a bounded number of configs; the older ones go
        // once this leader's own fsync covers the newest committed one.
        if self.hard.configs.len() >= HARD_STATE_CONFIGS_MAX {
            return;
        }
        let config = self.config().clone();
        if let Some(joint) = &config.joint {
            // The joint config is committed: the target's set alone (with
            // or without a target here: a leader elected mid-move finishes
            // what the log holds).
            let learners = config.learners.iter().filter(|l| !joint.iter().any(|k| k.node == l.node)).copied();
            let next = Config { voters: joint.clone(), joint: None, learners: learners.collect() };
            self.propose_config(next, out);
            return;
        }
        if self.target.is_none() && !config.is_voter(&self.key()) {
            // Elected while the change that removed it was not committed
            // yet ([`Replica::can_campaign`]); it is now.
            self.hand_over(now_ms, out);
            return;
        }
        let Some(target) = self.target.clone() else { return };
        let Some(wanted) = target.iter().map(|&n| self.wanted_key(n)).collect::<Option<Vec<ReplicaKey>>>() else {
            return; // a new node has not fetched yet
        };
        let mut voters = config.voters.clone();
        voters.sort_unstable_by_key(|k| k.node);
        if voters == wanted {
            if !config.learners.is_empty() {
                // Learners the target does not keep (a cancelled move).
                self.propose_config(Config { voters: config.voters.clone(), joint: None, learners: vec![] }, out);
            } else if !config.is_voter(&self.key()) {
                self.hand_over(now_ms, out);
            } else {
                self.target = None;
                self.sync_peers();
            }
            return;
        }
        let newcomers: Vec<ReplicaKey> = wanted.iter().filter(|k| !config.voters.contains(k)).copied().collect();
        let missing: Vec<ReplicaKey> = newcomers.iter().filter(|k| !config.learners.contains(k)).copied().collect();
        if !missing.is_empty() {
            let mut learners: Vec<ReplicaKey> =
                config.learners.iter().filter(|l| !missing.iter().any(|m| m.node == l.node)).copied().collect();
            learners.extend(missing);
            self.propose_config(Config { voters: config.voters.clone(), joint: None, learners }, out);
            return;
        }
        let lag_ms = self.params.replica_lag_max_ms;
        // (A leader that is a newcomer itself, led on from a config that
        // named it a voter before a move left it a learner, holds the log.)
        let all_caught_up = newcomers.iter().all(|k| {
            k.node == self.me()
                || self.progress_of(k.node).is_some_and(|p| p.caught_up_as(k.incarnation, now_ms, lag_ms, self.hw))
        });
        if all_caught_up {
            let learners =
                config.learners.iter().filter(|l| !wanted.iter().any(|k| k.node == l.node)).copied().collect();
            let next = if self.params.mutated(super::Mutation::SkipJointConfig) {
                Config { voters: wanted, joint: None, learners }
            } else {
                Config { voters: config.voters.clone(), joint: Some(wanted), learners }
            };
            self.propose_config(next, out);
        }
    }

    /// A leader the config no longer names as a voter hands leadership to
    /// the voter that holds most of its log.
    fn hand_over(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        let config = self.config().clone();
        let Some(leading) = self.leading.as_ref() else { return };
        let best = config
            .voters
            .iter()
            .filter_map(|k| {
                leading.peers.get(&k.node).and_then(super::leader::Progress::matched_offset).map(|m| (m, k.node))
            })
            .max();
        if let Some((_, to)) = best {
            self.on_transfer(now_ms, to, out);
        }
    }

    /// Appends a `Voters` batch: the config is in effect from here on.
    fn propose_config(&mut self, config: Config, out: &mut Vec<Output>) {
        debug_assert!(self.role == Role::Leader && self.config_committed(), "one uncommitted config at a time");
        assert!(!config.voters.is_empty(), "a config always has voters");
        let base = self.log_end;
        let batch = ReplicaBatch {
            base,
            end: base.next(),
            epoch: self.hard.epoch,
            control: Some(Control::Voters(config)),
            bytes: Bytes::new(),
        };
        self.place_own(batch, None, out);
        self.sync_peers();
    }
}
