//! The coordinator's vocabulary as types: an epoch is never a plain number
//! and a time is never a bare `u64`, so a group epoch cannot be passed where
//! a member epoch belongs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Wall-clock milliseconds since the Unix epoch. Persisted (commit times,
/// when a group became empty) and used for session deadlines; the driver
/// passes it in, the coordinator never reads a clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

impl Millis {
    #[must_use]
    pub fn plus_ms(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }
}

/// The group's epoch: bumped whenever its membership or a member's
/// subscription changes, and with it the target assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GroupEpoch(pub u32);

/// A member's epoch: the group epoch whose target assignment the member has
/// reached. Requests carry it; one that matches neither the member's
/// current nor its previous epoch is fenced. 0 asks to join, -1 to leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MemberEpoch(pub i32);

impl MemberEpoch {
    pub const JOIN: MemberEpoch = MemberEpoch(0);
    pub const LEAVE: MemberEpoch = MemberEpoch(-1);

    pub fn of(epoch: GroupEpoch) -> MemberEpoch {
        MemberEpoch(i32::try_from(epoch.0).expect("group epochs stay below 2^31"))
    }
}

impl fmt::Display for MemberEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Partitions by topic: an assignment, or what a member owns.
pub type Assignment = BTreeMap<String, BTreeSet<u32>>;

/// How many partitions an assignment holds.
pub fn assignment_len(a: &Assignment) -> usize {
    a.values().map(BTreeSet::len).sum()
}

/// `a` without the partitions of `b`.
pub fn assignment_minus(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (topic, parts) in a {
        let rest: BTreeSet<u32> = match b.get(topic) {
            Some(other) => parts.difference(other).copied().collect(),
            None => parts.clone(),
        };
        if !rest.is_empty() {
            out.insert(topic.clone(), rest);
        }
    }
    out
}

/// The partitions in both `a` and `b`.
pub fn assignment_intersect(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (topic, parts) in a {
        if let Some(other) = b.get(topic) {
            let both: BTreeSet<u32> = parts.intersection(other).copied().collect();
            if !both.is_empty() {
                out.insert(topic.clone(), both);
            }
        }
    }
    out
}

/// Whether `a` holds `(topic, partition)`.
pub fn assignment_has(a: &Assignment, topic: &str, partition: u32) -> bool {
    a.get(topic).is_some_and(|p| p.contains(&partition))
}
