//! The fixed little-endian batch header. Every field has a fixed offset so a
//! reader can check a batch and the broker can stamp it without decoding the
//! records; see `docs/format.md` for the byte-by-byte tables of both versions.
//!
//! Version 2 splits the header in two checksummed parts. Bytes 0..40 are
//! the *envelope*: what the broker stamps when it appends (base offset,
//! leader epoch, append time, broker flags) and what frames the batch
//! (length, magic, version, payload format), then the body CRC (at 32) and
//! the header CRC (at 36, over bytes 0..36). Everything from byte 40 on is the producer's,
//! covered by the body CRC, which nobody ever recomputes. So a stamp costs a
//! CRC over 36 bytes, and a damaged base offset is caught by a checksum, not
//! only by offset continuity (which logs with gaps cannot rely on).
//!
//! Version 1 (72 bytes, no header CRC) is still read: logs written before
//! version 2 keep working, and so do producers that build version 1.

use super::BatchError;
use crate::types::{LeaderEpoch, Offset, ProducerEpoch, ProducerId, Sequence, Timestamp};

/// Bytes of the header this build writes (version 2), in front of the payload.
pub const BATCH_HEADER_BYTES: usize = 80;
/// Bytes of a version 1 header.
pub const BATCH_HEADER_BYTES_V1: usize = 72;
/// The shortest header of any version: a reader needs at least this much to
/// tell a batch's version and length.
pub const BATCH_HEADER_BYTES_MIN: usize = BATCH_HEADER_BYTES_V1;
/// `b"CRN\x01"` read as a little-endian u32 (every version).
pub const BATCH_MAGIC: u32 = u32::from_le_bytes(*b"CRN\x01");
/// The batch format version this build writes.
pub const BATCH_VERSION: u16 = 2;
/// The oldest version this build reads.
pub const BATCH_VERSION_V1: u16 = 1;

// Shared by both versions: a reader finds the length and the version here
// before it knows which layout follows.
const BASE_OFFSET: usize = 0;
const BATCH_LENGTH: usize = 8;
const LEADER_EPOCH: usize = 12;
const MAGIC: usize = 16;
const VERSION: usize = 20;

/// Version 2 field offsets.
mod v2 {
    pub const PAYLOAD_FORMAT: usize = 22;
    pub const BROKER_FLAGS: usize = 23;
    pub const APPEND_TIME: usize = 24;
    pub const CRC: usize = 32;
    pub const HEADER_CRC: usize = 36;
    /// The header CRC covers `[0, HEADER_CRC_END)`: the envelope and the body CRC.
    pub const HEADER_CRC_END: usize = 36;
    /// The body CRC covers `[CRC_START, batch_length)`.
    pub const CRC_START: usize = 40;
    pub const ATTRIBUTES: usize = 40;
    pub const PRODUCER_EPOCH: usize = 42;
    pub const LAST_OFFSET_DELTA: usize = 44;
    pub const RECORD_COUNT: usize = 48;
    pub const BASE_SEQUENCE: usize = 52;
    pub const FIRST_TIMESTAMP: usize = 56;
    pub const MAX_TIMESTAMP: usize = 64;
    pub const PRODUCER_ID: usize = 72;
}

/// Version 1 field offsets.
mod v1 {
    pub const RESERVED_0: usize = 22;
    pub const CRC: usize = 24;
    /// The CRC covers `[CRC_START, batch_length)`: everything after the CRC field.
    pub const CRC_START: usize = 28;
    pub const ATTRIBUTES: usize = 28;
    pub const RESERVED_1: usize = 30;
    pub const LAST_OFFSET_DELTA: usize = 32;
    pub const RECORD_COUNT: usize = 36;
    pub const FIRST_TIMESTAMP: usize = 40;
    pub const MAX_TIMESTAMP: usize = 48;
    pub const PRODUCER_ID: usize = 56;
    pub const PRODUCER_EPOCH: usize = 64;
    pub const RESERVED_2: usize = 66;
    pub const BASE_SEQUENCE: usize = 68;
}

