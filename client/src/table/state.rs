//! What a table holds, apart from where its records come from: the latest
//! value per key, and per partition the next offset it has to apply. Both
//! [`Table`](super::Table) (fed by a consumer) and a checkpoint are one of
//! these; so is a test's or a benchmark's, fed by hand.
//!
//! The store owns its bytes: a key or value is copied out of the record
//! when it is stored. Fetched records are slices of their fetch answer (up
//! to `fetch_bytes_max`, 8 MiB), so keeping the slice would keep the whole
//! answer alive for as long as any one value of it is the latest, and a
//! table's memory would follow the history it read instead of the data it
//! holds. One copy of a few hundred bytes costs far less than the lookup.
//! That memory is bounded by `bytes_max`, counted as keys, values and
//! [`ENTRY_OVERHEAD_BYTES`] per key.
//!
//! Values sit in a hash map, so the common event, a key's new value, costs
//! one hash lookup (a few cache misses: a `BTreeMap` of 100,000 keys costs
//! a miss per level, and its key comparisons chase pointers). The key
//! order that `iter` and checkpoints need is a `BTreeSet` of the same keys,
//! touched only when a key comes or goes. Keys of up to
//! [`INLINE_KEY_BYTES`] sit inside the map and the set themselves, so
//! comparing one chases no pointer (longer ones are shared `Bytes`).

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};

use bytes::Bytes;
use protocol::types::Offset;

use super::TableError;
use crate::record::ConsumerRecord;

/// What one key costs beyond its bytes, for `bytes_max`: three `Bytes`
/// handles (32 B each: the map's key and value, the order's key), its
/// share of the hash table and of a tree node, and the shared key's
/// header, roughly.
pub const ENTRY_OVERHEAD_BYTES: usize = 160;

/// Keys this long or shorter are stored inline.
pub const INLINE_KEY_BYTES: usize = 30;

/// A stored key: inline when short, else shared bytes of its own. Equal,
/// ordered and hashed as its bytes (so maps of it are looked up by `&[u8]`).
#[derive(Clone)]
enum Key {
    Inline { len: u8, bytes: [u8; INLINE_KEY_BYTES] },
    Shared(Bytes),
}

impl Key {
    /// The key's bytes, copied (from a fetched batch: see the module docs).
    fn copy_from(key: &[u8]) -> Key {
        if key.len() <= INLINE_KEY_BYTES {
            let mut bytes = [0u8; INLINE_KEY_BYTES];
            bytes[..key.len()].copy_from_slice(key);
            Key::Inline { len: key.len() as u8, bytes }
        } else {
            Key::Shared(Bytes::copy_from_slice(key))
        }
    }

    /// A key of bytes the table may keep as they are (a checkpoint's).
    fn from_owned(key: Bytes) -> Key {
        if key.len() <= INLINE_KEY_BYTES { Key::copy_from(&key) } else { Key::Shared(key) }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..*len as usize],
            Key::Shared(b) => b,
        }
    }

    fn to_bytes(&self) -> Bytes {
        match self {
            Key::Inline { .. } => Bytes::copy_from_slice(self.as_bytes()),
            Key::Shared(b) => b.clone(),
        }
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", Bytes::copy_from_slice(self.as_bytes()))
    }
}

/// Records applied since the table was opened (not kept in a checkpoint).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Every record applied, with or without a key.
    pub records: u64,
    /// Records with a key and a value: the key's value is now theirs.
    pub puts: u64,
    /// Tombstones (a key, no value), whether or not the key was there.
    pub deletes: u64,
    /// Records without a key: nothing to store them under, so skipped.
    pub unkeyed: u64,
}

/// What applying one record did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// No key: the table is as it was (only the position moved).
    Skipped,
    /// The key now has the record's value; `old` is the one it replaced.
    Put { old: Option<Bytes> },
    /// The key is gone; `old` is its value, `None` if it was not there.
    Deleted { old: Option<Bytes> },
}

