//! Frames: how requests and responses are cut out of a TCP stream.
//!
//! ```text
//! request:  length u32 | api_key u16 | api_version u16 | request_id u32 | body
//! response: length u32 | request_id u32 | error_code u16 | body
//! ```
//!
//! `length` counts the bytes after itself. Responses carry the request's id,
//! so many requests can be in flight on one connection and answered in any
//! order. A request-level error (`error_code` ≠ 0) has a UTF-8 message as its
//! body (`u16` length, bytes); per-partition errors sit inside the body.

use bytes::Bytes;
use thiserror::Error;

use crate::ErrorCode;
use crate::codec::{Reader, Writer};

pub const LENGTH_BYTES: usize = 4;
pub const REQUEST_HEADER_BYTES: usize = 8;
pub const RESPONSE_HEADER_BYTES: usize = 6;

/// The protocol generation a handshake names; bumped only for changes that
/// per-API versions cannot express.
pub const PROTOCOL_VERSION: u16 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    pub api_key: u16,
    pub api_version: u16,
    pub request_id: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHeader {
    pub request_id: u32,
    pub error: ErrorCode,
}

/// Framing is lost: the reader cannot know where the next frame starts.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame length {length} is shorter than the {min}-byte header")]
    TooShort { length: u32, min: usize },
}

impl RequestHeader {
    /// Splits a request frame (without its length prefix) into header and body.
    pub fn decode(frame: &Bytes) -> Result<(RequestHeader, Bytes), FrameError> {
        if frame.len() < REQUEST_HEADER_BYTES {
            return Err(FrameError::TooShort { length: frame.len() as u32, min: REQUEST_HEADER_BYTES });
        }
        let header = RequestHeader {
            api_key: u16::from_le_bytes([frame[0], frame[1]]),
            api_version: u16::from_le_bytes([frame[2], frame[3]]),
            request_id: u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes")),
        };
        Ok((header, frame.slice(REQUEST_HEADER_BYTES..)))
    }

    /// Starts a request frame: the length is patched by [`finish_frame`].
    pub fn encode(&self) -> Writer {
        let mut w = Writer::new();
        w.u32(0);
        w.u16(self.api_key);
        w.u16(self.api_version);
        w.u32(self.request_id);
        w
    }
}

impl ResponseHeader {
    pub fn decode(frame: &Bytes) -> Result<(ResponseHeader, Bytes), FrameError> {
        if frame.len() < RESPONSE_HEADER_BYTES {
            return Err(FrameError::TooShort { length: frame.len() as u32, min: RESPONSE_HEADER_BYTES });
        }
        let header = ResponseHeader {
            request_id: u32::from_le_bytes(frame[0..4].try_into().expect("4 bytes")),
            error: ErrorCode(u16::from_le_bytes([frame[4], frame[5]])),
        };
        Ok((header, frame.slice(RESPONSE_HEADER_BYTES..)))
    }

    /// Starts a response frame: the length is patched by [`finish_frame`].
    pub fn encode(&self) -> Writer {
        let mut w = Writer::new();
        w.u32(0);
        w.u32(self.request_id);
        w.u16(self.error.0);
        w
    }
}

/// Patches the length prefix of a frame started by `encode` and returns its pieces.
pub fn finish_frame(mut w: Writer) -> Vec<Bytes> {
    let length = w.len() - LENGTH_BYTES;
    w.patch_u32(0, u32::try_from(length).expect("frames are far below 4 GiB"));
    w.finish()
}

/// A complete error response: the header and a one-line message.
pub fn error_response(request_id: u32, error: ErrorCode, message: &str) -> Vec<Bytes> {
    assert!(!error.is_ok());
    let mut w = ResponseHeader { request_id, error }.encode();
    let message = truncate_utf8(message, 1024);
    w.string(message);
    finish_frame(w)
}

