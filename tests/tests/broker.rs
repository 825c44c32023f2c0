//! The broker as a user runs it: a real `cairn-server` process with two
//! shards, driven through the client library. Produce and consume across
//! partitions and shards, keyed placement, long polling, restarts (graceful
//! and `kill -9`), and memory bounds under a slow consumer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_client::{
    Client, ClientConfig, Consumer, ConsumerConfig, ConsumerRecord, Offset, Producer, ProducerConfig, ProducerRecord,
    StartFrom, TopicConfig,
};
use cairn_tests::Broker;
use protocol::partitioner::partition_for_key;

async fn client(broker: &Broker) -> Client {
    Client::connect(ClientConfig::new(broker.addr.clone())).await.expect("connecting")
}

/// Reads exactly `n` records from all partitions of `topic` from the start.
async fn consume_all(client: &Client, topic: &str, n: usize) -> Vec<ConsumerRecord> {
    let mut consumer = Consumer::assign(client.clone(), ConsumerConfig::default(), topic, &[], StartFrom::Earliest)
        .await
        .expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_mins(1);
    while out.len() < n {
        assert!(Instant::now() < deadline, "only {} of {n} records arrived", out.len());
        out.extend(consumer.poll().await.expect("poll"));
    }
    out
}

fn by_partition(records: &[ConsumerRecord]) -> BTreeMap<u32, Vec<&ConsumerRecord>> {
    let mut map: BTreeMap<u32, Vec<&ConsumerRecord>> = BTreeMap::new();
    for r in records {
        map.entry(r.partition).or_default().push(r);
    }
    map
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_keep_per_key_order_on_one_partition_across_shards() {
    let broker = Broker::start(&[]);
    let client = client(&broker).await;
    client.create_topic("orders", 4, TopicConfig::default()).await.unwrap();
    let described = client.describe_topic("orders").await.unwrap();
    let shards: HashSet<u32> = described.partitions.iter().map(|p| p.shard).collect();
    assert_eq!(shards.len(), 2, "the partitions must span both shards");

    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut deliveries = Vec::new();
    let n = 4000;
    for i in 0..n {
        let key = format!("customer-{}", i % 37);
        let value = format!("{key}:{i}");
        deliveries.push(producer.send(ProducerRecord::new("orders", Some(key), value)).await.unwrap());
    }
    for d in deliveries {
        d.wait().await.unwrap();
    }
    let records = consume_all(&client, "orders", n).await;
    assert_eq!(records.len(), n);
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    for (partition, records) in by_partition(&records) {
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, Offset(i as u64), "offsets are dense from 0 in partition {partition}");
            let key = String::from_utf8(r.key.clone().unwrap().to_vec()).unwrap();
            assert_eq!(partition, partition_for_key(key.as_bytes(), 4), "{key} is on the wrong partition");
            let value = String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap();
            let (vkey, seq) = value.split_once(':').unwrap();
            assert_eq!(vkey, key);
            let seq: u64 = seq.parse().unwrap();
            if let Some(prev) = last_seq.insert(key.clone(), seq) {
                assert!(seq > prev, "{key}: {seq} came after {prev}");
            }
        }
    }
    assert_eq!(last_seq.len(), 37);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_waits_for_data_and_returns_when_it_arrives() {
    let broker = Broker::start(&[]);
    let client = client(&broker).await;
    client.create_topic("events", 2, TopicConfig::default()).await.unwrap();

    // Idle: the fetch waits on the broker for its whole max wait.
    let config = ConsumerConfig { fetch_wait_max: Duration::from_millis(400), ..ConsumerConfig::default() };
    let mut idle = Consumer::assign(client.clone(), config, "events", &[], StartFrom::Latest).await.unwrap();
    let started = Instant::now();
    assert!(idle.poll().await.unwrap().is_empty());
    assert!(started.elapsed() >= Duration::from_millis(350), "an idle poll returned after {:?}", started.elapsed());

    // Waiting: the fetch is parked on the broker (its metrics say so) before
    // the record is produced, and the record ends the wait long before the
    // 20 s maximum. A broker that answered at once would never show the
    // waiting fetch, and the poll would come back empty.
    let config = ConsumerConfig { fetch_wait_max: Duration::from_secs(20), ..ConsumerConfig::default() };
    let mut waiting = Consumer::assign(client.clone(), config, "events", &[1], StartFrom::Latest).await.unwrap();
    let waiting_before = broker.metric("cairn_fetches_waiting", &[]).unwrap_or(0.0);
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let records = waiting.poll().await.unwrap();
        (records, started.elapsed())
    });
    let parked = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: f64 = broker
            .metrics()
            .lines()
            .filter(|l| l.starts_with("cairn_fetches_waiting{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        if waiting > waiting_before {
            break;
        }
        assert!(Instant::now() < parked, "the fetch never waited on the broker");
        tokio::task::yield_now().await;
    }
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut record = ProducerRecord::new("events", None::<Bytes>, "hello");
    record.partition = Some(1);
    producer.send(record).await.unwrap().wait().await.unwrap();
    let (records, waited) = poll.await.unwrap();
    assert_eq!(records.len(), 1, "the parked fetch returned the record");
    assert_eq!(records[0].value.as_deref(), Some(&b"hello"[..]));
    assert!(waited < Duration::from_secs(10), "the poll returned only after {waited:?}");
}

