//! Brokers of one cluster as processes on this machine: each on free
//! ports (client and replication), with `--node-id` and `--peers`.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_client::{
    Client, ClientConfig, ClientError, ErrorCode, Offset, OffsetSpec, Producer, ProducerRecord, TopicConfig,
};

use crate::Broker;
use crate::history::{Acked, Copy, Report};
use crate::netns::Namespaces;

pub struct Cluster {
    pub brokers: Vec<Broker>,
    pub peers: String,
    /// The namespaces the brokers run in (dropped after them).
    pub namespaces: Option<Namespaces>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The brokers go before their namespaces.
        self.brokers.clear();
    }
}

/// Replication ports come from below the system's ephemeral range
/// (`ip_local_port_range` starts at 32768): a port the system chose for us
/// and we released would be handed out again to the next `bind(0)` or
/// outgoing connection (another broker's client listener, say) before the
/// broker that was to listen there comes up.
const REPLICATION_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A replication port free now, never handed out twice by this process.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(REPLICATION_PORTS.end - REPLICATION_PORTS.start);
    // Test processes of one run start apart in the range.
    let start = std::process::id() * 97 % span;
    for _ in 0..span {
        let k = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = REPLICATION_PORTS.start + u16::try_from(k).expect("within the range");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {REPLICATION_PORTS:?}");
}

impl Cluster {
    /// Starts `n` brokers (node ids 1..=n) with `extra` flags each.
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        let peers = (1..=n).map(|id| format!("{id}=127.0.0.1:{}", free_port())).collect::<Vec<_>>().join(",");
        let brokers = (1..=n)
            .map(|id| {
                let id = id.to_string();
                let mut flags = vec!["--node-id", id.as_str(), "--peers", peers.as_str()];
                flags.extend_from_slice(extra);
                Broker::start(&flags)
            })
            .collect();
        Cluster { brokers, peers, namespaces: None }
    }

    /// Starts `n` brokers each in a network namespace of its own (broker
    /// `k` at [`Namespaces::ip`]), so the network between them can be cut;
    /// why not, if this machine cannot make namespaces.
    pub fn start_in_namespaces(n: usize, extra: &[&str]) -> Result<Cluster, String> {
        let namespaces = Namespaces::create(n)?;
        let peers = (0..n).map(|k| format!("{}={}:8070", k + 1, namespaces.ip(k))).collect::<Vec<_>>().join(",");
        let brokers = (0..n)
            .map(|k| {
                let id = (k + 1).to_string();
                let mut flags = vec!["--node-id", id.as_str(), "--peers", peers.as_str()];
                flags.extend_from_slice(extra);
                Broker::start_wrapped(&namespaces.exec(k), &namespaces.ip(k), &flags)
            })
            .collect();
        Ok(Cluster { brokers, peers, namespaces: Some(namespaces) })
    }

    /// Starts broker `node` with `extra` flags, joining the running cluster
    /// through broker 1 (`--join`); the reason if it does not come up.
    pub fn join(&mut self, node: u32, extra: &[&str]) -> Result<&mut Broker, String> {
        let contact = self.replication_address(1);
        let listen = format!("127.0.0.1:{}", free_port());
        let id = node.to_string();
        let mut flags = vec!["--node-id", id.as_str(), "--replication-listen", listen.as_str(), "--join", &contact];
        flags.extend_from_slice(extra);
        self.brokers.push(Broker::try_start(&flags)?);
        Ok(self.brokers.last_mut().expect("just pushed"))
    }

    /// The replication address of broker `node` of `--peers`.
    pub fn replication_address(&self, node: u32) -> String {
        self.peers
            .split(',')
            .find_map(|p| p.strip_prefix(&format!("{node}=")))
            .unwrap_or_else(|| panic!("broker {node} is not in {}", self.peers))
            .to_owned()
    }

    /// Every broker's client address, comma-separated (a `--bootstrap` list).
    pub fn bootstrap(&self) -> String {
        self.brokers.iter().map(|b| b.addr.clone()).collect::<Vec<_>>().join(",")
    }

    /// The broker (index) whose log last says it leads `topic`/`partition`
    /// in the highest epoch, from the brokers' own role lines.
    pub fn leader_of(&self, topic: &str, partition: u32) -> Option<usize> {
        let mut best: Option<(u32, usize)> = None;
        for (i, broker) in self.brokers.iter().enumerate() {
            for line in strip_ansi(&broker.log()).lines() {
                if !line.contains("replica role")
                    || !line.contains(&format!("topic={topic} "))
                    || !line.contains(&format!("partition={partition} "))
                {
                    continue;
                }
                let field = |name: &str| line.split_whitespace().find_map(|w| w.strip_prefix(name)).map(str::to_owned);
                let epoch: u32 = field("epoch=").and_then(|e| e.parse().ok()).unwrap_or(0);
                if field("role=").as_deref() == Some("Leader") && best.is_none_or(|(e, _)| epoch > e) {
                    best = Some((epoch, i));
                }
            }
        }
        best.map(|(_, i)| i)
    }
}

