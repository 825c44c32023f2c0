//! Starting and stopping a broker: one pinned glommio executor per core (a
//! shard), joined in a channel mesh; each opens its partitions, binds the
//! shared address (SO_REUSEPORT: the kernel spreads connections) and serves
//! until told to stop, then shuts down in phases so nothing acknowledged is
//! lost and every log is closed cleanly.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use protocol::ErrorCode;

use crate::config::ServerConfig;
use crate::shard::{Shard, ShardMsg, Shared};
use crate::{conn, metadata};

/// Holds an exclusive `flock` on the data directory: two brokers on one
/// directory would corrupt each other's logs.
struct DirLock {
    _file: std::fs::File,
}

impl DirLock {
    fn acquire(dir: &std::path::Path) -> Result<DirLock, String> {
        use std::os::fd::AsRawFd;
        let path = dir.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(format!("{} is in use by another cairn-server", dir.display()));
        }
        Ok(DirLock { _file: file })
    }
}

fn cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity fills the set we pass; CPU_ISSET reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw mut set) == 0 {
            let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect();
            if !cpus.is_empty() {
                return cpus;
            }
        }
    }
    (0..std::thread::available_parallelism().map_or(1, std::num::NonZero::get)).collect()
}

/// Shard `id`'s own port: the shared port + 1 + id, or any free port when
/// the shared one was chosen by the system.
fn shard_port(listen: SocketAddr, id: usize) -> SocketAddr {
    let mut addr = listen;
    addr.set_port(if listen.port() == 0 { 0 } else { listen.port().saturating_add(1 + id as u16) });
    addr
}

/// Every shard binds with SO_REUSEPORT, which would also let a second broker
/// share the port and take half its connections: refuse a port that any
/// socket holds.
fn check_port_free(addr: SocketAddr) -> Result<(), String> {
    std::net::TcpListener::bind(addr).map(drop).map_err(|e| format!("cannot listen on {addr}: {e}"))
}

/// Resolves port 0 to a free port that every shard can then bind: a
/// SO_REUSEPORT socket holds it (bound, not listening) until all have.
fn reserve_port(addr: SocketAddr) -> Result<(SocketAddr, Option<socket2::Socket>), String> {
    if addr.port() != 0 {
        check_port_free(addr)?;
        return Ok((addr, None));
    }
    let domain = if addr.is_ipv6() { socket2::Domain::IPV6 } else { socket2::Domain::IPV4 };
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, None).map_err(|e| e.to_string())?;
    s.set_reuse_port(true).map_err(|e| e.to_string())?;
    s.bind(&addr.into()).map_err(|e| format!("cannot bind {addr}: {e}"))?;
    let bound = s.local_addr().map_err(|e| e.to_string())?.as_socket().ok_or("not an IP socket")?;
    Ok((bound, Some(s)))
}

/// A running broker: its shards serve until [`Broker::shutdown`].
pub struct Broker {
    /// The address every shard listens on (port 0 resolved).
    pub addr: SocketAddr,
    pub shards: usize,
    stop: Arc<AtomicBool>,
    handles: Vec<glommio::ExecutorJoinHandle<()>>,
    _lock: DirLock,
}

