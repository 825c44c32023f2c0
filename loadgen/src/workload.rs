//! Producers and consumers. A producer runs closed loop (as fast as the
//! producer's buffer allows) or open loop at a fixed rate, where each
//! record's latency counts from its *intended* send time: if the broker
//! stalls, the records that should have been sent meanwhile are charged
//! the stall (no coordinated omission).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_client::{
    Client, Consumer, ConsumerConfig, Delivery, Offset, Producer, ProducerConfig, ProducerRecord, StartFrom,
};
use hdrhistogram::Histogram;

use crate::keys::{KeyDistribution, RecordMaker, SizeRange};
use crate::stats::{histogram, record};

#[derive(Debug, Clone)]
pub struct ProduceSpec {
    pub topic: String,
    pub sizes: SizeRange,
    /// Distinct keys; 0 sends unkeyed records.
    pub keys: u64,
    pub key_distribution: KeyDistribution,
    pub zipf_exponent: f64,
    pub seed: u64,
    /// Records per second for this producer; `None` is closed loop.
    pub rate: Option<f64>,
    /// The run's origin: intervals count from here.
    pub start: Instant,
    /// Records before this are sent but not measured.
    pub measure_from: Instant,
    pub stop_at: Instant,
    /// Stop after this many records, if sooner.
    pub records_max: Option<u64>,
}

pub struct ProduceResult {
    /// Latency of the records whose intended send time is in the window.
    pub latency: Histogram<u64>,
    /// Acknowledged within the measured window, and their value bytes.
    pub measured: u64,
    pub measured_bytes: u64,
    /// All acknowledged, warm-up included.
    pub acked: u64,
    pub errors: u64,
    pub retries: u64,
    pub first_error: Option<String>,
    /// Latency of the records acknowledged in each second since the start.
    pub intervals: Vec<Histogram<u64>>,
    /// Value bytes acknowledged in each second since the start.
    pub interval_bytes: Vec<u64>,
}

/// Counters the progress display reads.
#[derive(Default)]
pub struct Progress {
    pub acked: AtomicU64,
    pub consumed: AtomicU64,
}

/// One record's way from intended send time to acknowledgement.
struct Sent {
    intended: Instant,
    bytes: u64,
    delivery: Delivery,
}

