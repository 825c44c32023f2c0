//! The broker's operations, independent of any wire protocol: produce,
//! fetch, list offsets, topic administration. A front end (the native
//! protocol today, Kafka's beside it later) decodes a request into these
//! typed calls and encodes their typed results; the service routes each
//! partition's work to the shard that owns it. Errors are typed
//! ([`ServiceError`]) and each front end maps them to its own codes.

pub mod admin;
pub mod fetch;
pub mod offsets;
pub mod produce;

use std::net::SocketAddr;

use engine::LogError;

use crate::ids::ShardId;
use crate::shard::mesh::ShardGone;

/// Who is asking: what a handler knows of the connection a request came on
/// (later, the authenticated principal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnContext {
    pub client_id: String,
    pub peer: SocketAddr,
    pub shard: ShardId,
}

/// Why an operation (or one partition of it) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),
    #[error("topic {topic:?} has {count} partitions; {partition} is not one")]
    UnknownPartition { topic: String, partition: u32, count: u32 },
    #[error("{0}")]
    InvalidTopicName(String),
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    InvalidBatch(String),
    #[error("{0}")]
    BatchTooLarge(String),
    #[error("{0}")]
    InvalidTimestamp(String),
    /// A record the topic refuses (a keyless one on a compacted topic).
    #[error("{0}")]
    InvalidRecord(String),
    #[error("{0}")]
    OffsetOutOfRange(String),
    #[error("{0}")]
    DiskFull(String),
    /// The partition's storage failed; it stays unavailable until recovered.
    #[error("{0}")]
    Storage(String),
    /// The append was cut by a truncation before it was acknowledged.
    #[error("{0}")]
    Truncated(String),
    #[error("{0}")]
    PartitionUnavailable(String),
    #[error("{0}")]
    InvalidRequest(String),
    /// A replicated partition's request reached a broker that does not
    /// lead it; `leader` is the node it knows leads (if any).
    #[error("{message}")]
    NotLeader { message: String, leader: Option<u32>, epoch: u32 },
    /// No broker of the cluster has that id (or it is no replica of the
    /// partition named).
    #[error("{0}")]
    UnknownBroker(String),
    /// The partition is already moving (or as many moves as may run at
    /// once are under way).
    #[error("{0}")]
    ReassignmentInProgress(String),
    /// A broker joining the cluster (`--join`) gave a node id another
    /// member has (at another replication address).
    #[error("{0}")]
    BrokerIdInUse(String),
    /// An election is on, or the new leader has not committed its first batch.
    #[error("{0}")]
    LeaderNotAvailable(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("not acknowledged within {0} ms")]
    Timeout(u64),
    #[error("the broker is shutting down")]
    ShuttingDown,
    /// A consumer-group call refused by its coordinator (its code says why).
    #[error("{message}")]
    Group { code: protocol::ErrorCode, message: String },
}

impl From<ShardGone> for ServiceError {
    fn from(_: ShardGone) -> ServiceError {
        ServiceError::ShuttingDown
    }
}

impl From<&LogError> for ServiceError {
    fn from(e: &LogError) -> ServiceError {
        let message = e.to_string();
        match e {
            LogError::InvalidBatch(_)
            | LogError::NotDense
            | LogError::OffsetBehind { .. }
            | LogError::GapTooLarge { .. } => ServiceError::InvalidBatch(message),
            LogError::BatchTooLarge { .. } => ServiceError::BatchTooLarge(message),
            LogError::InvalidTimestamp { .. } => ServiceError::InvalidTimestamp(message),
            LogError::OffsetOutOfRange { .. } => ServiceError::OffsetOutOfRange(message),
            LogError::DiskFull { .. } | LogError::Poisoned { disk_full: true, .. } => ServiceError::DiskFull(message),
            LogError::Closed => ServiceError::PartitionUnavailable(message),
            LogError::Truncated { .. } => ServiceError::Truncated(message),
            LogError::NotBatchBoundary { .. }
            | LogError::Corruption { .. }
            | LogError::Io { .. }
            | LogError::Poisoned { .. }
            | LogError::Config(_) => ServiceError::Storage(message),
        }
    }
}

impl From<LogError> for ServiceError {
    fn from(e: LogError) -> ServiceError {
        ServiceError::from(&e)
    }
}
