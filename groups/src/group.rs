//! One consumer group: its members, the target assignment, and how each
//! member walks to its share of the target (KIP-848's reconciliation).
//!
//! The rule that keeps a partition with one reader at a time: a partition
//! is given to a member only when no other member holds it, neither as
//! assigned nor as being revoked. A member that must give partitions up is
//! told so (its assignment shrinks) and keeps its epoch until a heartbeat
//! says it dropped them; only then does it get its new epoch, and others
//! the partitions it freed. A member that leaves, or is removed (session or
//! rebalance timeout), frees what it held at once: it is fenced, so its
//! commits fail, and a zombie that keeps reading cannot commit.
//!
//! Eager assignors (range, round-robin) revoke everything a member holds
//! whenever the target moves (a stop-the-world rebalance, as Kafka's
//! classic eager protocol); cooperative-sticky revokes only what moves.

use std::collections::{BTreeMap, BTreeSet};

use crate::assignor::Assignor;
use crate::records::{Committed, MemberRecord};
use crate::types::{
    Assignment, GroupEpoch, MemberEpoch, Millis, assignment_has, assignment_intersect, assignment_len, assignment_minus,
};

/// Where a member stands against the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// It holds exactly its target.
    Stable,
    /// It must drop partitions before it moves on.
    Revoking,
    /// It waits for partitions others still hold.
    Waiting,
}

impl MemberState {
    pub fn name(self) -> &'static str {
        match self {
            MemberState::Stable => "stable",
            MemberState::Revoking => "revoking",
            MemberState::Waiting => "waiting",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub record: MemberRecord,
    /// When it is removed unless it heartbeats (not persisted: a new
    /// coordinator gives every member a fresh session).
    pub session_deadline: Millis,
    /// When it is removed unless it has dropped what it was asked to.
    pub revoke_deadline: Option<Millis>,
}

impl Member {
    pub fn state(&self, target: Option<&Assignment>) -> MemberState {
        if !self.record.revoking.is_empty() {
            MemberState::Revoking
        } else if target.is_some_and(|t| *t != self.record.assigned) {
            MemberState::Waiting
        } else {
            MemberState::Stable
        }
    }
}

/// The group's whole state in memory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Group {
    pub epoch: GroupEpoch,
    pub assignor: Assignor,
    pub empty_since: Option<Millis>,
    pub members: BTreeMap<String, Member>,
    pub target_epoch: GroupEpoch,
    /// Partition counts the target was computed from.
    pub target_topics: BTreeMap<String, u32>,
    pub target: BTreeMap<String, Assignment>,
    pub offsets: BTreeMap<(String, u32), Committed>,
}

impl Group {
    /// Every topic some member subscribes to.
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.members.values().flat_map(|m| m.record.subscription.iter().cloned()).collect()
    }

    /// Whether `(topic, partition)` is held by a member other than `except`.
    fn held_by_other(&self, except: &str, topic: &str, partition: u32) -> bool {
        self.members.iter().any(|(id, m)| {
            id != except
                && (assignment_has(&m.record.assigned, topic, partition)
                    || assignment_has(&m.record.revoking, topic, partition))
        })
    }

    /// Recomputes the target when the epoch moved past it or partition
    /// counts changed. Returns whether it did.
    pub fn refresh_target(&mut self, topics: &BTreeMap<String, u32>) -> bool {
        let wanted: BTreeMap<String, u32> =
            self.subscribed_topics().into_iter().filter_map(|t| topics.get(&t).map(|&n| (t, n))).collect();
        if wanted != self.target_topics && self.target_epoch == self.epoch {
            // A topic appeared, vanished or grew: a new epoch.
            self.epoch.0 += 1;
        }
        if self.target_epoch == self.epoch {
            return false;
        }
        let subscriptions: BTreeMap<String, BTreeSet<String>> =
            self.members.iter().map(|(id, m)| (id.clone(), m.record.subscription.clone())).collect();
        let owned: BTreeMap<String, Assignment> =
            self.members.iter().map(|(id, m)| (id.clone(), m.record.assigned.clone())).collect();
        self.target = self.assignor.assign(&subscriptions, &owned, &wanted);
        self.target_topics = wanted;
        self.target_epoch = self.epoch;
        true
    }

    /// Moves `member` towards its target, given what it says it owns
    /// (`None`: it did not say). Returns whether its record changed.
    pub fn reconcile(&mut self, member: &str, owned: Option<&Assignment>, now: Millis) -> bool {
        let target = self.target.get(member).cloned().unwrap_or_default();
        let eager = self.assignor.is_eager();
        let target_epoch = MemberEpoch::of(self.target_epoch);
        let before = self.members[member].record.clone();
        {
            let m = self.members.get_mut(member).expect("reconcile a member");
            // What it says it no longer owns is dropped; once all is, its
            // revocation deadline goes (a later one starts afresh).
            if let Some(owned) = owned {
                m.record.revoking = assignment_intersect(&m.record.revoking, owned);
                if m.record.revoking.is_empty() {
                    m.revoke_deadline = None;
                }
            }
            let r = &mut m.record;
            // What it must give up.
            let give_up = if eager && r.epoch < target_epoch {
                r.assigned.clone()
            } else {
                assignment_minus(&r.assigned, &target)
            };
            if !give_up.is_empty() {
                r.assigned = assignment_minus(&r.assigned, &give_up);
                for (topic, parts) in give_up {
                    r.revoking.entry(topic).or_default().extend(parts);
                }
            }
            if r.revoking.is_empty() {
                m.revoke_deadline = None;
                if r.epoch != target_epoch {
                    r.previous_epoch = r.epoch;
                    r.epoch = target_epoch;
                }
            } else if m.revoke_deadline.is_none() {
                m.revoke_deadline = Some(now.plus_ms(u64::from(r.rebalance_timeout_ms)));
            }
        }
        // New partitions only once nothing is left to revoke, and only
        // those no other member holds.
        if self.members[member].record.revoking.is_empty() {
            let add = assignment_minus(&target, &self.members[member].record.assigned);
            let mut free = Assignment::new();
            for (topic, parts) in &add {
                for &p in parts {
                    if !self.held_by_other(member, topic, p) {
                        free.entry(topic.clone()).or_default().insert(p);
                    }
                }
            }
            let r = &mut self.members.get_mut(member).expect("member").record;
            for (topic, parts) in free {
                r.assigned.entry(topic).or_default().extend(parts);
            }
        }
        self.debug_check();
        self.members[member].record != before
    }

    /// The invariant: no partition is held by two members.
    pub fn check_exclusive(&self) -> Result<(), String> {
        let mut seen: BTreeMap<(&str, u32), &str> = BTreeMap::new();
        for (id, m) in &self.members {
            for a in [&m.record.assigned, &m.record.revoking] {
                for (topic, parts) in a {
                    for &p in parts {
                        if let Some(other) = seen.insert((topic, p), id)
                            && other != id
                        {
                            return Err(format!("{topic}-{p} held by {other} and {id}"));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn debug_check(&self) {
        debug_assert!(self.check_exclusive().is_ok(), "{:?}", self.check_exclusive());
    }

    /// How many partitions members hold in all (assigned and revoking).
    pub fn held(&self) -> usize {
        self.members.values().map(|m| assignment_len(&m.record.assigned) + assignment_len(&m.record.revoking)).sum()
    }
}
