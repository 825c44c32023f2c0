//! Compaction on a three-broker cluster: every replica compacts its own
//! copy of a compacted topic (its cleaner runs on its own schedule), a
//! leader is killed (`kill -9`) while the cleaners run passes under load and
//! comes back, and afterwards every replica, read on its own, gives exactly
//! the model's table (the latest value of every key, deleted keys absent)
//! with offsets strictly increasing, from far fewer records than were sent.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cairn_client::{Producer, TablePublisher, TopicConfig};
use cairn_tests::cluster::{Cluster, client, converged, create_with, read_records, retrying_producer_config, settled};
use engine::rt::sim::SimRng as Rng;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

const TOPIC: &str = "entities";
const KEYS: u64 = 50;

/// The compacted topic's settings.
fn compacted() -> TopicConfig {
    TopicConfig::default()
        .with("cleanup.policy", "compact")
        // Every append after a millisecond's pause rolls the segment:
        // plenty of sealed segments for the cleaners.
        .with("segment.ms", "1")
        .with("min.cleanable.dirty.ratio", "0.01")
        .with("delete.retention.ms", "1d")
}

/// Rounds of updates: each round touches distinct keys (so a retried batch
/// that lands twice repeats the same value, never reorders a key), one in
/// eight a tombstone, and waits for every acknowledgement before the next.
async fn publish_rounds(publisher: &TablePublisher, rng: &mut Rng, model: &mut Model, rounds: usize, tag: &str) -> u64 {
    let mut sent = 0;
    for round in 0..rounds {
        let mut keys: Vec<u64> = (0..KEYS).collect();
        for i in (1..keys.len()).rev() {
            keys.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        let mut deliveries = Vec::new();
        for &k in &keys[..25] {
            let key = format!("entity-{k:02}").into_bytes();
            if rng.next_u64().is_multiple_of(8) {
                deliveries.push(publisher.delete(key.clone()).await.expect("queued"));
                model.remove(&key);
            } else {
                let value = format!("{tag}-{round}-{k}-{}", "v".repeat(80)).into_bytes();
                deliveries.push(publisher.put(key.clone(), value.clone()).await.expect("queued"));
                model.insert(key, value);
            }
        }
        sent += deliveries.len() as u64;
        for d in deliveries {
            d.wait().await.expect("acknowledged");
        }
        // Past segment.ms: the next round's first append rolls.
        cairn_tests::let_time_pass(Duration::from_millis(2)).await;
    }
    sent
}

/// The table broker `addr`'s own copy gives (read from it alone), and how
/// many records it read; offsets strictly increase.
async fn replica_table(addr: &str) -> (Model, u64) {
    let records = read_records(addr, TOPIC, 0).await;
    assert!(records.windows(2).all(|w| w[0].offset < w[1].offset), "{addr}: offsets strictly increase");
    let mut table = Model::new();
    for r in &records {
        let key = r.key.as_ref().expect("a compacted topic's records have keys").to_vec();
        match &r.value {
            Some(v) => table.insert(key, v.to_vec()),
            None => table.remove(&key),
        };
    }
    (table, records.len() as u64)
}

/// Every replica, read alone, gives the model's table, from less than half
/// of the `sent` records.
async fn every_replica_gives(cluster: &Cluster, model: &Model, sent: u64, when: &str) {
    for broker in &cluster.brokers {
        let (table, read) = replica_table(&broker.addr).await;
        assert_same_table(&table, model, &format!("{}: {when}, its copy", broker.addr));
        assert!(read * 2 < sent, "{}: compacted, it holds {read} of {sent} records", broker.addr);
    }
}

/// Waits until every broker's own copy has been cleaned since `since_ms`
/// with nothing sealed left dirty.
async fn every_replica_cleaned(cluster: &Cluster, since_ms: i64) {
    let deadline = Instant::now() + Duration::from_mins(1);
    for broker in &cluster.brokers {
        loop {
            let c = client(&broker.addr).await;
            let d = c.describe_topic(TOPIC).await.expect("describe");
            let p = &d.partitions[0];
            if p.error.is_ok() && p.last_clean_ms.is_some_and(|t| t >= since_ms) && p.dirty_bytes == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{}: not cleaned since {since_ms}: {p:?}", broker.addr);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Fails naming the keys whose values differ (not the whole tables).
fn assert_same_table(got: &Model, model: &Model, what: &str) {
    let keys: std::collections::BTreeSet<&Vec<u8>> = got.keys().chain(model.keys()).collect();
    let differ: Vec<String> = keys
        .into_iter()
        .filter(|k| got.get(*k) != model.get(*k))
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert!(
        differ.is_empty(),
        "{what}: {} keys differ from the model's table, e.g. {:?}",
        differ.len(),
        &differ[..differ.len().min(5)]
    );
}

fn now_ms() -> i64 {
    i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_compacts_and_gives_the_models_table_after_its_leader_is_killed_while_cleaning() {
    let dir = tempfile::tempdir().unwrap();
    let config = cairn_tests::cleaner_config(dir.path(), 20);
    let mut cluster = Cluster::start(3, &["--config", &config]);
    let c = client(&cluster.bootstrap()).await;
    create_with(&c, TOPIC, 1, compacted()).await;
    settled(&c, TOPIC, 0).await;
    let publisher = TablePublisher::new(Producer::new(c.clone(), retrying_producer_config()), TOPIC);
    let mut rng = Rng::new(29);
    let mut model = Model::new();

    // 1. Every replica compacts its own copy.
    let started = now_ms();
    let mut sent = publish_rounds(&publisher, &mut rng, &mut model, 40, "a").await;
    converged(&cluster, TOPIC, 1).await;
    every_replica_cleaned(&cluster, started).await;
    every_replica_gives(&cluster, &model, sent, "compacted").await;

    // 2. The leader dies by kill -9 while every cleaner runs passes under
    // load, and comes back; the producer rides through the failover.
    let before_kill = settled(&c, TOPIC, 0).await;
    let leader = before_kill.leader.expect("a leader") as usize - 1;
    let during = {
        let publisher = publisher.clone();
        let mut rng = Rng::new(31);
        let mut model = model.clone();
        tokio::spawn(async move {
            let sent = publish_rounds(&publisher, &mut rng, &mut model, 40, "b").await;
            (model, sent)
        })
    };
    // Once its cleaner has compacted something of this phase.
    let compacted_lines = |b: &cairn_tests::Broker| b.log().matches("compacted").count();
    let before = compacted_lines(&cluster.brokers[leader]);
    let deadline = Instant::now() + Duration::from_mins(1);
    while compacted_lines(&cluster.brokers[leader]) == before {
        assert!(Instant::now() < deadline, "the leader's cleaner did not run under load");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cluster.brokers[leader].kill9();
    let (after_model, more) = during.await.expect("the producer task");
    model = after_model;
    sent += more;
    cluster.brokers[leader].restart_on_same_address().expect("the killed broker restarts");
    let settled_again = settled(&c, TOPIC, 0).await;
    assert!(
        settled_again.leader_epoch > before_kill.leader_epoch,
        "a new leader: {before_kill:?} then {settled_again:?}"
    );

    // 3. Every replica, the restarted one too, is compacted again and
    // gives the model's table.
    let resumed = now_ms();
    converged(&cluster, TOPIC, 1).await;
    // One more round after the restart, so every replica has new sealed
    // data to clean.
    sent += publish_rounds(&publisher, &mut rng, &mut model, 2, "c").await;
    converged(&cluster, TOPIC, 1).await;
    every_replica_cleaned(&cluster, resumed).await;
    every_replica_gives(&cluster, &model, sent, "after the failover").await;
}
