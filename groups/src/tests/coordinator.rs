#![allow(clippy::many_single_char_names)] // a, b, c: the members of a test

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use protocol::ErrorCode;

use super::*;
use crate::group::MemberState;
use crate::types::assignment_len;

fn topics(n: u32) -> BTreeMap<String, u32> {
    BTreeMap::from([("t".to_owned(), n)])
}

fn hb(member: &str, epoch: i32, owned: Option<&Assignment>) -> Heartbeat {
    Heartbeat {
        group: "g".into(),
        member: member.into(),
        member_epoch: MemberEpoch(epoch),
        client_id: "test".into(),
        subscription: (epoch == 0).then(|| BTreeSet::from(["t".to_owned()])),
        assignor: None,
        owned: owned.cloned(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 20_000,
    }
}

/// A member as a well-behaved client runs it: it holds what it was last
/// told, drops what it is no longer given at once, and says so.
#[derive(Debug, Clone, Default)]
struct Client {
    epoch: i32,
    holds: Assignment,
}

struct World {
    c: Coordinator,
    log: Vec<GroupRecord>,
    now: Millis,
    topics: BTreeMap<String, u32>,
}

impl World {
    fn new(partitions: u32) -> World {
        World {
            c: Coordinator::new(Limits::default()),
            log: Vec::new(),
            now: Millis(1_000_000),
            topics: topics(partitions),
        }
    }

    fn keep<T>(&mut self, o: Outcome<T>) -> Result<T, ErrorCode> {
        self.log.extend(o.records);
        o.result
    }

    fn beat(&mut self, member: &str, client: &mut Client) -> Result<HeartbeatReply, ErrorCode> {
        let req = hb(member, client.epoch, Some(&client.holds));
        let o = self.c.heartbeat(&req, &self.topics.clone(), self.now);
        let reply = self.keep(o)?;
        client.epoch = reply.member_epoch.0;
        client.holds = reply.assignment.clone();
        Ok(reply)
    }

    /// Rebuilt from its records alone, as a new leader would.
    fn replayed(&self) -> Coordinator {
        let mut c = Coordinator::new(Limits::default());
        for r in &self.log {
            let (k, v) = r.encode();
            c.replay(GroupRecord::decode(k, v).expect("own records decode"), self.now);
        }
        c
    }
}

/// Groups compared without their in-memory deadlines.
fn durable(c: &Coordinator) -> Vec<(String, Group)> {
    c.groups()
        .map(|(id, g)| {
            let mut g = g.clone();
            for m in g.members.values_mut() {
                m.session_deadline = Millis(0);
                m.revoke_deadline = m.revoke_deadline.map(|_| Millis(0));
            }
            (id.clone(), g)
        })
        .collect()
}

#[test]
fn two_members_split_the_partitions_and_a_third_takes_only_what_is_freed() {
    let mut w = World::new(6);
    let (mut a, mut b, mut c) = (Client::default(), Client::default(), Client::default());
    w.beat("a", &mut a).unwrap();
    assert_eq!(assignment_len(&a.holds), 6, "alone, a reads everything");
    w.beat("b", &mut b).unwrap();
    assert_eq!(assignment_len(&b.holds), 0, "b waits until a gives partitions up");
    w.beat("a", &mut a).unwrap();
    assert_eq!(assignment_len(&a.holds), 3, "a is told to keep 3");
    w.beat("a", &mut a).unwrap(); // a says it dropped them
    w.beat("b", &mut b).unwrap();
    assert_eq!(assignment_len(&b.holds), 3);
    let sticky_a = a.holds.clone();
    w.beat("c", &mut c).unwrap();
    for _ in 0..3 {
        w.beat("a", &mut a).unwrap();
        w.beat("b", &mut b).unwrap();
        w.beat("c", &mut c).unwrap();
    }
    assert_eq!([&a, &b, &c].map(|x| assignment_len(&x.holds)), [2, 2, 2]);
    assert!(a.holds["t"].is_subset(&sticky_a["t"]), "cooperative-sticky: a keeps what it had, loses only one");
    let d = w.c.describe("g").unwrap();
    assert_eq!(d.state, "stable");
    assert!(d.members.iter().all(|m| m.state == MemberState::Stable));
    assert_eq!(durable(&w.replayed()), durable(&w.c));
}

#[test]
fn a_member_that_missed_its_epoch_bump_is_believed_only_while_it_owns_no_more_than_it_is_assigned() {
    let mut w = World::new(6);
    let (mut a, mut b) = (Client::default(), Client::default());
    w.beat("a", &mut a).unwrap();
    let all_six = a.holds.clone();
    let first_epoch = a.epoch;
    w.beat("b", &mut b).unwrap();
    w.beat("a", &mut a).unwrap(); // told to keep 3
    w.beat("a", &mut a).unwrap(); // says it dropped them: a new epoch
    w.beat("b", &mut b).unwrap(); // b takes the 3
    assert!(a.epoch > first_epoch);
    assert_eq!(assignment_len(&b.holds), 3);
    // The reply that moved a on was lost: a still speaks its old epoch.
    let still_six = hb("a", first_epoch, Some(&all_six));
    assert_eq!(
        w.c.heartbeat(&still_six, &topics(6), w.now).result.unwrap_err(),
        ErrorCode::FENCED_MEMBER_EPOCH,
        "it owns partitions b now holds"
    );
    let silent = hb("a", first_epoch, None);
    assert_eq!(w.c.heartbeat(&silent, &topics(6), w.now).result.unwrap_err(), ErrorCode::FENCED_MEMBER_EPOCH);
    let kept = hb("a", first_epoch, Some(&a.holds));
    let o = w.c.heartbeat(&kept, &topics(6), w.now);
    let reply = w.keep(o).expect("what it owns is its own: believed");
    assert_eq!(reply.member_epoch.0, a.epoch, "and told its current epoch");
    assert_eq!(reply.assignment, a.holds);
    w.c.group("g").unwrap().check_exclusive().unwrap();
}

#[test]
fn an_eager_group_revokes_everything_before_anyone_gets_new_partitions() {
    let mut w = World::new(4);
    let (mut a, mut b) = (Client::default(), Client::default());
    let mut join = hb("a", 0, None);
    join.assignor = Some("range".into());
    let o = w.c.heartbeat(&join, &topics(4), w.now);
    let r = w.keep(o).unwrap();
    a.epoch = r.member_epoch.0;
    a.holds = r.assignment;
    assert_eq!(assignment_len(&a.holds), 4);
    w.beat("b", &mut b).unwrap();
    w.beat("a", &mut a).unwrap();
    assert!(a.holds.is_empty(), "eager: a drops all four, even the two it will get back");
    w.beat("a", &mut a).unwrap();
    w.beat("b", &mut b).unwrap();
    assert_eq!((assignment_len(&a.holds), assignment_len(&b.holds)), (2, 2));
    assert_eq!(a.holds["t"], BTreeSet::from([0, 1]), "range: a gets the first range");
}

#[test]
fn a_member_joining_with_another_assignor_than_the_groups_is_refused() {
    let mut w = World::new(2);
    w.beat("a", &mut Client::default()).unwrap();
    let mut join = hb("b", 0, None);
    join.assignor = Some("round-robin".into());
    assert_eq!(w.c.heartbeat(&join, &topics(2), w.now).result, Err(ErrorCode::UNSUPPORTED_ASSIGNOR));
    join.assignor = Some("sticky-ish".into());
    assert_eq!(w.c.heartbeat(&join, &topics(2), w.now).result, Err(ErrorCode::UNSUPPORTED_ASSIGNOR));
}

#[test]
fn a_fenced_or_stale_member_cannot_commit_and_a_wrong_epoch_is_fenced() {
    let mut w = World::new(2);
    let (mut a, mut b) = (Client::default(), Client::default());
    w.beat("a", &mut a).unwrap();
    let commit = |p| vec![CommitOffset { topic: "t".into(), partition: p, offset: 10, metadata: String::new() }];
    let old_epoch = MemberEpoch(a.epoch);
    let o = w.c.commit("g", "a", old_epoch, &commit(0), w.now);
    assert_eq!(w.keep(o), Ok(()));
    w.beat("b", &mut b).unwrap();
    w.beat("a", &mut a).unwrap();
    w.beat("a", &mut a).unwrap();
    assert!(a.epoch > old_epoch.0);
    assert_eq!(w.c.commit("g", "a", old_epoch, &commit(0), w.now).result, Err(ErrorCode::STALE_MEMBER_EPOCH));
    let not_a = u32::from(a.holds["t"].contains(&0));
    assert_eq!(
        w.c.commit("g", "a", MemberEpoch(a.epoch), &commit(not_a), w.now).result,
        Err(ErrorCode::PARTITION_NOT_ASSIGNED)
    );
    let wrong = hb("a", a.epoch + 5, None);
    assert_eq!(w.c.heartbeat(&wrong, &topics(2), w.now).result.unwrap_err(), ErrorCode::FENCED_MEMBER_EPOCH);
    // b's session runs out: it is removed, and its commits are refused.
    w.now = w.now.plus_ms(11_000);
    w.beat("a", &mut a).unwrap();
    let records = w.c.tick(w.now.plus_ms(1), u64::MAX);
    w.log.extend(records);
    assert!(!w.c.group("g").unwrap().members.contains_key("b"));
    assert_eq!(w.c.commit("g", "b", MemberEpoch(b.epoch), &commit(0), w.now).result, Err(ErrorCode::UNKNOWN_MEMBER_ID));
    assert_eq!(
        w.c.heartbeat(&hb("b", b.epoch, None), &topics(2), w.now).result.unwrap_err(),
        ErrorCode::UNKNOWN_MEMBER_ID
    );
    // a takes b's partitions over.
    w.beat("a", &mut a).unwrap();
    assert_eq!(assignment_len(&a.holds), 2);
    assert_eq!(durable(&w.replayed()), durable(&w.c));
}

#[test]
fn an_outside_commit_needs_an_empty_group_and_reset_and_delete_too() {
    let mut w = World::new(2);
    let offs = vec![CommitOffset { topic: "t".into(), partition: 0, offset: 5, metadata: "x".into() }];
    assert_eq!(w.c.commit("g", "", MemberEpoch::LEAVE, &offs, w.now).result, Ok(()));
    let mut a = Client::default();
    w.beat("a", &mut a).unwrap();
    assert_eq!(w.c.commit("g", "", MemberEpoch::LEAVE, &offs, w.now).result, Err(ErrorCode::UNKNOWN_MEMBER_ID));
    assert_eq!(w.c.reset_offsets("g", &offs, w.now).result, Err(ErrorCode::GROUP_NOT_EMPTY));
    assert_eq!(w.c.delete("g").result, Err(ErrorCode::GROUP_NOT_EMPTY));
    let o = w.c.heartbeat(&hb("a", -1, None), &topics(2), w.now);
    w.keep(o).unwrap();
    let o = w.c.reset_offsets("g", &[CommitOffset { offset: 1, ..offs[0].clone() }], w.now);
    w.keep(o).unwrap();
    assert_eq!(w.c.committed("g", None).unwrap()[&("t".to_owned(), 0)].offset, 1);
    assert_eq!(durable(&w.replayed()), durable(&w.c));
    let o = w.c.delete("g");
    w.keep(o).unwrap();
    assert_eq!(w.c.describe("g").unwrap_err(), ErrorCode::UNKNOWN_GROUP);
    assert!(w.replayed().group("g").is_none(), "the tombstones forget it after a replay too");
}

#[test]
fn an_outside_committer_keeps_its_offsets_while_it_commits_within_the_retention() {
    let mut w = World::new(1);
    let retention = 60_000;
    let offs = |o| [CommitOffset { topic: "t".into(), partition: 0, offset: o, metadata: String::new() }];
    for i in 0..5 {
        let o = w.c.commit("g", "", MemberEpoch(-1), &offs(i), w.now);
        w.keep(o).unwrap();
        w.now = w.now.plus_ms(retention - 1);
        let records = w.c.tick(w.now, retention);
        assert!(records.is_empty(), "forgotten {} ms after a commit", retention - 1);
    }
    assert_eq!(durable(&w.replayed()), durable(&w.c), "the clock is in the records");
    let last = w.now;
    w.log.extend(w.c.tick(last.plus_ms(1), retention));
    assert!(w.c.group("g").is_none(), "a whole retention after its last commit: forgotten");
}

#[test]
fn a_group_empty_for_the_retention_loses_its_offsets_and_not_before() {
    let mut w = World::new(1);
    let mut a = Client::default();
    w.beat("a", &mut a).unwrap();
    let offs = [CommitOffset { topic: "t".into(), partition: 0, offset: 3, metadata: String::new() }];
    let o = w.c.commit("g", "a", MemberEpoch(a.epoch), &offs, w.now);
    w.keep(o).unwrap();
    let retention = 60_000;
    // Members keep it alive however old the commit is.
    w.now = w.now.plus_ms(5 * retention);
    w.beat("a", &mut a).unwrap();
    assert!(w.c.tick(w.now, retention).is_empty());
    let o = w.c.heartbeat(&hb("a", -1, None), &topics(1), w.now);
    w.keep(o).unwrap();
    let left = w.now;
    let early = w.c.tick(left.plus_ms(retention - 1), retention);
    assert!(early.is_empty());
    assert_eq!(w.c.committed("g", None).unwrap().len(), 1);
    let records = w.c.tick(left.plus_ms(retention), retention);
    assert!(records.iter().any(|r| matches!(r, GroupRecord::Offset { value: None, .. })));
    w.log.extend(records);
    assert!(w.c.group("g").is_none());
    assert!(w.replayed().group("g").is_none());
}

#[test]
fn bad_requests_get_codes_and_leave_nothing_behind() {
    let mut c = Coordinator::new(Limits::default());
    let mut bad = hb("a", 0, None);
    bad.group = "no/slash".into();
    assert_eq!(c.heartbeat(&bad, &topics(1), Millis(0)).result.unwrap_err(), ErrorCode::INVALID_GROUP_ID);
    let mut bad = hb("a", 0, None);
    bad.session_timeout_ms = 1;
    assert_eq!(c.heartbeat(&bad, &topics(1), Millis(0)).result.unwrap_err(), ErrorCode::INVALID_REQUEST);
    let mut bad = hb("a", 0, None);
    bad.subscription = None;
    assert_eq!(c.heartbeat(&bad, &topics(1), Millis(0)).result.unwrap_err(), ErrorCode::INVALID_REQUEST);
    assert_eq!(c.heartbeat(&hb("a", 3, None), &topics(1), Millis(0)).result.unwrap_err(), ErrorCode::UNKNOWN_MEMBER_ID);
    assert_eq!(c.heartbeat(&hb("a", -1, None), &topics(1), Millis(0)).result.unwrap().member_epoch, MemberEpoch::LEAVE);
    assert_eq!(c.groups().count(), 0, "failed calls create no group");
}

#[derive(Debug, Clone)]
enum Step {
    Beat(usize),
    /// The client process dies: it stops heartbeating (and reading).
    Crash(usize),
    Leave(usize),
    Pass(u64),
    Commit(usize),
}

fn arb_steps() -> impl Strategy<Value = (u32, Vec<Step>, bool)> {
    let step = prop_oneof![
        8 => (0usize..6).prop_map(Step::Beat),
        1 => (0usize..6).prop_map(Step::Crash),
        1 => (0usize..6).prop_map(Step::Leave),
        2 => (0u64..15_000).prop_map(Step::Pass),
        2 => (0usize..6).prop_map(Step::Commit),
    ];
    (1u32..13, prop::collection::vec(step, 1..150), any::<bool>())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    /// Members join, heartbeat, crash, leave and commit in any order, with
    /// time passing. At every step no partition is held by two members,
    /// every member's commits are accepted for exactly what it holds, and
    /// a replay of the records gives the same groups. In the end, with the
    /// survivors heartbeating, the group settles: every partition held by
    /// one live member, balanced within one.
    #[test]
    fn members_coming_and_going_never_share_a_partition_and_the_group_settles((partitions, steps, eager) in arb_steps()) {
        let mut w = World::new(partitions);
        let mut clients: Vec<Option<Client>> = vec![None; 6];
        let name = |i: usize| format!("m{i}");
        for step in steps {
            match step {
                Step::Beat(i) => {
                    let mut c = clients[i].clone().unwrap_or_default();
                    let mut req = hb(&name(i), c.epoch, Some(&c.holds));
                    if eager { req.assignor = Some("round-robin".into()); }
                    let o = w.c.heartbeat(&req, &w.topics.clone(), w.now);
                    match w.keep(o) {
                        Ok(r) => { c.epoch = r.member_epoch.0; c.holds = r.assignment; clients[i] = Some(c); }
                        // Removed while it was away: it drops everything and joins again next time.
                        Err(ErrorCode::UNKNOWN_MEMBER_ID | ErrorCode::FENCED_MEMBER_EPOCH) => clients[i] = Some(Client::default()),
                        Err(e) => prop_assert!(false, "unexpected {:?}", e),
                    }
                }
                Step::Crash(i) => clients[i] = None,
                Step::Leave(i) => {
                    if clients[i].as_ref().is_some_and(|c| c.epoch > 0) {
                        let o = w.c.heartbeat(&hb(&name(i), -1, None), &w.topics.clone(), w.now);
                        w.keep(o).unwrap();
                    }
                    clients[i] = None;
                }
                Step::Pass(ms) => {
                    w.now = w.now.plus_ms(ms);
                    let records = w.c.tick(w.now, u64::MAX);
                    w.log.extend(records);
                }
                Step::Commit(i) => {
                    if let Some(c) = &clients[i] {
                        for (topic, parts) in &c.holds {
                            for &p in parts {
                                let o = w.c.commit("g", &name(i), MemberEpoch(c.epoch),
                                    &[CommitOffset { topic: topic.clone(), partition: p, offset: 1, metadata: String::new() }], w.now);
                                // A live member commits what it holds, unless it was removed meanwhile.
                                match w.keep(o) {
                                    Ok(()) => {}
                                    Err(ErrorCode::UNKNOWN_MEMBER_ID) => prop_assert!(w.c.group("g").is_none_or(|g| !g.members.contains_key(&name(i)))),
                                    Err(e) => prop_assert!(false, "{} holds {}-{} but its commit got {:?}", name(i), topic, p, e),
                                }
                            }
                        }
                    }
                }
            }
            // Clients that the coordinator still counts as members read only what it lets them.
            if let Some(g) = w.c.group("g") {
                prop_assert!(g.check_exclusive().is_ok(), "{:?}", g.check_exclusive());
                let mut seen = BTreeSet::new();
                for (i, c) in clients.iter().enumerate() {
                    let Some(c) = c else { continue };
                    if !g.members.contains_key(&name(i)) { continue; }
                    for (t, ps) in &c.holds { for p in ps { prop_assert!(seen.insert((t.clone(), *p)), "two live clients read {}-{}", t, p); } }
                }
            }
            prop_assert_eq!(durable(&w.replayed()), durable(&w.c));
        }
        // Settle: expire the crashed, then let the live ones heartbeat.
        w.now = w.now.plus_ms(30_000);
        for (i, c) in clients.iter_mut().enumerate() {
            if let Some(client) = c {
                let mut req = hb(&name(i), client.epoch, Some(&client.holds));
                if eager { req.assignor = Some("round-robin".into()); }
                let o = w.c.heartbeat(&req, &w.topics.clone(), w.now);
                match w.keep(o) {
                    Ok(r) => { client.epoch = r.member_epoch.0; client.holds = r.assignment; }
                    Err(_) => *c = None,
                }
            }
        }
        let records = w.c.tick(w.now.plus_ms(1), u64::MAX);
        w.log.extend(records);
        let live: Vec<usize> = (0..6).filter(|&i| clients[i].is_some()).collect();
        for _ in 0..4 {
            for &i in &live {
                let client = clients[i].as_mut().unwrap();
                let mut req = hb(&name(i), client.epoch, Some(&client.holds));
                if client.epoch == 0 { req.subscription = Some(BTreeSet::from(["t".to_owned()])); }
                if eager { req.assignor = Some("round-robin".into()); }
                let o = w.c.heartbeat(&req, &w.topics.clone(), w.now);
                let r = w.keep(o).unwrap();
                client.epoch = r.member_epoch.0;
                client.holds = r.assignment;
            }
        }
        if !live.is_empty() {
            let counts: Vec<usize> = live.iter().map(|&i| assignment_len(&clients[i].as_ref().unwrap().holds)).collect();
            prop_assert_eq!(counts.iter().sum::<usize>(), partitions as usize, "{:?}", counts);
            prop_assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1, "{:?}", counts);
            prop_assert_eq!(w.c.describe("g").unwrap().state, "stable");
        }
    }
}

