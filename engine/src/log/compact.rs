//! Log compaction: keeping the latest record of every key, so a new reader
//! of an entity stream reaches the current state without all its history.
//!
//! A pass works on the *cleanable* segments: the sealed ones, from the log
//! start, that end at or below the high watermark and whose newest append
//! is older than `min_compaction_lag_ms` (the active segment and anything
//! unreplicated are never touched). The part of them not cleaned before,
//! from the cleaner's checkpoint on, is *dirty*. A pass
//!
//! 1. maps every key of the dirty part to its newest offset, in a map of at
//!    most `map_bytes_max` (plus one batch): a full map ends the pass early,
//!    at a batch boundary, and the next pass goes on from there;
//! 2. rewrites each segment from the log start up to where the map ends,
//!    oldest first, dropping a record whose key the map holds at a later
//!    offset, and a tombstone the map holds (so every older record of its key
//!    is dropped in this same pass) whose batch was appended more than
//!    `delete_retention_ms` ago. Records keep their offsets (gaps are fine);
//!    keyless records, control batches and batches of other formats are kept
//!    as they are; a batch none of whose records changed is copied byte for
//!    byte, and a segment none of whose batches changed is not rewritten;
//! 3. saves the checkpoint: where the map ended, and when.
//!
//! A rewritten segment goes to `<base>.log.cleaned` (synced), then the swap:
//! the old index is removed, the cleaned file renamed over the segment (each
//! step made durable with a directory sync), and a new index written. A
//! crash at any point leaves the old segment or the new one, each whole
//! (a leftover `.cleaned` file is removed and a missing index rebuilt at
//! open, recovery rows R2 and R8); and because segments are swapped oldest
//! first, a record is only ever dropped after (or together with) nothing
//! that supersedes it. A segment keeps the offsets it covered: a rewritten
//! batch keeps its `last_offset_delta`, and a segment's last batch that lost
//! every record stays as an emptied batch (no records), so segments still
//! continue each other exactly (R9).
//!
//! The pass never holds the log: appends, syncs and reads go on. Only the
//! swap itself briefly excludes truncation, retention and close, as a
//! retention pass does; reads that met a swap read again. A compaction error
//! does not poison the log (the appends are not at risk): the pass stops,
//! its temporary file is removed, and the next pass starts over.

use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;

use super::segment::{index_path, log_path};
use super::{LogError, PartitionLog, SegmentSummary, scan};
use crate::batch::{
    BATCH_HEADER_BYTES_MIN, BATCH_VERSION, BatchEncoder, BatchHeader, HeaderRef, PayloadFormat, RecordRef,
    validate_batch,
};
use crate::rt::{BLOCK_BYTES, DmaFile, IoBuf, OpenMode, Storage, align_up};
use crate::types::{Offset, Timestamp};

/// The file that says how far the log has been cleaned.
pub(crate) const CHECKPOINT_FILE: &str = "cleaner.checkpoint";
const CHECKPOINT_MAGIC: u32 = u32::from_le_bytes(*b"CRNK");
const CHECKPOINT_VERSION: u16 = 2;
const CHECKPOINT_BYTES: usize = 36;
/// Version 1 had no oldest tombstone.
const CHECKPOINT_V1_BYTES: usize = 28;

/// What a map entry costs beyond its key's bytes (the table slot, the boxed
/// key's header, the offset), for the bound on the map.
const MAP_ENTRY_OVERHEAD_BYTES: usize = 48;

/// The rules of a compaction pass (the topic's settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// A tombstone stays this long after its append (`delete.retention.ms`).
    pub delete_retention_ms: i64,
    /// A segment is cleaned only once its newest append is this old
    /// (`min.compaction.lag.ms`).
    pub min_compaction_lag_ms: i64,
    /// The key→offset map's bound, in bytes (keys plus their entries).
    pub map_bytes_max: usize,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy { delete_retention_ms: 24 * 3600 * 1000, min_compaction_lag_ms: 0, map_bytes_max: 64 << 20 }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Segments rewritten and swapped in.
    pub segments_rewritten: usize,
    /// Bytes of batches read (mapping and rewriting).
    pub bytes_read: u64,
    /// Bytes of the segments written.
    pub bytes_written: u64,
    /// Bytes by which the rewritten segments shrank.
    pub bytes_removed: u64,
    /// Records dropped because a later one has their key.
    pub records_removed: u64,
    /// Tombstones dropped after `delete_retention_ms`.
    pub tombstones_removed: u64,
    /// The log is clean below this offset now (unchanged if the pass had
    /// nothing to do).
    pub cleaned_through: Offset,
    /// The map filled up before the dirty part ended: another pass is due.
    pub more: bool,
}

