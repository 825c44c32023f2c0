//! Consumer groups as a state machine that does no I/O (docs/groups.md).
//! The broker that leads a partition of the offsets topic drives the
//! coordinator of the groups that hash to it: it feeds requests and the
//! clock in, appends the records the coordinator returns to that partition,
//! and answers once they are committed. A new leader replays the partition
//! and has the same groups. The seeded tests drive it the same way.

pub mod assignor;
pub mod coordinator;
pub mod group;
pub mod queue;
pub mod records;
pub mod types;

pub use assignor::Assignor;
pub use coordinator::{CommitOffset, Coordinator, Heartbeat, HeartbeatReply, Limits, Outcome};
pub use queue::{QueueLimits, Queues};
pub use records::GroupRecord;
pub use types::{Assignment, GroupEpoch, MemberEpoch, Millis};
