//! The entry point: a handle on a cluster (reached through one of the
//! bootstrap addresses) that (re)connects on demand, caches where each
//! partition's leader is (broker and shard, from the `Metadata` API, and
//! from the hints `NOT_LEADER` answers carry), and offers the admin API.
//! Producers and consumers are built from it.
//!
//! The bootstrap is a comma-separated list of `host:port`, as in Kafka's
//! `bootstrap.servers`: a connection tries the address that worked last,
//! then the others in order, so a client outlives any broker of the list
//! it does not need.
//!
//! Partition traffic goes to the partition's leader, straight to the
//! owning shard when that broker announces shard ports (one connection per
//! shard, opened on first use); otherwise, or if a shard port cannot be
//! reached, through the broker's main connection, and the broker forwards
//! it between cores. A leader that cannot be reached at all is tried
//! through the bootstrap connection, whose answer says where to go.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::ErrorCode;
use protocol::api::{
    ConfigOp, CreateTopicRequest, DescribeTopicResponse, ListOffsetsTopic, MetadataResponse, OffsetSpec,
    RecoveredPartition, Request, Response, TopicSummary,
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
    /// How long a metadata request may take before the next broker of the
    /// bootstrap list is asked (a frozen broker answers nothing). A broker
    /// waits up to 500 ms for its peers' reports, so keep this above 1 s.
    pub metadata_timeout: Duration,
}

impl ClientConfig {
    pub fn new(bootstrap: impl Into<String>) -> ClientConfig {
        ClientConfig {
            bootstrap: bootstrap.into(),
            client_name: format!("cairn-client/{}", env!("CARGO_PKG_VERSION")),
            connect_timeout: Duration::from_secs(10),
            metadata_timeout: Duration::from_secs(2),
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

/// Where a partition's requests go: the broker that leads it (by node id)
/// and the shard that owns it there. `None`s fall back to the bootstrap
/// connection, whose broker forwards between its cores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    pub broker: Option<u32>,
    pub shard: Option<u32>,
}

/// One partition's route and the leader epoch it was learned at (a hint
/// from an older epoch never overwrites it).
#[derive(Debug, Clone, Copy, Default)]
struct Known {
    route: Route,
    epoch: u32,
}

/// The connections to one broker address: its main one, and one per shard
/// port (opened on first use).
struct Link {
    addr: String,
    conn: AsyncMutex<Option<Connection>>,
    /// Shard ports from the last handshake.
    shard_ports: Mutex<Vec<u16>>,
    /// One lock per shard: a slow connect to one shard port holds up only
    /// that shard's traffic.
    direct: Mutex<HashMap<u32, Arc<AsyncMutex<Option<Direct>>>>>,
}

impl Link {
    fn new(addr: String) -> Link {
        Link {
            addr,
            conn: AsyncMutex::new(None),
            shard_ports: Mutex::new(Vec::new()),
            direct: Mutex::new(HashMap::new()),
        }
    }

    /// The live main connection, connecting if there is none.
    async fn connection(&self, config: &ClientConfig) -> Result<Connection> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref()
            && !c.is_dead()
        {
            return Ok(c.clone());
        }
        match tokio::time::timeout(config.connect_timeout, Connection::connect(&self.addr, &config.client_name)).await {
            Ok(Ok(fresh)) => {
                fresh.shard_ports.clone_into(&mut self.shard_ports.lock().expect("not poisoned"));
                *conn = Some(fresh.clone());
                Ok(fresh)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ClientError::Connect { addr: self.addr.clone(), reason: "timed out".into() }),
        }
    }

    /// A connection to `shard`'s own port, or the main connection when the
    /// broker has no shard ports or the port is unreachable.
    async fn shard_connection(&self, shard: u32, config: &ClientConfig) -> Result<Connection> {
        let main = self.connection(config).await?;
        let port = self.shard_ports.lock().expect("not poisoned").get(shard as usize).copied();
        let Some(port) = port else { return Ok(main) };
        let slot = self.direct.lock().expect("not poisoned").entry(shard).or_default().clone();
        let mut direct = slot.lock().await;
        match &*direct {
            Some(Direct::Up(c)) if !c.is_dead() => return Ok(c.clone()),
            Some(Direct::FailedAt(t)) if t.elapsed() < DIRECT_RETRY_AFTER => return Ok(main),
            _ => {}
        }
        let host = self.addr.rsplit_once(':').map_or(self.addr.as_str(), |(h, _)| h);
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
                tracing::debug!(shard, addr, reason, "shard port unreachable; using the broker's main connection");
                *direct = Some(Direct::FailedAt(Instant::now()));
                Ok(main)
            }
        }
    }
}

