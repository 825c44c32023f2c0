//! Faults: a full disk, a truncation under a waiting append, a poisoned log
//! brought back without losing what was acknowledged.

use std::future::Future;
use std::io;

use futures::executor::block_on;

use super::{batch, dir, open, read_all, small_config, stored};
use crate::log::{LogConfig, LogError, PartitionLog};
use crate::rt::sim::{SimRng, SimStorage};
use crate::types::Offset;

/// Appends batches `tags` of `records` records each, keeping what the log
/// stored of each in `acked`.
fn append_acked(
    storage: &SimStorage,
    log: &PartitionLog<SimStorage>,
    tags: std::ops::Range<u64>,
    records: usize,
    acked: &mut Vec<Vec<u8>>,
) {
    for tag in tags {
        let b = batch(tag, records, 0);
        let info = block_on(log.append(b.clone())).unwrap();
        acked.push(stored(storage, b, info.base_offset));
    }
}

#[test]
fn a_full_disk_refuses_appends_and_they_resume_once_space_is_freed() {
    let storage = SimStorage::new();
    let log = open(&storage, small_config()).unwrap();
    let mut acked = Vec::new();
    storage.set_capacity(Some(100 << 10));
    // Fill the disk: rolls and pre-allocation steps hit the limit.
    let mut refused = 0;
    for tag in 0..2000u64 {
        let b = batch(tag, 3, 0);
        match block_on(log.append(b.clone())) {
            Ok(info) => acked.push(stored(&storage, b, info.base_offset)),
            Err(e) => {
                assert!(e.is_disk_full(), "{e}");
                assert_eq!(e.code(), 105, "DiskFull");
                assert!(!log.is_poisoned(), "a full disk must not poison the log: {e}");
                refused += 1;
                if refused > 20 {
                    break;
                }
            }
        }
    }
    assert!(refused > 20, "the disk filled up");
    assert_eq!(read_all(&log, Offset(0)), acked, "nothing acknowledged is lost, nothing refused is there");
    // Space is freed: the same log takes appends again, without a reopen.
    storage.set_capacity(None);
    for tag in 0..200u64 {
        let b = batch(10_000 + tag, 3, 0);
        let info = block_on(log.append(b.clone())).unwrap();
        acked.push(stored(&storage, b, info.base_offset));
    }
    assert_eq!(read_all(&log, Offset(0)), acked);
    drop(log);
    storage.crash(&mut SimRng::new(2));
    let log = open(&storage, small_config()).unwrap();
    assert_eq!(read_all(&log, Offset(0)), acked);
}

#[test]
fn a_truncation_fails_a_stranded_append_at_once() {
    let storage = SimStorage::new();
    let log = open(&storage, small_config()).unwrap();
    block_on(log.append(batch(1, 2, 0))).unwrap();
    let cut = log.log_end_offset();
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    let mut append = Box::pin(log.append(batch(2, 2, 0)));
    // One poll: the batch is in the log's buffer, not yet written.
    assert!(append.as_mut().poll(&mut cx).is_pending());
    assert_eq!(log.log_end_offset(), cut.plus(2));
    // The truncation runs before the append does again (it writes and
    // syncs the batch, then cuts it off).
    block_on(log.truncate_to(cut)).unwrap();
    // Nothing else will ever append: before the fix the append waited for
    // the log to pass its offset, forever.
    let mut outcome = None;
    for _ in 0..10 {
        if let std::task::Poll::Ready(r) = append.as_mut().poll(&mut cx) {
            outcome = Some(r);
            break;
        }
    }
    let got = outcome.expect("the append finished at once");
    assert!(matches!(got, Err(LogError::Truncated { base_offset }) if base_offset == cut), "{got:?}");
    assert_eq!(log.log_end_offset(), cut);
}

#[test]
fn a_poisoned_log_is_abandoned_and_reopened_without_losing_acknowledged_data() {
    let storage = SimStorage::new();
    let log = open(&storage, small_config()).unwrap();
    let mut acked = Vec::new();
    append_acked(&storage, &log, 0..30, 2, &mut acked);
    storage.fail_next_fdatasync(io::ErrorKind::Other);
    assert!(block_on(log.append(batch(99, 2, 0))).is_err());
    assert!(log.is_poisoned());
    assert!(log.poisoned_cause().unwrap().contains("fdatasync"));
    block_on(log.abandon());
    assert!(matches!(block_on(log.append(batch(100, 1, 0))), Err(LogError::Closed)));
    drop(log);
    // The owner opens the directory again: recovery trusts only the disk.
    let log = open(&storage, small_config()).unwrap();
    assert!(!log.is_poisoned());
    let got = read_all(&log, Offset(0));
    assert_eq!(got[..acked.len()], acked[..], "what was acknowledged is there");
    block_on(log.append(batch(101, 1, 0))).unwrap();
}

#[test]
fn a_roll_that_meets_a_full_disk_leaves_the_log_usable() {
    let storage = SimStorage::new();
    let config = LogConfig { segment_bytes_max: 8 << 10, ..small_config() };
    let log = PartitionLog::open(storage.clone(), dir(), config.clone());
    let log = block_on(log).unwrap();
    block_on(log.append(batch(1, 3, 0))).unwrap();
    // Room for the data written so far and not one byte more: once the roll
    // trims the pre-allocated space, its index file cannot be written.
    storage.set_capacity(Some(log.size_bytes()));
    let e = block_on(log.roll()).unwrap_err();
    assert!(e.is_disk_full(), "{e}");
    assert!(!log.is_poisoned());
    storage.set_capacity(None);
    block_on(log.roll()).unwrap();
    assert_eq!(log.segment_count(), 2);
    block_on(log.append(batch(2, 3, 0))).unwrap();
}

