//! The native protocol over the service layer: each decoded request
//! becomes a typed service call, each typed result a response in the
//! version the request was sent in, each [`ServiceError`] a stable code.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use engine::rt::Runtime;
use engine::types::{Offset, Timestamp};
use protocol::ErrorCode;
use protocol::api::{
    self, Acks, ApiVersions, ConfigOp, FetchPartitionResult, FetchTopicResult, HandshakeResponse,
    ListOffsetsPartitionResult, ListOffsetsTopicResult, OffsetSpec, ProducePartitionResult, ProduceTopicResult,
    RecoveredPartition, Request, Response, TopicSummary,
};
use protocol::frame::{PROTOCOL_VERSION, error_response};

use super::{Outgoing, Tx, api_name};
use crate::service::admin::ConfigChange;
use crate::service::fetch::{FetchPartition, FetchRequest};
use crate::service::offsets::OffsetQuery;
use crate::service::produce::{ProducePartition, ProduceRequest};
use crate::service::{ConnContext, ServiceError};
use crate::shard::Shard;
use crate::util::budget::Permit;

/// The longest a produce waits when its request says 0.
const PRODUCE_TIMEOUT_MS_DEFAULT: u32 = 30_000;

/// The stable native code of a service error.
pub fn code(e: &ServiceError) -> ErrorCode {
    match e {
        ServiceError::UnknownTopic(_) => ErrorCode::UNKNOWN_TOPIC,
        ServiceError::UnknownPartition { .. } => ErrorCode::UNKNOWN_PARTITION,
        ServiceError::InvalidTopicName(_) => ErrorCode::INVALID_TOPIC_NAME,
        ServiceError::TopicExists(_) => ErrorCode::TOPIC_ALREADY_EXISTS,
        ServiceError::InvalidPartitions(_) => ErrorCode::INVALID_PARTITIONS,
        ServiceError::InvalidConfig(_) => ErrorCode::INVALID_CONFIG,
        ServiceError::InvalidBatch(_) => ErrorCode::INVALID_BATCH,
        ServiceError::BatchTooLarge(_) => ErrorCode::BATCH_TOO_LARGE,
        ServiceError::InvalidTimestamp(_) => ErrorCode::INVALID_TIMESTAMP,
        ServiceError::InvalidRecord(_) => ErrorCode::INVALID_RECORD,
        ServiceError::OffsetOutOfRange(_) => ErrorCode::OFFSET_OUT_OF_RANGE,
        ServiceError::DiskFull(_) => ErrorCode::DISK_FULL,
        ServiceError::Storage(_) => ErrorCode::STORAGE_ERROR,
        ServiceError::Truncated(_) => ErrorCode::LOG_TRUNCATED,
        ServiceError::PartitionUnavailable(_) => ErrorCode::PARTITION_UNAVAILABLE,
        ServiceError::InvalidRequest(_) => ErrorCode::INVALID_REQUEST,
        ServiceError::Timeout(_) => ErrorCode::REQUEST_TIMED_OUT,
        ServiceError::NotLeader { .. } => ErrorCode::NOT_LEADER,
        ServiceError::UnknownBroker(_) => ErrorCode::UNKNOWN_BROKER,
        ServiceError::ReassignmentInProgress(_) => ErrorCode::REASSIGNMENT_IN_PROGRESS,
        ServiceError::BrokerIdInUse(_) => ErrorCode::BROKER_ID_IN_USE,
        ServiceError::LeaderNotAvailable(_) => ErrorCode::LEADER_NOT_AVAILABLE,
        ServiceError::InvalidReplicationFactor(_) => ErrorCode::INVALID_REPLICATION_FACTOR,
        ServiceError::ShuttingDown => ErrorCode::SHUTTING_DOWN,
        ServiceError::Group { code, .. } => *code,
    }
}

fn code_of<T>(r: &Result<T, ServiceError>) -> ErrorCode {
    r.as_ref().err().map_or(ErrorCode::NONE, code)
}

/// Where a request's answer goes.
pub struct Reply {
    pub tx: Tx,
    pub request_id: u32,
    pub version: u16,
}

