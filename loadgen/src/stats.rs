//! Latency histograms (microseconds, 3 significant digits, up to 10 minutes)
//! and the summary of one distribution.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

pub const LATENCY_US_MAX: u64 = 600_000_000;

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid bounds")
}

/// Records `us`, clamped into the histogram's range.
pub fn record(h: &mut Histogram<u64>, us: u64) {
    h.saturating_record(us.clamp(1, LATENCY_US_MAX));
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub p9999_us: u64,
    pub max_us: u64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            p9999_us: h.value_at_quantile(0.9999),
            max_us: h.max(),
        }
    }
}

/// HdrHistogram's percentile distribution text (`.hgrm`), values in
/// milliseconds, as `HistogramLogProcessor` and the online plotter read it.
pub fn percentile_distribution(h: &Histogram<u64>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "{:>12} {:>14} {:>10} {:>14}\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)");
    if h.is_empty() {
        let _ = writeln!(out, "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]", 0.0, 0.0);
        let _ = writeln!(out, "#[Max     = {:12.3}, Total count    = {:12}]", 0.0, 0);
        return out;
    }
    let mut total = 0;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let value = v.value_iterated_to() as f64 / 1000.0;
        if q < 1.0 {
            let _ = writeln!(out, "{value:12.3} {q:14.12} {total:10} {:14.2}", 1.0 / (1.0 - q));
        } else {
            let _ = writeln!(out, "{value:12.3} {q:14.12} {total:10}");
        }
    }
    let _ = writeln!(out, "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]", h.mean() / 1000.0, h.stdev() / 1000.0);
    let _ = writeln!(out, "#[Max     = {:12.3}, Total count    = {:12}]", h.max() as f64 / 1000.0, h.len());
    let _ = writeln!(out, "#[Buckets = {:12}, SubBuckets     = {:12}]", h.buckets(), h.distinct_values());
    out
}

/// Percentile curve points (x = 1/(1-p), y = latency in ms), for plots.
pub fn percentile_curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    h.iter_quantiles(5)
        .filter(|v| v.quantile_iterated_to() < 1.0)
        .map(|v| (1.0 / (1.0 - v.quantile_iterated_to()), v.value_iterated_to() as f64 / 1000.0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_percentile_distribution_ends_with_every_record_counted() {
        let mut h = histogram();
        for v in 1..=1000 {
            record(&mut h, v * 10);
        }
        let text = percentile_distribution(&h);
        assert!(text.contains("Total count    =         1000"), "{text}");
        let rows: Vec<&str> = text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).skip(1).collect();
        let last: Vec<&str> = rows.last().unwrap().split_whitespace().collect();
        assert_eq!(last[2], "1000", "the last row has the total");
        assert!((last[0].parse::<f64>().unwrap() - 10.0).abs() < 0.02, "max 10 ms: {last:?}");
        let median = rows.iter().find(|r| r.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() >= 0.5).unwrap();
        assert!((median.split_whitespace().next().unwrap().parse::<f64>().unwrap() - 5.0).abs() < 0.02, "{median}");
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut h = histogram();
        for v in 1..=10_000 {
            record(&mut h, v);
        }
        let s = LatencySummary::of(&h);
        assert_eq!(s.count, 10_000);
        assert!((s.p50_us as i64 - 5_000).abs() <= 5, "{s:?}");
        assert!((s.p99_us as i64 - 9_900).abs() <= 10, "{s:?}");
        assert!((s.mean_us - 5_000.5).abs() < 5.0, "{s:?}");
        assert!(s.max_us >= 10_000 && s.max_us <= 10_010);
    }

    #[test]
    fn out_of_range_values_are_clamped_not_dropped() {
        let mut h = histogram();
        record(&mut h, 0);
        record(&mut h, u64::MAX);
        assert_eq!(h.len(), 2);
    }
}