/// Log text without terminal colour codes.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ------------------------------------------------ helpers of the cluster tests

pub async fn client(bootstrap: &str) -> Client {
    Client::connect(ClientConfig::new(bootstrap.to_owned())).await.expect("connecting")
}

/// `acks=all` with retries enough to ride through a failover or a move.
pub fn retrying_producer_config() -> cairn_client::ProducerConfig {
    cairn_client::ProducerConfig {
        acks: protocol::api::Acks::All,
        linger: Duration::from_millis(1),
        retries: 1_000,
        retry_backoff: Duration::from_millis(20),
        retry_backoff_max: Duration::from_millis(200),
        ..cairn_client::ProducerConfig::default()
    }
}

/// Creates a topic, waiting out the first election of the controller (a
/// retried create whose first attempt landed finds the topic there).
pub async fn create(client: &Client, topic: &str, partitions: u32) {
    create_with(client, topic, partitions, TopicConfig::default()).await;
}

/// [`create`] with topic settings.
pub async fn create_with(client: &Client, topic: &str, partitions: u32, settings: TopicConfig) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut tried = false;
    loop {
        match client.create_topic(topic, partitions, settings.clone()).await {
            Ok(()) => return,
            Err(ClientError::Broker { code: ErrorCode::TOPIC_ALREADY_EXISTS, .. }) if tried => return,
            Err(e) if e.is_retriable() && Instant::now() < deadline => {
                tried = true;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("creating {topic}: {e}"),
        }
    }
}

/// Sends records numbered `from..from + n` to `topic` (record `i` to
/// partition `i % partitions`) and waits for every acknowledgement.
pub async fn produce(producer: &Producer, topic: &str, partitions: u32, from: u64, n: u64) -> Vec<Acked> {
    let mut deliveries = Vec::new();
    for i in from..from + n {
        let mut r = ProducerRecord::new(topic, None::<Bytes>, i.to_string());
        r.partition = Some((i % u64::from(partitions)) as u32);
        deliveries.push((i, producer.send(r).await.expect("queued")));
    }
    let mut acked = Vec::new();
    for (i, d) in deliveries {
        let meta = d.wait().await.unwrap_or_else(|e| panic!("record {i} not acknowledged: {e}"));
        acked.push(Acked { partition: meta.partition, offset: meta.offset.expect("acks=all gives offsets"), value: i });
    }
    acked
}

/// Every record of `partition` below the high watermark, read from the
/// broker at `addr` alone (raw fetches on one connection to it: a
/// `Consumer` would follow the leader): (offset, value).
pub async fn read_all(addr: &str, topic: &str, partition: u32) -> Vec<(Offset, u64)> {
    read_records(addr, topic, partition)
        .await
        .into_iter()
        .map(|r| {
            let value = std::str::from_utf8(r.value.as_deref().expect("a value")).expect("utf-8");
            (r.offset, value.parse().expect("a number"))
        })
        .collect()
}