/// Batch attribute bits, set by the producer (inside the body CRC).
/// Compression (bits 0-2) is reserved and must be zero: a Cairn payload is
/// never compressed as a whole (see ADR 9). In version 1, bit 3 said the
/// timestamps were log-append time; version 2 moved that to [`BrokerFlags`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Attributes(pub u16);

impl Attributes {
    pub const LOG_APPEND_TIME_V1: u16 = 1 << 3;
    pub const KNOWN_V1: u16 = Self::LOG_APPEND_TIME_V1;
    pub const KNOWN: u16 = 0;
}

/// Flags the broker stamps at append (version 2, in the header CRC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BrokerFlags(pub u8);

impl BrokerFlags {
    /// Every record's timestamp is the batch's append time
    /// (`message.timestamp.type = LogAppendTime`).
    pub const LOG_APPEND_TIME: u8 = 1 << 0;
    /// A control batch of replication (docs/replication.md §3): one record
    /// whose key is the control type, never served to clients. Set only by
    /// [`stamp_control`], never by [`stamp`], so a producer cannot make one.
    pub const CONTROL: u8 = 1 << 1;
    /// Every bit this build reads; a batch with any other is refused
    /// ([`BatchError::UnsupportedFlags`]).
    pub const KNOWN: u8 = Self::LOG_APPEND_TIME | Self::CONTROL;

    #[must_use]
    pub fn log_append_time(self) -> bool {
        self.0 & Self::LOG_APPEND_TIME != 0
    }

    #[must_use]
    pub fn control(self) -> bool {
        self.0 & Self::CONTROL != 0
    }
}

/// `broker_flags` bit 1: a control batch ([`BrokerFlags::CONTROL`]).
pub const BROKER_FLAG_CONTROL: u8 = BrokerFlags::CONTROL;

/// What follows the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PayloadFormat {
    /// An rkyv archive of `Vec<Record>` (the native format).
    #[default]
    Cairn,
    /// A Kafka `RecordBatch` (magic 2), possibly compressed, stored as the
    /// Kafka producer sent it. Reserved for the Kafka front end (ADR 9):
    /// this build refuses it.
    Kafka,
}

impl PayloadFormat {
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            PayloadFormat::Cairn => 0,
            PayloadFormat::Kafka => 1,
        }
    }
}

/// The decoded header of one batch, of either version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub version: u16,
    pub base_offset: Offset,
    /// Bytes of the whole batch, header included.
    pub batch_length: u32,
    pub leader_epoch: LeaderEpoch,
    pub payload: PayloadFormat,
    pub broker_flags: BrokerFlags,
    /// When the leader appended the batch (its clock, ms since the Unix
    /// epoch); `Timestamp(-1)` before it was appended and in version 1.
    pub append_time: Timestamp,
    /// The body CRC32C, as stored.
    pub crc: u32,
    /// The header CRC32C (version 2), as stored; 0 in version 1.
    pub header_crc: u32,
    pub attributes: Attributes,
    pub last_offset_delta: u32,
    pub record_count: u32,
    pub first_timestamp: Timestamp,
    pub max_timestamp: Timestamp,
    pub producer_id: ProducerId,
    pub producer_epoch: ProducerEpoch,
    pub base_sequence: Sequence,
}

/// `append_time` of a batch that no log has stamped yet.
pub const NOT_APPENDED: Timestamp = Timestamp(-1);

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn put(out: &mut [u8], at: usize, bytes: &[u8]) {
    out[at..at + bytes.len()].copy_from_slice(bytes);
}

/// The header size of a format version; `None` for versions this build does not read.
#[must_use]
pub fn header_bytes_of(version: u16) -> Option<usize> {
    match version {
        BATCH_VERSION_V1 => Some(BATCH_HEADER_BYTES_V1),
        BATCH_VERSION => Some(BATCH_HEADER_BYTES),
        _ => None,
    }
}

