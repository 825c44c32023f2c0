//! Why a frame body or a control batch could not be decoded.

use thiserror::Error;

use crate::ErrorCode;
use crate::batch::BatchError;
use crate::codec::DecodeError;

/// A frame body that could not be decoded. Framing is intact: the next
/// frame can be read, and a request is answered `MALFORMED_REQUEST`.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BodyError {
    #[error("{0}")]
    Decode(#[from] DecodeError),
    #[error("{count} entries in one frame, above the limit of {max}")]
    TooManyEntries { count: usize, max: usize },
    /// A fetch answer's `batches` holds something other than whole,
    /// intact version 2 batches.
    #[error("batches of entry {entry}: {error}")]
    Batches { entry: usize, error: BatchesError },
    /// A `snapshot` that is not a `Voters` body.
    #[error("snapshot of entry {entry}: {error}")]
    Snapshot { entry: usize, error: ControlError },
}

impl BodyError {
    /// The code a request with this body is answered with.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        ErrorCode::MALFORMED_REQUEST
    }
}

/// Stored batches (a fetch answer's `batches`, or what a read returned)
/// that are not whole, intact version 2 batches; `index` counts from 0.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BatchesError {
    #[error("batch {index}: {error}")]
    Batch { index: usize, error: BatchError },
    #[error("batch {index}: version {version}, but replicated logs hold version 2 only")]
    Version { index: usize, version: u16 },
    #[error("batch {index}: {error}")]
    Control { index: usize, error: ControlError },
}

/// A control batch or body that could not be read.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ControlError {
    #[error("the batch is not a control batch (broker_flags bit 1 clear)")]
    NotControl,
    #[error("a control batch holds one record, not {records}")]
    RecordCount { records: usize },
    #[error("{0}")]
    Records(BatchError),
    #[error("the control record's key is not a 2-byte type")]
    BadKey,
    #[error("the control record has no value")]
    NoValue,
    #[error("unknown control type {found}")]
    UnknownType { found: u16 },
    #[error("control body version {found} is not supported (this build reads 0)")]
    UnsupportedVersion { found: u16 },
    #[error("control body: {0}")]
    Body(#[from] DecodeError),
}
