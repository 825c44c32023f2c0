//! A deterministic, fault-injecting disk for tests.
//!
//! Each file keeps what a real disk would keep after power loss (`durable`)
//! apart from what readers see now (`current`), plus the writes issued since
//! the last fdatasync. [`SimStorage::crash`] replays each of those writes onto
//! the durable image whole, torn at a random byte, or not at all, and
//! garbles bytes they were changing: exactly the damage a crash may do to data
//! that was never synced, and none to data that was. Directory operations
//! (create, rename, remove, truncate) are taken as durable at once.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;

use super::{BLOCK_BYTES, DmaFile, IoBuf, OpenMode, Storage};

#[derive(Default, Debug)]
struct SimFileData {
    current: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<(u64, Vec<u8>)>,
    reserved: u64,
}

#[derive(Default, Debug)]
struct Faults {
    fdatasync_error: Option<io::ErrorKind>,
    write_error: Option<io::ErrorKind>,
    /// Fail the removal after this many more succeed.
    remove_error_after: Option<usize>,
    capacity_bytes: Option<u64>,
}

#[derive(Debug)]
struct SimDisk {
    files: BTreeMap<PathBuf, SimFileData>,
    dirs: BTreeSet<PathBuf>,
    clock_ms: i64,
    faults: Faults,
    fdatasyncs: u64,
}

/// An in-memory disk shared by the handles of one test.
#[derive(Clone, Debug)]
pub struct SimStorage {
    disk: Rc<RefCell<SimDisk>>,
}

impl Default for SimStorage {
    fn default() -> Self {
        SimStorage::new()
    }
}

/// A small deterministic generator (splitmix64), so a failing seed replays.
#[derive(Clone, Debug)]
pub struct SimRng(u64);

impl SimRng {
    #[must_use]
    pub fn new(seed: u64) -> SimRng {
        SimRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        self.next_u64() % n
    }
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display()))
}

impl SimDisk {
    fn used_bytes(&self) -> u64 {
        self.files.values().map(|f| (f.current.len() as u64).max(f.reserved)).sum()
    }

    fn check_capacity(&self, path: &Path, new_len: u64) -> io::Result<()> {
        let Some(capacity) = self.faults.capacity_bytes else { return Ok(()) };
        let file = self.files.get(path);
        let old = file.map_or(0, |f| (f.current.len() as u64).max(f.reserved));
        if new_len > old && self.used_bytes() + (new_len - old) > capacity {
            return Err(enospc());
        }
        Ok(())
    }
}

impl SimStorage {
    #[must_use]
    pub fn new() -> SimStorage {
        SimStorage {
            disk: Rc::new(RefCell::new(SimDisk {
                files: BTreeMap::new(),
                dirs: BTreeSet::new(),
                clock_ms: 1_700_000_000_000,
                faults: Faults::default(),
                fdatasyncs: 0,
            })),
        }
    }

    pub fn set_now_ms(&self, now_ms: i64) {
        self.disk.borrow_mut().clock_ms = now_ms;
    }

    pub fn advance_ms(&self, ms: i64) {
        self.disk.borrow_mut().clock_ms += ms;
    }

    /// The next fdatasync fails with `kind` and persists nothing.
    pub fn fail_next_fdatasync(&self, kind: io::ErrorKind) {
        self.disk.borrow_mut().faults.fdatasync_error = Some(kind);
    }

    /// The next write fails with `kind` and changes nothing.
    pub fn fail_next_write(&self, kind: io::ErrorKind) {
        self.disk.borrow_mut().faults.write_error = Some(kind);
    }

    /// The removal after the next `after` ones fails, as if the process died
    /// there (the removals before it stay done).
    pub fn fail_remove_after(&self, after: usize) {
        self.disk.borrow_mut().faults.remove_error_after = Some(after);
    }

