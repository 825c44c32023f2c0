//! Retention runs beside appends and reads: it never holds the log, and a
//! read that meets a segment it deleted is told the offset is gone.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use futures::executor::{LocalPool, block_on};
use futures::task::LocalSpawnExt;

use super::{batch, dir, open, small_config};
use crate::log::{LogConfig, LogError, PartitionLog};
use crate::rt::sim::{SimExecutor, SimStorage};
use crate::types::Offset;

#[test]
fn retention_neither_holds_appends_nor_waits_for_a_slow_disk() {
    let storage = SimStorage::new();
    let config = LogConfig { retention_bytes: Some(8 << 10), ..small_config() };
    let log = Rc::new(open(&storage, config).unwrap());
    for tag in 0..600 {
        block_on(log.append(batch(tag, 3, 0))).unwrap();
    }
    // A fresh active segment: the appends below cannot need a roll (which
    // holds the log, and rightly waits for the device).
    block_on(log.roll()).unwrap();
    let segments = log.segment_count();
    assert!(segments > 4);
    // A slow device: the next fdatasync does not come back.
    storage.hold_fdatasyncs(true);
    let mut pool = LocalPool::new();
    let first_acked = Rc::new(Cell::new(false));
    {
        let (log, acked) = (log.clone(), first_acked.clone());
        pool.spawner()
            .spawn_local(async move {
                log.append(batch(1000, 2, 0)).await.unwrap();
                acked.set(true);
            })
            .unwrap();
    }
    pool.run_until_stalled();
    assert!(!first_acked.get(), "its fdatasync is held");
    let deleted = Rc::new(Cell::new(None));
    {
        let (log, deleted) = (log.clone(), deleted.clone());
        pool.spawner().spawn_local(async move { deleted.set(Some(log.enforce_retention().await.unwrap())) }).unwrap();
    }
    let end_before = log.log_end_offset();
    {
        let log = log.clone();
        pool.spawner()
            .spawn_local(async move {
                let _ = log.append(batch(1001, 2, 0)).await;
            })
            .unwrap();
    }
    pool.run_until_stalled();
    // Before: retention took the log exclusively, waited for the held sync,
    // and held the second append out meanwhile.
    assert!(deleted.get().is_some_and(|n| n > 0), "retention finished while the sync is held");
    assert_eq!(log.log_end_offset(), end_before.plus(2), "the second append entered the log meanwhile");
    assert!(log.segment_count() < segments);
    storage.hold_fdatasyncs(false);
    pool.run_until_stalled();
    assert!(first_acked.get());
}

#[test]
fn a_log_without_retention_is_not_touched_by_the_retention_pass() {
    let storage = SimStorage::new();
    let log = Rc::new(open(&storage, small_config()).unwrap());
    block_on(log.append(batch(1, 2, 0))).unwrap();
    storage.hold_fdatasyncs(true);
    let mut pool = LocalPool::new();
    {
        let log = log.clone();
        pool.spawner()
            .spawn_local(async move {
                let _ = log.append(batch(2, 2, 0)).await;
            })
            .unwrap();
    }
    pool.run_until_stalled();
    // With a sync in flight, a pass that took the log would wait for it.
    assert_eq!(block_on(log.enforce_retention()).unwrap(), 0);
    storage.hold_fdatasyncs(false);
    pool.run_until_stalled();
}

#[test]
fn a_read_that_meets_a_segment_retention_deleted_gets_offset_out_of_range() {
    // Reads of old segments race retention passes on the simulated disk,
    // whose operations take random time: every read either returns data or
    // says the offset is gone, never a storage error.
    let mut raced = 0;
    for seed in 0..40 {
        let ex = SimExecutor::new(seed);
        let storage = SimStorage::with_executor(&ex);
        let config = LogConfig { open_segments_max: 1, ..small_config() };
        let log = {
            let (storage, config) = (storage.clone(), config.clone());
            Rc::new(ex.block_on(async move { PartitionLog::open(storage, dir(), config).await.unwrap() }))
        };
        {
            let log = log.clone();
            ex.block_on(async move {
                for tag in 0..300 {
                    log.append(batch(tag, 3, 0)).await.unwrap();
                }
            });
        }
        let results = Rc::new(RefCell::new(Vec::new()));
        for r in 0..8u64 {
            let (log, results) = (log.clone(), results.clone());
            drop(ex.spawn(async move {
                let got = log.read(Offset(r * 40), 1 << 10).await;
                results.borrow_mut().push(got.map(|r| r.batches.len()));
            }));
        }
        {
            let log = log.clone();
            drop(ex.spawn(async move {
                let mut config = log.config();
                config.retention_bytes = Some(4 << 10);
                log.reconfigure(config).unwrap();
                log.enforce_retention().await.unwrap();
            }));
        }
        ex.run_until(Duration::from_secs(10), || results.borrow().len() == 8);
        for got in results.borrow().iter() {
            match got {
                Ok(n) => assert!(*n > 0),
                Err(LogError::OffsetOutOfRange { .. }) => raced += 1,
                Err(e) => panic!("seed {seed}: a read racing retention failed with {e}"),
            }
        }
    }
    assert!(raced > 0, "some reads met a deleted segment (the race was exercised)");
}

#[test]
fn an_idle_partition_past_its_retention_is_emptied_and_goes_on_from_its_end() {
    let storage = SimStorage::new();
    let config = LogConfig { retention_ms: Some(60_000), ..small_config() };
    let log = open(&storage, config).unwrap();
    for tag in 0..5 {
        block_on(log.append(batch(tag, 3, 0))).unwrap();
    }
    let end = log.log_end_offset();
    assert_eq!(log.segment_count(), 1, "everything is in the active segment");
    assert_eq!(block_on(log.enforce_retention()).unwrap(), 0, "not expired yet");
    // No append for longer than the retention: before, the active segment
    // was never deleted, so an idle partition kept its data for ever.
    storage.advance_ms(61_000);
    assert_eq!(block_on(log.enforce_retention()).unwrap(), 1);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (end, end));
    assert!(matches!(block_on(log.read(Offset(0), 1 << 20)), Err(LogError::OffsetOutOfRange { .. })));
    let info = block_on(log.append(batch(9, 2, 0))).unwrap();
    assert_eq!(info.base_offset, end, "offsets go on from the end");
}

#[test]
fn a_version_1_batch_found_by_recovery_is_not_expired_by_its_producer_clock() {
    use crate::batch::{BatchBuilder, RecordInput};
    use crate::rt::sim::SimRng;
    use crate::types::Timestamp;
    let storage = SimStorage::new();
    storage.set_now_ms(1_800_000_000_000);
    let config = LogConfig { retention_ms: Some(60_000), ..small_config() };
    let log = open(&storage, config.clone()).unwrap();
    // An old client's batch, stamped at time 0 by its producer.
    let mut builder = BatchBuilder::new();
    builder.push(RecordInput::new(Some(b"k"), Some(b"v"), Timestamp(0)));
    block_on(log.append(builder.build_v1().unwrap())).unwrap();
    drop(log);
    storage.crash(&mut SimRng::new(3));
    // Recovery scans it: version 1 has no append time to read back.
    let log = open(&storage, config).unwrap();
    storage.advance_ms(30_000);
    assert_eq!(block_on(log.enforce_retention()).unwrap(), 0, "kept: it counts as appended when it was found");
    assert_eq!(log.log_end_offset(), Offset(1));
    storage.advance_ms(31_000);
    assert_eq!(block_on(log.enforce_retention()).unwrap(), 1, "and expires a retention later");
}