struct Inner {
    config: ClientConfig,
    /// The bootstrap list, parsed.
    addrs: Vec<String>,
    /// The address of `addrs` the last connection was made to.
    current: Mutex<usize>,
    /// One per broker address, bootstrap or learned.
    links: Mutex<HashMap<String, Arc<Link>>>,
    /// Each broker's client address, from the last metadata.
    brokers: Mutex<HashMap<u32, String>>,
    /// Each partition's route, per topic.
    topics: Mutex<HashMap<String, Vec<Known>>>,
}

/// A handle on a cluster. Cheap to clone; share one per application.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// `host:port` with an unspecified host (`0.0.0.0`, `::`) made the host of
/// `reached` (the address the client reached that broker's peer on).
fn resolve_advertised(address: &str, reached: &str) -> String {
    let Some((host, port)) = address.rsplit_once(':') else { return address.to_owned() };
    if matches!(host, "0.0.0.0" | "::" | "[::]" | "") {
        let reached_host = reached.rsplit_once(':').map_or(reached, |(h, _)| h);
        format!("{reached_host}:{port}")
    } else {
        address.to_owned()
    }
}

impl Client {
    /// Connects to a broker of the bootstrap list (and fails if none answers).
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        let addrs = bootstrap_addrs(&config.bootstrap)?;
        let client = Client {
            inner: Arc::new(Inner {
                config,
                addrs,
                current: Mutex::new(0),
                links: Mutex::new(HashMap::new()),
                brokers: Mutex::new(HashMap::new()),
                topics: Mutex::new(HashMap::new()),
            }),
        };
        client.connection().await?;
        Ok(client)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    fn link(&self, addr: &str) -> Arc<Link> {
        self.inner
            .links
            .lock()
            .expect("not poisoned")
            .entry(addr.to_owned())
            .or_insert_with(|| Arc::new(Link::new(addr.to_owned())))
            .clone()
    }

    fn bootstrap_link(&self) -> Arc<Link> {
        let i = *self.inner.current.lock().expect("not poisoned");
        self.link(&self.inner.addrs[i])
    }

    /// A live connection to a broker of the bootstrap list: the one that
    /// worked last, then the others in order.
    pub async fn connection(&self) -> Result<Connection> {
        let config = &self.inner.config;
        let addrs = &self.inner.addrs;
        let first = *self.inner.current.lock().expect("not poisoned");
        let mut failures = Vec::new();
        for i in (0..addrs.len()).map(|k| (first + k) % addrs.len()) {
            let addr = &addrs[i];
            match self.link(addr).connection(config).await {
                Ok(fresh) => {
                    *self.inner.current.lock().expect("not poisoned") = i;
                    return Ok(fresh);
                }
                // A broker that answers with an error (not a dead address)
                // is not tried around: its refusal is the answer.
                Err(e @ ClientError::Broker { .. }) => return Err(e),
                Err(ClientError::Connect { reason, .. }) => failures.push(format!("{addr}: {reason}")),
                Err(e) => failures.push(format!("{addr}: {e}")),
            }
        }
        Err(ClientError::Connect { addr: config.bootstrap.clone(), reason: failures.join("; ") })
    }

    /// A connection that reaches `route`: its broker (on the shard's own
    /// port when there is one), or the bootstrap connection when the route
    /// names no broker or its broker cannot be reached (that broker then
    /// answers `NOT_LEADER` or forwards, and the caller learns anew).
    pub async fn connection_for(&self, route: Route) -> Result<Connection> {
        let config = &self.inner.config;
        let addr = route.broker.and_then(|b| self.inner.brokers.lock().expect("not poisoned").get(&b).cloned());
        let link = match addr {
            Some(addr) => self.link(&addr),
            None if route.broker.is_some() => return self.connection().await,
            None => {
                self.connection().await?;
                self.bootstrap_link()
            }
        };
        let reached = match route.shard {
            Some(shard) => link.shard_connection(shard, config).await,
            None => link.connection(config).await,
        };
        match reached {
            Ok(c) => Ok(c),
            Err(e @ ClientError::Broker { .. }) => Err(e),
            Err(e) => {
                tracing::debug!(broker = ?route.broker, addr = link.addr, error = %e,
                    "a partition's leader is unreachable; using the bootstrap connection");
                self.connection().await
            }
        }
    }

