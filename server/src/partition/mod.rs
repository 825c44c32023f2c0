//! One topic-partition on the core that owns it. A `Partition` owns the
//! partition's log and is where the per-partition state of later features
//! lives (the leader-epoch cache and replica state with replication, the
//! producer state of idempotent producers, queue state). It has one path
//! to open (which recovers), reopen (after the log was poisoned or failed
//! to open) and close; the rest of the broker never opens a log itself.
//!
//! Owned by shard `owner`, never sent to another core (`Rc`, `Cell`).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::rt::Runtime;
use engine::types::{Offset, Timestamp};
use engine::{FlushPolicy, LogConfig, LogError, MemoryPool, PartitionLog, ReadResult};

use crate::cluster::driver::Driver;
use crate::ids::{ShardId, TopicPartition};
use crate::metrics::PartitionMetrics;
use crate::service::ServiceError;
pub use replication::replica::Acks;

pub type Log<R> = PartitionLog<<R as Runtime>::Storage>;

enum LogState<R: Runtime> {
    Open(Rc<Log<R>>),
    /// The log could not be opened (or was closed): why.
    Unavailable(ServiceError),
    /// Being reopened.
    Reopening,
}

pub struct Partition<R: Runtime> {
    pub tp: TopicPartition,
    pub topic: Rc<str>,
    pub owner: ShardId,
    dir: PathBuf,
    rt: R,
    pool: MemoryPool,
    config: RefCell<LogConfig>,
    state: RefCell<LogState<R>>,
    /// Bumped at every (re)open, so the interval flusher of a log that was
    /// replaced stops.
    generation: Cell<u64>,
    /// When a log stopped by a full disk may next be reopened by itself,
    /// and the wait after that (doubling to a minute while it keeps failing).
    disk_full_retry_at: Cell<Option<(Instant, Duration)>>,
    /// Set by `close`: a recovery in progress closes what it opened.
    closing: Cell<bool>,
    pub metrics: Rc<PartitionMetrics>,
    /// A replicated partition's replica (cluster mode): appends go through
    /// it, and readers see what it knows committed.
    driver: RefCell<Option<Rc<Driver<R>>>>,
    /// Replicated: without its driver it takes no appends.
    replicated: Cell<bool>,
    /// Why its replica could not start (a damaged `raft.state`, say):
    /// what describe, appends and reads report until it starts.
    replica_error: RefCell<Option<ServiceError>>,
    /// A restart of the replica is under way.
    replica_restarting: Cell<bool>,
}

/// How soon a partition stopped by a full disk first tries to come back;
/// each failed try doubles the wait, up to `DISK_FULL_RETRY_MAX` (a reopen
/// scans the active segment).
const DISK_FULL_RETRY: Duration = Duration::from_secs(1);
const DISK_FULL_RETRY_MAX: Duration = Duration::from_mins(1);

/// What `describe` says of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    pub error: Option<ServiceError>,
    pub log_start_offset: Offset,
    pub high_watermark: Offset,
    pub log_end_offset: Offset,
    pub size_bytes: u64,
    pub disk_bytes: u64,
    /// How far the cleaner got (meaningful on compacted topics).
    pub cleaner: engine::CleanerStatus,
}

impl PartitionState {
    /// A partition without a usable log: why, and zeroes.
    pub fn failed(error: ServiceError) -> PartitionState {
        PartitionState {
            error: Some(error),
            log_start_offset: Offset(0),
            high_watermark: Offset(0),
            log_end_offset: Offset(0),
            size_bytes: 0,
            disk_bytes: 0,
            cleaner: engine::CleanerStatus::default(),
        }
    }
}

impl<R: Runtime> Partition<R> {
    /// Opens the partition's log, recovering it. A log that cannot be
    /// opened leaves the partition unavailable with the reason (never the
    /// broker down); [`Partition::recover`] tries again.
    pub async fn open(
        rt: R,
        tp: TopicPartition,
        topic: Rc<str>,
        owner: ShardId,
        dir: PathBuf,
        config: LogConfig,
        pool: MemoryPool,
    ) -> Rc<Partition<R>> {
        let partition = Rc::new(Partition {
            tp,
            topic,
            owner,
            dir,
            rt,
            pool,
            config: RefCell::new(config),
            state: RefCell::new(LogState::Reopening),
            generation: Cell::new(0),
            disk_full_retry_at: Cell::new(None),
            closing: Cell::new(false),
            metrics: Rc::new(PartitionMetrics::default()),
            driver: RefCell::new(None),
            replicated: Cell::new(false),
            replica_error: RefCell::new(None),
            replica_restarting: Cell::new(false),
        });
        partition.open_log().await;
        partition
    }

