//! Golden frames and control batches: the bytes are stable, and each field
//! sits at the byte docs/replication.md gives it (§4 frames, §3 control
//! batches). Regenerate only with a version bump of the format:
//! `CAIRN_BLESS=1 cargo test -p protocol golden` (that run still compares
//! with the bytes compiled in; the next one passes).

use super::*;
use crate::batch::validate_batch;

const HANDSHAKE: &[u8] = include_bytes!("../golden/handshake.bin");
const FETCH: &[u8] = include_bytes!("../golden/fetch.bin");
const FETCH_RESPONSE: &[u8] = include_bytes!("../golden/fetch_response.bin");
const VOTE: &[u8] = include_bytes!("../golden/vote.bin");
const VOTE_RESPONSE: &[u8] = include_bytes!("../golden/vote_response.bin");
const PRE_VOTE: &[u8] = include_bytes!("../golden/pre_vote.bin");
const BEGIN_EPOCH: &[u8] = include_bytes!("../golden/begin_epoch.bin");
const START_ELECTION: &[u8] = include_bytes!("../golden/start_election.bin");
const CONTROLLER_CALL: &[u8] = include_bytes!("../golden/controller_call.bin");
const CONTROL_LEADER_CHANGE: &[u8] = include_bytes!("../../batch/golden/control_leader_change.bin");
const CONTROL_VOTERS: &[u8] = include_bytes!("../../batch/golden/control_voters.bin");

/// Writes `bytes` over the golden file under `CAIRN_BLESS`, then compares.
fn check_golden(path: &str, bytes: &[u8], golden: &[u8]) {
    if std::env::var_os("CAIRN_BLESS").is_some() {
        std::fs::write(format!("{}/src/{path}", env!("CARGO_MANIFEST_DIR")), bytes).unwrap();
    }
    assert_eq!(bytes, golden, "{path} changed: the replication format changed; bump its version and the docs");
}

/// Checks a golden frame's bytes, and that it decodes to `frame`.
fn check_golden_frame(name: &str, frame: &Frame, golden: &[u8]) {
    let bytes = concat(&frame.encode());
    check_golden(&format!("replica/golden/{name}"), &bytes, golden);
    assert_eq!(&Frame::decode(&Bytes::copy_from_slice(golden), FRAME_BYTES_MAX).unwrap(), frame);
}

/// The header fields at their offsets (§4, "Frame header").
fn assert_header(b: &[u8], kind: u8, error: u16, request_id: u32, source: (u32, u16), dest_shard: u16) {
    assert_eq!(u32_at(b, 0) as usize, b.len() - 4, "length: the bytes after itself");
    assert_eq!(&b[4..8], b"CRNR", "magic");
    assert_eq!(b[8], 1, "version");
    assert_eq!(b[9], kind, "kind");
    assert_eq!(u16_at(b, 10), error, "error");
    assert_eq!(u32_at(b, 12), request_id, "request id");
    assert_eq!(u32_at(b, 16), source.0, "source node");
    assert_eq!(u16_at(b, 20), source.1, "source shard");
    assert_eq!(u16_at(b, 22), dest_shard, "dest shard");
}

fn fetch_header() -> FrameHeader {
    FrameHeader::request(Kind::Fetch, 7, NodeId(2), 1, 0)
}

pub(super) fn handshake_frame() -> Frame {
    let mut cluster_id = [0u8; 16];
    for (i, b) in cluster_id.iter_mut().enumerate() {
        *b = 0xc0 + i as u8;
    }
    let handshake = Handshake {
        cluster_id,
        node_id: NodeId(2),
        broker_incarnation: 0x1122_3344_5566_7788,
        dialed_node: Some(NodeId(1)),
        shards: 2,
        replication_shard_ports: vec![8081, 8082],
        client_listen: "127.0.0.1:7072".into(),
        client_shard_ports: vec![7073, 7074],
        software: "cairn 0.1.0".into(),
    };
    Frame::new(FrameHeader::request(Kind::Handshake, 1, NodeId(2), 0, 0), Body::Handshake(handshake))
}

