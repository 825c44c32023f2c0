//! A broker added to a running cluster (`--join`): it registers through a
//! member, every broker learns of it, placement gives it replicas, a
//! partition moves onto it with every acknowledged record, and both it and
//! the brokers it joined keep the membership across restarts. A newcomer
//! with a node id the cluster has is refused with its stable code. A
//! broker is drained (`cairn broker drain`) before it is removed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cairn_client::Producer;
use cairn_tests::cluster::{
    Cluster, client, copies_deleted, create, produce, read_all, retrying_producer_config, settled,
};
use cairn_tests::history;

/// Waits until the broker at `addr` describes `brokers` brokers, every one
/// alive.
async fn described(addr: &str, brokers: usize) -> Vec<u32> {
    let c = client(addr).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = c.metadata(&[]).await.expect("metadata");
        if m.brokers.len() == brokers && m.brokers.iter().all(|b| b.alive) {
            return m.brokers.iter().map(|b| b.node_id).collect();
        }
        assert!(Instant::now() < deadline, "{addr} does not describe {brokers} live brokers: {:?}", m.brokers);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_broker_takes_replicas_and_keeps_its_membership_across_restarts() {
    let mut cluster = Cluster::start(3, &["--flush", "always"]);
    let c = client(&cluster.bootstrap()).await;
    create(&c, "grow", 1).await;
    let before = settled(&c, "grow", 0).await;
    let producer = Producer::new(c.clone(), retrying_producer_config());
    let mut acked = produce(&producer, "grow", 1, 0, 500).await;

    cluster.join(4, &["--flush", "always"]).expect("broker 4 joins");
    for broker in &cluster.brokers {
        assert_eq!(described(&broker.addr, 4).await, vec![1, 2, 3, 4], "as {} sees it", broker.addr);
    }

    // A partition moves onto the newcomer with every record.
    let target: Vec<u32> = before.replicas.iter().copied().skip(1).chain([4]).collect();
    c.reassign_partition("grow", 0, &target).await.expect("the move starts");
    assert!(c.wait_reassigned("grow", 0, &target, Duration::from_mins(1)).await, "the move onto 4 did not finish");
    acked.extend(produce(&producer, "grow", 1, 500, 200).await);
    let newcomer = cluster.brokers[3].addr.clone();
    let copy = caught_up_at(&newcomer, "grow", 0, acked.len()).await;
    let report = history::check(&acked, &[BTreeMap::from([(0, copy)])]);
    assert!(report.is_valid(), "broker 4's copy: {report}");

    // Placement counts it: one partition of four at replication factor 1
    // lands on it.
    let out =
        cluster.brokers[0].cli(&["topic", "create", "spread", "--partitions", "4", "--replication-factor", "1"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m = c.metadata(&["spread"]).await.expect("metadata");
    let mut hosts: Vec<u32> = m.topics[0].partitions.iter().flat_map(|p| p.replicas.clone()).collect();
    hosts.sort_unstable();
    assert_eq!(hosts, vec![1, 2, 3, 4], "{m:?}");

    // Both sides keep the membership: the newcomer restarts without asking
    // again, a broker it joined restarts and still knows it.
    for index in [3, 0] {
        let broker = &mut cluster.brokers[index];
        broker.terminate();
        broker.restart();
        assert_eq!(described(&broker.addr, 4).await, vec![1, 2, 3, 4]);
    }
    assert_eq!(cluster.brokers[3].log().matches("joined the cluster").count(), 1, "registered once");
    let copy = caught_up_at(&cluster.brokers[3].addr, "grow", 0, acked.len()).await;
    let report = history::check(&acked, &[BTreeMap::from([(0, copy)])]);
    assert!(report.is_valid(), "broker 4's copy after its restart: {report}");

    // Its data is a cluster member's: started without --join it refuses
    // to run alone (it would take writes the cluster does not have).
    let joined = &mut cluster.brokers[3];
    joined.terminate();
    let alone = cairn_tests::Broker::try_start_in(&joined.data_dir(), &[]).err().expect("refused alone");
    assert!(alone.contains("holds a cluster member's data"), "{alone}");
    joined.restart();

    // A newcomer claiming a member's id is refused, and says why.
    let refused = cluster.join(2, &[]).err().expect("a second node 2 is refused");
    assert!(refused.contains("node id 2 is taken"), "{refused}");
    assert_eq!(described(&cluster.brokers[1].addr, 4).await, vec![1, 2, 3, 4]);

    // Removed: refused while it holds replicas, and for a voter; after a
    // drain every broker forgets it.
    let cli = |args: &[&str]| cluster.brokers[0].cli(args, "");
    let out = cli(&["broker", "remove", "4"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("drain it first"), "{out:?}");
    let out = cli(&["broker", "remove", "2"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("controller quorum"), "{out:?}");
    let out = cli(&["broker", "drain", "4", "--timeout", "60s"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&["broker", "remove", "4"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for broker in &cluster.brokers[..3] {
        assert_eq!(described(&broker.addr, 3).await, vec![1, 2, 3], "as {} sees it", broker.addr);
    }
    let copy = caught_up_at(&cluster.brokers[1].addr, "grow", 0, acked.len()).await;
    let report = history::check(&acked, &[BTreeMap::from([(0, copy)])]);
    assert!(report.is_valid(), "broker 2's copy after broker 4 left: {report}");
}

/// `cairn broker drain` under a running producer: afterwards the drained
/// broker holds no replica and leads nothing, its copies are deleted, and
/// every replica of every partition holds every acknowledged record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_broker_is_left_with_no_replicas_and_nothing_acknowledged_is_lost() {
    let cluster = Cluster::start(4, &["--flush", "always"]);
    let c = client(&cluster.bootstrap()).await;
    create(&c, "drained", 4).await;
    for p in 0..4 {
        settled(&c, "drained", p).await;
    }
    let producer = Producer::new(c.clone(), retrying_producer_config());
    let mut acked = produce(&producer, "drained", 4, 0, 1_000).await;
    let during = {
        let producer = producer.clone();
        tokio::spawn(async move { produce(&producer, "drained", 4, 1_000, 3_000).await })
    };
    let broker = cluster.brokers[0].addr.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(cairn_tests::bin("cairn"))
            .args(["--bootstrap", &broker, "broker", "drain", "2", "--timeout", "60s"])
            .output()
            .expect("running cairn")
    })
    .await
    .expect("the CLI task");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "drain failed: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    // Broker 2 held three of the four partitions (replication factor 3).
    assert!(stdout.contains("broker 2 holds no replicas (3 moved)"), "{stdout}");
    acked.extend(during.await.expect("the producer task"));
    acked.extend(produce(&producer, "drained", 4, 4_000, 400).await);

    let m = c.metadata(&["drained"]).await.expect("metadata");
    for p in &m.topics[0].partitions {
        assert!(!p.replicas.contains(&2) && p.leader != Some(2), "{p:?}");
        assert_eq!(p.replicas.len(), 3, "the replication factor stays: {p:?}");
        let mine: Vec<_> = acked.iter().filter(|a| a.partition == p.partition).copied().collect();
        let mut copies = Vec::new();
        for &r in &p.replicas {
            let addr = &cluster.brokers[r as usize - 1].addr;
            copies.push(BTreeMap::from([(p.partition, caught_up_at(addr, "drained", p.partition, mine.len()).await)]));
        }
        let report = history::check(&mine, &copies);
        assert!(report.is_valid(), "the history of drained/{}: {report}", p.partition);
    }

    copies_deleted(&cluster.brokers[1], "drained", &[0, 1, 2, 3]).await;
}

/// Every record of `topic`/`partition` on the broker at `addr`, once it has `n`.
async fn caught_up_at(addr: &str, topic: &str, partition: u32, n: usize) -> Vec<(cairn_client::Offset, u64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let records = read_all(addr, topic, partition).await;
        if records.len() >= n || Instant::now() > deadline {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
