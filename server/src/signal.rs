//! A one-shot, per-core event that any number of tasks can wait for: the
//! shard's shutdown. Single-threaded (`!Send`) on purpose: each shard has its own.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct Signal {
    fired: Cell<bool>,
    wakers: RefCell<Vec<Waker>>,
}

impl Signal {
    pub fn new() -> Rc<Signal> {
        Rc::new(Signal::default())
    }

    pub fn fire(&self) {
        self.fired.set(true);
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    pub fn is_fired(&self) -> bool {
        self.fired.get()
    }

    pub fn wait(self: &Rc<Self>) -> Fired {
        Fired { signal: self.clone() }
    }
}

pub struct Fired {
    signal: Rc<Signal>,
}

impl Future for Fired {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.fired.get() {
            return Poll::Ready(());
        }
        let mut wakers = self.signal.wakers.borrow_mut();
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
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
}
