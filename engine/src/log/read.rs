//! Reading: recent batches from the core's cache, older ones from disk
//! through the sparse indexes, CRC-checked, never past the high watermark.
//! Offsets may have gaps: a read at an offset no record holds starts at the
//! next batch, in the same segment or a later one.

use std::rc::Rc;

use bytes::Bytes;

use super::segment::log_path;
use super::{LogError, PartitionLog, ReadResult, SegmentIndex, SegmentSummary, recovery};
use crate::batch::{BATCH_HEADER_BYTES_MIN, BATCH_VERSION_V1, BatchError, BatchHeader, validate_batch};
use crate::rt::{DmaFile, OpenMode, Storage};
use crate::types::{Offset, Timestamp};

/// What a read of one segment found.
enum Cold {
    Batches(Vec<Bytes>),
    /// Nothing at or after the offset in this sealed segment: the next
    /// segment starts at this offset, after a gap.
    PastSegment(Offset),
}

/// Where a read of one segment starts.
struct Located<F> {
    base: Offset,
    /// The batch the sparse index points at: its offset and byte position.
    entry: (Offset, u64),
    file: Rc<F>,
    /// Bytes of the segment that may be read.
    limit: u64,
    /// The next segment's base, if this one is sealed.
    next_segment: Option<Offset>,
}

impl<S: Storage> PartitionLog<S> {
    /// Reads whole batches from the one holding `from` (or the first after
    /// it), up to `bytes_max` (at least one batch), below the high watermark.
    pub async fn read(&self, from: Offset, bytes_max: usize) -> Result<ReadResult, LogError> {
        loop {
            let epoch = self.read_epoch();
            let result = self.read_once(from, bytes_max).await;
            // A truncation while the read was on the disk may have cut what it
            // read, and a compaction swap may have replaced the segment under
            // it: read again.
            if self.read_epoch() != epoch {
                continue;
            }
            return match result {
                // Retention deleted the segment while the read was on its way
                // to it: the offset is gone, which is not a storage failure.
                Err(LogError::Io { .. } | LogError::Corruption { .. }) if from < self.log_start_offset() => {
                    let s = self.state.borrow();
                    Err(LogError::OffsetOutOfRange {
                        requested: from,
                        log_start: s.log_start,
                        high_watermark: self.hw(&s),
                    })
                }
                other => other,
            };
        }
    }

    /// What a replicated leader sends a follower from memory: whole batches
    /// from `from` up to the log end, placed but perhaps not yet written or
    /// durable, if the core's cache holds them. `None`: a cold read.
    pub fn read_cached(&self, from: Offset, bytes_max: usize) -> Option<Vec<Bytes>> {
        let s = self.state.borrow();
        if s.is_closed || from < s.log_start || from >= s.next_offset {
            return None;
        }
        self.pool.cache_read(self.id, from, s.next_offset, bytes_max)
    }

    /// Completes once the log ends past `offset` (a batch appended there
    /// is placed in memory, so [`PartitionLog::read_cached`] has it), or
    /// the log is closed. A leader's append takes its place in line at
    /// once but is placed when its task runs; a follower's fetch for it
    /// waits here rather than a whole fetch wait. Callers bound the wait
    /// (a truncation can make it never come).
    pub async fn wait_placed(&self, offset: Offset) -> Result<(), LogError> {
        loop {
            let placed = self.placed.notified();
            {
                let s = self.state.borrow();
                if s.is_closed {
                    return Err(LogError::Closed);
                }
                if s.next_offset > offset {
                    return Ok(());
                }
            }
            placed.await;
        }
    }

    /// A replicated leader's read for a follower: past the high watermark,
    /// up to what is written (the cache first, then the disk).
    pub async fn read_replica(&self, from: Offset, bytes_max: usize) -> Result<Vec<Bytes>, LogError> {
        if let Some(batches) = self.read_cached(from, bytes_max) {
            return Ok(batches);
        }
        loop {
            let (epoch, end) = {
                let s = self.state.borrow();
                if s.is_closed {
                    return Err(LogError::Closed);
                }
                if from < s.log_start || from > s.written_offset {
                    return Err(LogError::OffsetOutOfRange {
                        requested: from,
                        log_start: s.log_start,
                        high_watermark: self.hw(&s),
                    });
                }
                if from == s.written_offset {
                    return Ok(Vec::new());
                }
                ((s.truncations, s.swaps), s.written_offset)
            };
            let mut at = from;
            let result = loop {
                match self.read_cold(at, from, end, bytes_max).await {
                    Ok(Cold::Batches(batches)) => break Ok(batches),
                    Ok(Cold::PastSegment(next)) => at = next,
                    Err(e) => break Err(e),
                }
            };
            if self.read_epoch() == epoch {
                return result;
            }
        }
    }

