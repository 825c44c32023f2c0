//! The broker on the simulator, with the faults and races a real machine
//! only shows now and then: a slow owner, a disk that fills up, an fsync
//! that fails, files that cannot be removed, metadata that is lost.

mod common;

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use common::{config, create, fetch_request, produce, read_values, values};
use engine::rt::Runtime as _;
use engine::rt::sim::{SimExecutor, SimRuntime};
use engine::types::Offset;
use protocol::ErrorCode;
use protocol::api::{ConfigOp, Request, Response};
use server::config::ServerConfig;
use server::sim::{SimBroker, SimClient};

fn start(ex: &SimExecutor, config: &ServerConfig) -> (SimRuntime, SimBroker) {
    let rt = SimRuntime::new(ex);
    let broker = SimBroker::start(&rt, config, 2).unwrap();
    (rt, broker)
}

fn client(rt: &SimRuntime, broker: &SimBroker) -> SimClient {
    let (rt, addr) = (rt.clone(), broker.addr);
    rt.executor.clone().block_on(async move { SimClient::connect(&rt, addr).await.unwrap() })
}

/// Runs `f` with a client to completion on the simulation.
fn with_client<T: 'static>(
    rt: &SimRuntime,
    broker: &SimBroker,
    f: impl AsyncFnOnce(&mut SimClient) -> T + 'static,
) -> T {
    let mut c = client(rt, broker);
    rt.executor.block_on(async move { f(&mut c).await })
}

/// Bytes each partition of `topic` has served to fetches, by partition.
fn fetched_bytes(broker: &SimBroker, topic: &str) -> Vec<(u32, u64)> {
    let mut out: Vec<(u32, u64)> = broker
        .shards
        .iter()
        .flat_map(|s| s.metrics_snapshot().partitions)
        .filter(|p| p.topic == topic)
        .map(|p| (p.partition, p.fetch_bytes))
        .collect();
    out.sort_unstable();
    out
}

fn fill(rt: &SimRuntime, broker: &SimBroker, topic: &str, partitions: u32, batches: usize) {
    let topic = topic.to_string();
    with_client(rt, broker, async move |c| {
        create(c, &topic, partitions, &[]).await.unwrap();
        for i in 0..batches {
            for p in 0..partitions {
                produce(c, &topic, p, &values(&format!("{p}-{i}"), 40)).await.unwrap();
            }
        }
    });
}

#[test]
fn a_fetch_across_shards_reads_each_owner_within_its_share() {
    let ex = SimExecutor::new(1);
    let (rt, broker) = start(&ex, &config());
    fill(&rt, &broker, "t", 2, 60);
    let before: u64 = fetched_bytes(&broker, "t").iter().map(|x| x.1).sum();
    let max_bytes = 64 << 10;
    let got = with_client(&rt, &broker, async move |c| {
        let request = fetch_request("t", &[(0, Offset(0)), (1, Offset(0))], 0, 0, max_bytes);
        let Ok(Response::Fetch(t)) = c.call(&request).await else { panic!("fetch") };
        t[0].partitions.iter().map(|p| p.batches.iter().map(bytes::Bytes::len).sum::<usize>()).collect::<Vec<_>>()
    });
    let read: u64 = fetched_bytes(&broker, "t").iter().map(|x| x.1).sum::<u64>() - before;
    assert!(got.iter().all(|&b| b > 0), "both partitions answered: {got:?}");
    assert!(got.iter().sum::<usize>() <= max_bytes as usize);
    // Each owner reads its share of the budget, not the whole of it (before:
    // 2 × max_bytes read for max_bytes returned).
    let batch = 4 << 10;
    assert!(read <= u64::from(max_bytes) + 2 * batch, "owners read {read} bytes for a {max_bytes}-byte fetch");
}

#[test]
fn a_slow_owner_does_not_hold_up_another_owners_read() {
    let ex = SimExecutor::new(2);
    let mut c = config();
    c.memory.shard_cache_bytes_max = 0; // every read goes to the disk
    let (rt, broker) = start(&ex, &c);
    fill(&rt, &broker, "t", 2, 10);
    // The device of the partition on shard 0 (the owner a sequential fetch
    // would visit first) stalls.
    let slow = (0..2).find(|&p| server::placement::shard_for("t", p, 2) == 0).unwrap();
    let fast = 1 - slow;
    rt.storage.hold_reads(Some(PathBuf::from(format!("/data/topics/t@1/{slow}"))));
    let done = Rc::new(Cell::new(false));
    {
        let (done, mut c) = (done.clone(), client(&rt, &broker));
        drop(ex.spawn(async move {
            let request = fetch_request("t", &[(0, Offset(0)), (1, Offset(0))], 0, 0, 1 << 20);
            c.call(&request).await.unwrap();
            done.set(true);
        }));
    }
    ex.run_for(Duration::from_millis(50));
    assert!(!done.get(), "the slow partition's read is held");
    let read = fetched_bytes(&broker, "t");
    assert_eq!(read[slow as usize].1, 0);
    assert!(read[fast as usize].1 > 0, "the other owner read meanwhile: {read:?}");
    rt.storage.hold_reads(None);
    ex.run_until(Duration::from_secs(5), || done.get());
    assert!(done.get());
}

