//! The safety invariants of docs/replication.md §2 (I1–I7), checked as
//! the run goes, against the model disks: what is durable there is the
//! truth, whatever a replica believes.

use std::collections::BTreeMap;

use protocol::replica::{Config, PeerMessage, ReplicaBatch};
use protocol::types::{LeaderEpoch, Offset};

use super::Node;
use crate::config::ConfigExt;
use crate::epochs::EpochCache;
use crate::replica::{Output, Replica, Role};

#[derive(Debug, Clone)]
pub struct Violation {
    pub invariant: &'static str,
    pub detail: String,
}

impl Violation {
    pub(super) fn new(invariant: &'static str, detail: String) -> Violation {
        Violation { invariant, detail }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.invariant, self.detail)
    }
}

fn same(a: &ReplicaBatch, b: &ReplicaBatch) -> bool {
    a.base == b.base && a.end == b.end && a.epoch == b.epoch && a.bytes == b.bytes && a.control == b.control
}

fn find(batches: &[ReplicaBatch], base: Offset) -> Option<&ReplicaBatch> {
    let i = batches.partition_point(|b| b.base < base);
    batches.get(i).filter(|b| b.base == base)
}

pub(super) struct Checker {
    /// The leader of each epoch, by node index.
    leaders: BTreeMap<LeaderEpoch, usize>,
    /// Per node: the newest epoch it sent a message of (pre-vote requests,
    /// which ask for an epoch without taking it, aside).
    sent_epoch: Vec<LeaderEpoch>,
    /// Per node, while it lives: its epoch at the last check, and its hw.
    epoch: Vec<LeaderEpoch>,
    hw: Vec<Offset>,
    /// Every batch some replica's high watermark has covered, by base.
    committed: BTreeMap<Offset, ReplicaBatch>,
    /// Per node while it leads: its config as of the output being checked
    /// (the replica itself may be further on by then).
    leader_config: Vec<Option<Config>>,
    /// Per node: the durable batches of disks it lost.
    ghosts: Vec<Vec<ReplicaBatch>>,
}

impl Checker {
    pub(super) fn new(nodes: usize) -> Checker {
        Checker {
            leaders: BTreeMap::new(),
            sent_epoch: vec![LeaderEpoch(0); nodes],
            epoch: vec![LeaderEpoch(0); nodes],
            hw: vec![Offset(0); nodes],
            committed: BTreeMap::new(),
            leader_config: vec![None; nodes],
            ghosts: vec![Vec::new(); nodes],
        }
    }

    pub(super) fn committed_end(&self) -> Offset {
        self.committed.values().next_back().map_or(Offset(0), |b| b.end)
    }

    pub(super) fn hw_of(&self, n: usize) -> Offset {
        self.hw[n]
    }

    pub(super) fn crashed(&mut self, n: usize) {
        self.hw[n] = Offset(0);
        self.leader_config[n] = None;
    }

    /// The node is a new replica: what the old one said binds it no more.
    /// What its lost disk held durably still counts for I4: a leader may
    /// commit on a report the old incarnation sent before the loss.
    pub(super) fn lost_disk(&mut self, n: usize, durable: &[ReplicaBatch]) {
        self.ghosts[n].extend_from_slice(durable);
        self.ghosts[n].sort_by_key(|b| b.base);
        self.hw[n] = Offset(0);
        self.epoch[n] = LeaderEpoch(0);
        self.sent_epoch[n] = LeaderEpoch(0);
    }