/// Sends records `from..from + n`, record `i` to partition `i % partitions`;
/// returns where each acknowledged one landed.
async fn produce_numbered(
    producer: &Producer,
    topic: &str,
    partitions: u64,
    from: u64,
    n: u64,
) -> Vec<(u32, Offset, u64)> {
    let mut deliveries = Vec::new();
    for i in from..from + n {
        let mut r = ProducerRecord::new(topic, None::<Bytes>, i.to_string());
        r.partition = Some((i % partitions) as u32);
        deliveries.push((i, producer.send(r).await.unwrap()));
    }
    let mut acked = Vec::new();
    for (i, d) in deliveries {
        if let Ok(meta) = d.wait().await {
            acked.push((meta.partition, meta.offset.unwrap(), i));
        }
    }
    acked
}

/// This test shows a process crash loses nothing acknowledged and duplicates
/// nothing. It cannot show that fdatasync happens (O_DIRECT writes survive a
/// process crash without it): the simulator's power loss does
/// (`server/tests/sim_power_loss.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_record_and_duplicates_none() {
    let mut broker = Broker::start(&["--flush", "always"]);
    let client = client(&broker).await;
    client.create_topic("ledger", 4, TopicConfig::default()).await.unwrap();
    let config = ProducerConfig { retries: 0, linger: Duration::from_millis(1), ..ProducerConfig::default() };
    let producer = Producer::new(client.clone(), config.clone());
    let acked_before = produce_numbered(&producer, "ledger", 4, 0, 3000).await;
    assert_eq!(acked_before.len(), 3000);

    // Keep producing while the broker dies: what was acknowledged must survive.
    let background = {
        let producer = Producer::new(client.clone(), config);
        tokio::spawn(async move { produce_numbered(&producer, "ledger", 4, 3000, 200_000).await })
    };
    // Kill once the background producer has had acknowledgements.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let latest = client.list_offsets("ledger", &[], protocol::api::OffsetSpec::Latest).await.unwrap();
        if latest.iter().map(|(_, o)| o.0).sum::<u64>() > 4000 || Instant::now() > deadline {
            break;
        }
        tokio::task::yield_now().await;
    }
    broker.kill9();
    let acked_during = background.await.unwrap();
    assert!(acked_during.len() < 200_000, "the kill must interrupt the stream, not follow it");
    broker.restart();

    let client = self::client(&broker).await;
    let latest = client.list_offsets("ledger", &[], protocol::api::OffsetSpec::Latest).await.unwrap();
    let total: u64 = latest.iter().map(|(_, o)| o.0).sum();
    let records = consume_all(&client, "ledger", total as usize).await;
    let mut stored: HashMap<(u32, Offset), u64> = HashMap::new();
    let mut seen = HashSet::new();
    for (partition, records) in by_partition(&records) {
        let mut prev = None;
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, Offset(i as u64));
            let v: u64 = std::str::from_utf8(r.value.as_deref().unwrap()).unwrap().parse().unwrap();
            assert!(seen.insert(v), "record {v} stored twice");
            assert!(prev.is_none_or(|p| v > p), "partition {partition}: {v} after {prev:?}");
            prev = Some(v);
            stored.insert((partition, r.offset), v);
        }
    }
    for (partition, offset, v) in acked_before.iter().chain(&acked_during) {
        assert_eq!(stored.get(&(*partition, *offset)), Some(v), "acknowledged record {v} lost or moved");
    }
    assert!(broker.log().contains("clean_shutdown: false"), "the restart must have been a recovery");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_syncs_and_marks_every_log_clean() {
    let mut broker = Broker::start(&["--flush", "never"]);
    let client = client(&broker).await;
    client.create_topic("t", 3, TopicConfig::default()).await.unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let acked = produce_numbered(&producer, "t", 3, 0, 999).await;
    assert_eq!(acked.len(), 999);
    let status = broker.terminate();
    assert!(status.success(), "exit status {status:?}");
    // The topic's directory is named by its name and id.
    let topic_dir = std::fs::read_dir(broker.data_dir().join("topics"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("t@")))
        .expect("the topic's directory");
    for p in 0..3 {
        let marker = topic_dir.join(p.to_string()).join("CLEAN_SHUTDOWN");
        assert!(marker.exists(), "{} is missing", marker.display());
    }
    broker.restart();
    let client = self::client(&broker).await;
    let records = consume_all(&client, "t", 999).await;
    let values: HashSet<u64> =
        records.iter().map(|r| std::str::from_utf8(r.value.as_deref().unwrap()).unwrap().parse().unwrap()).collect();
    assert_eq!(values.len(), 999);
    assert_eq!(client.list_topics().await.unwrap().len(), 1, "metadata survives the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_never_reads_neither_grows_the_brokers_memory_nor_blocks_its_shutdown() {
    use tokio::io::AsyncWriteExt;
    let mut broker = Broker::start(&[]);
    let client = client(&broker).await;
    client.create_topic("big", 1, TopicConfig::default()).await.unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let value = Bytes::from(vec![b'x'; 1000]);
    let mut deliveries = Vec::new();
    for _ in 0..4096 {
        deliveries.push(producer.send(ProducerRecord::new("big", None::<Bytes>, value.clone())).await.unwrap());
    }
    for d in deliveries {
        d.wait().await.unwrap();
    }
    let before = broker.rss_bytes();
    // A client that asks for 4 MiB fetches, 1000 times, and never reads a byte.
    let mut stream = tokio::net::TcpStream::connect(&broker.addr).await.unwrap();
    let hello = protocol::api::Request::Handshake(protocol::api::HandshakeRequest {
        protocol_version: protocol::frame::PROTOCOL_VERSION,
        client: "slow".into(),
    });
    let fetch = protocol::api::Request::Fetch(protocol::api::FetchRequest {
        max_wait_ms: 0,
        min_bytes: 0,
        max_bytes: 4 << 20,
        topics: vec![protocol::api::FetchTopic {
            name: "big".into(),
            partitions: vec![protocol::api::FetchPartition { partition: 0, offset: Offset(0), max_bytes: 4 << 20 }],
        }],
    });
    let mut bytes = Vec::new();
    for piece in hello.encode(1) {
        bytes.extend_from_slice(&piece);
    }
    for id in 2..1002 {
        for piece in fetch.encode(id) {
            bytes.extend_from_slice(&piece);
        }
    }
    // The broker stops reading once this connection's budget is spent, so
    // the write itself stalls: give it a bounded time and move on.
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(&bytes)).await;
    // Another client is unaffected meanwhile.
    let other = self::client(&broker).await;
    assert_eq!(other.list_topics().await.unwrap().len(), 1);
    let grown = broker.rss_bytes().saturating_sub(before);
    // 1000 fetches would be ~4 GB of responses; the connection budget is 64 MiB.
    assert!(grown < 160 << 20, "the broker grew by {} MiB", grown >> 20);
    // The stalled connection holds unwritten responses: the shutdown gives
    // it a grace period (5 s), then closes it and the logs, and exits.
    let status = tokio::task::spawn_blocking(move || {
        let status = broker.terminate_within(Duration::from_secs(30));
        (status, broker)
    })
    .await
    .unwrap();
    assert!(status.0.is_some_and(|s| s.success()), "shutdown hung or failed: {:?}", status.0);
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_returns_while_other_tasks_keep_sending_and_a_dropped_producer_fails_its_queue() {
    let broker = Broker::start(&[]);
    let client = client(&broker).await;
    client.create_topic("busy", 2, TopicConfig::default()).await.unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (producer, stop) = (producer.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = producer.send(ProducerRecord::new("busy", None::<Bytes>, "x")).await.unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let mine = producer.send(ProducerRecord::new("busy", None::<Bytes>, "mine")).await.unwrap();
    // Waits for what was queued before it, not for the endless stream after.
    tokio::time::timeout(Duration::from_secs(20), producer.flush()).await.expect("flush never returned");
    assert!(mine.wait().await.is_ok());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sender.await.unwrap();
}

/// One thread: the producer's sender task runs only when this test yields,
/// so it is surely waiting on the open batch when the last handle goes.
#[tokio::test(flavor = "current_thread")]
async fn a_record_left_in_an_open_batch_fails_closed_when_the_last_handle_drops() {
    let broker = Broker::start(&[]);
    let client = client(&broker).await;
    client.create_topic("busy", 1, TopicConfig::default()).await.unwrap();
    let config = ProducerConfig { linger: Duration::from_hours(1), ..ProducerConfig::default() };
    let lingering = Producer::new(client.clone(), config);
    let orphan = lingering.send(ProducerRecord::new("busy", None::<Bytes>, "orphan")).await.unwrap();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    drop(lingering);
    let outcome = tokio::time::timeout(Duration::from_secs(10), orphan.wait()).await.expect("delivery never resolved");
    assert!(matches!(outcome, Err(cairn_client::ClientError::Closed)), "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_resolve_by_timestamp_and_a_consumer_starts_there() {
    use cairn_client::{OffsetSpec, Timestamp};
    let broker = Broker::start(&[]);
    let client = client(&broker).await;
    client.create_topic("timed", 1, TopicConfig::default()).await.unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for (i, ts) in [1_000i64, 2_000, 3_000].into_iter().enumerate() {
        let mut r = ProducerRecord::new("timed", None::<Bytes>, format!("v{i}"));
        r.timestamp = Some(Timestamp(ts));
        producer.send(r).await.unwrap().wait().await.unwrap();
    }
    let at = |t| client.list_offsets("timed", &[0], OffsetSpec::Timestamp(t));
    assert_eq!(at(0).await.unwrap(), vec![(0, Offset(0))]);
    assert_eq!(at(1_500).await.unwrap(), vec![(0, Offset(1))]);
    assert_eq!(at(3_000).await.unwrap(), vec![(0, Offset(2))]);
    assert_eq!(at(9_000).await.unwrap(), vec![(0, Offset(3))], "after the last record: the high watermark");
    assert_eq!(client.list_offsets("timed", &[0], OffsetSpec::Earliest).await.unwrap(), vec![(0, Offset(0))]);
    let mut consumer =
        Consumer::assign(client.clone(), ConsumerConfig::default(), "timed", &[], StartFrom::Timestamp(2_000))
            .await
            .unwrap();
    let records = consumer.poll().await.unwrap();
    let values: Vec<&[u8]> = records.iter().map(|r| r.value.as_deref().unwrap()).collect();
    assert_eq!(values, vec![&b"v1"[..], b"v2"]);
    assert_eq!(records[0].timestamp, Timestamp(2_000));
}

/// A broker with `settings` (TOML) in a config file.
fn with_config(settings: &str) -> (tempfile::TempDir, Broker) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cairn.toml");
    std::fs::write(&path, settings).unwrap();
    let broker = Broker::start(&["--config", path.to_str().unwrap()]);
    (dir, broker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_with_kill_9_comes_back_at_once_on_the_same_port() {
    // A supervisor restarts a crashed broker right away, on its port. The
    // dead process's io_uring teardown holds its sockets for a moment: the
    // new broker waits for them (bounded) instead of failing to listen.
    let (_config, mut broker) = with_config("shard_ports = false\n");
    let client = client(&broker).await;
    client.create_topic("again", 2, TopicConfig::default()).await.unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut acked = produce_numbered(&producer, "again", 2, 0, 500).await.len();
    for round in 0..3 {
        broker.kill9();
        broker.restart_on_same_address().unwrap_or_else(|e| panic!("round {round}: the restart failed: {e}"));
        let client = self::client(&broker).await;
        let producer = Producer::new(client.clone(), ProducerConfig::default());
        acked += produce_numbered(&producer, "again", 2, 10_000 * (round + 1), 200).await.len();
        let records = consume_all(&client, "again", acked).await;
        assert_eq!(records.len(), acked, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_topics_json_is_rebuilt_and_a_damaged_one_stops_the_broker_deleting_nothing() {
    let mut broker = Broker::start(&[]);
    let client = client(&broker).await;
    client.create_topic("orders", 3, TopicConfig::default().with("retention.ms", "7d")).await.unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    assert_eq!(produce_numbered(&producer, "orders", 3, 0, 300).await.len(), 300);
    assert!(broker.terminate().success());
    let segments = |dir: &std::path::Path| -> usize {
        walk(dir).iter().filter(|p| p.extension().is_some_and(|e| e == "log")).count()
    };
    let before = segments(&broker.data_dir());
    // Before: a missing topics.json made the next start delete every topic.
    std::fs::remove_file(broker.data_dir().join("topics.json")).unwrap();
    broker.restart();
    let client = self::client(&broker).await;
    assert_eq!(consume_all(&client, "orders", 300).await.len(), 300, "every record is still there");
    let d = client.describe_topic("orders").await.unwrap();
    let retention = d.configs.iter().find(|c| c.name == "retention.ms").unwrap();
    assert_eq!(retention.value, "604800000", "the topic's settings came back too");
    assert!(broker.log().contains("rebuilt it from the topic directories"), "{}", broker.log());
    assert!(broker.terminate().success());
    std::fs::write(broker.data_dir().join("topics.json"), "{ \"version\": 2, \"topi").unwrap();
    let e = broker.try_restart().unwrap_err();
    assert!(e.contains("topics.json") && e.contains("damaged"), "{e}");
    assert_eq!(segments(&broker.data_dir()), before, "no data was deleted");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_use_follows_the_data_not_the_segment_size() {
    // Before: each partition's active segment was pre-allocated to its
    // maximum (1 GiB), so five two-partition topics took 10 GiB at once.
    use std::os::unix::fs::MetadataExt;
    let broker = Broker::start(&[]);
    let client = client(&broker).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for t in 0..5 {
        let name = format!("small{t}");
        client.create_topic(&name, 2, TopicConfig::default()).await.unwrap();
        produce_numbered(&producer, &name, 2, 0, 10).await;
    }
    let allocated: u64 = walk(&broker.data_dir()).iter().map(|p| p.metadata().unwrap().blocks() * 512).sum();
    assert!(allocated < 16 << 20, "ten nearly empty partitions take {} MiB on disk", allocated >> 20);
    let reported = broker.metric("cairn_log_disk_bytes", &["topic=\"small0\"", "partition=\"0\""]).unwrap();
    assert!(reported > 0.0 && reported < f64::from(4 << 20), "the metric says {reported} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_produce_and_fetch_per_partition_and_time_the_syncs() {
    let broker = Broker::start(&[]);
    let client = client(&broker).await;
    client.create_topic("m", 2, TopicConfig::default()).await.unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let acked = produce_numbered(&producer, "m", 2, 0, 1000).await;
    assert_eq!(acked.len(), 1000);
    consume_all(&client, "m", 1000).await;
    // Counters and offsets are whole numbers.
    let m = |name: &str, labels: &[&str]| {
        broker.metric(name, labels).unwrap_or_else(|| panic!("{name} {labels:?} missing")) as u64
    };
    assert_eq!(m("cairn_produce_records_total", &["topic=\"m\"", "partition=\"0\""]), 500);
    assert_eq!(m("cairn_produce_records_total", &["topic=\"m\"", "partition=\"1\""]), 500);
    assert!(m("cairn_fetch_records_total", &["topic=\"m\"", "partition=\"1\""]) >= 500);
    assert_eq!(m("cairn_log_end_offset", &["topic=\"m\"", "partition=\"0\""]), 500);
    assert_eq!(m("cairn_high_watermark", &["topic=\"m\"", "partition=\"0\""]), 500);
    assert_eq!(m("cairn_log_start_offset", &["topic=\"m\"", "partition=\"0\""]), 0);
    assert!(m("cairn_log_size_bytes", &["topic=\"m\"", "partition=\"0\""]) > 500 * 3);
    assert!(m("cairn_request_latency_seconds_count", &["api=\"produce\""]) > 0);
    let syncs: f64 = broker
        .metrics()
        .lines()
        .filter(|l| l.starts_with("cairn_fdatasync_latency_seconds_count{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert!(syncs > 0.0, "fsync latency is measured");
    let connections: f64 = broker
        .metrics()
        .lines()
        .filter(|l| l.starts_with("cairn_connections{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert!(connections >= 1.0, "this test's connections are counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_list_skips_a_dead_address_and_names_every_failure() {
    let broker = Broker::start(&[]);
    // Port 1 refuses at once: nothing listens there.
    let list = format!("127.0.0.1:1,{}", broker.addr);
    let client = Client::connect(ClientConfig::new(list)).await.expect("the second address answers");
    client.create_topic("listed", 1, TopicConfig::default()).await.unwrap();
    assert_eq!(client.list_topics().await.unwrap().len(), 1);
    let dead = Client::connect(ClientConfig::new("127.0.0.1:1,127.0.0.1:2")).await.err().expect("nothing listens");
    let text = dead.to_string();
    assert!(text.contains("127.0.0.1:1") && text.contains("127.0.0.1:2"), "{text}");
}
