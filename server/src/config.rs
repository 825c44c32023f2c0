//! The broker's settings: embedded defaults, overridden by a TOML file
//! (`--config`), overridden by flags. Every limit the broker enforces is
//! here, unit last; `docs/configuration.md` lists them all with defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use engine::{FlushPolicy, LogConfig, PoolConfig};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Shards (one pinned executor each); 0 means one per available core.
    pub cores: usize,
    /// How long an idle shard spins before it sleeps: lower wake-up latency
    /// for CPU that the load on the same cores might want.
    pub spin_before_park_us: u64,
    /// Each shard also listens on its own port (the shared port + 1 + shard,
    /// or a free port when the shared one is 0), announced in the handshake,
    /// so clients can send a partition's requests straight to its owner
    /// instead of having them forwarded between cores.
    pub shard_ports: bool,
    /// Where `/metrics` (Prometheus text) is served; `off` for nowhere.
    pub metrics_listen: String,
    /// How long to keep trying a port that is still held at startup (by a
    /// broker that just died: its io_uring teardown releases its sockets
    /// a moment later).
    pub bind_retry_ms: u64,
    pub log: LogSettings,
    pub memory: MemorySettings,
    pub limits: Limits,
    pub cluster: ClusterSettings,
    pub groups: GroupSettings,
}

/// Consumer groups (docs/groups.md): the offsets topic and the
/// coordinator's bounds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupSettings {
    /// Partitions of `__consumer_offsets`, fixed when it is first created.
    pub offsets_topic_partitions: u32,
    pub offsets_segment_bytes: u64,
    /// A group without members this long loses its offsets (Kafka's
    /// `offsets.retention.minutes`, 7 days).
    pub offsets_retention_ms: u64,
    /// How often members heartbeat.
    pub heartbeat_interval_ms: u32,
    pub session_timeout_ms_min: u32,
    pub session_timeout_ms_max: u32,
    pub group_members_max: usize,
    pub groups_max: usize,
    /// How often sessions and retention are checked, queue locks
    /// expired, and lag measured.
    pub tick_ms: u64,
    /// Queue groups: records in flight per partition at most.
    pub queue_partition_in_flight_max: u32,
    /// Queue groups: deliveries after which a record is dead-lettered
    /// (Kafka's `share.delivery.count.limit`, 5).
    pub queue_delivery_count_max: u16,
    /// Queue groups: the longest acquisition lock a consumer may ask for.
    pub queue_lock_ms_max: u32,
}

impl Default for GroupSettings {
    fn default() -> Self {
        GroupSettings {
            offsets_topic_partitions: 16,
            offsets_segment_bytes: 16 << 20,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            heartbeat_interval_ms: 1000,
            session_timeout_ms_min: 1000,
            session_timeout_ms_max: 300_000,
            group_members_max: 1000,
            groups_max: 100_000,
            tick_ms: 1000,
            queue_partition_in_flight_max: 2000,
            queue_delivery_count_max: 5,
            queue_lock_ms_max: 3_600_000,
        }
    }
}