impl BatchHeader {
    /// Bytes of this batch's header: where its payload starts.
    #[must_use]
    pub fn header_bytes(&self) -> usize {
        header_bytes_of(self.version).expect("decoded headers have a known version")
    }

    /// Where the body CRC starts.
    #[must_use]
    pub fn crc_start(&self) -> usize {
        if self.version == BATCH_VERSION_V1 { v1::CRC_START } else { v2::CRC_START }
    }

    /// The offset of the batch's last record.
    #[must_use]
    pub fn last_offset(&self) -> Offset {
        self.base_offset.plus(u64::from(self.last_offset_delta))
    }

    /// The offset right after this batch: no later batch starts below it.
    #[must_use]
    pub fn next_offset(&self) -> Offset {
        self.last_offset().next()
    }

    /// Whether this is a control batch of replication (version 2 only).
    #[must_use]
    pub fn is_control(&self) -> bool {
        self.version == BATCH_VERSION && self.broker_flags.control()
    }

    /// Whether every record's timestamp is the append time.
    #[must_use]
    pub fn log_append_time(&self) -> bool {
        if self.version == BATCH_VERSION_V1 {
            self.attributes.0 & Attributes::LOG_APPEND_TIME_V1 != 0
        } else {
            self.broker_flags.log_append_time()
        }
    }

    /// The timestamp a reader gives the record with `timestamp_delta`.
    #[must_use]
    pub fn record_timestamp(&self, timestamp_delta: i64) -> Timestamp {
        if self.log_append_time() && self.version != BATCH_VERSION_V1 {
            self.append_time
        } else {
            Timestamp(self.first_timestamp.0.saturating_add(timestamp_delta))
        }
    }

    /// The largest timestamp a reader sees in the batch (for time indexes).
    #[must_use]
    pub fn effective_max_timestamp(&self) -> Timestamp {
        if self.log_append_time() && self.version != BATCH_VERSION_V1 { self.append_time } else { self.max_timestamp }
    }

    /// The `batch_length` field of the batch starting at `bytes[0]`
    /// (which must hold at least [`BATCH_HEADER_BYTES_MIN`]), unchecked: a framing hint.
    #[must_use]
    pub fn batch_length_at(bytes: &[u8]) -> u32 {
        u32_at(bytes, BATCH_LENGTH)
    }

    /// Decodes and checks the fixed fields (magic, version, reserved bytes,
    /// attributes, flags, length bounds) and, in version 2, the header CRC.
    /// It does not check the body CRC: see [`crate::batch::validate_batch`].
    pub fn decode(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        if bytes.len() < VERSION + 2 {
            return Err(BatchError::Truncated { needed: BATCH_HEADER_BYTES_MIN, available: bytes.len() });
        }
        let magic = u32_at(bytes, MAGIC);
        if magic != BATCH_MAGIC {
            return Err(BatchError::BadMagic { found: magic });
        }
        let version = u16_at(bytes, VERSION);
        let Some(header_bytes) = header_bytes_of(version) else {
            // Versions after 2 keep the version 2 envelope (docs/format.md):
            // a header CRC at 36 over bytes 0..36 that matches says this is
            // an intact batch of a newer format, not a torn one.
            let sealed = version > BATCH_VERSION
                && bytes.len() >= v2::HEADER_CRC + 4
                && u32_at(bytes, v2::HEADER_CRC) == crc32c::crc32c(&bytes[..v2::HEADER_CRC_END]);
            return Err(if sealed {
                BatchError::NewerVersion { found: version }
            } else {
                BatchError::UnsupportedVersion { found: version }
            });
        };
        if bytes.len() < header_bytes {
            return Err(BatchError::Truncated { needed: header_bytes, available: bytes.len() });
        }
        let header = if version == BATCH_VERSION_V1 { Self::decode_v1(bytes)? } else { Self::decode_v2(bytes)? };
        if (header.batch_length as usize) < header_bytes {
            return Err(BatchError::BadLength { batch_length: header.batch_length });
        }
        // No records only in a version 2 batch compaction emptied: it keeps
        // the offsets it covered, so its segment still ends where it ended.
        let empty_refused = header.record_count == 0 && version == BATCH_VERSION_V1;
        if empty_refused || header.record_count > header.last_offset_delta.saturating_add(1) {
            return Err(BatchError::BadRecordCount {
                record_count: header.record_count,
                last_offset_delta: header.last_offset_delta,
            });
        }
        if header.max_timestamp < header.first_timestamp {
            return Err(BatchError::BadTimestamps);
        }
        if header.base_offset.0.checked_add(u64::from(header.last_offset_delta) + 1).is_none() {
            return Err(BatchError::BadOffsets);
        }
        Ok(header)
    }

