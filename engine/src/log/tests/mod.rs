//! Behaviour of the partition log on the simulated disk: appends, reads,
//! rolls, every row of the recovery table, truncation, retention, faults,
//! and a model-based property test. The files beside this one each take
//! one concern: offsets with gaps, faults, retention, shared memory,
//! timestamps, and crashes under the simulator's out-of-order I/O.

mod compaction;
mod faults;
mod gaps;
mod memory;
mod placed;
mod retention;
mod simulated;
mod timestamps;

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use futures::executor::{LocalPool, block_on};
use futures::task::LocalSpawnExt;
use proptest::prelude::*;

use super::*;
use crate::batch::{BatchBuilder, RecordInput, validate_batch, validate_records};
use crate::rt::Storage as _;
use crate::rt::sim::{SimExecutor, SimRng, SimStorage};
use crate::types::Timestamp;

pub(super) fn dir() -> PathBuf {
    PathBuf::from("/data/topic-0")
}

pub(super) fn small_config() -> LogConfig {
    LogConfig {
        flush: FlushPolicy::Always,
        segment_bytes_max: 16 << 10,
        segment_ms_max: None,
        preallocate_bytes_max: 8 << 10,
        index_interval_bytes: 512,
        batch_bytes_max: 4 << 10,
        write_bytes_max: 8 << 10,
        write_buffer_bytes_max: 16 << 10,
        cache_bytes_max: 32 << 10,
        read_ahead_bytes: 4 << 10,
        read_ahead_chunks_max: 2,
        open_segments_max: 2,
        retention_ms: None,
        retention_bytes: None,
        timestamp_type: TimestampType::CreateTime,
        timestamp_before_max_ms: None,
        timestamp_after_max_ms: None,
    }
}

/// A batch of `records` records whose values encode `tag`, at time `ts`.
pub(super) fn batch(tag: u64, records: usize, ts: i64) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for i in 0..records {
        let key = format!("key-{}", (tag + i as u64) % 7);
        let value = format!("value-{tag}-{i}-{}", "x".repeat((tag % 50) as usize));
        builder.push(RecordInput::new(Some(key.as_bytes()), Some(value.as_bytes()), Timestamp(ts + i as i64)));
    }
    builder.build().unwrap()
}

pub(super) fn open(storage: &SimStorage, config: LogConfig) -> Result<PartitionLog<SimStorage>, LogError> {
    block_on(PartitionLog::open(storage.clone(), dir(), config))
}

/// Reads every visible batch from `from` on.
pub(super) fn read_all(log: &PartitionLog<SimStorage>, from: Offset) -> Vec<Vec<u8>> {
    block_on(read_all_async(log, from))
}

/// [`read_all`] inside a simulated executor (which must drive the reads).
pub(super) async fn read_all_async(log: &PartitionLog<SimStorage>, from: Offset) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let read = log.read(next, 10 << 10).await.unwrap();
        if read.batches.is_empty() {
            return out;
        }
        for bytes in read.batches {
            let view = validate_batch(&bytes).unwrap();
            validate_records(&view).unwrap();
            if view.header.base_offset >= next {
                next = view.header.next_offset();
                out.push(bytes.to_vec());
            }
        }
    }
}

/// The appended bytes as the log stores them: the envelope stamped with
/// the offset and the log's clock (the simulated one stands still unless a
/// test moves it).
pub(super) fn stored(storage: &SimStorage, mut bytes: Vec<u8>, base: Offset) -> Vec<u8> {
    let stamp = crate::batch::Stamp {
        base_offset: base,
        leader_epoch: LeaderEpoch(0),
        append_time: Timestamp(storage.now_ms()),
        log_append_time: false,
    };
    crate::batch::stamp(&mut bytes, &stamp);
    bytes
}

#[test]
fn appended_batches_read_back_in_order_with_dense_offsets() {
    let storage = SimStorage::new();
    let log = open(&storage, small_config()).unwrap();
    let mut expected = Vec::new();
    for tag in 0..20 {
        let b = batch(tag, 1 + tag as usize % 5, 1000 + tag as i64);
        let info = block_on(log.append(b.clone())).unwrap();
        assert_eq!(info.last_offset.next(), log.log_end_offset(), "the batch ends at the log end");
        expected.push(stored(&storage, b, info.base_offset));
    }
    assert_eq!(read_all(&log, Offset(0)), expected);
    assert_eq!(log.high_watermark(), log.log_end_offset());
    let offsets: Vec<u64> = expected.iter().map(|b| validate_batch(b).unwrap().header.base_offset.0).collect();
    let mut next = 0;
    for (b, base) in expected.iter().zip(&offsets) {
        assert_eq!(*base, next, "offsets are dense");
        next = validate_batch(b).unwrap().header.next_offset().0;
    }
}

