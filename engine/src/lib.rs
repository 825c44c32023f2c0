//! Cairn's storage engine: record batches and the partition log that one
//! core owns. See `docs/ARCHITECTURE.md` for the design and `docs/format.md`
//! for the bytes on disk.

pub mod log;
pub mod rt;

/// The batch format and the newtypes live in `protocol`, which clients share.
pub use protocol::{batch, types};

pub use log::{
    AppendInfo, CleanerStatus, CompactionPolicy, CompactionReport, FlushPolicy, IoStats, LATENCY_BUCKETS,
    LatencyHistogram, LogConfig, LogError, MemoryPool, Pace, PartitionLog, PoolConfig, PoolUsage, ReadResult,
    TimestampType, is_enospc,
};
