//! A whole broker on the simulator: every shard on the one seeded
//! executor, the mesh a direct call, the disk and network simulated. The
//! same shard code runs here as on glommio, so simulator tests exercise the
//! broker itself: its front end, service layer, partitions and logs.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use engine::rt::sim::{SimRuntime, SimTask};

use crate::config::ServerConfig;
use crate::ids::ShardId;
use crate::shard::mesh::Mesh;
use crate::shard::run::{Listen, Ready};
use crate::shard::{Shard, Shared};

/// A broker running on a simulation.
pub struct SimBroker {
    pub addr: SocketAddr,
    pub shards: Vec<Rc<Shard<SimRuntime>>>,
    shared: Arc<Shared>,
    tasks: Vec<SimTask<()>>,
    rt: SimRuntime,
}

impl SimBroker {
    /// Starts `shards` shards on `rt` and runs the simulation until they
    /// all listen.
    pub fn start(rt: &SimRuntime, config: &ServerConfig, shards: usize) -> Result<SimBroker, String> {
        config.validate()?;
        let shared = Arc::new(Shared::default());
        let local = Rc::new(RefCell::new(Vec::new()));
        let addr = config.listen;
        let all: Vec<Rc<Shard<SimRuntime>>> = (0..shards)
            .map(|i| {
                Shard::new(rt.clone(), config.clone(), ShardId(i), shards, Mesh::Local(local.clone()), shared.clone())
            })
            .collect();
        local.borrow_mut().extend(all.iter().map(Rc::downgrade));
        let ready: Rc<RefCell<Vec<Result<Ready, String>>>> = Rc::new(RefCell::new(Vec::new()));
        let mut tasks = Vec::new();
        for shard in &all {
            let own = config.shard_ports.then(|| SocketAddr::new(addr.ip(), 0));
            let listen = Listen { shared: addr, own, metrics: None };
            let ready = ready.clone();
            tasks.push(rt.executor.spawn(shard.clone().run(listen, move |r| ready.borrow_mut().push(r))));
        }
        let booted = rt.executor.run_until(Duration::from_mins(10), || ready.borrow().len() == shards);
        if !booted {
            return Err("the simulated broker did not start".into());
        }
        let mut ports = vec![0u16; shards];
        for r in ready.borrow().iter() {
            let r = r.as_ref().map_err(Clone::clone)?;
            ports[r.shard] = r.own_port;
        }
        if config.shard_ports {
            let _ = shared.shard_ports.set(ports);
        }
        Ok(SimBroker { addr, shards: all, shared, tasks, rt: rt.clone() })
    }

    /// A graceful shutdown (SIGTERM): runs the simulation until every shard
    /// has closed its logs.
    pub fn stop(self) {
        self.shared.stop.store(true, Ordering::Release);
        let rt = self.rt.clone();
        let tasks = self.tasks;
        let done = Rc::new(std::cell::Cell::new(false));
        {
            let done = done.clone();
            drop(rt.executor.spawn(async move {
                for t in tasks {
                    t.await;
                }
                done.set(true);
            }));
        }
        let stopped = rt.executor.run_until(Duration::from_mins(10), || done.get());
        assert!(stopped, "the simulated broker did not stop");
    }
}