/// The latest value per key of a topic, and the offsets it reflects.
#[derive(Debug, Clone)]
pub struct TableState {
    entries: HashMap<Key, Bytes>,
    /// The keys of `entries`, in byte order.
    order: BTreeSet<Key>,
    /// Next offset to apply, per partition.
    positions: BTreeMap<u32, Offset>,
    /// Keys, values and [`ENTRY_OVERHEAD_BYTES`] per key.
    bytes: usize,
    bytes_max: usize,
    stats: TableStats,
}

impl TableState {
    /// An empty table that refuses to hold more than `bytes_max` bytes.
    pub fn new(bytes_max: usize) -> TableState {
        TableState {
            entries: HashMap::new(),
            order: BTreeSet::new(),
            positions: BTreeMap::new(),
            bytes: 0,
            bytes_max,
            stats: TableStats::default(),
        }
    }

    /// Adds an entry read from a checkpoint (so its bytes are the table's
    /// own already), whose keys come in strictly ascending order (the
    /// reader checks it), so never one the table has; `false` if the table
    /// would pass `bytes_max`.
    #[must_use]
    pub(crate) fn restore(&mut self, key: Bytes, value: Bytes) -> bool {
        debug_assert!(self.order.last().is_none_or(|last| last.as_bytes() < &key[..]), "restored in key order");
        let bytes = self.bytes.saturating_add(entry_bytes(&key, &value));
        if bytes > self.bytes_max {
            return false;
        }
        self.bytes = bytes;
        let key = Key::from_owned(key);
        self.order.insert(key.clone());
        self.entries.insert(key, value);
        true
    }

    /// Sets the positions a checkpoint reflects.
    pub(crate) fn restore_positions(&mut self, positions: BTreeMap<u32, Offset>) {
        self.positions = positions;
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.entries.get(key).map(|v| &v[..])
    }

    /// Like [`TableState::get`], as the table's `Bytes` (a clone shares them).
    pub fn get_bytes(&self, key: &[u8]) -> Option<&Bytes> {
        self.entries.get(key)
    }

    /// Every key and its value, in key (byte) order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> + DoubleEndedIterator {
        self.order.iter().map(|k| (k.as_bytes(), &self.entries[k][..]))
    }

    /// Every entry, sharing the table's values (only keys short enough to
    /// be inline are copied): for a checkpoint, or to compare with later
    /// ([`diff`](super::diff)).
    pub fn snapshot(&self) -> BTreeMap<Bytes, Bytes> {
        // In order, so the map is built in one pass, without a sort.
        self.order.iter().map(|k| (k.to_bytes(), self.entries[k].clone())).collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The memory the entries hold, as `bytes_max` counts it.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn bytes_max(&self) -> usize {
        self.bytes_max
    }

    /// The next offset to apply, per partition: the table reflects every
    /// record before it, and none at or after it.
    pub fn positions(&self) -> &BTreeMap<u32, Offset> {
        &self.positions
    }

    pub fn stats(&self) -> TableStats {
        self.stats
    }

    /// Moves `partition`'s position to `offset` if that is ahead: past the
    /// end of a compacted batch or a control batch, whose offsets hold no
    /// record to apply.
    pub(crate) fn advance(&mut self, partition: u32, offset: Offset) {
        let position = self.positions.entry(partition).or_insert(offset);
        *position = (*position).max(offset);
    }

    /// Applies one record: a key and a value puts, a key and no value (a
    /// tombstone) deletes, no key is skipped. Per partition, records must
    /// come in offset order, each at or after the position (gaps are
    /// fine). A refused record changes nothing.
    pub fn apply(&mut self, record: &ConsumerRecord) -> Result<Applied, TableError> {
        if let Some(&position) = self.positions.get(&record.partition)
            && record.offset < position
        {
            return Err(TableError::OutOfOrder { partition: record.partition, offset: record.offset, position });
        }
        let applied = match (&record.key, &record.value) {
            (None, _) => {
                self.stats.unkeyed += 1;
                Applied::Skipped
            }
            (Some(key), Some(value)) => {
                let old = self.put(key, value, record)?;
                self.stats.puts += 1;
                Applied::Put { old }
            }
            (Some(key), None) => {
                let old = self.entries.remove(&key[..]);
                if let Some(old) = &old {
                    self.bytes -= entry_bytes(key, old);
                    self.order.remove(&key[..]);
                }
                self.stats.deletes += 1;
                Applied::Deleted { old }
            }
        };
        self.stats.records += 1;
        self.positions.insert(record.partition, record.offset.next());
        Ok(applied)
    }

    /// The key's value becomes `value` (copied); the one it had, if any.
    fn put(&mut self, key: &[u8], value: &[u8], record: &ConsumerRecord) -> Result<Option<Bytes>, TableError> {
        let full = |bytes: usize, max: usize| TableError::Full {
            partition: record.partition,
            offset: record.offset,
            bytes,
            bytes_max: max,
        };
        // Most events update a key the table has: one lookup, no key copied.
        if let Some(slot) = self.entries.get_mut(key) {
            let bytes = self.bytes - slot.len() + value.len();
            if bytes > self.bytes_max {
                return Err(full(bytes, self.bytes_max));
            }
            self.bytes = bytes;
            return Ok(Some(std::mem::replace(slot, Bytes::copy_from_slice(value))));
        }
        let bytes = self.bytes + entry_bytes(key, value);
        if bytes > self.bytes_max {
            return Err(full(bytes, self.bytes_max));
        }
        self.bytes = bytes;
        let key = Key::copy_from(key);
        self.order.insert(key.clone());
        self.entries.insert(key, Bytes::copy_from_slice(value));
        Ok(None)
    }
}