    /// Writes and allocations past `bytes` in all fail with ENOSPC.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.disk.borrow_mut().faults.capacity_bytes = bytes;
    }

    /// How many fdatasyncs completed: tests of group commit count them.
    #[must_use]
    pub fn fdatasync_count(&self) -> u64 {
        self.disk.borrow().fdatasyncs
    }

    /// The current contents of a file (for tests that damage files).
    #[must_use]
    pub fn file_contents(&self, path: &Path) -> Option<Vec<u8>> {
        self.disk.borrow().files.get(path).map(|f| f.current.clone())
    }

    /// Replaces a file's contents, durably (for tests that damage files).
    pub fn set_file_contents(&self, path: &Path, data: Vec<u8>) {
        let mut disk = self.disk.borrow_mut();
        let file = disk.files.entry(path.to_path_buf()).or_default();
        file.durable.clone_from(&data);
        file.current = data;
        file.unsynced.clear();
    }

    /// Deletes a file behind the log's back (for tests that damage files).
    pub fn disk_remove(&self, path: &Path) {
        self.disk.borrow_mut().files.remove(path);
    }

    /// The names of all files, for tests.
    #[must_use]
    pub fn file_paths(&self) -> Vec<PathBuf> {
        self.disk.borrow().files.keys().cloned().collect()
    }

    /// Simulates power loss: every file falls back to its durable image plus
    /// each of its unsynced writes whole, torn or dropped, and some bytes
    /// those writes were changing garbled.
    pub fn crash(&self, rng: &mut SimRng) {
        let mut disk = self.disk.borrow_mut();
        for file in disk.files.values_mut() {
            let mut image = file.durable.clone();
            let writes = std::mem::take(&mut file.unsynced);
            // Each unsynced write may have landed whole, torn, or not at
            // all, independently: a volatile device cache reorders.
            for (pos, data) in &writes {
                let pos = *pos as usize;
                let len = match rng.below(4) {
                    0 => continue,
                    1 => rng.below(data.len() as u64 + 1) as usize,
                    _ => data.len(),
                };
                if image.len() < pos + len {
                    image.resize(pos + len, 0);
                }
                for (j, &byte) in data[..len].iter().enumerate() {
                    let changes = file.durable.get(pos + j) != Some(&byte);
                    // A byte the write was changing may land as garbage; a
                    // byte it rewrote with the same value cannot change.
                    image[pos + j] = if changes && rng.below(64) == 0 { rng.next_u64() as u8 } else { byte };
                }
            }
            file.current.clone_from(&image);
            file.durable = image;
        }
    }
}

/// Resolves after yielding to the executor once, so concurrent tasks
/// interleave around every simulated I/O as they would around real I/O.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

fn yield_once() -> YieldOnce {
    YieldOnce(false)
}

/// A block-aligned buffer of the simulated disk.
pub struct SimBuf(Vec<u8>);

impl IoBuf for SimBuf {
    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.0
    }

    fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

/// An open file of the simulated disk.
pub struct SimFile {
    storage: SimStorage,
    path: PathBuf,
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut SimFileData) -> T) -> io::Result<T> {
        let mut disk = self.storage.disk.borrow_mut();
        let file = disk.files.get_mut(&self.path).ok_or_else(|| not_found(&self.path))?;
        Ok(f(file))
    }
}

impl DmaFile for SimFile {
    type Buf = SimBuf;
    type ReadChunk = Vec<u8>;

    fn alloc(&self, len: usize) -> SimBuf {
        assert!(len.is_multiple_of(BLOCK_BYTES));
        SimBuf(vec![0; len])
    }

    async fn write_at(&self, buf: SimBuf, len: usize, pos: u64) -> io::Result<()> {
        assert!(len.is_multiple_of(BLOCK_BYTES) && pos.is_multiple_of(BLOCK_BYTES as u64));
        yield_once().await;
        let mut disk = self.storage.disk.borrow_mut();
        if let Some(kind) = disk.faults.write_error.take() {
            return Err(io::Error::new(kind, "injected write error"));
        }
        disk.check_capacity(&self.path, pos + len as u64)?;
        let file = disk.files.get_mut(&self.path).ok_or_else(|| not_found(&self.path))?;
        let end = pos as usize + len;
        if file.current.len() < end {
            file.current.resize(end, 0);
        }
        file.current[pos as usize..end].copy_from_slice(&buf.0[..len]);
        file.unsynced.push((pos, buf.0[..len].to_vec()));
        Ok(())
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        Ok(Bytes::from(self.read_chunk_at(pos, len).await?))
    }

