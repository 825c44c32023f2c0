//! [`Runtime`] on the simulation: tasks on the [`SimExecutor`], timers on
//! its virtual clock, files on a [`SimStorage`], sockets on a [`SimNet`].
//! Every core of a simulated broker shares the one executor: the mesh
//! between them is then a direct call, and the whole broker is one
//! deterministic, seeded interleaving.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{SimExecutor, SimListener, SimNet, SimSleep, SimStorage, SimStream, SimTask};
use crate::rt::Runtime;

#[derive(Clone)]
pub struct SimRuntime {
    pub executor: SimExecutor,
    pub storage: SimStorage,
    pub net: SimNet,
}

impl SimRuntime {
    /// A runtime on `executor` with its own disk and network.
    #[must_use]
    pub fn new(executor: &SimExecutor) -> SimRuntime {
        SimRuntime { executor: executor.clone(), storage: SimStorage::with_executor(executor), net: SimNet::new() }
    }
}

impl Runtime for SimRuntime {
    type Storage = SimStorage;
    type Stream = SimStream;
    type Listener = SimListener;
    type Task<T: 'static> = SimTask<T>;
    type Sleep = SimSleep;

    fn storage(&self) -> &SimStorage {
        &self.storage
    }

    fn spawn<T: 'static>(&self, future: impl Future<Output = T> + 'static) -> SimTask<T> {
        self.executor.spawn(future)
    }

    fn sleep(&self, duration: Duration) -> SimSleep {
        self.executor.clock().sleep(duration)
    }

    fn now(&self) -> Instant {
        self.executor.clock().now()
    }

    fn listen(&self, addr: SocketAddr) -> io::Result<SimListener> {
        self.net.listen(addr)
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<SimStream> {
        self.net.connect(addr)
    }
}
