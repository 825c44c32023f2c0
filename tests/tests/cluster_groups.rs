//! A consumer group and a queue group on a three-broker cluster while the
//! broker leading their coordinator (the leader of `__consumer_offsets`) is
//! killed with -9: both go on under the new leader; the group's commits
//! made before the kill are still there and no record is skipped; the
//! queue hands out nothing it had confirmed finished, loses nothing, and
//! counts every record acked exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use cairn_client::{
    AckKind, GroupConsumer, GroupConsumerConfig, Producer, ProducerRecord, QueueConsumer, QueueConsumerConfig,
    StartFrom,
};
use cairn_tests::cluster::{Cluster, client, create, create_with, retrying_producer_config, settled};

const RECORDS: u64 = 600;
const PARTITIONS: u32 = 3;

fn value(r: &cairn_client::ConsumerRecord) -> u64 {
    String::from_utf8_lossy(r.value.as_deref().expect("a value")).parse().expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_and_queues_go_on_when_their_coordinator_is_killed_and_keep_what_they_committed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cairn.toml");
    std::fs::write(&cfg, "[groups]\ntick_ms = 50\noffsets_topic_partitions = 1\n").unwrap();
    let cfg = cfg.to_str().unwrap().to_owned();
    let mut cluster = Cluster::start(3, &["--flush", "always", "--config", &cfg]);
    let c = client(&cluster.bootstrap()).await;
    create(&c, "orders", PARTITIONS).await;
    let producer = Producer::new(c.clone(), retrying_producer_config());
    for i in 0..RECORDS {
        let mut r = ProducerRecord::new("orders", None::<Vec<u8>>, i.to_string());
        r.partition = Some((i % u64::from(PARTITIONS)) as u32);
        producer.send(r).await.unwrap().wait().await.unwrap();
    }

    let mut gconfig = GroupConsumerConfig::new("billing", &["orders"]);
    gconfig.start_from = StartFrom::Earliest;
    gconfig.auto_commit_interval = None;
    let mut group = GroupConsumer::join(c.clone(), gconfig).await.unwrap();
    let mut qconfig = QueueConsumerConfig::new("jobs", &["orders"]);
    qconfig.records_max = 50;
    qconfig.lock = Duration::from_secs(5);
    let mut queue = QueueConsumer::new(c.clone(), qconfig).unwrap();

    let mut seen: BTreeSet<u64> = BTreeSet::new();
    let mut committed_before: BTreeMap<(String, u32), u64> = BTreeMap::new();
    let mut confirmed: BTreeSet<(u32, u64)> = BTreeSet::new();
    let mut violations = Vec::new();
    let mut killed = None;
    let deadline = Instant::now() + Duration::from_mins(2);
    loop {
        assert!(Instant::now() < deadline, "not done: group saw {}, queue confirmed {}", seen.len(), confirmed.len());
        // The group: process, then commit what was processed.
        if let Ok(records) = group.poll().await {
            seen.extend(records.iter().map(value));
            if group.commit().await.is_ok() && killed.is_none() {
                let positions = c.committed_offsets("billing", Vec::new()).await.unwrap_or_default();
                committed_before = positions.into_iter().map(|e| ((e.topic, e.partition), e.offset)).collect();
            }
        }
        // The queue: accept everything it is handed.
        if let Ok(records) = queue.poll().await {
            for r in &records {
                let key = (r.record.partition, r.record.offset.0);
                if confirmed.contains(&key) {
                    violations.push(format!("{key:?} delivered again after its accept was confirmed"));
                }
                queue.ack(r);
            }
        }
        for r in queue.take_ack_results() {
            if r.error.is_ok() && r.kind == AckKind::Accept {
                for o in r.first..=r.last {
                    if !confirmed.insert((r.partition, o)) {
                        violations.push(format!("({}, {o}) accepted twice", r.partition));
                    }
                }
            }
        }
        // A third of the way through, the coordinator's broker dies.
        if killed.is_none() && seen.len() as u64 >= RECORDS / 3 && confirmed.len() as u64 >= RECORDS / 3 {
            let leader = cluster.leader_of("__consumer_offsets", 0).expect("the offsets partition has a leader");
            cluster.brokers[leader].kill9();
            killed = Some(leader);
        }
        if killed.is_some() && seen.len() as u64 == RECORDS && confirmed.len() as u64 == RECORDS {
            break;
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
    assert_eq!(seen, (0..RECORDS).collect(), "the group skipped no record");

    // The new coordinator has every commit made before the kill (or later ones).
    let survivor = &cluster.brokers[(killed.unwrap() + 1) % 3];
    let c2 = client(&survivor.addr).await;
    let after: BTreeMap<(String, u32), u64> = c2
        .committed_offsets("billing", Vec::new())
        .await
        .unwrap()
        .into_iter()
        .map(|e| ((e.topic, e.partition), e.offset))
        .collect();
    assert!(!committed_before.is_empty());
    for (tp, offset) in &committed_before {
        assert!(after.get(tp).is_some_and(|a| a >= offset), "{tp:?}: {offset} committed before, {after:?} after");
    }
    // The queue's state, from the new coordinator: all acked, once each.
    let info = c2.describe_queue("jobs").await.unwrap();
    assert_eq!(info.partitions.iter().map(|p| p.acked).sum::<u64>(), RECORDS, "{info:#?}");
    assert!(info.partitions.iter().all(|p| p.available + p.acquired + p.dead_letter_pending == 0), "{info:#?}");
    group.close().await.unwrap();
    queue.close().await.unwrap();
}

/// A queue over a topic of replication factor 1 on three brokers: its
/// coordinator's broker has a replica of only some partitions, and learns
/// the others' bounds from their leaders, so every record is handed out
/// and acked (without that, the fetch is refused for the partitions
/// elsewhere and none is delivered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_hands_out_the_partitions_its_coordinator_has_no_replica_of() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cairn.toml");
    std::fs::write(&cfg, "[groups]\ntick_ms = 50\noffsets_topic_partitions = 1\n").unwrap();
    let cfg = cfg.to_str().unwrap().to_owned();
    let cluster = Cluster::start(3, &["--config", &cfg]);
    let c = client(&cluster.bootstrap()).await;
    let partitions = 6u32;
    let records = 120u64;
    create_with(&c, "spread", partitions, cairn_client::TopicConfig::default().with("replication.factor", "1")).await;
    let producer = Producer::new(c.clone(), retrying_producer_config());
    for i in 0..records {
        let mut r = ProducerRecord::new("spread", None::<Vec<u8>>, i.to_string());
        r.partition = Some((i % u64::from(partitions)) as u32);
        producer.send(r).await.unwrap().wait().await.unwrap();
    }
    let mut config = QueueConsumerConfig::new("spread-jobs", &["spread"]);
    config.lock = Duration::from_secs(10);
    let mut queue = QueueConsumer::new(c.clone(), config).unwrap();
    let mut confirmed: BTreeSet<(u32, u64)> = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_mins(1);
    while (confirmed.len() as u64) < records {
        assert!(Instant::now() < deadline, "only {} of {records} confirmed", confirmed.len());
        match queue.poll().await {
            Ok(got) => got.iter().for_each(|r| queue.ack(r)),
            Err(e) => assert!(e.is_retriable(), "{e}"),
        }
        for r in queue.take_ack_results() {
            if r.error.is_ok() && r.kind == AckKind::Accept {
                confirmed.extend((r.first..=r.last).map(|o| (r.partition, o)));
            }
        }
    }
    // The test means something only if the coordinator lacks some of them.
    let offsets = settled(&c, "__consumer_offsets", 0).await;
    let coordinator = offsets.leader.expect("a coordinator");
    let mut elsewhere = 0;
    for p in 0..partitions {
        if !settled(&c, "spread", p).await.replicas.contains(&coordinator) {
            elsewhere += 1;
        }
    }
    assert!(elsewhere > 0, "every partition has a replica on the coordinator's broker {coordinator}");
    let info = c.describe_queue("spread-jobs").await.unwrap();
    assert_eq!(info.partitions.iter().map(|p| p.acked).sum::<u64>(), records, "{info:#?}");
    queue.close().await.unwrap();
}

/// A queue over a topic of replication factor 1 while a broker holding some
/// of its partitions (not the coordinator's) is killed with -9: the
/// partitions elsewhere are still handed out and acked; only the dead
/// broker's wait for it (one unknown partition does not refuse the fetch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_goes_on_with_the_other_partitions_while_a_broker_holding_some_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cairn.toml");
    std::fs::write(&cfg, "[groups]\ntick_ms = 50\noffsets_topic_partitions = 1\n").unwrap();
    let cfg = cfg.to_str().unwrap().to_owned();
    let mut cluster = Cluster::start(3, &["--config", &cfg]);
    let c = client(&cluster.bootstrap()).await;
    let partitions = 6u32;
    let records = 120u64;
    create_with(&c, "halves", partitions, cairn_client::TopicConfig::default().with("replication.factor", "1")).await;
    let producer = Producer::new(c.clone(), retrying_producer_config());
    for i in 0..records {
        let mut r = ProducerRecord::new("halves", None::<Vec<u8>>, i.to_string());
        r.partition = Some((i % u64::from(partitions)) as u32);
        producer.send(r).await.unwrap().wait().await.unwrap();
    }
    // The first poll makes the offsets topic (the queue's coordinator).
    let mut config = QueueConsumerConfig::new("halves-jobs", &["halves"]);
    config.lock = Duration::from_secs(10);
    config.records_max = 5;
    let mut queue = QueueConsumer::new(c.clone(), config).unwrap();
    let mut confirmed: BTreeSet<(u32, u64)> = BTreeSet::new();
    let take = |queue: &mut QueueConsumer, confirmed: &mut BTreeSet<(u32, u64)>| {
        for r in queue.take_ack_results() {
            if r.error.is_ok() && r.kind == AckKind::Accept {
                confirmed.extend((r.first..=r.last).map(|o| (r.partition, o)));
            }
        }
    };
    let first = loop {
        match queue.poll().await {
            Ok(got) if !got.is_empty() => break got,
            Ok(_) => {}
            Err(e) => assert!(e.is_retriable(), "{e}"),
        }
    };
    let coordinator = settled(&c, "__consumer_offsets", 0).await.leader.expect("a coordinator");
    let mut holders = BTreeMap::new();
    for p in 0..partitions {
        let replicas = settled(&c, "halves", p).await.replicas;
        assert_eq!(replicas.len(), 1, "{replicas:?}");
        holders.insert(p, replicas[0]);
    }
    let Some(victim) = holders.values().copied().find(|&n| n != coordinator) else {
        panic!("every partition is on the coordinator's broker {coordinator}: {holders:?}");
    };
    cluster.brokers[usize::try_from(victim).unwrap() - 1].kill9();
    // What was handed out before the kill is acked after it.
    for r in &first {
        queue.ack(r);
    }
    let reachable: BTreeSet<u32> = holders.iter().filter(|&(_, &n)| n != victim).map(|(&p, _)| p).collect();
    let per_partition = records / u64::from(partitions);
    let done = |confirmed: &BTreeSet<(u32, u64)>| {
        reachable.iter().all(|&p| confirmed.range((p, 0)..=(p, u64::MAX)).count() as u64 == per_partition)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(&confirmed) {
        assert!(
            Instant::now() < deadline,
            "not all {per_partition} records of each of {reachable:?} confirmed (victim {victim}): {confirmed:?}"
        );
        match queue.poll().await {
            Ok(got) => got.iter().for_each(|r| queue.ack(r)),
            Err(e) => assert!(e.is_retriable(), "{e}"),
        }
        take(&mut queue, &mut confirmed);
    }
    queue.close().await.unwrap();
}
