//! `cairn-server`: the broker binary. Parses flags and the configuration
//! file, starts the broker, prints one line once it listens, and shuts it
//! down gracefully on SIGTERM or SIGINT.

/// jemalloc, not the system allocator: its per-thread caches suit one
/// thread per core, and it gives freed memory back to the system, so the
/// broker's resident memory follows its budgets (ADR 22).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use server::config::{Overrides, ServerConfig};

/// Cairn event broker: a durable, replayable, ordered log of events.
#[derive(Parser, Debug)]
#[command(name = "cairn-server", version)]
struct Args {
    /// TOML configuration file (see docs/configuration.md); flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where topics are stored [default: ./cairn-data]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7070]; port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Shards (pinned executors); 0 = one per available core [default: 0]
    #[arg(long, value_name = "N")]
    cores: Option<usize>,
    /// Flush policy: always (fdatasync before every ack), interval or never [default: always]
    #[arg(long, value_name = "POLICY")]
    flush: Option<String>,
    /// Serve Prometheus metrics at `http://ADDR/metrics`, or `off` [default: 127.0.0.1:9644]
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// This broker's id in the cluster (one of --peers)
    #[arg(long, value_name = "N")]
    node_id: Option<u32>,
    /// Where the other brokers reach this one [default: this node's address in --peers]
    #[arg(long, value_name = "ADDR")]
    replication_listen: Option<SocketAddr>,
    /// Every broker of the cluster, this one included: ID=ADDR,ID=ADDR,...
    /// (their replication addresses). Without it the broker runs alone.
    #[arg(long, value_name = "LIST")]
    peers: Option<String>,
    /// Join a running cluster through any of its brokers (its replication
    /// address) instead of --peers; needs --node-id and --replication-listen
    #[arg(long, value_name = "ADDR", conflicts_with = "peers")]
    join: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    server::init_tracing();
    let overrides = Overrides {
        data_dir: args.data_dir,
        listen: args.listen,
        cores: args.cores,
        flush: args.flush,
        metrics_listen: args.metrics_listen,
        node_id: args.node_id,
        replication_listen: args.replication_listen,
        peers: args.peers,
        join: args.join,
    };
    let config = match ServerConfig::load(args.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cairn-server: {e}");
            return ExitCode::from(2);
        }
    };
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: ServerConfig) -> Result<(), String> {
    // Signals are taken before the shards start, so none is missed.
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let broker = server::start(config)?;
    // The lines on stdout: scripts and tests wait for the first.
    println!("cairn-server listening on {}", broker.addr);
    if let Some(metrics) = broker.metrics_addr {
        println!("cairn-server metrics on http://{metrics}/metrics");
    }
    if let Some(sig) = signals.forever().next() {
        tracing::info!(signal = sig, "shutting down");
    }
    broker.shutdown()
}
