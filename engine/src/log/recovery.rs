//! Opening a partition directory: the recovery decision table of
//! `docs/recovery.md`, row by row. Each row is named in a comment (R1…R10)
//! and tested in `log/tests/` (`mod.rs`, `faults.rs`, `gaps.rs`).

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use super::index::{SegmentIndex, SegmentSummary};
use super::marker::{CleanMarker, MARKER_FILE};
use super::scan::{ScanStop, find_valid_batch_after, scan_segment};
use super::segment::{ActiveSegment, index_path, log_path, parse_name};
use super::{FlushPolicy, LogConfig, LogError};
use crate::rt::{DmaFile, OpenMode, Storage, align_down};
use crate::types::{Offset, Timestamp};

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// A valid clean-shutdown marker let open skip the scan (R3).
    pub clean_shutdown: bool,
    pub segments: usize,
    /// Bytes of the active segment read by the recovery scan.
    pub scanned_bytes: u64,
    /// Bytes cut after the last valid batch when the tail was damaged (R6),
    /// pre-allocated space included.
    pub truncated_bytes: u64,
    /// Indexes rebuilt from their segments (R8).
    pub rebuilt_indexes: usize,
    /// Leftovers removed: temporary files, indexes without a segment (R2).
    pub removed_files: usize,
    /// Why the scan stopped before the end of the file, if it did.
    pub tail_damage: Option<String>,
}

pub(crate) struct Recovered<F: DmaFile> {
    pub closed: BTreeMap<Offset, SegmentSummary>,
    pub active: ActiveSegment<F>,
    pub report: RecoveryReport,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> LogError + 'a {
    move |e| LogError::io(op, path, e)
}

