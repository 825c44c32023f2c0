use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::batch::{BatchBuilder, RecordInput};
use crate::frame::{Decoded, FrameDecoder, REQUEST_HEADER_BYTES, RESPONSE_HEADER_BYTES};
use crate::types::Timestamp;

fn concat(pieces: &[Bytes]) -> Bytes {
    pieces.iter().flat_map(|p| p.iter().copied()).collect::<Vec<u8>>().into()
}

fn batch(n: usize) -> Bytes {
    let mut b = BatchBuilder::new();
    for i in 0..n {
        b.push(RecordInput::new(Some(format!("k{i}").as_bytes()), Some(&[7u8; 100]), Timestamp(1000 + i as i64)));
    }
    Bytes::from(b.build().unwrap())
}

fn request_round_trip(request: &Request) -> Request {
    let bytes = concat(&request.encode(42));
    let d = FrameDecoder { frame_bytes_max: 1 << 24 };
    let Decoded::Frame { used } = d.decode(&bytes, REQUEST_HEADER_BYTES) else { panic!("no frame") };
    assert_eq!(used, bytes.len());
    let frame = bytes.slice(4..used);
    let (header, body) = RequestHeader::decode(&frame).unwrap();
    assert_eq!(header.request_id, 42);
    Request::decode(&header, body).unwrap()
}

fn response_round_trip(api: ApiKey, response: &Response) -> Response {
    let bytes = concat(&response.encode(7));
    let d = FrameDecoder { frame_bytes_max: 1 << 24 };
    let Decoded::Frame { used } = d.decode(&bytes, RESPONSE_HEADER_BYTES) else { panic!("no frame") };
    let frame = bytes.slice(4..used);
    let (header, body) = ResponseHeader::decode(&frame).unwrap();
    assert_eq!(header, ResponseHeader { request_id: 7, error: ErrorCode::NONE });
    Response::decode(api, body).unwrap()
}

#[test]
fn every_request_round_trips() {
    let requests = vec![
        Request::Handshake(HandshakeRequest { protocol_version: 1, client: "t".into() }),
        Request::CreateTopic(CreateTopicRequest {
            name: "orders".into(),
            partitions: 4,
            configs: vec![("retention.ms".into(), "1000".into()), ("segment.bytes".into(), "1048576".into())],
        }),
        Request::AlterTopicConfig {
            name: "orders".into(),
            ops: vec![
                ConfigOp::Set { key: "retention.ms".into(), value: "7d".into() },
                ConfigOp::Delete { key: "segment.bytes".into() },
            ],
        },
        Request::RecoverPartitions { name: "orders".into(), partitions: vec![0, 3] },
        Request::DeleteTopic { name: "orders".into() },
        Request::ListTopics,
        Request::DescribeTopic { name: "orders".into() },
        Request::Produce(ProduceRequest {
            acks: Acks::Leader,
            timeout_ms: 5000,
            topics: vec![ProduceTopic {
                name: "orders".into(),
                partitions: vec![
                    ProducePartition { partition: 0, batch: batch(3) },
                    ProducePartition { partition: 3, batch: batch(1) },
                ],
            }],
        }),
        Request::Fetch(FetchRequest {
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 1 << 20,
            topics: vec![FetchTopic {
                name: "orders".into(),
                partitions: vec![FetchPartition { partition: 1, offset: Offset(17), max_bytes: 4096 }],
            }],
        }),
        Request::ListOffsets(vec![ListOffsetsTopic {
            name: "orders".into(),
            partitions: vec![(0, OffsetSpec::Earliest), (1, OffsetSpec::Latest), (2, OffsetSpec::Timestamp(99))],
        }]),
        Request::Metadata { topics: vec![] },
        Request::Metadata { topics: vec!["orders".into(), "payments".into()] },
        Request::ElectLeader { name: "orders".into(), partition: 2, broker: 3 },
        Request::ReassignPartition { name: "orders".into(), partition: 1, replicas: vec![1, 2, 4] },
        Request::RemoveBroker { broker: 4 },
    ];
    for r in &requests {
        assert_eq!(&request_round_trip(r), r);
    }
}

