//! Which partition a keyed record goes to. The rule is part of the protocol,
//! not of one client, because every producer of a stream — in any language —
//! must send one key to one partition, or per-key order is lost. It is
//! Kafka's default: `(murmur2(key) & 0x7fff_ffff) % partitions`, with
//! Kafka's seed, so a stream moved from Kafka keeps its keys' placement.

/// Kafka's 32-bit murmur2 (seed `0x9747_b28c`), as a signed value like Kafka's.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes(chunk.try_into().expect("4 bytes"));
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `key` among `partitions` (which must be non-zero).
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0);
    (murmur2(key) as u32 & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Values from Kafka's own implementation.
        for (key, expected) in [
            ("1", -1_993_445_489),
            ("12", 126_087_238),
            ("123", -267_702_483),
            ("1234", -1_614_185_708),
            ("12345", -1_188_365_604),
        ] {
            assert_eq!(murmur2(key.as_bytes()), expected, "key {key}");
        }
    }

    #[test]
    fn partitions_follow_kafkas_rule_from_kafkas_hashes() {
        // Kafka: `Utils.toPositive(Utils.murmur2(key)) % partitions`, with the
        // hashes from Kafka's own test above, so this does not depend on our
        // murmur2 agreeing with itself.
        for (key, hash) in [("1", -1_993_445_489i32), ("12", 126_087_238), ("123", -267_702_483)] {
            for n in 1..20u32 {
                let expected = (hash as u32 & 0x7fff_ffff) % n;
                assert_eq!(partition_for_key(key.as_bytes(), n), expected, "key {key}, {n} partitions");
            }
        }
    }
}
