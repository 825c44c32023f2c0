//! The seam between the log's logic and the runtime that does its I/O.
//!
//! The log never calls glommio directly: it asks a [`Storage`] for files and
//! the time. In production that is [`glommio::GlommioStorage`] (O_DIRECT
//! through io_uring); in tests it is [`sim::SimStorage`], a deterministic
//! in-memory disk that can lose unsynced writes, tear them, garble them and
//! fail on demand. The futures are `!Send` on purpose: a log and its files
//! belong to one core.

pub mod glommio;
pub mod sim;

use std::io;
use std::path::Path;

use bytes::Bytes;

/// The block size direct I/O is aligned to. Every write covers whole blocks.
pub const BLOCK_BYTES: usize = 4096;

/// Rounds `v` up to a whole number of blocks.
#[must_use]
pub const fn align_up(v: u64) -> u64 {
    v.div_ceil(BLOCK_BYTES as u64) * BLOCK_BYTES as u64
}

/// Rounds `v` down to a block boundary.
#[must_use]
pub const fn align_down(v: u64) -> u64 {
    v / BLOCK_BYTES as u64 * BLOCK_BYTES as u64
}

/// A block-aligned buffer handed to [`DmaFile::write_at`].
pub trait IoBuf {
    fn as_mut_slice(&mut self) -> &mut [u8];
    fn as_slice(&self) -> &[u8];
}

/// How a file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Open an existing file; fail if it is missing.
    Existing,
    /// Create the file; fail if it exists.
    CreateNew,
}

/// A file written with direct I/O: whole aligned blocks only.
pub trait DmaFile {
    type Buf: IoBuf;
    /// Bytes read into the runtime's own buffer, readable without a copy.
    type ReadChunk: std::ops::Deref<Target = [u8]>;

    /// An aligned buffer of `len` bytes (`len` is a multiple of
    /// [`BLOCK_BYTES`]); its contents are unspecified.
    fn alloc(&self, len: usize) -> Self::Buf;
    /// Writes the first `len` bytes of `buf` at `pos`; both block aligned.
    async fn write_at(&self, buf: Self::Buf, len: usize, pos: u64) -> io::Result<()>;
    /// Reads up to `len` bytes at `pos`; shorter only at the end of the file.
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes>;
    /// [`DmaFile::read_at`] without the copy into shareable [`Bytes`], for
    /// readers that only look (the recovery scan).
    async fn read_chunk_at(&self, pos: u64, len: usize) -> io::Result<Self::ReadChunk>;
    async fn fdatasync(&self) -> io::Result<()>;
    /// Reserves disk space for `len` bytes and grows the file to that size
    /// with zeroes, so later writes never extend the file.
    async fn allocate(&self, len: u64) -> io::Result<()>;
    async fn truncate(&self, len: u64) -> io::Result<()>;
    async fn size(&self) -> io::Result<u64>;
    async fn close(self) -> io::Result<()>;
}

/// Files, directories and the clock of one core.
pub trait Storage: Clone + 'static {
    type File: DmaFile;

    async fn open_dma(&self, path: &Path, mode: OpenMode) -> io::Result<Self::File>;
    /// Writes a small file whole and durably: temporary file, fdatasync,
    /// rename over `path`, sync of the directory.
    async fn write_file_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Reads a small file whole; `None` if it does not exist.
    async fn read_file(&self, path: &Path) -> io::Result<Option<Vec<u8>>>;
    async fn remove(&self, path: &Path) -> io::Result<()>;
    async fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    async fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// The names of the entries of a directory.
    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Wall-clock milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}
