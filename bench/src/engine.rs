//! Engine benchmarks, each quoted as a ratio to the device baseline measured
//! in the same run on the same directory: these machines are shared and
//! noisy, so absolute figures alone would say little.
//!
//! - append: records/s and MB/s for 100 B and 1 KiB records in batches of 1,
//!   16, 256 and 1024, with `flush = always` and `flush = never`, against raw
//!   O_DIRECT writes (never) or write+fdatasync (always) of the same size as
//!   the engine's average write;
//! - tail reads (served from the batch cache) and cold reads (DMA with
//!   read-ahead) against raw 1 MiB O_DIRECT reads;
//! - the recovery scan of an uncleanly closed segment, against the same.

#![allow(clippy::cast_precision_loss, reason = "rates and ratios of counters far below 2^52")]

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use engine::batch::{BatchBuilder, RecordInput, validate_batch};
use engine::rt::glommio::GlommioStorage;
use engine::types::{Offset, Timestamp};
use engine::{FlushPolicy, LogConfig, PartitionLog};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use glommio::{LocalExecutorBuilder, Placement};

use crate::Flags;
use crate::device;

const HELP: &str = "bench engine [--dir DIR] [--seconds S] [--rounds R] [--appenders N] [--depth D] [--scan-mib M]
    [--cases all|quick|append] [--record-bytes 100|1024] [--batch 1|16|256|1024] [--flush never|always]

Appends, reads and recovers a partition log on DIR's disk and measures the
same disk raw (io_uring, O_DIRECT) in the same run; prints a table and
`json: ` lines.";

struct AppendCase {
    record_bytes: usize,
    batch_records: usize,
    flush: FlushPolicy,
}

struct AppendResult {
    records: u64,
    bytes: u64,
    elapsed: Duration,
    writes: u64,
    bytes_written: u64,
    fdatasyncs: u64,
}

fn make_batches(record_bytes: usize, batch_records: usize, count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|b| {
            let mut builder = BatchBuilder::new();
            for i in 0..batch_records {
                // A record of `record_bytes` value bytes, with a small key.
                let mut value = vec![b'a' + (i % 26) as u8; record_bytes];
                value[0] = b as u8;
                builder.push(RecordInput::new(
                    Some(format!("k{}", i % 64).as_bytes()),
                    Some(&value),
                    Timestamp(1_700_000_000_000),
                ));
            }
            builder.build().expect("batch")
        })
        .collect()
}

pub(crate) fn on_core<T: Send + 'static>(f: impl AsyncFnOnce() -> T + Send + 'static) -> T {
    // glommio's default preempt timer (100 ms). Shorter ones let queued I/O
    // reach the kernel sooner during a burst of appends, but glommio 0.9's
    // executor was seen to park for good with 50 µs and 500 µs timers in
    // this workload (docs/ARCHITECTURE.md, ADR 1).
    LocalExecutorBuilder::new(Placement::Fixed(0))
        .name("bench")
        .spawn(move || async move { f().await })
        .expect("executor")
        .join()
        .expect("executor thread")
}

pub(crate) fn log_config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        flush,
        segment_bytes_max: 1 << 30,
        batch_bytes_max: 2 << 20,
        write_buffer_bytes_max: 4 << 20,
        cache_bytes_max: 64 << 20,
        ..LogConfig::default()
    }
}

fn run_append(dir: &Path, case: &AppendCase, seconds: f64, appenders: usize, depth: usize) -> AppendResult {
    let dir = dir.to_path_buf();
    let batches = Rc::new(make_batches(case.record_bytes, case.batch_records, 32));
    let batches: Vec<Vec<u8>> = batches.as_ref().clone();
    let config = log_config(case.flush);
    let records_per_batch = case.batch_records as u64;
    on_core(async move || {
        let storage = GlommioStorage::new(&dir).await.expect("storage");
        let path = dir.join("append");
        let _ = std::fs::remove_dir_all(&path);
        let log = Rc::new(PartitionLog::open(storage, &path, config).await.expect("open"));
        let batches = Rc::new(batches);
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for a in 0..appenders {
            let log = log.clone();
            let batches = batches.clone();
            tasks.push(glommio::spawn_local(async move {
                // Like a producer with `depth` requests in flight (Kafka's
                // max.in.flight.requests): the next append is issued as soon
                // as the oldest outstanding one is acknowledged.
                let (mut records, mut bytes, mut i) = (0u64, 0u64, a);
                let mut in_flight = FuturesOrdered::new();
                loop {
                    while in_flight.len() < depth && Instant::now() < deadline {
                        let batch = batches[i % batches.len()].clone();
                        bytes += batch.len() as u64;
                        let log = log.clone();
                        in_flight.push_back(async move { log.append(batch).await });
                        i += 1;
                    }
                    match in_flight.next().await {
                        Some(result) => {
                            result.expect("append");
                            records += records_per_batch;
                        }
                        None => break,
                    }
                }
                (records, bytes)
            }));
        }
        let (mut records, mut bytes) = (0, 0);
        for task in tasks {
            let (r, b) = task.await;
            records += r;
            bytes += b;
        }
        let elapsed = start.elapsed();
        let stats = log.io_stats();
        log.close().await.expect("close");
        drop(log);
        let _ = std::fs::remove_dir_all(&path);
        AppendResult {
            records,
            bytes,
            elapsed,
            writes: stats.writes,
            bytes_written: stats.bytes_written,
            fdatasyncs: stats.fdatasyncs,
        }
    })
}

