use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use proptest::prelude::*;
use protocol::ErrorCode;

use super::*;

const LOCK_MS: u32 = 1000;

/// A queue coordinator with the records it returned replayed into a
/// second one, so every test also checks that the log rebuilds the state.
struct World {
    q: Queues,
    replayed: Queues,
    now: Millis,
    /// (log start, high watermark) of partition 0 and 1 of topic "t".
    ends: BTreeMap<(String, u32), (u64, u64)>,
}

impl World {
    fn new(limits: QueueLimits, hw: [u64; 2]) -> World {
        let ends = BTreeMap::from([(("t".to_owned(), 0), (0, hw[0])), (("t".to_owned(), 1), (0, hw[1]))]);
        World { q: Queues::new(limits.clone()), replayed: Queues::new(limits), now: Millis(1_000_000), ends }
    }

    fn keep<T>(&mut self, o: QueueOutcome<T>) -> Result<T, ErrorCode> {
        for r in o.records {
            let (k, v) = r.encode();
            let Ok(GroupRecord::Queue { queue, topic, partition, value }) = GroupRecord::decode(k, v) else {
                panic!("a queue call wrote a record that is not a queue record");
            };
            self.replayed.replay(queue, topic, partition, value);
        }
        o.result
    }

    fn fetch(&mut self, member: &str, acks: Vec<QueueAck>, records_max: u32) -> Result<QueueFetchResponse, ErrorCode> {
        let req = QueueFetchRequest {
            queue: "jobs".into(),
            member: member.into(),
            topics: vec!["t".into()],
            acks,
            records_max,
            lock_ms: LOCK_MS,
        };
        let o = self.q.fetch(&req, &self.ends, self.now);
        self.keep(o)
    }

    fn partitions(q: &Queues) -> BTreeMap<(String, u32), QueuePartition> {
        q.queue("jobs").map(|q| q.partitions.clone()).unwrap_or_default()
    }

    fn assert_replay_matches(&self) {
        assert_eq!(World::partitions(&self.replayed), World::partitions(&self.q), "the log lost a change");
    }
}

fn ack(a: &AcquiredRange, kind: AckKind) -> QueueAck {
    QueueAck { topic: a.topic.clone(), partition: a.partition, first: a.first, last: a.last, kind }
}

fn offsets(runs: &[AcquiredRange]) -> BTreeSet<(u32, u64)> {
    runs.iter().flat_map(|r| (r.first..=r.last).map(|o| (r.partition, o))).collect()
}

#[test]
fn each_record_goes_to_one_consumer_and_an_accepted_one_never_comes_back() {
    let mut w = World::new(QueueLimits::default(), [10, 10]);
    let a = w.fetch("a", vec![], 12).unwrap();
    let b = w.fetch("b", vec![], 100).unwrap();
    let (sa, sb) = (offsets(&a.acquired), offsets(&b.acquired));
    assert_eq!(sa.len(), 12);
    assert_eq!(sb.len(), 8);
    assert!(sa.is_disjoint(&sb), "a record was handed to two consumers");
    let acks: Vec<QueueAck> = a.acquired.iter().map(|r| ack(r, AckKind::Accept)).collect();
    let again = w.fetch("a", acks, 100).unwrap();
    assert!(again.ack_errors.iter().all(|c| c.is_ok()), "{:?}", again.ack_errors);
    assert!(again.acquired.is_empty(), "b holds the rest; nothing is free");
    // b's locks run out: its records come back, with a second delivery.
    w.now = w.now.plus_ms(u64::from(LOCK_MS));
    let third = w.fetch("c", vec![], 100).unwrap();
    assert_eq!(offsets(&third.acquired), sb);
    assert!(third.acquired.iter().all(|r| r.deliveries == 2));
    // b's late ack is refused: c holds them now.
    let late: Vec<QueueAck> = b.acquired.iter().map(|r| ack(r, AckKind::Accept)).collect();
    let refused = w.fetch("b", late, 0).unwrap();
    assert!(refused.ack_errors.iter().all(|&c| c == ErrorCode::INVALID_RECORD_STATE));
    let done: Vec<QueueAck> = third.acquired.iter().map(|r| ack(r, AckKind::Accept)).collect();
    w.fetch("c", done, 0).unwrap();
    let desc = w.q.describe("jobs", w.now).unwrap();
    let acked: u64 = desc.partitions.iter().map(|p| p.acked).sum();
    assert_eq!(acked, 20);
    assert!(desc.partitions.iter().all(|p| p.start == 10 && p.next == 10));
    w.assert_replay_matches();
}

