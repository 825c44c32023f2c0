//! The replication frame header (docs/replication.md §4, "Frame header"):
//!
//! ```text
//! length u32 | magic "CRNR" | version u8 | kind u8 | error u16 | request_id u32
//!            | source_node u32 | source_shard u16 | dest_shard u16 | body
//! ```
//!
//! 24 bytes, little-endian. `length` counts the bytes after itself, so it is
//! at least 20. A length below 20 or above the frame limit, a bad magic or
//! another version loses framing ([`FramingLost`]): the connection is
//! closed. Every other problem leaves the stream intact and is answered
//! with a code ([`FrameError::code`]).

use thiserror::Error;

use crate::ErrorCode;
use crate::types::NodeId;

/// `b"CRNR"`.
pub const FRAME_MAGIC: [u8; 4] = *b"CRNR";
pub const FRAME_VERSION: u8 = 1;
/// The `length` prefix.
pub const LENGTH_BYTES: usize = 4;
/// The whole header, the length prefix included.
pub const FRAME_HEADER_BYTES: usize = 24;
/// The smallest `length`: the header after the prefix, no body.
pub const FRAME_LENGTH_MIN: usize = FRAME_HEADER_BYTES - LENGTH_BYTES;
/// The default `replication_frame_bytes_max` (8 MiB): the largest `length`.
pub const FRAME_BYTES_MAX: usize = 8 << 20;
/// Entries in one frame, at most; more is `MALFORMED_REQUEST`.
pub const FRAME_ENTRIES_MAX: usize = 100_000;
/// A response's kind byte is its request's plus this.
pub const RESPONSE_BIT: u8 = 0x80;

/// What a frame carries. A response has the request's kind with
/// [`RESPONSE_BIT`] set; the one-way kinds ([`Kind::is_one_way`]) have none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Handshake = 0x01,
    Fetch = 0x02,
    Vote = 0x03,
    PreVote = 0x04,
    BeginEpoch = 0x05,
    StartElection = 0x06,
    ControllerCall = 0x07,
    FetchSnapshot = 0x08,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Handshake,
        Kind::Fetch,
        Kind::Vote,
        Kind::PreVote,
        Kind::BeginEpoch,
        Kind::StartElection,
        Kind::ControllerCall,
        Kind::FetchSnapshot,
    ];

    #[must_use]
    pub fn from_u8(v: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as u8 == v)
    }

    /// Sent without a response (and with request id 0).
    #[must_use]
    pub fn is_one_way(self) -> bool {
        matches!(self, Kind::BeginEpoch | Kind::StartElection)
    }

    /// The byte on the wire: the kind, plus [`RESPONSE_BIT`] for a response.
    #[must_use]
    pub fn byte(self, response: bool) -> u8 {
        self as u8 | if response { RESPONSE_BIT } else { 0 }
    }

    /// A short name, for logs and metrics.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Kind::Handshake => "handshake",
            Kind::Fetch => "fetch",
            Kind::Vote => "vote",
            Kind::PreVote => "pre_vote",
            Kind::BeginEpoch => "begin_epoch",
            Kind::StartElection => "start_election",
            Kind::ControllerCall => "controller_call",
            Kind::FetchSnapshot => "fetch_snapshot",
        }
    }
}

/// The fixed fields of a frame; `length` is computed when it is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: Kind,
    pub response: bool,
    /// The frame-level error of a response; always `NONE` in requests.
    pub error: ErrorCode,
    /// Echoed by the response; 0 in one-way kinds.
    pub request_id: u32,
    /// Must be the node of the connection's handshake (the transport checks).
    pub source_node: NodeId,
    pub source_shard: u16,
    /// Must be the receiving shard (the transport checks).
    pub dest_shard: u16,
}

