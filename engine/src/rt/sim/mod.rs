//! The simulated runtime: a seeded executor with virtual time, a disk that
//! keeps durable and volatile state apart, and an in-memory network. One
//! seed is one run; the same seed replays it exactly.

mod disk;
mod executor;
mod net;
mod runtime;

pub use disk::{SimBuf, SimFile, SimStorage};
pub use executor::{SIM_EPOCH_MS, SimClock, SimExecutor, SimSleep, SimTask};
pub use net::{SimListener, SimNet, SimStream};
pub use runtime::SimRuntime;

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
