//! Vote (0x03 / 0x83) and `PreVote` (0x04 / 0x84): the same bodies; a
//! pre-vote persists nothing on either side.
//!
//! ```text
//! request:  [entry: tp, epoch u32 (asked), incarnation u64, last_epoch i64,
//!           log_end_offset u64, transfer u8]
//! response: [entry: tp, error u16, epoch u32 (the voter's), asked u32,
//!           incarnation u64 (the voter's), granted u8]
//! ```

use super::error::BodyError;
use super::wire::{
    TP_BYTES, put_bool, put_entries, put_opt_epoch, put_tp, read_bool, read_entries, read_opt_epoch, read_tp,
};
use super::{VoteAnswer, VoteRequest};
use crate::ErrorCode;
use crate::codec::{Reader, Writer};
use crate::types::{Incarnation, LeaderEpoch, Offset, TopicPartition};

/// Bytes of one Vote or `PreVote` entry.
pub const VOTE_ENTRY_BYTES: usize = TP_BYTES + 4 + 8 + 8 + 8 + 1;
/// Bytes of one `VoteResponse` or `PreVoteResponse` entry.
pub const VOTE_ANSWER_ENTRY_BYTES: usize = TP_BYTES + 2 + 4 + 4 + 8 + 1;

/// A Vote or `PreVote` request frame.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VoteFrame {
    pub entries: Vec<(TopicPartition, VoteRequest)>,
}

/// A `VoteResponse` or `PreVoteResponse` frame.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VoteResponseFrame {
    pub entries: Vec<(TopicPartition, VoteAnswer)>,
}

pub type PreVoteFrame = VoteFrame;
pub type PreVoteResponseFrame = VoteResponseFrame;

impl VoteFrame {
    pub fn encode(&self, w: &mut Writer) {
        put_entries(w, &self.entries, |w, (tp, v)| {
            put_tp(w, *tp);
            w.u32(v.epoch.0);
            w.u64(v.incarnation.0);
            put_opt_epoch(w, v.last_epoch);
            w.u64(v.log_end.0);
            put_bool(w, v.transfer);
        });
    }

    pub fn decode(r: &mut Reader) -> Result<VoteFrame, BodyError> {
        let entries = read_entries(r, "vote entries", VOTE_ENTRY_BYTES, |r, _| {
            let tp = read_tp(r)?;
            let request = VoteRequest {
                epoch: LeaderEpoch(r.u32()?),
                incarnation: Incarnation(r.u64()?),
                last_epoch: read_opt_epoch(r, "last_epoch")?,
                log_end: Offset(r.u64()?),
                transfer: read_bool(r, "transfer")?,
            };
            Ok((tp, request))
        })?;
        Ok(VoteFrame { entries })
    }
}

impl VoteResponseFrame {
    pub fn encode(&self, w: &mut Writer) {
        put_entries(w, &self.entries, |w, (tp, a)| {
            put_tp(w, *tp);
            w.u16(a.error.0);
            w.u32(a.epoch.0);
            w.u32(a.asked.0);
            w.u64(a.incarnation.0);
            put_bool(w, a.granted);
        });
    }

    pub fn decode(r: &mut Reader) -> Result<VoteResponseFrame, BodyError> {
        let entries = read_entries(r, "vote answers", VOTE_ANSWER_ENTRY_BYTES, |r, _| {
            let tp = read_tp(r)?;
            let answer = VoteAnswer {
                error: ErrorCode(r.u16()?),
                epoch: LeaderEpoch(r.u32()?),
                asked: LeaderEpoch(r.u32()?),
                incarnation: Incarnation(r.u64()?),
                granted: read_bool(r, "granted")?,
            };
            Ok((tp, answer))
        })?;
        Ok(VoteResponseFrame { entries })
    }
}
