//! Log compaction throughput, as a ratio to the raw read bandwidth of the
//! same segment bytes measured in the same round: a log of entity events
//! (many updates per key) is written, closed and reopened (cold), one
//! compaction pass cleans it, and then as many bytes are read raw
//! (O_DIRECT, 1 MiB, QD1). A pass reads its input twice (mapping keys, then
//! rewriting) and writes what it keeps, so a ratio near 0.5 means the pass
//! is disk-bound.

#![allow(clippy::cast_precision_loss, reason = "rates and ratios of counters far below 2^52")]

use std::path::PathBuf;
use std::time::Instant;

use engine::batch::{BatchBuilder, RecordInput};
use engine::rt::glommio::GlommioStorage;
use engine::rt::sim::SimRng;
use engine::types::Timestamp;
use engine::{CompactionPolicy, FlushPolicy, LogConfig, PartitionLog};

use crate::Flags;
use crate::device;
use crate::engine::{log_config, mb, median, on_core};

const HELP: &str = "bench compaction [--dir DIR] [--rounds R] [--events N] [--keys K] [--value-bytes B]

Writes N entity events (values of B bytes over K keys, batches of 256) to a
partition log on DIR's disk, compacts it, and reads as many bytes raw; prints medians over R rounds and a `json: ` line.";

struct Round {
    input_bytes: u64,
    output_bytes: u64,
    input_bps: f64,
    raw_bps: f64,
}

pub fn run(args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "--help") {
        println!("{HELP}");
        return Ok(());
    }
    let flags = Flags::parse(args, &["dir", "rounds", "events", "keys", "value-bytes"])?;
    let dir = PathBuf::from(flags.get("dir").unwrap_or("target/enginebench"));
    let rounds: usize = flags.parse_or("rounds", 3)?.max(1);
    let events: u64 = flags.parse_or("events", 1_000_000)?;
    let keys: u64 = flags.parse_or("keys", 100_000)?.max(1);
    let value_bytes: usize = flags.parse_or("value-bytes", 200)?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for round in 0..rounds {
        let path = dir.join("compaction");
        let _ = std::fs::remove_dir_all(&path);
        let root = dir.clone();
        let log_dir = path.clone();
        let (input_bytes, output_bytes, secs) = on_core(async move || {
            let storage = GlommioStorage::new(&root).await.expect("storage");
            let config = LogConfig { segment_bytes_max: 64 << 20, ..log_config(FlushPolicy::Never) };
            let log = PartitionLog::open(storage.clone(), &log_dir, config.clone()).await.expect("open");
            let mut rng = SimRng::new(round as u64 + 1);
            let value = vec![b'v'; value_bytes];
            let mut written = 0;
            while written < events {
                let mut builder = BatchBuilder::new();
                for _ in 0..256.min(events - written) {
                    let key = format!("entity-{:06}", rng.next_u64() % keys);
                    builder.push(RecordInput::new(Some(key.as_bytes()), Some(&value), Timestamp(1)));
                    written += 1;
                }
                log.append(builder.build().expect("a batch")).await.expect("append");
            }
            log.roll().await.expect("roll");
            log.close().await.expect("close");
            drop(log);
            // Reopened: nothing of it in the caches.
            let log = PartitionLog::open(storage, &log_dir, config).await.expect("reopen");
            let input = log.size_bytes();
            let policy = CompactionPolicy {
                delete_retention_ms: i64::MAX / 2,
                min_compaction_lag_ms: 0,
                map_bytes_max: 64 << 20,
            };
            let start = Instant::now();
            let mut more = true;
            while more {
                more = log.compact(&policy, &mut ()).await.expect("compact").more;
            }
            let secs = start.elapsed().as_secs_f64();
            let output = log.size_bytes();
            log.close().await.expect("close");
            (input, output, secs)
        });
        // As many bytes as the pass's input, read raw on the same disk right
        // after it (the input itself is rewritten by then).
        let raw = device::read_bandwidth(&dir, 1 << 20, input_bytes).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_dir_all(&path);
        let r = Round { input_bytes, output_bytes, input_bps: input_bytes as f64 / secs, raw_bps: raw.bytes_per_sec() };
        println!(
            "round {round}: {:.1} MB in, {:.1} MB out, compaction {:.1} MB/s of input, raw read {:.1} MB/s, ratio {:.2}",
            r.input_bytes as f64 / 1e6,
            r.output_bytes as f64 / 1e6,
            mb(r.input_bps),
            mb(r.raw_bps),
            r.input_bps / r.raw_bps
        );
        out.push(r);
    }
    let m = |f: fn(&Round) -> f64| median(out.iter().map(f).collect());
    let (input_bps, raw_bps, ratio) = (m(|r| r.input_bps), m(|r| r.raw_bps), m(|r| r.input_bps / r.raw_bps));
    println!(
        "compaction of {events} events of {value_bytes} B over {keys} keys: median {:.1} MB/s of input, raw read {:.1} MB/s, ratio {ratio:.2}",
        mb(input_bps),
        mb(raw_bps)
    );
    println!(
        "json: {{\"bench\":\"compaction\",\"rounds\":{rounds},\"events\":{events},\"keys\":{keys},\"value_bytes\":{value_bytes},\"input_bytes\":{},\"output_bytes\":{},\"input_bytes_per_sec\":{input_bps:.0},\"raw_read_bytes_per_sec\":{raw_bps:.0},\"ratio\":{ratio:.3}}}",
        out[0].input_bytes, out[0].output_bytes
    );
    Ok(())
}