pub(crate) fn mb(bytes_per_sec: f64) -> f64 {
    bytes_per_sec / 1e6
}

fn round_to_block(bytes: u64) -> usize {
    (bytes.div_ceil(4096) * 4096).clamp(4096, 64 << 20) as usize
}

fn flush_name(flush: FlushPolicy) -> &'static str {
    match flush {
        FlushPolicy::Always => "always",
        FlushPolicy::Never => "never",
        FlushPolicy::IntervalMs(_) => "interval",
    }
}

pub fn run(args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "--help") {
        println!("{HELP}");
        return Ok(());
    }
    let flags = Flags::parse(
        args,
        &["dir", "seconds", "appenders", "scan-mib", "cases", "record-bytes", "batch", "flush", "depth", "rounds"],
    )?;
    let dir = PathBuf::from(flags.get("dir").unwrap_or("target/enginebench"));
    let seconds: f64 = flags.parse_or("seconds", 1.0)?;
    let appenders: usize = flags.parse_or("appenders", 16)?;
    let depth: usize = flags.parse_or("depth", 8)?.max(1);
    let rounds: usize = flags.parse_or("rounds", 5)?.max(1);
    let scan_mib: u64 = flags.parse_or("scan-mib", 512)?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;

    println!(
        "engine benchmark: dir {}, {rounds} rounds of {seconds} s per case, {appenders} appenders x {depth} appends in flight on one core; medians over rounds; MB = 10^6 bytes",
        dir.display()
    );
    println!(
        "{:>6} {:>6} {:>7} {:>12} {:>9} {:>10} {:>9} {:>12} {:>9}",
        "rec B", "batch", "flush", "records/s", "MB/s", "avg write", "syncs/s", "raw MB/s", "ratio"
    );
    let only_record: Option<usize> =
        flags.get("record-bytes").map(str::parse).transpose().map_err(|e| format!("--record-bytes: {e}"))?;
    let only_batch: Option<usize> =
        flags.get("batch").map(str::parse).transpose().map_err(|e| format!("--batch: {e}"))?;
    let only_flush = flags.get("flush");
    let record_sizes: &[usize] = match flags.get("cases") {
        Some("quick") => &[100],
        Some("read") => &[],
        _ => &[100, 1024],
    };
    let quick = flags.get("cases") == Some("quick");
    let batch_sizes: &[usize] = if quick { &[1, 256] } else { &[1, 16, 256, 1024] };
    for &record_bytes in record_sizes.iter().filter(|r| only_record.is_none_or(|o| o == **r)) {
        for &batch_records in batch_sizes.iter().filter(|b| only_batch.is_none_or(|o| o == **b)) {
            for flush in [FlushPolicy::Never, FlushPolicy::Always]
                .into_iter()
                .filter(|f| only_flush.is_none_or(|o| o == flush_name(*f)))
            {
                let case = AppendCase { record_bytes, batch_records, flush };
                // Engine and raw disk alternate, `rounds` times; the medians
                // of the per-round figures are reported (the disk swings).
                let mut rounds_out = Vec::new();
                for _ in 0..rounds {
                    let r = run_append(&dir, &case, seconds, appenders, depth);
                    let secs = r.elapsed.as_secs_f64();
                    let avg_write = r.bytes_written / r.writes.max(1);
                    let write_size = round_to_block(avg_write);
                    let raw_bps = if flush == FlushPolicy::Always {
                        let count = (r.fdatasyncs as usize).clamp(100, 3000);
                        device::write_fdatasync(&dir, write_size, count).map_err(|e| e.to_string())?.bytes_per_sec()
                    } else {
                        let total = r.bytes_written.clamp(16 << 20, 1 << 30);
                        device::write_bandwidth(&dir, write_size, total).map_err(|e| e.to_string())?.bytes_per_sec()
                    };
                    // Compare bytes the disk moved: the engine writes its
                    // partial last block again with the next write, so its
                    // disk bytes are `bytes_written`.
                    rounds_out.push(Round {
                        records_per_sec: r.records as f64 / secs,
                        bytes_per_sec: r.bytes as f64 / secs,
                        avg_write,
                        syncs_per_sec: r.fdatasyncs as f64 / secs,
                        raw_bps,
                        ratio: (r.bytes_written as f64 / secs) / raw_bps,
                    });
                }
                let m = |f: fn(&Round) -> f64| median(rounds_out.iter().map(f).collect());
                let (records_per_sec, bytes_per_sec, syncs_per_sec, raw_bps, ratio) = (
                    m(|r| r.records_per_sec),
                    m(|r| r.bytes_per_sec),
                    m(|r| r.syncs_per_sec),
                    m(|r| r.raw_bps),
                    m(|r| r.ratio),
                );
                let avg_write = m(|r| r.avg_write as f64) as u64;
                let ratios: Vec<String> = rounds_out.iter().map(|r| format!("{:.2}", r.ratio)).collect();
                println!(
                    "{:>6} {:>6} {:>7} {:>12.0} {:>9.1} {:>10} {:>9.0} {:>12.1} {:>9.2}  ({})",
                    record_bytes,
                    batch_records,
                    flush_name(flush),
                    records_per_sec,
                    mb(bytes_per_sec),
                    avg_write,
                    syncs_per_sec,
                    mb(raw_bps),
                    ratio,
                    ratios.join(" ")
                );
                println!(
                    "json: {{\"bench\":\"engine\",\"test\":\"append\",\"record_bytes\":{record_bytes},\"batch_records\":{batch_records},\"flush\":\"{}\",\"appenders\":{appenders},\"depth\":{depth},\"rounds\":{rounds},\"records_per_sec\":{records_per_sec:.0},\"bytes_per_sec\":{bytes_per_sec:.0},\"avg_write_bytes\":{avg_write},\"fdatasyncs_per_sec\":{syncs_per_sec:.1},\"raw_bytes_per_sec\":{raw_bps:.0},\"ratio_to_raw\":{ratio:.3},\"ratios\":[{}]}}",
                    flush_name(flush),
                    ratios.join(","),
                );
            }
        }
    }
    if flags.get("cases") == Some("append") {
        return Ok(());
    }
    read_and_recovery(&dir, seconds, scan_mib, rounds);
    Ok(())
}

