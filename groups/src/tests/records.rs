use std::collections::{BTreeMap, BTreeSet};

use super::*;

fn samples() -> Vec<GroupRecord> {
    let a: Assignment = BTreeMap::from([("orders".to_owned(), BTreeSet::from([0, 2]))]);
    vec![
        GroupRecord::Offset {
            group: "billing".into(),
            topic: "orders".into(),
            partition: 3,
            value: Some(Committed { offset: 42, metadata: "m".into(), committed_at: Millis(1_700_000_000_000) }),
        },
        GroupRecord::Offset { group: "billing".into(), topic: "orders".into(), partition: 3, value: None },
        GroupRecord::Group {
            group: "billing".into(),
            value: Some(GroupMeta { epoch: GroupEpoch(7), assignor: Assignor::Range, empty_since: None }),
        },
        GroupRecord::Group {
            group: "billing".into(),
            value: Some(GroupMeta {
                epoch: GroupEpoch(8),
                assignor: Assignor::CooperativeSticky,
                empty_since: Some(Millis(5)),
            }),
        },
        GroupRecord::Member {
            group: "billing".into(),
            member: "m1".into(),
            value: Some(MemberRecord {
                client_id: "svc".into(),
                subscription: BTreeSet::from(["orders".to_owned()]),
                session_timeout_ms: 45_000,
                rebalance_timeout_ms: 60_000,
                epoch: MemberEpoch(7),
                previous_epoch: MemberEpoch(6),
                assigned: a.clone(),
                revoking: BTreeMap::from([("orders".to_owned(), BTreeSet::from([1]))]),
            }),
        },
        GroupRecord::Member { group: "billing".into(), member: "m1".into(), value: None },
        GroupRecord::Target {
            group: "billing".into(),
            value: Some(Target {
                epoch: GroupEpoch(7),
                topics: BTreeMap::from([("orders".to_owned(), 3)]),
                members: BTreeMap::from([("m1".to_owned(), a)]),
            }),
        },
        GroupRecord::Target { group: "billing".into(), value: None },
        GroupRecord::Queue {
            queue: "jobs".into(),
            topic: "orders".into(),
            partition: 1,
            value: Some(crate::queue::QueuePartition {
                next: 45,
                entries: BTreeMap::from([
                    (40, Entry { state: State::Available { at: Millis(7) }, deliveries: 2 }),
                    (41, Entry { state: State::Acquired { member: "w1".into(), until: Millis(9) }, deliveries: 1 }),
                    (42, Entry { state: State::Acquired { member: "w1".into(), until: Millis(9) }, deliveries: 1 }),
                    (
                        43,
                        Entry {
                            state: State::DeadLetter { reason: DeadLetterReason::Rejected, holder: None },
                            deliveries: 1,
                        },
                    ),
                    (
                        44,
                        Entry {
                            state: State::DeadLetter {
                                reason: DeadLetterReason::DeliveryLimit,
                                holder: Some(("w2".into(), Millis(3))),
                            },
                            deliveries: 5,
                        },
                    ),
                ]),
                acked: 30,
                dead_lettered: 4,
                skipped: 6,
            }),
        },
        GroupRecord::Queue { queue: "jobs".into(), topic: "orders".into(), partition: 1, value: None },
    ]
}

#[test]
fn every_record_kind_and_its_tombstone_round_trip() {
    for record in samples() {
        let (k, v) = record.encode();
        assert_eq!(GroupRecord::decode(k, v).unwrap(), record);
    }
}

#[test]
fn golden_group_record_bytes_are_stable() {
    let mut bytes = Vec::new();
    for record in samples() {
        let (k, v) = record.encode();
        bytes.extend_from_slice(&(k.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&k);
        match v {
            Some(v) => {
                bytes.extend_from_slice(&(v.len() as i32).to_le_bytes());
                bytes.extend_from_slice(&v);
            }
            None => bytes.extend_from_slice(&(-1i32).to_le_bytes()),
        }
    }
    if std::env::var_os("CAIRN_BLESS").is_some() {
        std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/src/golden/group_records_v0.bin"), &bytes).unwrap();
    }
    let golden: &[u8] = include_bytes!("../golden/group_records_v0.bin");
    assert_eq!(bytes, golden, "the offsets topic's record format changed: bump its version and docs/groups.md");
}

#[test]
fn a_damaged_record_is_an_error_not_a_panic() {
    for record in samples() {
        let (k, v) = record.encode();
        for cut in 0..k.len() {
            assert!(GroupRecord::decode(k.slice(..cut), v.clone()).is_err(), "key cut at {cut}");
        }
        if let Some(v) = v {
            for cut in 0..v.len() {
                assert!(GroupRecord::decode(k.clone(), Some(v.slice(..cut))).is_err(), "value cut at {cut}");
            }
            let mut longer = v.to_vec();
            longer.push(0);
            assert!(GroupRecord::decode(k.clone(), Some(longer.into())).is_err(), "trailing byte");
        }
    }
    let unknown_kind = Bytes::from_static(&[9, 0, 1, 0, b'g']);
    assert!(GroupRecord::decode(unknown_kind, None).is_err());
}
