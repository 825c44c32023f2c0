//! Newtypes for the log's numbers, so an offset can never be passed where a
//! position, an epoch or a timestamp is expected.

use std::fmt;

macro_rules! newtype {
    ($(#[$meta:meta])* $name:ident($inner:ty)) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub $inner);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

newtype!(
    /// The position of a record in its partition: dense, starting at the log
    /// start offset, assigned by the partition's owner at append time.
    Offset(u64)
);
newtype!(
    /// A topic, for as long as it lives: given when it is created, never
    /// reused. 0 is the cluster's metadata partition (docs/replication.md §6).
    TopicId(u64)
);
newtype!(
    /// A partition of a stream.
    PartitionId(u32)
);
newtype!(
    /// The epoch of the partition leader that appended a batch (replication).
    LeaderEpoch(u32)
);
newtype!(
    /// A broker of a cluster; 0 is "none" on the wire.
    NodeId(u32)
);
newtype!(
    /// Who a replica is beyond its node: chosen at random when its hard
    /// state is created, so a replica that lost its disk comes back as
    /// another one. 0 is "unbound" (only in a partition's initial config).
    Incarnation(u64)
);
newtype!(
    /// Milliseconds since the Unix epoch.
    Timestamp(i64)
);
newtype!(
    /// The id of an idempotent producer; `ProducerId::NONE` when there is none.
    ProducerId(i64)
);
newtype!(
    /// Bumped when a producer restarts, fencing its zombie predecessor.
    ProducerEpoch(i16)
);
newtype!(
    /// Per-producer, per-partition sequence number of a batch's first record.
    Sequence(i32)
);

/// One partition of one topic: two integers, so a lookup hashes no string.
/// On the replication wire it is `topic_id u64, partition u32` (`tp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TopicPartition {
    pub topic: TopicId,
    pub partition: PartitionId,
}

impl TopicPartition {
    #[must_use]
    pub const fn new(topic: u64, partition: u32) -> TopicPartition {
        TopicPartition { topic: TopicId(topic), partition: PartitionId(partition) }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

impl TopicId {
    /// The metadata partition's topic (the controller, ADR 25).
    pub const METADATA: TopicId = TopicId(0);
}

impl Offset {
    #[must_use]
    pub const fn next(self) -> Offset {
        Offset(self.0 + 1)
    }

    #[must_use]
    pub const fn plus(self, delta: u64) -> Offset {
        Offset(self.0 + delta)
    }
}

impl ProducerId {
    pub const NONE: ProducerId = ProducerId(-1);
}

impl ProducerEpoch {
    pub const NONE: ProducerEpoch = ProducerEpoch(-1);
}

impl Sequence {
    pub const NONE: Sequence = Sequence(-1);
}
