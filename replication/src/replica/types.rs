//! What goes in and out of a [`Replica`](super::Replica): the driver's
//! half of the contract (docs/replication.md §2, Inputs and Outputs).

use bytes::Bytes;
use protocol::replica::{Config, PeerMessage, ReplicaBatch};
use protocol::types::{LeaderEpoch, NodeId, Offset};

use crate::epochs::EpochCache;
use crate::hard_state::HardState;

/// The driver's handle on one proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProposalId(pub u64);

/// The driver's handle on one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadToken(pub u64);

/// When a proposal is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// Once placed in the leader's log: nothing is promised.
    None,
    /// Once the leader's log holds it durably.
    Leader,
    /// Once a majority of the voters holds it durably (committed).
    All,
}

/// The log as recovery left it, at open and after every reopen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogView {
    pub log_start: Offset,
    pub log_end: Offset,
    /// Recovery leaves only durable data, so this is `log_end` in
    /// production; the field keeps the machine honest when it is not.
    pub durable: Offset,
    pub epochs: EpochCache,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadMode {
    /// Answer at once from what is in memory, or `Miss`.
    CacheOnly,
    /// Read from disk, however long it takes.
    Disk,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadResult {
    /// Whole batches from the offset read at, the first always whole.
    Batches(Vec<ReplicaBatch>),
    Miss,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admin {
    /// Hand leadership to `to` (a voter), with a bounded pause.
    TransferLeadership { to: NodeId },
    /// Move the voters to these nodes (`None`: no move); given to every
    /// replica, acted on by whichever leads (`reconfig`).
    Reassign { target: Option<Vec<NodeId>> },
    /// Nodes that follow the log without being named by any config (the
    /// brokers that joined, for the metadata partition): told the epoch
    /// and served, never counted.
    Observers { nodes: Vec<NodeId> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Time passed; the machine's timers run.
    Tick,
    Message {
        from: NodeId,
        message: PeerMessage,
    },
    /// A producer's batch of `records` offsets, not yet stamped.
    Propose {
        id: ProposalId,
        batch: Bytes,
        records: u32,
        acks: Acks,
    },
    /// The log's durable offset advanced (the flush policy holds it).
    Durable {
        offset: Offset,
    },
    /// A `Truncate` or `Reset` finished; the log ends at `log_end`.
    Truncated {
        log_end: Offset,
    },
    ReadDone {
        token: ReadToken,
        result: ReadResult,
    },
    /// The hard state of that sequence (and every one before) is durable.
    Persisted {
        sequence: u64,
    },
    /// The log is poisoned or closed: nothing of it can be trusted to
    /// progress until it reopens.
    LogFailed,
    /// Recovery ran again after a failure.
    LogReopened {
        view: LogView,
    },
    Admin(Admin),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProposeError {
    /// Retriable: send it to this leader (`None`: not known yet).
    NotLeader { leader: Option<NodeId>, epoch: LeaderEpoch },
    /// Retriable: the leader has not committed its first batch yet.
    LeaderNotAvailable,
    /// The log failed under the proposal.
    Storage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The log is failed or closed.
    Offline,
    /// Named by no config: never votes or campaigns.
    Observer,
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Write `raft.state`, then give `Persisted { sequence }`.
    PersistHardState {
        state: HardState,
    },
    /// Place these batches at their offsets, stamped with their epochs,
    /// in this order. A leader's proposals and control batches are built
    /// here, a follower's come from its leader.
    Append {
        batches: Vec<ReplicaBatch>,
        proposal: Option<ProposalId>,
    },
    /// Cut the log to end at `to`, then give `Truncated`.
    Truncate {
        to: Offset,
    },
    /// Empty the log and start it at `log_start`, then give `Truncated`.
    Reset {
        log_start: Offset,
    },
    Read {
        token: ReadToken,
        from: Offset,
        bytes_max: u32,
        mode: ReadMode,
    },
    Send {
        to: NodeId,
        message: PeerMessage,
    },
    /// The commit point advanced (consumers may read below it).
    HighWatermark {
        offset: Offset,
    },
    Ack {
        proposal: ProposalId,
        base: Offset,
    },
    Fail {
        proposal: ProposalId,
        error: ProposeError,
    },
    RoleChanged {
        role: Role,
        epoch: LeaderEpoch,
        leader: Option<NodeId>,
    },
    ConfigChanged {
        config: Config,
        committed: bool,
    },
}

/// Known bugs the simulator must catch (docs/replication.md §9,
/// mutation tests). Only the `sim` feature (and tests) can switch one on:
/// without it `Params` has no field to hold one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutation {
    /// A follower cuts its log to its own high watermark on becoming a
    /// follower (the bug of KIP-101).
    TruncateToHighWatermark,
    /// Durable means placed, on the leader and in followers' reports.
    AckBeforeFsync,
    /// Vote answers leave before the vote is persisted.
    VoteBeforePersist,
    /// Entries of earlier epochs commit by counting replicas (Raft's
    /// figure 8), without the current epoch's batch being committed.
    CommitPriorEpochByCount,
    /// A move switches to the target's voters in one step, without the
    /// joint config (two majorities that need not intersect).
    SkipJointConfig,
}

/// The machine's limits and timers. Times in milliseconds.
#[derive(Debug, Clone)]
pub struct Params {
    pub node: NodeId,
    /// Seeds the election jitter (no global randomness in the machine).
    pub seed: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// A leader's tick: `BeginEpoch` resends, parked fetches answered,
    /// check-quorum.
    pub tick_interval_ms: u64,
    /// How long a leader parks a fetch at its log end before answering it
    /// empty (the heartbeat).
    pub fetch_wait_max_ms: u64,
    /// A fetch or vote unanswered this long is sent again.
    pub request_timeout_ms: u64,
    /// `max_bytes` of a follower's fetch.
    pub fetch_bytes_max: u32,
    pub leader_transfer_timeout_ms: u64,
    /// A follower whose log has not reached the leader's log end for this
    /// long is not caught up ([`crate::replica::Replica::caught_up`]).
    pub replica_lag_max_ms: u64,
    /// The first election timeout after opening, in place of a random one:
    /// the preferred replica (its assignment's first) campaigns first, so
    /// leaders spread as the assignment spreads them. A timing only: the
    /// others still vote as always (and one that hears a leader refuses).
    pub first_election_timeout_ms: Option<u64>,
    /// Proposals waiting for their acknowledgement, at most.
    pub proposals_pending_max: usize,
    #[cfg(any(test, feature = "sim"))]
    pub mutation: Option<Mutation>,
}

impl Params {
    #[must_use]
    pub fn new(node: NodeId, seed: u64) -> Params {
        Params {
            node,
            seed,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            tick_interval_ms: 50,
            fetch_wait_max_ms: 100,
            request_timeout_ms: 250,
            fetch_bytes_max: 1 << 20,
            leader_transfer_timeout_ms: 1_000,
            replica_lag_max_ms: 10_000,
            first_election_timeout_ms: None,
            proposals_pending_max: 100_000,
            #[cfg(any(test, feature = "sim"))]
            mutation: None,
        }
    }

    /// Whether the simulator switched on this known bug.
    #[cfg_attr(not(any(test, feature = "sim")), allow(clippy::unused_self))]
    pub(crate) fn mutated(&self, mutation: Mutation) -> bool {
        #[cfg(any(test, feature = "sim"))]
        {
            self.mutation == Some(mutation)
        }
        #[cfg(not(any(test, feature = "sim")))]
        {
            let _ = mutation;
            false
        }
    }
}
