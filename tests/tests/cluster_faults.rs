//! Three brokers under the faults a real network and scheduler bring, with
//! producers running throughout and the history checked afterwards
//! (`cairn_tests::history`): a leader frozen with SIGSTOP, and a leader cut
//! off from its peers by nftables inside network namespaces while clients
//! still reach it (the "zombie leader": it must acknowledge nothing its
//! peers did not take). A bounded run of each; `scripts/faults-long.sh`
//! repeats them.

use std::time::{Duration, Instant};

use cairn_client::{Producer, ProducerConfig};
use cairn_tests::cluster::{Cluster, check_history, client, converged, create, produce, settled};
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

/// A client, a producer and `ledger` (two partitions) with its first
/// 1,000 records acknowledged.
async fn ledger(cluster: &Cluster) -> (cairn_client::Client, Producer, Vec<cairn_tests::history::Acked>) {
    let c = client(&cluster.bootstrap()).await;
    create(&c, "ledger", 2).await;
    let producer = Producer::new(c.clone(), producer_config());
    let acked = produce(&producer, "ledger", 2, 0, 1_000).await;
    (c, producer, acked)
}

/// The rounds of the long runs (`CAIRN_FAULT_ROUNDS`, default 1).
fn rounds() -> usize {
    std::env::var("CAIRN_FAULT_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_with_sigstop_is_replaced_and_nothing_acknowledged_is_lost() {
    let cluster = Cluster::start(3, &["--flush", "always"]);
    let (c, producer, mut acked) = ledger(&cluster).await;
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
        let after = settled_without(&cluster, leader).await;
        assert!(after.leader_epoch > before.leader_epoch, "round {round}: {before:?} then {after:?}");
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
    let (c, producer, mut acked) = ledger(&cluster).await;
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
        let after = settled_without(&cluster, leader).await;
        assert!(after.leader_epoch > before.leader_epoch, "round {round}: {before:?} then {after:?}");
        ns.heal(leader);
        // Until the healed broker has everything again: a second fault
        // while the first heals would be two faults at once.
        acked.extend(produce(&producer, "ledger", 2, next, 500).await);
        next += 500;
        converged(&cluster, "ledger", 2).await;

        // A one-way cut of a broker that leads nothing (it hears nothing
        // from the others) for three election timeouts: it may try to
        // campaign, but pre-vote keeps the epochs where they are.
        let epochs = |m: &protocol::api::MetadataResponse| {
            m.topics[0].partitions.iter().map(|p| (p.leader, p.leader_epoch)).collect::<Vec<_>>()
        };
        let before = settled_everywhere(&c, true).await;
        let leaders: Vec<u32> = before.topics[0].partitions.iter().filter_map(|p| p.leader).collect();
        let follower = (0..3).find(|k| !leaders.contains(&(*k as u32 + 1))).expect("two leaders, three brokers");
        ns.cut(follower, &[(follower + 1) % 3, (follower + 2) % 3], false).expect("nftables cut");
        acked.extend(produce(&producer, "ledger", 2, next, 1_000).await);
        next += 1_000;
        // The fault's length, not a wait for anything: 3 × the 600 ms bound.
        tokio::time::sleep(Duration::from_millis(1_800)).await;
        // Asked of a broker that is not cut (the cut one hears no peer, so
        // it can settle nothing).
        let uncut = client(&cluster.brokers[(follower + 1) % 3].addr).await;
        let during_cut = settled_everywhere(&uncut, false).await;
        if epochs(&during_cut) != epochs(&before) {
            let roles: Vec<String> = cluster
                .brokers
                .iter()
                .enumerate()
                .flat_map(|(k, b)| {
                    cairn_tests::cluster::strip_ansi(&b.log())
                        .lines()
                        .filter(|l| l.contains("topic=ledger"))
                        .map(|l| format!("broker {}: {l}", k + 1))
                        .collect::<Vec<_>>()
                })
                .collect();
            panic!(
                "round {round}: a one-way cut of broker {} moved a leader: {:?} then {:?}\n{}",
                follower + 1,
                epochs(&before),
                epochs(&during_cut),
                roles.join("\n")
            );
        }
        ns.heal(follower);
        acked.extend(produce(&producer, "ledger", 2, next, 500).await);
        next += 500;
        eprintln!("round {round}: cut broker {} off, then broker {} one way", leader + 1, follower + 1);
    }
    let report = check_history(&cluster, "ledger", 2, &acked).await;
    eprintln!("partitions: {} acknowledged; {report}", acked.len());
    cluster.brokers.clear();
}

/// Partition 0's metadata, asked of a broker other than `old` (index),
/// once another broker leads it and its answer is settled.
async fn settled_without(cluster: &Cluster, old: usize) -> protocol::api::PartitionMetadata {
    let other = &cluster.brokers[(old + 1) % cluster.brokers.len()];
    let c = client(&other.addr).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let p = match c.metadata(&["ledger"]).await {
            Ok(m) => Some(m.topics[0].partitions[0].clone()),
            Err(_) => None,
        };
        if let Some(p) = &p
            && p.error.is_ok()
            && p.leader.is_some_and(|l| l as usize != old + 1)
        {
            return p.clone();
        }
        assert!(Instant::now() < deadline, "ledger/0 is still led by broker {}: {p:?}", old + 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The metadata of `ledger` once every partition's leader is settled
/// (and, with `caught_up`, every replica has caught up with it).
async fn settled_everywhere(c: &cairn_client::Client, caught_up: bool) -> protocol::api::MetadataResponse {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(m) = c.metadata(&["ledger"]).await
            && m.topics[0]
                .partitions
                .iter()
                .all(|p| p.error.is_ok() && p.leader.is_some() && (!caught_up || p.caught_up.len() == p.replicas.len()))
        {
            return m;
        }
        assert!(Instant::now() < deadline, "the leaders of ledger do not settle");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
