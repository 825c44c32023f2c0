//! The consumer: reads assigned partitions from positions it keeps itself
//! (group membership and committed offsets come with consumer groups).
//!
//! It keeps long-polling fetches in flight on each broker shard that owns
//! an assigned partition, each on that shard's own connection, so an idle
//! consumer waits on the broker instead of spinning, and a busy shard's
//! data is not held back by an idle one. A shard's partitions are split
//! over up to `fetches_per_shard_max` fetches (each partition is in one:
//! its next offset is known only once its last fetch is answered). A poll
//! returns what the first fetch to complete brought, and first sends that
//! fetch's successor from the new positions (prefetch), so the broker reads
//! the next data while the application handles this. A fetch answered
//! after a `seek` is discarded for the partitions moved.
//!
//! Every fetch answer carries each partition's high watermark; the
//! consumer keeps the highest it saw, so [`Consumer::lag`] (high watermark
//! minus position) costs no request. [`Consumer::refresh_high_watermarks`]
//! asks the broker when a fresh figure matters more (before the first
//! fetch, or to catch up to "now").

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use protocol::api::{FetchPartition, FetchRequest, FetchTopic, OffsetSpec, Request, Response};
use protocol::types::Offset;

use crate::client::{Client, unexpected};
use crate::conn::check;
use crate::error::{ClientError, Result};
use crate::record::{ConsumerRecord, decode_batch};

/// Keeps the highest high watermark seen for `partition`.
fn raise(high_watermarks: &mut BTreeMap<u32, Offset>, partition: u32, high_watermark: Offset) {
    let seen = high_watermarks.entry(partition).or_insert(high_watermark);
    *seen = (*seen).max(high_watermark);
}

/// High watermark minus position, per partition with a known high watermark.
pub(crate) fn lag(positions: &BTreeMap<u32, Offset>, high_watermarks: &BTreeMap<u32, Offset>) -> BTreeMap<u32, u64> {
    positions
        .iter()
        .filter_map(|(&p, &position)| high_watermarks.get(&p).map(|hw| (p, hw.0.saturating_sub(position.0))))
        .collect()
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The most one fetch returns.
    pub fetch_bytes_max: u32,
    /// The most one fetch returns per partition.
    pub partition_fetch_bytes_max: u32,
    /// The broker answers as soon as this many bytes are available...
    pub fetch_bytes_min: u32,
    /// ...or after this long.
    pub fetch_wait_max: Duration,
    /// Fetches in flight at once per broker shard, each for its own share
    /// of the shard's assigned partitions.
    pub fetches_per_shard_max: usize,
    /// How long a fetch may take beyond `fetch_wait_max` before the broker
    /// is given up on (a frozen or cut-off leader answers nothing); the
    /// consumer then learns the leader anew.
    pub request_timeout: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            fetch_bytes_max: 8 << 20,
            partition_fetch_bytes_max: 4 << 20,
            fetch_bytes_min: 1,
            fetch_wait_max: Duration::from_millis(500),
            fetches_per_shard_max: 2,
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// Where to start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    Earliest,
    Latest,
    Offset(Offset),
    /// The first record at or after this time (ms since the Unix epoch).
    Timestamp(i64),
}

/// A shard, and which of its fetches (its share of the shard's partitions).
type Lane = (crate::client::Route, usize);

type FetchDone = ((Lane, u64), Vec<(u32, Offset)>, Duration, Result<Response>);

/// Fetch latencies kept for [`Consumer::drain_fetch_latencies`] at most.
const FETCH_LATENCIES_MAX: usize = 1 << 16;

pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    topic: String,
    /// Next offset to read, per assigned partition.
    positions: BTreeMap<u32, Offset>,
    /// The highest high watermark seen per partition, from fetch answers
    /// and [`Consumer::refresh_high_watermarks`].
    high_watermarks: BTreeMap<u32, Offset>,
    buffered: VecDeque<ConsumerRecord>,
    in_flight: FuturesUnordered<Pin<Box<dyn Future<Output = FetchDone> + Send>>>,
    /// Lanes with a fetch in flight for the current positions. A seek
    /// starts a new generation: fetches sent before it no longer hold
    /// their lanes (their answers are discarded where stale), so the new
    /// positions are fetched at once, not after a long poll ends.
    busy: HashSet<(Lane, u64)>,
    generation: u64,
    /// Request-to-response time of fetches answered since the last drain.
    fetch_latencies: Vec<Duration>,
    /// Rotates which partition comes first in a fetch, so a response that
    /// fills up on the first partitions does not starve the last ones.
    rotation: usize,
}

