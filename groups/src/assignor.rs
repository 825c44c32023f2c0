//! Server-side assignors: who reads which partition. The coordinator runs
//! one whenever the group epoch moves (KIP-848's server-side assignment),
//! so every member sees the same answer and no member has to be the group
//! leader. Every assignor gives each partition of a subscribed topic to
//! exactly one member that subscribes to it, and is a pure function of its
//! inputs (members and topics in sorted order), so replaying the same
//! records on a new coordinator computes the same assignment.
//!
//! - `range`: per topic, contiguous ranges in member order (Kafka's
//!   `RangeAssignor`); eager.
//! - `round-robin`: every partition of every topic, dealt in turn to the
//!   members subscribed to its topic; eager.
//! - `cooperative-sticky`: members keep what they own while the group stays
//!   balanced (counts within one, among members that could take a
//!   partition); only moved partitions pause; incremental.

use std::collections::{BTreeMap, BTreeSet};

use crate::types::Assignment;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Assignor {
    Range,
    RoundRobin,
    #[default]
    CooperativeSticky,
}

impl Assignor {
    pub const ALL: [Assignor; 3] = [Assignor::Range, Assignor::RoundRobin, Assignor::CooperativeSticky];

    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "round-robin",
            Assignor::CooperativeSticky => "cooperative-sticky",
        }
    }

    pub fn parse(name: &str) -> Option<Assignor> {
        Assignor::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Eager assignors move partitions by revoking every partition of every
    /// member first; the incremental one revokes only what moves.
    pub fn is_eager(self) -> bool {
        !matches!(self, Assignor::CooperativeSticky)
    }

    /// The target assignment: one entry per member (empty when it gets
    /// nothing). `owned` is what each member holds now (only the sticky
    /// assignor looks at it); `topics` gives each known topic's partition
    /// count (a subscribed topic that is missing gets no partitions).
    pub fn assign(
        self,
        subscriptions: &BTreeMap<String, BTreeSet<String>>,
        owned: &BTreeMap<String, Assignment>,
        topics: &BTreeMap<String, u32>,
    ) -> BTreeMap<String, Assignment> {
        let out = match self {
            Assignor::Range => range(subscriptions, topics),
            Assignor::RoundRobin => round_robin(subscriptions, topics),
            Assignor::CooperativeSticky => sticky(subscriptions, owned, topics),
        };
        debug_assert!(check(subscriptions, topics, &out).is_ok(), "{:?}", check(subscriptions, topics, &out));
        out
    }
}

fn empty_for(subscriptions: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, Assignment> {
    subscriptions.keys().map(|m| (m.clone(), Assignment::new())).collect()
}

/// The members subscribed to each topic that exists, in member order.
fn subscribers<'a>(
    subscriptions: &'a BTreeMap<String, BTreeSet<String>>,
    topics: &'a BTreeMap<String, u32>,
) -> BTreeMap<&'a str, Vec<&'a str>> {
    let mut by_topic: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (member, subscribed) in subscriptions {
        for topic in subscribed {
            if topics.get(topic).is_some_and(|&n| n > 0) {
                by_topic.entry(topic.as_str()).or_default().push(member.as_str());
            }
        }
    }
    by_topic
}

fn give(out: &mut BTreeMap<String, Assignment>, member: &str, topic: &str, partition: u32) {
    out.get_mut(member).expect("every member has an entry").entry(topic.to_owned()).or_default().insert(partition);
}

fn range(
    subscriptions: &BTreeMap<String, BTreeSet<String>>,
    topics: &BTreeMap<String, u32>,
) -> BTreeMap<String, Assignment> {
    let mut out = empty_for(subscriptions);
    for (topic, members) in subscribers(subscriptions, topics) {
        let n = topics[topic];
        let m = members.len() as u32;
        let (each, extra) = (n / m, n % m);
        let mut next = 0;
        for (i, member) in members.iter().enumerate() {
            let count = each + u32::from((i as u32) < extra);
            for p in next..next + count {
                give(&mut out, member, topic, p);
            }
            next += count;
        }
    }
    out
}

