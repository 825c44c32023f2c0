//! Each way a frame can be wrong, and the typed error it gets.

use super::golden::{begin_epoch_frame, fetch_frame, fetch_response_frame, handshake_frame, vote_frame};
use super::*;
use crate::batch::{BATCH_HEADER_BYTES, BatchBuilder, BatchError, RecordInput, patch_base_offset, validate_batch};
use crate::codec::{DecodeError, Writer};

/// A whole frame of `kind` around `body`.
fn raw_frame(kind: Kind, response: bool, body: &[u8]) -> Bytes {
    let header = FrameHeader {
        kind,
        response,
        error: ErrorCode::NONE,
        request_id: u32::from(!kind.is_one_way()),
        source_node: NodeId(1),
        source_shard: 0,
        dest_shard: 0,
    };
    let mut out = header.encode(body.len()).to_vec();
    out.extend_from_slice(body);
    Bytes::from(out)
}

fn body_error(kind: Kind, response: bool, body: &[u8]) -> BodyError {
    match Frame::decode(&raw_frame(kind, response, body), FRAME_BYTES_MAX) {
        Err(FrameDecodeError::Body { error, .. }) => error,
        other => panic!("expected a body error, got {other:?}"),
    }
}

/// The body of `frame` as bytes.
fn body_of(frame: &Frame) -> Vec<u8> {
    concat(&frame.encode())[FRAME_HEADER_BYTES..].to_vec()
}

#[test]
fn every_golden_frame_round_trips() {
    for frame in [handshake_frame(), fetch_frame(), fetch_response_frame(), vote_frame(), begin_epoch_frame()] {
        assert_eq!(round_trip(&frame), frame);
    }
}

#[test]
fn an_entry_count_beyond_the_body_is_refused_before_allocating() {
    let mut body = 100u32.to_le_bytes().to_vec();
    body.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        body_error(Kind::Fetch, false, &body),
        BodyError::Decode(DecodeError::CountTooLarge { count: u32::MAX, .. })
    ));
    // A set count inside a snapshot is checked the same way.
    let mut w = Writer::new();
    w.u16(0);
    w.u32(1 << 30);
    let snapshot = w.into_bytes();
    let mut answer = fetch_response_frame();
    let Body::FetchResponse(f) = &mut answer.body else { unreachable!() };
    f.entries.truncate(1);
    f.entries[0].1.batches.clear();
    let mut body = body_of(&answer);
    let at = body.len() - 8;
    body.truncate(at);
    body.extend_from_slice(&(snapshot.len() as u32).to_le_bytes());
    body.extend_from_slice(&snapshot);
    body.extend_from_slice(&0u32.to_le_bytes());
    assert!(matches!(
        body_error(Kind::Fetch, true, &body),
        BodyError::Snapshot { entry: 0, error: ControlError::Body(DecodeError::CountTooLarge { .. }) }
    ));
}

#[test]
fn more_than_100000_entries_are_refused() {
    let entries = |n: u32| {
        let mut body = n.to_le_bytes().to_vec();
        for i in 0..n {
            body.extend_from_slice(&u64::from(i).to_le_bytes());
            body.extend_from_slice(&0u32.to_le_bytes());
            body.extend_from_slice(&1u32.to_le_bytes());
        }
        raw_frame(Kind::BeginEpoch, false, &body)
    };
    let Body::BeginEpoch(f) = Frame::decode(&entries(100_000), FRAME_BYTES_MAX).unwrap().body else { panic!() };
    assert_eq!(f.entries.len(), FRAME_ENTRIES_MAX);
    let Err(e) = Frame::decode(&entries(100_001), FRAME_BYTES_MAX) else { panic!("accepted") };
    assert!(matches!(e, FrameDecodeError::Body { error: BodyError::TooManyEntries { count: 100_001, .. }, .. }));
    assert_eq!(e.code(), Some(ErrorCode::MALFORMED_REQUEST));
    assert!(!e.closes_connection());
}

#[test]
#[should_panic(expected = "entries in one frame")]
fn encoding_more_than_100000_entries_is_a_bug() {
    let body = EpochFrame { entries: vec![(tp(1, 0), LeaderEpoch(1)); FRAME_ENTRIES_MAX + 1] };
    let _ = Frame::new(FrameHeader::request(Kind::BeginEpoch, 0, NodeId(1), 0, 0), Body::BeginEpoch(body)).encode();
}

#[test]
fn a_body_must_be_consumed_exactly() {
    let mut body = body_of(&vote_frame());
    body.push(0);
    assert_eq!(body_error(Kind::Vote, false, &body), BodyError::Decode(DecodeError::Trailing { bytes: 1 }));
}