/// How dirty the log is, for the cleaner's schedule and for operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanerStatus {
    /// Everything below this was cleaned by a pass.
    pub cleaned_through: Offset,
    /// Bytes of sealed segments at or below the high watermark.
    pub cleanable_bytes: u64,
    /// Bytes of those segments that end after `cleaned_through`.
    pub dirty_bytes: u64,
    /// The oldest newest-append time of a dirty segment (for
    /// `max.compaction.lag.ms`), if there is a dirty segment.
    pub oldest_dirty_append_ms: Option<i64>,
    /// When the last pass that did something ended (the log's clock).
    pub last_clean_ms: Option<i64>,
    /// The oldest append time of a tombstone the clean part keeps that a
    /// pass may drop once it is `delete_retention_ms` old.
    pub oldest_tombstone_ms: Option<i64>,
    /// When the active segment's first batch was appended, if it holds one
    /// (for `max.compaction.lag.ms`: it is rolled so it can be cleaned).
    pub active_first_append_ms: Option<i64>,
}

impl CleanerStatus {
    /// Dirty bytes over cleanable bytes (0 when nothing is cleanable).
    #[must_use]
    pub fn dirty_ratio(&self) -> f64 {
        if self.cleanable_bytes == 0 { 0.0 } else { self.dirty_bytes as f64 / self.cleanable_bytes as f64 }
    }
}

/// Paces a pass: told how many bytes it has just read or written, it may
/// wait (the cleaner's rate limit), so a pass never takes the disk from
/// appends.
pub trait Pace {
    async fn pace(&mut self, bytes: u64);
}

/// No pacing: as fast as the disk goes (tests, tools).
impl Pace for () {
    async fn pace(&mut self, _bytes: u64) {}
}

/// The saved cleaner state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub cleaned_through: Offset,
    pub last_clean_ms: i64,
    /// The oldest append time of a tombstone the clean part keeps that a
    /// later pass may drop; `None`: there is none. Version 1 did not say:
    /// read as `i64::MIN` (due at once; that pass finds the real one).
    pub oldest_tombstone_ms: Option<i64>,
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CHECKPOINT_BYTES);
        out.extend_from_slice(&CHECKPOINT_MAGIC.to_le_bytes());
        out.extend_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&self.cleaned_through.0.to_le_bytes());
        out.extend_from_slice(&self.last_clean_ms.to_le_bytes());
        out.extend_from_slice(&self.oldest_tombstone_ms.unwrap_or(i64::MAX).to_le_bytes());
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(out.len(), CHECKPOINT_BYTES);
        out
    }

    /// `None` for anything but an intact checkpoint: the log is then
    /// treated as never cleaned, which costs a pass and loses nothing.
    pub fn decode(bytes: &[u8]) -> Option<Checkpoint> {
        let version = match bytes.len() {
            CHECKPOINT_BYTES => CHECKPOINT_VERSION,
            CHECKPOINT_V1_BYTES => 1,
            _ => return None,
        };
        let body = bytes.len() - 4;
        let crc = u32::from_le_bytes(bytes[body..].try_into().expect("4 bytes"));
        let magic = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
        let stored_version = u16::from_le_bytes(bytes[4..6].try_into().expect("2 bytes"));
        if crc != crc32c::crc32c(&bytes[..body]) || magic != CHECKPOINT_MAGIC || stored_version != version {
            return None;
        }
        let i64_at = |at: usize| i64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        Some(Checkpoint {
            cleaned_through: Offset(u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"))),
            last_clean_ms: i64_at(16),
            oldest_tombstone_ms: if version == 1 {
                Some(i64::MIN)
            } else {
                Some(i64_at(24)).filter(|&t| t != i64::MAX)
            },
        })
    }
}

/// Newest offset of each key of the dirty part, bounded by bytes.
struct KeyMap {
    offsets: HashMap<Box<[u8]>, Offset>,
    bytes: usize,
}

impl KeyMap {
    fn insert(&mut self, key: &[u8], offset: Offset) {
        if let Some(o) = self.offsets.get_mut(key) {
            debug_assert!(*o < offset, "the dirty part is mapped in offset order");
            *o = offset;
        } else {
            self.bytes += key.len() + MAP_ENTRY_OVERHEAD_BYTES;
            self.offsets.insert(key.into(), offset);
        }
    }
}

