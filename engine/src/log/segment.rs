//! Segment files: names, and the active segment's write state.
//!
//! A partition directory holds `<base offset, 20 digits>.log` (batches,
//! back to back) and `<base offset>.index` (written when the segment is
//! sealed). Only the newest segment, the active one, is ever written.

use std::collections::VecDeque;
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

/// An aligned buffer that mirrors the file from `pos` (a block boundary).
pub(crate) struct Chunk<B> {
    pub buf: B,
    pub pos: u64,
    pub len: usize,
}

/// The segment appends go to, owned by the log's core.
///
/// Appends are copied into a queue of aligned chunks that mirror the file
/// from a block boundary on. A write takes the oldest chunk: a full one is
/// written whole; the last, partial one is written up to its last block and
/// hands that partial block to a new chunk, so the block is rewritten, with
/// the same bytes in front, by the next write. Writes are at most one chunk,
/// so while one is in flight the appends it acknowledges refill the next.
pub(crate) struct ActiveSegment<F: DmaFile> {
    file: Option<Rc<F>>,
    pub index: SegmentIndex,
    pub created_ms: i64,
    chunks: VecDeque<Chunk<F::Buf>>,
    chunk_bytes: usize,
    chunks_max: usize,
    /// Bytes of the segment known to be written to the file.
    pub written_bytes: u64,
    /// `(end position, next offset)` of batches not yet wholly written.
    unwritten: VecDeque<(u64, Offset)>,
    /// Writes issued and not yet completed, in issue order: `(end, done)`.
    in_flight: VecDeque<(u64, bool)>,
    /// End of the bytes handed to writes so far.
    issued_bytes: u64,
    /// Bytes of the segment covered by the last completed fdatasync.
    pub durable_bytes: u64,
    /// The end of the last wholly written batch: cold reads stop here.
    pub readable_bytes: u64,
}

/// A buffer handed to a write, and what it will make true when it lands.
pub(crate) struct PendingWrite<B> {
    pub buf: B,
    pub len: usize,
    pub pos: u64,
    pub end_bytes: u64,
}

impl<F: DmaFile> ActiveSegment<F> {
    /// An active segment whose file holds `index.summary.size_bytes` bytes,
    /// the last `tail_block` of them in a partial block.
    pub fn new(
        file: Rc<F>,
        index: SegmentIndex,
        created_ms: i64,
        tail_block: &[u8],
        chunk_bytes: usize,
        chunks_max: usize,
    ) -> Self {
        let size = index.summary.size_bytes;
        assert_eq!(tail_block.len() as u64, size - align_down(size));
        assert!(
            chunk_bytes.is_multiple_of(crate::rt::BLOCK_BYTES) && chunk_bytes > tail_block.len() && chunks_max >= 1
        );
        let mut buf = file.alloc(chunk_bytes);
        buf.as_mut_slice()[..tail_block.len()].copy_from_slice(tail_block);
        let chunk = Chunk { buf, pos: align_down(size), len: tail_block.len() };
        ActiveSegment {
            file: Some(file),
            index,
            created_ms,
            chunks: VecDeque::from([chunk]),
            chunk_bytes,
            chunks_max,
            written_bytes: size,
            unwritten: VecDeque::new(),
            in_flight: VecDeque::new(),
            issued_bytes: size,
            durable_bytes: size,
            readable_bytes: size,
        }
    }

    /// The segment's file; only [`ActiveSegment::take_file`] at close takes it.
    pub fn file(&self) -> &Rc<F> {
        self.file.as_ref().expect("the active segment's file is open until the log is closed")
    }

    /// Hands the file over for an explicit close.
    pub fn take_file(&mut self) -> Option<Rc<F>> {
        self.file.take()
    }

    fn alloc(&self, len: usize) -> F::Buf {
        self.file().alloc(len)
    }

    pub fn size_bytes(&self) -> u64 {
        self.index.summary.size_bytes
    }

    fn end(&self) -> u64 {
        let back = self.chunks.back().expect("never empty");
        back.pos + back.len as u64
    }

    /// Bytes appended but not yet handed to a write.
    pub fn unissued_bytes(&self) -> u64 {
        self.end() - self.issued_bytes
    }

