//! The consumer: reads assigned partitions from positions it keeps itself
//! (group membership and committed offsets come with consumer groups).
//! Each poll is one long-polling fetch for all assigned partitions, so an
//! idle consumer waits on the broker instead of spinning.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

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

pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    topic: String,
    /// Next offset to read, per assigned partition.
    positions: BTreeMap<u32, Offset>,
    buffered: VecDeque<ConsumerRecord>,
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
        let mut consumer =
            Consumer { client, config, topic: topic.to_owned(), positions: BTreeMap::new(), buffered: VecDeque::new() };
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
    /// offset order with no gaps or repeats.
    pub async fn poll(&mut self) -> Result<Vec<ConsumerRecord>> {
        if self.buffered.is_empty() {
            self.fetch().await?;
        }
        Ok(self.buffered.drain(..).collect())
    }

    async fn fetch(&mut self) -> Result<()> {
        let config = &self.config;
        let request = Request::Fetch(FetchRequest {
            max_wait_ms: config.fetch_wait_max.as_millis().min(u128::from(u32::MAX)) as u32,
            min_bytes: config.fetch_bytes_min,
            max_bytes: config.fetch_bytes_max,
            topics: vec![FetchTopic {
                name: self.topic.clone(),
                partitions: self
                    .positions
                    .iter()
                    .map(|(&partition, &offset)| FetchPartition {
                        partition,
                        offset,
                        max_bytes: config.partition_fetch_bytes_max,
                    })
                    .collect(),
            }],
        });
        let topics = match self.client.call(&request).await? {
            Response::Fetch(t) => t,
            other => return Err(unexpected(&other)),
        };
        for t in topics {
            for p in t.partitions {
                let topic = &self.topic;
                check(p.error, || format!("fetching {topic}/{}", p.partition))?;
                let Some(position) = self.positions.get_mut(&p.partition) else { continue };
                for batch in &p.batches {
                    let records = decode_batch(p.partition, batch, *position).map_err(|e| {
                        ClientError::Protocol(format!("corrupt batch from {topic}/{}: {e}", p.partition))
                    })?;
                    for r in records {
                        // Stored batches are dense and ordered: anything else is a broker bug.
                        if r.offset != *position {
                            return Err(ClientError::Protocol(format!(
                                "{topic}/{}: expected offset {position}, got {}",
                                p.partition, r.offset
                            )));
                        }
                        *position = r.offset.next();
                        self.buffered.push_back(r);
                    }
                }
            }
        }
        Ok(())
    }
}
