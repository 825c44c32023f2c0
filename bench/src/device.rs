//! Device baseline: what the raw disk under the data directory can do, measured
//! with the same I/O path the storage engine uses (`O_DIRECT` through
//! `io_uring`), without any engine code in between.
//!
//! Why it exists: the benchmark machines are shared virtual machines whose
//! disks are noisy, and their speed drifts from hour to hour with the
//! neighbours' load. An absolute engine figure ("N appends/s") measured on one
//! day cannot be compared with one measured on another. Engine figures are
//! therefore quoted as ratios to this baseline, measured on the same disk (the
//! same directory) in the same run, so that the disk's mood of the moment
//! cancels out and what remains is the engine's own overhead.
//!
//! The measurements:
//!
//! - [`write_bandwidth`]: sequential `O_DIRECT` writes at queue depth 1 into a
//!   fresh, preallocated file, one `fdatasync` at the end (timed separately).
//! - [`write_fdatasync`]: the durable-append path: each iteration is one
//!   sequential `O_DIRECT` write linked to an `fdatasync`; the latency of the
//!   pair is recorded in a histogram.
//! - [`read_bandwidth`] and [`read_bandwidth_qd`]: sequential `O_DIRECT` reads
//!   of a file written (and synced) just before.
//!
//! Each measurement creates its own scratch file in the directory and removes
//! it when done, also on error. A measured phase stops early, with the figures
//! of the work done so far, when it runs longer than [`PHASE_TIME_LIMIT`].
//!
//! Caveats worth keeping in mind when reading the figures: the scratch files
//! are preallocated with `fallocate`, which on ext4 leaves *unwritten* extents,
//! so every `fdatasync` after the first write into a block also commits the
//! extent conversion to the journal (the engine's preallocated segments behave
//! the same way). On a virtual disk the host may cache, so the read figures of
//! a file written moments before can be the host's page cache rather than the
//! medium.

use std::alloc::{self, Layout};
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use io_uring::{IoUring, Probe, opcode, squeue, types};

use crate::Flags;

/// Usage of the `device` subcommand.
pub const USAGE: &str = "bench device --dir DIR [--sizes 4096,16384,65536,262144,1048576] [--total-mib 256] \
                         [--sync-count 500]

  --dir DIR         directory on the disk to measure (created if missing); scratch files are removed
  --sizes LIST      comma-separated write sizes in bytes, each a multiple of 4096
  --total-mib N     bytes written (and read) by each bandwidth phase, in MiB
  --sync-count N    write + fdatasync pairs per size

Each measured phase stops early after 15 s. MB/s means 10^6 bytes per second.";

const DEFAULT_SIZES: &str = "4096,16384,65536,262144,1048576";
const DEFAULT_TOTAL_MIB: u64 = 256;
const DEFAULT_SYNC_COUNT: usize = 500;

/// Size of the reads of the read-bandwidth phases.
const READ_BYTES: usize = 1 << 20;

/// The `device` subcommand: parses `args` (the flags after `device`), runs
/// every measurement on `--dir` and prints the figures, each as a
/// human-readable line followed by the same data as a JSON object on a line
/// starting with `json: `.
pub fn run(args: &[String]) -> Result<(), String> {
    if args.iter().any(|arg| arg == "--help" || arg == "-h") {
        println!("usage: {USAGE}");
        return Ok(());
    }
    let flags = Flags::parse(args, &["dir", "sizes", "total-mib", "sync-count"])?;
    let dir = PathBuf::from(flags.get("dir").ok_or_else(|| format!("--dir DIR is required\n\nusage: {USAGE}"))?);
    let sizes = parse_sizes(flags.get("sizes").unwrap_or(DEFAULT_SIZES))?;
    let total_mib: u64 = flags.parse_or("total-mib", DEFAULT_TOTAL_MIB)?;
    let sync_count: usize = flags.parse_or("sync-count", DEFAULT_SYNC_COUNT)?;
    if sync_count == 0 {
        return Err("--sync-count must be at least 1".to_string());
    }
    let total_bytes = total_mib.checked_mul(1 << 20).ok_or_else(|| format!("--total-mib {total_mib} is too large"))?;
    let largest = sizes.iter().copied().max().unwrap_or(0).max(READ_BYTES);
    if total_bytes < largest as u64 {
        return Err(format!("--total-mib {total_mib} is smaller than the largest I/O ({largest} bytes)"));
    }

    let created = !dir.exists();
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let result = measure(&dir, &sizes, total_bytes, sync_count);
    if created {
        // Only succeeds if empty, as it should be once the scratch files are gone.
        let _ = std::fs::remove_dir(&dir);
    }
    result
}

