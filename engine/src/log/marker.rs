//! The clean-shutdown marker: written last at close, removed first at open.
//! Its presence says the active segment's size and index on disk are exact,
//! so open may skip the recovery scan.

use crate::types::Offset;

const MARKER_MAGIC: u32 = u32::from_le_bytes(*b"CRNC");
const MARKER_VERSION: u16 = 1;
const MARKER_BYTES: usize = 36;

pub(crate) const MARKER_FILE: &str = "CLEAN_SHUTDOWN";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CleanMarker {
    pub active_base: Offset,
    pub active_size_bytes: u64,
    pub next_offset: Offset,
}

impl CleanMarker {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MARKER_BYTES);
        out.extend_from_slice(&MARKER_MAGIC.to_le_bytes());
        out.extend_from_slice(&MARKER_VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&self.active_base.0.to_le_bytes());
        out.extend_from_slice(&self.active_size_bytes.to_le_bytes());
        out.extend_from_slice(&self.next_offset.0.to_le_bytes());
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(out.len(), MARKER_BYTES);
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<CleanMarker> {
        if bytes.len() != MARKER_BYTES {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let crc = u32::from_le_bytes(bytes[32..36].try_into().expect("4 bytes"));
        let valid = crc32c::crc32c(&bytes[..32]) == crc
            && bytes[..4] == MARKER_MAGIC.to_le_bytes()
            && bytes[4..6] == MARKER_VERSION.to_le_bytes();
        valid.then(|| CleanMarker {
            active_base: Offset(u64_at(8)),
            active_size_bytes: u64_at(16),
            next_offset: Offset(u64_at(24)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trips_and_rejects_damage() {
        let marker = CleanMarker { active_base: Offset(5), active_size_bytes: 4242, next_offset: Offset(77) };
        let bytes = marker.encode();
        assert_eq!(CleanMarker::decode(&bytes), Some(marker));
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1;
            assert_eq!(CleanMarker::decode(&damaged), None, "flip at {at}");
        }
    }
}
