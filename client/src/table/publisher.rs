//! The other direction: a table's events published from an application's
//! own state. An entity event is a keyed record whose value is the
//! entity's whole new state; a tombstone (a key and no value) says the
//! entity is gone. Keys pick the partition (Kafka's murmur2 rule), so one
//! entity's events stay in order and a [`Table`](super::Table) applies them
//! in the order they were published.
//!
//! [`diff`] compares two states (entries in key order) and yields the events
//! that turn the first into the second, without building either in full:
//! publish it, and a table of the topic that held the old state holds the
//! new one.

use std::iter::Peekable;

use bytes::Bytes;

use crate::error::Result;
use crate::producer::{Deliveries, Delivery, PartialSend, Producer, ProducerRecord, Record};

/// One event of a diff: `key` now has `value`, or is gone (`None`, a tombstone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edit<'a> {
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

/// Publishes entity events and tombstones to one topic.
#[derive(Clone)]
pub struct TablePublisher {
    producer: Producer,
    topic: String,
}

impl TablePublisher {
    pub fn new(producer: Producer, topic: impl Into<String>) -> TablePublisher {
        TablePublisher { producer, topic: topic.into() }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// Sends an entity event: `key` has `value` from now on.
    pub async fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<Delivery> {
        self.producer.send(ProducerRecord::new(self.topic.as_str(), Some(key), value)).await
    }

    /// Sends a tombstone: `key` is gone from now on.
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<Delivery> {
        let record = ProducerRecord {
            topic: self.topic.clone(),
            key: Some(key.into()),
            value: None,
            ..ProducerRecord::default()
        };
        self.producer.send(record).await
    }

    /// Sends `edits` in order, in bulk ([`Producer::send_all`]): each a put
    /// or a tombstone. In a task that must be `Send`, collect the edits
    /// into a `Vec` first (as `send_all` says).
    pub async fn publish<'a>(
        &self,
        edits: impl IntoIterator<Item = Edit<'a>>,
    ) -> std::result::Result<Deliveries, PartialSend> {
        let records = edits.into_iter().map(|e| Record { key: Some(e.key), value: e.value, ..Record::default() });
        self.producer.send_all(&self.topic, records).await
    }

    /// Sends the events that turn `old` into `new` ([`diff`]): say, a
    /// [`TableState::snapshot`](super::TableState::snapshot) of what was
    /// published and the application's state now.
    pub async fn publish_diff<'a, K1, V1, K2, V2>(
        &self,
        old: impl IntoIterator<Item = (&'a K1, &'a V1)>,
        new: impl IntoIterator<Item = (&'a K2, &'a V2)>,
    ) -> std::result::Result<Deliveries, PartialSend>
    where
        K1: AsRef<[u8]> + ?Sized + 'a,
        V1: AsRef<[u8]> + ?Sized + 'a,
        K2: AsRef<[u8]> + ?Sized + 'a,
        V2: AsRef<[u8]> + ?Sized + 'a,
    {
        self.publish(diff(old, new)).await
    }
}

/// The events that turn `old` into `new`, in key order: a tombstone for
/// each key only `old` has, a put for each key whose value is new or
/// differs. Both are entries in key (byte) order, as a `&BTreeMap` of
/// `Bytes`, `Vec<u8>` or `String` keys (a table's
/// [`snapshot`](super::TableState::snapshot)) and
/// [`TableState::iter`](super::TableState::iter) give them; one pass over
/// both, nothing collected. Entries out of order, or a key twice, panic.
pub fn diff<'a, K1, V1, K2, V2>(
    old: impl IntoIterator<Item = (&'a K1, &'a V1)>,
    new: impl IntoIterator<Item = (&'a K2, &'a V2)>,
) -> impl Iterator<Item = Edit<'a>>
where
    K1: AsRef<[u8]> + ?Sized + 'a,
    V1: AsRef<[u8]> + ?Sized + 'a,
    K2: AsRef<[u8]> + ?Sized + 'a,
    V2: AsRef<[u8]> + ?Sized + 'a,
{
    Diff {
        old: old.into_iter().map(|(k, v)| (k.as_ref(), v.as_ref())).peekable(),
        new: new.into_iter().map(|(k, v)| (k.as_ref(), v.as_ref())).peekable(),
        last: None,
    }
}

