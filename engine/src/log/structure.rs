//! Changes to the log's shape: rolling to a new segment, truncating a
//! suffix, deleting old segments, closing. Roll, truncation and close hold
//! the log exclusively (no I/O starts, the I/O in flight lands first);
//! retention does not, because it only removes sealed segments, which no
//! write touches.

use std::rc::Rc;

use super::segment::{ActiveSegment, index_path, log_path};
use super::{LogError, PartitionLog, TRUNCATIONS_REMEMBERED, marker, recovery, scan};
use crate::rt::{DmaFile, Storage};
use crate::types::Offset;

/// Clears the retention flag however the pass ends.
struct RetentionPass<'a, S: Storage> {
    log: &'a PartitionLog<S>,
}

impl<S: Storage> Drop for RetentionPass<'_, S> {
    fn drop(&mut self) {
        self.log.state.borrow_mut().retention_running = false;
        self.log.io_done.notify_all();
    }
}

impl<S: Storage> PartitionLog<S> {
    /// Seals the active segment and starts a new one at the log end offset
    /// (the end of its last batch: segments continue each other exactly,
    /// and a gap a batch placed by its offsets leaves lies inside a
    /// segment). A full disk leaves the log as it was, usable; any other
    /// failure poisons it.
    pub async fn roll(&self) -> Result<(), LogError> {
        self.acquire_exclusive(false).await?;
        let result = self.roll_locked().await;
        self.release_exclusive(result.as_ref().err());
        result
    }

    async fn roll_locked(&self) -> Result<(), LogError> {
        let config = self.config();
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
        // Drop the O_DIRECT padding and the pre-allocated space, so a sealed
        // segment's size is exactly its batches; fdatasync makes it durable.
        file.truncate(summary.size_bytes).await.map_err(|e| LogError::io("truncate", &path, e))?;
        self.state.borrow_mut().active.allocated_bytes = summary.size_bytes;
        file.fdatasync().await.map_err(|e| LogError::sync_failed(&path, e))?;
        let index_file = index_path(&self.dir, summary.base_offset);
        self.storage
            .write_file_atomic(&index_file, &index.encode())
            .await
            .map_err(|e| LogError::io("write", &index_file, e))?;
        let active = match recovery::create_segment(&self.storage, &self.dir, &config, summary.next_offset).await {
            Ok(active) => active,
            Err(e) => {
                // The segment stays active and appends go on into it: the
                // index just written, and a new file that may exist, would
                // describe a roll that did not happen (recovery row R10).
                // Undo both, or poison the log if that fails too.
                self.undo_roll(summary.base_offset, summary.next_offset).await?;
                return Err(e);
            }
        };
        let mut s = self.state.borrow_mut();
        debug_assert_eq!(s.next_offset, summary.next_offset, "the log end is the end of the last batch");
        s.closed.insert(summary.base_offset, summary);
        self.pool.index_insert(self.id, summary.base_offset, Rc::new(index));
        s.files.insert(summary.base_offset, file);
        s.active = active;
        Ok(())
    }