/// Framing is lost: nothing tells where the next frame starts, so the
/// connection is closed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FramingLost {
    #[error("frame length {length} is below the {FRAME_LENGTH_MIN}-byte header")]
    TooShort { length: u32 },
    #[error("frame length {length} is above the limit of {frame_bytes_max} bytes")]
    TooLarge { length: u32, frame_bytes_max: usize },
    #[error("bad frame magic {found:02x?}")]
    BadMagic { found: [u8; 4] },
    #[error("frame version {found} is not supported (this build speaks {FRAME_VERSION})")]
    UnsupportedVersion { found: u8 },
    /// The bytes handed to [`FrameHeader::decode`] are not the frame its
    /// length says (a caller that did not cut it with [`split`]).
    #[error("frame length {length} but {available} bytes after the prefix")]
    LengthMismatch { length: u32, available: usize },
}

/// Why a frame header was not taken.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    #[error("framing lost: {0}")]
    FramingLost(#[from] FramingLost),
    #[error("unknown frame kind {kind:#04x}")]
    UnknownKind { kind: u8, request_id: u32 },
    #[error("a {kind:?} request carries frame error {error:?}")]
    ErrorInRequest { kind: Kind, request_id: u32, error: ErrorCode },
    #[error("{kind:?} is one-way: it has no response and request id 0, not {request_id}")]
    OneWay { kind: Kind, response: bool, request_id: u32 },
}

impl FrameError {
    /// Whether the connection must be closed (framing is lost).
    #[must_use]
    pub fn closes_connection(&self) -> bool {
        matches!(self, FrameError::FramingLost(_))
    }

    /// The code a request refused this way is answered with; `None` when
    /// the connection is closed instead.
    #[must_use]
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            FrameError::FramingLost(_) => None,
            FrameError::UnknownKind { .. } => Some(ErrorCode::UNKNOWN_API),
            FrameError::ErrorInRequest { .. } | FrameError::OneWay { .. } => Some(ErrorCode::MALFORMED_REQUEST),
        }
    }

    /// The request id of the refused frame, to answer it by.
    #[must_use]
    pub fn request_id(&self) -> Option<u32> {
        match self {
            FrameError::FramingLost(_) => None,
            FrameError::UnknownKind { request_id, .. }
            | FrameError::ErrorInRequest { request_id, .. }
            | FrameError::OneWay { request_id, .. } => Some(*request_id),
        }
    }
}

/// What [`split`] found at the front of a stream buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// More bytes are needed: at least this many in all.
    Need(usize),
    /// A whole frame is at the front: `buf[..n]`, its length prefix included.
    Frame(usize),
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Cuts the next frame out of a byte stream, checking the length, the
/// magic and the version as soon as their bytes are there, so garbage is
/// refused before a large frame is buffered for it.
pub fn split(buf: &[u8], frame_bytes_max: usize) -> Result<Split, FramingLost> {
    if buf.len() < LENGTH_BYTES {
        return Ok(Split::Need(LENGTH_BYTES));
    }
    let length = u32_at(buf, 0);
    check_length(length, frame_bytes_max)?;
    check_magic_and_version(buf)?;
    let total = LENGTH_BYTES + length as usize;
    if buf.len() < total {
        return Ok(Split::Need(total));
    }
    Ok(Split::Frame(total))
}

fn check_length(length: u32, frame_bytes_max: usize) -> Result<(), FramingLost> {
    if (length as usize) < FRAME_LENGTH_MIN {
        return Err(FramingLost::TooShort { length });
    }
    if length as usize > frame_bytes_max {
        return Err(FramingLost::TooLarge { length, frame_bytes_max });
    }
    Ok(())
}

/// Checks what of the magic and version `buf` holds already.
fn check_magic_and_version(buf: &[u8]) -> Result<(), FramingLost> {
    let magic = &buf[LENGTH_BYTES.min(buf.len())..(LENGTH_BYTES + 4).min(buf.len())];
    if magic != &FRAME_MAGIC[..magic.len()] {
        let mut found = [0u8; 4];
        found[..magic.len()].copy_from_slice(magic);
        return Err(FramingLost::BadMagic { found });
    }
    if let Some(&version) = buf.get(8)
        && version != FRAME_VERSION
    {
        return Err(FramingLost::UnsupportedVersion { found: version });
    }
    Ok(())
}