fn parse_sizes(list: &str) -> Result<Vec<usize>, String> {
    let mut sizes = Vec::new();
    for item in list.split(',').map(str::trim).filter(|item| !item.is_empty()) {
        let size: usize = item.parse().map_err(|e| format!("--sizes: `{item}` is not a byte count: {e}"))?;
        if size == 0 || !size.is_multiple_of(ALIGN) || size > MAX_IO_BYTES {
            return Err(format!("--sizes: {size} must be a non-zero multiple of {ALIGN}, at most {MAX_IO_BYTES}"));
        }
        sizes.push(size);
    }
    if sizes.is_empty() {
        return Err("--sizes: no size given".to_string());
    }
    Ok(sizes)
}

fn measure(dir: &Path, sizes: &[usize], total_bytes: u64, sync_count: usize) -> Result<(), String> {
    println!(
        "device baseline: dir {}, {} MiB per bandwidth phase, {sync_count} write+fdatasync per size, \
         O_DIRECT via io_uring, MB = 10^6 bytes",
        dir.display(),
        total_bytes >> 20
    );
    println!(
        "json: {{\"bench\":\"device\",\"test\":\"config\",\"dir\":{},\"total_bytes\":{total_bytes},\
         \"sync_count\":{sync_count},\"sizes\":[{}],\"phase_time_limit_s\":{}}}",
        json_string(&dir.display().to_string()),
        sizes.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        PHASE_TIME_LIMIT.as_secs()
    );
    for &size in sizes {
        let write = write_bandwidth(dir, size, total_bytes)
            .map_err(|e| format!("write bandwidth with {size}-byte writes: {e}"))?;
        print_throughput("write", "writes", &write);
        let sync = write_fdatasync(dir, size, sync_count)
            .map_err(|e| format!("write + fdatasync with {size}-byte writes: {e}"))?;
        print_sync(&sync);
    }
    for queue_depth in [1, 4] {
        let read = if queue_depth == 1 {
            read_bandwidth(dir, READ_BYTES, total_bytes)
        } else {
            read_bandwidth_qd(dir, READ_BYTES, total_bytes, queue_depth)
        }
        .map_err(|e| format!("read bandwidth at queue depth {queue_depth}: {e}"))?;
        print_throughput("read", "reads", &read);
    }
    Ok(())
}

fn print_throughput(test: &str, unit: &str, t: &Throughput) {
    let sync = if t.final_sync.is_zero() {
        String::new()
    } else {
        format!(
            "; final fdatasync {:.2} ms, {:.1} MB/s including it",
            t.final_sync.as_secs_f64() * 1e3,
            t.bytes_per_sec_with_sync() / 1e6
        )
    };
    println!(
        "{test:<16} {:>8} QD{}: {:>8.1} MB/s {:>9.0} {unit}/s  ({} {unit} in {:.3} s{sync}){}",
        human_size(t.io_bytes),
        t.queue_depth,
        t.bytes_per_sec() / 1e6,
        t.ops_per_sec(),
        t.ops,
        t.elapsed.as_secs_f64(),
        incomplete(t.complete)
    );
    println!(
        "json: {{\"bench\":\"device\",\"test\":\"{test}\",\"io_bytes\":{},\"queue_depth\":{},\"ops\":{},\
         \"bytes\":{},\"elapsed_s\":{},\"bytes_per_sec\":{},\"ops_per_sec\":{},\"final_sync_s\":{},\
         \"bytes_per_sec_with_sync\":{},\"complete\":{}}}",
        t.io_bytes,
        t.queue_depth,
        t.ops,
        t.bytes,
        json_number(t.elapsed.as_secs_f64()),
        json_number(t.bytes_per_sec()),
        json_number(t.ops_per_sec()),
        json_number(t.final_sync.as_secs_f64()),
        json_number(t.bytes_per_sec_with_sync()),
        t.complete
    );
}