pub(super) fn fetch_frame() -> Frame {
    let data = FetchRequest {
        incarnation: Incarnation(0xaaaa),
        epoch: LeaderEpoch(4),
        fetch_offset: Offset(1000),
        last_fetched_epoch: Some(LeaderEpoch(3)),
        durable_offset: Offset(990),
        high_watermark: Offset(950),
        max_bytes: 1 << 20,
    };
    let report = FetchRequest {
        incarnation: Incarnation(0xbbbb),
        epoch: LeaderEpoch(2),
        fetch_offset: Offset(0),
        last_fetched_epoch: None,
        durable_offset: Offset(0),
        high_watermark: Offset(0),
        max_bytes: 0,
    };
    let body = FetchFrame { max_wait_ms: 100, entries: vec![(tp(5, 3), data), (TopicPartition::default(), report)] };
    Frame::new(fetch_header(), Body::Fetch(body))
}

fn snapshot_config() -> Config {
    Config { voters: vec![key(1, 11), key(2, 22), key(3, 33)], joint: None, learners: vec![key(4, 44)] }
}

pub(super) fn fetch_response_frame() -> Frame {
    let answer = |epoch: u32| FetchAnswer {
        error: ErrorCode::NONE,
        epoch: LeaderEpoch(epoch),
        leader: Some(NodeId(1)),
        fetch_offset: Offset(0),
        report: false,
        high_watermark: Offset(0),
        log_start: Offset(0),
        diverging: None,
        snapshot: None,
        batches: vec![],
    };
    let valid = FetchAnswer { high_watermark: Offset(3), batches: vec![replica_batch(BATCH_V2)], ..answer(4) };
    let diverging = FetchAnswer {
        fetch_offset: Offset(500),
        report: true,
        high_watermark: Offset(400),
        diverging: Some((LeaderEpoch(2), Offset(450))),
        ..answer(4)
    };
    let start_over = FetchAnswer {
        error: ErrorCode::OFFSET_OUT_OF_RANGE,
        fetch_offset: Offset(10),
        high_watermark: Offset(20_000),
        log_start: Offset(15_000),
        snapshot: Some(snapshot_config()),
        ..answer(6)
    };
    let body = FetchResponseFrame { entries: vec![(tp(5, 3), valid), (tp(5, 4), diverging), (tp(0, 0), start_over)] };
    Frame::new(FrameHeader::response_to(&fetch_header(), ErrorCode::NONE, NodeId(1)), Body::FetchResponse(body))
}

fn vote_header(kind: Kind, request_id: u32) -> FrameHeader {
    FrameHeader::request(kind, request_id, NodeId(3), 0, 1)
}

fn vote_entries() -> Vec<(TopicPartition, VoteRequest)> {
    let campaign = VoteRequest {
        epoch: LeaderEpoch(5),
        incarnation: Incarnation(0x3333),
        last_epoch: Some(LeaderEpoch(4)),
        log_end: Offset(1200),
        transfer: false,
    };
    let transfer =
        VoteRequest { epoch: LeaderEpoch(7), last_epoch: None, log_end: Offset(0), transfer: true, ..campaign };
    vec![(tp(5, 3), campaign), (tp(5, 4), transfer)]
}

pub(super) fn vote_frame() -> Frame {
    Frame::new(vote_header(Kind::Vote, 11), Body::Vote(VoteFrame { entries: vote_entries() }))
}

pub(super) fn vote_response_frame() -> Frame {
    let granted = VoteAnswer {
        error: ErrorCode::NONE,
        epoch: LeaderEpoch(5),
        asked: LeaderEpoch(5),
        incarnation: Incarnation(0x1111),
        granted: true,
    };
    let fenced = VoteAnswer {
        error: ErrorCode::FENCED_EPOCH,
        epoch: LeaderEpoch(8),
        asked: LeaderEpoch(7),
        granted: false,
        ..granted
    };
    let header = FrameHeader::response_to(&vote_header(Kind::Vote, 11), ErrorCode::NONE, NodeId(1));
    Frame::new(header, Body::VoteResponse(VoteResponseFrame { entries: vec![(tp(5, 3), granted), (tp(5, 4), fenced)] }))
}

pub(super) fn pre_vote_frame() -> Frame {
    let entries = vote_entries().into_iter().take(1).collect();
    Frame::new(vote_header(Kind::PreVote, 12), Body::PreVote(VoteFrame { entries }))
}

pub(super) fn begin_epoch_frame() -> Frame {
    let body = EpochFrame { entries: vec![(tp(5, 3), LeaderEpoch(5)), (tp(0, 0), LeaderEpoch(2))] };
    Frame::new(FrameHeader::request(Kind::BeginEpoch, 0, NodeId(1), 0, 1), Body::BeginEpoch(body))
}

