//! Turns decoded requests into responses by routing each partition's work
//! to the shard that owns it. Request-level failures become an error frame;
//! partition-level ones ride in the response next to the successes.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use engine::types::Offset;
use futures::StreamExt;
use futures::channel::oneshot;
use futures::stream::FuturesUnordered;
use protocol::ErrorCode;
use protocol::api::{
    Acks, ApiKey, ApiVersions, FetchPartitionResult, FetchRequest, FetchTopicResult, HandshakeResponse,
    ListOffsetsPartitionResult, ListOffsetsTopic, ListOffsetsTopicResult, OffsetSpec, ProducePartitionResult,
    ProduceRequest, ProduceTopicResult, Response, TopicSummary,
};
use protocol::frame::PROTOCOL_VERSION;

use crate::shard::partitions_until as until;
use crate::shard::{AppendOutcome, FetchItem, FetchOutcome, OpError, Shard, ShardMsg, shutting_down};

/// The longest a produce waits when its request says 0.
const PRODUCE_TIMEOUT_MS_DEFAULT: u32 = 30_000;

pub type Reply = Result<Response, OpError>;

pub fn handshake(shard: &Shard) -> Response {
    Response::Handshake(HandshakeResponse {
        protocol_version: PROTOCOL_VERSION,
        server: format!("cairn-server {}", env!("CARGO_PKG_VERSION")),
        shards: shard.shards as u32,
        shard: shard.id as u32,
        shard_ports: shard.shared.shard_ports.get().cloned().unwrap_or_default(),
        apis: ApiKey::ALL
            .iter()
            .map(|&k| {
                let (min, max) = k.versions();
                ApiVersions { api_key: k as u16, min, max }
            })
            .collect(),
    })
}

pub fn list_topics(shard: &Shard) -> Response {
    Response::ListTopics(
        shard.topic_list().into_iter().map(|t| TopicSummary { name: t.name, partitions: t.partitions }).collect(),
    )
}

pub async fn describe_topic(shard: &Rc<Shard>, name: String) -> Reply {
    let meta =
        shard.topic(&name).ok_or_else(|| (ErrorCode::UNKNOWN_TOPIC, format!("topic {name:?} does not exist")))?;
    let mut by_owner: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    for p in 0..meta.partitions {
        by_owner.entry(shard.owner(&name, p)).or_default().push(p);
    }
    let mut partitions = Vec::with_capacity(meta.partitions as usize);
    for (owner, parts) in by_owner {
        if owner == shard.id {
            partitions.extend(shard.describe_local(&name, &parts));
        } else {
            let (reply, rx) = oneshot::channel();
            shard.send(owner, ShardMsg::Describe { topic: name.clone(), partitions: parts, reply }).await;
            partitions.extend(rx.await.map_err(|_| shutting_down())?);
        }
    }
    partitions.sort_by_key(|p| p.partition);
    Ok(Response::DescribeTopic(protocol::api::DescribeTopicResponse {
        name,
        config: protocol::api::TopicConfig {
            retention_ms: meta.retention_ms,
            retention_bytes: meta.retention_bytes.map(|b| b as i64),
        },
        partitions,
    }))
}

type Pending = Pin<Box<dyn Future<Output = AppendOutcome>>>;

