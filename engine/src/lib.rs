//! Cairn's storage engine: record batches and the partition log that one
//! core owns. See `docs/ARCHITECTURE.md` for the design and `docs/format.md`
//! for the bytes on disk.

pub mod batch;
pub mod types;
pub mod rt;
pub mod log;

pub use log::{AppendInfo, FlushPolicy, LogConfig, LogError, PartitionLog, ReadResult};
