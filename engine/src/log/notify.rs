//! Wakes every task of one core that waits for the log's I/O to move on.
//! Single-threaded by construction (`!Send`), so no atomics and no locks.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::rt::waiters::Waiters;

#[derive(Debug, Default)]
pub(crate) struct Notify {
    generation: Cell<u64>,
    waiters: Waiters,
}

impl Notify {
    /// A future that completes at the next [`Notify::notify_all`] after this call.
    pub fn notified(&self) -> Notified<'_> {
        Notified { notify: self, generation: self.generation.get(), slot: None }
    }

    pub fn notify_all(&self) {
        self.generation.set(self.generation.get() + 1);
        self.waiters.wake_all();
    }

    /// Wakers held now: bounded by the waiters alive, not by those that
    /// ever waited.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.waiters.waiting()
    }
}

pub(crate) struct Notified<'a> {
    notify: &'a Notify,
    generation: u64,
    /// This future's place in the waiter list, so a re-poll costs O(1).
    slot: Option<usize>,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.generation {
            return Poll::Ready(());
        }
        self.slot = Some(self.notify.waiters.register(self.slot, cx.waker()));
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
            self.notify.waiters.unregister(i);
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
