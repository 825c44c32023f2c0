//! What the producer costs the client: records per second of client CPU.
//!
//! A broker runs in this process on its own core (one shard, `flush =
//! never`, retention by bytes so the disk does not fill); the producer runs
//! on a single-threaded tokio runtime, so everything the client does for a
//! record (encoding, the sender task, the connection's writer and reader)
//! happens on this thread. Each sample times that thread's CPU
//! (`CLOCK_THREAD_CPUTIME_ID`), not the wall clock: waiting for the broker
//! costs the client nothing, so throughput is records/s per client core.

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use cairn_client::{Client, ClientConfig, Producer, ProducerConfig, ProducerRecord, Record, TopicConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Records per `send_all` call.
const CHUNK: usize = 1000;

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    assert_eq!(rc, 0, "CLOCK_THREAD_CPUTIME_ID is available on Linux");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn producer_cost(c: &mut Criterion) {
    let (_dir, broker) = common::start_broker(Some(1), Some("never"), |c| c.log.retention_check_ms = 500);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let addr = broker.addr.to_string();
    let (client, producer) = runtime.block_on(async {
        let client = Client::connect(ClientConfig::new(addr)).await.expect("connects");
        let topic = TopicConfig::default().with("retention.bytes", "268435456").with("segment.bytes", "33554432");
        client.create_topic("bench", 4, topic).await.expect("topic");
        let producer = Producer::new(client.clone(), ProducerConfig::default());
        (client, producer)
    });
    let mut group = c.benchmark_group("producer");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for size in [100usize, 1024] {
        let value = vec![b'x'; size];
        group.throughput(Throughput::Elements(CHUNK as u64));
        group.bench_function(format!("send_all/{size}B"), |b| {
            b.iter_custom(|iters| {
                let before = thread_cpu();
                runtime.block_on(async {
                    for _ in 0..iters {
                        let records = (0..CHUNK).map(|_| Record::value(&value));
                        producer.send_all("bench", records).await.expect("queued");
                    }
                    producer.flush().await;
                });
                thread_cpu().saturating_sub(before)
            });
        });
        // The per-record path a service uses: an owned record, a future
        // and a delivery each.
        group.throughput(Throughput::Elements(1));
        let value = bytes::Bytes::from(value);
        group.bench_function(format!("send/{size}B"), |b| {
            b.iter_custom(|iters| {
                let before = thread_cpu();
                runtime.block_on(async {
                    for _ in 0..iters {
                        let record = ProducerRecord::new("bench", None::<bytes::Bytes>, value.clone());
                        drop(producer.send(record).await.expect("queued"));
                    }
                    producer.flush().await;
                });
                thread_cpu().saturating_sub(before)
            });
        });
    }
    group.finish();
    drop((producer, client));
    drop(runtime);
    broker.shutdown().expect("clean shutdown");
}

criterion_group!(benches, producer_cost);
criterion_main!(benches);
