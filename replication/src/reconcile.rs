//! How a follower's log is brought back in line with its leader's. The
//! follower fetches from the offset after its last record, naming that
//! record's epoch; the leader checks the pair against its own epochs and
//! either serves the fetch or answers with where that epoch ends in its
//! log; the follower truncates there and fetches again (KIP-595's
//! `divergingEpoch`, after KIP-101/279). Truncating to the high watermark
//! instead loses acknowledged records when leaders change twice quickly
//! (KIP-101's example); the epochs make the point exact.
//!
//! Safety rests on Log Matching: two logs holding a record of the same
//! epoch at the same offset hold the same records up to it (one leader per
//! epoch appends each offset once). Then the truncation point is never
//! below the logs' common prefix, and repeated rounds end with the
//! follower's log a prefix of the leader's (a property test checks both).

use protocol::types::{LeaderEpoch, Offset};

use crate::epochs::{EpochCache, EpochEnd};

/// The leader's verdict on a follower's fetch position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchPosition {
    /// The follower's log is a prefix of the leader's: serve from there.
    Valid,
    /// The follower's log parts from the leader's at or before this
    /// point: its epoch and where that epoch ends in the leader's log.
    Diverging(EpochEnd),
    /// The follower has nothing the leader still has (it fetches before
    /// the leader's log start, or its epochs are older than all of the
    /// leader's): it starts over from the leader's log start.
    StartOver { log_start: Offset },
}

/// The leader's check of a fetch at `fetch_offset` whose previous record
/// has epoch `last_fetched_epoch` (`None`: the follower's log is empty),
/// against its own log `[log_start, log_end)` and epochs.
#[must_use]
pub fn check_fetch(
    leader: &EpochCache,
    log_start: Offset,
    log_end: Offset,
    fetch_offset: Offset,
    last_fetched_epoch: Option<LeaderEpoch>,
) -> FetchPosition {
    let Some(last) = last_fetched_epoch else {
        // An empty follower log is a prefix only where the leader's starts.
        return if fetch_offset == log_start { FetchPosition::Valid } else { FetchPosition::StartOver { log_start } };
    };
    if fetch_offset < log_start {
        return FetchPosition::StartOver { log_start };
    }
    match leader.end_of(last, log_end) {
        None => FetchPosition::StartOver { log_start },
        Some(end) if end.epoch != last || end.end_offset < fetch_offset => FetchPosition::Diverging(end),
        Some(_) => FetchPosition::Valid,
    }
}

