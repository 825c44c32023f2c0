//! Materialized tables: a topic of entity events read into a local map of
//! the latest value per key (Kafka Streams' `KTable`, a compacted topic's
//! reason to be).
//!
//! A [`Table`] reads every partition of its topic with a [`Consumer`] and
//! applies each partition's records in offset order: a key and a value
//! puts, a key and no value (a tombstone) deletes, and a record without a
//! key is skipped (counted: there is nothing to store it under). Keys are
//! partitioned, so one key's events are in one partition and the order
//! across partitions does not matter. What the table reflects is its
//! positions, the next offset per partition; [`Table::catch_up`] reads
//! until they reach the high watermarks of the moment it was called, and
//! [`Table::poll`] applies the next fetched records and returns what they
//! changed (and sends it to [`Table::subscribe`]rs).
//!
//! A checkpoint (`TableConfig::checkpoint_path`) saves the entries and the
//! positions to a local file (format and crash safety: [`checkpoint`]), on
//! [`Table::checkpoint`] and, when configured, every so many records or
//! so long; [`Table::open`] resumes from it and fetches only what came
//! after. A checkpoint that cannot be trusted is an error, never a silent
//! replay: damaged, of another topic, of partitions the topic does not
//! have, ahead of the topic's high watermark (the topic was truncated or
//! recreated), or behind its log start (retention deleted records the
//! table never applied, so keys they deleted would linger). Delete the
//! file to rebuild the table from the topic; a replay of a big topic is
//! the application's decision to make, not this module's.
//!
//! The table lives in memory, bounded by `TableConfig::bytes_max`: a put
//! past it is refused ([`TableError::Full`]) and the table stays at the
//! record before it. Partitions added to the topic after `open` are not
//! read until the table is opened again.

pub mod checkpoint;
mod publisher;
mod state;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::types::Offset;
use tokio::sync::broadcast;

use crate::client::Client;
use crate::consumer::{Consumer, ConsumerConfig, StartFrom};
use crate::error::ClientError;
use crate::record::ConsumerRecord;

pub use publisher::{Edit, TablePublisher, diff};
pub use state::{Applied, ENTRY_OVERHEAD_BYTES, TableState, TableStats};

#[derive(Debug, Clone)]
pub struct TableConfig {
    /// Where the checkpoint is kept; `None`: no checkpoint.
    pub checkpoint_path: Option<PathBuf>,
    /// Checkpoint once this many records were applied since the last one.
    pub checkpoint_every_records: Option<u64>,
    /// Checkpoint once this long passed since the last one, if a record
    /// was applied since.
    pub checkpoint_interval: Option<Duration>,
    /// The most the entries may hold: keys, values and
    /// [`ENTRY_OVERHEAD_BYTES`] per key.
    pub bytes_max: usize,
    /// Changes a [`Table::subscribe`]r may fall behind by before it misses
    /// some (and is told so).
    pub change_feed_capacity: usize,
    pub consumer: ConsumerConfig,
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig {
            checkpoint_path: None,
            checkpoint_every_records: None,
            checkpoint_interval: None,
            bytes_max: 1 << 30,
            change_feed_capacity: 1024,
            consumer: ConsumerConfig::default(),
        }
    }
}

/// What one record did to the table: `key` had `old` and has `new` (`None`:
/// absent). A tombstone for a key that was not there changes nothing and
/// is no change. `key` and `new` share the fetched batch's memory: copy
/// them to keep them long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub partition: u32,
    pub offset: Offset,
    pub key: Bytes,
    pub old: Option<Bytes>,
    pub new: Option<Bytes>,
}

impl Change {
    fn of(record: &ConsumerRecord, applied: Applied) -> Option<Change> {
        let (old, new) = match applied {
            Applied::Skipped | Applied::Deleted { old: None } => return None,
            Applied::Put { old } => (old, record.value.clone()),
            Applied::Deleted { old } => (old, None),
        };
        let key = record.key.clone()?;
        Some(Change { partition: record.partition, offset: record.offset, key, old, new })
    }
}