/// Starts every append of a produce request, in request order, before the
/// connection reads its next request: local appends start at once, remote
/// ones are queued on the owner's channel in order (waiting here when it is
/// full, which stops this connection's reads: backpressure). Returns the
/// future of the response.
pub async fn start_produce(shard: &Rc<Shard>, req: ProduceRequest) -> impl Future<Output = Option<Response>> + use<> {
    let mut started: Vec<(String, Vec<(u32, Pending)>)> = Vec::with_capacity(req.topics.len());
    for topic in req.topics {
        let mut parts: Vec<(u32, Pending)> = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let owner = shard.owner(&topic.name, p.partition);
            let pending: Pending = if let Err(e) = shard.check_partition(&topic.name, p.partition) {
                Box::pin(std::future::ready(Err(e)))
            } else if owner == shard.id {
                Box::pin(shard.append_local(&topic.name, p.partition, p.batch))
            } else {
                let (reply, rx) = oneshot::channel();
                let msg = ShardMsg::Append { topic: topic.name.clone(), partition: p.partition, batch: p.batch, reply };
                shard.send(owner, msg).await;
                Box::pin(async move { rx.await.unwrap_or_else(|_| Err(shutting_down())) })
            };
            parts.push((p.partition, pending));
        }
        started.push((topic.name, parts));
    }
    let timeout_ms = if req.timeout_ms == 0 { PRODUCE_TIMEOUT_MS_DEFAULT } else { req.timeout_ms };
    let deadline = Instant::now() + Duration::from_millis(u64::from(timeout_ms));
    let acks = req.acks;
    async move {
        let mut topics = Vec::with_capacity(started.len());
        for (name, parts) in started {
            let mut results = Vec::with_capacity(parts.len());
            for (partition, pending) in parts {
                // The append itself runs on in its own task past the timeout.
                let outcome = until(deadline, pending).await.unwrap_or_else(|| {
                    Err((ErrorCode::REQUEST_TIMED_OUT, format!("not acknowledged within {timeout_ms} ms")))
                });
                let (error, base_offset) = match outcome {
                    Ok(offset) => (ErrorCode::NONE, offset),
                    Err((code, message)) => {
                        tracing::debug!(topic = %name, partition, %code, message, "produce failed");
                        (code, Offset(0))
                    }
                };
                results.push(ProducePartitionResult { partition, error, base_offset });
            }
            topics.push(ProduceTopicResult { name, partitions: results });
        }
        (acks == Acks::Leader).then_some(Response::Produce(topics))
    }
}

/// Where one partition of a request sits in the response.
struct Slot {
    topic: usize,
    partition: usize,
}

/// Long polling: reads every partition at once; if less than `min_bytes`
/// came back, asks the owners again to wait for data (until the deadline)
/// and answers with the first owner that has some.
/// Refuses a fetch that names a partition twice: its budget and its
/// answer are per partition.
pub fn check_fetch(req: &FetchRequest) -> Result<(), OpError> {
    let mut seen = std::collections::HashSet::new();
    for t in &req.topics {
        for p in &t.partitions {
            if !seen.insert((t.name.as_str(), p.partition)) {
                return Err((ErrorCode::INVALID_REQUEST, format!("fetch names {}/{} twice", t.name, p.partition)));
            }
        }
    }
    Ok(())
}

pub async fn fetch(shard: &Rc<Shard>, req: FetchRequest) -> Reply {
    check_fetch(&req)?;
    let limits = &shard.config.limits;
    let wait = Duration::from_millis(u64::from(req.max_wait_ms.min(limits.fetch_wait_ms_max)));
    let deadline = Instant::now() + wait;
    let max_bytes = (req.max_bytes as usize).clamp(1, limits.fetch_bytes_max);
    let mut results: Vec<FetchTopicResult> = Vec::with_capacity(req.topics.len());
    let mut outcomes: Vec<Vec<Option<FetchOutcome>>> = Vec::with_capacity(req.topics.len());
    let mut by_owner: BTreeMap<usize, (Vec<Slot>, Vec<FetchItem>)> = BTreeMap::new();
    for (ti, topic) in req.topics.iter().enumerate() {
        outcomes.push(vec![None; topic.partitions.len()]);
        for (pi, p) in topic.partitions.iter().enumerate() {
            if let Err(e) = shard.check_partition(&topic.name, p.partition) {
                outcomes[ti][pi] = Some(FetchOutcome::failed(e));
                continue;
            }
            let entry = by_owner.entry(shard.owner(&topic.name, p.partition)).or_default();
            entry.0.push(Slot { topic: ti, partition: pi });
            entry.1.push(FetchItem {
                topic: topic.name.clone(),
                partition: p.partition,
                offset: p.offset,
                max_bytes: p.max_bytes.min(max_bytes as u32),
            });
        }
    }
    let mut total = 0usize;
    let mut any_error = false;
    for (owner, (slots, items)) in &by_owner {
        for (slot, outcome) in slots.iter().zip(fetch_on(shard, *owner, items.clone(), None, max_bytes).await) {
            total += outcome.bytes();
            any_error |= outcome.error.is_some();
            outcomes[slot.topic][slot.partition] = Some(outcome);
        }
    }
    if total < req.min_bytes as usize && !any_error && !wait.is_zero() && !by_owner.is_empty() {
        let mut waits: FuturesUnordered<_> = by_owner
            .into_iter()
            .map(|(owner, (slots, items))| async move {
                (slots, fetch_on(shard, owner, items, Some(deadline), max_bytes).await)
            })
            .collect();
        while let Some((slots, outs)) = waits.next().await {
            let found = outs.iter().any(|o| o.bytes() > 0 || o.error.is_some());
            for (slot, outcome) in slots.iter().zip(outs) {
                outcomes[slot.topic][slot.partition] = Some(outcome);
            }
            if found {
                break;
            }
        }
    }
    let mut used = 0usize;
    for (topic, outs) in req.topics.into_iter().zip(outcomes) {
        let mut partitions = Vec::with_capacity(outs.len());
        for (p, outcome) in topic.partitions.iter().zip(outs) {
            let outcome = outcome.expect("every partition has an outcome");
            let (error, _message) = outcome.error.unwrap_or((ErrorCode::NONE, String::new()));
            // The response's byte budget, keeping at least one batch overall.
            let mut batches = Vec::new();
            for b in outcome.batches {
                if used > 0 && used + b.len() > max_bytes {
                    break;
                }
                used += b.len();
                batches.push(b);
            }
            partitions.push(FetchPartitionResult {
                partition: p.partition,
                error,
                high_watermark: outcome.high_watermark,
                log_start_offset: outcome.log_start_offset,
                batches,
            });
        }
        results.push(FetchTopicResult { name: topic.name, partitions });
    }
    Ok(Response::Fetch(results))
}