impl Consumer {
    /// A consumer of `partitions` of `topic` (all of them when empty), each
    /// starting at `from`.
    pub async fn assign(
        client: Client,
        config: ConsumerConfig,
        topic: &str,
        partitions: &[u32],
        from: StartFrom,
    ) -> Result<Consumer> {
        let count = client.partitions(topic).await?;
        let parts: Vec<u32> = if partitions.is_empty() { (0..count).collect() } else { partitions.to_vec() };
        if let Some(p) = parts.iter().find(|&&p| p >= count) {
            return Err(ClientError::InvalidArgument(format!("topic {topic} has {count} partitions; {p} is not one")));
        }
        let mut consumer = Consumer {
            client,
            config,
            topic: topic.to_owned(),
            positions: BTreeMap::new(),
            high_watermarks: BTreeMap::new(),
            buffered: VecDeque::new(),
            in_flight: FuturesUnordered::new(),
            busy: HashSet::new(),
            generation: 0,
            fetch_latencies: Vec::new(),
            rotation: 0,
        };
        for p in parts {
            consumer.positions.insert(p, Offset(0));
        }
        consumer.seek_all(from).await?;
        Ok(consumer)
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The next offset each assigned partition will be read from.
    pub fn positions(&self) -> &BTreeMap<u32, Offset> {
        &self.positions
    }

    /// The highest high watermark seen per partition (the offset the next
    /// readable record will get), by fetches or the last
    /// [`Consumer::refresh_high_watermarks`]; a partition is missing until
    /// one of them answered for it.
    pub fn high_watermarks(&self) -> &BTreeMap<u32, Offset> {
        &self.high_watermarks
    }

    /// Records each partition is behind its high watermark as last seen
    /// (0 once caught up), for partitions whose high watermark is known.
    pub fn lag(&self) -> BTreeMap<u32, u64> {
        lag(&self.positions, &self.high_watermarks)
    }

    /// Asks the broker for every assigned partition's high watermark now,
    /// and returns them.
    pub async fn refresh_high_watermarks(&mut self) -> Result<BTreeMap<u32, Offset>> {
        let parts: Vec<u32> = self.positions.keys().copied().collect();
        let latest = self.client.list_offsets(&self.topic, &parts, OffsetSpec::Latest).await?;
        for &(p, o) in &latest {
            self.observe_high_watermark(p, o);
        }
        Ok(latest.into_iter().collect())
    }

    fn observe_high_watermark(&mut self, partition: u32, high_watermark: Offset) {
        if self.positions.contains_key(&partition) {
            raise(&mut self.high_watermarks, partition, high_watermark);
        }
    }

    pub async fn seek_all(&mut self, from: StartFrom) -> Result<()> {
        let parts: Vec<u32> = self.positions.keys().copied().collect();
        let offsets = match from {
            StartFrom::Offset(o) => parts.iter().map(|&p| (p, o)).collect(),
            StartFrom::Earliest => self.client.list_offsets(&self.topic, &parts, OffsetSpec::Earliest).await?,
            StartFrom::Latest => self.client.list_offsets(&self.topic, &parts, OffsetSpec::Latest).await?,
            StartFrom::Timestamp(t) => self.client.list_offsets(&self.topic, &parts, OffsetSpec::Timestamp(t)).await?,
        };
        for (p, o) in offsets {
            self.positions.insert(p, o);
        }
        self.buffered.clear();
        self.generation += 1;
        Ok(())
    }

    /// Whether records fetched are waiting for the next poll (a poll that
    /// failed keeps the other partitions' records).
    pub(crate) fn has_buffered(&self) -> bool {
        !self.buffered.is_empty()
    }

    /// The positions the records returned so far reached: a partition with
    /// records buffered (fetched, not yet returned) is at its first.
    pub(crate) fn returned_positions(&self) -> BTreeMap<u32, Offset> {
        let mut out = self.positions.clone();
        for r in self.buffered.iter().rev() {
            out.insert(r.partition, r.offset);
        }
        out
    }

    pub fn seek(&mut self, partition: u32, offset: Offset) {
        assert!(self.positions.contains_key(&partition), "partition {partition} is not assigned");
        self.positions.insert(partition, offset);
        self.buffered.retain(|r| r.partition != partition);
        self.generation += 1;
    }

    /// Records available now, or after a fetch that waits up to `fetch_wait_max`
    /// for some to arrive; empty if none did. Per partition, records come in
    /// offset order, never repeated; offsets may skip where the log has gaps
    /// (compaction, control batches).
    pub async fn poll(&mut self) -> Result<Vec<ConsumerRecord>> {
        if self.buffered.is_empty() {
            self.fetch().await?;
        }
        Ok(self.buffered.drain(..).collect())
    }

    /// Assigned partitions that failed with `OFFSET_OUT_OF_RANGE` can be
    /// moved with [`Consumer::seek`]; the others keep being read.
    pub fn assigned(&self) -> impl Iterator<Item = u32> + '_ {
        self.positions.keys().copied()
    }

