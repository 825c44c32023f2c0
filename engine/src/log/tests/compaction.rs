//! Compaction: the latest record of every key survives at its offset, older
//! ones go, tombstones go after `delete_retention_ms`, nothing above the
//! high watermark or in the active segment changes, a small map cleans in
//! passes, and a power loss at any moment of a pass (simulator) leaves a
//! log whose replay is the model's table.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use futures::executor::block_on;
use proptest::prelude::*;

use super::{dir, open, power_loss, read_all, read_all_async, small_config};
use crate::batch::{BatchBuilder, RecordInput, validate_batch, validate_records};
use crate::log::{CompactionPolicy, LogConfig, PartitionLog};
use crate::rt::sim::{SimExecutor, SimRng, SimStorage};
use crate::types::{Offset, Timestamp};

/// One record as a reader sees it: offset, key, value (`None`: tombstone).
type Seen = (Offset, Option<Vec<u8>>, Option<Vec<u8>>);

/// The `(key, value)` records of one appended batch.
type Entities = Vec<(String, Option<String>)>;

fn records(batches: &[Vec<u8>]) -> Vec<Seen> {
    let mut out = Vec::new();
    for bytes in batches {
        let view = validate_batch(bytes).unwrap();
        validate_records(&view).unwrap();
        for r in view.records().unwrap().iter() {
            let offset = view.header.base_offset.plus(u64::from(r.offset_delta.to_native()));
            out.push((offset, r.key.as_ref().map(|k| k.to_vec()), r.value.as_ref().map(|v| v.to_vec())));
        }
    }
    out
}

/// A batch of `(key, value)` records; `None` values are tombstones.
fn entity_batch(records: &[(String, Option<String>)], ts: i64) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for (k, v) in records {
        builder.push(RecordInput::new(Some(k.as_bytes()), v.as_ref().map(String::as_bytes), Timestamp(ts)));
    }
    builder.build().unwrap()
}

/// The table a replay of `seen` builds: the latest value of each key.
fn table(seen: &[Seen]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut t = BTreeMap::new();
    for (_, k, v) in seen {
        let k = k.clone().expect("entity records have keys");
        match v {
            Some(v) => t.insert(k, v.clone()),
            None => t.remove(&k),
        };
    }
    t
}

fn policy(delete_retention_ms: i64) -> CompactionPolicy {
    CompactionPolicy { delete_retention_ms, min_compaction_lag_ms: 0, map_bytes_max: 1 << 20 }
}

/// Appends rounds of updates to `keys` keys (every seventh a delete),
/// enough to roll several segments; returns what a replay must give.
fn fill(log: &PartitionLog<SimStorage>, keys: usize, rounds: usize) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut model = BTreeMap::new();
    for round in 0..rounds {
        let batch: Vec<(String, Option<String>)> = (0..keys)
            .map(|k| {
                let key = format!("entity-{k}");
                let value = ((k + round) % 7 != 0).then(|| format!("state-{k}-{round}-{}", "s".repeat(40)));
                (key, value)
            })
            .collect();
        for (k, v) in &batch {
            match v {
                Some(v) => model.insert(k.as_bytes().to_vec(), v.as_bytes().to_vec()),
                None => model.remove(k.as_bytes()),
            };
        }
        block_on(log.append(entity_batch(&batch, 1000 + round as i64))).unwrap();
    }
    model
}

fn assert_offsets_increase(seen: &[Seen]) {
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "offsets strictly increase");
}