impl Reply {
    fn send(self, outcome: Result<Response, ServiceError>, permit: Permit) {
        let frame = match outcome {
            Ok(response) => response.encode_version(self.request_id, self.version),
            Err(e) => error_response(self.request_id, code(&e), &e.to_string()),
        };
        let _ = self.tx.unbounded_send(Outgoing { frame, _permit: Some(permit) });
    }
}

/// Starts a request's work. A produce starts its appends before this
/// returns (the next request must not overtake them); everything else runs
/// in a task of its own.
pub async fn start<R: Runtime>(
    shard: &Rc<Shard<R>>,
    ctx: &ConnContext,
    reply: Reply,
    request: Request,
    permit: Permit,
) {
    let api = api_name(&request);
    let started = Instant::now();
    let finish = {
        let shard = shard.clone();
        move |reply: Reply, outcome: Result<Response, ServiceError>, permit: Permit| {
            shard.metrics.request(api, started.elapsed(), outcome.is_err());
            reply.send(outcome, permit);
        }
    };
    match request {
        Request::Handshake(_) => finish(reply, Ok(handshake(shard)), permit),
        Request::ListTopics => {
            let topics = shard.list_topics().into_iter().map(|(name, partitions)| TopicSummary { name, partitions });
            finish(reply, Ok(Response::ListTopics(topics.collect())), permit);
        }
        Request::Produce(p) => {
            let acks = p.acks;
            let timeout_ms = if p.timeout_ms == 0 { PRODUCE_TIMEOUT_MS_DEFAULT } else { p.timeout_ms };
            let mut names = Vec::with_capacity(p.topics.len());
            let mut partitions = Vec::new();
            for t in p.topics {
                let topic: Rc<str> = Rc::from(t.name.as_str());
                names.push((t.name, t.partitions.iter().map(|x| x.partition).collect::<Vec<_>>()));
                for x in t.partitions {
                    partitions.push(ProducePartition { topic: topic.clone(), partition: x.partition, batch: x.batch });
                }
            }
            let replicated_acks = match acks {
                Acks::None => crate::partition::Acks::None,
                Acks::Leader => crate::partition::Acks::Leader,
                Acks::All => crate::partition::Acks::All,
            };
            let request = ProduceRequest {
                timeout: Duration::from_millis(u64::from(timeout_ms)),
                acks: replicated_acks,
                // A version 1 client follows NOT_LEADER to the leader; an
                // older one has the batch carried there.
                forward: reply.version == 0,
                partitions,
            };
            let done = shard.produce(ctx, request).await;
            drop(shard.rt.spawn(async move {
                let mut results = done.await.into_iter();
                let topics = names
                    .into_iter()
                    .map(|(name, parts)| ProduceTopicResult {
                        name,
                        partitions: parts
                            .into_iter()
                            .map(|partition| {
                                let r = results.next().expect("one result per partition");
                                let leader = match &r {
                                    Err(ServiceError::NotLeader { leader: Some(node), epoch, .. }) => {
                                        Some(api::LeaderHint { node: *node, epoch: *epoch })
                                    }
                                    _ => None,
                                };
                                ProducePartitionResult {
                                    partition,
                                    error: code_of(&r),
                                    base_offset: r.unwrap_or(Offset(0)),
                                    leader,
                                }
                            })
                            .collect(),
                    })
                    .collect();
                match acks {
                    Acks::Leader | Acks::All => finish(reply, Ok(Response::Produce(topics)), permit),
                    Acks::None => drop(permit),
                }
            }));
        }
        Request::Fetch(f) => {
            let (shard2, ctx) = (shard.clone(), ctx.clone());
            drop(shard.rt.spawn(async move {
                let outcome = fetch(&shard2, &ctx, f).await;
                finish(reply, outcome, permit);
            }));
        }
        Request::ListOffsets(topics) => {
            let (shard2, ctx) = (shard.clone(), ctx.clone());
            drop(shard.rt.spawn(async move {
                let outcome = list_offsets(&shard2, &ctx, topics).await;
                finish(reply, Ok(outcome), permit);
            }));
        }
        Request::Group(g) => {
            let (shard2, ctx) = (shard.clone(), ctx.clone());
            drop(shard.rt.spawn(async move {
                let outcome = shard2.group_call(&ctx, g).await.map(Response::Group);
                finish(reply, outcome, permit);
            }));
        }
        Request::DescribeTopic { name } => {
            let shard2 = shard.clone();
            drop(shard.rt.spawn(async move {
                let outcome = shard2.describe_topic(&name).await.map(|d| Response::DescribeTopic(describe(d)));
                finish(reply, outcome, permit);
            }));
        }
        Request::CreateTopic(c) => {
            let (shard2, ctx) = (shard.clone(), ctx.clone());
            drop(shard.rt.spawn(async move {
                let configs: BTreeMap<String, String> = c.configs.into_iter().collect();
                let outcome = shard2.create_topic(&ctx, c.name, c.partitions, configs).await;
                finish(reply, outcome.map(|()| Response::CreateTopic), permit);
            }));
        }
        Request::DeleteTopic { name } => {
            let (shard2, ctx) = (shard.clone(), ctx.clone());
            drop(shard.rt.spawn(async move {
                let outcome = shard2.delete_topic(&ctx, name).await;
                finish(reply, outcome.map(|()| Response::DeleteTopic), permit);
            }));
        }
        Request::AlterTopicConfig { name, ops } => {
            let (shard2, ctx) = (shard.clone(), ctx.clone());
            drop(shard.rt.spawn(async move {
                let mut change = ConfigChange::default();
                for op in ops {
                    match op {
                        ConfigOp::Set { key, value } => {
                            change.set.insert(key, value);
                        }
                        ConfigOp::Delete { key } => change.delete.push(key),
                    }
                }
                let outcome = shard2.alter_topic_config(&ctx, name, change).await;
                finish(reply, outcome.map(|()| Response::AlterTopicConfig), permit);
            }));
        }
        Request::Metadata { topics } => {
            let shard2 = shard.clone();
            drop(shard.rt.spawn(async move {
                let answer = shard2.metadata(topics).await;
                finish(reply, Ok(Response::Metadata(answer)), permit);
            }));
        }
        Request::ElectLeader { name, partition, broker } => {
            let shard2 = shard.clone();
            drop(shard.rt.spawn(async move {
                let outcome = shard2.elect_leader(&name, partition, broker).await;
                finish(reply, outcome.map(|()| Response::ElectLeader), permit);
            }));
        }
        Request::ReassignPartition { name, partition, replicas } => {
            let shard2 = shard.clone();
            drop(shard.rt.spawn(async move {
                let outcome = shard2.reassign_partition(name, partition, replicas).await;
                finish(reply, outcome.map(|()| Response::ReassignPartition), permit);
            }));
        }
        Request::RemoveBroker { broker } => {
            let shard2 = shard.clone();
            drop(shard.rt.spawn(async move {
                let outcome = shard2.remove_broker(broker).await;
                finish(reply, outcome.map(|()| Response::RemoveBroker), permit);
            }));
        }
        Request::RecoverPartitions { name, partitions } => {
            let shard2 = shard.clone();
            drop(shard.rt.spawn(async move {
                let outcome = shard2.recover_partitions(&name, partitions).await.map(|parts| {
                    Response::RecoverPartitions(
                        parts
                            .into_iter()
                            .map(|(partition, r)| RecoveredPartition {
                                partition,
                                error: code_of(&r),
                                message: r.err().map(|e| e.to_string()).unwrap_or_default(),
                            })
                            .collect(),
                    )
                });
                finish(reply, outcome, permit);
            }));
        }
    }
}

