//! The partition log: an append-only, segmented, durable sequence of record
//! batches, owned by one core.
//!
//! All state sits behind one `RefCell` that is never borrowed across an
//! `.await`. Appends land in the in-memory write buffer at once; up to two
//! writes and one fdatasync are in flight, and appends that arrive meanwhile
//! ride along with the next ones (group commit). Any I/O error while
//! writing poisons the log: fsync is never retried, because after a failed
//! fsync the kernel may already have dropped the dirty data it could not
//! write. Reopening runs recovery, which trusts only what is on disk.

mod cache;
mod config;
mod error;
mod index;
mod marker;
mod notify;
mod recovery;
mod scan;
mod segment;

#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

pub use config::{FlushPolicy, LogConfig};
pub use error::LogError;
pub use index::{OffsetIndex, SegmentIndex, SegmentSummary, TimeIndex};
pub use recovery::RecoveryReport;

use crate::batch::{
    BATCH_HEADER_BYTES, BatchError, BatchHeader, patch_base_offset, patch_leader_epoch, validate_batch,
    validate_records,
};
use crate::rt::{DmaFile, OpenMode, Storage};
use crate::types::{LeaderEpoch, Offset, Timestamp};
use cache::{BatchCache, CachedBatch, Lru};
use marker::{CleanMarker, MARKER_FILE};
use notify::Notify;
use segment::{ActiveSegment, PendingWrite, index_path, log_path};

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
}

/// Batches read from the log, each a whole batch as it was appended.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    pub batches: Vec<Bytes>,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
}

struct State<F: DmaFile> {
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
    /// Bumped by every `truncate_to`, with the offsets it cut at: reads and
    /// acknowledgements that straddle one are retried or refused.
    truncations: u64,
    recent_truncations: std::collections::VecDeque<(u64, Offset)>,
    sync_in_flight: bool,
    poisoned: Option<String>,
    is_closed: bool,
    /// Appends enter the log in the order they were first polled: each takes
    /// a ticket and waits for its turn, so a buffer-full wait or a roll can
    /// never let a later append overtake an earlier one.
    tickets_next: u64,
    tickets_serving: u64,
    /// Tickets whose appends were dropped before their turn.
    tickets_abandoned: std::collections::BTreeSet<u64>,
    last_sync_ms: i64,
    cache: BatchCache,
    read_ahead: Lru<(Offset, u64), Bytes>,
    indexes: Lru<Offset, Rc<SegmentIndex>>,
    files: Lru<Offset, Rc<F>>,
    stats: IoStats,
}

/// One partition's log. Not `Send`: it lives and dies on its core.
pub struct PartitionLog<S: Storage> {
    storage: S,
    dir: PathBuf,
    config: LogConfig,
    state: RefCell<State<S::File>>,
    io_done: Notify,
    recovery: RecoveryReport,
}

/// Writes smaller than this wait one scheduler turn for more appends.
const COALESCE_BYTES_MAX: u64 = 64 << 10;

/// What a cancelled I/O future leaves behind.
enum InFlight {
    Write(u64),
    Sync,
}

/// Poisons the log if the future driving an I/O is dropped before the I/O
/// completes: whether it reached the disk is then unknown, and the
/// bookkeeping that waits for it would otherwise wait forever. (Callers that
/// must not poison the log on cancellation run appends in their own task.)
struct CancelGuard<'a, S: Storage> {
    log: &'a PartitionLog<S>,
    pending: InFlight,
}

impl<S: Storage> CancelGuard<'_, S> {
    fn disarm(self) {
        std::mem::forget(self);
    }
}

impl<S: Storage> Drop for CancelGuard<'_, S> {
    fn drop(&mut self) {
        let log = self.log;
        {
            let mut s = log.state.borrow_mut();
            match self.pending {
                InFlight::Write(end_bytes) => s.active.abandon_write(end_bytes),
                InFlight::Sync => s.sync_in_flight = false,
            }
            if s.poisoned.is_none() {
                let cause = "an I/O was cancelled before it completed; its outcome is unknown";
                tracing::error!(dir = %log.dir.display(), cause, "log poisoned");
                s.poisoned = Some(cause.into());
            }
        }
        log.io_done.notify_all();
    }
}

/// An append's place in line; gives the turn away if the append is dropped
/// or fails before its batch entered the log.
struct Ticket<'a, S: Storage> {
    log: &'a PartitionLog<S>,
    number: u64,
    served: bool,
}

impl<S: Storage> Drop for Ticket<'_, S> {
    fn drop(&mut self) {
        if self.served {
            return;
        }
        {
            let mut s = self.log.state.borrow_mut();
            if s.tickets_serving == self.number {
                s.advance_tickets();
            } else {
                assert!(self.number > s.tickets_serving, "a ticket is served once");
                s.tickets_abandoned.insert(self.number);
            }
        }
        self.log.io_done.notify_all();
    }
}

