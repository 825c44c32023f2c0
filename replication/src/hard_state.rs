//! The hard state of a replica, `raft.state` in its partition directory:
//! the epoch and vote that must be durable before any vote or candidacy
//! is sent, the replica's incarnation, and its recent configs. The layout
//! is in docs/replication.md ("The hard-state file", version 1); a golden
//! file pins it. All integers little-endian; `[T]` is a u32 count and that
//! many `T`, as in protocol.md.

use protocol::types::{Incarnation, LeaderEpoch, NodeId, Offset};

use crate::config::{Config, ReplicaKey};

/// `b"CRNS"`.
pub const HARD_STATE_MAGIC: [u8; 4] = *b"CRNS";
pub const HARD_STATE_VERSION: u16 = 2;
/// The newest committed config and those after it, at most.
pub const HARD_STATE_CONFIGS_MAX: usize = 8;
/// Fixed fields before the configs.
const FIXED_BYTES: usize = 40;
const CRC_BYTES: usize = 4;
/// Replicas in one set, at most (a bound on what a damaged count can ask for).
const SET_REPLICAS_MAX: u32 = 255;
const FLAG_INITIAL: u8 = 1;
/// `(leader_epoch u32, start_offset u64)`.
const EPOCH_ENTRY_BYTES: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardState {
    pub epoch: LeaderEpoch,
    pub voted_for: Option<NodeId>,
    pub incarnation: Incarnation,
    /// Created for the partition's first assignment (may vote while the
    /// config names its node with incarnation 0).
    pub initial: bool,
    /// (offset of the config's batch, its epoch, the config), oldest first.
    pub configs: Vec<(Offset, LeaderEpoch, Config)>,
    /// Bumped by every write; the driver's `Persisted` names it.
    pub sequence: u64,
    /// The leader epoch cache, written before the first batch of a new
    /// epoch lands, so a restart knows every batch's epoch without reading
    /// the log (entries at or past the recovered log end are dropped).
    pub epochs: Vec<(LeaderEpoch, Offset)>,
}

/// Why a `raft.state` was not taken. Every one means "lost hard state" to
/// the caller (a new incarnation; the log is kept), never a guess.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HardStateError {
    Truncated { length: usize },
    BadMagic,
    UnsupportedVersion { found: u16 },
    BadLength { stated: u32, actual: usize },
    CrcMismatch { stored: u32, computed: u32 },
    WrongNode { found: NodeId, expected: NodeId },
    Malformed { reason: &'static str },
}

impl std::fmt::Display for HardStateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HardStateError::Truncated { length } => write!(f, "hard state truncated at {length} bytes"),
            HardStateError::BadMagic => write!(f, "not a hard-state file (bad magic)"),
            HardStateError::UnsupportedVersion { found } => write!(f, "hard-state version {found} is not supported"),
            HardStateError::BadLength { stated, actual } => {
                write!(f, "hard state says {stated} bytes but has {actual}")
            }
            HardStateError::CrcMismatch { stored, computed } => {
                write!(f, "hard-state CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")
            }
            HardStateError::WrongNode { found, expected } => {
                write!(f, "hard state of node {found} in a directory of node {expected}")
            }
            HardStateError::Malformed { reason } => write!(f, "hard state malformed: {reason}"),
        }
    }
}

impl std::error::Error for HardStateError {}

fn put_set(out: &mut Vec<u8>, set: &[ReplicaKey]) {
    out.extend_from_slice(&(set.len() as u32).to_le_bytes());
    for r in set {
        out.extend_from_slice(&r.node.0.to_le_bytes());
        out.extend_from_slice(&r.incarnation.0.to_le_bytes());
    }
}