    /// I2 across a restart: the epoch at open is at least every epoch the
    /// replica spoke for before.
    pub(super) fn restarted(&mut self, n: usize, replica: &Replica, log: &[ReplicaBatch]) -> Result<(), Violation> {
        self.hw[n] = replica.high_watermark();
        self.epoch[n] = replica.epoch();
        // The epochs a replica reopens with (from its hard state) are its
        // log's, batch by batch.
        let mut truth = EpochCache::new();
        for batch in log {
            truth.assign(batch.epoch, batch.base).expect("a disk's epochs only grow");
        }
        if replica.epochs().entries() != truth.entries() {
            return Err(Violation::new(
                "I2",
                format!(
                    "node {} reopened with epochs {:?}, its log has {:?}",
                    n + 1,
                    replica.epochs().entries(),
                    truth.entries()
                ),
            ));
        }
        if replica.epoch() < self.sent_epoch[n] {
            return Err(Violation::new(
                "I2",
                format!(
                    "node {} reopened at epoch {} after sending in epoch {}",
                    n + 1,
                    replica.epoch(),
                    self.sent_epoch[n]
                ),
            ));
        }
        Ok(())
    }

    /// I2 while running: a live replica's epoch never goes back, nor below
    /// what it sent.
    pub(super) fn check_epochs(&mut self, nodes: &[Node]) -> Result<(), Violation> {
        for (n, node) in nodes.iter().enumerate() {
            let Some(replica) = &node.replica else { continue };
            let epoch = replica.epoch();
            if epoch < self.epoch[n] || epoch < self.sent_epoch[n] {
                return Err(Violation::new(
                    "I2",
                    format!(
                        "node {} at epoch {epoch}, after epoch {} and a message of epoch {}",
                        n + 1,
                        self.epoch[n],
                        self.sent_epoch[n]
                    ),
                ));
            }
            self.epoch[n] = epoch;
        }
        Ok(())
    }

    /// Called with each output before the simulator carries it out.
    pub(super) fn output(&mut self, n: usize, output: &Output, nodes: &[Node]) -> Result<(), Violation> {
        match output {
            Output::Send { message, .. } if !matches!(message, PeerMessage::PreVote(_)) => {
                self.sent_epoch[n] = self.sent_epoch[n].max(message.epoch());
            }
            Output::RoleChanged { role: Role::Leader, epoch, .. } => {
                if let Some(&other) = self.leaders.get(epoch)
                    && other != n
                {
                    return Err(Violation::new(
                        "I1",
                        format!("nodes {} and {} both lead epoch {epoch}", other + 1, n + 1),
                    ));
                }
                self.leaders.insert(*epoch, n);
                let replica = nodes[n].replica.as_ref().expect("a live node leads");
                self.leader_config[n] = Some(replica.config().clone());
            }
            Output::RoleChanged { .. } => self.leader_config[n] = None,
            Output::ConfigChanged { config, .. } if self.leader_config[n].is_some() => {
                self.leader_config[n] = Some(config.clone());
            }
            Output::HighWatermark { offset } => self.high_watermark(n, *offset, nodes)?,
            Output::Truncate { to } => self.removal(n, *to, nodes)?,
            Output::Reset { .. } => self.removal(n, Offset(0), nodes)?,
            _ => {}
        }
        Ok(())
    }