#[test]
fn a_release_redelivers_after_its_delay_and_the_delivery_limit_dead_letters() {
    let limits = QueueLimits { delivery_count_max: 2, ..QueueLimits::default() };
    let mut w = World::new(limits, [1, 0]);
    let first = w.fetch("a", vec![], 10).unwrap().acquired;
    assert_eq!(first.len(), 1);
    let r = w.fetch("a", vec![ack(&first[0], AckKind::Release { delay_ms: 500 })], 10).unwrap();
    assert_eq!(r.ack_errors, vec![ErrorCode::NONE]);
    assert!(r.acquired.is_empty(), "released with a delay: not yet");
    w.now = w.now.plus_ms(500);
    let second = w.fetch("b", vec![], 10).unwrap().acquired;
    assert_eq!(second[0].deliveries, 2);
    assert_eq!(second[0].dead_letter, None);
    // The second release reaches the limit: the record is bound for the
    // dead-letter topic, and handed out as such.
    let third = w.fetch("b", vec![ack(&second[0], AckKind::Release { delay_ms: 0 })], 10).unwrap().acquired;
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].dead_letter, Some(DeadLetterReason::DeliveryLimit));
    // It cannot be accepted now, only reported dead-lettered.
    let wrong = w.fetch("b", vec![ack(&third[0], AckKind::Accept)], 0).unwrap();
    assert_eq!(wrong.ack_errors, vec![ErrorCode::INVALID_RECORD_STATE]);
    w.fetch("b", vec![ack(&third[0], AckKind::DeadLettered)], 0).unwrap();
    let p = &w.q.describe("jobs", w.now).unwrap().partitions[0];
    assert_eq!((p.acked, p.dead_lettered, p.start), (0, 1, 1));
    w.assert_replay_matches();
}

#[test]
fn a_reject_dead_letters_at_once_and_a_holder_that_dies_leaves_it_to_the_next() {
    let mut w = World::new(QueueLimits::default(), [3, 0]);
    let got = w.fetch("a", vec![], 10).unwrap().acquired;
    let reject = QueueAck { topic: "t".into(), partition: 0, first: 1, last: 1, kind: AckKind::Reject };
    let dl = w.fetch("a", vec![reject], 0).unwrap();
    assert_eq!(dl.ack_errors, vec![ErrorCode::NONE]);
    assert_eq!(got.len(), 1);
    let holder = w.fetch("b", vec![], 10).unwrap().acquired;
    assert_eq!(holder.len(), 1);
    assert_eq!(
        (holder[0].first, holder[0].dead_letter, holder[0].deliveries),
        (1, Some(DeadLetterReason::Rejected), 1)
    );
    w.now = w.now.plus_ms(u64::from(LOCK_MS) + 1);
    let next = w.fetch("c", vec![], 10).unwrap().acquired;
    assert!(
        next.iter().any(|r| (r.first, r.last, r.dead_letter) == (1, 1, Some(DeadLetterReason::Rejected))),
        "the dead letter is offered again: {next:?}"
    );
    w.assert_replay_matches();
}

#[test]
fn no_more_than_the_in_flight_limit_is_handed_out_past_the_oldest_unfinished_record() {
    let limits = QueueLimits { partition_in_flight_max: 5, ..QueueLimits::default() };
    let mut w = World::new(limits, [100, 0]);
    let got = w.fetch("a", vec![], 100).unwrap().acquired;
    assert_eq!(offsets(&got).len(), 5);
    // Accepting 1..=4 leaves 0 unfinished: still no room.
    let part = QueueAck { topic: "t".into(), partition: 0, first: 1, last: 4, kind: AckKind::Accept };
    let r = w.fetch("a", vec![part], 100).unwrap();
    assert!(r.acquired.is_empty());
    let head = QueueAck { topic: "t".into(), partition: 0, first: 0, last: 0, kind: AckKind::Accept };
    let r = w.fetch("a", vec![head], 100).unwrap();
    assert_eq!(offsets(&r.acquired), (5..10).map(|o| (0, o)).collect());
    w.assert_replay_matches();
}

#[test]
fn records_the_log_dropped_before_they_were_handed_out_are_skipped() {
    let mut w = World::new(QueueLimits::default(), [10, 0]);
    let got = w.fetch("a", vec![], 3).unwrap().acquired;
    w.fetch("a", vec![ack(&got[0], AckKind::Release { delay_ms: 0 })], 0).unwrap();
    w.ends.insert(("t".into(), 0), (6, 10));
    let r = w.fetch("a", vec![], 100).unwrap().acquired;
    assert_eq!(offsets(&r), (6..10).map(|o| (0, o)).collect());
    let p = &w.q.describe("jobs", w.now).unwrap().partitions[0];
    assert_eq!(p.skipped, 6);
    w.assert_replay_matches();
}

