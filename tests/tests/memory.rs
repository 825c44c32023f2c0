//! A broker with 2,000 partitions stays within its configured memory: each
//! shard's write buffers and caches are bounded by `[memory]` over all its
//! partitions, and an idle partition holds no buffer at all.

use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_client::{
    Client, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, StartFrom, TopicConfig,
};
use cairn_tests::Broker;

const SHARDS: u64 = 2;
const WRITE: u64 = 16 << 20;
const CACHE: u64 = 32 << 20;
const READ_AHEAD: u64 = 8 << 20;
const INDEXES: u64 = 4 << 20;
/// What one partition costs beyond the shard's budgets: its state, indexes,
/// an open segment file (docs/operations.md, "Memory").
const PER_PARTITION: u64 = 24 << 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_partitions_stay_within_the_configured_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cairn.toml");
    std::fs::write(
        &config,
        format!(
            "[memory]\nshard_write_buffer_bytes_max = {WRITE}\nshard_cache_bytes_max = {CACHE}\n\
             shard_read_ahead_bytes_max = {READ_AHEAD}\nshard_index_cache_bytes_max = {INDEXES}\n"
        ),
    )
    .unwrap();
    let broker = Broker::start(&["--config", config.to_str().unwrap()]);
    let client = Client::connect(ClientConfig::new(broker.addr.clone())).await.unwrap();
    let idle = broker.rss_bytes();
    for t in ["wide0", "wide1"] {
        client.create_topic(t, 1000, TopicConfig::default()).await.unwrap();
    }
    let created = broker.rss_bytes();
    assert!(
        created.saturating_sub(idle) < 2000 * PER_PARTITION,
        "2000 idle partitions take {} MiB: an idle partition must hold no buffer",
        created.saturating_sub(idle) >> 20
    );
    // 40 KiB into every partition: 80 MiB in all, more than the caches hold.
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let value = Bytes::from(vec![b'm'; 1024]);
    for round in 0..40 {
        let mut deliveries = Vec::new();
        for t in ["wide0", "wide1"] {
            for p in 0..1000 {
                let mut r = ProducerRecord::new(t, None::<Bytes>, value.clone());
                r.partition = Some(p);
                deliveries.push(producer.send(r).await.unwrap());
            }
        }
        for d in deliveries {
            d.wait().await.unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
    }
    let after_produce = broker.rss_bytes();
    // And read it all back: cached tails and cold reads.
    for t in ["wide0", "wide1"] {
        let mut consumer =
            Consumer::assign(client.clone(), ConsumerConfig::default(), t, &[], StartFrom::Earliest).await.unwrap();
        let mut n = 0;
        let deadline = Instant::now() + Duration::from_mins(2);
        while n < 40_000 {
            assert!(Instant::now() < deadline, "read {n} of 40000 from {t}");
            n += consumer.poll().await.unwrap().len();
        }
    }
    let after_read = broker.rss_bytes();
    // Shown if the test fails: what the shard budgets hold.
    let pools: Vec<String> =
        broker.metrics().lines().filter(|l| l.starts_with("cairn_memory_")).map(str::to_string).collect();
    eprintln!("{}", pools.join("\n"));
    let budget = SHARDS * (WRITE + CACHE + READ_AHEAD + INDEXES) + 2000 * PER_PARTITION;
    let grown = after_produce.max(after_read).saturating_sub(idle);
    eprintln!(
        "idle {} MiB, 2000 partitions created {} MiB, after produce {} MiB, after read {} MiB, budget {} MiB",
        idle >> 20,
        created >> 20,
        after_produce >> 20,
        after_read >> 20,
        budget >> 20
    );
    assert!(grown < budget, "the broker grew by {} MiB; its budget is {} MiB", grown >> 20, budget >> 20);
}