    async fn open_log(self: &Rc<Self>) {
        let config = self.config.borrow().clone();
        let opened =
            PartitionLog::open_in(self.rt.storage().clone(), &self.dir, config.clone(), self.pool.clone()).await;
        let generation = self.generation.get() + 1;
        self.generation.set(generation);
        let state = match opened {
            Ok(log) => {
                tracing::info!(
                    topic = %self.topic, partition = self.tp.partition.0, shard = %self.owner,
                    log_end_offset = log.log_end_offset().0, recovery = ?log.recovery_report(), "partition open"
                );
                let log = Rc::new(log);
                if let FlushPolicy::IntervalMs(ms) = config.flush {
                    self.spawn_flusher(log.clone(), generation, Duration::from_millis(ms));
                }
                LogState::Open(log)
            }
            Err(e) => {
                tracing::error!(topic = %self.topic, partition = self.tp.partition.0, error = %e, "partition failed to open");
                LogState::Unavailable(ServiceError::from(&e))
            }
        };
        *self.state.borrow_mut() = state;
    }

    /// `flush = interval`: syncs the log at least every `every`, until the
    /// log is replaced, closed or poisoned.
    fn spawn_flusher(self: &Rc<Self>, log: Rc<Log<R>>, generation: u64, every: Duration) {
        let weak = Rc::downgrade(self);
        let rt = self.rt.clone();
        drop(self.rt.spawn(async move {
            loop {
                rt.sleep(every).await;
                let Some(partition) = weak.upgrade() else { return };
                if partition.generation.get() != generation {
                    return;
                }
                drop(partition);
                if let Err(e) = log.sync_if_due().await {
                    tracing::debug!(error = %e, "interval flusher stops");
                    return;
                }
            }
        }));
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub fn mark_replicated(&self) {
        self.replicated.set(true);
    }

    pub fn is_replicated(&self) -> bool {
        self.replicated.get()
    }

    pub fn set_driver(&self, driver: Rc<Driver<R>>) {
        self.replica_error.borrow_mut().take();
        *self.driver.borrow_mut() = Some(driver);
    }

    /// The replica could not start: the partition serves nothing, and says why.
    pub fn set_replica_error(&self, e: ServiceError) {
        *self.replica_error.borrow_mut() = Some(e);
    }

    /// Why the replica is not running, if it is not.
    pub fn replica_error(&self) -> Option<ServiceError> {
        self.replica_error.borrow().clone()
    }

    /// Stops the replica and waits until nothing it started can still
    /// write (before it is started again over the same files).
    pub async fn stop_driver(&self) {
        let driver = self.driver.borrow_mut().take();
        if let Some(driver) = driver {
            driver.stop();
            driver.quiesced().await;
        }
    }

    /// Takes the right to restart the replica (one restart at a time);
    /// `false` if one is under way.
    pub fn begin_replica_restart(&self) -> bool {
        !self.replica_restarting.replace(true)
    }

    pub fn end_replica_restart(&self) {
        self.replica_restarting.set(false);
    }

    pub fn driver(&self) -> Option<Rc<Driver<R>>> {
        self.driver.borrow().clone()
    }

    /// The open log, or why there is none.
    pub fn log(&self) -> Result<Rc<Log<R>>, ServiceError> {
        match &*self.state.borrow() {
            LogState::Open(log) => Ok(log.clone()),
            LogState::Unavailable(e) => Err(e.clone()),
            LogState::Reopening => Err(ServiceError::PartitionUnavailable(format!(
                "partition {}/{} is being recovered",
                self.topic, self.tp.partition
            ))),
        }
    }

    /// Appends a producer's batch. The batch is checked and takes its place
    /// in line now (so calls in order land in order), and the append runs
    /// in a task of its own: an append cancelled half-way would poison the
    /// log, so nothing that drops the returned future can cancel it.
    pub fn append(
        self: &Rc<Self>,
        batch: &Bytes,
        acks: Acks,
        forward: bool,
    ) -> impl Future<Output = Result<Offset, ServiceError>> + 'static + use<R> {
        if let Some(driver) = self.driver() {
            let reply = driver.append(batch, acks, forward);
            let metrics = self.metrics.clone();
            let bytes = batch.len() as u64;
            let records = protocol::batch::BatchHeader::decode(batch).map_or(0, |h| u64::from(h.record_count));
            return futures::future::Either::Left(async move {
                let base = reply.await?;
                metrics.produce_records.set(metrics.produce_records.get() + records);
                metrics.produce_bytes.set(metrics.produce_bytes.get() + bytes);
                Ok(base)
            });
        }
        if self.replicated.get() {
            let e = self.replica_error().unwrap_or_else(|| {
                ServiceError::PartitionUnavailable(format!(
                    "partition {}/{}'s replica is not running",
                    self.topic, self.tp.partition
                ))
            });
            return futures::future::Either::Right(futures::future::Either::Left(std::future::ready(Err(e))));
        }
        futures::future::Either::Right(futures::future::Either::Right(self.append_local(batch)))
    }

