//! Wakes every task of one core that waits for the log's I/O to move on.
//! Single-threaded by construction (`!Send`), so no atomics and no locks.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Debug, Default)]
pub(crate) struct Notify {
    generation: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl Notify {
    /// A future that completes at the next [`Notify::notify_all`] after this call.
    pub fn notified(&self) -> Notified<'_> {
        Notified { notify: self, generation: self.generation.get(), slot: None }
    }

    pub fn notify_all(&self) {
        self.generation.set(self.generation.get() + 1);
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for waker in wakers {
            waker.wake();
        }
    }
}

pub(crate) struct Notified<'a> {
    notify: &'a Notify,
    generation: u64,
    /// Where this future's waker sits in the current generation's list, so
    /// a re-poll costs O(1) instead of a scan of every waiter.
    slot: Option<usize>,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.generation {
            return Poll::Ready(());
        }
        let mut wakers = self.notify.wakers.borrow_mut();
        match self.slot {
            Some(i) if wakers[i].will_wake(cx.waker()) => {}
            Some(i) => wakers[i].clone_from(cx.waker()),
            None => {
                wakers.push(cx.waker().clone());
                drop(wakers);
                self.slot = Some(self.notify.wakers.borrow().len() - 1);
            }
        }
        Poll::Pending
    }
}

/// Yields to the executor once: the task goes to the back of the run queue.
pub(crate) fn yield_now() -> YieldNow {
    YieldNow(false)
}

pub(crate) struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
