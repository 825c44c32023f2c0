//! A least-recently-used map with a fixed number of slots, for the few
//! per-segment things (open files, indexes) a log keeps.

use std::collections::VecDeque;

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
}

#[cfg(test)]
mod tests {
    use super::*;

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
