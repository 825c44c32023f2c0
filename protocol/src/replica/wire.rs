//! Field encodings shared by the replication bodies: `tp`, the optional
//! numbers (`-1` or `0` for none), flags that must be 0 or 1, replica sets
//! and entry lists bounded by [`FRAME_ENTRIES_MAX`].

use super::ReplicaKey;
use super::error::BodyError;
use super::frame::FRAME_ENTRIES_MAX;
use crate::codec::{DecodeError, Reader, Writer};
use crate::types::{Incarnation, LeaderEpoch, NodeId, Offset, PartitionId, TopicId, TopicPartition};

/// Bytes of a `tp`: `topic_id u64, partition u32`.
pub(crate) const TP_BYTES: usize = 12;
/// Bytes of a replica in a set: `node u32, incarnation u64`.
pub(crate) const REPLICA_KEY_BYTES: usize = 12;

pub(crate) fn put_tp(w: &mut Writer, tp: TopicPartition) {
    w.u64(tp.topic.0);
    w.u32(tp.partition.0);
}

pub(crate) fn read_tp(r: &mut Reader) -> Result<TopicPartition, DecodeError> {
    Ok(TopicPartition { topic: TopicId(r.u64()?), partition: PartitionId(r.u32()?) })
}

/// `-1` for none.
pub(crate) fn put_opt_epoch(w: &mut Writer, epoch: Option<LeaderEpoch>) {
    w.i64(epoch.map_or(-1, |e| i64::from(e.0)));
}

pub(crate) fn read_opt_epoch(r: &mut Reader, what: &'static str) -> Result<Option<LeaderEpoch>, DecodeError> {
    match r.i64()? {
        -1 => Ok(None),
        v => u32::try_from(v).map(|e| Some(LeaderEpoch(e))).map_err(|_| DecodeError::Invalid { what, value: v }),
    }
}

/// `-1` for none; offsets stay below 2^63.
pub(crate) fn put_opt_offset(w: &mut Writer, offset: Option<Offset>) {
    w.i64(offset.map_or(-1, |o| i64::try_from(o.0).expect("offsets stay below 2^63")));
}

pub(crate) fn read_opt_offset(r: &mut Reader, what: &'static str) -> Result<Option<Offset>, DecodeError> {
    match r.i64()? {
        -1 => Ok(None),
        v => u64::try_from(v).map(|o| Some(Offset(o))).map_err(|_| DecodeError::Invalid { what, value: v }),
    }
}

/// `0` for none: node 0 is no broker.
pub(crate) fn put_opt_node(w: &mut Writer, node: Option<NodeId>) {
    debug_assert!(node != Some(NodeId(0)), "node 0 is none on the wire");
    w.u32(node.map_or(0, |n| n.0));
}

pub(crate) fn read_opt_node(r: &mut Reader) -> Result<Option<NodeId>, DecodeError> {
    Ok(Some(NodeId(r.u32()?)).filter(|n| n.0 != 0))
}

pub(crate) fn put_bool(w: &mut Writer, v: bool) {
    w.u8(u8::from(v));
}

pub(crate) fn read_bool(r: &mut Reader, what: &'static str) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(DecodeError::Invalid { what, value: i64::from(v) }),
    }
}

pub(crate) fn put_set(w: &mut Writer, set: &[ReplicaKey]) {
    w.array(set, |w, k| {
        w.u32(k.node.0);
        w.u64(k.incarnation.0);
    });
}

pub(crate) fn read_set(r: &mut Reader, what: &'static str) -> Result<Vec<ReplicaKey>, DecodeError> {
    r.array(what, REPLICA_KEY_BYTES, |r| Ok(ReplicaKey { node: NodeId(r.u32()?), incarnation: Incarnation(r.u64()?) }))
}

/// An entry list: its count, then each entry. More than
/// [`FRAME_ENTRIES_MAX`] is a bug of the sender's coalescing.
pub(crate) fn put_entries<T>(w: &mut Writer, entries: &[T], entry: impl FnMut(&mut Writer, &T)) {
    assert!(entries.len() <= FRAME_ENTRIES_MAX, "{} entries in one frame", entries.len());
    w.array(entries, entry);
}

/// An entry list, its count checked against the limit and against what
/// entries of at least `entry_bytes_min` bytes could fit in, before any
/// allocation. `entry` gets the entry's index.
pub(crate) fn read_entries<T>(
    r: &mut Reader,
    what: &'static str,
    entry_bytes_min: usize,
    mut entry: impl FnMut(&mut Reader, usize) -> Result<T, BodyError>,
) -> Result<Vec<T>, BodyError> {
    let count = r.count(what, entry_bytes_min)?;
    if count > FRAME_ENTRIES_MAX {
        return Err(BodyError::TooManyEntries { count, max: FRAME_ENTRIES_MAX });
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        out.push(entry(r, i)?);
    }
    Ok(out)
}
