//! Producers and consumers. A producer runs closed loop (as fast as the
//! producer's buffer allows) or open loop at a fixed rate, where each
//! record's latency counts from its *intended* send time: if the broker
//! stalls, the records that should have been sent meanwhile are charged
//! the stall (no coordinated omission).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_client::{Client, Consumer, ConsumerConfig, Deliveries, Offset, Producer, ProducerConfig, Record, StartFrom};
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
    /// Latency of the records whose intended send time is in the window:
    /// from the intended send time to the acknowledgement...
    pub latency: Histogram<u64>,
    /// ...split at the moment the producer sent the record's request: time
    /// queued in the producer, and time from request to acknowledgement.
    pub queue: Histogram<u64>,
    pub request: Histogram<u64>,
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

impl ProduceResult {
    pub fn new() -> ProduceResult {
        ProduceResult {
            latency: histogram(),
            queue: histogram(),
            request: histogram(),
            measured: 0,
            measured_bytes: 0,
            acked: 0,
            errors: 0,
            retries: 0,
            first_error: None,
            intervals: Vec::new(),
            interval_bytes: Vec::new(),
        }
    }

    /// Counts `n` records of `bytes` value bytes, meant to be sent at
    /// `intended`, that the producer sent at `sent` and saw acknowledged
    /// at `acked`.
    #[allow(clippy::too_many_arguments)]
    pub fn acknowledged(
        &mut self,
        window: (Instant, Instant, Instant),
        intended: Instant,
        sent: Instant,
        acked: Instant,
        n: u64,
        bytes: u64,
    ) {
        let (start, measure_from, stop_at) = window;
        let us = |d: Duration| (d.as_micros() as u64).clamp(1, crate::stats::LATENCY_US_MAX);
        let total = us(acked.saturating_duration_since(intended));
        self.acked += n;
        let second = acked.saturating_duration_since(start).as_secs() as usize;
        while self.intervals.len() <= second {
            self.intervals.push(histogram());
            self.interval_bytes.push(0);
        }
        let _ = self.intervals[second].record_n(total, n);
        self.interval_bytes[second] += bytes;
        // Latency: records meant to be sent in the window.
        if intended >= measure_from && intended < stop_at {
            let _ = self.latency.record_n(total, n);
            let _ = self.queue.record_n(us(sent.saturating_duration_since(intended)), n);
            let _ = self.request.record_n(us(acked.saturating_duration_since(sent)), n);
        }
        // Throughput: records acknowledged in the window, so a broker that
        // falls behind the asked-for rate shows it.
        if acked >= measure_from && acked < stop_at {
            self.measured += n;
            self.measured_bytes += bytes;
        }
    }

    /// Adds another producer's (or lane's) counts to these.
    pub fn merge(&mut self, other: ProduceResult) {
        self.latency.add(&other.latency).expect("same bounds");
        self.queue.add(&other.queue).expect("same bounds");
        self.request.add(&other.request).expect("same bounds");
        self.measured += other.measured;
        self.measured_bytes += other.measured_bytes;
        self.acked += other.acked;
        self.errors += other.errors;
        self.retries += other.retries;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        for (i, h) in other.intervals.iter().enumerate() {
            if self.intervals.len() <= i {
                self.intervals.resize_with(i + 1, histogram);
                self.interval_bytes.resize(i + 1, 0);
            }
            self.intervals[i].add(h).expect("same bounds");
            self.interval_bytes[i] += other.interval_bytes[i];
        }
    }

    pub fn failed(&mut self, n: u64, e: &dyn std::fmt::Display) {
        self.errors += n;
        self.first_error.get_or_insert_with(|| e.to_string());
    }
}

/// Counters the progress display reads.
#[derive(Default)]
pub struct Progress {
    pub acked: AtomicU64,
    pub consumed: AtomicU64,
}

/// Records per bulk send in closed loop: enough to make a call's cost
/// vanish per record, few enough that its records share a send time
/// honestly (128 records of 100 B take well under a microsecond to queue).
const CHUNK_RECORDS: usize = 128;