    fn decode_v2(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        let stored = u32_at(bytes, v2::HEADER_CRC);
        let computed = crc32c::crc32c(&bytes[..v2::HEADER_CRC_END]);
        if stored != computed {
            return Err(BatchError::HeaderCrcMismatch { stored, computed });
        }
        let payload = match bytes[v2::PAYLOAD_FORMAT] {
            0 => PayloadFormat::Cairn,
            // Reserved for the Kafka front end (ADR 9): not stored yet.
            f => return Err(BatchError::UnsupportedPayload { format: f }),
        };
        let flags = bytes[v2::BROKER_FLAGS];
        if flags & !BrokerFlags::KNOWN != 0 {
            return Err(BatchError::UnsupportedFlags { flags });
        }
        let attributes = u16_at(bytes, v2::ATTRIBUTES);
        if attributes & !Attributes::KNOWN != 0 {
            return Err(BatchError::UnsupportedAttributes { attributes });
        }
        Ok(BatchHeader {
            version: BATCH_VERSION,
            base_offset: Offset(u64_at(bytes, BASE_OFFSET)),
            batch_length: u32_at(bytes, BATCH_LENGTH),
            leader_epoch: LeaderEpoch(u32_at(bytes, LEADER_EPOCH)),
            payload,
            broker_flags: BrokerFlags(flags),
            append_time: Timestamp(u64_at(bytes, v2::APPEND_TIME) as i64),
            crc: u32_at(bytes, v2::CRC),
            header_crc: stored,
            attributes: Attributes(attributes),
            last_offset_delta: u32_at(bytes, v2::LAST_OFFSET_DELTA),
            record_count: u32_at(bytes, v2::RECORD_COUNT),
            first_timestamp: Timestamp(u64_at(bytes, v2::FIRST_TIMESTAMP) as i64),
            max_timestamp: Timestamp(u64_at(bytes, v2::MAX_TIMESTAMP) as i64),
            producer_id: ProducerId(u64_at(bytes, v2::PRODUCER_ID) as i64),
            producer_epoch: ProducerEpoch(u16_at(bytes, v2::PRODUCER_EPOCH) as i16),
            base_sequence: Sequence(u32_at(bytes, v2::BASE_SEQUENCE) as i32),
        })
    }

