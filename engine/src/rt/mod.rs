//! The seam between Cairn's logic and the runtime that does its I/O.
//!
//! Nothing above this module calls glommio directly: the log asks a
//! [`Storage`] for files and the time, and the broker asks a [`Runtime`]
//! for storage, tasks, timers and sockets. In production that is
//! [`glommio::GlommioRuntime`] (O_DIRECT through io_uring, one executor per
//! core); in tests it is [`sim::SimRuntime`], a seeded, single-threaded
//! simulation with virtual time, a disk that loses what was not synced and a
//! network in memory, so a whole broker (and, later, a cluster) runs
//! deterministically and a failing seed replays. The futures are `!Send` on
//! purpose: everything here belongs to one core.

pub mod glommio;
pub mod sim;
pub mod waiters;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

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

/// Creates `path` and its missing parents, blocking, each new directory's
/// entry synced into its parent (top down): what
/// [`Storage::create_dir_all`] promises, for code that runs before any
/// executor does (the broker's data directory).
pub fn create_dir_all_durable(path: &Path) -> io::Result<()> {
    let path = std::path::absolute(path)?;
    let missing: Vec<&Path> = path.ancestors().take_while(|p| !p.exists()).collect();
    std::fs::create_dir_all(&path)?;
    for dir in missing.iter().rev() {
        if let Some(parent) = dir.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
    }
    Ok(())
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
    /// with zeroes, so later writes below `len` never extend the file.
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
    /// Removes a file if it is there: `true` if it was, `false` if there
    /// was nothing to remove.
    async fn remove_if_exists(&self, path: &Path) -> io::Result<bool> {
        match self.remove(path).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
    /// Renames a file or directory (atomically replacing `to`); durable once
    /// the parent directories are synced.
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Creates `path` and its missing parents; durable on return (each new
    /// directory's entry is synced into its parent), so a partition or topic
    /// directory never vanishes in a power loss after files in it were synced.
    async fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything in it.
    async fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (files created, renamed or removed in
    /// it) durable.
    async fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// The names of the entries of a directory.
    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Whether `path` names a directory.
    async fn is_dir(&self, path: &Path) -> io::Result<bool>;
    /// Wall-clock milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
    /// The monotonic clock, for durations.
    fn instant(&self) -> Instant;
}

/// A listening socket.
pub trait Listener: 'static {
    type Stream;
    /// The next connection and its peer's address.
    async fn accept(&self) -> io::Result<(Self::Stream, SocketAddr)>;
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A byte stream to a peer (TCP in production, a pipe in the simulator).
pub trait Stream: futures::io::AsyncRead + futures::io::AsyncWrite + Unpin + 'static {
    fn set_nodelay(&self, nodelay: bool) -> io::Result<()>;
}

/// The CPU shares of background work against the 1000 of request work.
pub const BACKGROUND_SHARES: usize = 50;

/// Everything one core's code needs from its runtime: storage, tasks,
/// timers, the clock and the network.
pub trait Runtime: Clone + 'static {
    type Storage: Storage;
    type Stream: Stream;
    type Listener: Listener<Stream = Self::Stream>;
    /// A spawned task; awaiting it gives its output (`None` if the task was
    /// dropped unfinished). Dropping the handle does not stop the task.
    type Task<T: 'static>: Future<Output = Option<T>> + 'static;
    type Sleep: Future<Output = ()> + 'static;

    fn storage(&self) -> &Self::Storage;
    /// Runs `future` on this core, to completion, whatever happens to the handle.
    fn spawn<T: 'static>(&self, future: impl Future<Output = T> + 'static) -> Self::Task<T>;
    /// Like [`Runtime::spawn`], for background work (the log cleaner): its
    /// CPU time yields to the core's request work whenever both have some
    /// (glommio: a task queue of [`BACKGROUND_SHARES`] against the default
    /// queue's 1000; the simulator runs it like any task).
    fn spawn_background<T: 'static>(&self, future: impl Future<Output = T> + 'static) -> Self::Task<T> {
        self.spawn(future)
    }
    fn sleep(&self, duration: Duration) -> Self::Sleep;
    /// The monotonic clock (virtual in the simulator).
    fn now(&self) -> Instant;
    /// Listens on `addr` (port 0: any free port). Every core may listen on
    /// the same address (`SO_REUSEPORT`): the system spreads connections.
    fn listen(&self, addr: SocketAddr) -> io::Result<Self::Listener>;
    async fn connect(&self, addr: SocketAddr) -> io::Result<Self::Stream>;
}

/// Waits for `future` until `deadline`: `None` if the deadline came first.
pub async fn until<R: Runtime, T>(rt: &R, deadline: Instant, future: impl Future<Output = T>) -> Option<T> {
    let sleep = rt.sleep(deadline.saturating_duration_since(rt.now()));
    match futures::future::select(std::pin::pin!(future), std::pin::pin!(sleep)).await {
        futures::future::Either::Left((v, _)) => Some(v),
        futures::future::Either::Right(_) => None,
    }
}
