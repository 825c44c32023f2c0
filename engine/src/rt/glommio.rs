//! The production runtime: glommio on the executor of the current core —
//! DMA files (O_DIRECT through io_uring), local tasks, timers and TCP
//! sockets with SO_REUSEPORT.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use glommio::io::{BufferedFile, Directory, DmaBuffer, OpenOptions};

use super::{BLOCK_BYTES, DmaFile, IoBuf, Listener, OpenMode, Runtime, Storage, Stream};

/// Storage on the local file system of the current glommio executor.
#[derive(Clone, Debug, Default)]
pub struct GlommioStorage {
    _private: (),
}

impl GlommioStorage {
    /// Must run on a glommio executor, once per executor thread, before any
    /// log is opened there.
    ///
    /// glommio decides per device, once per thread, whether the device takes
    /// polled I/O by reading the first block of the first DMA file it opens.
    /// If that file is empty the read succeeds without touching the device,
    /// glommio concludes "pollable", and every later read on a device without
    /// poll queues (virtio disks among them) fails with `EOPNOTSUPP`. We make
    /// the first DMA file one with a real block in it.
    pub async fn new(data_dir: &Path) -> io::Result<GlommioStorage> {
        // One probe file per executor: several start at once on one directory.
        static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        std::fs::create_dir_all(data_dir)?;
        let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let probe = data_dir.join(format!(".iopoll-probe-{}-{n}", std::process::id()));
        std::fs::write(&probe, vec![0xA5u8; BLOCK_BYTES])?;
        let result = async {
            let file = OpenOptions::new().read(true).dma_open(&probe).await.map_err(io::Error::from)?;
            file.close().await.map_err(io::Error::from)
        }
        .await;
        let _ = std::fs::remove_file(&probe);
        result?;
        Ok(GlommioStorage { _private: () })
    }
}

/// glommio's DMA buffer: aligned, possibly from the ring's registered memory.
pub struct GlommioBuf(DmaBuffer);

impl IoBuf for GlommioBuf {
    fn as_mut_slice(&mut self) -> &mut [u8] {
        self.0.as_bytes_mut()
    }

    fn as_slice(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// An O_DIRECT file on the current executor.
pub struct GlommioFile(glommio::io::DmaFile);

/// A read into glommio's buffer, cut to the length asked for.
pub struct GlommioChunk {
    result: glommio::io::ReadResult,
    len: usize,
}

impl std::ops::Deref for GlommioChunk {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.result[..self.len]
    }
}

impl DmaFile for GlommioFile {
    type Buf = GlommioBuf;
    type ReadChunk = GlommioChunk;

    fn alloc(&self, len: usize) -> GlommioBuf {
        assert!(len.is_multiple_of(BLOCK_BYTES));
        GlommioBuf(self.0.alloc_dma_buffer(len))
    }

    async fn write_at(&self, mut buf: GlommioBuf, len: usize, pos: u64) -> io::Result<()> {
        assert!(len.is_multiple_of(BLOCK_BYTES) && pos.is_multiple_of(BLOCK_BYTES as u64));
        buf.0.trim_to_size(len);
        let written = self.0.write_at(buf.0, pos).await.map_err(io::Error::from)?;
        if written != len {
            return Err(io::Error::new(io::ErrorKind::WriteZero, format!("short write: {written} of {len} bytes")));
        }
        Ok(())
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        Ok(Bytes::copy_from_slice(&self.read_chunk_at(pos, len).await?))
    }

    async fn read_chunk_at(&self, pos: u64, len: usize) -> io::Result<GlommioChunk> {
        let result = self.0.read_at(pos, len).await.map_err(io::Error::from)?;
        let len = result.len().min(len);
        Ok(GlommioChunk { result, len })
    }

    async fn fdatasync(&self) -> io::Result<()> {
        self.0.fdatasync().await.map_err(io::Error::from)
    }

    async fn allocate(&self, len: u64) -> io::Result<()> {
        self.0.pre_allocate(len, false).await.map_err(io::Error::from)
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.0.truncate(len).await.map_err(io::Error::from)
    }

    async fn size(&self) -> io::Result<u64> {
        self.0.file_size().await.map_err(io::Error::from)
    }

    async fn close(self) -> io::Result<()> {
        self.0.close().await.map_err(io::Error::from)
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(std::ffi::OsStr::to_os_string).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

impl Storage for GlommioStorage {
    type File = GlommioFile;

    async fn open_dma(&self, path: &Path, mode: OpenMode) -> io::Result<GlommioFile> {
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        if mode == OpenMode::CreateNew {
            options.create_new(true);
        }
        let file = options.dma_open(path).await.map_err(io::Error::from)?;
        Ok(GlommioFile(file))
    }

    async fn write_file_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let tmp = tmp_path(path);
        let file = BufferedFile::create(&tmp).await.map_err(io::Error::from)?;
        let written = file.write_at(data.to_vec(), 0).await.map_err(io::Error::from)?;
        if written != data.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short write"));
        }
        file.fdatasync().await.map_err(io::Error::from)?;
        file.close().await.map_err(io::Error::from)?;
        glommio::io::rename(&tmp, path).await.map_err(io::Error::from)?;
        self.sync_dir(path.parent().unwrap_or(Path::new("."))).await
    }