fn print_sync(s: &SyncStats) {
    println!(
        "{:<16} {:>8} QD1: {:>8.1} MB/s {:>9.1} ops/s  p50 {} µs  p99 {} µs  max {} µs  ({} ops in {:.3} s){}",
        "write+fdatasync",
        human_size(s.io_bytes),
        s.bytes_per_sec() / 1e6,
        s.ops_per_sec(),
        s.quantile_us(0.5),
        s.quantile_us(0.99),
        s.max_us(),
        s.ops,
        s.elapsed.as_secs_f64(),
        incomplete(s.complete)
    );
    println!(
        "json: {{\"bench\":\"device\",\"test\":\"write_fdatasync\",\"io_bytes\":{},\"queue_depth\":1,\
         \"ops\":{},\"bytes\":{},\"elapsed_s\":{},\"ops_per_sec\":{},\"bytes_per_sec\":{},\"p50_us\":{},\
         \"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"mean_us\":{},\"complete\":{}}}",
        s.io_bytes,
        s.ops,
        s.bytes,
        json_number(s.elapsed.as_secs_f64()),
        json_number(s.ops_per_sec()),
        json_number(s.bytes_per_sec()),
        s.quantile_us(0.5),
        s.quantile_us(0.9),
        s.quantile_us(0.99),
        s.quantile_us(0.999),
        s.max_us(),
        json_number(s.mean_us()),
        s.complete
    );
}

fn incomplete(complete: bool) -> &'static str {
    if complete { "" } else { " [stopped at the phase time limit]" }
}

