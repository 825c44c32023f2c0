//! A shard: one core's share of the broker. It owns the partitions the
//! placement rule gives it (their logs are `Rc`s that never leave the core),
//! holds a copy of the topic metadata, accepts its own connections, and
//! reaches the other shards only by message over glommio's channel mesh:
//! no locks, no shared mutable state on the data path.
//!
//! Every operation on a partition has a local form (`*_local`, run on the
//! owner) and a routed form that runs it on the owner, here or by message.

mod admin;
mod partitions;

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use engine::LogError;
use engine::rt::glommio::GlommioStorage;
use engine::types::Offset;
use futures::channel::oneshot;
use glommio::channels::channel_mesh::Senders;
use protocol::ErrorCode;
use protocol::api::{OffsetSpec, PartitionDescription, TopicConfig};

use crate::config::ServerConfig;
use crate::metadata::{TopicMeta, Topics};
use crate::placement::shard_for;
use crate::signal::Signal;

pub use partitions::{AppendOutcome, FetchItem, FetchOutcome, until as partitions_until};

pub type Log = engine::PartitionLog<GlommioStorage>;

/// An error for one partition or one request: a stable code and a message.
pub type OpError = (ErrorCode, String);

/// What one shard asks another. Replies travel on a oneshot channel (glommio
/// wakes the asking task across cores).
pub enum ShardMsg {
    Append {
        topic: String,
        partition: u32,
        batch: Bytes,
        reply: oneshot::Sender<AppendOutcome>,
    },
    Fetch {
        items: Vec<FetchItem>,
        wait_until: Option<Instant>,
        bytes_max: usize,
        reply: oneshot::Sender<Vec<FetchOutcome>>,
    },
    ListOffsets {
        items: Vec<(String, u32, OffsetSpec)>,
        reply: oneshot::Sender<Vec<Result<Offset, OpError>>>,
    },
    Describe {
        topic: String,
        partitions: Vec<u32>,
        reply: oneshot::Sender<Vec<PartitionDescription>>,
    },
    /// To the controller (shard 0).
    CreateTopic {
        name: String,
        partitions: u32,
        config: TopicConfig,
        reply: oneshot::Sender<Result<(), OpError>>,
    },
    /// To the controller (shard 0).
    DeleteTopic {
        name: String,
        reply: oneshot::Sender<Result<(), OpError>>,
    },
    /// From the controller to every shard: adopt the topic, open owned partitions.
    ApplyTopic {
        meta: TopicMeta,
        reply: oneshot::Sender<Result<(), OpError>>,
    },
    /// From the controller to every shard: forget the topic, close and remove owned partitions.
    RemoveTopic {
        name: String,
        reply: oneshot::Sender<Result<(), OpError>>,
    },
}

/// Counters shared by all shards (atomics, off the data path).
#[derive(Default)]
pub struct Shared {
    pub connections: AtomicUsize,
    /// Shards done with a shutdown phase (see `main::run_shard`).
    pub drained: AtomicUsize,
    pub closed: AtomicUsize,
    /// Each shard's own port, in shard order, once all listen.
    pub shard_ports: std::sync::OnceLock<Vec<u16>>,
}

/// One core's broker state. Owned by that core's executor; `!Send`.
pub struct Shard {
    pub id: usize,
    pub shards: usize,
    pub config: ServerConfig,
    pub shared: Arc<Shared>,
    pub shutdown: Rc<Signal>,
    storage: GlommioStorage,
    mesh: Senders<ShardMsg>,
    topics: RefCell<Topics>,
    logs: RefCell<HashMap<(String, u32), Rc<Log>>>,
    /// Serializes topic creation and deletion on the controller.
    admin_lock: glommio::sync::Semaphore,
}

pub const CONTROLLER: usize = 0;

impl Shard {
    pub fn new(
        config: ServerConfig,
        storage: GlommioStorage,
        mesh: Senders<ShardMsg>,
        topics: Topics,
        shared: Arc<Shared>,
        shards: usize,
    ) -> Rc<Shard> {
        assert!(mesh.peer_id() < shards);
        Rc::new(Shard {
            id: mesh.peer_id(),
            shards,
            config,
            shared,
            shutdown: Signal::new(),
            storage,
            mesh,
            topics: RefCell::new(topics),
            logs: RefCell::new(HashMap::new()),
            admin_lock: glommio::sync::Semaphore::new(1),
        })
    }

    pub fn owner(&self, topic: &str, partition: u32) -> usize {
        shard_for(topic, partition, self.shards)
    }

    pub fn topic(&self, name: &str) -> Option<TopicMeta> {
        self.topics.borrow().get(name).cloned()
    }

    pub fn topic_list(&self) -> Vec<TopicMeta> {
        self.topics.borrow().values().cloned().collect()
    }

    /// Checks that a partition exists in this shard's copy of the metadata.
    pub fn check_partition(&self, topic: &str, partition: u32) -> Result<(), OpError> {
        match self.topics.borrow().get(topic) {
            None => Err((ErrorCode::UNKNOWN_TOPIC, format!("topic {topic:?} does not exist"))),
            Some(t) if partition >= t.partitions => Err((
                ErrorCode::UNKNOWN_PARTITION,
                format!("topic {topic:?} has {} partitions; {partition} is not one", t.partitions),
            )),
            Some(_) => Ok(()),
        }
    }