#[test]
fn concurrent_appends_share_one_fdatasync() {
    let storage = SimStorage::new();
    let log = Rc::new(open(&storage, small_config()).unwrap());
    let before = storage.fdatasync_count();
    let mut pool = LocalPool::new();
    let results = Rc::new(std::cell::RefCell::new(Vec::new()));
    for tag in 0..32 {
        let log = log.clone();
        let results = results.clone();
        pool.spawner()
            .spawn_local(async move {
                let info = log.append(batch(tag, 1, 0)).await.unwrap();
                // Acknowledged under `Always` means durable.
                assert!(log.stable_offset() > info.last_offset);
                results.borrow_mut().push(info);
            })
            .unwrap();
    }
    pool.run();
    assert_eq!(results.borrow().len(), 32);
    let syncs = storage.fdatasync_count() - before;
    assert!(syncs < 8, "32 concurrent appends took {syncs} fdatasyncs: group commit is not grouping");
}

#[test]
fn appends_enter_the_log_in_the_order_they_were_called_across_full_buffers_and_rolls() {
    // The broker relies on this for per-connection produce order: a batch
    // that finds the write buffer full or the segment rolling must not be
    // overtaken by a later, smaller one.
    let storage = SimStorage::new();
    let log = Rc::new(open(&storage, small_config()).unwrap());
    let mut pool = LocalPool::new();
    let results = Rc::new(std::cell::RefCell::new(Vec::new()));
    for tag in 0..300u64 {
        let log = log.clone();
        let results = results.clone();
        let records = if tag % 5 == 0 { 20 } else { 1 };
        pool.spawner()
            .spawn_local(async move {
                let info = log.append(batch(tag, records, 0)).await.unwrap();
                results.borrow_mut().push((tag, info.base_offset));
            })
            .unwrap();
    }
    pool.run();
    let mut results = results.borrow().clone();
    assert_eq!(results.len(), 300);
    assert!(log.segment_count() > 1, "the test must cross a roll");
    results.sort_by_key(|&(tag, _)| tag);
    for pair in results.windows(2) {
        assert!(pair[0].1 < pair[1].1, "append {} overtook append {}", pair[1].0, pair[0].0);
    }
}

#[test]
fn a_reader_waiting_for_data_wakes_when_an_append_is_acknowledged() {
    let storage = SimStorage::new();
    let log = Rc::new(open(&storage, small_config()).unwrap());
    let mut pool = LocalPool::new();
    let woke = Rc::new(std::cell::Cell::new(None));
    {
        let log = log.clone();
        let woke = woke.clone();
        pool.spawner()
            .spawn_local(async move {
                log.wait_for_data(Offset(0)).await.unwrap();
                woke.set(Some(log.high_watermark()));
            })
            .unwrap();
    }
    pool.run_until_stalled();
    assert_eq!(woke.get(), None, "nothing to read yet");
    {
        let log = log.clone();
        pool.spawner().spawn_local(async move { log.append(batch(1, 3, 0)).await.map(drop).unwrap() }).unwrap();
    }
    pool.run();
    assert_eq!(woke.get(), Some(Offset(3)));
}

#[test]
fn acknowledged_appends_survive_a_crash_under_flush_always() {
    let storage = SimStorage::new();
    let log = open(&storage, small_config()).unwrap();
    let mut acked = Vec::new();
    for tag in 0..40 {
        let b = batch(tag, 3, tag as i64);
        let info = block_on(log.append(b.clone())).unwrap();
        acked.push(stored(&storage, b, info.base_offset));
    }
    drop(log);
    storage.crash(&mut SimRng::new(7));
    let log = open(&storage, small_config()).unwrap();
    assert_eq!(read_all(&log, Offset(0)), acked);
}

#[test]
fn flush_never_writes_without_syncing() {
    let storage = SimStorage::new();
    let config = LogConfig { flush: FlushPolicy::Never, ..small_config() };
    let log = open(&storage, config.clone()).unwrap();
    let before = storage.fdatasync_count();
    for tag in 0..10 {
        block_on(log.append(batch(tag, 2, 0))).unwrap();
    }
    assert_eq!(storage.fdatasync_count(), before, "no fdatasync under flush = never");
    assert_eq!(log.stable_offset(), log.log_end_offset(), "written counts as stable");
    block_on(log.close()).unwrap();
    assert!(storage.fdatasync_count() > before, "close syncs");
    let log = open(&storage, config).unwrap();
    assert_eq!(log.log_end_offset(), Offset(20));
}

#[test]
fn flush_interval_syncs_once_the_interval_has_passed() {
    let storage = SimStorage::new();
    let log = open(&storage, LogConfig { flush: FlushPolicy::IntervalMs(100), ..small_config() }).unwrap();
    let before = storage.fdatasync_count();
    block_on(log.append(batch(1, 2, 0))).unwrap();
    block_on(log.sync_if_due()).unwrap();
    assert_eq!(storage.fdatasync_count(), before, "not due yet");
    storage.advance_ms(150);
    block_on(log.sync_if_due()).unwrap();
    assert_eq!(storage.fdatasync_count(), before + 1);
}

#[test]
fn segments_roll_by_size_and_cold_reads_cross_them() {
    let storage = SimStorage::new();
    let log = open(&storage, small_config()).unwrap();
    let mut expected = Vec::new();
    for tag in 0..400 {
        let b = batch(tag, 4, tag as i64);
        let info = block_on(log.append(b.clone())).unwrap();
        expected.push(stored(&storage, b, info.base_offset));
    }
    assert!(log.segment_count() > 5, "{} segments", log.segment_count());
    assert!(log.cached_bytes() <= small_config().cache_bytes_max);
    assert_eq!(read_all(&log, Offset(0)), expected);
    // A read from the middle starts at the batch holding the offset.
    let read = block_on(log.read(Offset(501), 1)).unwrap();
    let header = validate_batch(&read.batches[0]).unwrap().header;
    assert!(header.base_offset <= Offset(501) && header.next_offset() > Offset(501));
}

