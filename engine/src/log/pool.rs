//! The memory the logs of one core share: DMA write buffers, the caches
//! of recent and read-ahead batches, and the sparse indexes of sealed
//! segments, each under a byte budget for the whole core. Without it, memory grows with the number of partitions (each log
//! with its own buffers); with it, a core with 2,000 partitions uses what
//! the configuration says, and an idle partition holds no buffer at all.
//!
//! Owned by one core (`Rc`, `Cell`, `RefCell`): no atomics, no locks.
//! Write buffers are reserved before they are allocated and given back when
//! the write that carried them lands; an append that finds the budget spent
//! waits for another log's write to give some back. The caches evict the
//! oldest batch of the whole core first (one FIFO over every log), so a busy
//! partition cannot keep an idle one's tail out of memory for long, and a
//! partition that stops being read ages out.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;

use bytes::Bytes;

use super::index::SegmentIndex;
use super::notify::Notify;
use crate::types::Offset;

/// Which log of the pool a cache entry belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct LogId(u64);

/// The budgets of one core's pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// DMA write buffers of all logs together.
    pub write_buffer_bytes_max: usize,
    /// Cached recent batches of all logs together.
    pub cache_bytes_max: usize,
    /// Read-ahead chunks of all logs together.
    pub read_ahead_bytes_max: usize,
    /// Sparse indexes of sealed segments, all logs together (the active
    /// segments' indexes are the logs' own).
    pub index_cache_bytes_max: usize,
}

/// A handle on one core's pool; cheap to clone, never sent to another core.
#[derive(Clone)]
pub struct MemoryPool {
    inner: Rc<PoolInner>,
}

struct PoolInner {
    config: PoolConfig,
    write_bytes: Cell<usize>,
    write_freed: Notify,
    cache: RefCell<Caches>,
    indexes: RefCell<IndexCache>,
    next_log: Cell<u64>,
}

/// Sealed segments' indexes, least recently used out first.
#[derive(Default)]
struct IndexCache {
    entries: HashMap<(LogId, Offset), (Rc<SegmentIndex>, usize, u64)>,
    /// `use seq → key`, oldest first.
    order: BTreeMap<u64, (LogId, Offset)>,
    bytes: usize,
    next_seq: u64,
}

/// What the pool holds now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolUsage {
    pub write_buffer_bytes: usize,
    pub cache_bytes: usize,
    pub read_ahead_bytes: usize,
    pub index_cache_bytes: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct CachedBatch {
    pub base_offset: Offset,
    pub next_offset: Offset,
    pub bytes: Bytes,
    /// Its place in the pool's eviction order.
    seq: u64,
}

#[derive(Default)]
struct LogCache {
    batches: VecDeque<CachedBatch>,
    bytes: usize,
    bytes_max: usize,
}

#[derive(Default)]
struct Caches {
    logs: HashMap<LogId, LogCache>,
    bytes: usize,
    live: usize,
    /// Every cached batch in insertion order, `(log, seq)`; entries of
    /// batches already gone are skipped when met, and swept when they
    /// outnumber the live ones.
    order: VecDeque<(LogId, u64)>,
    next_seq: u64,
    read_ahead: VecDeque<((LogId, Offset, u64), Bytes)>,
    read_ahead_bytes: usize,
}

/// Write buffer bytes taken from the pool; given back on drop.
pub(crate) struct Reservation {
    pool: Rc<PoolInner>,
    bytes: usize,
}

impl Reservation {
    /// Moves `bytes` of this reservation into a new one.
    pub(crate) fn split_off(&mut self, bytes: usize) -> Reservation {
        assert!(bytes <= self.bytes);
        self.bytes -= bytes;
        Reservation { pool: self.pool.clone(), bytes }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let used = self.pool.write_bytes.get();
        debug_assert!(used >= self.bytes);
        self.pool.write_bytes.set(used - self.bytes);
        self.pool.write_freed.notify_all();
    }
}