#[test]
fn min_bytes_holds_a_fetch_until_enough_arrives_or_the_deadline() {
    let ex = SimExecutor::new(3);
    let (rt, broker) = start(&ex, &config());
    with_client(&rt, &broker, async move |c| create(c, "t", 2, &[]).await.unwrap());
    let mut producer = client(&rt, &broker);
    ex.block_on(async move {
        produce(&mut producer, "t", 0, &values("a", 5)).await.unwrap();
        producer
    });
    let got: Rc<RefCell<Option<(usize, Duration)>>> = Rc::new(RefCell::new(None));
    {
        let (got, mut c, clock) = (got.clone(), client(&rt, &broker), ex.clock().clone());
        drop(ex.spawn(async move {
            let started = clock.elapsed();
            let request = fetch_request("t", &[(0, Offset(0)), (1, Offset(0))], 5_000, 2_000, 1 << 20);
            let Ok(Response::Fetch(t)) = c.call(&request).await else { panic!("fetch") };
            let bytes = t[0].partitions.iter().flat_map(|p| &p.batches).map(bytes::Bytes::len).sum();
            *got.borrow_mut() = Some((bytes, clock.elapsed().saturating_sub(started)));
        }));
    }
    ex.run_for(Duration::from_millis(200));
    assert!(got.borrow().is_none(), "less than min_bytes is there: the fetch waits");
    // More arrives, on the other partition's shard.
    let mut producer = client(&rt, &broker);
    ex.block_on(async move { produce(&mut producer, "t", 1, &values("b", 40)).await.unwrap() });
    ex.run_until(Duration::from_secs(10), || got.borrow().is_some());
    let (bytes, waited) = got.borrow().unwrap();
    assert!(bytes >= 2_000, "answered with min_bytes and more: {bytes}");
    assert!(waited >= Duration::from_millis(200) && waited < Duration::from_secs(1), "waited {waited:?}");
    // Never enough: answered at the deadline with what there is.
    let clock = ex.clock().clone();
    let (bytes, waited) = with_client(&rt, &broker, async move |c| {
        let started = clock.elapsed();
        let request = fetch_request("t", &[(0, Offset(0))], 2_000, 1 << 20, 1 << 20);
        let Ok(Response::Fetch(t)) = c.call(&request).await else { panic!("fetch") };
        (
            t[0].partitions[0].batches.iter().map(bytes::Bytes::len).sum::<usize>(),
            clock.elapsed().saturating_sub(started),
        )
    });
    assert!(bytes > 0, "what there is");
    assert!(waited >= Duration::from_secs(2), "held to the deadline: {waited:?}");
}

#[test]
fn a_deleted_topic_whose_files_stayed_does_not_come_back_under_its_name() {
    let ex = SimExecutor::new(4);
    let (rt, broker) = start(&ex, &config());
    fill(&rt, &broker, "t", 1, 5);
    // Removing the files fails (a busy device, a permission problem).
    rt.storage.fail_remove_after(0);
    with_client(&rt, &broker, async move |c| {
        let Ok(Response::DeleteTopic) = c.call(&Request::DeleteTopic { name: "t".into() }).await else { panic!() };
        create(c, "t", 1, &[]).await.unwrap();
        produce(c, "t", 0, &["new".to_string()]).await.unwrap();
        assert_eq!(read_values(c, "t", 0, Offset(0)).await, vec!["new".to_string()], "the old records are not back");
    });
    assert!(rt.storage.file_paths().iter().any(|p| p.starts_with("/data/topics/t@1")), "the old files are still there");
    // The next start finishes the deletion (the metadata kept a tombstone).
    broker.stop();
    let broker = SimBroker::start(&rt, &config(), 2).unwrap();
    assert!(!rt.storage.file_paths().iter().any(|p| p.starts_with("/data/topics/t@1")), "removed at the next start");
    with_client(&rt, &broker, async move |c| {
        assert_eq!(read_values(c, "t", 0, Offset(0)).await, vec!["new".to_string()]);
    });
}