impl FrameHeader {
    /// A request's header (error `NONE`).
    #[must_use]
    pub fn request(
        kind: Kind,
        request_id: u32,
        source_node: NodeId,
        source_shard: u16,
        dest_shard: u16,
    ) -> FrameHeader {
        FrameHeader { kind, response: false, error: ErrorCode::NONE, request_id, source_node, source_shard, dest_shard }
    }

    /// The header of the response to `request`, sent by `source_node` from
    /// the shard the request was addressed to, back to the one it came from.
    #[must_use]
    pub fn response_to(request: &FrameHeader, error: ErrorCode, source_node: NodeId) -> FrameHeader {
        assert!(!request.response && !request.kind.is_one_way(), "a response answers a two-way request");
        FrameHeader {
            kind: request.kind,
            response: true,
            error,
            request_id: request.request_id,
            source_node,
            source_shard: request.dest_shard,
            dest_shard: request.source_shard,
        }
    }

    /// The 24 header bytes of a frame whose body is `body_bytes` long.
    #[must_use]
    pub fn encode(&self, body_bytes: usize) -> [u8; FRAME_HEADER_BYTES] {
        let length = u32::try_from(FRAME_LENGTH_MIN + body_bytes).expect("frames are far below 4 GiB");
        let mut out = [0u8; FRAME_HEADER_BYTES];
        out[0..4].copy_from_slice(&length.to_le_bytes());
        out[4..8].copy_from_slice(&FRAME_MAGIC);
        out[8] = FRAME_VERSION;
        out[9] = self.kind.byte(self.response);
        out[10..12].copy_from_slice(&self.error.0.to_le_bytes());
        out[12..16].copy_from_slice(&self.request_id.to_le_bytes());
        out[16..20].copy_from_slice(&self.source_node.0.to_le_bytes());
        out[20..22].copy_from_slice(&self.source_shard.to_le_bytes());
        out[22..24].copy_from_slice(&self.dest_shard.to_le_bytes());
        out
    }

