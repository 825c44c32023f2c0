//! Timestamps the log does not take on trust, log-append time, and
//! settings that change while the log is open.

use futures::executor::block_on;

use super::{batch, open, small_config};
use crate::batch::validate_batch;
use crate::log::{LogConfig, LogError, TimestampType};
use crate::rt::Storage;
use crate::rt::sim::SimStorage;
use crate::types::{Offset, Timestamp};

#[test]
fn timestamps_outside_the_topics_bounds_are_refused() {
    let storage = SimStorage::new();
    let now = storage.now_ms();
    let config =
        LogConfig { timestamp_before_max_ms: Some(60_000), timestamp_after_max_ms: Some(10_000), ..small_config() };
    let log = open(&storage, config).unwrap();
    block_on(log.append(batch(1, 2, now - 59_000))).unwrap();
    let old = block_on(log.append(batch(2, 2, now - 61_000))).unwrap_err();
    assert!(matches!(old, LogError::InvalidTimestamp { .. }), "{old}");
    let future = block_on(log.append(batch(3, 2, now + 11_000))).unwrap_err();
    assert!(matches!(future, LogError::InvalidTimestamp { .. }), "{future}");
    // A record older than the batch's first (deltas may be negative) counts too.
    let mut b = crate::batch::BatchBuilder::new();
    b.push(crate::batch::RecordInput::new(None, Some(b"a"), Timestamp(now)));
    b.push(crate::batch::RecordInput::new(None, Some(b"b"), Timestamp(now - 70_000)));
    assert!(matches!(block_on(log.append(b.build().unwrap())), Err(LogError::InvalidTimestamp { .. })));
    assert_eq!(log.log_end_offset(), Offset(2), "refused batches change nothing");
}

#[test]
fn log_append_time_gives_every_record_the_time_it_was_appended() {
    let storage = SimStorage::new();
    let config = LogConfig { timestamp_type: TimestampType::LogAppendTime, ..small_config() };
    let log = open(&storage, config).unwrap();
    storage.advance_ms(5_000);
    // The producer's timestamps (0 here) are kept in the records, ignored by readers.
    block_on(log.append(batch(1, 3, 0))).unwrap();
    let read = block_on(log.read(Offset(0), 1 << 20)).unwrap();
    let view = validate_batch(&read.batches[0]).unwrap();
    let now = Timestamp(storage.now_ms());
    for r in view.records().unwrap().iter() {
        assert_eq!(view.header.record_timestamp(r.timestamp_delta.to_native()), now);
    }
    assert_eq!(block_on(log.offset_for_timestamp(now)).unwrap(), Some(Offset(0)));
    assert_eq!(block_on(log.offset_for_timestamp(Timestamp(now.0 + 1))).unwrap(), None);
}

#[test]
fn dynamic_settings_apply_without_reopening_and_the_others_are_refused() {
    let storage = SimStorage::new();
    let log = open(&storage, small_config()).unwrap();
    for tag in 0..5 {
        block_on(log.append(batch(tag, 3, 0))).unwrap();
    }
    assert_eq!(log.segment_count(), 1);
    let mut config = log.config();
    config.segment_bytes_max = 9 << 10;
    log.reconfigure(config.clone()).unwrap();
    for tag in 0..200 {
        block_on(log.append(batch(tag, 3, 0))).unwrap();
    }
    assert!(log.segment_count() > 3, "the smaller segment size applies at once");
    let mut bad = config.clone();
    bad.write_buffer_bytes_max *= 2;
    assert!(matches!(log.reconfigure(bad), Err(LogError::Config(_))), "buffers are sized at open");
    let mut invalid = config;
    invalid.segment_bytes_max = 10;
    assert!(matches!(log.reconfigure(invalid), Err(LogError::Config(_))), "values are checked");
}
