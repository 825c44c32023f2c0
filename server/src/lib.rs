//! The Cairn broker: thread-per-core shards on glommio, the native
//! protocol front end, topic metadata and the placement of partitions on
//! cores. The `cairn-server` binary is a thin shell around [`start`]; the
//! load generator embeds the broker through it too.

mod broker;
pub mod config;
mod conn;
mod handlers;
pub mod metadata;
pub mod placement;
mod shard;
mod signal;

pub use broker::{Broker, start};

/// Logs to stderr, filtered by `CAIRN_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
