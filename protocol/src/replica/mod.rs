//! The replication protocol's messages, one partition's share of each:
//! what a replica's state machine takes in and sends out
//! (docs/replication.md §2 and §4). The transport coalesces the entries of
//! many partitions into one frame per shard pair; the state machine only
//! ever sees its own partition's entry, so these types carry no topic,
//! partition or frame fields. `last_fetched_epoch`, `last_epoch` and
//! `diverging` are `Option`s here and `-1` on the wire.
//!
//! The wire codec of §4 is in the submodules: [`frame`] (the 24-byte
//! header, [`Kind`], [`frame::split`]), the bodies of each kind carrying
//! many partitions' entries ([`FetchFrame`], [`FetchResponseFrame`],
//! [`VoteFrame`], [`VoteResponseFrame`], [`EpochFrame`], [`Handshake`],
//! [`ControllerCall`], [`FetchSnapshot`]), [`Frame`] and [`Body`] over
//! them, and [`control`] (control batches and their bodies, §3).

use bytes::Bytes;

use crate::ErrorCode;
use crate::types::{Incarnation, LeaderEpoch, NodeId, Offset};

mod body;
pub mod control;
mod controller;
mod epoch;
mod error;
mod fetch;
pub mod frame;
mod handshake;
mod snapshot;
mod vote;
mod wire;

pub use body::{Body, Frame, FrameDecodeError};
pub use controller::{ControllerCall, ControllerCallResponse};
pub use epoch::{BeginEpochFrame, EPOCH_ENTRY_BYTES, EpochFrame, StartElectionFrame};
pub use error::{BatchesError, BodyError, ControlError};
pub use fetch::{
    FETCH_ANSWER_ENTRY_BYTES_MIN, FETCH_ENTRY_BYTES, FETCH_FLAG_REPORT, FetchFrame, FetchResponseFrame, read_batches,
};
pub use frame::{
    FRAME_BYTES_MAX, FRAME_ENTRIES_MAX, FRAME_HEADER_BYTES, FrameError, FrameHeader, FramingLost, Kind, Split,
};
pub use handshake::{CLUSTER_ID_BYTES, Handshake};
pub use snapshot::{FetchSnapshot, FetchSnapshotResponse};
pub use vote::{
    PreVoteFrame, PreVoteResponseFrame, VOTE_ANSWER_ENTRY_BYTES, VOTE_ENTRY_BYTES, VoteFrame, VoteResponseFrame,
};

#[cfg(test)]
mod tests;

/// A replica: its node and the incarnation of its state there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaKey {
    pub node: NodeId,
    pub incarnation: Incarnation,
}

/// A partition's replicas. A quorum is a majority of `voters` and, while
/// a change is under way (`joint`), a majority of the new set too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub voters: Vec<ReplicaKey>,
    pub joint: Option<Vec<ReplicaKey>>,
    pub learners: Vec<ReplicaKey>,
}

/// The record of a control batch (`broker_flags` bit 1): never served to
/// clients, replicated like any batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// The first batch of every epoch: its leader, and the config in effect.
    LeaderChange { epoch: LeaderEpoch, leader: NodeId, config: Config },
    /// A new config.
    Voters(Config),
}

impl Control {
    /// The config this batch puts in effect.
    #[must_use]
    pub fn config(&self) -> &Config {
        match self {
            Control::LeaderChange { config, .. } | Control::Voters(config) => config,
        }
    }
}

/// One stored batch as replication sees it: where it sits, its epoch, the
/// control record it carries if any, and its bytes (whole, as stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaBatch {
    pub base: Offset,
    /// The offset after its last record.
    pub end: Offset,
    pub epoch: LeaderEpoch,
    pub control: Option<Control>,
    pub bytes: Bytes,
}

/// A follower's fetch (or, with `max_bytes == 0`, its report of a new
/// durable offset, answered at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    pub incarnation: Incarnation,
    pub epoch: LeaderEpoch,
    pub fetch_offset: Offset,
    /// The epoch of the batch before `fetch_offset`; `None`: an empty log.
    pub last_fetched_epoch: Option<LeaderEpoch>,
    pub durable_offset: Offset,
    pub high_watermark: Offset,
    pub max_bytes: u32,
}

impl FetchRequest {
    #[must_use]
    pub fn is_report(&self) -> bool {
        self.max_bytes == 0
    }
}

/// The leader's answer to one fetch entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchAnswer {
    pub error: ErrorCode,
    /// The answering replica's epoch, and the leader it knows.
    pub epoch: LeaderEpoch,
    pub leader: Option<NodeId>,
    /// Echoed from the request, so a late or duplicated answer is known.
    pub fetch_offset: Offset,
    pub report: bool,
    pub high_watermark: Offset,
    pub log_start: Offset,
    /// The follower's log parts from the leader's: this epoch ends here.
    pub diverging: Option<(LeaderEpoch, Offset)>,
    /// With `OFFSET_OUT_OF_RANGE` (start over): the config to take.
    pub snapshot: Option<Config>,
    pub batches: Vec<ReplicaBatch>,
}

/// A (pre-)vote request: the epoch asked for and how complete the
/// candidate's log is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoteRequest {
    pub epoch: LeaderEpoch,
    pub incarnation: Incarnation,
    pub last_epoch: Option<LeaderEpoch>,
    pub log_end: Offset,
    /// A leadership transfer: the voter ignores leader stickiness.
    pub transfer: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoteAnswer {
    pub error: ErrorCode,
    /// The voter's epoch (after the request), and the epoch asked for.
    pub epoch: LeaderEpoch,
    pub asked: LeaderEpoch,
    pub incarnation: Incarnation,
    pub granted: bool,
}

/// One partition's entry of a replication message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMessage {
    Fetch(FetchRequest),
    FetchAnswer(FetchAnswer),
    Vote(VoteRequest),
    VoteAnswer(VoteAnswer),
    PreVote(VoteRequest),
    PreVoteAnswer(VoteAnswer),
    /// One-way, from the leader of `epoch`.
    BeginEpoch {
        epoch: LeaderEpoch,
    },
    /// One-way, from the leader of `epoch` to the replica it hands over to.
    StartElection {
        epoch: LeaderEpoch,
    },
}

impl PeerMessage {
    /// The epoch the message speaks for (the sender's, or the one asked).
    #[must_use]
    pub fn epoch(&self) -> LeaderEpoch {
        match self {
            PeerMessage::Fetch(m) => m.epoch,
            PeerMessage::FetchAnswer(m) => m.epoch,
            PeerMessage::Vote(m) | PeerMessage::PreVote(m) => m.epoch,
            PeerMessage::VoteAnswer(m) | PeerMessage::PreVoteAnswer(m) => m.epoch,
            PeerMessage::BeginEpoch { epoch } | PeerMessage::StartElection { epoch } => *epoch,
        }
    }
}