    fn append_local(
        self: &Rc<Self>,
        batch: &Bytes,
    ) -> impl Future<Output = Result<Offset, ServiceError>> + 'static + use<R> {
        self.come_back_after_disk_full();
        let started = self.log().map(|log| {
            let append = log.append_owned(batch.to_vec());
            let metrics = self.metrics.clone();
            let bytes = batch.len() as u64;
            self.rt.spawn(async move {
                let info = append.await?;
                metrics
                    .produce_records
                    .set(metrics.produce_records.get() + info.last_offset.0 - info.base_offset.0 + 1);
                metrics.produce_bytes.set(metrics.produce_bytes.get() + bytes);
                Ok::<_, LogError>(info.base_offset)
            })
        });
        async move {
            match started {
                Ok(task) => match task.await {
                    Some(result) => result.map_err(|e| ServiceError::from(&e)),
                    None => Err(ServiceError::ShuttingDown),
                },
                Err(e) => Err(e),
            }
        }
    }

    /// A log poisoned by a full disk (a write that met ENOSPC: whether it
    /// landed is unknown, so the log cannot go on) or that could not open
    /// for lack of space reopens by itself, first after [`DISK_FULL_RETRY`]
    /// and backing off while it keeps failing, when appends keep coming: so writes resume once
    /// space is free, without an operator. Recovery trusts only the disk,
    /// and nothing acknowledged depended on the failed write. Appends meanwhile
    /// get `DISK_FULL` (retriable). Any other poisoning (an fsync error)
    /// waits for [`Partition::recover`].
    fn come_back_after_disk_full(self: &Rc<Self>) {
        let stuck = match &*self.state.borrow() {
            LogState::Open(log) => log.poisoned().is_some_and(|e| e.is_disk_full()),
            LogState::Unavailable(e) => matches!(e, ServiceError::DiskFull(_)),
            LogState::Reopening => false,
        };
        if !stuck {
            return;
        }
        let now = self.rt.now();
        let wait = match self.disk_full_retry_at.get() {
            Some((at, _)) if now < at => return,
            Some((_, wait)) => (wait * 2).min(DISK_FULL_RETRY_MAX),
            None => DISK_FULL_RETRY,
        };
        self.disk_full_retry_at.set(Some((now + wait, wait)));
        let this = self.clone();
        drop(self.rt.spawn(async move {
            if this.recover().await.is_ok() {
                tracing::info!(topic = %this.topic, partition = this.tp.partition.0, "partition back after a full disk");
                this.disk_full_retry_at.set(None);
            }
        }));
    }

    /// Reads whole batches from `offset` on, at most `bytes_max` of them, but
    /// always the first (so a batch larger than `bytes_max` still goes out).
    pub async fn read(&self, offset: Offset, bytes_max: usize) -> Result<ReadResult, ServiceError> {
        let log = self.log()?;
        let hw = log.high_watermark();
        if self.driver.borrow().is_some() && offset > hw && offset <= log.log_end_offset() {
            // A replica that has the offset but has not seen it committed
            // yet (after a restart its high watermark starts at zero):
            // nothing to read yet, not out of range.
            return Ok(ReadResult {
                batches: Vec::new(),
                high_watermark: hw,
                log_start_offset: log.log_start_offset(),
            });
        }
        let read = log.read(offset, bytes_max).await?;
        let records: u64 = read
            .batches
            .iter()
            .filter_map(|b| protocol::batch::BatchHeader::decode(b).ok())
            .map(|h| u64::from(h.record_count))
            .sum();
        let bytes: usize = read.batches.iter().map(Bytes::len).sum();
        self.metrics.fetch_records.set(self.metrics.fetch_records.get() + records);
        self.metrics.fetch_bytes.set(self.metrics.fetch_bytes.get() + bytes as u64);
        Ok(read)
    }

    /// Whether a read at `offset` has something to return now (or must fail).
    pub fn ready_at(&self, offset: Offset) -> bool {
        let replicated = self.driver.borrow().is_some();
        match self.log() {
            Ok(log) => {
                log.has_data_at(offset)
                    || offset < log.log_start_offset()
                    || (offset > log.high_watermark() && !(replicated && offset <= log.log_end_offset()))
            }
            Err(_) => true,
        }
    }

    /// Completes once a read at `offset` has something to return.
    pub async fn wait_for_data(&self, offset: Offset) {
        if let Ok(log) = self.log() {
            let _ = log.wait_for_data(offset).await;
        }
    }

    pub fn log_start_offset(&self) -> Result<Offset, ServiceError> {
        Ok(self.log()?.log_start_offset())
    }

    pub fn high_watermark(&self) -> Result<Offset, ServiceError> {
        Ok(self.log()?.high_watermark())
    }

    /// The first offset whose record is at or after `t`; the high watermark
    /// when every record is older.
    pub async fn offset_for_timestamp(&self, t: Timestamp) -> Result<Offset, ServiceError> {
        let log = self.log()?;
        let hw = log.high_watermark();
        Ok(log.offset_for_timestamp(t).await?.map_or(hw, |o| o.min(hw)))
    }

    pub fn state(&self) -> PartitionState {
        match self.log() {
            Ok(log) => PartitionState {
                error: log.poisoned().map(|e| ServiceError::from(&e)).or_else(|| self.replica_error()),
                log_start_offset: log.log_start_offset(),
                high_watermark: log.high_watermark(),
                log_end_offset: log.log_end_offset(),
                size_bytes: log.size_bytes(),
                disk_bytes: log.disk_bytes(),
                cleaner: log.cleaner_status(),
            },
            Err(e) => PartitionState::failed(e),
        }
    }

    /// Applies new settings; dynamic ones at once, the rest at the next open.
    pub fn reconfigure(&self, config: &LogConfig) {
        self.config.borrow_mut().clone_from(config);
        if let Ok(log) = self.log() {
            let mut current = log.config();
            // Keep what sizes buffers; take what may change now.
            current.segment_bytes_max = config.segment_bytes_max;
            current.segment_ms_max = config.segment_ms_max;
            current.batch_bytes_max = config.batch_bytes_max;
            current.retention_ms = config.retention_ms;
            current.retention_bytes = config.retention_bytes;
            current.timestamp_type = config.timestamp_type;
            current.timestamp_before_max_ms = config.timestamp_before_max_ms;
            current.timestamp_after_max_ms = config.timestamp_after_max_ms;
            if let Err(e) = log.reconfigure(current) {
                tracing::warn!(topic = %self.topic, partition = self.tp.partition.0, error = %e, "new settings refused");
            }
        }
    }

    /// Compacts the log, pass after pass, if its topic compacts and it is
    /// due: enough of it is dirty, its oldest dirty record has waited
    /// `max.compaction.lag.ms` (an active segment holding it is rolled, so
    /// it can be cleaned), or a tombstone it keeps has had its
    /// `delete.retention.ms`. What the passes did, if any ran.
    pub async fn compact_if_due(
        &self,
        settings: &crate::topic_config::CleanerSettings,
        pace: &mut impl engine::Pace,
    ) -> Option<engine::CompactionReport> {
        if !settings.compact {
            return None;
        }
        let log = self.log().ok()?;
        let now = engine::rt::Storage::now_ms(self.rt.storage());
        let waited = |t: Option<i64>, lag: i64| t.is_some_and(|t| t < now.saturating_sub(lag));
        if let Some(lag) = settings.max_compaction_lag_ms
            && waited(log.cleaner_status().active_first_append_ms, lag)
            && let Err(e) = log.roll().await
        {
            tracing::warn!(topic = %self.topic, partition = self.tp.partition.0, error = %e, "roll for compaction failed");
        }
        let status = log.cleaner_status();
        let overdue = settings.max_compaction_lag_ms.is_some_and(|lag| waited(status.oldest_dirty_append_ms, lag));
        let ratio_due = status.dirty_bytes > 0 && status.dirty_ratio() >= settings.min_cleanable_dirty_ratio;
        let tombstones_due = waited(status.oldest_tombstone_ms, settings.policy.delete_retention_ms);
        if !ratio_due && !overdue && !tombstones_due {
            return None;
        }
        let mut total = engine::CompactionReport::default();
        loop {
            match log.compact(&settings.policy, pace).await {
                Ok(report) => {
                    let m = &self.metrics;
                    m.cleaner_read_bytes.set(m.cleaner_read_bytes.get() + report.bytes_read);
                    m.cleaner_removed_bytes.set(m.cleaner_removed_bytes.get() + report.bytes_removed);
                    total.segments_rewritten += report.segments_rewritten;
                    total.bytes_read += report.bytes_read;
                    total.bytes_written += report.bytes_written;
                    total.bytes_removed += report.bytes_removed;
                    total.records_removed += report.records_removed;
                    total.tombstones_removed += report.tombstones_removed;
                    total.cleaned_through = report.cleaned_through;
                    if !report.more {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(topic = %self.topic, partition = self.tp.partition.0, error = %e, "compaction failed");
                    break;
                }
            }
        }
        if total.segments_rewritten == 0 {
            return Some(total);
        }
        tracing::info!(
            topic = %self.topic,
            partition = self.tp.partition.0,
            segments = total.segments_rewritten,
            records_removed = total.records_removed,
            tombstones_removed = total.tombstones_removed,
            bytes_removed = total.bytes_removed,
            "compacted"
        );
        Some(total)
    }

    /// Deletes old segments by the topic's retention.
    pub async fn enforce_retention(&self) {
        let Ok(log) = self.log() else { return };
        match log.enforce_retention().await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(topic = %self.topic, partition = self.tp.partition.0, segments = n, "retention deleted segments");
            }
            Err(e) => {
                tracing::warn!(topic = %self.topic, partition = self.tp.partition.0, error = %e, "retention failed");
            }
        }
    }

    /// Brings back a partition whose log is poisoned (an I/O error, a
    /// failed fsync) or could not be opened: stops using the log without
    /// writing anything more, and opens it again, which recovers what is on
    /// disk. What was acknowledged is there by the flush policy's promise.
    /// A healthy partition is left alone.
    pub async fn recover(self: &Rc<Self>) -> Result<(), ServiceError> {
        let old = {
            let mut state = self.state.borrow_mut();
            match &*state {
                LogState::Open(log) if !log.is_poisoned() => {
                    return Err(ServiceError::InvalidRequest(format!(
                        "partition {}/{} is healthy; nothing to recover",
                        self.topic, self.tp.partition
                    )));
                }
                LogState::Reopening => {
                    return Err(ServiceError::PartitionUnavailable("already being recovered".into()));
                }
                LogState::Open(log) => {
                    let log = log.clone();
                    *state = LogState::Reopening;
                    Some(log)
                }
                LogState::Unavailable(_) => {
                    *state = LogState::Reopening;
                    None
                }
            }
        };
        if let Some(log) = old {
            tracing::warn!(topic = %self.topic, partition = self.tp.partition.0, cause = ?log.poisoned_cause(), "recovering a poisoned partition");
            log.abandon().await;
        }
        if self.closing.get() {
            // Closed meanwhile (a shutdown, a topic deleted): open nothing,
            // create no directory again.
            *self.state.borrow_mut() =
                LogState::Unavailable(ServiceError::PartitionUnavailable("the partition is closed".into()));
            return Err(closed_during_recovery());
        }
        self.open_log().await;
        if self.closing.get() {
            self.close().await;
            return Err(closed_during_recovery());
        }
        self.log().map(|_| ())
    }

    /// Closes the log cleanly (sync, indexes, clean-shutdown marker). A
    /// recovery under way closes what it opens.
    pub async fn close(&self) {
        self.closing.set(true);
        if let Some(driver) = self.driver.borrow_mut().take() {
            driver.stop();
        }
        let log = {
            let mut state = self.state.borrow_mut();
            let previous = std::mem::replace(
                &mut *state,
                LogState::Unavailable(ServiceError::PartitionUnavailable("the partition is closed".into())),
            );
            match previous {
                LogState::Open(log) => Some(log),
                other => {
                    *state = other;
                    None
                }
            }
        };
        self.generation.set(self.generation.get() + 1);
        if let Some(log) = log
            && let Err(e) = log.close().await
        {
            tracing::error!(topic = %self.topic, partition = self.tp.partition.0, error = %e, "closing a partition failed");
        }
    }
}

fn closed_during_recovery() -> ServiceError {
    ServiceError::PartitionUnavailable("the partition was closed during recovery".into())
}
