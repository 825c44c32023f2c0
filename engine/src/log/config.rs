//! What a partition log may use and promise. Every limit is here, with its
//! unit last, so memory is bounded by configuration and never by log size.

use crate::rt::BLOCK_BYTES;

/// When an appended batch counts as stored.
///
/// | policy | acknowledged after | survives process crash | survives power loss |
/// |---|---|---|---|
/// | `Always` | write + fdatasync | yes | yes |
/// | `IntervalMs(n)` | write (O_DIRECT, so on the device) | yes | all but the last `n` ms |
/// | `Never` | write (O_DIRECT, so on the device) | yes | only what a roll or close synced |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Group commit: appends that arrive while a sync is in flight join the next one.
    Always,
    /// Written at once, synced at least every `n` milliseconds.
    IntervalMs(u64),
    /// Written at once; synced only when a segment rolls and at close.
    Never,
}

/// Which time a record carries (Kafka's `message.timestamp.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TimestampType {
    /// The producer's timestamps, checked against the bounds below.
    #[default]
    CreateTime,
    /// The log stamps each batch with its append time, and readers give
    /// every record that time.
    LogAppendTime,
}

/// The configuration of one partition log. Fields marked *dynamic* can
/// change while the log is open ([`super::PartitionLog::reconfigure`]); the
/// others size buffers at open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    pub flush: FlushPolicy,
    /// A segment rolls before it would grow past this. Dynamic.
    pub segment_bytes_max: u64,
    /// A non-empty segment rolls once it is this old; `None`: never by age. Dynamic.
    pub segment_ms_max: Option<i64>,
    /// The active segment's file grows ahead of its data by at most this
    /// much (and by less while it is small: each step is as large as the
    /// segment so far), so O_DIRECT writes never extend the file, and disk
    /// use follows the data.
    pub preallocate_bytes_max: u64,
    /// Bytes of batches between two sparse index entries.
    pub index_interval_bytes: u64,
    /// The largest batch the log accepts. Dynamic (up to the size the write
    /// buffer was made for).
    pub batch_bytes_max: u32,
    /// The largest single write: appends are copied into aligned chunks of
    /// this size, and a write takes one chunk.
    pub write_bytes_max: usize,
    /// All chunks together: appends wait for a write when this is full.
    /// One more chunk may be in flight.
    pub write_buffer_bytes_max: usize,
    /// Recent batches kept in memory so tail reads never touch the disk.
    pub cache_bytes_max: usize,
    /// Cold reads fetch at least this much, and keep it for the next read.
    pub read_ahead_bytes: usize,
    /// Cold chunks kept for sequential readers.
    pub read_ahead_chunks_max: usize,
    /// Closed segment files kept open.
    pub open_segments_max: usize,
    /// Delete closed segments whose newest batch was appended longer ago
    /// than this (by the log's clock, not the producers'). Dynamic.
    pub retention_ms: Option<i64>,
    /// Delete the oldest closed segments while the log is larger than this. Dynamic.
    pub retention_bytes: Option<u64>,
    /// Dynamic.
    pub timestamp_type: TimestampType,
    /// Refuse a batch with a record older than this, by the log's clock
    /// (`CreateTime` only). Dynamic.
    pub timestamp_before_max_ms: Option<i64>,
    /// Refuse a batch with a record newer than this ahead of the log's clock
    /// (`CreateTime` only). Dynamic.
    pub timestamp_after_max_ms: Option<i64>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            flush: FlushPolicy::Always,
            segment_bytes_max: 1 << 30,
            segment_ms_max: Some(7 * 24 * 3600 * 1000),
            preallocate_bytes_max: 32 << 20,
            index_interval_bytes: 4096,
            batch_bytes_max: 1 << 20,
            write_bytes_max: 1 << 20,
            write_buffer_bytes_max: 4 << 20,
            cache_bytes_max: 32 << 20,
            read_ahead_bytes: 1 << 20,
            read_ahead_chunks_max: 4,
            open_segments_max: 16,
            retention_ms: None,
            retention_bytes: None,
            timestamp_type: TimestampType::CreateTime,
            // Kafka's defaults: any age, at most an hour ahead.
            timestamp_before_max_ms: None,
            timestamp_after_max_ms: Some(3_600_000),
        }
    }
}

impl LogConfig {
    /// Under `Always`, how far writes may run ahead of the last fdatasync;
    /// recovery row R7 relies on this bound.
    pub(crate) fn unsynced_bytes_max(&self) -> u64 {
        4 * self.write_bytes_max as u64
    }

    /// Whether `other` differs from `self` only in dynamic settings.
    pub(crate) fn same_static_settings(&self, other: &LogConfig) -> bool {
        let dynamic = |c: &LogConfig| LogConfig {
            segment_bytes_max: 0,
            segment_ms_max: None,
            batch_bytes_max: 0,
            retention_ms: None,
            retention_bytes: None,
            timestamp_type: TimestampType::CreateTime,
            timestamp_before_max_ms: None,
            timestamp_after_max_ms: None,
            ..c.clone()
        };
        dynamic(self) == dynamic(other)
    }

    /// Checks the limits against each other.
    pub fn validate(&self) -> Result<(), String> {
        let block = BLOCK_BYTES as u64;
        if self.segment_bytes_max > u64::from(u32::MAX) {
            return Err("segment_bytes_max must fit in 32 bits (index positions are u32)".into());
        }
        if self.segment_bytes_max < u64::from(self.batch_bytes_max) + block {
            return Err("segment_bytes_max must exceed batch_bytes_max by at least a block".into());
        }
        if !self.write_bytes_max.is_multiple_of(BLOCK_BYTES) || self.write_bytes_max < 2 * BLOCK_BYTES {
            return Err("write_bytes_max must be whole blocks, at least two".into());
        }
        if !self.write_buffer_bytes_max.is_multiple_of(BLOCK_BYTES)
            || self.write_buffer_bytes_max < self.batch_bytes_max as usize + self.write_bytes_max
        {
            return Err("write_buffer_bytes_max must be whole blocks and hold a largest batch plus a chunk".into());
        }
        if self.preallocate_bytes_max < BLOCK_BYTES as u64 {
            return Err("preallocate_bytes_max must be at least a block".into());
        }
        if [self.retention_ms, self.timestamp_before_max_ms, self.timestamp_after_max_ms, self.segment_ms_max]
            .iter()
            .any(|v| v.is_some_and(|v| v < 0))
        {
            return Err("durations must not be negative".into());
        }
        if self.index_interval_bytes == 0 || self.read_ahead_bytes == 0 {
            return Err("index_interval_bytes and read_ahead_bytes must be positive".into());
        }
        if self.read_ahead_chunks_max == 0 || self.open_segments_max == 0 {
            return Err("cache counts must be positive".into());
        }
        if let FlushPolicy::IntervalMs(0) = self.flush {
            return Err("flush interval must be positive; use FlushPolicy::Always".into());
        }
        Ok(())
    }
}