fn human_size(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

/// A finite number as JSON (Rust's shortest round-trip form, which never uses
/// an exponent), anything else as `null`.
fn json_number(value: f64) -> String {
    if value.is_finite() { format!("{value}") } else { "null".to_string() }
}

/// `value` as a JSON string literal.
fn json_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Alignment of buffers, offsets and lengths for `O_DIRECT`.
pub const ALIGN: usize = 4096;

/// Largest single I/O accepted (Linux caps one read or write at a little
/// under 2 GiB; the benchmark has no use for anything near that).
pub const MAX_IO_BYTES: usize = 64 << 20;

/// A measured phase stops early, reporting what it completed, after this long.
pub const PHASE_TIME_LIMIT: Duration = Duration::from_secs(15);

/// Submission queue entries of each ring, and so the deepest read queue.
const RING_ENTRIES: u32 = 8;

/// Chunk size used to fill the file that the read measurements read back.
const FILL_CHUNK_BYTES: usize = 1 << 20;

/// Highest latency the histogram tracks, in microseconds (one hour); longer
/// samples are clamped to it.
const HISTOGRAM_MAX_US: u64 = 3_600_000_000;

/// Result of a bandwidth measurement.
#[derive(Clone, Debug)]
pub struct Throughput {
    /// Size of each I/O, in bytes.
    pub io_bytes: usize,
    /// I/Os kept in flight.
    pub queue_depth: usize,
    /// I/Os completed.
    pub ops: u64,
    /// Bytes transferred (`ops * io_bytes`).
    pub bytes: u64,
    /// Wall time of the I/Os, excluding [`Throughput::final_sync`].
    pub elapsed: Duration,
    /// Wall time of the single `fdatasync` after the writes (zero for reads).
    pub final_sync: Duration,
    /// False when the phase stopped at [`PHASE_TIME_LIMIT`] before doing all
    /// the I/O it was asked for.
    pub complete: bool,
}

impl Throughput {
    /// Bytes per second over [`Throughput::elapsed`].
    pub fn bytes_per_sec(&self) -> f64 {
        rate(self.bytes, self.elapsed)
    }

    /// I/Os per second over [`Throughput::elapsed`].
    pub fn ops_per_sec(&self) -> f64 {
        rate(self.ops, self.elapsed)
    }

    /// Bytes per second with the final `fdatasync` included in the time.
    pub fn bytes_per_sec_with_sync(&self) -> f64 {
        rate(self.bytes, self.elapsed + self.final_sync)
    }
}

/// Result of a write + `fdatasync` measurement.
#[derive(Clone, Debug)]
pub struct SyncStats {
    /// Size of each write, in bytes.
    pub io_bytes: usize,
    /// Write + `fdatasync` pairs completed.
    pub ops: u64,
    /// Bytes written (`ops * io_bytes`).
    pub bytes: u64,
    /// Wall time of all the pairs.
    pub elapsed: Duration,
    /// Latency of each pair, from submission of the write to completion of
    /// the `fdatasync`, in microseconds.
    pub latency_us: Histogram<u64>,
    /// False when the phase stopped at [`PHASE_TIME_LIMIT`] before doing all
    /// the pairs it was asked for.
    pub complete: bool,
}

impl SyncStats {
    /// Pairs per second over [`SyncStats::elapsed`].
    pub fn ops_per_sec(&self) -> f64 {
        rate(self.ops, self.elapsed)
    }

    /// Bytes per second over [`SyncStats::elapsed`].
    pub fn bytes_per_sec(&self) -> f64 {
        rate(self.bytes, self.elapsed)
    }

    /// Latency at `quantile` (0.0 to 1.0), in microseconds.
    pub fn quantile_us(&self, quantile: f64) -> u64 {
        self.latency_us.value_at_quantile(quantile)
    }

    /// Highest latency, in microseconds.
    pub fn max_us(&self) -> u64 {
        self.latency_us.max()
    }

    /// Mean latency, in microseconds.
    pub fn mean_us(&self) -> f64 {
        self.latency_us.mean()
    }
}

/// Sequential `O_DIRECT` writes of `write_bytes` each at queue depth 1, into a
/// fresh file in `dir` preallocated to `total_bytes` (rounded down to a
/// multiple of `write_bytes`), then one `fdatasync`, timed apart.
pub fn write_bandwidth(dir: &Path, write_bytes: usize, total_bytes: u64) -> io::Result<Throughput> {
    let count = io_count(write_bytes, total_bytes)?;
    let scratch = Scratch::create(dir, "write", count * write_bytes as u64)?;
    let fd = scratch.fd();
    let mut rig = Rig::new(1, write_bytes, true)?;
    let len = write_bytes as u32;
    let mut results = Vec::with_capacity(2);

    let start = Instant::now();
    let mut ops = 0;
    while ops < count {
        let entry = opcode::Write::new(fd, rig.buf_ptr(0), len).offset(ops * write_bytes as u64).build();
        // SAFETY: the entry points at the rig's buffer 0, `len` bytes long.
        unsafe { rig.push(&entry)? };
        rig.wait(1, &mut results)?;
        check_transfer(&results, write_bytes, "write")?;
        ops += 1;
        if start.elapsed() > PHASE_TIME_LIMIT {
            break;
        }
    }
    let elapsed = start.elapsed();

    let sync_start = Instant::now();
    datasync(&mut rig, fd)?;
    let final_sync = sync_start.elapsed();
    scratch.remove()?;
    Ok(Throughput {
        io_bytes: write_bytes,
        queue_depth: 1,
        ops,
        bytes: ops * write_bytes as u64,
        elapsed,
        final_sync,
        complete: ops == count,
    })
}

/// `count` iterations of: one sequential `O_DIRECT` write of `write_bytes`
/// linked to an `fdatasync` (`IOSQE_IO_LINK`), waiting for both before the
/// next. The file is fresh and preallocated to `count * write_bytes`.
pub fn write_fdatasync(dir: &Path, write_bytes: usize, count: usize) -> io::Result<SyncStats> {
    if count == 0 {
        return Err(invalid("the write + fdatasync count must be at least 1".to_string()));
    }
    let total = (write_bytes as u64)
        .checked_mul(count as u64)
        .ok_or_else(|| invalid(format!("{count} writes of {write_bytes} bytes overflow")))?;
    let count = io_count(write_bytes, total)?;
    let scratch = Scratch::create(dir, "sync", total)?;
    let fd = scratch.fd();
    let mut rig = Rig::new(1, write_bytes, true)?;
    let len = write_bytes as u32;
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, HISTOGRAM_MAX_US, 3)
        .map_err(|e| io::Error::other(format!("latency histogram: {e}")))?;
    let mut results = Vec::with_capacity(2);

    let start = Instant::now();
    let mut ops = 0;
    while ops < count {
        let op_start = Instant::now();
        let write = opcode::Write::new(fd, rig.buf_ptr(0), len)
            .offset(ops * write_bytes as u64)
            .build()
            .user_data(0)
            .flags(squeue::Flags::IO_LINK);
        let sync = opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build().user_data(1);
        // SAFETY: the write points at the rig's buffer 0, `len` bytes long;
        // the fsync carries no buffer.
        unsafe {
            rig.push(&write)?;
            rig.push(&sync)?;
        }
        rig.wait(2, &mut results)?;
        let micros = u64::try_from(op_start.elapsed().as_micros()).unwrap_or(u64::MAX);
        results.sort_unstable_by_key(|&(user_data, _)| user_data);
        check_transfer(&results[..1], write_bytes, "write")?;
        check_status(results[1].1, "fdatasync (linked to the write)")?;
        latency_us.saturating_record(micros.max(1));
        ops += 1;
        if start.elapsed() > PHASE_TIME_LIMIT {
            break;
        }
    }
    let elapsed = start.elapsed();
    scratch.remove()?;
    Ok(SyncStats {
        io_bytes: write_bytes,
        ops,
        bytes: ops * write_bytes as u64,
        elapsed,
        latency_us,
        complete: ops == count,
    })
}

