//! The batch format, pinned: golden files hold the bytes of a known batch in
//! each version, so any change to a header layout or to rkyv's archive
//! format fails here first. Regenerate only with a format version bump:
//! `CAIRN_BLESS=1 cargo test -p protocol golden`.

use super::*;
use crate::types::{LeaderEpoch, Offset, ProducerEpoch, ProducerId, Sequence, Timestamp};

const GOLDEN: &[u8] = include_bytes!("golden/batch_v2.bin");
const GOLDEN_V1: &[u8] = include_bytes!("golden/batch_v1.bin");

fn golden_builder() -> BatchBuilder {
    let mut builder = BatchBuilder::new().with_producer(ProducerId(7), ProducerEpoch(2), Sequence(40));
    builder.push(RecordInput::new(Some(b"isbn-0001"), Some(b"{\"title\":\"Dune\"}"), Timestamp(1_700_000_000_000)));
    builder.push(RecordInput::new(None, Some(b"opened"), Timestamp(1_700_000_000_005)));
    let mut tombstone = RecordInput::new(Some(b"isbn-0002"), None, Timestamp(1_699_999_999_990));
    tombstone.headers.push(RecordHeader { key: "trace".into(), value: b"abc".to_vec() });
    builder.push(tombstone);
    builder
}

fn golden_batch() -> Vec<u8> {
    golden_builder().build().unwrap()
}

#[test]
fn golden_batch_bytes_are_stable() {
    let bytes = golden_batch();
    if std::env::var_os("CAIRN_BLESS").is_some() {
        std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/src/batch/golden/batch_v2.bin"), &bytes).unwrap();
    }
    assert_eq!(bytes, GOLDEN, "the batch format changed: bump BATCH_VERSION and document it in docs/format.md");
}

#[test]
fn golden_batch_v1_bytes_are_still_built_and_read() {
    // The version 1 file was blessed by the build that wrote version 1: it
    // must keep decoding, and the v1 builder must keep producing it.
    assert_eq!(golden_builder().build_v1().unwrap(), GOLDEN_V1);
    let view = validate_batch(GOLDEN_V1).unwrap();
    assert_eq!(view.header.version, 1);
    assert_eq!(view.header.header_bytes(), 72);
    validate_records(&view).unwrap();
    let records = view.records().unwrap();
    assert_eq!(records.len(), 3);
    assert_eq!(records[0].value.as_ref().map(rkyv::vec::ArchivedVec::as_slice), Some(&b"{\"title\":\"Dune\"}"[..]));
    assert_eq!(view.header.record_timestamp(records[2].timestamp_delta.to_native()), Timestamp(1_699_999_999_990));
    let b = GOLDEN_V1;
    assert_eq!(u32::from_le_bytes(b[24..28].try_into().unwrap()), crc32c::crc32c(&b[28..]), "v1 crc");
    assert_eq!(u32::from_le_bytes(b[32..36].try_into().unwrap()), 2, "v1 last offset delta");
    // A v1 batch is stamped like before: base offset and epoch, no header CRC.
    let mut stamped = GOLDEN_V1.to_vec();
    stamp(
        &mut stamped,
        &Stamp {
            base_offset: Offset(77),
            leader_epoch: LeaderEpoch(3),
            append_time: Timestamp(5),
            log_append_time: true,
        },
    );
    let header = validate_batch(&stamped).unwrap().header;
    assert_eq!((header.base_offset, header.leader_epoch), (Offset(77), LeaderEpoch(3)));
    assert!(!header.log_append_time(), "a v1 batch keeps its producer's timestamps");
    assert_eq!(stamped[16..], GOLDEN_V1[16..], "nothing after the epoch changes in v1");
}