#[test]
fn every_response_round_trips() {
    let mut cases = vec![
        (
            ApiKey::Handshake,
            Response::Handshake(HandshakeResponse {
                protocol_version: 1,
                server: "cairn".into(),
                shards: 2,
                shard: 1,
                shard_ports: vec![7071, 7072],
                apis: vec![ApiVersions { api_key: 5, min: 0, max: 0 }],
            }),
        ),
        (ApiKey::CreateTopic, Response::CreateTopic),
        (ApiKey::ListTopics, Response::ListTopics(vec![TopicSummary { name: "a".into(), partitions: 3 }])),
        (
            ApiKey::DescribeTopic,
            Response::DescribeTopic(DescribeTopicResponse {
                name: "a".into(),
                configs: vec![
                    ConfigEntry { name: "retention.ms".into(), value: "-1".into(), source: ConfigSource::Default },
                    ConfigEntry { name: "segment.bytes".into(), value: "1048576".into(), source: ConfigSource::Topic },
                ],
                partitions: vec![PartitionDescription {
                    partition: 0,
                    shard: 1,
                    error: ErrorCode::NONE,
                    log_start_offset: Offset(0),
                    high_watermark: Offset(10),
                    log_end_offset: Offset(12),
                    size_bytes: 4096,
                    cleanable_bytes: 2048,
                    dirty_bytes: 512,
                    last_clean_ms: Some(1_700_000_000_000),
                }],
            }),
        ),
        (
            ApiKey::Produce,
            Response::Produce(vec![ProduceTopicResult {
                name: "a".into(),
                partitions: vec![
                    ProducePartitionResult {
                        partition: 2,
                        error: ErrorCode::UNKNOWN_PARTITION,
                        base_offset: Offset(0),
                        leader: None,
                    },
                    ProducePartitionResult {
                        partition: 3,
                        error: ErrorCode::NOT_LEADER,
                        base_offset: Offset(0),
                        leader: Some(LeaderHint { node: 2, epoch: 7 }),
                    },
                ],
            }]),
        ),
        (
            ApiKey::Fetch,
            Response::Fetch(vec![FetchTopicResult {
                name: "a".into(),
                partitions: vec![FetchPartitionResult {
                    partition: 0,
                    error: ErrorCode::NONE,
                    high_watermark: Offset(9),
                    log_start_offset: Offset(0),
                    batches: vec![batch(2), batch(20)],
                }],
            }]),
        ),
        (
            ApiKey::ListOffsets,
            Response::ListOffsets(vec![ListOffsetsTopicResult {
                name: "a".into(),
                partitions: vec![ListOffsetsPartitionResult {
                    partition: 0,
                    error: ErrorCode::NONE,
                    offset: Offset(5),
                }],
            }]),
        ),
    ];
    cases.push((ApiKey::AlterTopicConfig, Response::AlterTopicConfig));
    cases.push((ApiKey::ElectLeader, Response::ElectLeader));
    cases.push((ApiKey::ReassignPartition, Response::ReassignPartition));
    cases.push((ApiKey::RemoveBroker, Response::RemoveBroker));
    cases.push((ApiKey::Metadata, Response::Metadata(metadata_response())));
    cases.push((
        ApiKey::RecoverPartitions,
        Response::RecoverPartitions(vec![RecoveredPartition {
            partition: 3,
            error: ErrorCode::STORAGE_ERROR,
            message: "corrupt log".into(),
        }]),
    ));
    for (api, r) in &cases {
        assert_eq!(&response_round_trip(*api, r), r);
    }
}

fn metadata_response() -> MetadataResponse {
    MetadataResponse {
        node_id: 2,
        controller: Some(1),
        brokers: vec![
            BrokerInfo {
                node_id: 1,
                address: "127.0.0.1:7071".into(),
                replication_address: "127.0.0.1:8071".into(),
                alive: true,
            },
            BrokerInfo {
                node_id: 2,
                address: "0.0.0.0:7072".into(),
                replication_address: "127.0.0.1:8072".into(),
                alive: false,
            },
        ],
        topics: vec![
            TopicMetadata {
                name: "orders".into(),
                error: ErrorCode::NONE,
                partitions: vec![
                    PartitionMetadata {
                        partition: 0,
                        error: ErrorCode::NONE,
                        leader: Some(1),
                        leader_epoch: 4,
                        leader_shard: Some(1),
                        replicas: vec![1, 2, 3],
                        caught_up: vec![1, 3],
                    },
                    PartitionMetadata {
                        partition: 1,
                        error: ErrorCode::LEADER_NOT_AVAILABLE,
                        leader: None,
                        leader_epoch: 0,
                        leader_shard: None,
                        replicas: vec![2, 3, 1],
                        caught_up: vec![],
                    },
                ],
            },
            TopicMetadata { name: "gone".into(), error: ErrorCode::UNKNOWN_TOPIC, partitions: vec![] },
        ],
    }
}