    async fn read_file(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        let file = match BufferedFile::open(path).await {
            Ok(file) => file,
            Err(e) => {
                let e = io::Error::from(e);
                return if e.kind() == io::ErrorKind::NotFound { Ok(None) } else { Err(e) };
            }
        };
        let size = file.file_size().await.map_err(io::Error::from)?;
        let data = file.read_at(0, size as usize).await.map_err(io::Error::from)?;
        let data = data.to_vec();
        file.close().await.map_err(io::Error::from)?;
        Ok(Some(data))
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        glommio::io::remove(path).await.map_err(io::Error::from)
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        glommio::io::rename(from, to).await.map_err(io::Error::from)
    }

    async fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        // Many unlinks: on a helper thread, so this core keeps serving.
        let path = path.to_path_buf();
        glommio::executor().spawn_blocking(move || std::fs::remove_dir_all(path)).await
    }

    async fn is_dir(&self, path: &Path) -> io::Result<bool> {
        match std::fs::metadata(path) {
            Ok(m) => Ok(m.is_dir()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
            return Ok(());
        }
        // New directories: created, then each one's entry made durable by
        // syncing its parent, top down (a helper thread: several fsyncs).
        let path = path.to_path_buf();
        glommio::executor().spawn_blocking(move || super::create_dir_all_durable(&path)).await
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        // glommio opens a directory relative to no descriptor: a relative
        // path fails with EBADF, so make it absolute first.
        let path = std::path::absolute(path)?;
        let dir = Directory::open(&path).await.map_err(io::Error::from)?;
        dir.sync().await.map_err(io::Error::from)?;
        dir.close().await.map_err(io::Error::from)
    }

    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn now_ms(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
    }

    fn instant(&self) -> std::time::Instant {
        std::time::Instant::now()
    }
}

/// The runtime of one glommio executor (one core).
#[derive(Clone, Debug)]
pub struct GlommioRuntime {
    storage: GlommioStorage,
}

impl GlommioRuntime {
    /// Must run on a glommio executor; see [`GlommioStorage::new`].
    pub async fn new(data_dir: &Path) -> io::Result<GlommioRuntime> {
        Ok(GlommioRuntime { storage: GlommioStorage::new(data_dir).await? })
    }
}

/// A glommio timer that resolves to `()`.
pub struct GlommioSleep(glommio::timer::Timer);

impl Future for GlommioSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// A TCP listener of this core.
pub struct GlommioListener(glommio::net::TcpListener);

impl Listener for GlommioListener {
    type Stream = GlommioStream;

    async fn accept(&self) -> io::Result<(GlommioStream, SocketAddr)> {
        let stream = self.0.accept().await.map_err(io::Error::from)?;
        let peer = stream.peer_addr().map_err(io::Error::from)?;
        Ok((GlommioStream(stream), peer))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr().map_err(io::Error::from)
    }
}

/// A TCP connection of this core.
pub struct GlommioStream(glommio::net::TcpStream);

impl futures::io::AsyncRead for GlommioStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl futures::io::AsyncWrite for GlommioStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

impl Stream for GlommioStream {
    fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.0.set_nodelay(nodelay).map_err(io::Error::from)
    }
}

impl Runtime for GlommioRuntime {
    type Storage = GlommioStorage;
    type Stream = GlommioStream;
    type Listener = GlommioListener;
    type Task<T: 'static> = glommio::task::JoinHandle<T>;
    type Sleep = GlommioSleep;

    fn storage(&self) -> &GlommioStorage {
        &self.storage
    }

    fn spawn<T: 'static>(&self, future: impl Future<Output = T> + 'static) -> Self::Task<T> {
        glommio::spawn_local(future).detach()
    }

    fn spawn_background<T: 'static>(&self, future: impl Future<Output = T> + 'static) -> Self::Task<T> {
        thread_local! {
            /// The background task queue of this thread's executor (by its
            /// id: a thread may run executors one after another), made on
            /// first use.
            static BACKGROUND: std::cell::Cell<Option<(usize, glommio::TaskQueueHandle)>> =
                const { std::cell::Cell::new(None) };
        }
        let executor = glommio::executor();
        let id = executor.id();
        let queue = BACKGROUND.with(|q| match q.get() {
            Some((of, queue)) if of == id => queue,
            _ => {
                let queue = executor.create_task_queue(
                    glommio::Shares::Static(super::BACKGROUND_SHARES),
                    glommio::Latency::NotImportant,
                    "background",
                );
                q.set(Some((id, queue)));
                queue
            }
        });
        match glommio::spawn_local_into(future, queue) {
            Ok(task) => task.detach(),
            // The queue was made on this very executor; a failure here is
            // a glommio invariant broken.
            Err(e) => unreachable!("spawning into this executor's background queue: {e}"),
        }
    }

    fn sleep(&self, duration: Duration) -> GlommioSleep {
        GlommioSleep(glommio::timer::Timer::new(duration))
    }

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn listen(&self, addr: SocketAddr) -> io::Result<GlommioListener> {
        glommio::net::TcpListener::bind(addr).map(GlommioListener).map_err(io::Error::from)
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<GlommioStream> {
        glommio::net::TcpStream::connect(addr).await.map(GlommioStream).map_err(io::Error::from)
    }
}
