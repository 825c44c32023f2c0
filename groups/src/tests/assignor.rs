use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::types::{assignment_len, assignment_minus};

fn subs(members: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
    members.iter().map(|(m, ts)| ((*m).to_owned(), ts.iter().map(|t| (*t).to_owned()).collect())).collect()
}

fn topics(ts: &[(&str, u32)]) -> BTreeMap<String, u32> {
    ts.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect()
}

fn counts(out: &BTreeMap<String, Assignment>) -> Vec<usize> {
    out.values().map(assignment_len).collect()
}

#[test]
fn range_gives_contiguous_ranges_with_the_remainder_to_the_first_members() {
    let s = subs(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]);
    let out = Assignor::Range.assign(&s, &BTreeMap::new(), &topics(&[("t", 7)]));
    let got: Vec<Vec<u32>> = out.values().map(|a| a["t"].iter().copied().collect()).collect();
    assert_eq!(got, vec![vec![0, 1, 2], vec![3, 4], vec![5, 6]]);
}

#[test]
fn round_robin_deals_partitions_in_turn_skipping_members_not_subscribed() {
    let s = subs(&[("a", &["t", "u"]), ("b", &["t"])]);
    let out = Assignor::RoundRobin.assign(&s, &BTreeMap::new(), &topics(&[("t", 3), ("u", 2)]));
    assert_eq!(out["a"]["t"], BTreeSet::from([0, 2]));
    assert_eq!(out["b"]["t"], BTreeSet::from([1]));
    assert_eq!(out["a"]["u"], BTreeSet::from([0, 1]), "b does not read u");
}

#[test]
fn a_missing_topic_gives_nothing_and_a_member_without_topics_gets_an_empty_entry() {
    let s = subs(&[("a", &["gone"]), ("b", &[])]);
    for assignor in Assignor::ALL {
        let out = assignor.assign(&s, &BTreeMap::new(), &topics(&[]));
        assert_eq!(out.len(), 2);
        assert!(out.values().all(BTreeMap::is_empty), "{assignor:?}");
    }
}

#[test]
fn sticky_moves_only_what_a_new_member_needs() {
    let s = subs(&[("a", &["t"]), ("b", &["t"])]);
    let t = topics(&[("t", 10)]);
    let before = Assignor::CooperativeSticky.assign(&s, &BTreeMap::new(), &t);
    let s3 = subs(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]);
    let after = Assignor::CooperativeSticky.assign(&s3, &before, &t);
    let mut c = counts(&after);
    c.sort_unstable();
    assert_eq!(c, vec![3, 3, 4]);
    // a and b each gave up only what c takes: 3 moved in all.
    let moved: usize = ["a", "b"].iter().map(|m| assignment_len(&assignment_minus(&before[*m], &after[*m]))).sum();
    assert_eq!(moved, 3);
    assert_eq!(assignment_len(&after["c"]), 3);
}

#[test]
fn sticky_ignores_claims_on_partitions_that_are_gone_or_unsubscribed_or_claimed_twice() {
    let s = subs(&[("a", &["t"]), ("b", &["t"])]);
    let t = topics(&[("t", 2)]);
    let owned: BTreeMap<String, Assignment> = [
        (
            "a".to_owned(),
            BTreeMap::from([("t".to_owned(), BTreeSet::from([0, 5])), ("u".to_owned(), BTreeSet::from([0]))]),
        ),
        ("b".to_owned(), BTreeMap::from([("t".to_owned(), BTreeSet::from([0]))])),
    ]
    .into();
    let out = Assignor::CooperativeSticky.assign(&s, &owned, &t);
    assert_eq!(out["a"]["t"], BTreeSet::from([0]), "a keeps its first claim");
    assert_eq!(out["b"]["t"], BTreeSet::from([1]));
}

fn arb_group() -> impl Strategy<Value = (BTreeMap<String, BTreeSet<String>>, BTreeMap<String, u32>)> {
    let topics = prop::collection::btree_map("[a-d]", 0u32..12, 1..4);
    (topics, 1usize..9).prop_flat_map(|(topics, members)| {
        let names: Vec<String> = topics.keys().cloned().collect();
        let member = prop::sample::subsequence(names.clone(), 0..=names.len())
            .prop_map(|ts| ts.into_iter().collect::<BTreeSet<String>>());
        (prop::collection::vec(member, members), Just(topics)).prop_map(|(ms, topics)| {
            (ms.into_iter().enumerate().map(|(i, s)| (format!("m{i:02}"), s)).collect(), topics)
        })
    })
}

proptest! {
    #[test]
    fn every_assignor_gives_each_subscribed_partition_to_exactly_one_subscriber((s, t) in arb_group(), seed in 0u64..1000) {
        // Random current ownership for the sticky one: any partition to any member.
        let mut owned: BTreeMap<String, Assignment> = BTreeMap::new();
        let members: Vec<&String> = s.keys().collect();
        let mut x = seed;
        for (topic, &n) in &t {
            for p in 0..n {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let m = members[(x >> 33) as usize % members.len()];
                owned.entry(m.clone()).or_default().entry(topic.clone()).or_default().insert(p);
            }
        }
        for assignor in Assignor::ALL {
            let out = assignor.assign(&s, &owned, &t);
            prop_assert!(check(&s, &t, &out).is_ok(), "{:?}: {:?}", assignor, check(&s, &t, &out));
        }
    }

    #[test]
    fn with_one_subscription_for_all_round_robin_and_sticky_are_balanced_within_one(
        members in 1usize..11, n in 0u32..120, leave in 0usize..10,
    ) {
        let s: BTreeMap<String, BTreeSet<String>> =
            (0..members).map(|i| (format!("m{i:02}"), BTreeSet::from(["t".to_owned()]))).collect();
        let t = topics(&[("t", n)]);
        for assignor in [Assignor::RoundRobin, Assignor::CooperativeSticky, Assignor::Range] {
            let out = assignor.assign(&s, &BTreeMap::new(), &t);
            let c = counts(&out);
            prop_assert!(c.iter().max().unwrap() - c.iter().min().unwrap() <= 1, "{:?} {:?}", assignor, c);
        }
        // Sticky, after one member leaves: still balanced, and every
        // survivor keeps all it had when it is not above the new quota.
        let before = Assignor::CooperativeSticky.assign(&s, &BTreeMap::new(), &t);
        let gone = format!("m{:02}", leave % members);
        let mut s2 = s.clone();
        s2.remove(&gone);
        if !s2.is_empty() {
            let after = Assignor::CooperativeSticky.assign(&s2, &before, &t);
            let c = counts(&after);
            prop_assert!(c.iter().max().unwrap() - c.iter().min().unwrap() <= 1, "{:?}", c);
            let quota_floor = n as usize / s2.len();
            for m in s2.keys() {
                let kept = assignment_len(&before[m]) - assignment_len(&assignment_minus(&before[m], &after[m]));
                prop_assert!(kept >= assignment_len(&before[m]).min(quota_floor), "{} kept {} of {}", m, kept, assignment_len(&before[m]));
            }
        }
    }
}
