//! Consumer-group and queue-group figures (issue 12), each against a
//! baseline measured in the same run, on a broker in this process with its
//! defaults (flush = always: every queue and group change is fsynced
//! before it is answered).
//!
//! - `queue`: 8 queue consumers acking every record of a topic of
//!   `CAIRN_QUEUE_RECORDS` (400,000) records of 100 B over 8 partitions;
//!   acks/s, and the ratio to one plain consumer reading the same topic.
//! - `rebalance`: 9 group members read 100 partitions; a 10th joins; the
//!   time until the group is stable again with every partition assigned,
//!   cooperative-sticky against eager (range), median of 3 rounds each.
//! - `fetch`: one group member reading `CAIRN_QUEUE_RECORDS` records over 8
//!   partitions (committing every second), against a plain consumer of the
//!   same partitions.
//!
//! `CAIRN_GROUPS_BENCH=queue|rebalance|fetch` runs one; each prints a
//! `json:` line.

#![allow(clippy::cast_precision_loss, reason = "rates and ratios of counters far below 2^52")]

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cairn_client::{
    AckKind, Client, ClientConfig, Consumer, ConsumerConfig, GroupConsumer, GroupConsumerConfig, Producer,
    ProducerConfig, QueueConsumer, QueueConsumerConfig, Record, StartFrom, TopicConfig,
};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn fill(client: &Client, topic: &str, partitions: u32, records: u64) {
    client.create_topic(topic, partitions, TopicConfig::default()).await.expect("topic");
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let value = vec![b'v'; 100];
    let mut from = 0;
    while from < records {
        let to = (from + 1000).min(records);
        let batch =
            (from..to).map(|i| Record { partition: Some((i % u64::from(partitions)) as u32), ..Record::value(&value) });
        producer.send_all(topic, batch).await.expect("queued");
        from = to;
    }
    producer.flush().await;
    producer.close().await;
}

/// Seconds for one plain consumer of every partition to read `records`.
async fn plain_read(client: &Client, topic: &str, records: u64) -> f64 {
    let start = Instant::now();
    let mut c = Consumer::assign(client.clone(), ConsumerConfig::default(), topic, &[], StartFrom::Earliest)
        .await
        .expect("consumer");
    let mut read = 0;
    while read < records {
        read += c.poll().await.expect("poll").len() as u64;
    }
    start.elapsed().as_secs_f64()
}

async fn queue(client: &Client) {
    let records = env_or("CAIRN_QUEUE_RECORDS", 400_000);
    fill(client, "bench-queue", 8, records).await;
    let plain = plain_read(client, "bench-queue", records).await;
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
            tokio::spawn(async move {
                let mut config = QueueConsumerConfig::new("bench-q", &["bench-queue"]);
                config.records_max = 2000;
                config.idle_wait = Duration::from_millis(5);
                let mut c = QueueConsumer::new(client, config).expect("consumer");
                while !stop.load(Ordering::Relaxed) {
                    let got = c.poll().await.expect("poll");
                    for r in &got {
                        c.ack(r);
                    }
                    let ok: u64 = c
                        .take_ack_results()
                        .iter()
                        .filter(|r| r.error.is_ok() && r.kind == AckKind::Accept)
                        .map(|r| r.last - r.first + 1)
                        .sum();
                    acked.fetch_add(ok, Ordering::Relaxed);
                }
                c.close().await.expect("close");
            })
        })
        .collect();
    while acked.load(Ordering::Relaxed) < records {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    let info = client.describe_queue("bench-q").await.expect("describe");
    assert_eq!(info.partitions.iter().map(|p| p.acked).sum::<u64>(), records, "the queue's own count");
    let rate = records as f64 / secs;
    let plain_rate = records as f64 / plain;
    println!(
        "queue: {records} records acked by 8 consumers in {secs:.2} s: {rate:.0} acks/s; one plain consumer read them at {plain_rate:.0} records/s; ratio {:.3}",
        rate / plain_rate
    );
    println!(
        "json: {{\"bench\":\"queue\",\"records\":{records},\"acks_per_s\":{rate:.0},\"plain_records_per_s\":{plain_rate:.0}}}"
    );
}