#[test]
fn segments_roll_by_age() {
    let storage = SimStorage::new();
    let log = open(&storage, LogConfig { segment_ms_max: Some(1000), ..small_config() }).unwrap();
    block_on(log.append(batch(1, 1, 0))).unwrap();
    block_on(log.append(batch(2, 1, 0))).unwrap();
    assert_eq!(log.segment_count(), 1);
    storage.advance_ms(1000);
    block_on(log.append(batch(3, 1, 0))).unwrap();
    assert_eq!(log.segment_count(), 2);
}

#[test]
fn finds_the_first_record_at_or_after_a_timestamp() {
    let storage = SimStorage::new();
    let log = open(&storage, small_config()).unwrap();
    for tag in 0..300u64 {
        // Records at 10_000 + 10 * offset.
        let mut builder = BatchBuilder::new();
        for i in 0..3 {
            builder.push(RecordInput::new(None, Some(b"v"), Timestamp(10_000 + 10 * (tag as i64 * 3 + i))));
        }
        block_on(log.append(builder.build().unwrap())).unwrap();
    }
    assert!(log.segment_count() > 1);
    for target in [0, 10_000, 10_005, 10_010, 12_345, 18_990] {
        let expected = if target <= 10_000 { 0 } else { (target as u64 - 10_000).div_ceil(10) };
        assert_eq!(
            block_on(log.offset_for_timestamp(Timestamp(target))).unwrap(),
            Some(Offset(expected)),
            "t={target}"
        );
    }
    assert_eq!(block_on(log.offset_for_timestamp(Timestamp(99_999))).unwrap(), None);
}

// Recovery decision table (docs/recovery.md).

pub(super) fn files_with_ext(storage: &SimStorage, ext: &str) -> Vec<PathBuf> {
    storage.file_paths().into_iter().filter(|p| p.extension().is_some_and(|e| e == ext)).collect()
}

pub(super) fn filled_log(storage: &SimStorage, batches: u64) -> Vec<Vec<u8>> {
    let log = open(storage, small_config()).unwrap();
    let mut expected = Vec::new();
    for tag in 0..batches {
        let b = batch(tag, 3, tag as i64);
        let info = block_on(log.append(b.clone())).unwrap();
        expected.push(stored(storage, b, info.base_offset));
    }
    expected
}

#[test]
fn r1_an_empty_directory_opens_as_a_new_log() {
    let storage = SimStorage::new();
    let log = open(&storage, small_config()).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (Offset(0), Offset(0)));
    assert_eq!(files_with_ext(&storage, "log").len(), 1);
}

#[test]
fn r2_leftover_temporary_and_orphan_index_files_are_removed() {
    let storage = SimStorage::new();
    drop(filled_log(&storage, 3));
    storage.set_file_contents(&dir().join("00000000000000000999.index"), vec![1, 2, 3]);
    storage.set_file_contents(&dir().join("CLEAN_SHUTDOWN.tmp"), vec![1]);
    let log = open(&storage, small_config()).unwrap();
    assert_eq!(log.recovery_report().removed_files, 2);
    assert!(storage.file_contents(&dir().join("00000000000000000999.index")).is_none());
}

#[test]
fn r3_a_clean_shutdown_skips_the_scan() {
    let storage = SimStorage::new();
    let expected = filled_log(&storage, 30);
    let log = open(&storage, small_config()).unwrap();
    block_on(log.close()).unwrap();
    assert!(matches!(block_on(log.append(batch(1, 1, 0))), Err(LogError::Closed)));
    let log = open(&storage, small_config()).unwrap();
    assert!(log.recovery_report().clean_shutdown);
    assert_eq!(log.recovery_report().scanned_bytes, 0);
    assert_eq!(read_all(&log, Offset(0)), expected);
    assert!(storage.file_contents(&dir().join("CLEAN_SHUTDOWN")).is_none(), "open removes the marker");
}

#[test]
fn r3_a_damaged_clean_marker_falls_back_to_a_scan() {
    let storage = SimStorage::new();
    let expected = filled_log(&storage, 30);
    block_on(open(&storage, small_config()).unwrap().close()).unwrap();
    let marker = dir().join("CLEAN_SHUTDOWN");
    let mut bytes = storage.file_contents(&marker).unwrap();
    bytes[20] ^= 0xFF;
    storage.set_file_contents(&marker, bytes);
    let log = open(&storage, small_config()).unwrap();
    assert!(!log.recovery_report().clean_shutdown);
    assert!(log.recovery_report().scanned_bytes > 0);
    assert_eq!(read_all(&log, Offset(0)), expected);
}

#[test]
fn r4_an_unclean_shutdown_scans_the_active_segment() {
    let storage = SimStorage::new();
    let expected = filled_log(&storage, 30);
    let log = open(&storage, small_config()).unwrap();
    let report = log.recovery_report();
    assert!(!report.clean_shutdown && report.scanned_bytes > 0 && report.tail_damage.is_none());
    assert_eq!(read_all(&log, Offset(0)), expected);
}

