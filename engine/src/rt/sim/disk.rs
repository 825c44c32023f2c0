//! A deterministic, fault-injecting disk.
//!
//! It keeps what a real disk would keep after power loss apart from what
//! readers see now, for file contents *and* for directory entries:
//!
//! - a file's data and size are durable only up to its last fdatasync; the
//!   writes since are replayed by [`SimStorage::crash`] whole, torn at a
//!   random byte, or not at all, each on its own (a volatile device cache
//!   reorders), and bytes they were changing may land garbled;
//! - a name (a file created, renamed or removed) is durable only once its
//!   directory is synced: after a crash an unsynced new file is gone and an
//!   unsynced removal is undone;
//! - open files are inodes: a removed file stays readable through a handle
//!   opened before, as on Linux.
//!
//! Driven by a [`super::SimExecutor`] ([`SimStorage::with_executor`]), every
//! operation takes a random virtual time, so I/O completes out of issue
//! order; without one, each yields once (enough for a plain executor).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;

use super::SimRng;
use super::executor::SimExecutor;
use crate::rt::{BLOCK_BYTES, DmaFile, IoBuf, OpenMode, Storage};

type Ino = u64;

#[derive(Default, Debug)]
struct Inode {
    current: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<(u64, Vec<u8>)>,
    reserved: u64,
}

#[derive(Default, Debug)]
struct Faults {
    fdatasync_error: Option<io::ErrorKind>,
    write_error: Option<io::ErrorKind>,
    /// The next directory sync fails (and makes nothing durable).
    sync_dir_error: Option<io::ErrorKind>,
    /// Fail the removal after this many more succeed.
    remove_error_after: Option<usize>,
    capacity_bytes: Option<u64>,
    /// fdatasyncs wait until released.
    hold_fdatasyncs: bool,
    /// Reads of files under this directory wait until released.
    hold_reads: Option<PathBuf>,
    held: Vec<Waker>,
}

impl Faults {
    /// One removal more: fails it if `fail_remove_after` says this is the one.
    fn count_removal(&mut self) -> io::Result<()> {
        match self.remove_error_after {
            Some(0) => {
                self.remove_error_after = None;
                Err(io::Error::other("injected remove error"))
            }
            Some(n) => {
                self.remove_error_after = Some(n - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }
}

#[derive(Debug)]
struct SimDisk {
    inodes: BTreeMap<Ino, Inode>,
    next_ino: Ino,
    /// What readers see.
    names: BTreeMap<PathBuf, Ino>,
    /// What survives a power loss: each directory as of its last sync.
    durable_names: BTreeMap<PathBuf, Ino>,
    dirs: BTreeSet<PathBuf>,
    clock_ms: i64,
    faults: Faults,
    fdatasyncs: u64,
}

/// An in-memory disk shared by the handles of one test or simulation.
#[derive(Clone)]
pub struct SimStorage {
    disk: Rc<RefCell<SimDisk>>,
    executor: Option<SimExecutor>,
}

impl std::fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimStorage").finish_non_exhaustive()
    }
}

impl Default for SimStorage {
    fn default() -> Self {
        SimStorage::new()
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
        self.inodes.values().map(|f| (f.current.len() as u64).max(f.reserved)).sum()
    }

    fn check_capacity(&self, ino: Option<Ino>, new_len: u64) -> io::Result<()> {
        let Some(capacity) = self.faults.capacity_bytes else { return Ok(()) };
        let old = ino.and_then(|i| self.inodes.get(&i)).map_or(0, |f| (f.current.len() as u64).max(f.reserved));
        if new_len > old && self.used_bytes() + (new_len - old) > capacity {
            return Err(enospc());
        }
        Ok(())
    }

    fn new_inode(&mut self, inode: Inode) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, inode);
        ino
    }

    /// Frees inodes no name (current or durable) refers to. Open handles
    /// keep nothing alive here: the tests that read a removed file read it
    /// before the next sweep, which runs only at a crash.
    fn sweep(&mut self) {
        let live: BTreeSet<Ino> = self.names.values().chain(self.durable_names.values()).copied().collect();
        self.inodes.retain(|ino, _| live.contains(ino));
    }
}

/// Resolves after yielding to the executor once, so concurrent tasks
/// interleave around every simulated I/O as they would around real I/O.
pub(crate) struct YieldOnce(bool);

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

pub(crate) fn yield_once() -> YieldOnce {
    YieldOnce(false)
}

/// Waits while fdatasyncs (or reads of `read_of`) are held.
struct Held<'a> {
    storage: &'a SimStorage,
    read_of: Option<&'a Path>,
}

