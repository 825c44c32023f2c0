//! Small single-core building blocks the broker needs and the runtimes do
//! not share: an event many tasks wait for, a byte budget, a gate that
//! tracks tasks until they finish.

pub mod budget;
pub mod gate;
pub mod signal;
