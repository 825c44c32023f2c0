//! Stable numeric error codes. A code, once given a meaning, keeps it: clients
//! switch on the number, and `docs/protocol.md` lists every one. Codes below
//! 100 are the protocol's own; storage failures map to their own codes here
//! rather than leaking the engine's.

use std::fmt;

/// An error code as carried on the wire. Unknown codes (from a newer broker)
/// are kept as numbers rather than rejected.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u16);

macro_rules! codes {
    ($($name:ident = $value:literal, $text:literal, $retriable:literal;)*) => {
        impl ErrorCode {
            $(pub const $name: ErrorCode = ErrorCode($value);)*

            /// Every code this version knows, for docs and tests.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name),*];

            /// The code's stable name, as in `docs/protocol.md`.
            pub fn name(self) -> &'static str {
                match self.0 {
                    $($value => stringify!($name),)*
                    _ => "UNKNOWN",
                }
            }

            /// What the code means, for one-line error messages.
            pub fn description(self) -> &'static str {
                match self.0 {
                    $($value => $text,)*
                    _ => "an error code this client does not know",
                }
            }

            /// Whether the same request may succeed if sent again later.
            pub fn is_retriable(self) -> bool {
                match self.0 {
                    $($value => $retriable,)*
                    _ => false,
                }
            }
        }
    };
}

codes! {
    NONE = 0, "no error", false;
    MALFORMED_REQUEST = 1, "the request body could not be decoded", false;
    FRAME_TOO_LARGE = 2, "the frame is larger than the broker accepts", false;
    UNKNOWN_API = 3, "the broker does not know this API key", false;
    UNSUPPORTED_VERSION = 4, "the broker does not support this API version", false;
    HANDSHAKE_REQUIRED = 5, "the first request on a connection must be a handshake", false;
    INVALID_TOPIC_NAME = 6, "topic names are 1 to 249 characters of a-z, A-Z, 0-9, '.', '_' and '-'", false;
    TOPIC_ALREADY_EXISTS = 7, "the topic already exists", false;
    UNKNOWN_TOPIC = 8, "the topic does not exist", false;
    UNKNOWN_PARTITION = 9, "the topic has no such partition", false;
    INVALID_PARTITIONS = 10, "the partition count is out of range", false;
    INVALID_BATCH = 11, "the batch is corrupt or malformed (length, CRC32C or archive check failed)", false;
    BATCH_TOO_LARGE = 12, "the batch is larger than the broker accepts", false;
    OFFSET_OUT_OF_RANGE = 13, "the offset is outside the partition's log", false;
    STORAGE_ERROR = 14, "the partition's storage failed (an I/O error or a failed fsync); it refuses writes, and serves what it stored, until recovered (cairn partition recover) or the broker restarts", false;
    DISK_FULL = 15, "the broker's disk is full", true;
    REQUEST_TIMED_OUT = 16, "the request did not complete within its timeout", true;
    SHUTTING_DOWN = 17, "the broker is shutting down", true;
    TOO_MANY_CONNECTIONS = 18, "the broker has reached its connection limit", true;
    INVALID_REQUEST = 19, "a request field is out of range", false;
    INTERNAL_ERROR = 20, "the broker failed unexpectedly", false;
    PARTITION_UNAVAILABLE = 21, "the partition is being created, deleted or recovered", true;
    INVALID_CONFIG = 22, "a topic setting is unknown or out of range", false;
    LOG_TRUNCATED = 23, "the append was removed by a log truncation before it was acknowledged; send it again", true;
    INVALID_TIMESTAMP = 24, "a record's timestamp is outside the topic's accepted range", false;
    NOT_LEADER = 25, "this broker is not the partition's leader; the response names the leader it knows and its epoch", true;
    LEADER_NOT_AVAILABLE = 26, "the partition has no serving leader yet (an election is on, or the new leader has not committed its first batch)", true;
    NOT_CONTROLLER = 27, "the call reached a broker that is not the controller; the response names the one it knows", true;
    FENCED_EPOCH = 28, "the request's leader epoch is older than the receiver's", true;
    UNKNOWN_REPLICA = 29, "the sender is no replica of the partition (removed, or never assigned)", false;
    CLUSTER_MISMATCH = 30, "the peer belongs to another cluster", false;
    INVALID_REPLICATION_FACTOR = 31, "the replication factor is 0 or above the live brokers that can take replicas", false;
    REASSIGNMENT_IN_PROGRESS = 32, "the partition is already moving", true;
    UNKNOWN_BROKER = 33, "no broker has that id", false;
    BROKER_ID_IN_USE = 34, "a live broker holds that node id under another incarnation", false;
    INVALID_RECORD = 35, "a record breaks the topic's rules (a compacted topic takes only records with a key)", false;
    INVALID_GROUP_ID = 36, "group ids are 1 to 249 characters of a-z, A-Z, 0-9, '.', '_' and '-'", false;
    UNKNOWN_MEMBER_ID = 37, "the group has no member with this id (it left, or its session expired): join again", false;
    FENCED_MEMBER_EPOCH = 38, "the member's epoch is not the group's for it (its session expired, or it was replaced): join again with epoch 0", false;
    STALE_MEMBER_EPOCH = 39, "the commit carries an older member epoch than the member's current one: heartbeat, then commit again", false;
    PARTITION_NOT_ASSIGNED = 40, "the member commits a partition the group does not assign to it", false;
    GROUP_NOT_EMPTY = 41, "the group still has members; this needs an empty group", false;
    UNKNOWN_GROUP = 42, "the group does not exist", false;
    UNSUPPORTED_ASSIGNOR = 43, "the assignor is not range, round-robin or cooperative-sticky, or differs from the group's", false;
    GROUP_MAX_SIZE_REACHED = 44, "the group has as many members as it may", false;
    NOT_COORDINATOR = 45, "this broker is not the group's coordinator; find it again", true;
    COORDINATOR_LOAD_IN_PROGRESS = 46, "the coordinator is still loading its groups from the offsets topic", true;
    INVALID_RECORD_STATE = 47, "the records are not held by this consumer (its lock ran out, or another consumer holds them): they will be delivered again", false;
    QUEUE_PARTITION_UNAVAILABLE = 48, "the queue's coordinator knows the bounds of none of the partitions, neither from a replica of its own nor from a leader (an election is on, or their brokers are down): the queue cannot hand out records yet", true;
}

impl ErrorCode {
    pub fn is_ok(self) -> bool {
        self == ErrorCode::NONE
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.name(), self.0, self.description())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_dense() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(usize::from(code.0), i, "{code:?} breaks the numbering");
        }
    }

    #[test]
    fn the_numbers_never_change() {
        // Clients switch on these numbers: changing one breaks them.
        assert_eq!(ErrorCode::UNKNOWN_TOPIC.0, 8);
        assert_eq!(ErrorCode::OFFSET_OUT_OF_RANGE.0, 13);
        assert_eq!(ErrorCode::STORAGE_ERROR.0, 14);
        assert_eq!(ErrorCode::NOT_LEADER.0, 25);
        assert_eq!(ErrorCode::BROKER_ID_IN_USE.0, 34);
        assert_eq!(ErrorCode(999).name(), "UNKNOWN");
    }
}
