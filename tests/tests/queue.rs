//! Queue groups against a real broker: many consumers acking, releasing,
//! rejecting and crashing (dropped without a word, and `cairn consume
//! --queue` processes killed with -9), and the broker killed with -9 in the
//! middle. Every record ends acked or dead-lettered exactly once as far as
//! the queue's state says, none is lost, nothing finished is delivered
//! again, and the dead-letter topic holds every dead letter with headers
//! naming where it came from.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_client::{
    AckKind, Client, ClientConfig, Consumer, ConsumerConfig, ErrorCode, Producer, ProducerConfig, ProducerRecord,
    QueueConsumer, QueueConsumerConfig, StartFrom, TopicConfig,
};
use cairn_tests::{Broker, bin};

const TOPIC: &str = "work";
const QUEUE: &str = "workers";
const PARTITIONS: u32 = 4;
const RECORDS: u64 = 3000;

fn config(dir: &std::path::Path) -> String {
    let path = dir.join("cairn.toml");
    std::fs::write(&path, "[groups]\ntick_ms = 50\noffsets_topic_partitions = 2\nqueue_delivery_count_max = 3\n")
        .unwrap();
    path.to_str().unwrap().to_owned()
}

/// What the consumers saw, in one order (`seq`).
#[derive(Default)]
struct Ledger {
    seq: u64,
    /// Deliveries of each record.
    delivered: BTreeMap<(u32, u64), Vec<u64>>,
    /// When each record's finishing ack (accept or dead-lettered) was
    /// confirmed, and which.
    finished: BTreeMap<(u32, u64), (u64, AckKind)>,
    /// Rejects the coordinator confirmed.
    rejected: BTreeSet<(u32, u64)>,
    violations: Vec<String>,
}

impl Ledger {
    fn delivery(&mut self, key: (u32, u64)) {
        self.seq += 1;
        if let Some((at, kind)) = self.finished.get(&key) {
            self.violations.push(format!("{key:?} delivered again after its {kind:?} was confirmed (seq {at})"));
        }
        self.delivered.entry(key).or_default().push(self.seq);
    }

    fn confirmed(&mut self, r: &cairn_client::AckResult) {
        self.seq += 1;
        if !r.error.is_ok() {
            return;
        }
        for o in r.first..=r.last {
            let key = (r.partition, o);
            match r.kind {
                AckKind::Accept | AckKind::DeadLettered => {
                    if let Some(before) = self.finished.insert(key, (self.seq, r.kind)) {
                        self.violations.push(format!("{key:?} finished twice: {before:?} and {:?}", r.kind));
                    }
                }
                AckKind::Reject => {
                    self.rejected.insert(key);
                }
                AckKind::Release { .. } | AckKind::Gap => {}
            }
        }
    }
}

/// One library consumer after another: each works for a while, then
/// "crashes" (is dropped without closing, its records left locked).
async fn worker(addr: String, seed: u64, ledger: Arc<Mutex<Ledger>>, stop: Arc<AtomicBool>, errors: Arc<AtomicU64>) {
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % 100
    };
    while !stop.load(Ordering::Relaxed) {
        let Ok(client) = Client::connect(ClientConfig::new(addr.clone())).await else {
            errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut config = QueueConsumerConfig::new(QUEUE, &[TOPIC]);
        config.lock = Duration::from_secs(1);
        config.records_max = 40;
        config.idle_wait = Duration::from_millis(20);
        let mut consumer = QueueConsumer::new(client, config).unwrap();
        'life: while !stop.load(Ordering::Relaxed) {
            let polled = consumer.poll().await;
            {
                let mut l = ledger.lock().unwrap();
                for r in consumer.take_ack_results() {
                    l.confirmed(&r);
                }
            }
            let Ok(records) = polled else {
                errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            for r in &records {
                ledger.lock().unwrap().delivery((r.record.partition, r.record.offset.0));
            }
            for r in &records {
                match next() {
                    0..=2 => break 'life,
                    3..=6 => consumer.reject(r),
                    7..=14 => consumer.release(r, Duration::from_millis(next())),
                    _ => consumer.ack(r),
                }
            }
        }
        // A crash: dropped with whatever it held and had not sent.
        drop(consumer);
    }
}