    /// How long each fetch answered since the last call took, request to
    /// response (at most 65,536: past that the list starts over).
    pub fn drain_fetch_latencies(&mut self) -> std::vec::Drain<'_, Duration> {
        self.fetch_latencies.drain(..)
    }

    /// Starts a fetch for every lane without one in flight.
    fn start_fetches(&mut self) {
        let mut shards: BTreeMap<crate::client::Route, Vec<(u32, Offset)>> = BTreeMap::new();
        for (&p, &o) in &self.positions {
            shards.entry(self.client.route_of(&self.topic, p)).or_default().push((p, o));
        }
        self.rotation = self.rotation.wrapping_add(1);
        let lanes_max = self.config.fetches_per_shard_max.max(1);
        for (shard, parts) in shards {
            let lanes = lanes_max.min(parts.len());
            for lane in 0..lanes {
                if !self.busy.insert(((shard, lane), self.generation)) {
                    continue;
                }
                let mut parts: Vec<(u32, Offset)> =
                    parts.iter().enumerate().filter(|(i, _)| i % lanes == lane).map(|(_, &p)| p).collect();
                let turn = self.rotation % parts.len();
                parts.rotate_left(turn);
                self.start_fetch(((shard, lane), self.generation), parts);
            }
        }
    }

    fn start_fetch(&mut self, lane: (Lane, u64), parts: Vec<(u32, Offset)>) {
        let config = &self.config;
        let request = Request::Fetch(FetchRequest {
            max_wait_ms: config.fetch_wait_max.as_millis().min(u128::from(u32::MAX)) as u32,
            min_bytes: config.fetch_bytes_min,
            max_bytes: config.fetch_bytes_max,
            topics: vec![FetchTopic {
                name: self.topic.clone(),
                partitions: parts
                    .iter()
                    .map(|&(partition, offset)| FetchPartition {
                        partition,
                        offset,
                        max_bytes: config.partition_fetch_bytes_max,
                    })
                    .collect(),
            }],
        });
        let client = self.client.clone();
        let bound = config.fetch_wait_max + config.request_timeout;
        self.in_flight.push(Box::pin(async move {
            let started = std::time::Instant::now();
            let response = match client.connection_for(lane.0.0).await {
                Ok(c) => tokio::time::timeout(bound, c.call(&request))
                    .await
                    .unwrap_or_else(|_| Err(ClientError::Timeout(bound.as_millis() as u64))),
                Err(e) => Err(e),
            };
            (lane, parts, started.elapsed(), response)
        }));
    }

    /// Starts fetches for idle lanes, applies the first to complete, and
    /// sends the next fetches from the new positions before returning.
    async fn fetch(&mut self) -> Result<()> {
        self.start_fetches();
        let result = self.apply_next().await;
        self.start_fetches();
        result
    }

    async fn apply_next(&mut self) -> Result<()> {
        // A fetch sent before the last seek is stale: its lane was freed
        // and fetched again, so wait for the fetches of this generation.
        let (requested, took, response) = loop {
            let Some((lane, requested, took, response)) = self.in_flight.next().await else { return Ok(()) };
            self.busy.remove(&lane);
            if lane.1 == self.generation {
                break (requested, took, response);
            }
        };
        if self.fetch_latencies.len() >= FETCH_LATENCIES_MAX {
            self.fetch_latencies.clear();
        }
        self.fetch_latencies.push(took);
        let topics = match response {
            Ok(Response::Fetch(t)) => t,
            Ok(other) => return Err(unexpected(&other)),
            Err(e) => {
                // The leader died or moved: follow it before the next poll.
                if crate::client::is_routing_error(&e) {
                    self.client.refresh(&self.topic).await;
                }
                return Err(e);
            }
        };
        // One partition's error does not hold back the others: their records
        // are kept for the next poll, and the first error is returned.
        let mut first_error = None;
        let mut routing_error = false;
        for t in topics {
            for p in t.partitions {
                let topic = &self.topic;
                let Some(position) = self.positions.get_mut(&p.partition) else { continue };
                // A seek since the request makes its answer stale.
                if !requested.contains(&(p.partition, *position)) {
                    continue;
                }
                if let Err(e) = check(p.error, || format!("fetching {topic}/{} at offset {position}", p.partition)) {
                    routing_error |= crate::client::is_routing_error(&e);
                    first_error.get_or_insert(e);
                    continue;
                }
                raise(&mut self.high_watermarks, p.partition, p.high_watermark);
                for batch in &p.batches {
                    let records = decode_batch(p.partition, batch, *position).map_err(|e| {
                        ClientError::Protocol(format!("corrupt batch from {topic}/{}: {e}", p.partition))
                    })?;
                    for r in records {
                        // Offsets only go forward; they may skip (compaction
                        // and control batches leave gaps).
                        if r.offset < *position {
                            return Err(ClientError::Protocol(format!(
                                "{topic}/{}: offset {} after {position}: out of order",
                                p.partition, r.offset
                            )));
                        }
                        *position = r.offset.next();
                        self.buffered.push_back(r);
                    }
                    // A batch may end past its last record (a compacted batch
                    // keeps its offset range): go past the whole batch.
                    if let Ok(header) = protocol::batch::BatchHeader::decode(batch) {
                        *position = (*position).max(header.next_offset());
                    }
                }
            }
        }
        if routing_error {
            self.client.refresh(&self.topic).await;
        }
        first_error.map_or(Ok(()), Err)
    }
}
