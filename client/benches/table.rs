//! How fast a table applies entity events, apart from the network: one
//! million events of 200 B over 100,000 keys (one in sixteen a tombstone), four
//! partitions, prebuilt as a consumer delivers them (keys and values are
//! slices of shared fetched buffers), applied to an empty
//! `TableState` per iteration. The same-run baseline applies the same
//! events to the obvious store, a `BTreeMap` of copied keys and values, so
//! the figure is quoted as a ratio on a noisy machine.
//! `cargo bench -p client --bench table`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use cairn_client::table::TableState;
use cairn_client::{ConsumerRecord, Offset, Timestamp};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const EVENTS: usize = 1_000_000;
const KEYS: u64 = 100_000;
const VALUE_BYTES: usize = 200;
const PARTITIONS: u32 = 4;

/// The events, in a fixed pseudo-random order of keys (splitmix64).
fn events() -> Vec<ConsumerRecord> {
    // Like fetch answers: one buffer holds many records' bytes.
    let values = Bytes::from((0..(16usize << 20)).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let keys = Bytes::from((0..KEYS).flat_map(|k| format!("entity-{k:08}").into_bytes()).collect::<Vec<u8>>());
    let key_len = keys.len() / KEYS as usize;
    let mut seed = 0x5eed_u64;
    let mut next = move || {
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut offsets = [0u64; PARTITIONS as usize];
    (0..EVENTS)
        .map(|i| {
            let r = next();
            let k = (r % KEYS) as usize;
            let partition = (k % PARTITIONS as usize) as u32;
            let offset = offsets[partition as usize];
            offsets[partition as usize] += 1;
            let at = (i * VALUE_BYTES) % (values.len() - VALUE_BYTES);
            ConsumerRecord {
                partition,
                offset: Offset(offset),
                timestamp: Timestamp(0),
                key: Some(keys.slice(k * key_len..(k + 1) * key_len)),
                value: (r >> 60 != 0).then(|| values.slice(at..at + VALUE_BYTES)),
                headers: Vec::new(),
            }
        })
        .collect()
}

fn apply(c: &mut Criterion) {
    let events = events();
    let mut group = c.benchmark_group("table");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("apply/1M_events_200B_100k_keys", |b| {
        b.iter_batched(
            || TableState::new(usize::MAX),
            |mut table| {
                for e in &events {
                    black_box(table.apply(e).expect("in order"));
                }
                assert!(table.len() as u64 <= KEYS);
                table
            },
            BatchSize::PerIteration,
        );
    });
    group.bench_function("baseline/btreemap_copy", |b| {
        b.iter_batched(
            BTreeMap::<Vec<u8>, Vec<u8>>::new,
            |mut map| {
                for e in &events {
                    let key = e.key.as_deref().expect("keyed");
                    match e.value.as_deref() {
                        Some(v) => match map.get_mut(key) {
                            Some(slot) => *slot = v.to_vec(),
                            None => drop(map.insert(key.to_vec(), v.to_vec())),
                        },
                        None => drop(map.remove(key)),
                    }
                }
                map
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, apply);
criterion_main!(benches);
