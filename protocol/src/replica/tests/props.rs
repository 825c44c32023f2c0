//! Property tests: every kind round-trips; arbitrary, mutated or cut bytes
//! give an error or a value, never a panic; a frame cut anywhere is an
//! error, whether or not its length prefix was cut to match.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use super::*;
use crate::batch::{Stamp, stamp};

fn arb_tp() -> impl Strategy<Value = TopicPartition> {
    (any::<u64>(), any::<u32>()).prop_map(|(t, p)| TopicPartition::new(t, p))
}

fn arb_epoch() -> impl Strategy<Value = LeaderEpoch> {
    any::<u32>().prop_map(LeaderEpoch)
}

fn arb_offset() -> impl Strategy<Value = Offset> {
    (0..=i64::MAX as u64).prop_map(Offset)
}

fn arb_node() -> impl Strategy<Value = Option<NodeId>> {
    option::of((1u32..).prop_map(NodeId))
}

fn arb_error() -> impl Strategy<Value = ErrorCode> {
    any::<u16>().prop_map(ErrorCode)
}

fn arb_set() -> impl Strategy<Value = Vec<ReplicaKey>> {
    vec((any::<u32>(), any::<u64>()), 0..5).prop_map(|v| v.into_iter().map(|(n, i)| key(n, i)).collect())
}

fn arb_config() -> impl Strategy<Value = Config> {
    (arb_set(), option::of(arb_set()), arb_set()).prop_map(|(voters, joint, learners)| Config {
        voters,
        joint,
        learners,
    })
}

fn arb_control() -> impl Strategy<Value = Control> {
    prop_oneof![
        (arb_epoch(), any::<u32>(), arb_config()).prop_map(|(epoch, leader, config)| Control::LeaderChange {
            epoch,
            leader: NodeId(leader),
            config
        }),
        arb_config().prop_map(Control::Voters),
    ]
}

/// A stored batch: the golden data batch stamped somewhere, or a control batch.
fn arb_batch() -> impl Strategy<Value = ReplicaBatch> {
    let base = 0..1u64 << 62;
    prop_oneof![
        (base.clone(), arb_epoch(), any::<bool>()).prop_map(|(base, epoch, log_append_time)| {
            let mut bytes = BATCH_V2.to_vec();
            let s =
                Stamp { base_offset: Offset(base), leader_epoch: epoch, append_time: Timestamp(5), log_append_time };
            stamp(&mut bytes, &s);
            replica_batch(&bytes)
        }),
        (arb_control(), base, arb_epoch(), 0..i64::MAX).prop_map(|(c, base, epoch, t)| {
            replica_batch(&control::build_batch(&c, Offset(base), epoch, Timestamp(t)))
        }),
    ]
}

fn arb_fetch_request() -> impl Strategy<Value = FetchRequest> {
    (any::<u64>(), arb_epoch(), any::<u64>(), option::of(arb_epoch()), any::<u64>(), any::<u64>(), any::<u32>())
        .prop_map(|(incarnation, epoch, fetch_offset, last_fetched_epoch, durable, hw, max_bytes)| FetchRequest {
            incarnation: Incarnation(incarnation),
            epoch,
            fetch_offset: Offset(fetch_offset),
            last_fetched_epoch,
            durable_offset: Offset(durable),
            high_watermark: Offset(hw),
            max_bytes,
        })
}

fn arb_fetch_answer() -> impl Strategy<Value = FetchAnswer> {
    (
        (arb_error(), arb_epoch(), arb_node(), any::<u64>(), any::<bool>()),
        (any::<u64>(), any::<u64>(), option::of((arb_epoch(), arb_offset()))),
        option::of(arb_config()),
        vec(arb_batch(), 0..3),
    )
        .prop_map(
            |((error, epoch, leader, fetch_offset, report), (hw, log_start, diverging), snapshot, batches)| {
                FetchAnswer {
                    error,
                    epoch,
                    leader,
                    fetch_offset: Offset(fetch_offset),
                    report,
                    high_watermark: Offset(hw),
                    log_start: Offset(log_start),
                    diverging,
                    snapshot,
                    batches,
                }
            },
        )
}

