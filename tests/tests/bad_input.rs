//! Hostile and broken clients: every bad request gets a stable error code,
//! the connection is closed only when framing is lost, and other clients
//! never notice.

use bytes::Bytes;
use cairn_client::{Client, ClientConfig, ErrorCode, TopicConfig};
use cairn_tests::Broker;
use protocol::api::{
    Acks, ApiKey, FetchPartition, FetchRequest, FetchTopic, HandshakeRequest, ProducePartition, ProduceRequest,
    ProduceTopic, Request, Response,
};
use protocol::batch::{BatchBuilder, RecordInput};
use protocol::frame::{PROTOCOL_VERSION, ResponseHeader, decode_error_message};
use protocol::types::{Offset, Timestamp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Raw {
    stream: TcpStream,
}

impl Raw {
    async fn connect(broker: &Broker) -> Raw {
        Raw { stream: TcpStream::connect(&broker.addr).await.unwrap() }
    }

    async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn send(&mut self, request: &Request, id: u32) {
        for piece in request.encode(id) {
            self.stream.write_all(&piece).await.unwrap();
        }
    }

    /// The next response, or `None` if the broker closed the connection.
    async fn recv(&mut self) -> Option<(ResponseHeader, Bytes)> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).await.ok()?;
        let mut frame = vec![0u8; u32::from_le_bytes(len) as usize];
        self.stream.read_exact(&mut frame).await.ok()?;
        let (h, body) = ResponseHeader::decode(&Bytes::from(frame)).unwrap();
        Some((h, body))
    }

    async fn handshake(&mut self) {
        self.send(
            &Request::Handshake(HandshakeRequest { protocol_version: PROTOCOL_VERSION, client: "raw".into() }),
            1,
        )
        .await;
        let (h, _) = self.recv().await.unwrap();
        assert_eq!(h.error, ErrorCode::NONE);
    }

    async fn expect_error(&mut self, id: u32, code: ErrorCode) -> String {
        let (h, body) = self.recv().await.expect("a response, not a closed connection");
        assert_eq!(h.request_id, id);
        assert_eq!(h.error, code, "message: {}", decode_error_message(body.clone()));
        decode_error_message(body)
    }
}

fn header(length: u32, api_key: u16, version: u16, id: u32) -> Vec<u8> {
    let mut v = length.to_le_bytes().to_vec();
    v.extend_from_slice(&api_key.to_le_bytes());
    v.extend_from_slice(&version.to_le_bytes());
    v.extend_from_slice(&id.to_le_bytes());
    v
}

fn batch() -> Bytes {
    let mut b = BatchBuilder::new();
    b.push(RecordInput::new(Some(b"k"), Some(b"v"), Timestamp(1)));
    Bytes::from(b.build().unwrap())
}

fn produce(topic: &str, partition: u32, batch: Bytes) -> Request {
    Request::Produce(ProduceRequest {
        acks: Acks::Leader,
        timeout_ms: 5000,
        topics: vec![ProduceTopic { name: topic.into(), partitions: vec![ProducePartition { partition, batch }] }],
    })
}

