//! Three brokers under the faults a real network and scheduler bring, with
//! producers running throughout and the history checked afterwards
//! (`cairn_tests::history`): a leader frozen with SIGSTOP, and a leader cut
//! off from its peers by nftables inside network namespaces while clients
//! still reach it (the "zombie leader": it must acknowledge nothing its
//! peers did not take). A bounded run of each; `scripts/faults-long.sh`
//! repeats them.

use std::time::{Duration, Instant};

use cairn_client::{Producer, ProducerConfig};
use cairn_tests::cluster::{Cluster, check_history, client, create, produce, settled};
use protocol::api::Acks;

fn producer_config() -> ProducerConfig {
    ProducerConfig {
        acks: Acks::All,
        linger: Duration::from_millis(1),
        retries: 10_000,
        retry_backoff: Duration::from_millis(20),
        retry_backoff_max: Duration::from_millis(200),
        // A frozen leader never answers: give up on it soon.
        request_timeout: Duration::from_secs(2),
        ..ProducerConfig::default()
    }
}

/// The rounds of the long runs (`CAIRN_FAULT_ROUNDS`, default 1).
fn rounds() -> usize {
    std::env::var("CAIRN_FAULT_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_with_sigstop_is_replaced_and_nothing_acknowledged_is_lost() {
    let cluster = Cluster::start(3, &["--flush", "always"]);
    let c = client(&cluster.bootstrap()).await;
    create(&c, "ledger", 2).await;
    let producer = Producer::new(c.clone(), producer_config());
    let mut acked = produce(&producer, "ledger", 2, 0, 1_000).await;
    let mut next = 1_000;
    for round in 0..rounds() {
        let before = settled(&c, "ledger", 0).await;
        let leader = before.leader.expect("settled") as usize - 1;
        // Freeze the leader while the next records go out: they are
        // acknowledged by the partition's new leader, elected by the two
        // others.
        let during = {
            let producer = producer.clone();
            tokio::spawn(async move { produce(&producer, "ledger", 2, next, 2_000).await })
        };
        cluster.brokers[leader].pause();
        let paused_at = Instant::now();
        acked.extend(during.await.expect("the producer task"));
        next += 2_000;
        let took = paused_at.elapsed();
        let after = c.metadata(&["ledger"]).await.expect("metadata").topics[0].partitions[0].clone();
        assert_ne!(after.leader, before.leader, "round {round}: the paused broker still leads: {after:?}");
        assert!(after.leader_epoch > before.leader_epoch);
        // Thawed, the old leader finds a newer epoch and follows it.
        cluster.brokers[leader].resume();
        acked.extend(produce(&producer, "ledger", 2, next, 500).await);
        next += 500;
        eprintln!("round {round}: paused broker {}, the producer went on after {took:?}", leader + 1);
    }
    let report = check_history(&cluster, "ledger", 2, &acked).await;
    eprintln!("SIGSTOP: {} acknowledged; {report}", acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_its_peers_acknowledges_nothing_alone_and_the_majority_goes_on() {
    let mut cluster = match Cluster::start_in_namespaces(3, &["--flush", "always"]) {
        Ok(c) => c,
        Err(e) => panic!("this test needs root and network namespaces (as CI has): {e}"),
    };
    let c = client(&cluster.bootstrap()).await;
    create(&c, "ledger", 2).await;
    let producer = Producer::new(c.clone(), producer_config());
    let mut acked = produce(&producer, "ledger", 2, 0, 1_000).await;
    let mut next = 1_000;
    for round in 0..rounds() {
        let before = settled(&c, "ledger", 0).await;
        let leader = before.leader.expect("settled") as usize - 1;
        let others: Vec<usize> = (0..3).filter(|&k| k != leader).collect();
        let ns = cluster.namespaces.as_ref().expect("in namespaces");
        // Cut the leader off from both peers; the test (the clients) still
        // reaches every broker.
        ns.cut(leader, &others, true).expect("nftables cut");
        let during = {
            let producer = producer.clone();
            tokio::spawn(async move { produce(&producer, "ledger", 2, next, 2_000).await })
        };
        acked.extend(during.await.expect("the producer task"));
        next += 2_000;
        let after = settled_without(&c, leader as u32 + 1).await;
        assert!(after.leader_epoch > before.leader_epoch, "round {round}: {before:?} then {after:?}");
        ns.heal(leader);

        // A one-way cut of a follower (it hears nothing from the others)
        // stops nothing either.
        let follower = others[0];
        ns.cut(follower, &[(follower + 1) % 3, (follower + 2) % 3], false).expect("nftables cut");
        acked.extend(produce(&producer, "ledger", 2, next, 1_000).await);
        next += 1_000;
        ns.heal(follower);
        acked.extend(produce(&producer, "ledger", 2, next, 500).await);
        next += 500;
        eprintln!("round {round}: cut broker {} off, then broker {} one way", leader + 1, follower + 1);
    }
    let report = check_history(&cluster, "ledger", 2, &acked).await;
    eprintln!("partitions: {} acknowledged; {report}", acked.len());
    cluster.brokers.clear();
}

/// Partition 0's metadata once a broker other than `old` leads it.
async fn settled_without(c: &cairn_client::Client, old: u32) -> protocol::api::PartitionMetadata {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = c.metadata(&["ledger"]).await.expect("metadata");
        let p = m.topics[0].partitions[0].clone();
        if p.leader.is_some_and(|l| l != old) {
            return p;
        }
        assert!(Instant::now() < deadline, "ledger/0 is still led by {old}: {p:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
