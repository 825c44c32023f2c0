//! Who replicates a partition: the voters (one set, or two during a joint
//! change) and the learners, each named by node *and* incarnation, so a
//! replica that lost its disk is not mistaken for the one that voted.

use protocol::types::{Incarnation, NodeId};

/// A replica: its node and the incarnation of its state there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaKey {
    pub node: NodeId,
    pub incarnation: Incarnation,
}

/// A partition's replicas. A quorum is a majority of `voters` and, while
/// a change is under way (`joint`), a majority of the new set too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub voters: Vec<ReplicaKey>,
    pub joint: Option<Vec<ReplicaKey>>,
    pub learners: Vec<ReplicaKey>,
}