/// Why a table could not be opened, read or saved.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// Talking to the broker failed (the table stays as it was after the
    /// last record it applied; call again).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A setting contradicts another.
    #[error("table configuration: {0}")]
    Config(String),
    /// Reading or writing the checkpoint file failed.
    #[error("checkpoint {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// The checkpoint file is damaged: a bad CRC, magic or length.
    #[error("checkpoint {} is corrupt: {reason} (delete it to rebuild the table from the topic)", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// The checkpoint is of a format version this client does not read.
    #[error("checkpoint {} has format version {version}; this client reads version {}", path.display(), checkpoint::VERSION)]
    UnsupportedVersion { path: PathBuf, version: u8 },
    /// The checkpoint is another topic's.
    #[error("checkpoint {} is of topic {found:?}, not {expected:?}", path.display())]
    WrongTopic { path: PathBuf, expected: String, found: String },
    /// The checkpoint holds more than `bytes_max`.
    #[error("checkpoint {} holds more than the table's limit of {bytes_max} bytes", path.display())]
    CheckpointFull { path: PathBuf, bytes_max: usize },
    /// The checkpoint has a partition the topic does not (it was recreated
    /// with fewer).
    #[error(
        "the checkpoint has partition {partition}, but the topic has {partitions} partitions (delete the checkpoint to rebuild)"
    )]
    CheckpointPartition { partition: u32, partitions: u32 },
    /// The checkpoint is past what the partition holds: the topic was
    /// truncated or recreated since.
    #[error(
        "the checkpoint is at offset {position} of partition {partition}, past its high watermark {high_watermark} (the topic was recreated or truncated; delete the checkpoint to rebuild)"
    )]
    CheckpointAhead { partition: u32, position: Offset, high_watermark: Offset },
    /// Records after the checkpoint are gone (retention): the table would
    /// miss their changes.
    #[error(
        "the checkpoint is at offset {position} of partition {partition}, but the log starts at {log_start}: records the table never applied were deleted (delete the checkpoint to rebuild)"
    )]
    CheckpointGap { partition: u32, position: Offset, log_start: Offset },
    /// A record behind the partition's position ([`TableState::apply`]).
    #[error("partition {partition}: record at offset {offset} is behind the table's position {position}")]
    OutOfOrder { partition: u32, offset: Offset, position: Offset },
    /// Applying a record would pass `bytes_max`.
    #[error(
        "applying partition {partition} at offset {offset} would make the table {bytes} bytes, past its limit of {bytes_max}"
    )]
    Full { partition: u32, offset: Offset, bytes: usize, bytes_max: usize },
    /// [`Table::checkpoint`] without a `checkpoint_path`.
    #[error("the table has no checkpoint path")]
    NoCheckpointPath,
}

/// A topic, materialized: see the module docs.
pub struct Table {
    topic: String,
    consumer: Consumer,
    state: TableState,
    /// Records fetched and not applied yet (after a refused one).
    pending: VecDeque<ConsumerRecord>,
    config: TableConfig,
    changes: broadcast::Sender<Change>,
    /// The positions of the checkpoint the table was opened from.
    resumed_from: Option<BTreeMap<u32, Offset>>,
    since_checkpoint: u64,
    last_checkpoint: Instant,
}

