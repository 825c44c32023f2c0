//! Control batches (docs/replication.md §3, "Control batches"): a version 2
//! batch with `broker_flags` bit 1 set and one record, whose key is the
//! control type (`u16`) and whose value is the body:
//!
//! ```text
//! LeaderChange (1): version u16 = 0, epoch u32, leader u32, config
//! Voters (2):       version u16 = 0, config
//! config:           voters [node u32, incarnation u64], joint u8,
//!                   if 1: joint [node u32, incarnation u64],
//!                   learners [node u32, incarnation u64]
//! ```
//!
//! The same `Voters` body is a fetch answer's `snapshot`.

use bytes::Bytes;

use super::error::ControlError;
use super::wire::{put_bool, put_set, read_bool, read_set};
use super::{Config, Control};
use crate::batch::{BatchBuilder, BatchView, RecordInput, Stamp, stamp_control};
use crate::codec::{DecodeError, Reader, Writer};
use crate::types::{LeaderEpoch, NodeId, Offset, Timestamp};

/// The control type of a `LeaderChange` record (its key).
pub const LEADER_CHANGE: u16 = 1;
/// The control type of a `Voters` record (its key).
pub const VOTERS: u16 = 2;
/// The body version this build writes and reads.
pub const CONTROL_BODY_VERSION: u16 = 0;

/// The record key of `control`: its type.
#[must_use]
pub fn control_type(control: &Control) -> u16 {
    match control {
        Control::LeaderChange { .. } => LEADER_CHANGE,
        Control::Voters(_) => VOTERS,
    }
}

pub(crate) fn put_config(w: &mut Writer, config: &Config) {
    put_set(w, &config.voters);
    match &config.joint {
        None => put_bool(w, false),
        Some(joint) => {
            put_bool(w, true);
            put_set(w, joint);
        }
    }
    put_set(w, &config.learners);
}

pub(crate) fn read_config(r: &mut Reader) -> Result<Config, DecodeError> {
    let voters = read_set(r, "voters")?;
    let joint = if read_bool(r, "joint")? { Some(read_set(r, "joint voters")?) } else { None };
    let learners = read_set(r, "learners")?;
    Ok(Config { voters, joint, learners })
}

/// The `Voters` body of `config` (a control record's value, or a fetch
/// answer's `snapshot`).
pub(crate) fn put_voters_body(w: &mut Writer, config: &Config) {
    w.u16(CONTROL_BODY_VERSION);
    put_config(w, config);
}

/// The record value of `control` (its key is [`control_type`]).
#[must_use]
pub fn encode_body(control: &Control) -> Vec<u8> {
    let mut w = Writer::new();
    match control {
        Control::LeaderChange { epoch, leader, config } => {
            w.u16(CONTROL_BODY_VERSION);
            w.u32(epoch.0);
            w.u32(leader.0);
            put_config(&mut w, config);
        }
        Control::Voters(config) => put_voters_body(&mut w, config),
    }
    Vec::from(w.into_bytes())
}

/// Reads a control record's value of type `control_type` (its key). The
/// body must be consumed exactly.
pub fn decode_body(control_type: u16, body: &[u8]) -> Result<Control, ControlError> {
    read_body(control_type, Reader::new(Bytes::copy_from_slice(body)))
}

fn read_body(control_type: u16, mut r: Reader) -> Result<Control, ControlError> {
    let control = match control_type {
        LEADER_CHANGE => {
            read_version(&mut r)?;
            let epoch = LeaderEpoch(r.u32()?);
            let leader = NodeId(r.u32()?);
            Control::LeaderChange { epoch, leader, config: read_config(&mut r)? }
        }
        VOTERS => {
            read_version(&mut r)?;
            Control::Voters(read_config(&mut r)?)
        }
        found => return Err(ControlError::UnknownType { found }),
    };
    r.finish()?;
    Ok(control)
}

/// Reads a whole `Voters` body (a fetch answer's `snapshot`).
pub(crate) fn read_voters_body(mut r: Reader) -> Result<Config, ControlError> {
    read_version(&mut r)?;
    let config = read_config(&mut r)?;
    r.finish()?;
    Ok(config)
}

fn read_version(r: &mut Reader) -> Result<(), ControlError> {
    match r.u16()? {
        CONTROL_BODY_VERSION => Ok(()),
        found => Err(ControlError::UnsupportedVersion { found }),
    }
}

/// A whole control batch holding `control`, stamped as the log stores it:
/// at `base`, in `epoch`, appended at `append_time` (also its record's
/// timestamp), with `broker_flags` bit 1 set.
#[must_use]
pub fn build_batch(control: &Control, base: Offset, epoch: LeaderEpoch, append_time: Timestamp) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    let key = control_type(control).to_le_bytes();
    builder.push(RecordInput::new(Some(&key[..]), Some(&encode_body(control)), append_time));
    let mut bytes = builder.build().expect("a control record is far below the batch limits");
    stamp_control(&mut bytes, &Stamp { base_offset: base, leader_epoch: epoch, append_time, log_append_time: false });
    bytes
}

/// The control record of a checked control batch.
pub fn read_batch(view: &BatchView<'_>) -> Result<Control, ControlError> {
    if !view.header.is_control() {
        return Err(ControlError::NotControl);
    }
    let records = view.records().map_err(ControlError::Records)?;
    if records.len() != 1 || view.header.record_count != 1 {
        return Err(ControlError::RecordCount { records: records.len() });
    }
    let record = &records[0];
    let key = record.key.as_ref().ok_or(ControlError::BadKey)?.as_slice();
    let control_type = u16::from_le_bytes(key.try_into().map_err(|_| ControlError::BadKey)?);
    let value = record.value.as_ref().ok_or(ControlError::NoValue)?;
    decode_body(control_type, value.as_slice())
}
