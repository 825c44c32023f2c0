//! The partition operations a shard runs on the partitions it owns.

use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use engine::types::{Offset, Timestamp};
use futures::future::{Either, select, select_all};
use protocol::ErrorCode;
use protocol::api::{OffsetSpec, PartitionDescription};

use super::{Log, OpError, Shard, log_error};
use crate::metadata::{TopicMeta, partition_dir};

/// The result of one append: the base offset, or why not.
pub type AppendOutcome = Result<Offset, OpError>;

/// One partition of a fetch, as the owner reads it.
#[derive(Debug, Clone)]
pub struct FetchItem {
    pub topic: String,
    pub partition: u32,
    pub offset: Offset,
    pub max_bytes: u32,
}

#[derive(Debug, Clone)]
pub struct FetchOutcome {
    pub error: Option<OpError>,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
    pub batches: Vec<Bytes>,
}

impl FetchOutcome {
    pub fn failed(e: OpError) -> FetchOutcome {
        FetchOutcome { error: Some(e), high_watermark: Offset(0), log_start_offset: Offset(0), batches: Vec::new() }
    }

    pub fn bytes(&self) -> usize {
        self.batches.iter().map(Bytes::len).sum()
    }
}

impl Shard {
    /// Starts an append now, in its own task (an append must never be
    /// cancelled half-way: that poisons the log), and returns its outcome's
    /// future. Calling this in request order is what keeps per-connection
    /// produce order: the log serves appends in the order they start.
    pub fn append_local(
        &self,
        topic: &str,
        partition: u32,
        batch: Bytes,
    ) -> impl Future<Output = AppendOutcome> + use<> {
        // The log checks the batch whole (length, CRC32C, records archive)
        // before taking it: nothing to check twice here.
        let task = self.log(topic, partition).map(|log| {
            glommio::spawn_local(async move {
                log.append(batch.to_vec()).await.map(|info| info.base_offset).map_err(|e| log_error(&e))
            })
            .detach()
        });
        async move {
            match task {
                Ok(task) => task.await.unwrap_or_else(|| {
                    Err((ErrorCode::SHUTTING_DOWN, "the append was cancelled by the shutdown".into()))
                }),
                Err(e) => Err(e),
            }
        }
    }

    /// Reads each item; with `wait_until`, first waits (up to then, or the
    /// shutdown) until at least one item has data.
    /// Reads at most `bytes_max` in all, beyond the first batch.
    pub async fn fetch_local(
        self: &Rc<Self>,
        items: Vec<FetchItem>,
        wait_until: Option<Instant>,
        bytes_max: usize,
    ) -> Vec<FetchOutcome> {
        let logs: Vec<Result<Rc<Log>, OpError>> = items.iter().map(|i| self.log(&i.topic, i.partition)).collect();
        if let Some(deadline) = wait_until {
            let any_ready = items.iter().zip(&logs).any(|(item, log)| match log {
                Ok(log) => log.high_watermark() > item.offset || item.offset < log.log_start_offset(),
                Err(_) => true,
            });
            if !any_ready && !self.shutdown.is_fired() {
                let waits: Vec<_> = items
                    .iter()
                    .zip(&logs)
                    .filter_map(|(item, log)| log.as_ref().ok().map(|log| (log.clone(), item.offset)))
                    .map(|(log, offset)| Box::pin(async move { log.wait_for_data(offset).await }))
                    .collect();
                let timer = glommio::timer::Timer::new(deadline.saturating_duration_since(Instant::now()));
                let stop = pin!(select(timer, self.shutdown.wait()));
                if !waits.is_empty() {
                    let _ = select(select_all(waits), stop).await;
                }
            }
        }
        let budget = bytes_max.min(self.config.limits.fetch_bytes_max);
        let mut used = 0usize;
        let mut out = Vec::with_capacity(items.len());
        for (item, log) in items.iter().zip(logs) {
            let log = match log {
                Ok(log) => log,
                Err(e) => {
                    out.push(FetchOutcome::failed(e));
                    continue;
                }
            };
            if used >= budget {
                // The response is full: the rest get nothing this time.
                out.push(FetchOutcome {
                    error: None,
                    high_watermark: log.high_watermark(),
                    log_start_offset: log.log_start_offset(),
                    batches: Vec::new(),
                });
                continue;
            }
            // A partition gets at least one batch, so no consumer stalls
            // behind a batch larger than its share.
            let bytes_max = (item.max_bytes as usize).min(budget - used).max(1);
            match log.read(item.offset, bytes_max).await {
                Ok(r) => {
                    let outcome = FetchOutcome {
                        error: None,
                        high_watermark: r.high_watermark,
                        log_start_offset: r.log_start_offset,
                        batches: r.batches,
                    };
                    used += outcome.bytes();
                    out.push(outcome);
                }
                Err(e) => {
                    let mut outcome = FetchOutcome::failed(log_error(&e));
                    outcome.high_watermark = log.high_watermark();
                    outcome.log_start_offset = log.log_start_offset();
                    out.push(outcome);
                }
            }
        }
        out
    }