    fn log(&self, topic: &str, partition: u32) -> Result<Rc<Log>, OpError> {
        if let Some(log) = self.logs.borrow().get(&(topic.to_owned(), partition)) {
            return Ok(log.clone());
        }
        self.check_partition(topic, partition)?;
        Err((ErrorCode::PARTITION_UNAVAILABLE, format!("partition {topic}/{partition} is not open on this broker")))
    }

    /// Sends a message to another shard; waits while its queue is full.
    pub async fn send(&self, to: usize, msg: ShardMsg) {
        assert_ne!(to, self.id, "local work is not sent by message");
        if self.mesh.send_to(to, msg).await.is_err() {
            // The peer's receiver is gone: only during shutdown. The reply
            // sender is dropped with the message, so the caller sees it.
            tracing::debug!(to, "shard message dropped: peer is gone");
        }
    }

    /// Runs a message's work on this shard. Appends start at once (their
    /// order is the order messages arrived); everything else runs in its own task.
    pub fn handle(self: &Rc<Self>, msg: ShardMsg) {
        let shard = self.clone();
        match msg {
            ShardMsg::Append { topic, partition, batch, reply } => {
                answer(reply, self.append_local(&topic, partition, batch));
            }
            ShardMsg::Fetch { items, wait_until, bytes_max, reply } => {
                answer(reply, async move { shard.fetch_local(items, wait_until, bytes_max).await });
            }
            ShardMsg::ListOffsets { items, reply } => {
                answer(reply, async move { shard.list_offsets_local(items).await });
            }
            ShardMsg::Describe { topic, partitions, reply } => {
                let _ = reply.send(self.describe_local(&topic, &partitions));
            }
            ShardMsg::CreateTopic { name, partitions, config, reply } => {
                answer(reply, async move { shard.create_topic(name, partitions, config).await });
            }
            ShardMsg::DeleteTopic { name, reply } => answer(reply, async move { shard.delete_topic(name).await }),
            ShardMsg::ApplyTopic { meta, reply } => answer(reply, async move { shard.apply_topic(meta).await }),
            ShardMsg::RemoveTopic { name, reply } => answer(reply, async move { shard.remove_topic(&name).await }),
        }
    }

    /// Opens every partition this shard owns (at startup).
    pub async fn open_owned(self: &Rc<Self>) -> Result<(), String> {
        let topics = self.topic_list();
        for meta in topics {
            self.open_partitions(&meta).await.map_err(|(_, m)| m)?;
        }
        Ok(())
    }

    /// Closes every owned log: writes what is buffered, syncs, saves the
    /// indexes and the clean-shutdown marker.
    pub async fn close_all(&self) {
        let logs: Vec<((String, u32), Rc<Log>)> = self.logs.borrow_mut().drain().collect();
        let closes = logs.iter().map(|((topic, p), log)| async move {
            if let Err(e) = log.close().await {
                tracing::error!(topic, partition = p, error = %e, "closing a partition failed");
            }
        });
        futures::future::join_all(closes).await;
    }

    /// Enforces retention on every owned log (the periodic task).
    pub async fn enforce_retention(&self) {
        let logs: Vec<Rc<Log>> = self.logs.borrow().values().cloned().collect();
        for log in logs {
            match log.enforce_retention().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(dir = %log.dir().display(), segments = n, "retention deleted segments"),
                Err(e) => tracing::warn!(dir = %log.dir().display(), error = %e, "retention failed"),
            }
        }
    }

    pub fn owned_partitions(&self) -> usize {
        self.logs.borrow().len()
    }

    pub fn connection_opened(&self) -> bool {
        let before = self.shared.connections.fetch_add(1, Ordering::Relaxed);
        if before >= self.config.limits.connections_max {
            self.shared.connections.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    pub fn connection_closed(&self) {
        self.shared.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs `work` in its own task (started now, in message order) and sends
/// its result back to the asking shard.
fn answer<T: Send + 'static>(reply: oneshot::Sender<T>, work: impl Future<Output = T> + 'static) {
    glommio::spawn_local(async move {
        let _ = reply.send(work.await);
    })
    .detach();
}

/// What a request waiting on another shard gets when that shard has gone.
pub fn shutting_down() -> OpError {
    (ErrorCode::SHUTTING_DOWN, "the broker is shutting down".into())
}

/// The code and message a log error becomes on the wire.
pub fn log_error(e: &LogError) -> OpError {
    let code = match e {
        LogError::InvalidBatch(_) => ErrorCode::INVALID_BATCH,
        LogError::BatchTooLarge { .. } => ErrorCode::BATCH_TOO_LARGE,
        LogError::OffsetOutOfRange { .. } => ErrorCode::OFFSET_OUT_OF_RANGE,
        LogError::DiskFull { .. } => ErrorCode::DISK_FULL,
        LogError::Closed => ErrorCode::PARTITION_UNAVAILABLE,
        LogError::NotBatchBoundary { .. }
        | LogError::Corruption { .. }
        | LogError::Io { .. }
        | LogError::Poisoned { .. }
        | LogError::Config(_)
        | LogError::Truncated { .. } => ErrorCode::STORAGE_ERROR,
    };
    (code, e.to_string())
}
