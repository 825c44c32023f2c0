//! The leader epoch cache: for each leader epoch that wrote to this log,
//! the offset of its first record. It answers "where does epoch E end in
//! this log?", which is how a leader tells a follower where their logs part
//! (Kafka's `LeaderEpochFileCache`). Rebuilt from the batch headers on
//! recovery (each batch carries its leader epoch), so it needs no file of
//! its own to be correct.
//!
//! Invariants, asserted: epochs strictly increase, and so do their start
//! offsets (an epoch that wrote nothing has no entry); every start offset
//! is below the log end the owner reports.

use protocol::types::{LeaderEpoch, Offset};

/// Where an epoch ends in a log: the largest epoch at or below the one
/// asked for, and the first offset after its records (the next epoch's
/// start, or the log end for the latest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEnd {
    pub epoch: LeaderEpoch,
    pub end_offset: Offset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochError {
    /// A batch of an older epoch than the latest, or a start offset below
    /// the latest epoch's: the log would not be a Raft log.
    OutOfOrder { epoch: LeaderEpoch, start: Offset, latest: (LeaderEpoch, Offset) },
}

impl std::fmt::Display for EpochError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EpochError::OutOfOrder { epoch, start, latest } => write!(
                f,
                "epoch {epoch} starting at {start} is behind the latest, epoch {} from {}",
                latest.0, latest.1
            ),
        }
    }
}

impl std::error::Error for EpochError {}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochCache {
    /// (epoch, start offset), both strictly increasing.
    entries: Vec<(LeaderEpoch, Offset)>,
}

impl EpochCache {
    #[must_use]
    pub fn new() -> EpochCache {
        EpochCache::default()
    }

    /// The cache of a log `[log_start, log_end)` from entries written
    /// earlier (the hard state's table): entries at or past the log end
    /// describe batches that never landed or were cut, and go.
    #[must_use]
    pub fn from_entries(entries: &[(LeaderEpoch, Offset)], log_start: Offset, log_end: Offset) -> EpochCache {
        let mut cache = EpochCache::new();
        for &(epoch, start) in entries.iter().filter(|(_, s)| *s < log_end) {
            if cache.assign(epoch, start).is_err() {
                break;
            }
        }
        cache.advance_start(log_start);
        cache
    }

    /// The latest epoch that wrote to the log, and where it started.
    #[must_use]
    pub fn latest(&self) -> Option<(LeaderEpoch, Offset)> {
        self.entries.last().copied()
    }

    #[must_use]
    pub fn entries(&self) -> &[(LeaderEpoch, Offset)] {
        &self.entries
    }

    /// A batch of `epoch` was appended at `start`: a new epoch starts there,
    /// or the latest one continues. Refuses what would break the order.
    pub fn assign(&mut self, epoch: LeaderEpoch, start: Offset) -> Result<(), EpochError> {
        match self.entries.last() {
            Some(&(e, _)) if e == epoch => Ok(()),
            Some(&(e, s)) if epoch < e || start <= s => Err(EpochError::OutOfOrder { epoch, start, latest: (e, s) }),
            _ => {
                self.entries.push((epoch, start));
                Ok(())
            }
        }
    }

    /// Where `epoch` ends in a log whose end offset is `log_end`: the
    /// largest epoch at or below it and the next epoch's start (or
    /// `log_end`). `None` when the log has no epoch at or below it (the
    /// follower must then start over from the leader's log start).
    #[must_use]
    pub fn end_of(&self, epoch: LeaderEpoch, log_end: Offset) -> Option<EpochEnd> {
        let i = self.entries.partition_point(|&(e, _)| e <= epoch);
        let (found, _) = *self.entries.get(i.checked_sub(1)?)?;
        let end_offset = self.entries.get(i).map_or(log_end, |&(_, next_start)| next_start);
        debug_assert!(end_offset <= log_end || i < self.entries.len(), "an epoch starts past the log end");
        Some(EpochEnd { epoch: found, end_offset })
    }

    /// The epoch of the record at `offset`, if the cache covers it.
    #[must_use]
    pub fn epoch_at(&self, offset: Offset) -> Option<LeaderEpoch> {
        let i = self.entries.partition_point(|&(_, s)| s <= offset);
        Some(self.entries.get(i.checked_sub(1)?)?.0)
    }

    /// The log was cut to end at `end`: epochs that start at or past it go.
    pub fn truncate_to(&mut self, end: Offset) {
        let keep = self.entries.partition_point(|&(_, s)| s < end);
        self.entries.truncate(keep);
    }