fn active_segment(storage: &SimStorage) -> PathBuf {
    files_with_ext(storage, "log").into_iter().max().unwrap()
}

#[test]
fn r6_recovers_after_torn_tail_write() {
    let storage = SimStorage::new();
    let expected = filled_log(&storage, 30);
    let path = active_segment(&storage);
    let mut bytes = storage.file_contents(&path).unwrap();
    let last_len = expected.last().unwrap().len();
    let valid: usize = bytes.len() - bytes.iter().rev().take_while(|b| **b == 0).count();
    bytes.truncate(valid - last_len / 2);
    storage.set_file_contents(&path, bytes);
    let log = open(&storage, small_config()).unwrap();
    assert!(log.recovery_report().tail_damage.is_some());
    assert!(log.recovery_report().truncated_bytes > 0);
    let got = read_all(&log, Offset(0));
    assert_eq!(got, expected[..got.len()].to_vec());
    assert_eq!(got.len(), expected.len() - 1, "only the torn batch is lost");
    // The log goes on from the cut.
    let info = block_on(log.append(batch(99, 1, 0))).unwrap();
    assert_eq!(info.base_offset, validate_batch(got.last().unwrap()).unwrap().header.next_offset());
}

#[test]
fn r6_a_garbled_last_batch_is_cut_off() {
    let storage = SimStorage::new();
    let expected = filled_log(&storage, 10);
    let path = active_segment(&storage);
    let mut bytes = storage.file_contents(&path).unwrap();
    let valid: usize = expected.iter().map(Vec::len).sum::<usize>() - files_sizes_before_active(&storage);
    bytes[valid - 5] ^= 0x10;
    storage.set_file_contents(&path, bytes);
    let log = open(&storage, small_config()).unwrap();
    assert!(log.recovery_report().tail_damage.as_deref().unwrap().contains("CRC"));
    assert_eq!(read_all(&log, Offset(0)), expected[..9].to_vec());
}

#[test]
fn r6_an_intact_batch_of_a_newer_format_is_never_cut() {
    let storage = SimStorage::new();
    let expected = filled_log(&storage, 10);
    let path = active_segment(&storage);
    let mut bytes = storage.file_contents(&path).unwrap();
    let last = expected.iter().map(Vec::len).sum::<usize>()
        - files_sizes_before_active(&storage)
        - expected.last().unwrap().len();
    // The last batch says it holds a payload format this build does not
    // know, with a valid header CRC: what a newer broker would write.
    // (docs/format.md: payload_format at byte 22, header_crc at 36 over [0, 36).)
    bytes[last + 22] = 1;
    let crc = crc32c::crc32c(&bytes[last..last + 36]);
    bytes[last + 36..last + 40].copy_from_slice(&crc.to_le_bytes());
    storage.set_file_contents(&path, bytes.clone());
    let Err(e) = open(&storage, small_config()) else { panic!("opened over a batch it cannot read") };
    assert!(e.to_string().contains("cannot read"), "{e}");
    assert_eq!(storage.file_contents(&path).unwrap(), bytes, "nothing was cut");
}

fn files_sizes_before_active(storage: &SimStorage) -> usize {
    let active = active_segment(storage);
    files_with_ext(storage, "log")
        .into_iter()
        .filter(|p| *p != active)
        .map(|p| storage.file_contents(&p).unwrap().len())
        .sum()
}

/// A large active segment (600 batches, all synced) damaged by `damage`;
/// returns the reopen's result and the segment's path.
fn reopen_after_damaging_synced_data(
    damage: impl FnOnce(&mut Vec<u8>),
) -> (Result<PartitionLog<SimStorage>, LogError>, PathBuf) {
    let storage = SimStorage::new();
    let config = LogConfig { segment_bytes_max: 1 << 20, ..small_config() };
    let log = open(&storage, config.clone()).unwrap();
    for tag in 0..600 {
        block_on(log.append(batch(tag, 3, 0))).unwrap();
    }
    drop(log);
    let path = active_segment(&storage);
    let mut bytes = storage.file_contents(&path).unwrap();
    damage(&mut bytes);
    storage.set_file_contents(&path, bytes);
    (open(&storage, config), path)
}

#[test]
fn r7_corruption_followed_by_valid_batches_is_reported_not_dropped() {
    let (reopened, path) = reopen_after_damaging_synced_data(|bytes| bytes[1000] ^= 0x01);
    match reopened {
        Err(LogError::Corruption { path: p, position, .. }) => {
            assert_eq!(p, path);
            assert!(position <= 1000, "names the damaged batch, got {position}");
        }
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(_) => panic!("expected corruption, got a log"),
    }
}

#[test]
fn r8_a_missing_or_damaged_index_is_rebuilt() {
    let storage = SimStorage::new();
    let expected = filled_log(&storage, 200);
    let indexes = files_with_ext(&storage, "index");
    assert!(indexes.len() >= 2);
    storage.disk_remove(&indexes[0]);
    let mut damaged = storage.file_contents(&indexes[1]).unwrap();
    damaged[30] ^= 0x55;
    storage.set_file_contents(&indexes[1], damaged);
    let log = open(&storage, small_config()).unwrap();
    assert_eq!(log.recovery_report().rebuilt_indexes, 2);
    assert_eq!(read_all(&log, Offset(0)), expected);
}