impl MemoryPool {
    #[must_use]
    pub fn new(config: PoolConfig) -> MemoryPool {
        assert!(config.write_buffer_bytes_max > 0 && config.read_ahead_bytes_max > 0);
        MemoryPool {
            inner: Rc::new(PoolInner {
                config,
                write_bytes: Cell::new(0),
                write_freed: Notify::default(),
                cache: RefCell::new(Caches::default()),
                indexes: RefCell::new(IndexCache::default()),
                next_log: Cell::new(0),
            }),
        }
    }

    pub fn config(&self) -> PoolConfig {
        self.inner.config
    }

    pub fn usage(&self) -> PoolUsage {
        let c = self.inner.cache.borrow();
        PoolUsage {
            write_buffer_bytes: self.inner.write_bytes.get(),
            cache_bytes: c.bytes,
            read_ahead_bytes: c.read_ahead_bytes,
            index_cache_bytes: self.inner.indexes.borrow().bytes,
        }
    }

    /// Registers a log, whose own cache holds at most `cache_bytes_max`.
    pub(crate) fn register(&self, cache_bytes_max: usize) -> LogId {
        let id = LogId(self.inner.next_log.get());
        self.inner.next_log.set(id.0 + 1);
        self.inner.cache.borrow_mut().logs.insert(id, LogCache { bytes_max: cache_bytes_max, ..LogCache::default() });
        id
    }

    /// Forgets a log and everything it cached.
    pub(crate) fn unregister(&self, log: LogId) {
        let mut c = self.inner.cache.borrow_mut();
        if let Some(cache) = c.logs.remove(&log) {
            c.bytes -= cache.bytes;
            c.live -= cache.batches.len();
        }
        let mut freed = 0;
        c.read_ahead.retain(|((l, _, _), chunk)| {
            let keep = *l != log;
            if !keep {
                freed += chunk.len();
            }
            keep
        });
        c.read_ahead_bytes -= freed;
        drop(c);
        self.index_retain(log, |_| false);
    }

    /// The cached index of `log`'s sealed segment at `base`, marked as used.
    pub(crate) fn index_get(&self, log: LogId, base: Offset) -> Option<Rc<SegmentIndex>> {
        let mut c = self.inner.indexes.borrow_mut();
        let seq = c.next_seq;
        let IndexCache { entries, order, next_seq, .. } = &mut *c;
        let (index, _, used) = entries.get_mut(&(log, base))?;
        order.remove(used);
        *used = seq;
        order.insert(seq, (log, base));
        *next_seq += 1;
        Some(index.clone())
    }

    /// Caches a sealed segment's index; the least recently used ones of any
    /// log go while the core's budget is exceeded (the newest always stays:
    /// its reader is using it).
    pub(crate) fn index_insert(&self, log: LogId, base: Offset, index: Rc<SegmentIndex>) {
        let mut c = self.inner.indexes.borrow_mut();
        let bytes = index.memory_bytes();
        let seq = c.next_seq;
        c.next_seq += 1;
        if let Some((_, old_bytes, old_seq)) = c.entries.insert((log, base), (index, bytes, seq)) {
            c.order.remove(&old_seq);
            c.bytes -= old_bytes;
        }
        c.order.insert(seq, (log, base));
        c.bytes += bytes;
        while c.bytes > self.inner.config.index_cache_bytes_max && c.entries.len() > 1 {
            let (_, key) = c.order.pop_first().expect("entries have order");
            let (_, gone, _) = c.entries.remove(&key).expect("order has entries");
            c.bytes -= gone;
        }
    }

    /// Forgets the cached indexes of `log`'s segments that `keep` rejects.
    pub(crate) fn index_retain(&self, log: LogId, mut keep: impl FnMut(Offset) -> bool) {
        let mut c = self.inner.indexes.borrow_mut();
        let doomed: Vec<(LogId, Offset)> = c.entries.keys().filter(|(l, b)| *l == log && !keep(*b)).copied().collect();
        for key in doomed {
            let (_, bytes, seq) = c.entries.remove(&key).expect("listed");
            c.order.remove(&seq);
            c.bytes -= bytes;
        }
    }

    /// Takes `bytes` of write buffer if the budget has them now.
    pub(crate) fn try_reserve(&self, bytes: usize) -> Option<Reservation> {
        let used = self.inner.write_bytes.get();
        if used + bytes > self.inner.config.write_buffer_bytes_max {
            return None;
        }
        self.inner.write_bytes.set(used + bytes);
        Some(Reservation { pool: self.inner.clone(), bytes })
    }

