//! Consumer groups against a real broker: committed offsets are durable in
//! `__consumer_offsets` and survive `kill -9`; members are fenced; the
//! admin commands (`cairn group list|describe|reset-offsets|delete`) keep
//! their rules; and the lag metric follows the commits.

use std::time::{Duration, Instant};

use cairn_client::group::{CommitEntry, GroupHeartbeatRequest, TopicPartitions};
use cairn_client::{Client, ClientConfig, ErrorCode, Producer, ProducerConfig, ProducerRecord, TopicConfig};
use cairn_tests::Broker;

async fn client(broker: &Broker) -> Client {
    Client::connect(ClientConfig::new(broker.addr.clone())).await.expect("connecting")
}

fn commit(partition: u32, offset: u64) -> CommitEntry {
    CommitEntry { topic: "orders".into(), partition, offset, metadata: "m".into() }
}

fn join(member: &str) -> GroupHeartbeatRequest {
    GroupHeartbeatRequest {
        group: "billing".into(),
        member: member.into(),
        member_epoch: 0,
        subscription: Some(vec!["orders".into()]),
        assignor: None,
        owned: Some(Vec::new()),
        session_timeout_ms: 30_000,
        rebalance_timeout_ms: 30_000,
    }
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn config(dir: &std::path::Path) -> String {
    let path = dir.join("cairn.toml");
    std::fs::write(&path, "[groups]\ntick_ms = 50\noffsets_topic_partitions = 4\n").unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_kill_9_members_are_fenced_and_admin_commands_need_an_empty_group() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let mut broker = Broker::start(&["--config", &cfg]);
    let c = client(&broker).await;
    c.create_topic("orders", 3, TopicConfig::default()).await.unwrap();
    let producer = Producer::new(c.clone(), ProducerConfig::default());
    for i in 0..30u32 {
        let mut r = ProducerRecord::new("orders", None::<Vec<u8>>, format!("v{i}"));
        r.partition = Some(i % 3);
        producer.send(r).await.unwrap();
    }
    producer.flush().await;

    // A client outside the group commits while it is empty.
    c.commit_offsets("billing", "", -1, vec![commit(0, 4), commit(1, 10)]).await.unwrap();
    let list = stdout(&broker.cli(&["group", "list"], ""));
    assert!(list.lines().any(|l| l.starts_with("billing\tempty\t0")), "{list}");
    let describe = stdout(&broker.cli(&["group", "describe", "billing"], ""));
    assert!(describe.contains("orders\t0\t4\t10\t6\t-"), "{describe}");
    assert!(describe.contains("orders\t1\t10\t10\t0\t-"), "{describe}");
    assert!(describe.contains("orders\t2\t-\t10\t-\t-"), "{describe}");

    // The lag metric follows (the coordinator measures it every tick).
    let deadline = Instant::now() + Duration::from_secs(20);
    while broker.metric("cairn_consumer_group_lag", &["group=\"billing\"", "partition=\"0\""]) != Some(6.0) {
        assert!(Instant::now() < deadline, "no lag metric:\n{}", broker.metrics());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A member joins and reads all three partitions; outsiders and admin
    // commands are refused while it is there.
    let r = c.group_heartbeat(join("m1")).await.unwrap();
    assert!(r.member_epoch > 0);
    assert_eq!(r.assignment, vec![TopicPartitions { topic: "orders".into(), partitions: vec![0, 1, 2] }]);
    c.commit_offsets("billing", "m1", r.member_epoch, vec![commit(2, 7)]).await.unwrap();
    let err = c.commit_offsets("billing", "", -1, vec![commit(2, 0)]).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UNKNOWN_MEMBER_ID), "{err}");
    let err = c.commit_offsets("billing", "m1", r.member_epoch + 3, vec![commit(2, 0)]).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::FENCED_MEMBER_EPOCH), "{err}");
    let reset = broker.cli(&["group", "reset-offsets", "billing", "--topic", "orders", "--to", "earliest"], "");
    assert!(!reset.status.success() && String::from_utf8_lossy(&reset.stderr).contains("GROUP_NOT_EMPTY"), "{reset:?}");
    let delete = broker.cli(&["group", "delete", "billing"], "");
    assert!(!delete.status.success() && String::from_utf8_lossy(&delete.stderr).contains("GROUP_NOT_EMPTY"));

    // kill -9: the offsets and the member come back from the offsets topic.
    broker.kill9();
    broker.restart();
    let c = client(&broker).await;
    let info = c.describe_group("billing").await.unwrap();
    let offsets: Vec<(u32, u64)> = info.offsets.iter().map(|o| (o.partition, o.offset)).collect();
    assert_eq!(offsets, vec![(0, 4), (1, 10), (2, 7)]);
    assert_eq!(info.members.len(), 1, "{info:?}");
    let m = &info.members[0];
    // It heartbeats on at its epoch, then leaves.
    let mut again = join("m1");
    again.member_epoch = m.epoch;
    again.subscription = None;
    again.owned = Some(m.assigned.clone());
    assert_eq!(c.group_heartbeat(again.clone()).await.unwrap().member_epoch, m.epoch);
    again.member_epoch = -1;
    c.group_heartbeat(again).await.unwrap();

    // Empty now: reset to earliest, then delete.
    let reset = broker.cli(&["group", "reset-offsets", "billing", "--topic", "orders", "--to", "earliest"], "");
    assert!(reset.status.success(), "{reset:?}");
    let info = c.describe_group("billing").await.unwrap();
    assert!(info.offsets.iter().all(|o| o.offset == 0) && info.offsets.len() == 3, "{info:?}");
    let delete = broker.cli(&["group", "delete", "billing"], "");
    assert!(delete.status.success(), "{delete:?}");
    assert_eq!(c.describe_group("billing").await.unwrap_err().code(), Some(ErrorCode::UNKNOWN_GROUP));
    let list = stdout(&broker.cli(&["group", "list"], ""));
    assert!(!list.contains("billing"), "{list}");
}

