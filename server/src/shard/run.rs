//! A shard's life, the same on glommio and in the simulator: boot (the
//! controller loads the metadata and gives every shard its topics), listen,
//! serve until told to stop, then shut down in phases so nothing
//! acknowledged is lost and every log is closed cleanly.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use engine::rt::{Listener, Runtime, Storage as _};

use super::Shard;
use crate::frontend::native;
use crate::ids::CONTROLLER;
use crate::metadata;
use crate::util::gate::Gate;

/// How often a shard looks at the process-wide stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);

/// Where a shard listens.
#[derive(Debug, Clone)]
pub struct Listen {
    /// The address every shard shares (SO_REUSEPORT).
    pub shared: SocketAddr,
    /// This shard's own port, if shard ports are on.
    pub own: Option<SocketAddr>,
    /// `/metrics` (served by the controller only).
    pub metrics: Option<SocketAddr>,
}

/// What a shard reports once it listens.
#[derive(Debug, Clone)]
pub struct Ready {
    pub shard: usize,
    pub partitions: usize,
    pub own_port: u16,
    pub metrics_addr: Option<SocketAddr>,
}

impl<R: Runtime> Shard<R> {
    /// The controller's part of booting: loads the metadata (migrating or
    /// rebuilding it), finishes deletions a crash interrupted, and gives
    /// every shard the topics.
    async fn boot_controller(self: &Rc<Self>) {
        // Topic changes wait until every shard has its topics: one that
        // arrived while a shard was still opening a topic's partitions would
        // find them missing there and open them a second time.
        let Some(_turn) = self.controller().turn.acquire(1).await else { return };
        let storage = self.rt.storage().clone();
        let loaded = async {
            storage.create_dir_all(&self.config.data_dir).await.map_err(|e| e.to_string())?;
            let (mut m, report) = metadata::load(&storage, &self.config.data_dir).await?;
            if !report.rebuilt.is_empty() {
                tracing::warn!(topics = ?report.rebuilt, "topics.json was missing: rebuilt it from the topic directories");
            }
            if report.migrated {
                tracing::info!("topics.json upgraded to version 2 (topic ids)");
            }
            for dir in &report.unknown_dirs {
                tracing::warn!(dir, "a directory under topics/ belongs to no topic: left alone");
            }
            let clustered = !m.voters.is_empty()
                || !m.brokers.is_empty()
                || m.metadata_applied > 0
                || m.topics.values().any(|t| t.replicas.is_some());
            if clustered && self.config.cluster_config().is_none() {
                return Err(format!(
                    "{} holds a cluster member's data: start this broker with the --peers (or --join) it was started with",
                    self.config.data_dir.display()
                ));
            }
            if metadata::finish_deletions(&storage, &self.config.data_dir, &mut m).await {
                metadata::store(&storage, &self.config.data_dir, &m).await.map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(m)
        };
        let topics = match loaded.await {
            Ok(m) => {
                let topics: Vec<_> = m.topics.values().cloned().collect();
                *self.controller.as_ref().expect("the controller").metadata.borrow_mut() = m;
                Ok(topics)
            }
            Err(e) => Err(e),
        };
        let results = self
            .invoke_on_all(move |shard| {
                let topics = topics.clone();
                async move { shard.boot(topics).await }
            })
            .await;
        if results.iter().any(Result::is_err) {
            tracing::error!("a shard stopped while booting");
        }
    }

    /// Runs this shard until the broker stops. `ready` is called once, when
    /// the shard listens (or failed to boot).
    pub async fn run(self: Rc<Self>, listen: Listen, ready: impl FnOnce(Result<Ready, String>)) {
        if self.id == CONTROLLER {
            let shard = self.clone();
            drop(self.rt.spawn(async move { shard.boot_controller().await }));
        }
        // Boot, unless the broker is told to stop first (a shard that
        // failed to start never answers the controller).
        let booted = {
            let stop = std::pin::pin!(self.wait_for_stop());
            match futures::future::select(std::pin::pin!(self.booted()), stop).await {
                futures::future::Either::Left((r, _)) => r,
                futures::future::Either::Right(_) => Err("the broker stopped while starting".into()),
            }
        };
        let booted = match booted {
            Ok(()) => self.start_cluster().await,
            Err(e) => Err(e),
        };
        let listeners = booted.and_then(|()| self.listen(&listen));
        let (common, own, metrics) = match listeners {
            Ok(l) => l,
            Err(e) => {
                ready(Err(e));
                // The broker is stopping: take part in the shutdown barriers
                // so the shards that did start can finish theirs.
                self.wait_for_stop().await;
                barrier(&self.rt, &self.shared.drained, self.shards).await;
                barrier(&self.rt, &self.shared.closed, self.shards).await;
                return;
            }
        };
        let own_port = own.as_ref().and_then(|l| l.local_addr().ok()).map_or(0, |a| a.port());
        let metrics_addr = metrics.as_ref().and_then(|l| l.local_addr().ok());
        ready(Ok(Ready { shard: self.id.0, partitions: self.owned_partitions().len(), own_port, metrics_addr }));

        {
            let shard = self.clone();
            drop(self.rt.spawn(async move {
                shard.wait_for_stop().await;
                shard.shutdown.fire();
            }));
        }
        // Retention, and the cleaner's compaction passes (paced by its
        // rate limit), each on its own period until shutdown.
        self.every(self.config.log.retention_check_ms, async |shard| shard.enforce_retention().await);
        self.every(self.config.log.cleaner_check_ms, async |shard| shard.compact_due().await);
        self.every(self.config.groups.tick_ms, async |shard| shard.groups_tick().await);
        if let Some(listener) = metrics {
            drop(self.rt.spawn(crate::metrics::http::serve(self.clone(), listener)));
        }

        // Phase 1: accept until shutdown (on the shared port and this
        // shard's own); then stop reading requests and let every
        // connection finish what it started.
        let connections = Gate::default();
        let own_loop = own.map(|l| self.rt.spawn(accept_loop(self.clone(), l, connections.clone())));
        accept_loop(self.clone(), common, connections.clone()).await;
        if let Some(task) = own_loop {
            task.await;
        }
        connections.close().await;
        // Other shards may still send work here until they are drained too.
        barrier(&self.rt, &self.shared.drained, self.shards).await;
        // Phase 2: no request is in flight anywhere: close every log (sync,
        // indexes, clean-shutdown marker).
        self.close_all().await;
        barrier(&self.rt, &self.shared.closed, self.shards).await;
        tracing::debug!(shard = %self.id, "shard stopped");
    }

    #[allow(clippy::type_complexity)] // the three listeners of one shard
    fn listen(&self, listen: &Listen) -> Result<(R::Listener, Option<R::Listener>, Option<R::Listener>), String> {
        let shared = self.rt.listen(listen.shared).map_err(|e| format!("cannot listen on {}: {e}", listen.shared))?;
        let own = match listen.own {
            Some(addr) => Some(self.rt.listen(addr).map_err(|e| {
                format!("cannot listen on shard {}'s port {addr}: {e} (or set shard_ports = false)", self.id)
            })?),
            None => None,
        };
        let metrics = match listen.metrics.filter(|_| self.id == CONTROLLER) {
            Some(addr) => Some(self.rt.listen(addr).map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?),
            None => None,
        };
        Ok((shared, own, metrics))
    }

    /// Whether the broker is told to stop.
    pub(crate) fn stop_requested(&self) -> bool {
        self.shared.stop.load(Ordering::Acquire)
    }

    async fn wait_for_stop(&self) {
        while !self.shared.stop.load(Ordering::Acquire) {
            self.rt.sleep(STOP_POLL).await;
        }
    }
}

/// The next connection on `listener`, or `None` once the shard shuts down.
pub(crate) async fn accept_until_shutdown<R: Runtime>(
    shard: &Shard<R>,
    listener: &R::Listener,
) -> Option<std::io::Result<(R::Stream, SocketAddr)>> {
    let stop = std::pin::pin!(shard.shutdown.wait());
    match futures::future::select(std::pin::pin!(listener.accept()), stop).await {
        futures::future::Either::Left((r, _)) => Some(r),
        futures::future::Either::Right(_) => None,
    }
}

/// Accepts connections until the shutdown, each served in a task the gate tracks.
async fn accept_loop<R: Runtime>(shard: Rc<Shard<R>>, listener: R::Listener, connections: Gate) {
    loop {
        match accept_until_shutdown(&shard, &listener).await {
            None => return,
            Some(Ok((stream, peer))) => {
                let Some(pass) = connections.enter() else { return };
                if !shard.connection_opened() {
                    drop(shard.rt.spawn(async move {
                        native::refuse(
                            stream,
                            protocol::ErrorCode::TOO_MANY_CONNECTIONS,
                            "the broker has reached limits.connections_max",
                        )
                        .await;
                        drop(pass);
                    }));
                    continue;
                }
                let shard2 = shard.clone();
                drop(shard.rt.spawn(async move {
                    native::serve(shard2.clone(), stream, peer).await;
                    shard2.connection_closed();
                    drop(pass);
                }));
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "accept failed");
                shard.rt.sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn barrier<R: Runtime>(rt: &R, count: &AtomicUsize, shards: usize) {
    count.fetch_add(1, Ordering::AcqRel);
    while count.load(Ordering::Acquire) < shards {
        rt.sleep(Duration::from_millis(2)).await;
    }
}