/// What one entry counts for `bytes_max`.
fn entry_bytes(key: &[u8], value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::types::Timestamp;

    fn record(partition: u32, offset: u64, key: Option<&str>, value: Option<&str>) -> ConsumerRecord {
        ConsumerRecord {
            partition,
            offset: Offset(offset),
            timestamp: Timestamp(0),
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers: Vec::new(),
        }
    }

    #[test]
    fn a_value_puts_a_tombstone_deletes_and_a_record_without_a_key_is_skipped() {
        let mut t = TableState::new(usize::MAX);
        assert_eq!(t.apply(&record(0, 0, Some("a"), Some("1"))).unwrap(), Applied::Put { old: None });
        assert_eq!(t.apply(&record(1, 0, Some("b"), Some("2"))).unwrap(), Applied::Put { old: None });
        assert_eq!(t.apply(&record(0, 1, Some("a"), Some("3"))).unwrap(), Applied::Put { old: Some("1".into()) });
        assert_eq!(t.apply(&record(0, 2, None, Some("x"))).unwrap(), Applied::Skipped);
        assert_eq!(t.apply(&record(1, 5, Some("b"), None)).unwrap(), Applied::Deleted { old: Some("2".into()) });
        assert_eq!(t.apply(&record(1, 6, Some("zz"), None)).unwrap(), Applied::Deleted { old: None });
        assert_eq!(t.get(b"a"), Some(&b"3"[..]));
        assert_eq!(t.get(b"b"), None);
        assert_eq!(t.len(), 1);
        assert_eq!(t.positions(), &BTreeMap::from([(0, Offset(3)), (1, Offset(7))]));
        assert_eq!(t.stats(), TableStats { records: 6, puts: 3, deletes: 2, unkeyed: 1 });
        assert_eq!(t.bytes(), 2 + ENTRY_OVERHEAD_BYTES);
        t.apply(&record(0, 3, Some("a"), None)).unwrap();
        assert_eq!((t.len(), t.bytes()), (0, 0), "a deleted key gives its bytes back");
    }

    #[test]
    fn iteration_is_in_key_byte_order_inline_keys_or_not() {
        let long = |c: &str| c.repeat(INLINE_KEY_BYTES);
        let (la, lb, lm) = (long("a"), long("b"), long("m"));
        let keys = ["m", "a", "zz", "b", "aa", "", la.as_str(), lm.as_str(), lb.as_str(), "a\0"];
        let mut t = TableState::new(usize::MAX);
        for (i, k) in keys.iter().enumerate() {
            t.apply(&record(0, i as u64, Some(k), Some(k))).unwrap();
        }
        let mut sorted: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        sorted.sort_unstable();
        assert_eq!(t.iter().map(|(k, _)| k).collect::<Vec<_>>(), sorted);
        assert!(t.iter().all(|(k, v)| k == v));
        assert_eq!(t.snapshot().keys().map(|k| &k[..]).collect::<Vec<_>>(), sorted);
        t.apply(&record(0, 20, Some(&lm), None)).unwrap();
        t.apply(&record(0, 21, Some("a\0"), None)).unwrap();
        assert_eq!((t.get(lm.as_bytes()), t.get(b"a\0"), t.len()), (None, None, keys.len() - 2));
        assert_eq!(t.iter().len(), t.len());
    }

    #[test]
    fn a_record_behind_the_position_is_refused_and_changes_nothing() {
        let mut t = TableState::new(usize::MAX);
        t.apply(&record(0, 10, Some("a"), Some("1"))).unwrap();
        let e = t.apply(&record(0, 10, Some("a"), Some("2"))).unwrap_err();
        assert!(matches!(e, TableError::OutOfOrder { partition: 0, offset: Offset(10), position: Offset(11) }), "{e}");
        assert_eq!(t.get(b"a"), Some(&b"1"[..]));
        // Another partition has positions of its own; gaps are fine.
        t.apply(&record(1, 3, Some("b"), Some("1"))).unwrap();
        t.apply(&record(0, 20, Some("a"), Some("3"))).unwrap();
        assert_eq!(t.positions()[&0], Offset(21));
    }

    #[test]
    fn a_put_past_the_byte_limit_is_refused_and_changes_nothing() {
        let limit = 2 * (1 + 4 + ENTRY_OVERHEAD_BYTES);
        let mut t = TableState::new(limit);
        t.apply(&record(0, 0, Some("a"), Some("1234"))).unwrap();
        t.apply(&record(0, 1, Some("b"), Some("1234"))).unwrap();
        assert_eq!(t.bytes(), limit);
        let e = t.apply(&record(0, 2, Some("c"), Some(""))).unwrap_err();
        assert!(matches!(e, TableError::Full { offset: Offset(2), .. }), "{e}");
        let e = t.apply(&record(0, 2, Some("a"), Some("12345"))).unwrap_err();
        assert!(matches!(e, TableError::Full { .. }), "{e}");
        assert_eq!((t.get(b"a"), t.positions()[&0], t.bytes()), (Some(&b"1234"[..]), Offset(2), limit));
        // A smaller value, or a delete, fits.
        t.apply(&record(0, 2, Some("a"), Some("1"))).unwrap();
        t.apply(&record(0, 3, Some("b"), None)).unwrap();
        t.apply(&record(0, 4, Some("c"), Some("1234"))).unwrap();
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn stored_bytes_are_copies_not_slices_of_the_fetched_batch() {
        let batch = Bytes::from(vec![7u8; 1 << 16]);
        let mut t = TableState::new(usize::MAX);
        let r = ConsumerRecord {
            partition: 0,
            offset: Offset(0),
            timestamp: Timestamp(0),
            key: Some(batch.slice(0..4)),
            value: Some(batch.slice(4..100)),
            headers: Vec::new(),
        };
        t.apply(&r).unwrap();
        let (k, v) = t.iter().next().unwrap();
        let inside = |b: &[u8]| batch.as_ptr() <= b.as_ptr() && b.as_ptr() < batch.as_ptr().wrapping_add(batch.len());
        assert!(!inside(k) && !inside(v), "the table must not keep the batch alive");
        assert_eq!(v.len(), 96);
        // A long key is copied too.
        let long = ConsumerRecord { key: Some(batch.slice(100..200)), offset: Offset(1), ..r };
        t.apply(&long).unwrap();
        assert!(t.iter().all(|(k, v)| !inside(k) && !inside(v)));
        assert_eq!(t.get(&batch[100..200]).map(<[u8]>::len), Some(96));
    }
}
