//! The disk's own numbers, measured in the same run on the same directory,
//! so the broker's figures can be quoted as ratios. The measurement is the
//! `bench` crate's device baseline (`bench::device::write_fdatasync`: an
//! O_DIRECT write linked to an fdatasync through io_uring, one pair at a
//! time, into a fresh preallocated file), the one the engine's own figures
//! are quoted against: with 4 KiB writes its latency is the floor under one
//! acknowledged produce with `flush = always`; with 1 MiB writes (the
//! engine's largest write and sync unit) its throughput is the disk's
//! bandwidth for fsynced data.

use std::path::Path;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::stats::LatencySummary;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Baseline {
    /// 4 KiB write + fdatasync, one at a time.
    pub fdatasync_4k: LatencySummary,
    /// 1 MiB O_DIRECT writes, each followed by fdatasync.
    pub write_sync_1m_bytes_per_sec: f64,
}

/// 4 KiB pairs measured: about 1.5–2 s on a disk whose fdatasync takes 150–200 µs.
const SMALL_PAIRS: usize = 10_000;
/// 1 MiB pairs measured: a 512 MiB file.
const LARGE_PAIRS: usize = 512;

/// Measures in `dir` (its files are removed afterwards); also returns the
/// 4 KiB latency histogram.
pub fn measure(dir: &Path) -> std::io::Result<(Baseline, Histogram<u64>)> {
    std::fs::create_dir_all(dir)?;
    let small = bench::device::write_fdatasync(dir, 4096, SMALL_PAIRS)?;
    let large = bench::device::write_fdatasync(dir, 1 << 20, LARGE_PAIRS)?;
    let baseline = Baseline {
        fdatasync_4k: LatencySummary::of(&small.latency_us),
        write_sync_1m_bytes_per_sec: large.bytes_per_sec(),
    };
    Ok((baseline, small.latency_us))
}