#[test]
fn compaction_keeps_the_latest_record_of_every_key_at_its_offset() {
    let storage = SimStorage::new();
    let log = open(&storage, small_config()).unwrap();
    let model = fill(&log, 10, 60);
    let before = records(&read_all(&log, Offset(0)));
    assert!(log.segment_count() > 3, "the data spans several segments");
    let size_before = log.size_bytes();
    let report = block_on(log.compact(&policy(i64::MAX / 2), &mut ())).unwrap();
    assert!(report.segments_rewritten > 0 && report.records_removed > 0, "{report:?}");
    let after = records(&read_all(&log, Offset(0)));
    assert_offsets_increase(&after);
    assert_eq!(table(&after), model, "a replay gives the same table");
    assert!(log.size_bytes() < size_before, "the log shrank");
    // Every record left is the one appended at its offset.
    for seen in &after {
        assert!(before.contains(seen), "{seen:?} was appended as it reads");
    }
    // Only what a later record supersedes is gone: every record of the
    // sealed segments that is its key's newest stayed.
    let sealed_end = *log.state.borrow().closed.values().last().map(|c| c.next_offset).as_ref().unwrap();
    let mut newest: BTreeMap<&[u8], Offset> = BTreeMap::new();
    for (o, k, _) in &before {
        newest.insert(k.as_deref().unwrap(), *o);
    }
    for seen in before.iter().filter(|s| s.0 < sealed_end) {
        if newest[seen.1.as_deref().unwrap()] == seen.0 {
            assert!(after.contains(seen), "the newest record of its key at {} stays", seen.0);
        }
    }
    let superseded = before.iter().filter(|s| s.0 < sealed_end && newest[s.1.as_deref().unwrap()] != s.0).count();
    let kept_superseded = after.iter().filter(|s| s.0 < sealed_end && newest[s.1.as_deref().unwrap()] != s.0).count();
    assert!(
        kept_superseded * 10 < superseded,
        "almost every superseded record went: {kept_superseded} of {superseded}"
    );
    // A second pass finds nothing dirty.
    let again = block_on(log.compact(&policy(i64::MAX / 2), &mut ())).unwrap();
    assert_eq!(again.segments_rewritten, 0);
    assert_eq!(again.cleaned_through, report.cleaned_through);
}

#[test]
fn the_active_segment_and_everything_above_the_high_watermark_stay_as_appended() {
    let storage = SimStorage::new();
    let log = open(&storage, small_config()).unwrap();
    fill(&log, 10, 60);
    let sealed: Vec<Offset> = log.state.borrow().closed.values().map(|c| c.next_offset).collect();
    // Replication has not confirmed the last two sealed segments.
    let limit = sealed[sealed.len() - 3];
    let before = records(&read_all(&log, Offset(0)));
    log.set_high_watermark_limit(Some(limit));
    let report = block_on(log.compact(&policy(i64::MAX / 2), &mut ())).unwrap();
    assert_eq!(report.cleaned_through, limit, "the pass stops at the high watermark");
    log.set_high_watermark_limit(None);
    let after = records(&read_all(&log, Offset(0)));
    let above = |v: &[Seen]| v.iter().filter(|s| s.0 >= limit).cloned().collect::<Vec<_>>();
    assert_eq!(above(&after), above(&before), "nothing at or above the high watermark changed");
    assert!(after.len() < before.len());
}

#[test]
fn a_tombstone_stays_for_delete_retention_and_then_goes() {
    let storage = SimStorage::new();
    let log = open(&storage, small_config()).unwrap();
    let model = fill(&log, 10, 60);
    block_on(log.roll()).unwrap();
    let tombstones = |log: &PartitionLog<SimStorage>| {
        records(&read_all(log, Offset(0))).into_iter().filter(|s| s.2.is_none()).collect::<Vec<_>>()
    };
    block_on(log.compact(&policy(60_000), &mut ())).unwrap();
    let young = tombstones(&log);
    let deleted = 10 - model.len();
    assert!(young.len() >= deleted, "every deleted key's tombstone is there while young");
    assert_eq!(table(&records(&read_all(&log, Offset(0)))), model);
    // A minute later, with new data to clean, the old tombstones go; the
    // new one (the first key is deleted again) stays.
    storage.advance_ms(60_001);
    let young_from = log.log_end_offset();
    fill(&log, 3, 1);
    block_on(log.roll()).unwrap();
    let report = block_on(log.compact(&policy(60_000), &mut ())).unwrap();
    assert!(report.tombstones_removed > 0, "{report:?}");
    let left = tombstones(&log);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].0 >= young_from, "only the young tombstone is left: {left:?}");
}

#[test]
fn a_small_map_cleans_in_passes_and_reaches_the_same_table() {
    let storage = SimStorage::new();
    let log = open(&storage, small_config()).unwrap();
    let model = fill(&log, 40, 30);
    block_on(log.roll()).unwrap();
    let small = CompactionPolicy { map_bytes_max: 20 * 60, ..policy(i64::MAX / 2) };
    let mut passes = 0;
    loop {
        let report = block_on(log.compact(&small, &mut ())).unwrap();
        passes += 1;
        assert_eq!(table(&records(&read_all(&log, Offset(0)))), model, "the table holds after every pass");
        if !report.more {
            break;
        }
        assert!(passes < 1000);
    }
    assert!(passes > 2, "the map filled up: {passes} passes");
    let status = log.cleaner_status();
    assert_eq!(status.dirty_bytes, 0);
    assert!(status.dirty_ratio().abs() < f64::EPSILON);
}

