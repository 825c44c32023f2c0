//! The sparse indexes of a segment: an `OffsetIndex` (offset → byte
//! position) and a `TimeIndex` (timestamp → offset), one entry per
//! `index_interval_bytes` of batches. Both live in one `.index` file, written
//! when the segment is sealed, behind a summary of the segment and a CRC;
//! a missing or damaged file is rebuilt by scanning the segment.

use crate::types::{Offset, Timestamp};

const INDEX_MAGIC: u32 = u32::from_le_bytes(*b"CRNI");
const INDEX_VERSION: u16 = 1;
const INDEX_HEADER_BYTES: usize = 56;

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
    /// `Timestamp(i64::MIN)` while the segment is empty.
    pub max_timestamp: Timestamp,
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
    #[must_use]
    pub fn new(base_offset: Offset) -> SegmentIndex {
        SegmentIndex {
            summary: SegmentSummary {
                base_offset,
                next_offset: base_offset,
                size_bytes: 0,
                max_timestamp: Timestamp(i64::MIN),
            },
            offsets: OffsetIndex::default(),
            times: TimeIndex::default(),
            last_entry_position: None,
        }
    }

    /// Accounts for a batch appended at `position`.
    pub fn on_append(
        &mut self,
        base_offset: Offset,
        next_offset: Offset,
        max_timestamp: Timestamp,
        position: u64,
        length: u64,
        interval_bytes: u64,
    ) {
        assert_eq!(base_offset, self.summary.next_offset, "batches are contiguous");
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
        if bytes.len() < INDEX_HEADER_BYTES {
            return Err("shorter than its header");
        }
        if u32_at(0) != INDEX_MAGIC || u16::from_le_bytes([bytes[4], bytes[5]]) != INDEX_VERSION {
            return Err("bad magic or version");
        }
        let offset_entries = u32_at(48) as usize;
        let time_entries = u32_at(52) as usize;
        if bytes.len() != INDEX_HEADER_BYTES + offset_entries * 8 + time_entries * 12 {
            return Err("length disagrees with entry counts");
        }
        if crc32c::crc32c(&bytes[16..]) != u32_at(8) {
            return Err("CRC mismatch");
        }
        let summary = SegmentSummary {
            base_offset: Offset(u64_at(16)),
            next_offset: Offset(u64_at(24)),
            size_bytes: u64_at(32),
            max_timestamp: Timestamp(u64_at(40) as i64),
        };
        if summary.base_offset != expected_base || summary.next_offset < summary.base_offset {
            return Err("summary disagrees with the segment");
        }
        let mut at = INDEX_HEADER_BYTES;
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
                position,
                1000,
                4096,
            );
            position += 1000;
        }
        index
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