    /// Decodes the header of one whole frame (`frame` is the frame as
    /// [`split`] cut it, length prefix included) and checks it: framing
    /// (length against `frame.len()` and `frame_bytes_max`, magic, version),
    /// then the kind, a request's error (0) and the one-way rules.
    pub fn decode(frame: &[u8], frame_bytes_max: usize) -> Result<FrameHeader, FrameError> {
        if frame.len() < LENGTH_BYTES {
            return Err(FramingLost::LengthMismatch { length: 0, available: 0 }.into());
        }
        let length = u32_at(frame, 0);
        check_length(length, frame_bytes_max)?;
        check_magic_and_version(frame)?;
        let available = frame.len() - LENGTH_BYTES;
        if available != length as usize {
            return Err(FramingLost::LengthMismatch { length, available }.into());
        }
        let byte = frame[9];
        let request_id = u32_at(frame, 12);
        let Some(kind) = Kind::from_u8(byte & !RESPONSE_BIT) else {
            return Err(FrameError::UnknownKind { kind: byte, request_id });
        };
        let response = byte & RESPONSE_BIT != 0;
        let error = ErrorCode(u16_at(frame, 10));
        if !response && !error.is_ok() {
            return Err(FrameError::ErrorInRequest { kind, request_id, error });
        }
        if kind.is_one_way() && (response || request_id != 0) {
            return Err(FrameError::OneWay { kind, response, request_id });
        }
        Ok(FrameHeader {
            kind,
            response,
            error,
            request_id,
            source_node: NodeId(u32_at(frame, 16)),
            source_shard: u16_at(frame, 20),
            dest_shard: u16_at(frame, 22),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> FrameHeader {
        FrameHeader::request(Kind::Vote, 9, NodeId(3), 1, 2)
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = header().encode(body.len()).to_vec();
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn a_header_round_trips_and_a_response_swaps_the_shards() {
        let bytes = frame(b"body");
        assert_eq!(split(&bytes, FRAME_BYTES_MAX), Ok(Split::Frame(28)));
        assert_eq!(FrameHeader::decode(&bytes, FRAME_BYTES_MAX), Ok(header()));
        let response = FrameHeader::response_to(&header(), ErrorCode::FENCED_EPOCH, NodeId(5));
        assert_eq!((response.source_shard, response.dest_shard, response.request_id), (2, 1, 9));
        let mut bytes = response.encode(0).to_vec();
        assert_eq!(bytes[9], 0x83);
        assert_eq!(FrameHeader::decode(&bytes, FRAME_BYTES_MAX), Ok(response));
        bytes.push(0);
        assert!(matches!(
            FrameHeader::decode(&bytes, FRAME_BYTES_MAX),
            Err(FrameError::FramingLost(FramingLost::LengthMismatch { length: 20, available: 21 }))
        ));
    }

    #[test]
    fn split_asks_for_the_rest_and_refuses_garbage_early() {
        let bytes = frame(&[0; 100]);
        assert_eq!(split(&bytes[..2], FRAME_BYTES_MAX), Ok(Split::Need(4)));
        assert_eq!(split(&bytes[..50], FRAME_BYTES_MAX), Ok(Split::Need(124)));
        let mut bad = bytes.clone();
        bad[5] = b'X';
        assert_eq!(split(&bad[..6], FRAME_BYTES_MAX), Err(FramingLost::BadMagic { found: *b"CX\0\0" }));
        let mut bad = bytes.clone();
        bad[8] = 2;
        assert_eq!(split(&bad[..9], FRAME_BYTES_MAX), Err(FramingLost::UnsupportedVersion { found: 2 }));
        assert_eq!(split(&19u32.to_le_bytes(), FRAME_BYTES_MAX), Err(FramingLost::TooShort { length: 19 }));
        assert_eq!(split(&bytes, 100), Err(FramingLost::TooLarge { length: 120, frame_bytes_max: 100 }));
    }

    #[test]
    fn lost_framing_closes_and_everything_else_is_answered_with_a_code() {
        let mut bad = frame(&[]);
        bad[4] = b'X';
        let e = FrameHeader::decode(&bad, FRAME_BYTES_MAX).unwrap_err();
        assert!(e.closes_connection());
        assert_eq!(e.code(), None);

        let mut unknown = frame(&[]);
        unknown[9] = 0x09;
        let e = FrameHeader::decode(&unknown, FRAME_BYTES_MAX).unwrap_err();
        assert_eq!(e, FrameError::UnknownKind { kind: 0x09, request_id: 9 });
        assert_eq!((e.code(), e.request_id()), (Some(ErrorCode::UNKNOWN_API), Some(9)));
        assert!(!e.closes_connection());

        let mut errored = frame(&[]);
        errored[10] = 1;
        let e = FrameHeader::decode(&errored, FRAME_BYTES_MAX).unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::MALFORMED_REQUEST));

        for (kind, request_id) in [(0x85u8, 0u32), (0x05, 9)] {
            let mut one_way = frame(&[]);
            one_way[9] = kind;
            one_way[12..16].copy_from_slice(&request_id.to_le_bytes());
            assert!(matches!(FrameHeader::decode(&one_way, FRAME_BYTES_MAX), Err(FrameError::OneWay { .. })));
        }
        let begin = FrameHeader::request(Kind::BeginEpoch, 0, NodeId(1), 0, 0).encode(0);
        assert!(FrameHeader::decode(&begin, FRAME_BYTES_MAX).is_ok());
    }

    #[test]
    fn kinds_are_the_documented_bytes() {
        let bytes: Vec<u8> = Kind::ALL.iter().map(|k| *k as u8).collect();
        assert_eq!(bytes, [1, 2, 3, 4, 5, 6, 7, 8]);
        for k in Kind::ALL {
            assert_eq!(Kind::from_u8(k as u8), Some(k));
            assert_eq!(k.byte(true), k as u8 + 0x80);
        }
        assert_eq!(Kind::from_u8(0), None);
        assert_eq!(Kind::from_u8(9), None);
    }
}
