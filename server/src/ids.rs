//! Server-level identities. A topic has a [`TopicId`] given by the
//! controller when it is created and never reused, so a topic deleted and
//! created again under the same name is another topic (another directory,
//! another id). A [`TopicPartition`] is two integers: a lookup by it hashes
//! no string, and it crosses cores by copy.

use std::fmt;

pub use protocol::types::PartitionId;

/// A topic, for as long as it lives; never reused.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct TopicId(pub u64);

impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// One partition of one topic.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct TopicPartition {
    pub topic: TopicId,
    pub partition: PartitionId,
}

/// A core of the broker: shard `i` runs on the `i`-th executor.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ShardId(pub usize);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The metadata controller: shard 0 (ADR 3 of the broker).
pub const CONTROLLER: ShardId = ShardId(0);