/// Clears the compaction flag however the pass ends.
struct CompactionPass<'a, S: Storage> {
    log: &'a PartitionLog<S>,
}

impl<S: Storage> Drop for CompactionPass<'_, S> {
    fn drop(&mut self) {
        self.log.state.borrow_mut().compacting = false;
    }
}

/// Reads a sealed segment batch by batch, in large sequential reads that
/// bypass the core's caches (a pass must not evict what readers use).
struct SegmentCursor<F> {
    file: Rc<F>,
    size: u64,
    pos: u64,
    chunk: Bytes,
    chunk_pos: u64,
    read_bytes: usize,
}

impl<F: DmaFile> SegmentCursor<F> {
    fn new(file: Rc<F>, size: u64, read_bytes: usize) -> Self {
        SegmentCursor { file, size, pos: 0, chunk: Bytes::new(), chunk_pos: 0, read_bytes }
    }

    /// The next whole, CRC-checked batch, its header, and where it starts.
    async fn next(&mut self, path: &std::path::Path) -> Result<Option<(u64, BatchHeader, Bytes)>, LogError> {
        if self.pos >= self.size {
            return Ok(None);
        }
        let corrupt = |pos: u64, reason: String| LogError::corruption(path, pos, reason);
        let mut at = (self.pos - self.chunk_pos) as usize;
        let buffered = self.pos >= self.chunk_pos && at + BATCH_HEADER_BYTES_MIN <= self.chunk.len();
        let length = if buffered { BatchHeader::batch_length_at(&self.chunk[at..]) as usize } else { usize::MAX };
        // A length past the segment's end is damage, not a reason to read.
        if buffered && length as u64 > self.size - self.pos {
            return Err(corrupt(self.pos, format!("a batch length of {length} bytes")));
        }
        if !buffered || at + length > self.chunk.len() {
            let want = self.read_bytes.max(if buffered { length } else { 0 });
            let len = (want as u64).min(self.size - self.pos) as usize;
            self.chunk = self.file.read_at(self.pos, len).await.map_err(|e| LogError::io("read", path, e))?;
            self.chunk_pos = self.pos;
            at = 0;
            // A batch larger than a read (one stored before max.message.bytes
            // was lowered): read it whole, by its length.
            if self.chunk.len() >= BATCH_HEADER_BYTES_MIN {
                let length = u64::from(BatchHeader::batch_length_at(&self.chunk));
                if length > self.chunk.len() as u64 && length <= self.size - self.pos {
                    self.chunk = self
                        .file
                        .read_at(self.pos, length as usize)
                        .await
                        .map_err(|e| LogError::io("read", path, e))?;
                }
            }
        }
        let view = validate_batch(&self.chunk[at..]).map_err(|e| corrupt(self.pos, e.to_string()))?;
        let length = view.header.batch_length as usize;
        let start = self.pos;
        self.pos += length as u64;
        Ok(Some((start, view.header, self.chunk.slice(at..at + length))))
    }
}

/// Where segment `base`'s cleaned version is written before the swap.
fn cleaned_path(dir: &std::path::Path, base: Offset) -> std::path::PathBuf {
    dir.join(format!("{:020}.log.cleaned", base.0))
}

/// Whether compaction may look inside the batch: a version 2 batch of
/// Cairn records that is not a control batch.
fn rewritable(header: &BatchHeader) -> bool {
    header.version == BATCH_VERSION && header.payload == PayloadFormat::Cairn && !header.is_control()
}

/// The batch of `header` and `records` again with only the records `keep`
/// says yes to (by offset), keeping its header's identity (its
/// `last_offset_delta` too). `None` if no record is kept.
fn rewrite_batch(
    header: &BatchHeader,
    records: &rkyv::vec::ArchivedVec<crate::batch::ArchivedRecord>,
    mut keep: impl FnMut(Offset) -> bool,
) -> Result<Option<Vec<u8>>, crate::batch::BatchError> {
    let mut encoder = BatchEncoder::new(header.batch_length as usize);
    let mut headers: Vec<HeaderRef<'_>> = Vec::new();
    for record in records.iter() {
        let delta = record.offset_delta.to_native();
        if !keep(header.base_offset.plus(u64::from(delta))) {
            continue;
        }
        headers.clear();
        headers.extend(record.headers.iter().map(|h| HeaderRef { key: h.key.as_str(), value: h.value.as_slice() }));
        let timestamp = Timestamp(header.first_timestamp.0.wrapping_add(record.timestamp_delta.to_native()));
        encoder.push_at(
            delta,
            &RecordRef {
                key: record.key.as_ref().map(rkyv::vec::ArchivedVec::as_slice),
                value: record.value.as_ref().map(rkyv::vec::ArchivedVec::as_slice),
                headers: &headers,
                timestamp,
            },
        )?;
    }
    if encoder.is_empty() {
        return Ok(None);
    }
    encoder.finish_as(header).map(Some)
}