/// A `cairn consume --queue --ack-after-print` process and the lines it printed.
struct CliConsumer {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl CliConsumer {
    fn start(addr: &str) -> CliConsumer {
        let mut child = Command::new(bin("cairn"))
            .args(["--bootstrap", addr, "consume", TOPIC, "--queue", QUEUE, "--ack-after-print", "--lock", "1s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting cairn consume --queue");
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        CliConsumer { child, lines }
    }

    fn printed(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_acking_releasing_rejecting_and_crashing_through_a_broker_kill_finish_every_record_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let mut broker = Broker::start(&["--config", &cfg]);
    let c = Client::connect(ClientConfig::new(broker.addr.clone())).await.unwrap();
    c.create_topic(TOPIC, PARTITIONS, TopicConfig::default()).await.unwrap();
    let producer = Producer::new(c.clone(), ProducerConfig::default());
    let mut pending = Vec::new();
    for i in 0..RECORDS {
        let mut r = ProducerRecord::new(TOPIC, None::<Vec<u8>>, i.to_string());
        r.partition = Some((i % u64::from(PARTITIONS)) as u32);
        pending.push(producer.send(r).await.unwrap());
    }
    for d in pending {
        d.wait().await.unwrap();
    }

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..4u64)
        .map(|i| {
            tokio::spawn(worker(
                broker.addr.clone(),
                0x9e37_79b9 * (i + 1),
                ledger.clone(),
                stop.clone(),
                errors.clone(),
            ))
        })
        .collect();
    let mut clis = [CliConsumer::start(&broker.addr), CliConsumer::start(&broker.addr)];

    // A sixth of the way through, one CLI consumer is killed with -9; at a
    // third, the other and the broker are. The library consumers go on
    // alone after the restart, so whatever the restart lost of their acks
    // shows as a redelivery of a record whose finish was confirmed.
    let done = |c: Client| async move {
        c.describe_queue(QUEUE).await.map_or(0, |i| i.partitions.iter().map(|p| p.acked + p.dead_lettered).sum::<u64>())
    };
    let deadline = Instant::now() + Duration::from_mins(1);
    while done(c.clone()).await < RECORDS / 6 || clis[0].printed() == 0 {
        assert!(Instant::now() < deadline, "a sixth of the records not done");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    clis[0].kill9();
    while done(c.clone()).await < RECORDS / 3 {
        assert!(Instant::now() < deadline, "a third of the records not done");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    clis[1].kill9();
    broker.kill9();
    broker.restart_on_same_address().expect("the broker restarts");

    // Until the queue's own state says every record is done.
    let c = Client::connect(ClientConfig::new(broker.addr.clone())).await.unwrap();
    let deadline = Instant::now() + Duration::from_mins(2);
    let info = loop {
        if let Ok(info) = c.describe_queue(QUEUE).await {
            let done: u64 = info.partitions.iter().map(|p| p.acked + p.dead_lettered).sum();
            let in_flight: u64 = info.partitions.iter().map(|p| p.available + p.acquired + p.dead_letter_pending).sum();
            if done >= RECORDS && in_flight == 0 {
                break info;
            }
            assert!(Instant::now() < deadline, "the queue did not drain: {info:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    for cli in &mut clis {
        cli.kill9();
    }

    // The queue's state: every record finished exactly once, none lost.
    let ends = c.list_offsets(TOPIC, &[], cairn_client::OffsetSpec::Latest).await.unwrap();
    let ends: BTreeMap<u32, u64> = ends.into_iter().map(|(p, o)| (p, o.0)).collect();
    assert_eq!(info.partitions.len(), PARTITIONS as usize);
    for p in &info.partitions {
        assert_eq!((p.start, p.next), (ends[&p.partition], ends[&p.partition]), "{p:?}");
        assert_eq!(p.skipped, 0, "no offset of this topic lacks a record: {p:?}");
    }
    let acked: u64 = info.partitions.iter().map(|p| p.acked).sum();
    let dead_lettered: u64 = info.partitions.iter().map(|p| p.dead_lettered).sum();
    assert_eq!(acked + dead_lettered, RECORDS, "every record acked or dead-lettered exactly once");

    let l = std::mem::take(&mut *ledger.lock().unwrap());
    eprintln!(
        "acked {acked}, dead-lettered {dead_lettered}; library consumers: {} deliveries, {} finished, {} rejects, {} errors; cli printed {}",
        l.delivered.values().map(Vec::len).sum::<usize>(),
        l.finished.len(),
        l.rejected.len(),
        errors.load(Ordering::Relaxed),
        clis.iter().map(CliConsumer::printed).sum::<usize>()
    );
    assert!(l.violations.is_empty(), "{:#?}", l.violations);
    let accepted: BTreeSet<(u32, u64)> =
        l.finished.iter().filter(|(_, (_, k))| *k == AckKind::Accept).map(|(k, _)| *k).collect();
    assert!(!accepted.is_empty() && !l.rejected.is_empty());

    // The dead-letter topic: each dead letter at least once (a consumer
    // that died between its copy and its report leaves a second copy),
    // with its origin in the headers; none of them was accepted.
    let dlq = info.dead_letter_topic.clone();
    assert_eq!(dlq, format!("{QUEUE}.dlq"));
    let end = c.list_offsets(&dlq, &[0], cairn_client::OffsetSpec::Latest).await.unwrap()[0].1;
    let mut reader =
        Consumer::assign(c.clone(), ConsumerConfig::default(), &dlq, &[], StartFrom::Earliest).await.unwrap();
    let mut sources: BTreeMap<(u32, u64), String> = BTreeMap::new();
    let mut read = 0;
    while read < end.0 {
        for r in reader.poll().await.unwrap() {
            read = r.offset.0 + 1;
            let header = |name: &str| {
                let (_, v) = r.headers.iter().find(|(k, _)| k == name).unwrap_or_else(|| panic!("no {name} header"));
                String::from_utf8_lossy(v).into_owned()
            };
            assert_eq!(header("cairn.dlq.topic"), TOPIC);
            assert_eq!(header("cairn.dlq.queue"), QUEUE);
            let key = (header("cairn.dlq.partition").parse().unwrap(), header("cairn.dlq.offset").parse().unwrap());
            let reason = header("cairn.dlq.reason");
            assert!(reason == "rejected" || reason == "delivery-limit", "{reason}");
            // The copy carries the original value: record i is at offset i / PARTITIONS of partition i % PARTITIONS.
            let value: u64 = String::from_utf8_lossy(r.value.as_deref().unwrap()).parse().unwrap();
            assert_eq!((value % u64::from(PARTITIONS), value / u64::from(PARTITIONS)), (u64::from(key.0), key.1));
            sources.insert(key, reason);
        }
    }
    assert_eq!(sources.len() as u64, dead_lettered, "each dead letter is in the dead-letter topic");
    assert!(l.rejected.iter().all(|k| sources.contains_key(k)), "a confirmed reject is not in the dead-letter topic");
    assert!(sources.keys().all(|k| !accepted.contains(k)), "an accepted record was dead-lettered");

    // And what `cairn queue describe` prints.
    let out = broker.cli(&["queue", "describe", QUEUE], "");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("0 in flight, {acked} acked, {dead_lettered} dead-lettered")), "{text}");
    for p in 0..PARTITIONS {
        assert!(text.lines().any(|l| l.starts_with(&format!("{TOPIC}\t{p}\t{}\t{}", ends[&p], ends[&p]))), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairn_consume_with_a_queue_shares_the_records_and_a_delete_needs_no_holder() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let broker = Broker::start(&["--config", &cfg]);
    let c = Client::connect(ClientConfig::new(broker.addr.clone())).await.unwrap();
    c.create_topic("jobs", 3, TopicConfig::default()).await.unwrap();
    let lines: String = (0..30).map(|i| format!("job-{i}")).collect::<Vec<_>>().join("\n");
    assert!(broker.cli(&["produce", "jobs"], &lines).status.success());
    // Two runs share the 30 records: 12, then the other 18.
    let first = broker.cli(&["consume", "jobs", "--queue", "q", "--count", "12"], "");
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let second = broker.cli(&["consume", "jobs", "--queue", "q", "--count", "18"], "");
    let mut all: Vec<String> = String::from_utf8_lossy(&first.stdout).lines().map(str::to_owned).collect();
    assert_eq!(all.len(), 12);
    all.extend(String::from_utf8_lossy(&second.stdout).lines().map(str::to_owned));
    all.sort();
    let mut want: Vec<String> = (0..30).map(|i| format!("job-{i}")).collect();
    want.sort();
    assert_eq!(all, want, "each record printed once over the two runs");
    let info = c.describe_queue("q").await.unwrap();
    assert_eq!(info.partitions.iter().map(|p| p.acked).sum::<u64>(), 30);
    // Unknown queues and topics have their codes, and fetches that hand
    // out no dead letter create no topic (a client cannot make topics by
    // naming queues).
    let unknown = c.describe_queue("nope").await.unwrap_err();
    assert_eq!(unknown.code(), Some(ErrorCode::UNKNOWN_GROUP));
    for i in 0..5 {
        let mut stray =
            QueueConsumer::new(c.clone(), QueueConsumerConfig::new(format!("stray-{i}"), &["no-such-topic"])).unwrap();
        assert_eq!(stray.poll().await.unwrap_err().code(), Some(ErrorCode::UNKNOWN_TOPIC));
    }
    let topics: Vec<String> = c.list_topics().await.unwrap().into_iter().map(|t| t.name).collect();
    assert!(topics.iter().all(|t| !t.starts_with("stray-")), "{topics:?}");
    let out = broker.cli(&["queue", "delete", "q"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(c.describe_queue("q").await.unwrap_err().code(), Some(ErrorCode::UNKNOWN_GROUP));
}

/// More ack ranges than the coordinator takes in one call
/// (`acks_per_call_max`, 10 000) go over several calls: every one is
/// answered and applied (sent at once, the call would be refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_acks_than_one_call_takes_go_over_several_calls() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let broker = Broker::start(&["--config", &cfg]);
    let c = Client::connect(ClientConfig::new(broker.addr.clone())).await.unwrap();
    let partitions = 6u32;
    let per_partition = 1900u64;
    c.create_topic("many", partitions, TopicConfig::default()).await.unwrap();
    let lines: String = (0..per_partition).map(|i| i.to_string() + "\n").collect();
    for p in 0..partitions {
        assert!(broker.cli(&["produce", "many", "--partition", &p.to_string()], &lines).status.success());
    }
    let mut config = QueueConsumerConfig::new("many-jobs", &["many"]);
    config.lock = Duration::from_mins(5);
    let mut queue = QueueConsumer::new(c.clone(), config).unwrap();
    let mut held = Vec::new();
    let total = per_partition * u64::from(partitions);
    let deadline = Instant::now() + Duration::from_mins(1);
    while (held.len() as u64) < total {
        assert!(Instant::now() < deadline, "only {} of {total} handed out", held.len());
        held.extend(queue.poll().await.unwrap());
    }
    // Alternate accept and release: one range per record, over 10 000.
    held.sort_by_key(|r| (r.record.partition, r.record.offset));
    for (i, r) in held.iter().enumerate() {
        if i % 2 == 0 {
            queue.ack(r);
        } else {
            queue.release(r, Duration::from_mins(5));
        }
    }
    queue.flush().await.unwrap();
    let results = queue.take_ack_results();
    assert!(results.iter().all(|r| r.error.is_ok()), "{:?}", results.iter().find(|r| !r.error.is_ok()));
    let accepted: u64 = results.iter().filter(|r| r.kind == AckKind::Accept).map(|r| r.last - r.first + 1).sum();
    assert_eq!(accepted, total.div_ceil(2));
    let info = c.describe_queue("many-jobs").await.unwrap();
    assert_eq!(info.partitions.iter().map(|p| p.acked).sum::<u64>(), accepted, "{info:#?}");
    assert_eq!(info.partitions.iter().map(|p| p.acquired).sum::<u64>(), 0, "{info:#?}");
}
