//! Criterion micro-benchmarks of the batch hot path: what every produced
//! batch costs before it reaches the disk, and every fetched one after.
//! `cargo bench -p bench --bench micro`.

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

criterion_group!(benches, batch_path);
criterion_main!(benches);
