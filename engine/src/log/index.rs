//! The sparse indexes of a segment: an `OffsetIndex` (offset → byte
//! position) and a `TimeIndex` (timestamp → offset), one entry per
//! `index_interval_bytes` of batches. Both live in one `.index` file, written
//! when the segment is sealed, behind a summary of the segment and a CRC;
//! a missing or damaged file is rebuilt by scanning the segment.
//!
//! Offsets may have gaps (compaction, control batches): an entry names the
//! base offset of the batch at its position, and a lookup of an offset in a
//! gap lands on the batch before it, from which a scan moves past the gap.

use crate::types::{Offset, Timestamp};

const INDEX_MAGIC: u32 = u32::from_le_bytes(*b"CRNI");
/// Version 2 adds the segment's newest append time (retention by append
/// time); version 1 files are still read.
const INDEX_VERSION: u16 = 2;
const INDEX_VERSION_V1: u16 = 1;
const INDEX_HEADER_BYTES: usize = 64;
const INDEX_HEADER_BYTES_V1: usize = 56;

/// Offset → position, both relative to the segment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OffsetIndex {
    /// `(offset - base_offset, byte position)`, both increasing.
    entries: Vec<(u32, u32)>,
}

/// Timestamp → offset. An entry `(t, o)` says every batch before offset `o`
/// has a max timestamp ≤ `t`, so a search for `t' > t` may start at `o`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimeIndex {
    /// `(max timestamp before the entry's batch, offset - base_offset)`.
    entries: Vec<(i64, u32)>,
}

/// What a segment holds, kept in memory for every segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    pub base_offset: Offset,
    /// The offset after the segment's last record.
    pub next_offset: Offset,
    pub size_bytes: u64,
    /// The largest record timestamp readers see; `Timestamp(i64::MIN)`
    /// while the segment is empty.
    pub max_timestamp: Timestamp,
    /// The newest append time, by the broker's clock: what time-based
    /// retention goes by, so a producer's clock cannot delete data early.
    /// `Timestamp(i64::MIN)` while the segment is empty.
    pub max_append_time: Timestamp,
}

/// Both sparse indexes of a segment plus the state that extends them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentIndex {
    pub summary: SegmentSummary,
    pub offsets: OffsetIndex,
    pub times: TimeIndex,
    /// Position of the last offset entry; the next one goes an interval later.
    last_entry_position: Option<u64>,
}