/// The layout of `Metadata` v0, byte by byte (docs/protocol.md): a change
/// here is a change of the wire format.
#[test]
fn the_metadata_response_layout_is_fixed() {
    let response = MetadataResponse {
        node_id: 2,
        controller: None,
        brokers: vec![BrokerInfo { node_id: 1, address: "h:1".into(), replication_address: "h:2".into(), alive: true }],
        topics: vec![TopicMetadata {
            name: "t".into(),
            error: ErrorCode::NONE,
            partitions: vec![PartitionMetadata {
                partition: 0,
                error: ErrorCode::NONE,
                leader: Some(1),
                leader_epoch: 3,
                leader_shard: Some(0),
                replicas: vec![1],
                caught_up: vec![1],
            }],
        }],
    };
    let mut w = Writer::new();
    Response::Metadata(response).encode_body(&mut w, 0);
    let mut expected = Vec::new();
    expected.extend(2u32.to_le_bytes()); // node_id
    expected.extend((-1i64).to_le_bytes()); // controller: none
    expected.extend(1u32.to_le_bytes()); // brokers: 1
    expected.extend(1u32.to_le_bytes()); // node_id
    expected.extend([3, 0, b'h', b':', b'1']); // address
    expected.extend([3, 0, b'h', b':', b'2']); // replication_address
    expected.push(1); // alive
    expected.extend(1u32.to_le_bytes()); // topics: 1
    expected.extend([1, 0, b't']); // name
    expected.extend(0u16.to_le_bytes()); // error
    expected.extend(1u32.to_le_bytes()); // partitions: 1
    expected.extend(0u32.to_le_bytes()); // partition
    expected.extend(0u16.to_le_bytes()); // error
    expected.extend(1i64.to_le_bytes()); // leader
    expected.extend(3u32.to_le_bytes()); // leader_epoch
    expected.extend(0i64.to_le_bytes()); // leader_shard
    expected.extend(1u32.to_le_bytes()); // replicas: 1
    expected.extend(1u32.to_le_bytes());
    expected.extend(1u32.to_le_bytes()); // caught_up: 1
    expected.extend(1u32.to_le_bytes());
    assert_eq!(w.into_bytes(), Bytes::from(expected));
}

#[test]
fn a_version_0_produce_answer_has_no_leader_and_version_1_names_it() {
    let result = |leader| {
        Response::Produce(vec![ProduceTopicResult {
            name: "a".into(),
            partitions: vec![ProducePartitionResult {
                partition: 0,
                error: ErrorCode::NOT_LEADER,
                base_offset: Offset(0),
                leader,
            }],
        }])
    };
    let hinted = result(Some(LeaderHint { node: 3, epoch: 9 }));
    for (version, expected) in [(0, result(None)), (1, hinted.clone())] {
        let mut w = Writer::new();
        hinted.encode_body(&mut w, version);
        let body = w.into_bytes();
        assert_eq!(body.len(), 4 + 3 + 4 + 4 + 2 + 8 + if version == 1 { 12 } else { 0 });
        assert_eq!(Response::decode_version(ApiKey::Produce, version, body).unwrap(), expected);
    }
}

