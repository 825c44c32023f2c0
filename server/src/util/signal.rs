//! A one-shot, per-core event that any number of tasks can wait for: the
//! shard's shutdown. Single-threaded (`!Send`) on purpose: each shard has
//! its own. A waiter that is dropped before the event (a long poll that got
//! its data) gives its slot back, so waiting never accumulates wakers.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use engine::rt::waiters::Waiters;

#[derive(Default)]
pub struct Signal {
    fired: Cell<bool>,
    waiters: Waiters,
}

impl Signal {
    pub fn new() -> Rc<Signal> {
        Rc::new(Signal::default())
    }

    pub fn fire(&self) {
        self.fired.set(true);
        self.waiters.wake_all();
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
        self.waiters.waiting()
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
        self.slot = Some(self.signal.waiters.register(self.slot, cx.waker()));
        Poll::Pending
    }
}

impl Drop for Fired {
    fn drop(&mut self) {
        if let Some(i) = self.slot.take()
            && !self.signal.fired.get()
        {
            self.signal.waiters.unregister(i);
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
        assert!(signal.waiters.slots() <= 1, "slots are reused");
    }
}
