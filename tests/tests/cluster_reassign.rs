//! Moving a partition between brokers while a producer runs
//! (`cairn partition reassign`): the leader itself is moved away, so the
//! move adds a learner, switches the voters through a joint config and
//! hands leadership over; afterwards every broker of the new set holds
//! every acknowledged record at its offset, and the broker left out has
//! deleted its copy.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cairn_client::{Producer, ProducerConfig};
use cairn_tests::cluster::{
    Cluster, client, copies_deleted, create, produce, read_all, retrying_producer_config, settled,
};
use cairn_tests::history;
use protocol::api::Acks;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moves_off_its_leader_while_a_producer_runs_and_keeps_every_acknowledged_record() {
    let cluster = Cluster::start(4, &["--flush", "always"]);
    let c = client(&cluster.bootstrap()).await;
    create(&c, "moves", 1).await;
    let before = settled(&c, "moves", 0).await;
    assert_eq!(before.replicas.len(), 3, "three replicas of four brokers: {before:?}");
    let leader = before.leader.expect("settled");
    let outside = (1..=4).find(|n| !before.replicas.contains(n)).expect("a broker without the partition");
    let target: Vec<u32> = before.replicas.iter().copied().filter(|&r| r != leader).chain([outside]).collect();

    let producer = Producer::new(c.clone(), retrying_producer_config());
    let mut acked = produce(&producer, "moves", 1, 0, 2_000).await;
    let during = {
        let producer = producer.clone();
        tokio::spawn(async move { produce(&producer, "moves", 1, 2_000, 4_000).await })
    };

    // Through the CLI, as an operator moves it; it returns once moved.
    let list = target.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let cli = {
        let args = ["partition", "reassign", "moves", "0", "--replicas", &list, "--timeout", "60s"].map(String::from);
        let broker_addr = cluster.brokers[0].addr.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(cairn_tests::bin("cairn"))
                .args(["--bootstrap", &broker_addr])
                .args(&args)
                .output()
                .expect("running cairn")
        })
    };
    let output = cli.await.expect("the CLI task");
    assert!(
        output.status.success(),
        "reassign failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains(&format!("moved to {list}")));
    acked.extend(during.await.expect("the producer task"));
    acked.extend(produce(&producer, "moves", 1, 6_000, 500).await);

    // The metadata names the new set, led by one of it.
    let after = settled(&c, "moves", 0).await;
    assert_eq!(after.replicas, target);
    assert!(after.leader.is_some_and(|l| target.contains(&l)), "{after:?}");

    // Every broker of the new set holds every acknowledged record, the
    // same at every offset.
    let latest = acked.iter().map(|a| a.offset).max().expect("records");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut copies = Vec::new();
    for &node in &target {
        let addr = &cluster.brokers[node as usize - 1].addr;
        let copy = loop {
            let records = read_all(addr, "moves", 0).await;
            if records.last().is_some_and(|(o, _)| *o >= latest) || Instant::now() > deadline {
                break records;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        copies.push(BTreeMap::from([(0, copy)]));
    }
    let report = history::check(&acked, &copies);
    assert!(report.is_valid(), "the history of moves: {report}");

    // The broker left out closed the partition and deleted its copy.
    copies_deleted(&cluster.brokers[leader as usize - 1], "moves", &[0]).await;
}

/// A partition moved away from a broker and back, then that broker
/// restarted: its replay of the metadata log must not apply the old move
/// again (it would delete the copy it holds now).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restarted_after_a_move_away_and_back_keeps_its_copy() {
    let mut cluster = Cluster::start(4, &["--flush", "always"]);
    let c = client(&cluster.bootstrap()).await;
    create(&c, "back", 1).await;
    let before = settled(&c, "back", 0).await;
    let leader = before.leader.expect("settled");
    let away = *before.replicas.iter().find(|&&r| r != leader).expect("a follower");
    let outside = (1..=4).find(|n| !before.replicas.contains(n)).expect("a broker without the partition");
    let producer = Producer::new(c.clone(), ProducerConfig { acks: Acks::All, ..ProducerConfig::default() });
    let acked = produce(&producer, "back", 1, 0, 500).await;

    let moved: Vec<u32> = before.replicas.iter().map(|&r| if r == away { outside } else { r }).collect();
    c.reassign_partition("back", 0, &moved).await.expect("the move starts");
    assert!(c.wait_reassigned("back", 0, &moved, Duration::from_mins(1)).await, "the move away did not finish");
    c.reassign_partition("back", 0, &before.replicas).await.expect("the move back starts");
    assert!(
        c.wait_reassigned("back", 0, &before.replicas, Duration::from_mins(1)).await,
        "the move back did not finish"
    );

    let broker = &mut cluster.brokers[away as usize - 1];
    let deleted = |b: &cairn_tests::Broker| b.log().matches("its copy here is deleted").count();
    assert_eq!(deleted(broker), 1, "moved away once");
    // Its copy is whole again before the restart.
    let deadline = Instant::now() + Duration::from_secs(30);
    while read_all(&broker.addr, "back", 0).await.len() < acked.len() {
        assert!(Instant::now() < deadline, "broker {away} did not catch up after the move back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    broker.terminate();
    broker.restart();
    let c2 = client(&broker.addr).await;
    settled(&c2, "back", 0).await;
    assert_eq!(deleted(broker), 1, "the restart deleted the copy again: {}", broker.log());
    let copy = read_all(&broker.addr, "back", 0).await;
    let report = history::check(&acked, &[BTreeMap::from([(0, copy)])]);
    assert!(report.is_valid(), "broker {away}'s copy after the restart: {report}");
}