struct Round {
    records_per_sec: f64,
    bytes_per_sec: f64,
    avg_write: u64,
    syncs_per_sec: f64,
    raw_bps: f64,
    ratio: f64,
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// One round of the read benchmark: cold read, recovery scan, and the raw
/// read of the same segment bytes, back to back. Rates per second.
struct ReadRound {
    cold_bytes: f64,
    cold_records: f64,
    scan_bytes: f64,
    raw_bytes: f64,
}

struct ReadFigures {
    tail_records_per_sec: f64,
    tail_bytes_per_sec: f64,
    rounds: Vec<ReadRound>,
    scan_bytes: u64,
    max_rss_kib: u64,
}

fn max_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn read_and_recovery(dir: &Path, seconds: f64, scan_mib: u64, rounds: usize) {
    let path = dir.join("read");
    let _ = std::fs::remove_dir_all(&path);
    let dir2 = dir.to_path_buf();
    let figures = on_core(async move || {
        let storage = GlommioStorage::new(&dir2).await.expect("storage");
        let config = log_config(FlushPolicy::Never);
        let log = PartitionLog::open(storage.clone(), &path, config.clone()).await.expect("open");
        let batches = make_batches(100, 256, 32);
        let mut i = 0;
        while log.size_bytes() < scan_mib << 20 {
            log.append(batches[i % batches.len()].clone()).await.expect("append");
            i += 1;
        }
        // Tail reads: everything the cache holds, over and over.
        let end = log.log_end_offset();
        let cached_batches = (log.cached_bytes() / batches[0].len()) as u64;
        let cache_start = Offset(end.0.saturating_sub(cached_batches.saturating_sub(1) * 256));
        let (mut records, mut bytes) = (0u64, 0u64);
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < seconds {
            let mut from = cache_start;
            while from < end {
                let read = log.read(from, 1 << 20).await.expect("read");
                for b in &read.batches {
                    let header = validate_batch(b).expect("valid").header;
                    records += u64::from(header.record_count);
                    bytes += b.len() as u64;
                    from = header.next_offset();
                }
            }
        }
        let tail_secs = start.elapsed().as_secs_f64();
        assert_eq!(log.io_stats().cold_reads, 0, "tail reads never touch the disk");
        let scan_bytes = log.size_bytes();
        log.close().await.expect("close");
        drop(log);
        let segment = path.join(format!("{:020}.log", 0));
        let mut out = Vec::new();
        for _ in 0..rounds {
            // Cold reads: a reopened log has an empty cache.
            let log = PartitionLog::open(storage.clone(), &path, config.clone()).await.expect("reopen");
            let start = Instant::now();
            let mut from = log.log_start_offset();
            let (mut cold_bytes, mut cold_records) = (0u64, 0u64);
            while from < log.log_end_offset() {
                let read = log.read(from, 1 << 20).await.expect("read");
                for b in &read.batches {
                    let header = validate_batch(b).expect("valid").header;
                    if header.next_offset() > from {
                        cold_bytes += b.len() as u64;
                        cold_records += u64::from(header.record_count);
                        from = header.next_offset();
                    }
                }
            }
            let cold_secs = start.elapsed().as_secs_f64();
            // Recovery: drop without close, so the next open scans the segment.
            drop(log);
            let start = Instant::now();
            let log = PartitionLog::open(storage.clone(), &path, config.clone()).await.expect("recover");
            let scan_secs = start.elapsed().as_secs_f64();
            assert!(!log.recovery_report().clean_shutdown);
            assert_eq!(log.recovery_report().scanned_bytes, scan_bytes);
            log.close().await.expect("close");
            drop(log);
            // The same bytes, raw (blocking the executor is fine here).
            let raw = device::read_file_bandwidth(&segment, 1 << 20, scan_bytes).expect("raw read");
            out.push(ReadRound {
                cold_bytes: cold_bytes as f64 / cold_secs,
                cold_records: cold_records as f64 / cold_secs,
                scan_bytes: scan_bytes as f64 / scan_secs,
                raw_bytes: raw.bytes_per_sec(),
            });
        }
        let _ = std::fs::remove_dir_all(&path);
        ReadFigures {
            tail_records_per_sec: records as f64 / tail_secs,
            tail_bytes_per_sec: bytes as f64 / tail_secs,
            rounds: out,
            scan_bytes,
            max_rss_kib: max_rss_kib(),
        }
    });
    let m = |f: fn(&ReadRound) -> f64| median(figures.rounds.iter().map(f).collect());
    let ratios = |f: fn(&ReadRound) -> f64| -> String {
        figures.rounds.iter().map(|r| format!("{:.2}", f(r) / r.raw_bytes)).collect::<Vec<_>>().join(" ")
    };
    let raw_read = m(|r| r.raw_bytes);
    let (cold_bps, cold_records, scan_bps) = (m(|r| r.cold_bytes), m(|r| r.cold_records), m(|r| r.scan_bytes));
    let cold_ratio = m(|r| r.cold_bytes / r.raw_bytes);
    let scan_ratio = m(|r| r.scan_bytes / r.raw_bytes);
    println!();
    println!(
        "reads of a {} MiB log, {} rounds, medians; raw = O_DIRECT 1 MiB QD1 reads of the same segment bytes in the same round",
        figures.scan_bytes >> 20,
        figures.rounds.len()
    );
    println!("raw sequential read:   {:>9.1} MB/s", mb(raw_read));
    println!(
        "tail read (cache):     {:>12.0} records/s {:>9.1} MB/s",
        figures.tail_records_per_sec,
        mb(figures.tail_bytes_per_sec)
    );
    println!(
        "cold read (DMA):       {cold_records:>12.0} records/s {:>9.1} MB/s  ratio to raw {cold_ratio:.2} ({})",
        mb(cold_bps),
        ratios(|r| r.cold_bytes)
    );
    println!(
        "recovery scan:         {:>9.1} MB/s  ratio to raw {scan_ratio:.2} ({})",
        mb(scan_bps),
        ratios(|r| r.scan_bytes)
    );
    println!(
        "max resident memory:   {} MiB (whole process; the log's cache is 64 MiB, its write chunks 4 MiB)",
        figures.max_rss_kib / 1024
    );
    println!(
        "json: {{\"bench\":\"engine\",\"test\":\"read\",\"rounds\":{},\"tail_records_per_sec\":{:.0},\"tail_bytes_per_sec\":{:.0},\"cold_bytes_per_sec\":{cold_bps:.0},\"cold_records_per_sec\":{cold_records:.0},\"cold_ratio_to_raw\":{cold_ratio:.3},\"scan_bytes\":{},\"scan_bytes_per_sec\":{scan_bps:.0},\"scan_ratio_to_raw\":{scan_ratio:.3},\"raw_read_bytes_per_sec\":{raw_read:.0},\"max_rss_kib\":{}}}",
        figures.rounds.len(),
        figures.tail_records_per_sec,
        figures.tail_bytes_per_sec,
        figures.scan_bytes,
        figures.max_rss_kib
    );
}
