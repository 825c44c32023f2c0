//! A leader's batch takes its place in line when proposed but is placed
//! in memory only when its append runs: a follower's fetch that asks for
//! it in between must be able to wait for it (the broker once answered
//! such fetches a whole fetch wait later, ~100 ms of stalled `acks=all`).

use std::rc::Rc;

use futures::FutureExt as _;
use futures::executor::block_on;

use super::{batch, open, small_config};
use crate::rt::sim::SimStorage;
use crate::types::{LeaderEpoch, Offset};

#[test]
fn a_proposed_batch_is_readable_from_the_cache_once_placed_and_its_waiter_wakes_then() {
    let storage = SimStorage::new();
    let log = Rc::new(open(&storage, small_config()).unwrap());
    let append = log.append_in_epoch(batch(1, 3, 10), LeaderEpoch(1)).unwrap();
    // In line, not placed: the log end has not moved and the cache misses.
    assert_eq!(log.log_end_offset(), Offset(0));
    assert!(log.read_cached(Offset(0), 1 << 20).is_none());
    assert!(log.wait_placed(Offset(0)).now_or_never().is_none(), "nothing is placed yet");
    let waiter = log.wait_placed(Offset(0));
    let (appended, woke) = block_on(futures::future::join(append, waiter));
    appended.unwrap();
    woke.unwrap();
    let cached = log.read_cached(Offset(0), 1 << 20).expect("in the cache once placed");
    assert_eq!(cached.len(), 1);
    assert!(log.wait_placed(Offset(2)).now_or_never().is_some(), "offset 2 is placed");
    assert!(log.wait_placed(Offset(3)).now_or_never().is_none(), "offset 3 is not");
}