impl Table {
    /// Opens a table of every partition of `topic`: from its checkpoint if
    /// the configuration names one and the file is there, else empty from
    /// the start of the log. Nothing is fetched yet.
    pub async fn open(client: &Client, topic: &str, config: TableConfig) -> Result<Table, TableError> {
        if config.checkpoint_path.is_none()
            && (config.checkpoint_every_records.is_some() || config.checkpoint_interval.is_some())
        {
            return Err(TableError::Config(
                "checkpoint_every_records and checkpoint_interval need a checkpoint_path".into(),
            ));
        }
        if config.checkpoint_every_records == Some(0) {
            return Err(TableError::Config("checkpoint_every_records must be at least 1".into()));
        }
        let loaded = match &config.checkpoint_path {
            Some(path) => {
                let (file, bytes_max) = (path.clone(), config.bytes_max);
                tokio::task::spawn_blocking(move || checkpoint::read(&file, bytes_max))
                    .await
                    .map_err(|e| joined(e, path))??
            }
            None => None,
        };
        if let (Some(l), Some(path)) = (&loaded, &config.checkpoint_path)
            && l.topic != topic
        {
            return Err(TableError::WrongTopic { path: path.clone(), expected: topic.into(), found: l.topic.clone() });
        }
        let mut consumer =
            Consumer::assign(client.clone(), config.consumer.clone(), topic, &[], StartFrom::Earliest).await?;
        let log_starts = consumer.positions().clone();
        let resumed_from = loaded.as_ref().map(|l| l.state.positions().clone());
        let mut state = match loaded {
            Some(l) => {
                let partitions = log_starts.len() as u32;
                if let Some(&partition) = l.state.positions().keys().find(|p| !log_starts.contains_key(p)) {
                    return Err(TableError::CheckpointPartition { partition, partitions });
                }
                let high_watermarks = consumer.refresh_high_watermarks().await?;
                for (&partition, &position) in l.state.positions() {
                    let (Some(&log_start), Some(&high_watermark)) =
                        (log_starts.get(&partition), high_watermarks.get(&partition))
                    else {
                        return Err(TableError::CheckpointPartition { partition, partitions });
                    };
                    if position > high_watermark {
                        return Err(TableError::CheckpointAhead { partition, position, high_watermark });
                    }
                    if position < log_start {
                        return Err(TableError::CheckpointGap { partition, position, log_start });
                    }
                    consumer.seek(partition, position);
                }
                l.state
            }
            None => TableState::new(config.bytes_max),
        };
        // Partitions the checkpoint has not seen start at their log start.
        for (&p, &o) in &log_starts {
            if !state.positions().contains_key(&p) {
                state.advance(p, o);
            }
        }
        let (changes, _) = broadcast::channel(config.change_feed_capacity.max(1));
        Ok(Table {
            topic: topic.to_owned(),
            consumer,
            state,
            pending: VecDeque::new(),
            config,
            changes,
            resumed_from,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.state.get(key)
    }

    /// Every key and its value, in key (byte) order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> + DoubleEndedIterator {
        self.state.iter()
    }

    pub fn len(&self) -> usize {
        self.state.len()
    }

    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
    }

    /// The entries, positions and counts.
    pub fn state(&self) -> &TableState {
        &self.state
    }

    /// The next offset to apply per partition: the table reflects every
    /// record before it.
    pub fn positions(&self) -> &BTreeMap<u32, Offset> {
        self.state.positions()
    }

    /// Records applied since the table was opened.
    pub fn stats(&self) -> TableStats {
        self.state.stats()
    }

    /// The positions of the checkpoint the table was opened from, if it was.
    pub fn resumed_from(&self) -> Option<&BTreeMap<u32, Offset>> {
        self.resumed_from.as_ref()
    }

    /// The highest high watermark seen per partition (by fetches and
    /// [`Table::catch_up`]).
    pub fn high_watermarks(&self) -> &BTreeMap<u32, Offset> {
        self.consumer.high_watermarks()
    }

    /// Records each partition is behind its high watermark as last seen,
    /// for partitions whose high watermark is known.
    pub fn lag(&self) -> BTreeMap<u32, u64> {
        crate::consumer::lag(self.state.positions(), self.consumer.high_watermarks())
    }

    /// A feed of the changes applied from now on, by [`Table::poll`] and
    /// [`Table::catch_up`], in the order applied. A subscriber more than
    /// `change_feed_capacity` changes behind misses the oldest and is told
    /// so (`RecvError::Lagged`): read the table itself then.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Reads until every partition's position reached the high watermark
    /// it had when this was called (records appended meanwhile may be
    /// applied too); returns the records applied. On an error the table
    /// keeps what it applied; calling again goes on from there.
    pub async fn catch_up(&mut self) -> Result<u64, TableError> {
        let before = self.state.stats().records;
        self.apply_pending(None)?;
        let targets = self.consumer.refresh_high_watermarks().await?;
        while !self.reached(&targets) {
            self.fetch().await?;
            self.apply_pending(None)?;
            self.checkpoint_if_due().await?;
        }
        Ok(self.state.stats().records - before)
    }

