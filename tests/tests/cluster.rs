//! Three `cairn-server` processes of one cluster on this machine: topics
//! created through the controller on any broker, produce with `acks=all`
//! through any broker, the leader of a partition killed with `kill -9`
//! while producers run, and a history check afterwards: no acknowledged
//! record lost or moved, every broker's copy the same, each producer's
//! records in order.

use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_client::{Producer, ProducerConfig, ProducerRecord};
use cairn_tests::cluster::{Cluster, check_history, client, converged, create, produce, settled};
use protocol::api::Acks;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_with_kill_9_loses_no_acknowledged_record_and_every_broker_agrees() {
    let mut cluster = Cluster::start(3, &["--flush", "always"]);
    let bootstrap = cluster.bootstrap();
    let c = client(&bootstrap).await;
    create(&c, "ledger", 2).await;

    let config = ProducerConfig {
        acks: Acks::All,
        linger: Duration::from_millis(1),
        retries: 1_000,
        retry_backoff: Duration::from_millis(20),
        retry_backoff_max: Duration::from_millis(200),
        ..ProducerConfig::default()
    };
    assert_eq!(ProducerConfig::default().acks, Acks::All, "acks=all is the producer's default");
    let producer = Producer::new(c.clone(), config);
    let mut acked = produce(&producer, "ledger", 2, 0, 3_000).await;

    // Kill the leader of partition 0 while a producer sends the next
    // records: they ride through the failover (retries), none is lost.
    let leader = cluster.leader_of("ledger", 0).expect("a leader of ledger/0 in the logs");
    let during = {
        let producer = producer.clone();
        tokio::spawn(async move { produce(&producer, "ledger", 2, 3_000, 3_000).await })
    };
    cluster.brokers[leader].kill9();
    let killed_at = Instant::now();
    acked.extend(during.await.expect("the producer task"));
    let after = killed_at.elapsed();

    // A new leader took over from the other two; the dead one comes back
    // and catches up.
    let new_leader = cluster.leader_of("ledger", 0).expect("a new leader");
    let roles = || {
        cluster
            .brokers
            .iter()
            .enumerate()
            .flat_map(|(i, b)| {
                cairn_tests::cluster::strip_ansi(&b.log())
                    .lines()
                    .filter(|l| l.contains("replica role") && l.contains("topic=ledger partition=0 "))
                    .map(|l| format!("broker {i}: {l}"))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_ne!(new_leader, leader, "ledger/0 was led by the killed broker: another must lead it now\n{}", roles());
    cluster.brokers[leader].restart_on_same_address().expect("the killed broker restarts");
    let report = check_history(&cluster, "ledger", 2, &acked).await;
    eprintln!("failover: the producer finished {after:?} after the kill; {report}");
}

/// A closed-loop producer on `ledger`/0 (one record in flight) until
/// `stop`: the instants of its acknowledgements, its start first.
fn closed_loop(
    producer: &Producer,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Instant>> {
    let (producer, stop) = (producer.clone(), stop.clone());
    tokio::spawn(async move {
        let mut acks = vec![Instant::now()];
        let mut i = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let mut r = ProducerRecord::new("ledger", None::<Bytes>, i.to_string());
            r.partition = Some(0);
            producer.send(r).await.expect("queued").wait().await.expect("acknowledged");
            acks.push(Instant::now());
            i += 1;
        }
        acks
    })
}

/// The failover benchmark (docs/benchmarks.md): a closed-loop producer
/// (one record in flight, `acks=all`) on partition 0 while its leader is
/// killed with `kill -9`, `CAIRN_FAILOVER_TRIALS` times (default 10); the
/// gap is the longest wait between two acknowledgements around the kill.
/// Run it with `cargo test --release -p cairn-tests --test cluster --
/// --ignored --nocapture failover`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark"]
async fn failover_gap_as_a_client_sees_it() {
    let trials: usize = std::env::var("CAIRN_FAILOVER_TRIALS").ok().and_then(|t| t.parse().ok()).unwrap_or(10);
    let mut cluster = Cluster::start(3, &["--flush", "always"]);
    let c = client(&cluster.bootstrap()).await;
    create(&c, "ledger", 1).await;
    let config = ProducerConfig {
        linger: Duration::ZERO,
        retries: 10_000,
        retry_backoff: Duration::from_millis(10),
        retry_backoff_max: Duration::from_millis(50),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(c.clone(), config);
    let mut gaps = Vec::new();
    for trial in 0..trials {
        converged(&cluster, "ledger", 1).await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let run = closed_loop(&producer, &stop);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let leader = cluster.leader_of("ledger", 0).expect("a leader");
        let killed = Instant::now();
        cluster.brokers[leader].kill9();
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let acks = run.await.expect("the producer");
        let gap = acks
            .windows(2)
            .filter(|w| w[1] >= killed)
            .map(|w| w[1] - w[0])
            .max()
            .expect("acknowledgements after the kill");
        eprintln!("trial {trial}: killed broker {leader}, gap {gap:?}, {} acks", acks.len());
        gaps.push(gap);
        cluster.brokers[leader].restart_on_same_address().expect("the killed broker restarts");
    }
    gaps.sort();
    let at = |q: f64| gaps[((gaps.len() as f64 - 1.0) * q).round() as usize];
    eprintln!(
        "failover gap over {trials} kills: p50 {:?}, p99 {:?}, max {:?}",
        at(0.5),
        at(0.99),
        gaps[gaps.len() - 1]
    );
}

fn stdout(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_shows_each_partitions_leader_and_the_brokers_and_a_leader_moves_when_asked() {
    let mut cluster = Cluster::start(3, &[]);
    let c = client(&cluster.bootstrap()).await;
    create(&c, "moves", 2).await;
    let before = settled(&c, "moves", 0).await;
    let mut replicas = before.replicas.clone();
    replicas.sort_unstable();
    assert_eq!(replicas, vec![1, 2, 3], "three replicas: {before:?}");
    let leader = before.leader.expect("settled");

    // The brokers' own logs agree with the metadata on who leads.
    assert_eq!(cluster.leader_of("moves", 0).map(|i| i as u32 + 1), Some(leader));
    let m = c.metadata(&[]).await.expect("metadata");
    assert_eq!(m.brokers.len(), 3);
    assert!(m.brokers.iter().all(|b| b.alive), "{m:?}");
    for b in &m.brokers {
        assert_eq!(b.address, cluster.brokers[b.node_id as usize - 1].addr, "{b:?}");
    }
    let controller = m.controller.expect("a controller");

    let table = stdout(&cluster.brokers[0].cli(&["cluster", "describe"], ""));
    let rows: Vec<Vec<&str>> = table.lines().skip(1).map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(rows.iter().all(|r| r[3] == "yes"), "all alive: {table}");
    let controllers: Vec<&str> = rows.iter().filter(|r| r[4] == "yes").map(|r| r[0]).collect();
    assert_eq!(controllers, vec![controller.to_string().as_str()], "{table}");

    let described = stdout(&cluster.brokers[1].cli(&["topic", "describe", "moves"], ""));
    let row: Vec<&str> = described.lines().find(|l| l.starts_with("0\t")).expect("partition 0").split('\t').collect();
    assert_eq!(row[1], leader.to_string(), "{described}");
    assert_eq!(row[2], before.leader_epoch.to_string(), "{described}");
    assert_eq!(row[3].split(',').count(), 3, "{described}");

    // Settings change through the controller: every broker takes them.
    stdout(&cluster.brokers[0].cli(&["topic", "alter", "moves", "--config", "retention.ms=1h"], ""));
    for broker in &cluster.brokers {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let d = stdout(&broker.cli(&["topic", "describe", "moves"], ""));
            if d.lines().any(|l| l.starts_with("retention.ms\t3600000\ttopic")) {
                break;
            }
            assert!(Instant::now() < deadline, "{}: the new setting did not arrive\n{d}", broker.addr);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let refused = cluster.brokers[1].cli(&["topic", "alter", "moves", "--config", "retention.ms=soon"], "");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("INVALID_CONFIG"), "{refused:?}");

    // Hand partition 0 to another replica: done when the command returns.
    let target = before.replicas.iter().copied().find(|&n| n != leader).expect("another replica");
    let target_arg = target.to_string();
    let moved =
        stdout(&cluster.brokers[2].cli(&["partition", "elect-leader", "moves", "0", "--broker", &target_arg], ""));
    assert_eq!(moved, format!("broker {target} leads moves/0\n"));
    let after = c.metadata(&["moves"]).await.expect("metadata").topics[0].partitions[0].clone();
    assert_eq!(after.leader, Some(target), "{after:?}");
    assert!(after.leader_epoch > before.leader_epoch, "{before:?} then {after:?}");

    // Asking for a broker that holds no replica, or none at all, fails clearly.
    let refused = cluster.brokers[0].cli(&["partition", "elect-leader", "moves", "0", "--broker", "9"], "");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("UNKNOWN_BROKER"), "{refused:?}");

    // A broker that dies is shown so.
    let victim = (1..=3u32).find(|&n| n != controller).expect("a broker that is not the controller");
    cluster.brokers[victim as usize - 1].kill9();
    let survivor = (1..=3u32).find(|&n| n != victim).expect("a survivor") as usize - 1;
    let table = stdout(&cluster.brokers[survivor].cli(&["cluster", "describe"], ""));
    let row = table.lines().find(|l| l.starts_with(&format!("{victim}\t"))).expect("the dead broker is listed");
    assert!(row.split('\t').nth(3) == Some("no"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_does_not_lead_answers_not_leader_naming_the_leader_and_its_epoch() {
    let cluster = Cluster::start(3, &[]);
    let c = client(&cluster.bootstrap()).await;
    create(&c, "hints", 1).await;
    let p = settled(&c, "hints", 0).await;
    let leader = p.leader.expect("settled");
    let follower = (1..=3u32).find(|&n| n != leader).expect("a follower");
    let conn =
        cairn_client::Connection::connect(&cluster.brokers[follower as usize - 1].addr, "test").await.expect("connect");
    let mut b = protocol::batch::BatchBuilder::new();
    b.push(protocol::batch::RecordInput::new(None, Some(b"x"), protocol::types::Timestamp(1)));
    let request = protocol::api::Request::Produce(protocol::api::ProduceRequest {
        acks: Acks::All,
        timeout_ms: 5_000,
        topics: vec![protocol::api::ProduceTopic {
            name: "hints".into(),
            partitions: vec![protocol::api::ProducePartition { partition: 0, batch: Bytes::from(b.build().unwrap()) }],
        }],
    });
    let protocol::api::Response::Produce(topics) = conn.call(&request).await.expect("an answer") else {
        panic!("not a produce answer")
    };
    let result = topics[0].partitions[0];
    assert_eq!(result.error, protocol::ErrorCode::NOT_LEADER, "{result:?}");
    assert_eq!(result.leader, Some(protocol::api::LeaderHint { node: leader, epoch: p.leader_epoch }));

    // A client that knows only the follower still gets its records to the
    // leader: it follows the hint.
    let only_follower = client(&cluster.brokers[follower as usize - 1].addr).await;
    let producer = Producer::new(only_follower.clone(), ProducerConfig::default());
    let d = producer.send(ProducerRecord::new("hints", None::<Bytes>, "y")).await.expect("queued");
    let meta = d.wait().await.expect("acknowledged");
    assert!(meta.offset.is_some());
    assert_eq!(only_follower.route_of("hints", 0).broker, Some(leader), "the client routes to the leader now");
}

/// The leader-transfer benchmark (docs/benchmarks.md): a closed-loop
/// producer (one record in flight, `acks=all`) on partition 0 while its
/// leadership is handed to another replica (`partition elect-leader`),
/// `CAIRN_TRANSFER_TRIALS` times (default 20); the gap is the longest wait
/// between two acknowledgements around the transfer. Run it with `cargo
/// test --release -p cairn-tests --test cluster -- --ignored --nocapture
/// transfer`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark"]
async fn leader_transfer_gap_as_a_client_sees_it() {
    let trials: usize = std::env::var("CAIRN_TRANSFER_TRIALS").ok().and_then(|t| t.parse().ok()).unwrap_or(20);
    let cluster = Cluster::start(3, &["--flush", "always"]);
    let c = client(&cluster.bootstrap()).await;
    create(&c, "ledger", 1).await;
    let config = ProducerConfig {
        linger: Duration::ZERO,
        retries: 10_000,
        retry_backoff: Duration::from_millis(1),
        retry_backoff_max: Duration::from_millis(10),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(c.clone(), config);
    let mut gaps = Vec::new();
    let mut steady = Vec::new();
    for trial in 0..trials {
        let before = settled(&c, "ledger", 0).await;
        let leader = before.leader.expect("settled");
        let target = before.replicas.iter().copied().find(|&n| n != leader).expect("another replica");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let run = closed_loop(&producer, &stop);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let asked = Instant::now();
        c.elect_leader("ledger", 0, target).await.expect("elect-leader");
        let answered = asked.elapsed();
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let acks = run.await.expect("the producer");
        let (around, calm): (Vec<_>, Vec<_>) = acks.windows(2).partition(|w| w[1] >= asked);
        let gap = around.iter().map(|w| w[1] - w[0]).max().expect("acknowledgements after the transfer");
        steady.extend(calm.iter().map(|w| w[1] - w[0]));
        eprintln!("trial {trial}: {leader} -> {target}, answered in {answered:?}, gap {gap:?}, {} acks", acks.len());
        gaps.push(gap);
    }
    gaps.sort();
    steady.sort();
    let at = |v: &[Duration], q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    eprintln!(
        "leader transfer gap over {trials} transfers: p50 {:?}, p99 {:?}, max {:?}; steady ack interval p50 {:?}, p99 {:?}",
        at(&gaps, 0.5),
        at(&gaps, 0.99),
        gaps[gaps.len() - 1],
        at(&steady, 0.5),
        at(&steady, 0.99)
    );
}

/// Every `raft.state` under `dir` (recursively).
fn raft_states(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(raft_states(&path));
        } else if path.file_name().is_some_and(|n| n == "raft.state") {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_raft_state_keeps_its_replica_down_with_a_clear_error_until_it_is_fixed_and_recovered() {
    let mut cluster = Cluster::start(3, &["--flush", "always"]);
    let c = client(&cluster.bootstrap()).await;
    create(&c, "damaged", 1).await;
    let producer = Producer::new(c.clone(), ProducerConfig::default());
    let mut acked = produce(&producer, "damaged", 1, 0, 200).await;
    let p = settled(&c, "damaged", 0).await;
    let victim = (1..=3u32).find(|&n| Some(n) != p.leader).expect("a follower") as usize - 1;

    // The follower dies; its partition's raft.state is damaged meanwhile.
    cluster.brokers[victim].kill9();
    let topic_dir = cluster.brokers[victim].data_dir().join("topics");
    let states: Vec<_> = raft_states(&topic_dir);
    assert_eq!(states.len(), 1, "one replicated partition: {states:?}");
    let good = std::fs::read(&states[0]).expect("raft.state");
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    std::fs::write(&states[0], &bad).expect("damaging it");
    let files_before: Vec<(std::path::PathBuf, Vec<u8>)> = {
        let dir = states[0].parent().expect("the partition's directory");
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .map(|p| {
                let bytes = std::fs::read(&p).unwrap();
                (p, bytes)
            })
            .collect();
        v.sort();
        v
    };
    cluster.brokers[victim].restart_on_same_address().expect("the broker restarts");

    // It says so, serves nothing of it, and deletes nothing.
    let described = stdout(&cluster.brokers[victim].cli(&["topic", "describe", "damaged"], ""));
    let row = described.lines().find(|l| l.starts_with("0\t")).expect("partition 0");
    assert!(row.ends_with("STORAGE_ERROR"), "{described}");
    let refused = cluster.brokers[victim].cli(&["partition", "recover", "damaged"], "");
    assert!(!refused.status.success(), "recovery cannot guess the votes");
    assert!(String::from_utf8_lossy(&refused.stdout).contains("raft.state"), "{refused:?}");
    let dir = states[0].parent().unwrap();
    // Recovery trims the active segment's pre-allocated zeros (or
    // allocates more); every byte of data stays.
    for (path, bytes) in &files_before {
        let now = std::fs::read(path).unwrap_or_default();
        let common = bytes.len().min(now.len());
        let same = now[..common] == bytes[..common];
        let only_zeros_gone = bytes[common..].iter().all(|&b| b == 0) && now[common..].iter().all(|&b| b == 0);
        assert!(same && only_zeros_gone, "{} changed: {} then {} bytes", path.display(), bytes.len(), now.len());
    }
    assert!(dir.join("raft.state").exists());
    // The other two go on.
    acked.extend(produce(&producer, "damaged", 1, 200, 200).await);

    // Missing beside data is no better: the votes cannot be guessed.
    std::fs::remove_file(&states[0]).expect("removing it");
    let refused = cluster.brokers[victim].cli(&["partition", "recover", "damaged"], "");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stdout).contains("missing"), "{refused:?}");
    // The operator puts the file back: the replica starts and catches up.
    std::fs::write(&states[0], &good).expect("restoring it");
    let recovered = stdout(&cluster.brokers[victim].cli(&["partition", "recover", "damaged"], ""));
    assert_eq!(recovered, "recovered damaged/0\n");
    acked.extend(produce(&producer, "damaged", 1, 400, 100).await);
    check_history(&cluster, "damaged", 1, &acked).await;
}
