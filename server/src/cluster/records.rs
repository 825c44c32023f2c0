//! The records of the metadata partition (ADR 25's controller log, in its
//! first form): what every broker applies, in log order, to its own copy
//! of the topic table. One record per batch, the record's value JSON (a
//! format that can grow fields; a binary codec with a golden file comes
//! with snapshots). Applying is idempotent, so a broker replays the log
//! from its start at every boot.

use serde::{Deserialize, Serialize};

use crate::ids::TopicId;
use crate::metadata::TopicMeta;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MetadataRecord {
    /// A topic with its replica assignment (`meta.replicas`).
    TopicCreated {
        meta: TopicMeta,
    },
    TopicDeleted {
        id: TopicId,
        name: String,
    },
    /// A topic's settings, all of them (the result of the change, not the
    /// change: applying it twice is applying it once).
    TopicConfigChanged {
        id: TopicId,
        name: String,
        config: crate::topic_config::TopicOverrides,
    },
    /// A partition starts moving to `target` (its first the preferred
    /// leader); the brokers in it open the partition.
    ReassignmentStarted {
        id: TopicId,
        name: String,
        partition: u32,
        target: Vec<u32>,
    },
    /// The partition's voters are `replicas` now; the brokers left out
    /// close it and delete their copy.
    ReassignmentEnded {
        id: TopicId,
        name: String,
        partition: u32,
        replicas: Vec<u32>,
    },
    /// A broker joined (`--join`): every broker adds it to those it talks
    /// to, placement may give it replicas, and it follows the metadata
    /// partition as an observer.
    BrokerRegistered {
        node: u32,
        replication: std::net::SocketAddr,
    },
    /// A broker that joined is taken out (`cairn broker remove`; it held
    /// no replica): every broker forgets it.
    BrokerUnregistered {
        node: u32,
    },
}

impl MetadataRecord {
    /// One batch holding the record (offsets and epoch are stamped at the append).
    pub fn to_batch(&self, now_ms: i64) -> Vec<u8> {
        let value = serde_json::to_vec(self).expect("a record serializes");
        let mut builder = protocol::batch::BatchBuilder::new();
        builder.push(protocol::batch::RecordInput::new(None, Some(&value), protocol::types::Timestamp(now_ms)));
        builder.build().expect("one record")
    }

    /// The records of a stored batch (none of a control batch).
    pub fn from_batch(bytes: &[u8]) -> Result<Vec<MetadataRecord>, String> {
        let view = protocol::batch::validate_batch(bytes).map_err(|e| e.to_string())?;
        if view.header.is_control() {
            return Ok(Vec::new());
        }
        let records = view.records().map_err(|e| e.to_string())?;
        records
            .iter()
            .map(|r| {
                let value = r.value.as_ref().ok_or("a metadata record without a value")?;
                serde_json::from_slice(value.as_slice()).map_err(|e| format!("a metadata record: {e}"))
            })
            .collect()
    }
}

/// Replicas of each partition: `rf` brokers of `brokers` (sorted), the
/// first replica (the preferred leader) moving on by one per partition, so
/// replicas and leaders spread over the brokers.
pub fn assign(brokers: &[u32], partitions: u32, rf: u32) -> Vec<Vec<u32>> {
    assert!(!brokers.is_empty() && rf as usize <= brokers.len() && rf > 0, "a replication factor the brokers can hold");
    (0..partitions).map(|p| (0..rf).map(|i| brokers[(p as usize + i as usize) % brokers.len()]).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_and_preferred_leaders_spread_over_the_brokers() {
        let a = assign(&[1, 2, 3, 4], 4, 3);
        assert_eq!(a, vec![vec![1, 2, 3], vec![2, 3, 4], vec![3, 4, 1], vec![4, 1, 2]]);
        for brokers in 1..6u32 {
            let list: Vec<u32> = (1..=brokers).collect();
            for rf in 1..=brokers {
                for replicas in assign(&list, 12, rf) {
                    let mut r = replicas.clone();
                    r.sort_unstable();
                    r.dedup();
                    assert_eq!(r.len(), rf as usize, "a broker holds two replicas of one partition: {replicas:?}");
                }
            }
        }
    }

    #[test]
    fn a_record_survives_its_batch() {
        let meta = TopicMeta {
            id: TopicId(7),
            name: "orders".into(),
            partitions: 2,
            config: crate::topic_config::TopicOverrides::default(),
            dir: "topics/orders@7".into(),
            replicas: Some(vec![vec![1, 2], vec![2, 1]]),
            moving: std::collections::BTreeMap::new(),
        };
        for record in [
            MetadataRecord::TopicCreated { meta },
            MetadataRecord::TopicDeleted { id: TopicId(7), name: "orders".into() },
            MetadataRecord::ReassignmentStarted {
                id: TopicId(7),
                name: "orders".into(),
                partition: 1,
                target: vec![1, 3],
            },
            MetadataRecord::ReassignmentEnded {
                id: TopicId(7),
                name: "orders".into(),
                partition: 1,
                replicas: vec![1, 3],
            },
            MetadataRecord::BrokerRegistered { node: 4, replication: "127.0.0.1:8074".parse().unwrap() },
            MetadataRecord::BrokerUnregistered { node: 4 },
            MetadataRecord::TopicConfigChanged {
                id: TopicId(7),
                name: "orders".into(),
                config: [("retention.ms".to_owned(), "3600000".to_owned())].into(),
            },
        ] {
            let batch = record.to_batch(1_000);
            assert_eq!(MetadataRecord::from_batch(&batch).unwrap(), vec![record]);
        }
    }
}