fn group_config(group: &str, topic: &str) -> cairn_client::GroupConsumerConfig {
    let mut config = cairn_client::GroupConsumerConfig::new(group, &[topic]);
    config.session_timeout = Duration::from_millis(1500);
    config.auto_commit_interval = Some(Duration::from_millis(100));
    config
}

/// Members join, one crashes (dropped without leaving: its session runs
/// out), one leaves, with commits after processing. Every record is
/// processed at least once, and live members never read the same
/// partition at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_joining_crashing_and_leaving_process_every_record_and_never_share_a_partition() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let broker = Broker::start(&["--config", &cfg]);
    let c = client(&broker).await;
    c.create_topic("events", 6, TopicConfig::default()).await.unwrap();
    let producer = Producer::new(c.clone(), ProducerConfig::default());
    let n = 1200u32;
    for i in 0..n {
        let mut r = ProducerRecord::new("events", None::<Vec<u8>>, i.to_string());
        r.partition = Some(i % 6);
        producer.send(r).await.unwrap();
    }
    producer.flush().await;

    let mut seen = std::collections::BTreeSet::new();
    let mut members: Vec<Option<cairn_client::GroupConsumer>> = Vec::new();
    let join = |c: Client| async move {
        cairn_client::GroupConsumer::join(c, group_config("workers", "events")).await.unwrap()
    };
    members.push(Some(join(client(&broker).await).await));
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut round = 0u32;
    while seen.len() < n as usize {
        assert!(Instant::now() < deadline, "only {} of {n} records processed", seen.len());
        round += 1;
        match round {
            3 | 9 => members.push(Some(join(client(&broker).await).await)),
            6 => members[0] = None, // crash: no leave, no commit
            12 => {
                let m = members[1].take().unwrap();
                m.close().await.unwrap();
            }
            _ => {}
        }
        for m in members.iter_mut().flatten() {
            // Few records per poll, so the membership changes land mid-stream.
            let mut back = std::collections::BTreeMap::new();
            for (i, r) in m.poll().await.unwrap().into_iter().enumerate() {
                if i < 40 {
                    seen.insert(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
                } else {
                    back.entry(r.partition).or_insert(r.offset);
                }
            }
            for (p, o) in back {
                m.seek("events", p, o);
            }
        }
        let mut held = std::collections::BTreeSet::new();
        for m in members.iter().flatten() {
            for tp in m.positions().into_keys() {
                assert!(held.insert(tp.clone()), "two live members read {tp:?}");
            }
        }
    }
    let expected: std::collections::BTreeSet<String> = (0..n).map(|i| i.to_string()).collect();
    assert_eq!(seen, expected);
    let info = c.describe_group("workers").await.unwrap();
    assert_eq!(info.members.len(), 1, "the crashed member's session expired and one left: {info:?}");
}