#[test]
fn a_deleted_topic_whose_files_stayed_is_not_rebuilt_when_the_metadata_is_lost() {
    let ex = SimExecutor::new(10);
    let (rt, broker) = start(&ex, &config());
    fill(&rt, &broker, "t", 1, 5);
    fill(&rt, &broker, "kept", 1, 2);
    // The marker goes in first; then removing the files fails.
    rt.storage.fail_remove_after(0);
    with_client(&rt, &broker, async move |c| {
        let Ok(Response::DeleteTopic) = c.call(&Request::DeleteTopic { name: "t".into() }).await else { panic!() };
    });
    assert!(rt.storage.file_paths().iter().any(|p| p.starts_with("/data/topics/t@1")), "the old files are still there");
    broker.stop();
    rt.storage.disk_remove(std::path::Path::new("/data/topics.json"));
    let broker = SimBroker::start(&rt, &config(), 2).unwrap();
    assert!(!rt.storage.file_paths().iter().any(|p| p.starts_with("/data/topics/t@1")), "its removal was finished");
    with_client(&rt, &broker, async move |c| {
        let described = c.call(&Request::DescribeTopic { name: "t".into() }).await;
        assert!(matches!(described, Err((ErrorCode::UNKNOWN_TOPIC, _))), "not back: {described:?}");
        assert_eq!(read_values(c, "kept", 0, Offset(0)).await.len(), 2 * 40, "the other topic is rebuilt");
    });
}

#[test]
fn a_lost_metadata_file_is_rebuilt_and_a_damaged_one_stops_the_broker_and_deletes_nothing() {
    let ex = SimExecutor::new(5);
    let (rt, broker) = start(&ex, &config());
    fill(&rt, &broker, "orders", 2, 20);
    fill(&rt, &broker, "events", 1, 5);
    broker.stop();
    rt.storage.disk_remove(std::path::Path::new("/data/topics.json"));
    let broker = SimBroker::start(&rt, &config(), 2).unwrap();
    let (orders, events) = with_client(&rt, &broker, async move |c| {
        (read_values(c, "orders", 1, Offset(0)).await.len(), read_values(c, "events", 0, Offset(0)).await.len())
    });
    assert_eq!((orders, events), (20 * 40, 5 * 40), "every record is back");
    broker.stop();
    rt.storage.set_file_contents(std::path::Path::new("/data/topics.json"), b"{\"version\": 2, \"top".to_vec());
    let files = rt.storage.file_paths();
    let e = SimBroker::start(&rt, &config(), 2).err().expect("a damaged topics.json stops the broker");
    assert!(e.contains("topics.json") && e.contains("damaged"), "{e}");
    assert_eq!(rt.storage.file_paths(), files, "nothing was deleted or changed");
}

#[test]
fn a_poisoned_partition_is_recovered_without_a_restart() {
    let ex = SimExecutor::new(6);
    let (rt, broker) = start(&ex, &config());
    let storage = rt.storage.clone();
    with_client(&rt, &broker, async move |c| {
        create(c, "t", 1, &[]).await.unwrap();
        for i in 0..10 {
            produce(c, "t", 0, &values(&format!("ok{i}"), 5)).await.unwrap();
        }
        storage.fail_next_fdatasync(std::io::ErrorKind::Other);
        assert_eq!(produce(c, "t", 0, &values("lost", 5)).await, Err(ErrorCode::STORAGE_ERROR));
        assert_eq!(produce(c, "t", 0, &values("later", 5)).await, Err(ErrorCode::STORAGE_ERROR), "it stays poisoned");
        let Ok(Response::DescribeTopic(d)) = c.call(&Request::DescribeTopic { name: "t".into() }).await else {
            panic!()
        };
        assert_eq!(d.partitions[0].error, ErrorCode::STORAGE_ERROR);
        let Ok(Response::RecoverPartitions(r)) =
            c.call(&Request::RecoverPartitions { name: "t".into(), partitions: vec![] }).await
        else {
            panic!()
        };
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].error, ErrorCode::NONE, "{}", r[0].message);
        produce(c, "t", 0, &values("after", 5)).await.unwrap();
        let got = read_values(c, "t", 0, Offset(0)).await;
        for i in 0..10 {
            assert!(got.contains(&values(&format!("ok{i}"), 5)[0]), "acknowledged before the failure: kept");
        }
        assert!(got.contains(&values("after", 5)[0]));
        // A healthy partition is left alone.
        let Ok(Response::RecoverPartitions(r)) =
            c.call(&Request::RecoverPartitions { name: "t".into(), partitions: vec![] }).await
        else {
            panic!()
        };
        assert!(r.is_empty());
    });
}

