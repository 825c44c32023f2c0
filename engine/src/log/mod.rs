//! The partition log: an append-only, segmented, durable sequence of record
//! batches, owned by one core.
//!
//! All state sits behind one `RefCell` that is never borrowed across an
//! `.await`. Appends land in the in-memory write buffer at once; up to two
//! writes and one fdatasync are in flight, and appends that arrive meanwhile
//! ride along with the next ones (group commit). Any I/O error while
//! writing poisons the log: fsync is never retried, because after a failed
//! fsync the kernel may already have dropped the dirty data it could not
//! write. Reopening runs recovery, which trusts only what is on disk. A full
//! disk met while *growing* the log (pre-allocation, a new segment) refuses
//! the append instead, and the next append tries again.
//!
//! The code is split by concern: `append` (taking turns, placing batches),
//! `io` (writes, syncs, exclusive access), `read` (cache and cold reads,
//! timestamps) and `structure` (roll, truncate, retention, close).

mod append;
mod compact;
mod config;
mod error;
mod index;
mod io;
mod latency;
mod lru;
mod marker;
mod notify;
mod pool;
mod read;
mod recovery;
mod scan;
mod segment;
mod structure;

#[cfg(test)]
mod tests;

use std::cell::{Ref, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;

pub use compact::{CleanerStatus, CompactionPolicy, CompactionReport, Pace};
pub use config::{FlushPolicy, LogConfig, TimestampType};
pub use error::{LogError, is_enospc};
pub use index::{OffsetIndex, SegmentIndex, SegmentSummary, TimeIndex};
pub use latency::{LATENCY_BUCKETS, LatencyHistogram};
pub use pool::{MemoryPool, PoolConfig, PoolUsage};
pub use recovery::RecoveryReport;

use crate::rt::Storage;
use crate::types::{LeaderEpoch, Offset};
use lru::Lru;
use notify::Notify;
use pool::LogId;
use segment::ActiveSegment;

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: Offset,
    pub last_offset: Offset,
}

/// Counters of the disk work a log did since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStats {
    pub writes: u64,
    pub bytes_written: u64,
    pub fdatasyncs: u64,
    pub cold_reads: u64,
    pub bytes_read: u64,
    /// Pre-allocation steps of active segments.
    pub allocations: u64,
}

/// Batches read from the log, each a whole batch as it was appended.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    pub batches: Vec<bytes::Bytes>,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
}

// Each flag says one kind of I/O or pass is under way; they are independent
// (a sync and an allocation can both be in flight), so one enum would not do.
#[allow(clippy::struct_excessive_bools)]
struct State<F: crate::rt::DmaFile> {
    closed: BTreeMap<Offset, SegmentSummary>,
    active: ActiveSegment<F>,
    log_start: Offset,
    /// The log end offset: the next offset to assign.
    next_offset: Offset,
    written_offset: Offset,
    durable_offset: Offset,
    high_watermark_limit: Option<Offset>,
    leader_epoch: LeaderEpoch,
    /// A roll, truncation or close holds the log: no new I/O starts.
    exclusive: bool,
    /// An append is growing the active segment's file.
    allocating: bool,
    /// Retention is deleting sealed segments, or compaction is swapping one
    /// in (neither holds the log).
    retention_running: bool,
    /// A compaction pass is running (one at a time).
    compacting: bool,
    /// Compaction has cleaned the log below this offset.
    cleaned_through: Offset,
    /// When the last compaction pass ended, by the log's clock.
    last_clean_ms: Option<i64>,
    /// The clean part's oldest tombstone a pass may drop (its append time).
    oldest_tombstone_ms: Option<i64>,
    /// Bumped when a compaction swap starts and when it ends: a read that
    /// saw it change reads again (it may have mixed the old segment and the new).
    swaps: u64,
    /// Bumped by every `truncate_to`, with the offsets it cut at: reads and
    /// acknowledgements that straddle one are retried or refused.
    truncations: u64,
    recent_truncations: VecDeque<(u64, Offset)>,
    /// Where a truncation under way will cut: nothing at or past it is
    /// acknowledged meanwhile.
    pending_cut: Option<Offset>,
    sync_in_flight: bool,
    poisoned: Option<(String, bool)>,
    is_closed: bool,
    /// Appends enter the log in the order they were called: each takes a
    /// ticket when called and waits for its turn, so neither the scheduler
    /// nor a buffer-full wait or a roll can let a later append overtake an
    /// earlier one.
    tickets_next: u64,
    tickets_serving: u64,
    /// Tickets whose appends were dropped before their turn.
    tickets_abandoned: BTreeSet<u64>,
    last_sync_ms: i64,
    files: Lru<Offset, Rc<F>>,
    stats: IoStats,
    fdatasync_latency: LatencyHistogram,
}

/// One partition's log. Not `Send`: it lives and dies on its core.
pub struct PartitionLog<S: Storage> {
    storage: S,
    dir: PathBuf,
    config: RefCell<LogConfig>,
    state: RefCell<State<S::File>>,
    io_done: Notify,
    /// Woken when a batch is placed in memory (the log end moves).
    placed: Notify,
    recovery: RecoveryReport,
    pool: MemoryPool,
    id: LogId,
}

