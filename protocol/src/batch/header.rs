//! The fixed little-endian batch header. Every field has a fixed offset so a
//! reader can check a batch and the broker can patch it without decoding the
//! records; see `docs/format.md` for the byte-by-byte table.

use super::BatchError;
use crate::types::{LeaderEpoch, Offset, ProducerEpoch, ProducerId, Sequence, Timestamp};

/// Bytes of the fixed header in front of the records archive.
pub const BATCH_HEADER_BYTES: usize = 72;
/// `b"CRN\x01"` read as a little-endian u32.
pub const BATCH_MAGIC: u32 = u32::from_le_bytes(*b"CRN\x01");
/// The only batch format version this build reads and writes.
pub const BATCH_VERSION: u16 = 1;
/// The CRC32C covers `[CRC_START, batch_length)`: everything after the CRC field.
pub const CRC_START: usize = 28;

const BASE_OFFSET: usize = 0;
const BATCH_LENGTH: usize = 8;
const LEADER_EPOCH: usize = 12;
const MAGIC: usize = 16;
const VERSION: usize = 20;
const RESERVED_0: usize = 22;
const CRC: usize = 24;
const ATTRIBUTES: usize = 28;
const RESERVED_1: usize = 30;
const LAST_OFFSET_DELTA: usize = 32;
const RECORD_COUNT: usize = 36;
const FIRST_TIMESTAMP: usize = 40;
const MAX_TIMESTAMP: usize = 48;
const PRODUCER_ID: usize = 56;
const PRODUCER_EPOCH: usize = 64;
const RESERVED_2: usize = 66;
const BASE_SEQUENCE: usize = 68;

/// Batch attribute bits. Compression is reserved (bits 0-2 must be zero in
/// version 1); bit 3 says the timestamps were set by the broker at append.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Attributes(pub u16);

impl Attributes {
    pub const LOG_APPEND_TIME: u16 = 1 << 3;
    pub const KNOWN: u16 = Self::LOG_APPEND_TIME;
}

