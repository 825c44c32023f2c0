//! Walking a segment batch by batch: recovery of the active segment, index
//! rebuilds and `truncate_to` all use this one scanner.

use std::io;

use crate::batch::{BATCH_HEADER_BYTES_MIN, BATCH_MAGIC, BATCH_VERSION_V1, BatchHeader, validate_batch};
use crate::log::index::SegmentIndex;
use crate::rt::DmaFile;
use crate::types::Offset;

/// Bytes read per scan step.
pub(crate) const SCAN_CHUNK_BYTES: usize = 4 << 20;

/// Where and why a scan stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScanStop {
    /// End of the file, or zeroes where the next header would be.
    End,
    /// The scan was asked to stop at an offset and did: every batch before
    /// it ends at or below the offset, every batch after starts at or above.
    ReachedOffset,
    /// The offset the scan was asked to stop at lies inside a batch.
    InsideBatch,
    /// A batch that is cut short, fails its checks or breaks the offset
    /// sequence starts at `position`.
    Invalid { position: u64, reason: String },
    /// An intact batch in a format this build cannot read (written by a
    /// newer broker) starts at `position`: not damage, never to be cut.
    UnknownFormat { position: u64, reason: String },
}

#[derive(Debug)]
pub(crate) struct ScanResult {
    pub index: SegmentIndex,
    pub stop: ScanStop,
}

/// Scans `file` from its start, rebuilding the segment's index, until the
/// end, an invalid batch, or the first batch at or after `stop_at`.
///
/// A batch may start above the previous one's end (a gap left by
/// compaction or a control batch), never below it. Gaps are accepted only
/// in format version 2, whose header CRC covers the base offset; a version
/// 1 batch must continue its predecessor exactly, as version 1 logs always
/// did, because nothing else checks its base offset.
pub(crate) async fn scan_segment<F: DmaFile>(
    file: &F,
    base_offset: Offset,
    file_bytes: u64,
    batch_bytes_max: u32,
    interval_bytes: u64,
    stop_at: Option<Offset>,
    now: crate::types::Timestamp,
) -> io::Result<ScanResult> {
    let mut index = SegmentIndex::new(base_offset);
    let mut chunk: Option<F::ReadChunk> = None;
    let mut chunk_pos = 0u64;
    let mut pos = 0u64;
    let stop = loop {
        if let Some(at) = stop_at
            && index.summary.next_offset > at
        {
            break ScanStop::InsideBatch;
        }
        if pos >= file_bytes {
            break if stop_at.is_some() { ScanStop::ReachedOffset } else { ScanStop::End };
        }
        let chunk_len = chunk.as_deref().map_or(0, <[u8]>::len) as u64;
        if pos < chunk_pos || chunk_pos + chunk_len < pos + BATCH_HEADER_BYTES_MIN as u64 {
            chunk = Some(file.read_chunk_at(pos, SCAN_CHUNK_BYTES).await?);
            chunk_pos = pos;
        }
        let at = (pos - chunk_pos) as usize;
        let head = &chunk.as_deref().expect("read above")[at..];
        if head.len() >= 20 && head[8..12] == [0; 4] && head[16..20] == [0; 4] {
            break if stop_at.is_some() { ScanStop::ReachedOffset } else { ScanStop::End };
        }
        let header = match BatchHeader::decode(head) {
            Ok(header) => header,
            Err(e) if e.is_unknown_format() => break ScanStop::UnknownFormat { position: pos, reason: e.to_string() },
            Err(e) => break ScanStop::Invalid { position: pos, reason: e.to_string() },
        };
        let length = u64::from(header.batch_length);
        if header.batch_length > batch_bytes_max || pos + length > file_bytes {
            break ScanStop::Invalid { position: pos, reason: format!("batch length {length} runs past the segment") };
        }
        if (head.len() as u64) < length {
            chunk = Some(file.read_chunk_at(pos, (length as usize).max(SCAN_CHUNK_BYTES)).await?);
            chunk_pos = pos;
        }
        let at = (pos - chunk_pos) as usize;
        let view = match validate_batch(&chunk.as_deref().expect("read above")[at..]) {
            Ok(view) => view,
            Err(e) if e.is_unknown_format() => break ScanStop::UnknownFormat { position: pos, reason: e.to_string() },
            Err(e) => break ScanStop::Invalid { position: pos, reason: e.to_string() },
        };
        let expected = index.summary.next_offset;
        let base = view.header.base_offset;
        if base < expected || (view.header.version == BATCH_VERSION_V1 && base != expected) {
            break ScanStop::Invalid { position: pos, reason: format!("offset {base} where {expected} was expected") };
        }
        if stop_at.is_some_and(|at| base >= at) {
            break ScanStop::ReachedOffset;
        }
        index.on_append(
            base,
            view.header.next_offset(),
            view.header.effective_max_timestamp(),
            append_time_of(&view.header, now),
            pos,
            length,
            interval_bytes,
        );
        pos += length;
    };
    Ok(ScanResult { index, stop })
}

/// When a stored batch was appended: its stamp (version 2). Version 1 had
/// no append time, and its producer's timestamps must not drive retention
/// (ADR 17), so such a batch counts as appended `now`, when it is found:
/// retention may keep it longer, never deletes it early.
pub(crate) fn append_time_of(header: &BatchHeader, now: crate::types::Timestamp) -> crate::types::Timestamp {
    if header.version == BATCH_VERSION_V1 || header.append_time.0 < 0 { now } else { header.append_time }
}

/// Looks for a valid batch starting in `[from, to)` whose base offset is
/// at least `min_offset`: evidence that the damage before it is not a torn
/// tail.
pub(crate) async fn find_valid_batch_after<F: DmaFile>(
    file: &F,
    from: u64,
    to: u64,
    min_offset: Offset,
    batch_bytes_max: u32,
) -> io::Result<Option<u64>> {
    let mut start = from;
    while start < to {
        let chunk = file.read_chunk_at(start, SCAN_CHUNK_BYTES + batch_bytes_max as usize).await?;
        let candidates = chunk.len().min(SCAN_CHUNK_BYTES).min((to - start) as usize);
        for i in 0..candidates {
            let magic_at = i + 16;
            if chunk.len() >= magic_at + 4
                && chunk[magic_at..magic_at + 4] == BATCH_MAGIC.to_le_bytes()
                && let Ok(view) = validate_batch(&chunk[i..])
                && view.header.base_offset >= min_offset
            {
                return Ok(Some(start + i as u64));
            }
        }
        start += SCAN_CHUNK_BYTES as u64;
    }
    Ok(None)
}
