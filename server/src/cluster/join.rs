//! Brokers added to a running cluster (`--join ADDR`, ADR 29). The
//! newcomer calls any member it is told of; that member asks the
//! controller, which commits a `BrokerRegistered` record; every broker
//! applies it (the newcomer becomes a peer on every shard, and placement
//! may give it replicas), and the contact answers with the membership: the
//! metadata partition's voters and every broker's replication address. The
//! newcomer keeps that in its `topics.json` and follows the metadata
//! partition as an observer (Kafka's brokers follow `KRaft`'s log the same
//! way): it never votes there, so adding brokers never changes the
//! controller quorum. It hosts partitions once they are placed or moved
//! to it (`cairn partition reassign`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use engine::rt::Runtime;
use engine::types::Offset;
use protocol::types::NodeId;
use replication::replica::{Admin, Input};
use serde::{Deserialize, Serialize};

use super::net::{self, CONTACT, Net};
use super::records::MetadataRecord;
use super::{API_ADD_BROKER, API_REGISTER, API_REMOVE_BROKER, CallAnswer, ClusterShard};
use crate::ids::CONTROLLER;
use crate::service::ServiceError;
use crate::shard::Shard;

/// Brokers a cluster takes (registrations past it are refused): every
/// shard keeps a link to each, and the metadata leader serves each.
pub const BROKERS_MAX: usize = 64;

/// How long a joining broker waits before it asks its contact again.
const JOIN_RETRY: Duration = Duration::from_secs(1);

/// `--join`: one replication address (empty: not joining).
pub fn parse_join(text: &str) -> Result<Option<SocketAddr>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        format!("join: {text:?} is not an address (the replication address of a broker of the cluster, such as 127.0.0.1:8071)")
    })
}

/// A newcomer's registration (the body of [`API_REGISTER`] and
/// [`API_ADD_BROKER`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RegisterCall {
    pub node: u32,
    pub replication: SocketAddr,
}

/// What the contact answers a registered newcomer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Membership {
    /// The metadata partition's voters.
    pub voters: Vec<u32>,
    /// Every broker, the newcomer too, with its replication address.
    pub brokers: BTreeMap<u32, SocketAddr>,
}

/// The replication address a registration gives, if its body reads.
pub(crate) fn registration_address(body: &[u8]) -> Option<SocketAddr> {
    serde_json::from_slice::<RegisterCall>(body).ok().map(|c| c.replication)
}

impl<R: Runtime> Shard<R> {
    /// Shard 0: the metadata partition's voters, the brokers of `--peers`
    /// (on a broker that joined, as its contact told them).
    pub(super) fn voters(&self, cluster: &ClusterShard<R>) -> Vec<u32> {
        if cluster.config.peers.is_empty() {
            self.controller().metadata.borrow().voters.clone()
        } else {
            cluster.config.peers.keys().map(|n| n.0).collect()
        }
    }

    fn membership(&self, cluster: &ClusterShard<R>) -> Membership {
        Membership {
            voters: self.voters(cluster),
            brokers: cluster.net.members().into_iter().map(|(n, a)| (n.0, a)).collect(),
        }
    }

    /// Shard 0: tells the metadata replica which brokers follow it
    /// without a vote.
    pub(super) fn update_observers(&self, cluster: &ClusterShard<R>) {
        let Some(driver) = cluster.metadata() else { return };
        let voters = self.voters(cluster);
        let nodes = cluster.net.members().into_keys().filter(|n| !voters.contains(&n.0)).collect();
        driver.input(Input::Admin(Admin::Observers { nodes }));
    }

    /// Shard 0, before the metadata replica starts: every shard learns the
    /// brokers that joined; a newcomer without a stored membership first
    /// registers through its contact.
    pub(super) async fn restore_members(self: &Rc<Self>, cluster: &Rc<ClusterShard<R>>) -> Result<(), String> {
        let stored = {
            let m = self.controller().metadata.borrow();
            Membership { voters: m.voters.clone(), brokers: m.brokers.clone() }
        };
        let membership = match cluster.config.join {
            Some(contact) if stored.voters.is_empty() => {
                let joined = self.register_with(cluster, contact).await?;
                {
                    let mut m = self.controller().metadata.borrow_mut();
                    m.voters.clone_from(&joined.voters);
                    m.brokers.clone_from(&joined.brokers);
                }
                self.store_metadata().await.map_err(|e| format!("cannot store the membership: {e}"))?;
                tracing::info!(contact = %contact, voters = ?joined.voters, brokers = joined.brokers.len(),
                    "joined the cluster");
                joined
            }
            _ => stored,
        };
        self.add_peers_everywhere(membership.brokers.into_iter().map(|(n, a)| (NodeId(n), a)).collect()).await;
        Ok(())
    }

