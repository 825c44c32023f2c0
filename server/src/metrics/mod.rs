//! Metrics. On the data path they are plain `Cell`s of the core that owns
//! them: no lock, no atomic shared between cores. A scrape of `/metrics`
//! asks every shard for a snapshot (a message, like any cross-shard work),
//! merges them and encodes the Prometheus text format with
//! prometheus-client ([`encode`]); the HTTP side is in [`http`].

pub mod encode;
pub mod http;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Duration;

use engine::{LatencyHistogram, PoolUsage};

/// Counters of one partition.
#[derive(Debug, Default)]
pub struct PartitionMetrics {
    pub produce_records: Cell<u64>,
    pub produce_bytes: Cell<u64>,
    pub fetch_records: Cell<u64>,
    pub fetch_bytes: Cell<u64>,
    /// Bytes the cleaner read and removed (its throughput and yield).
    pub cleaner_read_bytes: Cell<u64>,
    pub cleaner_removed_bytes: Cell<u64>,
}

/// Counters of one API on one shard.
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestStats {
    pub count: u64,
    pub errors: u64,
    pub latency: LatencyHistogram,
}

/// What one shard counts beyond its partitions.
#[derive(Debug, Default)]
pub struct ShardMetrics {
    pub connections: Cell<i64>,
    /// Bytes of requests and responses held by connection budgets.
    pub inflight_bytes: Cell<i64>,
    /// Fetches parked in a long poll now.
    pub fetches_waiting: Cell<i64>,
    requests: RefCell<BTreeMap<&'static str, RequestStats>>,
}

impl ShardMetrics {
    pub fn add(cell: &Cell<i64>, delta: i64) {
        cell.set(cell.get() + delta);
    }

    /// Records one request of `api` that took `latency` (`failed`: it got an error).
    pub fn request(&self, api: &'static str, latency: Duration, failed: bool) {
        let mut requests = self.requests.borrow_mut();
        let stats = requests.entry(api).or_default();
        stats.count += 1;
        stats.errors += u64::from(failed);
        stats.latency.record(latency);
    }

    pub fn requests(&self) -> Vec<(String, RequestStats)> {
        self.requests.borrow().iter().map(|(k, v)| ((*k).to_string(), *v)).collect()
    }
}

/// One partition as a scrape sees it.
#[derive(Debug, Clone)]
pub struct PartitionSnapshot {
    pub topic: String,
    pub partition: u32,
    pub produce_records: u64,
    pub produce_bytes: u64,
    pub fetch_records: u64,
    pub fetch_bytes: u64,
    pub log_start_offset: u64,
    pub high_watermark: u64,
    pub log_end_offset: u64,
    pub size_bytes: u64,
    pub disk_bytes: u64,
    pub cleaner_read_bytes: u64,
    pub cleaner_removed_bytes: u64,
    /// The cleaner's backlog: sealed, replicated bytes not yet cleaned.
    pub cleaner_dirty_bytes: u64,
    pub available: bool,
    pub fdatasync: LatencyHistogram,
}

/// One shard as a scrape sees it (plain data: it crosses cores).
#[derive(Debug, Clone)]
pub struct ShardSnapshot {
    pub shard: usize,
    pub connections: i64,
    pub inflight_bytes: i64,
    pub fetches_waiting: i64,
    pub requests: Vec<(String, RequestStats)>,
    pub partitions: Vec<PartitionSnapshot>,
    pub pool: PoolUsage,
    /// Consumer-group lag, `(group, topic, partition) -> records`, of the
    /// groups this shard coordinates (a partition with a commit whose
    /// high watermark this broker knows).
    pub group_lag: Vec<(String, String, u32, u64)>,
}