#[test]
fn a_full_disk_refuses_produce_and_writes_resume_once_space_is_freed() {
    let ex = SimExecutor::new(7);
    let (rt, broker) = start(&ex, &config());
    let storage = rt.storage.clone();
    with_client(&rt, &broker, async move |c| {
        create(c, "t", 1, &[]).await.unwrap();
        storage.set_capacity(Some(storage.used_bytes() + (300 << 10)));
        let mut acked = Vec::new();
        let mut refused = 0;
        for i in 0..400 {
            match produce(c, "t", 0, &values(&format!("v{i}"), 20)).await {
                Ok(_) => acked.push(i),
                Err(code) => {
                    assert_eq!(code, ErrorCode::DISK_FULL, "reported as a full disk, not a storage failure");
                    assert!(code.is_retriable());
                    refused += 1;
                }
            }
        }
        assert!(refused > 0 && !acked.is_empty(), "the disk filled up ({} acked, {refused} refused)", acked.len());
        storage.set_capacity(None);
        // Without a restart, and without a recovery: writes go on.
        produce(c, "t", 0, &values("after", 20)).await.unwrap();
        let got = read_values(c, "t", 0, Offset(0)).await;
        for i in acked {
            assert!(got.contains(&values(&format!("v{i}"), 20)[0]), "acknowledged batch {i} is there");
        }
    });
}

#[test]
fn a_write_that_meets_a_full_disk_comes_back_by_itself_and_a_failed_fsync_does_not() {
    let ex = SimExecutor::new(9);
    let (rt, broker) = start(&ex, &config());
    let storage = rt.storage.clone();
    let sim = rt.clone();
    with_client(&rt, &broker, async move |c| {
        create(c, "t", 1, &[]).await.unwrap();
        for i in 0..5 {
            produce(c, "t", 0, &values(&format!("ok{i}"), 5)).await.unwrap();
        }
        // ENOSPC from a write itself (not from claiming space): whether it
        // landed is unknown, so the log stops, and reopens by itself.
        storage.fail_next_write(std::io::ErrorKind::StorageFull);
        assert_eq!(produce(c, "t", 0, &values("refused", 5)).await, Err(ErrorCode::DISK_FULL));
        let mut tries = 0;
        loop {
            tries += 1;
            match produce(c, "t", 0, &values("after", 5)).await {
                Ok(_) => break,
                Err(code) => assert!(code.is_retriable() && tries < 20, "{code:?} after {tries} tries"),
            }
            sim.sleep(Duration::from_millis(300)).await;
        }
        let got = read_values(c, "t", 0, Offset(0)).await;
        for i in 0..5 {
            assert!(got.contains(&values(&format!("ok{i}"), 5)[0]), "acknowledged before the failure: kept");
        }
        assert!(got.contains(&values("after", 5)[0]));
        // An fsync that fails, even with ENOSPC, poisons for good: only an
        // operator's recover brings it back (never a retried fsync).
        storage.fail_next_fdatasync(std::io::ErrorKind::StorageFull);
        assert_eq!(produce(c, "t", 0, &values("lost", 5)).await, Err(ErrorCode::STORAGE_ERROR));
        sim.sleep(Duration::from_secs(5)).await;
        assert_eq!(produce(c, "t", 0, &values("still", 5)).await, Err(ErrorCode::STORAGE_ERROR));
    });
}

#[test]
fn topic_settings_change_while_it_serves() {
    let ex = SimExecutor::new(8);
    let mut c = config();
    c.log.retention_check_ms = 100;
    let (rt, broker) = start(&ex, &c);
    with_client(&rt, &broker, async move |c| {
        create(c, "t", 1, &[("segment.bytes", "20480")]).await.unwrap();
        for i in 0..60 {
            produce(c, "t", 0, &values(&format!("v{i}"), 20)).await.unwrap();
        }
        let alter = Request::AlterTopicConfig {
            name: "t".into(),
            ops: vec![ConfigOp::Set { key: "retention.bytes".into(), value: "40000".into() }],
        };
        assert!(matches!(c.call(&alter).await, Ok(Response::AlterTopicConfig)));
        let bad = Request::AlterTopicConfig {
            name: "t".into(),
            ops: vec![ConfigOp::Set { key: "retention.fortnights".into(), value: "1".into() }],
        };
        assert_eq!(c.call(&bad).await.unwrap_err().0, ErrorCode::INVALID_CONFIG);
    });
    // The next retention pass applies it: no restart.
    ex.run_for(Duration::from_millis(500));
    with_client(&rt, &broker, async move |c| {
        let Ok(Response::DescribeTopic(d)) = c.call(&Request::DescribeTopic { name: "t".into() }).await else {
            panic!()
        };
        assert!(d.partitions[0].log_start_offset > Offset(0), "old segments deleted");
        let retention = d.configs.iter().find(|e| e.name == "retention.bytes").unwrap();
        assert_eq!((retention.value.as_str(), retention.source), ("40000", protocol::api::ConfigSource::Topic));
        let segment = d.configs.iter().find(|e| e.name == "segment.bytes").unwrap();
        assert_eq!(segment.value, "20480");
    });
}
