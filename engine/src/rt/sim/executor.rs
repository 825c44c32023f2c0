//! A deterministic single-threaded executor with virtual time.
//!
//! Every step polls one ready task, chosen by a seeded generator, so one
//! seed is one interleaving and a failing seed replays. When no task is
//! ready the clock jumps to the next timer: a simulated second of long
//! polls, timeouts and disk latency costs no real time. [`SimExecutor::clear`]
//! drops every task at once, which is what a power loss does to a process.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use super::SimRng;

type BoxFuture = Pin<Box<dyn Future<Output = ()>>>;

/// The ids of tasks woken since they were last polled. Wakers must be
/// `Send + Sync`, so this one queue is behind a mutex; nothing else is.
#[derive(Default)]
struct ReadyQueue {
    ids: Vec<u64>,
}

struct TaskWaker {
    id: u64,
    ready: Arc<Mutex<ReadyQueue>>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.lock().expect("not poisoned").ids.push(self.id);
    }
}

struct Inner {
    tasks: RefCell<HashMap<u64, BoxFuture>>,
    /// Runnable task ids, in a deterministic order (a map: no hashing order).
    runnable: RefCell<BTreeSet<u64>>,
    ready: Arc<Mutex<ReadyQueue>>,
    next_id: Cell<u64>,
    clock: SimClock,
    rng: RefCell<SimRng>,
    /// Tasks that finished or were dropped; their join handles learn it here.
    polls: Cell<u64>,
}

/// The simulated clock: virtual time since the simulation started, and the
/// timers waiting on it.
#[derive(Clone)]
pub struct SimClock {
    inner: Rc<ClockInner>,
}

struct ClockInner {
    elapsed: Cell<Duration>,
    base: Instant,
    base_unix_ms: i64,
    /// `(deadline, sequence)` → waker.
    timers: RefCell<BTreeMap<(Duration, u64), Waker>>,
    next_timer: Cell<u64>,
}

impl SimClock {
    fn new(base_unix_ms: i64) -> SimClock {
        SimClock {
            inner: Rc::new(ClockInner {
                elapsed: Cell::new(Duration::ZERO),
                base: Instant::now(),
                base_unix_ms,
                timers: RefCell::new(BTreeMap::new()),
                next_timer: Cell::new(0),
            }),
        }
    }

    /// Virtual time since the simulation started.
    pub fn elapsed(&self) -> Duration {
        self.inner.elapsed.get()
    }

    /// The virtual monotonic clock, as an `Instant`.
    pub fn now(&self) -> Instant {
        self.inner.base + self.elapsed()
    }

    /// Virtual wall-clock milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        self.inner.base_unix_ms + self.elapsed().as_millis() as i64
    }

    /// Completes once `duration` of virtual time has passed.
    pub fn sleep(&self, duration: Duration) -> SimSleep {
        SimSleep { clock: self.clone(), deadline: self.elapsed() + duration, key: None }
    }

    /// Moves time to the earliest timer and wakes it (and any due with it);
    /// `false` if no timer is waiting.
    fn advance(&self) -> bool {
        let first = self.inner.timers.borrow().keys().next().copied();
        let Some((deadline, _)) = first else { return false };
        if deadline > self.elapsed() {
            self.inner.elapsed.set(deadline);
        }
        let due: Vec<Waker> = {
            let mut timers = self.inner.timers.borrow_mut();
            let later = timers.split_off(&(self.elapsed(), u64::MAX));
            std::mem::replace(&mut *timers, later).into_values().collect()
        };
        for waker in due {
            waker.wake();
        }
        true
    }
}

/// A timer on the simulated clock.
pub struct SimSleep {
    clock: SimClock,
    deadline: Duration,
    key: Option<(Duration, u64)>,
}

impl Future for SimSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.clock.elapsed() >= self.deadline {
            if let Some(key) = self.key.take() {
                self.clock.inner.timers.borrow_mut().remove(&key);
            }
            return Poll::Ready(());
        }
        let key = if let Some(key) = self.key {
            key
        } else {
            let seq = self.clock.inner.next_timer.get();
            self.clock.inner.next_timer.set(seq + 1);
            let key = (self.deadline, seq);
            self.key = Some(key);
            key
        };
        self.clock.inner.timers.borrow_mut().insert(key, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for SimSleep {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.clock.inner.timers.borrow_mut().remove(&key);
        }
    }
}

/// A handle on a spawned task: resolves to its output, or `None` if the
/// task was dropped (by [`SimExecutor::clear`]) before it finished.
pub struct SimTask<T> {
    slot: Rc<RefCell<TaskSlot<T>>>,
}