#[test]
fn a_reopened_log_keeps_its_cleaner_checkpoint_and_removes_a_leftover_cleaned_file() {
    let storage = SimStorage::new();
    let log = open(&storage, small_config()).unwrap();
    let model = fill(&log, 10, 60);
    block_on(log.roll()).unwrap();
    let report = block_on(log.compact(&policy(i64::MAX / 2), &mut ())).unwrap();
    block_on(log.close()).unwrap();
    drop(log);
    // A swap that never happened left its file.
    let stray = dir().join("00000000000000000000.log.cleaned");
    storage.set_file_contents(&stray, vec![1, 2, 3]);
    let log = open(&storage, small_config()).unwrap();
    assert!(storage.file_contents(&stray).is_none(), "recovery removed the leftover");
    assert_eq!(log.cleaner_status().cleaned_through, report.cleaned_through);
    assert!(log.cleaner_status().last_clean_ms.is_some());
    assert_eq!(table(&records(&read_all(&log, Offset(0)))), model);
}

#[test]
fn a_compacted_segment_missing_its_index_is_rebuilt_on_open() {
    let storage = SimStorage::new();
    let log = open(&storage, small_config()).unwrap();
    let model = fill(&log, 10, 60);
    block_on(log.roll()).unwrap();
    block_on(log.compact(&policy(i64::MAX / 2), &mut ())).unwrap();
    drop(log);
    storage.disk_remove(&dir().join("00000000000000000000.index"));
    let log = open(&storage, small_config()).unwrap();
    assert_eq!(log.recovery_report().rebuilt_indexes, 1);
    assert_eq!(table(&records(&read_all(&log, Offset(0)))), model);
}