/// The decoded header of one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: Offset,
    /// Bytes of the whole batch, header included.
    pub batch_length: u32,
    pub leader_epoch: LeaderEpoch,
    pub crc: u32,
    pub attributes: Attributes,
    pub last_offset_delta: u32,
    pub record_count: u32,
    pub first_timestamp: Timestamp,
    pub max_timestamp: Timestamp,
    pub producer_id: ProducerId,
    pub producer_epoch: ProducerEpoch,
    pub base_sequence: Sequence,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl BatchHeader {
    /// The offset of the batch's last record.
    #[must_use]
    pub fn last_offset(&self) -> Offset {
        self.base_offset.plus(u64::from(self.last_offset_delta))
    }

    /// The offset right after this batch: where the next batch starts.
    #[must_use]
    pub fn next_offset(&self) -> Offset {
        self.last_offset().next()
    }

    /// Decodes and checks the fixed fields (magic, version, reserved bytes,
    /// attributes, length bounds). It does not check the CRC: see
    /// [`crate::batch::validate_batch`].
    /// The `batch_length` field of the batch starting at `bytes[0]`
    /// (which must hold at least the header), unchecked: a framing hint.
    pub fn batch_length_at(bytes: &[u8]) -> u32 {
        u32_at(bytes, BATCH_LENGTH)
    }

    pub fn decode(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Truncated { needed: BATCH_HEADER_BYTES, available: bytes.len() });
        }
        let magic = u32_at(bytes, MAGIC);
        if magic != BATCH_MAGIC {
            return Err(BatchError::BadMagic { found: magic });
        }
        let version = u16_at(bytes, VERSION);
        if version != BATCH_VERSION {
            return Err(BatchError::UnsupportedVersion { found: version });
        }
        if u16_at(bytes, RESERVED_0) != 0 || u16_at(bytes, RESERVED_1) != 0 || u16_at(bytes, RESERVED_2) != 0 {
            return Err(BatchError::ReservedNotZero);
        }
        let batch_length = u32_at(bytes, BATCH_LENGTH);
        if (batch_length as usize) < BATCH_HEADER_BYTES {
            return Err(BatchError::BadLength { batch_length });
        }
        let attributes = u16_at(bytes, ATTRIBUTES);
        if attributes & !Attributes::KNOWN != 0 {
            return Err(BatchError::UnsupportedAttributes { attributes });
        }
        let last_offset_delta = u32_at(bytes, LAST_OFFSET_DELTA);
        let record_count = u32_at(bytes, RECORD_COUNT);
        if record_count == 0 || record_count > last_offset_delta.saturating_add(1) {
            return Err(BatchError::BadRecordCount { record_count, last_offset_delta });
        }
        let header = BatchHeader {
            base_offset: Offset(u64_at(bytes, BASE_OFFSET)),
            batch_length,
            leader_epoch: LeaderEpoch(u32_at(bytes, LEADER_EPOCH)),
            crc: u32_at(bytes, CRC),
            attributes: Attributes(attributes),
            last_offset_delta,
            record_count,
            first_timestamp: Timestamp(u64_at(bytes, FIRST_TIMESTAMP) as i64),
            max_timestamp: Timestamp(u64_at(bytes, MAX_TIMESTAMP) as i64),
            producer_id: ProducerId(u64_at(bytes, PRODUCER_ID) as i64),
            producer_epoch: ProducerEpoch(u16_at(bytes, PRODUCER_EPOCH) as i16),
            base_sequence: Sequence(u32_at(bytes, BASE_SEQUENCE) as i32),
        };
        if header.max_timestamp < header.first_timestamp {
            return Err(BatchError::BadTimestamps);
        }
        if header.base_offset.0.checked_add(u64::from(last_offset_delta) + 1).is_none() {
            return Err(BatchError::BadOffsets);
        }
        Ok(header)
    }

    /// Writes the header into the first [`BATCH_HEADER_BYTES`] of `out`. The
    /// CRC field is written as stored in `self.crc`; [`super::BatchBuilder`]
    /// computes it after the records are in place.
    pub fn encode(&self, out: &mut [u8]) {
        assert!(out.len() >= BATCH_HEADER_BYTES);
        let out = &mut out[..BATCH_HEADER_BYTES];
        out.fill(0);
        out[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&self.base_offset.0.to_le_bytes());
        out[BATCH_LENGTH..BATCH_LENGTH + 4].copy_from_slice(&self.batch_length.to_le_bytes());
        out[LEADER_EPOCH..LEADER_EPOCH + 4].copy_from_slice(&self.leader_epoch.0.to_le_bytes());
        out[MAGIC..MAGIC + 4].copy_from_slice(&BATCH_MAGIC.to_le_bytes());
        out[VERSION..VERSION + 2].copy_from_slice(&BATCH_VERSION.to_le_bytes());
        out[CRC..CRC + 4].copy_from_slice(&self.crc.to_le_bytes());
        out[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&self.attributes.0.to_le_bytes());
        out[LAST_OFFSET_DELTA..LAST_OFFSET_DELTA + 4].copy_from_slice(&self.last_offset_delta.to_le_bytes());
        out[RECORD_COUNT..RECORD_COUNT + 4].copy_from_slice(&self.record_count.to_le_bytes());
        out[FIRST_TIMESTAMP..FIRST_TIMESTAMP + 8].copy_from_slice(&self.first_timestamp.0.to_le_bytes());
        out[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&self.max_timestamp.0.to_le_bytes());
        out[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&self.producer_id.0.to_le_bytes());
        out[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&self.producer_epoch.0.to_le_bytes());
        out[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&self.base_sequence.0.to_le_bytes());
    }
}

/// Reads the CRC that is stored in a batch's header.
pub(crate) fn stored_crc(bytes: &[u8]) -> u32 {
    u32_at(bytes, CRC)
}

/// Stores a CRC into a batch's header.
pub(crate) fn store_crc(bytes: &mut [u8], crc: u32) {
    bytes[CRC..CRC + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Assigns the batch its offsets. The field lies outside the CRC, so the
/// producer's checksum stays valid end to end.
pub fn patch_base_offset(bytes: &mut [u8], base_offset: Offset) {
    assert!(bytes.len() >= BATCH_HEADER_BYTES);
    bytes[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&base_offset.0.to_le_bytes());
}

/// Stamps the epoch of the leader that appended the batch (outside the CRC).
pub fn patch_leader_epoch(bytes: &mut [u8], epoch: LeaderEpoch) {
    assert!(bytes.len() >= BATCH_HEADER_BYTES);
    bytes[LEADER_EPOCH..LEADER_EPOCH + 4].copy_from_slice(&epoch.0.to_le_bytes());
}
