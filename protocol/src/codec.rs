//! The primitive encodings every request and response is made of: fixed-width
//! little-endian integers (like the batch header), strings with a `u16` length
//! and byte strings and arrays with a `u32` length. Decoding never trusts a
//! length: every read is bounds-checked and every array count is capped by
//! what the remaining bytes could hold, so a hostile frame cannot make the
//! decoder allocate more than the frame itself.

use bytes::{BufMut, Bytes};
use thiserror::Error;

/// Why a frame body could not be decoded. Framing itself is intact when this
/// is returned: the next frame can still be read.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("body truncated: {needed} more bytes needed at byte {at}")]
    Truncated { at: usize, needed: usize },
    #[error("string at byte {at} is not UTF-8")]
    InvalidUtf8 { at: usize },
    #[error("{what}: {count} entries at byte {at} cannot fit in the {remaining} bytes left")]
    CountTooLarge { what: &'static str, count: u32, at: usize, remaining: usize },
    #[error("{bytes} unexpected bytes after the body")]
    Trailing { bytes: usize },
    #[error("invalid {what}: {value}")]
    Invalid { what: &'static str, value: i64 },
}

/// Reads one frame body. Byte strings are returned as slices of the frame
/// (`Bytes`), so a produced batch is never copied by decoding.
pub struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    pub fn new(buf: Bytes) -> Reader {
        Reader { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated { at: self.pos, needed: n - self.remaining() });
        }
        let slice = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    /// A `u16` length, then that many bytes of UTF-8.
    pub fn string(&mut self) -> Result<String, DecodeError> {
        let len = self.u16()? as usize;
        let at = self.pos;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| DecodeError::InvalidUtf8 { at })
    }

    /// A `u32` length, then that many bytes, returned without copying.
    pub fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u32()? as usize;
        if self.remaining() < len {
            return Err(DecodeError::Truncated { at: self.pos, needed: len - self.remaining() });
        }
        let out = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(out)
    }

    /// An array count, refused when even the smallest entries
    /// (`entry_bytes_min` each) could not fit in what is left.
    pub fn count(&mut self, what: &'static str, entry_bytes_min: usize) -> Result<usize, DecodeError> {
        let at = self.pos;
        let count = self.u32()?;
        let remaining = self.remaining();
        if (count as usize).saturating_mul(entry_bytes_min.max(1)) > remaining {
            return Err(DecodeError::CountTooLarge { what, count, at, remaining });
        }
        Ok(count as usize)
    }

    /// An array: a count (checked as in [`Reader::count`]), then each entry.
    pub fn array<T>(
        &mut self,
        what: &'static str,
        entry_bytes_min: usize,
        mut entry: impl FnMut(&mut Reader) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let n = self.count(what, entry_bytes_min)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(entry(self)?);
        }
        Ok(out)
    }

    /// Ends decoding: a body must be consumed exactly.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            bytes => Err(DecodeError::Trailing { bytes }),
        }
    }
}

/// Builds one frame as a list of pieces, so large byte strings (the batches
/// of a fetch response) are sent as they are stored instead of being copied
/// into one buffer.
#[derive(Default, Debug)]
pub struct Writer {
    pieces: Vec<Bytes>,
    current: Vec<u8>,
    len: usize,
}