/// Sequential `O_DIRECT` reads of `read_bytes` each at queue depth 1, of a
/// file of `total_bytes` (rounded down to a multiple of `read_bytes`) written
/// and synced just before. Same as `read_bandwidth_qd(dir, read_bytes,
/// total_bytes, 1)`.
pub fn read_bandwidth(dir: &Path, read_bytes: usize, total_bytes: u64) -> io::Result<Throughput> {
    read_bandwidth_qd(dir, read_bytes, total_bytes, 1)
}

/// As [`read_bandwidth`], keeping `queue_depth` reads (1 to 8) in flight, each
/// at the next sequential offset.
pub fn read_bandwidth_qd(
    dir: &Path,
    read_bytes: usize,
    total_bytes: u64,
    queue_depth: usize,
) -> io::Result<Throughput> {
    if !(1..=RING_ENTRIES as usize).contains(&queue_depth) {
        return Err(invalid(format!("queue depth must be 1 to {RING_ENTRIES}, not {queue_depth}")));
    }
    let count = io_count(read_bytes, total_bytes)?;
    let file_bytes = count * read_bytes as u64;
    let scratch = Scratch::create(dir, "read", file_bytes)?;
    let fd = scratch.fd();
    fill(fd, file_bytes)?;
    let throughput = read_fd(fd, read_bytes, count, queue_depth)?;
    scratch.remove()?;
    Ok(throughput)
}