struct TaskSlot<T> {
    output: Option<T>,
    done: bool,
    waker: Option<Waker>,
}

/// Marks the slot done (output or not) when the task's future goes away.
struct Completion<T> {
    slot: Rc<RefCell<TaskSlot<T>>>,
}

impl<T> Drop for Completion<T> {
    fn drop(&mut self) {
        let waker = {
            let mut slot = self.slot.borrow_mut();
            slot.done = true;
            slot.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Future for SimTask<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut slot = self.slot.borrow_mut();
        if slot.done {
            return Poll::Ready(slot.output.take());
        }
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// The simulation's executor; cheap to clone (all clones are one executor).
#[derive(Clone)]
pub struct SimExecutor {
    inner: Rc<Inner>,
}

/// The wall clock a simulation starts at: 2023-11-14, far from any edge.
pub const SIM_EPOCH_MS: i64 = 1_700_000_000_000;

impl SimExecutor {
    #[must_use]
    pub fn new(seed: u64) -> SimExecutor {
        SimExecutor {
            inner: Rc::new(Inner {
                tasks: RefCell::new(HashMap::new()),
                runnable: RefCell::new(BTreeSet::new()),
                ready: Arc::new(Mutex::new(ReadyQueue::default())),
                next_id: Cell::new(0),
                clock: SimClock::new(SIM_EPOCH_MS),
                rng: RefCell::new(SimRng::new(seed)),
                polls: Cell::new(0),
            }),
        }
    }

    pub fn clock(&self) -> &SimClock {
        &self.inner.clock
    }

    /// A number in `0..n` from the simulation's generator.
    pub fn random_below(&self, n: u64) -> u64 {
        self.inner.rng.borrow_mut().below(n)
    }

    /// Task polls so far (a measure of how much happened).
    pub fn polls(&self) -> u64 {
        self.inner.polls.get()
    }

    pub fn spawn<T: 'static>(&self, future: impl Future<Output = T> + 'static) -> SimTask<T> {
        let slot = Rc::new(RefCell::new(TaskSlot { output: None, done: false, waker: None }));
        let completion = Completion { slot: slot.clone() };
        let wrapped = async move {
            let completion = completion;
            let output = future.await;
            completion.slot.borrow_mut().output = Some(output);
            drop(completion);
        };
        let id = self.inner.next_id.get();
        self.inner.next_id.set(id + 1);
        self.inner.tasks.borrow_mut().insert(id, Box::pin(wrapped));
        self.inner.runnable.borrow_mut().insert(id);
        SimTask { slot }
    }

    fn collect_woken(&self) {
        let ids = std::mem::take(&mut self.inner.ready.lock().expect("not poisoned").ids);
        let mut runnable = self.inner.runnable.borrow_mut();
        let tasks = self.inner.tasks.borrow();
        for id in ids {
            if tasks.contains_key(&id) {
                runnable.insert(id);
            }
        }
    }

    /// Polls one runnable task, chosen at random; `false` if none is runnable.
    fn step(&self) -> bool {
        self.collect_woken();
        let id = {
            let runnable = self.inner.runnable.borrow();
            if runnable.is_empty() {
                return false;
            }
            let pick = self.inner.rng.borrow_mut().below(runnable.len() as u64) as usize;
            *runnable.iter().nth(pick).expect("in range")
        };
        self.inner.runnable.borrow_mut().remove(&id);
        // The task leaves the table while it runs: it may spawn others.
        let Some(mut future) = self.inner.tasks.borrow_mut().remove(&id) else { return true };
        let waker = Waker::from(Arc::new(TaskWaker { id, ready: self.inner.ready.clone() }));
        let mut cx = Context::from_waker(&waker);
        self.inner.polls.set(self.inner.polls.get() + 1);
        if future.as_mut().poll(&mut cx).is_pending() {
            self.inner.tasks.borrow_mut().insert(id, future);
        }
        true
    }

    /// Runs tasks until none is runnable, without moving the clock.
    pub fn run_until_stalled(&self) {
        while self.step() {}
    }

    /// Runs tasks and moves virtual time on until `done` holds; `false` if
    /// nothing is left to run or `limit` of virtual time passed first.
    pub fn run_until(&self, limit: Duration, mut done: impl FnMut() -> bool) -> bool {
        let end = self.clock().elapsed() + limit;
        loop {
            if done() {
                return true;
            }
            if self.step() {
                continue;
            }
            if self.clock().elapsed() >= end || !self.clock().advance() {
                return done();
            }
        }
    }

    /// Runs for `duration` of virtual time.
    pub fn run_for(&self, duration: Duration) {
        let end = self.clock().elapsed() + duration;
        let stop = self.clock().sleep(duration);
        let stopped = Rc::new(Cell::new(false));
        {
            let stopped = stopped.clone();
            drop(self.spawn(async move {
                stop.await;
                stopped.set(true);
            }));
        }
        self.run_until(duration + Duration::from_nanos(1), || stopped.get());
        debug_assert!(self.clock().elapsed() >= end);
    }

    /// Runs `future` (and everything else) until it completes, moving
    /// virtual time as needed. Panics if it can never complete.
    pub fn block_on<T: 'static>(&self, future: impl Future<Output = T> + 'static) -> T {
        let slot = Rc::new(RefCell::new(None));
        {
            let slot = slot.clone();
            drop(self.spawn(async move { *slot.borrow_mut() = Some(future.await) }));
        }
        let done = self.run_until(Duration::MAX / 4, || slot.borrow().is_some());
        assert!(done, "block_on: the future can never complete (no task runnable, no timer pending)");
        slot.borrow_mut().take().expect("done")
    }

    /// Drops every task, as a power loss or `kill -9` ends a process; their
    /// handles resolve to `None`. Pending timers go with them.
    pub fn clear(&self) {
        let tasks: Vec<BoxFuture> = self.inner.tasks.borrow_mut().drain().map(|(_, f)| f).collect();
        self.inner.runnable.borrow_mut().clear();
        // Dropping a task may wake or spawn others: drop until none is left.
        drop(tasks);
        loop {
            let more: Vec<BoxFuture> = self.inner.tasks.borrow_mut().drain().map(|(_, f)| f).collect();
            if more.is_empty() {
                break;
            }
            drop(more);
        }
        self.inner.runnable.borrow_mut().clear();
        self.inner.ready.lock().expect("not poisoned").ids.clear();
    }

    /// Tasks alive now.
    pub fn task_count(&self) -> usize {
        self.inner.tasks.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_move_virtual_time_and_fire_in_order() {
        let ex = SimExecutor::new(1);
        let order = Rc::new(RefCell::new(Vec::new()));
        for ms in [30u64, 10, 20] {
            let (clock, order) = (ex.clock().clone(), order.clone());
            drop(ex.spawn(async move {
                clock.sleep(Duration::from_millis(ms)).await;
                order.borrow_mut().push((ms, clock.elapsed()));
            }));
        }
        let real = Instant::now();
        ex.run_until(Duration::from_secs(1), || order.borrow().len() == 3);
        assert!(real.elapsed() < Duration::from_secs(1), "virtual time costs no real time");
        let got = order.borrow().clone();
        assert_eq!(got.iter().map(|(ms, _)| *ms).collect::<Vec<_>>(), vec![10, 20, 30]);
        assert_eq!(got[2].1, Duration::from_millis(30));
    }

    #[test]
    fn one_seed_is_one_interleaving_and_seeds_differ() {
        let run = |seed| {
            let ex = SimExecutor::new(seed);
            let log = Rc::new(RefCell::new(Vec::new()));
            for t in 0..5 {
                let log = log.clone();
                drop(ex.spawn(async move {
                    for step in 0..3 {
                        log.borrow_mut().push((t, step));
                        super::super::disk::yield_once().await;
                    }
                }));
            }
            ex.run_until_stalled();
            log.borrow().clone()
        };
        assert_eq!(run(7), run(7));
        assert!((0..20).any(|s| run(s) != run(7)), "the seed chooses the interleaving");
    }

    #[test]
    fn clear_drops_every_task_and_their_handles_resolve_to_none() {
        let ex = SimExecutor::new(1);
        let handle = ex.spawn(std::future::pending::<u32>());
        let waiter = ex.spawn(handle);
        ex.run_until_stalled();
        ex.clear();
        assert_eq!(ex.task_count(), 0);
        let ex2 = SimExecutor::new(2);
        assert_eq!(ex2.block_on(waiter), None, "the waiter was dropped too");
    }

    #[test]
    fn block_on_returns_the_output() {
        let ex = SimExecutor::new(3);
        let clock = ex.clock().clone();
        let v = ex.block_on(async move {
            clock.sleep(Duration::from_secs(5)).await;
            42
        });
        assert_eq!(v, 42);
        assert_eq!(ex.clock().elapsed(), Duration::from_secs(5));
    }
}
