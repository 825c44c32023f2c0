use thiserror::Error;

/// Why a batch was rejected. Each variant has a stable numeric code
/// ([`BatchError::code`]) that the wire protocol reuses.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BatchError {
    #[error("batch truncated: {needed} bytes needed, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("bad batch magic {found:#010x}")]
    BadMagic { found: u32 },
    #[error("unsupported batch format version {found}")]
    UnsupportedVersion { found: u16 },
    #[error("reserved header bytes are not zero")]
    ReservedNotZero,
    #[error("bad batch length {batch_length}")]
    BadLength { batch_length: u32 },
    #[error("batch of {batch_length} bytes is larger than the limit of {batch_bytes_max}")]
    TooLarge { batch_length: u32, batch_bytes_max: u32 },
    #[error("unsupported batch attributes {attributes:#06x}")]
    UnsupportedAttributes { attributes: u16 },
    #[error("bad record count {record_count} for last offset delta {last_offset_delta}")]
    BadRecordCount { record_count: u32, last_offset_delta: u32 },
    #[error("max timestamp is before first timestamp")]
    BadTimestamps,
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("records archive is invalid: {reason}")]
    InvalidRecords { reason: String },
    #[error("records disagree with the header: {reason}")]
    RecordsMismatch { reason: &'static str },
    #[error("the batch's offsets run past the largest offset")]
    BadOffsets,
    #[error("header CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    HeaderCrcMismatch { stored: u32, computed: u32 },
    #[error("payload format {format} is not supported by this broker")]
    UnsupportedPayload { format: u8 },
    #[error("unsupported broker flags {flags:#04x}")]
    UnsupportedFlags { flags: u8 },
    #[error("batch format version {found} is newer than this build reads (its header CRC matches)")]
    NewerVersion { found: u16 },
}

impl BatchError {
    /// Whether the batch is intact but in a format this build does not know
    /// (a newer version, payload format or broker flag, each under a header
    /// CRC that matched): data written by a newer broker, never a torn
    /// write, so recovery must not cut it. An unknown version without a
    /// matching CRC is damage like any other.
    #[must_use]
    pub fn is_unknown_format(&self) -> bool {
        matches!(
            self,
            BatchError::NewerVersion { .. }
                | BatchError::UnsupportedPayload { .. }
                | BatchError::UnsupportedFlags { .. }
        )
    }

    /// A stable number for the error; never reuse or renumber one.
    #[must_use]
    pub fn code(&self) -> u16 {
        match self {
            BatchError::Truncated { .. } => 1,
            BatchError::BadMagic { .. } => 2,
            BatchError::UnsupportedVersion { .. } => 3,
            BatchError::ReservedNotZero => 4,
            BatchError::BadLength { .. } => 5,
            BatchError::TooLarge { .. } => 6,
            BatchError::UnsupportedAttributes { .. } => 7,
            BatchError::BadRecordCount { .. } => 8,
            BatchError::BadTimestamps => 9,
            BatchError::CrcMismatch { .. } => 10,
            BatchError::InvalidRecords { .. } => 11,
            BatchError::RecordsMismatch { .. } => 12,
            BatchError::BadOffsets => 13,
            BatchError::HeaderCrcMismatch { .. } => 14,
            BatchError::UnsupportedPayload { .. } => 15,
            BatchError::UnsupportedFlags { .. } => 16,
            BatchError::NewerVersion { .. } => 17,
        }
    }
}
