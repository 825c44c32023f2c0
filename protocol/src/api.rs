//! The requests and responses of the native protocol, version 0 of each API.
//! Every field is fixed-width little-endian, a string (`u16` length) or a
//! byte string / array (`u32` length or count); `docs/protocol.md` lists
//! them field by field. Optional numbers travel as `-1`.

use bytes::Bytes;

use crate::ErrorCode;
use crate::batch::{BATCH_HEADER_BYTES_MIN, BatchHeader};
use crate::codec::{DecodeError, Reader, Writer};
use crate::frame::{RequestHeader, ResponseHeader, finish_frame};
use crate::types::Offset;

pub mod groups;
pub use groups::{GroupRequest, GroupResponse};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ApiKey {
    Handshake = 0,
    CreateTopic = 1,
    DeleteTopic = 2,
    ListTopics = 3,
    DescribeTopic = 4,
    Produce = 5,
    Fetch = 6,
    ListOffsets = 7,
    AlterTopicConfig = 8,
    RecoverPartitions = 9,
    Metadata = 10,
    ElectLeader = 11,
    ReassignPartition = 12,
    RemoveBroker = 13,
    FindCoordinator = 14,
    GroupHeartbeat = 15,
    OffsetCommit = 16,
    OffsetFetch = 17,
    ListGroups = 18,
    DescribeGroup = 19,
    DeleteGroup = 20,
    ResetOffsets = 21,
    QueueFetch = 22,
    DescribeQueue = 23,
    DeleteQueue = 24,
}

impl ApiKey {
    pub const ALL: [ApiKey; 25] = [
        ApiKey::Handshake,
        ApiKey::CreateTopic,
        ApiKey::DeleteTopic,
        ApiKey::ListTopics,
        ApiKey::DescribeTopic,
        ApiKey::Produce,
        ApiKey::Fetch,
        ApiKey::ListOffsets,
        ApiKey::AlterTopicConfig,
        ApiKey::RecoverPartitions,
        ApiKey::Metadata,
        ApiKey::ElectLeader,
        ApiKey::ReassignPartition,
        ApiKey::RemoveBroker,
        ApiKey::FindCoordinator,
        ApiKey::GroupHeartbeat,
        ApiKey::OffsetCommit,
        ApiKey::OffsetFetch,
        ApiKey::ListGroups,
        ApiKey::DescribeGroup,
        ApiKey::DeleteGroup,
        ApiKey::ResetOffsets,
        ApiKey::QueueFetch,
        ApiKey::DescribeQueue,
        ApiKey::DeleteQueue,
    ];

    pub fn from_u16(v: u16) -> Option<ApiKey> {
        ApiKey::ALL.get(usize::from(v)).copied()
    }

    /// The versions of this API this build speaks, inclusive.
    pub fn versions(self) -> (u16, u16) {
        match self {
            // CreateTopic and DescribeTopic 1: settings by name (Kafka's),
            // with their sources. DescribeTopic 2: each partition's cleaner
            // state. Produce 1: a partition's error names its leader and
            // epoch, and a broker that does not lead it answers NOT_LEADER
            // instead of forwarding the batch (docs/protocol.md).
            ApiKey::DescribeTopic => (0, 2),
            ApiKey::CreateTopic | ApiKey::Produce => (0, 1),
            _ => (0, 0),
        }
    }

    /// The newest version of this API this build speaks.
    pub fn latest(self) -> u16 {
        self.versions().1
    }

    /// A short name, for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            ApiKey::Handshake => "handshake",
            ApiKey::CreateTopic => "create_topic",
            ApiKey::DeleteTopic => "delete_topic",
            ApiKey::ListTopics => "list_topics",
            ApiKey::DescribeTopic => "describe_topic",
            ApiKey::Produce => "produce",
            ApiKey::Fetch => "fetch",
            ApiKey::ListOffsets => "list_offsets",
            ApiKey::AlterTopicConfig => "alter_topic_config",
            ApiKey::RecoverPartitions => "recover_partitions",
            ApiKey::Metadata => "metadata",
            ApiKey::ElectLeader => "elect_leader",
            ApiKey::ReassignPartition => "reassign_partition",
            ApiKey::RemoveBroker => "remove_broker",
            ApiKey::FindCoordinator => "find_coordinator",
            ApiKey::GroupHeartbeat => "group_heartbeat",
            ApiKey::OffsetCommit => "offset_commit",
            ApiKey::OffsetFetch => "offset_fetch",
            ApiKey::ListGroups => "list_groups",
            ApiKey::DescribeGroup => "describe_group",
            ApiKey::DeleteGroup => "delete_group",
            ApiKey::ResetOffsets => "reset_offsets",
            ApiKey::QueueFetch => "queue_fetch",
            ApiKey::DescribeQueue => "describe_queue",
            ApiKey::DeleteQueue => "delete_queue",
        }
    }
}

