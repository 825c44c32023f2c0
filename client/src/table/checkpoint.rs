//! A table's checkpoint: its entries and positions in one local file, so a
//! restarted application fetches only what was appended since instead of
//! the whole topic.
//!
//! Format (little-endian; docs/tables.md):
//!
//! ```text
//! 0   4  magic "CRNT"
//! 4   1  version (1)
//! 5   3  reserved, zero
//! 8   2  topic name length T
//! 10  T  topic name, UTF-8
//!     4  partition count P
//!     P  × { partition u32, next offset u64 }        partitions ascending
//!     8  entry count N
//!     N  × { key length u32, key, value length u32, value }   keys ascending
//!     4  CRC32C (Castagnoli) of every byte before it
//! ```
//!
//! Writing is crash-safe: the file is written beside its final name
//! (`NAME.tmp`), fsynced, renamed over the old one, and the directory is
//! fsynced, so a crash leaves the old checkpoint or the new one, never
//! half of one. Reading streams the file (one copy of each entry, into the
//! table's own memory), checks every length against what is left of the
//! file before allocating for it, the orders, the exact end, and the CRC
//! last: a corrupt checkpoint is an error, never a table.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use protocol::types::Offset;

use super::TableError;
use super::state::TableState;

pub const MAGIC: [u8; 4] = *b"CRNT";
pub const VERSION: u8 = 1;

/// A checkpoint read back.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub topic: String,
    pub state: TableState,
}

/// Computes the CRC of every byte written through it.
struct CrcWriter<W> {
    inner: W,
    crc: u32,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The temporary file a checkpoint is written to before it takes `path`'s place.
pub(crate) fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(std::ffi::OsStr::to_os_string).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

fn too_long(what: &str, len: usize) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("{what} of {len} bytes is too long for a checkpoint"))
}

/// Writes a checkpoint of `entries` at `positions` to `path`, replacing
/// the one there atomically (see the module docs). A write that fails
/// (a full disk) leaves the old checkpoint and removes its temporary file.
pub(crate) fn write(
    path: &Path,
    topic: &str,
    positions: &BTreeMap<u32, Offset>,
    entries: &BTreeMap<Bytes, Bytes>,
) -> io::Result<()> {
    let tmp = temporary_path(path);
    if let Err(e) = write_synced(&tmp, topic, positions, entries) {
        // Best effort: the error that matters is the write's.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)?;
    // The rename is durable once the directory is.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// The whole checkpoint at `tmp`, fsynced.
fn write_synced(
    tmp: &Path,
    topic: &str,
    positions: &BTreeMap<u32, Offset>,
    entries: &BTreeMap<Bytes, Bytes>,
) -> io::Result<()> {
    let file = File::create(tmp)?;
    let mut w = CrcWriter { inner: BufWriter::with_capacity(1 << 20, file), crc: 0 };
    w.write_all(&MAGIC)?;
    w.write_all(&[VERSION, 0, 0, 0])?;
    let topic_len = u16::try_from(topic.len()).map_err(|_| too_long("a topic name", topic.len()))?;
    w.write_all(&topic_len.to_le_bytes())?;
    w.write_all(topic.as_bytes())?;
    w.write_all(&(positions.len() as u32).to_le_bytes())?;
    for (&p, &o) in positions {
        w.write_all(&p.to_le_bytes())?;
        w.write_all(&o.0.to_le_bytes())?;
    }
    w.write_all(&(entries.len() as u64).to_le_bytes())?;
    for (k, v) in entries {
        for field in [k, v] {
            let len = u32::try_from(field.len()).map_err(|_| too_long("a key or value", field.len()))?;
            w.write_all(&len.to_le_bytes())?;
            w.write_all(field)?;
        }
    }
    let crc = w.crc;
    let mut out = w.inner;
    out.write_all(&crc.to_le_bytes())?;
    let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()
}

/// Reads the file, counting what is left of it and computing the CRC of
/// what was read.
struct Source {
    inner: BufReader<File>,
    left: u64,
    crc: u32,
    path: PathBuf,
}

impl Source {
    fn corrupt(&self, reason: impl Into<String>) -> TableError {
        TableError::Corrupt { path: self.path.clone(), reason: reason.into() }
    }

    fn io(&self, e: io::Error) -> TableError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            // It was shorter than its length said when it was opened.
            return self.corrupt("truncated while being read");
        }
        TableError::Io { path: self.path.clone(), source: e }
    }

    /// The next `buf.len()` bytes, if the file has that many left.
    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<(), TableError> {
        if (buf.len() as u64) > self.left {
            return Err(self.corrupt(format!("truncated: {what} runs past the end of the file")));
        }
        self.inner.read_exact(buf).map_err(|e| self.io(e))?;
        self.left -= buf.len() as u64;
        self.crc = crc32c::crc32c_append(self.crc, buf);
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], TableError> {
        let mut b = [0u8; N];
        self.fill(&mut b, what)?;
        Ok(b)
    }

    fn u32(&mut self, what: &str) -> Result<u32, TableError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, TableError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A length-prefixed field, allocated only once it is known to fit in
    /// the rest of the file.
    fn field(&mut self, what: &str) -> Result<Bytes, TableError> {
        let len = self.u32(what)?;
        if u64::from(len) > self.left {
            return Err(self.corrupt(format!("truncated: {what} runs past the end of the file")));
        }
        let mut b = vec![0u8; len as usize];
        self.fill(&mut b, what)?;
        Ok(Bytes::from(b))
    }
}