impl<F: crate::rt::DmaFile> State<F> {
    /// Whether an fdatasync would make anything durable: a landed batch, or
    /// landed bytes of a batch still being written (which must be synced
    /// before writes may run further ahead, see `unsynced_bytes_max`).
    fn unsynced(&self) -> bool {
        self.durable_offset < self.written_offset || self.active.durable_bytes < self.active.written_bytes
    }

    /// Poisons the log, unless it already is: it writes nothing more, so
    /// its unissued buffers go back to the core. Whether it was poisoned now.
    fn poison(&mut self, cause: String, disk_full: bool) -> bool {
        if self.poisoned.is_some() {
            return false;
        }
        self.poisoned = Some((cause, disk_full));
        self.active.drop_unissued();
        true
    }

    fn usable(&self) -> Result<(), LogError> {
        if self.is_closed {
            return Err(LogError::Closed);
        }
        if let Some((cause, disk_full)) = &self.poisoned {
            return Err(LogError::Poisoned { cause: cause.clone(), disk_full: *disk_full });
        }
        Ok(())
    }
}

/// Sealed indexes a log opened with a pool of its own keeps in memory.
const INDEX_CACHE_BYTES_MAX: usize = 16 << 20;

/// Truncations remembered to refuse acknowledging a truncated append.
const TRUNCATIONS_REMEMBERED: usize = 16;

impl<S: Storage> PartitionLog<S> {
    /// Opens (recovering if needed) or creates the log in `dir`, with a
    /// memory pool of its own sized by `config`.
    pub async fn open(storage: S, dir: impl AsRef<Path>, config: LogConfig) -> Result<PartitionLog<S>, LogError> {
        let pool = MemoryPool::new(PoolConfig {
            write_buffer_bytes_max: config.write_buffer_bytes_max + 2 * config.write_bytes_max,
            cache_bytes_max: config.cache_bytes_max,
            read_ahead_bytes_max: config.read_ahead_chunks_max
                * config.read_ahead_bytes.max(config.batch_bytes_max as usize).max(1),
            index_cache_bytes_max: INDEX_CACHE_BYTES_MAX,
        });
        Self::open_in(storage, dir, config, pool).await
    }

    /// Opens the log with its buffers and caches in `pool`, shared with the
    /// other logs of this core.
    pub async fn open_in(
        storage: S,
        dir: impl AsRef<Path>,
        config: LogConfig,
        pool: MemoryPool,
    ) -> Result<PartitionLog<S>, LogError> {
        config.validate().map_err(LogError::Config)?;
        let dir = dir.as_ref().to_path_buf();
        let recovered = recovery::recover(&storage, &dir, &config).await?;
        let next = recovered.active.index.summary.next_offset;
        let log_start = recovered.closed.keys().next().copied().unwrap_or(recovered.active.index.summary.base_offset);
        let now = storage.now_ms();
        let checkpoint_path = dir.join(compact::CHECKPOINT_FILE);
        let checkpoint = storage
            .read_file(&checkpoint_path)
            .await
            .map_err(|e| LogError::io("read", &checkpoint_path, e))?
            .and_then(|b| {
                let decoded = compact::Checkpoint::decode(&b);
                if decoded.is_none() {
                    // Void: the log counts as never cleaned (the next pass
                    // does it again; nothing is lost), but say so.
                    tracing::warn!(path = %checkpoint_path.display(), bytes = b.len(), "cleaner checkpoint is damaged; ignored");
                }
                decoded
            });
        let active_base = recovered.active.index.summary.base_offset;
        let state = State {
            closed: recovered.closed,
            active: recovered.active,
            log_start,
            next_offset: next,
            written_offset: next,
            durable_offset: next,
            high_watermark_limit: None,
            leader_epoch: LeaderEpoch(0),
            exclusive: false,
            allocating: false,
            retention_running: false,
            compacting: false,
            // Never past the sealed segments: what is above them is dirty.
            cleaned_through: checkpoint.map_or(log_start, |c| c.cleaned_through.clamp(log_start, active_base)),
            last_clean_ms: checkpoint.map(|c| c.last_clean_ms),
            oldest_tombstone_ms: checkpoint.and_then(|c| c.oldest_tombstone_ms),
            swaps: 0,
            truncations: 0,
            recent_truncations: VecDeque::new(),
            pending_cut: None,
            sync_in_flight: false,
            poisoned: None,
            is_closed: false,
            tickets_next: 0,
            tickets_serving: 0,
            tickets_abandoned: BTreeSet::new(),
            last_sync_ms: now,
            files: Lru::new(config.open_segments_max),
            stats: IoStats::default(),
            fdatasync_latency: LatencyHistogram::default(),
        };
        let id = pool.register(config.cache_bytes_max);
        Ok(PartitionLog {
            storage,
            dir,
            config: RefCell::new(config),
            state: RefCell::new(state),
            io_done: Notify::default(),
            placed: Notify::default(),
            recovery: recovered.report,
            pool,
            id,
        })
    }