/// Where a follower whose log is `[.., log_end)` with epochs `follower`
/// truncates after the leader said `diverging`. If it has the leader's
/// epoch: that epoch's end in its own log or in the leader's, whichever
/// comes first (the logs agree up to there). If it does not: the end of
/// its own largest epoch below the leader's, an intermediate cut after
/// which it fetches again (Kafka's follower does the same); taking the
/// leader's end there would keep a record the leader does not have, and
/// could cut inside a batch. `None`: it has no epoch at or below the
/// leader's answer, and all of its log parts from the leader's.
#[must_use]
pub fn truncation_point(follower: &EpochCache, log_end: Offset, diverging: EpochEnd) -> Option<Offset> {
    let own = follower.end_of(diverging.epoch, log_end)?;
    let point = if own.epoch == diverging.epoch { own.end_offset.min(diverging.end_offset) } else { own.end_offset };
    Some(point.min(log_end))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A log as one epoch per record from offset 0, and its cache.
    fn cache_of(log: &[u32]) -> EpochCache {
        let mut c = EpochCache::new();
        for (i, &e) in log.iter().enumerate() {
            c.assign(LeaderEpoch(e), Offset(i as u64)).unwrap();
        }
        c
    }

    /// Two logs that obey Log Matching: a common prefix, then suffixes
    /// whose epochs (above the prefix's last) belong to one log each; at
    /// most one suffix continues the prefix's last epoch.
    fn logs() -> impl Strategy<Value = (Vec<u32>, Vec<u32>, usize)> {
        (proptest::collection::vec(0u32..2, 0..12), proptest::collection::vec((any::<bool>(), 1usize..5), 0..8), 0u8..3)
            .prop_map(|(prefix_steps, suffix_epochs, continues)| {
                let mut prefix = Vec::new();
                let mut epoch = 1;
                for step in prefix_steps {
                    epoch += step;
                    prefix.push(epoch);
                }
                let last = prefix.last().copied().unwrap_or(0);
                let (mut leader, mut follower) = (prefix.clone(), prefix.clone());
                // Who got more of the prefix's last epoch (a leader of that
                // epoch wrote it; one of the two logs missed the rest).
                if last > 0 && continues == 1 {
                    leader.extend([last, last]);
                } else if last > 0 && continues == 2 {
                    follower.push(last);
                }
                for (epoch, (to_leader, n)) in (last + 1..).zip(suffix_epochs) {
                    let log = if to_leader { &mut leader } else { &mut follower };
                    log.extend(std::iter::repeat_n(epoch, n));
                }
                (leader, follower, prefix.len())
            })
    }

    proptest! {
        #[test]
        fn a_follower_ends_as_a_prefix_of_its_leader_and_keeps_the_common_prefix(
            (leader, mut follower, common) in logs(),
        ) {
            let lc = cache_of(&leader);
            let end = Offset(leader.len() as u64);
            for _round in 0..64 {
                let fc = cache_of(&follower);
                let fetch = Offset(follower.len() as u64);
                let last = follower.last().map(|&e| LeaderEpoch(e));
                match check_fetch(&lc, Offset(0), end, fetch, last) {
                    FetchPosition::Valid => {
                        prop_assert_eq!(&leader[..follower.len()], &follower[..], "served a log that is no prefix");
                        return Ok(());
                    }
                    FetchPosition::Diverging(d) => {
                        let point = truncation_point(&fc, fetch, d).map_or(0, |o| o.0 as usize);
                        prop_assert!(point < follower.len(), "a divergence that cuts nothing: no progress");
                        prop_assert!(point >= common, "cut to {} below the common prefix {}", point, common);
                        // A cut lands where batches can end: at an epoch
                        // change of the follower's log, or inside a run of
                        // an epoch both logs have there.
                        if point > 0 && point < follower.len() {
                            let boundary = follower[point - 1] != follower[point];
                            let shared = leader.get(point - 1) == Some(&follower[point - 1]);
                            prop_assert!(boundary || shared, "cut at {} inside a batch only the follower has", point);
                        }
                        follower.truncate(point);
                    }
                    FetchPosition::StartOver { log_start } => {
                        prop_assert_eq!(common, 0, "started over though the logs share a prefix");
                        follower.clear();
                        prop_assert_eq!(log_start, Offset(0));
                    }
                }
            }
            prop_assert!(false, "no agreement after 64 rounds");
        }
    }

    #[test]
    fn the_high_watermark_truncation_of_kip_101_does_not_happen() {
        // Leader A (epoch 1) wrote offsets 0 and 1; B has only 0. B becomes
        // leader in epoch 2 and writes offset 1 itself; A comes back as a
        // follower: it must lose its own offset 1 (epoch 1) and keep 0.
        let b = cache_of(&[1, 2]);
        let a = cache_of(&[1, 1]);
        let verdict = check_fetch(&b, Offset(0), Offset(2), Offset(2), Some(LeaderEpoch(1)));
        let FetchPosition::Diverging(d) = verdict else { panic!("{verdict:?}") };
        assert_eq!(d, EpochEnd { epoch: LeaderEpoch(1), end_offset: Offset(1) });
        assert_eq!(truncation_point(&a, Offset(2), d), Some(Offset(1)));
        // And a follower that is merely behind is served as it is.
        assert_eq!(check_fetch(&b, Offset(0), Offset(2), Offset(1), Some(LeaderEpoch(1))), FetchPosition::Valid);
    }
}