/// The checkpoint at `path`, `None` if there is no file; refused if it is
/// damaged, of a format this client does not read, or holds more than
/// `bytes_max`.
pub(crate) fn read(path: &Path, bytes_max: usize) -> Result<Option<Loaded>, TableError> {
    read_with(path, bytes_max, true)
}

/// [`read`]; without `entries`, every entry is still checked (lengths,
/// order, CRC) but none is kept, so only the positions take memory.
fn read_with(path: &Path, bytes_max: usize, entries: bool) -> Result<Option<Loaded>, TableError> {
    let io_error = |source| TableError::Io { path: path.to_path_buf(), source };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(e)),
    };
    let len = file.metadata().map_err(io_error)?.len();
    let mut s = Source { inner: BufReader::with_capacity(1 << 20, file), left: len, crc: 0, path: path.to_path_buf() };
    if s.array::<4>("the magic")? != MAGIC {
        return Err(s.corrupt("not a table checkpoint (bad magic)"));
    }
    let [version, reserved @ ..] = s.array::<4>("the version")?;
    if version != VERSION {
        return Err(TableError::UnsupportedVersion { path: path.to_path_buf(), version });
    }
    if reserved != [0; 3] {
        return Err(s.corrupt("reserved bytes are not zero"));
    }
    let topic_len = u16::from_le_bytes(s.array("the topic name's length")?) as usize;
    let mut topic = vec![0u8; topic_len];
    s.fill(&mut topic, "the topic name")?;
    let topic = String::from_utf8(topic).map_err(|_| s.corrupt("the topic name is not UTF-8"))?;
    let partitions = s.u32("the partition count")?;
    let mut positions = BTreeMap::new();
    for _ in 0..partitions {
        let p = s.u32("a partition")?;
        let o = Offset(s.u64("a partition's offset")?);
        if positions.last_key_value().is_some_and(|(&last, _)| last >= p) {
            return Err(s.corrupt("partitions out of order"));
        }
        positions.insert(p, o);
    }
    let count = s.u64("the entry count")?;
    let mut state = TableState::new(bytes_max);
    let mut last: Option<Bytes> = None;
    for _ in 0..count {
        let key = s.field("a key")?;
        let value = s.field("a value")?;
        if last.as_ref().is_some_and(|last| *last >= key) {
            return Err(s.corrupt("keys out of order"));
        }
        last = Some(key.clone());
        if entries && !state.restore(key, value) {
            return Err(TableError::CheckpointFull { path: path.to_path_buf(), bytes_max });
        }
    }
    let computed = s.crc;
    let stored = u32::from_le_bytes(s.array("the CRC")?);
    if s.left != 0 {
        return Err(s.corrupt(format!("{} bytes past the CRC", s.left)));
    }
    if stored != computed {
        return Err(s.corrupt(format!("CRC32C mismatch: stored {stored:#010x}, computed {computed:#010x}")));
    }
    state.restore_positions(positions);
    Ok(Some(Loaded { topic, state }))
}

