//! The log on the full simulator: seeded scheduling, I/O that completes out
//! of issue order, directory entries that are durable only once synced, and
//! a power loss at a random moment. Whatever the seed, no acknowledged
//! batch is lost and nothing returned is corrupt.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use proptest::prelude::*;

use super::{batch, dir, power_loss, read_all_async, small_config, stored};
use crate::batch::validate_batch;
use crate::log::{FlushPolicy, LogConfig, PartitionLog};
use crate::rt::sim::{SimExecutor, SimStorage};
use crate::types::Offset;

/// Runs appenders until a power loss `crash_after` into the run; returns
/// the batches acknowledged and the log reopened afterwards.
fn run_and_crash(seed: u64, config: &LogConfig, crash_after: Duration) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let ex = SimExecutor::new(seed);
    let storage = SimStorage::with_executor(&ex);
    let log = {
        let (storage, config) = (storage.clone(), config.clone());
        Rc::new(ex.block_on(async move { PartitionLog::open(storage, dir(), config).await.unwrap() }))
    };
    let acked = Rc::new(RefCell::new(Vec::new()));
    for appender in 0..4u64 {
        let (log, acked, storage) = (log.clone(), acked.clone(), storage.clone());
        drop(ex.spawn(async move {
            for i in 0..200u64 {
                let b = batch(appender * 1000 + i, 1 + (i % 5) as usize, i as i64);
                match log.append(b.clone()).await {
                    Ok(info) => acked.borrow_mut().push(stored(&storage, b, info.base_offset)),
                    Err(_) => return,
                }
            }
        }));
    }
    ex.run_for(crash_after);
    // Power loss: the process's tasks vanish with it.
    drop(log);
    let (after, storage) = power_loss(&ex, &storage, seed);
    let config = config.clone();
    let got = after.block_on(async move {
        let log = PartitionLog::open(storage, dir(), config).await.unwrap();
        read_all_async(&log, Offset(0)).await
    });
    let acked = acked.borrow().clone();
    (acked, got)
}

/// Whether `got` holds the batch `b` at its offset, with its producer's
/// bytes (the append time a log stamps is its clock's, not known here).
fn holds(got: &[Vec<u8>], b: &[u8]) -> bool {
    let base = validate_batch(b).unwrap().header.base_offset;
    got.iter().any(|g| validate_batch(g).unwrap().header.base_offset == base && g[40..] == b[40..])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn a_power_loss_under_out_of_order_io_loses_no_acknowledged_batch(seed in any::<u64>(), after_us in 100u64..60_000) {
        let (acked, got) = run_and_crash(seed, &small_config(), Duration::from_micros(after_us));
        for b in &acked {
            prop_assert!(holds(&got, b), "acknowledged batch at offset {} lost", validate_batch(b).unwrap().header.base_offset);
        }
    }
}

#[test]
fn the_same_check_catches_flush_never_losing_acknowledged_batches() {
    // Under `never`, an acknowledgement promises nothing across power loss:
    // the check above must be able to see that, or it proves nothing.
    let config = LogConfig { flush: FlushPolicy::Never, ..small_config() };
    let lost = (0..20u64).any(|seed| {
        let (acked, got) = run_and_crash(seed, &config, Duration::from_millis(20));
        acked.iter().any(|b| !holds(&got, b))
    });
    assert!(lost, "some seed loses an acknowledged batch under flush = never");
}