/// Sequential `O_DIRECT` reads (QD1) of the first `total_bytes` of an
/// existing file, rounded down to `read_bytes`: the raw rate of the very
/// bytes an engine benchmark reads, so host caching favours neither side.
pub fn read_file_bandwidth(path: &Path, read_bytes: usize, total_bytes: u64) -> io::Result<Throughput> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path)?;
    let count = io_count(read_bytes, total_bytes.min(file.metadata()?.len()))?;
    read_fd(types::Fd(file.as_raw_fd()), read_bytes, count, 1)
}

fn read_fd(fd: types::Fd, read_bytes: usize, count: u64, queue_depth: usize) -> io::Result<Throughput> {
    let mut rig = Rig::new(queue_depth, read_bytes, false)?;
    let len = read_bytes as u32;
    let mut free: Vec<usize> = (0..queue_depth).rev().collect();
    let mut results = Vec::with_capacity(queue_depth);
    let mut submitted = 0;
    let mut ops = 0;
    let mut stopping = false;

    let start = Instant::now();
    loop {
        while !stopping
            && submitted < count
            && let Some(index) = free.pop()
        {
            let entry = opcode::Read::new(fd, rig.buf_ptr(index), len)
                .offset(submitted * read_bytes as u64)
                .build()
                .user_data(index as u64);
            // SAFETY: the entry points at the rig's buffer `index`, `len`
            // bytes long, and no other I/O in flight uses that buffer.
            unsafe { rig.push(&entry)? };
            submitted += 1;
        }
        if rig.in_flight == 0 {
            break;
        }
        rig.wait(1, &mut results)?;
        check_transfer(&results, read_bytes, "read")?;
        ops += results.len() as u64;
        free.extend(results.iter().map(|&(user_data, _)| user_data as usize));
        stopping = start.elapsed() > PHASE_TIME_LIMIT;
    }
    let elapsed = start.elapsed();
    Ok(Throughput {
        io_bytes: read_bytes,
        queue_depth,
        ops,
        bytes: ops * read_bytes as u64,
        elapsed,
        final_sync: Duration::ZERO,
        complete: ops == count,
    })
}

/// Writes `len` bytes (a multiple of [`ALIGN`]) from offset 0 in 1 MiB
/// chunks, then `fdatasync`.
fn fill(fd: types::Fd, len: u64) -> io::Result<()> {
    let chunk = FILL_CHUNK_BYTES.min(usize::try_from(len).unwrap_or(FILL_CHUNK_BYTES));
    let mut rig = Rig::new(1, chunk, true)?;
    let mut results = Vec::with_capacity(1);
    let mut offset = 0;
    while offset < len {
        let this = (len - offset).min(chunk as u64) as usize;
        let entry = opcode::Write::new(fd, rig.buf_ptr(0), this as u32).offset(offset).build();
        // SAFETY: the entry points at the rig's buffer 0, which is at least
        // `this` bytes long.
        unsafe { rig.push(&entry)? };
        rig.wait(1, &mut results)?;
        check_transfer(&results, this, "write (filling the file to read)")?;
        offset += this as u64;
    }
    datasync(&mut rig, fd)
}

/// One `fdatasync` through the ring.
fn datasync(rig: &mut Rig, fd: types::Fd) -> io::Result<()> {
    let entry = opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build();
    // SAFETY: an fsync carries no buffer.
    unsafe { rig.push(&entry)? };
    let mut results = Vec::with_capacity(1);
    rig.wait(1, &mut results)?;
    check_status(results[0].1, "fdatasync")
}