/// The topic and positions of the checkpoint at `path` (its entries are
/// checked as they stream past, none kept): where a table stands, for its lag.
pub fn positions(path: &Path) -> Result<(String, BTreeMap<u32, Offset>), TableError> {
    match read_with(path, usize::MAX, false)? {
        Some(loaded) => Ok((loaded.topic, loaded.state.positions().clone())),
        None => Err(TableError::Io { path: path.to_path_buf(), source: io::Error::from(io::ErrorKind::NotFound) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (BTreeMap<u32, Offset>, BTreeMap<Bytes, Bytes>) {
        let positions = BTreeMap::from([(0, Offset(17)), (1, Offset(0)), (3, Offset(1 << 40))]);
        let entries = (0..500u32)
            .map(|i| (Bytes::from(format!("key-{i:05}")), Bytes::from(vec![i as u8; (i % 37) as usize])))
            .chain([(Bytes::from_static(b""), Bytes::from_static(b"the empty key"))])
            .collect();
        (positions, entries)
    }

    #[test]
    fn a_checkpoint_reads_back_as_it_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.table");
        let (positions, entries) = sample();
        write(&path, "orders", &positions, &entries).unwrap();
        assert!(!temporary_path(&path).exists(), "the temporary file took the checkpoint's place");
        let loaded = read(&path, usize::MAX).unwrap().expect("a checkpoint");
        assert_eq!(loaded.topic, "orders");
        assert_eq!(loaded.state.positions(), &positions);
        assert_eq!(loaded.state.snapshot(), entries);
        let expected: usize =
            entries.iter().map(|(k, v)| k.len() + v.len() + super::super::state::ENTRY_OVERHEAD_BYTES).sum();
        assert_eq!(loaded.state.bytes(), expected);
        // A second write replaces the first.
        write(&path, "orders", &BTreeMap::new(), &BTreeMap::new()).unwrap();
        let loaded = read(&path, usize::MAX).unwrap().unwrap();
        assert!(loaded.state.is_empty() && loaded.state.positions().is_empty());
        assert!(read(&dir.path().join("absent"), usize::MAX).unwrap().is_none(), "no file, no checkpoint");
    }

    #[test]
    fn every_damaged_byte_and_every_truncation_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let positions = BTreeMap::from([(0, Offset(3)), (1, Offset(9))]);
        let entries = BTreeMap::from([(Bytes::from("a"), Bytes::from("1")), (Bytes::from("bb"), Bytes::from(""))]);
        write(&path, "t", &positions, &entries).unwrap();
        let good = std::fs::read(&path).unwrap();
        for i in 0..good.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] ^= flip;
                std::fs::write(&path, &bad).unwrap();
                match read(&path, usize::MAX) {
                    Err(TableError::Corrupt { .. } | TableError::UnsupportedVersion { .. }) => {}
                    other => panic!("byte {i} ^ {flip:#x}: {other:?}"),
                }
            }
        }
        for len in 0..good.len() {
            std::fs::write(&path, &good[..len]).unwrap();
            assert!(matches!(read(&path, usize::MAX), Err(TableError::Corrupt { .. })), "cut at {len}");
        }
        let mut longer = good.clone();
        longer.push(0);
        std::fs::write(&path, &longer).unwrap();
        assert!(matches!(read(&path, usize::MAX), Err(TableError::Corrupt { .. })));
    }

    #[test]
    fn a_length_past_the_end_of_the_file_is_refused_before_it_is_allocated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&[VERSION, 0, 0, 0]);
        b.extend_from_slice(&1u16.to_le_bytes());
        b.push(b't');
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&u32::MAX.to_le_bytes()); // a 4 GiB key
        std::fs::write(&path, &b).unwrap();
        let e = read(&path, usize::MAX).unwrap_err();
        assert!(e.to_string().contains("runs past the end"), "{e}");
    }

    #[test]
    fn a_checkpoint_of_another_version_or_bigger_than_the_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let (positions, entries) = sample();
        write(&path, "t", &positions, &entries).unwrap();
        assert!(matches!(read(&path, 1000), Err(TableError::CheckpointFull { bytes_max: 1000, .. })));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[4] = 2;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(read(&path, usize::MAX), Err(TableError::UnsupportedVersion { version: 2, .. })));
    }
}