    /// The configuration now (dynamic settings may change).
    pub fn config(&self) -> LogConfig {
        self.config.borrow().clone()
    }

    /// A short borrow of the configuration; never held across an `.await`.
    fn cfg(&self) -> Ref<'_, LogConfig> {
        self.config.borrow()
    }

    /// Changes dynamic settings (segment size and age, largest batch,
    /// retention, timestamp rules) of an open log; they apply from the next
    /// append, roll or retention pass. The other settings size buffers at
    /// open and change only with a reopen.
    pub fn reconfigure(&self, config: LogConfig) -> Result<(), LogError> {
        config.validate().map_err(LogError::Config)?;
        if !self.cfg().same_static_settings(&config) {
            return Err(LogError::Config(
                "only segment, batch size, retention and timestamp settings change while a log is open".into(),
            ));
        }
        *self.config.borrow_mut() = config;
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What recovery found and did when this log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    pub fn log_start_offset(&self) -> Offset {
        self.state.borrow().log_start
    }

    /// The next offset to be assigned.
    pub fn log_end_offset(&self) -> Offset {
        self.state.borrow().next_offset
    }

    /// The end of the data that has met the flush policy.
    pub fn stable_offset(&self) -> Offset {
        let s = self.state.borrow();
        self.stable(&s)
    }

    fn stable(&self, s: &State<S::File>) -> Offset {
        match self.cfg().flush {
            FlushPolicy::Always => s.durable_offset,
            FlushPolicy::IntervalMs(_) | FlushPolicy::Never => s.written_offset,
        }
    }

    /// The end of the data known to be fdatasync'd.
    pub fn durable_offset(&self) -> Offset {
        self.state.borrow().durable_offset
    }

    /// Readers see offsets below this: the stable offset, capped by the
    /// limit replication sets (see [`PartitionLog::set_high_watermark_limit`]).
    pub fn high_watermark(&self) -> Offset {
        let s = self.state.borrow();
        self.hw(&s)
    }

    fn hw(&self, s: &State<S::File>) -> Offset {
        let stable = self.stable(s);
        s.high_watermark_limit.map_or(stable, |limit| limit.min(stable))
    }

    /// The limit replication set last, if any.
    pub fn high_watermark_limit(&self) -> Option<Offset> {
        self.state.borrow().high_watermark_limit
    }

    /// The replication hook: a leader caps what consumers see at the offset
    /// a quorum holds; `None` (a single replica) lets it follow the stable offset.
    pub fn set_high_watermark_limit(&self, limit: Option<Offset>) {
        self.state.borrow_mut().high_watermark_limit = limit;
        self.io_done.notify_all();
    }

    /// The epoch stamped on every batch appended from now on.
    pub fn set_leader_epoch(&self, epoch: LeaderEpoch) {
        self.state.borrow_mut().leader_epoch = epoch;
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.state.borrow().leader_epoch
    }

    pub fn segment_count(&self) -> usize {
        self.state.borrow().closed.len() + 1
    }

    /// Bytes of batches held in memory for tail reads.
    pub fn cached_bytes(&self) -> usize {
        self.pool.cached_bytes(self.id)
    }

    pub fn io_stats(&self) -> IoStats {
        self.state.borrow().stats
    }

    /// How long each fdatasync took, since the log was opened.
    pub fn fdatasync_latency(&self) -> LatencyHistogram {
        self.state.borrow().fdatasync_latency
    }

    pub fn is_poisoned(&self) -> bool {
        self.state.borrow().poisoned.is_some()
    }

    /// Why the log is poisoned, if it is.
    pub fn poisoned_cause(&self) -> Option<String> {
        self.state.borrow().poisoned.as_ref().map(|(c, _)| c.clone())
    }

    /// The error every use of a poisoned log gets, if it is poisoned.
    pub fn poisoned(&self) -> Option<LogError> {
        self.state
            .borrow()
            .poisoned
            .as_ref()
            .map(|(cause, disk_full)| LogError::Poisoned { cause: cause.clone(), disk_full: *disk_full })
    }

    /// Total bytes of all segments' batches.
    pub fn size_bytes(&self) -> u64 {
        let s = self.state.borrow();
        s.closed.values().map(|c| c.size_bytes).sum::<u64>() + s.active.size_bytes()
    }

    /// Bytes the log's files take on disk: sealed segments, and the active
    /// segment with its pre-allocated space.
    pub fn disk_bytes(&self) -> u64 {
        let s = self.state.borrow();
        s.closed.values().map(|c| c.size_bytes).sum::<u64>() + s.active.allocated_bytes
    }

    fn poison(&self, s: &mut State<S::File>, error: &LogError) {
        if !matches!(error, LogError::Poisoned { .. } | LogError::Closed)
            && s.poison(error.to_string(), error.is_disk_full())
        {
            tracing::error!(dir = %self.dir.display(), error = %error, "log poisoned");
        }
    }
}

impl<S: Storage> Drop for PartitionLog<S> {
    fn drop(&mut self) {
        self.pool.unregister(self.id);
    }
}