#[test]
fn a_changed_subscription_moves_the_epoch_and_survives_a_replay() {
    let mut w = World::new(2);
    w.topics.insert("u".into(), 3);
    let mut a = Client::default();
    w.beat("a", &mut a).unwrap();
    let before = w.c.group("g").unwrap().epoch;
    let mut req = hb("a", a.epoch, Some(&a.holds));
    req.subscription = Some(BTreeSet::from(["t".to_owned(), "u".to_owned()]));
    let o = w.c.heartbeat(&req, &w.topics.clone(), w.now);
    let r = w.keep(o).unwrap();
    assert!(w.c.group("g").unwrap().epoch > before);
    assert_eq!(assignment_len(&r.assignment), 5, "a now reads u as well");
    assert_eq!(durable(&w.replayed()), durable(&w.c));
}

#[test]
fn a_group_keeps_no_more_committed_partitions_than_its_limit() {
    let limits = Limits { group_offsets_max: 3, ..Limits::default() };
    let mut c = Coordinator::new(limits);
    let commit = |p: u32| CommitOffset { topic: "t".into(), partition: p, offset: 1, metadata: String::new() };
    let now = Millis(1);
    let four: Vec<CommitOffset> = (0..4).map(commit).collect();
    assert_eq!(c.commit("g", "", MemberEpoch::LEAVE, &four, now).result, Err(ErrorCode::INVALID_REQUEST));
    assert_eq!(c.commit("g", "", MemberEpoch::LEAVE, &four[..3], now).result, Ok(()));
    // Committing the same partitions again is fine; a fourth is not.
    assert_eq!(c.commit("g", "", MemberEpoch::LEAVE, &four[..3], now).result, Ok(()));
    assert_eq!(c.commit("g", "", MemberEpoch::LEAVE, &four[3..], now).result, Err(ErrorCode::INVALID_REQUEST));
}