/// Every record of `partition` below the high watermark, as [`read_all`]
/// reads them, whole.
pub async fn read_records(addr: &str, topic: &str, partition: u32) -> Vec<cairn_client::ConsumerRecord> {
    use protocol::api::{FetchPartition, FetchRequest, FetchTopic, Request, Response};
    let conn = cairn_client::Connection::connect(addr, "history-reader").await.expect("connect");
    let list = Request::ListOffsets(vec![protocol::api::ListOffsetsTopic {
        name: topic.into(),
        partitions: vec![(partition, OffsetSpec::Latest)],
    }]);
    let Response::ListOffsets(offsets) = conn.call(&list).await.expect("list offsets") else { panic!("an answer") };
    let latest = offsets[0].partitions[0].offset;
    let mut out = Vec::new();
    let mut position = Offset(0);
    let deadline = Instant::now() + Duration::from_mins(1);
    while position < latest {
        assert!(Instant::now() < deadline, "{addr}: only {} records of {topic}/{partition} arrived", out.len());
        let fetch = Request::Fetch(FetchRequest {
            max_wait_ms: 100,
            min_bytes: 1,
            max_bytes: 4 << 20,
            topics: vec![FetchTopic {
                name: topic.into(),
                partitions: vec![FetchPartition { partition, offset: position, max_bytes: 4 << 20 }],
            }],
        });
        let Response::Fetch(topics) = conn.call(&fetch).await.expect("fetch") else { panic!("a fetch answer") };
        let p = &topics[0].partitions[0];
        assert!(p.error.is_ok(), "{addr}: fetching {topic}/{partition} at {position}: {}", p.error);
        for batch in &p.batches {
            out.extend(cairn_client::decode_batch(partition, batch, position).expect("a valid batch"));
            // A batch may end past its last record (a control batch has none).
            let header = protocol::batch::BatchHeader::decode(batch).expect("a header");
            position = position.max(header.next_offset());
        }
    }
    out
}

/// Waits until every broker reports the same latest offsets for `topic`.
pub async fn converged(cluster: &Cluster, topic: &str, partitions: u32) -> BTreeMap<u32, Offset> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut views = Vec::new();
        for broker in &cluster.brokers {
            // A broker that is still starting (or has not applied the
            // topic yet) is asked again.
            let Ok(c) = Client::connect(ClientConfig::new(broker.addr.clone())).await else { break };
            let all: Vec<u32> = (0..partitions).collect();
            let Ok(view) = c.list_offsets(topic, &all, OffsetSpec::Latest).await else { break };
            views.push(view);
        }
        if views.len() == cluster.brokers.len() && views.windows(2).all(|w| w[0] == w[1]) {
            return views[0].iter().copied().collect();
        }
        assert!(Instant::now() < deadline, "the brokers do not converge: {views:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each broker's copy of `topic`, read from it alone.
pub async fn copies(cluster: &Cluster, topic: &str, partitions: u32) -> Vec<Copy> {
    let mut copies = Vec::new();
    for broker in &cluster.brokers {
        let mut copy = BTreeMap::new();
        for p in 0..partitions {
            copy.insert(p, read_all(&broker.addr, topic, p).await);
        }
        copies.push(copy);
    }
    copies
}

/// Converges, reads every copy and checks `acked` against them; the report.
pub async fn check_history(cluster: &Cluster, topic: &str, partitions: u32, acked: &[Acked]) -> Report {
    let latest = converged(cluster, topic, partitions).await;
    let copies = copies(cluster, topic, partitions).await;
    let report = crate::history::check(acked, &copies);
    assert!(report.is_valid(), "the history of {topic}: {report}");
    for a in acked {
        assert!(latest[&a.partition] > a.offset, "{topic}/{}: the latest offset is behind {a:?}", a.partition);
    }
    report
}

/// Waits (20 s at most) until `broker` holds no copy of any of
/// `partitions` of `topic` on disk (a replica moved away deletes it).
pub async fn copies_deleted(broker: &crate::Broker, topic: &str, partitions: &[u32]) {
    let topics = broker.data_dir().join("topics");
    let copy_left = || {
        std::fs::read_dir(&topics)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(topic))
            .any(|e| partitions.iter().any(|p| e.path().join(p.to_string()).exists()))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while copy_left() {
        assert!(Instant::now() < deadline, "{} still holds a copy of {topic} {partitions:?}", broker.addr);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The partition's metadata once its leader reports every replica caught
/// up (the first fetches of a new group take a moment).
pub async fn settled(client: &Client, topic: &str, partition: u32) -> protocol::api::PartitionMetadata {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = client.metadata(&[topic]).await.expect("metadata");
        let p = m.topics[0].partitions[partition as usize].clone();
        if p.error.is_ok() && p.leader.is_some() && p.caught_up.len() == p.replicas.len() {
            return p;
        }
        assert!(Instant::now() < deadline, "{topic}/{partition} does not settle: {p:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