#[test]
fn r9_a_missing_segment_in_the_middle_is_reported() {
    let storage = SimStorage::new();
    drop(filled_log(&storage, 200));
    let logs = files_with_ext(&storage, "log");
    assert!(logs.len() >= 3);
    storage.disk_remove(&logs[1]);
    assert!(matches!(open(&storage, small_config()), Err(LogError::Corruption { .. })));
}

#[test]
fn corruption_in_a_sealed_segment_is_reported_on_read() {
    let storage = SimStorage::new();
    drop(filled_log(&storage, 200));
    let first = files_with_ext(&storage, "log").into_iter().min().unwrap();
    let mut bytes = storage.file_contents(&first).unwrap();
    bytes[3000] ^= 0x20;
    storage.set_file_contents(&first, bytes);
    let log = open(&storage, small_config()).unwrap();
    let mut from = Offset(0);
    let error = loop {
        match block_on(log.read(from, 4096)) {
            Ok(read) => from = validate_batch(read.batches.last().unwrap()).unwrap().header.next_offset(),
            Err(e) => break e,
        }
    };
    match error {
        LogError::Corruption { path, position, .. } => {
            assert_eq!(path, first);
            assert!(position <= 3000);
        }
        e => panic!("expected corruption, got {e}"),
    }
}

#[test]
fn truncate_to_drops_the_suffix_across_segments() {
    let storage = SimStorage::new();
    let expected = filled_log(&storage, 200);
    let log = open(&storage, small_config()).unwrap();
    let segments = log.segment_count();
    let keep = 37;
    let cut = validate_batch(&expected[keep]).unwrap().header.base_offset;
    assert!(matches!(block_on(log.truncate_to(cut.next())), Err(LogError::NotBatchBoundary { .. })));
    assert_eq!(log.log_end_offset(), Offset(600), "a rejected truncation changes nothing");
    block_on(log.truncate_to(cut)).unwrap();
    assert!(log.segment_count() < segments);
    assert_eq!(log.log_end_offset(), cut);
    assert_eq!(read_all(&log, Offset(0)), expected[..keep].to_vec());
    let b = batch(1000, 2, 0);
    let info = block_on(log.append(b.clone())).unwrap();
    assert_eq!(info.base_offset, cut);
    let mut now = expected[..keep].to_vec();
    now.push(stored(&storage, b, cut));
    assert_eq!(read_all(&log, Offset(0)), now);
    drop(log);
    storage.crash(&mut SimRng::new(3));
    let log = open(&storage, small_config()).unwrap();
    assert_eq!(read_all(&log, Offset(0)), now);
}

#[test]
fn retention_by_size_deletes_whole_old_segments() {
    let storage = SimStorage::new();
    let expected = filled_log(&storage, 300);
    let config = LogConfig { retention_bytes: Some(30 << 10), ..small_config() };
    let log = open(&storage, config).unwrap();
    let size = log.size_bytes();
    let deleted = block_on(log.enforce_retention()).unwrap();
    assert!(deleted > 0);
    assert!(log.size_bytes() < size && log.size_bytes() >= 30 << 10);
    let start = log.log_start_offset();
    assert!(start > Offset(0));
    assert!(matches!(block_on(log.read(Offset(0), 100)), Err(LogError::OffsetOutOfRange { .. })));
    let rest = read_all(&log, start);
    assert_eq!(rest, expected[expected.len() - rest.len()..].to_vec());
    drop(log);
    let log = open(&storage, small_config()).unwrap();
    assert_eq!(log.log_start_offset(), start, "the new log start survives a restart");
}

#[test]
fn retention_by_time_goes_by_the_newest_append_time_of_a_segment() {
    let storage = SimStorage::new();
    let config = LogConfig { retention_ms: Some(60_000), ..small_config() };
    let log = open(&storage, config).unwrap();
    // The producers' timestamps say nothing here: 0 is "very old".
    for tag in 0..100 {
        block_on(log.append(batch(tag, 3, 0))).unwrap();
    }
    storage.advance_ms(120_000);
    let now = storage.now_ms();
    for tag in 100..200 {
        block_on(log.append(batch(tag, 3, 0))).unwrap();
    }
    block_on(log.enforce_retention()).unwrap();
    let start = log.log_start_offset();
    assert!(start > Offset(0) && start <= Offset(300), "start {start}");
    for bytes in read_all(&log, start) {
        let header = validate_batch(&bytes).unwrap().header;
        if header.base_offset >= Offset(300) {
            assert!(header.append_time.0 >= now, "stamped with the log's clock");
        }
    }
}