/// Reads the message of an error response body.
pub fn decode_error_message(body: Bytes) -> String {
    Reader::new(body).string().unwrap_or_default()
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Cuts frames out of a byte stream: the incremental decoder both ends use.
/// `frame_bytes_max` bounds what it will buffer for one frame.
#[derive(Debug)]
pub struct FrameDecoder {
    pub frame_bytes_max: usize,
}

/// One step of [`FrameDecoder::decode`].
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole frame is at the front: `buf[4..used]` (after the length prefix).
    Frame {
        used: usize,
    },
    /// More bytes are needed; at least this many in all.
    Need(usize),
    /// A frame longer than the limit: the caller skips `length` bytes after
    /// the 4-byte prefix (framing is intact) and answers with an error.
    TooLarge {
        length: usize,
    },
    Lost(FrameError),
}

impl FrameDecoder {
    pub fn decode(&self, buf: &[u8], header_bytes: usize) -> Decoded {
        if buf.len() < LENGTH_BYTES {
            return Decoded::Need(LENGTH_BYTES);
        }
        let length = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes"));
        if (length as usize) < header_bytes {
            return Decoded::Lost(FrameError::TooShort { length, min: header_bytes });
        }
        if length as usize > self.frame_bytes_max {
            return Decoded::TooLarge { length: length as usize };
        }
        let total = LENGTH_BYTES + length as usize;
        if buf.len() < total {
            return Decoded::Need(total);
        }
        Decoded::Frame { used: total }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn concat(pieces: &[Bytes]) -> Bytes {
        pieces.iter().flat_map(|p| p.iter().copied()).collect::<Vec<u8>>().into()
    }

    #[test]
    fn a_request_frame_round_trips() {
        let header = RequestHeader { api_key: 5, api_version: 0, request_id: 77 };
        let mut w = header.encode();
        w.raw(b"body");
        let bytes = concat(&finish_frame(w));
        let d = FrameDecoder { frame_bytes_max: 1 << 20 };
        let Decoded::Frame { used } = d.decode(&bytes, REQUEST_HEADER_BYTES) else { panic!() };
        assert_eq!(used, bytes.len());
        let frame = bytes.slice(4..used);
        let (h, body) = RequestHeader::decode(&frame).unwrap();
        assert_eq!(h, header);
        assert_eq!(&body[..], b"body");
    }

    #[test]
    fn a_partial_frame_asks_for_the_rest() {
        let mut w = RequestHeader { api_key: 1, api_version: 0, request_id: 1 }.encode();
        w.raw(&[0; 100]);
        let bytes = concat(&finish_frame(w));
        let d = FrameDecoder { frame_bytes_max: 1 << 20 };
        assert_eq!(d.decode(&bytes.slice(..50), REQUEST_HEADER_BYTES), Decoded::Need(bytes.len()));
        assert_eq!(d.decode(&bytes.slice(..2), REQUEST_HEADER_BYTES), Decoded::Need(4));
    }

    #[test]
    fn a_length_below_the_header_loses_framing_and_an_oversized_one_does_not() {
        let d = FrameDecoder { frame_bytes_max: 64 };
        let short = Bytes::from(3u32.to_le_bytes().to_vec());
        assert!(matches!(d.decode(&short, REQUEST_HEADER_BYTES), Decoded::Lost(_)));
        let big = Bytes::from(65u32.to_le_bytes().to_vec());
        assert_eq!(d.decode(&big, REQUEST_HEADER_BYTES), Decoded::TooLarge { length: 65 });
    }

    #[test]
    fn an_error_response_carries_its_message() {
        let bytes = concat(&error_response(9, ErrorCode::UNKNOWN_TOPIC, "no topic \"x\""));
        let (h, body) = ResponseHeader::decode(&bytes.slice(4..)).unwrap();
        assert_eq!(h, ResponseHeader { request_id: 9, error: ErrorCode::UNKNOWN_TOPIC });
        assert_eq!(decode_error_message(body), "no topic \"x\"");
    }
}
