//! Which shard (core) owns a partition. The rule is a pure function of the
//! topic name, the partition and the shard count, so every shard computes
//! the same answer without asking anyone:
//!
//! `shard = (crc32c(topic name) + partition) mod shards`
//!
//! Consecutive partitions of one topic land on consecutive shards (a topic
//! with at least as many partitions as cores uses every core), and the CRC
//! offset spreads the first partitions of different topics. Data
//! directories do not depend on the shard, so a restart with another
//! `--cores` simply places partitions anew.

pub fn shard_for(topic: &str, partition: u32, shards: usize) -> usize {
    shard_for_hash(crc32c::crc32c(topic.as_bytes()), partition, shards)
}

/// [`shard_for`] with the topic's `crc32c` computed once, when the topic
/// was created: placement hashes no string per request.
pub fn shard_for_hash(topic_crc: u32, partition: u32, shards: usize) -> usize {
    assert!(shards > 0);
    ((u64::from(topic_crc) + u64::from(partition)) % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_with_as_many_partitions_as_shards_uses_every_shard() {
        for shards in 1..8 {
            let mut used: Vec<usize> = (0..shards as u32).map(|p| shard_for("orders", p, shards)).collect();
            used.sort_unstable();
            used.dedup();
            assert_eq!(used.len(), shards);
        }
    }

    #[test]
    fn placement_is_stable() {
        // Changing this rule moves partitions between cores on upgrade.
        assert_eq!(shard_for("orders", 0, 4), (crc32c::crc32c(b"orders") % 4) as usize);
        assert_eq!(shard_for("orders", 3, 1), 0);
    }
}