pub async fn produce(
    client: Client,
    config: ProducerConfig,
    spec: ProduceSpec,
    progress: Arc<Progress>,
) -> ProduceResult {
    let producer = Producer::new(client, config);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Sent>(1 << 16);
    let (start, measure_from, stop_at) = (spec.start, spec.measure_from, spec.stop_at);
    let waiter = tokio::spawn(async move {
        let mut result = ProduceResult {
            latency: histogram(),
            measured: 0,
            measured_bytes: 0,
            acked: 0,
            errors: 0,
            retries: 0,
            first_error: None,
            intervals: Vec::new(),
            interval_bytes: Vec::new(),
        };
        while let Some(sent) = rx.recv().await {
            match sent.delivery.wait().await {
                Ok(meta) => {
                    // The producer's own acknowledgement time: this loop may
                    // reach a record after a later-acknowledged one.
                    let done = meta.acknowledged_at;
                    let us = done.saturating_duration_since(sent.intended).as_micros() as u64;
                    progress.acked.fetch_add(1, Ordering::Relaxed);
                    result.acked += 1;
                    let second = done.saturating_duration_since(start).as_secs() as usize;
                    while result.intervals.len() <= second {
                        result.intervals.push(histogram());
                        result.interval_bytes.push(0);
                    }
                    record(&mut result.intervals[second], us);
                    result.interval_bytes[second] += sent.bytes;
                    // Latency: records meant to be sent in the window.
                    if sent.intended >= measure_from && sent.intended < stop_at {
                        record(&mut result.latency, us);
                    }
                    // Throughput: records acknowledged in the window, so a
                    // broker that falls behind the asked-for rate shows it.
                    if done >= measure_from && done < stop_at {
                        result.measured += 1;
                        result.measured_bytes += sent.bytes;
                    }
                }
                Err(e) => {
                    result.errors += 1;
                    result.first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        result
    });
    let mut maker = RecordMaker::new(spec.seed, spec.keys, spec.key_distribution, spec.zipf_exponent, spec.sizes);
    let topic = spec.topic.clone();
    let mut next_record = move || {
        let value = maker.value();
        let bytes = value.len() as u64;
        let record =
            ProducerRecord { topic: topic.clone(), key: maker.key(), value: Some(value), ..ProducerRecord::default() };
        (record, bytes)
    };
    let records_max = spec.records_max.unwrap_or(u64::MAX);
    // A send refused outright (not a failed delivery) ends this producer.
    let mut send_error = None;
    match spec.rate {
        None => {
            let mut sent = 0;
            while Instant::now() < spec.stop_at && sent < records_max {
                let intended = Instant::now();
                let (record, bytes) = next_record();
                match producer.send(record).await {
                    Ok(delivery) => {
                        if tx.send(Sent { intended, bytes, delivery }).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        send_error = Some(e.to_string());
                        break;
                    }
                }
                sent += 1;
            }
        }
        Some(rate) => {
            // Open loop: a thread paces sends with sub-millisecond sleeps
            // (tokio's timer ticks in whole milliseconds, which would add up
            // to a millisecond of send delay to every record).
            let producer = producer.clone();
            let tx = tx.clone();
            let handle = tokio::runtime::Handle::current();
            let stop_at = spec.stop_at;
            send_error = tokio::task::spawn_blocking(move || {
                let mut error = None;
                pace(rate, stop_at, records_max, |intended| {
                    let (record, bytes) = next_record();
                    match handle.block_on(producer.send(record)) {
                        Ok(delivery) => tx.blocking_send(Sent { intended, bytes, delivery }).is_ok(),
                        Err(e) => {
                            error = Some(e.to_string());
                            false
                        }
                    }
                });
                error
            })
            .await
            .expect("the pacer does not panic");
        }
    }
    drop(tx);
    producer.flush().await;
    let mut result = waiter.await.expect("the delivery waiter does not panic");
    result.retries = producer.retries();
    if let Some(e) = send_error {
        result.errors += 1;
        result.first_error.get_or_insert(e);
    }
    result
}

/// The pacer's shortest sleep.
const PACE_STEP: Duration = Duration::from_micros(100);

/// Calls `send(intended)` for record `i` at `start + i / rate` (`rate` > 0),
/// until `stop_at`, `records_max` records, or `send` says stop. Latency is to be
/// counted from `intended`, so sends delayed by a stalled `send` are
/// charged for the stall.
pub fn pace(rate: f64, stop_at: Instant, records_max: u64, mut send: impl FnMut(Instant) -> bool) {
    // Ask the kernel for precise sleeps on this thread (default slack is 50 µs).
    // SAFETY: prctl with PR_SET_TIMERSLACK only changes this thread's timer slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0) };
    let start = Instant::now();
    for i in 0..records_max {
        let intended = start + Duration::from_secs_f64(i as f64 / rate);
        // Stop at the end of the window by the clock too: a broker that
        // cannot keep up gets fewer records, not a longer run.
        if intended >= stop_at || Instant::now() >= stop_at {
            return;
        }
        let now = Instant::now();
        if intended > now {
            // Sleep at least PACE_STEP: records due meanwhile go out
            // together (each still timed from its own intended time), so
            // pacing does not cost a context switch per record.
            std::thread::sleep((intended - now).max(PACE_STEP));
        }
        if !send(intended) {
            return;
        }
    }
}

pub struct ConsumeResult {
    pub records: u64,
    /// Read within the measured window (`measure_from` to `stop_at`), and their value bytes.
    pub measured: u64,
    pub measured_bytes: u64,
    /// Now minus record timestamp (millisecond resolution), within the window.
    pub end_to_end: Histogram<u64>,
    /// Records, and value bytes, read in each second since the start.
    pub per_second: Vec<u64>,
    pub bytes_per_second: Vec<u64>,
    pub elapsed: Duration,
    pub bytes: u64,
    pub error: Option<String>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// What a consumer reads and for how long.
pub struct ConsumeSpec {
    pub topic: String,
    /// All partitions when empty.
    pub partitions: Vec<u32>,
    pub from: StartFrom,
    /// Stop after this many records...
    pub target: Option<u64>,
    /// ...or at this time.
    pub stop_at: Option<Instant>,
    pub start: Instant,
    /// End-to-end latency counts from here.
    pub measure_from: Instant,
    /// Set once the producers are done: the log end offsets to read up to.
    pub end_offsets: Arc<std::sync::OnceLock<std::collections::BTreeMap<u32, Offset>>>,
}

pub async fn consume(client: Client, spec: ConsumeSpec, progress: Arc<Progress>) -> ConsumeResult {
    let ConsumeSpec { topic, partitions, from, target, stop_at, start, measure_from, end_offsets } = spec;
    let config = ConsumerConfig { fetch_wait_max: Duration::from_millis(100), ..ConsumerConfig::default() };
    let mut result = ConsumeResult {
        records: 0,
        measured: 0,
        measured_bytes: 0,
        end_to_end: histogram(),
        per_second: Vec::new(),
        bytes_per_second: Vec::new(),
        elapsed: Duration::ZERO,
        bytes: 0,
        error: None,
    };
    let mut consumer = match Consumer::assign(client, config, &topic, &partitions, from).await {
        Ok(c) => c,
        Err(e) => {
            result.error = Some(e.to_string());
            return result;
        }
    };
    let began = Instant::now();
    loop {
        if target.is_some_and(|t| result.records >= t) || stop_at.is_some_and(|s| Instant::now() >= s) {
            break;
        }
        if let Some(ends) = end_offsets.get()
            && consumer.positions().iter().all(|(p, pos)| ends.get(p).is_none_or(|end| pos >= end))
        {
            break;
        }
        match consumer.poll().await {
            Ok(records) => {
                let now = now_ms();
                let at = Instant::now();
                let bytes: u64 = records.iter().map(|r| r.value.as_ref().map_or(0, |v| v.len() as u64)).sum();
                if at >= measure_from && stop_at.is_none_or(|s| at < s) {
                    for r in &records {
                        record(&mut result.end_to_end, ((now - r.timestamp.0).max(0) as u64) * 1000);
                    }
                    result.measured += records.len() as u64;
                    result.measured_bytes += bytes;
                }
                let second = at.duration_since(start).as_secs() as usize;
                if result.per_second.len() <= second {
                    result.per_second.resize(second + 1, 0);
                    result.bytes_per_second.resize(second + 1, 0);
                }
                result.per_second[second] += records.len() as u64;
                result.bytes_per_second[second] += bytes;
                result.records += records.len() as u64;
                result.bytes += bytes;
                progress.consumed.fetch_add(records.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                result.error = Some(e.to_string());
                break;
            }
        }
    }
    result.elapsed = began.elapsed();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::LatencySummary;

    /// A "broker" that answers at once except for one 100 ms stall: paced at
    /// 1,000 records/s, every record whose intended time fell in the stall
    /// is charged for it, not just the one that hit it.
    #[test]
    fn open_loop_latency_counts_from_the_intended_time() {
        let mut h = histogram();
        let mut from_send = histogram();
        let mut i = 0;
        let stall_at = 50;
        pace(1000.0, Instant::now() + Duration::from_millis(400), u64::MAX, |intended| {
            let sent = Instant::now();
            if i == stall_at {
                std::thread::sleep(Duration::from_millis(100));
            }
            let done = Instant::now();
            record(&mut h, done.duration_since(intended).as_micros() as u64);
            record(&mut from_send, done.duration_since(sent).as_micros() as u64);
            i += 1;
            true
        });
        let corrected = LatencySummary::of(&h);
        let naive = LatencySummary::of(&from_send);
        let slow = h.count_between(20_000, u64::MAX);
        // About 100 records were due during the stall; the one that hit it
        // waited 100 ms, the last ones almost nothing.
        assert!(slow >= 60, "only {slow} records were charged for the stall");
        assert!(corrected.p90_us >= 10_000, "{corrected:?}");
        assert!(from_send.count_between(20_000, u64::MAX) <= 3, "timing from the send hides the stall: {naive:?}");
    }

    #[test]
    fn a_record_limit_stops_the_pacer() {
        let mut n = 0;
        pace(1_000_000.0, Instant::now() + Duration::from_mins(1), 500, |_| {
            n += 1;
            true
        });
        assert_eq!(n, 500);
    }
}