#[test]
fn a_queue_with_held_records_cannot_be_deleted_and_an_idle_one_can() {
    let mut w = World::new(QueueLimits::default(), [2, 0]);
    w.fetch("a", vec![], 1).unwrap();
    let o = w.q.delete("jobs", w.now);
    assert_eq!(w.keep(o), Err(ErrorCode::GROUP_NOT_EMPTY));
    w.now = w.now.plus_ms(u64::from(LOCK_MS));
    let o = w.q.delete("jobs", w.now);
    assert_eq!(w.keep(o), Ok(()));
    assert!(w.q.queue("jobs").is_none());
    assert!(w.replayed.queue("jobs").is_none(), "the tombstones forget it on replay too");
}

#[test]
fn bad_calls_are_refused_with_their_codes() {
    let mut w = World::new(QueueLimits::default(), [2, 0]);
    let bad = |f: fn(&mut QueueFetchRequest)| {
        let mut req = QueueFetchRequest {
            queue: "jobs".into(),
            member: "a".into(),
            topics: vec!["t".into()],
            acks: vec![],
            records_max: 1,
            lock_ms: LOCK_MS,
        };
        f(&mut req);
        req
    };
    let cases: Vec<(QueueFetchRequest, ErrorCode)> = vec![
        (bad(|r| r.queue = "no spaces".into()), ErrorCode::INVALID_GROUP_ID),
        (bad(|r| r.member = String::new()), ErrorCode::INVALID_REQUEST),
        (bad(|r| r.lock_ms = 1), ErrorCode::INVALID_REQUEST),
        (bad(|r| r.records_max = 1 << 30), ErrorCode::INVALID_REQUEST),
        (
            bad(|r| {
                r.acks = vec![QueueAck { topic: "t".into(), partition: 0, first: 5, last: 4, kind: AckKind::Accept }];
            }),
            ErrorCode::INVALID_REQUEST,
        ),
    ];
    for (req, code) in cases {
        let o = w.q.fetch(&req, &w.ends, w.now);
        assert!(o.records.is_empty());
        assert_eq!(o.result.map(|_| ()), Err(code), "{req:?}");
    }
    // An ack of a partition the queue never read is refused, not a crash.
    let r = w
        .fetch("a", vec![QueueAck { topic: "u".into(), partition: 9, first: 0, last: 0, kind: AckKind::Accept }], 0)
        .unwrap();
    assert_eq!(r.ack_errors, vec![ErrorCode::INVALID_RECORD_STATE]);
}

#[test]
fn a_damaged_queue_record_is_refused() {
    let mut p = QueuePartition::starting_at(10);
    p.next = 12;
    p.entries.insert(10, Entry { state: State::Available { at: Millis(0) }, deliveries: 1 });
    p.entries.insert(11, Entry { state: State::Acquired { member: "m".into(), until: Millis(5) }, deliveries: 1 });
    let record = GroupRecord::Queue { queue: "q".into(), topic: "t".into(), partition: 0, value: Some(p) };
    let (k, v) = record.encode();
    assert_eq!(GroupRecord::decode(k.clone(), v.clone()).unwrap(), record);
    let v = v.unwrap();
    // `next` (bytes 10..18 after the version and start) below the runs' end.
    let mut short = v.to_vec();
    short[10..18].copy_from_slice(&11u64.to_le_bytes());
    assert!(GroupRecord::decode(k.clone(), Some(Bytes::from(short))).is_err());
    // `start` past the first run.
    let mut late = v.to_vec();
    late[2..10].copy_from_slice(&11u64.to_le_bytes());
    assert!(GroupRecord::decode(k, Some(Bytes::from(late))).is_err());
}

