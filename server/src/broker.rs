//! Starting and stopping a broker process: one pinned glommio executor per
//! core (a shard), joined in a channel mesh; each runs the shard life of
//! [`crate::shard::run`] and its own thread ends with it. What is specific
//! to a process lives here: the directory lock, port checks, the threads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use engine::rt::glommio::GlommioRuntime;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::ServerConfig;
use crate::ids::ShardId;
use crate::shard::mesh::{Job, Mesh};
use crate::shard::run::{Listen, Ready};
use crate::shard::{Shard, Shared};

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

/// Every connection, segment file and index is a descriptor: with
/// thousands of partitions the usual soft limit (1024) is too low. Raise
/// the soft limit to the hard one.
fn raise_file_limit() {
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit);
        }
    }
}

/// Shard `id`'s own port: the shared port + 1 + id, or any free port when
/// the shared one was chosen by the system.
fn shard_port(listen: SocketAddr, id: usize) -> SocketAddr {
    let mut addr = listen;
    addr.set_port(if listen.port() == 0 { 0 } else { listen.port().saturating_add(1 + id as u16) });
    addr
}

/// Every listener binds with SO_REUSEPORT, so two of one broker's own on
/// one port would both bind and split its connections between them: a
/// client sent to a shard's port would sometimes reach the metrics server
/// and wait forever for a handshake. Refused before anything binds.
fn check_ports_distinct(
    listen: SocketAddr,
    shard_ports: usize,
    replication: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
) -> Result<(), String> {
    let mut taken: Vec<(SocketAddr, String)> = vec![(listen, "the client port (--listen)".to_owned())];
    for id in 0..shard_ports {
        taken.push((shard_port(listen, id), format!("shard {id}'s port (the client port + {})", 1 + id)));
    }
    let mut check = |addr: SocketAddr, what: &str| -> Result<(), String> {
        let clash = |other: &SocketAddr| {
            other.port() == addr.port()
                && (other.ip() == addr.ip() || other.ip().is_unspecified() || addr.ip().is_unspecified())
        };
        if addr.port() != 0
            && let Some((_, owner)) = taken.iter().find(|(other, _)| clash(other))
        {
            return Err(format!("{what} {addr} is also {owner}: give it another port"));
        }
        taken.push((addr, what.to_owned()));
        Ok(())
    };
    if let Some(addr) = replication {
        check(addr, "the replication address")?;
    }
    if let Some(addr) = metrics {
        check(addr, "the metrics address (--metrics-listen)")?;
    }
    Ok(())
}

