//! Wakes every task of one core that waits for the log's I/O to move on.
//! Single-threaded by construction (`!Send`), so no atomics and no locks.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Debug, Default)]
pub(crate) struct Notify {
    generation: Cell<u64>,
    /// The waiters of the current generation; `None` where a waiter gave
    /// up (a long poll that timed out), its slot kept in `free` for the next.
    wakers: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl Notify {
    /// A future that completes at the next [`Notify::notify_all`] after this call.
    pub fn notified(&self) -> Notified<'_> {
        Notified { notify: self, generation: self.generation.get(), slot: None }
    }

    pub fn notify_all(&self) {
        self.generation.set(self.generation.get() + 1);
        self.free.borrow_mut().clear();
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
    }

    /// Wakers held now: bounded by the waiters alive, not by those that
    /// ever waited.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.wakers.borrow().iter().filter(|w| w.is_some()).count()
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
        if let Some(i) = self.slot {
            match &mut wakers[i] {
                Some(w) if w.will_wake(cx.waker()) => {}
                w => *w = Some(cx.waker().clone()),
            }
        } else {
            let i = if let Some(i) = self.notify.free.borrow_mut().pop() {
                wakers[i] = Some(cx.waker().clone());
                i
            } else {
                wakers.push(Some(cx.waker().clone()));
                wakers.len() - 1
            };
            drop(wakers);
            self.slot = Some(i);
        }
        Poll::Pending
    }
}

impl Drop for Notified<'_> {
    fn drop(&mut self) {
        // A waiter that gives up before the notification takes its waker
        // (and the task it keeps alive) out with it.
        if let Some(i) = self.slot
            && self.notify.generation.get() == self.generation
        {
            self.notify.wakers.borrow_mut()[i] = None;
            self.notify.free.borrow_mut().push(i);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiter_that_gives_up_leaves_no_waker_behind() {
        let notify = Notify::default();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..1000 {
            let mut waiting = Box::pin(notify.notified());
            assert!(waiting.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(notify.waiting(), 0, "1000 timed-out long polls hold nothing");
        let mut a = Box::pin(notify.notified());
        let mut b = Box::pin(notify.notified());
        assert!(a.as_mut().poll(&mut cx).is_pending() && b.as_mut().poll(&mut cx).is_pending());
        assert_eq!(notify.waiting(), 2);
        drop(a);
        notify.notify_all();
        assert!(b.as_mut().poll(&mut cx).is_ready(), "the one still waiting is woken");
    }
}
