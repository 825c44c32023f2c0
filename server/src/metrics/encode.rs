//! Shard snapshots → the Prometheus text format, through prometheus-client
//! (a collector over the merged snapshots: the data path never touches the
//! library's atomics).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::{PartitionSnapshot, ShardSnapshot};
use engine::{LATENCY_BUCKETS, LatencyHistogram};

#[derive(Debug)]
struct Snapshots(Vec<ShardSnapshot>);

type Labels = Vec<(&'static str, String)>;

/// One metric family of constant values: `metric` makes each series'
/// metric of type `ty` from its value.
fn const_family<V: Copy, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    (name, help, ty): (&str, &str, MetricType),
    series: &[(Labels, V)],
    metric: impl Fn(V) -> M,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, ty)?;
    for (labels, v) in series {
        metric(*v).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, i64)],
) -> Result<(), std::fmt::Error> {
    const_family(encoder, (name, help, MetricType::Gauge), series, ConstGauge::new)
}

fn counter_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    const_family(encoder, (name, help, MetricType::Counter), series, ConstCounter::new)
}

/// One series per partition of every shard, labelled shard, topic, partition.
fn per_partition<V>(shards: &[ShardSnapshot], f: impl Fn(&PartitionSnapshot) -> V) -> Vec<(Labels, V)> {
    shards
        .iter()
        .flat_map(|s| {
            s.partitions.iter().map(|p| {
                let labels = vec![
                    ("shard", s.shard.to_string()),
                    ("topic", p.topic.clone()),
                    ("partition", p.partition.to_string()),
                ];
                (labels, f(p))
            })
        })
        .collect()
}

fn histogram_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, LatencyHistogram)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in series {
        let buckets: Vec<(f64, u64)> = (0..LATENCY_BUCKETS)
            .map(|i| {
                let bound = if i + 1 == LATENCY_BUCKETS { f64::MAX } else { LatencyHistogram::bucket_bound_s(i) };
                (bound, h.counts[i])
            })
            .collect();
        family.encode_family(labels)?.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            h.sum_us as f64 / 1e6,
            h.count(),
            &buckets,
            None,
        )?;
    }
    Ok(())
}

