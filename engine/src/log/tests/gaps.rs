//! Offsets with gaps (compaction, control batches, a leader's batches on a
//! follower) and the two batch format versions side by side.

use futures::executor::block_on;

use super::{batch, files_with_ext, open, read_all, small_config, stored};
use crate::batch::{BatchBuilder, RecordInput, patch_base_offset, validate_batch};
use crate::log::LogError;
use crate::rt::sim::{SimRng, SimStorage};
use crate::types::{Offset, Timestamp};

/// A batch of `records` records at offset deltas `0, 2, 4, …` (a compacted
/// batch keeps its records' offsets), placed at `base`, stamped as a leader
/// would have.
fn sparse_batch(base: u64, records: u32, ts: i64) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for i in 0..records {
        builder.push_at(i * 2, RecordInput::new(Some(format!("k{i}").as_bytes()), Some(b"v"), Timestamp(ts)));
    }
    let mut bytes = builder.build().unwrap();
    crate::batch::stamp(
        &mut bytes,
        &crate::batch::Stamp {
            base_offset: Offset(base),
            leader_epoch: crate::types::LeaderEpoch(3),
            append_time: Timestamp(ts),
            log_append_time: false,
        },
    );
    bytes
}

#[test]
fn recovery_of_a_log_with_gaps_keeps_every_batch() {
    let storage = SimStorage::new();
    let log = open(&storage, small_config()).unwrap();
    let mut expected = Vec::new();
    let mut base = 0;
    for i in 0..400u64 {
        // Gaps inside batches and between them, of varying size.
        base += i % 7;
        let b = sparse_batch(base, 1 + (i % 4) as u32, 1000 + i as i64);
        let next = validate_batch(&b).unwrap().header.next_offset();
        let info = block_on(log.append_at(b.clone())).unwrap();
        assert_eq!(info.base_offset, Offset(base), "the batch keeps its offsets");
        expected.push(b);
        base = next.0;
    }
    assert!(log.segment_count() > 3, "the gaps cross segment rolls");
    assert_eq!(read_all(&log, Offset(0)), expected);
    // An unclean restart scans the active segment; a clean one trusts it.
    drop(log);
    storage.crash(&mut SimRng::new(9));
    let log = open(&storage, small_config()).unwrap();
    assert!(log.recovery_report().tail_damage.is_none());
    assert_eq!(read_all(&log, Offset(0)), expected, "recovery kept every batch");
    assert_eq!(log.log_end_offset(), Offset(base));
    block_on(log.close()).unwrap();
    // Rebuilt indexes (R8) walk the gaps too.
    for index in files_with_ext(&storage, "index") {
        storage.disk_remove(&index);
    }
    let log = open(&storage, small_config()).unwrap();
    assert_eq!(read_all(&log, Offset(0)), expected);
    // A read at an offset no record holds starts at the next batch.
    for probe in [1u64, 3, 50, 200, base - 1] {
        let read = block_on(log.read(Offset(probe), 1)).unwrap();
        let header = validate_batch(&read.batches[0]).unwrap().header;
        assert!(header.next_offset() > Offset(probe), "probe {probe}");
        let previous =
            expected.iter().map(|b| validate_batch(b).unwrap().header).find(|h| h.next_offset() > Offset(probe));
        assert_eq!(Some(header), previous, "probe {probe}: the batch holding it or the first after it");
    }
    // Appends by the log continue after the last batch.
    let info = block_on(log.append(batch(1, 2, 5))).unwrap();
    assert_eq!(info.base_offset, Offset(base));
}

#[test]
fn a_truncation_into_a_gap_ends_the_log_at_the_last_batch_before_it() {
    let storage = SimStorage::new();
    let log = open(&storage, small_config()).unwrap();
    block_on(log.append_at(sparse_batch(0, 3, 1))).unwrap(); // offsets 0, 2, 4; ends at 5
    block_on(log.append_at(sparse_batch(20, 2, 1))).unwrap(); // 20, 22
    assert!(matches!(block_on(log.truncate_to(Offset(21))), Err(LogError::NotBatchBoundary { .. })), "inside a batch");
    block_on(log.truncate_to(Offset(12))).unwrap();
    assert_eq!(log.log_end_offset(), Offset(5), "the end of the last batch before the cut");
    assert_eq!(read_all(&log, Offset(0)).len(), 1);
    let info = block_on(log.append(batch(9, 1, 1))).unwrap();
    assert_eq!(info.base_offset, Offset(5));
}

