//! Criterion micro-benchmarks of the hot paths: what every produced batch
//! costs before it reaches the disk (frame decode, checks, the log's append
//! bookkeeping), and every fetched one after (the log's tail read, the fetch
//! response frame, the client's decode). `cargo bench -p bench --bench micro`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use engine::batch::{BatchBuilder, RecordInput, patch_base_offset, validate_batch, validate_records};
use engine::types::{Offset, Timestamp};

fn batch(records: usize, record_bytes: usize) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for i in 0..records {
        let value = vec![b'v'; record_bytes];
        builder.push(RecordInput::new(Some(format!("key-{i}").as_bytes()), Some(&value), Timestamp(1_700_000_000_000)));
    }
    builder.build().unwrap()
}

fn batch_path(c: &mut Criterion) {
    for (records, record_bytes) in [(256, 100), (1024, 100), (16, 1024)] {
        let bytes = batch(records, record_bytes);
        let mut group = c.benchmark_group(format!("batch_{records}x{record_bytes}B"));
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function("crc32c", |b| b.iter(|| crc32c::crc32c(black_box(&bytes[28..]))));
        group.bench_function("validate_header_and_crc", |b| {
            b.iter(|| validate_batch(black_box(&bytes)).unwrap().header);
        });
        group.bench_function("rkyv_access_checked", |b| {
            let view = validate_batch(&bytes).unwrap();
            b.iter(|| black_box(view.records().unwrap().len()));
        });
        group.bench_function("validate_records", |b| {
            let view = validate_batch(&bytes).unwrap();
            b.iter(|| validate_records(black_box(&view)).unwrap());
        });
        group.bench_function("patch_base_offset", |b| {
            let mut copy = bytes.clone();
            let mut offset = 0u64;
            b.iter(|| {
                offset += 1;
                patch_base_offset(black_box(&mut copy), Offset(offset));
            });
        });
        group.throughput(Throughput::Elements(records as u64));
        group.bench_function("build", |b| {
            let inputs: Vec<RecordInput> = (0..records)
                .map(|i| {
                    RecordInput::new(Some(format!("key-{i}").as_bytes()), Some(&vec![b'v'; record_bytes]), Timestamp(0))
                })
                .collect();
            b.iter(|| {
                let mut builder = BatchBuilder::new();
                for input in &inputs {
                    builder.push(input.clone());
                }
                builder.build().unwrap()
            });
        });
        group.finish();
    }
}

/// The produce request and fetch response frames around one batch.
fn frames(c: &mut Criterion) {
    use bytes::Bytes;
    use protocol::api::{
        Acks, ApiKey, FetchPartitionResult, FetchTopicResult, ProducePartition, ProduceRequest, ProduceTopic, Request,
        Response,
    };
    use protocol::frame::RequestHeader;
    let batch = Bytes::from(batch(256, 100));
    let mut group = c.benchmark_group("frame_256x100B");
    group.throughput(Throughput::Bytes(batch.len() as u64));
    let produce = Request::Produce(ProduceRequest {
        acks: Acks::Leader,
        timeout_ms: 30_000,
        topics: vec![ProduceTopic {
            name: "orders".into(),
            partitions: (0..4).map(|p| ProducePartition { partition: p, batch: batch.clone() }).collect(),
        }],
    });
    group.bench_function("produce_request_encode", |b| b.iter(|| black_box(&produce).encode(7)));
    let frame: Bytes = produce.encode(7).iter().flat_map(|p| p.iter().copied()).collect::<Vec<u8>>().into();
    let frame = frame.slice(4..);
    group.bench_function("produce_request_decode", |b| {
        b.iter(|| {
            let (h, body) = RequestHeader::decode(black_box(&frame)).unwrap();
            Request::decode(&h, body).unwrap()
        });
    });
    let fetch = Response::Fetch(vec![FetchTopicResult {
        name: "orders".into(),
        partitions: (0..4)
            .map(|p| FetchPartitionResult {
                partition: p,
                error: protocol::ErrorCode::NONE,
                high_watermark: Offset(1 << 20),
                log_start_offset: Offset(0),
                batches: vec![batch.clone(), batch.clone()],
            })
            .collect(),
    }]);
    group.bench_function("fetch_response_encode", |b| b.iter(|| black_box(&fetch).encode(7)));
    let frame: Bytes = fetch.encode(7).iter().flat_map(|p| p.iter().copied()).collect::<Vec<u8>>().into();
    let body = frame.slice(4 + protocol::frame::RESPONSE_HEADER_BYTES..);
    group.bench_function("fetch_response_decode", |b| {
        b.iter(|| Response::decode(ApiKey::Fetch, black_box(body.clone())).unwrap());
    });
    group.finish();
}