fn handshake<R: Runtime>(shard: &Shard<R>) -> Response {
    Response::Handshake(HandshakeResponse {
        protocol_version: PROTOCOL_VERSION,
        server: format!("cairn-server {}", env!("CARGO_PKG_VERSION")),
        shards: shard.shards as u32,
        shard: shard.id.0 as u32,
        shard_ports: shard.shared.shard_ports.get().cloned().unwrap_or_default(),
        apis: api::ApiKey::ALL
            .iter()
            .map(|&k| {
                let (min, max) = k.versions();
                ApiVersions { api_key: k as u16, min, max }
            })
            .collect(),
    })
}

fn describe(d: crate::service::admin::TopicDescription) -> api::DescribeTopicResponse {
    api::DescribeTopicResponse {
        name: d.name,
        configs: d
            .config
            .into_iter()
            .map(|c| api::ConfigEntry {
                name: c.name.to_string(),
                value: c.value,
                source: match c.source {
                    crate::topic_config::ConfigSource::Default => api::ConfigSource::Default,
                    crate::topic_config::ConfigSource::Broker => api::ConfigSource::Broker,
                    crate::topic_config::ConfigSource::Topic => api::ConfigSource::Topic,
                },
            })
            .collect(),
        partitions: d
            .partitions
            .into_iter()
            .map(|p| api::PartitionDescription {
                partition: p.partition,
                shard: p.shard.0 as u32,
                error: p.error.as_ref().map_or(ErrorCode::NONE, code),
                log_start_offset: p.log_start_offset,
                high_watermark: p.high_watermark,
                log_end_offset: p.log_end_offset,
                size_bytes: p.size_bytes,
                cleanable_bytes: p.cleanable_bytes,
                dirty_bytes: p.dirty_bytes,
                last_clean_ms: p.last_clean_ms,
            })
            .collect(),
    }
}