pub(super) fn start_election_frame() -> Frame {
    let body = EpochFrame { entries: vec![(tp(5, 3), LeaderEpoch(5))] };
    Frame::new(FrameHeader::request(Kind::StartElection, 0, NodeId(1), 0, 2), Body::StartElection(body))
}

fn controller_call_header() -> FrameHeader {
    FrameHeader::request(Kind::ControllerCall, 21, NodeId(4), 0, 0)
}

pub(super) fn controller_call_frames() -> (Frame, Frame) {
    let call = ControllerCall { api: 2, api_version: 0, body: Bytes::from_static(b"heartbeat") };
    let answer = ControllerCallResponse { controller_id: Some(NodeId(1)), body: Bytes::new() };
    let header = FrameHeader::response_to(&controller_call_header(), ErrorCode::NOT_CONTROLLER, NodeId(2));
    (
        Frame::new(controller_call_header(), Body::ControllerCall(call)),
        Frame::new(header, Body::ControllerCallResponse(answer)),
    )
}

#[test]
fn golden_handshake_bytes_are_stable() {
    check_golden_frame("handshake.bin", &handshake_frame(), HANDSHAKE);
}

#[test]
fn golden_handshake_fields_sit_where_the_doc_says() {
    let b = HANDSHAKE;
    assert_header(b, 0x01, 0, 1, (2, 0), 0);
    assert_eq!(
        b[24..40],
        [0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xcb, 0xcc, 0xcd, 0xce, 0xcf]
    );
    assert_eq!(u32_at(b, 40), 2, "node_id");
    assert_eq!(u64_at(b, 44), 0x1122_3344_5566_7788, "broker_incarnation");
    assert_eq!(u32_at(b, 52), 1, "dialed_node");
    assert_eq!(u16_at(b, 56), 2, "shards");
    assert_eq!((u32_at(b, 58), u16_at(b, 62), u16_at(b, 64)), (2, 8081, 8082), "[replication_shard_port]");
    assert_eq!(u16_at(b, 66), 14, "client_listen length");
    assert_eq!(&b[68..82], b"127.0.0.1:7072");
    assert_eq!((u32_at(b, 82), u16_at(b, 86), u16_at(b, 88)), (2, 7073, 7074), "[client_shard_port]");
    assert_eq!(u16_at(b, 90), 11, "software length");
    assert_eq!(&b[92..], b"cairn 0.1.0");
}

#[test]
fn golden_fetch_bytes_are_stable() {
    check_golden_frame("fetch.bin", &fetch_frame(), FETCH);
}

#[test]
fn golden_fetch_fields_sit_where_the_doc_says() {
    let b = FETCH;
    assert_header(b, 0x02, 0, 7, (2, 1), 0);
    assert_eq!(u32_at(b, 24), 100, "max_wait_ms");
    assert_eq!(u32_at(b, 28), 2, "entries");
    assert_eq!(FETCH_ENTRY_BYTES, 60, "60 bytes an entry");
    assert_eq!(b.len(), 32 + 2 * 60);
    // The data entry.
    let e = 32;
    assert_eq!((u64_at(b, e), u32_at(b, e + 8)), (5, 3), "tp");
    assert_eq!(u64_at(b, e + 12), 0xaaaa, "incarnation");
    assert_eq!(u32_at(b, e + 20), 4, "epoch");
    assert_eq!(u64_at(b, e + 24), 1000, "fetch_offset");
    assert_eq!(i64_at(b, e + 32), 3, "last_fetched_epoch");
    assert_eq!(u64_at(b, e + 40), 990, "durable_offset");
    assert_eq!(u64_at(b, e + 48), 950, "high_watermark");
    assert_eq!(u32_at(b, e + 56), 1 << 20, "max_bytes");
    // The report, of the metadata partition, from an empty log.
    let e = 92;
    assert_eq!((u64_at(b, e), u32_at(b, e + 8)), (0, 0), "tp");
    assert_eq!(i64_at(b, e + 32), -1, "last_fetched_epoch: an empty log");
    assert_eq!(u32_at(b, e + 56), 0, "max_bytes 0: a report");
}

#[test]
fn golden_fetch_response_bytes_are_stable() {
    check_golden_frame("fetch_response.bin", &fetch_response_frame(), FETCH_RESPONSE);
}