#[test]
fn a_batch_stamped_at_time_zero_is_not_deleted_when_its_segment_seals() {
    let storage = SimStorage::new();
    let config = LogConfig { retention_ms: Some(3_600_000), ..small_config() };
    let log = open(&storage, config).unwrap();
    for tag in 0..300 {
        block_on(log.append(batch(tag, 3, 0))).unwrap();
    }
    assert!(log.segment_count() > 2, "sealed segments exist");
    assert_eq!(block_on(log.enforce_retention()).unwrap(), 0, "appended just now: kept for an hour");
    assert_eq!(log.log_start_offset(), Offset(0));
    // The append times survive a restart: recovery rebuilds them from the batches.
    drop(log);
    storage.crash(&mut SimRng::new(1));
    let log = open(&storage, LogConfig { retention_ms: Some(3_600_000), ..small_config() }).unwrap();
    assert_eq!(block_on(log.enforce_retention()).unwrap(), 0);
}

#[test]
fn an_fdatasync_error_poisons_the_log_and_nothing_is_acknowledged() {
    let storage = SimStorage::new();
    let log = open(&storage, small_config()).unwrap();
    let acked = block_on(log.append(batch(1, 2, 0))).unwrap();
    storage.fail_next_fdatasync(io::ErrorKind::Other);
    assert!(matches!(block_on(log.append(batch(2, 2, 0))), Err(LogError::Io { .. })));
    assert!(log.is_poisoned());
    assert!(matches!(block_on(log.append(batch(3, 2, 0))), Err(LogError::Poisoned { .. })));
    assert!(matches!(block_on(log.sync()), Err(LogError::Poisoned { .. })));
    drop(log);
    storage.crash(&mut SimRng::new(1));
    let log = open(&storage, small_config()).unwrap();
    assert!(log.log_end_offset() > acked.last_offset, "the acknowledged batch survived");
}

#[test]
fn a_full_disk_is_reported_and_acknowledged_data_survives() {
    let storage = SimStorage::new();
    let log = open(&storage, small_config()).unwrap();
    let mut acked = Vec::new();
    storage.set_capacity(Some(150 << 10));
    let error = loop {
        let b = batch(acked.len() as u64, 3, 0);
        match block_on(log.append(b.clone())) {
            Ok(info) => acked.push(stored(&storage, b, info.base_offset)),
            Err(e) => break e,
        }
    };
    assert!(matches!(error, LogError::DiskFull { .. }), "{error}");
    assert_eq!(error.code(), 105);
    storage.set_capacity(None);
    drop(log);
    let log = open(&storage, small_config()).unwrap();
    let got = read_all(&log, Offset(0));
    assert_eq!(got[..acked.len()], acked[..]);
}

#[test]
fn bad_batches_are_rejected_without_changing_the_log() {
    let storage = SimStorage::new();
    let log = open(&storage, LogConfig { batch_bytes_max: 4096, ..small_config() }).unwrap();
    let mut b = batch(1, 2, 0);
    let last = b.len() - 1;
    b[last] ^= 1;
    assert!(matches!(
        block_on(log.append(b)),
        Err(LogError::InvalidBatch(crate::batch::BatchError::CrcMismatch { .. }))
    ));
    assert!(matches!(block_on(log.append(vec![0; 10])), Err(LogError::InvalidBatch(_))));
    // A valid CRC over records that disagree with the header (a buggy or
    // hostile producer): the archive check catches it.
    let mut b = batch(1, 2, 0);
    b[48..52].copy_from_slice(&1u32.to_le_bytes()); // record_count: the archive holds 2
    let crc = crc32c::crc32c(&b[40..]);
    b[32..36].copy_from_slice(&crc.to_le_bytes());
    let crc = crc32c::crc32c(&b[..36]);
    b[36..40].copy_from_slice(&crc.to_le_bytes());
    assert!(matches!(
        block_on(log.append(b)),
        Err(LogError::InvalidBatch(crate::batch::BatchError::RecordsMismatch { .. }))
    ));
    let mut big = BatchBuilder::new();
    big.push(RecordInput::new(None, Some(&[7u8; 5000]), Timestamp(0)));
    assert!(matches!(block_on(log.append(big.build().unwrap())), Err(LogError::BatchTooLarge { .. })));
    assert_eq!(log.log_end_offset(), Offset(0));
    assert!(!log.is_poisoned());
}

// Model-based: random operations against an in-memory model.