/// A `cairn consume --group` process whose printed lines land in a file.
struct CliMember {
    child: std::process::Child,
    out: std::path::PathBuf,
}

impl CliMember {
    fn start(broker: &Broker, dir: &std::path::Path, name: &str) -> CliMember {
        let out = dir.join(format!("{name}.out"));
        let file = std::fs::File::create(&out).unwrap();
        let child = std::process::Command::new(cairn_tests::bin("cairn"))
            .args(["--bootstrap", &broker.addr, "consume", "events", "--group", "workers"])
            .args(["--session-timeout", "2s"])
            .stdout(file)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting cairn consume");
        CliMember { child, out }
    }

    fn printed(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out).unwrap().lines().map(str::to_owned).collect()
    }
}

impl Drop for CliMember {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) until `done` holds, checking every 20 ms.
async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await; // polling a condition
    }
}

/// The crash of a member process: `cairn consume --group` processes join
/// mid-stream and one is killed with -9 while it owns partitions. Its
/// session runs out, the others take its partitions from its last commit,
/// and every record is printed at least once: none is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_process_killed_with_9_leaves_no_record_unprocessed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let broker = Broker::start(&["--config", &cfg]);
    let c = client(&broker).await;
    c.create_topic("events", 6, TopicConfig::default()).await.unwrap();
    let producer = Producer::new(c.clone(), ProducerConfig::default());
    let produce = |range: std::ops::Range<u32>| {
        let producer = producer.clone();
        async move {
            for i in range {
                let mut r = ProducerRecord::new("events", None::<Vec<u8>>, i.to_string());
                r.partition = Some(i % 6);
                producer.send(r).await.unwrap();
            }
            producer.flush().await;
        }
    };
    let union = |members: &[&CliMember]| -> std::collections::BTreeSet<String> {
        members.iter().flat_map(|m| m.printed()).collect()
    };

    // Records keep coming in small steps until `done` holds, so each
    // membership change lands mid-stream.
    let mut next = 0u32;
    let mut produce_until = async |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_mins(1);
        while !done() {
            assert!(Instant::now() < deadline, "timed out producing until {what}");
            produce(next..next + 30).await;
            next += 30;
            tokio::time::sleep(Duration::from_millis(20)).await; // pacing, not synchronization
        }
    };
    let mut a = CliMember::start(&broker, dir.path(), "a");
    produce_until("the first member prints", &|| !a.printed().is_empty()).await;
    let b = CliMember::start(&broker, dir.path(), "b");
    produce_until("the second member prints", &|| !b.printed().is_empty()).await;
    a.child.kill().expect("SIGKILL"); // no leave, no last commit
    a.child.wait().unwrap();
    let before_kill = a.printed().len();
    let c3 = CliMember::start(&broker, dir.path(), "c");
    produce_until("the third member prints", &|| !c3.printed().is_empty()).await;
    produce(next..next + 600).await;
    let expected: std::collections::BTreeSet<String> = (0..next + 600).map(|i| i.to_string()).collect();
    wait_for("every record is printed", Duration::from_mins(1), || union(&[&a, &b, &c3]) == expected).await;
    // The killed member printed nothing after the kill: its partitions'
    // later records came from the survivors.
    assert_eq!(a.printed().len(), before_kill);
    let info = c.describe_group("workers").await.unwrap();
    assert_eq!(info.members.len(), 2, "the killed member's session expired: {info:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairn_consume_with_a_group_continues_where_the_last_run_committed() {
    let broker = Broker::start(&[]);
    let c = client(&broker).await;
    c.create_topic("log", 1, TopicConfig::default()).await.unwrap();
    let lines: String = (0..30).fold(String::new(), |s, i| s + &format!("v{i}\n"));
    assert!(broker.cli(&["produce", "log"], &lines).status.success());
    let first = broker.cli(&["consume", "log", "--group", "readers", "--count", "10"], "");
    assert!(first.status.success(), "{first:?}");
    let second = broker.cli(&["consume", "log", "--group", "readers", "--count", "10"], "");
    assert!(second.status.success(), "{second:?}");
    let want = |r: std::ops::Range<i32>| r.fold(String::new(), |s, i| s + &format!("v{i}\n"));
    assert_eq!(stdout(&first), want(0..10));
    assert_eq!(stdout(&second), want(10..20), "the second run starts at the first's commit");
    let describe = stdout(&broker.cli(&["group", "describe", "readers"], ""));
    assert!(describe.contains("log\t0\t20\t30\t10\t-"), "{describe}");
}