/// Truncations remembered to refuse acknowledging a truncated append.
const TRUNCATIONS_REMEMBERED: usize = 16;

/// Writes in flight at once per log.
const WRITES_IN_FLIGHT_MAX: usize = 2;

enum IoAction<B> {
    Wait,
    Write(PendingWrite<B>),
    Sync,
}

enum Step {
    Wait,
    Roll,
    Flush,
}

impl<F: DmaFile> State<F> {
    /// Whether an fdatasync would make anything durable: a landed batch, or
    /// landed bytes of a batch still being written (which must be synced
    /// before writes may run further ahead, see `unsynced_bytes_max`).
    fn unsynced(&self) -> bool {
        self.durable_offset < self.written_offset || self.active.durable_bytes < self.active.written_bytes
    }

    /// Passes the turn to the next append still waiting for it.
    fn advance_tickets(&mut self) {
        self.tickets_serving += 1;
        while self.tickets_abandoned.remove(&self.tickets_serving) {
            self.tickets_serving += 1;
        }
    }

    fn usable(&self) -> Result<(), LogError> {
        if self.is_closed {
            return Err(LogError::Closed);
        }
        if let Some(cause) = &self.poisoned {
            return Err(LogError::Poisoned { cause: cause.clone() });
        }
        Ok(())
    }
}

