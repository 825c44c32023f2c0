//! What the producers send: record sizes (fixed or uniform in a range) and
//! keys (none, or N distinct keys picked uniformly or by a Zipf law, where
//! key k is chosen with probability ∝ 1/k^s — a few hot entities and a long
//! tail, as event streams keyed by customer or device tend to be). Seeded
//! xorshift, so a run is repeatable.

/// xorshift64: fast, repeatable, good enough to pick keys and sizes.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `min..=max` bytes per record value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeRange {
    pub min: usize,
    pub max: usize,
}

impl SizeRange {
    /// `100` or `100..1000` (inclusive).
    pub fn parse(s: &str) -> Result<SizeRange, String> {
        let bad = || format!("record size {s:?}: expected N or MIN..MAX");
        let range = match s.split_once("..") {
            None => {
                let n = s.parse().map_err(|_| bad())?;
                SizeRange { min: n, max: n }
            }
            Some((a, b)) => SizeRange { min: a.parse().map_err(|_| bad())?, max: b.parse().map_err(|_| bad())? },
        };
        if range.min > range.max || range.max > 1 << 20 {
            return Err(format!("record size {s:?}: MIN must not exceed MAX, and MAX is at most 1 MiB"));
        }
        Ok(range)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyDistribution {
    Uniform,
    Zipf,
}

/// Picks keys and value sizes for one producer.
pub struct RecordMaker {
    rng: Rng,
    keys: Vec<Vec<u8>>,
    /// Cumulative probabilities of the keys (Zipf), or empty (uniform).
    cdf: Vec<f64>,
    sizes: SizeRange,
    /// One buffer of the largest size; values are slices of it.
    value: Vec<u8>,
}

impl RecordMaker {
    pub fn new(
        seed: u64,
        keys: u64,
        distribution: KeyDistribution,
        zipf_exponent: f64,
        sizes: SizeRange,
    ) -> RecordMaker {
        let keys: Vec<Vec<u8>> = (0..keys).map(|k| format!("key-{k:08}").into_bytes()).collect();
        let cdf = match distribution {
            KeyDistribution::Uniform => Vec::new(),
            KeyDistribution::Zipf => {
                let weights: Vec<f64> = (1..=keys.len()).map(|k| 1.0 / (k as f64).powf(zipf_exponent)).collect();
                let total: f64 = weights.iter().sum();
                let mut acc = 0.0;
                weights
                    .iter()
                    .map(|w| {
                        acc += w / total;
                        acc
                    })
                    .collect()
            }
        };
        RecordMaker { rng: Rng::new(seed), keys, cdf, sizes, value: vec![b'x'; sizes.max] }
    }

    /// The next record as indices: which key (if keyed) and how many
    /// value bytes; [`RecordMaker::key_bytes`] and
    /// [`RecordMaker::value_bytes`] turn them into borrowed slices, so a
    /// bulk send holds no owned record.
    pub fn next_plan(&mut self) -> (Option<u32>, u32) {
        let key = if self.keys.is_empty() {
            None
        } else if self.cdf.is_empty() {
            Some((self.rng.next_u64() % self.keys.len() as u64) as u32)
        } else {
            let u = self.rng.next_f64();
            Some(self.cdf.partition_point(|&c| c < u).min(self.keys.len() - 1) as u32)
        };
        let span = (self.sizes.max - self.sizes.min) as u64;
        let len = self.sizes.min + if span == 0 { 0 } else { (self.rng.next_u64() % (span + 1)) as usize };
        (key, len as u32)
    }

    pub fn key_bytes(&self, key: u32) -> &[u8] {
        &self.keys[key as usize]
    }

    pub fn value_bytes(&self, len: u32) -> &[u8] {
        &self.value[..len as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_stay_in_range() {
        assert_eq!(SizeRange::parse("100").unwrap(), SizeRange { min: 100, max: 100 });
        let r = SizeRange::parse("10..20").unwrap();
        assert!(SizeRange::parse("20..10").is_err() && SizeRange::parse("x").is_err());
        let mut m = RecordMaker::new(7, 0, KeyDistribution::Uniform, 1.0, r);
        let lens: Vec<usize> = (0..1000).map(|_| m.next_plan().1 as usize).collect();
        assert!(lens.iter().all(|&l| (10..=20).contains(&l)));
        assert!(lens.contains(&10) && lens.contains(&20), "both ends are reachable");
        assert_eq!(m.next_plan().0, None);
    }

    #[test]
    fn zipf_keys_favour_the_first_keys_as_the_law_says() {
        let mut m = RecordMaker::new(42, 100, KeyDistribution::Zipf, 1.0, SizeRange { min: 1, max: 1 });
        let n = 200_000;
        let hot = (0..n).filter(|_| m.next_plan().0 == Some(0)).count();
        // P(key 1) = 1 / H(100) ≈ 0.1928 for s = 1.
        let p = hot as f64 / f64::from(n);
        assert!((p - 0.1928).abs() < 0.01, "key 1 drawn with probability {p}");
        let mut u = RecordMaker::new(42, 100, KeyDistribution::Uniform, 1.0, SizeRange { min: 1, max: 1 });
        let hot = (0..n).filter(|_| u.next_plan().0 == Some(0)).count();
        let p = hot as f64 / f64::from(n);
        assert!((p - 0.01).abs() < 0.003, "uniform key 1 drawn with probability {p}");
    }
}