/// What rewriting a segment did. The cleaned file, if a record was
/// dropped: written, not yet synced or checked.
struct Rewritten<F: DmaFile> {
    cleaned: Option<CleanedWriter<F>>,
    records_removed: u64,
    tombstones_removed: u64,
}

/// Writes a cleaned segment as it is produced, through one aligned buffer
/// of `write_bytes_max`: a pass holds one buffer and one read chunk, never
/// a segment.
struct CleanedWriter<F: DmaFile> {
    file: F,
    buf: F::Buf,
    filled: usize,
    pos: u64,
    chunk_bytes: usize,
}

impl<F: DmaFile> CleanedWriter<F> {
    fn new(file: F, chunk_bytes: usize) -> Self {
        debug_assert!(chunk_bytes.is_multiple_of(BLOCK_BYTES));
        let buf = file.alloc(chunk_bytes);
        CleanedWriter { file, buf, filled: 0, pos: 0, chunk_bytes }
    }

    /// Bytes pushed so far.
    fn size(&self) -> u64 {
        self.pos + self.filled as u64
    }

    async fn push(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            let n = bytes.len().min(self.chunk_bytes - self.filled);
            self.buf.as_mut_slice()[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            bytes = &bytes[n..];
            if self.filled == self.chunk_bytes {
                let full = std::mem::replace(&mut self.buf, self.file.alloc(self.chunk_bytes));
                self.file.write_at(full, self.chunk_bytes, self.pos).await?;
                self.pos += self.chunk_bytes as u64;
                self.filled = 0;
            }
        }
        Ok(())
    }

    /// Writes the rest, cuts the file to its batches and syncs it.
    async fn finish(self, path: &std::path::Path) -> Result<(F, u64), LogError> {
        let io = |op: &'static str| move |e| LogError::io(op, path, e);
        let size = self.size();
        let CleanedWriter { file, mut buf, filled, pos, .. } = self;
        if filled > 0 {
            let len = align_up(filled as u64) as usize;
            buf.as_mut_slice()[filled..len].fill(0);
            file.write_at(buf, len, pos).await.map_err(io("write"))?;
        }
        file.truncate(size).await.map_err(io("truncate"))?;
        file.fdatasync().await.map_err(|e| LogError::sync_failed(path, e))?;
        Ok((file, size))
    }
}

impl<S: Storage> PartitionLog<S> {
    /// How far the log is cleaned and how dirty it is.
    pub fn cleaner_status(&self) -> CleanerStatus {
        let s = self.state.borrow();
        let hw = self.hw(&s);
        let cleaned = s.cleaned_through.max(s.log_start);
        let mut status = CleanerStatus {
            cleaned_through: cleaned,
            last_clean_ms: s.last_clean_ms,
            oldest_tombstone_ms: s.oldest_tombstone_ms,
            active_first_append_ms: s.active.first_append_ms,
            ..CleanerStatus::default()
        };
        for c in s.closed.values().take_while(|c| c.next_offset <= hw) {
            status.cleanable_bytes += c.size_bytes;
            if c.next_offset > cleaned {
                status.dirty_bytes += c.size_bytes;
                let t = c.max_append_time.0;
                status.oldest_dirty_append_ms = Some(status.oldest_dirty_append_ms.map_or(t, |o: i64| o.min(t)));
            }
        }
        status
    }

