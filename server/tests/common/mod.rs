//! Helpers for simulator tests of the whole broker: a small configuration,
//! and the native requests they send.

#![allow(dead_code)] // each test file uses its own share of these

use bytes::Bytes;
use engine::rt::sim::SIM_EPOCH_MS;
use engine::types::{Offset, Timestamp};
use protocol::ErrorCode;
use protocol::api::{
    Acks, CreateTopicRequest, FetchPartition, FetchRequest, FetchTopic, ProducePartition, ProduceRequest, ProduceTopic,
    Request, Response,
};
use protocol::batch::{BatchBuilder, RecordInput};
use server::config::ServerConfig;
use server::sim::SimClient;

pub fn config() -> ServerConfig {
    let mut c = ServerConfig {
        data_dir: "/data".into(),
        listen: "10.0.0.1:7070".parse().unwrap(),
        metrics_listen: "off".into(),
        shard_ports: false,
        ..ServerConfig::default()
    };
    // Small segments, so rolls happen.
    c.log.segment_bytes_max = 96 << 10;
    c.limits.batch_bytes_max = 16 << 10;
    c.limits.frame_bytes_max = 64 << 10;
    c.limits.fetch_bytes_max = 256 << 10;
    c.limits.connection_inflight_bytes_max = 1 << 20;
    c
}

pub fn batch(values: &[String]) -> Bytes {
    let mut b = BatchBuilder::new();
    for v in values {
        b.push(RecordInput::new(None, Some(v.as_bytes()), Timestamp(SIM_EPOCH_MS)));
    }
    Bytes::from(b.build().unwrap())
}

pub async fn create(
    client: &mut SimClient,
    topic: &str,
    partitions: u32,
    configs: &[(&str, &str)],
) -> Result<(), ErrorCode> {
    let request = Request::CreateTopic(CreateTopicRequest {
        name: topic.into(),
        partitions,
        configs: configs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
    });
    client.call(&request).await.map(|_| ()).map_err(|(code, _)| code)
}

/// Produces one batch; its base offset, or the partition's error code.
pub async fn produce(
    client: &mut SimClient,
    topic: &str,
    partition: u32,
    values: &[String],
) -> Result<Offset, ErrorCode> {
    let request = Request::Produce(ProduceRequest {
        acks: Acks::Leader,
        timeout_ms: 60_000,
        topics: vec![ProduceTopic {
            name: topic.into(),
            partitions: vec![ProducePartition { partition, batch: batch(values) }],
        }],
    });
    match client.call(&request).await {
        Ok(Response::Produce(t)) => {
            let p = &t[0].partitions[0];
            if p.error.is_ok() { Ok(p.base_offset) } else { Err(p.error) }
        }
        Ok(other) => panic!("{other:?}"),
        Err((code, _)) => Err(code),
    }
}

pub fn fetch_request(
    topic: &str,
    parts: &[(u32, Offset)],
    max_wait_ms: u32,
    min_bytes: u32,
    max_bytes: u32,
) -> Request {
    Request::Fetch(FetchRequest {
        max_wait_ms,
        min_bytes,
        max_bytes,
        topics: vec![FetchTopic {
            name: topic.into(),
            partitions: parts
                .iter()
                .map(|&(partition, offset)| FetchPartition { partition, offset, max_bytes })
                .collect(),
        }],
    })
}

/// The values of every record of `partition` from `from` on.
pub async fn read_values(client: &mut SimClient, topic: &str, partition: u32, from: Offset) -> Vec<String> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let Ok(Response::Fetch(t)) = client.call(&fetch_request(topic, &[(partition, offset)], 0, 0, 1 << 20)).await
        else {
            panic!("fetch failed")
        };
        let p = &t[0].partitions[0];
        assert!(p.error.is_ok(), "{topic}/{partition}@{offset}: {:?}", p.error);
        if p.batches.is_empty() {
            return out;
        }
        for b in &p.batches {
            let view = protocol::batch::validate_batch(b).unwrap();
            for r in view.records().unwrap().iter() {
                let at = view.header.base_offset.plus(u64::from(r.offset_delta.to_native()));
                if at >= offset {
                    out.push(String::from_utf8(r.value.as_ref().unwrap().as_slice().to_vec()).unwrap());
                }
            }
            offset = offset.max(view.header.next_offset());
        }
    }
}

pub fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:04}-{}", "x".repeat(40))).collect()
}