#[test]
fn optional_numbers_are_minus_one_or_zero_and_nothing_else() {
    // Fetch entry: last_fetched_epoch at entry byte 32 (body byte 8 + 32).
    let body = body_of(&fetch_frame());
    let at = 8 + 32;
    for (value, ok) in [(-1i64, true), (0, true), (i64::from(u32::MAX), true), (-2, false), (1 << 32, false)] {
        let mut b = body.clone();
        b[at..at + 8].copy_from_slice(&value.to_le_bytes());
        let result = Frame::decode(&raw_frame(Kind::Fetch, false, &b), FRAME_BYTES_MAX);
        assert_eq!(result.is_ok(), ok, "last_fetched_epoch {value}");
        if let Ok(Frame { body: Body::Fetch(f), .. }) = result {
            let expected = if value == -1 { None } else { Some(LeaderEpoch(value as u32)) };
            assert_eq!(f.entries[0].1.last_fetched_epoch, expected);
        }
    }
    // A leader of 0 is none.
    let Body::FetchResponse(f) = round_trip(&fetch_response_frame()).body else { panic!() };
    assert_eq!(f.entries[0].1.leader, Some(NodeId(1)));
    let mut answer = fetch_response_frame();
    let Body::FetchResponse(f) = &mut answer.body else { unreachable!() };
    f.entries[0].1.leader = None;
    let bytes = body_of(&answer);
    assert_eq!(u32_at(&bytes, 4 + 18), 0, "leader_id 0");
    assert_eq!(round_trip(&answer), answer);
}

#[test]
fn a_diverging_epoch_without_an_end_is_refused() {
    let body = body_of(&fetch_response_frame());
    // Second entry: after the count, the first entry (71 + the batch) and 47 bytes.
    let at = 4 + 71 + BATCH_V2.len() + 55;
    let mut b = body.clone();
    b[at..at + 8].copy_from_slice(&(-1i64).to_le_bytes());
    assert!(matches!(body_error(Kind::Fetch, true, &b), BodyError::Decode(DecodeError::Invalid { .. })));
}

#[test]
fn flags_and_booleans_other_than_the_known_values_are_refused() {
    let body = body_of(&fetch_response_frame());
    let mut b = body.clone();
    b[4 + 30] = 0x02;
    assert!(matches!(
        body_error(Kind::Fetch, true, &b),
        BodyError::Decode(DecodeError::Invalid { what: "fetch answer flags", value: 2 })
    ));
    let mut b = body_of(&vote_frame());
    b[4 + 40] = 2;
    assert!(matches!(
        body_error(Kind::Vote, false, &b),
        BodyError::Decode(DecodeError::Invalid { what: "transfer", value: 2 })
    ));
}

/// A fetch answer body whose one entry carries `batches` as they are.
fn answer_with_batches(batches: &[u8]) -> Vec<u8> {
    let mut answer = fetch_response_frame();
    let Body::FetchResponse(f) = &mut answer.body else { unreachable!() };
    f.entries.truncate(1);
    f.entries[0].1.batches.clear();
    let mut body = body_of(&answer);
    body.truncate(body.len() - 4);
    body.extend_from_slice(&(batches.len() as u32).to_le_bytes());
    body.extend_from_slice(batches);
    body
}

#[test]
fn fetched_batches_are_checked_whole() {
    let mut two = BATCH_V2.to_vec();
    two.extend_from_slice(&leader_change_batch());
    let body = answer_with_batches(&two);
    let Ok(Frame { body: Body::FetchResponse(f), .. }) =
        Frame::decode(&raw_frame(Kind::Fetch, true, &body), FRAME_BYTES_MAX)
    else {
        panic!("two good batches")
    };
    let batches = &f.entries[0].1.batches;
    assert_eq!((batches[0].base, batches[0].end, batches[0].epoch), (Offset(0), Offset(3), LeaderEpoch(0)));
    assert_eq!(batches[0].control, None);
    assert_eq!((batches[1].base, batches[1].end, batches[1].epoch), (Offset(1200), Offset(1201), LeaderEpoch(5)));
    assert_eq!(batches[1].control, Some(leader_change_control()));
    assert_eq!(&batches[1].bytes[..], &leader_change_batch()[..]);

    // Cut short, a body CRC that fails, a version 1 batch.
    let cut = answer_with_batches(&two[..two.len() - 1]);
    assert!(matches!(
        body_error(Kind::Fetch, true, &cut),
        BodyError::Batches { entry: 0, error: BatchesError::Batch { index: 1, error: BatchError::Truncated { .. } } }
    ));
    let mut damaged = two.clone();
    damaged[BATCH_HEADER_BYTES + 3] ^= 1;
    assert!(matches!(
        body_error(Kind::Fetch, true, &answer_with_batches(&damaged)),
        BodyError::Batches { error: BatchesError::Batch { index: 0, error: BatchError::CrcMismatch { .. } }, .. }
    ));
    let mut b = BatchBuilder::new();
    b.push(RecordInput::new(None, Some(b"old"), Timestamp(1)));
    let v1 = b.build_v1().unwrap();
    assert!(matches!(
        body_error(Kind::Fetch, true, &answer_with_batches(&v1)),
        BodyError::Batches { error: BatchesError::Version { index: 0, version: 1 }, .. }
    ));
}