impl GroupSettings {
    pub fn limits(&self) -> groups::Limits {
        groups::Limits {
            groups_max: self.groups_max,
            group_members_max: self.group_members_max,
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            session_timeout_ms_min: self.session_timeout_ms_min,
            session_timeout_ms_max: self.session_timeout_ms_max,
            queue: groups::QueueLimits {
                partition_in_flight_max: self.queue_partition_in_flight_max,
                delivery_count_max: self.queue_delivery_count_max,
                lock_ms_max: self.queue_lock_ms_max,
                ..groups::QueueLimits::default()
            },
            ..groups::Limits::default()
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.offsets_topic_partitions == 0 || self.groups_max == 0 || self.group_members_max == 0 {
            return Err("groups.offsets_topic_partitions, groups_max and group_members_max must be at least 1".into());
        }
        if self.session_timeout_ms_min > self.session_timeout_ms_max || self.heartbeat_interval_ms == 0 {
            return Err("groups: session_timeout_ms_min must not exceed session_timeout_ms_max, and heartbeat_interval_ms must be at least 1".into());
        }
        let lock_ms_min = groups::QueueLimits::default().lock_ms_min;
        if self.queue_partition_in_flight_max == 0
            || self.queue_partition_in_flight_max > 100_000
            || self.queue_delivery_count_max == 0
            || self.queue_lock_ms_max < lock_ms_min
        {
            return Err(format!(
                "groups: queue_partition_in_flight_max must be 1 to 100000, queue_delivery_count_max at least 1, and queue_lock_ms_max at least {lock_ms_min}"
            ));
        }
        Ok(())
    }
}

/// Cluster mode: this broker's id, its replication address and every
/// broker of the cluster. Without `peers` the broker is a one-node
/// cluster and behaves exactly as a standalone broker.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// This broker's id, one of `peers` (`--node-id`).
    pub node_id: u32,
    /// Where the other brokers reach this one (`--replication-listen`);
    /// default: this node's address in `peers`.
    pub replication_listen: Option<SocketAddr>,
    /// Every broker, `ID=ADDRESS` separated by commas (`--peers`), its own
    /// included: `1=127.0.0.1:8071,2=127.0.0.1:8072,3=127.0.0.1:8073`.
    pub peers: String,
    /// A broker joining a running cluster (`--join`): the replication
    /// address of any of its brokers, which registers this one with the
    /// controller (ADR 29). Instead of `peers`; needs `node_id` and
    /// `replication_listen`. Once joined, the broker keeps its membership
    /// in its data directory and needs no contact to restart.
    pub join: String,
    /// A follower that hears nothing from its leader for a random time in
    /// this range starts an election.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            node_id: 0,
            replication_listen: None,
            peers: String::new(),
            join: String::new(),
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
        }
    }
}

/// What each shard (core) may hold in buffers and caches, over all the
/// partitions it owns (docs/operations.md has the sizing formula).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemorySettings {
    /// DMA write buffers of all the shard's partitions.
    pub shard_write_buffer_bytes_max: usize,
    /// Recent batches cached for tail reads, all partitions together.
    pub shard_cache_bytes_max: usize,
    /// Read-ahead chunks of cold reads, all partitions together.
    pub shard_read_ahead_bytes_max: usize,
    /// Sparse indexes of sealed segments read lately, all partitions
    /// together (an active segment's index is its partition's own).
    pub shard_index_cache_bytes_max: usize,
}

/// Settings of every partition log (topics may override retention).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `always` (fdatasync before every acknowledgement), `never`, or
    /// `interval` with `flush_interval_ms`.
    pub flush: String,
    pub flush_interval_ms: u64,
    pub segment_bytes_max: u64,
    pub segment_ms_max: Option<i64>,
    /// The active segment's file grows ahead of its data by at most this.
    pub preallocate_bytes_max: u64,
    pub index_interval_bytes: u64,
    pub write_buffer_bytes_max: usize,
    pub cache_bytes_max: usize,
    pub read_ahead_bytes: usize,
    /// Default retention for new topics; absent: infinite.
    pub retention_ms: Option<i64>,
    pub retention_bytes: Option<u64>,
    pub retention_check_ms: u64,
    /// How often each shard looks for compacted partitions due a pass.
    pub cleaner_check_ms: u64,
    /// The key→offset map of one compaction pass (a shard runs one at a time).
    pub cleaner_map_bytes_max: usize,
    /// Bytes a shard's cleaner reads per second, at most (0: unlimited).
    pub cleaner_bytes_per_second_max: u64,
    /// `CreateTime` or `LogAppendTime` (topic setting `message.timestamp.type`).
    pub message_timestamp_type: String,
    /// Refuse records older than this; absent: any age.
    pub message_timestamp_before_max_ms: Option<i64>,
    /// Refuse records newer than this ahead of the broker's clock.
    pub message_timestamp_after_max_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Connections open at once over all shards; more are refused.
    pub connections_max: usize,
    /// The largest request frame; larger ones get `FRAME_TOO_LARGE`.
    pub frame_bytes_max: usize,
    /// The largest record batch.
    pub batch_bytes_max: u32,
    /// Bytes of requests and responses one connection may have in flight;
    /// the broker stops reading from it beyond this (backpressure).
    pub connection_inflight_bytes_max: usize,
    /// The most a fetch response carries, whatever the request asks.
    pub fetch_bytes_max: usize,
    /// The longest a fetch may wait for data.
    pub fetch_wait_ms_max: u32,
    /// Partitions per topic.
    pub topic_partitions_max: u32,
    /// Partitions on this broker over all topics (each holds memory: write
    /// buffer, cache, read-ahead).
    pub partitions_max: u32,
    /// Jobs one shard may queue for another before the sender waits.
    pub shard_channel_capacity: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from("./cairn-data"),
            listen: "127.0.0.1:7070".parse().expect("a valid address"),
            cores: 0,
            spin_before_park_us: 0,
            shard_ports: true,
            metrics_listen: "127.0.0.1:9644".into(),
            bind_retry_ms: 30_000,
            log: LogSettings::default(),
            memory: MemorySettings::default(),
            limits: Limits::default(),
            cluster: ClusterSettings::default(),
            groups: GroupSettings::default(),
        }
    }
}