/// A member reading until told to stop, on a thread and runtime of its own
/// (a group consumer's futures are not `Sync`) with its own client: a
/// client's connections live on the runtime that opened them.
fn member(addr: &str, assignor: &str, stop: &Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let mut config = GroupConsumerConfig::new(format!("bench-{assignor}"), &["bench-rebalance"]);
    config.assignor = Some(assignor.to_owned());
    config.start_from = StartFrom::Latest;
    let (addr, stop) = (addr.to_owned(), stop.clone());
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let client = Client::connect(ClientConfig::new(addr.clone())).await.expect("connects");
            let mut c = GroupConsumer::join(client, config).await.expect("joins");
            while !stop.load(Ordering::Relaxed) {
                let _ = c.poll().await;
            }
            let _ = c.close().await;
        });
    })
}

/// Until the group is stable with `members` members holding all 100 partitions.
async fn settled(client: &Client, group: &str, members: usize) {
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        assert!(
            Instant::now() < deadline,
            "{group}: not stable with {members} members: {:?}",
            client.describe_group(group).await
        );
        if let Ok(g) = client.describe_group(group).await {
            let held: usize = g.members.iter().flat_map(|m| &m.assigned).map(|tp| tp.partitions.len()).sum();
            if g.state == "stable" && g.members.len() == members && held == 100 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn rebalance(client: &Client, addr: &str) {
    client.create_topic("bench-rebalance", 100, TopicConfig::default()).await.expect("topic");
    let mut out = Vec::new();
    for assignor in ["cooperative-sticky", "range"] {
        let mut rounds = Vec::new();
        for _ in 0..3 {
            let group = format!("bench-{assignor}");
            let stop = Arc::new(AtomicBool::new(false));
            let mut tasks: Vec<_> = (0..9).map(|_| member(addr, assignor, &stop)).collect();
            settled(client, &group, 9).await;
            let start = Instant::now();
            tasks.push(member(addr, assignor, &stop));
            settled(client, &group, 10).await;
            rounds.push(start.elapsed().as_secs_f64());
            stop.store(true, Ordering::Relaxed);
            for t in tasks {
                t.await.expect("member");
            }
            while client.delete_group(&group).await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let m = median(rounds.clone());
        println!(
            "rebalance {assignor}: a 10th member joining 9 over 100 partitions: stable again in {m:.3} s (median of {rounds:.3?})"
        );
        out.push((assignor, m));
    }
    println!(
        "rebalance: cooperative-sticky / eager = {:.3}\njson: {{\"bench\":\"rebalance\",\"cooperative_s\":{:.3},\"eager_s\":{:.3}}}",
        out[0].1 / out[1].1,
        out[0].1,
        out[1].1
    );
}

async fn fetch(client: &Client) {
    let records = env_or("CAIRN_QUEUE_RECORDS", 400_000);
    fill(client, "bench-fetch", 8, records).await;
    let mut plain = Vec::new();
    let mut grouped = Vec::new();
    for round in 0..3 {
        plain.push(plain_read(client, "bench-fetch", records).await);
        let mut config = GroupConsumerConfig::new(format!("bench-fetch-{round}"), &["bench-fetch"]);
        config.start_from = StartFrom::Earliest;
        config.auto_commit_interval = Some(Duration::from_secs(1));
        let start = Instant::now();
        let mut c = GroupConsumer::join(client.clone(), config).await.expect("joins");
        let mut read = 0;
        while read < records {
            read += c.poll().await.expect("poll").len() as u64;
        }
        grouped.push(start.elapsed().as_secs_f64());
        c.close().await.expect("close");
    }
    let (p, g) = (records as f64 / median(plain), records as f64 / median(grouped));
    println!(
        "fetch: group member {g:.0} records/s, plain consumer {p:.0} records/s (medians of 3): ratio {:.3}",
        g / p
    );
    println!("json: {{\"bench\":\"group_fetch\",\"group_records_per_s\":{g:.0},\"plain_records_per_s\":{p:.0}}}");
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument (a filter) is ignored.
    let which = std::env::var("CAIRN_GROUPS_BENCH").unwrap_or_else(|_| "all".into());
    let (_dir, broker) = common::start_broker(None, None, |c| c.groups.offsets_topic_partitions = 4);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let addr = broker.addr.to_string();
    runtime.block_on(async {
        let client = Client::connect(ClientConfig::new(addr.clone())).await.expect("connects");
        if which == "all" || which == "queue" {
            queue(&client).await;
        }
        if which == "all" || which == "rebalance" {
            rebalance(&client, &addr).await;
        }
        if which == "all" || which == "fetch" {
            fetch(&client).await;
        }
    });
    drop(broker);
}