    /// I4 (a leader's new hw is durable on a majority of every voter set
    /// of its config; a follower's covers only what a leader committed),
    /// I5 (it never moves back) and the commit record that I6 and I7
    /// check against.
    fn high_watermark(&mut self, n: usize, hw: Offset, nodes: &[Node]) -> Result<(), Violation> {
        let old = self.hw[n];
        if hw < old {
            return Err(Violation::new("I5", format!("node {} moved its hw back from {old} to {hw}", n + 1)));
        }
        self.hw[n] = hw;
        let disk = &nodes[n].disk;
        let voter_sets: Vec<Vec<usize>> = match &self.leader_config[n] {
            Some(config) => {
                config.voter_sets().map(|set| set.iter().map(|k| (k.node.0 - 1) as usize).collect()).collect()
            }
            None => Vec::new(),
        };
        let first = disk.batches.partition_point(|b| b.end <= old);
        for batch in disk.batches[first..].iter().take_while(|b| b.end <= hw) {
            for set in &voter_sets {
                let holders = set
                    .iter()
                    .filter(|&&m| {
                        let d = &nodes[m].disk;
                        let ghost = self.ghosts[m].iter().any(|b| same(b, batch));
                        ghost || find(&d.batches[..d.durable], batch.base).is_some_and(|b| same(b, batch))
                    })
                    .count();
                if holders <= set.len() / 2 {
                    return Err(Violation::new(
                        "I4",
                        format!(
                            "node {}'s hw {hw} covers [{}, {}) of epoch {}, durable on {holders} of {} voters",
                            n + 1,
                            batch.base,
                            batch.end,
                            batch.epoch,
                            set.len()
                        ),
                    ));
                }
            }
            if voter_sets.is_empty() && !self.committed.contains_key(&batch.base) {
                return Err(Violation::new(
                    "I4",
                    format!(
                        "node {}'s hw {hw} covers [{}, {}), which no leader committed",
                        n + 1,
                        batch.base,
                        batch.end
                    ),
                ));
            }
            match self.committed.get(&batch.base) {
                Some(c) if !same(c, batch) => {
                    return Err(Violation::new(
                        "I7",
                        format!(
                            "two batches committed at {}: epoch {} and, on node {}, epoch {}",
                            batch.base,
                            c.epoch,
                            n + 1,
                            batch.epoch
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    self.committed.insert(batch.base, batch.clone());
                }
            }
        }
        // What is committed below its hw, its log holds.
        if disk.end() >= hw {
            for (base, _) in self.committed.range(old..hw) {
                if find(&disk.batches, *base).is_none() && *base >= disk.log_start {
                    return Err(Violation::new(
                        "I7",
                        format!("node {}'s hw {hw} covers committed offset {base}, which its log lacks", n + 1),
                    ));
                }
            }
        }
        Ok(())
    }

    /// I6: a truncation (or a reset) never removes a committed batch.
    fn removal(&self, n: usize, to: Offset, nodes: &[Node]) -> Result<(), Violation> {
        let disk = &nodes[n].disk;
        let first = disk.batches.partition_point(|b| b.base < to);
        for batch in &disk.batches[first..] {
            if self.committed.get(&batch.base).is_some_and(|c| same(c, batch)) {
                return Err(Violation::new(
                    "I6",
                    format!("node {} cuts its log to {to}, removing committed [{}, {})", n + 1, batch.base, batch.end),
                ));
            }
        }
        Ok(())
    }

    /// I7: an `acks=all` acknowledgement names a committed batch.
    pub(super) fn acked(&self, payload: u64, base: Offset) -> Result<(), Violation> {
        match self.committed.get(&base) {
            Some(b) if b.bytes.as_ref() == payload.to_le_bytes() => Ok(()),
            _ => Err(Violation::new(
                "I7",
                format!("proposal {payload} acknowledged at {base}, which is not committed there"),
            )),
        }
    }

    /// I3: logs that share a batch (offset and epoch) are identical up to
    /// its end.
    pub(super) fn check_log_matching(nodes: &[Node]) -> Result<(), Violation> {
        for a in 0..nodes.len() {
            for b in a + 1..nodes.len() {
                let (x, y) = (&nodes[a].disk.batches, &nodes[b].disk.batches);
                let Some(last) = x.iter().rev().find(|bx| find(y, bx.base).is_some_and(|by| by.epoch == bx.epoch))
                else {
                    continue;
                };
                let start = nodes[a].disk.log_start.max(nodes[b].disk.log_start);
                let range = |v: &[ReplicaBatch]| {
                    let from = v.partition_point(|t| t.base < start);
                    from..v.partition_point(|t| t.base <= last.base).max(from)
                };
                let (px, py) = (&x[range(x)], &y[range(y)]);
                if px.len() != py.len() || px.iter().zip(py).any(|(p, q)| !same(p, q)) {
                    return Err(Violation::new(
                        "I3",
                        format!(
                            "nodes {} and {} share [{}, {}) of epoch {} but differ before it",
                            a + 1,
                            b + 1,
                            last.base,
                            last.end,
                            last.epoch
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}