    pub async fn list_offsets_local(&self, items: Vec<(String, u32, OffsetSpec)>) -> Vec<Result<Offset, OpError>> {
        let mut out = Vec::with_capacity(items.len());
        for (topic, partition, spec) in items {
            let result = match self.log(&topic, partition) {
                Err(e) => Err(e),
                Ok(log) => match spec {
                    OffsetSpec::Earliest => Ok(log.log_start_offset()),
                    OffsetSpec::Latest => Ok(log.high_watermark()),
                    OffsetSpec::Timestamp(t) => match log.offset_for_timestamp(Timestamp(t)).await {
                        Ok(Some(o)) => Ok(o.min(log.high_watermark())),
                        Ok(None) => Ok(log.high_watermark()),
                        Err(e) => Err(log_error(&e)),
                    },
                },
            };
            out.push(result);
        }
        out
    }

    pub fn describe_local(&self, topic: &str, partitions: &[u32]) -> Vec<PartitionDescription> {
        partitions
            .iter()
            .map(|&p| match self.log(topic, p) {
                Ok(log) => PartitionDescription {
                    partition: p,
                    shard: self.id as u32,
                    error: if log.is_poisoned() { ErrorCode::STORAGE_ERROR } else { ErrorCode::NONE },
                    log_start_offset: log.log_start_offset(),
                    high_watermark: log.high_watermark(),
                    log_end_offset: log.log_end_offset(),
                    size_bytes: log.size_bytes(),
                },
                Err((code, _)) => PartitionDescription {
                    partition: p,
                    shard: self.id as u32,
                    error: code,
                    log_start_offset: Offset(0),
                    high_watermark: Offset(0),
                    log_end_offset: Offset(0),
                    size_bytes: 0,
                },
            })
            .collect()
    }

    /// Opens (recovering) the partitions of `meta` this shard owns.
    pub(super) async fn open_partitions(self: &Rc<Self>, meta: &TopicMeta) -> Result<(), OpError> {
        let owned: Vec<u32> = (0..meta.partitions).filter(|&p| self.owner(&meta.name, p) == self.id).collect();
        let config = self.config.log_config(meta.retention_ms, meta.retention_bytes);
        let opens = owned.iter().map(|&p| {
            let dir = partition_dir(&self.config.data_dir, &meta.name, p);
            let storage = self.storage.clone();
            let config = config.clone();
            async move { (p, Log::open(storage, &dir, config).await) }
        });
        let mut first_error = None;
        for (p, result) in futures::future::join_all(opens).await {
            match result {
                Ok(log) => {
                    let report = log.recovery_report();
                    tracing::info!(
                        topic = %meta.name, partition = p, shard = self.id,
                        log_end_offset = log.log_end_offset().0, recovery = ?report, "partition open"
                    );
                    let log = Rc::new(log);
                    engine::rt::glommio::spawn_interval_flusher(log.clone());
                    self.logs.borrow_mut().insert((meta.name.clone(), p), log);
                }
                Err(e) => {
                    tracing::error!(topic = %meta.name, partition = p, error = %e, "partition failed to open");
                    first_error.get_or_insert_with(|| log_error(&e));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    pub(super) async fn close_partitions(&self, topic: &str) {
        let logs: Vec<(u32, Rc<Log>)> = {
            let mut logs = self.logs.borrow_mut();
            let keys: Vec<(String, u32)> = logs.keys().filter(|(t, _)| t == topic).cloned().collect();
            keys.into_iter().filter_map(|k| logs.remove(&k).map(|log| (k.1, log))).collect()
        };
        for (p, log) in logs {
            if let Err(e) = log.close().await {
                tracing::warn!(topic, partition = p, error = %e, "closing a deleted partition failed");
            }
        }
    }
}

/// Waits for `fut`, or returns `None` at `deadline`.
pub async fn until<T>(deadline: Instant, fut: impl Future<Output = T>) -> Option<T> {
    let timer = glommio::timer::Timer::new(deadline.saturating_duration_since(Instant::now()));
    match select(pin!(fut), timer).await {
        Either::Left((v, _)) => Some(v),
        Either::Right(_) => None,
    }
}