#[test]
fn version_0_of_create_and_describe_still_round_trips_the_two_numbers_it_had() {
    // A client built before settings by name sends version 0.
    let create = Request::CreateTopic(CreateTopicRequest {
        name: "t".into(),
        partitions: 2,
        configs: vec![("retention.ms".into(), "5000".into())],
    });
    let bytes = concat(&create.encode_version(1, 0));
    let frame = bytes.slice(4..);
    let (header, body) = RequestHeader::decode(&frame).unwrap();
    assert_eq!(header.api_version, 0);
    assert_eq!(body.len(), 2 + 1 + 4 + 8 + 8, "name, partitions, retention_ms, retention_bytes");
    assert_eq!(Request::decode(&header, body).unwrap(), create);
    let describe = Response::DescribeTopic(DescribeTopicResponse {
        name: "t".into(),
        configs: vec![
            ConfigEntry { name: "retention.ms".into(), value: "5000".into(), source: ConfigSource::Topic },
            ConfigEntry { name: "segment.bytes".into(), value: "1".into(), source: ConfigSource::Default },
        ],
        partitions: vec![],
    });
    let bytes = concat(&describe.encode_version(1, 0));
    let (_, body) = ResponseHeader::decode(&bytes.slice(4..)).unwrap();
    let Response::DescribeTopic(d) = Response::decode_version(ApiKey::DescribeTopic, 0, body).unwrap() else {
        panic!("describe")
    };
    assert_eq!(
        d.configs,
        vec![ConfigEntry { name: "retention.ms".into(), value: "5000".into(), source: ConfigSource::Topic }]
    );
}

#[test]
fn a_version_1_describe_leaves_out_the_cleaner_state_and_version_2_carries_it() {
    let partition = PartitionDescription {
        partition: 0,
        shard: 0,
        error: ErrorCode::NONE,
        log_start_offset: Offset(0),
        high_watermark: Offset(9),
        log_end_offset: Offset(9),
        size_bytes: 900,
        cleanable_bytes: 800,
        dirty_bytes: 200,
        last_clean_ms: Some(5),
    };
    let describe = |p: PartitionDescription| {
        Response::DescribeTopic(DescribeTopicResponse { name: "t".into(), configs: vec![], partitions: vec![p] })
    };
    for version in [1, 2] {
        let mut w = Writer::new();
        describe(partition.clone()).encode_body(&mut w, version);
        let body = w.into_bytes();
        let Response::DescribeTopic(d) = Response::decode_version(ApiKey::DescribeTopic, version, body).unwrap() else {
            panic!("describe")
        };
        let expected = if version == 2 {
            partition.clone()
        } else {
            PartitionDescription { cleanable_bytes: 0, dirty_bytes: 0, last_clean_ms: None, ..partition.clone() }
        };
        assert_eq!(d.partitions, vec![expected]);
    }
    assert!((partition.dirty_ratio() - 0.25).abs() < 1e-9);
}

#[test]
fn fetched_batches_are_sent_without_copying() {
    let b = batch(50);
    let response = Response::Fetch(vec![FetchTopicResult {
        name: "a".into(),
        partitions: vec![FetchPartitionResult {
            partition: 0,
            error: ErrorCode::NONE,
            high_watermark: Offset(50),
            log_start_offset: Offset(0),
            batches: vec![b.clone()],
        }],
    }]);
    let pieces = response.encode(1);
    assert!(pieces.iter().any(|p| p.as_ptr() == b.as_ptr()), "the stored batch must be a piece of the frame");
}

#[test]
fn unknown_api_and_version_map_to_their_codes() {
    let h = RequestHeader { api_key: 200, api_version: 0, request_id: 1 };
    assert_eq!(Request::decode(&h, Bytes::new()).unwrap_err().code(), ErrorCode::UNKNOWN_API);
    let h = RequestHeader { api_key: ApiKey::ListTopics as u16, api_version: 9, request_id: 1 };
    assert_eq!(Request::decode(&h, Bytes::new()).unwrap_err().code(), ErrorCode::UNSUPPORTED_VERSION);
    let h = RequestHeader { api_key: ApiKey::ListTopics as u16, api_version: 0, request_id: 1 };
    assert_eq!(Request::decode(&h, Bytes::from_static(b"x")).unwrap_err().code(), ErrorCode::MALFORMED_REQUEST);
    let h = RequestHeader { api_key: ApiKey::Produce as u16, api_version: 0, request_id: 1 };
    let mut body = vec![9u8]; // acks = 9
    body.extend_from_slice(&[0; 8]);
    assert_eq!(Request::decode(&h, Bytes::from(body)).unwrap_err().code(), ErrorCode::MALFORMED_REQUEST);
}

