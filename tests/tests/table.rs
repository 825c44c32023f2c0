//! Materialized tables against a real broker: a `Table` equals a model (a
//! `BTreeMap` that applied the same puts and tombstones) after catching
//! up, while following, and after a restart from its checkpoint, which
//! fetches only what came after it; checkpoints that cannot be trusted are
//! refused; a diff published turns a table into the new state; consumer
//! lag; and `cairn table` / `cairn produce --empty-is-tombstone`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_client::table::{TableStats, diff};
use cairn_client::{
    Change, Client, ClientConfig, Consumer, ConsumerConfig, Delivery, Offset, OffsetSpec, Producer, ProducerConfig,
    ProducerRecord, StartFrom, Table, TableConfig, TableError, TablePublisher, TopicConfig,
};
use cairn_tests::Broker;
use engine::rt::sim::SimRng as Rng;

async fn client(broker: &Broker) -> Client {
    Client::connect(ClientConfig::new(broker.addr.clone())).await.expect("connecting")
}

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Publishes `n` random events over `keys` keys (three in four puts, one
/// in four tombstones, some of absent keys) and, every 50th, a record
/// without a key; applies the keyed ones to `model`. Returns the records sent.
async fn publish_events(
    publisher: &TablePublisher,
    rng: &mut Rng,
    model: &mut Model,
    n: usize,
    keys: u64,
    tag: &str,
) -> u64 {
    let mut deliveries: Vec<Delivery> = Vec::new();
    for i in 0..n {
        let r = rng.next_u64();
        let key = format!("entity-{:03}", r % keys).into_bytes();
        if r >> 62 == 0 {
            deliveries.push(publisher.delete(key.clone()).await.unwrap());
            model.remove(&key);
        } else {
            let value = format!("{tag}-{i}-{}", "x".repeat((r >> 40) as usize % 64)).into_bytes();
            deliveries.push(publisher.put(key.clone(), value.clone()).await.unwrap());
            model.insert(key, value);
        }
        if i % 50 == 49 {
            let unkeyed = ProducerRecord::new(publisher.topic(), None::<Bytes>, "no key");
            deliveries.push(publisher.producer().send(unkeyed).await.unwrap());
        }
    }
    let sent = deliveries.len() as u64;
    for d in deliveries {
        d.wait().await.expect("acknowledged");
    }
    sent
}

fn contents(table: &Table) -> Model {
    table.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
}

async fn log_ends(client: &Client, topic: &str) -> BTreeMap<u32, Offset> {
    client.list_offsets(topic, &[], OffsetSpec::Latest).await.unwrap().into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_equals_the_model_after_catch_up_while_following_and_after_a_restart_from_its_checkpoint() {
    let broker = Broker::start(&[]);
    let client = client(&broker).await;
    client.create_topic("entities", 4, TopicConfig::default()).await.unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let publisher = TablePublisher::new(producer, "entities");
    let mut rng = Rng::new(11);
    let mut model = Model::new();
    let first = publish_events(&publisher, &mut rng, &mut model, 2000, 200, "first").await;
    assert_eq!(first, 2040);
    assert!(model.len() > 100 && model.len() < 200, "some keys deleted, most there: {}", model.len());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("entities.table");
    let config =
        TableConfig { checkpoint_path: Some(path.clone()), change_feed_capacity: 8192, ..TableConfig::default() };
    let mut table = Table::open(&client, "entities", config.clone()).await.unwrap();
    assert!(table.resumed_from().is_none(), "no checkpoint yet");
    assert_eq!(table.catch_up().await.unwrap(), first, "every record once");
    assert_eq!(contents(&table), model);
    assert_eq!(table.len(), model.len());
    let stats = table.stats();
    assert_eq!((stats.records, stats.unkeyed, stats.puts + stats.deletes), (first, 40, 2000), "{stats:?}");
    assert_eq!(table.positions(), &log_ends(&client, "entities").await);
    assert!(table.lag().values().all(|&l| l == 0) && table.lag().len() == 4, "{:?}", table.lag());
    for (k, v) in &model {
        assert_eq!(table.get(k), Some(&v[..]));
    }
    table.checkpoint().await.unwrap();
    let checkpointed = table.positions().clone();

    // Following: events arrive while the table polls.
    let mut feed = table.subscribe();
    let before_follow = model.clone();
    let mut follow_model = model.clone();
    let mut writer = Some({
        let publisher = publisher.clone();
        tokio::spawn(async move {
            let mut rng = Rng::new(12);
            let sent = publish_events(&publisher, &mut rng, &mut follow_model, 1000, 200, "second").await;
            (sent, follow_model)
        })
    });
    let mut changes: Vec<Change> = Vec::new();
    let mut written = None;
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        changes.extend(table.poll().await.unwrap());
        if let Some(w) = writer.take_if(|w| w.is_finished()) {
            let (sent, m) = w.await.unwrap();
            written = Some((sent, log_ends(&client, "entities").await));
            model = m;
        }
        if let Some((_, ends)) = &written
            && table.positions().iter().all(|(p, o)| o >= &ends[p])
        {
            break;
        }
        assert!(Instant::now() < deadline, "the table did not reach the end: {:?}", table.positions());
    }
    let (second, ends) = written.unwrap();
    assert_eq!(table.positions(), &ends);
    assert_eq!(contents(&table), model, "after following");
    assert_eq!(table.stats().records, first + second);
    // The changes, applied to the state before, give the state after; each
    // says what the key had.
    let mut replay = before_follow.clone();
    for c in &changes {
        let old = match &c.new {
            Some(v) => replay.insert(c.key.to_vec(), v.to_vec()),
            None => replay.remove(&c.key[..]),
        };
        assert_eq!(old.as_deref(), c.old.as_deref(), "change at {}/{}", c.partition, c.offset);
        assert!(c.offset < ends[&c.partition] && c.offset >= checkpointed[&c.partition]);
    }
    assert_eq!(replay, model, "the change feed is the difference");
    let mut received = Vec::new();
    while let Ok(c) = feed.try_recv() {
        received.push(c);
    }
    assert_eq!(received, changes, "subscribers see what poll returns");
    drop(table);

    // From the checkpoint: only the records after it are fetched.
    let mut table = Table::open(&client, "entities", config).await.unwrap();
    assert_eq!(table.resumed_from(), Some(&checkpointed));
    assert_eq!(contents(&table), before_follow, "the checkpoint's contents, before any fetch");
    assert_eq!(table.catch_up().await.unwrap(), second, "only what came after the checkpoint");
    assert_eq!(table.stats(), TableStats { records: second, unkeyed: 20, ..table.stats() });
    assert_eq!(contents(&table), model, "after the restart");
    assert_eq!(table.positions(), &ends);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_taken_every_n_records_and_untrusted_ones_are_refused() {
    let broker = Broker::start(&[]);
    let client = client(&broker).await;
    client.create_topic("t", 2, TopicConfig::default()).await.unwrap();
    client.create_topic("other", 2, TopicConfig::default()).await.unwrap();
    let publisher = TablePublisher::new(Producer::new(client.clone(), ProducerConfig::default()), "t");
    let mut model = Model::new();
    let sent = publish_events(&publisher, &mut Rng::new(5), &mut model, 3000, 300, "a").await;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.table");
    let config = TableConfig {
        checkpoint_path: Some(path.clone()),
        checkpoint_every_records: Some(100),
        // Small fetches: many steps, so many checkpoints.
        consumer: ConsumerConfig { partition_fetch_bytes_max: 16 << 10, ..ConsumerConfig::default() },
        ..TableConfig::default()
    };
    let mut table = Table::open(&client, "t", config.clone()).await.unwrap();
    table.catch_up().await.unwrap();
    assert_eq!(contents(&table), model);
    drop(table);
    let mut table = Table::open(&client, "t", config.clone()).await.unwrap();
    let resumed: u64 = table.resumed_from().expect("an automatic checkpoint").values().map(|o| o.0).sum();
    assert!(resumed > 0, "checkpointed along the way");
    let applied = table.catch_up().await.unwrap();
    assert_eq!(resumed + applied, sent, "the checkpoint and what came after it, each record once");
    assert_eq!(contents(&table), model);
    drop(table);

    // Another topic's checkpoint.
    let e = Table::open(&client, "other", config.clone()).await.err().expect("refused");
    assert!(matches!(&e, TableError::WrongTopic { found, .. } if found == "t"), "{e}");
    // A damaged one.
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 0x10;
    std::fs::write(&path, &bad).unwrap();
    let e = Table::open(&client, "t", config.clone()).await.err().expect("refused");
    assert!(matches!(e, TableError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("delete it to rebuild"), "{e}");
    // One ahead of the log: the topic was deleted and created again.
    std::fs::write(&path, &good).unwrap();
    client.delete_topic("t").await.unwrap();
    client.create_topic("t", 2, TopicConfig::default()).await.unwrap();
    let e = Table::open(&client, "t", config.clone()).await.err().expect("refused");
    assert!(matches!(e, TableError::CheckpointAhead { .. }), "{e}");
    // With fewer partitions than the checkpoint has.
    client.delete_topic("t").await.unwrap();
    client.create_topic("t", 1, TopicConfig::default()).await.unwrap();
    let e = Table::open(&client, "t", config.clone()).await.err().expect("refused");
    assert!(matches!(e, TableError::CheckpointPartition { partition: 1, partitions: 1 }), "{e}");
    // Without the file, the table starts over.
    std::fs::remove_file(&path).unwrap();
    let mut table = Table::open(&client, "t", config).await.unwrap();
    assert_eq!(table.catch_up().await.unwrap(), 0);
    assert!(table.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_diff_turns_the_table_into_the_new_state() {
    let broker = Broker::start(&[]);
    let client = client(&broker).await;
    client.create_topic("users", 3, TopicConfig::default()).await.unwrap();
    let publisher = TablePublisher::new(Producer::new(client.clone(), ProducerConfig::default()), "users");
    let old: BTreeMap<String, String> = (0..100).map(|i| (format!("user-{i:03}"), format!("v1-{i}"))).collect();
    let deliveries = publisher.publish_diff(&BTreeMap::<String, String>::new(), &old).await.unwrap();
    assert_eq!(deliveries.len(), 100);
    assert!(deliveries.wait().await.iter().all(|d| d.metadata.is_ok()));
    let mut table = Table::open(&client, "users", TableConfig::default()).await.unwrap();
    table.catch_up().await.unwrap();
    assert_eq!(table.len(), 100);

    // Every third user gone, every fifth changed, fifty new.
    let mut new = old.clone();
    new.retain(|k, _| k[5..].parse::<u32>().unwrap() % 3 != 0);
    for (k, v) in &mut new {
        if k[5..].parse::<u32>().unwrap() % 5 == 0 {
            *v = format!("v2-{k}");
        }
    }
    new.extend((100..150).map(|i| (format!("user-{i:03}"), "new".to_string())));
    let snapshot = table.state().snapshot();
    let expected_edits = diff(&snapshot, &new).count();
    assert_eq!(expected_edits, 34 + 13 + 50, "34 gone, 13 changed (not also gone), 50 new");
    let deliveries = publisher.publish_diff(&snapshot, &new).await.unwrap();
    assert_eq!(deliveries.len(), expected_edits);
    assert!(deliveries.wait().await.iter().all(|d| d.metadata.is_ok()));
    assert_eq!(table.catch_up().await.unwrap(), expected_edits as u64);
    let now: BTreeMap<String, String> = table
        .iter()
        .map(|(k, v)| (String::from_utf8(k.to_vec()).unwrap(), String::from_utf8(v.to_vec()).unwrap()))
        .collect();
    assert_eq!(now, new);
    assert_eq!(diff(table.state().iter(), &new).count(), 0, "nothing left to publish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_lag_is_the_high_watermark_minus_the_position() {
    let broker = Broker::start(&[]);
    let client = client(&broker).await;
    client.create_topic("lagging", 2, TopicConfig::default()).await.unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut deliveries = Vec::new();
    for i in 0..30u32 {
        let mut r = ProducerRecord::new("lagging", None::<Bytes>, format!("r{i}"));
        r.partition = Some(u32::from(i >= 20));
        deliveries.push(producer.send(r).await.unwrap());
    }
    for d in deliveries {
        d.wait().await.unwrap();
    }
    let mut consumer =
        Consumer::assign(client.clone(), ConsumerConfig::default(), "lagging", &[], StartFrom::Earliest).await.unwrap();
    assert!(consumer.lag().is_empty(), "no high watermark seen before a fetch or a refresh");
    let hw = consumer.refresh_high_watermarks().await.unwrap();
    assert_eq!(hw, BTreeMap::from([(0, Offset(20)), (1, Offset(10))]));
    assert_eq!(consumer.lag(), BTreeMap::from([(0, 20), (1, 10)]));
    consumer.seek(0, Offset(15));
    assert_eq!(consumer.lag()[&0], 5);
    let mut read = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while read < 15 {
        read += consumer.poll().await.unwrap().len();
        assert!(Instant::now() < deadline, "read {read} of 15");
    }
    assert_eq!(consumer.lag(), BTreeMap::from([(0, 0), (1, 0)]));
    assert_eq!(consumer.high_watermarks(), &hw);
}

fn stdout(o: &std::process::Output) -> String {
    assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn cairn_table_prints_the_latest_value_per_key_and_empty_is_tombstone_deletes() {
    let broker = Broker::start(&[]);
    stdout(&broker.cli(&["topic", "create", "cfg", "--partitions", "3"], ""));
    let input = "b:1\na:1\nc:1\na:2\nempty:\nb:2\nzz:gone\nzz:\n";
    stdout(&broker.cli(&["produce", "cfg", "--key-separator", ":"], input));
    // Without --empty-is-tombstone an empty value is a value.
    assert_eq!(stdout(&broker.cli(&["table", "cfg"], "")), "a\t2\nb\t2\nc\t1\nempty\t\nzz\t\n");
    let json = stdout(&broker.cli(&["table", "cfg", "--format", "json"], ""));
    let rows: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0], serde_json::json!({"key": "a", "value": "2"}));
    assert_eq!(rows[4], serde_json::json!({"key": "zz", "value": ""}));
    assert_eq!(stdout(&broker.cli(&["table", "cfg", "--get", "b"], "")), "2\n");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stdout(
            &broker.cli(&["table", "cfg", "--get", "c", "--format", "json"], "")
        ))
        .unwrap(),
        serde_json::json!({"key": "c", "value": "1"})
    );

    // Tombstones: the keys go.
    stdout(&broker.cli(&["produce", "cfg", "--key-separator", ":", "--empty-is-tombstone"], "zz:\nempty:\nb:\nd:4\n"));
    assert_eq!(stdout(&broker.cli(&["table", "cfg"], "")), "a\t2\nc\t1\nd\t4\n");
    let consumed = stdout(&broker.cli(&["consume", "cfg", "--count", "12", "--format", "json"], ""));
    let nulls = consumed.lines().filter(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["value"].is_null());
    assert_eq!(nulls.count(), 3, "three tombstones on the log: {consumed}");
    let missing = broker.cli(&["table", "cfg", "--get", "b"], "");
    assert!(!missing.status.success(), "a deleted key is absent");
    assert!(missing.stdout.is_empty());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("has no key \"b\""), "{err}");

    let refused = broker.cli(&["produce", "cfg", "--empty-is-tombstone"], "x\n");
    assert!(!refused.status.success(), "--empty-is-tombstone needs --key-separator");
    let unknown = broker.cli(&["table", "missing"], "");
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("UNKNOWN_TOPIC"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_broker_compacts_a_compacted_topic_and_a_new_table_reads_less_for_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&["--config", &cairn_tests::cleaner_config(dir.path(), 20)]);
    let client = client(&broker).await;
    let settings = TopicConfig::default()
        .with("cleanup.policy", "compact")
        .with("segment.ms", "1")
        .with("min.cleanable.dirty.ratio", "0.01")
        .with("delete.retention.ms", "1d");
    client.create_topic("state", 1, settings).await.unwrap();
    let publisher = TablePublisher::new(Producer::new(client.clone(), ProducerConfig::default()), "state");
    // A record without a key has no place in a compacted topic.
    let unkeyed = ProducerRecord::new("state", None::<Bytes>, "no key");
    let refused = publisher.producer().send(unkeyed).await.unwrap().wait().await.unwrap_err();
    assert_eq!(refused.code(), Some(protocol::error_code::ErrorCode::INVALID_RECORD), "{refused}");
    let mut rng = Rng::new(11);
    let mut model = Model::new();
    let mut sent = 0u64;
    // Rounds of updates over few keys; each round's first append rolls
    // the segment (segment.ms = 1), so there is plenty to clean.
    for round in 0..40 {
        let mut deliveries = Vec::new();
        for i in 0..25 {
            let r = rng.next_u64();
            let key = format!("entity-{:02}", r % 20).into_bytes();
            if r >> 61 == 0 {
                deliveries.push(publisher.delete(key.clone()).await.unwrap());
                model.remove(&key);
            } else {
                let value = format!("{round}-{i}-{}", "v".repeat(100)).into_bytes();
                deliveries.push(publisher.put(key.clone(), value.clone()).await.unwrap());
                model.insert(key, value);
            }
        }
        sent += deliveries.len() as u64;
        for d in deliveries {
            d.wait().await.expect("acknowledged");
        }
        // Let the segment age past segment.ms: the next round rolls it.
        cairn_tests::let_time_pass(Duration::from_millis(2)).await;
    }
    // The broker's cleaner shrinks the log (polling its size, bounded).
    let size = async || client.describe_topic("state").await.unwrap().partitions[0].size_bytes;
    let full = size().await;
    let deadline = Instant::now() + Duration::from_mins(1);
    let mut compacted = full;
    while compacted * 2 > full {
        assert!(Instant::now() < deadline, "no compaction within a minute: {compacted} of {full} bytes");
        tokio::time::sleep(Duration::from_millis(20)).await;
        compacted = size().await;
    }
    let mut table = Table::open(&client, "state", TableConfig::default()).await.unwrap();
    let applied = table.catch_up().await.unwrap();
    let got: Model = table.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
    assert_eq!(got, model, "the compacted topic gives the same table");
    assert!(applied * 2 < sent, "a new table reads far less: {applied} of {sent} records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_compacted_topic_is_cleaned_within_max_compaction_lag_and_describe_and_metrics_show_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&["--config", &cairn_tests::cleaner_config(dir.path(), 20)]);
    let client = client(&broker).await;
    // Segments never roll by size or age here: only max.compaction.lag.ms
    // seals the active segment, so the cleaner may take it.
    let settings = TopicConfig::default()
        .with("cleanup.policy", "compact")
        .with("max.compaction.lag.ms", "200")
        .with("min.cleanable.dirty.ratio", "0.99")
        .with("delete.retention.ms", "1d");
    client.create_topic("idle", 1, settings).await.unwrap();
    let described = stdout(&broker.cli(&["topic", "describe", "idle"], ""));
    let row = |d: &str| -> Vec<String> {
        d.lines().find(|l| l.starts_with("0\t")).expect("partition 0").split('\t').map(str::to_owned).collect()
    };
    let header: Vec<String> =
        described.lines().find(|l| l.starts_with("PARTITION")).unwrap().split('\t').map(str::to_owned).collect();
    let column = |name: &str| header.iter().position(|h| h == name).expect(name);
    assert_eq!(row(&described)[column("LAST_CLEAN")], "never", "{described}");
    let publisher = TablePublisher::new(Producer::new(client.clone(), ProducerConfig::default()), "idle");
    let mut model = Model::new();
    let mut deliveries = Vec::new();
    for i in 0..500 {
        let key = format!("entity-{:02}", i % 10).into_bytes();
        let value = format!("{i}-{}", "v".repeat(100)).into_bytes();
        deliveries.push(publisher.put(key.clone(), value.clone()).await.unwrap());
        model.insert(key, value);
    }
    for d in deliveries {
        d.wait().await.expect("acknowledged");
    }
    // Nothing more is produced; the cleaner alone shrinks the log, and
    // describe and the metrics show the pass once it has ended.
    let size = async || client.describe_topic("idle").await.unwrap().partitions[0].size_bytes;
    let full = size().await;
    let labels = ["topic=\"idle\"", "partition=\"0\""];
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let compacted = size().await;
        let described = stdout(&broker.cli(&["topic", "describe", "idle"], ""));
        let r = row(&described);
        let read = broker.metric("cairn_cleaner_read_bytes_total", &labels).unwrap_or(0.0);
        let removed = broker.metric("cairn_cleaner_removed_bytes_total", &labels).unwrap_or(0.0);
        let dirty = broker.metric("cairn_cleaner_dirty_bytes", &labels);
        if compacted * 4 <= full
            && r[column("LAST_CLEAN")] != "never"
            && r[column("DIRTY_RATIO")] == "0.00"
            && read >= full as f64
            && removed > 0.0
            && dirty == Some(0.0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "an idle topic was not compacted within a minute: {compacted} of {full} bytes, read {read}, \
             removed {removed}, dirty {dirty:?}\n{described}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut table = Table::open(&client, "idle", TableConfig::default()).await.unwrap();
    let applied = table.catch_up().await.unwrap();
    let got: Model = table.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
    assert_eq!(got, model);
    assert!(applied <= 20, "a new table reads about one record per key: {applied}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairn_offsets_with_a_checkpoint_prints_the_tables_position_and_lag() {
    let broker = Broker::start(&[]);
    let client = client(&broker).await;
    client.create_topic("lagging", 2, TopicConfig::default()).await.unwrap();
    let publisher = TablePublisher::new(Producer::new(client.clone(), ProducerConfig::default()), "lagging");
    let mut model = Model::new();
    publish_events(&publisher, &mut Rng::new(7), &mut model, 200, 50, "a").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lagging.table");
    let config = TableConfig { checkpoint_path: Some(path.clone()), ..TableConfig::default() };
    let mut table = Table::open(&client, "lagging", config).await.unwrap();
    table.catch_up().await.unwrap();
    table.checkpoint().await.unwrap();
    let caught_up = table.positions().clone();
    drop(table);
    let later = publish_events(&publisher, &mut Rng::new(8), &mut model, 120, 50, "b").await;
    let checkpoint = path.to_str().unwrap();
    let printed = stdout(&broker.cli(&["offsets", "lagging", "--checkpoint", checkpoint], ""));
    let rows: Vec<Vec<u64>> =
        printed.lines().skip(1).map(|l| l.split('\t').map(|v| v.parse().unwrap()).collect()).collect();
    assert_eq!(printed.lines().next(), Some("PARTITION\tEARLIEST\tLATEST\tPOSITION\tLAG"), "{printed}");
    assert_eq!(rows.len(), 2, "{printed}");
    for row in &rows {
        let partition = u32::try_from(row[0]).unwrap();
        assert_eq!(Some(&Offset(row[3])), caught_up.get(&partition), "the checkpoint's position: {printed}");
        assert_eq!(row[4], row[2] - row[3], "lag = latest - position: {printed}");
    }
    assert_eq!(rows.iter().map(|r| r[4]).sum::<u64>(), later, "everything sent after the checkpoint is lag: {printed}");
    // A checkpoint of another topic is refused.
    client.create_topic("elsewhere", 1, TopicConfig::default()).await.unwrap();
    let refused = broker.cli(&["offsets", "elsewhere", "--checkpoint", checkpoint], "");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not \"elsewhere\""), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_altered_to_compact_with_the_cli_is_compacted_and_then_refuses_keyless_records() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&["--config", &cairn_tests::cleaner_config(dir.path(), 20)]);
    let client = client(&broker).await;
    client.create_topic("late", 1, TopicConfig::default()).await.unwrap();
    let publisher = TablePublisher::new(Producer::new(client.clone(), ProducerConfig::default()), "late");
    let mut model = Model::new();
    let mut deliveries = Vec::new();
    for i in 0..400 {
        let key = format!("entity-{:02}", i % 8).into_bytes();
        let value = format!("{i}-{}", "v".repeat(100)).into_bytes();
        deliveries.push(publisher.put(key.clone(), value.clone()).await.unwrap());
        model.insert(key, value);
    }
    for d in deliveries {
        d.wait().await.expect("acknowledged");
    }
    let full = client.describe_topic("late").await.unwrap().partitions[0].size_bytes;
    let alter = [
        "topic",
        "alter",
        "late",
        "--config",
        "cleanup.policy=compact",
        "--config",
        "min.cleanable.dirty.ratio=0.01",
        "--config",
        "max.compaction.lag.ms=1",
    ];
    stdout(&broker.cli(&alter, ""));
    let described = stdout(&broker.cli(&["topic", "describe", "late"], ""));
    assert!(described.lines().any(|l| l == "cleanup.policy\tcompact\ttopic"), "{described}");
    let deadline = Instant::now() + Duration::from_mins(1);
    while client.describe_topic("late").await.unwrap().partitions[0].size_bytes * 4 > full {
        assert!(Instant::now() < deadline, "not compacted within a minute of the alter");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut table = Table::open(&client, "late", TableConfig::default()).await.unwrap();
    table.catch_up().await.unwrap();
    let got: Model = table.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
    assert_eq!(got, model);
    let unkeyed = ProducerRecord::new("late", None::<Bytes>, "no key");
    let refused = publisher.producer().send(unkeyed).await.unwrap().wait().await.unwrap_err();
    assert_eq!(refused.code(), Some(protocol::error_code::ErrorCode::INVALID_RECORD), "{refused}");
}
