//! Cairn's Rust client, for ordinary tokio applications: a [`Client`] (one
//! broker connection, multiplexed, with the admin API), a batching
//! [`Producer`] and a [`Consumer`], and a [`Table`] that materializes a
//! topic of entity events into a local map. The broker runs thread-per-core on
//! glommio; none of that leaks here: this crate speaks the wire protocol of
//! `docs/protocol.md` through the `protocol` crate.

pub mod cli;
mod client;
mod conn;
mod consumer;
pub mod drain;
mod error;
pub mod group;
mod group_consumer;
mod producer;
pub mod queue_consumer;
mod record;
pub mod table;

pub use client::{Client, ClientConfig, Route, TopicConfig};
pub use conn::Connection;
pub use consumer::{Consumer, ConsumerConfig, StartFrom};
pub use error::{ClientError, Result};
pub use group_consumer::{GroupConsumer, GroupConsumerConfig, RebalanceListener, Revoking, TopicPartition};
pub use producer::{
    BatchDelivery, Deliveries, Delivery, PartialSend, Producer, ProducerConfig, ProducerRecord, ProducerStats, Record,
    RecordMetadata,
};
pub use protocol::ErrorCode;
pub use protocol::api::{Acks, ConfigEntry, ConfigSource, OffsetSpec, RecoveredPartition};
pub use protocol::batch::HeaderRef;
pub use protocol::types::{Offset, Timestamp};
pub use queue_consumer::{AckKind, AckResult, QueueConsumer, QueueConsumerConfig, QueueRecord};
pub use record::{ConsumerRecord, decode_batch};
pub use table::{Change, Table, TableConfig, TableError, TablePublisher};
