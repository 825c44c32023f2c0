//! The waker list of a per-core wait point (the log's I/O notifications,
//! the shard's shutdown signal): each waiter keeps one slot, refreshed when
//! it is polled again, and a waiter that gives up before it is woken (a long
//! poll that timed out) frees its slot for the next. So the list is bounded
//! by the waiters alive, not by those that ever waited. Single-threaded
//! (`!Send`) on purpose.

use std::cell::RefCell;
use std::task::Waker;

#[derive(Debug, Default)]
pub struct Waiters {
    wakers: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl Waiters {
    /// Registers `waker` for the waiter holding `slot` (none on its first
    /// poll), and returns the slot it holds now.
    pub fn register(&self, slot: Option<usize>, waker: &Waker) -> usize {
        let mut wakers = self.wakers.borrow_mut();
        if let Some(i) = slot {
            match &mut wakers[i] {
                Some(w) if w.will_wake(waker) => {}
                w => *w = Some(waker.clone()),
            }
            return i;
        }
        if let Some(i) = self.free.borrow_mut().pop() {
            wakers[i] = Some(waker.clone());
            i
        } else {
            wakers.push(Some(waker.clone()));
            wakers.len() - 1
        }
    }

    /// The waiter holding `slot` gives up; only for a slot registered since
    /// the last [`Waiters::wake_all`].
    pub fn unregister(&self, slot: usize) {
        self.wakers.borrow_mut()[slot] = None;
        self.free.borrow_mut().push(slot);
    }

    /// Wakes every waiter; their slots are void from here on.
    pub fn wake_all(&self) {
        self.free.borrow_mut().clear();
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
    }

    /// Wakers held now.
    pub fn waiting(&self) -> usize {
        self.wakers.borrow().iter().filter(|w| w.is_some()).count()
    }

    /// Slots in the list, free ones included.
    pub fn slots(&self) -> usize {
        self.wakers.borrow().len()
    }
}
