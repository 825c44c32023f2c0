//! The entry point: a handle on a broker (one of the bootstrap addresses)
//! that (re)connects on demand, caches which shard owns each partition,
//! and offers the admin API. Producers and consumers are built from it.
//!
//! The bootstrap is a comma-separated list of `host:port`, as in Kafka's
//! `bootstrap.servers`: a connection tries the address that worked last,
//! then the others in order, so a client outlives any broker of the list
//! it does not need.
//!
//! Partition traffic goes straight to the owning shard when the broker
//! announces shard ports (one connection per shard, opened on first use);
//! otherwise, or if a shard port cannot be reached, it goes through the
//! bootstrap connection and the broker forwards it between cores.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::ErrorCode;
use protocol::api::{
    ConfigOp, CreateTopicRequest, DescribeTopicResponse, ListOffsetsTopic, OffsetSpec, RecoveredPartition, Request,
    Response, TopicSummary,
};
use protocol::types::Offset;
use tokio::sync::Mutex as AsyncMutex;

use crate::conn::{Connection, check};
use crate::error::{ClientError, Result};

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` of the brokers, comma-separated (`a:7070,b:7070`).
    pub bootstrap: String,
    /// Sent in the handshake; shows in the broker's logs.
    pub client_name: String,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
}

impl ClientConfig {
    pub fn new(bootstrap: impl Into<String>) -> ClientConfig {
        ClientConfig {
            bootstrap: bootstrap.into(),
            client_name: format!("cairn-client/{}", env!("CARGO_PKG_VERSION")),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// The addresses of a bootstrap list: comma-separated `host:port`,
/// spaces around them ignored.
fn bootstrap_addrs(list: &str) -> Result<Vec<String>> {
    let addrs: Vec<String> = list.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_owned).collect();
    if addrs.is_empty() {
        return Err(ClientError::InvalidArgument(format!(
            "bootstrap {list:?} names no broker: use host:port[,host:port...]"
        )));
    }
    if let Some(bad) =
        addrs.iter().find(|a| a.rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err()))
    {
        return Err(ClientError::InvalidArgument(format!("bootstrap address {bad:?} is not host:port")));
    }
    Ok(addrs)
}

/// A shard's direct connection, or when the last attempt failed.
#[derive(Clone)]
enum Direct {
    Up(Connection),
    FailedAt(Instant),
}

/// How long a shard port that refused a connection is left alone.
const DIRECT_RETRY_AFTER: Duration = Duration::from_secs(5);

struct Inner {
    config: ClientConfig,
    /// The bootstrap list, parsed.
    addrs: Vec<String>,
    /// The address of `addrs` the last connection was made to.
    current: Mutex<usize>,
    conn: AsyncMutex<Option<Connection>>,
    /// Shard ports from the last handshake.
    shard_ports: Mutex<Vec<u16>>,
    /// One lock per shard: a slow connect to one shard port holds up only
    /// that shard's traffic.
    direct: Mutex<HashMap<u32, Arc<AsyncMutex<Option<Direct>>>>>,
    /// The owning shard of each partition, per topic.
    topics: Mutex<HashMap<String, Vec<u32>>>,
}

/// A handle on a broker. Cheap to clone; share one per application.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Connects to the broker (and fails if it cannot).
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        let addrs = bootstrap_addrs(&config.bootstrap)?;
        let client = Client {
            inner: Arc::new(Inner {
                config,
                addrs,
                current: Mutex::new(0),
                conn: AsyncMutex::new(None),
                shard_ports: Mutex::new(Vec::new()),
                direct: Mutex::new(HashMap::new()),
                topics: Mutex::new(HashMap::new()),
            }),
        };
        client.connection().await?;
        Ok(client)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The live connection, reconnecting if the last one died.
    pub async fn connection(&self) -> Result<Connection> {
        let mut conn = self.inner.conn.lock().await;
        if let Some(c) = conn.as_ref()
            && !c.is_dead()
        {
            return Ok(c.clone());
        }
        let config = &self.inner.config;
        let addrs = &self.inner.addrs;
        let first = *self.inner.current.lock().expect("not poisoned");
        let mut failures = Vec::new();
        for i in (0..addrs.len()).map(|k| (first + k) % addrs.len()) {
            let addr = &addrs[i];
            match tokio::time::timeout(config.connect_timeout, Connection::connect(addr, &config.client_name)).await {
                Ok(Ok(fresh)) => {
                    *self.inner.current.lock().expect("not poisoned") = i;
                    fresh.shard_ports.clone_into(&mut self.inner.shard_ports.lock().expect("not poisoned"));
                    *conn = Some(fresh.clone());
                    return Ok(fresh);
                }
                // A broker that answers with an error (not a dead address)
                // is not tried around: its refusal is the answer.
                Ok(Err(e @ ClientError::Broker { .. })) => return Err(e),
                Ok(Err(ClientError::Connect { reason, .. })) => failures.push(format!("{addr}: {reason}")),
                Ok(Err(e)) => failures.push(format!("{addr}: {e}")),
                Err(_) => failures.push(format!("{addr}: timed out")),
            }
        }
        Err(ClientError::Connect { addr: config.bootstrap.clone(), reason: failures.join("; ") })
    }

    /// A connection to `shard` (its own port), falling back to the bootstrap
    /// connection when the broker has no shard ports or the port is unreachable.
    pub async fn connection_for(&self, shard: Option<u32>) -> Result<Connection> {
        let port = shard.and_then(|s| self.inner.shard_ports.lock().expect("not poisoned").get(s as usize).copied());
        let (Some(shard), Some(port)) = (shard, port) else { return self.connection().await };
        let slot = self.inner.direct.lock().expect("not poisoned").entry(shard).or_default().clone();
        let mut direct = slot.lock().await;
        match &*direct {
            Some(Direct::Up(c)) if !c.is_dead() => return Ok(c.clone()),
            Some(Direct::FailedAt(t)) if t.elapsed() < DIRECT_RETRY_AFTER => {
                drop(direct);
                return self.connection().await;
            }
            _ => {}
        }
        let config = &self.inner.config;
        let bootstrap = &self.inner.addrs[*self.inner.current.lock().expect("not poisoned")];
        let host = bootstrap.rsplit_once(':').map_or(bootstrap.as_str(), |(h, _)| h);
        let addr = format!("{host}:{port}");
        match tokio::time::timeout(config.connect_timeout, Connection::connect(&addr, &config.client_name)).await {
            Ok(Ok(c)) => {
                *direct = Some(Direct::Up(c.clone()));
                Ok(c)
            }
            failed => {
                let reason = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".into(),
                };
                tracing::debug!(shard, addr, reason, "shard port unreachable; using the bootstrap connection");
                *direct = Some(Direct::FailedAt(Instant::now()));
                drop(direct);
                self.connection().await
            }
        }
    }

    /// The shard owning `partition` of `topic`, if known.
    pub fn shard_of(&self, topic: &str, partition: u32) -> Option<u32> {
        self.inner.topics.lock().expect("not poisoned").get(topic).and_then(|s| s.get(partition as usize).copied())
    }

    /// Sends a request on the live connection.
    pub async fn call(&self, request: &Request) -> Result<Response> {
        self.connection().await?.call(request).await
    }

    /// Creates a topic with `config`'s settings (Kafka names: `retention.ms`,
    /// `segment.bytes`, …); the rest come from the broker.
    pub async fn create_topic(&self, name: &str, partitions: u32, config: TopicConfig) -> Result<()> {
        check_name(name)?;
        let request =
            Request::CreateTopic(CreateTopicRequest { name: name.into(), partitions, configs: config.entries });
        match self.call(&request).await? {
            Response::CreateTopic => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Changes a topic's settings while it serves: `set` values, and
    /// `delete` settings back to the broker's.
    pub async fn alter_topic_config(&self, name: &str, set: &[(String, String)], delete: &[String]) -> Result<()> {
        check_name(name)?;
        let ops = set
            .iter()
            .map(|(key, value)| ConfigOp::Set { key: key.clone(), value: value.clone() })
            .chain(delete.iter().map(|key| ConfigOp::Delete { key: key.clone() }))
            .collect();
        match self.call(&Request::AlterTopicConfig { name: name.into(), ops }).await? {
            Response::AlterTopicConfig => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Reopens partitions of `name` whose storage failed (all that need it
    /// when `partitions` is empty); one outcome per partition reopened.
    pub async fn recover_partitions(&self, name: &str, partitions: &[u32]) -> Result<Vec<RecoveredPartition>> {
        check_name(name)?;
        match self.call(&Request::RecoverPartitions { name: name.into(), partitions: partitions.to_vec() }).await? {
            Response::RecoverPartitions(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        check_name(name)?;
        self.forget_topic(name);
        match self.call(&Request::DeleteTopic { name: name.into() }).await? {
            Response::DeleteTopic => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn list_topics(&self) -> Result<Vec<TopicSummary>> {
        match self.call(&Request::ListTopics).await? {
            Response::ListTopics(t) => Ok(t),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn describe_topic(&self, name: &str) -> Result<DescribeTopicResponse> {
        check_name(name)?;
        match self.call(&Request::DescribeTopic { name: name.into() }).await? {
            Response::DescribeTopic(d) => {
                let shards = d.partitions.iter().map(|p| p.shard).collect();
                self.inner.topics.lock().expect("not poisoned").insert(name.into(), shards);
                Ok(d)
            }
            other => Err(unexpected(&other)),
        }
    }

    /// The topic's partition count (cached after the first lookup).
    pub async fn partitions(&self, topic: &str) -> Result<u32> {
        if let Some(shards) = self.inner.topics.lock().expect("not poisoned").get(topic) {
            return Ok(shards.len() as u32);
        }
        Ok(self.describe_topic(topic).await?.partitions.len() as u32)
    }

    /// Resolves `spec` for each of `partitions` (all of them when empty).
    pub async fn list_offsets(&self, topic: &str, partitions: &[u32], spec: OffsetSpec) -> Result<Vec<(u32, Offset)>> {
        check_name(topic)?;
        let parts: Vec<u32> =
            if partitions.is_empty() { (0..self.partitions(topic).await?).collect() } else { partitions.to_vec() };
        let request = Request::ListOffsets(vec![ListOffsetsTopic {
            name: topic.into(),
            partitions: parts.iter().map(|&p| (p, spec)).collect(),
        }]);
        match self.call(&request).await? {
            Response::ListOffsets(topics) => {
                let mut out = Vec::new();
                for t in topics {
                    for p in t.partitions {
                        check(p.error, || format!("{topic}/{}", p.partition))?;
                        out.push((p.partition, p.offset));
                    }
                }
                Ok(out)
            }
            other => Err(unexpected(&other)),
        }
    }

    pub(crate) fn forget_topic(&self, topic: &str) {
        self.inner.topics.lock().expect("not poisoned").remove(topic);
    }
}

/// Settings for a new topic, by Kafka's names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicConfig {
    pub entries: Vec<(String, String)>,
}

impl TopicConfig {
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> TopicConfig {
        self.entries.push((key.into(), value.into()));
        self
    }
}

/// Refuses a name the broker would refuse anyway, before it is encoded
/// (the wire's strings are at most 64 KiB).
fn check_name(name: &str) -> Result<()> {
    protocol::names::validate_topic_name(name).map_err(ClientError::InvalidArgument)
}

pub(crate) fn unexpected(r: &Response) -> ClientError {
    ClientError::Protocol(format!("unexpected response {r:?}"))
}

/// Whether an error means the topic's partition count may have changed.
pub(crate) fn is_metadata_error(e: &ClientError) -> bool {
    matches!(e.code(), Some(ErrorCode::UNKNOWN_TOPIC | ErrorCode::UNKNOWN_PARTITION))
}

#[cfg(test)]
mod bootstrap_tests {
    use super::bootstrap_addrs;

    #[test]
    fn a_bootstrap_list_is_comma_separated_host_ports() {
        assert_eq!(bootstrap_addrs("a:1, b:2 ,,c:3").unwrap(), vec!["a:1", "b:2", "c:3"]);
        assert_eq!(bootstrap_addrs("[::1]:7070").unwrap(), vec!["[::1]:7070"]);
        for bad in ["", " , ", "a", "a:", ":7070", "a:port", "a:70000"] {
            assert!(bootstrap_addrs(bad).is_err(), "{bad:?} was taken");
        }
    }
}