/// Appends random puts and deletes while a cleaner runs, until a power
/// loss at `crash_after`; then reopens, cleans once more and replays.
fn run_and_crash(seed: u64, crash_after: Duration) {
    let config = LogConfig { segment_bytes_max: 8 << 10, ..small_config() };
    let ex = SimExecutor::new(seed);
    let storage = SimStorage::with_executor(&ex);
    let log = {
        let (storage, config) = (storage.clone(), config.clone());
        Rc::new(ex.block_on(async move { PartitionLog::open(storage, dir(), config).await.unwrap() }))
    };
    let retention_ms = 20;
    // Acknowledged batches: (base offset, records); and the one in flight.
    let acked: Rc<RefCell<Vec<(Offset, Entities)>>> = Rc::default();
    let in_flight: Rc<RefCell<Option<Entities>>> = Rc::default();
    {
        let (log, acked, in_flight) = (log.clone(), acked.clone(), in_flight.clone());
        let mut rng = SimRng::new(seed);
        drop(ex.spawn(async move {
            for i in 0..2000u64 {
                let n = 1 + rng.below(6) as usize;
                let batch: Vec<(String, Option<String>)> = (0..n)
                    .map(|j| {
                        let key = format!("k{}", rng.below(24));
                        let value =
                            (rng.below(5) != 0).then(|| format!("v{i}-{j}-{}", "p".repeat(rng.below(60) as usize)));
                        (key, value)
                    })
                    .collect();
                *in_flight.borrow_mut() = Some(batch.clone());
                match log.append(entity_batch(&batch, i as i64)).await {
                    Ok(info) => acked.borrow_mut().push((info.base_offset, batch)),
                    Err(_) => return,
                }
                *in_flight.borrow_mut() = None;
            }
        }));
    }
    {
        let (log, ex2) = (log.clone(), ex.clone());
        let mut rng = SimRng::new(seed ^ 0xc1ea);
        drop(ex.spawn(async move {
            let policy =
                CompactionPolicy { delete_retention_ms: retention_ms, min_compaction_lag_ms: 0, map_bytes_max: 1200 };
            loop {
                ex2.clock().sleep(Duration::from_micros(200 + rng.below(3000))).await;
                if log.compact(&policy, &mut ()).await.is_err() {
                    return;
                }
            }
        }));
    }
    ex.run_for(crash_after);
    drop(log);
    let (after, storage) = power_loss(&ex, &storage, seed);
    // The new executor's clock starts where the old one did: move it past
    // every append and its delete retention, so the pass after the crash
    // may (and must) drop every tombstone.
    storage.advance_ms(i64::try_from(crash_after.as_millis()).unwrap() + 10 * retention_ms);
    let acked = acked.borrow().clone();
    let in_flight = in_flight.borrow().clone();
    after.block_on(async move {
        let log = PartitionLog::open(storage, dir(), config).await.unwrap();
        // The model: every acknowledged batch, and the one in flight if it
        // reached the disk (a lone appender: it sits right after the last).
        let acked_end = acked.last().map_or(Offset(0), |(base, b)| base.plus(b.len() as u64));
        let mut model: BTreeMap<Vec<u8>, (Offset, Option<Vec<u8>>)> = BTreeMap::new();
        let mut batches = acked.clone();
        if log.log_end_offset() > acked_end {
            batches.push((acked_end, in_flight.expect("something past the acknowledged end was in flight")));
        }
        for (base, records) in &batches {
            for (i, (k, v)) in records.iter().enumerate() {
                model.insert(k.as_bytes().to_vec(), (base.plus(i as u64), v.as_ref().map(|v| v.as_bytes().to_vec())));
            }
        }
        let replay = async |log: &PartitionLog<SimStorage>| records(&read_all_async(log, Offset(0)).await);
        let check = |seen: &[Seen]| {
            assert_offsets_increase(seen);
            let mut latest: BTreeMap<Vec<u8>, (Offset, Option<Vec<u8>>)> = BTreeMap::new();
            for (o, k, v) in seen {
                latest.insert(k.clone().unwrap(), (*o, v.clone()));
            }
            for (k, (o, v)) in &model {
                match (v, latest.get(k)) {
                    // A live key: its newest record, at its offset.
                    (Some(_), got) => assert_eq!(got, Some(&(*o, v.clone())), "key {k:?}"),
                    // A deleted key: its tombstone, or nothing once that expired.
                    (None, None) => {}
                    (None, Some(got)) => assert_eq!(got, &(*o, None), "key {k:?} is deleted"),
                }
            }
            assert!(latest.keys().all(|k| model.contains_key(k)), "no key from nowhere");
        };
        check(&replay(&log).await);
        // Clean again after the crash: the same table, from whatever the
        // crash left.
        log.roll().await.unwrap();
        let policy =
            CompactionPolicy { delete_retention_ms: retention_ms, min_compaction_lag_ms: 0, map_bytes_max: 1 << 20 };
        log.compact(&policy, &mut ()).await.unwrap();
        let replayed = replay(&log).await;
        check(&replayed);
        let tombstones: Vec<&Seen> = replayed.iter().filter(|s| s.2.is_none()).collect();
        assert!(tombstones.is_empty(), "every tombstone is past its retention and goes: {tombstones:?}");
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn a_power_loss_at_any_moment_of_compaction_leaves_the_models_table(seed in any::<u64>(), after_ms in 5u64..400) {
        run_and_crash(seed, Duration::from_millis(after_ms));
    }
}

#[test]
fn a_tombstone_past_where_the_map_ended_waits_for_the_pass_that_maps_it() {
    let storage = SimStorage::new();
    let log = open(&storage, small_config()).unwrap();
    let put = |k: &str| (k.to_owned(), Some(format!("{k}-state")));
    block_on(log.append(entity_batch(&[put("a")], 1))).unwrap();
    block_on(log.append(entity_batch(&[put("b"), put("c")], 2))).unwrap();
    block_on(log.append(entity_batch(&[("a".to_owned(), None)], 3))).unwrap();
    block_on(log.roll()).unwrap();
    storage.advance_ms(10_000);
    // A map that is full after the first batch: the pass ends there, with
    // `a`'s tombstone (expired) past its end and `a`'s put before it.
    let tiny = CompactionPolicy { map_bytes_max: 1, ..policy(1_000) };
    let report = block_on(log.compact(&tiny, &mut ())).unwrap();
    assert!(report.more);
    let seen = records(&read_all(&log, Offset(0)));
    assert_eq!(table(&seen).get(&b"a"[..]), None, "a stays deleted: {seen:?}");
    while block_on(log.compact(&tiny, &mut ())).unwrap().more {}
    let seen = records(&read_all(&log, Offset(0)));
    assert!(seen.iter().all(|s| s.1.as_deref() != Some(&b"a"[..])), "a is gone, tombstone and all: {seen:?}");
    assert_eq!(table(&seen).len(), 2);
}

#[test]
fn a_tombstone_on_an_idle_log_goes_after_delete_retention_even_across_a_restart() {
    let storage = SimStorage::new();
    let log = open(&storage, small_config()).unwrap();
    let model = fill(&log, 10, 60);
    block_on(log.roll()).unwrap();
    block_on(log.compact(&policy(60_000), &mut ())).unwrap();
    let tombstones =
        |log: &PartitionLog<SimStorage>| records(&read_all(log, Offset(0))).iter().filter(|s| s.2.is_none()).count();
    assert!(tombstones(&log) > 0, "young tombstones are kept");
    let status = log.cleaner_status();
    assert_eq!(status.dirty_bytes, 0, "nothing is dirty: no new data comes");
    let oldest = status.oldest_tombstone_ms.expect("the clean part keeps a tombstone");
    // Not due yet: a pass does nothing.
    let report = block_on(log.compact(&policy(60_000), &mut ())).unwrap();
    assert_eq!(report.tombstones_removed, 0);
    block_on(log.close()).unwrap();
    drop(log);
    let log = open(&storage, small_config()).unwrap();
    assert_eq!(log.cleaner_status().oldest_tombstone_ms, Some(oldest), "the checkpoint keeps it");
    storage.advance_ms(60_001);
    let report = block_on(log.compact(&policy(60_000), &mut ())).unwrap();
    assert!(report.tombstones_removed > 0, "{report:?}");
    assert_eq!(tombstones(&log), 0);
    assert_eq!(log.cleaner_status().oldest_tombstone_ms, None);
    assert_eq!(table(&records(&read_all(&log, Offset(0)))), model);
}

#[test]
fn a_tombstone_pass_that_cannot_see_the_clean_part_forgets_nothing() {
    let storage = SimStorage::new();
    let log = open(&storage, small_config()).unwrap();
    fill(&log, 10, 60);
    block_on(log.roll()).unwrap();
    block_on(log.compact(&policy(60_000), &mut ())).unwrap();
    let before = log.cleaner_status();
    assert!(before.oldest_tombstone_ms.is_some());
    // After a restart a replica's high watermark is not known yet: nothing
    // sealed is within reach. The due tombstones wait; they are not forgotten.
    log.set_high_watermark_limit(Some(Offset(0)));
    storage.advance_ms(60_001);
    let report = block_on(log.compact(&policy(60_000), &mut ())).unwrap();
    assert_eq!(report.tombstones_removed, 0);
    assert_eq!(log.cleaner_status().oldest_tombstone_ms, before.oldest_tombstone_ms);
    assert_eq!(log.cleaner_status().last_clean_ms, before.last_clean_ms, "no pass ran");
    log.set_high_watermark_limit(None);
    let report = block_on(log.compact(&policy(60_000), &mut ())).unwrap();
    assert!(report.tombstones_removed > 0, "{report:?}");
}

#[test]
fn a_full_disk_fails_a_pass_cleanly_and_the_next_one_with_room_cleans() {
    let storage = SimStorage::new();
    let log = open(&storage, small_config()).unwrap();
    let model = fill(&log, 10, 60);
    block_on(log.roll()).unwrap();
    let before = read_all(&log, Offset(0));
    // No room for a cleaned segment.
    storage.set_capacity(Some(storage.used_bytes() + 512));
    let failed = block_on(log.compact(&policy(60_000), &mut ()));
    assert!(failed.is_err(), "the pass fails: {failed:?}");
    assert!(!log.is_poisoned(), "a failed pass never poisons the log");
    assert!(super::files_with_ext(&storage, "cleaned").is_empty(), "its partial file is removed");
    assert_eq!(read_all(&log, Offset(0)), before, "nothing changed, nothing lost");
    assert_eq!(log.cleaner_status().last_clean_ms, None);
    storage.set_capacity(None);
    let report = block_on(log.compact(&policy(60_000), &mut ())).unwrap();
    assert!(report.segments_rewritten > 0, "{report:?}");
    assert_eq!(table(&records(&read_all(&log, Offset(0)))), model);
}