    /// Takes back what a failed roll left on disk: the sealed index of the
    /// segment that stays active, and the new segment's file if it exists
    /// and is empty (one holding data is never removed: the log is poisoned
    /// instead).
    async fn undo_roll(&self, active_base: Offset, new_base: Offset) -> Result<(), LogError> {
        let io = |op: &'static str, path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| LogError::Io { op, path, source }
        };
        let index = index_path(&self.dir, active_base);
        self.storage.remove_if_exists(&index).await.map_err(io("remove", &index))?;
        let new = log_path(&self.dir, new_base);
        match self.storage.open_dma(&new, crate::rt::OpenMode::Existing).await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("open", &new)(e)),
            Ok(file) => {
                let size = file.size().await.map_err(io("stat", &new))?;
                file.close().await.map_err(io("close", &new))?;
                if size != 0 {
                    return Err(LogError::corruption(&new, 0, "a segment to be created already holds data"));
                }
                self.storage.remove(&new).await.map_err(io("remove", &new))?;
            }
        }
        self.storage.sync_dir(&self.dir).await.map_err(io("sync", &self.dir))
    }

    /// Removes every record at or after `offset`: an offset between the log
    /// start and end that is not inside a batch (it may lie in a gap). The
    /// log end becomes the end of the last batch left, `offset` or below.
    /// Replication uses this to drop a diverged suffix. An append whose
    /// batch is removed fails with [`LogError::Truncated`] at once.
    pub async fn truncate_to(&self, offset: Offset) -> Result<(), LogError> {
        self.acquire_exclusive(true).await?;
        self.state.borrow_mut().pending_cut = Some(offset);
        let result = self.truncate_locked(offset).await;
        self.state.borrow_mut().pending_cut = None;
        // A rejected request leaves the log as it was; an I/O failure poisons it.
        let poison = match &result {
            Err(LogError::NotBatchBoundary { .. } | LogError::OffsetOutOfRange { .. }) => None,
            other => other.as_ref().err(),
        };
        self.release_exclusive(poison);
        result
    }

    async fn truncate_locked(&self, offset: Offset) -> Result<(), LogError> {
        let config = self.config();
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
            config.batch_bytes_max,
            config.index_interval_bytes,
            Some(offset),
            crate::types::Timestamp(self.storage.now_ms()),
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
        // part way leaves a run of segments in order (recovery row R9).
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
        file.fdatasync().await.map_err(|e| LogError::sync_failed(&path, e))?;
        self.storage.sync_dir(&self.dir).await.map_err(|e| LogError::io("sync", &self.dir, e))?;
        let tail = recovery::read_tail_block(&*file, new_size).await.map_err(|e| LogError::io("read", &path, e))?;
        let active = ActiveSegment::new(
            file,
            scan.index,
            self.storage.now_ms(),
            &tail,
            new_size,
            config.write_bytes_max,
            config.write_buffer_bytes_max,
        );
        let forget_checkpoint = {
            let mut s = self.state.borrow_mut();
            s.closed.retain(|b, _| *b < target_base);
            self.pool.index_retain(self.id, |b| b < target_base);
            s.files.retain(|b, _| *b < target_base);
            self.pool.read_ahead_retain(self.id, |b| b < target_base);
            self.pool.cache_truncate(self.id, offset);
            // What the cleaner checkpoint says may be cut now: forget it (the
            // file too, below), so a restart does not trust it either.
            let forget_checkpoint = s.cleaned_through > offset;
            s.cleaned_through = s.cleaned_through.min(offset);
            s.truncations += 1;
            let epoch = s.truncations;
            s.recent_truncations.push_back((epoch, offset));
            if s.recent_truncations.len() > TRUNCATIONS_REMEMBERED {
                s.recent_truncations.pop_front();
            }
            let end = active.index.summary.next_offset;
            s.active = active;
            s.next_offset = end;
            s.written_offset = end;
            s.durable_offset = end;
            forget_checkpoint
        };
        if forget_checkpoint {
            let path = self.dir.join(super::compact::CHECKPOINT_FILE);
            self.storage.remove_if_exists(&path).await.map_err(|e| LogError::io("remove", &path, e))?;
            self.storage.sync_dir(&self.dir).await.map_err(|e| LogError::io("sync", &self.dir, e))?;
        }
        Ok(())
    }

    /// Deletes sealed segments that fall outside the retention limits and
    /// advances the log start offset; returns how many were deleted. Time
    /// goes by each segment's newest *append* time (the log's clock), so a
    /// producer's clock cannot expire data. An active segment whose newest
    /// append is past `retention_ms` (an idle partition) is rolled first, as
    /// Kafka does, so idle data expires too; that roll is the only moment a
    /// pass holds the log, and it happens once per idle segment. Appends,
    /// syncs and reads go on meanwhile: a read that meets
    /// a deleted segment gets `OffsetOutOfRange`. A log without retention
    /// returns at once, and a pass is skipped while the log is held for a
    /// roll, truncation or close (the next pass does it).
    pub async fn enforce_retention(&self) -> Result<usize, LogError> {
        let (retention_ms, retention_bytes) = {
            let c = self.cfg();
            (c.retention_ms, c.retention_bytes)
        };
        if retention_ms.is_none() && retention_bytes.is_none() {
            return Ok(0);
        }
        let now = self.storage.now_ms();
        let idle_expired = retention_ms.is_some_and(|ms| {
            let s = self.state.borrow();
            s.active.size_bytes() > 0 && !s.exclusive && s.active.index.summary.max_append_time.0 < now - ms
        });
        if idle_expired {
            match Box::pin(self.roll()).await {
                // The disk is full: the next pass tries again.
                Ok(()) | Err(LogError::DiskFull { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        {
            let mut s = self.state.borrow_mut();
            s.usable()?;
            if s.exclusive || s.retention_running {
                return Ok(0);
            }
            s.retention_running = true;
        }
        let _pass = RetentionPass { log: self };
        let mut deleted = 0;
        loop {
            let doomed = {
                let mut s = self.state.borrow_mut();
                let total: u64 = s.closed.values().map(|c| c.size_bytes).sum::<u64>() + s.active.size_bytes();
                let Some((&base, &oldest)) = s.closed.iter().next() else { break };
                let too_old = retention_ms.is_some_and(|ms| oldest.max_append_time.0 < now - ms);
                let too_big = retention_bytes.is_some_and(|max| total - oldest.size_bytes >= max);
                if !(too_old || too_big) {
                    break;
                }
                // Readers stop seeing the segment before its file goes.
                s.closed.remove(&base);
                let next_start = s.closed.keys().next().copied().unwrap_or(s.active.index.summary.base_offset);
                s.log_start = next_start;
                self.pool.cache_trim_front(self.id, next_start);
                self.pool.index_retain(self.id, |b| b != base);
                s.files.retain(|b, _| *b != base);
                self.pool.read_ahead_retain(self.id, |b| b != base);
                base
            };
            self.io_done.notify_all();
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
        self.acquire_exclusive(true).await?;
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
        let clean = marker::CleanMarker {
            active_base: summary.base_offset,
            active_size_bytes: summary.size_bytes,
            next_offset: summary.next_offset,
        };
        let marker_file = self.dir.join(marker::MARKER_FILE);
        self.storage
            .write_file_atomic(&marker_file, &clean.encode())
            .await
            .map_err(|e| LogError::io("write", &marker_file, e))?;
        self.close_files().await
    }

    /// Closes the files now rather than leaving it to their drop: a dropped
    /// glommio file is closed only at the executor's next I/O cycle, and an
    /// executor that stops first leaks the descriptor (and, for a deleted
    /// segment, its disk space).
    async fn close_files(&self) -> Result<(), LogError> {
        let files: Vec<Rc<S::File>> = {
            let mut s = self.state.borrow_mut();
            let mut files: Vec<Rc<S::File>> = s.files.drain().into_iter().map(|(_, f)| f).collect();
            files.extend(s.active.take_file());
            files
        };
        let mut first_error = None;
        for file in files {
            if let Ok(file) = Rc::try_unwrap(file)
                && let Err(e) = file.close().await
            {
                first_error.get_or_insert(LogError::io("close", &self.dir, e));
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Stops using the log without writing anything more, for a log that
    /// must be reopened (poisoned, or its disk was full): refuses new work,
    /// waits for the I/O in flight to land, closes the files. What the disk
    /// holds is then what the next open recovers; what was acknowledged is
    /// on it, by the flush policy's promise.
    pub async fn abandon(&self) {
        self.state.borrow_mut().is_closed = true;
        self.io_done.notify_all();
        // A roll or truncation in progress finishes (or fails) first.
        let _ = self.take_exclusive(false).await;
        self.io_quiet(true).await;
        let _ = self.close_files().await;
    }
}