impl SegmentIndex {
    /// Heap bytes the index holds (what the core's index cache counts).
    #[must_use]
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<SegmentIndex>()
            + self.offsets.entries.capacity() * std::mem::size_of::<(u32, u32)>()
            + self.times.entries.capacity() * std::mem::size_of::<(i64, u32)>()
    }

    #[must_use]
    pub fn new(base_offset: Offset) -> SegmentIndex {
        SegmentIndex {
            summary: SegmentSummary {
                base_offset,
                next_offset: base_offset,
                size_bytes: 0,
                max_timestamp: Timestamp(i64::MIN),
                max_append_time: Timestamp(i64::MIN),
            },
            offsets: OffsetIndex::default(),
            times: TimeIndex::default(),
            last_entry_position: None,
        }
    }

    /// Accounts for a batch appended at `position`.
    #[allow(clippy::too_many_arguments)] // one batch's place, as the scanner and the log both know it
    pub fn on_append(
        &mut self,
        base_offset: Offset,
        next_offset: Offset,
        max_timestamp: Timestamp,
        append_time: Timestamp,
        position: u64,
        length: u64,
        interval_bytes: u64,
    ) {
        assert!(base_offset >= self.summary.next_offset, "batches are in offset order (gaps allowed)");
        assert!(next_offset > base_offset);
        assert_eq!(position, self.summary.size_bytes, "batches are appended at the end");
        let due = self.last_entry_position.is_none_or(|last| position - last >= interval_bytes);
        if due {
            let relative = (base_offset.0 - self.summary.base_offset.0) as u32;
            self.offsets.entries.push((relative, position as u32));
            let so_far = self.summary.max_timestamp.0;
            if self.times.entries.last().is_none_or(|&(t, _)| so_far > t) && so_far != i64::MIN {
                self.times.entries.push((so_far, relative));
            }
            self.last_entry_position = Some(position);
        }
        self.summary.next_offset = next_offset;
        self.summary.size_bytes = position + length;
        self.summary.max_timestamp = self.summary.max_timestamp.max(max_timestamp);
        self.summary.max_append_time = self.summary.max_append_time.max(append_time);
    }

    /// The byte position to start scanning from for `offset`: the last entry
    /// at or before it.
    #[must_use]
    pub fn position_for(&self, offset: Offset) -> u64 {
        self.entry_for(offset).1
    }

    /// The last entry at or before `offset`: the offset of the batch that
    /// starts there, and its byte position.
    #[must_use]
    pub fn entry_for(&self, offset: Offset) -> (Offset, u64) {
        let relative = offset.0.saturating_sub(self.summary.base_offset.0);
        let i = self.offsets.entries.partition_point(|&(o, _)| u64::from(o) <= relative);
        if i == 0 {
            (self.summary.base_offset, 0)
        } else {
            let (o, p) = self.offsets.entries[i - 1];
            (self.summary.base_offset.plus(u64::from(o)), u64::from(p))
        }
    }

    /// The offset to start scanning from for the first record with a
    /// timestamp ≥ `t`.
    #[must_use]
    pub fn offset_for_time(&self, t: Timestamp) -> Offset {
        let i = self.times.entries.partition_point(|&(ts, _)| ts < t.0);
        if i == 0 {
            self.summary.base_offset
        } else {
            self.summary.base_offset.plus(u64::from(self.times.entries[i - 1].1))
        }
    }

    #[must_use]
    pub fn entry_count(&self) -> usize {
        self.offsets.entries.len() + self.times.entries.len()
    }

    /// The `.index` file: see `docs/format.md`.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(INDEX_HEADER_BYTES + self.offsets.entries.len() * 8 + self.times.entries.len() * 12);
        out.extend_from_slice(&INDEX_MAGIC.to_le_bytes());
        out.extend_from_slice(&INDEX_VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // CRC, filled below
        out.extend_from_slice(&0u32.to_le_bytes()); // reserved
        out.extend_from_slice(&self.summary.base_offset.0.to_le_bytes());
        out.extend_from_slice(&self.summary.next_offset.0.to_le_bytes());
        out.extend_from_slice(&self.summary.size_bytes.to_le_bytes());
        out.extend_from_slice(&self.summary.max_timestamp.0.to_le_bytes());
        out.extend_from_slice(&self.summary.max_append_time.0.to_le_bytes());
        out.extend_from_slice(&(self.offsets.entries.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.times.entries.len() as u32).to_le_bytes());
        debug_assert_eq!(out.len(), INDEX_HEADER_BYTES);
        for &(o, p) in &self.offsets.entries {
            out.extend_from_slice(&o.to_le_bytes());
            out.extend_from_slice(&p.to_le_bytes());
        }
        for &(t, o) in &self.times.entries {
            out.extend_from_slice(&t.to_le_bytes());
            out.extend_from_slice(&o.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out[16..]);
        out[8..12].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes an `.index` file; `Err` with a reason if it is damaged, in
    /// which case the caller rebuilds it from the segment.
    pub fn decode(bytes: &[u8], expected_base: Offset) -> Result<SegmentIndex, &'static str> {
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        if bytes.len() < INDEX_HEADER_BYTES_V1 {
            return Err("shorter than its header");
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        let header_bytes = match version {
            INDEX_VERSION => INDEX_HEADER_BYTES,
            INDEX_VERSION_V1 => INDEX_HEADER_BYTES_V1,
            _ => return Err("bad magic or version"),
        };
        if u32_at(0) != INDEX_MAGIC || bytes.len() < header_bytes {
            return Err("bad magic or version");
        }
        let offset_entries = u32_at(header_bytes - 8) as usize;
        let time_entries = u32_at(header_bytes - 4) as usize;
        if bytes.len() != header_bytes + offset_entries * 8 + time_entries * 12 {
            return Err("length disagrees with entry counts");
        }
        if crc32c::crc32c(&bytes[16..]) != u32_at(8) {
            return Err("CRC mismatch");
        }
        let max_timestamp = Timestamp(u64_at(40) as i64);
        let summary = SegmentSummary {
            base_offset: Offset(u64_at(16)),
            next_offset: Offset(u64_at(24)),
            size_bytes: u64_at(32),
            max_timestamp,
            // Version 1 knew no append time: the record timestamps are the
            // best there is (retention trusted them before version 2, too).
            max_append_time: if version == INDEX_VERSION { Timestamp(u64_at(48) as i64) } else { max_timestamp },
        };
        if summary.base_offset != expected_base || summary.next_offset < summary.base_offset {
            return Err("summary disagrees with the segment");
        }
        let mut at = header_bytes;
        let mut offsets = Vec::with_capacity(offset_entries);
        for _ in 0..offset_entries {
            offsets.push((u32_at(at), u32_at(at + 4)));
            at += 8;
        }
        let mut times = Vec::with_capacity(time_entries);
        for _ in 0..time_entries {
            times.push((u64_at(at) as i64, u32_at(at + 8)));
            at += 12;
        }
        let increasing = offsets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
            && times.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1);
        let in_bounds = offsets.iter().all(|&(_, p)| u64::from(p) < summary.size_bytes.max(1));
        if !increasing || !in_bounds {
            return Err("entries are not increasing or out of bounds");
        }
        let last_entry_position = offsets.last().map(|&(_, p)| u64::from(p));
        Ok(SegmentIndex {
            summary,
            offsets: OffsetIndex { entries: offsets },
            times: TimeIndex { entries: times },
            last_entry_position,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentIndex {
        let mut index = SegmentIndex::new(Offset(100));
        let mut position = 0;
        for i in 0..50u64 {
            index.on_append(
                Offset(100 + i * 10),
                Offset(110 + i * 10),
                Timestamp(1000 + i as i64),
                Timestamp(5000 + i as i64),
                position,
                1000,
                4096,
            );
            position += 1000;
        }
        index
    }

    const GOLDEN: &[u8] = include_bytes!("golden/index_v2.bin");
    const GOLDEN_V1: &[u8] = include_bytes!("golden/index_v1.bin");

    #[test]
    fn golden_index_bytes_are_stable() {
        let bytes = sample().encode();
        if std::env::var_os("CAIRN_BLESS").is_some() {
            std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/src/log/golden/index_v2.bin"), &bytes).unwrap();
        }
        assert_eq!(bytes, GOLDEN, "the index format changed: bump INDEX_VERSION and document it in docs/format.md");
        assert_eq!(u16::from_le_bytes([GOLDEN[4], GOLDEN[5]]), 2);
        assert_eq!(i64::from_le_bytes(GOLDEN[48..56].try_into().unwrap()), 5049, "max append time");
    }

    #[test]
    fn version_1_index_files_are_still_read() {
        // Written by the build before version 2: no append time, so the
        // segment's record timestamps stand in for it.
        let index = SegmentIndex::decode(GOLDEN_V1, Offset(100)).unwrap();
        assert_eq!(index.summary.next_offset, Offset(600));
        assert_eq!(index.summary.max_timestamp, Timestamp(1049));
        assert_eq!(index.summary.max_append_time, Timestamp(1049));
        assert_eq!(index.offsets, sample().offsets);
        assert_eq!(index.times, sample().times);
    }

    #[test]
    fn lookups_in_a_gap_land_on_the_batch_before_it() {
        let mut index = SegmentIndex::new(Offset(0));
        index.on_append(Offset(0), Offset(10), Timestamp(1), Timestamp(1), 0, 5000, 4096);
        // Offsets 10..50 were compacted away.
        index.on_append(Offset(50), Offset(60), Timestamp(2), Timestamp(2), 5000, 5000, 4096);
        assert_eq!(index.entry_for(Offset(30)), (Offset(0), 0));
        assert_eq!(index.entry_for(Offset(55)), (Offset(50), 5000));
        assert_eq!(index.summary.next_offset, Offset(60));
        let decoded = SegmentIndex::decode(&index.encode(), Offset(0)).unwrap();
        assert_eq!(decoded, index);
    }

    #[test]
    fn index_file_round_trips() {
        let index = sample();
        let decoded = SegmentIndex::decode(&index.encode(), Offset(100)).unwrap();
        assert_eq!(decoded, index);
    }

    #[test]
    fn damaged_index_file_is_rejected() {
        let bytes = sample().encode();
        for at in [0, 9, 20, 60, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            assert!(SegmentIndex::decode(&damaged, Offset(100)).is_err(), "flip at {at}");
        }
        assert!(SegmentIndex::decode(&bytes[..bytes.len() - 4], Offset(100)).is_err());
        assert!(SegmentIndex::decode(&bytes, Offset(7)).is_err());
    }

    #[test]
    fn lookups_start_at_or_before_the_target() {
        let index = sample();
        for offset in 100..600 {
            let position = index.position_for(Offset(offset));
            let batch = (offset - 100) / 10;
            assert!(position <= batch * 1000, "offset {offset}");
            assert!(batch * 1000 - position < 5000 + 1000, "entries are an interval apart");
        }
        for t in 1000..1050 {
            let start = index.offset_for_time(Timestamp(t));
            let batch_with_t = 100 + (t as u64 - 1000) * 10;
            assert!(start.0 <= batch_with_t, "time {t}");
        }
    }
}
