//! `cairn-loadgen`: drives a broker with producers and consumers and reports
//! throughput and latency the way people compare brokers: percentiles to
//! p99.99 with coordinated omission accounted for, HdrHistogram files, plots,
//! and the raw disk measured in the same run for ratios. `--embedded` runs a
//! broker in this process on a temporary directory, so one command measures
//! a fresh machine. `docs/loadgen.md` describes the flags and the report.

mod baseline;
mod cpu;
mod keys;
mod plot;
mod prebuilt;
mod report;
mod stats;
mod workload;

/// The broker's allocator (ADR 22), so `--embedded` measures what
/// `cairn-server` runs.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_client::{Acks, Client, ClientConfig, ErrorCode, OffsetSpec, ProducerConfig, StartFrom, TopicConfig};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::keys::{KeyDistribution, SizeRange};
use crate::report::{Histograms, RateDiscovery, RateTrial, Second, Summary, Throughput};
use crate::stats::{LatencySummary, histogram};
use crate::workload::{ConsumeSpec, ProduceSpec, Progress};

#[derive(Parser, Debug)]
#[command(name = "cairn-loadgen", version, about = "Cairn load generator: throughput and latency")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print two runs' summary.json side by side, with ratios B / A
    Compare { a: PathBuf, b: PathBuf },
    /// Print runs as one Markdown table (report directories or summary.json files)
    Table { runs: Vec<PathBuf> },
}