/// Number of I/Os of `io_bytes` that fit in `total_bytes`, after checking the
/// size is usable with `O_DIRECT`.
fn io_count(io_bytes: usize, total_bytes: u64) -> io::Result<u64> {
    if io_bytes == 0 || !io_bytes.is_multiple_of(ALIGN) || io_bytes > MAX_IO_BYTES {
        return Err(invalid(format!(
            "I/O size {io_bytes} must be a non-zero multiple of {ALIGN} bytes, at most {MAX_IO_BYTES}"
        )));
    }
    let count = total_bytes / io_bytes as u64;
    if count == 0 {
        return Err(invalid(format!("total size {total_bytes} is smaller than one I/O of {io_bytes} bytes")));
    }
    Ok(count)
}

/// Fails unless every completion in `results` transferred exactly `expected`
/// bytes.
fn check_transfer(results: &[(u64, i32)], expected: usize, what: &str) -> io::Result<()> {
    for &(_, result) in results {
        check_status(result, what)?;
        if result as usize != expected {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("short {what}: {result} of {expected} bytes"),
            ));
        }
    }
    Ok(())
}

/// Turns a negative completion result (`-errno`) into an error.
fn check_status(result: i32, what: &str) -> io::Result<()> {
    if result < 0 {
        let error = io::Error::from_raw_os_error(-result);
        return Err(io::Error::new(error.kind(), format!("{what} failed: {error}")));
    }
    Ok(())
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

#[expect(clippy::cast_precision_loss, reason = "counts stay far below 2^52")]
fn rate(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

/// A heap buffer aligned to [`ALIGN`], for `O_DIRECT`.
struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl AlignedBuf {
    /// A zeroed buffer, or one filled with a pseudo-random pattern (so that a
    /// virtual disk cannot turn writes of zeros into cheaper "write zeroes").
    fn new(len: usize, pattern: bool) -> io::Result<AlignedBuf> {
        if len == 0 {
            return Err(invalid("buffer length must be non-zero".to_string()));
        }
        let layout = Layout::from_size_align(len, ALIGN).map_err(|e| invalid(format!("buffer of {len} bytes: {e}")))?;
        // SAFETY: the layout has a non-zero size (checked above).
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr)
            .ok_or_else(|| io::Error::new(io::ErrorKind::OutOfMemory, format!("allocating {len} bytes")))?;
        let mut buf = AlignedBuf { ptr, layout };
        if pattern {
            let mut state = 0x9E37_79B9_7F4A_7C15_u64;
            for word in buf.as_mut_slice().chunks_exact_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                word.copy_from_slice(&state.to_le_bytes());
            }
        }
        Ok(buf)
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is a live, zero-initialised allocation of
        // `layout.size()` bytes that only this value owns.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` was returned by `alloc_zeroed` with this very layout
        // and is freed only here.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// An `io_uring` ring together with the buffers its I/Os use. The buffers
/// outlive every I/O submitted through the ring: dropping a rig with I/O in
/// flight first waits for it, and leaks the buffers if it cannot.
struct Rig {
    ring: IoUring,
    bufs: Vec<AlignedBuf>,
    in_flight: usize,
}

impl Rig {
    fn new(buffers: usize, buf_len: usize, pattern: bool) -> io::Result<Rig> {
        let ring = IoUring::new(RING_ENTRIES).map_err(|e| {
            let hint = match e.raw_os_error() {
                Some(libc::ENOSYS) => "the kernel lacks io_uring (Linux 5.6 or later is needed)",
                Some(libc::EPERM) => {
                    "io_uring is disabled: check sysctl kernel.io_uring_disabled, or a seccomp filter \
                     (container runtimes often block io_uring_setup)"
                }
                Some(libc::ENOMEM) => "not enough locked memory for the ring: raise RLIMIT_MEMLOCK (ulimit -l)",
                _ => "io_uring is unavailable here",
            };
            io::Error::new(e.kind(), format!("io_uring_setup({RING_ENTRIES}) failed: {e}; {hint}"))
        })?;
        let mut probe = Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|e| io::Error::new(e.kind(), format!("probing io_uring opcodes: {e}")))?;
        for (code, name) in
            [(opcode::Write::CODE, "WRITE"), (opcode::Read::CODE, "READ"), (opcode::Fsync::CODE, "FSYNC")]
        {
            if !probe.is_supported(code) {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("the kernel's io_uring lacks IORING_OP_{name} (Linux 5.6 or later is needed)"),
                ));
            }
        }
        let bufs = (0..buffers).map(|_| AlignedBuf::new(buf_len, pattern)).collect::<io::Result<_>>()?;
        Ok(Rig { ring, bufs, in_flight: 0 })
    }

    fn buf_ptr(&mut self, index: usize) -> *mut u8 {
        self.bufs[index].ptr.as_ptr()
    }

    /// Queues `entry`; [`Rig::wait`] submits it.
    ///
    /// # Safety
    ///
    /// Any memory `entry` points at must lie within one of the rig's buffers,
    /// and no two I/Os in flight may use the same buffer if one writes to it.
    unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        // SAFETY: the caller guarantees the entry only points into
        // `self.bufs`, which live until the entry completes (see `Drop`).
        unsafe { self.ring.submission().push(entry) }
            .map_err(|_| io::Error::other("io_uring submission queue is full"))?;
        self.in_flight += 1;
        Ok(())
    }

    /// Submits what was queued and waits until at least `want` completions
    /// are in; `results` is replaced by them, as `(user_data, result)`.
    fn wait(&mut self, want: usize, results: &mut Vec<(u64, i32)>) -> io::Result<()> {
        results.clear();
        // Never wait for more than is in flight: that would block forever.
        let want = want.min(self.in_flight);
        loop {
            for cqe in self.ring.completion() {
                results.push((cqe.user_data(), cqe.result()));
                self.in_flight -= 1;
            }
            if results.len() >= want {
                return Ok(());
            }
            match self.ring.submit_and_wait(want - results.len()) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(io::Error::new(e.kind(), format!("io_uring_enter failed: {e}")));
                }
            }
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if self.in_flight > 0 {
            let mut results = Vec::new();
            if self.wait(self.in_flight, &mut results).is_err() {
                // The kernel may still be using the buffers: never free them.
                std::mem::forget(std::mem::take(&mut self.bufs));
            }
        }
    }
}