async fn fetch_on(
    shard: &Rc<Shard>,
    owner: usize,
    items: Vec<FetchItem>,
    wait_until: Option<Instant>,
    bytes_max: usize,
) -> Vec<FetchOutcome> {
    let n = items.len();
    if owner == shard.id {
        return shard.fetch_local(items, wait_until, bytes_max).await;
    }
    let (reply, rx) = oneshot::channel();
    shard.send(owner, ShardMsg::Fetch { items, wait_until, bytes_max, reply }).await;
    rx.await.unwrap_or_else(|_| vec![FetchOutcome::failed(shutting_down()); n])
}

type OffsetItems = Vec<(String, u32, OffsetSpec)>;

pub async fn list_offsets(shard: &Rc<Shard>, topics: Vec<ListOffsetsTopic>) -> Response {
    let mut results: Vec<ListOffsetsTopicResult> = topics
        .iter()
        .map(|t| ListOffsetsTopicResult {
            name: t.name.clone(),
            partitions: t
                .partitions
                .iter()
                .map(|&(p, _)| ListOffsetsPartitionResult { partition: p, error: ErrorCode::NONE, offset: Offset(0) })
                .collect(),
        })
        .collect();
    let mut by_owner: BTreeMap<usize, (Vec<Slot>, OffsetItems)> = BTreeMap::new();
    for (ti, t) in topics.into_iter().enumerate() {
        for (pi, (p, spec)) in t.partitions.into_iter().enumerate() {
            if let Err((code, _)) = shard.check_partition(&t.name, p) {
                results[ti].partitions[pi].error = code;
                continue;
            }
            let entry = by_owner.entry(shard.owner(&t.name, p)).or_default();
            entry.0.push(Slot { topic: ti, partition: pi });
            entry.1.push((t.name.clone(), p, spec));
        }
    }
    for (owner, (slots, items)) in by_owner {
        let n = items.len();
        let outs = if owner == shard.id {
            shard.list_offsets_local(items).await
        } else {
            let (reply, rx) = oneshot::channel();
            shard.send(owner, ShardMsg::ListOffsets { items, reply }).await;
            rx.await.unwrap_or_else(|_| vec![Err(shutting_down()); n])
        };
        for (slot, out) in slots.into_iter().zip(outs) {
            let r = &mut results[slot.topic].partitions[slot.partition];
            match out {
                Ok(o) => r.offset = o,
                Err((code, _)) => r.error = code,
            }
        }
    }
    Response::ListOffsets(results)
}
