//! Replication, as state machines that do no I/O: the partition's core (or
//! the simulator) feeds them what happened and carries out what they say.
//! So one set of rules runs in production and under the seeded simulator,
//! and every rule can be tested without a disk or a network.
//!
//! Today: the leader epoch cache ([`epochs`]), how a follower finds where
//! its log parted from the leader's ([`reconcile`], Kafka's answer to the
//! log divergence of KIP-101/279), and the replica's durable hard state
//! ([`hard_state`], `raft.state`). The per-partition Raft machine
//! that uses them follows (docs/replication.md).

pub mod config;
pub mod epochs;
pub mod hard_state;
pub mod reconcile;
pub mod replica;
#[cfg(any(test, feature = "sim"))]
pub mod sim;

pub use config::{Config, ConfigExt, ReplicaKey};
pub use epochs::{EpochCache, EpochEnd, EpochError};
pub use hard_state::{HardState, HardStateError};
pub use reconcile::{FetchPosition, check_fetch, truncation_point};
