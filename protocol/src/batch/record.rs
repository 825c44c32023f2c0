//! The records inside a batch, as an rkyv archive. Times and offsets are
//! deltas from the header so a batch's records are position independent.

use rkyv::{Archive, Deserialize, Serialize};

/// One event. `value: None` is a tombstone: "this key is deleted".
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Offset of this record minus the batch's base offset.
    pub offset_delta: u32,
    /// Timestamp of this record minus the batch's first timestamp, in ms.
    pub timestamp_delta: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<RecordHeader>,
}

/// An application header of a record.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    pub key: String,
    pub value: Vec<u8>,
}
