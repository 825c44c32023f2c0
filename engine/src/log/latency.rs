//! A fixed-bucket latency histogram: a few hundred bytes, `Copy`, cheap to
//! record into on the data path (one comparison loop, no allocation) and to
//! merge across partitions and cores for the metrics endpoint. Buckets are
//! powers of two in microseconds, which is what a Prometheus histogram of
//! latencies needs; loadgen keeps exact `HdrHistogram`s of its own.

/// Upper bounds of the buckets, in microseconds: 1 µs, 2 µs, … 2^25 µs (about
/// 33.6 s); the last bucket takes everything above (`+Inf` in Prometheus).
pub const LATENCY_BUCKETS: usize = 27;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// `counts[i]`: samples at most `2^i` µs (and above `2^(i-1)`); the last
    /// bucket also holds everything larger.
    pub counts: [u64; LATENCY_BUCKETS],
    pub sum_us: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram { counts: [0; LATENCY_BUCKETS], sum_us: 0 }
    }
}

impl LatencyHistogram {
    /// The upper bound of bucket `i`, in seconds.
    #[must_use]
    pub fn bucket_bound_s(i: usize) -> f64 {
        (1u64 << i) as f64 / 1e6
    }

    pub fn record(&mut self, d: std::time::Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = if us <= 1 { 0 } else { (64 - (us - 1).leading_zeros()) as usize };
        self.counts[i.min(LATENCY_BUCKETS - 1)] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    #[must_use]
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn samples_land_in_the_bucket_of_their_power_of_two() {
        let mut h = LatencyHistogram::default();
        h.record(Duration::from_micros(1));
        h.record(Duration::from_micros(3));
        h.record(Duration::from_micros(4));
        h.record(Duration::from_micros(5));
        h.record(Duration::from_secs(1000));
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[2], 2, "3 and 4 µs are at most 4 µs");
        assert_eq!(h.counts[3], 1);
        assert_eq!(h.counts[LATENCY_BUCKETS - 1], 1, "the last bucket takes the rest");
        assert_eq!(h.count(), 5);
        let mut m = h;
        m.merge(&h);
        assert_eq!(m.count(), 10);
        assert_eq!(m.sum_us, 2 * h.sum_us);
        assert!((LatencyHistogram::bucket_bound_s(20) - 1.048_576).abs() < 1e-9);
    }
}