/// The merge of two sorted sequences of entries.
struct Diff<'a, A: Iterator, B: Iterator> {
    old: Peekable<A>,
    new: Peekable<B>,
    /// The last key looked at, to check the order.
    last: Option<&'a [u8]>,
}

impl<'a, A, B> Diff<'a, A, B>
where
    A: Iterator<Item = (&'a [u8], &'a [u8])>,
    B: Iterator<Item = (&'a [u8], &'a [u8])>,
{
    fn step(&mut self, key: &'a [u8]) {
        assert!(self.last.is_none_or(|last| last < key), "diff: entries are not in key order, or a key is there twice");
        self.last = Some(key);
    }
}

impl<'a, A, B> Iterator for Diff<'a, A, B>
where
    A: Iterator<Item = (&'a [u8], &'a [u8])>,
    B: Iterator<Item = (&'a [u8], &'a [u8])>,
{
    type Item = Edit<'a>;

    fn next(&mut self) -> Option<Edit<'a>> {
        use std::cmp::Ordering;
        loop {
            let order = match (self.old.peek(), self.new.peek()) {
                (None, None) => return None,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((o, _)), Some((n, _))) => o.cmp(n),
            };
            match order {
                Ordering::Less => {
                    let (key, _) = self.old.next().expect("peeked");
                    self.step(key);
                    return Some(Edit { key, value: None });
                }
                Ordering::Greater => {
                    let (key, value) = self.new.next().expect("peeked");
                    self.step(key);
                    return Some(Edit { key, value: Some(value) });
                }
                Ordering::Equal => {
                    let (_, old) = self.old.next().expect("peeked");
                    let (key, value) = self.new.next().expect("peeked");
                    self.step(key);
                    if old != value {
                        return Some(Edit { key, value: Some(value) });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_diff_deletes_what_went_puts_what_is_new_or_changed_and_skips_the_rest() {
        let old: BTreeMap<String, String> =
            [("a", "1"), ("b", "2"), ("c", "3"), ("e", "5")].map(|(k, v)| (k.into(), v.into())).into();
        let new: BTreeMap<Vec<u8>, Vec<u8>> =
            [("b", "2"), ("c", "33"), ("d", "4")].map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).into();
        let edits: Vec<Edit<'_>> = diff(&old, &new).collect();
        assert_eq!(
            edits,
            [
                Edit { key: b"a", value: None },
                Edit { key: b"c", value: Some(b"33") },
                Edit { key: b"d", value: Some(b"4") },
                Edit { key: b"e", value: None },
            ]
        );
        assert_eq!(diff(&new, &new).count(), 0);
    }

    proptest! {
        /// Applying the diff to the old map gives the new one.
        #[test]
        fn applying_a_diff_to_the_old_state_gives_the_new_one(
            old in proptest::collection::btree_map(proptest::collection::vec(0u8..4, 0..3), 0u8..3, 0..20),
            new in proptest::collection::btree_map(proptest::collection::vec(0u8..4, 0..3), 0u8..3, 0..20),
        ) {
            let old: BTreeMap<Vec<u8>, Vec<u8>> = old.into_iter().map(|(k, v)| (k, vec![v])).collect();
            let new: BTreeMap<Vec<u8>, Vec<u8>> = new.into_iter().map(|(k, v)| (k, vec![v])).collect();
            let mut applied = old.clone();
            for e in diff(&old, &new) {
                match e.value {
                    Some(v) => {
                        prop_assert_ne!(old.get(e.key).map(Vec::as_slice), Some(v), "an edit that changes nothing");
                        applied.insert(e.key.to_vec(), v.to_vec());
                    }
                    None => {
                        prop_assert!(applied.remove(e.key).is_some(), "a tombstone for a key that was not there");
                    }
                }
            }
            prop_assert_eq!(applied, new);
        }
    }
}