impl Future for Held<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut disk = self.storage.disk.borrow_mut();
        let held = match self.read_of {
            None => disk.faults.hold_fdatasyncs,
            Some(path) => disk.faults.hold_reads.as_ref().is_some_and(|dir| path.starts_with(dir)),
        };
        if held {
            disk.faults.held.push(cx.waker().clone());
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}

/// What kind of operation is waiting, for its simulated latency.
#[derive(Clone, Copy)]
enum Op {
    Meta,
    Read,
    Write,
    Sync,
}

impl SimStorage {
    /// A disk whose operations each yield once (for any executor); its
    /// clock moves only when a test moves it.
    #[must_use]
    pub fn new() -> SimStorage {
        SimStorage {
            disk: Rc::new(RefCell::new(SimDisk {
                inodes: BTreeMap::new(),
                next_ino: 0,
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                dirs: BTreeSet::new(),
                clock_ms: super::executor::SIM_EPOCH_MS,
                faults: Faults::default(),
                fdatasyncs: 0,
            })),
            executor: None,
        }
    }

    /// A disk driven by `executor`: each operation takes a random virtual
    /// time (so operations complete out of issue order), and its clock is
    /// the simulation's.
    #[must_use]
    pub fn with_executor(executor: &SimExecutor) -> SimStorage {
        SimStorage { executor: Some(executor.clone()), ..SimStorage::new() }
    }

    /// The same disk seen from another simulation (a restarted process).
    #[must_use]
    pub fn reattach(&self, executor: &SimExecutor) -> SimStorage {
        SimStorage { disk: self.disk.clone(), executor: Some(executor.clone()) }
    }