#[test]
fn golden_fetch_response_fields_sit_where_the_doc_says() {
    let b = FETCH_RESPONSE;
    assert_header(b, 0x82, 0, 7, (1, 0), 1);
    assert_eq!(u32_at(b, 24), 3, "entries");
    assert_eq!(FETCH_ANSWER_ENTRY_BYTES_MIN, 71);
    // An entry: tp 0, error 12, epoch 14, leader_id 18, fetch_offset 22,
    // flags 30, high_watermark 31, log_start_offset 39, diverging_epoch 47,
    // diverging_end_offset 55, snapshot 63, batches after the snapshot.
    let e = 28;
    assert_eq!((u64_at(b, e), u32_at(b, e + 8)), (5, 3), "tp");
    assert_eq!(u16_at(b, e + 12), 0, "error");
    assert_eq!(u32_at(b, e + 14), 4, "epoch");
    assert_eq!(u32_at(b, e + 18), 1, "leader_id");
    assert_eq!(u64_at(b, e + 22), 0, "fetch_offset");
    assert_eq!(b[e + 30], 0, "flags");
    assert_eq!(u64_at(b, e + 31), 3, "high_watermark");
    assert_eq!(u64_at(b, e + 39), 0, "log_start_offset");
    assert_eq!((i64_at(b, e + 47), i64_at(b, e + 55)), (-1, -1), "not diverging");
    assert_eq!(u32_at(b, e + 63), 0, "no snapshot");
    assert_eq!(u32_at(b, e + 67) as usize, BATCH_V2.len(), "batches length");
    assert_eq!(&b[e + 71..e + 71 + BATCH_V2.len()], BATCH_V2, "the stored batch, as stored");
    let e = e + 71 + BATCH_V2.len();
    assert_eq!((u64_at(b, e), u32_at(b, e + 8)), (5, 4), "tp");
    assert_eq!(u64_at(b, e + 22), 500, "fetch_offset, echoed");
    assert_eq!(b[e + 30], 1, "flags: answers a report");
    assert_eq!(u64_at(b, e + 31), 400, "high_watermark");
    assert_eq!((i64_at(b, e + 47), i64_at(b, e + 55)), (2, 450), "diverging epoch and end");
    assert_eq!((u32_at(b, e + 63), u32_at(b, e + 67)), (0, 0), "no snapshot, no batches");
    let e = e + 71;
    assert_eq!((u64_at(b, e), u32_at(b, e + 8)), (0, 0), "tp");
    assert_eq!(u16_at(b, e + 12), ErrorCode::OFFSET_OUT_OF_RANGE.0, "error: start over");
    assert_eq!(u32_at(b, e + 14), 6, "epoch");
    assert_eq!(u64_at(b, e + 31), 20_000, "high_watermark");
    assert_eq!(u64_at(b, e + 39), 15_000, "log_start_offset");
    // The snapshot: a Voters body (version, voters, joint, learners).
    let s = e + 67;
    assert_eq!(u32_at(b, e + 63), 2 + 4 + 3 * 12 + 1 + 4 + 12, "snapshot length");
    assert_eq!(u16_at(b, s), 0, "body version");
    assert_eq!(u32_at(b, s + 2), 3, "voters");
    assert_eq!((u32_at(b, s + 6), u64_at(b, s + 10)), (1, 11), "first voter");
    assert_eq!((u32_at(b, s + 30), u64_at(b, s + 34)), (3, 33), "third voter");
    assert_eq!(b[s + 42], 0, "not joint");
    assert_eq!((u32_at(b, s + 43), u32_at(b, s + 47), u64_at(b, s + 51)), (1, 4, 44), "learners");
    assert_eq!(u32_at(b, s + 59), 0, "no batches");
    assert_eq!(b.len(), s + 63);
}

#[test]
fn golden_vote_bytes_are_stable() {
    check_golden_frame("vote.bin", &vote_frame(), VOTE);
}

#[test]
fn golden_vote_fields_sit_where_the_doc_says() {
    let b = VOTE;
    assert_header(b, 0x03, 0, 11, (3, 0), 1);
    assert_eq!(u32_at(b, 24), 2, "entries");
    let e = 28;
    assert_eq!((u64_at(b, e), u32_at(b, e + 8)), (5, 3), "tp");
    assert_eq!(u32_at(b, e + 12), 5, "epoch asked");
    assert_eq!(u64_at(b, e + 16), 0x3333, "incarnation");
    assert_eq!(i64_at(b, e + 24), 4, "last_epoch");
    assert_eq!(u64_at(b, e + 32), 1200, "log_end_offset");
    assert_eq!(b[e + 40], 0, "transfer");
    let e = e + VOTE_ENTRY_BYTES;
    assert_eq!(VOTE_ENTRY_BYTES, 41);
    assert_eq!(i64_at(b, e + 24), -1, "last_epoch: an empty log");
    assert_eq!(b[e + 40], 1, "transfer");
    assert_eq!(b.len(), e + 41);
}

