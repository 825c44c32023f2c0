//! The production runtime: glommio DMA files (O_DIRECT through io_uring) on
//! the executor of the core that owns the log.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use glommio::io::{BufferedFile, Directory, DmaBuffer, OpenOptions};

use super::{BLOCK_BYTES, DmaFile, IoBuf, OpenMode, Storage};

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

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        // Directory creation happens once per partition, at open; blocking
        // the executor for it is cheaper than a round trip to a helper thread.
        std::fs::create_dir_all(path)
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
}

/// Drives `FlushPolicy::IntervalMs` for a log on the current executor: a
/// task that syncs the log whenever the interval has passed, until the log
/// is closed or poisoned. Returns the task's handle.
pub fn spawn_interval_flusher(
    log: std::rc::Rc<crate::log::PartitionLog<GlommioStorage>>,
) -> Option<glommio::task::JoinHandle<()>> {
    let crate::log::FlushPolicy::IntervalMs(ms) = log.config().flush else { return None };
    let task = glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(std::time::Duration::from_millis(ms)).await;
            if let Err(e) = log.sync_if_due().await {
                tracing::debug!(error = %e, "interval flusher stops");
                return;
            }
        }
    });
    Some(task.detach())
}