    async fn read_chunk_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        yield_once().await;
        self.with(|file| {
            let start = (pos as usize).min(file.current.len());
            let end = (pos as usize + len).min(file.current.len());
            file.current[start..end].to_vec()
        })
    }

    async fn fdatasync(&self) -> io::Result<()> {
        yield_once().await;
        let mut disk = self.storage.disk.borrow_mut();
        if let Some(kind) = disk.faults.fdatasync_error.take() {
            return Err(io::Error::new(kind, "injected fdatasync error"));
        }
        disk.fdatasyncs += 1;
        let file = disk.files.get_mut(&self.path).ok_or_else(|| not_found(&self.path))?;
        file.durable.clone_from(&file.current);
        file.unsynced.clear();
        Ok(())
    }

    async fn allocate(&self, len: u64) -> io::Result<()> {
        let mut disk = self.storage.disk.borrow_mut();
        let current = disk.files.get(&self.path).map_or(0, |f| f.current.len() as u64);
        disk.check_capacity(&self.path, len.max(current))?;
        let file = disk.files.get_mut(&self.path).ok_or_else(|| not_found(&self.path))?;
        file.reserved = file.reserved.max(len);
        // Like fallocate without KEEP_SIZE: the file grows, with zeroes.
        if (file.current.len() as u64) < len {
            file.current.resize(len as usize, 0);
            file.durable.resize(len as usize, 0);
        }
        Ok(())
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.with(|file| {
            file.current.resize(len as usize, 0);
            file.durable.resize(len as usize, 0);
            for (pos, data) in &mut file.unsynced {
                data.truncate((len.saturating_sub(*pos)) as usize);
            }
            file.reserved = file.reserved.min(len);
        })
    }

    async fn size(&self) -> io::Result<u64> {
        self.with(|file| file.current.len() as u64)
    }

    async fn close(self) -> io::Result<()> {
        Ok(())
    }
}

impl Storage for SimStorage {
    type File = SimFile;

    async fn open_dma(&self, path: &Path, mode: OpenMode) -> io::Result<SimFile> {
        let mut disk = self.disk.borrow_mut();
        let exists = disk.files.contains_key(path);
        match mode {
            OpenMode::Existing if !exists => return Err(not_found(path)),
            OpenMode::CreateNew if exists => {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} exists", path.display())));
            }
            OpenMode::CreateNew => {
                disk.files.insert(path.to_path_buf(), SimFileData::default());
            }
            OpenMode::Existing => {}
        }
        Ok(SimFile { storage: self.clone(), path: path.to_path_buf() })
    }

    async fn write_file_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        yield_once().await;
        let mut disk = self.disk.borrow_mut();
        if let Some(kind) = disk.faults.write_error.take() {
            return Err(io::Error::new(kind, "injected write error"));
        }
        disk.check_capacity(path, data.len() as u64)?;
        disk.files.insert(
            path.to_path_buf(),
            SimFileData { current: data.to_vec(), durable: data.to_vec(), unsynced: Vec::new(), reserved: 0 },
        );
        Ok(())
    }

    async fn read_file(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        Ok(self.disk.borrow().files.get(path).map(|f| f.current.clone()))
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        let mut disk = self.disk.borrow_mut();
        match disk.faults.remove_error_after {
            Some(0) => {
                disk.faults.remove_error_after = None;
                return Err(io::Error::other("injected remove error"));
            }
            Some(n) => disk.faults.remove_error_after = Some(n - 1),
            None => {}
        }
        disk.files.remove(path).map(|_| ()).ok_or_else(|| not_found(path))
    }

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.disk.borrow_mut().dirs.insert(path.to_path_buf());
        Ok(())
    }

    async fn sync_dir(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }

    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let disk = self.disk.borrow();
        if !disk.dirs.contains(path) {
            return Err(not_found(path));
        }
        Ok(disk
            .files
            .keys()
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn now_ms(&self) -> i64 {
        self.disk.borrow().clock_ms
    }
}