#[test]
fn a_roll_that_cannot_start_its_new_segment_is_undone_and_loses_nothing() {
    let storage = SimStorage::new();
    let config = LogConfig { segment_bytes_max: 1 << 20, ..small_config() };
    let log = open(&storage, config.clone()).unwrap();
    let mut acked = Vec::new();
    append_acked(&storage, &log, 0..3, 3, &mut acked);
    // The sealed index gets written, then the new segment's directory entry
    // cannot be made durable: the roll fails as a full disk.
    storage.fail_next_sync_dir(io::ErrorKind::StorageFull);
    let e = block_on(log.roll()).unwrap_err();
    assert!(e.is_disk_full(), "{e}");
    assert!(!log.is_poisoned());
    assert_eq!(log.segment_count(), 1);
    assert_eq!(super::files_with_ext(&storage, "index"), Vec::<std::path::PathBuf>::new(), "no stale sealed index");
    // Appends go on into the segment that stayed active.
    append_acked(&storage, &log, 3..6, 3, &mut acked);
    block_on(log.close()).unwrap();
    drop(log);
    let log = open(&storage, config).unwrap();
    assert_eq!(read_all(&log, Offset(0)), acked, "the batches after the failed roll are there");
}

#[test]
fn r10_an_interrupted_roll_leaves_the_old_segment_active_with_every_batch() {
    let storage = SimStorage::new();
    let log = open(&storage, small_config()).unwrap();
    let mut acked = Vec::new();
    append_acked(&storage, &log, 0..3, 3, &mut acked);
    block_on(log.roll()).unwrap();
    append_acked(&storage, &log, 3..6, 3, &mut acked);
    block_on(log.close()).unwrap();
    drop(log);
    // What a roll that wrote the sealed index, left an empty new segment and
    // let appends go on into the old one would leave: the later batches at
    // the end of the first segment, a stale index, an empty last segment.
    let mut logs = super::files_with_ext(&storage, "log");
    logs.sort();
    let [first, second] = &logs[..] else { panic!("two segments: {logs:?}") };
    let mut joined = storage.file_contents(first).unwrap();
    joined.extend(storage.file_contents(second).unwrap());
    storage.set_file_contents(first, joined);
    storage.set_file_contents(second, Vec::new());
    let log = open(&storage, small_config()).unwrap();
    assert_eq!(read_all(&log, Offset(0)), acked, "a stale index hides nothing");
    assert_eq!(log.segment_count(), 1);
    block_on(log.append(batch(6, 1, 0))).unwrap();
}

#[test]
fn an_append_cut_by_a_truncation_in_progress_is_never_acknowledged() {
    // A truncation flushes (and syncs) what is buffered before it cuts: the
    // appends it is about to cut must not take that sync as their
    // acknowledgement. Seeded schedules with out-of-order I/O give the
    // appends every chance to run between the sync and the cut.
    for seed in 0..40u64 {
        let ex = crate::rt::sim::SimExecutor::new(seed);
        let storage = SimStorage::with_executor(&ex);
        let log = {
            let storage = storage.clone();
            std::rc::Rc::new(
                ex.block_on(async move { PartitionLog::open(storage, dir(), small_config()).await.unwrap() }),
            )
        };
        {
            let log = log.clone();
            ex.block_on(async move { log.append(batch(1, 2, 0)).await.unwrap() });
        }
        let cut = log.log_end_offset();
        let outcomes = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        for tag in 0..4u64 {
            let (log, outcomes) = (log.clone(), outcomes.clone());
            drop(ex.spawn(async move {
                let got = log.append(batch(10 + tag, 2, 0)).await;
                outcomes.borrow_mut().push(got);
            }));
        }
        // The appends take their places in the buffer, then the truncation
        // starts before any of them is acknowledged.
        ex.run_until_stalled();
        let truncated = std::rc::Rc::new(std::cell::Cell::new(false));
        {
            let (log, truncated) = (log.clone(), truncated.clone());
            drop(ex.spawn(async move {
                log.truncate_to(cut).await.unwrap();
                truncated.set(true);
            }));
        }
        ex.run_for(std::time::Duration::from_secs(1));
        assert!(truncated.get(), "seed {seed}: the truncation finished");
        assert_eq!(log.log_end_offset(), cut, "seed {seed}");
        for info in outcomes.borrow().iter().flatten() {
            assert!(info.base_offset < cut, "seed {seed}: acknowledged batch at {} was cut", info.base_offset);
        }
    }
}

#[test]
fn an_append_that_fits_is_taken_when_a_whole_preallocation_step_does_not() {
    let storage = SimStorage::new();
    let config = LogConfig { segment_bytes_max: 64 << 20, preallocate_bytes_max: 4 << 20, ..small_config() };
    let log = open(&storage, config).unwrap();
    while log.disk_bytes() < 1 << 20 {
        block_on(log.append(batch(1, 40, 0))).unwrap();
    }
    // Room for a few more batches, not for another step as large as the
    // segment so far.
    let allocated = log.disk_bytes();
    let mut data = log.size_bytes();
    while data + 2000 < allocated {
        block_on(log.append(batch(2, 40, 0))).unwrap();
        data = log.size_bytes();
    }
    storage.set_capacity(Some(storage.used_bytes() + (64 << 10)));
    block_on(log.append(batch(3, 40, 0))).expect("the space it needs is there");
    assert!(log.disk_bytes() < allocated + (64 << 10));
}
