//! The partition log: an append-only, segmented, durable sequence of record
//! batches, owned by one core.
//!
//! All state sits behind one `RefCell` that is never borrowed across an
//! `.await`; disk writes are serialized by the `io_busy` flag, so appends
//! keep landing in the in-memory buffer while a write or a sync is in flight
//! and ride along with the next one (group commit). Any I/O error while
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

use crate::batch::{BATCH_HEADER_BYTES, BatchHeader, BatchView, patch_base_offset, patch_leader_epoch, validate_batch};
use crate::rt::{DmaFile, OpenMode, Storage};
use crate::types::{LeaderEpoch, Offset, Timestamp};
use cache::{BatchCache, CachedBatch, Lru};
use marker::{CleanMarker, MARKER_FILE};
use notify::Notify;
use segment::{ActiveSegment, index_path, log_path};

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
    io_busy: bool,
    rolling: bool,
    poisoned: Option<String>,
    is_closed: bool,
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

enum Step {
    Wait,
    Roll,
    Flush,
}

impl<F: DmaFile> State<F> {
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
            io_busy: false,
            rolling: false,
            poisoned: None,
            is_closed: false,
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
    /// returns once the flush policy holds for it. The batch's bytes are
    /// stored as given, with only base offset and leader epoch patched.
    pub async fn append(&self, mut batch: Vec<u8>) -> Result<AppendInfo, LogError> {
        let header = validate_batch(&batch)?.header;
        if batch.len() != header.batch_length as usize {
            return Err(LogError::InvalidBatch(crate::batch::BatchError::BadLength {
                batch_length: header.batch_length,
            }));
        }
        if header.batch_length > self.config.batch_bytes_max {
            return Err(LogError::BatchTooLarge {
                batch_length: header.batch_length,
                batch_bytes_max: self.config.batch_bytes_max,
            });
        }
        let info = loop {
            let step = {
                let mut s = self.state.borrow_mut();
                s.usable()?;
                let len = batch.len();
                let active_size = s.active.size_bytes();
                let aged =
                    self.config.segment_ms_max.is_some_and(|max| self.storage.now_ms() - s.active.created_ms >= max);
                if s.rolling {
                    Step::Wait
                } else if active_size > 0 && (active_size + len as u64 > self.config.segment_bytes_max || aged) {
                    Step::Roll
                } else if s.active.buffer_room() < len {
                    Step::Flush
                } else {
                    break self.append_in_memory(&mut s, std::mem::take(&mut batch), &header);
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
    /// `sync`), driving the writes itself when no one else is.
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
            match self.config.flush {
                FlushPolicy::IntervalMs(ms) => {
                    s.durable_offset < s.next_offset && self.storage.now_ms() - s.last_sync_ms >= ms as i64
                }
                FlushPolicy::Always | FlushPolicy::Never => false,
            }
        };
        if due { self.sync().await } else { Ok(()) }
    }

    /// One write (and sync) of whatever is buffered, or a wait for the one in
    /// flight: appends that arrive meanwhile join the next.
    async fn flush_step(&self, sync: bool) -> Result<(), LogError> {
        if !self.acquire_io()? {
            self.io_done.notified().await;
            return Ok(());
        }
        let result = self.flush_locked(sync).await;
        self.release_io(result.as_ref().err());
        result
    }

    /// Takes the I/O turn if it is free.
    fn acquire_io(&self) -> Result<bool, LogError> {
        let mut s = self.state.borrow_mut();
        s.usable()?;
        if s.io_busy {
            return Ok(false);
        }
        s.io_busy = true;
        Ok(true)
    }

    fn release_io(&self, error: Option<&LogError>) {
        {
            let mut s = self.state.borrow_mut();
            s.io_busy = false;
            s.rolling = false;
            if let Some(e) = error
                && s.poisoned.is_none()
                && !matches!(e, LogError::Poisoned { .. } | LogError::Closed)
            {
                tracing::error!(dir = %self.dir.display(), error = %e, "log poisoned");
                s.poisoned = Some(e.to_string());
            }
        }
        self.io_done.notify_all();
    }

    /// Waits for and takes the I/O turn.
    async fn acquire_io_wait(&self) -> Result<(), LogError> {
        while !self.acquire_io()? {
            self.io_done.notified().await;
        }
        Ok(())
    }

    /// One write of the oldest unwritten chunk, then a sync if asked for,
    /// if the policy is `Always` (every write is synced before the next, so
    /// at most one write is ever unsynced: recovery row R7 relies on it), or
    /// if the `IntervalMs` deadline has passed.
    async fn flush_locked(&self, sync: bool) -> Result<(), LogError> {
        // A small write costs a whole device round trip: let the tasks that
        // are ready to append do so first and share it. A large one starts
        // at once, so the appends that follow overlap it.
        if self.state.borrow().active.unwritten_bytes() < COALESCE_BYTES_MAX {
            notify::yield_now().await;
        }
        self.write_one_locked().await?;
        let interval_due = {
            let s = self.state.borrow();
            matches!(self.config.flush, FlushPolicy::IntervalMs(ms) if self.storage.now_ms() - s.last_sync_ms >= ms as i64)
        };
        if sync || interval_due || self.config.flush == FlushPolicy::Always {
            self.sync_locked().await?;
        }
        Ok(())
    }

    /// Writes everything buffered, then syncs if asked for.
    async fn flush_all_locked(&self, sync: bool) -> Result<(), LogError> {
        while self.write_one_locked().await? {}
        if sync || self.config.flush == FlushPolicy::Always {
            self.sync_locked().await?;
        }
        Ok(())
    }

    /// Writes the oldest unwritten chunk; `false` if there was none.
    async fn write_one_locked(&self) -> Result<bool, LogError> {
        let (pending, file, base) = {
            let mut s = self.state.borrow_mut();
            let pending = s.active.take_pending();
            (pending, s.active.file.clone(), s.active.index.summary.base_offset)
        };
        let Some(p) = pending else { return Ok(false) };
        let (end_bytes, len) = (p.end_bytes, p.len);
        file.write_at(p.buf, p.len, p.pos).await.map_err(|e| LogError::io("write", log_path(&self.dir, base), e))?;
        let mut s = self.state.borrow_mut();
        if let Some(written) = s.active.on_written(end_bytes) {
            s.written_offset = written;
        }
        s.stats.writes += 1;
        s.stats.bytes_written += len as u64;
        Ok(true)
    }

    /// fdatasync of the active segment if anything written is unsynced.
    async fn sync_locked(&self) -> Result<(), LogError> {
        let (file, base, written, durable) = {
            let s = self.state.borrow();
            (s.active.file.clone(), s.active.index.summary.base_offset, s.written_offset, s.durable_offset)
        };
        if durable >= written {
            return Ok(());
        }
        let now = self.storage.now_ms();
        file.fdatasync().await.map_err(|e| LogError::io("fdatasync", log_path(&self.dir, base), e))?;
        let mut s = self.state.borrow_mut();
        s.durable_offset = written;
        s.last_sync_ms = now;
        s.stats.fdatasyncs += 1;
        Ok(())
    }

    /// Seals the active segment and starts a new one at the log end offset.
    pub async fn roll(&self) -> Result<(), LogError> {
        self.acquire_io_wait().await?;
        self.state.borrow_mut().rolling = true;
        let result = self.roll_locked().await;
        self.release_io(result.as_ref().err());
        result
    }

    async fn roll_locked(&self) -> Result<(), LogError> {
        if self.state.borrow().active.size_bytes() == 0 {
            return Ok(());
        }
        self.flush_all_locked(true).await?;
        let (file, index) = {
            let s = self.state.borrow();
            (s.active.file.clone(), s.active.index.clone())
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
        let (hw, log_start) = {
            let mut s = self.state.borrow_mut();
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
            let _ = &mut s;
            (hw, log_start)
        };
        let batches = self.read_cold(from, hw, bytes_max).await?;
        Ok(ReadResult { batches, high_watermark: hw, log_start_offset: log_start })
    }

    async fn read_cold(&self, from: Offset, end: Offset, bytes_max: usize) -> Result<Vec<Bytes>, LogError> {
        let (base, mut position, file, limit) = self.locate(from).await?;
        let path = log_path(&self.dir, base);
        let mut out = Vec::new();
        let mut total = 0usize;
        while position < limit {
            let chunk = self.chunk_at(base, &file, position, limit, bytes_max.saturating_sub(total)).await?;
            let mut at = 0usize;
            let mut progressed = false;
            while at + BATCH_HEADER_BYTES <= chunk.len() {
                let Some(length) =
                    crate::batch::BatchHeader::decode(&chunk[at..]).ok().map(|h| h.batch_length as usize)
                else {
                    break;
                };
                if at + length > chunk.len() {
                    break;
                }
                let view: BatchView<'_> = validate_batch(&chunk[at..])
                    .map_err(|e| LogError::corruption(&path, position + at as u64, e.to_string()))?;
                let header = view.header;
                if header.next_offset() > end || (!out.is_empty() && total + length > bytes_max) {
                    return Ok(out);
                }
                if header.next_offset() > from {
                    total += length;
                    out.push(chunk.slice(at..at + length));
                }
                at += length;
                progressed = true;
            }
            if !progressed {
                return Err(LogError::corruption(&path, position, "batch cut short inside the segment"));
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
            let length = crate::batch::BatchHeader::decode(&sliced).map_or(usize::MAX, |h| h.batch_length as usize);
            if length <= sliced.len() {
                return Ok(sliced);
            }
        }
        let len = (want.max(self.config.read_ahead_bytes).max(self.config.batch_bytes_max as usize) as u64)
            .min(limit - position);
        let chunk = file
            .read_at(position, len as usize)
            .await
            .map_err(|e| LogError::io("read", log_path(&self.dir, base), e))?;
        let mut s = self.state.borrow_mut();
        s.read_ahead.insert((base, position), chunk.clone());
        s.stats.cold_reads += 1;
        s.stats.bytes_read += chunk.len() as u64;
        Ok(chunk)
    }

    /// The segment holding `from`: its base, the position to scan from, its
    /// file and the bytes of it that may be read from disk.
    async fn locate(&self, from: Offset) -> Result<(Offset, u64, Rc<S::File>, u64), LogError> {
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
            return Ok((a.index.summary.base_offset, a.index.position_for(from), a.file.clone(), a.readable_bytes));
        };
        let file = self.segment_file(base).await?;
        let cached = self.state.borrow_mut().indexes.get(base);
        let index = if let Some(index) = cached {
            index
        } else {
            let index = Rc::new(recovery::load_index(&self.storage, &self.dir, &self.config, &*file, summary).await?);
            self.state.borrow_mut().indexes.insert(base, index.clone());
            index
        };
        Ok((base, index.position_for(from), file, summary.size_bytes))
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
                let index = recovery::load_index(&self.storage, &self.dir, &self.config, &*file, summary).await?;
                index.offset_for_time(t)
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
                        if offset >= from && view.header.first_timestamp.0 + record.timestamp_delta.to_native() >= t.0 {
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
        self.acquire_io_wait().await?;
        self.state.borrow_mut().rolling = true;
        let result = self.truncate_locked(offset).await;
        // A rejected request leaves the log as it was; an I/O failure poisons it.
        let poison = match &result {
            Err(LogError::NotBatchBoundary { .. } | LogError::OffsetOutOfRange { .. }) => None,
            other => other.as_ref().err(),
        };
        self.release_io(poison);
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
            self.state.borrow().active.file.clone()
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
        for base in &doomed {
            let log = log_path(&self.dir, *base);
            self.storage.remove(&log).await.map_err(|e| LogError::io("remove", &log, e))?;
            let index = index_path(&self.dir, *base);
            let _ = self.storage.remove(&index).await;
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
        let active =
            ActiveSegment::new(
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
        self.acquire_io_wait().await?;
        let result = self.close_locked().await;
        if result.is_ok() {
            self.state.borrow_mut().is_closed = true;
        }
        self.release_io(result.as_ref().err());
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
            .map_err(|e| LogError::io("write", &marker_file, e))
    }
}
