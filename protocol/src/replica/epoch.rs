//! `BeginEpoch` (0x05) and `StartElection` (0x06): one-way, `[entry: tp,
//! epoch u32]`. The sender is the leader of `epoch` (`source_node`);
//! `StartElection` is acted on only if the receiver is in that epoch and the
//! sender is its leader.

use super::error::BodyError;
use super::wire::{TP_BYTES, put_entries, put_tp, read_entries, read_tp};
use crate::codec::{Reader, Writer};
use crate::types::{LeaderEpoch, TopicPartition};

/// Bytes of one entry.
pub const EPOCH_ENTRY_BYTES: usize = TP_BYTES + 4;

/// A `BeginEpoch` or `StartElection` frame.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EpochFrame {
    pub entries: Vec<(TopicPartition, LeaderEpoch)>,
}

pub type BeginEpochFrame = EpochFrame;
pub type StartElectionFrame = EpochFrame;

impl EpochFrame {
    pub fn encode(&self, w: &mut Writer) {
        put_entries(w, &self.entries, |w, (tp, epoch)| {
            put_tp(w, *tp);
            w.u32(epoch.0);
        });
    }

    pub fn decode(r: &mut Reader) -> Result<EpochFrame, BodyError> {
        let entries =
            read_entries(r, "epoch entries", EPOCH_ENTRY_BYTES, |r, _| Ok((read_tp(r)?, LeaderEpoch(r.u32()?))))?;
        Ok(EpochFrame { entries })
    }
}
