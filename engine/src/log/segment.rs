//! Segment files: names, and the active segment's write state.
//!
//! A partition directory holds `<base offset, 20 digits>.log` (batches,
//! back to back) and `<base offset>.index` (written when the segment is
//! sealed). Only the newest segment, the active one, is ever written.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::log::index::SegmentIndex;
use crate::rt::{DmaFile, IoBuf, align_down, align_up};
use crate::types::Offset;

pub(crate) fn log_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{:020}.log", base.0))
}

pub(crate) fn index_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{:020}.index", base.0))
}

/// Parses `<20 digits>.<ext>` into its base offset.
pub(crate) fn parse_name(name: &str, ext: &str) -> Option<Offset> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit())).then(|| stem.parse().ok().map(Offset))?
}

/// The segment appends go to, owned by the log's core.
///
/// Appends are copied into `buf`, an aligned buffer that mirrors the file
/// from `buf_pos` (a block boundary) on; a flush writes it whole blocks at a
/// time and hands the partial last block to the next buffer, so the block is
/// rewritten, with the same bytes in front, by the next flush.
pub(crate) struct ActiveSegment<F: DmaFile> {
    pub file: Rc<F>,
    pub index: SegmentIndex,
    pub created_ms: i64,
    pub buf: Option<F::Buf>,
    pub buf_pos: u64,
    pub buf_len: usize,
    /// Bytes of the segment known to be written to the file.
    pub written_bytes: u64,
}

/// A buffer handed to a write, and what it will make true when it lands.
pub(crate) struct PendingWrite<B> {
    pub buf: B,
    pub len: usize,
    pub pos: u64,
    pub end_bytes: u64,
}

impl<F: DmaFile> ActiveSegment<F> {
    /// A fresh buffer holding the file's partial last block, if any.
    pub fn new(file: Rc<F>, index: SegmentIndex, created_ms: i64, tail_block: &[u8], capacity: usize) -> Self {
        let size = index.summary.size_bytes;
        assert_eq!(tail_block.len() as u64, size - align_down(size));
        let mut buf = file.alloc(capacity);
        buf.as_mut_slice()[..tail_block.len()].copy_from_slice(tail_block);
        ActiveSegment {
            file,
            index,
            created_ms,
            buf: Some(buf),
            buf_pos: align_down(size),
            buf_len: tail_block.len(),
            written_bytes: size,
        }
    }

    pub fn size_bytes(&self) -> u64 {
        self.index.summary.size_bytes
    }

    /// Bytes appended but not yet written.
    pub fn unwritten_bytes(&self) -> u64 {
        self.buf_pos + self.buf_len as u64 - self.written_bytes
    }

    pub fn buffer_room(&self, capacity: usize) -> usize {
        capacity - self.buf_len
    }

    pub fn copy_in(&mut self, bytes: &[u8]) {
        let at = self.buf_len;
        let buf = self.buf.as_mut().expect("the active segment always has a buffer");
        buf.as_mut_slice()[at..at + bytes.len()].copy_from_slice(bytes);
        self.buf_len += bytes.len();
    }

    /// Takes the unwritten bytes for a write, leaving a new buffer that
    /// starts with the partial last block. `None` if everything is written.
    pub fn take_pending(&mut self, capacity: usize) -> Option<PendingWrite<F::Buf>> {
        let end_bytes = self.buf_pos + self.buf_len as u64;
        if end_bytes == self.written_bytes {
            return None;
        }
        let mut buf = self.buf.take().expect("the active segment always has a buffer");
        let full = align_down(self.buf_len as u64) as usize;
        let len = align_up(self.buf_len as u64) as usize;
        let mut next = self.file.alloc(capacity);
        let tail = self.buf_len - full;
        next.as_mut_slice()[..tail].copy_from_slice(&buf.as_slice()[full..self.buf_len]);
        buf.as_mut_slice()[self.buf_len..len].fill(0);
        let pending = PendingWrite { buf, len, pos: self.buf_pos, end_bytes };
        self.buf = Some(next);
        self.buf_pos += full as u64;
        self.buf_len = tail;
        Some(pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        let dir = Path::new("/d");
        let path = log_path(dir, Offset(42));
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, "00000000000000000042.log");
        assert_eq!(parse_name(name, "log"), Some(Offset(42)));
        assert_eq!(parse_name(name, "index"), None);
        assert_eq!(parse_name("42.log", "log"), None);
        assert_eq!(parse_name("0000000000000000004x.log", "log"), None);
    }
}