pub(crate) async fn recover<S: Storage>(
    storage: &S,
    dir: &Path,
    config: &LogConfig,
) -> Result<Recovered<S::File>, LogError> {
    storage.create_dir_all(dir).await.map_err(io_err("create", dir))?;
    let mut report = RecoveryReport::default();
    let names = storage.list_dir(dir).await.map_err(io_err("list", dir))?;
    let mut segments: Vec<Offset> = names.iter().filter_map(|n| parse_name(n, "log")).collect();
    segments.sort_unstable();
    // R2: leftovers of an interrupted atomic write, of a deleted segment or
    // of a compaction swap that did not happen.
    for name in &names {
        let stray_index = parse_name(name, "index").is_some_and(|b| !segments.contains(&b));
        let leftover = Path::new(name).extension().is_some_and(|e| e == "tmp" || e == "cleaned");
        if leftover || stray_index {
            let path = dir.join(name);
            storage.remove(&path).await.map_err(io_err("remove", &path))?;
            report.removed_files += 1;
        }
    }
    let marker_path = dir.join(MARKER_FILE);
    let marker = storage.read_file(&marker_path).await.map_err(io_err("read", &marker_path))?;
    let marker = match marker {
        Some(bytes) => {
            // The marker only describes the state it was written in: remove it
            // before anything else changes, so a later crash cannot trust it.
            storage.remove(&marker_path).await.map_err(io_err("remove", &marker_path))?;
            storage.sync_dir(dir).await.map_err(io_err("sync", dir))?;
            CleanMarker::decode(&bytes)
        }
        None => None,
    };

    // R1: an empty directory is a new log.
    let Some(&newest) = segments.last() else {
        let active = create_segment(storage, dir, config, Offset(0)).await?;
        report.segments = 1;
        return Ok(Recovered { closed: BTreeMap::new(), active, report });
    };
    let open = async |base: Offset| {
        let path = log_path(dir, base);
        let file = storage.open_dma(&path, OpenMode::Existing).await.map_err(io_err("open", &path))?;
        let size = file.size().await.map_err(io_err("stat", &path))?;
        Ok::<_, LogError>((file, size))
    };
    let (mut file, mut file_bytes) = open(newest).await?;
    // R10: a roll that did not complete. An empty last segment after one
    // whose file holds more than its sealed index says means the roll
    // wrote that index, failed to start the new segment, and appends went
    // on into the old one: it is the active segment, the index is stale.
    if let [.., previous, last] = segments[..]
        && file_bytes == 0
        && interrupted_roll(storage, dir, previous, last).await?
    {
        file.close().await.map_err(io_err("close", &log_path(dir, last)))?;
        for path in [log_path(dir, last), index_path(dir, previous)] {
            if storage.remove_if_exists(&path).await.map_err(|e| LogError::io("remove", &path, e))? {
                report.removed_files += 1;
            }
        }
        storage.sync_dir(dir).await.map_err(io_err("sync", dir))?;
        tracing::warn!(dir = %dir.display(), segment = previous.0, "an interrupted roll: the segment before it is active again");
        segments.pop();
        (file, file_bytes) = open(previous).await?;
    }
    let (&active_base, closed_bases) = segments.split_last().expect("at least the active segment");
    report.segments = segments.len();

    let mut closed = BTreeMap::new();
    for (i, &base) in closed_bases.iter().enumerate() {
        let path = log_path(dir, base);
        let (index, rebuilt) = load_or_rebuild_index(storage, dir, config, None, base, None).await?;
        report.rebuilt_indexes += usize::from(rebuilt);
        let next_base = segments[i + 1];
        // R9: segments continue each other exactly (a gap in the offsets
        // lies inside a segment, never between two), so a missing segment
        // shows.
        if index.summary.next_offset != next_base {
            return Err(LogError::corruption(
                &path,
                index.summary.size_bytes,
                format!(
                    "segment ends at offset {} but the next segment starts at {}",
                    index.summary.next_offset, next_base
                ),
            ));
        }
        closed.insert(base, index.summary);
    }

    let path = log_path(dir, active_base);
    let trusted = match marker {
        Some(m) if m.active_base == active_base && m.active_size_bytes <= file_bytes => {
            let index_file = index_path(dir, active_base);
            let bytes = storage.read_file(&index_file).await.map_err(io_err("read", &index_file))?;
            bytes.and_then(|b| SegmentIndex::decode(&b, active_base).ok()).filter(|index| {
                index.summary.size_bytes == m.active_size_bytes && index.summary.next_offset == m.next_offset
            })
        }
        _ => None,
    };
    let index = if let Some(index) = trusted {
        // R3: clean shutdown; sizes and index on disk are exact.
        report.clean_shutdown = true;
        index
    } else {
        // R4-R7: scan the active segment batch by batch.
        let scan = scan_segment(
            &file,
            active_base,
            file_bytes,
            config.batch_bytes_max,
            config.index_interval_bytes,
            None,
            Timestamp(storage.now_ms()),
        )
        .await
        .map_err(io_err("read", &path))?;
        report.scanned_bytes = scan.index.summary.size_bytes;
        let (stop, reason) = match &scan.stop {
            ScanStop::UnknownFormat { position, reason } => return Err(unknown_format(&path, *position, reason)),
            ScanStop::Invalid { position, reason } => (*position, Some(reason.clone())),
            ScanStop::End | ScanStop::ReachedOffset | ScanStop::InsideBatch => (scan.index.summary.size_bytes, None),
        };
        // R7: under `Always` writes never run more than `unsynced_bytes_max`
        // ahead of the last fdatasync, and a damaged batch starts at most a
        // batch before the synced end. A valid batch beyond both, where the
        // scan stopped (on damage or on zeroes), means synced data was hit:
        // report it, never drop it silently. The search looks one such
        // window further, so an ordinary open reads a few MiB, not the
        // whole pre-allocated segment.
        if config.flush == FlushPolicy::Always {
            let window = config.unsynced_bytes_max() + u64::from(config.batch_bytes_max);
            let next = scan.index.summary.next_offset.next();
            let found = find_valid_batch_after(
                &file,
                stop + window,
                (stop + 2 * window).min(file_bytes),
                next,
                config.batch_bytes_max,
            )
            .await
            .map_err(io_err("read", &path))?;
            if let Some(found) = found {
                let what = reason.clone().unwrap_or_else(|| "zeroes".into());
                return Err(LogError::corruption(
                    &path,
                    stop,
                    format!("{what}; a valid batch follows at byte {found}, so this is not a torn tail"),
                ));
            }
        }
        if let Some(reason) = reason {
            // R6: a torn or garbled tail: cut it off.
            report.tail_damage = Some(format!("byte {stop}: {reason}"));
            report.truncated_bytes = file_bytes - stop;
            tracing::warn!(path = %path.display(), position = stop, reason = %reason, "truncating damaged log tail");
        }
        scan.index
    };
    let valid_bytes = index.summary.size_bytes;
    if file_bytes > valid_bytes {
        // The bytes after the last batch (a torn tail, block padding, the
        // pre-allocated zeroes) are cut, so nothing stale is ever read back as
        // a continuation; the first append allocates again.
        file.truncate(valid_bytes).await.map_err(io_err("truncate", &path))?;
    }
    if !report.clean_shutdown {
        // What the scan accepted is what the log will acknowledge as
        // durable: make sure it is.
        file.fdatasync().await.map_err(|e| LogError::sync_failed(&path, e))?;
    }
    // The active segment's index lives in memory; a file from a clean
    // close is stale from the first append on.
    let index_file = index_path(dir, active_base);
    storage.remove_if_exists(&index_file).await.map_err(|e| LogError::io("remove", &index_file, e))?;
    let tail = read_tail_block(&file, valid_bytes).await.map_err(io_err("read", &path))?;
    let active = ActiveSegment::new(
        Rc::new(file),
        index,
        storage.now_ms(),
        &tail,
        valid_bytes,
        config.write_bytes_max,
        config.write_buffer_bytes_max,
    );
    Ok(Recovered { closed, active, report })
}