    /// Runs one compaction pass (module docs); `pace` is told of every
    /// read. Returns at once if a pass is already running or there is
    /// nothing dirty to clean.
    pub async fn compact(&self, policy: &CompactionPolicy, pace: &mut impl Pace) -> Result<CompactionReport, LogError> {
        let now = self.storage.now_ms();
        let (segments, start, truncations) = {
            let mut s = self.state.borrow_mut();
            s.usable()?;
            let start = s.cleaned_through.max(s.log_start);
            if s.compacting {
                return Ok(CompactionReport { cleaned_through: start, ..CompactionReport::default() });
            }
            let hw = self.hw(&s);
            let lag = policy.min_compaction_lag_ms;
            let segments: Vec<SegmentSummary> = s
                .closed
                .values()
                .take_while(|c| c.next_offset <= hw && c.max_append_time.0 <= now.saturating_sub(lag))
                .copied()
                .collect();
            let dirty = segments.last().is_some_and(|last| last.next_offset > start);
            let tombstones_due =
                s.oldest_tombstone_ms.is_some_and(|t| t < now.saturating_sub(policy.delete_retention_ms));
            // A pass for tombstones alone must see every clean segment (what
            // it learns replaces what the checkpoint says): not while some
            // are out of its reach (a high watermark not yet known after a
            // restart, a longer min.compaction.lag.ms).
            let reaches_clean = segments.last().is_some_and(|last| last.next_offset >= start);
            if !(dirty || tombstones_due && reaches_clean) {
                return Ok(CompactionReport { cleaned_through: start, ..CompactionReport::default() });
            }
            s.compacting = true;
            (segments, start, s.truncations)
        };
        let _pass = CompactionPass { log: self };
        let mut report = CompactionReport { cleaned_through: start, ..CompactionReport::default() };
        let read_bytes = self.cfg().read_ahead_bytes.max(self.cfg().batch_bytes_max as usize);

        // 1. Map the dirty part.
        let mut map = KeyMap { offsets: HashMap::new(), bytes: 0 };
        let mut dirty_end = start;
        'map: for summary in segments.iter().filter(|c| c.next_offset > start) {
            let path = log_path(&self.dir, summary.base_offset);
            let file = self.segment_file(summary.base_offset).await?;
            let mut cursor = SegmentCursor::new(file, summary.size_bytes, read_bytes);
            while let Some((_, header, bytes)) = cursor.next(&path).await? {
                report.bytes_read += bytes.len() as u64;
                // Checked by the cursor.
                let view = crate::batch::BatchView { header, bytes: &bytes };
                if view.header.next_offset() <= start {
                    continue;
                }
                if map.bytes >= policy.map_bytes_max && dirty_end > start {
                    report.more = true;
                    break 'map;
                }
                if rewritable(&view.header) {
                    for record in view.records()?.iter() {
                        let offset = view.header.base_offset.plus(u64::from(record.offset_delta.to_native()));
                        if let Some(key) = record.key.as_ref()
                            && offset >= start
                        {
                            map.insert(key.as_slice(), offset);
                        }
                    }
                }
                dirty_end = view.header.next_offset();
                pace.pace(bytes.len() as u64).await;
            }
        }
        // With nothing dirty, the pass is for the clean part's tombstones.

        // 2. Rewrite every segment the map reaches, oldest first.
        let delete_before = Timestamp(now.saturating_sub(policy.delete_retention_ms));
        let pass = Pass {
            map: &map,
            start,
            dirty_end,
            delete_before,
            opaque_seen: std::cell::Cell::new(false),
            oldest_tombstone: std::cell::Cell::new(None),
        };
        for summary in segments.iter().filter(|c| c.base_offset < dirty_end) {
            let cleaned = cleaned_path(&self.dir, summary.base_offset);
            let rewritten = match self.rewrite_segment(summary, &pass, read_bytes, pace).await {
                Ok(rewritten) => rewritten,
                Err(e) => {
                    let _ = self.storage.remove_if_exists(&cleaned).await;
                    return Err(e);
                }
            };
            report.bytes_read += summary.size_bytes;
            let Some(writer) = rewritten.cleaned else { continue };
            let (written, swapped) = self.swap_in(summary, writer, truncations).await?;
            if !swapped {
                // Retention or a truncation took the segment meanwhile:
                // this pass is over, the next starts afresh.
                return Ok(report);
            }
            report.segments_rewritten += 1;
            report.bytes_written += written;
            report.bytes_removed += summary.size_bytes.saturating_sub(written);
            report.records_removed += rewritten.records_removed;
            report.tombstones_removed += rewritten.tombstones_removed;
        }