#[derive(Debug, Clone)]
enum Step {
    Fetch {
        member: usize,
        max: u32,
    },
    /// The member acts on what it holds: 0 accept, 1 release, 2 reject.
    Act {
        member: usize,
        how: u8,
    },
    Crash(usize),
    Pass(u64),
    Produce(u64),
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..3usize, 1..8u32).prop_map(|(member, max)| Step::Fetch { member, max }),
        4 => (0..3usize, 0..3u8).prop_map(|(member, how)| Step::Act { member, how }),
        1 => (0..3usize).prop_map(Step::Crash),
        1 => (0..1500u64).prop_map(Step::Pass),
        1 => (1..6u64).prop_map(Step::Produce),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    /// Consumers fetch, accept, release, reject and crash in any order, with
    /// time passing and records arriving. Every step keeps the invariants,
    /// no record is held by two consumers at once, every record is finished
    /// at most once, and the log replays to the same state. In the end a
    /// consumer that accepts everything (and copies the dead letters) drains
    /// the queue: every record is acked or dead-lettered exactly once.
    #[test]
    fn any_mix_of_consumers_finishes_every_record_exactly_once(steps in proptest::collection::vec(arb_step(), 1..60)) {
        let limits = QueueLimits { delivery_count_max: 3, partition_in_flight_max: 8, ..QueueLimits::default() };
        let mut w = World::new(limits, [4, 2]);
        let name = |i: usize| format!("m{i}");
        let mut holds: Vec<Vec<AcquiredRange>> = vec![Vec::new(); 3];
        let mut finished: BTreeMap<(u32, u64), u32> = BTreeMap::new();
        let mut rng: u64 = 7;
        for step in steps {
            match step {
                Step::Fetch { member, max } => {
                    let r = w.fetch(&name(member), vec![], max).unwrap();
                    holds[member].extend(r.acquired);
                }
                Step::Act { member, how } => {
                    let held = std::mem::take(&mut holds[member]);
                    let acks: Vec<QueueAck> = held
                        .iter()
                        .map(|a| {
                            rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                            let kind = match (a.dead_letter, (u64::from(how) + (rng >> 60)) % 3) {
                                (Some(_), _) => AckKind::DeadLettered,
                                (None, 0) => AckKind::Accept,
                                (None, 1) => AckKind::Release { delay_ms: 100 },
                                (None, _) => AckKind::Reject,
                            };
                            ack(a, kind)
                        })
                        .collect();
                    let r = w.fetch(&name(member), acks.clone(), 0).unwrap();
                    for (a, code) in acks.iter().zip(&r.ack_errors) {
                        if code.is_ok() && matches!(a.kind, AckKind::Accept | AckKind::DeadLettered) {
                            for o in a.first..=a.last {
                                *finished.entry((a.partition, o)).or_default() += 1;
                            }
                        }
                    }
                }
                Step::Crash(i) => holds[i].clear(),
                Step::Pass(ms) => {
                    w.now = w.now.plus_ms(ms);
                    let records = w.q.tick(w.now);
                    w.keep(QueueOutcome { result: Ok(()), records }).unwrap();
                }
                Step::Produce(n) => {
                    let e = w.ends.get_mut(&("t".to_owned(), 0)).unwrap();
                    e.1 += n;
                }
            }
            // No record is locked to two consumers, by the coordinator's own account.
            if let Some(q) = w.q.queue("jobs") {
                for p in q.partitions.values() {
                    prop_assert_eq!(p.check(), Ok(()));
                }
            }
            prop_assert!(finished.values().all(|&n| n == 1), "a record finished twice: {:?}", finished);
            w.assert_replay_matches();
        }
        // Drain: locks run out, then one consumer finishes everything.
        for _ in 0..50 {
            w.now = w.now.plus_ms(u64::from(LOCK_MS));
            let got = w.fetch("drain", vec![], 100).unwrap().acquired;
            if got.is_empty() {
                break;
            }
            let acks: Vec<QueueAck> = got
                .iter()
                .map(|a| ack(a, if a.dead_letter.is_some() { AckKind::DeadLettered } else { AckKind::Accept }))
                .collect();
            let r = w.fetch("drain", acks.clone(), 0).unwrap();
            for (a, code) in acks.iter().zip(&r.ack_errors) {
                prop_assert!(code.is_ok());
                for o in a.first..=a.last {
                    *finished.entry((a.partition, o)).or_default() += 1;
                }
            }
        }
        let total: u64 = w.ends.values().map(|e| e.1).sum();
        prop_assert_eq!(finished.len() as u64, total, "a record was lost");
        prop_assert!(finished.values().all(|&n| n == 1));
        let d = w.q.describe("jobs", w.now).unwrap();
        let counted: u64 = d.partitions.iter().map(|p| p.acked + p.dead_lettered).sum();
        prop_assert_eq!(counted, total);
        w.assert_replay_matches();
    }
}

#[test]
fn a_dead_letter_given_back_by_its_holder_goes_to_the_next_consumer_at_once() {
    let mut w = World::new(QueueLimits::default(), [1, 0]);
    let got = w.fetch("a", vec![], 1).unwrap().acquired;
    w.fetch("a", vec![ack(&got[0], AckKind::Reject)], 0).unwrap();
    let held = w.fetch("b", vec![], 1).unwrap().acquired;
    assert_eq!(held[0].dead_letter, Some(DeadLetterReason::Rejected));
    // b cannot copy it (say, the dead-letter topic refused it) and gives it back.
    let back = w.fetch("b", vec![ack(&held[0], AckKind::Release { delay_ms: 0 })], 0).unwrap();
    assert_eq!(back.ack_errors, vec![ErrorCode::NONE]);
    let next = w.fetch("c", vec![], 1).unwrap().acquired;
    assert_eq!((next[0].first, next[0].dead_letter), (0, Some(DeadLetterReason::Rejected)));
    // Only as a dead letter: it cannot be accepted.
    let wrong = w.fetch("c", vec![ack(&next[0], AckKind::Accept)], 0).unwrap();
    assert_eq!(wrong.ack_errors, vec![ErrorCode::INVALID_RECORD_STATE]);
    w.assert_replay_matches();
}