/// A scratch file opened with `O_DIRECT`, removed when dropped.
struct Scratch {
    file: File,
    /// `None` once removed.
    path: Option<PathBuf>,
}

impl Scratch {
    /// Creates a new file in `dir` and preallocates `len` bytes.
    fn create(dir: &Path, tag: &str, len: u64) -> io::Result<Scratch> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(".cairn-devbench-{}-{tag}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let path = dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .map_err(|e| {
                let hint = if e.raw_os_error() == Some(libc::EINVAL) {
                    " (does the file system support O_DIRECT?)"
                } else {
                    ""
                };
                io::Error::new(e.kind(), format!("creating {} with O_DIRECT: {e}{hint}", path.display()))
            })?;
        let off_len = libc::off_t::try_from(len).map_err(|_| invalid(format!("file size {len} is too large")))?;
        let scratch = Scratch { file, path: Some(path) };
        loop {
            // SAFETY: a plain system call on a descriptor `scratch` owns; no
            // memory is passed to the kernel.
            if unsafe { libc::fallocate(scratch.file.as_raw_fd(), 0, 0, off_len) } == 0 {
                return Ok(scratch);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(io::Error::new(e.kind(), format!("fallocate of {len} bytes in {}: {e}", dir.display())));
            }
        }
    }

    fn fd(&self) -> types::Fd {
        types::Fd(self.file.as_raw_fd())
    }

    /// Removes the file, reporting failure (dropping removes it silently).
    fn remove(mut self) -> io::Result<()> {
        match self.path.take() {
            Some(path) => std::fs::remove_file(&path)
                .map_err(|e| io::Error::new(e.kind(), format!("removing {}: {e}", path.display()))),
            None => Ok(()),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}