fn produce_error(response: &Bytes) -> ErrorCode {
    match Response::decode(ApiKey::Produce, response.clone()).unwrap() {
        Response::Produce(t) => t[0].partitions[0].error,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_stable_codes_and_the_connection_survives() {
    let broker = Broker::start(&[]);
    let client = Client::connect(ClientConfig::new(broker.addr.clone())).await.unwrap();
    client.create_topic("t", 2, TopicConfig::default()).await.unwrap();

    let mut raw = Raw::connect(&broker).await;
    // Before the handshake.
    raw.send(&Request::ListTopics, 7).await;
    raw.expect_error(7, ErrorCode::HANDSHAKE_REQUIRED).await;
    // A protocol generation the broker does not speak.
    raw.send(&Request::Handshake(HandshakeRequest { protocol_version: 99, client: "x".into() }), 8).await;
    raw.expect_error(8, ErrorCode::UNSUPPORTED_VERSION).await;
    raw.handshake().await;
    // Unknown API key, unsupported version, a body that does not decode.
    raw.send_bytes(&header(8, 999, 0, 10)).await;
    raw.expect_error(10, ErrorCode::UNKNOWN_API).await;
    raw.send_bytes(&header(8, ApiKey::ListTopics as u16, 5, 11)).await;
    raw.expect_error(11, ErrorCode::UNSUPPORTED_VERSION).await;
    let mut bad = header(8 + 3, ApiKey::DescribeTopic as u16, 0, 12);
    bad.extend_from_slice(&[200, 0, b'x']); // a 200-byte string with 1 byte
    raw.send_bytes(&bad).await;
    raw.expect_error(12, ErrorCode::MALFORMED_REQUEST).await;
    // An oversized frame is refused and skipped; framing holds.
    let big = 17 << 20;
    let mut frame = header(big, ApiKey::ListTopics as u16, 0, 13);
    frame.resize(4 + big as usize, 0);
    raw.send_bytes(&frame).await;
    let message = raw.expect_error(13, ErrorCode::FRAME_TOO_LARGE).await;
    assert!(message.contains("frame_bytes_max"), "{message}");
    // Topics and partitions that do not exist, bad names, bad counts.
    raw.send(&Request::DescribeTopic { name: "nope".into() }, 14).await;
    raw.expect_error(14, ErrorCode::UNKNOWN_TOPIC).await;
    raw.send(
        &Request::CreateTopic(protocol::api::CreateTopicRequest {
            name: "../etc".into(),
            partitions: 1,
            configs: Vec::new(),
        }),
        15,
    )
    .await;
    raw.expect_error(15, ErrorCode::INVALID_TOPIC_NAME).await;
    raw.send(
        &Request::CreateTopic(protocol::api::CreateTopicRequest {
            name: "zero".into(),
            partitions: 0,
            configs: Vec::new(),
        }),
        16,
    )
    .await;
    raw.expect_error(16, ErrorCode::INVALID_PARTITIONS).await;
    raw.send(
        &Request::CreateTopic(protocol::api::CreateTopicRequest {
            name: "t".into(),
            partitions: 1,
            configs: Vec::new(),
        }),
        17,
    )
    .await;
    raw.expect_error(17, ErrorCode::TOPIC_ALREADY_EXISTS).await;
    // Produce: missing topic, missing partition, corrupt batch.
    raw.send(&produce("missing", 0, batch()), 20).await;
    assert_eq!(produce_error(&raw.recv().await.unwrap().1), ErrorCode::UNKNOWN_TOPIC);
    raw.send(&produce("t", 9, batch()), 21).await;
    assert_eq!(produce_error(&raw.recv().await.unwrap().1), ErrorCode::UNKNOWN_PARTITION);
    let mut corrupt = batch().to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xFF;
    raw.send(&produce("t", 0, Bytes::from(corrupt)), 22).await;
    assert_eq!(produce_error(&raw.recv().await.unwrap().1), ErrorCode::INVALID_BATCH);
    raw.send(&produce("t", 0, Bytes::from_static(b"short")), 23).await;
    assert_eq!(produce_error(&raw.recv().await.unwrap().1), ErrorCode::INVALID_BATCH);
    // Fetch beyond the end.
    raw.send(
        &Request::Fetch(FetchRequest {
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 1024,
            topics: vec![FetchTopic {
                name: "t".into(),
                partitions: vec![FetchPartition { partition: 0, offset: Offset(1000), max_bytes: 1024 }],
            }],
        }),
        24,
    )
    .await;
    let (_, body) = raw.recv().await.unwrap();
    match Response::decode(ApiKey::Fetch, body).unwrap() {
        Response::Fetch(t) => assert_eq!(t[0].partitions[0].error, ErrorCode::OFFSET_OUT_OF_RANGE),
        other => panic!("{other:?}"),
    }
    // After all that, this connection still works, and nothing was stored.
    raw.send(&produce("t", 0, batch()), 25).await;
    assert_eq!(produce_error(&raw.recv().await.unwrap().1), ErrorCode::NONE);
    let latest = client.list_offsets("t", &[0], protocol::api::OffsetSpec::Latest).await.unwrap();
    assert_eq!(latest, vec![(0, Offset(1))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_framing_closes_only_that_connection() {
    let broker = Broker::start(&[]);
    let client = Client::connect(ClientConfig::new(broker.addr.clone())).await.unwrap();
    let mut raw = Raw::connect(&broker).await;
    raw.handshake().await;
    // A length shorter than the header: the broker cannot find the next frame.
    raw.send_bytes(&3u32.to_le_bytes()).await;
    let (h, _) = raw.recv().await.expect("an error before the close");
    assert_eq!(h.error, ErrorCode::MALFORMED_REQUEST);
    assert!(raw.recv().await.is_none(), "the connection must be closed");
    // Random garbage on another connection.
    let mut garbage = Raw::connect(&broker).await;
    garbage.send_bytes(&[0xFF; 64]).await;
    drop(garbage);
    // The broker and its other clients carry on.
    client.create_topic("after", 1, TopicConfig::default()).await.unwrap();
    assert_eq!(client.list_topics().await.unwrap().len(), 1);
    assert!(!broker.log().contains("panicked"), "{}", broker.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_refused_with_a_code() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cairn.toml");
    std::fs::write(&config, "shard_ports = false\n[limits]\nconnections_max = 2\n").unwrap();
    let broker = Broker::start(&["--config", config.to_str().unwrap()]);
    let mut first = Raw::connect(&broker).await;
    first.handshake().await;
    let mut second = Raw::connect(&broker).await;
    second.handshake().await;
    let mut third = Raw::connect(&broker).await;
    let (h, body) = third.recv().await.expect("a refusal before the close");
    assert_eq!((h.request_id, h.error), (0, ErrorCode::TOO_MANY_CONNECTIONS), "{}", decode_error_message(body));
    assert!(third.recv().await.is_none());
    // Closing one makes room again.
    drop(first);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut again = Raw::connect(&broker).await;
        again
            .send(&Request::Handshake(HandshakeRequest { protocol_version: PROTOCOL_VERSION, client: "x".into() }), 1)
            .await;
        let (h, _) = again.recv().await.expect("a response");
        if h.error == ErrorCode::NONE {
            break;
        }
        // The broker notices the closed connection asynchronously: poll for
        // it, gently (a tight loop would starve the broker of the 2 cores).
        assert!(std::time::Instant::now() < deadline, "the freed slot was never reused");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