    /// Whether every partition's position is at or past `targets`.
    fn reached(&self, targets: &BTreeMap<u32, Offset>) -> bool {
        targets.iter().all(|(p, target)| self.state.positions().get(p).is_some_and(|o| o >= target))
    }

    /// Applies the records available now, or after a fetch that waits up to
    /// the consumer's `fetch_wait_max` for some; returns what they changed
    /// (empty if nothing arrived, or nothing changed).
    pub async fn poll(&mut self) -> Result<Vec<Change>, TableError> {
        let mut changes = Vec::new();
        if self.pending.is_empty() {
            self.fetch().await?;
        }
        self.apply_pending(Some(&mut changes))?;
        self.checkpoint_if_due().await?;
        Ok(changes)
    }

    async fn fetch(&mut self) -> Result<(), TableError> {
        let records = self.consumer.poll().await?;
        self.pending.extend(records);
        Ok(())
    }

    /// Applies the pending records in order, collecting their changes into
    /// `changes` if given; once none is left here or in the consumer, takes
    /// the consumer's positions (past gaps that hold no record).
    fn apply_pending(&mut self, mut changes: Option<&mut Vec<Change>>) -> Result<(), TableError> {
        let feed = self.changes.receiver_count() > 0;
        while let Some(record) = self.pending.front() {
            let applied = self.state.apply(record)?;
            let record = self.pending.pop_front().expect("a front record");
            self.since_checkpoint += 1;
            if (feed || changes.is_some())
                && let Some(change) = Change::of(&record, applied)
            {
                if feed {
                    // No receiver left is no error: the feed is optional.
                    let _ = self.changes.send(change.clone());
                }
                if let Some(changes) = changes.as_deref_mut() {
                    changes.push(change);
                }
            }
        }
        if !self.consumer.has_buffered() {
            for (&p, &o) in self.consumer.positions() {
                self.state.advance(p, o);
            }
        }
        Ok(())
    }

    async fn checkpoint_if_due(&mut self) -> Result<(), TableError> {
        if self.config.checkpoint_path.is_none() || self.since_checkpoint == 0 {
            return Ok(());
        }
        let by_count = self.config.checkpoint_every_records.is_some_and(|n| self.since_checkpoint >= n);
        let by_time = self.config.checkpoint_interval.is_some_and(|t| self.last_checkpoint.elapsed() >= t);
        if by_count || by_time { self.checkpoint().await } else { Ok(()) }
    }

    /// Saves the entries and positions to the checkpoint file (replacing it
    /// atomically; [`checkpoint`]). The write runs on tokio's blocking pool
    /// from a snapshot that shares the table's bytes (no value is copied);
    /// the table waits for it.
    pub async fn checkpoint(&mut self) -> Result<(), TableError> {
        let path = self.config.checkpoint_path.clone().ok_or(TableError::NoCheckpointPath)?;
        let file = path.clone();
        let topic = self.topic.clone();
        let positions = self.state.positions().clone();
        let entries = self.state.snapshot();
        tokio::task::spawn_blocking(move || {
            checkpoint::write(&file, &topic, &positions, &entries)
                .map_err(|source| TableError::Io { path: file, source })
        })
        .await
        .map_err(|e| joined(e, &path))??;
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        Ok(())
    }
}

/// A blocking task's end: its panic goes on here; a cancelled one (the
/// runtime is shutting down) is an I/O error.
fn joined(e: tokio::task::JoinError, path: &std::path::Path) -> TableError {
    if e.is_panic() {
        std::panic::resume_unwind(e.into_panic());
    }
    TableError::Io { path: path.to_path_buf(), source: std::io::Error::other("the runtime shut down meanwhile") }
}
