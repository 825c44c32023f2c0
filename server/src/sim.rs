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

/// A native-protocol client on the simulated network, one request at a
/// time: what simulator tests drive a broker with.
pub struct SimClient {
    stream: engine::rt::sim::SimStream,
    next_id: u32,
}

/// A request the broker answered with an error.
pub type CallError = (protocol::ErrorCode, String);

impl SimClient {
    /// Connects to `addr` and shakes hands.
    pub async fn connect(rt: &SimRuntime, addr: SocketAddr) -> std::io::Result<SimClient> {
        let stream = rt.net.connect(addr)?;
        let mut client = SimClient { stream, next_id: 1 };
        let hello = protocol::api::Request::Handshake(protocol::api::HandshakeRequest {
            protocol_version: protocol::frame::PROTOCOL_VERSION,
            client: "sim".into(),
        });
        client
            .call(&hello)
            .await
            .map_err(|(code, message)| std::io::Error::other(format!("handshake refused: {code}: {message}")))?;
        Ok(client)
    }

    /// Sends `request` and waits for its response.
    pub async fn call(&mut self, request: &protocol::api::Request) -> Result<protocol::api::Response, CallError> {
        use futures::io::{AsyncReadExt, AsyncWriteExt};
        let gone = |e: std::io::Error| (protocol::ErrorCode::SHUTTING_DOWN, format!("connection lost: {e}"));
        let id = self.next_id;
        self.next_id += 1;
        for piece in request.encode(id) {
            self.stream.write_all(&piece).await.map_err(gone)?;
        }
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).await.map_err(gone)?;
        let mut frame = vec![0u8; u32::from_le_bytes(len) as usize];
        self.stream.read_exact(&mut frame).await.map_err(gone)?;
        let (header, body) = protocol::frame::ResponseHeader::decode(&bytes::Bytes::from(frame))
            .map_err(|e| (protocol::ErrorCode::MALFORMED_REQUEST, e.to_string()))?;
        assert_eq!(header.request_id, id, "one request at a time");
        if !header.error.is_ok() {
            return Err((header.error, protocol::frame::decode_error_message(body)));
        }
        protocol::api::Response::decode(request.api_key(), body)
            .map_err(|e| (protocol::ErrorCode::MALFORMED_REQUEST, e.to_string()))
    }
}