#[derive(Args, Debug, Clone)]
#[allow(clippy::struct_excessive_bools)] // command-line switches, each its own flag
struct RunArgs {
    /// Running brokers, comma-separated (the first that answers is used)
    #[arg(long, value_name = "ADDR[,ADDR...]", conflicts_with = "embedded")]
    bootstrap: Option<String>,
    /// Start a broker in this process on a temporary directory
    #[arg(long)]
    embedded: bool,
    /// Where the embedded broker keeps its data (a temporary directory under
    /// it), and where --baseline measures the disk
    #[arg(long, value_name = "DIR", default_value = ".")]
    data_dir: PathBuf,
    /// Shards of the embedded broker (0 = one per core)
    #[arg(long, default_value_t = 0)]
    cores: usize,
    /// Flush policy of the embedded broker: always, interval or never
    #[arg(long, default_value = "always")]
    flush: String,
    /// The embedded broker's `spin_before_park_us`
    #[arg(long, default_value_t = 0)]
    spin_before_park_us: u64,
    /// The embedded broker's cache of recent batches per partition
    /// (`log.cache_bytes_max`; its shard budget grows to hold
    /// --partitions of them): with a topic that fits, --replay reads from
    /// the cache instead of the disk
    #[arg(long, value_name = "BYTES")]
    cache_bytes: Option<usize>,
    /// Where the embedded broker serves /metrics, or `off`
    #[arg(long, default_value = "off", value_name = "ADDR")]
    metrics_listen: String,
    #[arg(long, default_value = "loadgen")]
    topic: String,
    /// Partitions of the topic, if it has to be created
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Consumers reading the tail while producers write (end-to-end latency)
    #[arg(long, default_value_t = 0)]
    consumers: usize,
    /// Value size: N, or MIN..MAX for sizes drawn uniformly
    #[arg(long, default_value = "100", value_name = "BYTES")]
    record_bytes: String,
    /// Distinct keys; 0 sends unkeyed records
    #[arg(long, default_value_t = 0)]
    keys: u64,
    #[arg(long, value_enum, default_value_t = KeyDistribution::Uniform)]
    key_distribution: KeyDistribution,
    /// The Zipf exponent s: key k is drawn with probability ∝ 1/k^s
    #[arg(long, default_value_t = 1.0)]
    zipf_exponent: f64,
    #[arg(long, value_enum, default_value_t = AcksArg::Leader)]
    acks: AcksArg,
    /// Records per second over all producers (open loop); absent = as fast as possible
    #[arg(long)]
    rate: Option<f64>,
    /// How long to measure: `20s`, `1m`, or plain seconds
    #[arg(long, default_value = "10", value_parser = parse_seconds, value_name = "DURATION")]
    duration: f64,
    /// Stop after this many records over all producers (warm-up included), if sooner
    #[arg(long)]
    records: Option<u64>,
    /// Load before measuring: `500ms`, `2s`, or plain seconds
    #[arg(long, default_value = "2", value_parser = parse_seconds, value_name = "DURATION")]
    warmup: f64,
    /// Producer batch size in encoded bytes (default: the client's)
    #[arg(long)]
    batch_bytes: Option<usize>,
    /// The producer's buffer bound in bytes (default: the client's)
    #[arg(long)]
    buffer_bytes: Option<usize>,
    /// The most one produce request carries (default: the client's)
    #[arg(long)]
    request_bytes: Option<usize>,
    /// How long a batch waits for more records: `5ms`, `1s` (or --linger-ms N)
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION", conflicts_with = "linger_ms")]
    linger: Option<Duration>,
    /// --linger in milliseconds (default 5, or 0 with --find-max-rate)
    #[arg(long)]
    linger_ms: Option<u64>,
    /// Requests each producer keeps in flight per broker shard
    #[arg(long, default_value_t = 1)]
    requests_in_flight: usize,
    /// Broker-only mode: send batches built before the run (as iggy-bench
    /// does), so the figure is the broker's alone; the default mode sends
    /// records through the producer and measures client and broker together
    #[arg(long, conflicts_with = "rate")]
    broker_only: bool,
    /// Find the highest fixed rate whose produce p99 stays under --p99-max
    /// (`OpenMessaging` Benchmark's rate discovery): a closed-loop run, then
    /// fixed-rate trials of --warmup + --duration each, bisecting below it
    #[arg(long, conflicts_with_all = ["rate", "broker_only"])]
    find_max_rate: bool,
    /// The p99 bound of --find-max-rate: `5ms`, `1s`
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION", default_value = "10ms")]
    p99_max: Duration,
    /// Fixed-rate trials of --find-max-rate after the closed-loop run
    #[arg(long, default_value_t = 6)]
    trials: usize,
    /// Threads of the load generator's tokio runtime
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// After producing, read the whole topic back from the earliest offset as
    /// fast as possible (consume throughput)
    #[arg(long)]
    replay: bool,
    /// Also measure the raw disk (write+fdatasync latency and bandwidth) on --data-dir
    #[arg(long)]
    baseline: bool,
    /// Write summary.json, .hgrm files, the interval log and SVG plots here
    #[arg(long, value_name = "DIR")]
    report_dir: Option<PathBuf>,
    /// Seed of the key and size generators
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print each second of the run: the records due in it and their
    /// produce p99 (a record counts in the second it was due to be sent,
    /// so a failover shows as that second's p99, not as fewer records)
    #[arg(long)]
    timeline: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum AcksArg {
    None,
    Leader,
    /// Committed by a majority of the replicas (a cluster); alone, as `leader`.
    All,
}

/// Seconds as a person types them: a plain number keeps meaning seconds,
/// and a duration with a unit (`500ms`, `20s`, `1m`) is taken as written.
fn parse_seconds(s: &str) -> Result<f64, String> {
    if let Ok(v) = s.parse::<f64>() {
        return Ok(v);
    }
    humantime::parse_duration(s)
        .map(|d| d.as_secs_f64())
        .map_err(|e| format!("{s:?}: {e} (use 20s, 500ms or plain seconds)"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(Command::Compare { a, b }) => {
            Summary::load(a).and_then(|a| Summary::load(b).map(|b| print!("{}", report::compare(&a, &b))))
        }
        Some(Command::Table { runs }) => runs
            .iter()
            .map(|p| if p.is_dir() { Summary::load(&p.join("summary.json")) } else { Summary::load(p) })
            .collect::<Result<Vec<_>, _>>()
            .map(|s| print!("{}", report::markdown(&s))),
        None => run(&cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &RunArgs) -> Result<(), String> {
    if args.bootstrap.is_none() && !args.embedded {
        return Err("say where the broker is: --bootstrap ADDR, or --embedded".into());
    }
    if !(args.duration.is_finite() && args.duration >= 0.0 && args.warmup.is_finite() && args.warmup >= 0.0) {
        return Err("--duration and --warmup are seconds, at least 0".into());
    }
    if args.rate.is_some_and(|r| !(r.is_finite() && r >= 0.001)) {
        return Err("--rate is records per second, at least 0.001".into());
    }
    if args.batch_bytes == Some(0) {
        return Err("--batch-bytes must be at least 1".into());
    }
    let sizes = SizeRange::parse(&args.record_bytes)?;
    let mut temp = None;
    let mut broker = None;
    let target = if args.embedded {
        // The broker's own INFO lines would scroll the table and the progress
        // bar away; warnings and errors still show (CAIRN_LOG overrides).
        server::init_tracing_with("warn");
        let dir = tempfile::Builder::new()
            .prefix(".cairn-loadgen-")
            .tempdir_in(&args.data_dir)
            .map_err(|e| format!("cannot create a directory in {}: {e}", args.data_dir.display()))?;
        let mut config = server::config::ServerConfig::load(
            None,
            &server::config::Overrides {
                data_dir: Some(dir.path().to_path_buf()),
                listen: Some("127.0.0.1:0".parse().expect("address")),
                cores: Some(args.cores),
                flush: Some(args.flush.clone()),
                metrics_listen: Some(args.metrics_listen.clone()),
                ..server::config::Overrides::default()
            },
        )?;
        config.log.retention_check_ms = 3_600_000;
        if let Some(bytes) = args.cache_bytes {
            config.log.cache_bytes_max = bytes;
            config.memory.shard_cache_bytes_max =
                config.memory.shard_cache_bytes_max.max(bytes.saturating_mul(args.partitions as usize));
        }
        config.spin_before_park_us = args.spin_before_park_us;
        let b = server::start(config)?;
        let addr = b.addr.to_string();
        broker = Some(b);
        temp = Some(dir);
        addr
    } else {
        args.bootstrap.clone().expect("checked")
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let disk_dir = temp.as_ref().map_or(args.data_dir.clone(), |t| t.path().to_path_buf());
    let result = if args.find_max_rate {
        runtime.block_on(find_max_rate(args, &target, sizes, disk_dir))
    } else {
        runtime.block_on(drive(args, &target, sizes, disk_dir))
    };
    drop(runtime);
    if let Some(b) = broker {
        b.shutdown()?;
    }
    drop(temp);
    let (summary, histograms) = result?;
    print!("{}", report::table(&summary));
    if args.timeline {
        print!("{}", report::timeline(&summary));
    }
    if let Some(dir) = &args.report_dir {
        let h = Histograms {
            produce: &histograms.produce,
            end_to_end: (summary.consumers > 0).then_some(&histograms.end_to_end),
            intervals: &histograms.intervals,
            start_unix_s: histograms.start_unix_s,
            fdatasync: histograms.fdatasync.as_ref(),
        };
        report::write(dir, &summary, &h)?;
        println!("report: {}", dir.display());
    }
    Ok(())
}

/// A trial passes when the broker kept up with the rate asked for (within
/// this share), had no errors, and held the p99 bound.
const KEPT_UP_SHARE: f64 = 0.95;

/// `--find-max-rate`: a closed-loop run gives the ceiling; then each trial
/// runs at a fixed rate on a topic of its own (deleted after), the first
/// at 90 % of the ceiling, the next ones bisecting between the highest
/// rate that passed and the lowest that failed. Returns the summary of the
/// best passing trial (or of the closed-loop run if none passed), with
/// every trial in `rate_discovery`.
async fn find_max_rate(
    args: &RunArgs,
    target: &str,
    sizes: SizeRange,
    disk_dir: PathBuf,
) -> Result<(Summary, RunHistograms), String> {
    let bound_us = args.p99_max.as_micros() as u64;
    let client = Client::connect(ClientConfig::new(target)).await.map_err(|e| e.to_string())?;
    let mut trial_args = args.clone();
    trial_args.replay = false;
    // The trials are plain runs: they keep the linger rate discovery defaults to.
    trial_args.linger = Some(args.linger.or(args.linger_ms.map(Duration::from_millis)).unwrap_or(Duration::ZERO));
    trial_args.linger_ms = None;
    trial_args.find_max_rate = false;
    trial_args.topic = format!("{}-max", args.topic);
    let (closed, closed_h) = drive(&trial_args, target, sizes, disk_dir.clone()).await?;
    let _ = client.delete_topic(&trial_args.topic).await;
    let ceiling = closed.produce.records_per_sec;
    eprintln!(
        "closed loop: {ceiling:.0} records/s, p99 {:.3} ms; bound p99 <= {:.3} ms",
        closed.produce_latency.p99_us as f64 / 1000.0,
        bound_us as f64 / 1000.0
    );
    let mut discovery =
        RateDiscovery { p99_max_us: bound_us, closed_loop_records_per_sec: ceiling, trials: Vec::new(), max_rate: 0.0 };
    let (mut pass, mut fail) = (0.0f64, ceiling);
    let mut best: Option<(Summary, RunHistograms)> = None;
    trial_args.baseline = false;
    for i in 0..args.trials {
        let rate = if i == 0 { 0.9 * ceiling } else { f64::midpoint(pass, fail) };
        if rate < 1.0 {
            break;
        }
        trial_args.rate = Some(rate);
        trial_args.topic = format!("{}-rate-{i}", args.topic);
        let (summary, h) = drive(&trial_args, target, sizes, disk_dir.clone()).await?;
        let _ = client.delete_topic(&trial_args.topic).await;
        let achieved = summary.produce.records_per_sec;
        let p99 = summary.produce_latency.p99_us;
        let passed = achieved >= KEPT_UP_SHARE * rate && summary.produce_errors == 0 && p99 <= bound_us;
        eprintln!(
            "trial {}: {rate:.0} records/s asked, {achieved:.0} achieved, p50 {:.3} ms, p99 {:.3} ms: {}",
            i + 1,
            summary.produce_latency.p50_us as f64 / 1000.0,
            p99 as f64 / 1000.0,
            if passed { "pass" } else { "fail" }
        );
        discovery.trials.push(RateTrial {
            rate,
            achieved_records_per_sec: achieved,
            p50_us: summary.produce_latency.p50_us,
            p99_us: p99,
            passed,
        });
        if passed {
            pass = rate;
            discovery.max_rate = discovery.max_rate.max(rate);
            best = Some((summary, h));
        } else {
            fail = rate;
        }
    }
    let (mut summary, h) = best.unwrap_or((closed, closed_h));
    eprintln!("max rate with p99 <= {:.3} ms: {:.0} records/s", bound_us as f64 / 1000.0, discovery.max_rate);
    summary.rate_discovery = Some(discovery);
    Ok((summary, h))
}

/// The histograms behind a summary.
struct RunHistograms {
    produce: hdrhistogram::Histogram<u64>,
    end_to_end: hdrhistogram::Histogram<u64>,
    intervals: Vec<hdrhistogram::Histogram<u64>>,
    start_unix_s: f64,
    fdatasync: Option<hdrhistogram::Histogram<u64>>,
}

/// A progress bar on a terminal; nothing otherwise.
fn progress_bar(total: Duration) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total.as_secs().max(1));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} s  {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    Some(bar)
}

async fn drive(
    args: &RunArgs,
    target: &str,
    sizes: SizeRange,
    disk_dir: PathBuf,
) -> Result<(Summary, RunHistograms), String> {
    let client = Client::connect(ClientConfig::new(target)).await.map_err(|e| e.to_string())?;
    // An existing topic is used as it is (no controller call, which a
    // cluster whose controller is down could not answer).
    if client.partitions(&args.topic).await.is_err() {
        match client.create_topic(&args.topic, args.partitions, TopicConfig::default()).await {
            Ok(()) => {}
            Err(e) if e.code() == Some(ErrorCode::TOPIC_ALREADY_EXISTS) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    let partitions = client.partitions(&args.topic).await.map_err(|e| e.to_string())?;
    let (baseline, fdatasync) = if args.baseline {
        let dir = disk_dir.clone();
        let (b, h) = tokio::task::spawn_blocking(move || baseline::measure(&dir, Duration::from_secs(2)))
            .await
            .expect("baseline task")
            .map_err(|e| format!("baseline: {e}"))?;
        (Some(b), Some(h))
    } else {
        (None, None)
    };
    let progress = Arc::new(Progress::default());
    let start = Instant::now();
    let start_unix_s = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let stop_at = measure_from + Duration::from_secs_f64(args.duration);
    let acks = match args.acks {
        AcksArg::None => Acks::None,
        AcksArg::Leader => Acks::Leader,
        AcksArg::All => Acks::All,
    };
    // Broker-only batches are iggy-bench sized unless asked otherwise.
    let batch_bytes = args.batch_bytes.unwrap_or(if args.broker_only {
        prebuilt::BATCH_BYTES_DEFAULT
    } else {
        ProducerConfig::default().batch_bytes_max
    });
    let producer_config = ProducerConfig {
        acks,
        // Rate discovery is about latency: batches do not wait for more
        // records unless asked to.
        linger: args.linger.or(args.linger_ms.map(Duration::from_millis)).unwrap_or(if args.find_max_rate {
            Duration::ZERO
        } else {
            Duration::from_millis(5)
        }),
        batch_bytes_max: batch_bytes,
        buffer_bytes_max: args.buffer_bytes.unwrap_or(ProducerConfig::default().buffer_bytes_max).max(batch_bytes),
        requests_in_flight_max: args.requests_in_flight.max(1),
        request_bytes_max: args.request_bytes.unwrap_or(ProducerConfig::default().request_bytes_max),
        ..ProducerConfig::default()
    };
    let end_offsets = Arc::new(std::sync::OnceLock::new());
    let mut consumers = Vec::new();
    // Each consumer gets a share of the partitions: never more consumers
    // than partitions (an empty assignment would read them all).
    let consumers_n = args.consumers.min(partitions as usize);
    for c in 0..consumers_n {
        let parts: Vec<u32> = (0..partitions).filter(|p| *p as usize % consumers_n == c).collect();
        let client = Client::connect(ClientConfig::new(target)).await.map_err(|e| e.to_string())?;
        let spec = ConsumeSpec {
            topic: args.topic.clone(),
            partitions: parts,
            from: StartFrom::Latest,
            target: None,
            stop_at: Some(stop_at),
            start,
            measure_from,
            end_offsets: end_offsets.clone(),
        };
        consumers.push(tokio::spawn(workload::consume(client, spec, progress.clone())));
    }
    let producers_n = args.producers.max(1);
    let mut producers = Vec::new();
    for p in 0..producers_n {
        let client = Client::connect(ClientConfig::new(target)).await.map_err(|e| e.to_string())?;
        let share = |n: u64| n / producers_n as u64 + u64::from((p as u64) < n % producers_n as u64);
        let spec = ProduceSpec {
            topic: args.topic.clone(),
            sizes,
            keys: args.keys,
            key_distribution: args.key_distribution,
            zipf_exponent: args.zipf_exponent,
            seed: args.seed.wrapping_add(p as u64 * 7919),
            rate: args.rate.map(|r| r / producers_n as f64),
            start,
            measure_from,
            stop_at,
            records_max: args.records.map(share),
        };
        if args.broker_only {
            let how = prebuilt::BrokerOnly {
                batch_bytes,
                request_bytes: producer_config.request_bytes_max,
                requests_in_flight: producer_config.requests_in_flight_max,
                acks,
            };
            producers.push(tokio::spawn(prebuilt::produce(client, how, spec, progress.clone())));
        } else {
            producers.push(tokio::spawn(workload::produce(client, producer_config.clone(), spec, progress.clone())));
        }
    }
    let cpu_from = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        cpu::sample()
    });
    let bar = progress_bar(stop_at - start);
    let ticker = {
        let (progress, bar) = (progress.clone(), bar.clone());
        tokio::spawn(async move {
            let Some(bar) = bar else { return };
            let mut last = 0;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let acked = progress.acked.load(Ordering::Relaxed);
                bar.set_position(start.elapsed().as_secs());
                bar.set_message(format!(
                    "{} produced/s, {} consumed{}",
                    acked - last,
                    progress.consumed.load(Ordering::Relaxed),
                    if Instant::now() < measure_from { " (warm-up)" } else { "" }
                ));
                last = acked;
            }
        })
    };
    let mut latency = histogram();
    let mut queue = histogram();
    let mut request = histogram();
    let mut intervals: Vec<hdrhistogram::Histogram<u64>> = Vec::new();
    let mut interval_bytes: Vec<u64> = Vec::new();
    let (mut measured, mut measured_bytes, mut errors, mut retries) = (0, 0, 0, 0);
    for p in producers {
        let r = p.await.map_err(|e| e.to_string())?;
        latency.add(&r.latency).expect("same bounds");
        queue.add(&r.queue).expect("same bounds");
        request.add(&r.request).expect("same bounds");
        for (i, h) in r.intervals.iter().enumerate() {
            if intervals.len() <= i {
                intervals.resize_with(i + 1, histogram);
            }
            intervals[i].add(h).expect("same bounds");
        }
        for (i, b) in r.interval_bytes.iter().enumerate() {
            if interval_bytes.len() <= i {
                interval_bytes.resize(i + 1, 0);
            }
            interval_bytes[i] += b;
        }
        measured += r.measured;
        measured_bytes += r.measured_bytes;
        errors += r.errors;
        retries += r.retries;
        if let Some(e) = r.first_error {
            eprintln!("cairn-loadgen: producer error: {e}");
        }
    }
    // Where the CPU went while the producers ran (embedded: broker and
    // load generator share the process, and the machine).
    let cpu_to = cpu::sample();
    let cpu_split = match (cpu_from.await.ok().flatten(), cpu_to) {
        (Some(a), Some(b)) if args.embedded && b.at > a.at => Some(cpu::cores(&a, &b)),
        _ => None,
    };
    // Tail consumers read up to where the producers stopped, then stop.
    if consumers_n > 0 {
        let ends = client.list_offsets(&args.topic, &[], OffsetSpec::Latest).await.map_err(|e| e.to_string())?;
        let _ = end_offsets.set(ends.into_iter().collect());
    }
    // The measured window: cut short if a record limit ended the run early.
    let seconds =
        (Instant::now().min(stop_at).saturating_duration_since(measure_from)).as_secs_f64().min(args.duration);
    let mut e2e = histogram();
    let mut fetch = histogram();
    let (mut consumed, mut consumed_bytes) = (0, 0);
    let mut consumed_per_second: Vec<u64> = Vec::new();
    let mut consumed_bytes_per_second: Vec<u64> = Vec::new();
    for c in consumers {
        let r = c.await.map_err(|e| e.to_string())?;
        e2e.add(&r.end_to_end).expect("same bounds");
        fetch.add(&r.fetch).expect("same bounds");
        consumed += r.measured;
        consumed_bytes += r.measured_bytes;
        for (i, n) in r.per_second.iter().enumerate() {
            if consumed_per_second.len() <= i {
                consumed_per_second.resize(i + 1, 0);
            }
            consumed_per_second[i] += n;
        }
        for (i, b) in r.bytes_per_second.iter().enumerate() {
            if consumed_bytes_per_second.len() <= i {
                consumed_bytes_per_second.resize(i + 1, 0);
            }
            consumed_bytes_per_second[i] += b;
        }
        if let Some(e) = r.error {
            eprintln!("cairn-loadgen: consumer error: {e}");
        }
    }
    ticker.abort();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let replay = if args.replay {
        let latest = client.list_offsets(&args.topic, &[], OffsetSpec::Latest).await.map_err(|e| e.to_string())?;
        let earliest = client.list_offsets(&args.topic, &[], OffsetSpec::Earliest).await.map_err(|e| e.to_string())?;
        let total: u64 = latest.iter().zip(&earliest).map(|((_, l), (_, e))| l.0 - e.0).sum();
        let spec = ConsumeSpec {
            topic: args.topic.clone(),
            partitions: Vec::new(),
            from: StartFrom::Earliest,
            target: Some(total),
            stop_at: None,
            start: Instant::now(),
            measure_from: Instant::now(),
            // Read up to today's end even if retention moves the start meanwhile.
            end_offsets: Arc::new(std::sync::OnceLock::from(
                latest.iter().copied().collect::<std::collections::BTreeMap<_, _>>(),
            )),
        };
        let r = workload::consume(client.clone(), spec, progress.clone()).await;
        if let Some(e) = r.error {
            return Err(format!("replay: {e}"));
        }
        Some((Throughput::of(r.records, r.bytes, r.elapsed.as_secs_f64()), LatencySummary::of(&r.fetch)))
    } else {
        None
    };
    let (replay, replay_fetch_latency) = replay.unzip();
    let produce = Throughput::of(measured, measured_bytes, seconds);
    let produce_latency = LatencySummary::of(&latency);
    let ratio = baseline.as_ref().map(|b| produce.bytes_per_sec / b.write_sync_1m_bytes_per_sec);
    let p99_over = baseline.as_ref().map(|b| produce_latency.p99_us as i64 - b.fdatasync_4k.p99_us as i64);
    // Whole seconds of the run only: the last, partial one would read as a drop.
    let whole = (args.warmup + seconds).floor() as usize;
    let timeline = (0..intervals.len().max(consumed_per_second.len()).min(whole))
        .map(|i| Second {
            second: i as u64,
            produced: intervals.get(i).map_or(0, hdrhistogram::Histogram::len),
            produced_bytes: interval_bytes.get(i).copied().unwrap_or(0),
            consumed: consumed_per_second.get(i).copied().unwrap_or(0),
            consumed_bytes: consumed_bytes_per_second.get(i).copied().unwrap_or(0),
            produce_p99_us: intervals.get(i).map_or(0, |h| h.value_at_quantile(0.99)),
        })
        .collect();
    let summary = Summary {
        version: report::SCHEMA_VERSION,
        mode: if args.broker_only { "broker-only" } else { "client+broker" }.into(),
        target: if args.embedded { format!("embedded {target}") } else { target.to_string() },
        topic: args.topic.clone(),
        partitions,
        producers: producers_n,
        consumers: consumers_n,
        record_bytes: sizes.min,
        record_bytes_max: sizes.max,
        keys: args.keys,
        key_distribution: format!("{:?}", args.key_distribution).to_lowercase(),
        acks: format!("{:?}", args.acks).to_lowercase(),
        flush: args.embedded.then(|| args.flush.clone()),
        rate: args.rate,
        duration_s: args.duration,
        warmup_s: args.warmup,
        produce,
        produce_latency,
        produce_queue_latency: LatencySummary::of(&queue),
        produce_request_latency: LatencySummary::of(&request),
        produce_errors: errors,
        produce_retries: retries,
        end_to_end_latency: (consumers_n > 0).then(|| LatencySummary::of(&e2e)),
        consumed: (consumers_n > 0).then(|| Throughput::of(consumed, consumed_bytes, seconds)),
        replay,
        replay_fetch_latency,
        fetch_latency: (consumers_n > 0).then(|| LatencySummary::of(&fetch)),
        rate_discovery: None,
        cpu_broker_cores: cpu_split.map(|c| c.0),
        cpu_client_cores: cpu_split.map(|c| c.1),
        timeline,
        baseline,
        produce_to_disk_ratio: ratio,
        produce_p99_over_fdatasync_p99_us: p99_over,
    };
    let histograms = RunHistograms { produce: latency, end_to_end: e2e, intervals, start_unix_s, fdatasync };
    Ok((summary, histograms))
}

#[cfg(test)]
mod tests {
    use super::parse_seconds;

    #[test]
    fn durations_take_units_and_plain_numbers_stay_seconds() {
        let ms = |s: &str| (parse_seconds(s).unwrap() * 1000.0).round() as u64;
        assert_eq!(ms("20s"), 20_000);
        assert_eq!(ms("500ms"), 500);
        assert_eq!(ms("1m"), 60_000);
        assert_eq!(ms("10"), 10_000);
        assert_eq!(ms("2.5"), 2_500);
        assert!(parse_seconds("soon").is_err());
    }
}
