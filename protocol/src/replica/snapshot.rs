//! `FetchSnapshot` (0x08 / 0x88), metadata partition only: a chunk of the
//! controller's snapshot (docs/replication.md §10, step 18).
//!
//! ```text
//! request:  tp, snapshot_offset u64, position u64, max_bytes u32
//! response: snapshot_offset u64, size u64, position u64, chunk bytes
//! ```

use bytes::Bytes;

use super::error::BodyError;
use super::wire::{put_tp, read_tp};
use crate::codec::{Reader, Writer};
use crate::types::{Offset, TopicPartition};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchSnapshot {
    pub tp: TopicPartition,
    pub snapshot_offset: Offset,
    /// The byte of the snapshot to start at.
    pub position: u64,
    pub max_bytes: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchSnapshotResponse {
    pub snapshot_offset: Offset,
    /// Bytes of the whole snapshot.
    pub size: u64,
    /// Where `chunk` starts in it.
    pub position: u64,
    pub chunk: Bytes,
}

impl FetchSnapshot {
    pub fn encode(&self, w: &mut Writer) {
        put_tp(w, self.tp);
        w.u64(self.snapshot_offset.0);
        w.u64(self.position);
        w.u32(self.max_bytes);
    }

    pub fn decode(r: &mut Reader) -> Result<FetchSnapshot, BodyError> {
        Ok(FetchSnapshot {
            tp: read_tp(r)?,
            snapshot_offset: Offset(r.u64()?),
            position: r.u64()?,
            max_bytes: r.u32()?,
        })
    }
}

impl FetchSnapshotResponse {
    pub fn encode(&self, w: &mut Writer) {
        w.u64(self.snapshot_offset.0);
        w.u64(self.size);
        w.u64(self.position);
        w.bytes(&self.chunk);
    }

    pub fn decode(r: &mut Reader) -> Result<FetchSnapshotResponse, BodyError> {
        Ok(FetchSnapshotResponse {
            snapshot_offset: Offset(r.u64()?),
            size: r.u64()?,
            position: r.u64()?,
            chunk: r.bytes()?,
        })
    }
}