/// Every shard binds with SO_REUSEPORT, which would also let a second broker
/// share the port and take half its connections — or a broker killed a
/// moment ago, whose io_uring teardown still holds its listening socket,
/// keep taking connections it will never answer. So nothing may be
/// accepting connections on a port before the shards bind it: one that is
/// is tried again for up to `retry`, with a log line, so a supervisor's
/// restart comes up as soon as the old socket is gone. (A plain bind would
/// not tell: the dead broker's closed connections linger in `FIN_WAIT2` for
/// up to a minute and refuse a bind without SO_REUSEPORT, while they never
/// refuse the shards' SO_REUSEPORT binds.)
fn wait_port_free(addr: SocketAddr, retry: Duration) -> Result<(), String> {
    let deadline = Instant::now() + retry;
    let mut probe = addr;
    if probe.ip().is_unspecified() {
        probe.set_ip(if addr.is_ipv6() {
            std::net::Ipv6Addr::LOCALHOST.into()
        } else {
            std::net::Ipv4Addr::LOCALHOST.into()
        });
    }
    let mut logged = false;
    loop {
        match std::net::TcpStream::connect_timeout(&probe, Duration::from_millis(500)) {
            Err(_) => {
                if logged {
                    tracing::info!(%addr, "the port is free again");
                }
                return Ok(());
            }
            Ok(_) if Instant::now() < deadline => {
                if !logged {
                    tracing::warn!(
                        %addr,
                        retry_s = retry.as_secs(),
                        "something still accepts connections on the port (a broker that just stopped may still \
                         be releasing it); retrying"
                    );
                    logged = true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(_) => {
                return Err(format!(
                    "cannot listen on {addr}: another process accepts connections there (still after {} s)",
                    retry.as_secs()
                ));
            }
        }
    }
}

/// Resolves port 0 to a free port that every shard can then bind: a
/// SO_REUSEPORT socket holds it (bound, not listening) until all have.
fn reserve_port(addr: SocketAddr, retry: Duration) -> Result<(SocketAddr, Option<socket2::Socket>), String> {
    if addr.port() != 0 {
        wait_port_free(addr, retry)?;
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
    /// Where `/metrics` is served, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    pub shards: usize,
    shared: Arc<Shared>,
    handles: Vec<glommio::ExecutorJoinHandle<()>>,
    _lock: DirLock,
}

impl Broker {
    /// Stops accepting, lets in-flight requests finish, closes every log
    /// (sync, indexes, clean-shutdown marker), and waits for every shard.
    pub fn shutdown(self) -> Result<(), String> {
        self.shared.stop.store(true, Ordering::Release);
        for h in self.handles {
            h.join().map_err(|e| format!("a shard failed: {e:?}"))?;
        }
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// Starts a broker and returns once every shard listens.
pub fn start(mut config: ServerConfig) -> Result<Broker, String> {
    engine::rt::create_dir_all_durable(&config.data_dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", config.data_dir.display()))?;
    // Absolute from here on, so logs and errors name the real place.
    config.data_dir = std::fs::canonicalize(&config.data_dir)
        .map_err(|e| format!("cannot resolve data directory {}: {e}", config.data_dir.display()))?;
    let lock = DirLock::acquire(&config.data_dir)?;
    raise_file_limit();
    let cpus = cpus();
    let shards = if config.cores == 0 { cpus.len() } else { config.cores };
    if shards > cpus.len() {
        tracing::warn!(shards, cpus = cpus.len(), "more shards than cores: some cores run several");
    }
    let retry = Duration::from_millis(config.bind_retry_ms);
    // Shard ports follow the port asked for: after it, or free ones for port 0.
    // In a cluster the brokers of one machine sit on neighbouring ports
    // (7071, 7072, ...): there the system picks them, and the handshake
    // tells clients.
    let cluster = config.cluster_config();
    let mut shard_base = config.listen;
    if cluster.is_some() {
        shard_base.set_port(0);
    }
    let metrics = config.metrics_addr()?;
    let shard_ports = if config.shard_ports && shard_base.port() != 0 { shards } else { 0 };
    check_ports_distinct(config.listen, shard_ports, cluster.as_ref().map(|c| c.replication_listen), metrics)?;
    let (listen, reservation) = reserve_port(config.listen, retry)?;
    if let Some(c) = &cluster {
        wait_port_free(c.replication_listen, retry)?;
    }
    if config.shard_ports && shard_base.port() != 0 {
        for id in 0..shards {
            wait_port_free(shard_port(listen, id), retry)?;
        }
    }
    if let Some(addr) = metrics.filter(|a| a.port() != 0) {
        wait_port_free(addr, retry)?;
    }
    config.listen = listen;
    let shared = Arc::new(Shared::default());
    let mesh = MeshBuilder::<Job<GlommioRuntime>, _>::full(shards, config.limits.shard_channel_capacity);
    let (ready_tx, ready_rx) = mpsc::channel::<Result<Ready, String>>();
    let mut handles = Vec::with_capacity(shards);
    for i in 0..shards {
        let (config, mesh, shared, ready) = (config.clone(), mesh.clone(), shared.clone(), ready_tx.clone());
        let mut builder = LocalExecutorBuilder::new(Placement::Fixed(cpus[i % cpus.len()])).name(&format!("shard-{i}"));
        if config.spin_before_park_us > 0 {
            builder = builder.spin_before_park(Duration::from_micros(config.spin_before_park_us));
        }
        let own = config.shard_ports.then(|| shard_port(shard_base, i));
        let listen = Listen { shared: listen, own, metrics };
        let handle = builder
            .spawn(move || async move { run_executor(config, shards, mesh, shared, listen, ready).await })
            .map_err(|e| format!("cannot start shard {i}: {e}"))?;
        handles.push(handle);
    }
    drop(ready_tx);
    let mut partitions = 0;
    let mut ports = vec![0u16; shards];
    let mut metrics_addr = None;
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok(ready)) => {
                partitions += ready.partitions;
                ports[ready.shard] = ready.own_port;
                metrics_addr = metrics_addr.or(ready.metrics_addr);
            }
            Ok(Err(e)) => return Err(abort_start(&shared, handles, e)),
            Err(_) => return Err(abort_start(&shared, handles, String::new())),
        }
    }
    drop(reservation);
    if config.shard_ports {
        let _ = shared.shard_ports.set(ports.clone());
    }
    tracing::info!(
        %listen, shards, partitions, ?ports, metrics = ?metrics_addr, data_dir = %config.data_dir.display(),
        "cairn-server ready"
    );
    Ok(Broker { addr: listen, metrics_addr, shards, shared, handles, _lock: lock })
}

/// Stops the shards that did start (closing what they opened) and returns
/// `e`, or, if a shard's executor failed before it could say why, that
/// executor's error.
fn abort_start(shared: &Shared, handles: Vec<glommio::ExecutorJoinHandle<()>>, e: String) -> String {
    shared.stop.store(true, Ordering::Release);
    let mut executor_error = None;
    for h in handles {
        if let Err(failed) = h.join() {
            executor_error.get_or_insert_with(|| failed.to_string());
        }
    }
    if !e.is_empty() {
        return e;
    }
    match executor_error {
        // io_uring rings and their registered buffers are locked memory.
        Some(why)
            if {
                let w = why.to_ascii_lowercase();
                w.contains("memlock") || w.contains("enomem") || w.contains("cannot allocate")
            } =>
        {
            format!(
                "a shard could not start its io_uring executor ({why}): the locked-memory limit is too low; \
             raise it (`ulimit -l unlimited`, LimitMEMLOCK=infinity in systemd, `--ulimit memlock=-1` in docker)"
            )
        }
        Some(why) => format!("a shard could not start its executor: {why}"),
        None => "a shard stopped during startup".into(),
    }
}

/// One executor: joins the mesh, makes its shard, runs it.
async fn run_executor(
    config: ServerConfig,
    shard_count: usize,
    mesh: MeshBuilder<Job<GlommioRuntime>, glommio::channels::channel_mesh::Full>,
    common: Arc<Shared>,
    listen: Listen,
    ready: mpsc::Sender<Result<Ready, String>>,
) {
    // Every shard joins the mesh, whatever happens next: the others wait for it.
    let Ok((senders, mut receivers)) = mesh.join().await else {
        let _ = ready.send(Err("joining the shard mesh failed".into()));
        return;
    };
    let id = ShardId(senders.peer_id());
    let rt = match GlommioRuntime::new(&config.data_dir).await {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot use {}: {e}", config.data_dir.display())));
            // The broker is stopping; the other shards wait at the barriers.
            while !common.stop.load(Ordering::Acquire) {
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
            common.drained.fetch_add(1, Ordering::AcqRel);
            common.closed.fetch_add(1, Ordering::AcqRel);
            return;
        }
    };
    let shard = Shard::new(rt, config, id, shard_count, Mesh::Threads(senders), common);
    for (_, rx) in receivers.streams() {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Some(job) = rx.recv().await {
                job(&shard);
            }
        })
        .detach();
    }
    shard
        .run(listen, |r| {
            let _ = ready.send(r);
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::check_ports_distinct;

    fn addr(s: &str) -> std::net::SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_metrics_port_on_a_shard_port_is_refused_naming_both() {
        let e = check_ports_distinct(addr("127.0.0.1:7290"), 2, None, Some(addr("127.0.0.1:7291"))).unwrap_err();
        assert!(e.contains("127.0.0.1:7291") && e.contains("shard 0's port"), "{e}");
        let e = check_ports_distinct(addr("0.0.0.0:7290"), 2, None, Some(addr("127.0.0.1:7292"))).unwrap_err();
        assert!(e.contains("shard 1's port"), "{e}");
    }

    #[test]
    fn replication_and_metrics_may_not_share_a_port_or_take_the_client_port() {
        let r = Some(addr("127.0.0.1:8071"));
        assert!(check_ports_distinct(addr("127.0.0.1:7071"), 0, r, Some(addr("127.0.0.1:8071"))).is_err());
        assert!(check_ports_distinct(addr("127.0.0.1:7071"), 0, Some(addr("127.0.0.1:7071")), None).is_err());
    }

    #[test]
    fn distinct_ports_other_addresses_and_system_chosen_ports_pass() {
        assert!(check_ports_distinct(addr("127.0.0.1:7290"), 2, None, Some(addr("127.0.0.1:7293"))).is_ok());
        assert!(check_ports_distinct(addr("127.0.0.1:7290"), 2, None, Some(addr("127.0.0.2:7291"))).is_ok());
        assert!(
            check_ports_distinct(addr("127.0.0.1:0"), 0, Some(addr("127.0.0.1:0")), Some(addr("127.0.0.1:0"))).is_ok()
        );
    }
}