/// Records a member's rebalance callbacks, and (manual commits) commits
/// each revoked partition's position from `on_revoked`.
struct Recorder(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl cairn_client::RebalanceListener for Recorder {
    fn on_revoked(&mut self, revoking: &mut cairn_client::Revoking) {
        let parts: Vec<_> = revoking.partitions().cloned().collect();
        for tp in parts {
            let at = revoking.position(&tp).expect("every record fetched was returned");
            self.0.lock().unwrap().push(format!("revoked {}/{} at {at}", tp.0, tp.1));
            revoking.commit(tp, at);
        }
    }
    fn on_assigned(&mut self, partitions: &[(cairn_client::TopicPartition, cairn_client::Offset)]) {
        for ((t, p), o) in partitions {
            self.0.lock().unwrap().push(format!("assigned {t}/{p} at {o}"));
        }
    }
}

/// With manual commits, the listener's commit in `on_revoked` is what the
/// next owner starts from: the partition moves without being read twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_made_in_on_revoked_is_where_the_next_owner_starts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let broker = Broker::start(&["--config", &cfg]);
    client(&broker).await.create_topic("moves", 2, TopicConfig::default()).await.unwrap();
    for p in ["0", "1"] {
        assert!(broker.cli(&["produce", "moves", "--partition", p], "a\nb\nc\n").status.success());
    }
    let manual = || {
        let mut config = group_config("movers", "moves");
        config.auto_commit_interval = None;
        config
    };
    let (a_log, b_log) = (std::sync::Arc::default(), std::sync::Arc::default());
    let mut a = cairn_client::GroupConsumer::join(client(&broker).await, manual()).await.unwrap();
    a.set_listener(Box::new(Recorder(std::sync::Arc::clone(&a_log))));
    let deadline = Instant::now() + Duration::from_mins(1);
    let mut read = 0;
    while read < 6 {
        assert!(Instant::now() < deadline, "a read {read} of 6");
        read += a.poll().await.unwrap().len();
    }
    let mut b = cairn_client::GroupConsumer::join(client(&broker).await, manual()).await.unwrap();
    b.set_listener(Box::new(Recorder(std::sync::Arc::clone(&b_log))));
    while b.positions().is_empty() {
        assert!(Instant::now() < deadline, "b was never given a partition");
        assert!(a.poll().await.unwrap().is_empty(), "nothing is left to read");
        assert!(b.poll().await.unwrap().is_empty(), "nothing is read twice");
    }
    let moved: Vec<_> = b.positions().into_keys().collect();
    assert_eq!(moved.len(), 1);
    let (topic, part) = &moved[0];
    assert!(a_log.lock().unwrap().contains(&format!("revoked {topic}/{part} at 3")), "{:?}", a_log.lock().unwrap());
    assert_eq!(*b_log.lock().unwrap(), vec![format!("assigned {topic}/{part} at 3")]);
    // A commit with metadata keeps it; closing revokes (the listener is told).
    let tp = (topic.clone(), *part);
    b.commit_offsets([(tp.clone(), cairn_client::Offset(3), "checkpoint-7".to_owned())]).await.unwrap();
    b.close().await.unwrap();
    assert_eq!(b_log.lock().unwrap().last(), Some(&format!("revoked {topic}/{part} at 3")));
    let committed = client(&broker).await.committed_offsets("movers", Vec::new()).await.unwrap();
    let entry = committed.iter().find(|e| (&e.topic, e.partition) == (&tp.0, tp.1)).expect("committed");
    assert_eq!((entry.offset, entry.metadata.as_str()), (3, "checkpoint-7"), "{committed:?}");
}