#[test]
fn a_batch_placed_by_its_offsets_must_not_go_back() {
    let storage = SimStorage::new();
    let log = open(&storage, small_config()).unwrap();
    block_on(log.append_at(sparse_batch(10, 2, 1))).unwrap();
    let behind = block_on(log.append_at(sparse_batch(12, 1, 1))).unwrap_err();
    assert!(matches!(behind, LogError::OffsetBehind { log_end: Offset(13), .. }), "{behind}");
    assert_eq!(log.log_end_offset(), Offset(13), "nothing changed");
    assert!(!log.is_poisoned());
    block_on(log.append_at(sparse_batch(13, 1, 1))).unwrap();
}

#[test]
fn producers_never_choose_offsets() {
    let storage = SimStorage::new();
    let log = open(&storage, small_config()).unwrap();
    block_on(log.append(batch(1, 3, 0))).unwrap();
    // A producer's base offset is overwritten...
    let mut b = batch(2, 2, 0);
    patch_base_offset(&mut b, Offset(1000));
    let info = block_on(log.append(b)).unwrap();
    assert_eq!(info.base_offset, Offset(3));
    // ...and a batch with holes in its offset deltas, which would reserve
    // offsets, is refused.
    let mut sparse = BatchBuilder::new();
    sparse.push_at(0, RecordInput::new(None, Some(b"a"), Timestamp(0)));
    sparse.push_at(9, RecordInput::new(None, Some(b"b"), Timestamp(0)));
    assert!(matches!(block_on(log.append(sparse.build().unwrap())), Err(LogError::NotDense)));
    assert_eq!(log.log_end_offset(), Offset(5));
}

#[test]
fn version_1_batches_are_appended_read_and_recovered_beside_version_2() {
    // A log written before version 2, or by an older producer, mixes both.
    let storage = SimStorage::new();
    let log = open(&storage, small_config()).unwrap();
    let mut expected = Vec::new();
    for tag in 0..60u64 {
        let mut builder = BatchBuilder::new();
        builder.push(RecordInput::new(Some(b"k"), Some(format!("v{tag}").as_bytes()), Timestamp(tag as i64)));
        let b = if tag % 2 == 0 { builder.build_v1().unwrap() } else { builder.build().unwrap() };
        let info = block_on(log.append(b.clone())).unwrap();
        expected.push(stored(&storage, b, info.base_offset));
    }
    let versions: Vec<u16> = expected.iter().map(|b| validate_batch(b).unwrap().header.version).collect();
    assert!(versions.contains(&1) && versions.contains(&2));
    drop(log);
    storage.crash(&mut SimRng::new(4));
    let log = open(&storage, small_config()).unwrap();
    assert_eq!(read_all(&log, Offset(0)), expected);
    let first = block_on(log.read(Offset(0), 1)).unwrap();
    assert_eq!(validate_batch(&first.batches[0]).unwrap().header.version, 1);
}

#[test]
fn a_version_1_batch_must_continue_its_predecessor_exactly() {
    // Its base offset is outside any checksum: only continuity checks it,
    // so a gap in front of a version 1 batch reads as damage.
    let storage = SimStorage::new();
    let log = open(&storage, small_config()).unwrap();
    block_on(log.append(batch(1, 2, 0))).unwrap();
    let mut v1 = BatchBuilder::new();
    v1.push(RecordInput::new(None, Some(b"x"), Timestamp(0)));
    let mut v1 = v1.build_v1().unwrap();
    patch_base_offset(&mut v1, Offset(7));
    assert!(matches!(block_on(log.append_at(v1.clone())), Err(LogError::OffsetBehind { .. })));
    patch_base_offset(&mut v1, Offset(2));
    block_on(log.append_at(v1)).unwrap();
    assert_eq!(log.log_end_offset(), Offset(3));
}