impl<S: Storage> PartitionLog<S> {
    /// Opens (recovering if needed) or creates the log in `dir`.
    pub async fn open(storage: S, dir: impl AsRef<Path>, config: LogConfig) -> Result<PartitionLog<S>, LogError> {
        config.validate().map_err(LogError::Config)?;
        let dir = dir.as_ref().to_path_buf();
        let recovered = recovery::recover(&storage, &dir, &config).await?;
        let next = recovered.active.index.summary.next_offset;
        let log_start = recovered.closed.keys().next().copied().unwrap_or(recovered.active.index.summary.base_offset);
        let now = storage.now_ms();
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
            truncations: 0,
            recent_truncations: std::collections::VecDeque::new(),
            sync_in_flight: false,
            poisoned: None,
            is_closed: false,
            tickets_next: 0,
            tickets_serving: 0,
            tickets_abandoned: std::collections::BTreeSet::new(),
            last_sync_ms: now,
            cache: BatchCache::new(config.cache_bytes_max),
            read_ahead: Lru::new(config.read_ahead_chunks_max),
            indexes: Lru::new(config.index_cache_segments_max),
            files: Lru::new(config.open_segments_max),
            stats: IoStats::default(),
        };
        Ok(PartitionLog {
            storage,
            dir,
            config,
            state: RefCell::new(state),
            io_done: Notify::default(),
            recovery: recovered.report,
        })
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
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
        match self.config.flush {
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

    /// The replication hook: a leader caps what consumers see at the offset
    /// a quorum holds; `None` (a single replica) lets it follow the stable offset.
    pub fn set_high_watermark_limit(&self, limit: Option<Offset>) {
        self.state.borrow_mut().high_watermark_limit = limit;
    }

    /// The epoch stamped on every batch appended from now on.
    pub fn set_leader_epoch(&self, epoch: LeaderEpoch) {
        self.state.borrow_mut().leader_epoch = epoch;
    }

    pub fn segment_count(&self) -> usize {
        self.state.borrow().closed.len() + 1
    }

    /// Bytes of batches held in memory for tail reads.
    pub fn cached_bytes(&self) -> usize {
        self.state.borrow().cache.bytes()
    }

    pub fn io_stats(&self) -> IoStats {
        self.state.borrow().stats
    }

    pub fn is_poisoned(&self) -> bool {
        self.state.borrow().poisoned.is_some()
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        let s = self.state.borrow();
        s.closed.values().map(|c| c.size_bytes).sum::<u64>() + s.active.size_bytes()
    }

    /// Appends one batch (as built by [`crate::batch::BatchBuilder`]) and
    /// returns once the flush policy holds for it. The batch is checked
    /// whole first — header, CRC32C and the records archive (rkyv bytecheck,
    /// agreement with the header) — so nothing a reader could not read back
    /// is ever stored; its bytes are stored as given, with only base offset
    /// and leader epoch patched.
    pub async fn append(&self, mut batch: Vec<u8>) -> Result<AppendInfo, LogError> {
        let view = validate_batch(&batch)?;
        validate_records(&view)?;
        let header = view.header;
        if batch.len() != header.batch_length as usize {
            return Err(LogError::InvalidBatch(BatchError::BadLength { batch_length: header.batch_length }));
        }
        if header.batch_length > self.config.batch_bytes_max {
            return Err(LogError::BatchTooLarge {
                batch_length: header.batch_length,
                batch_bytes_max: self.config.batch_bytes_max,
            });
        }
        let mut ticket = {
            let mut s = self.state.borrow_mut();
            let number = s.tickets_next;
            s.tickets_next += 1;
            Ticket { log: self, number, served: false }
        };
        let (info, epoch) = loop {
            let step = {
                let mut s = self.state.borrow_mut();
                s.usable()?;
                let len = batch.len();
                let active_size = s.active.size_bytes();
                let aged =
                    self.config.segment_ms_max.is_some_and(|max| self.storage.now_ms() - s.active.created_ms >= max);
                if s.exclusive || s.tickets_serving != ticket.number {
                    Step::Wait
                } else if active_size > 0
                    && (active_size + len as u64 > self.config.segment_bytes_max
                        || aged
                        || s.next_offset.0 + u64::from(header.last_offset_delta) - s.active.index.summary.base_offset.0
                            >= u64::from(u32::MAX))
                {
                    Step::Roll
                } else if s.active.buffer_room() < len {
                    Step::Flush
                } else {
                    let info = self.append_in_memory(&mut s, std::mem::take(&mut batch), &header);
                    ticket.served = true;
                    s.advance_tickets();
                    let waiting = s.tickets_next != s.tickets_serving;
                    drop(s);
                    if waiting {
                        self.io_done.notify_all();
                    }
                    break (info, self.state.borrow().truncations);
                }
            };
            match step {
                Step::Wait => self.io_done.notified().await,
                Step::Roll => self.roll().await?,
                Step::Flush => self.flush_step(false).await?,
            }
        };
        let next = info.last_offset.next();
        self.wait_for(next, self.config.flush == FlushPolicy::Always).await?;
        let s = self.state.borrow();
        if s.truncations != epoch {
            // Another batch may now hold these offsets: refuse the ack if a
            // truncation cut into this batch, or if it is too long ago to tell.
            let known = s.recent_truncations.front().is_some_and(|&(e, _)| e <= epoch + 1);
            let cut = s.recent_truncations.iter().any(|&(e, at)| e > epoch && at <= info.last_offset);
            if cut || !known {
                return Err(LogError::Truncated { base_offset: info.base_offset });
            }
        }
        Ok(info)
    }

    fn append_in_memory(&self, s: &mut State<S::File>, mut batch: Vec<u8>, header: &BatchHeader) -> AppendInfo {
        let base = s.next_offset;
        let next = base.plus(u64::from(header.last_offset_delta) + 1);
        patch_base_offset(&mut batch, base);
        patch_leader_epoch(&mut batch, s.leader_epoch);
        let position = s.active.size_bytes();
        s.active.copy_in(&batch, next);
        s.active.index.on_append(
            base,
            next,
            header.max_timestamp,
            position,
            batch.len() as u64,
            self.config.index_interval_bytes,
        );
        s.next_offset = next;
        s.cache.push(CachedBatch { base_offset: base, next_offset: next, bytes: Bytes::from(batch) });
        AppendInfo { base_offset: base, last_offset: Offset(next.0 - 1) }
    }

    /// Waits until everything below `target` is written (and synced when
    /// `sync`), driving the I/O itself when no one else is.
    async fn wait_for(&self, target: Offset, sync: bool) -> Result<(), LogError> {
        loop {
            {
                let s = self.state.borrow();
                s.usable()?;
                let reached = if sync { s.durable_offset } else { s.written_offset };
                if reached >= target {
                    return Ok(());
                }
            }
            self.flush_step(sync).await?;
        }
    }

    /// Returns once a reader at `offset` has something to read: the high
    /// watermark passed it, or it fell below the log start (the read will
    /// then say so). Long-polling fetches wait here, bounded by their own timer.
    pub async fn wait_for_data(&self, offset: Offset) -> Result<(), LogError> {
        loop {
            {
                let s = self.state.borrow();
                s.usable()?;
                if self.hw(&s) > offset || offset < s.log_start {
                    return Ok(());
                }
            }
            self.io_done.notified().await;
        }
    }

    /// Writes and syncs everything appended so far.
    pub async fn sync(&self) -> Result<(), LogError> {
        let target = self.log_end_offset();
        self.wait_for(target, true).await
    }

    /// Syncs if the `IntervalMs` deadline has passed and data is unsynced;
    /// the owner's timer calls this (see [`crate::rt::glommio`]).
    pub async fn sync_if_due(&self) -> Result<(), LogError> {
        let due = {
            let s = self.state.borrow();
            s.usable()?;
            match self.config.flush {
                FlushPolicy::IntervalMs(ms) => {
                    s.durable_offset < s.next_offset && self.storage.now_ms() - s.last_sync_ms >= ms as i64
                }
                FlushPolicy::Always | FlushPolicy::Never => false,
            }
        };
        if due { self.sync().await } else { Ok(()) }
    }

    fn sync_wanted(&self, s: &State<S::File>, sync: bool) -> bool {
        sync || match self.config.flush {
            FlushPolicy::Always => true,
            FlushPolicy::IntervalMs(ms) => self.storage.now_ms() - s.last_sync_ms >= ms as i64,
            FlushPolicy::Never => false,
        }
    }

    /// Moves the log's I/O on by one step: starts an fdatasync, or a write
    /// (up to `WRITES_IN_FLIGHT_MAX` at once, so the appends one write
    /// acknowledges refill the buffer while the next is on the device), or
    /// waits for one in flight to land. Appends that arrive meanwhile join
    /// the next write and the next sync: group commit.
    async fn flush_step(&self, sync: bool) -> Result<(), LogError> {
        let coalesce = {
            let s = self.state.borrow();
            s.usable()?;
            let unissued = s.active.unissued_bytes();
            !s.exclusive && s.active.writes_in_flight() == 0 && unissued > 0 && unissued < COALESCE_BYTES_MAX
        };
        if coalesce {
            // A small write costs a whole device round trip: let the tasks
            // that are ready to append do so first and share it.
            notify::yield_now().await;
        }
        let action = {
            let mut s = self.state.borrow_mut();
            s.usable()?;
            if s.exclusive {
                IoAction::Wait
            } else if self.sync_wanted(&s, sync) && !s.sync_in_flight && s.unsynced() {
                s.sync_in_flight = true;
                IoAction::Sync
            } else {
                let unsynced_max = (self.config.flush == FlushPolicy::Always).then(|| self.config.unsynced_bytes_max());
                match s.active.try_take_write(WRITES_IN_FLIGHT_MAX, unsynced_max) {
                    Some(p) => IoAction::Write(p),
                    None => IoAction::Wait,
                }
            }
        };
        match action {
            IoAction::Wait => {
                self.io_done.notified().await;
                Ok(())
            }
            IoAction::Write(p) => self.write_chunk(p).await,
            IoAction::Sync => self.sync_now().await,
        }
    }

    /// Writes one taken chunk and records what landed.
    async fn write_chunk(&self, p: PendingWrite<<S::File as DmaFile>::Buf>) -> Result<(), LogError> {
        let (file, base) = {
            let s = self.state.borrow();
            (s.active.file().clone(), s.active.index.summary.base_offset)
        };
        let (end_bytes, len) = (p.end_bytes, p.len);
        let guard = CancelGuard { log: self, pending: InFlight::Write(end_bytes) };
        let result =
            file.write_at(p.buf, p.len, p.pos).await.map_err(|e| LogError::io("write", log_path(&self.dir, base), e));
        guard.disarm();
        {
            let mut s = self.state.borrow_mut();
            match &result {
                Ok(()) => {
                    let written = s.active.finish_write(end_bytes);
                    // After a failed write the log is poisoned: what landed
                    // behind the failure must not become readable.
                    if let (Some(written), None) = (written, &s.poisoned) {
                        s.written_offset = written;
                    }
                    s.stats.writes += 1;
                    s.stats.bytes_written += len as u64;
                }
                Err(e) => {
                    s.active.abandon_write(end_bytes);
                    self.poison(&mut s, e);
                }
            }
        }
        self.io_done.notify_all();
        result
    }

    /// fdatasync of the active segment, covering every write landed so far.
    /// The caller has set `sync_in_flight`.
    async fn sync_now(&self) -> Result<(), LogError> {
        let (file, base, written, written_bytes) = {
            let s = self.state.borrow();
            (s.active.file().clone(), s.active.index.summary.base_offset, s.written_offset, s.active.written_bytes)
        };
        let now = self.storage.now_ms();
        let guard = CancelGuard { log: self, pending: InFlight::Sync };
        let result = file.fdatasync().await.map_err(|e| LogError::io("fdatasync", log_path(&self.dir, base), e));
        guard.disarm();
        {
            let mut s = self.state.borrow_mut();
            s.sync_in_flight = false;
            match &result {
                Ok(()) => {
                    s.durable_offset = s.durable_offset.max(written);
                    s.active.durable_bytes = s.active.durable_bytes.max(written_bytes);
                    s.last_sync_ms = now;
                    s.stats.fdatasyncs += 1;
                }
                Err(e) => self.poison(&mut s, e),
            }
        }
        self.io_done.notify_all();
        result
    }

    fn poison(&self, s: &mut State<S::File>, error: &LogError) {
        if s.poisoned.is_none() && !matches!(error, LogError::Poisoned { .. } | LogError::Closed) {
            tracing::error!(dir = %self.dir.display(), error = %error, "log poisoned");
            s.poisoned = Some(error.to_string());
        }
    }

    /// Takes the log for an operation that rewrites its structure (roll,
    /// truncate, close): no new write or sync starts, and the ones in
    /// flight land first.
    async fn acquire_exclusive(&self) -> Result<(), LogError> {
        loop {
            {
                let mut s = self.state.borrow_mut();
                s.usable()?;
                if !s.exclusive {
                    s.exclusive = true;
                    break;
                }
            }
            self.io_done.notified().await;
        }
        loop {
            {
                let s = self.state.borrow();
                if s.active.writes_in_flight() == 0 && !s.sync_in_flight {
                    break;
                }
            }
            self.io_done.notified().await;
        }
        let usable = self.state.borrow().usable();
        if usable.is_err() {
            self.release_exclusive(None);
        }
        usable
    }

    fn release_exclusive(&self, error: Option<&LogError>) {
        {
            let mut s = self.state.borrow_mut();
            s.exclusive = false;
            if let Some(e) = error {
                self.poison(&mut s, e);
            }
        }
        self.io_done.notify_all();
    }

    /// Writes everything buffered, then syncs if asked for or if the policy
    /// is `Always`. Runs with the log held exclusively; keeps the bound on
    /// unsynced bytes by syncing between writes when needed.
    async fn flush_all_locked(&self, sync: bool) -> Result<(), LogError> {
        let always = self.config.flush == FlushPolicy::Always;
        let unsynced_max = always.then(|| self.config.unsynced_bytes_max());
        loop {
            let (pending, unissued) = {
                let mut s = self.state.borrow_mut();
                let pending = s.active.try_take_write(1, unsynced_max);
                (pending, s.active.unissued_bytes())
            };
            match pending {
                Some(p) => self.write_chunk(p).await?,
                None if unissued == 0 => break,
                None => self.sync_locked().await?,
            }
        }
        if sync || always {
            self.sync_locked().await?;
        }
        Ok(())
    }

    /// An fdatasync if anything is unsynced, with the log held exclusively.
    async fn sync_locked(&self) -> Result<(), LogError> {
        let needed = {
            let mut s = self.state.borrow_mut();
            let needed = s.unsynced();
            s.sync_in_flight = needed;
            needed
        };
        if needed { self.sync_now().await } else { Ok(()) }
    }

    /// Seals the active segment and starts a new one at the log end offset.
    pub async fn roll(&self) -> Result<(), LogError> {
        self.acquire_exclusive().await?;
        let result = self.roll_locked().await;
        self.release_exclusive(result.as_ref().err());
        result
    }

    async fn roll_locked(&self) -> Result<(), LogError> {
        if self.state.borrow().active.size_bytes() == 0 {
            return Ok(());
        }
        self.flush_all_locked(true).await?;
        let (file, index) = {
            let s = self.state.borrow();
            (s.active.file().clone(), s.active.index.clone())
        };
        let summary = index.summary;
        let path = log_path(&self.dir, summary.base_offset);
        // Drop the O_DIRECT padding of the last block, so a sealed segment's
        // size is exactly its batches; fdatasync makes the new size durable.
        file.truncate(summary.size_bytes).await.map_err(|e| LogError::io("truncate", &path, e))?;
        file.fdatasync().await.map_err(|e| LogError::io("fdatasync", &path, e))?;
        let index_file = index_path(&self.dir, summary.base_offset);
        self.storage
            .write_file_atomic(&index_file, &index.encode())
            .await
            .map_err(|e| LogError::io("write", &index_file, e))?;
        let active = recovery::create_segment(&self.storage, &self.dir, &self.config, summary.next_offset).await?;
        let mut s = self.state.borrow_mut();
        s.closed.insert(summary.base_offset, summary);
        s.indexes.insert(summary.base_offset, Rc::new(index));
        s.files.insert(summary.base_offset, file);
        s.active = active;
        Ok(())
    }

    /// Reads whole batches from the one holding `from`, up to `bytes_max`
    /// (at least one batch), below the high watermark.
    pub async fn read(&self, from: Offset, bytes_max: usize) -> Result<ReadResult, LogError> {
        loop {
            let epoch = self.state.borrow().truncations;
            let result = self.read_once(from, bytes_max).await;
            // A truncation while the read was on the disk may have cut what it
            // read: read again.
            if self.state.borrow().truncations == epoch {
                return result;
            }
        }
    }

    async fn read_once(&self, from: Offset, bytes_max: usize) -> Result<ReadResult, LogError> {
        let (hw, log_start) = {
            let s = self.state.borrow();
            if s.is_closed {
                return Err(LogError::Closed);
            }
            let hw = self.hw(&s);
            let log_start = s.log_start;
            if from < log_start || from > hw {
                return Err(LogError::OffsetOutOfRange { requested: from, log_start, high_watermark: hw });
            }
            if from == hw {
                return Ok(ReadResult { batches: Vec::new(), high_watermark: hw, log_start_offset: log_start });
            }
            if let Some(batches) = s.cache.read(from, hw, bytes_max) {
                return Ok(ReadResult { batches, high_watermark: hw, log_start_offset: log_start });
            }
            (hw, log_start)
        };
        let batches = self.read_cold(from, hw, bytes_max).await?;
        Ok(ReadResult { batches, high_watermark: hw, log_start_offset: log_start })
    }

    async fn read_cold(&self, from: Offset, end: Offset, bytes_max: usize) -> Result<Vec<Bytes>, LogError> {
        let (base, (mut expected, mut position), file, limit) = self.locate(from).await?;
        let path = log_path(&self.dir, base);
        let mut out = Vec::new();
        let mut total = 0usize;
        while position < limit {
            let chunk = self.chunk_at(base, &file, position, limit, bytes_max.saturating_sub(total)).await?;
            let mut at = 0usize;
            while at + BATCH_HEADER_BYTES <= chunk.len() {
                let corrupt = |reason: String| LogError::corruption(&path, position + at as u64, reason);
                let header = match validate_batch(&chunk[at..]) {
                    Ok(view) => view.header,
                    // Runs past this chunk: read on from here (a batch that
                    // runs past the segment is caught below as `at == 0`).
                    Err(BatchError::Truncated { .. }) => break,
                    Err(e) => return Err(corrupt(e.to_string())),
                };
                let length = header.batch_length as usize;
                // The base offset is outside the CRC: continuity checks it.
                if header.base_offset != expected {
                    return Err(corrupt(format!("offset {} where {expected} was expected", header.base_offset)));
                }
                let next = header.next_offset();
                if next > end || (!out.is_empty() && total + length > bytes_max) {
                    return Ok(out);
                }
                if next > from {
                    total += length;
                    out.push(chunk.slice(at..at + length));
                }
                expected = next;
                at += length;
            }
            if at == 0 {
                return Err(LogError::corruption(&path, position, "batch runs past the end of the segment"));
            }
            position += at as u64;
            if total >= bytes_max {
                break;
            }
        }
        Ok(out)
    }

    /// A chunk of the segment starting at `position`: from the read-ahead
    /// cache, or one DMA read of at least `read_ahead_bytes`.
    async fn chunk_at(
        &self,
        base: Offset,
        file: &Rc<S::File>,
        position: u64,
        limit: u64,
        want: usize,
    ) -> Result<Bytes, LogError> {
        let cached = self.state.borrow_mut().read_ahead.find_entry(|&(b, p), chunk| {
            b == base && p <= position && position + BATCH_HEADER_BYTES as u64 <= p + chunk.len() as u64
        });
        if let Some(((_, p), chunk)) = cached {
            let sliced = chunk.slice((position - p) as usize..);
            let length = BatchHeader::decode(&sliced).map_or(usize::MAX, |h| h.batch_length as usize);
            if length <= sliced.len() {
                return Ok(sliced);
            }
        }
        let epoch = self.state.borrow().truncations;
        let len = (want.max(self.config.read_ahead_bytes).max(self.config.batch_bytes_max as usize) as u64)
            .min(limit - position);
        let chunk = file
            .read_at(position, len as usize)
            .await
            .map_err(|e| LogError::io("read", log_path(&self.dir, base), e))?;
        let mut s = self.state.borrow_mut();
        if s.truncations == epoch {
            s.read_ahead.insert((base, position), chunk.clone());
        }
        s.stats.cold_reads += 1;
        s.stats.bytes_read += chunk.len() as u64;
        Ok(chunk)
    }

    /// The segment holding `from`: its base, the position to scan from, its
    /// file and the bytes of it that may be read from disk.
    async fn locate(&self, from: Offset) -> Result<(Offset, (Offset, u64), Rc<S::File>, u64), LogError> {
        let closed = {
            let s = self.state.borrow();
            if from >= s.active.index.summary.base_offset {
                None
            } else {
                let (&base, &summary) = s.closed.range(..=from).next_back().ok_or(LogError::OffsetOutOfRange {
                    requested: from,
                    log_start: s.log_start,
                    high_watermark: self.hw(&s),
                })?;
                Some((base, summary))
            }
        };
        let Some((base, summary)) = closed else {
            let s = self.state.borrow();
            let a = &s.active;
            return Ok((a.index.summary.base_offset, a.index.entry_for(from), a.file().clone(), a.readable_bytes));
        };
        let file = self.segment_file(base).await?;
        let index = self.segment_index(&file, summary).await?;
        Ok((base, index.entry_for(from), file, summary.size_bytes))
    }

    /// A sealed segment's sparse indexes, through the bounded index cache.
    async fn segment_index(&self, file: &S::File, summary: SegmentSummary) -> Result<Rc<SegmentIndex>, LogError> {
        if let Some(index) = self.state.borrow_mut().indexes.get(summary.base_offset) {
            return Ok(index);
        }
        let index = Rc::new(recovery::load_index(&self.storage, &self.dir, &self.config, Some(file), summary).await?);
        self.state.borrow_mut().indexes.insert(summary.base_offset, index.clone());
        Ok(index)
    }

    async fn segment_file(&self, base: Offset) -> Result<Rc<S::File>, LogError> {
        if let Some(file) = self.state.borrow_mut().files.get(base) {
            return Ok(file);
        }
        let path = log_path(&self.dir, base);
        let file = Rc::new(
            self.storage.open_dma(&path, OpenMode::Existing).await.map_err(|e| LogError::io("open", &path, e))?,
        );
        self.state.borrow_mut().files.insert(base, file.clone());
        Ok(file)
    }

    /// The offset of the first record whose timestamp is at or after `t`,
    /// `None` if every visible record is older.
    pub async fn offset_for_timestamp(&self, t: Timestamp) -> Result<Option<Offset>, LogError> {
        let start = {
            let s = self.state.borrow();
            let candidate = s.closed.values().find(|c| c.max_timestamp >= t).copied();
            match candidate {
                Some(summary) => Some(summary),
                None if s.active.index.summary.max_timestamp >= t => None,
                None => return Ok(None),
            }
        };
        let mut from = match start {
            Some(summary) => {
                let file = self.segment_file(summary.base_offset).await?;
                self.segment_index(&file, summary).await?.offset_for_time(t)
            }
            None => self.state.borrow().active.index.offset_for_time(t),
        };
        from = from.max(self.log_start_offset());
        loop {
            let read = match self.read(from, self.config.read_ahead_bytes).await {
                Ok(read) => read,
                Err(LogError::OffsetOutOfRange { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            if read.batches.is_empty() {
                return Ok(None);
            }
            for bytes in &read.batches {
                let view = validate_batch(bytes)?;
                if view.header.max_timestamp >= t {
                    for record in view.records()?.iter() {
                        let offset = view.header.base_offset.plus(u64::from(record.offset_delta.to_native()));
                        if offset >= from
                            && view.header.first_timestamp.0.saturating_add(record.timestamp_delta.to_native()) >= t.0
                        {
                            return Ok(Some(offset));
                        }
                    }
                }
                from = from.max(view.header.next_offset());
            }
        }
    }

    /// Removes every record at or after `offset` (a batch boundary between
    /// the log start and end offsets). Replication uses this to drop a
    /// diverged suffix.
    pub async fn truncate_to(&self, offset: Offset) -> Result<(), LogError> {
        self.acquire_exclusive().await?;
        let result = self.truncate_locked(offset).await;
        // A rejected request leaves the log as it was; an I/O failure poisons it.
        let poison = match &result {
            Err(LogError::NotBatchBoundary { .. } | LogError::OffsetOutOfRange { .. }) => None,
            other => other.as_ref().err(),
        };
        self.release_exclusive(poison);
        result
    }

    async fn truncate_locked(&self, offset: Offset) -> Result<(), LogError> {
        let (log_start, end, active_base) = {
            let s = self.state.borrow();
            (s.log_start, s.next_offset, s.active.index.summary.base_offset)
        };
        if offset < log_start || offset > end {
            return Err(LogError::OffsetOutOfRange { requested: offset, log_start, high_watermark: end });
        }
        if offset == end {
            return Ok(());
        }
        self.flush_all_locked(false).await?;
        let target_base = if offset >= active_base {
            active_base
        } else {
            *self.state.borrow().closed.range(..=offset).next_back().expect("offset ≥ log start").0
        };
        let path = log_path(&self.dir, target_base);
        let file = if target_base == active_base {
            self.state.borrow().active.file().clone()
        } else {
            self.segment_file(target_base).await?
        };
        let size = file.size().await.map_err(|e| LogError::io("stat", &path, e))?;
        let scan = scan::scan_segment(
            &*file,
            target_base,
            size,
            self.config.batch_bytes_max,
            self.config.index_interval_bytes,
            Some(offset),
        )
        .await
        .map_err(|e| LogError::io("read", &path, e))?;
        if scan.stop != scan::ScanStop::ReachedOffset {
            return Err(LogError::NotBatchBoundary { offset });
        }
        // Everything checked: from here on the log changes.
        let doomed: Vec<Offset> = {
            let s = self.state.borrow();
            let mut doomed: Vec<Offset> =
                s.closed.range(target_base..).map(|(b, _)| *b).filter(|b| *b != target_base).collect();
            if active_base != target_base {
                doomed.push(active_base);
            }
            doomed
        };
        // Newest first, each removal made durable before the next: a crash
        // part way leaves a contiguous run of segments (recovery row R9).
        for base in doomed.iter().rev() {
            let log = log_path(&self.dir, *base);
            self.storage.remove(&log).await.map_err(|e| LogError::io("remove", &log, e))?;
            let index = index_path(&self.dir, *base);
            let _ = self.storage.remove(&index).await;
            self.storage.sync_dir(&self.dir).await.map_err(|e| LogError::io("sync", &self.dir, e))?;
        }
        if target_base != active_base {
            let index = index_path(&self.dir, target_base);
            let _ = self.storage.remove(&index).await;
        }
        let new_size = scan.index.summary.size_bytes;
        file.truncate(new_size).await.map_err(|e| LogError::io("truncate", &path, e))?;
        file.fdatasync().await.map_err(|e| LogError::io("fdatasync", &path, e))?;
        self.storage.sync_dir(&self.dir).await.map_err(|e| LogError::io("sync", &self.dir, e))?;
        let tail = recovery::read_tail_block(&*file, new_size).await.map_err(|e| LogError::io("read", &path, e))?;
        let active = ActiveSegment::new(
            file,
            scan.index,
            self.storage.now_ms(),
            &tail,
            self.config.write_bytes_max,
            self.config.write_chunks_max(),
        );
        let mut s = self.state.borrow_mut();
        s.closed.retain(|b, _| *b < target_base);
        s.indexes.retain(|b, _| *b < target_base);
        s.files.retain(|b, _| *b < target_base);
        s.read_ahead.retain(|(b, _), _| *b < target_base);
        s.cache.truncate(offset);
        s.truncations += 1;
        let epoch = s.truncations;
        s.recent_truncations.push_back((epoch, offset));
        if s.recent_truncations.len() > TRUNCATIONS_REMEMBERED {
            s.recent_truncations.pop_front();
        }
        s.active = active;
        s.next_offset = offset;
        s.written_offset = offset;
        s.durable_offset = offset;
        Ok(())
    }

    /// Deletes closed segments that fall outside the retention limits and
    /// advances the log start offset; returns how many were deleted. The
    /// active segment is never deleted.
    pub async fn enforce_retention(&self) -> Result<usize, LogError> {
        self.acquire_exclusive().await?;
        let result = self.enforce_retention_locked().await;
        self.release_exclusive(None);
        result
    }

    async fn enforce_retention_locked(&self) -> Result<usize, LogError> {
        let now = self.storage.now_ms();
        let mut deleted = 0;
        loop {
            let doomed = {
                let mut s = self.state.borrow_mut();
                s.usable()?;
                let total: u64 = s.closed.values().map(|c| c.size_bytes).sum::<u64>() + s.active.size_bytes();
                let Some((&base, &oldest)) = s.closed.iter().next() else { break };
                let too_old = self.config.retention_ms.is_some_and(|ms| oldest.max_timestamp.0 < now - ms);
                let too_big = self.config.retention_bytes.is_some_and(|max| total - oldest.size_bytes >= max);
                if !(too_old || too_big) {
                    break;
                }
                s.closed.remove(&base);
                let next_start = s.closed.keys().next().copied().unwrap_or(s.active.index.summary.base_offset);
                s.log_start = next_start;
                s.cache.trim_front(next_start);
                s.indexes.retain(|b, _| *b != base);
                s.files.retain(|b, _| *b != base);
                s.read_ahead.retain(|(b, _), _| *b != base);
                base
            };
            let log = log_path(&self.dir, doomed);
            self.storage.remove(&log).await.map_err(|e| LogError::io("remove", &log, e))?;
            let index = index_path(&self.dir, doomed);
            let _ = self.storage.remove(&index).await;
            deleted += 1;
        }
        if deleted > 0 {
            self.storage.sync_dir(&self.dir).await.map_err(|e| LogError::io("sync", &self.dir, e))?;
        }
        Ok(deleted)
    }

    /// Writes and syncs everything, saves the active segment's index and
    /// the clean-shutdown marker. The log refuses further use.
    pub async fn close(&self) -> Result<(), LogError> {
        self.acquire_exclusive().await?;
        let result = self.close_locked().await;
        if result.is_ok() {
            self.state.borrow_mut().is_closed = true;
        }
        self.release_exclusive(result.as_ref().err());
        result
    }

    async fn close_locked(&self) -> Result<(), LogError> {
        self.flush_all_locked(true).await?;
        let index = self.state.borrow().active.index.clone();
        let summary = index.summary;
        let index_file = index_path(&self.dir, summary.base_offset);
        self.storage
            .write_file_atomic(&index_file, &index.encode())
            .await
            .map_err(|e| LogError::io("write", &index_file, e))?;
        let marker = CleanMarker {
            active_base: summary.base_offset,
            active_size_bytes: summary.size_bytes,
            next_offset: summary.next_offset,
        };
        let marker_file = self.dir.join(MARKER_FILE);
        self.storage
            .write_file_atomic(&marker_file, &marker.encode())
            .await
            .map_err(|e| LogError::io("write", &marker_file, e))?;
        // Close the files now rather than leaving it to their drop: a
        // dropped glommio file is closed only at the executor's next I/O
        // cycle, and an executor that stops first leaks the descriptor (and,
        // for a deleted segment, its disk space).
        let files: Vec<Rc<S::File>> = {
            let mut s = self.state.borrow_mut();
            let mut files: Vec<Rc<S::File>> = s.files.drain().into_iter().map(|(_, f)| f).collect();
            files.extend(s.active.take_file());
            files
        };
        for file in files {
            if let Ok(file) = Rc::try_unwrap(file) {
                file.close().await.map_err(|e| LogError::io("close", &self.dir, e))?;
            }
        }
        Ok(())
    }
}