/// When a chunk's records were meant to be sent.
#[derive(Clone, Copy)]
enum Intended {
    /// All at once (closed loop: when the call began).
    At(Instant),
    /// Record `k` of the chunk at `start + (first + k) / rate` (open loop).
    Paced { start: Instant, rate: f64, first: u64 },
}

impl Intended {
    fn of(self, k: u64) -> Instant {
        match self {
            Intended::At(t) => t,
            Intended::Paced { start, rate, first } => start + Duration::from_secs_f64((first + k) as f64 / rate),
        }
    }
}

/// One bulk send on its way: its records' value sizes and the batches
/// they went into.
struct Chunk {
    intended: Intended,
    value_bytes: Vec<u32>,
    deliveries: Deliveries,
}

pub async fn produce(
    client: Client,
    config: ProducerConfig,
    spec: ProduceSpec,
    progress: Arc<Progress>,
) -> ProduceResult {
    let producer = Producer::new(client, config);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(1 << 12);
    let window = (spec.start, spec.measure_from, spec.stop_at);
    let waiter = tokio::spawn(async move {
        let mut result = ProduceResult::new();
        while let Some(chunk) = rx.recv().await {
            let mut k = 0u64;
            for part in chunk.deliveries.wait().await {
                let n = u64::from(part.records);
                let bytes: u64 = chunk.value_bytes[k as usize..(k + n) as usize].iter().map(|&b| u64::from(b)).sum();
                match part.metadata {
                    // The producer's own send and acknowledgement times: this
                    // loop may reach a batch after a later-acknowledged one.
                    Ok(meta) => match chunk.intended {
                        Intended::At(t) => result.acknowledged(window, t, meta.sent_at, meta.acknowledged_at, n, bytes),
                        paced @ Intended::Paced { .. } => {
                            for i in k..k + n {
                                let b = u64::from(chunk.value_bytes[i as usize]);
                                result.acknowledged(window, paced.of(i), meta.sent_at, meta.acknowledged_at, 1, b);
                            }
                        }
                    },
                    Err(e) => result.failed(n, &e),
                }
                progress.acked.fetch_add(n, Ordering::Relaxed);
                k += n;
            }
        }
        result
    });
    let mut maker = RecordMaker::new(spec.seed, spec.keys, spec.key_distribution, spec.zipf_exponent, spec.sizes);
    let topic = spec.topic.clone();
    let records_max = spec.records_max.unwrap_or(u64::MAX);
    // A send refused outright (not a failed delivery) ends this producer.
    let mut send_error = None;
    match spec.rate {
        None => {
            let mut sent = 0u64;
            let mut plan = Vec::with_capacity(CHUNK_RECORDS);
            while Instant::now() < spec.stop_at && sent < records_max {
                let intended = Instant::now();
                let n = (records_max - sent).min(CHUNK_RECORDS as u64);
                plan.clear();
                plan.extend((0..n).map(|_| maker.next_plan()));
                match send_chunk(&producer, &topic, &maker, &plan).await {
                    Ok(deliveries) => {
                        let value_bytes = plan.iter().map(|&(_, len)| len).collect();
                        if tx.send(Chunk { intended: Intended::At(intended), value_bytes, deliveries }).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        send_error = Some(e.to_string());
                        break;
                    }
                }
                sent += n;
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
                let mut plan = Vec::new();
                pace(rate, stop_at, records_max, |start, first, n| {
                    plan.clear();
                    plan.extend((0..n).map(|_| maker.next_plan()));
                    match handle.block_on(send_chunk(&producer, &topic, &maker, &plan)) {
                        Ok(deliveries) => {
                            let value_bytes = plan.iter().map(|&(_, len)| len).collect();
                            let intended = Intended::Paced { start, rate, first };
                            tx.blocking_send(Chunk { intended, value_bytes, deliveries }).is_ok()
                        }
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
        result.failed(1, &e);
    }
    result
}

/// Hands a planned chunk to the producer as borrowed records: one call,
/// one lock, one clock read.
async fn send_chunk(
    producer: &Producer,
    topic: &str,
    maker: &RecordMaker,
    plan: &[(Option<u32>, u32)],
) -> cairn_client::Result<Deliveries> {
    // Collected first: an iterator of closures over borrowed records in a
    // future that must be `Send` trips the compiler's lifetime inference.
    let records: Vec<Record<'_>> = plan
        .iter()
        .map(|&(key, len)| Record {
            key: key.map(|k| maker.key_bytes(k)),
            value: Some(maker.value_bytes(len)),
            ..Record::default()
        })
        .collect();
    Ok(producer.send_all(topic, records).await?)
}

/// The pacer's shortest sleep.
const PACE_STEP: Duration = Duration::from_micros(100);
/// The most records one paced call sends (a stall's backlog goes out in
/// calls of this size).
const PACE_CHUNK_MAX: u64 = 4096;

/// Calls `send(start, first, n)` for records `first..first + n`, record `i`
/// being due at `start + i / rate` (`rate` > 0), with every record that is
/// due by then, until `stop_at`, `records_max` records, or `send` says stop.
/// Latency is to be counted from each record's due time, so sends delayed by
/// a stalled `send` are charged for the stall.
pub fn pace(rate: f64, stop_at: Instant, records_max: u64, mut send: impl FnMut(Instant, u64, u64) -> bool) {
    // Ask the kernel for precise sleeps on this thread (default slack is 50 µs).
    // SAFETY: prctl with PR_SET_TIMERSLACK only changes this thread's timer slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0) };
    let start = Instant::now();
    let due_at = |i: u64| start + Duration::from_secs_f64(i as f64 / rate);
    let mut next = 0u64;
    while next < records_max {
        // Stop at the end of the window by the clock too: a broker that
        // cannot keep up gets fewer records, not a longer run.
        let now = Instant::now();
        if due_at(next) >= stop_at || now >= stop_at {
            return;
        }
        let intended = due_at(next);
        if intended > now {
            // Sleep at least PACE_STEP: records due meanwhile go out
            // together (each still timed from its own due time), so
            // pacing does not cost a context switch per record.
            std::thread::sleep((intended - now).max(PACE_STEP));
        }
        let elapsed = Instant::now().saturating_duration_since(start).as_secs_f64();
        let due = ((elapsed * rate).floor() as u64 + 1).min(records_max);
        let n = due.saturating_sub(next).clamp(1, PACE_CHUNK_MAX);
        // Never past the window's end.
        let n = (0..n).take_while(|k| due_at(next + k) < stop_at).count() as u64;
        if n == 0 {
            return;
        }
        if !send(start, next, n) {
            return;
        }
        next += n;
    }
}

pub struct ConsumeResult {
    pub records: u64,
    /// Read within the measured window (`measure_from` to `stop_at`), and their value bytes.
    pub measured: u64,
    pub measured_bytes: u64,
    /// Now minus record timestamp (millisecond resolution), within the window.
    pub end_to_end: Histogram<u64>,
    /// Request to response of each fetch, within the window.
    pub fetch: Histogram<u64>,
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
        fetch: histogram(),
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
                let in_window = at >= measure_from && stop_at.is_none_or(|s| at < s);
                for took in consumer.drain_fetch_latencies() {
                    if in_window {
                        record(&mut result.fetch, took.as_micros() as u64);
                    }
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
        pace(1000.0, Instant::now() + Duration::from_millis(400), u64::MAX, |start, first, n| {
            let sent = Instant::now();
            if i == stall_at {
                std::thread::sleep(Duration::from_millis(100));
            }
            let done = Instant::now();
            for k in first..first + n {
                let intended = start + Duration::from_secs_f64(k as f64 / 1000.0);
                record(&mut h, done.duration_since(intended).as_micros() as u64);
                record(&mut from_send, done.duration_since(sent).as_micros() as u64);
            }
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
        pace(1_000_000.0, Instant::now() + Duration::from_mins(1), 500, |_, first, k| {
            assert_eq!(first, n, "records are handed out in order, each once");
            n += k;
            true
        });
        assert_eq!(n, 500);
    }
}