/// Byte strings at least this long become their own piece instead of a copy.
const SHARED_PIECE_BYTES_MIN: usize = 512;

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn u8(&mut self, v: u8) {
        self.current.put_u8(v);
        self.len += 1;
    }

    pub fn u16(&mut self, v: u16) {
        self.current.put_u16_le(v);
        self.len += 2;
    }

    pub fn u32(&mut self, v: u32) {
        self.current.put_u32_le(v);
        self.len += 4;
    }

    pub fn u64(&mut self, v: u64) {
        self.current.put_u64_le(v);
        self.len += 8;
    }

    pub fn i64(&mut self, v: i64) {
        self.current.put_i64_le(v);
        self.len += 8;
    }

    /// Overwrites a `u32` written earlier at byte `at` (a length known only
    /// once what follows it is written). It must still be in the current piece.
    /// A flushed piece holding it is copied once (it holds only the small
    /// fields before the first shared piece).
    pub fn patch_u32(&mut self, at: usize, v: u32) {
        assert!(at + 4 <= self.len, "patch_u32 past the end");
        let mut start = 0;
        for piece in &mut self.pieces {
            if at < start + piece.len() {
                assert!(at + 4 <= start + piece.len(), "patch_u32 across pieces");
                let mut copy = piece.to_vec();
                copy[at - start..at - start + 4].copy_from_slice(&v.to_le_bytes());
                *piece = Bytes::from(copy);
                return;
            }
            start += piece.len();
        }
        self.current[at - start..at - start + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// A string of at most `u16::MAX` bytes (callers validate names first).
    pub fn string(&mut self, s: &str) {
        assert!(u16::try_from(s.len()).is_ok(), "string of {} bytes", s.len());
        self.u16(s.len() as u16);
        self.raw(s.as_bytes());
    }

    /// An array: its count, then each entry.
    pub fn array<T>(&mut self, entries: &[T], mut entry: impl FnMut(&mut Writer, &T)) {
        self.u32(u32::try_from(entries.len()).expect("arrays are bounded by the frame size"));
        for e in entries {
            entry(self, e);
        }
    }

    /// A `u32` length and the bytes.
    pub fn bytes(&mut self, b: &Bytes) {
        assert!(u32::try_from(b.len()).is_ok());
        self.u32(b.len() as u32);
        self.shared(b.clone());
    }

    /// Bytes with no length prefix, copied.
    pub fn raw(&mut self, b: &[u8]) {
        self.current.extend_from_slice(b);
        self.len += b.len();
    }

    /// Bytes with no length prefix, shared when large.
    pub fn shared(&mut self, b: Bytes) {
        if b.len() < SHARED_PIECE_BYTES_MIN {
            self.raw(&b);
            return;
        }
        if !self.current.is_empty() {
            self.pieces.push(Bytes::from(std::mem::take(&mut self.current)));
        }
        self.len += b.len();
        self.pieces.push(b);
    }

    /// The pieces, in order.
    pub fn finish(mut self) -> Vec<Bytes> {
        if !self.current.is_empty() {
            self.pieces.push(Bytes::from(self.current));
        }
        self.pieces
    }

    /// All pieces in one buffer (small frames, tests).
    pub fn into_bytes(self) -> Bytes {
        let len = self.len;
        let pieces = self.finish();
        if pieces.len() == 1 {
            return pieces.into_iter().next().expect("one piece");
        }
        let mut out = Vec::with_capacity(len);
        for p in pieces {
            out.extend_from_slice(&p);
        }
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_round_trip() {
        let mut w = Writer::new();
        w.u8(7);
        w.u16(0xBEEF);
        w.u32(0xDEAD_BEEF);
        w.u64(u64::MAX - 1);
        w.i64(-5);
        w.string("topic-1");
        w.bytes(&Bytes::from(vec![9u8; 600]));
        let mut r = Reader::new(w.into_bytes());
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u16().unwrap(), 0xBEEF);
        assert_eq!(r.u32().unwrap(), 0xDEAD_BEEF);
        assert_eq!(r.u64().unwrap(), u64::MAX - 1);
        assert_eq!(r.i64().unwrap(), -5);
        assert_eq!(r.string().unwrap(), "topic-1");
        assert_eq!(r.bytes().unwrap(), Bytes::from(vec![9u8; 600]));
        r.finish().unwrap();
    }

    #[test]
    fn a_count_larger_than_the_body_is_refused_before_allocating() {
        let mut w = Writer::new();
        w.u32(u32::MAX);
        let mut r = Reader::new(w.into_bytes());
        assert!(matches!(r.count("topics", 1), Err(DecodeError::CountTooLarge { .. })));
    }

    #[test]
    fn a_byte_string_longer_than_the_body_is_truncated() {
        let mut w = Writer::new();
        w.u32(10);
        w.raw(&[1, 2, 3]);
        let mut r = Reader::new(w.into_bytes());
        assert_eq!(r.bytes(), Err(DecodeError::Truncated { at: 4, needed: 7 }));
    }

    #[test]
    fn large_byte_strings_are_shared_not_copied() {
        let big = Bytes::from(vec![1u8; 4096]);
        let mut w = Writer::new();
        w.u32(1);
        w.shared(big.clone());
        w.u32(2);
        let pieces = w.finish();
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces[1].as_ptr(), big.as_ptr());
    }
}
