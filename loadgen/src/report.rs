//! What a run reports: the summary (`summary.json`, schema in
//! `docs/loadgen.md`), the human table, HdrHistogram files, the interval
//! log, the plots, and the side-by-side comparison of two runs.

use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::baseline::Baseline;
use crate::stats::{LatencySummary, percentile_distribution};

pub const SCHEMA_VERSION: u32 = 3;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Throughput {
    pub records: u64,
    pub seconds: f64,
    pub records_per_sec: f64,
    /// Value bytes per second (keys and framing not counted).
    pub bytes_per_sec: f64,
}

impl Throughput {
    pub fn of(records: u64, bytes: u64, seconds: f64) -> Throughput {
        let per_sec = |n: u64| if seconds > 0.0 { n as f64 / seconds } else { 0.0 };
        Throughput { records, seconds, records_per_sec: per_sec(records), bytes_per_sec: per_sec(bytes) }
    }
}

/// One second of the run, warm-up included.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
#[allow(clippy::struct_field_names)] // `second` is the JSON field users read
pub struct Second {
    pub second: u64,
    pub produced: u64,
    pub produced_bytes: u64,
    pub consumed: u64,
    pub consumed_bytes: u64,
    pub produce_p99_us: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Summary {
    pub version: u32,
    /// `client+broker` (records through the producer: what an application
    /// gets) or `broker-only` (pre-built batches: what the broker takes).
    pub mode: String,
    pub target: String,
    pub topic: String,
    pub partitions: u32,
    pub producers: usize,
    pub consumers: usize,
    pub record_bytes: usize,
    pub record_bytes_max: usize,
    pub keys: u64,
    pub key_distribution: String,
    pub acks: String,
    pub flush: Option<String>,
    pub rate: Option<f64>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub produce: Throughput,
    pub produce_latency: LatencySummary,
    /// `produce_latency` split where the request goes out: time queued in
    /// the producer, then request to acknowledgement.
    pub produce_queue_latency: LatencySummary,
    pub produce_request_latency: LatencySummary,
    pub produce_errors: u64,
    pub produce_retries: u64,
    pub end_to_end_latency: Option<LatencySummary>,
    pub consumed: Option<Throughput>,
    pub replay: Option<Throughput>,
    /// Time from a replay fetch's request to its response.
    pub replay_fetch_latency: Option<LatencySummary>,
    /// Time from a tail consumer's fetch request to its response.
    pub fetch_latency: Option<LatencySummary>,
    /// Embedded runs: cores used while producing by the broker's threads
    /// and by the load generator's (client) threads.
    pub cpu_broker_cores: Option<f64>,
    pub cpu_client_cores: Option<f64>,
    /// `--find-max-rate`: every trial, and the highest rate that passed.
    pub rate_discovery: Option<RateDiscovery>,
    pub timeline: Vec<Second>,
    pub baseline: Option<Baseline>,
    /// Produced bytes/s over the baseline's 1 MiB write+fdatasync bandwidth.
    pub produce_to_disk_ratio: Option<f64>,
    /// Produce p99 minus the baseline's 4 KiB write+fdatasync p99.
    pub produce_p99_over_fdatasync_p99_us: Option<i64>,
}

/// One fixed-rate trial of `--find-max-rate`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RateTrial {
    pub rate: f64,
    pub achieved_records_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub passed: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RateDiscovery {
    pub p99_max_us: u64,
    /// The closed-loop rate the search started below.
    pub closed_loop_records_per_sec: f64,
    pub trials: Vec<RateTrial>,
    /// The highest rate whose p99 stayed under the bound and which the
    /// broker kept up with; 0 if none did.
    pub max_rate: f64,
}

impl Summary {
    pub fn load(path: &Path) -> Result<Summary, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Histograms a run keeps besides its summary.
pub struct Histograms<'a> {
    pub produce: &'a Histogram<u64>,
    pub end_to_end: Option<&'a Histogram<u64>>,
    /// Produce latency per second since the start.
    pub intervals: &'a [Histogram<u64>],
    pub start_unix_s: f64,
    pub fdatasync: Option<&'a Histogram<u64>>,
}

/// Writes `summary.json`, `produce.hgrm` (and `end_to_end.hgrm`,
/// `fdatasync.hgrm`), `produce.hlog` and the SVG plots into `dir`.
pub fn write(dir: &Path, summary: &Summary, h: &Histograms<'_>) -> Result<(), String> {
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(io)?;
    let json = serde_json::to_string_pretty(summary).expect("serializable");
    std::fs::write(dir.join("summary.json"), json).map_err(io)?;
    std::fs::write(dir.join("produce.hgrm"), percentile_distribution(h.produce)).map_err(io)?;
    if let Some(e) = h.end_to_end {
        std::fs::write(dir.join("end_to_end.hgrm"), percentile_distribution(e)).map_err(io)?;
    }
    if let Some(f) = h.fdatasync {
        std::fs::write(dir.join("fdatasync.hgrm"), percentile_distribution(f)).map_err(io)?;
    }
    std::fs::write(dir.join("produce.hlog"), interval_log(h.intervals, h.start_unix_s)).map_err(io)?;
    crate::plot::latency(&dir.join("latency.svg"), summary, h)?;
    crate::plot::throughput(&dir.join("throughput.svg"), summary)?;
    Ok(())
}

/// HdrHistogram's interval log: one compressed histogram per second.
pub fn interval_log(intervals: &[Histogram<u64>], start_unix_s: f64) -> Vec<u8> {
    use hdrhistogram::serialization::V2DeflateSerializer;
    use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
    let mut out = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let start = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(start_unix_s);
    let mut writer = IntervalLogWriterBuilder::new()
        .add_comment("cairn-loadgen produce latency, microseconds")
        .with_start_time(start)
        .with_base_time(start)
        .with_max_value_divisor(1000.0)
        .begin_log_with(&mut out, &mut serializer)
        .expect("writing to memory");
    for (i, h) in intervals.iter().enumerate() {
        let at = std::time::Duration::from_secs(i as u64);
        writer.write_histogram(h, at, std::time::Duration::from_secs(1), None).expect("writing to memory");
    }
    out
}

fn latency_row(out: &mut String, name: &str, l: &LatencySummary) {
    let ms = |us: u64| us as f64 / 1000.0;
    let _ = writeln!(
        out,
        "{name:<12} {:>10} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
        l.count,
        l.mean_us / 1000.0,
        ms(l.p50_us),
        ms(l.p90_us),
        ms(l.p99_us),
        ms(l.p999_us),
        ms(l.p9999_us),
        ms(l.max_us)
    );
}

/// The human table.
pub fn table(s: &Summary) -> String {
    let mut out = String::new();
    let size = if s.record_bytes == s.record_bytes_max {
        format!("{} B", s.record_bytes)
    } else {
        format!("{}..{} B", s.record_bytes, s.record_bytes_max)
    };
    let keys = if s.keys == 0 { "unkeyed".to_string() } else { format!("{} keys ({})", s.keys, s.key_distribution) };
    let _ = writeln!(
        out,
        "cairn-loadgen: {} | {} | topic {} ({} partitions) | {} producers, {} consumers | {size} records, {keys} | acks {} | flush {} | rate {}",
        if s.mode.is_empty() { "client+broker" } else { &s.mode },
        s.target,
        s.topic,
        s.partitions,
        s.producers,
        s.consumers,
        s.acks,
        s.flush.as_deref().unwrap_or("(broker's)"),
        s.rate.map_or_else(|| "max".to_string(), |r| format!("{r:.0}/s"))
    );
    let _ = writeln!(
        out,
        "produce    {:>12.0} records/s {:>8.1} MB/s   ({} records in {:.1} s, {} errors, {} retries)",
        s.produce.records_per_sec,
        s.produce.bytes_per_sec / 1e6,
        s.produce.records,
        s.produce.seconds,
        s.produce_errors,
        s.produce_retries
    );
    if let Some(c) = &s.consumed {
        let _ = writeln!(out, "consume    {:>12.0} records/s {:>8.1} MB/s", c.records_per_sec, c.bytes_per_sec / 1e6);
    }
    if let (Some(b), Some(c)) = (s.cpu_broker_cores, s.cpu_client_cores) {
        let per_core = if c > 0.0 { s.produce.records_per_sec / c } else { 0.0 };
        let _ = writeln!(
            out,
            "cpu        broker {b:.2} cores, load generator {c:.2} cores ({per_core:.0} records/s per load generator core)"
        );
    }
    if let Some(r) = &s.replay {
        let _ = writeln!(
            out,
            "replay     {:>12.0} records/s {:>8.1} MB/s   ({} records in {:.2} s)",
            r.records_per_sec,
            r.bytes_per_sec / 1e6,
            r.records,
            r.seconds
        );
    }
    let _ = writeln!(out, "latency ms        count     mean      p50      p90      p99    p99.9   p99.99      max");
    latency_row(&mut out, "produce", &s.produce_latency);
    if s.produce_queue_latency.count > 0 && s.mode != "broker-only" {
        latency_row(&mut out, "  queued", &s.produce_queue_latency);
        latency_row(&mut out, "  request", &s.produce_request_latency);
    }
    if let Some(f) = &s.fetch_latency {
        latency_row(&mut out, "fetch", f);
    }
    if let Some(d) = &s.rate_discovery {
        let _ = writeln!(
            out,
            "max rate   {:>12.0} records/s with p99 <= {:.3} ms ({} trials below a closed-loop {:.0}/s)",
            d.max_rate,
            d.p99_max_us as f64 / 1000.0,
            d.trials.len(),
            d.closed_loop_records_per_sec
        );
    }
    if let Some(f) = &s.replay_fetch_latency {
        latency_row(&mut out, "replay fetch", f);
    }
    if let Some(e) = &s.end_to_end_latency {
        latency_row(&mut out, "end2end", e);
    }
    if let Some(b) = &s.baseline {
        latency_row(&mut out, "fdatasync", &b.fdatasync_4k);
        let _ = writeln!(
            out,
            "disk       1 MiB write+fdatasync {:.1} MB/s | produce / disk bandwidth = {:.3} | produce p99 - fdatasync p99 = {:.3} ms",
            b.write_sync_1m_bytes_per_sec / 1e6,
            s.produce_to_disk_ratio.unwrap_or(0.0),
            s.produce_p99_over_fdatasync_p99_us.unwrap_or(0) as f64 / 1000.0
        );
    }
    out
}

/// The run second by second (warm-up included): what was acknowledged in
/// each, and its produce p99.
pub fn timeline(s: &Summary) -> String {
    let mut out = String::from("second      records bar                               p99 ms\n");
    let peak = s.timeline.iter().map(|t| t.produced).max().unwrap_or(0).max(1);
    for t in &s.timeline {
        let bar = "#".repeat(usize::try_from(t.produced * 30 / peak).unwrap_or(30));
        let _ = writeln!(out, "{:>6} {:>12} {bar:<31} {:>8.3}", t.second, t.produced, t.produce_p99_us as f64 / 1000.0);
    }
    out
}

/// Two runs side by side, with B / A ratios.
pub fn compare(a: &Summary, b: &Summary) -> String {
    let mut out = String::new();
    let ratio = |x: f64, y: f64| if x > 0.0 { format!("{:.3}", y / x) } else { "-".into() };
    let _ = writeln!(
        out,
        "A: {} | {} partitions, {} B, acks {}, rate {:?}",
        a.target, a.partitions, a.record_bytes, a.acks, a.rate
    );
    let _ = writeln!(
        out,
        "B: {} | {} partitions, {} B, acks {}, rate {:?}",
        b.target, b.partitions, b.record_bytes, b.acks, b.rate
    );
    let _ = writeln!(out, "{:<24} {:>14} {:>14} {:>8}", "", "A", "B", "B/A");
    let mut row = |name: &str, x: f64, y: f64, unit: &str| {
        let _ = writeln!(out, "{name:<24} {x:>12.1}{unit:>2} {y:>12.1}{unit:>2} {:>8}", ratio(x, y));
    };
    row("produce records/s", a.produce.records_per_sec, b.produce.records_per_sec, "");
    row("produce MB/s", a.produce.bytes_per_sec / 1e6, b.produce.bytes_per_sec / 1e6, "");
    if let (Some(x), Some(y)) = (&a.replay, &b.replay) {
        row("replay records/s", x.records_per_sec, y.records_per_sec, "");
    }
    if let (Some(x), Some(y)) = (&a.consumed, &b.consumed) {
        row("consume records/s", x.records_per_sec, y.records_per_sec, "");
    }
    let (la, lb) = (&a.produce_latency, &b.produce_latency);
    for (name, x, y) in [
        ("produce p50 µs", la.p50_us, lb.p50_us),
        ("produce p90 µs", la.p90_us, lb.p90_us),
        ("produce p99 µs", la.p99_us, lb.p99_us),
        ("produce p99.9 µs", la.p999_us, lb.p999_us),
        ("produce p99.99 µs", la.p9999_us, lb.p9999_us),
        ("produce max µs", la.max_us, lb.max_us),
    ] {
        row(name, x as f64, y as f64, "");
    }
    if let (Some(x), Some(y)) = (&a.end_to_end_latency, &b.end_to_end_latency) {
        row("end-to-end p99 µs", x.p99_us as f64, y.p99_us as f64, "");
    }
    if let (Some(x), Some(y)) = (&a.baseline, &b.baseline) {
        row("fdatasync p99 µs", x.fdatasync_4k.p99_us as f64, y.fdatasync_4k.p99_us as f64, "");
        row("disk MB/s", x.write_sync_1m_bytes_per_sec / 1e6, y.write_sync_1m_bytes_per_sec / 1e6, "");
    }
    row("produce errors", a.produce_errors as f64, b.produce_errors as f64, "");
    out
}

/// Runs as Markdown table rows, for docs/benchmarks.md.
pub fn markdown(runs: &[Summary]) -> String {
    let mut out = String::from(
        "| load | value | partitions | acks | records/s | MB/s | p50 ms | p99 ms | p99.9 ms | fdatasync p99 ms | p99 − fdatasync p99 ms | MB/s ÷ disk MB/s | replay records/s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let ms = |us: u64| format!("{:.2}", us as f64 / 1000.0);
    for s in runs {
        let load = s.rate.map_or_else(|| "max".to_string(), |r| format!("{r:.0}/s"));
        let (fsync, over, ratio) = match &s.baseline {
            Some(b) => (
                ms(b.fdatasync_4k.p99_us),
                format!("{:.2}", s.produce_p99_over_fdatasync_p99_us.unwrap_or(0) as f64 / 1000.0),
                format!("{:.3}", s.produce_to_disk_ratio.unwrap_or(0.0)),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let l = &s.produce_latency;
        let _ = writeln!(
            out,
            "| {load} | {} B | {} | {} | {:.0} | {:.1} | {} | {} | {} | {fsync} | {over} | {ratio} | {} |",
            s.record_bytes,
            s.partitions,
            s.acks,
            s.produce.records_per_sec,
            s.produce.bytes_per_sec / 1e6,
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.p999_us),
            s.replay.as_ref().map_or_else(|| "-".to_string(), |r| format!("{:.0}", r.records_per_sec)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Summary {
        Summary {
            version: SCHEMA_VERSION,
            target: "embedded".into(),
            topic: "t".into(),
            partitions: 4,
            producers: 1,
            record_bytes: 100,
            record_bytes_max: 100,
            key_distribution: "uniform".into(),
            acks: "leader".into(),
            produce: Throughput::of(1000, 100_000, 2.0),
            produce_latency: LatencySummary { count: 1000, p99_us: 900, ..LatencySummary::default() },
            timeline: vec![Second {
                second: 0,
                produced: 500,
                produced_bytes: 50_000,
                produce_p99_us: 800,
                ..Second::default()
            }],
            ..Summary::default()
        }
    }

    #[test]
    fn the_timeline_shows_a_second_that_emptied() {
        let mut s = sample();
        s.timeline = [900, 0, 450]
            .iter()
            .enumerate()
            .map(|(i, &n)| Second { second: i as u64, produced: n, produce_p99_us: 1500, ..Second::default() })
            .collect();
        let text = timeline(&s);
        let rows: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(rows.len(), 3, "{text}");
        assert!(rows[0].contains(&"#".repeat(30)), "the peak is a full bar: {text}");
        assert!(!rows[1].contains('#') && rows[1].split_whitespace().nth(1) == Some("0"), "{text}");
        assert!(rows[2].contains(&"#".repeat(15)) && !rows[2].contains(&"#".repeat(16)), "{text}");
    }

    #[test]
    fn the_summary_round_trips_through_json() {
        let s = sample();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Summary>(&json).unwrap(), s);
        assert!((s.produce.records_per_sec - 500.0).abs() < 1e-9);
        assert!((s.produce.bytes_per_sec - 50_000.0).abs() < 1e-9);
    }

    #[test]
    fn every_field_the_schema_documents_is_in_the_json() {
        // docs/loadgen.md lists the summary's fields as `| `name` | ...` rows.
        let doc = include_str!("../../docs/loadgen.md");
        let json = serde_json::to_value(sample()).unwrap();
        let keys: Vec<&str> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .filter(|k| !k.contains('.') && !k.starts_with('-'))
            .collect();
        assert!(keys.len() > 15, "the schema table lists {} fields", keys.len());
        for k in keys {
            assert!(json.get(k).is_some(), "docs/loadgen.md documents `{k}`, which summary.json lacks");
        }
        for k in json.as_object().unwrap().keys() {
            assert!(
                doc.contains(&format!("| `{k}`")),
                "summary.json has `{k}`, which docs/loadgen.md does not document"
            );
        }
    }

    #[test]
    fn compare_shows_ratios() {
        let a = sample();
        let mut b = sample();
        b.produce = Throughput::of(3000, 300_000, 2.0);
        let text = compare(&a, &b);
        let line = text.lines().find(|l| l.starts_with("produce records/s")).unwrap();
        assert!(line.trim_end().ends_with("3.000"), "{line}");
    }

    #[test]
    fn the_interval_log_holds_one_histogram_per_second() {
        let mut intervals = vec![crate::stats::histogram(), crate::stats::histogram()];
        intervals[0].record(100).unwrap();
        intervals[1].record(200).unwrap();
        let log = interval_log(&intervals, 1_795_000_000.0);
        let parsed: Vec<_> = hdrhistogram::serialization::interval_log::IntervalLogIterator::new(&log)
            .filter_map(|e| match e {
                Ok(hdrhistogram::serialization::interval_log::LogEntry::Interval(h)) => Some(h.start_timestamp()),
                _ => None,
            })
            .collect();
        assert_eq!(parsed.len(), 2);
    }
}
