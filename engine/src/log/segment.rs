//! Segment files: names, and the active segment's write state.
//!
//! A partition directory holds `<base offset, 20 digits>.log` (batches,
//! back to back) and `<base offset>.index` (written when the segment is
//! sealed). Only the newest segment, the active one, is ever written.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::pool::{MemoryPool, Reservation};
use crate::log::index::SegmentIndex;
use crate::rt::{BLOCK_BYTES, DmaFile, IoBuf, align_down, align_up};
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

/// The smallest write buffer a log allocates: a log that sees a batch now
/// and then holds this much, and only while its write is on the way.
pub(crate) const CHUNK_BYTES_MIN: usize = 64 << 10;

/// An aligned buffer that mirrors the file from `pos` (a block boundary).
struct Chunk<B> {
    buf: B,
    pos: u64,
    len: usize,
    cap: usize,
    reservation: Reservation,
}

/// The segment appends go to, owned by the log's core.
///
/// Appends are copied into a queue of aligned chunks that mirror the file
/// from a block boundary on. A write takes the oldest chunk: a full one is
/// written whole; the last, partial one is written up to its last block,
/// whose bytes are kept aside (a few KiB, not a buffer) and become the start
/// of the next chunk, so the block is rewritten, with the same bytes in
/// front, by the next write. Chunks are allocated when an append needs one
/// and sized by the load: one that fills up makes the next one twice as
/// large (up to `write_bytes_max`); one written half full makes the next one
/// the size of that write. So an idle log holds no buffer, and a busy one
/// writes large chunks.
pub(crate) struct ActiveSegment<F: DmaFile> {
    file: Option<Rc<F>>,
    pub index: SegmentIndex,
    pub created_ms: i64,
    /// When its first batch was appended, by the log's clock (for a
    /// recovered segment, its newest append: later, never earlier).
    pub first_append_ms: Option<i64>,
    chunks: VecDeque<Chunk<F::Buf>>,
    /// With no chunk: the bytes of the last partial block, from `tail_pos`.
    tail: Vec<u8>,
    tail_pos: u64,
    chunk_bytes_max: usize,
    buffer_bytes_max: usize,
    next_chunk_bytes: usize,
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
    /// The file's size: pre-allocated (zeroes) up to here. Writes never end
    /// past it, so an O_DIRECT write never extends the file.
    pub allocated_bytes: u64,
}

/// A buffer handed to a write, and what it will make true when it lands.
pub(crate) struct PendingWrite<B> {
    pub buf: B,
    pub len: usize,
    pub pos: u64,
    pub end_bytes: u64,
    /// The buffer's share of the pool, given back when the write is done.
    pub reservation: Reservation,
}

/// What an append of some bytes needs from the write buffer first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Room {
    /// The bytes fit in the chunks there are.
    Fits,
    /// Another chunk of this many bytes.
    Grow(usize),
    /// This log's buffer is at its bound: a write must land first.
    Full,
}

impl<F: DmaFile> ActiveSegment<F> {
    /// An active segment whose file holds `index.summary.size_bytes` bytes,
    /// the last `tail_block` of them in a partial block, in a file of
    /// `allocated_bytes`.
    pub fn new(
        file: Rc<F>,
        index: SegmentIndex,
        created_ms: i64,
        tail_block: &[u8],
        allocated_bytes: u64,
        chunk_bytes_max: usize,
        buffer_bytes_max: usize,
    ) -> Self {
        let size = index.summary.size_bytes;
        assert_eq!(tail_block.len() as u64, size - align_down(size));
        assert!(chunk_bytes_max.is_multiple_of(BLOCK_BYTES) && chunk_bytes_max >= 2 * BLOCK_BYTES);
        assert!(buffer_bytes_max >= chunk_bytes_max);
        assert!(allocated_bytes >= size);
        ActiveSegment {
            file: Some(file),
            first_append_ms: (index.summary.size_bytes > 0).then_some(index.summary.max_append_time.0),
            index,
            created_ms,
            chunks: VecDeque::new(),
            tail: tail_block.to_vec(),
            tail_pos: align_down(size),
            chunk_bytes_max,
            buffer_bytes_max,
            next_chunk_bytes: CHUNK_BYTES_MIN.min(chunk_bytes_max),
            written_bytes: size,
            unwritten: VecDeque::new(),
            in_flight: VecDeque::new(),
            issued_bytes: size,
            durable_bytes: size,
            readable_bytes: size,
            allocated_bytes,
        }
    }

