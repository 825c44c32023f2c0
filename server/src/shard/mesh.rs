//! How shards reach each other: "run this closure on shard N". A job is a
//! boxed closure that the receiving shard runs as soon as it arrives, in
//! arrival order, so work a shard sends another in order starts there in
//! order (what per-connection produce order needs). A feature that needs
//! another shard writes a closure; nothing adds a variant to a shared enum.
//!
//! Between cores the jobs travel over glommio's bounded channel mesh (the
//! sender waits while the peer's queue is full: backpressure). In the
//! simulator every shard is on one thread, and a job is a direct call.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use engine::rt::Runtime;

use super::Shard;
use crate::ids::ShardId;

/// Work for another shard, run there with that shard.
pub type Job<R> = Box<dyn FnOnce(&Rc<Shard<R>>) + Send>;

/// The peer is gone (its executor stopped: only during shutdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardGone;

pub enum Mesh<R: Runtime> {
    /// One core per shard: glommio's channel mesh.
    Threads(glommio::channels::channel_mesh::Senders<Job<R>>),
    /// Every shard on this thread (the simulator).
    Local(Rc<RefCell<Vec<Weak<Shard<R>>>>>),
}

impl<R: Runtime> Mesh<R> {
    pub async fn send(&self, to: ShardId, job: Job<R>) -> Result<(), ShardGone> {
        match self {
            Mesh::Threads(senders) => senders.send_to(to.0, job).await.map_err(|_| ShardGone),
            Mesh::Local(shards) => {
                let shard = shards.borrow().get(to.0).and_then(Weak::upgrade).ok_or(ShardGone)?;
                job(&shard);
                Ok(())
            }
        }
    }
}
