//! The disk's own numbers, measured in the same run on the same directory,
//! so the broker's figures can be quoted as ratios: the latency of a 4 KiB
//! O_DIRECT write + fdatasync (the floor under an acknowledged produce with
//! `flush = always`), and the bandwidth of 1 MiB O_DIRECT writes each
//! followed by fdatasync.

use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::stats::{LatencySummary, histogram, record};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Baseline {
    /// 4 KiB write + fdatasync, one at a time.
    pub fdatasync_4k: LatencySummary,
    /// 1 MiB O_DIRECT writes, each followed by fdatasync.
    pub write_sync_1m_bytes_per_sec: f64,
}

struct Aligned {
    ptr: *mut u8,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let layout = std::alloc::Layout::from_size_align(len, 4096).expect("layout");
        // SAFETY: non-zero size, valid alignment; freed in Drop with the same layout.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "allocation failed");
        Aligned { ptr, len }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, std::alloc::Layout::from_size_align(self.len, 4096).expect("layout")) }
    }
}

fn pwrite_sync(fd: i32, buf: &Aligned, len: usize, at: u64) -> std::io::Result<()> {
    // SAFETY: buf holds at least len bytes; fd is open for writing.
    let n = unsafe { libc::pwrite(fd, buf.ptr.cast(), len, at as libc::off_t) };
    if n != len as isize {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a valid open descriptor.
    if unsafe { libc::fdatasync(fd) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Measures for about `each` per figure in `dir`, then removes its file.
/// Also returns the fdatasync latency histogram.
pub fn measure(dir: &Path, each: Duration) -> std::io::Result<(Baseline, Histogram<u64>)> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(".cairn-loadgen-baseline");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)?;
    let fd = file.as_raw_fd();
    let result = (|| {
        let small = Aligned::new(4096);
        let mut h = histogram();
        let start = Instant::now();
        let mut at = 0u64;
        while start.elapsed() < each {
            let t = Instant::now();
            pwrite_sync(fd, &small, 4096, at)?;
            record(&mut h, t.elapsed().as_micros() as u64);
            at = (at + 4096) % (64 << 20);
        }
        let big = Aligned::new(1 << 20);
        let start = Instant::now();
        let mut written = 0u64;
        while start.elapsed() < each {
            pwrite_sync(fd, &big, 1 << 20, written % (256 << 20))?;
            written += 1 << 20;
        }
        let baseline = Baseline {
            fdatasync_4k: LatencySummary::of(&h),
            write_sync_1m_bytes_per_sec: written as f64 / start.elapsed().as_secs_f64(),
        };
        Ok((baseline, h))
    })();
    drop(file);
    let _ = std::fs::remove_file(&path);
    result
}