    async fn latency(&self, op: Op) {
        let Some(ex) = &self.executor else {
            yield_once().await;
            return;
        };
        let us = match op {
            Op::Meta => 5 + ex.random_below(50),
            Op::Read => 20 + ex.random_below(200),
            Op::Write => 20 + ex.random_below(400),
            Op::Sync => 50 + ex.random_below(2000),
        };
        ex.clock().sleep(Duration::from_micros(us)).await;
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

    /// The next directory sync fails with `kind` and makes nothing durable.
    pub fn fail_next_sync_dir(&self, kind: io::ErrorKind) {
        self.disk.borrow_mut().faults.sync_dir_error = Some(kind);
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

    /// While held, every fdatasync waits (a slow device); releasing lets
    /// them all go on.
    pub fn hold_fdatasyncs(&self, hold: bool) {
        let waiting = {
            let mut disk = self.disk.borrow_mut();
            disk.faults.hold_fdatasyncs = hold;
            if hold { Vec::new() } else { std::mem::take(&mut disk.faults.held) }
        };
        for w in waiting {
            w.wake();
        }
    }

    /// While set, reads of files under `dir` wait (a device that stalls for
    /// one partition); `None` lets them all go on.
    pub fn hold_reads(&self, dir: Option<PathBuf>) {
        let waiting = {
            let mut disk = self.disk.borrow_mut();
            let release = dir.is_none();
            disk.faults.hold_reads = dir;
            if release { std::mem::take(&mut disk.faults.held) } else { Vec::new() }
        };
        for w in waiting {
            w.wake();
        }
    }

    /// How many fdatasyncs completed: tests of group commit count them.
    #[must_use]
    pub fn fdatasync_count(&self) -> u64 {
        self.disk.borrow().fdatasyncs
    }

    /// Bytes the files take (their sizes, or what was reserved if more).
    #[must_use]
    pub fn used_bytes(&self) -> u64 {
        self.disk.borrow().used_bytes()
    }

    /// The current contents of a file (for tests that damage files).
    #[must_use]
    pub fn file_contents(&self, path: &Path) -> Option<Vec<u8>> {
        let disk = self.disk.borrow();
        disk.names.get(path).and_then(|i| disk.inodes.get(i)).map(|f| f.current.clone())
    }

    /// Replaces a file's contents, durably (for tests that damage files).
    pub fn set_file_contents(&self, path: &Path, data: Vec<u8>) {
        let mut disk = self.disk.borrow_mut();
        let ino = match disk.names.get(path) {
            Some(&ino) => ino,
            None => disk.new_inode(Inode::default()),
        };
        disk.names.insert(path.to_path_buf(), ino);
        disk.durable_names.insert(path.to_path_buf(), ino);
        let file = disk.inodes.get_mut(&ino).expect("just made");
        file.durable.clone_from(&data);
        file.current = data;
        file.unsynced.clear();
    }

    /// Deletes a file behind the log's back, durably (for tests that damage files).
    pub fn disk_remove(&self, path: &Path) {
        let mut disk = self.disk.borrow_mut();
        disk.names.remove(path);
        disk.durable_names.remove(path);
    }

    /// The names of all files, for tests.
    #[must_use]
    pub fn file_paths(&self) -> Vec<PathBuf> {
        self.disk.borrow().names.keys().cloned().collect()
    }

    /// Simulates power loss: names fall back to their directories' last
    /// sync, and every file to its durable image plus each of its unsynced
    /// writes whole, torn or dropped, with some bytes they were changing
    /// garbled.
    pub fn crash(&self, rng: &mut SimRng) {
        let mut disk = self.disk.borrow_mut();
        let durable = disk.durable_names.clone();
        disk.names = durable;
        for file in disk.inodes.values_mut() {
            let mut image = file.durable.clone();
            let writes = std::mem::take(&mut file.unsynced);
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
            file.reserved = file.reserved.min(file.current.len() as u64);
        }
        disk.sweep();
        disk.faults.hold_fdatasyncs = false;
        disk.faults.held.clear();
    }
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

/// An open file of the simulated disk: a handle on its inode.
pub struct SimFile {
    storage: SimStorage,
    ino: Ino,
    path: PathBuf,
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut Inode) -> T) -> io::Result<T> {
        let mut disk = self.storage.disk.borrow_mut();
        let file = disk.inodes.get_mut(&self.ino).ok_or_else(|| not_found(&self.path))?;
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
        self.storage.latency(Op::Write).await;
        let mut disk = self.storage.disk.borrow_mut();
        if let Some(kind) = disk.faults.write_error.take() {
            return Err(io::Error::new(kind, "injected write error"));
        }
        disk.check_capacity(Some(self.ino), pos + len as u64)?;
        let file = disk.inodes.get_mut(&self.ino).ok_or_else(|| not_found(&self.path))?;
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
        Held { storage: &self.storage, read_of: Some(&self.path) }.await;
        self.storage.latency(Op::Read).await;
        self.with(|file| {
            let start = (pos as usize).min(file.current.len());
            let end = (pos as usize + len).min(file.current.len());
            file.current[start..end].to_vec()
        })
    }

    async fn fdatasync(&self) -> io::Result<()> {
        Held { storage: &self.storage, read_of: None }.await;
        self.storage.latency(Op::Sync).await;
        let mut disk = self.storage.disk.borrow_mut();
        if let Some(kind) = disk.faults.fdatasync_error.take() {
            return Err(io::Error::new(kind, "injected fdatasync error"));
        }
        disk.fdatasyncs += 1;
        let file = disk.inodes.get_mut(&self.ino).ok_or_else(|| not_found(&self.path))?;
        // Data and size; not the file's name (that takes a directory sync).
        file.durable.clone_from(&file.current);
        file.unsynced.clear();
        Ok(())
    }

    async fn allocate(&self, len: u64) -> io::Result<()> {
        self.storage.latency(Op::Meta).await;
        let mut disk = self.storage.disk.borrow_mut();
        let current = disk.inodes.get(&self.ino).map_or(0, |f| f.current.len() as u64);
        disk.check_capacity(Some(self.ino), len.max(current))?;
        let file = disk.inodes.get_mut(&self.ino).ok_or_else(|| not_found(&self.path))?;
        file.reserved = file.reserved.max(len);
        // Like fallocate without KEEP_SIZE: the file grows, with zeroes; the
        // new size is durable with the next fdatasync.
        if (file.current.len() as u64) < len {
            file.current.resize(len as usize, 0);
        }
        Ok(())
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.storage.latency(Op::Meta).await;
        // Durable with the next fdatasync, like any size change.
        self.with(|file| {
            file.current.resize(len as usize, 0);
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

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("/"))
}

impl Storage for SimStorage {
    type File = SimFile;

    async fn open_dma(&self, path: &Path, mode: OpenMode) -> io::Result<SimFile> {
        self.latency(Op::Meta).await;
        let mut disk = self.disk.borrow_mut();
        let ino = match (mode, disk.names.get(path).copied()) {
            (OpenMode::Existing, Some(ino)) => ino,
            (OpenMode::Existing, None) => return Err(not_found(path)),
            (OpenMode::CreateNew, Some(_)) => {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} exists", path.display())));
            }
            (OpenMode::CreateNew, None) => {
                if !disk.dirs.contains(parent(path)) {
                    return Err(not_found(parent(path)));
                }
                let ino = disk.new_inode(Inode::default());
                disk.names.insert(path.to_path_buf(), ino);
                ino
            }
        };
        Ok(SimFile { storage: self.clone(), ino, path: path.to_path_buf() })
    }

    async fn write_file_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        // Temporary file written and synced, renamed over `path`, directory
        // synced: when this returns, the new contents are durable.
        self.latency(Op::Sync).await;
        let mut disk = self.disk.borrow_mut();
        if let Some(kind) = disk.faults.write_error.take() {
            return Err(io::Error::new(kind, "injected write error"));
        }
        disk.check_capacity(None, data.len() as u64)?;
        if !disk.dirs.contains(parent(path)) {
            return Err(not_found(parent(path)));
        }
        let ino =
            disk.new_inode(Inode { current: data.to_vec(), durable: data.to_vec(), unsynced: Vec::new(), reserved: 0 });
        disk.names.insert(path.to_path_buf(), ino);
        disk.durable_names.insert(path.to_path_buf(), ino);
        Ok(())
    }

    async fn read_file(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        self.latency(Op::Read).await;
        let disk = self.disk.borrow();
        Ok(disk.names.get(path).and_then(|i| disk.inodes.get(i)).map(|f| f.current.clone()))
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        self.latency(Op::Meta).await;
        let mut disk = self.disk.borrow_mut();
        disk.faults.count_removal()?;
        disk.names.remove(path).map(|_| ()).ok_or_else(|| not_found(path))
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.latency(Op::Meta).await;
        let mut disk = self.disk.borrow_mut();
        let moved: Vec<(PathBuf, Ino)> =
            disk.names.iter().filter(|(p, _)| p.starts_with(from)).map(|(p, i)| (p.clone(), *i)).collect();
        if moved.is_empty() && !disk.dirs.contains(from) {
            return Err(not_found(from));
        }
        for (p, ino) in moved {
            disk.names.remove(&p);
            let rest = p.strip_prefix(from).expect("filtered");
            let target = if rest.as_os_str().is_empty() { to.to_path_buf() } else { to.join(rest) };
            disk.names.insert(target, ino);
        }
        let dirs: Vec<PathBuf> = disk.dirs.iter().filter(|d| d.starts_with(from)).cloned().collect();
        for d in dirs {
            disk.dirs.remove(&d);
            let rest = d.strip_prefix(from).expect("filtered").to_path_buf();
            disk.dirs.insert(if rest.as_os_str().is_empty() { to.to_path_buf() } else { to.join(rest) });
        }
        Ok(())
    }

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        // Durable on return, as the trait promises (the directories survive
        // `crash`).
        let mut disk = self.disk.borrow_mut();
        for dir in path.ancestors() {
            disk.dirs.insert(dir.to_path_buf());
        }
        Ok(())
    }

