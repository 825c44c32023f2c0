//! Fetch (0x02) and `FetchResponse` (0x82): a follower's fetches and reports
//! of many partitions, and the leader's answers.
//!
//! ```text
//! Fetch:         max_wait_ms u32, [entry: tp, incarnation u64, epoch u32,
//!                fetch_offset u64, last_fetched_epoch i64, durable_offset u64,
//!                high_watermark u64, max_bytes u32]
//! FetchResponse: [entry: tp, error u16, epoch u32, leader_id u32, fetch_offset u64,
//!                flags u8, high_watermark u64, log_start_offset u64,
//!                diverging_epoch i64, diverging_end_offset i64,
//!                snapshot bytes, batches bytes]
//! ```
//!
//! `batches` are whole stored batches back to back, sent and received
//! without a copy; decoding checks each one (header, header CRC, body CRC)
//! and reads the record of every control batch.

use bytes::Bytes;

use super::control::{put_voters_body, read_batch, read_voters_body};
use super::error::{BatchesError, BodyError};
use super::wire::{
    TP_BYTES, put_entries, put_opt_epoch, put_opt_node, put_opt_offset, put_tp, read_entries, read_opt_epoch,
    read_opt_node, read_opt_offset, read_tp,
};
use super::{FetchAnswer, FetchRequest, ReplicaBatch};
use crate::ErrorCode;
use crate::batch::{BATCH_VERSION, validate_batch};
use crate::codec::{DecodeError, Reader, Writer};
use crate::types::{Incarnation, LeaderEpoch, Offset, TopicPartition};

