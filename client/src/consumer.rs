//! The consumer: reads assigned partitions from positions it keeps itself
//! (group membership and committed offsets come with consumer groups).
//!
//! It keeps one long-polling fetch in flight per broker shard that owns an
//! assigned partition, each on that shard's own connection, so an idle
//! consumer waits on the broker instead of spinning, and a busy shard's
//! data is not held back by an idle one. A poll returns what the first
//! fetch to complete brought; the others stay in flight for the next poll.
//! A fetch answered after a `seek` is discarded for the partitions moved.

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
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            fetch_bytes_max: 8 << 20,
            partition_fetch_bytes_max: 4 << 20,
            fetch_bytes_min: 1,
            fetch_wait_max: Duration::from_millis(500),
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

type FetchDone = (Option<u32>, Vec<(u32, Offset)>, Result<Response>);

pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    topic: String,
    /// Next offset to read, per assigned partition.
    positions: BTreeMap<u32, Offset>,
    buffered: VecDeque<ConsumerRecord>,
    in_flight: FuturesUnordered<Pin<Box<dyn Future<Output = FetchDone> + Send>>>,
    /// Shards with a fetch in flight.
    busy: HashSet<Option<u32>>,
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
            buffered: VecDeque::new(),
            in_flight: FuturesUnordered::new(),
            busy: HashSet::new(),
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
        Ok(())
    }

    pub fn seek(&mut self, partition: u32, offset: Offset) {
        assert!(self.positions.contains_key(&partition), "partition {partition} is not assigned");
        self.positions.insert(partition, offset);
        self.buffered.retain(|r| r.partition != partition);
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

    /// Starts a fetch for every shard without one in flight, then applies
    /// the first to complete.
    async fn fetch(&mut self) -> Result<()> {
        let mut groups: BTreeMap<Option<u32>, Vec<(u32, Offset)>> = BTreeMap::new();
        for (&p, &o) in &self.positions {
            groups.entry(self.client.shard_of(&self.topic, p)).or_default().push((p, o));
        }
        self.rotation = self.rotation.wrapping_add(1);
        for (shard, mut parts) in groups {
            if !self.busy.insert(shard) {
                continue;
            }
            let turn = self.rotation % parts.len();
            parts.rotate_left(turn);
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
            self.in_flight.push(Box::pin(async move {
                let response = match client.connection_for(shard).await {
                    Ok(c) => c.call(&request).await,
                    Err(e) => Err(e),
                };
                (shard, parts, response)
            }));
        }
        let Some((shard, requested, response)) = self.in_flight.next().await else { return Ok(()) };
        self.busy.remove(&shard);
        let topics = match response? {
            Response::Fetch(t) => t,
            other => return Err(unexpected(&other)),
        };
        // One partition's error does not hold back the others: their records
        // are kept for the next poll, and the first error is returned.
        let mut first_error = None;
        for t in topics {
            for p in t.partitions {
                let topic = &self.topic;
                let Some(position) = self.positions.get_mut(&p.partition) else { continue };
                // A seek since the request makes its answer stale.
                if !requested.contains(&(p.partition, *position)) {
                    continue;
                }
                if let Err(e) = check(p.error, || format!("fetching {topic}/{} at offset {position}", p.partition)) {
                    first_error.get_or_insert(e);
                    continue;
                }
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
        first_error.map_or(Ok(()), Err)
    }
}