    async fn add_peers_everywhere(self: &Rc<Self>, brokers: Vec<(NodeId, SocketAddr)>) {
        let me = self.cluster().map(|c| c.config.node);
        let brokers: Vec<_> = brokers.into_iter().filter(|(n, _)| Some(*n) != me).collect();
        if brokers.is_empty() {
            return;
        }
        self.on_every_net(move |net| {
            for &(node, addr) in &brokers {
                net.add_peer(node, addr);
            }
        })
        .await;
    }

    /// Runs `change` on every shard's transport.
    async fn on_every_net(self: &Rc<Self>, change: impl Fn(&Net<R>) + Send + Clone + 'static) {
        let _ = self
            .invoke_on_all(move |s| {
                let change = change.clone();
                async move {
                    if let Some(c) = s.cluster() {
                        change(&c.net);
                    }
                }
            })
            .await;
    }

    /// The newcomer's side: asks `contact` until the cluster takes it (or
    /// says why not, or the broker is told to stop).
    async fn register_with(
        self: &Rc<Self>,
        cluster: &Rc<ClusterShard<R>>,
        contact: SocketAddr,
    ) -> Result<Membership, String> {
        let call = RegisterCall { node: cluster.config.node.0, replication: cluster.config.replication_listen };
        let body = Bytes::from(serde_json::to_vec(&call).expect("serializes"));
        cluster.net.add_peer(CONTACT, contact);
        let result = loop {
            if self.stop_requested() {
                break Err("the broker stopped before it joined the cluster".to_owned());
            }
            let answer = cluster.net.call(CONTACT, API_REGISTER, body.clone(), net::CALL_TIMEOUT).await;
            let parsed = answer.and_then(|(_, a)| {
                serde_json::from_slice::<CallAnswer>(&a.body).map_err(|e| format!("the contact's answer: {e}"))
            });
            match parsed {
                Ok(CallAnswer { membership: Some(m), .. }) => break Ok(m),
                Ok(CallAnswer { error: Some(e), .. }) => match super::decode_error(&e) {
                    e @ (ServiceError::BrokerIdInUse(_) | ServiceError::InvalidRequest(_)) => {
                        break Err(format!("the cluster refused this broker: {e}"));
                    }
                    e => tracing::info!(%contact, error = %e, "joining the cluster: trying again"),
                },
                Ok(_) => break Err("the contact's answer has no membership".to_owned()),
                Err(e) => tracing::info!(%contact, error = %e, "joining the cluster: trying again"),
            }
            self.rt.sleep(JOIN_RETRY).await;
        };
        cluster.net.remove_peer(CONTACT);
        result
    }

    /// The contact's side (shard 0 of any member): the controller decides,
    /// this broker applies it, then answers with the membership.
    pub(super) async fn register_here(self: &Rc<Self>, body: Bytes) -> CallAnswer {
        let cluster = self.cluster().expect("cluster mode");
        // Boxed: a controller call may answer this one's kind of call.
        let decided: std::pin::Pin<Box<dyn Future<Output = Result<(), ServiceError>>>> =
            Box::pin(self.controller_call(API_ADD_BROKER, body));
        match decided.await {
            Ok(()) => CallAnswer { membership: Some(self.membership(&cluster)), ..CallAnswer::default() },
            Err(e) => CallAnswer { error: Some(super::encode_error(&e)), ..CallAnswer::default() },
        }
    }

    /// The controller's side: a newcomer's id must be free (or already its
    /// own, at the same address: a registration sent again).
    pub(super) async fn decide_and_commit_register(self: &Rc<Self>, body: &[u8]) -> Result<Offset, ServiceError> {
        let call: RegisterCall =
            serde_json::from_slice(body).map_err(|e| ServiceError::InvalidRequest(format!("a registration: {e}")))?;
        if call.node == 0 || call.node == CONTACT.0 {
            return Err(ServiceError::InvalidRequest(format!("node id {} is not one a broker may have", call.node)));
        }
        let (cluster, driver, _turn) = self.deciding().await?;
        let members = cluster.net.members();
        if call.replication.ip().is_unspecified() || call.replication.port() == 0 {
            return Err(ServiceError::InvalidRequest(format!(
                "{} is no address other brokers can reach",
                call.replication
            )));
        }
        if let Some(&addr) = members.get(&NodeId(call.node)) {
            if addr == call.replication {
                let hw = driver.high_watermark();
                return Ok(Offset(hw.0.saturating_sub(1)));
            }
            return Err(ServiceError::BrokerIdInUse(format!(
                "node id {} is taken: broker {} of this cluster is at {addr}",
                call.node, call.node
            )));
        }
        if let Some((other, _)) = members.iter().find(|(_, a)| **a == call.replication) {
            return Err(ServiceError::BrokerIdInUse(format!(
                "{} is the replication address of broker {other}",
                call.replication
            )));
        }
        if members.len() >= BROKERS_MAX {
            return Err(ServiceError::InvalidRequest(format!(
                "the cluster has {} brokers, the most it takes",
                members.len()
            )));
        }
        let record = MetadataRecord::BrokerRegistered { node: call.node, replication: call.replication };
        self.commit_record(&driver, &record).await
    }