impl Default for MemorySettings {
    fn default() -> Self {
        MemorySettings {
            shard_write_buffer_bytes_max: 64 << 20,
            shard_cache_bytes_max: 256 << 20,
            shard_read_ahead_bytes_max: 64 << 20,
            shard_index_cache_bytes_max: 64 << 20,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        let engine = LogConfig::default();
        LogSettings {
            flush: "always".into(),
            flush_interval_ms: 1000,
            segment_bytes_max: engine.segment_bytes_max,
            segment_ms_max: engine.segment_ms_max,
            preallocate_bytes_max: engine.preallocate_bytes_max,
            index_interval_bytes: engine.index_interval_bytes,
            write_buffer_bytes_max: engine.write_buffer_bytes_max,
            cache_bytes_max: 8 << 20,
            read_ahead_bytes: engine.read_ahead_bytes,
            retention_ms: None,
            retention_bytes: None,
            retention_check_ms: 60_000,
            cleaner_check_ms: 15_000,
            cleaner_map_bytes_max: 64 << 20,
            cleaner_bytes_per_second_max: 64 << 20,
            message_timestamp_type: "CreateTime".into(),
            message_timestamp_before_max_ms: engine.timestamp_before_max_ms,
            message_timestamp_after_max_ms: engine.timestamp_after_max_ms,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections_max: 10_000,
            frame_bytes_max: 16 << 20,
            batch_bytes_max: 1 << 20,
            connection_inflight_bytes_max: 64 << 20,
            fetch_bytes_max: 16 << 20,
            fetch_wait_ms_max: 30_000,
            topic_partitions_max: 1024,
            partitions_max: 4096,
            shard_channel_capacity: 1024,
        }
    }
}

/// Flags that override the file; `None` keeps the file's (or default) value.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub cores: Option<usize>,
    pub flush: Option<String>,
    pub metrics_listen: Option<String>,
    pub node_id: Option<u32>,
    pub replication_listen: Option<SocketAddr>,
    pub peers: Option<String>,
    pub join: Option<String>,
}

impl ServerConfig {
    /// Cluster mode's settings, checked; `None` for a standalone broker.
    pub fn cluster_config(&self) -> Option<crate::cluster::ClusterConfig> {
        let peers = crate::cluster::parse_peers(&self.cluster.peers).ok()?;
        let join = crate::cluster::parse_join(&self.cluster.join).ok()?;
        if peers.is_empty() && join.is_none() {
            return None;
        }
        let node = protocol::types::NodeId(self.cluster.node_id);
        let replication_listen = self.cluster.replication_listen.or_else(|| peers.get(&node).copied())?;
        Some(crate::cluster::ClusterConfig {
            node,
            replication_listen,
            peers,
            join,
            election_timeout_min_ms: self.cluster.election_timeout_min_ms,
            election_timeout_max_ms: self.cluster.election_timeout_max_ms,
        })
    }