    pub fn writes_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Takes the next write if the rules allow it: fewer than
    /// `in_flight_max` writes in flight; no block shared with a write in
    /// flight (the partial last block is rewritten only once the write that
    /// wrote it has landed, or the two could land in either order); and the
    /// write ends within `unsynced_bytes_max` of the durable bytes.
    pub fn try_take_write(
        &mut self,
        in_flight_max: usize,
        unsynced_bytes_max: Option<u64>,
    ) -> Option<PendingWrite<F::Buf>> {
        if self.in_flight.len() >= in_flight_max || self.unissued_bytes() == 0 {
            return None;
        }
        let front = self.chunks.front().expect("never empty");
        let (start, end) =
            if self.chunks.len() > 1 { (front.pos, front.pos + front.len as u64) } else { (front.pos, self.end()) };
        let shared = self.in_flight.iter().any(|&(e, _)| start < align_up(e));
        let too_far = unsynced_bytes_max.is_some_and(|max| end - self.durable_bytes > max);
        if shared || too_far {
            return None;
        }
        Some(self.take_pending())
    }

    /// How many more bytes the chunks can take.
    pub fn buffer_room(&self) -> usize {
        let back = self.chunks.back().expect("never empty");
        (self.chunks_max - self.chunks.len()) * self.chunk_bytes + (self.chunk_bytes - back.len)
    }

    /// Copies a batch in; `next_offset` is the offset after it.
    pub fn copy_in(&mut self, mut bytes: &[u8], next_offset: Offset) {
        assert!(bytes.len() <= self.buffer_room(), "callers check the room first");
        while !bytes.is_empty() {
            let back = self.chunks.back_mut().expect("never empty");
            if back.len == self.chunk_bytes {
                let pos = back.pos + self.chunk_bytes as u64;
                let buf = self.alloc(self.chunk_bytes);
                self.chunks.push_back(Chunk { buf, pos, len: 0 });
                continue;
            }
            let n = bytes.len().min(self.chunk_bytes - back.len);
            back.buf.as_mut_slice()[back.len..back.len + n].copy_from_slice(&bytes[..n]);
            back.len += n;
            bytes = &bytes[n..];
        }
        self.unwritten.push_back((self.end(), next_offset));
    }

    /// Takes the oldest unwritten chunk for a write and records it as in
    /// flight; the caller checked there is one.
    fn take_pending(&mut self) -> PendingWrite<F::Buf> {
        let pending = self.take_chunk();
        self.issued_bytes = pending.end_bytes;
        self.in_flight.push_back((pending.end_bytes, false));
        pending
    }

    fn take_chunk(&mut self) -> PendingWrite<F::Buf> {
        if self.chunks.len() > 1 {
            let chunk = self.chunks.pop_front().expect("more than one");
            assert_eq!(chunk.len, self.chunk_bytes, "only the last chunk is partial");
            let end_bytes = chunk.pos + chunk.len as u64;
            return PendingWrite { buf: chunk.buf, len: chunk.len, pos: chunk.pos, end_bytes };
        }
        let mut next = self.alloc(self.chunk_bytes);
        let chunk = self.chunks.back_mut().expect("never empty");
        let full = align_down(chunk.len as u64) as usize;
        let len = align_up(chunk.len as u64) as usize;
        let tail = chunk.len - full;
        next.as_mut_slice()[..tail].copy_from_slice(&chunk.buf.as_slice()[full..chunk.len]);
        let mut buf = std::mem::replace(&mut chunk.buf, next);
        buf.as_mut_slice()[chunk.len..len].fill(0);
        let pending = PendingWrite { buf, len, pos: chunk.pos, end_bytes: chunk.pos + chunk.len as u64 };
        chunk.pos += full as u64;
        chunk.len = tail;
        pending
    }

    /// Records that the write ending at `end_bytes` landed; returns the
    /// offset after the last batch that is now wholly written, if that
    /// moved. Writes may land out of order: only the landed prefix counts.
    pub fn finish_write(&mut self, end_bytes: u64) -> Option<Offset> {
        let write = self.in_flight.iter_mut().find(|w| w.0 == end_bytes && !w.1).expect("a write in flight");
        write.1 = true;
        while self.in_flight.front().is_some_and(|w| w.1) {
            let (end, _) = self.in_flight.pop_front().expect("checked");
            self.written_bytes = self.written_bytes.max(end);
        }
        let mut written = None;
        while let Some(&(end, next)) = self.unwritten.front() {
            if end > self.written_bytes {
                break;
            }
            self.unwritten.pop_front();
            self.readable_bytes = end;
            written = Some(next);
        }
        written
    }

    /// Forgets a write that failed (the log is poisoned by then).
    pub fn abandon_write(&mut self, end_bytes: u64) {
        self.in_flight.retain(|w| w.0 != end_bytes);
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