    /// Where `partition` of `topic`'s requests go, if known.
    pub fn route_of(&self, topic: &str, partition: u32) -> Route {
        self.inner
            .topics
            .lock()
            .expect("not poisoned")
            .get(topic)
            .and_then(|s| s.get(partition as usize))
            .map_or_else(Route::default, |k| k.route)
    }

    /// Takes a `NOT_LEADER` answer's hint: `node` leads `partition` of
    /// `topic` in `epoch` (its shard there unknown until the next metadata).
    pub(crate) fn learn_leader(&self, topic: &str, partition: u32, node: u32, epoch: u32) {
        let mut topics = self.inner.topics.lock().expect("not poisoned");
        if let Some(known) = topics.get_mut(topic).and_then(|s| s.get_mut(partition as usize))
            && epoch >= known.epoch
            && known.route.broker != Some(node)
        {
            *known = Known { route: Route { broker: Some(node), shard: None }, epoch };
        }
    }

    /// Asks for the brokers and the leaders of `topics` (all topics when
    /// empty), and routes by the answer from now on.
    pub async fn metadata(&self, topics: &[&str]) -> Result<MetadataResponse> {
        for t in topics {
            check_name(t)?;
        }
        let request = Request::Metadata { topics: topics.iter().map(|&t| t.to_owned()).collect() };
        let conn = self.connection().await?;
        let reached = self.inner.addrs[*self.inner.current.lock().expect("not poisoned")].clone();
        let timeout = self.inner.config.metadata_timeout;
        let answer = tokio::time::timeout(timeout, conn.call(&request))
            .await
            .map_err(|_| ClientError::Timeout(timeout.as_millis() as u64))?;
        let m = match answer? {
            Response::Metadata(m) => m,
            other => return Err(unexpected(&other)),
        };
        {
            let mut brokers = self.inner.brokers.lock().expect("not poisoned");
            for b in &m.brokers {
                if !b.address.is_empty() {
                    brokers.insert(b.node_id, resolve_advertised(&b.address, &reached));
                }
            }
        }
        let mut known = self.inner.topics.lock().expect("not poisoned");
        for t in &m.topics {
            if t.error.is_ok() {
                let old = known.remove(&t.name).unwrap_or_default();
                let routes = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let answer =
                            Known { route: Route { broker: p.leader, shard: p.leader_shard }, epoch: p.leader_epoch };
                        // A hint of a newer epoch (a NOT_LEADER answer) is
                        // not undone by a broker that knows less.
                        match old.get(p.partition as usize) {
                            Some(k) if k.epoch > answer.epoch && k.route.broker.is_some() => *k,
                            _ => answer,
                        }
                    })
                    .collect();
                known.insert(t.name.clone(), routes);
            } else {
                known.remove(&t.name);
            }
        }
        Ok(m)
    }

    /// Learns the routes of `topic` again (after an error that says they
    /// moved); errors are the caller's next attempt's to meet.
    ///
    /// A broker cut off from the others knows no newer leader than the one
    /// that just failed, so an answer that leaves a partition without a
    /// leader (or fails) moves on to the next bootstrap broker, once round
    /// the list.
    pub(crate) async fn refresh(&self, topic: &str) {
        let n = self.inner.addrs.len();
        for attempt in 0..n {
            match self.metadata(&[topic]).await {
                Ok(m)
                    if m.topics.iter().all(|t| t.partitions.iter().all(|p| p.error.is_ok() && p.leader.is_some())) =>
                {
                    return;
                }
                Ok(_) => tracing::debug!(topic, attempt, "the metadata names no leader for some partition"),
                Err(e) => tracing::debug!(topic, attempt, error = %e, "refreshing the metadata failed"),
            }
            let mut current = self.inner.current.lock().expect("not poisoned");
            *current = (*current + 1) % n;
        }
    }

    /// Hands the leadership of `partition` of `topic` to `broker`.
    pub async fn elect_leader(&self, topic: &str, partition: u32, broker: u32) -> Result<()> {
        check_name(topic)?;
        let request = Request::ElectLeader { name: topic.into(), partition, broker };
        match self.call(&request).await? {
            Response::ElectLeader => {
                self.refresh(topic).await;
                Ok(())
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Starts moving `partition` of `topic` to `replicas` (the first its
    /// preferred leader); the move finishes in the background
    /// ([`Client::wait_reassigned`]).
    pub async fn reassign_partition(&self, topic: &str, partition: u32, replicas: &[u32]) -> Result<()> {
        check_name(topic)?;
        let request = Request::ReassignPartition { name: topic.into(), partition, replicas: replicas.to_vec() };
        match self.call(&request).await? {
            Response::ReassignPartition => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Takes broker `broker`, one that joined (`--join`) and holds no
    /// replica, out of the cluster (`cairn broker remove`).
    pub async fn remove_broker(&self, broker: u32) -> Result<()> {
        match self.call(&Request::RemoveBroker { broker }).await? {
            Response::RemoveBroker => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Waits until the cluster's metadata names `replicas` as the
    /// partition's replicas, led by one of them; `false` if `timeout`
    /// passed first.
    pub async fn wait_reassigned(&self, topic: &str, partition: u32, replicas: &[u32], timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(m) = self.metadata(&[topic]).await {
                let done = m.topics.iter().filter(|t| t.name == topic).flat_map(|t| &t.partitions).any(|p| {
                    p.partition == partition
                        && p.replicas == replicas
                        && p.leader.is_some_and(|l| replicas.contains(&l))
                });
                if done {
                    self.refresh(topic).await;
                    return true;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            // A poll of the metadata; a move takes seconds.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
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
            Response::DescribeTopic(d) => Ok(d),
            other => Err(unexpected(&other)),
        }
    }

    /// The topic's partition count (cached, with the routes, after the
    /// first lookup).
    pub async fn partitions(&self, topic: &str) -> Result<u32> {
        if let Some(routes) = self.inner.topics.lock().expect("not poisoned").get(topic) {
            return Ok(routes.len() as u32);
        }
        let m = self.metadata(&[topic]).await?;
        let t = m
            .topics
            .iter()
            .find(|t| t.name == topic)
            .ok_or_else(|| ClientError::Protocol(format!("the metadata answer has no topic {topic:?}")))?;
        check(t.error, || format!("topic {topic}"))?;
        Ok(t.partitions.len() as u32)
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

/// Whether an error means a partition's leader may have moved: its routes
/// are learned again before the next attempt.
pub(crate) fn is_routing_error(e: &ClientError) -> bool {
    matches!(e, ClientError::Connect { .. } | ClientError::ConnectionLost(_) | ClientError::Timeout(_))
        || matches!(
            e.code(),
            Some(ErrorCode::NOT_LEADER | ErrorCode::LEADER_NOT_AVAILABLE | ErrorCode::PARTITION_UNAVAILABLE)
        )
}

#[cfg(test)]
mod bootstrap_tests {
    use super::bootstrap_addrs;

    #[test]
    fn an_unspecified_advertised_host_becomes_the_host_the_client_reached() {
        use super::resolve_advertised;
        assert_eq!(resolve_advertised("0.0.0.0:7071", "10.0.0.5:7070"), "10.0.0.5:7071");
        assert_eq!(resolve_advertised("[::]:7071", "db1:7070"), "db1:7071");
        assert_eq!(resolve_advertised("127.0.0.1:7071", "db1:7070"), "127.0.0.1:7071");
    }

    #[test]
    fn a_bootstrap_list_is_comma_separated_host_ports() {
        assert_eq!(bootstrap_addrs("a:1, b:2 ,,c:3").unwrap(), vec!["a:1", "b:2", "c:3"]);
        assert_eq!(bootstrap_addrs("[::1]:7070").unwrap(), vec!["[::1]:7070"]);
        for bad in ["", " , ", "a", "a:", ":7070", "a:port", "a:70000"] {
            assert!(bootstrap_addrs(bad).is_err(), "{bad:?} was taken");
        }
    }
}