async fn fetch<R: Runtime>(
    shard: &Rc<Shard<R>>,
    ctx: &ConnContext,
    f: api::FetchRequest,
) -> Result<Response, ServiceError> {
    let mut shape = Vec::with_capacity(f.topics.len());
    let mut partitions = Vec::new();
    for t in f.topics {
        let topic: Rc<str> = Rc::from(t.name.as_str());
        shape.push((t.name, t.partitions.iter().map(|p| p.partition).collect::<Vec<_>>()));
        for p in t.partitions {
            partitions.push(FetchPartition {
                topic: topic.clone(),
                partition: p.partition,
                offset: p.offset,
                max_bytes: p.max_bytes as usize,
            });
        }
    }
    let request = FetchRequest {
        max_wait: Duration::from_millis(u64::from(f.max_wait_ms)),
        min_bytes: f.min_bytes as usize,
        max_bytes: f.max_bytes as usize,
        partitions,
    };
    let mut fetched = shard.fetch(ctx, request).await?.into_iter();
    let topics = shape
        .into_iter()
        .map(|(name, parts)| FetchTopicResult {
            name,
            partitions: parts
                .into_iter()
                .map(|partition| {
                    let p = fetched.next().expect("one result per partition");
                    FetchPartitionResult {
                        partition,
                        error: p.error.as_ref().map_or(ErrorCode::NONE, code),
                        high_watermark: p.high_watermark,
                        log_start_offset: p.log_start_offset,
                        batches: p.batches,
                    }
                })
                .collect(),
        })
        .collect();
    Ok(Response::Fetch(topics))
}

async fn list_offsets<R: Runtime>(
    shard: &Rc<Shard<R>>,
    ctx: &ConnContext,
    topics: Vec<api::ListOffsetsTopic>,
) -> Response {
    let mut queries = Vec::new();
    for t in &topics {
        for &(p, spec) in &t.partitions {
            let query = match spec {
                OffsetSpec::Earliest => OffsetQuery::Earliest,
                OffsetSpec::Latest => OffsetQuery::Latest,
                OffsetSpec::Timestamp(t) => OffsetQuery::Timestamp(Timestamp(t)),
            };
            queries.push((t.name.clone(), p, query));
        }
    }
    let mut answers = shard.list_offsets(ctx, queries).await.into_iter();
    Response::ListOffsets(
        topics
            .into_iter()
            .map(|t| ListOffsetsTopicResult {
                name: t.name,
                partitions: t
                    .partitions
                    .into_iter()
                    .map(|(partition, _)| {
                        let a = answers.next().expect("one answer per partition");
                        ListOffsetsPartitionResult { partition, error: code_of(&a), offset: a.unwrap_or(Offset(0)) }
                    })
                    .collect(),
            })
            .collect(),
    )
}
