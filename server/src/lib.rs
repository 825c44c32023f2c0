//! The Cairn broker: thread-per-core shards, each owning its partitions; a
//! protocol-neutral service layer (produce, fetch, offsets, topic admin)
//! with the native protocol as a thin front end over it; topic metadata on
//! the controller shard; metrics. The `cairn-server` binary is a thin shell
//! around [`start`]; the load generator embeds the broker through it, and
//! [`sim::SimBroker`] runs the same shards on the simulator.

mod broker;
pub mod cluster;
pub mod config;
pub mod frontend;
pub mod group;
pub mod ids;
pub mod metadata;
pub mod metrics;
pub mod partition;
pub mod placement;
pub mod service;
pub mod shard;
pub mod sim;
pub mod topic_config;
mod util;

pub use broker::{Broker, start};

/// Logs to stderr, filtered by `CAIRN_LOG` (default `info`).
pub fn init_tracing() {
    init_tracing_with("info");
}

/// Logs to stderr, filtered by `CAIRN_LOG` (default `default_filter`).
pub fn init_tracing_with(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