    /// Every broker, applying `BrokerRegistered`.
    pub(super) async fn apply_registration(self: &Rc<Self>, node: u32, addr: SocketAddr) {
        let Some(cluster) = self.cluster() else { return };
        if node == cluster.config.node.0 || cluster.net.address_of(NodeId(node)) == Some(addr) {
            return;
        }
        self.controller().metadata.borrow_mut().brokers.insert(node, addr);
        self.add_peers_everywhere(vec![(NodeId(node), addr)]).await;
        self.update_observers(&cluster);
        tracing::info!(node, %addr, "a broker joined the cluster");
    }
}

impl<R: Runtime> Shard<R> {
    /// A client's `RemoveBroker`: decided by the controller, answered once
    /// this broker applied it.
    pub async fn remove_broker(self: &Rc<Self>, broker: u32) -> Result<(), ServiceError> {
        if self.cluster().is_none() {
            return Err(ServiceError::InvalidRequest("a broker without --peers is a one-broker cluster".into()));
        }
        let body = Bytes::from(serde_json::to_vec(&broker).expect("serializes"));
        self.invoke_on(CONTROLLER, move |c| async move { c.controller_call(API_REMOVE_BROKER, body).await }).await?
    }

    /// The controller's side: only a broker that joined, holding no
    /// replica and in no move, is taken out.
    pub(super) async fn decide_and_commit_unregister(self: &Rc<Self>, body: &[u8]) -> Result<Offset, ServiceError> {
        let node: u32 = serde_json::from_slice(body)
            .map_err(|e| ServiceError::InvalidRequest(format!("a remove-broker call: {e}")))?;
        let (cluster, driver, _turn) = self.deciding().await?;
        if !cluster.net.knows(NodeId(node)) {
            return Err(ServiceError::UnknownBroker(format!("the cluster has no broker {node}")));
        }
        if self.voters(&cluster).contains(&node) {
            return Err(ServiceError::InvalidRequest(format!(
                "broker {node} is a voter of the controller quorum (one of --peers): it cannot be removed"
            )));
        }
        let held = {
            let m = self.controller().metadata.borrow();
            m.topics
                .values()
                .find_map(|t| (0..t.partitions).find(|&p| t.hosts(p, node)).map(|p| format!("{}/{p}", t.name)))
        };
        if let Some(tp) = held {
            return Err(ServiceError::InvalidRequest(format!(
                "broker {node} still holds a replica of {tp}: drain it first (cairn broker drain {node})"
            )));
        }
        self.commit_record(&driver, &MetadataRecord::BrokerUnregistered { node }).await
    }

    /// Every broker, applying `BrokerUnregistered`.
    pub(super) async fn apply_unregistration(self: &Rc<Self>, node: u32) {
        let Some(cluster) = self.cluster() else { return };
        if node == cluster.config.node.0 {
            tracing::warn!("this broker was removed from the cluster: its peers no longer talk to it");
            return;
        }
        self.controller().metadata.borrow_mut().brokers.remove(&node);
        self.on_every_net(move |net| net.remove_peer(NodeId(node))).await;
        self.update_observers(&cluster);
        tracing::info!(node, "a broker left the cluster");
    }
}

/// Where the answer to a call goes.
pub(super) enum ReplyRoute {
    /// To the member that called.
    Member,
    /// A registration's: to the address it gives.
    At(SocketAddr),
}

/// A stranger's other calls, and registrations that do not read or name
/// another host than the one the connection came from (a member must not
/// be made to dial anywhere it is told), are not answered (`None`).
pub(super) fn reply_route<R: Runtime>(
    cluster: &ClusterShard<R>,
    from: NodeId,
    peer: SocketAddr,
    api: u16,
    body: &[u8],
) -> Option<ReplyRoute> {
    if api == API_REGISTER {
        return registration_address(body).filter(|a| a.ip() == peer.ip()).map(ReplyRoute::At);
    }
    cluster.net.knows(from).then_some(ReplyRoute::Member)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_address_is_one_socket_address() {
        assert_eq!(parse_join(" ").unwrap(), None);
        assert_eq!(parse_join("127.0.0.1:8071").unwrap(), Some("127.0.0.1:8071".parse().unwrap()));
        assert!(parse_join("127.0.0.1:8071,127.0.0.1:8072").unwrap_err().contains("not an address"));
    }

    #[test]
    fn a_registration_names_its_address() {
        let body =
            serde_json::to_vec(&RegisterCall { node: 4, replication: "127.0.0.1:8074".parse().unwrap() }).unwrap();
        assert_eq!(registration_address(&body), Some("127.0.0.1:8074".parse().unwrap()));
        assert_eq!(registration_address(b"{}"), None);
    }
}
