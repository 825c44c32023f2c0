//! Many logs on one core share one memory pool: write buffers and caches
//! stay within its budgets however many logs there are, an idle log holds
//! no write buffer, and appends still all complete when the budget is tight.

use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;

use futures::executor::{LocalPool, block_on};
use futures::task::LocalSpawnExt;

use super::{batch, read_all, small_config};
use crate::log::{LogConfig, MemoryPool, PartitionLog, PoolConfig};
use crate::rt::sim::SimStorage;
use crate::types::Offset;

/// A pool small enough that 200 logs contend for it.
fn tight_budget() -> PoolConfig {
    PoolConfig {
        write_buffer_bytes_max: 48 << 10,
        cache_bytes_max: 64 << 10,
        read_ahead_bytes_max: 16 << 10,
        index_cache_bytes_max: 8 << 10,
    }
}

#[test]
fn logs_sharing_a_pool_stay_within_its_budgets_and_all_appends_complete() {
    let storage = SimStorage::new();
    let budget = tight_budget();
    let pool = MemoryPool::new(budget);
    let config = LogConfig { cache_bytes_max: 16 << 10, ..small_config() };
    let logs: Vec<Rc<PartitionLog<SimStorage>>> = (0..200)
        .map(|p| {
            let dir = PathBuf::from(format!("/data/t-{p}"));
            Rc::new(block_on(PartitionLog::open_in(storage.clone(), dir, config.clone(), pool.clone())).unwrap())
        })
        .collect();
    assert_eq!(pool.usage().write_buffer_bytes, 0, "an idle log holds no write buffer");
    let mut tasks = LocalPool::new();
    let done = Rc::new(Cell::new(0));
    for (p, log) in logs.iter().enumerate() {
        for tag in 0..5u64 {
            let (log, done) = (log.clone(), done.clone());
            tasks
                .spawner()
                .spawn_local(async move {
                    log.append(batch(p as u64 * 10 + tag, 4, 0)).await.unwrap();
                    done.set(done.get() + 1);
                })
                .unwrap();
        }
    }
    let mut peak = 0;
    while tasks.try_run_one() {
        let usage = pool.usage();
        assert!(usage.write_buffer_bytes <= budget.write_buffer_bytes_max, "{usage:?}");
        assert!(usage.cache_bytes <= budget.cache_bytes_max, "{usage:?}");
        peak = peak.max(usage.write_buffer_bytes);
    }
    assert_eq!(done.get(), 1000, "every append completed under the tight budget");
    assert!(peak > budget.write_buffer_bytes_max / 2, "the budget was actually contended (peak {peak})");
    assert_eq!(pool.usage().write_buffer_bytes, 0, "written buffers went back to the pool");
    for log in &logs {
        assert_eq!(read_all(log, Offset(0)).len(), 5, "cold reads serve what the cache evicted");
        assert!(pool.usage().read_ahead_bytes <= budget.read_ahead_bytes_max);
    }
    drop(logs);
    assert_eq!(pool.usage().cache_bytes, 0, "closed logs leave nothing in the pool");
}

#[test]
fn a_poisoned_log_gives_its_write_buffers_back_to_the_core() {
    let storage = SimStorage::new();
    let budget = tight_budget();
    let pool = MemoryPool::new(budget);
    let open = |name: &str| {
        let dir = PathBuf::from(format!("/data/{name}"));
        Rc::new(block_on(PartitionLog::open_in(storage.clone(), dir, small_config(), pool.clone())).unwrap())
    };
    let (stuck, healthy) = (open("stuck"), open("healthy"));
    // The stuck log's fdatasync fails while appends keep arriving: the
    // ones behind it sit in its buffer, never to be written.
    storage.fail_next_fdatasync(std::io::ErrorKind::Other);
    let mut tasks = LocalPool::new();
    for tag in 0..40u64 {
        let stuck = stuck.clone();
        tasks.spawner().spawn_local(async move { drop(stuck.append(batch(tag, 20, 0)).await) }).unwrap();
    }
    tasks.run_until_stalled();
    assert!(stuck.is_poisoned());
    assert_eq!(pool.usage().write_buffer_bytes, 0, "nothing of the budget stays with a log that writes no more");
    // So the other log of the core still gets buffers.
    for tag in 0..40u64 {
        block_on(healthy.append(batch(100 + tag, 20, 0))).unwrap();
    }
}