impl Collector for Snapshots {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let shard = |s: &ShardSnapshot| vec![("shard", s.shard.to_string())];
        let per_shard = |f: &dyn Fn(&ShardSnapshot) -> i64| -> Vec<(Labels, i64)> {
            self.0.iter().map(|s| (shard(s), f(s))).collect()
        };
        gauge_family(&mut encoder, "cairn_connections", "Open client connections", &per_shard(&|s| s.connections))?;
        gauge_family(
            &mut encoder,
            "cairn_inflight_bytes",
            "Bytes of requests and responses held by connection budgets",
            &per_shard(&|s| s.inflight_bytes),
        )?;
        gauge_family(
            &mut encoder,
            "cairn_fetches_waiting",
            "Fetches parked in a long poll",
            &per_shard(&|s| s.fetches_waiting),
        )?;
        gauge_family(
            &mut encoder,
            "cairn_memory_write_buffer_bytes",
            "DMA write buffers held by the shard's partitions",
            &per_shard(&|s| s.pool.write_buffer_bytes as i64),
        )?;
        gauge_family(
            &mut encoder,
            "cairn_memory_cache_bytes",
            "Recent batches cached for tail reads",
            &per_shard(&|s| s.pool.cache_bytes as i64),
        )?;
        gauge_family(
            &mut encoder,
            "cairn_memory_read_ahead_bytes",
            "Read-ahead chunks of cold reads",
            &per_shard(&|s| s.pool.read_ahead_bytes as i64),
        )?;
        gauge_family(
            &mut encoder,
            "cairn_memory_index_cache_bytes",
            "Sparse indexes of sealed segments in the shard's index cache",
            &per_shard(&|s| s.pool.index_cache_bytes as i64),
        )?;
        let requests = |f: &dyn Fn(&super::RequestStats) -> u64| -> Vec<(Labels, u64)> {
            self.0
                .iter()
                .flat_map(|s| {
                    s.requests
                        .iter()
                        .map(move |(api, r)| (vec![("shard", s.shard.to_string()), ("api", api.clone())], r))
                })
                .map(|(l, r)| (l, f(r)))
                .collect()
        };
        counter_family(&mut encoder, "cairn_requests", "Requests handled", &requests(&|r| r.count))?;
        counter_family(
            &mut encoder,
            "cairn_request_errors",
            "Requests answered with an error",
            &requests(&|r| r.errors),
        )?;
        let latencies: Vec<(Labels, LatencyHistogram)> = self
            .0
            .iter()
            .flat_map(|s| {
                s.requests
                    .iter()
                    .map(move |(api, r)| (vec![("shard", s.shard.to_string()), ("api", api.clone())], r.latency))
            })
            .collect();
        histogram_family(
            &mut encoder,
            "cairn_request_latency_seconds",
            "Time from a request's arrival to its response",
            &latencies,
        )?;
        let fsync: Vec<(Labels, LatencyHistogram)> = self
            .0
            .iter()
            .map(|s| {
                let mut h = LatencyHistogram::default();
                for p in &s.partitions {
                    h.merge(&p.fdatasync);
                }
                (shard(s), h)
            })
            .collect();
        histogram_family(&mut encoder, "cairn_fdatasync_latency_seconds", "fdatasync of partition logs", &fsync)?;
        counter_family(
            &mut encoder,
            "cairn_produce_records",
            "Records appended",
            &per_partition(&self.0, |p| p.produce_records),
        )?;
        counter_family(
            &mut encoder,
            "cairn_produce_bytes",
            "Batch bytes appended",
            &per_partition(&self.0, |p| p.produce_bytes),
        )?;
        counter_family(
            &mut encoder,
            "cairn_fetch_records",
            "Records served to fetches",
            &per_partition(&self.0, |p| p.fetch_records),
        )?;
        counter_family(
            &mut encoder,
            "cairn_fetch_bytes",
            "Batch bytes served to fetches",
            &per_partition(&self.0, |p| p.fetch_bytes),
        )?;
        gauge_family(
            &mut encoder,
            "cairn_log_start_offset",
            "First offset of the log",
            &per_partition(&self.0, |p| p.log_start_offset as i64),
        )?;
        gauge_family(
            &mut encoder,
            "cairn_high_watermark",
            "Offsets below this are readable",
            &per_partition(&self.0, |p| p.high_watermark as i64),
        )?;
        gauge_family(
            &mut encoder,
            "cairn_log_end_offset",
            "The next offset to assign",
            &per_partition(&self.0, |p| p.log_end_offset as i64),
        )?;
        gauge_family(
            &mut encoder,
            "cairn_log_size_bytes",
            "Bytes of stored batches",
            &per_partition(&self.0, |p| p.size_bytes as i64),
        )?;
        gauge_family(
            &mut encoder,
            "cairn_log_disk_bytes",
            "Bytes the log's files take, pre-allocated space included",
            &per_partition(&self.0, |p| p.disk_bytes as i64),
        )?;
        counter_family(
            &mut encoder,
            "cairn_cleaner_read_bytes",
            "Bytes the log cleaner read (compaction throughput)",
            &per_partition(&self.0, |p| p.cleaner_read_bytes),
        )?;
        counter_family(
            &mut encoder,
            "cairn_cleaner_removed_bytes",
            "Bytes compaction removed from the log",
            &per_partition(&self.0, |p| p.cleaner_removed_bytes),
        )?;
        gauge_family(
            &mut encoder,
            "cairn_cleaner_dirty_bytes",
            "The cleaner's backlog: sealed, replicated bytes not yet cleaned",
            &per_partition(&self.0, |p| p.cleaner_dirty_bytes as i64),
        )?;
        gauge_family(
            &mut encoder,
            "cairn_partition_available",
            "1 if the partition serves requests, 0 if its storage failed",
            &per_partition(&self.0, |p| i64::from(p.available)),
        )?;
        let lag: Vec<(Labels, i64)> = self
            .0
            .iter()
            .flat_map(|s| {
                s.group_lag.iter().map(|(group, topic, partition, lag)| {
                    let labels =
                        vec![("group", group.clone()), ("topic", topic.clone()), ("partition", partition.to_string())];
                    (labels, i64::try_from(*lag).unwrap_or(i64::MAX))
                })
            })
            .collect();
        gauge_family(
            &mut encoder,
            "cairn_consumer_group_lag",
            "Records a consumer group has yet to commit: the partition's high watermark minus its committed offset",
            &lag,
        )?;
        Ok(())
    }
}