/// A tail read: served from the log's batch cache, no disk. (The append path
/// is measured against the real device by `bench engine`: on the simulated
/// disk the simulator's own copies would dominate.)
fn log_paths(c: &mut Criterion) {
    use engine::rt::sim::SimStorage;
    use engine::{FlushPolicy, LogConfig, PartitionLog};
    use futures::executor::block_on;
    let bytes = batch(256, 100);
    let mut group = c.benchmark_group("log_256x100B");
    group.throughput(Throughput::Elements(256));
    let config = LogConfig { flush: FlushPolicy::Never, segment_bytes_max: 64 << 20, ..LogConfig::default() };
    group.throughput(Throughput::Elements(256));
    group.bench_function("read_tail_from_cache", |b| {
        let log = block_on(PartitionLog::open(SimStorage::new(), "/bench/p1", config.clone())).unwrap();
        for _ in 0..16 {
            block_on(log.append(bytes.clone())).unwrap();
        }
        let from = Offset(log.high_watermark().0 - 256);
        b.iter(|| block_on(log.read(black_box(from), 1 << 20)).unwrap());
    });
    group.finish();
}

/// The append path on the real device through glommio, with
/// `flush = never` (each append returns once its O_DIRECT write landed):
/// small batches, so the log's own per-append work shows. fdatasync-bound
/// appends are measured by `bench engine`, against the raw disk.
fn log_append_device(c: &mut Criterion) {
    use engine::rt::glommio::GlommioStorage;
    use engine::{FlushPolicy, LogConfig, PartitionLog};
    use glommio::{LocalExecutorBuilder, Placement};
    let bytes = batch(16, 100);
    let root = std::path::PathBuf::from(
        std::env::var("CAIRN_BENCH_DIR")
            .unwrap_or_else(|_| concat!(env!("CARGO_TARGET_TMPDIR"), "/bench-append").into()),
    );
    let mut group = c.benchmark_group("log_16x100B");
    group.throughput(Throughput::Elements(16));
    group.sample_size(10);
    group.bench_function("append_flush_never_glommio", |b| {
        b.iter_custom(|iters| {
            let (bytes, dir) = (bytes.clone(), root.join(format!("run-{}", std::process::id())));
            let _ = std::fs::remove_dir_all(&dir);
            LocalExecutorBuilder::new(Placement::Unbound)
                .spawn(move || async move {
                    let storage = GlommioStorage::new(&dir).await.unwrap();
                    let config = LogConfig { flush: FlushPolicy::Never, ..LogConfig::default() };
                    let log = PartitionLog::open(storage, dir.join("p0"), config).await.unwrap();
                    let start = std::time::Instant::now();
                    for _ in 0..iters {
                        log.append(bytes.clone()).await.unwrap();
                    }
                    let elapsed = start.elapsed();
                    log.close().await.unwrap();
                    let _ = std::fs::remove_dir_all(&dir);
                    elapsed
                })
                .unwrap()
                .join()
                .unwrap()
        });
    });
    group.finish();
}

criterion_group!(benches, batch_path, frames, log_paths, log_append_device);
criterion_main!(benches);
