//! Who replicates a partition: the voters (one set, or two during a joint
//! change) and the learners, each named by node *and* incarnation, so a
//! replica that lost its disk is not mistaken for the one that voted. The
//! types live in `protocol::replica` (control batches carry them); the
//! quorum rules live here.

pub use protocol::replica::{Config, ReplicaKey};
use protocol::types::{NodeId, Offset};

/// Whether a config's `named` key names the replica `key`: the same node
/// and incarnation, or the node under incarnation 0, "any incarnation"
/// (a partition created before its replicas' incarnations are known, as
/// every partition is until incarnation binding exists; such a config
/// does not tell a replica that lost its disk from the one that voted).
#[must_use]
pub fn names(named: &ReplicaKey, key: &ReplicaKey) -> bool {
    named.node == key.node && (named.incarnation == key.incarnation || named.incarnation.0 == 0)
}

/// The offset a majority of `set` holds, given each member's offset
/// (`None`: nothing counts for it).
#[must_use]
pub fn majority_offset(set: &[ReplicaKey], offset_of: impl Fn(&ReplicaKey) -> Option<Offset>) -> Offset {
    assert!(!set.is_empty(), "a voter set is never empty");
    let mut offsets: Vec<Offset> = set.iter().map(|k| offset_of(k).unwrap_or(Offset(0))).collect();
    offsets.sort_unstable_by(|a, b| b.cmp(a));
    offsets[set.len() / 2]
}

/// Whether `granted` holds a majority of `set`.
#[must_use]
pub fn is_majority(set: &[ReplicaKey], granted: impl Fn(&ReplicaKey) -> bool) -> bool {
    set.iter().filter(|k| granted(k)).count() > set.len() / 2
}

impl ConfigExt for Config {
    fn voter_sets(&self) -> impl Iterator<Item = &[ReplicaKey]> {
        std::iter::once(self.voters.as_slice()).chain(self.joint.as_deref())
    }

    fn is_voter(&self, key: &ReplicaKey) -> bool {
        self.voter_sets().flatten().any(|named| names(named, key))
    }

    fn member(&self, node: NodeId) -> Option<ReplicaKey> {
        self.voter_sets().flatten().chain(&self.learners).find(|k| k.node == node).copied()
    }

    fn member_as(&self, node: NodeId, incarnation: protocol::types::Incarnation) -> Option<ReplicaKey> {
        let fetching = ReplicaKey { node, incarnation };
        self.voter_sets()
            .flatten()
            .chain(&self.learners)
            .find(|k| names(k, &fetching))
            .copied()
            .or_else(|| self.member(node))
    }

    fn quorum_offset(&self, offset_of: impl Fn(&ReplicaKey) -> Option<Offset>) -> Offset {
        self.voter_sets().map(|set| majority_offset(set, &offset_of)).min().expect("a config has voters")
    }

    fn is_quorum(&self, granted: impl Fn(&ReplicaKey) -> bool) -> bool {
        self.voter_sets().all(|set| is_majority(set, &granted))
    }

    fn peers(&self, me: NodeId) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self.voter_sets().flatten().chain(&self.learners).map(|k| k.node).collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes.retain(|&n| n != me);
        nodes
    }
}

/// The quorum rules over a [`Config`].
pub trait ConfigExt {
    /// The voter set, and the joint one while a change is under way.
    fn voter_sets(&self) -> impl Iterator<Item = &[ReplicaKey]>;
    /// Whether `key` (node and incarnation) votes in some set.
    fn is_voter(&self, key: &ReplicaKey) -> bool;
    /// The key the config names for `node`, voter or learner.
    fn member(&self, node: NodeId) -> Option<ReplicaKey>;
    /// The key naming `node` under `incarnation` if the config has one
    /// (a voter whose disk was lost may be named twice while it is bound
    /// again: its old key and, as a learner, its new one), else
    /// [`ConfigExt::member`].
    fn member_as(&self, node: NodeId, incarnation: protocol::types::Incarnation) -> Option<ReplicaKey>;
    /// The largest offset every voter set holds by majority.
    fn quorum_offset(&self, offset_of: impl Fn(&ReplicaKey) -> Option<Offset>) -> Offset;
    /// Whether `granted` is a majority of every voter set.
    fn is_quorum(&self, granted: impl Fn(&ReplicaKey) -> bool) -> bool;
    /// Every other node the config names, once each, in order.
    fn peers(&self, me: NodeId) -> Vec<NodeId>;
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use protocol::types::Incarnation;

    use super::*;

    fn key(n: u32) -> ReplicaKey {
        ReplicaKey { node: NodeId(n), incarnation: Incarnation(u64::from(n) * 10) }
    }

    #[test]
    fn the_majority_offset_is_what_most_voters_hold() {
        let set: Vec<_> = (1..=3).map(key).collect();
        let at = |k: &ReplicaKey| Some(Offset([5, 9, 7][k.node.0 as usize - 1]));
        assert_eq!(majority_offset(&set, at), Offset(7));
        // A voter that does not count holds nothing.
        assert_eq!(majority_offset(&set, |k| (k.node != NodeId(3)).then_some(Offset(9))), Offset(9));
        assert_eq!(majority_offset(&set, |k| (k.node == NodeId(3)).then_some(Offset(9))), Offset(0));
    }

    #[test]
    fn a_joint_config_needs_both_majorities() {
        let config =
            Config { voters: (1..=3).map(key).collect(), joint: Some((3..=5).map(key).collect()), learners: vec![] };
        // 1 and 2 are a majority of the old set only.
        assert!(!config.is_quorum(|k| k.node.0 <= 2));
        assert!(config.is_quorum(|k| [1, 3, 4].contains(&k.node.0)));
        let at = |k: &ReplicaKey| Some(Offset(u64::from(10 - k.node.0)));
        // Old set: 9, 8, 7 → 8; new set: 7, 6, 5 → 6.
        assert_eq!(config.quorum_offset(at), Offset(6));
        assert_eq!(config.peers(NodeId(3)), vec![NodeId(1), NodeId(2), NodeId(4), NodeId(5)]);
    }

    proptest! {
        /// Any two majorities of a set share a member: the reason one vote
        /// per epoch gives one leader per epoch.
        #[test]
        fn two_majorities_of_a_set_intersect(n in 1u32..8, a in any::<u8>(), b in any::<u8>()) {
            let set: Vec<_> = (1..=n).map(key).collect();
            let pick = |mask: u8| move |k: &ReplicaKey| mask & (1 << (k.node.0 - 1)) != 0;
            if is_majority(&set, pick(a)) && is_majority(&set, pick(b)) {
                prop_assert!(set.iter().any(|k| pick(a)(k) && pick(b)(k)));
            }
        }
    }
}
