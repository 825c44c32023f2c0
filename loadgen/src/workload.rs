//! Producers and consumers. A producer runs closed loop (as fast as the
//! producer's buffer allows) or open loop at a fixed rate, where each
//! record's latency counts from its *intended* send time: if the broker
//! stalls, the records that should have been sent meanwhile are charged
//! the stall (no coordinated omission).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cairn_client::{Client, Consumer, ConsumerConfig, Delivery, Producer, ProducerConfig, ProducerRecord, StartFrom};
use hdrhistogram::Histogram;

use crate::stats::{histogram, record};

#[derive(Debug, Clone)]
pub struct ProduceSpec {
    pub topic: String,
    pub record_bytes: usize,
    /// Distinct keys; 0 sends unkeyed records.
    pub keys: u64,
    /// Records per second for this producer; `None` is closed loop.
    pub rate: Option<f64>,
    /// Records before this are sent but not measured.
    pub measure_from: Instant,
    pub stop_at: Instant,
}

pub struct ProduceResult {
    pub latency: Histogram<u64>,
    /// Acknowledged within the measured window.
    pub measured: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// Counters the progress sampler reads every second.
#[derive(Default)]
pub struct Progress {
    pub acked: AtomicU64,
    pub consumed: AtomicU64,
}

pub async fn produce(
    client: Client,
    config: ProducerConfig,
    spec: ProduceSpec,
    progress: Arc<Progress>,
) -> ProduceResult {
    let producer = Producer::new(client, config);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, Delivery)>(1 << 16);
    let measure_from = spec.measure_from;
    let waiter = tokio::spawn(async move {
        let mut result = ProduceResult { latency: histogram(), measured: 0, errors: 0, first_error: None };
        while let Some((intended, delivery)) = rx.recv().await {
            match delivery.wait().await {
                Ok(_) => {
                    progress.acked.fetch_add(1, Ordering::Relaxed);
                    if intended >= measure_from {
                        record(&mut result.latency, intended.elapsed().as_micros() as u64);
                        result.measured += 1;
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
    let records = Records::new(&spec);
    match spec.rate {
        None => {
            let mut records = records;
            while Instant::now() < spec.stop_at {
                let intended = Instant::now();
                match producer.send(records.next(&spec.topic)).await {
                    Ok(d) => {
                        if tx.send((intended, d)).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "send failed");
                        break;
                    }
                }
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
            let topic = spec.topic.clone();
            tokio::task::spawn_blocking(move || pace(&handle, &producer, &tx, records, &topic, rate, stop_at))
                .await
                .expect("the pacer does not panic");
        }
    }
    drop(tx);
    producer.flush().await;
    waiter.await.expect("the delivery waiter does not panic")
}

/// The records a producer sends: a fixed value, and a key drawn uniformly
/// from `keys` (xorshift, so runs are repeatable).
struct Records {
    value: Bytes,
    keys: Vec<Bytes>,
    rng: u64,
}

impl Records {
    fn new(spec: &ProduceSpec) -> Records {
        Records {
            value: Bytes::from(vec![b'x'; spec.record_bytes]),
            keys: (0..spec.keys).map(|k| Bytes::from(format!("key-{k:08}"))).collect(),
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    fn next(&mut self, topic: &str) -> ProducerRecord {
        let key = if self.keys.is_empty() {
            None
        } else {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            Some(self.keys[(self.rng % self.keys.len() as u64) as usize].clone())
        };
        ProducerRecord { topic: topic.to_owned(), key, value: Some(self.value.clone()), ..ProducerRecord::default() }
    }
}

/// The pacer's shortest sleep.
const PACE_STEP: Duration = Duration::from_micros(100);

/// Sends record `i` at `start + i / rate`; latency counts from that
/// intended time, so sends delayed by a stalled broker are charged for it.
fn pace(
    handle: &tokio::runtime::Handle,
    producer: &Producer,
    tx: &tokio::sync::mpsc::Sender<(Instant, Delivery)>,
    mut records: Records,
    topic: &str,
    rate: f64,
    stop_at: Instant,
) {
    // Ask the kernel for precise sleeps on this thread (default slack is 50 µs).
    // SAFETY: prctl with PR_SET_TIMERSLACK only changes this thread's timer slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0) };
    let start = Instant::now();
    for i in 0u64.. {
        let intended = start + Duration::from_secs_f64(i as f64 / rate);
        if intended >= stop_at {
            return;
        }
        let now = Instant::now();
        if intended > now {
            // Sleep at least PACE_STEP: records due meanwhile go out
            // together (each still timed from its own intended time), so
            // pacing does not cost a context switch per record.
            std::thread::sleep((intended - now).max(PACE_STEP));
        }
        let Ok(d) = handle.block_on(producer.send(records.next(topic))) else { return };
        if tx.blocking_send((intended, d)).is_err() {
            return;
        }
    }
}

pub struct ConsumeResult {
    pub records: u64,
    /// Read within the measured window (`measure_from` to `stop_at`).
    pub measured: u64,
    /// Now minus record timestamp (millisecond resolution), within the window.
    pub end_to_end: Histogram<u64>,
    pub elapsed: Duration,
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
    /// End-to-end latency counts from here.
    pub measure_from: Instant,
}

pub async fn consume(client: Client, spec: ConsumeSpec, progress: Arc<Progress>) -> ConsumeResult {
    let ConsumeSpec { topic, partitions, from, target, stop_at, measure_from } = spec;
    let config = ConsumerConfig { fetch_wait_max: Duration::from_millis(100), ..ConsumerConfig::default() };
    let mut result =
        ConsumeResult { records: 0, measured: 0, end_to_end: histogram(), elapsed: Duration::ZERO, error: None };
    let mut consumer = match Consumer::assign(client, config, &topic, &partitions, from).await {
        Ok(c) => c,
        Err(e) => {
            result.error = Some(e.to_string());
            return result;
        }
    };
    let start = Instant::now();
    loop {
        if target.is_some_and(|t| result.records >= t) || stop_at.is_some_and(|s| Instant::now() >= s) {
            break;
        }
        match consumer.poll().await {
            Ok(records) => {
                let now = now_ms();
                let at = Instant::now();
                let measured = at >= measure_from && stop_at.is_none_or(|s| at < s);
                if measured {
                    for r in &records {
                        record(&mut result.end_to_end, ((now - r.timestamp.0).max(0) as u64) * 1000);
                    }
                    result.measured += records.len() as u64;
                }
                result.records += records.len() as u64;
                progress.consumed.fetch_add(records.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                result.error = Some(e.to_string());
                break;
            }
        }
    }
    result.elapsed = start.elapsed();
    result
}