/// The text exposition of every shard's snapshot.
pub fn encode(snapshots: Vec<ShardSnapshot>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshots(snapshots)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{PartitionSnapshot, RequestStats};

    #[test]
    fn snapshots_encode_as_prometheus_text_with_labels() {
        let mut latency = LatencyHistogram::default();
        latency.record(std::time::Duration::from_micros(300));
        let snapshot = ShardSnapshot {
            shard: 1,
            connections: 3,
            inflight_bytes: 100,
            fetches_waiting: 2,
            requests: vec![("produce".into(), RequestStats { count: 5, errors: 1, latency })],
            partitions: vec![PartitionSnapshot {
                topic: "orders".into(),
                partition: 7,
                produce_records: 42,
                produce_bytes: 4200,
                fetch_records: 40,
                fetch_bytes: 4000,
                log_start_offset: 0,
                high_watermark: 42,
                log_end_offset: 42,
                size_bytes: 4200,
                disk_bytes: 65536,
                cleaner_read_bytes: 9000,
                cleaner_removed_bytes: 3000,
                cleaner_dirty_bytes: 1200,
                available: true,
                fdatasync: latency,
            }],
            pool: engine::PoolUsage::default(),
            group_lag: vec![("billing".into(), "orders".into(), 7, 42)],
        };
        let text = encode(vec![snapshot]);
        assert!(text.contains("cairn_connections{shard=\"1\"} 3"), "{text}");
        assert!(text.contains("cairn_fetches_waiting{shard=\"1\"} 2"), "{text}");
        assert!(
            text.contains("cairn_produce_records_total{shard=\"1\",topic=\"orders\",partition=\"7\"} 42"),
            "{text}"
        );
        assert!(text.contains("cairn_high_watermark{shard=\"1\",topic=\"orders\",partition=\"7\"} 42"), "{text}");
        assert!(
            text.contains("cairn_cleaner_read_bytes_total{shard=\"1\",topic=\"orders\",partition=\"7\"} 9000"),
            "{text}"
        );
        assert!(
            text.contains("cairn_cleaner_dirty_bytes{shard=\"1\",topic=\"orders\",partition=\"7\"} 1200"),
            "{text}"
        );
        assert!(text.contains("cairn_request_latency_seconds_count{shard=\"1\",api=\"produce\"} 1"), "{text}");
        assert!(
            text.contains("cairn_request_latency_seconds_bucket{le=\"+Inf\",shard=\"1\",api=\"produce\"} 1")
                || text.contains("cairn_request_latency_seconds_bucket{shard=\"1\",api=\"produce\",le=\"+Inf\"} 1"),
            "{text}"
        );
        assert!(text.contains("# TYPE cairn_fdatasync_latency_seconds histogram"), "{text}");
        assert!(
            text.contains("cairn_consumer_group_lag{group=\"billing\",topic=\"orders\",partition=\"7\"} 42"),
            "{text}"
        );
    }
}