/// The bytes of the last, partial block of a segment of `size` bytes.
pub(crate) async fn read_tail_block<F: DmaFile>(file: &F, size: u64) -> std::io::Result<Vec<u8>> {
    let start = align_down(size);
    if start == size {
        return Ok(Vec::new());
    }
    let bytes = file.read_at(start, (size - start) as usize).await?;
    if bytes.len() as u64 != size - start {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "segment shorter than its index says"));
    }
    Ok(bytes.to_vec())
}

/// Creates an empty segment at `base`; appends pre-allocate it step by step.
/// A file left by an earlier attempt that failed before its first append
/// (a full disk) is taken over: it holds nothing.
pub(crate) async fn create_segment<S: Storage>(
    storage: &S,
    dir: &Path,
    config: &LogConfig,
    base: Offset,
) -> Result<ActiveSegment<S::File>, LogError> {
    let path = log_path(dir, base);
    let file = match storage.open_dma(&path, OpenMode::CreateNew).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let file = storage.open_dma(&path, OpenMode::Existing).await.map_err(io_err("open", &path))?;
            let size = file.size().await.map_err(io_err("stat", &path))?;
            if size != 0 {
                return Err(LogError::corruption(&path, 0, "a segment to be created already holds data"));
            }
            file
        }
        Err(e) => return Err(LogError::io("create", &path, e)),
    };
    storage.sync_dir(dir).await.map_err(io_err("sync", dir))?;
    Ok(ActiveSegment::new(
        Rc::new(file),
        SegmentIndex::new(base),
        storage.now_ms(),
        &[],
        0,
        config.write_bytes_max,
        config.write_buffer_bytes_max,
    ))
}

/// The index of a sealed segment, from its file (R8: rebuilt by a scan when
/// missing or damaged). `expected` is what the log already knows of it.
pub(crate) async fn load_index<S: Storage>(
    storage: &S,
    dir: &Path,
    config: &LogConfig,
    file: Option<&S::File>,
    expected: SegmentSummary,
) -> Result<SegmentIndex, LogError> {
    Ok(load_or_rebuild_index(storage, dir, config, file, expected.base_offset, Some(expected)).await?.0)
}