fn round_robin(
    subscriptions: &BTreeMap<String, BTreeSet<String>>,
    topics: &BTreeMap<String, u32>,
) -> BTreeMap<String, Assignment> {
    let mut out = empty_for(subscriptions);
    let members: Vec<&str> = subscriptions.keys().map(String::as_str).collect();
    let by_topic = subscribers(subscriptions, topics);
    let mut turn = 0usize;
    for (topic, subscribed) in &by_topic {
        for p in 0..topics[*topic] {
            // The next member in the ring that subscribes to this topic.
            loop {
                let member = members[turn % members.len()];
                turn += 1;
                if subscribed.contains(&member) {
                    give(&mut out, member, topic, p);
                    break;
                }
            }
        }
    }
    out
}

fn sticky(
    subscriptions: &BTreeMap<String, BTreeSet<String>>,
    owned: &BTreeMap<String, Assignment>,
    topics: &BTreeMap<String, u32>,
) -> BTreeMap<String, Assignment> {
    let mut out = empty_for(subscriptions);
    let by_topic = subscribers(subscriptions, topics);
    let mut count: BTreeMap<&str, usize> = subscriptions.keys().map(|m| (m.as_str(), 0)).collect();
    let mut holder: BTreeMap<(&str, u32), &str> = BTreeMap::new();
    // 1. Keep what members own and may still read (first claim wins if two
    // report the same partition).
    for (member, parts) in owned {
        let Some(subscribed) = subscriptions.get(member) else { continue };
        for (topic, ps) in parts {
            let Some(&n) = topics.get(topic) else { continue };
            if !subscribed.contains(topic) {
                continue;
            }
            for &p in ps.iter().filter(|&&p| p < n) {
                if let Some((t, _)) = by_topic.get_key_value(topic.as_str()) {
                    if holder.contains_key(&(*t, p)) {
                        continue;
                    }
                    holder.insert((*t, p), member.as_str());
                    *count.get_mut(member.as_str()).expect("subscribed member") += 1;
                }
            }
        }
    }
    // 2. Every partition nobody keeps goes to its least-loaded subscriber.
    for (topic, members) in &by_topic {
        for p in 0..topics[*topic] {
            if holder.contains_key(&(*topic, p)) {
                continue;
            }
            let member = *members.iter().min_by_key(|m| (count[**m], **m)).expect("a topic in by_topic has members");
            holder.insert((*topic, p), member);
            *count.get_mut(member).expect("member") += 1;
        }
    }
    // 3. Balance: move a partition from a member that has two more than
    // another subscriber of its topic, until none does. Each move lowers
    // the sum of squared counts, so this ends; it moves only what balance
    // needs, the newest-numbered partitions first.
    loop {
        let mut moved = false;
        let keys: Vec<(&str, u32)> = holder.keys().rev().copied().collect();
        for key in keys {
            let from = holder[&key];
            let to = *by_topic[key.0].iter().min_by_key(|m| (count[**m], **m)).expect("members");
            if count[from] > count[to] + 1 {
                holder.insert(key, to);
                *count.get_mut(from).expect("member") -= 1;
                *count.get_mut(to).expect("member") += 1;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    for ((topic, p), member) in holder {
        give(&mut out, member, topic, p);
    }
    out
}

/// The invariant every assignor keeps: each partition of each subscribed,
/// existing topic goes to exactly one member, which subscribes to it, and
/// nothing else is given out.
pub fn check(
    subscriptions: &BTreeMap<String, BTreeSet<String>>,
    topics: &BTreeMap<String, u32>,
    out: &BTreeMap<String, Assignment>,
) -> Result<(), String> {
    let mut seen: BTreeSet<(&str, u32)> = BTreeSet::new();
    for (member, parts) in out {
        let subscribed = subscriptions.get(member).ok_or_else(|| format!("{member} is no member"))?;
        for (topic, ps) in parts {
            if !subscribed.contains(topic) {
                return Err(format!("{member} got {topic}, which it does not subscribe to"));
            }
            let n = topics.get(topic).copied().unwrap_or(0);
            for &p in ps {
                if p >= n {
                    return Err(format!("{member} got {topic}-{p}, which does not exist"));
                }
                if !seen.insert((topic, p)) {
                    return Err(format!("{topic}-{p} given twice"));
                }
            }
        }
    }
    for (topic, members) in subscribers(subscriptions, topics) {
        debug_assert!(!members.is_empty());
        for p in 0..topics[topic] {
            if !seen.contains(&(topic, p)) {
                return Err(format!("{topic}-{p} given to nobody"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "tests/assignor.rs"]
mod tests;