    /// Completes after some write buffer was given back.
    pub(crate) fn write_freed(&self) -> super::notify::Notified<'_> {
        self.inner.write_freed.notified()
    }

    pub(crate) fn cache_push(&self, log: LogId, base_offset: Offset, next_offset: Offset, bytes: Bytes) {
        let mut c = self.inner.cache.borrow_mut();
        let seq = c.next_seq;
        c.next_seq += 1;
        let len = bytes.len();
        let cache = c.logs.get_mut(&log).expect("a registered log");
        if let Some(last) = cache.batches.back() {
            assert!(base_offset >= last.next_offset, "cached batches are in offset order");
        }
        cache.batches.push_back(CachedBatch { base_offset, next_offset, bytes, seq });
        cache.bytes += len;
        // The log's own bound first...
        let mut evicted = (0, 0);
        while cache.bytes > cache.bytes_max {
            let b = cache.batches.pop_front().expect("over budget means non-empty");
            cache.bytes -= b.bytes.len();
            evicted.0 += b.bytes.len();
            evicted.1 += 1;
        }
        c.bytes = c.bytes + len - evicted.0;
        c.live = c.live + 1 - evicted.1;
        c.order.push_back((log, seq));
        // ...then the core's: the oldest batch of any log goes first.
        while c.bytes > self.inner.config.cache_bytes_max {
            let (victim, seq) = c.order.pop_front().expect("live batches have order entries");
            let Some(cache) = c.logs.get_mut(&victim) else { continue };
            if cache.batches.front().is_some_and(|b| b.seq == seq) {
                let b = cache.batches.pop_front().expect("checked");
                cache.bytes -= b.bytes.len();
                c.bytes -= b.bytes.len();
                c.live -= 1;
            }
        }
        if c.order.len() > 2 * c.live + 64 {
            let Caches { order, logs, .. } = &mut *c;
            // A log's batches are in `seq` order: a binary search each, so a
            // sweep over n entries costs n log n, not n × batches.
            order.retain(|(l, s)| {
                logs.get(l).is_some_and(|cache| cache.batches.binary_search_by_key(s, |b| b.seq).is_ok())
            });
        }
    }

    /// Batches of `log` from the one holding `from`, until `bytes_max` (at
    /// least one batch) or `end`. `None` if `from` is older than the cache.
    pub(crate) fn cache_read(&self, log: LogId, from: Offset, end: Offset, bytes_max: usize) -> Option<Vec<Bytes>> {
        let c = self.inner.cache.borrow();
        let cache = c.logs.get(&log)?;
        let first = cache.batches.front()?;
        if from < first.base_offset {
            return None;
        }
        let i = cache.batches.partition_point(|b| b.next_offset <= from);
        let mut out = Vec::new();
        let mut total = 0;
        for batch in cache.batches.range(i..) {
            if batch.next_offset > end || (!out.is_empty() && total + batch.bytes.len() > bytes_max) {
                break;
            }
            total += batch.bytes.len();
            out.push(batch.bytes.clone());
        }
        Some(out)
    }

    /// Forgets every batch of `log` at or after `offset`.
    pub(crate) fn cache_truncate(&self, log: LogId, offset: Offset) {
        let mut c = self.inner.cache.borrow_mut();
        let (mut bytes, mut count) = (0, 0);
        if let Some(cache) = c.logs.get_mut(&log) {
            while cache.batches.back().is_some_and(|b| b.next_offset > offset) {
                let b = cache.batches.pop_back().expect("checked");
                cache.bytes -= b.bytes.len();
                bytes += b.bytes.len();
                count += 1;
            }
        }
        c.bytes -= bytes;
        c.live -= count;
    }

    /// Forgets every batch of `log` that ends at or before `offset`.
    pub(crate) fn cache_trim_front(&self, log: LogId, offset: Offset) {
        let mut c = self.inner.cache.borrow_mut();
        let (mut bytes, mut count) = (0, 0);
        if let Some(cache) = c.logs.get_mut(&log) {
            while cache.batches.front().is_some_and(|b| b.next_offset <= offset) {
                let b = cache.batches.pop_front().expect("checked");
                cache.bytes -= b.bytes.len();
                bytes += b.bytes.len();
                count += 1;
            }
        }
        c.bytes -= bytes;
        c.live -= count;
    }

    pub(crate) fn cached_bytes(&self, log: LogId) -> usize {
        self.inner.cache.borrow().logs.get(&log).map_or(0, |c| c.bytes)
    }

    /// A read-ahead chunk of `log` that holds `want` bytes at `position` of
    /// the segment at `base`, marked as used.
    pub(crate) fn read_ahead_find(&self, log: LogId, base: Offset, position: u64, want: u64) -> Option<Bytes> {
        let mut c = self.inner.cache.borrow_mut();
        let i = c.read_ahead.iter().position(|((l, b, p), chunk)| {
            *l == log && *b == base && *p <= position && position + want <= p + chunk.len() as u64
        })?;
        let entry = c.read_ahead.remove(i).expect("found");
        let sliced = entry.1.slice((position - (entry.0).2) as usize..);
        c.read_ahead.push_back(entry);
        Some(sliced)
    }

    pub(crate) fn read_ahead_insert(&self, log: LogId, base: Offset, position: u64, chunk: Bytes) {
        let mut c = self.inner.cache.borrow_mut();
        c.read_ahead_bytes += chunk.len();
        c.read_ahead.push_back(((log, base, position), chunk));
        // Keep the newest chunk even when it alone is over the budget: the
        // reader that asked for it reads on from it.
        while c.read_ahead_bytes > self.inner.config.read_ahead_bytes_max && c.read_ahead.len() > 1 {
            let (_, old) = c.read_ahead.pop_front().expect("non-empty");
            c.read_ahead_bytes -= old.len();
        }
    }

    /// Forgets the read-ahead chunks of `log`'s segments that `keep` rejects.
    pub(crate) fn read_ahead_retain(&self, log: LogId, mut keep: impl FnMut(Offset) -> bool) {
        let mut c = self.inner.cache.borrow_mut();
        let mut freed = 0;
        c.read_ahead.retain(|((l, b, _), chunk)| {
            let k = *l != log || keep(*b);
            if !k {
                freed += chunk.len();
            }
            k
        });
        c.read_ahead_bytes -= freed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(cache: usize) -> MemoryPool {
        MemoryPool::new(PoolConfig {
            write_buffer_bytes_max: 1 << 20,
            cache_bytes_max: cache,
            read_ahead_bytes_max: 1 << 20,
            index_cache_bytes_max: 1 << 20,
        })
    }

    fn push(pool: &MemoryPool, log: LogId, base: u64, records: u64, bytes: usize) {
        pool.cache_push(log, Offset(base), Offset(base + records), Bytes::from(vec![0u8; bytes]));
    }

    #[test]
    fn each_log_stays_within_its_own_bound() {
        let pool = pool(1 << 20);
        let log = pool.register(1000);
        for i in 0..100 {
            push(&pool, log, i * 2, 2, 90);
            assert!(pool.cached_bytes(log) <= 1000);
        }
        assert!(pool.cache_read(log, Offset(10), Offset(200), 1 << 20).is_none(), "evicted");
        assert!(pool.cache_read(log, Offset(190), Offset(200), 1 << 20).is_some());
    }

    #[test]
    fn the_core_budget_evicts_the_oldest_batch_of_any_log_first() {
        let pool = pool(1000);
        let a = pool.register(1 << 20);
        let b = pool.register(1 << 20);
        for i in 0..5 {
            push(&pool, a, i, 1, 100);
        }
        for i in 0..8 {
            push(&pool, b, i, 1, 100);
        }
        let usage = pool.usage();
        assert!(usage.cache_bytes <= 1000, "{usage:?}");
        assert_eq!(pool.cached_bytes(a) + pool.cached_bytes(b), usage.cache_bytes);
        // a's batches were the oldest: they went first.
        assert_eq!(pool.cached_bytes(a), 200);
        assert_eq!(pool.cached_bytes(b), 800);
        pool.unregister(a);
        assert_eq!(pool.usage().cache_bytes, 800);
    }

    #[test]
    fn reads_start_at_the_batch_holding_the_offset_and_accept_gaps() {
        let pool = pool(1 << 20);
        let log = pool.register(1 << 20);
        push(&pool, log, 0, 5, 100);
        push(&pool, log, 10, 5, 100); // offsets 5..10 were compacted away
        push(&pool, log, 15, 5, 100);
        let got = pool.cache_read(log, Offset(7), Offset(20), 1 << 20).unwrap();
        assert_eq!(got.len(), 2, "an offset in a gap starts at the batch after it");
        let got = pool.cache_read(log, Offset(12), Offset(15), 1 << 20).unwrap();
        assert_eq!(got.len(), 1, "stops at the end offset");
        assert_eq!(pool.cache_read(log, Offset(12), Offset(20), 1).unwrap().len(), 1, "always one batch");
        pool.cache_truncate(log, Offset(12));
        assert_eq!(pool.cache_read(log, Offset(0), Offset(100), 1 << 20).unwrap().len(), 1);
        pool.cache_trim_front(log, Offset(5));
        assert_eq!(pool.cached_bytes(log), 0);
        assert_eq!(pool.usage().cache_bytes, 0);
    }

    #[test]
    fn write_reservations_are_bounded_and_given_back() {
        let pool = pool(1 << 20);
        let a = pool.try_reserve(600 << 10).unwrap();
        assert!(pool.try_reserve(600 << 10).is_none(), "over the budget");
        drop(a);
        assert!(pool.try_reserve(600 << 10).is_some());
        assert_eq!(pool.usage().write_buffer_bytes, 0);
    }

    #[test]
    fn read_ahead_is_bounded_over_all_logs() {
        let pool = MemoryPool::new(PoolConfig {
            write_buffer_bytes_max: 1 << 20,
            cache_bytes_max: 1 << 20,
            read_ahead_bytes_max: 3000,
            index_cache_bytes_max: 1 << 20,
        });
        let a = pool.register(0);
        let b = pool.register(0);
        pool.read_ahead_insert(a, Offset(0), 0, Bytes::from(vec![1u8; 1000]));
        pool.read_ahead_insert(b, Offset(0), 0, Bytes::from(vec![2u8; 1000]));
        assert_eq!(pool.read_ahead_find(a, Offset(0), 100, 50).unwrap()[0], 1);
        pool.read_ahead_insert(b, Offset(0), 4096, Bytes::from(vec![3u8; 1500]));
        assert!(pool.usage().read_ahead_bytes <= 3000);
        assert!(pool.read_ahead_find(b, Offset(0), 0, 10).is_none(), "the least recently used went");
        assert!(pool.read_ahead_find(a, Offset(0), 0, 10).is_some());
    }

    #[test]
    fn sealed_indexes_are_bounded_over_all_logs_least_recently_used_out_first() {
        let index = |entries: u64| {
            let mut index = SegmentIndex::new(Offset(0));
            for i in 0..entries {
                index.on_append(
                    Offset(i),
                    Offset(i + 1),
                    crate::types::Timestamp(i as i64),
                    crate::types::Timestamp(0),
                    i * 100,
                    100,
                    1,
                );
            }
            Rc::new(index)
        };
        let one = index(100).memory_bytes();
        let pool = MemoryPool::new(PoolConfig {
            write_buffer_bytes_max: 1 << 20,
            cache_bytes_max: 1 << 20,
            read_ahead_bytes_max: 1 << 20,
            index_cache_bytes_max: 3 * one,
        });
        let (a, b) = (pool.register(0), pool.register(0));
        pool.index_insert(a, Offset(0), index(100));
        pool.index_insert(b, Offset(0), index(100));
        pool.index_insert(a, Offset(100), index(100));
        assert!(pool.index_get(a, Offset(0)).is_some(), "used again: now the most recent");
        pool.index_insert(b, Offset(100), index(100));
        assert!(pool.usage().index_cache_bytes <= 3 * one);
        assert!(pool.index_get(b, Offset(0)).is_none(), "the least recently used, of another log, went");
        assert!(pool.index_get(a, Offset(0)).is_some());
        pool.unregister(a);
        assert_eq!(pool.usage().index_cache_bytes, one, "a log's indexes go with it");
    }
}