/// `file` is the segment if the caller has it open; it is opened (and
/// closed) here only when the index must be rebuilt.
async fn load_or_rebuild_index<S: Storage>(
    storage: &S,
    dir: &Path,
    config: &LogConfig,
    file: Option<&S::File>,
    base: Offset,
    expected: Option<SegmentSummary>,
) -> Result<(SegmentIndex, bool), LogError> {
    let index_file = index_path(dir, base);
    let bytes = storage.read_file(&index_file).await.map_err(io_err("read", &index_file))?;
    if let Some(index) = bytes.and_then(|b| SegmentIndex::decode(&b, base).ok())
        && expected.is_none_or(|e| e == index.summary)
    {
        return Ok((index, false));
    }
    let path = log_path(dir, base);
    let opened = match file {
        Some(_) => None,
        None => Some(storage.open_dma(&path, OpenMode::Existing).await.map_err(io_err("open", &path))?),
    };
    let file = file.or(opened.as_ref()).expect("one of the two");
    let size = file.size().await.map_err(io_err("stat", &path))?;
    let now = Timestamp(storage.now_ms());
    let scan = scan_segment(file, base, size, config.batch_bytes_max, config.index_interval_bytes, None, now)
        .await
        .map_err(io_err("read", &path))?;
    if let Some(opened) = opened {
        opened.close().await.map_err(io_err("close", &path))?;
    }
    match scan.stop {
        ScanStop::UnknownFormat { position, reason } => Err(unknown_format(&path, position, &reason)),
        ScanStop::Invalid { position, reason } => Err(LogError::corruption(&path, position, reason)),
        ScanStop::End | ScanStop::ReachedOffset | ScanStop::InsideBatch => {
            if scan.index.summary.size_bytes != size {
                return Err(LogError::corruption(
                    &path,
                    scan.index.summary.size_bytes,
                    "zeroes inside a sealed segment",
                ));
            }
            let mut index = scan.index;
            if let Some(e) = expected {
                // A version 1 batch's append time is when a scan found it:
                // what the log already knows of it stands.
                index.summary.max_append_time = e.max_append_time;
                if e != index.summary {
                    return Err(LogError::corruption(&path, 0, "sealed segment changed since it was opened"));
                }
            }
            tracing::warn!(path = %path.display(), "rebuilt segment index");
            storage.write_file_atomic(&index_file, &index.encode()).await.map_err(io_err("write", &index_file))?;
            Ok((index, true))
        }
    }
}

/// R6': an intact batch this build cannot read is data of a newer broker,
/// not a torn tail: the log refuses to open rather than cut it.
fn unknown_format(path: &Path, position: u64, reason: &str) -> LogError {
    LogError::corruption(
        path,
        position,
        format!("{reason}: an intact batch this broker cannot read (written by a newer version?); nothing was cut"),
    )
}

/// Whether the empty segment `last` was left by a failed roll after
/// `previous`, which went on taking appends (R10).
async fn interrupted_roll<S: Storage>(
    storage: &S,
    dir: &Path,
    previous: Offset,
    last: Offset,
) -> Result<bool, LogError> {
    let size_of = async |base: Offset| -> Result<u64, LogError> {
        let path = log_path(dir, base);
        let file = storage.open_dma(&path, OpenMode::Existing).await.map_err(io_err("open", &path))?;
        let size = file.size().await.map_err(io_err("stat", &path))?;
        file.close().await.map_err(io_err("close", &path))?;
        Ok(size)
    };
    let index_file = index_path(dir, previous);
    let indexed = storage
        .read_file(&index_file)
        .await
        .map_err(io_err("read", &index_file))?
        .and_then(|b| SegmentIndex::decode(&b, previous).ok())
        .map(|index| index.summary);
    Ok(match indexed {
        // Sealed as indexed: an ordinary roll, the new segment is just empty.
        Some(summary) if summary.next_offset == last => size_of(previous).await? != summary.size_bytes,
        _ => false,
    })
}