#[test]
fn golden_vote_response_bytes_are_stable() {
    check_golden_frame("vote_response.bin", &vote_response_frame(), VOTE_RESPONSE);
}

#[test]
fn golden_vote_response_fields_sit_where_the_doc_says() {
    let b = VOTE_RESPONSE;
    assert_header(b, 0x83, 0, 11, (1, 1), 0);
    assert_eq!(u32_at(b, 24), 2, "entries");
    let e = 28;
    assert_eq!((u64_at(b, e), u32_at(b, e + 8)), (5, 3), "tp");
    assert_eq!(u16_at(b, e + 12), 0, "error");
    assert_eq!(u32_at(b, e + 14), 5, "epoch: the voter's");
    assert_eq!(u32_at(b, e + 18), 5, "asked");
    assert_eq!(u64_at(b, e + 22), 0x1111, "incarnation: the voter's");
    assert_eq!(b[e + 30], 1, "granted");
    let e = e + VOTE_ANSWER_ENTRY_BYTES;
    assert_eq!(VOTE_ANSWER_ENTRY_BYTES, 31);
    assert_eq!(u16_at(b, e + 12), ErrorCode::FENCED_EPOCH.0, "error");
    assert_eq!((u32_at(b, e + 14), u32_at(b, e + 18)), (8, 7), "the voter's epoch is above the one asked");
    assert_eq!(b[e + 30], 0, "not granted");
    assert_eq!(b.len(), e + 31);
}

#[test]
fn golden_pre_vote_bytes_are_stable() {
    check_golden_frame("pre_vote.bin", &pre_vote_frame(), PRE_VOTE);
}

#[test]
fn golden_pre_vote_fields_sit_where_the_doc_says() {
    let b = PRE_VOTE;
    assert_header(b, 0x04, 0, 12, (3, 0), 1);
    assert_eq!(u32_at(b, 24), 1, "entries");
    assert_eq!(b[28..], VOTE[28..28 + VOTE_ENTRY_BYTES], "a vote's entry");
}

#[test]
fn golden_begin_epoch_bytes_are_stable() {
    check_golden_frame("begin_epoch.bin", &begin_epoch_frame(), BEGIN_EPOCH);
}

#[test]
fn golden_begin_epoch_fields_sit_where_the_doc_says() {
    let b = BEGIN_EPOCH;
    assert_header(b, 0x05, 0, 0, (1, 0), 1);
    assert_eq!(u32_at(b, 24), 2, "entries");
    assert_eq!((u64_at(b, 28), u32_at(b, 36), u32_at(b, 40)), (5, 3, 5), "tp, epoch");
    assert_eq!((u64_at(b, 44), u32_at(b, 52), u32_at(b, 56)), (0, 0, 2), "tp, epoch");
    assert_eq!(b.len(), 60);
}

#[test]
fn golden_start_election_bytes_are_stable() {
    check_golden_frame("start_election.bin", &start_election_frame(), START_ELECTION);
}

#[test]
fn golden_start_election_fields_sit_where_the_doc_says() {
    let b = START_ELECTION;
    assert_header(b, 0x06, 0, 0, (1, 0), 2);
    assert_eq!(u32_at(b, 24), 1, "entries");
    assert_eq!((u64_at(b, 28), u32_at(b, 36), u32_at(b, 40)), (5, 3, 5), "tp, epoch");
    assert_eq!(b.len(), 44);
}

#[test]
fn golden_controller_call_bytes_are_stable() {
    // The call, then its answer, back to back.
    let (call, answer) = controller_call_frames();
    let mut bytes = concat(&call.encode()).to_vec();
    bytes.extend_from_slice(&concat(&answer.encode()));
    check_golden("replica/golden/controller_call.bin", &bytes, CONTROLLER_CALL);
    let Ok(Split::Frame(first)) = frame::split(CONTROLLER_CALL, FRAME_BYTES_MAX) else { panic!("a frame") };
    let golden = Bytes::from_static(CONTROLLER_CALL);
    assert_eq!(Frame::decode(&golden.slice(..first), FRAME_BYTES_MAX).unwrap(), call);
    assert_eq!(Frame::decode(&golden.slice(first..), FRAME_BYTES_MAX).unwrap(), answer);
}