    /// The segment's file; only [`ActiveSegment::take_file`] at close takes it.
    pub fn file(&self) -> &Rc<F> {
        self.file.as_ref().expect("the active segment's file is open until the log is closed")
    }

    /// The file, unless the log was closed.
    pub fn try_file(&self) -> Option<&Rc<F>> {
        self.file.as_ref()
    }

    /// Hands the file over for an explicit close.
    pub fn take_file(&mut self) -> Option<Rc<F>> {
        self.file.take()
    }

    pub fn size_bytes(&self) -> u64 {
        self.index.summary.size_bytes
    }

    /// A poisoned log writes nothing more: gives its unissued chunks (and
    /// their share of the core's write budget) back, so the other logs of
    /// the core are not starved by one that is stuck. Positions stay as
    /// they were.
    pub fn drop_unissued(&mut self) {
        let end = self.end();
        self.chunks.clear();
        self.tail.clear();
        self.tail_pos = end;
    }

    /// Where the next appended byte goes. Chunks fill in order, so that is
    /// in the first one with room (a batch's chunks are added just before it
    /// is copied in).
    fn end(&self) -> u64 {
        match self.chunks.iter().find(|c| c.len < c.cap) {
            Some(c) => c.pos + c.len as u64,
            None => self.chunks.back().map_or(self.tail_pos + self.tail.len() as u64, |c| c.pos + c.cap as u64),
        }
    }

    /// Bytes appended but not yet handed to a write.
    pub fn unissued_bytes(&self) -> u64 {
        self.end() - self.issued_bytes
    }

    pub fn writes_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether `len` more bytes stay inside the allocated part of the file
    /// (writes cover whole blocks).
    pub fn allocated_for(&self, len: usize) -> bool {
        align_up(self.end() + len as u64) <= self.allocated_bytes
    }

    /// The chunk sizes that would make room for `len` more bytes.
    fn chunks_for(&self, len: usize) -> Vec<usize> {
        let free: usize = self.chunks.iter().map(|c| c.cap - c.len).sum();
        if len <= free {
            return Vec::new();
        }
        let carried = if self.chunks.is_empty() { self.tail.len() } else { 0 };
        let mut missing = len - free + carried;
        let mut caps = Vec::new();
        let mut next = self.next_chunk_bytes;
        while missing > 0 {
            let cap = (align_up(missing.min(self.chunk_bytes_max) as u64) as usize).max(next).min(self.chunk_bytes_max);
            caps.push(cap);
            missing = missing.saturating_sub(cap);
            next = self.chunk_bytes_max;
        }
        caps
    }

    /// What `len` more bytes need from the write buffer.
    pub fn room_for(&self, len: usize) -> Room {
        let needed: usize = self.chunks_for(len).iter().sum();
        if needed == 0 {
            return Room::Fits;
        }
        let held: usize = self.chunks.iter().map(|c| c.cap).sum();
        if held > 0 && held + needed > self.buffer_bytes_max { Room::Full } else { Room::Grow(needed) }
    }