impl Broker {
    /// Stops accepting, lets in-flight requests finish, closes every log
    /// (sync, indexes, clean-shutdown marker), and waits for every shard.
    pub fn shutdown(self) -> Result<(), String> {
        self.stop.store(true, Ordering::Release);
        for h in self.handles {
            h.join().map_err(|e| format!("a shard failed: {e:?}"))?;
        }
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// Starts a broker and returns once every shard listens.
pub fn start(mut config: ServerConfig) -> Result<Broker, String> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", config.data_dir.display()))?;
    // Absolute from here on, so logs and errors name the real place.
    config.data_dir = std::fs::canonicalize(&config.data_dir)
        .map_err(|e| format!("cannot resolve data directory {}: {e}", config.data_dir.display()))?;
    let lock = DirLock::acquire(&config.data_dir)?;
    let topics = metadata::load(&config.data_dir)?;
    for orphan in metadata::remove_orphans(&config.data_dir, &topics).map_err(|e| e.to_string())? {
        tracing::warn!(topic = orphan, "removed the directory of a deleted topic");
    }
    let cpus = cpus();
    let shards = if config.cores == 0 { cpus.len() } else { config.cores };
    if shards > cpus.len() {
        tracing::warn!(shards, cpus = cpus.len(), "more shards than cores: some cores run several");
    }
    // Shard ports follow the port asked for: after it, or free ones for port 0.
    let shard_base = config.listen;
    let (listen, reservation) = reserve_port(config.listen)?;
    if config.shard_ports && listen.port() != 0 && config.listen.port() != 0 {
        for id in 0..shards {
            check_port_free(shard_port(listen, id))?;
        }
    }
    config.listen = listen;
    let stop = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(Shared::default());
    let mesh = MeshBuilder::<ShardMsg, _>::full(shards, config.limits.shard_channel_capacity);
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(usize, usize, u16), String>>();
    let mut handles = Vec::with_capacity(shards);
    for i in 0..shards {
        let (config, topics, mesh, stop, shared, ready) =
            (config.clone(), topics.clone(), mesh.clone(), stop.clone(), shared.clone(), ready_tx.clone());
        let mut builder = LocalExecutorBuilder::new(Placement::Fixed(cpus[i % cpus.len()])).name(&format!("shard-{i}"));
        if config.spin_before_park_us > 0 {
            builder = builder.spin_before_park(Duration::from_micros(config.spin_before_park_us));
        }
        let handle = builder
            .spawn(
                move || async move { run_shard(config, shard_base, topics, mesh, shards, stop, shared, ready).await },
            )
            .map_err(|e| format!("cannot start shard {i}: {e}"))?;
        handles.push(handle);
    }
    drop(ready_tx);
    let mut partitions = 0;
    let mut ports = vec![0u16; shards];
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok((id, owned, port))) => {
                partitions += owned;
                ports[id] = port;
            }
            Ok(Err(e)) => return Err(abort_start(&stop, handles, e)),
            Err(_) => return Err(abort_start(&stop, handles, "a shard stopped during startup".into())),
        }
    }
    drop(reservation);
    if config.shard_ports {
        let _ = shared.shard_ports.set(ports.clone());
    }
    tracing::info!(%listen, shards, partitions, ?ports, data_dir = %config.data_dir.display(), "cairn-server ready");
    Ok(Broker { addr: listen, shards, stop, handles, _lock: lock })
}

/// Stops the shards that did start (closing what they opened) and returns `e`.
fn abort_start(stop: &AtomicBool, handles: Vec<glommio::ExecutorJoinHandle<()>>, e: String) -> String {
    stop.store(true, Ordering::Release);
    for h in handles {
        let _ = h.join();
    }
    e
}

/// How often a shard looks at the process-wide stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);

