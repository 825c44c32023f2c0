//! The history checker of the cluster fault tests (Jepsen's role, in
//! Rust): what producers were told (each acknowledged record's partition
//! and offset) against what every broker's copy holds afterwards, read
//! from each broker alone.
//!
//! Each record's value is unique (the writer numbers them), so a value
//! seen twice is a duplicate and a value missing is a loss. The anomalies:
//! - **lost**: an acknowledged record missing from a copy;
//! - **moved**: an acknowledged record stored at another offset than its
//!   acknowledgement said;
//! - **disagreement**: two copies hold different values at one offset, or
//!   one copy has offsets below another's end that the other lacks;
//! - **out of order**: offsets not increasing within a copy, or one
//!   writer's acknowledged records (numbered in send order) stored out of
//!   that order in their partition;
//! - **duplicates**: a value stored more than once in a partition. The
//!   producer is not idempotent yet (a retried batch may land twice), so
//!   these are counted, not failed on, by the tests.

use std::collections::{BTreeMap, HashMap};

use protocol::types::Offset;

/// An acknowledged write: its partition, offset and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    pub partition: u32,
    pub offset: Offset,
    pub value: u64,
}

/// One broker's copy: per partition, (offset, value) in stored order.
pub type Copy = BTreeMap<u32, Vec<(Offset, u64)>>;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub lost: Vec<String>,
    pub moved: Vec<String>,
    pub disagreements: Vec<String>,
    pub out_of_order: Vec<String>,
    pub duplicates: usize,
}

impl Report {
    /// No anomaly a correct broker may show (duplicates aside).
    pub fn is_valid(&self) -> bool {
        self.lost.is_empty() && self.moved.is_empty() && self.disagreements.is_empty() && self.out_of_order.is_empty()
    }
}

/// The first few of a list, for a readable failure.
fn few(items: &[String]) -> String {
    let mut shown: Vec<&str> = items.iter().take(5).map(String::as_str).collect();
    if items.len() > 5 {
        shown.push("…");
    }
    shown.join("; ")
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} lost [{}], {} moved [{}], {} disagreements [{}], {} out of order [{}], {} duplicates",
            self.lost.len(),
            few(&self.lost),
            self.moved.len(),
            few(&self.moved),
            self.disagreements.len(),
            few(&self.disagreements),
            self.out_of_order.len(),
            few(&self.out_of_order),
            self.duplicates
        )
    }
}

/// Checks `acked` against every broker's copy (`copies[i]` is broker i's).
pub fn check(acked: &[Acked], copies: &[Copy]) -> Report {
    let mut report = Report::default();
    let Some(first) = copies.first() else { return report };
    // Readers agree: at every offset two copies both hold, the same value;
    // the shorter copy is a prefix of the longer one.
    for (i, copy) in copies.iter().enumerate().skip(1) {
        let partitions: std::collections::BTreeSet<u32> = first.keys().chain(copy.keys()).copied().collect();
        for p in partitions {
            let (a, b) = (first.get(&p).map_or(&[][..], Vec::as_slice), copy.get(&p).map_or(&[][..], Vec::as_slice));
            let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
            if let Some(k) = (0..short.len()).find(|&k| short[k] != long[k]) {
                report.disagreements.push(format!(
                    "partition {p}: broker 0 and broker {i} differ at entry {k}: {:?} vs {:?}",
                    a.get(k),
                    b.get(k)
                ));
            }
        }
    }
    for (i, copy) in copies.iter().enumerate() {
        for (p, records) in copy {
            if let Some(w) = records.windows(2).find(|w| w[0].0 >= w[1].0) {
                report.out_of_order.push(format!("broker {i} partition {p}: offset {} after {}", w[1].0, w[0].0));
            }
        }
    }
    // Everything acknowledged is where it was acknowledged, on every copy.
    for (i, copy) in copies.iter().enumerate() {
        let at: HashMap<(u32, Offset), u64> =
            copy.iter().flat_map(|(&p, rs)| rs.iter().map(move |&(o, v)| ((p, o), v))).collect();
        for a in acked {
            match at.get(&(a.partition, a.offset)) {
                Some(&v) if v == a.value => {}
                Some(&v) => report
                    .moved
                    .push(format!("broker {i}: {}/{} holds {v}, acknowledged as {}", a.partition, a.offset, a.value)),
                None => report.lost.push(format!("broker {i}: {} at {}/{}", a.value, a.partition, a.offset)),
            }
        }
    }
    // One writer's acknowledged records keep its order in their partition.
    let mut by_partition: BTreeMap<u32, Vec<(u64, Offset)>> = BTreeMap::new();
    for a in acked {
        by_partition.entry(a.partition).or_default().push((a.value, a.offset));
    }
    for (p, mut mine) in by_partition {
        mine.sort_unstable();
        if let Some(w) = mine.windows(2).find(|w| w[0].1 >= w[1].1) {
            report.out_of_order.push(format!(
                "partition {p}: record {} acknowledged at {} before record {} at {}",
                w[0].0, w[0].1, w[1].0, w[1].1
            ));
        }
    }
    for records in first.values() {
        let mut seen = HashMap::new();
        for &(_, v) in records {
            *seen.entry(v).or_insert(0usize) += 1;
        }
        report.duplicates += seen.values().filter(|&&n| n > 1).map(|n| n - 1).sum::<usize>();
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(records: &[(u64, u64)]) -> Copy {
        BTreeMap::from([(0, records.iter().map(|&(o, v)| (Offset(o), v)).collect())])
    }

    fn acked(records: &[(u64, u64)]) -> Vec<Acked> {
        records.iter().map(|&(o, v)| Acked { partition: 0, offset: Offset(o), value: v }).collect()
    }

    #[test]
    fn a_faithful_history_passes() {
        let c = copy(&[(0, 1), (1, 2), (3, 3)]);
        let r = check(&acked(&[(0, 1), (3, 3)]), &[c.clone(), c]);
        assert!(r.is_valid(), "{r}");
        assert_eq!(r.duplicates, 0);
    }

    #[test]
    fn each_anomaly_is_reported() {
        let good = copy(&[(0, 1), (1, 2), (2, 3)]);
        let lost = check(&acked(&[(5, 9)]), std::slice::from_ref(&good));
        assert_eq!(lost.lost.len(), 1, "{lost}");
        let moved = check(&acked(&[(1, 3)]), std::slice::from_ref(&good));
        assert_eq!(moved.moved.len(), 1, "{moved}");
        let differ = check(&[], &[good.clone(), copy(&[(0, 1), (1, 7)])]);
        assert_eq!(differ.disagreements.len(), 1, "{differ}");
        let gap = check(&[], &[good.clone(), copy(&[(0, 1), (2, 3)])]);
        assert_eq!(gap.disagreements.len(), 1, "a copy that skips an offset the other has: {gap}");
        let reordered = check(&acked(&[(0, 2), (1, 1)]), &[copy(&[(0, 2), (1, 1)])]);
        assert_eq!(reordered.out_of_order.len(), 1, "{reordered}");
        let backwards = check(&[], &[copy(&[(1, 1), (0, 2)])]);
        assert_eq!(backwards.out_of_order.len(), 1, "{backwards}");
        let twice = check(&[], &[copy(&[(0, 1), (1, 1), (2, 2)])]);
        assert!(twice.is_valid());
        assert_eq!(twice.duplicates, 1);
    }

    #[test]
    fn a_shorter_copy_that_is_a_prefix_agrees() {
        let r = check(&[], &[copy(&[(0, 1), (1, 2)]), copy(&[(0, 1)])]);
        assert!(r.is_valid(), "{r}");
    }
}