/// A committed offset outside the log (here past its end; retention
/// passing it is the same) is not read forever as an error: the partition
/// starts where `--from` says, as Kafka's `auto.offset.reset` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_offset_outside_the_log_starts_the_partition_where_from_says() {
    let broker = Broker::start(&[]);
    let c = client(&broker).await;
    c.create_topic("log", 1, TopicConfig::default()).await.unwrap();
    let lines: String = (0..30).fold(String::new(), |s, i| s + &format!("v{i}\n"));
    assert!(broker.cli(&["produce", "log"], &lines).status.success());
    // Committed from outside while the group is empty (reset-offsets
    // would keep it inside the log).
    let past_end = CommitEntry { topic: "log".into(), partition: 0, offset: 1000, metadata: String::new() };
    c.commit_offsets("readers", "", -1, vec![past_end]).await.unwrap();
    let run = broker.cli(&["consume", "log", "--group", "readers", "--from", "earliest", "--count", "5"], "");
    assert!(run.status.success(), "{run:?}");
    assert_eq!(stdout(&run), "v0\nv1\nv2\nv3\nv4\n");
    let describe = stdout(&broker.cli(&["group", "describe", "readers"], ""));
    assert!(describe.contains("log\t0\t5\t30\t25\t-"), "{describe}");
}

/// A member whose session ran out (it stopped polling) is told so at its
/// next poll: it drops what it read and joins again, instead of failing
/// every poll after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_for_a_lapsed_session_rejoins_at_its_next_poll() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let broker = Broker::start(&["--config", &cfg]);
    let c = client(&broker).await;
    c.create_topic("jobs", 2, TopicConfig::default()).await.unwrap();
    let mut config = group_config("lapsed", "jobs");
    config.session_timeout = Duration::from_secs(1);
    let mut m = cairn_client::GroupConsumer::join(c.clone(), config).await.unwrap();
    let first = m.member_epoch();
    assert!(first > 0 && m.positions().len() == 2);
    // Records read and not yet committed: the commit is due at the next poll.
    assert!(broker.cli(&["produce", "jobs", "--partition", "0"], "a\nb\n").status.success());
    let mut got = 0;
    while got < 2 {
        got += m.poll().await.unwrap().len();
    }
    // Longer than the session: the coordinator removes it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !c.describe_group("lapsed").await.unwrap().members.is_empty() {
        assert!(Instant::now() < deadline, "the member was never removed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its next polls fail nothing, and it is back with both partitions.
    while m.positions().len() < 2 || c.describe_group("lapsed").await.unwrap().members.len() != 1 {
        assert!(Instant::now() < deadline, "the member never came back");
        m.poll().await.unwrap();
    }
    assert_eq!(c.describe_group("lapsed").await.unwrap().members[0].member, m.member_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_produce_to_delete_or_alter_the_offsets_topic() {
    let broker = Broker::start(&[]);
    let c = client(&broker).await;
    c.commit_offsets("g", "", -1, vec![commit(0, 1)]).await.unwrap();
    for args in [
        vec!["produce", "__consumer_offsets", "--partition", "0"],
        vec!["topic", "delete", "__consumer_offsets"],
        vec!["topic", "alter", "__consumer_offsets", "--config", "cleanup.policy=delete"],
    ] {
        let out = broker.cli(&args, "x\n");
        assert!(!out.status.success(), "{args:?} was allowed");
        assert!(String::from_utf8_lossy(&out.stderr).contains("INVALID_REQUEST"), "{args:?}: {out:?}");
    }
    assert_eq!(c.committed_offsets("g", Vec::new()).await.unwrap().len(), 1, "the group's offsets are intact");
}