    /// Adds the chunks that make room for `len` more bytes, if the pool has
    /// the memory for all of them; `false` (and nothing changed) if not.
    pub fn grow(&mut self, pool: &MemoryPool, len: usize) -> bool {
        let caps = self.chunks_for(len);
        let Some(mut reservation) = pool.try_reserve(caps.iter().sum()) else { return false };
        if self.chunks.back().is_some_and(|b| b.len == b.cap) {
            // Sustained load: the next chunk is larger.
            self.next_chunk_bytes = (self.next_chunk_bytes * 2).min(self.chunk_bytes_max);
        }
        for cap in caps {
            let mut buf = self.file().alloc(cap);
            let share = reservation.split_off(cap);
            // A batch that does not fit fills the last chunk to its end
            // first, so the new one starts right after it.
            let chunk = if let Some(back) = self.chunks.back() {
                Chunk { buf, pos: back.pos + back.cap as u64, len: 0, cap, reservation: share }
            } else {
                let tail = std::mem::take(&mut self.tail);
                buf.as_mut_slice()[..tail.len()].copy_from_slice(&tail);
                Chunk { buf, pos: self.tail_pos, len: tail.len(), cap, reservation: share }
            };
            self.chunks.push_back(chunk);
        }
        true
    }

    /// Copies a batch in; `next_offset` is the offset after it. The caller
    /// made room ([`ActiveSegment::room_for`] said `Fits`).
    pub fn copy_in(&mut self, mut bytes: &[u8], next_offset: Offset) {
        // Chunks fill in order: only the last ones have room.
        let mut i = self.chunks.iter().position(|c| c.len < c.cap).expect("the caller made room");
        while !bytes.is_empty() {
            let chunk = self.chunks.get_mut(i).expect("the caller made room");
            let n = bytes.len().min(chunk.cap - chunk.len);
            chunk.buf.as_mut_slice()[chunk.len..chunk.len + n].copy_from_slice(&bytes[..n]);
            chunk.len += n;
            bytes = &bytes[n..];
            i += 1;
        }
        self.unwritten.push_back((self.end(), next_offset));
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
        let front = self.chunks.front().expect("unissued bytes sit in a chunk");
        let end = if self.chunks.len() > 1 { front.pos + front.cap as u64 } else { self.end() };
        let shared = self.in_flight.iter().any(|&(e, _)| front.pos < align_up(e));
        let too_far = unsynced_bytes_max.is_some_and(|max| end - self.durable_bytes > max);
        if shared || too_far {
            return None;
        }
        let pending = self.take_chunk();
        self.issued_bytes = pending.end_bytes;
        self.in_flight.push_back((pending.end_bytes, false));
        Some(pending)
    }

    fn take_chunk(&mut self) -> PendingWrite<F::Buf> {
        let mut chunk = self.chunks.pop_front().expect("checked");
        if !self.chunks.is_empty() {
            assert_eq!(chunk.len, chunk.cap, "only the last chunk is partial");
            let end_bytes = chunk.pos + chunk.len as u64;
            return PendingWrite {
                buf: chunk.buf,
                len: chunk.len,
                pos: chunk.pos,
                end_bytes,
                reservation: chunk.reservation,
            };
        }
        // The last chunk: written up to its last block; that block's bytes
        // are kept for the next chunk, which rewrites the block.
        let full = align_down(chunk.len as u64) as usize;
        let len = align_up(chunk.len as u64) as usize;
        self.tail = chunk.buf.as_slice()[full..chunk.len].to_vec();
        self.tail_pos = chunk.pos + full as u64;
        chunk.buf.as_mut_slice()[chunk.len..len].fill(0);
        if chunk.len < chunk.cap {
            // Light load: the next chunk is as large as this write.
            self.next_chunk_bytes =
                (len.next_power_of_two()).clamp(CHUNK_BYTES_MIN.min(self.chunk_bytes_max), self.chunk_bytes_max);
        }
        PendingWrite {
            buf: chunk.buf,
            len,
            pos: chunk.pos,
            end_bytes: chunk.pos + chunk.len as u64,
            reservation: chunk.reservation,
        }
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
