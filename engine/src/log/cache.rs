//! Recent batches in memory. With O_DIRECT there is no page cache behind
//! the log, so the tail a consumer is most likely to read is kept here,
//! bounded by bytes; everything older is read from disk.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::types::Offset;

#[derive(Debug, Clone)]
pub(crate) struct CachedBatch {
    pub base_offset: Offset,
    pub next_offset: Offset,
    pub bytes: Bytes,
}

/// The newest batches of a log, contiguous in offsets, at most `bytes_max`.
#[derive(Debug)]
pub(crate) struct BatchCache {
    batches: VecDeque<CachedBatch>,
    bytes: usize,
    bytes_max: usize,
}

impl BatchCache {
    pub fn new(bytes_max: usize) -> BatchCache {
        BatchCache { batches: VecDeque::new(), bytes: 0, bytes_max }
    }

    pub fn push(&mut self, batch: CachedBatch) {
        if let Some(last) = self.batches.back() {
            assert_eq!(last.next_offset, batch.base_offset, "cached batches are contiguous");
        }
        self.bytes += batch.bytes.len();
        self.batches.push_back(batch);
        while self.bytes > self.bytes_max {
            let evicted = self.batches.pop_front().expect("over budget means non-empty");
            self.bytes -= evicted.bytes.len();
        }
    }

    /// The first offset the cache can serve, if any.
    #[cfg(test)]
    pub fn first_offset(&self) -> Option<Offset> {
        self.batches.front().map(|b| b.base_offset)
    }

    /// Batches from the one holding `from`, until `bytes_max` (at least one
    /// batch) or `end`. `None` if `from` is older than the cache.
    pub fn read(&self, from: Offset, end: Offset, bytes_max: usize) -> Option<Vec<Bytes>> {
        let first = self.batches.front()?;
        if from < first.base_offset {
            return None;
        }
        let i = self.batches.partition_point(|b| b.next_offset <= from);
        let mut out = Vec::new();
        let mut total = 0;
        for batch in self.batches.range(i..) {
            if batch.next_offset > end || (!out.is_empty() && total + batch.bytes.len() > bytes_max) {
                break;
            }
            total += batch.bytes.len();
            out.push(batch.bytes.clone());
        }
        Some(out)
    }

    /// Forgets every batch at or after `offset`.
    pub fn truncate(&mut self, offset: Offset) {
        while self.batches.back().is_some_and(|b| b.base_offset >= offset) {
            let b = self.batches.pop_back().expect("checked");
            self.bytes -= b.bytes.len();
        }
    }

    /// Forgets every batch before `offset`.
    pub fn trim_front(&mut self, offset: Offset) {
        while self.batches.front().is_some_and(|b| b.next_offset <= offset) {
            let b = self.batches.pop_front().expect("checked");
            self.bytes -= b.bytes.len();
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// A least-recently-used map with a fixed number of slots, for the few
/// per-segment things (open files, indexes, read-ahead chunks) a log keeps.
#[derive(Debug)]
pub(crate) struct Lru<K, V> {
    slots: VecDeque<(K, V)>,
    capacity: usize,
}

impl<K: PartialEq + Copy, V: Clone> Lru<K, V> {
    pub fn new(capacity: usize) -> Lru<K, V> {
        assert!(capacity > 0);
        Lru { slots: VecDeque::with_capacity(capacity), capacity }
    }

    pub fn get(&mut self, key: K) -> Option<V> {
        let i = self.slots.iter().position(|(k, _)| *k == key)?;
        let slot = self.slots.remove(i).expect("found");
        let value = slot.1.clone();
        self.slots.push_back(slot);
        Some(value)
    }

    /// Inserts, evicting the least recently used slot when full.
    pub fn insert(&mut self, key: K, value: V) {
        self.slots.retain(|(k, _)| *k != key);
        if self.slots.len() == self.capacity {
            self.slots.pop_front();
        }
        self.slots.push_back((key, value));
    }

    /// Removes and returns every slot.
    pub fn drain(&mut self) -> Vec<(K, V)> {
        self.slots.drain(..).collect()
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.slots.retain(|(k, v)| keep(k, v));
    }

    /// The first slot that matches, marked as used.
    pub fn find_entry(&mut self, mut matches: impl FnMut(&K, &V) -> bool) -> Option<(K, V)> {
        let i = self.slots.iter().position(|(k, v)| matches(k, v))?;
        let slot = self.slots.remove(i).expect("found");
        let entry = (slot.0, slot.1.clone());
        self.slots.push_back(slot);
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(base: u64, records: u64, bytes: usize) -> CachedBatch {
        CachedBatch {
            base_offset: Offset(base),
            next_offset: Offset(base + records),
            bytes: Bytes::from(vec![0u8; bytes]),
        }
    }

    #[test]
    fn cache_stays_within_its_byte_budget() {
        let mut cache = BatchCache::new(1000);
        for i in 0..100 {
            cache.push(batch(i * 2, 2, 90));
            assert!(cache.bytes() <= 1000);
        }
        assert_eq!(cache.first_offset(), Some(Offset(178)));
        assert!(cache.read(Offset(10), Offset(200), 1 << 20).is_none());
    }

    #[test]
    fn cache_reads_from_the_batch_holding_the_offset() {
        let mut cache = BatchCache::new(10_000);
        for i in 0..10 {
            cache.push(batch(i * 5, 5, 100));
        }
        let got = cache.read(Offset(12), Offset(50), 250).unwrap();
        assert_eq!(got.len(), 2, "stops at the byte limit");
        let got = cache.read(Offset(12), Offset(20), 1 << 20).unwrap();
        assert_eq!(got.len(), 2, "stops at the end offset: batches [10,15) and [15,20)");
        let got = cache.read(Offset(12), Offset(50), 1).unwrap();
        assert_eq!(got.len(), 1, "always at least one batch");
        cache.truncate(Offset(25));
        assert_eq!(cache.read(Offset(0), Offset(100), 1 << 20).unwrap().len(), 5);
    }

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let mut lru = Lru::new(2);
        lru.insert(1, "a");
        lru.insert(2, "b");
        assert_eq!(lru.get(1), Some("a"));
        lru.insert(3, "c");
        assert_eq!(lru.get(2), None);
        assert_eq!(lru.get(1), Some("a"));
        assert_eq!(lru.get(3), Some("c"));
    }
}