#[allow(clippy::too_many_arguments)] // one shard's whole start-up context, passed once
async fn run_shard(
    config: ServerConfig,
    shard_base: SocketAddr,
    topics: metadata::Topics,
    mesh: MeshBuilder<ShardMsg, glommio::channels::channel_mesh::Full>,
    shard_count: usize,
    stop: Arc<AtomicBool>,
    counters: Arc<Shared>,
    ready: mpsc::Sender<Result<(usize, usize, u16), String>>,
) {
    // Every shard joins the mesh, whatever happens next: the others wait for it.
    let Ok((senders, mut receivers)) = mesh.join().await else {
        let _ = ready.send(Err("joining the shard mesh failed".into()));
        return;
    };
    let setup = async {
        let storage = engine::rt::glommio::GlommioStorage::new(&config.data_dir)
            .await
            .map_err(|e| format!("cannot use {}: {e}", config.data_dir.display()))?;
        let listen = config.listen;
        let shard = Shard::new(config.clone(), storage, senders, topics, counters.clone(), shard_count);
        for (_, rx) in receivers.streams() {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                while let Some(msg) = rx.recv().await {
                    shard.handle(msg);
                }
            })
            .detach();
        }
        shard.open_owned().await?;
        let listener = TcpListener::bind(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let direct = if shard.config.shard_ports {
            let addr = shard_port(shard_base, shard.id);
            let l = TcpListener::bind(addr).map_err(|e| {
                format!("cannot listen on shard {}'s port {addr}: {e} (or set shard_ports = false)", shard.id)
            })?;
            Some(l)
        } else {
            None
        };
        Ok::<_, String>((shard, listener, direct))
    };
    let (shard, listener, direct) = match setup.await {
        Ok(v) => v,
        Err(e) => {
            let _ = ready.send(Err(e));
            // `start` stops the broker: take part in the shutdown barriers
            // so the shards that did start can finish theirs.
            while !stop.load(Ordering::Acquire) {
                glommio::timer::sleep(STOP_POLL).await;
            }
            barrier(&counters.drained, shard_count).await;
            barrier(&counters.closed, shard_count).await;
            return;
        }
    };
    let direct_port = direct.as_ref().and_then(|l| l.local_addr().ok()).map_or(0, |a| a.port());
    let _ = ready.send(Ok((shard.id, shard.owned_partitions(), direct_port)));
    drop(ready);

    // The stop flag is set by the main thread on SIGTERM/SIGINT.
    {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while !stop.load(Ordering::Acquire) {
                glommio::timer::sleep(STOP_POLL).await;
            }
            shard.shutdown.fire();
        })
        .detach();
    }
    {
        let shard = shard.clone();
        let every = Duration::from_millis(shard.config.log.retention_check_ms.max(1));
        glommio::spawn_local(async move {
            while !shard.shutdown.is_fired() {
                glommio::timer::sleep(every).await;
                shard.enforce_retention().await;
            }
        })
        .detach();
    }

    // Phase 1: accept until shutdown (on the shared port and on this
    // shard's own port); then stop reading requests and let every connection
    // finish what it started.
    let connections = Rc::new(glommio::sync::Gate::new());
    let direct_loop = direct.map(|l| glommio::spawn_local(accept_loop(shard.clone(), l, connections.clone())).detach());
    accept_loop(shard.clone(), listener, connections.clone()).await;
    if let Some(task) = direct_loop {
        task.await;
    }
    let _ = connections.close().await;
    // Other shards may still forward work here until they are drained too.
    barrier(&counters.drained, shard_count).await;
    // Phase 2: no request is in flight anywhere: close every log (sync,
    // indexes, clean-shutdown marker).
    shard.close_all().await;
    barrier(&counters.closed, shard_count).await;
    tracing::debug!(shard = shard.id, "shard stopped");
}

/// Accepts connections until the shutdown, each served in a task the gate tracks.
async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, connections: Rc<glommio::sync::Gate>) {
    loop {
        let accepted = {
            let stop = std::pin::pin!(shard.shutdown.wait());
            match futures::future::select(std::pin::pin!(listener.accept()), stop).await {
                futures::future::Either::Left((r, _)) => Some(r),
                futures::future::Either::Right(_) => None,
            }
        };
        match accepted {
            None => return,
            Some(Ok(stream)) => {
                if !shard.connection_opened() {
                    let refusal = conn::refuse(
                        stream,
                        ErrorCode::TOO_MANY_CONNECTIONS,
                        "the broker has reached limits.connections_max",
                    );
                    if let Ok(task) = connections.spawn(refusal) {
                        task.detach();
                    }
                    continue;
                }
                let shard = shard.clone();
                let served = connections.spawn(async move {
                    conn::serve(shard.clone(), stream).await;
                    shard.connection_closed();
                });
                // A dropped task is cancelled: detach it (the gate still tracks it).
                if let Ok(task) = served {
                    task.detach();
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn barrier(count: &std::sync::atomic::AtomicUsize, shards: usize) {
    count.fetch_add(1, Ordering::AcqRel);
    while count.load(Ordering::Acquire) < shards {
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
}