/// Why a request frame could not become a [`Request`]; each maps to a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    UnknownApi(u16),
    UnsupportedVersion { api_key: ApiKey, version: u16 },
    Malformed(DecodeError),
}

impl RequestError {
    pub fn code(&self) -> ErrorCode {
        match self {
            RequestError::UnknownApi(_) => ErrorCode::UNKNOWN_API,
            RequestError::UnsupportedVersion { .. } => ErrorCode::UNSUPPORTED_VERSION,
            RequestError::Malformed(_) => ErrorCode::MALFORMED_REQUEST,
        }
    }
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::UnknownApi(k) => write!(f, "unknown API key {k}"),
            RequestError::UnsupportedVersion { api_key, version } => {
                let (min, max) = api_key.versions();
                write!(f, "{api_key:?} version {version} is not supported (supported: {min}..={max})")
            }
            RequestError::Malformed(e) => write!(f, "malformed request body: {e}"),
        }
    }
}

fn opt_i64(v: Option<i64>) -> i64 {
    v.unwrap_or(-1)
}

fn read_opt(r: &mut Reader, what: &'static str) -> Result<Option<i64>, DecodeError> {
    match r.i64()? {
        -1 => Ok(None),
        v if v >= 0 => Ok(Some(v)),
        v => Err(DecodeError::Invalid { what, value: v }),
    }
}

// ---------------------------------------------------------------- requests

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeRequest {
    pub protocol_version: u16,
    pub client: String,
}

/// Topic settings by name (Kafka's: `retention.ms`, `segment.bytes`, …)
/// with values as strings; the broker checks both.
pub type TopicConfigs = Vec<(String, String)>;

/// Version 0 of create and describe carried two settings as numbers.
fn encode_v0_config(w: &mut Writer, configs: &[(String, String)]) {
    let number = |key: &str| configs.iter().find(|(k, _)| k == key).and_then(|(_, v)| v.parse::<i64>().ok());
    w.i64(opt_i64(number("retention.ms").filter(|v| *v >= 0)));
    w.i64(opt_i64(number("retention.bytes").filter(|v| *v >= 0)));
}

fn decode_v0_config(r: &mut Reader) -> Result<TopicConfigs, DecodeError> {
    let mut configs = Vec::new();
    if let Some(ms) = read_opt(r, "retention_ms")? {
        configs.push(("retention.ms".to_string(), ms.to_string()));
    }
    if let Some(bytes) = read_opt(r, "retention_bytes")? {
        configs.push(("retention.bytes".to_string(), bytes.to_string()));
    }
    Ok(configs)
}

fn encode_configs(w: &mut Writer, configs: &[(String, String)]) {
    w.array(configs, |w, (k, v)| {
        w.string(k);
        w.string(v);
    });
}