#[test]
fn golden_batch_header_fields_sit_where_the_format_says() {
    let b = GOLDEN;
    assert_eq!(u64::from_le_bytes(b[0..8].try_into().unwrap()), 0, "base offset");
    assert_eq!(u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize, b.len(), "batch length");
    assert_eq!(u32::from_le_bytes(b[12..16].try_into().unwrap()), 0, "leader epoch");
    assert_eq!(&b[16..20], b"CRN\x01", "magic");
    assert_eq!(u16::from_le_bytes([b[20], b[21]]), 2, "version");
    assert_eq!(b[22], 0, "payload format: cairn");
    assert_eq!(b[23], 0, "broker flags");
    assert_eq!(i64::from_le_bytes(b[24..32].try_into().unwrap()), -1, "append time: not appended yet");
    assert_eq!(u32::from_le_bytes(b[32..36].try_into().unwrap()), crc32c::crc32c(&b[40..]), "body crc");
    assert_eq!(u32::from_le_bytes(b[36..40].try_into().unwrap()), crc32c::crc32c(&b[..36]), "header crc");
    assert_eq!(u16::from_le_bytes([b[40], b[41]]), 0, "attributes");
    assert_eq!(i16::from_le_bytes([b[42], b[43]]), 2, "producer epoch");
    assert_eq!(u32::from_le_bytes(b[44..48].try_into().unwrap()), 2, "last offset delta");
    assert_eq!(u32::from_le_bytes(b[48..52].try_into().unwrap()), 3, "record count");
    assert_eq!(i32::from_le_bytes(b[52..56].try_into().unwrap()), 40, "base sequence");
    assert_eq!(i64::from_le_bytes(b[56..64].try_into().unwrap()), 1_700_000_000_000, "first timestamp");
    assert_eq!(i64::from_le_bytes(b[64..72].try_into().unwrap()), 1_700_000_000_005, "max timestamp");
    assert_eq!(i64::from_le_bytes(b[72..80].try_into().unwrap()), 7, "producer id");
}

#[test]
fn records_are_read_in_place_after_the_crc_check() {
    let bytes = golden_batch();
    let view = validate_batch(&bytes).unwrap();
    validate_records(&view).unwrap();
    let records = view.records().unwrap();
    assert_eq!(records.len(), 3);
    assert_eq!(records[0].key.as_ref().map(rkyv::vec::ArchivedVec::as_slice), Some(&b"isbn-0001"[..]));
    assert_eq!(records[1].key.as_ref(), None, "unkeyed");
    assert!(records[2].value.is_none(), "tombstone");
    assert_eq!(records[2].headers[0].key.as_str(), "trace");
    assert_eq!(records[2].timestamp_delta.to_native(), -10);
    // Zero copy: the value points into the batch bytes.
    let value = records[0].value.as_ref().unwrap().as_slice();
    let range = bytes.as_ptr_range();
    assert!(range.contains(&value.as_ptr()));
}

#[test]
fn stamping_rewrites_the_envelope_and_leaves_the_body_and_its_crc_alone() {
    let mut bytes = golden_batch();
    let stamp_with = Stamp {
        base_offset: Offset(1 << 40),
        leader_epoch: LeaderEpoch(9),
        append_time: Timestamp(1_800_000_000_000),
        log_append_time: true,
    };
    stamp(&mut bytes, &stamp_with);
    let view = validate_batch(&bytes).unwrap();
    let header = view.header;
    assert_eq!(header.base_offset, Offset(1 << 40));
    assert_eq!(header.last_offset(), Offset((1 << 40) + 2));
    assert_eq!(header.leader_epoch, LeaderEpoch(9));
    assert_eq!(header.append_time, Timestamp(1_800_000_000_000));
    assert!(header.log_append_time());
    let records = view.records().unwrap();
    assert_eq!(header.record_timestamp(records[2].timestamp_delta.to_native()), Timestamp(1_800_000_000_000));
    assert_eq!(header.effective_max_timestamp(), Timestamp(1_800_000_000_000));
    assert_eq!(bytes[32..36], GOLDEN[32..36], "the producer's body CRC is never recomputed");
    assert_eq!(bytes[40..], GOLDEN[40..], "the body is untouched");
    // Without log-append time, records keep the producer's timestamps.
    stamp(&mut bytes, &Stamp { log_append_time: false, ..stamp_with });
    let header = validate_batch(&bytes).unwrap().header;
    assert_eq!(header.record_timestamp(-10), Timestamp(1_699_999_999_990));
}

#[test]
fn a_damaged_base_offset_is_caught_by_the_header_crc() {
    let mut bytes = golden_batch();
    patch_base_offset(&mut bytes, Offset(500));
    assert!(validate_batch(&bytes).is_ok());
    bytes[1] ^= 0x01;
    assert!(matches!(validate_batch(&bytes), Err(BatchError::HeaderCrcMismatch { .. })));
}