        // 3. Save how far the log is clean, unless a truncation (or a
        // close) came meanwhile: what it left may not be what was mapped.
        {
            let mut s = self.state.borrow_mut();
            if s.truncations != truncations || s.usable().is_err() {
                return Ok(report);
            }
            s.cleaned_through = dirty_end;
            s.last_clean_ms = Some(now);
            s.oldest_tombstone_ms = pass.oldest_tombstone.get();
        }
        report.cleaned_through = dirty_end;
        let checkpoint = Checkpoint {
            cleaned_through: dirty_end,
            last_clean_ms: now,
            oldest_tombstone_ms: pass.oldest_tombstone.get(),
        };
        let path = self.dir.join(CHECKPOINT_FILE);
        self.storage
            .write_file_atomic(&path, &checkpoint.encode())
            .await
            .map_err(|e| LogError::io("write", &path, e))?;
        Ok(report)
    }

    /// Rewrites the segment as compaction leaves it, into its cleaned file
    /// (made at the first dropped record; none if nothing is dropped).
    async fn rewrite_segment(
        &self,
        summary: &SegmentSummary,
        pass: &Pass<'_>,
        read_bytes: usize,
        pace: &mut impl Pace,
    ) -> Result<Rewritten<S::File>, LogError> {
        let path = log_path(&self.dir, summary.base_offset);
        let cleaned = cleaned_path(&self.dir, summary.base_offset);
        let cleaned = cleaned.as_path();
        let io = |op: &'static str| move |e| LogError::io(op, cleaned, e);
        let file = self.segment_file(summary.base_offset).await?;
        let mut cursor = SegmentCursor::new(file.clone(), summary.size_bytes, read_bytes);
        let mut out = Rewritten { cleaned: None, records_removed: 0, tombstones_removed: 0 };
        // The last batch read, if compaction dropped all of it.
        let mut emptied: Option<Bytes> = None;
        while let Some((at, header, bytes)) = cursor.next(&path).await? {
            pace.pace(bytes.len() as u64).await;
            emptied = None;
            let mut dropped: Vec<Offset> = Vec::new();
            // Checked by the cursor; its records, once.
            let records = if rewritable(&header) {
                Some(crate::batch::BatchView { header, bytes: &bytes }.records()?)
            } else {
                None
            };
            if let Some(records) = records {
                for record in records.iter() {
                    let offset = header.base_offset.plus(u64::from(record.offset_delta.to_native()));
                    match pass.doomed(record, offset, &header) {
                        Some(true) => out.tombstones_removed += 1,
                        Some(false) => out.records_removed += 1,
                        None => {
                            pass.kept(record, &header);
                            continue;
                        }
                    }
                    dropped.push(offset);
                }
            } else {
                // A batch whose records compaction cannot see (version 1,
                // another payload format) may hold an older record of any key;
                // a control batch holds none.
                pass.opaque_seen.set(pass.opaque_seen.get() || !header.is_control());
            }
            // Only a batch compaction looked into can have lost a record.
            let Some(records) = records.filter(|_| !dropped.is_empty()) else {
                if let Some(writer) = out.cleaned.as_mut() {
                    writer.push(&bytes).await.map_err(io("write"))?;
                    pace.pace(bytes.len() as u64).await;
                }
                continue;
            };
            if out.cleaned.is_none() {
                // The first change: the cleaned file starts with the
                // segment's batches before it, unchanged.
                self.storage.remove_if_exists(cleaned).await.map_err(io("remove"))?;
                let new = self.storage.open_dma(cleaned, OpenMode::CreateNew).await.map_err(io("create"))?;
                let mut writer = CleanedWriter::new(new, self.cfg().write_bytes_max);
                let mut prefix = SegmentCursor::new(file.clone(), at, read_bytes);
                while let Some((_, _, batch)) = prefix.next(&path).await? {
                    // Read and written: both count against the pace.
                    pace.pace(2 * batch.len() as u64).await;
                    writer.push(&batch).await.map_err(io("write"))?;
                }
                debug_assert_eq!(writer.size(), at, "the prefix is the segment up to the first change");
                out.cleaned = Some(writer);
            }
            let writer = out.cleaned.as_mut().expect("made above");
            let keep = |offset: Offset| dropped.binary_search(&offset).is_err();
            match rewrite_batch(&header, records, keep)? {
                Some(batch) => {
                    writer.push(&batch).await.map_err(io("write"))?;
                    pace.pace(batch.len() as u64).await;
                }
                None => emptied = Some(bytes),
            }
        }
        if let Some(last) = emptied
            && let Some(writer) = out.cleaned.as_mut()
        {
            // The segment's last batch lost every record: it stays, emptied,
            // so the segment still ends where it ended (R9).
            let template = validate_batch(&last)?.header;
            writer.push(&BatchEncoder::new(0).finish_as(&template)?).await.map_err(io("write"))?;
        }
        Ok(out)
    }

    /// Finishes the cleaned file of segment `summary.base_offset` and swaps
    /// it in. Returns the bytes written and whether it was swapped in (not
    /// if the segment changed or went meanwhile).
    async fn swap_in(
        &self,
        summary: &SegmentSummary,
        writer: CleanedWriter<S::File>,
        truncations: u64,
    ) -> Result<(u64, bool), LogError> {
        let base = summary.base_offset;
        let path = log_path(&self.dir, base);
        let cleaned = cleaned_path(&self.dir, base);
        let written = match self.check_cleaned(&cleaned, summary, writer).await {
            Ok(written) => written,
            Err(e) => {
                let _ = self.storage.remove_if_exists(&cleaned).await;
                return Err(e);
            }
        };
        let (file, index) = written;
        // Take the swap slot: no truncation, retention or close meanwhile.
        loop {
            let ready = {
                let mut s = self.state.borrow_mut();
                // A truncation since the map was made (none reaches below the
                // high watermark today; should one, the map may be stale).
                if s.usable().is_err() || s.closed.get(&base) != Some(summary) || s.truncations != truncations {
                    None
                } else if s.exclusive || s.retention_running {
                    Some(false)
                } else {
                    s.retention_running = true;
                    s.swaps += 1;
                    Some(true)
                }
            };
            match ready {
                Some(true) => break,
                Some(false) => self.io_done.notified().await,
                None => {
                    drop(file);
                    let _ = self.storage.remove_if_exists(&cleaned).await;
                    return Ok((0, false));
                }
            }
        }
        let result = self.swap_locked(&path, &cleaned, summary, file, index).await;
        {
            let mut s = self.state.borrow_mut();
            s.retention_running = false;
            s.swaps += 1;
        }
        self.io_done.notify_all();
        result.map(|size| (size, true))
    }

    async fn swap_locked(
        &self,
        path: &std::path::Path,
        cleaned: &std::path::Path,
        summary: &SegmentSummary,
        file: Rc<S::File>,
        mut index: super::SegmentIndex,
    ) -> Result<u64, LogError> {
        let base = summary.base_offset;
        let sync = async || self.storage.sync_dir(&self.dir).await.map_err(|e| LogError::io("sync", &self.dir, e));
        let index_file = index_path(&self.dir, base);
        if let Err(e) = self.storage.remove_if_exists(&index_file).await {
            let _ = self.storage.remove_if_exists(cleaned).await;
            return Err(LogError::io("remove", &index_file, e));
        }
        sync().await?;
        self.storage.rename(cleaned, path).await.map_err(|e| LogError::io("rename", cleaned, e))?;
        // From here the new segment is the segment, whatever happens next.
        index.summary.max_append_time = index.summary.max_append_time.max(summary.max_append_time);
        let size = index.summary.size_bytes;
        {
            let mut s = self.state.borrow_mut();
            // Readers that began before this point may cache what they
            // read of the old file: they see the change and do not.
            s.swaps += 1;
            s.closed.insert(base, index.summary);
            s.files.retain(|b, _| *b != base);
            s.files.insert(base, file);
            self.pool.read_ahead_retain(self.id, |b| b != base);
            self.pool.index_retain(self.id, |b| b != base);
            self.pool.index_insert(self.id, base, Rc::new(index.clone()));
            self.pool.cache_trim_front(self.id, summary.next_offset);
        }
        // Whether the rename is durable is unknown after a failed sync: a
        // later swap must not land without it, so the log is poisoned (the
        // reopen recovers whichever segment the disk holds).
        if let Err(e) = sync().await {
            self.poison(&mut self.state.borrow_mut(), &e);
            return Err(e);
        }
        self.storage
            .write_file_atomic(&index_file, &index.encode())
            .await
            .map_err(|e| LogError::io("write", &index_file, e))?;
        Ok(size)
    }

    /// Syncs the cleaned segment and checks it by scanning it back.
    async fn check_cleaned(
        &self,
        cleaned: &std::path::Path,
        summary: &SegmentSummary,
        writer: CleanedWriter<S::File>,
    ) -> Result<(Rc<S::File>, super::SegmentIndex), LogError> {
        let (file, size) = writer.finish(cleaned).await?;
        let io = |op: &'static str| move |e| LogError::io(op, cleaned, e);
        let config = self.config();
        let scan = scan::scan_segment(
            &file,
            summary.base_offset,
            size,
            config.batch_bytes_max,
            config.index_interval_bytes,
            None,
            Timestamp(self.storage.now_ms()),
        )
        .await
        .map_err(io("read"))?;
        let index = scan.index;
        // What was just written reads back whole and ends where the segment
        // ended; anything else is damage, and nothing is swapped in.
        if scan.stop != scan::ScanStop::End
            || index.summary.size_bytes != size
            || index.summary.next_offset != summary.next_offset
        {
            return Err(LogError::corruption(cleaned, index.summary.size_bytes, format!("{:?}", scan.stop)));
        }
        Ok((Rc::new(file), index))
    }
}