    fn decode_v1(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        if u16_at(bytes, v1::RESERVED_0) != 0
            || u16_at(bytes, v1::RESERVED_1) != 0
            || u16_at(bytes, v1::RESERVED_2) != 0
        {
            return Err(BatchError::ReservedNotZero);
        }
        let attributes = u16_at(bytes, v1::ATTRIBUTES);
        if attributes & !Attributes::KNOWN_V1 != 0 {
            return Err(BatchError::UnsupportedAttributes { attributes });
        }
        Ok(BatchHeader {
            version: BATCH_VERSION_V1,
            base_offset: Offset(u64_at(bytes, BASE_OFFSET)),
            batch_length: u32_at(bytes, BATCH_LENGTH),
            leader_epoch: LeaderEpoch(u32_at(bytes, LEADER_EPOCH)),
            payload: PayloadFormat::Cairn,
            broker_flags: BrokerFlags::default(),
            append_time: NOT_APPENDED,
            crc: u32_at(bytes, v1::CRC),
            header_crc: 0,
            attributes: Attributes(attributes),
            last_offset_delta: u32_at(bytes, v1::LAST_OFFSET_DELTA),
            record_count: u32_at(bytes, v1::RECORD_COUNT),
            first_timestamp: Timestamp(u64_at(bytes, v1::FIRST_TIMESTAMP) as i64),
            max_timestamp: Timestamp(u64_at(bytes, v1::MAX_TIMESTAMP) as i64),
            producer_id: ProducerId(u64_at(bytes, v1::PRODUCER_ID) as i64),
            producer_epoch: ProducerEpoch(u16_at(bytes, v1::PRODUCER_EPOCH) as i16),
            base_sequence: Sequence(u32_at(bytes, v1::BASE_SEQUENCE) as i32),
        })
    }

    /// Writes the header into the first [`BatchHeader::header_bytes`] of
    /// `out` in its version's layout. The CRC fields are written as stored
    /// in `self`: [`super::BatchBuilder`] computes them once the payload is
    /// in place ([`seal`]).
    pub fn encode(&self, out: &mut [u8]) {
        let len = self.header_bytes();
        assert!(out.len() >= len);
        let out = &mut out[..len];
        out.fill(0);
        put(out, BASE_OFFSET, &self.base_offset.0.to_le_bytes());
        put(out, BATCH_LENGTH, &self.batch_length.to_le_bytes());
        put(out, LEADER_EPOCH, &self.leader_epoch.0.to_le_bytes());
        put(out, MAGIC, &BATCH_MAGIC.to_le_bytes());
        put(out, VERSION, &self.version.to_le_bytes());
        if self.version == BATCH_VERSION_V1 {
            put(out, v1::CRC, &self.crc.to_le_bytes());
            put(out, v1::ATTRIBUTES, &self.attributes.0.to_le_bytes());
            put(out, v1::LAST_OFFSET_DELTA, &self.last_offset_delta.to_le_bytes());
            put(out, v1::RECORD_COUNT, &self.record_count.to_le_bytes());
            put(out, v1::FIRST_TIMESTAMP, &self.first_timestamp.0.to_le_bytes());
            put(out, v1::MAX_TIMESTAMP, &self.max_timestamp.0.to_le_bytes());
            put(out, v1::PRODUCER_ID, &self.producer_id.0.to_le_bytes());
            put(out, v1::PRODUCER_EPOCH, &self.producer_epoch.0.to_le_bytes());
            put(out, v1::BASE_SEQUENCE, &self.base_sequence.0.to_le_bytes());
        } else {
            out[v2::PAYLOAD_FORMAT] = self.payload.code();
            out[v2::BROKER_FLAGS] = self.broker_flags.0;
            put(out, v2::APPEND_TIME, &self.append_time.0.to_le_bytes());
            put(out, v2::CRC, &self.crc.to_le_bytes());
            put(out, v2::HEADER_CRC, &self.header_crc.to_le_bytes());
            put(out, v2::ATTRIBUTES, &self.attributes.0.to_le_bytes());
            put(out, v2::PRODUCER_EPOCH, &self.producer_epoch.0.to_le_bytes());
            put(out, v2::LAST_OFFSET_DELTA, &self.last_offset_delta.to_le_bytes());
            put(out, v2::RECORD_COUNT, &self.record_count.to_le_bytes());
            put(out, v2::BASE_SEQUENCE, &self.base_sequence.0.to_le_bytes());
            put(out, v2::FIRST_TIMESTAMP, &self.first_timestamp.0.to_le_bytes());
            put(out, v2::MAX_TIMESTAMP, &self.max_timestamp.0.to_le_bytes());
            put(out, v2::PRODUCER_ID, &self.producer_id.0.to_le_bytes());
        }
    }
}

