//! Broker-only mode: produce requests of batches built before the run
//! (as iggy-bench sends pre-built messages), so the figure is what the
//! broker takes, with the client's per-record work out of the picture.
//! Each shard gets `requests_in_flight` lanes; a lane sends one request
//! (one batch per partition of the shard, up to the request size), waits
//! for its answer, and sends the next. Latency is request to
//! acknowledgement; there is no queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use cairn_client::{Acks, Client};
use protocol::api::{ProducePartition, ProduceRequest, ProduceTopic, Request, Response};
use protocol::batch::{BatchEncoder, RecordRef};
use protocol::types::Timestamp;

use crate::keys::RecordMaker;
use crate::workload::{ProduceResult, ProduceSpec, Progress};

/// Batch size when none is asked for: about iggy-bench's 1000 messages of
/// 100 B a batch, twice over (the producer's own default, 512 KiB, makes
/// fewer, longer requests, and with one in flight per lane, less overlap).
pub const BATCH_BYTES_DEFAULT: usize = 256 << 10;

/// Distinct batches built per partition; requests cycle through them.
const BATCHES_PER_PARTITION: usize = 4;

/// One partition's pre-built batches: (bytes, records, value bytes).
type Prebuilt = Vec<(Bytes, u64, u64)>;

pub struct BrokerOnly {
    pub batch_bytes: usize,
    pub request_bytes: usize,
    pub requests_in_flight: usize,
    pub acks: Acks,
}

fn build(maker: &mut RecordMaker, batch_bytes: usize) -> Prebuilt {
    let now = Timestamp(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64),
    );
    (0..BATCHES_PER_PARTITION)
        .map(|_| {
            let mut encoder = BatchEncoder::new(batch_bytes);
            let mut value_bytes = 0;
            while encoder.is_empty() || encoder.encoded_bytes() < batch_bytes {
                let (key, len) = maker.next_plan();
                let record = RecordRef {
                    key: key.map(|k| maker.key_bytes(k)),
                    value: Some(maker.value_bytes(len)),
                    headers: &[],
                    timestamp: now,
                };
                if !encoder.is_empty() && encoder.encoded_bytes() + BatchEncoder::record_bytes(&record) > batch_bytes {
                    break;
                }
                encoder.push(&record).expect("a batch of the size asked for");
                value_bytes += u64::from(len);
            }
            let records = encoder.len() as u64;
            (Bytes::from(encoder.finish().expect("encodes")), records, value_bytes)
        })
        .collect()
}

pub async fn produce(client: Client, how: BrokerOnly, spec: ProduceSpec, progress: Arc<Progress>) -> ProduceResult {
    let mut result = ProduceResult::new();
    let partitions = match client.partitions(&spec.topic).await {
        Ok(n) => n,
        Err(e) => {
            result.failed(1, &e);
            return result;
        }
    };
    let mut maker = RecordMaker::new(spec.seed, spec.keys, spec.key_distribution, spec.zipf_exponent, spec.sizes);
    let prebuilt: Arc<Vec<Prebuilt>> = Arc::new((0..partitions).map(|_| build(&mut maker, how.batch_bytes)).collect());
    let mut by_shard: std::collections::BTreeMap<cairn_client::Route, Vec<u32>> = std::collections::BTreeMap::new();
    for p in 0..partitions {
        by_shard.entry(client.route_of(&spec.topic, p)).or_default().push(p);
    }
    let sent = Arc::new(AtomicU64::new(0));
    let records_max = spec.records_max.unwrap_or(u64::MAX);
    let mut lanes = Vec::new();
    for (shard, parts) in by_shard {
        for _ in 0..how.requests_in_flight.max(1) {
            let (client, prebuilt, parts, sent, progress) =
                (client.clone(), prebuilt.clone(), parts.clone(), sent.clone(), progress.clone());
            let (topic, acks, request_bytes) = (spec.topic.clone(), how.acks, how.request_bytes);
            let window = (spec.start, spec.measure_from, spec.stop_at);
            lanes.push(tokio::spawn(async move {
                let mut result = ProduceResult::new();
                let mut turn = 0usize;
                while Instant::now() < window.2 && sent.load(Ordering::Relaxed) < records_max {
                    let (mut records, mut bytes, mut size) = (0, 0, 0);
                    let mut batches = Vec::new();
                    for &p in &parts {
                        let (batch, n, b) = &prebuilt[p as usize][turn % BATCHES_PER_PARTITION];
                        if !batches.is_empty() && size + batch.len() > request_bytes {
                            break;
                        }
                        size += batch.len();
                        records += n;
                        bytes += b;
                        batches.push(ProducePartition { partition: p, batch: batch.clone() });
                    }
                    turn += 1;
                    sent.fetch_add(records, Ordering::Relaxed);
                    let request = Request::Produce(ProduceRequest {
                        acks,
                        timeout_ms: 30_000,
                        topics: vec![ProduceTopic { name: topic.clone(), partitions: batches }],
                    });
                    let started = Instant::now();
                    let answer = match client.connection_for(shard).await {
                        Ok(conn) if acks == Acks::None => conn.send_only(&request).await.map(|()| None),
                        Ok(conn) => conn.call(&request).await.map(Some),
                        Err(e) => Err(e),
                    };
                    let acked = Instant::now();
                    let failed = match answer {
                        Ok(None) => None,
                        Ok(Some(Response::Produce(topics))) => topics
                            .iter()
                            .flat_map(|t| &t.partitions)
                            .find(|p| !p.error.is_ok())
                            .map(|p| format!("partition {}: {}", p.partition, p.error)),
                        Ok(Some(other)) => Some(format!("unexpected answer {other:?}")),
                        Err(e) => Some(e.to_string()),
                    };
                    match failed {
                        None => {
                            result.acknowledged(window, started, started, acked, records, bytes);
                            progress.acked.fetch_add(records, Ordering::Relaxed);
                        }
                        Some(e) => {
                            result.failed(records, &e);
                            break;
                        }
                    }
                }
                result
            }));
        }
    }
    for lane in lanes {
        let r = lane.await.expect("a lane does not panic");
        result.merge(r);
    }
    result
}
