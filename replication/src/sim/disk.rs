//! A model disk: the partition log as a list of batches of which a prefix
//! is durable, and `raft.state` as the last hard state written whole. A
//! power loss keeps the durable prefix and a random part of the rest (in
//! order, as a log file's tail tears); a hard-state write lands whole or
//! not at all (it is written to a temporary file and renamed).

use protocol::replica::ReplicaBatch;
use protocol::types::Offset;

use crate::epochs::EpochCache;
use crate::hard_state::HardState;
use crate::replica::{LogView, ReadResult};

pub(super) struct Disk {
    pub(super) log_start: Offset,
    /// Placed batches, in offset order.
    pub(super) batches: Vec<ReplicaBatch>,
    /// `batches[..durable]` survive a power loss.
    pub(super) durable: usize,
    pub(super) hard: HardState,
    /// An fdatasync in flight; a truncation under it caps what it covers.
    fsync: Option<(u64, usize)>,
    round: u64,
}

impl Disk {
    pub(super) fn new(hard: HardState) -> Disk {
        Disk { log_start: Offset(0), batches: Vec::new(), durable: 0, hard, fsync: None, round: 0 }
    }

    pub(super) fn end(&self) -> Offset {
        self.batches.last().map_or(self.log_start, |b| b.end)
    }

    pub(super) fn durable_end(&self) -> Offset {
        self.durable.checked_sub(1).map_or(self.log_start, |i| self.batches[i].end)
    }

    pub(super) fn append(&mut self, batches: &[ReplicaBatch]) -> Result<(), String> {
        for batch in batches {
            if batch.base < self.end() || batch.end <= batch.base {
                return Err(format!("batch [{}, {}) appended at log end {}", batch.base, batch.end, self.end()));
            }
            if let Some(last) = self.batches.last()
                && batch.epoch < last.epoch
            {
                return Err(format!("batch of epoch {} after one of epoch {}", batch.epoch, last.epoch));
            }
            self.batches.push(batch.clone());
        }
        Ok(())
    }

    /// Starts an fdatasync of everything placed, unless one runs or all is
    /// durable: (target batch count, round).
    pub(super) fn start_fsync(&mut self) -> Option<(usize, u64)> {
        if self.fsync.is_some() || self.durable >= self.batches.len() {
            return None;
        }
        self.round += 1;
        self.fsync = Some((self.round, self.batches.len()));
        Some((self.batches.len(), self.round))
    }

    /// The fdatasync of `round` finished: the new durable end, if it moved.
    pub(super) fn fsync_done(&mut self, target: usize, round: u64) -> Option<Offset> {
        let (r, cap) = self.fsync?;
        if r != round {
            return None;
        }
        self.fsync = None;
        let covered = target.min(cap).min(self.batches.len());
        if covered <= self.durable {
            return None;
        }
        self.durable = covered;
        Some(self.durable_end())
    }

    fn cap_fsync(&mut self) {
        if let Some((round, cap)) = self.fsync {
            self.fsync = Some((round, cap.min(self.batches.len())));
        }
    }

    /// A truncation is made durable before it is reported.
    pub(super) fn truncate(&mut self, to: Offset) {
        let keep = self.batches.partition_point(|b| b.base < to);
        assert!(keep == 0 || self.batches[keep - 1].end <= to, "a truncation inside a batch");
        self.batches.truncate(keep);
        self.durable = self.durable.min(keep);
        self.cap_fsync();
    }

    pub(super) fn reset(&mut self, log_start: Offset) {
        self.batches.clear();
        self.durable = 0;
        self.log_start = log_start;
        self.cap_fsync();
    }

    /// Batches from `from` up to `bytes_max` (the first always whole), if
    /// they are among the newest `cached` batches.
    pub(super) fn read(&self, from: Offset, bytes_max: u32, cached: usize) -> ReadResult {
        let first = self.batches.partition_point(|b| b.base < from);
        if first.saturating_add(cached) < self.batches.len() {
            return ReadResult::Miss;
        }
        let take = (bytes_max / super::BATCH_BYTES).max(1) as usize;
        ReadResult::Batches(self.batches[first..].iter().take(take).cloned().collect())
    }

    /// Power loss: the durable prefix stays, and of the rest a prefix of
    /// `keep % (rest + 1)` batches; fsyncs and writes in flight are gone.
    pub(super) fn power_loss(&mut self, keep: u64) {
        let volatile = (self.batches.len() - self.durable) as u64;
        let kept = self.durable + usize::try_from(keep % (volatile + 1)).expect("fits");
        self.batches.truncate(kept);
        self.durable = kept;
        self.fsync = None;
    }

    /// What recovery gives the replica at a restart.
    pub(super) fn recover(&mut self) -> (HardState, LogView) {
        self.durable = self.batches.len();
        // As production does: the epochs from the hard state, not the log.
        let epochs = EpochCache::from_entries(&self.hard.epochs, self.log_start, self.end());
        let view = LogView { log_start: self.log_start, log_end: self.end(), durable: self.end(), epochs };
        (self.hard.clone(), view)
    }
}