#[test]
fn golden_controller_call_fields_sit_where_the_doc_says() {
    let b = &CONTROLLER_CALL[..24 + 4 + 4 + 9];
    assert_header(b, 0x07, 0, 21, (4, 0), 0);
    assert_eq!(u16_at(b, 24), 2, "api");
    assert_eq!(u16_at(b, 26), 0, "api_version");
    assert_eq!(u32_at(b, 28), 9, "body length");
    assert_eq!(&b[32..], b"heartbeat");
    let b = &CONTROLLER_CALL[b.len()..];
    assert_header(b, 0x87, ErrorCode::NOT_CONTROLLER.0, 21, (2, 0), 0);
    assert_eq!(u32_at(b, 24), 1, "controller_id");
    assert_eq!(u32_at(b, 28), 0, "body length");
    assert_eq!(b.len(), 32);
}

/// A golden control batch: stable bytes, and it reads back as `control`.
fn check_golden_control(name: &str, bytes: &[u8], golden: &[u8], control: &Control) {
    check_golden(&format!("batch/golden/{name}"), bytes, golden);
    let view = validate_batch(golden).unwrap();
    crate::batch::validate_records(&view).unwrap();
    assert_eq!(&control::read_batch(&view).unwrap(), control);
    assert_eq!(replica_batch(golden).control.as_ref(), Some(control));
}

#[test]
fn golden_control_leader_change_bytes_are_stable() {
    check_golden_control(
        "control_leader_change.bin",
        &leader_change_batch(),
        CONTROL_LEADER_CHANGE,
        &leader_change_control(),
    );
}

#[test]
fn golden_control_voters_bytes_are_stable() {
    check_golden_control("control_voters.bin", &voters_batch(), CONTROL_VOTERS, &voters_control());
}

/// The envelope of a control batch, and its one record: key at 80 (the
/// type), the value right after it (rkyv puts a record's out-of-line data
/// first: format.md, "Records").
fn assert_control_envelope(b: &[u8], base: u64, append_time: i64, control_type: u16) -> &[u8] {
    assert_eq!(u64_at(b, 0), base, "base offset");
    assert_eq!(u32_at(b, 8) as usize, b.len(), "batch length");
    assert_eq!(u32_at(b, 12), 5, "leader epoch");
    assert_eq!(u16_at(b, 20), 2, "format version");
    assert_eq!(b[23], 0x02, "broker flags: bit 1, control");
    assert_eq!(i64_at(b, 24), append_time, "append time");
    assert_eq!(u32_at(b, 36), crc32c::crc32c(&b[..36]), "header crc");
    assert_eq!(u32_at(b, 44), 0, "last offset delta");
    assert_eq!(u32_at(b, 48), 1, "record count");
    assert_eq!(i64_at(b, 56), append_time, "first timestamp: the append time");
    assert_eq!(i64_at(b, 72), -1, "producer id: none");
    assert_eq!(u16_at(b, 80), control_type, "record key: the control type");
    &b[82..]
}

#[test]
fn golden_control_batch_fields_sit_where_the_doc_says() {
    let v = assert_control_envelope(CONTROL_LEADER_CHANGE, 1200, 1_700_000_000_000, 1);
    assert_eq!(u16_at(v, 0), 0, "body version");
    assert_eq!(u32_at(v, 2), 5, "epoch");
    assert_eq!(u32_at(v, 6), 1, "leader");
    assert_eq!(u32_at(v, 10), 3, "voters");
    assert_eq!((u32_at(v, 14), u64_at(v, 18)), (1, 11), "first voter");
    assert_eq!((u32_at(v, 38), u64_at(v, 42)), (3, 33), "third voter");
    assert_eq!(v[50], 0, "not joint");
    assert_eq!(u32_at(v, 51), 0, "no learners");

    let v = assert_control_envelope(CONTROL_VOTERS, 1300, 1_700_000_000_500, 2);
    assert_eq!(u16_at(v, 0), 0, "body version");
    assert_eq!(u32_at(v, 2), 3, "voters");
    assert_eq!((u32_at(v, 30), u64_at(v, 34)), (3, 33), "third voter");
    assert_eq!(v[42], 1, "joint");
    assert_eq!(u32_at(v, 43), 3, "joint voters");
    assert_eq!((u32_at(v, 71), u64_at(v, 75)), (4, 44), "third joint voter");
    assert_eq!((u32_at(v, 83), u32_at(v, 87), u64_at(v, 91)), (1, 4, 44), "learners");
}
