//! A one-shot, per-core event that any number of tasks can wait for: the
//! shard's shutdown. Single-threaded (`!Send`) on purpose: each shard has
//! its own. A waiter that is dropped before the event (a long poll that got
//! its data) gives its slot back, so waiting never accumulates wakers.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct Signal {
    fired: Cell<bool>,
    wakers: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl Signal {
    pub fn new() -> Rc<Signal> {
        Rc::new(Signal::default())
    }

    pub fn fire(&self) {
        self.fired.set(true);
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        self.free.borrow_mut().clear();
        for w in wakers.into_iter().flatten() {
            w.wake();
        }
    }

    pub fn is_fired(&self) -> bool {
        self.fired.get()
    }

    pub fn wait(self: &Rc<Self>) -> Fired {
        Fired { signal: self.clone(), slot: None }
    }

    /// Waiters currently registered.
    #[cfg(test)]
    pub fn waiters(&self) -> usize {
        self.wakers.borrow().iter().filter(|w| w.is_some()).count()
    }
}

pub struct Fired {
    signal: Rc<Signal>,
    slot: Option<usize>,
}

impl Future for Fired {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.fired.get() {
            self.slot = None;
            return Poll::Ready(());
        }
        let signal = self.signal.clone();
        let mut wakers = signal.wakers.borrow_mut();
        if let Some(i) = self.slot {
            let slot = &mut wakers[i];
            if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *slot = Some(cx.waker().clone());
            }
        } else {
            let free = signal.free.borrow_mut().pop();
            let i = if let Some(i) = free {
                wakers[i] = Some(cx.waker().clone());
                i
            } else {
                wakers.push(Some(cx.waker().clone()));
                wakers.len() - 1
            };
            self.slot = Some(i);
        }
        Poll::Pending
    }
}

impl Drop for Fired {
    fn drop(&mut self) {
        if let Some(i) = self.slot.take()
            && !self.signal.fired.get()
        {
            self.signal.wakers.borrow_mut()[i] = None;
            self.signal.free.borrow_mut().push(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::LocalPool;
    use futures::task::LocalSpawnExt;

    #[test]
    fn every_waiter_wakes_when_the_signal_fires() {
        let signal = Signal::new();
        let woke = Rc::new(Cell::new(0));
        let mut pool = LocalPool::new();
        for _ in 0..3 {
            let (signal, woke) = (signal.clone(), woke.clone());
            pool.spawner()
                .spawn_local(async move {
                    signal.wait().await;
                    woke.set(woke.get() + 1);
                })
                .unwrap();
        }
        pool.run_until_stalled();
        assert_eq!(woke.get(), 0);
        signal.fire();
        pool.run_until_stalled();
        assert_eq!(woke.get(), 3);
    }

    #[test]
    fn dropped_waiters_give_their_slot_back() {
        let signal = Signal::new();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..1000 {
            let mut fired = Box::pin(signal.wait());
            assert!(fired.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(signal.waiters(), 0);
        assert!(signal.wakers.borrow().len() <= 1, "slots are reused");
    }
}