#[test]
fn kafka_payloads_and_unknown_flags_are_refused_until_supported() {
    let mut bytes = golden_batch();
    bytes[22] = 1;
    let crc = crc32c::crc32c(&bytes[..36]);
    bytes[36..40].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(validate_batch(&bytes).unwrap_err(), BatchError::UnsupportedPayload { format: 1 });
    let mut bytes = golden_batch();
    bytes[23] = 0x80;
    let crc = crc32c::crc32c(&bytes[..36]);
    bytes[36..40].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(validate_batch(&bytes).unwrap_err(), BatchError::UnsupportedFlags { flags: 0x80 });
}

#[test]
fn every_single_byte_flip_is_caught() {
    // Version 2 covers every byte, the base offset included.
    let bytes = golden_batch();
    for i in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[i] ^= 0x04;
        assert!(validate_batch(&damaged).is_err(), "flip at byte {i} went unnoticed");
    }
}

#[test]
fn malformed_batches_get_typed_errors() {
    let bytes = golden_batch();
    assert!(matches!(validate_batch(&bytes[..10]), Err(BatchError::Truncated { .. })));
    assert!(matches!(validate_batch(&bytes[..bytes.len() - 1]), Err(BatchError::Truncated { .. })));
    let mut bad = bytes.clone();
    bad[20] = 9;
    assert_eq!(validate_batch(&bad).unwrap_err().code(), BatchError::UnsupportedVersion { found: 9 }.code());
    assert!(!validate_batch(&bad).unwrap_err().is_unknown_format(), "an unsealed unknown version is damage");
    // The same version under a header CRC that matches: a newer format.
    let crc = crc32c::crc32c(&bad[..36]);
    bad[36..40].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(validate_batch(&bad).unwrap_err(), BatchError::NewerVersion { found: 9 });
    assert!(validate_batch(&bad).unwrap_err().is_unknown_format());
    let mut bad = bytes.clone();
    bad[8..12].copy_from_slice(&3u32.to_le_bytes());
    assert!(matches!(validate_batch(&bad), Err(BatchError::HeaderCrcMismatch { .. })), "caught by the header CRC");
    let crc = crc32c::crc32c(&bad[..36]);
    bad[36..40].copy_from_slice(&crc.to_le_bytes());
    assert!(matches!(validate_batch(&bad), Err(BatchError::BadLength { .. })));
    // A valid CRC over an archive that is not a record list.
    let mut forged = bytes[..BATCH_HEADER_BYTES].to_vec();
    forged.extend_from_slice(&[0xFF; 40]);
    let len = forged.len() as u32;
    forged[8..12].copy_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c(&forged[40..]);
    forged[32..36].copy_from_slice(&crc.to_le_bytes());
    let crc = crc32c::crc32c(&forged[..36]);
    forged[36..40].copy_from_slice(&crc.to_le_bytes());
    let view = validate_batch(&forged).unwrap();
    assert!(validate_records(&view).is_err());
}

proptest::proptest! {
    #[test]
    fn any_records_round_trip(records in proptest::collection::vec(
        (proptest::option::of(proptest::collection::vec(proptest::num::u8::ANY, 0..20)),
         proptest::option::of(proptest::collection::vec(proptest::num::u8::ANY, 0..200)),
         -1000i64..1000), 1..50)) {
        let mut builder = BatchBuilder::new();
        for (key, value, ts) in &records {
            builder.push(RecordInput::new(key.as_deref(), value.as_deref(), Timestamp(1_000_000 + ts)));
        }
        let bytes = builder.build().unwrap();
        let view = validate_batch(&bytes).unwrap();
        let stats = validate_records(&view).unwrap();
        proptest::prop_assert!(stats.dense);
        let min = records.iter().map(|r| r.2).min().unwrap();
        proptest::prop_assert_eq!(stats.min_timestamp, Timestamp(1_000_000 + min));
        for (got, (key, value, ts)) in view.records().unwrap().iter().zip(&records) {
            proptest::prop_assert_eq!(got.key.as_ref().map(|k| k.as_slice().to_vec()), key.clone());
            proptest::prop_assert_eq!(got.value.as_ref().map(|v| v.as_slice().to_vec()), value.clone());
            proptest::prop_assert_eq!(view.header.first_timestamp.0 + got.timestamp_delta.to_native(), 1_000_000 + ts);
        }
    }
}

