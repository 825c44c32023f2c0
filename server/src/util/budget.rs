//! A byte budget with first-come, first-served waiting: a connection's
//! in-flight bytes. Single-core (`Rc`, `Cell`), so no atomics; permits give
//! their bytes back on drop. The broker stops reading from a connection
//! while its budget is spent, so memory is bounded by configuration.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

struct Inner {
    available: Cell<u64>,
    closed: Cell<bool>,
    /// Waiting acquirers in arrival order: `(ticket, waker)`.
    waiters: RefCell<VecDeque<(u64, Waker)>>,
    next_ticket: Cell<u64>,
    /// Called with the signed change in bytes held (a shard-wide gauge).
    on_change: Box<dyn Fn(i64)>,
}

#[derive(Clone)]
pub struct Budget {
    inner: Rc<Inner>,
}

/// Bytes taken from a [`Budget`].
pub struct Permit {
    inner: Rc<Inner>,
    bytes: u64,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.inner.available.set(self.inner.available.get() + self.bytes);
        (self.inner.on_change)(-(self.bytes as i64));
        if let Some((_, w)) = self.inner.waiters.borrow().front() {
            w.wake_by_ref();
        }
    }
}

impl Budget {
    pub fn new(bytes: u64, on_change: impl Fn(i64) + 'static) -> Budget {
        Budget {
            inner: Rc::new(Inner {
                available: Cell::new(bytes),
                closed: Cell::new(false),
                waiters: RefCell::new(VecDeque::new()),
                next_ticket: Cell::new(0),
                on_change: Box::new(on_change),
            }),
        }
    }

    /// Waits for `bytes` (in turn: a large request is not starved by small
    /// ones); `None` once the budget is closed.
    pub fn acquire(&self, bytes: u64) -> Acquire {
        let ticket = self.inner.next_ticket.get();
        self.inner.next_ticket.set(ticket + 1);
        Acquire { inner: self.inner.clone(), bytes, ticket, queued: false }
    }

    /// Takes `bytes` now if they are free and nobody waits for them first;
    /// `None` otherwise (a caller that cannot wait drops its work).
    pub fn try_acquire(&self, bytes: u64) -> Option<Permit> {
        let inner = &self.inner;
        if inner.closed.get() || !inner.waiters.borrow().is_empty() || inner.available.get() < bytes {
            return None;
        }
        inner.available.set(inner.available.get() - bytes);
        (inner.on_change)(bytes as i64);
        Some(Permit { inner: inner.clone(), bytes })
    }

    /// Refuses every waiting and future acquire.
    pub fn close(&self) {
        self.inner.closed.set(true);
        for (_, w) in self.inner.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }
}

pub struct Acquire {
    inner: Rc<Inner>,
    bytes: u64,
    ticket: u64,
    queued: bool,
}

impl Future for Acquire {
    type Output = Option<Permit>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Permit>> {
        let inner = self.inner.clone();
        if inner.closed.get() {
            return Poll::Ready(None);
        }
        let first = inner.waiters.borrow().front().is_none_or(|(t, _)| *t == self.ticket);
        if first && inner.available.get() >= self.bytes {
            if self.queued {
                inner.waiters.borrow_mut().pop_front();
                self.queued = false;
            }
            inner.available.set(inner.available.get() - self.bytes);
            (inner.on_change)(self.bytes as i64);
            // The next in line may fit too.
            if let Some((_, w)) = inner.waiters.borrow().front() {
                w.wake_by_ref();
            }
            return Poll::Ready(Some(Permit { inner, bytes: self.bytes }));
        }
        let mut waiters = inner.waiters.borrow_mut();
        if self.queued {
            if let Some(slot) = waiters.iter_mut().find(|(t, _)| *t == self.ticket) {
                slot.1.clone_from(cx.waker());
            }
        } else {
            waiters.push_back((self.ticket, cx.waker().clone()));
            self.queued = true;
        }
        Poll::Pending
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        if self.queued {
            let mut waiters = self.inner.waiters.borrow_mut();
            let was_first = waiters.front().is_some_and(|(t, _)| *t == self.ticket);
            waiters.retain(|(t, _)| *t != self.ticket);
            if was_first && let Some((_, w)) = waiters.front() {
                w.wake_by_ref();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::LocalPool;
    use futures::task::LocalSpawnExt;

    #[test]
    fn try_acquire_takes_only_what_is_free_and_never_jumps_the_queue() {
        let budget = Budget::new(2, |_| {});
        let a = budget.try_acquire(1).expect("free");
        let b = budget.try_acquire(1).expect("free");
        assert!(budget.try_acquire(1).is_none(), "spent");
        drop(a);
        let c = budget.try_acquire(1).expect("given back");
        drop((b, c));
        // Someone waits for both units: a taker may not slip in first.
        let held = budget.try_acquire(1).expect("free");
        let mut waiting = Box::pin(budget.acquire(2));
        let waker = futures::task::noop_waker();
        assert!(waiting.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
        assert!(budget.try_acquire(1).is_none(), "a waiter is first");
        drop(held);
        assert!(waiting.as_mut().poll(&mut Context::from_waker(&waker)).is_ready());
        budget.close();
        assert!(budget.try_acquire(1).is_none(), "closed");
    }

    #[test]
    fn acquirers_wait_their_turn_and_bytes_come_back() {
        let held = Rc::new(Cell::new(0i64));
        let budget = {
            let held = held.clone();
            Budget::new(100, move |d| held.set(held.get() + d))
        };
        let mut pool = LocalPool::new();
        let first = futures::executor::block_on(budget.acquire(80)).unwrap();
        assert_eq!(held.get(), 80);
        let order = Rc::new(RefCell::new(Vec::new()));
        for (name, bytes) in [("big", 60u64), ("small", 10)] {
            let (budget, order) = (budget.clone(), order.clone());
            pool.spawner()
                .spawn_local(async move {
                    let p = budget.acquire(bytes).await.unwrap();
                    order.borrow_mut().push(name);
                    drop(p);
                })
                .unwrap();
        }
        pool.run_until_stalled();
        assert!(order.borrow().is_empty(), "the small one waits behind the big one, though 20 bytes are free");
        drop(first);
        pool.run_until_stalled();
        assert_eq!(*order.borrow(), vec!["big", "small"]);
        assert_eq!(held.get(), 0);
        budget.close();
        assert!(futures::executor::block_on(budget.acquire(1)).is_none());
    }
}