#[test]
fn a_control_batch_that_is_not_one_typed_record_is_refused() {
    // Two records under the control flag.
    let mut b = BatchBuilder::new();
    b.push(RecordInput::new(Some(&[1, 0]), Some(b"x"), Timestamp(1)));
    b.push(RecordInput::new(Some(&[1, 0]), Some(b"y"), Timestamp(1)));
    let mut two = b.build().unwrap();
    let stamp = crate::batch::Stamp {
        base_offset: Offset(0),
        leader_epoch: LeaderEpoch(1),
        append_time: Timestamp(1),
        log_append_time: false,
    };
    crate::batch::stamp_control(&mut two, &stamp);
    assert_eq!(control::read_batch(&validate_batch(&two).unwrap()), Err(ControlError::RecordCount { records: 2 }));
    assert!(matches!(
        body_error(Kind::Fetch, true, &answer_with_batches(&two)),
        BodyError::Batches {
            error: BatchesError::Control { index: 0, error: ControlError::RecordCount { records: 2 } },
            ..
        }
    ));
    // An unknown type, a bad key, a newer body version.
    let one = |key: &[u8], value: &[u8]| {
        let mut b = BatchBuilder::new();
        b.push(RecordInput::new(Some(key), Some(value), Timestamp(1)));
        let mut bytes = b.build().unwrap();
        crate::batch::stamp_control(&mut bytes, &stamp);
        control::read_batch(&validate_batch(&bytes).unwrap())
    };
    assert_eq!(one(&[9, 0], &[0, 0]), Err(ControlError::UnknownType { found: 9 }));
    assert_eq!(one(&[2], &[0, 0]), Err(ControlError::BadKey));
    assert_eq!(one(&[2, 0], &[1, 0]), Err(ControlError::UnsupportedVersion { found: 1 }));
    // Not a control batch at all.
    assert_eq!(control::read_batch(&validate_batch(BATCH_V2).unwrap()), Err(ControlError::NotControl));
}

#[test]
fn control_bodies_round_trip_and_are_consumed_exactly() {
    for c in [leader_change_control(), voters_control()] {
        let body = control::encode_body(&c);
        assert_eq!(control::decode_body(control::control_type(&c), &body), Ok(c.clone()));
        let mut longer = body.clone();
        longer.push(0);
        assert!(matches!(
            control::decode_body(control::control_type(&c), &longer),
            Err(ControlError::Body(DecodeError::Trailing { bytes: 1 }))
        ));
    }
    let mut joint = control::encode_body(&voters_control());
    joint[42] = 2;
    assert!(matches!(
        control::decode_body(control::VOTERS, &joint),
        Err(ControlError::Body(DecodeError::Invalid { .. }))
    ));
}

#[test]
fn batches_travel_without_a_copy_both_ways() {
    let big = {
        let mut b = BatchBuilder::new();
        b.push(RecordInput::new(None, Some(&[7u8; 4000]), Timestamp(1)));
        let mut bytes = b.build().unwrap();
        patch_base_offset(&mut bytes, Offset(10));
        Bytes::from(bytes)
    };
    let batch = read_batches(&big).unwrap().pop().unwrap();
    let mut answer = fetch_response_frame();
    let Body::FetchResponse(f) = &mut answer.body else { unreachable!() };
    f.entries[0].1.batches = vec![batch];
    let pieces = answer.encode();
    assert!(pieces.iter().any(|p| p.as_ptr() == big.as_ptr()), "the stored batch is a piece of the frame");
    let bytes = concat(&pieces);
    let range = bytes.as_ptr_range();
    let Body::FetchResponse(f) = Frame::decode(&bytes.clone(), FRAME_BYTES_MAX).unwrap().body else { panic!() };
    assert!(range.contains(&f.entries[0].1.batches[0].bytes.as_ptr()), "decoded batches are slices of the frame");
}

#[test]
fn a_request_never_carries_an_error() {
    let mut bytes = concat(&fetch_frame().encode()).to_vec();
    bytes[10] = ErrorCode::NOT_LEADER.0 as u8;
    let e = Frame::decode(&Bytes::from(bytes), FRAME_BYTES_MAX).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::MALFORMED_REQUEST));
    assert!(matches!(e, FrameDecodeError::Header(FrameError::ErrorInRequest { request_id: 7, .. })));
}

#[test]
#[should_panic(expected = "the header names the body")]
fn a_header_of_another_kind_is_a_bug() {
    let _ = Frame::new(
        FrameHeader::request(Kind::Vote, 1, NodeId(1), 0, 0),
        Body::Fetch(FetchFrame { max_wait_ms: 0, entries: vec![] }),
    );
}

#[test]
fn a_frame_above_the_limit_loses_framing() {
    let bytes = concat(&fetch_response_frame().encode());
    let e = Frame::decode(&bytes.clone(), 100).unwrap_err();
    assert!(e.closes_connection());
    assert_eq!(e.code(), None);
    assert!(matches!(frame::split(&bytes, 100), Err(FramingLost::TooLarge { .. })));
}