/// What a rewrite goes by.
struct Pass<'a> {
    map: &'a KeyMap,
    /// Where the dirty part starts: below it, the log was cleaned before.
    start: Offset,
    /// Where the map ends.
    dirty_end: Offset,
    /// Tombstones appended before this have had their `delete_retention_ms`.
    delete_before: Timestamp,
    /// A batch compaction cannot look into (version 1) came before: it may
    /// hold an older record of any key, so no tombstone goes after it.
    opaque_seen: std::cell::Cell<bool>,
    /// The oldest append time of a kept tombstone a later pass may drop.
    oldest_tombstone: std::cell::Cell<Option<i64>>,
}

impl Pass<'_> {
    /// Notes a record the pass keeps: a tombstone some later pass may drop
    /// (none after an opaque batch) makes that pass due in time.
    fn kept(&self, record: &crate::batch::ArchivedRecord, header: &BatchHeader) {
        if record.key.is_some() && record.value.is_none() && !self.opaque_seen.get() {
            let t = header.append_time.0;
            self.oldest_tombstone.set(Some(self.oldest_tombstone.get().map_or(t, |o| o.min(t))));
        }
    }

    /// Whether compaction drops `record` at `offset`: `Some(true)` for an
    /// expired tombstone, `Some(false)` for a superseded record, `None` to
    /// keep it.
    fn doomed(&self, record: &crate::batch::ArchivedRecord, offset: Offset, header: &BatchHeader) -> Option<bool> {
        let key = record.key.as_ref()?;
        let latest = self.map.offsets.get(key.as_slice()).copied();
        if latest.is_some_and(|l| l > offset) {
            return Some(false);
        }
        // The newest record of its key. A tombstone goes once it is old
        // enough, if no older record of its key can outlive it: one the map
        // holds (below the map's end) drops them all in this same pass (they
        // lie before it, and segments are rewritten oldest first); one in
        // the part cleaned before had them dropped by that pass.
        let covered = match latest {
            Some(_) => offset < self.dirty_end,
            None => offset < self.start,
        };
        let expired =
            record.value.is_none() && covered && !self.opaque_seen.get() && header.append_time < self.delete_before;
        expired.then_some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_reads_back_and_a_version_1_one_makes_a_tombstone_pass_due() {
        for oldest in [None, Some(1_700_000_000_000)] {
            let c = Checkpoint { cleaned_through: Offset(77), last_clean_ms: 5, oldest_tombstone_ms: oldest };
            let bytes = c.encode();
            assert_eq!(Checkpoint::decode(&bytes), Some(c));
            let mut bad = bytes.clone();
            bad[9] ^= 1;
            assert_eq!(Checkpoint::decode(&bad), None, "a flipped bit is caught");
        }
        // Version 2, byte by byte as docs/format.md has it.
        let mut v2 = Vec::new();
        v2.extend_from_slice(b"CRNK");
        v2.extend_from_slice(&2u16.to_le_bytes());
        v2.extend_from_slice(&[0, 0]);
        v2.extend_from_slice(&77u64.to_le_bytes());
        v2.extend_from_slice(&5i64.to_le_bytes());
        v2.extend_from_slice(&i64::MAX.to_le_bytes());
        let crc = crc32c::crc32c(&v2);
        v2.extend_from_slice(&crc.to_le_bytes());
        let none = Checkpoint { cleaned_through: Offset(77), last_clean_ms: 5, oldest_tombstone_ms: None };
        assert_eq!(none.encode(), v2);
        // Version 1: magic, version, pad, cleaned through, last clean, CRC.
        let mut v1 = Vec::new();
        v1.extend_from_slice(b"CRNK");
        v1.extend_from_slice(&1u16.to_le_bytes());
        v1.extend_from_slice(&[0, 0]);
        v1.extend_from_slice(&9u64.to_le_bytes());
        v1.extend_from_slice(&3i64.to_le_bytes());
        let crc = crc32c::crc32c(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        let c = Checkpoint::decode(&v1).expect("version 1 is read");
        assert_eq!((c.cleaned_through, c.last_clean_ms, c.oldest_tombstone_ms), (Offset(9), 3, Some(i64::MIN)));
    }
}