fn decode_configs(r: &mut Reader) -> Result<TopicConfigs, DecodeError> {
    r.array("configs", 4, |r| Ok((r.string()?, r.string()?)))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopicRequest {
    pub name: String,
    pub partitions: u32,
    pub configs: TopicConfigs,
}

/// One change of an [`Request::AlterTopicConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOp {
    Set {
        key: String,
        value: String,
    },
    /// Back to the broker's value.
    Delete {
        key: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// No response: the producer learns nothing, not even errors (Kafka's `acks=0`).
    None = 0,
    /// Answered once the partition's flush policy holds for the batch on
    /// its leader.
    Leader = 1,
    /// Answered once a majority of the partition's replicas holds it
    /// durably (committed); on a broker without replication, as `Leader`.
    All = 2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducePartition {
    pub partition: u32,
    /// One record batch as built by `batch::BatchBuilder`.
    pub batch: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceTopic {
    pub name: String,
    pub partitions: Vec<ProducePartition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequest {
    pub acks: Acks,
    pub timeout_ms: u32,
    pub topics: Vec<ProduceTopic>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPartition {
    pub partition: u32,
    pub offset: Offset,
    pub max_bytes: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTopic {
    pub name: String,
    pub partitions: Vec<FetchPartition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// How long to wait for `min_bytes` to arrive (long polling).
    pub max_wait_ms: u32,
    pub min_bytes: u32,
    /// For the whole response; a partition's first batch is returned even
    /// if larger, so a consumer always makes progress.
    pub max_bytes: u32,
    pub topics: Vec<FetchTopic>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The high watermark: the offset the next readable record will get.
    Latest,
    /// The first offset whose record timestamp is at or after this
    /// (milliseconds since the Unix epoch); the high watermark if none is.
    Timestamp(i64),
}

impl OffsetSpec {
    fn encode(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(t) => t,
        }
    }

    fn decode(v: i64) -> Result<OffsetSpec, DecodeError> {
        match v {
            -2 => Ok(OffsetSpec::Earliest),
            -1 => Ok(OffsetSpec::Latest),
            t if t >= 0 => Ok(OffsetSpec::Timestamp(t)),
            v => Err(DecodeError::Invalid { what: "offset spec", value: v }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsTopic {
    pub name: String,
    pub partitions: Vec<(u32, OffsetSpec)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Handshake(HandshakeRequest),
    CreateTopic(CreateTopicRequest),
    DeleteTopic {
        name: String,
    },
    ListTopics,
    DescribeTopic {
        name: String,
    },
    Produce(ProduceRequest),
    Fetch(FetchRequest),
    ListOffsets(Vec<ListOffsetsTopic>),
    AlterTopicConfig {
        name: String,
        ops: Vec<ConfigOp>,
    },
    /// Reopens partitions whose storage failed; none listed: all that need it.
    RecoverPartitions {
        name: String,
        partitions: Vec<u32>,
    },
    /// The brokers, and the leaders of these topics' partitions (every
    /// topic when empty).
    Metadata {
        topics: Vec<String>,
    },
    /// Hands the partition's leadership to `broker` (one of its replicas).
    ElectLeader {
        name: String,
        partition: u32,
        broker: u32,
    },
    /// Moves the partition's replicas to `replicas` (the first preferred
    /// leader); answered once the move is under way.
    ReassignPartition {
        name: String,
        partition: u32,
        replicas: Vec<u32>,
    },
    /// Takes a broker that joined out of the cluster (it must hold no
    /// replica: drain it first).
    RemoveBroker {
        broker: u32,
    },
    /// The consumer-group APIs (`api/groups.rs`).
    Group(GroupRequest),
}

impl Request {
    pub fn api_key(&self) -> ApiKey {
        match self {
            Request::Handshake(_) => ApiKey::Handshake,
            Request::CreateTopic(_) => ApiKey::CreateTopic,
            Request::DeleteTopic { .. } => ApiKey::DeleteTopic,
            Request::ListTopics => ApiKey::ListTopics,
            Request::DescribeTopic { .. } => ApiKey::DescribeTopic,
            Request::Produce(_) => ApiKey::Produce,
            Request::Fetch(_) => ApiKey::Fetch,
            Request::ListOffsets(_) => ApiKey::ListOffsets,
            Request::AlterTopicConfig { .. } => ApiKey::AlterTopicConfig,
            Request::RecoverPartitions { .. } => ApiKey::RecoverPartitions,
            Request::Metadata { .. } => ApiKey::Metadata,
            Request::ElectLeader { .. } => ApiKey::ElectLeader,
            Request::ReassignPartition { .. } => ApiKey::ReassignPartition,
            Request::RemoveBroker { .. } => ApiKey::RemoveBroker,
            Request::Group(g) => g.api_key(),
        }
    }

    /// The whole frame at the newest version of its API, length prefix
    /// included, as pieces (batches are not copied).
    pub fn encode(&self, request_id: u32) -> Vec<Bytes> {
        self.encode_version(request_id, self.api_key().latest())
    }

    /// The whole frame at `version` of its API.
    pub fn encode_version(&self, request_id: u32, version: u16) -> Vec<Bytes> {
        let mut w = RequestHeader { api_key: self.api_key() as u16, api_version: version, request_id }.encode();
        self.encode_body(&mut w, version);
        finish_frame(w)
    }

    pub fn encode_body(&self, w: &mut Writer, version: u16) {
        match self {
            Request::Handshake(h) => {
                w.u16(h.protocol_version);
                w.string(&h.client);
            }
            Request::CreateTopic(c) => {
                w.string(&c.name);
                w.u32(c.partitions);
                if version == 0 {
                    encode_v0_config(w, &c.configs);
                } else {
                    encode_configs(w, &c.configs);
                }
            }
            Request::AlterTopicConfig { name, ops } => {
                w.string(name);
                w.array(ops, |w, op| match op {
                    ConfigOp::Set { key, value } => {
                        w.u8(0);
                        w.string(key);
                        w.string(value);
                    }
                    ConfigOp::Delete { key } => {
                        w.u8(1);
                        w.string(key);
                        w.string("");
                    }
                });
            }
            Request::RecoverPartitions { name, partitions } => {
                w.string(name);
                w.array(partitions, |w, &p| w.u32(p));
            }
            Request::DeleteTopic { name } | Request::DescribeTopic { name } => w.string(name),
            Request::ListTopics => {}
            Request::Metadata { topics } => w.array(topics, |w, t| w.string(t)),
            Request::ElectLeader { name, partition, broker } => {
                w.string(name);
                w.u32(*partition);
                w.u32(*broker);
            }
            Request::ReassignPartition { name, partition, replicas } => {
                w.string(name);
                w.u32(*partition);
                w.array(replicas, |w, r| w.u32(*r));
            }
            Request::RemoveBroker { broker } => w.u32(*broker),
            Request::Group(g) => g.encode_body(w),
            Request::Produce(p) => {
                w.u8(p.acks as u8);
                w.u32(p.timeout_ms);
                w.array(&p.topics, |w, t| {
                    w.string(&t.name);
                    w.array(&t.partitions, |w, part| {
                        w.u32(part.partition);
                        w.bytes(&part.batch);
                    });
                });
            }
            Request::Fetch(f) => {
                w.u32(f.max_wait_ms);
                w.u32(f.min_bytes);
                w.u32(f.max_bytes);
                w.array(&f.topics, |w, t| {
                    w.string(&t.name);
                    w.array(&t.partitions, |w, part| {
                        w.u32(part.partition);
                        w.u64(part.offset.0);
                        w.u32(part.max_bytes);
                    });
                });
            }
            Request::ListOffsets(topics) => w.array(topics, |w, t| {
                w.string(&t.name);
                w.array(&t.partitions, |w, &(p, spec)| {
                    w.u32(p);
                    w.i64(spec.encode());
                });
            }),
        }
    }

    /// Decodes a request body; the body must be consumed exactly.
    pub fn decode(header: &RequestHeader, body: Bytes) -> Result<Request, RequestError> {
        let api_key = ApiKey::from_u16(header.api_key).ok_or(RequestError::UnknownApi(header.api_key))?;
        let (min, max) = api_key.versions();
        if header.api_version < min || header.api_version > max {
            return Err(RequestError::UnsupportedVersion { api_key, version: header.api_version });
        }
        let mut r = Reader::new(body);
        let request = Request::decode_body(api_key, header.api_version, &mut r).map_err(RequestError::Malformed)?;
        r.finish().map_err(RequestError::Malformed)?;
        Ok(request)
    }

    fn decode_body(api_key: ApiKey, version: u16, r: &mut Reader) -> Result<Request, DecodeError> {
        Ok(match api_key {
            ApiKey::Handshake => {
                Request::Handshake(HandshakeRequest { protocol_version: r.u16()?, client: r.string()? })
            }
            ApiKey::CreateTopic => Request::CreateTopic(CreateTopicRequest {
                name: r.string()?,
                partitions: r.u32()?,
                configs: if version == 0 { decode_v0_config(r)? } else { decode_configs(r)? },
            }),
            ApiKey::AlterTopicConfig => Request::AlterTopicConfig {
                name: r.string()?,
                ops: r.array("config ops", 5, |r| {
                    let op = r.u8()?;
                    let key = r.string()?;
                    let value = r.string()?;
                    match op {
                        0 => Ok(ConfigOp::Set { key, value }),
                        1 => Ok(ConfigOp::Delete { key }),
                        v => Err(DecodeError::Invalid { what: "config op", value: i64::from(v) }),
                    }
                })?,
            },
            ApiKey::RecoverPartitions => {
                Request::RecoverPartitions { name: r.string()?, partitions: r.array("partitions", 4, Reader::u32)? }
            }
            ApiKey::DeleteTopic => Request::DeleteTopic { name: r.string()? },
            ApiKey::ListTopics => Request::ListTopics,
            ApiKey::DescribeTopic => Request::DescribeTopic { name: r.string()? },
            ApiKey::Metadata => Request::Metadata { topics: r.array("topics", 2, Reader::string)? },
            ApiKey::ElectLeader => Request::ElectLeader { name: r.string()?, partition: r.u32()?, broker: r.u32()? },
            ApiKey::ReassignPartition => Request::ReassignPartition {
                name: r.string()?,
                partition: r.u32()?,
                replicas: r.array("replicas", 4, Reader::u32)?,
            },
            ApiKey::RemoveBroker => Request::RemoveBroker { broker: r.u32()? },
            ApiKey::FindCoordinator
            | ApiKey::GroupHeartbeat
            | ApiKey::OffsetCommit
            | ApiKey::OffsetFetch
            | ApiKey::ListGroups
            | ApiKey::DescribeGroup
            | ApiKey::DeleteGroup
            | ApiKey::ResetOffsets
            | ApiKey::QueueFetch
            | ApiKey::DescribeQueue
            | ApiKey::DeleteQueue => Request::Group(GroupRequest::decode_body(api_key, r)?.expect("a group API key")),
            ApiKey::Produce => {
                let acks = match r.u8()? {
                    0 => Acks::None,
                    1 => Acks::Leader,
                    2 => Acks::All,
                    v => return Err(DecodeError::Invalid { what: "acks", value: i64::from(v) }),
                };
                let timeout_ms = r.u32()?;
                let topics = r.array("topics", 6, |r| {
                    Ok(ProduceTopic {
                        name: r.string()?,
                        partitions: r.array("partitions", 8, |r| {
                            Ok(ProducePartition { partition: r.u32()?, batch: r.bytes()? })
                        })?,
                    })
                })?;
                Request::Produce(ProduceRequest { acks, timeout_ms, topics })
            }
            ApiKey::Fetch => Request::Fetch(FetchRequest {
                max_wait_ms: r.u32()?,
                min_bytes: r.u32()?,
                max_bytes: r.u32()?,
                topics: r.array("topics", 6, |r| {
                    Ok(FetchTopic {
                        name: r.string()?,
                        partitions: r.array("partitions", 16, |r| {
                            Ok(FetchPartition { partition: r.u32()?, offset: Offset(r.u64()?), max_bytes: r.u32()? })
                        })?,
                    })
                })?,
            }),
            ApiKey::ListOffsets => Request::ListOffsets(r.array("topics", 6, |r| {
                Ok(ListOffsetsTopic {
                    name: r.string()?,
                    partitions: r.array("partitions", 12, |r| Ok((r.u32()?, OffsetSpec::decode(r.i64()?)?)))?,
                })
            })?),
        })
    }
}

// --------------------------------------------------------------- responses

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiVersions {
    pub api_key: u16,
    pub min: u16,
    pub max: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponse {
    pub protocol_version: u16,
    pub server: String,
    pub shards: u32,
    /// The shard (core) serving this connection.
    pub shard: u32,
    /// Each shard's own port, in shard order (empty if the broker has none):
    /// a client that connects to the bootstrap host on a partition's shard
    /// port reaches the partition's owner directly.
    pub shard_ports: Vec<u16>,
    pub apis: Vec<ApiVersions>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSummary {
    pub name: String,
    pub partitions: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    pub partition: u32,
    /// The core that owns the partition.
    pub shard: u32,
    pub error: ErrorCode,
    pub log_start_offset: Offset,
    pub high_watermark: Offset,
    pub log_end_offset: Offset,
    pub size_bytes: u64,
    /// Version 2 on (0 before): bytes of the sealed segments at or below
    /// the high watermark, and of those the cleaner has not cleaned.
    pub cleanable_bytes: u64,
    pub dirty_bytes: u64,
    /// Version 2 on: when the cleaner last finished a pass (ms since the
    /// epoch); `None` if never (or before version 2).
    pub last_clean_ms: Option<i64>,
}

impl PartitionDescription {
    /// Dirty bytes over cleanable bytes, as Kafka's `min.cleanable.dirty.ratio`
    /// counts them (0 when nothing is cleanable).
    #[must_use]
    pub fn dirty_ratio(&self) -> f64 {
        if self.cleanable_bytes == 0 { 0.0 } else { self.dirty_bytes as f64 / self.cleanable_bytes as f64 }
    }
}

/// One setting of a topic: its value and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: String,
    pub source: ConfigSource,
}

/// Where a topic setting's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    Default = 0,
    Broker = 1,
    Topic = 2,
}

impl ConfigSource {
    pub fn name(self) -> &'static str {
        match self {
            ConfigSource::Default => "default",
            ConfigSource::Broker => "broker",
            ConfigSource::Topic => "topic",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeTopicResponse {
    pub name: String,
    pub configs: Vec<ConfigEntry>,
    pub partitions: Vec<PartitionDescription>,
}

/// The outcome of recovering one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredPartition {
    pub partition: u32,
    pub error: ErrorCode,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducePartitionResult {
    pub partition: u32,
    pub error: ErrorCode,
    /// The offset given to the batch's first record (0 on error).
    pub base_offset: Offset,
    /// With `NOT_LEADER` (version 1 on): the leader this broker knows, if
    /// any, and its epoch; where a client sends the batch next.
    pub leader: Option<LeaderHint>,
}

/// Who leads a partition, as the answering broker knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderHint {
    pub node: u32,
    pub epoch: u32,
}

/// A broker of the cluster, as `Metadata` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub node_id: u32,
    /// Where clients connect (`host:port`); a host of `0.0.0.0` or `::`
    /// means "the host you reached me on".
    pub address: String,
    /// Its replication listener (`host:port`).
    pub replication_address: String,
    /// It answered the broker that built this answer just now.
    pub alive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    pub partition: u32,
    pub error: ErrorCode,
    /// `None`: no leader is known (an election is on).
    pub leader: Option<u32>,
    pub leader_epoch: u32,
    /// The core owning the partition on its leader (a client connects to
    /// that shard's port); `None` if not known.
    pub leader_shard: Option<u32>,
    /// The replicas, preferred leader first.
    pub replicas: Vec<u32>,
    /// The replicas whose logs kept up with the leader's lately (Kafka's
    /// in-sync replicas), as the leader reports them.
    pub caught_up: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    pub name: String,
    pub error: ErrorCode,
    pub partitions: Vec<PartitionMetadata>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataResponse {
    /// The node that answered.
    pub node_id: u32,
    /// The controller (the metadata partition's leader), if known.
    pub controller: Option<u32>,
    pub brokers: Vec<BrokerInfo>,
    pub topics: Vec<TopicMetadata>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceTopicResult {
    pub name: String,
    pub partitions: Vec<ProducePartitionResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartitionResult {
    pub partition: u32,
    pub error: ErrorCode,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
    /// Whole stored batches, in offset order, exactly as stored.
    pub batches: Vec<Bytes>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTopicResult {
    pub name: String,
    pub partitions: Vec<FetchPartitionResult>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListOffsetsPartitionResult {
    pub partition: u32,
    pub error: ErrorCode,
    pub offset: Offset,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsTopicResult {
    pub name: String,
    pub partitions: Vec<ListOffsetsPartitionResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Handshake(HandshakeResponse),
    CreateTopic,
    DeleteTopic,
    ListTopics(Vec<TopicSummary>),
    DescribeTopic(DescribeTopicResponse),
    Produce(Vec<ProduceTopicResult>),
    Fetch(Vec<FetchTopicResult>),
    ListOffsets(Vec<ListOffsetsTopicResult>),
    AlterTopicConfig,
    RecoverPartitions(Vec<RecoveredPartition>),
    Metadata(MetadataResponse),
    ElectLeader,
    ReassignPartition,
    RemoveBroker,
    Group(GroupResponse),
}

fn opt_u32(v: Option<u32>) -> i64 {
    v.map_or(-1, i64::from)
}

fn read_opt_u32(r: &mut Reader, what: &'static str) -> Result<Option<u32>, DecodeError> {
    match r.i64()? {
        -1 => Ok(None),
        v => u32::try_from(v).map(Some).map_err(|_| DecodeError::Invalid { what, value: v }),
    }
}

impl Response {
    /// The whole successful response frame at the newest version of its
    /// API, length prefix included.
    pub fn encode(&self, request_id: u32) -> Vec<Bytes> {
        self.encode_version(request_id, u16::MAX)
    }

    /// The response frame at `version` (that of the request it answers).
    pub fn encode_version(&self, request_id: u32, version: u16) -> Vec<Bytes> {
        let mut w = ResponseHeader { request_id, error: ErrorCode::NONE }.encode();
        self.encode_body(&mut w, version);
        finish_frame(w)
    }

    pub fn encode_body(&self, w: &mut Writer, version: u16) {
        match self {
            Response::Handshake(h) => {
                w.u16(h.protocol_version);
                w.string(&h.server);
                w.u32(h.shards);
                w.u32(h.shard);
                w.array(&h.shard_ports, |w, &p| w.u16(p));
                w.array(&h.apis, |w, a| {
                    w.u16(a.api_key);
                    w.u16(a.min);
                    w.u16(a.max);
                });
            }
            Response::CreateTopic
            | Response::DeleteTopic
            | Response::AlterTopicConfig
            | Response::ElectLeader
            | Response::ReassignPartition
            | Response::RemoveBroker => {}
            Response::Group(g) => g.encode_body(w),
            Response::Metadata(m) => {
                w.u32(m.node_id);
                w.i64(opt_u32(m.controller));
                w.array(&m.brokers, |w, b| {
                    w.u32(b.node_id);
                    w.string(&b.address);
                    w.string(&b.replication_address);
                    w.u8(u8::from(b.alive));
                });
                w.array(&m.topics, |w, t| {
                    w.string(&t.name);
                    w.u16(t.error.0);
                    w.array(&t.partitions, |w, p| {
                        w.u32(p.partition);
                        w.u16(p.error.0);
                        w.i64(opt_u32(p.leader));
                        w.u32(p.leader_epoch);
                        w.i64(opt_u32(p.leader_shard));
                        w.array(&p.replicas, |w, &n| w.u32(n));
                        w.array(&p.caught_up, |w, &n| w.u32(n));
                    });
                });
            }
            Response::RecoverPartitions(parts) => w.array(parts, |w, p| {
                w.u32(p.partition);
                w.u16(p.error.0);
                w.string(&p.message);
            }),
            Response::ListTopics(topics) => w.array(topics, |w, t| {
                w.string(&t.name);
                w.u32(t.partitions);
            }),
            Response::DescribeTopic(d) => {
                w.string(&d.name);
                if version == 0 {
                    let values: TopicConfigs = d.configs.iter().map(|c| (c.name.clone(), c.value.clone())).collect();
                    encode_v0_config(w, &values);
                } else {
                    w.array(&d.configs, |w, c| {
                        w.string(&c.name);
                        w.string(&c.value);
                        w.u8(c.source as u8);
                    });
                }
                w.array(&d.partitions, |w, p| {
                    w.u32(p.partition);
                    w.u32(p.shard);
                    w.u16(p.error.0);
                    w.u64(p.log_start_offset.0);
                    w.u64(p.high_watermark.0);
                    w.u64(p.log_end_offset.0);
                    w.u64(p.size_bytes);
                    if version >= 2 {
                        w.u64(p.cleanable_bytes);
                        w.u64(p.dirty_bytes);
                        w.i64(p.last_clean_ms.unwrap_or(-1));
                    }
                });
            }
            Response::Produce(topics) => w.array(topics, |w, t| {
                w.string(&t.name);
                w.array(&t.partitions, |w, p| {
                    w.u32(p.partition);
                    w.u16(p.error.0);
                    w.u64(p.base_offset.0);
                    if version >= 1 {
                        w.i64(opt_u32(p.leader.map(|l| l.node)));
                        w.u32(p.leader.map_or(0, |l| l.epoch));
                    }
                });
            }),
            Response::Fetch(topics) => w.array(topics, |w, t| {
                w.string(&t.name);
                w.array(&t.partitions, |w, p| {
                    w.u32(p.partition);
                    w.u16(p.error.0);
                    w.u64(p.high_watermark.0);
                    w.u64(p.log_start_offset.0);
                    let total: usize = p.batches.iter().map(Bytes::len).sum();
                    w.u32(u32::try_from(total).expect("fetch responses are bounded far below 4 GiB"));
                    for b in &p.batches {
                        w.shared(b.clone());
                    }
                });
            }),
            Response::ListOffsets(topics) => w.array(topics, |w, t| {
                w.string(&t.name);
                w.array(&t.partitions, |w, p| {
                    w.u32(p.partition);
                    w.u16(p.error.0);
                    w.u64(p.offset.0);
                });
            }),
        }
    }

    /// Decodes the body of a successful response to a request of `api_key`
    /// sent at its newest version.
    pub fn decode(api_key: ApiKey, body: Bytes) -> Result<Response, DecodeError> {
        Response::decode_version(api_key, api_key.latest(), body)
    }

    pub fn decode_version(api_key: ApiKey, version: u16, body: Bytes) -> Result<Response, DecodeError> {
        let mut r = Reader::new(body);
        let response = Response::decode_body(api_key, version, &mut r)?;
        r.finish()?;
        Ok(response)
    }

    fn decode_body(api_key: ApiKey, version: u16, r: &mut Reader) -> Result<Response, DecodeError> {
        Ok(match api_key {
            ApiKey::Handshake => Response::Handshake(HandshakeResponse {
                protocol_version: r.u16()?,
                server: r.string()?,
                shards: r.u32()?,
                shard: r.u32()?,
                shard_ports: r.array("shard ports", 2, Reader::u16)?,
                apis: r.array("apis", 6, |r| Ok(ApiVersions { api_key: r.u16()?, min: r.u16()?, max: r.u16()? }))?,
            }),
            ApiKey::CreateTopic => Response::CreateTopic,
            ApiKey::DeleteTopic => Response::DeleteTopic,
            ApiKey::ListTopics => Response::ListTopics(
                r.array("topics", 6, |r| Ok(TopicSummary { name: r.string()?, partitions: r.u32()? }))?,
            ),
            ApiKey::AlterTopicConfig => Response::AlterTopicConfig,
            ApiKey::ElectLeader => Response::ElectLeader,
            ApiKey::ReassignPartition => Response::ReassignPartition,
            ApiKey::RemoveBroker => Response::RemoveBroker,
            ApiKey::FindCoordinator
            | ApiKey::GroupHeartbeat
            | ApiKey::OffsetCommit
            | ApiKey::OffsetFetch
            | ApiKey::ListGroups
            | ApiKey::DescribeGroup
            | ApiKey::DeleteGroup
            | ApiKey::ResetOffsets
            | ApiKey::QueueFetch
            | ApiKey::DescribeQueue
            | ApiKey::DeleteQueue => Response::Group(GroupResponse::decode_body(api_key, r)?.expect("a group API key")),
            ApiKey::Metadata => Response::Metadata(MetadataResponse {
                node_id: r.u32()?,
                controller: read_opt_u32(r, "controller")?,
                brokers: r.array("brokers", 9, |r| {
                    Ok(BrokerInfo {
                        node_id: r.u32()?,
                        address: r.string()?,
                        replication_address: r.string()?,
                        alive: match r.u8()? {
                            0 => false,
                            1 => true,
                            v => return Err(DecodeError::Invalid { what: "alive", value: i64::from(v) }),
                        },
                    })
                })?,
                topics: r.array("topics", 8, |r| {
                    Ok(TopicMetadata {
                        name: r.string()?,
                        error: ErrorCode(r.u16()?),
                        partitions: r.array("partitions", 34, |r| {
                            Ok(PartitionMetadata {
                                partition: r.u32()?,
                                error: ErrorCode(r.u16()?),
                                leader: read_opt_u32(r, "leader")?,
                                leader_epoch: r.u32()?,
                                leader_shard: read_opt_u32(r, "leader shard")?,
                                replicas: r.array("replicas", 4, Reader::u32)?,
                                caught_up: r.array("caught-up replicas", 4, Reader::u32)?,
                            })
                        })?,
                    })
                })?,
            }),
            ApiKey::RecoverPartitions => Response::RecoverPartitions(r.array("partitions", 8, |r| {
                Ok(RecoveredPartition { partition: r.u32()?, error: ErrorCode(r.u16()?), message: r.string()? })
            })?),
            ApiKey::DescribeTopic => Response::DescribeTopic(DescribeTopicResponse {
                name: r.string()?,
                configs: if version == 0 {
                    decode_v0_config(r)?
                        .into_iter()
                        .map(|(name, value)| ConfigEntry { name, value, source: ConfigSource::Topic })
                        .collect()
                } else {
                    r.array("configs", 5, |r| {
                        let name = r.string()?;
                        let value = r.string()?;
                        let source = match r.u8()? {
                            0 => ConfigSource::Default,
                            1 => ConfigSource::Broker,
                            2 => ConfigSource::Topic,
                            v => return Err(DecodeError::Invalid { what: "config source", value: i64::from(v) }),
                        };
                        Ok(ConfigEntry { name, value, source })
                    })?
                },
                partitions: r.array("partitions", if version >= 2 { 66 } else { 42 }, |r| {
                    let mut p = PartitionDescription {
                        partition: r.u32()?,
                        shard: r.u32()?,
                        error: ErrorCode(r.u16()?),
                        log_start_offset: Offset(r.u64()?),
                        high_watermark: Offset(r.u64()?),
                        log_end_offset: Offset(r.u64()?),
                        size_bytes: r.u64()?,
                        cleanable_bytes: 0,
                        dirty_bytes: 0,
                        last_clean_ms: None,
                    };
                    if version >= 2 {
                        p.cleanable_bytes = r.u64()?;
                        p.dirty_bytes = r.u64()?;
                        p.last_clean_ms = Some(r.i64()?).filter(|&t| t >= 0);
                    }
                    Ok(p)
                })?,
            }),
            ApiKey::Produce => Response::Produce(r.array("topics", 6, |r| {
                Ok(ProduceTopicResult {
                    name: r.string()?,
                    partitions: r.array("partitions", 14, |r| {
                        let partition = r.u32()?;
                        let error = ErrorCode(r.u16()?);
                        let base_offset = Offset(r.u64()?);
                        let leader = if version >= 1 {
                            let node = read_opt_u32(r, "leader")?;
                            let epoch = r.u32()?;
                            node.map(|node| LeaderHint { node, epoch })
                        } else {
                            None
                        };
                        Ok(ProducePartitionResult { partition, error, base_offset, leader })
                    })?,
                })
            })?),
            ApiKey::Fetch => Response::Fetch(r.array("topics", 6, |r| {
                Ok(FetchTopicResult { name: r.string()?, partitions: r.array("partitions", 26, decode_fetched)? })
            })?),
            ApiKey::ListOffsets => Response::ListOffsets(r.array("topics", 6, |r| {
                Ok(ListOffsetsTopicResult {
                    name: r.string()?,
                    partitions: r.array("partitions", 14, |r| {
                        Ok(ListOffsetsPartitionResult {
                            partition: r.u32()?,
                            error: ErrorCode(r.u16()?),
                            offset: Offset(r.u64()?),
                        })
                    })?,
                })
            })?),
        })
    }
}

fn decode_fetched(r: &mut Reader) -> Result<FetchPartitionResult, DecodeError> {
    let partition = r.u32()?;
    let error = ErrorCode(r.u16()?);
    let high_watermark = Offset(r.u64()?);
    let log_start_offset = Offset(r.u64()?);
    let at = r.position();
    let records = r.bytes()?;
    let batches = split_batches(&records)
        .ok_or(DecodeError::Invalid { what: "batch lengths in fetched records at byte", value: at as i64 })?;
    Ok(FetchPartitionResult { partition, error, high_watermark, log_start_offset, batches })
}

/// Cuts concatenated batches apart by their `batch_length` fields, without
/// copying; `None` if a length runs past the end or is below the header size.
pub fn split_batches(records: &Bytes) -> Option<Vec<Bytes>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < records.len() {
        if records.len() - at < BATCH_HEADER_BYTES_MIN {
            return None;
        }
        let len = BatchHeader::batch_length_at(&records[at..]) as usize;
        if len < BATCH_HEADER_BYTES_MIN || at + len > records.len() {
            return None;
        }
        out.push(records.slice(at..at + len));
        at += len;
    }
    Some(out)
}

#[cfg(test)]
mod tests;
