//! The replication wire codec, pinned and fuzzed: golden frames with their
//! fields at the offsets docs/replication.md §4 gives (`golden`), typed
//! errors for each way a frame can be wrong (`cases`), and property tests
//! (`props`): every kind round-trips, and arbitrary, mutated or cut bytes
//! give an error, never a panic.

mod cases;
mod golden;
mod props;

use bytes::Bytes;

use super::*;
use crate::types::{Timestamp, TopicPartition};

fn tp(topic: u64, partition: u32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

fn key(node: u32, incarnation: u64) -> ReplicaKey {
    ReplicaKey { node: NodeId(node), incarnation: Incarnation(incarnation) }
}

/// The golden batch of the batch format (`batch/golden/batch_v2.bin`).
const BATCH_V2: &[u8] = include_bytes!("../../batch/golden/batch_v2.bin");

fn replica_batch(bytes: &[u8]) -> ReplicaBatch {
    let mut batches = read_batches(&Bytes::copy_from_slice(bytes)).expect("a valid batch");
    assert_eq!(batches.len(), 1);
    batches.pop().unwrap()
}

fn leader_change_control() -> Control {
    Control::LeaderChange {
        epoch: LeaderEpoch(5),
        leader: NodeId(1),
        config: Config { voters: vec![key(1, 11), key(2, 22), key(3, 33)], joint: None, learners: vec![] },
    }
}

fn voters_control() -> Control {
    Control::Voters(Config {
        voters: vec![key(1, 11), key(2, 22), key(3, 33)],
        joint: Some(vec![key(1, 11), key(2, 22), key(4, 44)]),
        learners: vec![key(4, 44)],
    })
}

fn leader_change_batch() -> Vec<u8> {
    control::build_batch(&leader_change_control(), Offset(1200), LeaderEpoch(5), Timestamp(1_700_000_000_000))
}

fn voters_batch() -> Vec<u8> {
    control::build_batch(&voters_control(), Offset(1300), LeaderEpoch(5), Timestamp(1_700_000_000_500))
}

fn concat(pieces: &[Bytes]) -> Bytes {
    pieces.iter().flat_map(|p| p.iter().copied()).collect::<Vec<u8>>().into()
}

/// Encodes, cuts with `split` and decodes `frame`.
fn round_trip(frame: &Frame) -> Frame {
    let bytes = concat(&frame.encode());
    assert_eq!(frame::split(&bytes, FRAME_BYTES_MAX), Ok(Split::Frame(bytes.len())));
    Frame::decode(&bytes, FRAME_BYTES_MAX).expect("a frame this build encoded")
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
