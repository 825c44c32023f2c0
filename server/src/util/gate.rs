//! Tracks tasks (a shard's connections) so shutdown can wait until every
//! one has finished what it started. Single-core.

use std::cell::Cell;
use std::rc::Rc;

use super::signal::Signal;

#[derive(Clone)]
pub struct Gate {
    open: Rc<Cell<usize>>,
    closing: Rc<Cell<bool>>,
    drained: Rc<Signal>,
}

/// Held by a tracked task; dropping it marks the task done.
pub struct Pass {
    gate: Gate,
}

impl Drop for Pass {
    fn drop(&mut self) {
        let n = self.gate.open.get() - 1;
        self.gate.open.set(n);
        if n == 0 && self.gate.closing.get() {
            self.gate.drained.fire();
        }
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate { open: Rc::new(Cell::new(0)), closing: Rc::new(Cell::new(false)), drained: Signal::new() }
    }
}

impl Gate {
    /// A pass for a new task; `None` once the gate is closing.
    pub fn enter(&self) -> Option<Pass> {
        if self.closing.get() {
            return None;
        }
        self.open.set(self.open.get() + 1);
        Some(Pass { gate: self.clone() })
    }

    /// Refuses new tasks and waits for the tracked ones to finish.
    pub async fn close(&self) {
        self.closing.set(true);
        if self.open.get() == 0 {
            return;
        }
        self.drained.wait().await;
    }
}