    /// What changes when a read must be done again: truncations and
    /// compaction swaps so far.
    fn read_epoch(&self) -> (u64, u64) {
        let s = self.state.borrow();
        (s.truncations, s.swaps)
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
            if let Some(batches) = self.pool.cache_read(self.id, from, hw, bytes_max) {
                return Ok(ReadResult { batches, high_watermark: hw, log_start_offset: log_start });
            }
            (hw, log_start)
        };
        let mut at = from;
        loop {
            match self.read_cold(at, from, hw, bytes_max).await? {
                Cold::Batches(batches) => {
                    return Ok(ReadResult { batches, high_watermark: hw, log_start_offset: log_start });
                }
                Cold::PastSegment(next) => at = next,
            }
        }
    }

    /// Reads the segment holding `at`, keeping batches that end after `from`.
    async fn read_cold(&self, at: Offset, from: Offset, end: Offset, bytes_max: usize) -> Result<Cold, LogError> {
        let Located { base, entry: (mut expected, mut position), file, limit, next_segment } = self.locate(at).await?;
        let path = log_path(&self.dir, base);
        let mut out = Vec::new();
        let mut total = 0usize;
        while position < limit {
            let chunk = self.chunk_at(base, &file, position, limit, bytes_max.saturating_sub(total)).await?;
            let mut at = 0usize;
            while at + BATCH_HEADER_BYTES_MIN <= chunk.len() {
                let corrupt = |reason: String| LogError::corruption(&path, position + at as u64, reason);
                let header = match validate_batch(&chunk[at..]) {
                    Ok(view) => view.header,
                    // Runs past this chunk: read on from here (a batch that
                    // runs past the segment is caught below as `at == 0`).
                    Err(BatchError::Truncated { .. }) => break,
                    Err(e) => return Err(corrupt(e.to_string())),
                };
                let length = header.batch_length as usize;
                // Offsets never go back; a version 1 base offset (outside
                // any checksum) must continue its predecessor exactly.
                let base_offset = header.base_offset;
                if base_offset < expected || (header.version == BATCH_VERSION_V1 && base_offset != expected) {
                    return Err(corrupt(format!("offset {base_offset} where {expected} was expected")));
                }
                let next = header.next_offset();
                if next > end || (!out.is_empty() && total + length > bytes_max) {
                    return Ok(Cold::Batches(out));
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
        match next_segment {
            Some(next) if out.is_empty() => Ok(Cold::PastSegment(next)),
            _ => Ok(Cold::Batches(out)),
        }
    }

    /// A chunk of the segment starting at `position` that holds at least the
    /// batch there: from the core's read-ahead cache, or one DMA read of at
    /// least `read_ahead_bytes`.
    async fn chunk_at(
        &self,
        base: Offset,
        file: &Rc<S::File>,
        position: u64,
        limit: u64,
        want: usize,
    ) -> Result<Bytes, LogError> {
        if let Some(sliced) = self.pool.read_ahead_find(self.id, base, position, BATCH_HEADER_BYTES_MIN as u64) {
            let length = BatchHeader::decode(&sliced).map_or(usize::MAX, |h| h.batch_length as usize);
            if length <= sliced.len() {
                return Ok(sliced);
            }
        }
        let epoch = self.read_epoch();
        let (read_ahead, batch_max) = {
            let c = self.cfg();
            (c.read_ahead_bytes, c.batch_bytes_max as usize)
        };
        let len = (want.max(read_ahead).max(batch_max) as u64).min(limit - position);
        let chunk = file
            .read_at(position, len as usize)
            .await
            .map_err(|e| LogError::io("read", log_path(&self.dir, base), e))?;
        let mut s = self.state.borrow_mut();
        if (s.truncations, s.swaps) == epoch {
            self.pool.read_ahead_insert(self.id, base, position, chunk.clone());
        }
        s.stats.cold_reads += 1;
        s.stats.bytes_read += chunk.len() as u64;
        Ok(chunk)
    }

    /// The segment holding `from` and where in it to start.
    async fn locate(&self, from: Offset) -> Result<Located<S::File>, LogError> {
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
                let next = s.closed.range(base.next()..).next().map_or(s.active.index.summary.base_offset, |(&b, _)| b);
                Some((base, summary, next))
            }
        };
        let Some((base, summary, next)) = closed else {
            let s = self.state.borrow();
            let a = &s.active;
            let file = a.try_file().ok_or(LogError::Closed)?.clone();
            return Ok(Located {
                base: a.index.summary.base_offset,
                entry: a.index.entry_for(from),
                file,
                limit: a.readable_bytes,
                next_segment: None,
            });
        };
        let file = self.segment_file(base).await?;
        let index = self.segment_index(&file, summary).await?;
        Ok(Located { base, entry: index.entry_for(from), file, limit: summary.size_bytes, next_segment: Some(next) })
    }

    /// A sealed segment's sparse indexes, through the core's index cache.
    pub(super) async fn segment_index(
        &self,
        file: &S::File,
        summary: SegmentSummary,
    ) -> Result<Rc<SegmentIndex>, LogError> {
        if let Some(index) = self.pool.index_get(self.id, summary.base_offset) {
            return Ok(index);
        }
        let config = self.config();
        let swaps = self.state.borrow().swaps;
        let index = Rc::new(recovery::load_index(&self.storage, &self.dir, &config, Some(file), summary).await?);
        let s = self.state.borrow();
        if s.swaps == swaps && s.closed.get(&summary.base_offset) == Some(&summary) {
            self.pool.index_insert(self.id, summary.base_offset, index.clone());
        }
        Ok(index)
    }

    pub(super) async fn segment_file(&self, base: Offset) -> Result<Rc<S::File>, LogError> {
        if let Some(file) = self.state.borrow_mut().files.get(base) {
            return Ok(file);
        }
        let path = log_path(&self.dir, base);
        let swaps = self.state.borrow().swaps;
        let file = Rc::new(
            self.storage.open_dma(&path, OpenMode::Existing).await.map_err(|e| LogError::io("open", &path, e))?,
        );
        // Retention may have deleted the segment while it was being opened,
        // or compaction replaced it: then the handle serves this read only,
        // and is not kept (it would hold the old file's space).
        let mut s = self.state.borrow_mut();
        if s.closed.contains_key(&base) && s.swaps == swaps {
            s.files.insert(base, file.clone());
        }
        Ok(file)
    }

    /// Returns once a reader at `offset` has something to read: a batch
    /// ending after it is below the high watermark, or it fell below the log
    /// start (the read will then say so). Long-polling fetches wait here,
    /// bounded by their own timer.
    pub async fn wait_for_data(&self, offset: Offset) -> Result<(), LogError> {
        loop {
            {
                let s = self.state.borrow();
                s.usable()?;
                if self.has_data_at(offset) || offset < s.log_start {
                    return Ok(());
                }
            }
            self.io_done.notified().await;
        }
    }

    /// Whether a read at `offset` would return a batch now.
    pub fn has_data_at(&self, offset: Offset) -> bool {
        let s = self.state.borrow();
        // The end of the data: after a truncation into a gap the log end
        // (and so the high watermark) may lie past the last batch.
        let data_end = s.active.index.summary.next_offset;
        self.hw(&s).min(data_end) > offset
    }

    /// The offset of the first record whose timestamp is at or after `t`,
    /// `None` if every visible record is older.
    pub async fn offset_for_timestamp(&self, t: Timestamp) -> Result<Option<Offset>, LogError> {
        loop {
            let epoch = self.read_epoch();
            let result = self.offset_for_timestamp_once(t).await;
            // A compaction swap under the index lookup: look again.
            if result.is_ok() || self.read_epoch() == epoch {
                return result;
            }
        }
    }

    async fn offset_for_timestamp_once(&self, t: Timestamp) -> Result<Option<Offset>, LogError> {
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
                let looked_up = async {
                    let file = self.segment_file(summary.base_offset).await?;
                    Ok::<_, LogError>(self.segment_index(&file, summary).await?.offset_for_time(t))
                };
                match looked_up.await {
                    Ok(from) => from,
                    // Retention deleted the segment meanwhile: search on
                    // from the new log start.
                    Err(_) if !self.state.borrow().closed.contains_key(&summary.base_offset) => self.log_start_offset(),
                    Err(e) => return Err(e),
                }
            }
            None => self.state.borrow().active.index.offset_for_time(t),
        };
        from = from.max(self.log_start_offset());
        let read_ahead = self.cfg().read_ahead_bytes;
        loop {
            let read = match self.read(from, read_ahead).await {
                Ok(read) => read,
                Err(LogError::OffsetOutOfRange { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            if read.batches.is_empty() {
                return Ok(None);
            }
            for bytes in &read.batches {
                let view = validate_batch(bytes)?;
                if view.header.effective_max_timestamp() >= t {
                    for record in view.records()?.iter() {
                        let offset = view.header.base_offset.plus(u64::from(record.offset_delta.to_native()));
                        if offset >= from && view.header.record_timestamp(record.timestamp_delta.to_native()) >= t {
                            return Ok(Some(offset));
                        }
                    }
                }
                from = from.max(view.header.next_offset());
            }
        }
    }
}
