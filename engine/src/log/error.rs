use std::io;
use std::path::PathBuf;

use thiserror::Error;

use crate::batch::BatchError;
use crate::types::Offset;

/// Why a log operation failed. [`LogError::code`] is stable: the wire
/// protocol and operators see these numbers.
#[derive(Debug, Error)]
pub enum LogError {
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] BatchError),
    #[error("batch of {batch_length} bytes exceeds batch_bytes_max {batch_bytes_max}")]
    BatchTooLarge { batch_length: u32, batch_bytes_max: u32 },
    #[error("offset {requested} is out of range [{log_start}, {high_watermark}]")]
    OffsetOutOfRange { requested: Offset, log_start: Offset, high_watermark: Offset },
    #[error("offset {offset} is not a batch boundary")]
    NotBatchBoundary { offset: Offset },
    #[error("corrupt log: {path} at byte {position}: {reason}")]
    Corruption { path: PathBuf, position: u64, reason: String },
    #[error("disk full writing {path}")]
    DiskFull { path: PathBuf },
    #[error("I/O error: {op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    #[error("log is poisoned by an earlier I/O error ({cause}); reopen it to recover")]
    Poisoned { cause: String, disk_full: bool },
    #[error("invalid log configuration: {0}")]
    Config(String),
    #[error("log is closed")]
    Closed,
    #[error("the batch appended at offset {base_offset} was removed by truncate_to before it was acknowledged")]
    Truncated { base_offset: Offset },
    #[error("a batch to be appended must have offset deltas 0..n (the log assigns offsets); this one has gaps")]
    NotDense,
    #[error(
        "a batch appended at its own offsets must start at or after the log end {log_end} (a version 1 batch exactly at it), not at {base_offset}"
    )]
    OffsetBehind { base_offset: Offset, log_end: Offset },
    #[error(
        "a batch at offset {base_offset} would end 2^32 - 1 or more offsets after its segment's base {segment_base}"
    )]
    GapTooLarge { base_offset: Offset, segment_base: Offset },
    #[error(
        "record timestamp {timestamp} is outside the accepted range [{min}, {max}] (the log's clock ± the topic's bounds)"
    )]
    InvalidTimestamp { timestamp: i64, min: i64, max: i64 },
}

impl LogError {
    /// Whether the error says the disk is full (also when it poisoned the log).
    #[must_use]
    pub fn is_disk_full(&self) -> bool {
        matches!(self, LogError::DiskFull { .. } | LogError::Poisoned { disk_full: true, .. })
    }

    /// A stable number for the error; never reuse or renumber one.
    #[must_use]
    pub fn code(&self) -> u16 {
        match self {
            LogError::InvalidBatch(_) => 100,
            LogError::BatchTooLarge { .. } => 101,
            LogError::OffsetOutOfRange { .. } => 102,
            LogError::NotBatchBoundary { .. } => 103,
            LogError::Corruption { .. } => 104,
            LogError::DiskFull { .. } => 105,
            LogError::Io { .. } => 106,
            LogError::Poisoned { .. } => 107,
            LogError::Config(_) => 108,
            LogError::Closed => 109,
            LogError::Truncated { .. } => 110,
            LogError::NotDense => 111,
            LogError::OffsetBehind { .. } => 112,
            LogError::InvalidTimestamp { .. } => 113,
            LogError::GapTooLarge { .. } => 114,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> LogError {
        let path = path.into();
        if is_enospc(&source) { LogError::DiskFull { path } } else { LogError::Io { op, path, source } }
    }

    /// A failed fdatasync: never [`LogError::DiskFull`], whatever the errno
    /// (ENOSPC included), because after a failed sync what reached the
    /// disk is unknown; the log is poisoned and the sync never retried.
    pub(crate) fn sync_failed(path: impl Into<PathBuf>, source: io::Error) -> LogError {
        LogError::Io { op: "fdatasync", path: path.into(), source }
    }

    pub(crate) fn corruption(path: impl Into<PathBuf>, position: u64, reason: impl Into<String>) -> LogError {
        LogError::Corruption { path: path.into(), position, reason: reason.into() }
    }
}

/// Whether an I/O error says the device has no space left.
pub fn is_enospc(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC) || e.kind() == io::ErrorKind::StorageFull
}