#[test]
fn split_batches_refuses_a_length_past_the_end() {
    let b = batch(2);
    let mut joined = b.to_vec();
    joined.extend_from_slice(&b);
    assert_eq!(split_batches(&Bytes::from(joined.clone())).unwrap().len(), 2);
    joined.truncate(joined.len() - 1);
    assert!(split_batches(&Bytes::from(joined)).is_none());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Any bytes at all: decoding returns a value or an error, never panics,
    /// and never reads outside the frame.
    #[test]
    fn decoding_arbitrary_request_bytes_never_panics(
        api_key in 0u16..10,
        version in 0u16..2,
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let h = RequestHeader { api_key, api_version: version, request_id: 1 };
        let _ = Request::decode(&h, Bytes::from(body));
    }

    /// Valid requests with bytes flipped or cut: still no panic.
    #[test]
    fn decoding_mutated_requests_never_panics(
        cut in 0usize..400,
        flips in proptest::collection::vec((0usize..400, any::<u8>()), 0..4),
    ) {
        let request = Request::Produce(ProduceRequest {
            acks: Acks::Leader,
            timeout_ms: 10,
            topics: vec![ProduceTopic { name: "t".into(), partitions: vec![ProducePartition { partition: 0, batch: batch(1) }] }],
        });
        let mut bytes = concat(&request.encode(1)).to_vec();
        for (at, v) in flips {
            if at < bytes.len() { bytes[at] ^= v; }
        }
        bytes.truncate(cut.min(bytes.len()));
        let d = FrameDecoder { frame_bytes_max: 1 << 16 };
        let bytes = Bytes::from(bytes);
        if let Decoded::Frame { used } = d.decode(&bytes, REQUEST_HEADER_BYTES) {
            let frame = bytes.slice(4..used);
            if let Ok((h, body)) = RequestHeader::decode(&frame) {
                let _ = Request::decode(&h, body);
            }
        }
    }

    #[test]
    fn decoding_arbitrary_response_bytes_never_panics(
        api in 0usize..8,
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let _ = Response::decode(ApiKey::ALL[api], Bytes::from(body));
    }
}

fn tps(topic: &str, ps: &[u32]) -> groups::TopicPartitions {
    groups::TopicPartitions { topic: topic.into(), partitions: ps.to_vec() }
}

fn group_requests() -> Vec<GroupRequest> {
    use groups::*;
    vec![
        GroupRequest::FindCoordinator { group: "billing".into() },
        GroupRequest::Heartbeat(GroupHeartbeatRequest {
            group: "billing".into(),
            member: "m-1".into(),
            member_epoch: 0,
            subscription: Some(vec!["orders".into(), "refunds".into()]),
            assignor: Some("range".into()),
            owned: Some(vec![tps("orders", &[0, 3])]),
            session_timeout_ms: 45_000,
            rebalance_timeout_ms: 60_000,
        }),
        GroupRequest::Heartbeat(GroupHeartbeatRequest {
            group: "billing".into(),
            member: "m-1".into(),
            member_epoch: -1,
            subscription: None,
            assignor: None,
            owned: None,
            session_timeout_ms: 45_000,
            rebalance_timeout_ms: 60_000,
        }),
        GroupRequest::OffsetCommit {
            group: "billing".into(),
            member: "m-1".into(),
            member_epoch: 7,
            offsets: vec![CommitEntry { topic: "orders".into(), partition: 3, offset: 99, metadata: "x".into() }],
        },
        GroupRequest::OffsetFetch { group: "billing".into(), partitions: vec![tps("orders", &[1])] },
        GroupRequest::ListGroups,
        GroupRequest::DescribeGroup { group: "billing".into() },
        GroupRequest::DeleteGroup { group: "billing".into() },
        GroupRequest::ResetOffsets {
            group: "billing".into(),
            offsets: vec![CommitEntry { topic: "orders".into(), partition: 0, offset: 0, metadata: String::new() }],
        },
        GroupRequest::QueueFetch(QueueFetchRequest {
            queue: "jobs".into(),
            member: "w-1".into(),
            topics: vec!["orders".into()],
            acks: vec![
                QueueAck {
                    topic: "orders".into(),
                    partition: 2,
                    first: 10,
                    last: 19,
                    kind: AckKind::Release { delay_ms: 500 },
                },
                QueueAck { topic: "orders".into(), partition: 2, first: 20, last: 20, kind: AckKind::DeadLettered },
            ],
            records_max: 500,
            lock_ms: 30_000,
        }),
        GroupRequest::DescribeQueue { queue: "jobs".into() },
        GroupRequest::DeleteQueue { queue: "jobs".into() },
    ]
}