/// Bytes of one Fetch entry.
pub const FETCH_ENTRY_BYTES: usize = TP_BYTES + 8 + 4 + 8 + 8 + 8 + 8 + 4;
/// Bytes of one `FetchResponse` entry with empty `snapshot` and `batches`.
pub const FETCH_ANSWER_ENTRY_BYTES_MIN: usize = TP_BYTES + 2 + 4 + 4 + 8 + 1 + 8 + 8 + 8 + 8 + 4 + 4;
/// `FetchResponse` `flags` bit 0: the entry answers a report (`max_bytes` 0).
pub const FETCH_FLAG_REPORT: u8 = 1 << 0;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchFrame {
    /// How long the leader may park the frame when every entry comes back
    /// empty (§5, long poll).
    pub max_wait_ms: u32,
    pub entries: Vec<(TopicPartition, FetchRequest)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchResponseFrame {
    pub entries: Vec<(TopicPartition, FetchAnswer)>,
}

impl FetchFrame {
    pub fn encode(&self, w: &mut Writer) {
        w.u32(self.max_wait_ms);
        put_entries(w, &self.entries, |w, (tp, f)| {
            put_tp(w, *tp);
            w.u64(f.incarnation.0);
            w.u32(f.epoch.0);
            w.u64(f.fetch_offset.0);
            put_opt_epoch(w, f.last_fetched_epoch);
            w.u64(f.durable_offset.0);
            w.u64(f.high_watermark.0);
            w.u32(f.max_bytes);
        });
    }

    pub fn decode(r: &mut Reader) -> Result<FetchFrame, BodyError> {
        let max_wait_ms = r.u32()?;
        let entries = read_entries(r, "fetch entries", FETCH_ENTRY_BYTES, |r, _| {
            let tp = read_tp(r)?;
            let request = FetchRequest {
                incarnation: Incarnation(r.u64()?),
                epoch: LeaderEpoch(r.u32()?),
                fetch_offset: Offset(r.u64()?),
                last_fetched_epoch: read_opt_epoch(r, "last_fetched_epoch")?,
                durable_offset: Offset(r.u64()?),
                high_watermark: Offset(r.u64()?),
                max_bytes: r.u32()?,
            };
            Ok((tp, request))
        })?;
        Ok(FetchFrame { max_wait_ms, entries })
    }
}

impl FetchResponseFrame {
    pub fn encode(&self, w: &mut Writer) {
        put_entries(w, &self.entries, |w, (tp, a)| {
            put_tp(w, *tp);
            w.u16(a.error.0);
            w.u32(a.epoch.0);
            put_opt_node(w, a.leader);
            w.u64(a.fetch_offset.0);
            w.u8(if a.report { FETCH_FLAG_REPORT } else { 0 });
            w.u64(a.high_watermark.0);
            w.u64(a.log_start.0);
            put_opt_epoch(w, a.diverging.map(|(epoch, _)| epoch));
            put_opt_offset(w, a.diverging.map(|(_, end)| end));
            match &a.snapshot {
                None => w.u32(0),
                Some(config) => {
                    let mut body = Writer::new();
                    put_voters_body(&mut body, config);
                    w.bytes(&body.into_bytes());
                }
            }
            let total: usize = a.batches.iter().map(|b| b.bytes.len()).sum();
            w.u32(u32::try_from(total).expect("batches of one entry are far below 4 GiB"));
            for b in &a.batches {
                w.shared(b.bytes.clone());
            }
        });
    }

    pub fn decode(r: &mut Reader) -> Result<FetchResponseFrame, BodyError> {
        let entries = read_entries(r, "fetch answers", FETCH_ANSWER_ENTRY_BYTES_MIN, |r, entry| {
            let tp = read_tp(r)?;
            let error = ErrorCode(r.u16()?);
            let epoch = LeaderEpoch(r.u32()?);
            let leader = read_opt_node(r)?;
            let fetch_offset = Offset(r.u64()?);
            let flags = r.u8()?;
            if flags & !FETCH_FLAG_REPORT != 0 {
                return Err(DecodeError::Invalid { what: "fetch answer flags", value: i64::from(flags) }.into());
            }
            let high_watermark = Offset(r.u64()?);
            let log_start = Offset(r.u64()?);
            let diverging = match (read_opt_epoch(r, "diverging_epoch")?, read_opt_offset(r, "diverging_end_offset")?) {
                (None, None) => None,
                (Some(epoch), Some(end)) => Some((epoch, end)),
                (Some(_), None) | (None, Some(_)) => {
                    return Err(DecodeError::Invalid {
                        what: "diverging epoch and end: one without the other",
                        value: -1,
                    }
                    .into());
                }
            };
            let snapshot = r.bytes()?;
            let snapshot = if snapshot.is_empty() {
                None
            } else {
                Some(read_voters_body(Reader::new(snapshot)).map_err(|error| BodyError::Snapshot { entry, error })?)
            };
            let batches = read_batches(&r.bytes()?).map_err(|error| BodyError::Batches { entry, error })?;
            let answer = FetchAnswer {
                error,
                epoch,
                leader,
                fetch_offset,
                report: flags & FETCH_FLAG_REPORT != 0,
                high_watermark,
                log_start,
                diverging,
                snapshot,
                batches,
            };
            Ok((tp, answer))
        })?;
        Ok(FetchResponseFrame { entries })
    }
}

/// Splits `bytes` into whole, checked version 2 batches (header, header
/// CRC, body CRC), each a slice of `bytes` (no copy), reading the record of
/// each control batch. Records of other batches are not checked here: the
/// log's `append_at` does that.
pub fn read_batches(bytes: &Bytes) -> Result<Vec<ReplicaBatch>, BatchesError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let index = out.len();
        let view = validate_batch(&bytes[at..]).map_err(|error| BatchesError::Batch { index, error })?;
        let header = view.header;
        if header.version != BATCH_VERSION {
            return Err(BatchesError::Version { index, version: header.version });
        }
        let control = if header.is_control() {
            Some(read_batch(&view).map_err(|error| BatchesError::Control { index, error })?)
        } else {
            None
        };
        let length = header.batch_length as usize;
        out.push(ReplicaBatch {
            base: header.base_offset,
            end: header.next_offset(),
            epoch: header.leader_epoch,
            control,
            bytes: bytes.slice(at..at + length),
        });
        at += length;
    }
    Ok(out)
}