/// The body CRC stored in a batch's header (either version).
pub(crate) fn stored_crc(bytes: &[u8], version: u16) -> u32 {
    u32_at(bytes, if version == BATCH_VERSION_V1 { v1::CRC } else { v2::CRC })
}

/// Computes and stores both CRCs of a whole encoded batch: the body CRC
/// (producers, once) and, in version 2, the header CRC after it.
pub(crate) fn seal(bytes: &mut [u8], version: u16) {
    if version == BATCH_VERSION_V1 {
        let crc = crc32c::crc32c(&bytes[v1::CRC_START..]);
        put(bytes, v1::CRC, &crc.to_le_bytes());
    } else {
        let crc = crc32c::crc32c(&bytes[v2::CRC_START..]);
        put(bytes, v2::CRC, &crc.to_le_bytes());
        reseal_header(bytes);
    }
}

/// Recomputes the version 2 header CRC after envelope fields changed.
fn reseal_header(bytes: &mut [u8]) {
    let crc = crc32c::crc32c(&bytes[..v2::HEADER_CRC_END]);
    put(bytes, v2::HEADER_CRC, &crc.to_le_bytes());
}

/// What a log stamps on a batch when it appends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub base_offset: Offset,
    pub leader_epoch: LeaderEpoch,
    /// The leader's clock at append (version 2 only).
    pub append_time: Timestamp,
    /// `message.timestamp.type = LogAppendTime` (version 2 only: a version 1
    /// batch keeps its producer's timestamps).
    pub log_append_time: bool,
}

/// Stamps a checked batch for the log: base offset and leader epoch (both
/// versions) and, in version 2, append time and flags, then the header CRC.
/// The body and its CRC stay as the producer made them.
pub fn stamp(bytes: &mut [u8], stamp: &Stamp) {
    assert!(bytes.len() >= BATCH_HEADER_BYTES_MIN);
    put(bytes, BASE_OFFSET, &stamp.base_offset.0.to_le_bytes());
    put(bytes, LEADER_EPOCH, &stamp.leader_epoch.0.to_le_bytes());
    if u16_at(bytes, VERSION) == BATCH_VERSION {
        assert!(bytes.len() >= BATCH_HEADER_BYTES);
        put(bytes, v2::APPEND_TIME, &stamp.append_time.0.to_le_bytes());
        bytes[v2::BROKER_FLAGS] = if stamp.log_append_time { BrokerFlags::LOG_APPEND_TIME } else { 0 };
        reseal_header(bytes);
    }
}

/// Stamps a version 2 batch as [`stamp`] does and marks it as a control
/// batch ([`BrokerFlags::CONTROL`]): for control batches the broker builds
/// itself (`replica::control::build_batch`), never for a producer's.
pub fn stamp_control(bytes: &mut [u8], stamp: &Stamp) {
    assert!(bytes.len() >= BATCH_HEADER_BYTES && u16_at(bytes, VERSION) == BATCH_VERSION, "a version 2 batch");
    put(bytes, BASE_OFFSET, &stamp.base_offset.0.to_le_bytes());
    put(bytes, LEADER_EPOCH, &stamp.leader_epoch.0.to_le_bytes());
    put(bytes, v2::APPEND_TIME, &stamp.append_time.0.to_le_bytes());
    let time = if stamp.log_append_time { BrokerFlags::LOG_APPEND_TIME } else { 0 };
    bytes[v2::BROKER_FLAGS] = time | BrokerFlags::CONTROL;
    reseal_header(bytes);
}

/// Sets only the base offset (and, in version 2, the header CRC): for
/// tests and tools that place a batch by hand.
pub fn patch_base_offset(bytes: &mut [u8], base_offset: Offset) {
    assert!(bytes.len() >= BATCH_HEADER_BYTES_MIN);
    put(bytes, BASE_OFFSET, &base_offset.0.to_le_bytes());
    if u16_at(bytes, VERSION) == BATCH_VERSION {
        reseal_header(bytes);
    }
}