    /// The log now starts at `start` (retention, or a follower that starts
    /// over): the epoch holding `start` starts there, earlier ones go.
    pub fn advance_start(&mut self, start: Offset) {
        let i = self.entries.partition_point(|&(_, s)| s <= start);
        if i == 0 {
            return;
        }
        self.entries.drain(..i - 1);
        self.entries[0].1 = start;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn cache(entries: &[(u32, u64)]) -> EpochCache {
        let mut c = EpochCache::new();
        for &(e, s) in entries {
            c.assign(LeaderEpoch(e), Offset(s)).unwrap();
        }
        c
    }

    #[test]
    fn an_epoch_ends_where_the_next_one_starts() {
        let c = cache(&[(1, 0), (3, 10), (4, 25)]);
        let end = |e| c.end_of(LeaderEpoch(e), Offset(40)).map(|x| (x.epoch.0, x.end_offset.0));
        assert_eq!(end(1), Some((1, 10)));
        assert_eq!(end(2), Some((1, 10)), "an epoch that wrote nothing ends with the one before it");
        assert_eq!(end(3), Some((3, 25)));
        assert_eq!(end(4), Some((4, 40)));
        assert_eq!(end(9), Some((4, 40)), "a future epoch: the log end");
        assert_eq!(cache(&[(2, 5)]).end_of(LeaderEpoch(1), Offset(9)), None);
    }

    #[test]
    fn out_of_order_epochs_are_refused() {
        let mut c = cache(&[(2, 10)]);
        assert!(c.assign(LeaderEpoch(1), Offset(20)).is_err());
        assert!(c.assign(LeaderEpoch(3), Offset(10)).is_err());
        assert!(c.assign(LeaderEpoch(2), Offset(15)).is_ok(), "the latest epoch continues");
        assert!(c.assign(LeaderEpoch(3), Offset(11)).is_ok());
    }

    #[test]
    fn truncation_and_retention_keep_the_epochs_of_what_is_left() {
        let mut c = cache(&[(1, 0), (3, 10), (4, 25)]);
        c.truncate_to(Offset(25));
        assert_eq!(c.entries(), &[(LeaderEpoch(1), Offset(0)), (LeaderEpoch(3), Offset(10))]);
        c.advance_start(Offset(12));
        assert_eq!(c.entries(), &[(LeaderEpoch(3), Offset(12))]);
        c.advance_start(Offset(5));
        assert_eq!(c.entries(), &[(LeaderEpoch(3), Offset(12))], "a start below the first is no change");
    }

    proptest! {
        /// The cache agrees with a log of one epoch per record, through
        /// appends, truncations and retention.
        #[test]
        fn the_cache_agrees_with_the_log_it_describes(
            steps in proptest::collection::vec((0u8..3, 1u32..4, 1u64..6), 1..60),
        ) {
            let mut log: Vec<u32> = Vec::new(); // epoch per offset, from `start`
            let mut start = 0u64;
            let mut c = EpochCache::new();
            let mut epoch = 1u32;
            for (kind, de, n) in steps {
                match kind {
                    0 => {
                        epoch += de - 1; // the same epoch, or a later one
                        let at = start + log.len() as u64;
                        c.assign(LeaderEpoch(epoch), Offset(at)).unwrap();
                        log.extend(std::iter::repeat_n(epoch, n as usize));
                    }
                    1 => {
                        let keep = log.len().saturating_sub(n as usize);
                        log.truncate(keep);
                        c.truncate_to(Offset(start + keep as u64));
                    }
                    _ => {
                        let drop = (n as usize).min(log.len().saturating_sub(1));
                        log.drain(..drop);
                        start += drop as u64;
                        if !log.is_empty() {
                            c.advance_start(Offset(start));
                        }
                    }
                }
                let end = Offset(start + log.len() as u64);
                for (i, &e) in log.iter().enumerate() {
                    prop_assert_eq!(c.epoch_at(Offset(start + i as u64)), Some(LeaderEpoch(e)));
                }
                for e in 0..=epoch + 1 {
                    // The naive answer: the largest epoch ≤ e in the log and where it ends.
                    let last = log.iter().enumerate().filter(|&(_, &x)| x <= e).map(|(i, &x)| (i, x)).next_back();
                    let expected = last.map(|(i, x)| {
                        let end_i = log.iter().position(|&y| y > x).unwrap_or(log.len()).max(i + 1);
                        EpochEnd { epoch: LeaderEpoch(x), end_offset: Offset(start + end_i as u64) }
                    });
                    if !log.is_empty() {
                        prop_assert_eq!(c.end_of(LeaderEpoch(e), end), expected, "epoch {}", e);
                    }
                }
            }
        }
    }
}
