//! Topic creation and deletion. The controller (shard 0) decides: it
//! validates, writes the metadata file, then tells every shard (itself
//! included) to apply the change, and answers only when all have, so a
//! topic that `CreateTopic` acknowledged is usable from every shard.

use std::rc::Rc;

use futures::channel::oneshot;
use protocol::ErrorCode;
use protocol::api::TopicConfig;
use protocol::names::validate_topic_name;

use super::{CONTROLLER, OpError, Shard, ShardMsg, shutting_down};
use crate::metadata::{self, TOPICS_DIR, TopicMeta};

impl Shard {
    /// Routes a creation to the controller.
    pub async fn route_create_topic(
        self: &Rc<Self>,
        name: String,
        partitions: u32,
        config: TopicConfig,
    ) -> Result<(), OpError> {
        if self.id == CONTROLLER {
            return self.create_topic(name, partitions, config).await;
        }
        let (reply, rx) = oneshot::channel();
        self.send(CONTROLLER, ShardMsg::CreateTopic { name, partitions, config, reply }).await;
        rx.await.unwrap_or_else(|_| Err(shutting_down()))
    }

    pub async fn route_delete_topic(self: &Rc<Self>, name: String) -> Result<(), OpError> {
        if self.id == CONTROLLER {
            return self.delete_topic(name).await;
        }
        let (reply, rx) = oneshot::channel();
        self.send(CONTROLLER, ShardMsg::DeleteTopic { name, reply }).await;
        rx.await.unwrap_or_else(|_| Err(shutting_down()))
    }

    pub(super) async fn create_topic(
        self: &Rc<Self>,
        name: String,
        partitions: u32,
        config: TopicConfig,
    ) -> Result<(), OpError> {
        assert_eq!(self.id, CONTROLLER);
        validate_topic_name(&name).map_err(|m| (ErrorCode::INVALID_TOPIC_NAME, m))?;
        let limits = &self.config.limits;
        if partitions == 0 || partitions > limits.topic_partitions_max {
            return Err((
                ErrorCode::INVALID_PARTITIONS,
                format!("partitions must be 1 to {}, got {partitions}", limits.topic_partitions_max),
            ));
        }
        if config.retention_bytes.is_some_and(|b| b <= 0) || config.retention_ms.is_some_and(|m| m <= 0) {
            return Err((ErrorCode::INVALID_CONFIG, "retention_ms and retention_bytes must be positive".into()));
        }
        let _turn = self.admin_lock.acquire_permit(1).await.map_err(|_| shutting_down())?;
        let mut topics = self.topics.borrow().clone();
        if topics.contains_key(&name) {
            return Err((ErrorCode::TOPIC_ALREADY_EXISTS, format!("topic {name:?} already exists")));
        }
        let total: u64 = topics.values().map(|t| u64::from(t.partitions)).sum::<u64>() + u64::from(partitions);
        if total > u64::from(limits.partitions_max) {
            return Err((
                ErrorCode::INVALID_PARTITIONS,
                format!("the broker would hold {total} partitions; limits.partitions_max is {}", limits.partitions_max),
            ));
        }
        let meta = TopicMeta {
            name: name.clone(),
            partitions,
            retention_ms: config.retention_ms,
            retention_bytes: config.retention_bytes.map(|b| b as u64),
        };
        topics.insert(name.clone(), meta.clone());
        self.store_metadata(topics).await?;
        tracing::info!(topic = %name, partitions, "topic created");
        self.broadcast(|reply| ShardMsg::ApplyTopic { meta: meta.clone(), reply }, || self.apply_topic(meta.clone()))
            .await
    }

    pub(super) async fn delete_topic(self: &Rc<Self>, name: String) -> Result<(), OpError> {
        assert_eq!(self.id, CONTROLLER);
        let _turn = self.admin_lock.acquire_permit(1).await.map_err(|_| shutting_down())?;
        let mut topics = self.topics.borrow().clone();
        if topics.remove(&name).is_none() {
            return Err((ErrorCode::UNKNOWN_TOPIC, format!("topic {name:?} does not exist")));
        }
        self.store_metadata(topics).await?;
        let result = self
            .broadcast(|reply| ShardMsg::RemoveTopic { name: name.clone(), reply }, || self.remove_topic(&name))
            .await;
        // Partitions are closed everywhere: the topic's directory can go.
        let dir = self.config.data_dir.join(TOPICS_DIR).join(&name);
        let removed = glommio::executor().spawn_blocking(move || (std::fs::remove_dir_all(&dir), dir)).await;
        if let (Err(e), dir) = removed
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "removing a deleted topic's directory failed");
        }
        tracing::info!(topic = %name, "topic deleted");
        result
    }

    /// Replaces the metadata file on a blocking thread: its fsyncs must not
    /// stall this shard's connections.
    async fn store_metadata(&self, topics: crate::metadata::Topics) -> Result<(), OpError> {
        let dir = self.config.data_dir.clone();
        glommio::executor()
            .spawn_blocking(move || metadata::store(&dir, &topics))
            .await
            .map_err(|e| (ErrorCode::STORAGE_ERROR, format!("writing topic metadata failed: {e}")))
    }

    /// Sends a message built by `make` to every other shard and runs
    /// `local` here; the first error wins.
    async fn broadcast<F>(
        self: &Rc<Self>,
        make: impl Fn(oneshot::Sender<Result<(), OpError>>) -> ShardMsg,
        local: impl FnOnce() -> F,
    ) -> Result<(), OpError>
    where
        F: Future<Output = Result<(), OpError>>,
    {
        let mut replies = Vec::new();
        for to in (0..self.shards).filter(|&s| s != self.id) {
            let (reply, rx) = oneshot::channel();
            self.send(to, make(reply)).await;
            replies.push(rx);
        }
        let mut result = local().await;
        for rx in replies {
            let r = rx.await.unwrap_or_else(|_| Err(shutting_down()));
            if result.is_ok() {
                result = r;
            }
        }
        result
    }

    pub(super) async fn apply_topic(self: &Rc<Self>, meta: TopicMeta) -> Result<(), OpError> {
        self.topics.borrow_mut().insert(meta.name.clone(), meta.clone());
        self.open_partitions(&meta).await
    }

    pub(super) async fn remove_topic(self: &Rc<Self>, name: &str) -> Result<(), OpError> {
        self.topics.borrow_mut().remove(name);
        self.close_partitions(name).await;
        Ok(())
    }
}
