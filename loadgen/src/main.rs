//! `cairn-loadgen`: drives a broker with producers and consumers and reports
//! throughput and latency. `--embedded` runs a broker in this process on a
//! temporary directory, so one command measures a fresh machine.

mod baseline;
mod stats;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cairn_client::{Acks, Client, ClientConfig, ErrorCode, OffsetSpec, ProducerConfig, StartFrom, TopicConfig};
use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::stats::{LatencySummary, histogram};
use crate::workload::{ProduceSpec, Progress};

#[derive(Parser, Debug, Clone)]
#[command(name = "cairn-loadgen", version, about = "Cairn load generator: throughput and latency")]
struct Args {
    /// A running broker
    #[arg(long, value_name = "ADDR", conflicts_with = "embedded")]
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
    /// Flush policy of the embedded broker
    #[arg(long, default_value = "always")]
    flush: String,
    #[arg(long, default_value = "loadgen")]
    topic: String,
    /// Partitions of the topic, if it has to be created
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Consumers reading while producers write (end-to-end latency)
    #[arg(long, default_value_t = 0)]
    consumers: usize,
    #[arg(long, default_value_t = 100)]
    record_bytes: usize,
    /// Distinct keys, picked uniformly; 0 sends unkeyed records
    #[arg(long, default_value_t = 0)]
    keys: u64,
    #[arg(long, value_enum, default_value_t = AcksArg::Leader)]
    acks: AcksArg,
    /// Records per second over all producers (open loop); absent = as fast as possible
    #[arg(long)]
    rate: Option<f64>,
    /// Measured seconds
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Producer batch size in record bytes
    #[arg(long, default_value_t = 256 << 10)]
    batch_bytes: usize,
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Sends each producer keeps in flight (see `ProducerConfig`)
    #[arg(long, default_value_t = 1)]
    requests_in_flight: usize,
    /// The embedded broker's `spin_before_park_us`
    #[arg(long, default_value_t = 0)]
    spin_before_park_us: u64,
    /// Threads of the load generator's tokio runtime
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// After producing, read the whole topic back from the earliest offset as
    /// fast as possible (consume throughput)
    #[arg(long)]
    replay: bool,
    /// Also measure the raw disk (fdatasync latency, write bandwidth) on --data-dir
    #[arg(long)]
    baseline: bool,
    /// Write summary.json here
    #[arg(long, value_name = "DIR")]
    report_dir: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum AcksArg {
    None,
    Leader,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Throughput {
    records: u64,
    seconds: f64,
    records_per_sec: f64,
    bytes_per_sec: f64,
}

impl Throughput {
    fn of(records: u64, seconds: f64, record_bytes: usize) -> Throughput {
        let rps = if seconds > 0.0 { records as f64 / seconds } else { 0.0 };
        Throughput { records, seconds, records_per_sec: rps, bytes_per_sec: rps * record_bytes as f64 }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Summary {
    version: u32,
    target: String,
    topic: String,
    partitions: u32,
    producers: usize,
    consumers: usize,
    record_bytes: usize,
    acks: String,
    flush: Option<String>,
    rate: Option<f64>,
    produce: Throughput,
    produce_latency: LatencySummary,
    produce_errors: u64,
    end_to_end_latency: Option<LatencySummary>,
    consumed: Option<Throughput>,
    replay: Option<Throughput>,
    baseline: Option<baseline::Baseline>,
    /// Produced bytes/s over the baseline's 1 MiB write+fdatasync bandwidth.
    produce_to_disk_ratio: Option<f64>,
    /// Produce p99 minus the baseline's 4 KiB fdatasync p99.
    produce_p99_over_fdatasync_p99_us: Option<i64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    if args.bootstrap.is_none() && !args.embedded {
        return Err("say where the broker is: --bootstrap ADDR, or --embedded".into());
    }
    let mut temp = None;
    let mut broker = None;
    let target = if args.embedded {
        server::init_tracing();
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
            },
        )?;
        config.log.retention_check_ms = 3_600_000;
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
    let result =
        runtime.block_on(drive(args, &target, temp.as_ref().map_or(args.data_dir.clone(), |t| t.path().to_path_buf())));
    drop(runtime);
    if let Some(b) = broker {
        b.shutdown()?;
    }
    drop(temp);
    let summary = result?;
    print_summary(&summary);
    if let Some(dir) = &args.report_dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let json = serde_json::to_string_pretty(&summary).expect("serializable");
        std::fs::write(dir.join("summary.json"), json).map_err(|e| format!("writing summary.json: {e}"))?;
    }
    Ok(())
}

async fn drive(args: &Args, target: &str, disk_dir: PathBuf) -> Result<Summary, String> {
    let client = Client::connect(ClientConfig::new(target)).await.map_err(|e| e.to_string())?;
    match client.create_topic(&args.topic, args.partitions, TopicConfig::default()).await {
        Ok(()) => {}
        Err(e) if e.code() == Some(ErrorCode::TOPIC_ALREADY_EXISTS) => {}
        Err(e) => return Err(e.to_string()),
    }
    let partitions = client.partitions(&args.topic).await.map_err(|e| e.to_string())?;
    let baseline = if args.baseline {
        let dir = disk_dir.clone();
        let b = tokio::task::spawn_blocking(move || baseline::measure(&dir, Duration::from_secs(2)))
            .await
            .expect("baseline task")
            .map_err(|e| format!("baseline: {e}"))?;
        Some(b)
    } else {
        None
    };
    let progress = Arc::new(Progress::default());
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let stop_at = measure_from + Duration::from_secs_f64(args.duration);
    let acks = match args.acks {
        AcksArg::None => Acks::None,
        AcksArg::Leader => Acks::Leader,
    };
    let producer_config = ProducerConfig {
        acks,
        linger: Duration::from_millis(args.linger_ms),
        batch_bytes_max: args.batch_bytes,
        buffer_bytes_max: (64 << 20).max(args.batch_bytes * 4),
        requests_in_flight_max: args.requests_in_flight,
        ..ProducerConfig::default()
    };
    let mut consumers = Vec::new();
    for c in 0..args.consumers {
        let parts: Vec<u32> = (0..partitions).filter(|p| *p as usize % args.consumers == c).collect();
        let client = Client::connect(ClientConfig::new(target)).await.map_err(|e| e.to_string())?;
        let spec = workload::ConsumeSpec {
            topic: args.topic.clone(),
            partitions: parts,
            from: StartFrom::Latest,
            target: None,
            stop_at: Some(stop_at),
            measure_from,
        };
        consumers.push(tokio::spawn(workload::consume(client, spec, progress.clone())));
    }
    let mut producers = Vec::new();
    for _ in 0..args.producers {
        let client = Client::connect(ClientConfig::new(target)).await.map_err(|e| e.to_string())?;
        let spec = ProduceSpec {
            topic: args.topic.clone(),
            record_bytes: args.record_bytes,
            keys: args.keys,
            rate: args.rate.map(|r| r / args.producers as f64),
            measure_from,
            stop_at,
        };
        producers.push(tokio::spawn(workload::produce(client, producer_config.clone(), spec, progress.clone())));
    }
    let sampler = {
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut last = 0;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let acked = progress.acked.load(Ordering::Relaxed);
                eprintln!(
                    "  {:>5.1}s  produced {:>10}/s  consumed total {:>10}",
                    start.elapsed().as_secs_f64(),
                    acked - last,
                    progress.consumed.load(Ordering::Relaxed)
                );
                last = acked;
            }
        })
    };
    let mut latency = histogram();
    let mut measured = 0;
    let mut errors = 0;
    for p in producers {
        let r = p.await.map_err(|e| e.to_string())?;
        latency.add(&r.latency).expect("same bounds");
        measured += r.measured;
        errors += r.errors;
        if let Some(e) = r.first_error {
            eprintln!("cairn-loadgen: producer error: {e}");
        }
    }
    let mut e2e = histogram();
    let mut consumed = 0;
    for c in consumers {
        let r = c.await.map_err(|e| e.to_string())?;
        e2e.add(&r.end_to_end).expect("same bounds");
        consumed += r.measured;
        if let Some(e) = r.error {
            eprintln!("cairn-loadgen: consumer error: {e}");
        }
    }
    sampler.abort();
    let record_bytes = args.record_bytes;
    let produce = Throughput::of(measured, args.duration, record_bytes);
    let replay = if args.replay {
        let latest = client.list_offsets(&args.topic, &[], OffsetSpec::Latest).await.map_err(|e| e.to_string())?;
        let earliest = client.list_offsets(&args.topic, &[], OffsetSpec::Earliest).await.map_err(|e| e.to_string())?;
        let total: u64 = latest.iter().zip(&earliest).map(|((_, l), (_, e))| l.0 - e.0).sum();
        let spec = workload::ConsumeSpec {
            topic: args.topic.clone(),
            partitions: Vec::new(),
            from: StartFrom::Earliest,
            target: Some(total),
            stop_at: None,
            measure_from: Instant::now(),
        };
        let r = workload::consume(client.clone(), spec, progress.clone()).await;
        if let Some(e) = r.error {
            return Err(format!("replay: {e}"));
        }
        Some(Throughput::of(r.records, r.elapsed.as_secs_f64(), record_bytes))
    } else {
        None
    };
    let produce_latency = LatencySummary::of(&latency);
    let ratio = baseline.as_ref().map(|b| produce.bytes_per_sec / b.write_sync_1m_bytes_per_sec);
    let p99_over = baseline.as_ref().map(|b| produce_latency.p99_us as i64 - b.fdatasync_4k.p99_us as i64);
    Ok(Summary {
        version: 1,
        target: if args.embedded { format!("embedded {target}") } else { target.to_string() },
        topic: args.topic.clone(),
        partitions,
        producers: args.producers,
        consumers: args.consumers,
        record_bytes,
        acks: format!("{:?}", args.acks).to_lowercase(),
        flush: args.embedded.then(|| args.flush.clone()),
        rate: args.rate,
        produce,
        produce_latency,
        produce_errors: errors,
        end_to_end_latency: (args.consumers > 0).then(|| LatencySummary::of(&e2e)),
        consumed: (args.consumers > 0).then(|| Throughput::of(consumed, args.duration, record_bytes)),
        replay,
        baseline,
        produce_to_disk_ratio: ratio,
        produce_p99_over_fdatasync_p99_us: p99_over,
    })
}