    fn validate_cluster(&self) -> Result<(), String> {
        let peers = crate::cluster::parse_peers(&self.cluster.peers)?;
        let join = crate::cluster::parse_join(&self.cluster.join)?;
        let node = protocol::types::NodeId(self.cluster.node_id);
        if join.is_some() {
            if !peers.is_empty() {
                return Err("--join and --peers exclude each other: a broker joins a running cluster, or is one of the brokers it starts with".into());
            }
            if self.cluster.node_id == 0 || self.cluster.node_id == crate::cluster::net::CONTACT.0 {
                return Err("--join needs --node-id (an id no broker of the cluster has)".into());
            }
            let Some(listen) = self.cluster.replication_listen else {
                return Err("--join needs --replication-listen (where the other brokers reach this one)".into());
            };
            if listen.ip().is_unspecified() || listen.port() == 0 {
                return Err(format!(
                    "--replication-listen {listen}: a joining broker gives the cluster this address, so it needs a host and port the others can reach"
                ));
            }
            if join == Some(listen) {
                return Err("--join names this broker's own --replication-listen: give a member of the cluster".into());
            }
        } else if peers.is_empty() {
            if self.cluster.node_id != 0 || self.cluster.replication_listen.is_some() {
                return Err(
                    "--node-id and --replication-listen need --peers (every broker of the cluster) or --join".into()
                );
            }
            return Ok(());
        } else if !peers.contains_key(&node) {
            return Err(format!(
                "--node-id {} is not one of --peers ({})",
                self.cluster.node_id,
                peers.keys().map(|n| n.0.to_string()).collect::<Vec<_>>().join(", ")
            ));
        }
        let c = &self.cluster;
        if c.election_timeout_min_ms < 10 || c.election_timeout_max_ms < c.election_timeout_min_ms {
            return Err(
                "cluster.election_timeout_min_ms must be at least 10 and at most election_timeout_max_ms".into()
            );
        }
        Ok(())
    }

    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<ServerConfig, String> {
        let mut config = match file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
                ServerConfig::from_toml(&text).map_err(|e| format!("config {}: {e}", path.display()))?
            }
            None => ServerConfig::default(),
        };
        if let Some(d) = &overrides.data_dir {
            config.data_dir.clone_from(d);
        }
        if let Some(l) = overrides.listen {
            config.listen = l;
        }
        if let Some(c) = overrides.cores {
            config.cores = c;
        }
        if let Some(f) = &overrides.flush {
            config.log.flush.clone_from(f);
        }
        if let Some(m) = &overrides.metrics_listen {
            config.metrics_listen.clone_from(m);
        }
        if let Some(n) = overrides.node_id {
            config.cluster.node_id = n;
        }
        if let Some(r) = overrides.replication_listen {
            config.cluster.replication_listen = Some(r);
        }
        if let Some(p) = &overrides.peers {
            config.cluster.peers.clone_from(p);
        }
        if let Some(j) = &overrides.join {
            config.cluster.join.clone_from(j);
        }
        // Three brokers on one machine would share the default metrics
        // port: in a cluster it follows the node id (9644 for node 1).
        if overrides.metrics_listen.is_none()
            && config.metrics_listen == ServerConfig::default().metrics_listen
            && !(config.cluster.peers.trim().is_empty() && config.cluster.join.trim().is_empty())
            && config.cluster.node_id > 0
        {
            config.metrics_listen = format!("127.0.0.1:{}", 9643 + config.cluster.node_id.min(1000));
        }
        config.validate()?;
        Ok(config)
    }

    pub fn from_toml(text: &str) -> Result<ServerConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn flush_policy(&self) -> Result<FlushPolicy, String> {
        match self.log.flush.as_str() {
            "always" => Ok(FlushPolicy::Always),
            "never" => Ok(FlushPolicy::Never),
            "interval" => Ok(FlushPolicy::IntervalMs(self.log.flush_interval_ms)),
            other => Err(format!("log.flush must be always, interval or never, not {other:?}")),
        }
    }

    /// The engine configuration of a partition of a topic with no settings
    /// of its own (see [`crate::topic_config::log_config`] for a topic's).
    pub fn log_config(&self) -> LogConfig {
        let engine = LogConfig::default();
        LogConfig {
            flush: self.flush_policy().expect("validated at load"),
            segment_bytes_max: self.log.segment_bytes_max,
            segment_ms_max: self.log.segment_ms_max,
            preallocate_bytes_max: self.log.preallocate_bytes_max,
            index_interval_bytes: self.log.index_interval_bytes,
            batch_bytes_max: self.limits.batch_bytes_max,
            write_bytes_max: engine.write_bytes_max,
            write_buffer_bytes_max: self.log.write_buffer_bytes_max,
            cache_bytes_max: self.log.cache_bytes_max,
            read_ahead_bytes: self.log.read_ahead_bytes,
            retention_ms: self.log.retention_ms,
            retention_bytes: self.log.retention_bytes,
            timestamp_type: crate::topic_config::parse_timestamp_type(&self.log.message_timestamp_type)
                .expect("validated at load"),
            timestamp_before_max_ms: self.log.message_timestamp_before_max_ms,
            timestamp_after_max_ms: self.log.message_timestamp_after_max_ms,
            ..engine
        }
    }

    /// The memory budgets of one shard.
    pub fn pool_config(&self) -> PoolConfig {
        PoolConfig {
            write_buffer_bytes_max: self.memory.shard_write_buffer_bytes_max,
            cache_bytes_max: self.memory.shard_cache_bytes_max,
            read_ahead_bytes_max: self.memory.shard_read_ahead_bytes_max,
            index_cache_bytes_max: self.memory.shard_index_cache_bytes_max,
        }
    }

    /// Where to serve `/metrics`, if anywhere.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, String> {
        match self.metrics_listen.as_str() {
            "off" | "" => Ok(None),
            addr => addr
                .parse()
                .map(Some)
                .map_err(|_| format!("metrics_listen must be an address such as 127.0.0.1:9644, or off; not {addr:?}")),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        self.flush_policy()?;
        self.validate_cluster()?;
        self.groups.validate()?;
        if self.log.flush == "interval" && self.log.flush_interval_ms == 0 {
            return Err("log.flush_interval_ms must be at least 1".into());
        }
        crate::topic_config::parse_timestamp_type(&self.log.message_timestamp_type)
            .map_err(|e| format!("log.message_timestamp_type: {e}"))?;
        self.metrics_addr()?;
        self.log_config().validate().map_err(|e| format!("log settings: {e}"))?;
        let m = &self.memory;
        let log = self.log_config();
        if m.shard_write_buffer_bytes_max < log.write_buffer_bytes_max + 2 * log.write_bytes_max {
            return Err("memory.shard_write_buffer_bytes_max must hold one partition's write buffer \
                        (log.write_buffer_bytes_max) and two writes in flight"
                .into());
        }
        if m.shard_read_ahead_bytes_max < self.log.read_ahead_bytes {
            return Err(
                "memory.shard_read_ahead_bytes_max must hold one read-ahead chunk (log.read_ahead_bytes)".into()
            );
        }
        let l = &self.limits;
        if l.frame_bytes_max < l.batch_bytes_max as usize + 1024 {
            return Err("limits.frame_bytes_max must exceed limits.batch_bytes_max by at least 1 KiB".into());
        }
        if l.connection_inflight_bytes_max < l.frame_bytes_max + l.fetch_bytes_max + l.batch_bytes_max as usize {
            return Err("limits.connection_inflight_bytes_max must hold one largest frame plus one largest fetch \
                        response (fetch_bytes_max + batch_bytes_max)"
                .into());
        }
        if l.connections_max == 0 || l.topic_partitions_max == 0 || l.partitions_max == 0 {
            return Err("limits.connections_max, topic_partitions_max and partitions_max must be at least 1".into());
        }
        if l.shard_channel_capacity == 0 || l.fetch_bytes_max == 0 {
            return Err("limits.shard_channel_capacity and fetch_bytes_max must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_are_valid() {
        let c = ServerConfig::load(None, &Overrides::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7070");
        assert_eq!(c.data_dir, PathBuf::from("./cairn-data"));
        assert_eq!(c.flush_policy().unwrap(), FlushPolicy::Always);
    }

    #[test]
    fn a_file_overrides_defaults_and_flags_override_the_file() {
        let c = ServerConfig::from_toml(
            "listen = \"0.0.0.0:9000\"\ncores = 2\n[log]\nflush = \"interval\"\nflush_interval_ms = 50\n",
        )
        .unwrap();
        assert_eq!(c.cores, 2);
        assert_eq!(c.flush_policy().unwrap(), FlushPolicy::IntervalMs(50));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cairn.toml");
        std::fs::write(&path, "cores = 2\n").unwrap();
        let c = ServerConfig::load(Some(&path), &Overrides { cores: Some(1), ..Overrides::default() }).unwrap();
        assert_eq!(c.cores, 1);
    }

    #[test]
    fn the_sample_file_in_the_docs_parses_to_the_defaults() {
        let doc = include_str!("../../docs/configuration.md");
        let start = doc.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let end = start + doc[start..].find("```").expect("its end");
        let c = ServerConfig::from_toml(&doc[start..end]).unwrap();
        let expected = ServerConfig {
            data_dir: PathBuf::from("/var/lib/cairn"),
            listen: "0.0.0.0:7070".parse().unwrap(),
            ..ServerConfig::default()
        };
        assert_eq!(c, expected, "docs/configuration.md and the defaults disagree");
    }

    #[test]
    fn a_joining_broker_needs_its_id_and_replication_address_and_no_peers() {
        let join = |extra: &str| ServerConfig::from_toml(&format!("[cluster]\njoin = \"127.0.0.1:8071\"\n{extra}"));
        let c = join("node_id = 4\nreplication_listen = \"127.0.0.1:8074\"").unwrap();
        c.validate().unwrap();
        let cluster = c.cluster_config().expect("cluster mode");
        assert_eq!(cluster.join, Some("127.0.0.1:8071".parse().unwrap()));
        assert!(cluster.peers.is_empty());
        let e = join("replication_listen = \"127.0.0.1:8074\"").unwrap().validate().unwrap_err();
        assert!(e.contains("--join needs --node-id"), "{e}");
        let e = join("node_id = 4").unwrap().validate().unwrap_err();
        assert!(e.contains("--join needs --replication-listen"), "{e}");
        let e = join("node_id = 1\npeers = \"1=127.0.0.1:8071\"").unwrap().validate().unwrap_err();
        assert!(e.contains("exclude each other"), "{e}");
        let e = join("node_id = 4\nreplication_listen = \"0.0.0.0:8074\"").unwrap().validate().unwrap_err();
        assert!(e.contains("needs a host and port the others can reach"), "{e}");
        let e = join("node_id = 4\nreplication_listen = \"127.0.0.1:8071\"").unwrap().validate().unwrap_err();
        assert!(e.contains("own --replication-listen"), "{e}");
        let e = ServerConfig::from_toml("[cluster]\njoin = \"nowhere\"").unwrap().validate().unwrap_err();
        assert!(e.contains("not an address"), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_the_key_named() {
        let e = ServerConfig::from_toml("listn = \"x\"").unwrap_err();
        assert!(e.contains("listn"), "{e}");
        let c = ServerConfig::from_toml("[log]\nflush = \"sometimes\"").unwrap();
        assert!(c.validate().unwrap_err().contains("log.flush"));
        let c = ServerConfig::from_toml("[limits]\nframe_bytes_max = 10").unwrap();
        assert!(c.validate().unwrap_err().contains("frame_bytes_max"));
    }
}