#[test]
fn every_group_request_and_response_round_trips_and_any_truncation_is_malformed() {
    use groups::*;
    for g in group_requests() {
        let request = Request::Group(g);
        assert_eq!(request_round_trip(&request), request);
        let mut w = Writer::new();
        request.encode_body(&mut w, 0);
        let body = w.into_bytes();
        let header = RequestHeader { api_key: request.api_key() as u16, api_version: 0, request_id: 1 };
        for cut in 0..body.len() {
            assert!(Request::decode(&header, body.slice(..cut)).is_err(), "{:?} cut at {cut}", request.api_key());
        }
    }
    let committed = CommittedEntry {
        topic: "orders".into(),
        partition: 3,
        offset: 99,
        metadata: "x".into(),
        committed_at_ms: 1_700_000_000_000,
    };
    let responses = vec![
        (ApiKey::FindCoordinator, GroupResponse::FindCoordinator { topic: "__consumer_offsets".into(), partition: 5 }),
        (
            ApiKey::GroupHeartbeat,
            GroupResponse::Heartbeat(GroupHeartbeatResponse {
                member_epoch: 8,
                heartbeat_interval_ms: 1000,
                assignment: vec![tps("orders", &[0, 1, 2])],
            }),
        ),
        (ApiKey::OffsetCommit, GroupResponse::OffsetCommit),
        (ApiKey::OffsetFetch, GroupResponse::OffsetFetch(vec![committed.clone()])),
        (
            ApiKey::ListGroups,
            GroupResponse::ListGroups(vec![GroupListing {
                group: "billing".into(),
                state: "stable".into(),
                members: 3,
            }]),
        ),
        (
            ApiKey::DescribeGroup,
            GroupResponse::DescribeGroup(GroupInfo {
                group: "billing".into(),
                state: "reconciling".into(),
                epoch: 9,
                assignor: "cooperative-sticky".into(),
                members: vec![MemberInfo {
                    member: "m-1".into(),
                    client_id: "svc".into(),
                    epoch: 8,
                    state: "revoking".into(),
                    subscription: vec!["orders".into()],
                    assigned: vec![tps("orders", &[0])],
                    revoking: vec![tps("orders", &[1])],
                }],
                offsets: vec![committed],
            }),
        ),
        (ApiKey::DeleteGroup, GroupResponse::DeleteGroup),
        (ApiKey::ResetOffsets, GroupResponse::ResetOffsets),
        (
            ApiKey::QueueFetch,
            GroupResponse::QueueFetch(QueueFetchResponse {
                ack_errors: vec![crate::ErrorCode::NONE, crate::ErrorCode::INVALID_RECORD_STATE],
                acquired: vec![AcquiredRange {
                    topic: "orders".into(),
                    partition: 1,
                    first: 5,
                    last: 9,
                    deliveries: 2,
                    dead_letter: Some(DeadLetterReason::Rejected),
                }],
                lock_until_ms: 1_700_000_030_000,
                dead_letter_topic: "jobs.dlq".into(),
            }),
        ),
        (
            ApiKey::DescribeQueue,
            GroupResponse::DescribeQueue(QueueInfo {
                queue: "jobs".into(),
                dead_letter_topic: "jobs.dlq".into(),
                members: vec![QueueMemberInfo { member: "w-1".into(), last_seen_ms: 7, holding: 3 }],
                partitions: vec![QueuePartitionInfo {
                    topic: "orders".into(),
                    partition: 0,
                    start: 1,
                    next: 9,
                    acked: 2,
                    dead_lettered: 3,
                    skipped: 4,
                    available: 5,
                    acquired: 6,
                    dead_letter_pending: 7,
                    deliveries: vec![(1, 5), (2, 1)],
                }],
            }),
        ),
        (ApiKey::DeleteQueue, GroupResponse::DeleteQueue),
    ];
    for (api, r) in responses {
        let response = Response::Group(r);
        assert_eq!(response_round_trip(api, &response), response);
    }
}