fn print_latency(name: &str, l: &LatencySummary) {
    println!(
        "{name:<10} {:>9} {:>8.0} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        l.count, l.mean_us, l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.p9999_us, l.max_us
    );
}

fn print_summary(s: &Summary) {
    println!(
        "cairn-loadgen: {} | topic {} ({} partitions) | {} producers, {} consumers | {} B records | acks {} | flush {} | rate {}",
        s.target,
        s.topic,
        s.partitions,
        s.producers,
        s.consumers,
        s.record_bytes,
        s.acks,
        s.flush.as_deref().unwrap_or("(broker's)"),
        s.rate.map_or_else(|| "max".to_string(), |r| format!("{r:.0}/s"))
    );
    println!(
        "produce    {:.0} records/s  {:.1} MB/s  ({} records in {:.1} s, {} errors)",
        s.produce.records_per_sec,
        s.produce.bytes_per_sec / 1e6,
        s.produce.records,
        s.produce.seconds,
        s.produce_errors
    );
    if let Some(c) = &s.consumed {
        println!("consume    {:.0} records/s  {:.1} MB/s", c.records_per_sec, c.bytes_per_sec / 1e6);
    }
    if let Some(r) = &s.replay {
        println!(
            "replay     {:.0} records/s  {:.1} MB/s  ({} records in {:.2} s)",
            r.records_per_sec,
            r.bytes_per_sec / 1e6,
            r.records,
            r.seconds
        );
    }
    println!("latency µs     count     mean      p50      p90      p99    p99.9   p99.99      max");
    print_latency("produce", &s.produce_latency);
    if let Some(e) = &s.end_to_end_latency {
        print_latency("end2end", e);
    }
    if let Some(b) = &s.baseline {
        print_latency("fdatasync", &b.fdatasync_4k);
        println!(
            "disk       1 MiB write+fdatasync {:.1} MB/s; produce/disk = {:.2}; produce p99 - fdatasync p99 = {} µs",
            b.write_sync_1m_bytes_per_sec / 1e6,
            s.produce_to_disk_ratio.unwrap_or(0.0),
            s.produce_p99_over_fdatasync_p99_us.unwrap_or(0)
        );
    }
}