fn arb_vote_request() -> impl Strategy<Value = VoteRequest> {
    (arb_epoch(), any::<u64>(), option::of(arb_epoch()), any::<u64>(), any::<bool>()).prop_map(
        |(epoch, incarnation, last_epoch, log_end, transfer)| VoteRequest {
            epoch,
            incarnation: Incarnation(incarnation),
            last_epoch,
            log_end: Offset(log_end),
            transfer,
        },
    )
}

fn arb_vote_answer() -> impl Strategy<Value = VoteAnswer> {
    (arb_error(), arb_epoch(), arb_epoch(), any::<u64>(), any::<bool>()).prop_map(
        |(error, epoch, asked, incarnation, granted)| VoteAnswer {
            error,
            epoch,
            asked,
            incarnation: Incarnation(incarnation),
            granted,
        },
    )
}

fn arb_handshake() -> impl Strategy<Value = Handshake> {
    (
        (any::<[u8; 16]>(), any::<u32>(), any::<u64>(), arb_node(), any::<u16>()),
        (vec(any::<u16>(), 0..4), "[a-z0-9.:]{0,24}", vec(any::<u16>(), 0..4), "\\PC{0,12}"),
    )
        .prop_map(|((cluster_id, node, incarnation, dialed_node, shards), (rports, listen, cports, software))| {
            Handshake {
                cluster_id,
                node_id: NodeId(node),
                broker_incarnation: incarnation,
                dialed_node,
                shards,
                replication_shard_ports: rports,
                client_listen: listen,
                client_shard_ports: cports,
                software,
            }
        })
}

fn arb_bytes() -> impl Strategy<Value = Bytes> {
    // Both sides of the size at which the writer shares instead of copying.
    prop_oneof![vec(any::<u8>(), 0..40), vec(any::<u8>(), 500..700)].prop_map(Bytes::from)
}

fn arb_epoch_frame() -> impl Strategy<Value = EpochFrame> {
    vec((arb_tp(), arb_epoch()), 0..6).prop_map(|entries| EpochFrame { entries })
}

/// One body of each kind and direction, in [`Body`] order.
fn arb_bodies() -> impl Strategy<Value = Vec<Body>> {
    let fetch = (any::<u32>(), vec((arb_tp(), arb_fetch_request()), 0..6))
        .prop_map(|(max_wait_ms, entries)| FetchFrame { max_wait_ms, entries });
    let answers = vec((arb_tp(), arb_fetch_answer()), 0..4).prop_map(|entries| FetchResponseFrame { entries });
    let votes = || vec((arb_tp(), arb_vote_request()), 0..6).prop_map(|entries| VoteFrame { entries });
    let vote_answers = || vec((arb_tp(), arb_vote_answer()), 0..6).prop_map(|entries| VoteResponseFrame { entries });
    let call = (any::<u16>(), any::<u16>(), arb_bytes()).prop_map(|(api, api_version, body)| ControllerCall {
        api,
        api_version,
        body,
    });
    let call_answer =
        (arb_node(), arb_bytes()).prop_map(|(controller_id, body)| ControllerCallResponse { controller_id, body });
    let snapshot = (arb_tp(), any::<u64>(), any::<u64>(), any::<u32>())
        .prop_map(|(tp, o, position, max_bytes)| FetchSnapshot { tp, snapshot_offset: Offset(o), position, max_bytes });
    let chunk = (any::<u64>(), any::<u64>(), any::<u64>(), arb_bytes()).prop_map(|(o, size, position, chunk)| {
        FetchSnapshotResponse { snapshot_offset: Offset(o), size, position, chunk }
    });
    (
        (arb_handshake(), arb_handshake(), fetch, answers, votes(), vote_answers(), votes()),
        (vote_answers(), arb_epoch_frame(), arb_epoch_frame(), call, call_answer, snapshot, chunk),
    )
        .prop_map(|((h, hr, f, fr, v, vr, pv), (pvr, be, se, cc, ccr, fs, fsr))| {
            vec![
                Body::Handshake(h),
                Body::HandshakeResponse(hr),
                Body::Fetch(f),
                Body::FetchResponse(fr),
                Body::Vote(v),
                Body::VoteResponse(vr),
                Body::PreVote(pv),
                Body::PreVoteResponse(pvr),
                Body::BeginEpoch(be),
                Body::StartElection(se),
                Body::ControllerCall(cc),
                Body::ControllerCallResponse(ccr),
                Body::FetchSnapshot(fs),
                Body::FetchSnapshotResponse(fsr),
            ]
        })
}