    async fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.latency(Op::Meta).await;
        let mut disk = self.disk.borrow_mut();
        if !disk.dirs.contains(path) {
            return Err(not_found(path));
        }
        disk.faults.count_removal()?;
        disk.names.retain(|p, _| !p.starts_with(path));
        disk.dirs.retain(|d| !d.starts_with(path));
        // Removing a tree and syncing its parent: durable at once (the
        // broker only removes what its metadata already forgot).
        disk.durable_names.retain(|p, _| !p.starts_with(path));
        Ok(())
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.latency(Op::Sync).await;
        let mut disk = self.disk.borrow_mut();
        if let Some(kind) = disk.faults.sync_dir_error.take() {
            return Err(io::Error::from(kind));
        }
        let SimDisk { names, durable_names, .. } = &mut *disk;
        durable_names.retain(|p, _| parent(p) != path || names.contains_key(p));
        for (p, ino) in names.iter() {
            if parent(p) == path {
                durable_names.insert(p.clone(), *ino);
            }
        }
        Ok(())
    }

    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let disk = self.disk.borrow();
        if !disk.dirs.contains(path) {
            return Err(not_found(path));
        }
        let mut names: BTreeSet<String> = disk
            .names
            .keys()
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        names.extend(
            disk.dirs
                .iter()
                .filter(|d| d.parent() == Some(path))
                .filter_map(|d| d.file_name().map(|n| n.to_string_lossy().into_owned())),
        );
        Ok(names.into_iter().collect())
    }

    async fn is_dir(&self, path: &Path) -> io::Result<bool> {
        Ok(self.disk.borrow().dirs.contains(path))
    }

    fn now_ms(&self) -> i64 {
        match &self.executor {
            Some(ex) => ex.clock().now_ms() + (self.disk.borrow().clock_ms - super::executor::SIM_EPOCH_MS),
            None => self.disk.borrow().clock_ms,
        }
    }

    fn instant(&self) -> std::time::Instant {
        match &self.executor {
            Some(ex) => ex.clock().now(),
            None => std::time::Instant::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

    #[test]
    fn a_new_file_survives_a_crash_only_once_its_directory_is_synced() {
        let storage = SimStorage::new();
        let dir = Path::new("/d");
        block_on(storage.create_dir_all(dir)).unwrap();
        let a = dir.join("a");
        let file = block_on(storage.open_dma(&a, OpenMode::CreateNew)).unwrap();
        let mut buf = file.alloc(BLOCK_BYTES);
        buf.as_mut_slice().fill(7);
        block_on(file.write_at(buf, BLOCK_BYTES, 0)).unwrap();
        block_on(file.fdatasync()).unwrap();
        storage.crash(&mut SimRng::new(1));
        assert!(storage.file_contents(&a).is_none(), "synced data, but the name was never synced");

        let file = block_on(storage.open_dma(&a, OpenMode::CreateNew)).unwrap();
        block_on(storage.sync_dir(dir)).unwrap();
        let mut buf = file.alloc(BLOCK_BYTES);
        buf.as_mut_slice().fill(7);
        block_on(file.write_at(buf, BLOCK_BYTES, 0)).unwrap();
        block_on(file.fdatasync()).unwrap();
        block_on(storage.remove(&a)).unwrap();
        // Removed, but the removal was never synced: it is undone.
        storage.crash(&mut SimRng::new(1));
        assert_eq!(storage.file_contents(&a).unwrap(), vec![7; BLOCK_BYTES]);
    }

    #[test]
    fn a_removed_file_stays_readable_through_an_open_handle() {
        let storage = SimStorage::new();
        block_on(storage.create_dir_all(Path::new("/d"))).unwrap();
        let a = Path::new("/d/a");
        let file = block_on(storage.open_dma(a, OpenMode::CreateNew)).unwrap();
        let mut buf = file.alloc(BLOCK_BYTES);
        buf.as_mut_slice().fill(3);
        block_on(file.write_at(buf, BLOCK_BYTES, 0)).unwrap();
        block_on(storage.remove(a)).unwrap();
        assert_eq!(block_on(file.read_at(0, 4)).unwrap().as_ref(), &[3, 3, 3, 3]);
        assert!(block_on(storage.open_dma(a, OpenMode::Existing)).is_err());
    }

    #[test]
    fn a_size_change_is_durable_with_the_next_fdatasync() {
        let storage = SimStorage::new();
        block_on(storage.create_dir_all(Path::new("/d"))).unwrap();
        let a = Path::new("/d/a");
        storage.set_file_contents(a, vec![1; 3 * BLOCK_BYTES]);
        let file = block_on(storage.open_dma(a, OpenMode::Existing)).unwrap();
        block_on(file.truncate(BLOCK_BYTES as u64)).unwrap();
        storage.crash(&mut SimRng::new(1));
        assert_eq!(storage.file_contents(a).unwrap().len(), 3 * BLOCK_BYTES, "the truncation was not synced");
        let file = block_on(storage.open_dma(a, OpenMode::Existing)).unwrap();
        block_on(file.truncate(BLOCK_BYTES as u64)).unwrap();
        block_on(file.fdatasync()).unwrap();
        storage.crash(&mut SimRng::new(1));
        assert_eq!(storage.file_contents(a).unwrap().len(), BLOCK_BYTES);
    }

    #[test]
    fn with_an_executor_operations_complete_out_of_issue_order() {
        let ex = SimExecutor::new(5);
        let storage = SimStorage::with_executor(&ex);
        let order = Rc::new(RefCell::new(Vec::new()));
        let s = storage.clone();
        let o = order.clone();
        ex.block_on(async move {
            s.create_dir_all(Path::new("/d")).await.unwrap();
            let mut reads = Vec::new();
            for i in 0..16 {
                let s = s.clone();
                let o = o.clone();
                reads.push(async move {
                    let _ = s.read_file(Path::new("/d/x")).await;
                    o.borrow_mut().push(i);
                });
            }
            futures::future::join_all(reads).await;
        });
        let got = order.borrow().clone();
        assert_ne!(got, (0..16).collect::<Vec<_>>(), "random latencies reorder completions");
    }
}