#[test]
fn the_control_flag_is_read_and_every_other_unknown_flag_still_refused() {
    let reseal = |bytes: &mut Vec<u8>| {
        let crc = crc32c::crc32c(&bytes[..36]);
        bytes[36..40].copy_from_slice(&crc.to_le_bytes());
    };
    for flags in [BROKER_FLAG_CONTROL, BROKER_FLAG_CONTROL | BrokerFlags::LOG_APPEND_TIME] {
        let mut bytes = golden_batch();
        bytes[23] = flags;
        reseal(&mut bytes);
        let header = validate_batch(&bytes).unwrap().header;
        assert!(header.is_control());
        assert_eq!(header.log_append_time(), flags & BrokerFlags::LOG_APPEND_TIME != 0);
    }
    for bit in 2..8 {
        let mut bytes = golden_batch();
        bytes[23] = BROKER_FLAG_CONTROL | 1 << bit;
        reseal(&mut bytes);
        let e = validate_batch(&bytes).unwrap_err();
        assert_eq!(e, BatchError::UnsupportedFlags { flags: BROKER_FLAG_CONTROL | 1 << bit });
        assert!(e.is_unknown_format(), "an intact batch of a newer broker, never cut by recovery");
    }
    assert!(!validate_batch(&golden_batch()).unwrap().header.is_control());
}

#[test]
fn only_stamp_control_makes_a_control_batch() {
    let s = Stamp {
        base_offset: Offset(9),
        leader_epoch: LeaderEpoch(2),
        append_time: Timestamp(7),
        log_append_time: false,
    };
    // A producer that sets the flag itself: the log's stamp clears it.
    let mut bytes = golden_batch();
    bytes[23] = BROKER_FLAG_CONTROL;
    stamp(&mut bytes, &s);
    assert!(!validate_batch(&bytes).unwrap().header.is_control());
    stamp_control(&mut bytes, &s);
    let header = validate_batch(&bytes).unwrap().header;
    assert!(header.is_control() && !header.log_append_time());
    assert_eq!(
        (header.base_offset, header.leader_epoch, header.append_time),
        (Offset(9), LeaderEpoch(2), Timestamp(7))
    );
    assert_eq!(bytes[32..36], golden_batch()[32..36], "the body CRC is untouched");
    assert_eq!(bytes[40..], golden_batch()[40..], "the body is untouched");
}

#[test]
fn a_rewritten_batch_keeps_its_identity_and_the_offsets_it_covered() {
    let mut b = BatchBuilder::new();
    for i in 0..4u8 {
        b.push(RecordInput::new(Some(&[i]), Some(&[i; 3]), Timestamp(100 + i64::from(i))));
    }
    let mut bytes = b.build().unwrap();
    let stamp = Stamp {
        base_offset: Offset(40),
        leader_epoch: LeaderEpoch(3),
        append_time: Timestamp(999),
        log_append_time: false,
    };
    crate::batch::stamp(&mut bytes, &stamp);
    let template = validate_batch(&bytes).unwrap().header;
    // Keep the records at deltas 0 and 2: the batch still ends at 44.
    let mut encoder = BatchEncoder::new(0);
    for d in [0u32, 2] {
        let r = RecordRef {
            key: Some(&[d as u8]),
            value: Some(&[1]),
            headers: &[],
            timestamp: Timestamp(100 + i64::from(d)),
        };
        encoder.push_at(d, &r).unwrap();
    }
    let rewritten = encoder.finish_as(&template).unwrap();
    let view = validate_batch(&rewritten).unwrap();
    let stats = validate_records(&view).unwrap();
    assert!(!stats.dense);
    assert_eq!(view.header.base_offset, Offset(40));
    assert_eq!(view.header.leader_epoch, LeaderEpoch(3));
    assert_eq!(view.header.append_time, Timestamp(999));
    assert_eq!(view.header.record_count, 2);
    assert_eq!(view.header.next_offset(), Offset(44), "the last offset delta is kept");
    assert_eq!(view.header.max_timestamp, Timestamp(102));
    // Emptied: no records, same offsets and timestamps.
    let empty = BatchEncoder::new(0).finish_as(&template).unwrap();
    let view = validate_batch(&empty).unwrap();
    validate_records(&view).unwrap();
    assert_eq!(view.header.record_count, 0);
    assert_eq!(view.records().unwrap().len(), 0);
    assert_eq!(view.header.next_offset(), Offset(44));
    assert_eq!(view.header.max_timestamp, template.max_timestamp);
    // A record past the template's last offset delta is refused.
    let mut encoder = BatchEncoder::new(0);
    let r = RecordRef { key: None, value: Some(&[1]), headers: &[], timestamp: Timestamp(1) };
    encoder.push_at(9, &r).unwrap();
    assert!(encoder.finish_as(&template).is_err());
}