#[derive(Debug, Clone)]
enum Op {
    Append { records: usize, size: u64 },
    Read { at: u64 },
    Roll,
    Truncate { at: u64 },
    Reopen { clean: bool },
    Retain { bytes: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1usize..20, 0u64..200).prop_map(|(records, size)| Op::Append { records, size }),
        3 => any::<u64>().prop_map(|at| Op::Read { at }),
        1 => Just(Op::Roll),
        1 => any::<u64>().prop_map(|at| Op::Truncate { at }),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
        1 => (20u64..200).prop_map(|kib| Op::Retain { bytes: kib << 10 }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_a_model_under_random_operations(ops in proptest::collection::vec(op(), 1..60)) {
        let storage = SimStorage::new();
        let mut config = small_config();
        let mut log = open(&storage, config.clone()).unwrap();
        // The model: every stored batch, in order.
        let mut model: Vec<Vec<u8>> = Vec::new();
        let mut tag = 0;
        for op in ops {
            match op {
                Op::Append { records, size } => {
                    tag += 1;
                    let b = batch(tag * 1000 + size, records, tag as i64);
                    let info = block_on(log.append(b.clone())).unwrap();
                    let expected_base = model.last().map_or(log.log_start_offset(), |m| validate_batch(m).unwrap().header.next_offset());
                    prop_assert_eq!(info.base_offset, expected_base);
                    model.push(stored(&storage, b, info.base_offset));
                }
                Op::Read { at } => {
                    let start = log.log_start_offset().0;
                    let end = log.log_end_offset().0;
                    let from = Offset(start + at % (end - start + 1));
                    let read = block_on(log.read(from, 3000)).unwrap();
                    let mut expected = model.iter().skip_while(|b| validate_batch(b).unwrap().header.next_offset() <= from);
                    for got in &read.batches {
                        prop_assert_eq!(Some(&got.to_vec()), expected.next());
                    }
                    prop_assert_eq!(read.batches.is_empty(), from == log.log_end_offset());
                }
                Op::Roll => block_on(log.roll()).unwrap(),
                Op::Truncate { at } => {
                    if !model.is_empty() {
                        let i = (at % model.len() as u64) as usize;
                        let base = validate_batch(&model[i]).unwrap().header.base_offset;
                        block_on(log.truncate_to(base)).unwrap();
                        model.truncate(i);
                    }
                }
                Op::Reopen { clean } => {
                    if clean {
                        block_on(log.close()).unwrap();
                    }
                    drop(log);
                    log = open(&storage, config.clone()).unwrap();
                    prop_assert_eq!(log.recovery_report().clean_shutdown, clean);
                }
                Op::Retain { bytes } => {
                    config.retention_bytes = Some(bytes);
                    drop(log);
                    log = open(&storage, config.clone()).unwrap();
                    block_on(log.enforce_retention()).unwrap();
                    config.retention_bytes = None;
                    let start = log.log_start_offset();
                    model.retain(|b| validate_batch(b).unwrap().header.base_offset >= start);
                }
            }
            let from = log.log_start_offset();
            prop_assert_eq!(read_all(&log, from), model.clone());
        }
    }

    #[test]
    fn a_crash_loses_no_synced_batch_and_returns_no_corrupt_one(seed in any::<u64>(), batches in 1usize..120) {
        let storage = SimStorage::new();
        let log = Rc::new(open(&storage, small_config()).unwrap());
        let acked = Rc::new(std::cell::RefCell::new(Vec::new()));
        let mut pool = LocalPool::new();
        let mut rng = SimRng::new(seed);
        for tag in 0..batches {
            let log = log.clone();
            let acked = acked.clone();
            let storage = storage.clone();
            let b = batch(tag as u64, 1 + rng.below(6) as usize, tag as i64);
            pool.spawner().spawn_local(async move {
                if let Ok(info) = log.append(b.clone()).await {
                    acked.borrow_mut().push(stored(&storage, b, info.base_offset));
                }
            }).unwrap();
        }
        // Stop at a random point: some appends acknowledged, some in flight.
        for _ in 0..rng.below(batches as u64 * 3 + 1) {
            pool.run_until_stalled();
            if acked.borrow().len() == batches { break; }
        }
        let steps = rng.below(40);
        for _ in 0..steps { let _ = pool.try_run_one(); }
        drop(pool);
        drop(log);
        storage.crash(&mut rng);
        let log = open(&storage, small_config()).unwrap();
        let got = read_all(&log, Offset(0));
        let mut acked = acked.borrow().clone();
        acked.sort_by_key(|b| validate_batch(b).unwrap().header.base_offset);
        for b in &acked {
            prop_assert!(got.contains(b), "acknowledged batch lost");
        }
        // Everything returned is a batch that was appended (valid CRC, records check).
        for b in &got {
            let view = validate_batch(b).unwrap();
            prop_assert!(validate_records(&view).is_ok());
        }
    }
}

#[test]
fn sim_paths_are_under_the_log_dir() {
    let storage = SimStorage::new();
    drop(filled_log(&storage, 2));
    assert!(storage.file_paths().iter().all(|p| p.starts_with(Path::new("/data"))));
}

// Regressions found in review.

#[test]
fn a_batch_larger_than_the_unsynced_window_does_not_stall() {
    let storage = SimStorage::new();
    let config = LogConfig {
        segment_bytes_max: 128 << 10,
        batch_bytes_max: 48 << 10,
        write_bytes_max: 8 << 10,
        write_buffer_bytes_max: 64 << 10,
        cache_bytes_max: 128 << 10,
        ..small_config()
    };
    assert!(u64::from(config.batch_bytes_max) > config.unsynced_bytes_max());
    let log = Rc::new(open(&storage, config).unwrap());
    let mut big = BatchBuilder::new();
    big.push(RecordInput::new(None, Some(&vec![9u8; 40 << 10]), Timestamp(0)));
    let big = big.build().unwrap();
    let done = Rc::new(std::cell::Cell::new(false));
    let mut pool = LocalPool::new();
    {
        let (log, done) = (log.clone(), done.clone());
        pool.spawner()
            .spawn_local(async move {
                log.append(big).await.unwrap();
                done.set(true);
            })
            .unwrap();
    }
    pool.run_until_stalled();
    assert!(done.get(), "the append stalled");
    assert_eq!(log.durable_offset(), Offset(1));
}

#[test]
fn cancelling_an_append_in_the_middle_of_its_write_poisons_instead_of_hanging() {
    let storage = SimStorage::new();
    let log = open(&storage, small_config()).unwrap();
    block_on(log.append(batch(1, 2, 0))).unwrap();
    {
        let mut append = Box::pin(log.append(batch(2, 2, 0)));
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        // Poll until the append drives a write (the simulated disk yields
        // once per I/O), then drop it there.
        for _ in 0..2 {
            assert!(append.as_mut().poll(&mut cx).is_pending());
        }
    }
    assert!(log.is_poisoned(), "a write whose outcome is unknown poisons the log");
    assert!(matches!(block_on(log.append(batch(3, 1, 0))), Err(LogError::Poisoned { .. })));
    assert!(matches!(block_on(log.close()), Err(LogError::Poisoned { .. })));
    drop(log);
    let log = open(&storage, small_config()).unwrap();
    assert!(log.log_end_offset() >= Offset(2), "what was acknowledged survives");
}

#[test]
fn a_damaged_base_offset_is_caught_by_the_header_crc_on_read() {
    let storage = SimStorage::new();
    let expected = filled_log(&storage, 200);
    let first = files_with_ext(&storage, "log").into_iter().min().unwrap();
    let mut bytes = storage.file_contents(&first).unwrap();
    // The third batch's base offset: the header CRC covers it (in version
    // 1 only offset continuity would have caught this).
    let at = expected[0].len() + expected[1].len();
    bytes[at] ^= 0x01;
    storage.set_file_contents(&first, bytes);
    let log = open(&storage, small_config()).unwrap();
    let error = block_on(log.read(Offset(0), 1 << 20)).unwrap_err();
    assert!(matches!(error, LogError::Corruption { position, .. } if position == at as u64), "{error}");
}

#[test]
fn relative_offsets_never_wrap_inside_a_segment() {
    let storage = SimStorage::new();
    let log = open(&storage, small_config()).unwrap();
    // A batch spanning a huge offset range (as a compacted batch may), placed
    // by its own offsets.
    let mut builder = BatchBuilder::new();
    builder.push_at(u32::MAX - 10, RecordInput::new(Some(b"k"), Some(b"v"), Timestamp(0)));
    let wide = builder.build().unwrap();
    block_on(log.append_at(wide.clone())).unwrap();
    assert_eq!(log.segment_count(), 1);
    let mut second = wide.clone();
    crate::batch::patch_base_offset(&mut second, log.log_end_offset());
    block_on(log.append_at(second)).unwrap();
    assert_eq!(log.segment_count(), 2, "the second batch would wrap the segment's relative offsets");
    // An empty segment cannot take a batch 2^32 offsets past its base.
    let mut far = wide;
    crate::batch::patch_base_offset(&mut far, log.log_end_offset().plus(u64::from(u32::MAX)));
    block_on(log.roll()).unwrap();
    assert!(matches!(block_on(log.append_at(far)), Err(LogError::GapTooLarge { .. })));
    block_on(log.close()).unwrap();
    let log = open(&storage, small_config()).unwrap();
    let second = Offset(u64::from(u32::MAX) - 9);
    let read = block_on(log.read(second, 1 << 20)).unwrap();
    assert_eq!(validate_batch(&read.batches[0]).unwrap().header.base_offset, second, "cold read through the index");
}

#[test]
fn r7_a_zeroed_block_inside_synced_data_is_reported() {
    let (reopened, _) = reopen_after_damaging_synced_data(|bytes| bytes[8192..12288].fill(0));
    assert!(matches!(reopened, Err(LogError::Corruption { .. })));
}

#[test]
fn a_truncation_interrupted_part_way_leaves_an_openable_prefix() {
    for after in 0..6 {
        let storage = SimStorage::new();
        let expected = filled_log(&storage, 200);
        let log = open(&storage, small_config()).unwrap();
        assert!(log.segment_count() >= 4);
        storage.fail_remove_after(after);
        let cut = validate_batch(&expected[3]).unwrap().header.base_offset;
        let result = block_on(log.truncate_to(cut));
        drop(log);
        // Whatever the truncation got to, the directory holds a contiguous
        // run of segments: the log opens and holds a prefix of what it had.
        let log = open(&storage, small_config()).unwrap_or_else(|e| panic!("after {after} removals: {e}"));
        let got = read_all(&log, Offset(0));
        assert!(got.len() >= 3 && got[..] == expected[..got.len()], "after {after} removals");
        if result.is_ok() {
            assert_eq!(got.len(), 3);
        }
    }
}

/// A power loss after `ex` ran: its tasks vanish (the caller drops what it
/// holds of the log first), the disk keeps what the crash model keeps (by
/// `seed`), and a fresh executor gets the storage.
pub(super) fn power_loss(ex: &SimExecutor, storage: &SimStorage, seed: u64) -> (SimExecutor, SimStorage) {
    ex.clear();
    let mut rng = SimRng::new(seed ^ 0x5eed);
    storage.crash(&mut rng);
    let after = SimExecutor::new(seed + 1);
    let storage = storage.reattach(&after);
    (after, storage)
}