/// One frame of each kind and direction, under arbitrary headers.
fn arb_frames() -> impl Strategy<Value = Vec<Frame>> {
    (arb_bodies(), any::<u32>(), arb_error(), any::<u32>(), any::<u16>(), any::<u16>()).prop_map(
        |(bodies, request_id, error, node, source_shard, dest_shard)| {
            bodies
                .into_iter()
                .map(|body| {
                    let kind = body.kind();
                    let response = body.is_response();
                    let header = FrameHeader {
                        kind,
                        response,
                        error: if response { error } else { ErrorCode::NONE },
                        request_id: if kind.is_one_way() { 0 } else { request_id },
                        source_node: NodeId(node),
                        source_shard,
                        dest_shard,
                    };
                    Frame::new(header, body)
                })
                .collect()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn every_kind_round_trips(frames in arb_frames()) {
        prop_assert_eq!(frames.len(), 14);
        for frame in &frames {
            prop_assert_eq!(&round_trip(frame), frame);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Any bytes at all, as a stream and as a whole frame.
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in vec(any::<u8>(), 0..512)) {
        let _ = frame::split(&bytes, FRAME_BYTES_MAX);
        let _ = Frame::decode(&Bytes::from(bytes), FRAME_BYTES_MAX);
    }

    /// Any body under a valid header of every kind, so each body decoder
    /// sees it.
    #[test]
    fn decoding_arbitrary_bodies_never_panics(body in vec(any::<u8>(), 0..512)) {
        let body = Bytes::from(body);
        for kind in Kind::ALL {
            for response in [false, true] {
                let _ = Body::decode(kind, response, body.clone());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Valid frames with bytes changed: an error or a frame, never a panic.
    #[test]
    fn decoding_mutated_frames_never_panics(
        frames in arb_frames(),
        flips in vec((any::<prop::sample::Index>(), 1u8..), 1..6),
    ) {
        for frame in &frames {
            let mut bytes = concat(&frame.encode()).to_vec();
            for (at, x) in &flips {
                let i = at.index(bytes.len());
                bytes[i] ^= x;
            }
            let _ = Frame::decode(&Bytes::from(bytes), FRAME_BYTES_MAX);
        }
    }

    /// Every proper prefix of every frame is refused: as it is (its length
    /// says more) and with its length cut to match (the body is short:
    /// every body encoding is self-delimiting).
    #[test]
    fn truncating_any_frame_is_an_error(frames in arb_frames()) {
        for frame in &frames {
            let bytes = concat(&frame.encode());
            for cut in 0..bytes.len() {
                prop_assert!(Frame::decode(&bytes.slice(..cut), FRAME_BYTES_MAX).is_err(), "{:?} cut at {}", frame.header.kind, cut);
                if cut >= FRAME_HEADER_BYTES {
                    let mut patched = bytes[..cut].to_vec();
                    patched[..4].copy_from_slice(&((cut - 4) as u32).to_le_bytes());
                    let result = Frame::decode(&Bytes::from(patched), FRAME_BYTES_MAX);
                    prop_assert!(
                        matches!(result, Err(FrameDecodeError::Body { .. })),
                        "{:?} with its body cut at {}: {:?}", frame.header.kind, cut, result
                    );
                }
            }
        }
    }
}