impl HardState {
    /// The file's bytes, for node `node`.
    #[must_use]
    pub fn encode(&self, node: NodeId) -> Vec<u8> {
        assert!(self.configs.len() <= HARD_STATE_CONFIGS_MAX, "at most {HARD_STATE_CONFIGS_MAX} configs are kept");
        assert!(self.incarnation.0 != 0, "a replica's incarnation is never 0");
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&HARD_STATE_MAGIC);
        out.extend_from_slice(&HARD_STATE_VERSION.to_le_bytes());
        out.push(if self.initial { FLAG_INITIAL } else { 0 });
        out.push(self.configs.len() as u8);
        out.extend_from_slice(&0u32.to_le_bytes()); // file_length, below
        out.extend_from_slice(&node.0.to_le_bytes());
        out.extend_from_slice(&self.incarnation.0.to_le_bytes());
        out.extend_from_slice(&self.epoch.0.to_le_bytes());
        out.extend_from_slice(&self.voted_for.map_or(0, |n| n.0).to_le_bytes());
        out.extend_from_slice(&self.sequence.to_le_bytes());
        debug_assert_eq!(out.len(), FIXED_BYTES);
        for (offset, epoch, config) in &self.configs {
            out.extend_from_slice(&offset.0.to_le_bytes());
            out.extend_from_slice(&epoch.0.to_le_bytes());
            put_set(&mut out, &config.voters);
            match &config.joint {
                None => out.push(0),
                Some(joint) => {
                    out.push(1);
                    put_set(&mut out, joint);
                }
            }
            put_set(&mut out, &config.learners);
        }
        out.extend_from_slice(&(self.epochs.len() as u32).to_le_bytes());
        for (epoch, start) in &self.epochs {
            out.extend_from_slice(&epoch.0.to_le_bytes());
            out.extend_from_slice(&start.0.to_le_bytes());
        }
        let length = (out.len() + CRC_BYTES) as u32;
        out[8..12].copy_from_slice(&length.to_le_bytes());
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads a file written by [`HardState::encode`] for node `node`.
    pub fn decode(bytes: &[u8], node: NodeId) -> Result<HardState, HardStateError> {
        if bytes.len() < FIXED_BYTES + CRC_BYTES {
            return Err(HardStateError::Truncated { length: bytes.len() });
        }
        if bytes[0..4] != HARD_STATE_MAGIC {
            return Err(HardStateError::BadMagic);
        }
        let mut r = Reader { bytes, at: 4 };
        let version = r.u16()?;
        if version != HARD_STATE_VERSION {
            return Err(HardStateError::UnsupportedVersion { found: version });
        }
        let flags = r.u8()?;
        let config_count = r.u8()? as usize;
        let stated = r.u32()?;
        if stated as usize != bytes.len() {
            return Err(HardStateError::BadLength { stated, actual: bytes.len() });
        }
        let body = &bytes[..bytes.len() - CRC_BYTES];
        let stored = u32::from_le_bytes(bytes[bytes.len() - CRC_BYTES..].try_into().expect("4 bytes"));
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(HardStateError::CrcMismatch { stored, computed });
        }
        if flags & !FLAG_INITIAL != 0 {
            return Err(HardStateError::Malformed { reason: "unknown flags" });
        }
        if config_count > HARD_STATE_CONFIGS_MAX {
            return Err(HardStateError::Malformed { reason: "more configs than are kept" });
        }
        let found = NodeId(r.u32()?);
        if found != node {
            return Err(HardStateError::WrongNode { found, expected: node });
        }
        let incarnation = Incarnation(r.u64()?);
        if incarnation.0 == 0 {
            return Err(HardStateError::Malformed { reason: "incarnation 0" });
        }
        let epoch = LeaderEpoch(r.u32()?);
        let voted_for = Some(NodeId(r.u32()?)).filter(|n| n.0 != 0);
        let sequence = r.u64()?;
        let mut r = Reader { bytes: body, at: r.at };
        let mut configs = Vec::with_capacity(config_count);
        for _ in 0..config_count {
            let offset = Offset(r.u64()?);
            let config_epoch = LeaderEpoch(r.u32()?);
            let voters = r.set()?;
            let joint = match r.u8()? {
                0 => None,
                1 => Some(r.set()?),
                _ => return Err(HardStateError::Malformed { reason: "joint flag neither 0 nor 1" }),
            };
            let learners = r.set()?;
            configs.push((offset, config_epoch, Config { voters, joint, learners }));
        }
        let epoch_count = r.u32()? as usize;
        if epoch_count * EPOCH_ENTRY_BYTES != body.len() - r.at {
            return Err(HardStateError::Malformed { reason: "the epoch table does not fill the rest of the file" });
        }
        let mut epochs: Vec<(LeaderEpoch, Offset)> = Vec::with_capacity(epoch_count);
        for _ in 0..epoch_count {
            let entry = (LeaderEpoch(r.u32()?), Offset(r.u64()?));
            if epochs.last().is_some_and(|last| entry.0 <= last.0 || entry.1 <= last.1) {
                return Err(HardStateError::Malformed { reason: "epoch table out of order" });
            }
            epochs.push(entry);
        }
        Ok(HardState { epoch, voted_for, incarnation, initial: flags & FLAG_INITIAL != 0, configs, sequence, epochs })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], HardStateError> {
        let end = self.at.checked_add(N).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or(HardStateError::Malformed { reason: "a field runs past the end" })?;
        let out = self.bytes[self.at..end].try_into().expect("N bytes");
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, HardStateError> {
        Ok(self.take::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, HardStateError> {
        Ok(u16::from_le_bytes(self.take()?))
    }

    fn u32(&mut self) -> Result<u32, HardStateError> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, HardStateError> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    fn set(&mut self) -> Result<Vec<ReplicaKey>, HardStateError> {
        let n = self.u32()?;
        if n > SET_REPLICAS_MAX {
            return Err(HardStateError::Malformed { reason: "more replicas in a set than a partition has" });
        }
        (0..n).map(|_| Ok(ReplicaKey { node: NodeId(self.u32()?), incarnation: Incarnation(self.u64()?) })).collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const GOLDEN: &[u8] = include_bytes!("golden/raft_state_v2.bin");

    fn key(node: u32, incarnation: u64) -> ReplicaKey {
        ReplicaKey { node: NodeId(node), incarnation: Incarnation(incarnation) }
    }

    fn golden_state() -> HardState {
        let old = Config { voters: vec![key(1, 11), key(2, 22), key(3, 33)], joint: None, learners: vec![] };
        let moving = Config {
            voters: vec![key(1, 11), key(2, 22), key(3, 33)],
            joint: Some(vec![key(1, 11), key(2, 22), key(4, 44)]),
            learners: vec![key(5, 0)],
        };
        HardState {
            epoch: LeaderEpoch(7),
            voted_for: Some(NodeId(2)),
            incarnation: Incarnation(0x0123_4567_89ab_cdef),
            initial: true,
            configs: vec![(Offset(100), LeaderEpoch(5), old), (Offset(250), LeaderEpoch(7), moving)],
            sequence: 42,
            epochs: vec![(LeaderEpoch(1), Offset(0)), (LeaderEpoch(5), Offset(100)), (LeaderEpoch(7), Offset(250))],
        }
    }

    #[test]
    fn golden_hard_state_bytes_are_stable() {
        let bytes = golden_state().encode(NodeId(2));
        if std::env::var_os("CAIRN_BLESS").is_some() {
            std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/src/golden/raft_state_v2.bin"), &bytes).unwrap();
        }
        assert_eq!(bytes, GOLDEN, "the raft.state format changed: bump its version and docs/replication.md");
        assert_eq!(&bytes[..4], b"CRNS");
        assert_eq!(HardState::decode(GOLDEN, NodeId(2)).unwrap(), golden_state());
    }

    #[test]
    fn another_nodes_file_is_refused() {
        let bytes = golden_state().encode(NodeId(2));
        assert_eq!(
            HardState::decode(&bytes, NodeId(3)),
            Err(HardStateError::WrongNode { found: NodeId(2), expected: NodeId(3) })
        );
    }

    proptest! {
        /// Any byte changed, or the file cut anywhere, is refused: a damaged
        /// hard state is never read as a different one.
        #[test]
        fn damage_anywhere_is_refused(at in 0usize..10_000, bit in 0u8..8, cut in 0usize..10_000) {
            let bytes = golden_state().encode(NodeId(2));
            let mut flipped = bytes.clone();
            let i = at % bytes.len();
            flipped[i] ^= 1 << bit;
            prop_assert!(HardState::decode(&flipped, NodeId(2)).is_err(), "flip at {}", i);
            let cut = cut % bytes.len();
            prop_assert!(HardState::decode(&bytes[..cut], NodeId(2)).is_err(), "cut at {}", cut);
        }

        #[test]
        fn what_is_written_is_read_back(
            epoch in any::<u32>(),
            vote in proptest::option::of(1u32..10),
            incarnation in 1u64..,
            initial in any::<bool>(),
            sequence in any::<u64>(),
            epoch_steps in proptest::collection::vec((1u32..5, 1u64..1000), 0..20),
            sets in proptest::collection::vec(
                (proptest::collection::vec((1u32..9, any::<u64>()), 0..5), proptest::option::of(proptest::collection::vec((1u32..9, any::<u64>()), 0..5))),
                0..=4,
            ),
        ) {
            let keys = |v: &Vec<(u32, u64)>| v.iter().map(|&(n, i)| key(n, i)).collect::<Vec<_>>();
            let configs = sets.iter().enumerate().map(|(i, (voters, joint))| {
                (Offset(i as u64 * 10), LeaderEpoch(i as u32), Config { voters: keys(voters), joint: joint.as_ref().map(keys), learners: keys(voters) })
            }).collect();
            let state = HardState {
                epoch: LeaderEpoch(epoch),
                voted_for: vote.map(NodeId),
                incarnation: Incarnation(incarnation),
                initial,
                configs,
                sequence,
                epochs: epoch_steps.iter().scan((0u32, 0u64), |at, &(de, ds)| {
                    *at = (at.0 + de, at.1 + ds);
                    Some((LeaderEpoch(at.0), Offset(at.1)))
                }).collect(),
            };
            prop_assert_eq!(HardState::decode(&state.encode(NodeId(9)), NodeId(9)).unwrap(), state);
        }
    }
}
