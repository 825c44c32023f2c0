//! Who leads which partition, put together when a client asks (the
//! `Metadata` API) and when an operator moves a leader (`ElectLeader`).
//!
//! Leadership is decided inside each partition's Raft group, not by the
//! controller, so no broker holds the whole picture. The broker a client
//! asks assembles it then: it asks every peer at once (`API_LEADERS`,
//! bounded by [`REPORT_WAIT`]) what its replicas know, and takes for each
//! partition the report of the newest epoch, the leader's own first.
//! Nothing is cached, so nothing goes stale; a broker that does not answer
//! in time is shown not alive and its reports are missing, which the other
//! replicas of its partitions cover. (A leader too slow to answer this is
//! too slow for producers as well; clients retry either way.) Redpanda
//! gossips leadership instead; asking costs one round trip per metadata
//! request, which clients make only at start and after an error.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use engine::rt::Runtime;
use protocol::ErrorCode;
use protocol::api::{BrokerInfo, MetadataResponse, PartitionMetadata, TopicMetadata};
use protocol::types::NodeId;
use replication::replica::{Admin, Input, Role};
use serde::{Deserialize, Serialize};

use super::{API_ELECT_LEADER, API_LEADERS, CallAnswer, cluster_leader, decode_error};
use crate::ids::{PartitionId, TopicId, TopicPartition};
use crate::service::ServiceError;
use crate::shard::{Shard, TopicEntry};

/// How long a metadata request waits for a peer's report.
pub const REPORT_WAIT: Duration = Duration::from_millis(500);
/// How long a leader transfer may take, beyond the machine's own bound.
const ELECT_SLACK: Duration = Duration::from_secs(1);

/// What one replica knows of its partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaView {
    pub topic: u64,
    pub partition: u32,
    pub leader: Option<u32>,
    pub epoch: u32,
    /// The reporting broker's shard that owns the partition.
    pub shard: u32,
    /// The reporter leads it (then `caught_up` is its view of the voters).
    pub leading: bool,
    pub caught_up: Vec<u32>,
    /// `(log start offset, high watermark)`, from the leader only (a
    /// queue's coordinator elsewhere hands out offsets below it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounds: Option<(u64, u64)>,
}

/// One broker's answer to `API_LEADERS`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerReport {
    pub client_listen: String,
    pub replicas: Vec<ReplicaView>,
}

/// The reports that came.
fn answered(reports: &[(NodeId, Option<BrokerReport>)]) -> impl Iterator<Item = &BrokerReport> {
    reports.iter().filter_map(|(_, r)| r.as_ref())
}

/// For each partition, the best-informed view: the newest epoch that names
/// a leader, and at that epoch the leader's own report.
fn merge<'a>(reports: impl IntoIterator<Item = &'a BrokerReport>) -> BTreeMap<(u64, u32), ReplicaView> {
    let mut best: BTreeMap<(u64, u32), ReplicaView> = BTreeMap::new();
    for view in reports.into_iter().flat_map(|r| &r.replicas) {
        if view.leader.is_none() {
            continue;
        }
        let key = (view.topic, view.partition);
        let better = best.get(&key).is_none_or(|b| (view.epoch, view.leading) > (b.epoch, b.leading));
        if better {
            best.insert(key, view.clone());
        }
    }
    best
}

/// Whether `reports` settle who leads each of `wanted`: a majority of its
/// replicas answered (any leader elected since was voted for by one of
/// them, so its epoch shows), and the newest epoch any of them reports is
/// one that names a leader, reported by that leader itself.
fn settled(reports: &[(NodeId, Option<BrokerReport>)], wanted: &[(TopicPartition, Vec<u32>)]) -> bool {
    let best = merge(answered(reports));
    wanted.iter().all(|(tp, replicas)| settled_one(reports, &best, *tp, replicas))
}

/// [`settled`] for one partition, `best` being the merge of `reports`. A
/// replica counts as heard only if its broker's report has a view of the
/// partition (a replica that could not start, or has not opened the
/// partition yet, knows nothing of its epochs).
fn settled_one(
    reports: &[(NodeId, Option<BrokerReport>)],
    best: &BTreeMap<(u64, u32), ReplicaView>,
    tp: TopicPartition,
    replicas: &[u32],
) -> bool {
    let views: Vec<(u32, &ReplicaView)> = reports
        .iter()
        .filter_map(|(n, r)| r.as_ref().map(|r| (n.0, r)))
        .flat_map(|(n, r)| r.replicas.iter().map(move |v| (n, v)))
        .filter(|(n, v)| v.topic == tp.topic.0 && v.partition == tp.partition.0 && replicas.contains(n))
        .collect();
    let heard = views.len();
    let newest = views.iter().map(|(_, v)| v.epoch).max();
    let leader = best.get(&(tp.topic.0, tp.partition.0));
    heard * 2 > replicas.len() && leader.is_some_and(|l| l.leading && Some(l.epoch) == newest)
}

#[derive(Serialize, Deserialize)]
struct ElectCall {
    topic: u64,
    partition: u32,
    to: u32,
}

impl<R: Runtime> Shard<R> {
    /// The views of the replicas this shard hosts.
    fn replica_views(&self) -> Vec<ReplicaView> {
        self.owned_partitions()
            .into_iter()
            .filter_map(|p| {
                let driver = p.driver()?;
                let status = driver.status();
                let leading = status.role == Role::Leader;
                Some(ReplicaView {
                    topic: p.tp.topic.0,
                    partition: p.tp.partition.0,
                    leader: status.leader.map(|l| l.0),
                    epoch: status.epoch.0,
                    shard: u32::try_from(self.id.0).expect("shards fit in u32"),
                    leading,
                    caught_up: if leading { driver.caught_up() } else { Vec::new() },
                    bounds: if leading {
                        p.log_start_offset().ok().zip(p.high_watermark().ok()).map(|(s, h)| (s.0, h.0))
                    } else {
                        None
                    },
                })
            })
            .collect()
    }

    /// This broker's report: every shard's replicas.
    pub(crate) async fn local_report(self: &Rc<Self>) -> BrokerReport {
        let views = self.invoke_on_all(|s| async move { s.replica_views() }).await;
        BrokerReport {
            client_listen: self.config.listen.to_string(),
            replicas: views.into_iter().flatten().flatten().collect(),
        }
    }

    /// Every broker's report (this one's too); `None` for a peer that did
    /// not answer. Returns as soon as the answers settle every partition
    /// of `wanted` (its replicas) — see [`settled`] — unless `every_peer`,
    /// or once every peer has answered or [`REPORT_WAIT`] has passed: a dead peer whose link
    /// still looks up costs nothing while a majority answers.
    async fn reports(
        self: &Rc<Self>,
        wanted: &[(TopicPartition, Vec<u32>)],
        every_peer: bool,
    ) -> Vec<(NodeId, Option<BrokerReport>)> {
        use futures::StreamExt as _;
        let cluster = self.cluster().expect("cluster mode");
        let me = cluster.config.node;
        let peers: Vec<NodeId> = cluster.net.peers();
        let mut out: Vec<(NodeId, Option<BrokerReport>)> = vec![(me, Some(self.local_report().await))];
        let mut asks: futures::stream::FuturesUnordered<_> = peers
            .iter()
            .map(|&peer| {
                let net = cluster.net.clone();
                async move {
                    let answer = net.call(peer, API_LEADERS, Bytes::new(), REPORT_WAIT).await.ok();
                    let report = answer
                        .and_then(|(_, a)| serde_json::from_slice::<CallAnswer>(&a.body).ok())
                        .and_then(|a| a.report);
                    (peer, report)
                }
            })
            .collect();
        while every_peer || !settled(&out, wanted) {
            match asks.next().await {
                Some(answer) => out.push(answer),
                None => break,
            }
        }
        // Those not heard from are shown not alive.
        for peer in peers {
            if !out.iter().any(|(n, _)| *n == peer) {
                out.push((peer, None));
            }
        }
        for (node, report) in &out {
            if let Some(r) = report {
                cluster.client_addresses.borrow_mut().insert(*node, r.client_listen.clone());
            }
        }
        out
    }

    /// `(log start offset, high watermark)` of each of `partitions`, as its
    /// leader reports it (asked as for `Metadata`); a partition whose
    /// leader is not settled, or did not answer, is left out.
    pub(crate) async fn leader_bounds(
        self: &Rc<Self>,
        partitions: &[(String, u32)],
    ) -> BTreeMap<(String, u32), (u64, u64)> {
        if self.cluster().is_none() || partitions.is_empty() {
            return BTreeMap::new();
        }
        let wanted: Vec<((String, u32), TopicPartition, Vec<u32>)> = partitions
            .iter()
            .filter_map(|(name, p)| {
                let entry = self.topic(name)?;
                let replicas = entry.meta.replicas_of(*p)?.to_vec();
                Some((
                    (name.clone(), *p),
                    TopicPartition { topic: entry.meta.id, partition: PartitionId(*p) },
                    replicas,
                ))
            })
            .collect();
        let asked: Vec<(TopicPartition, Vec<u32>)> = wanted.iter().map(|(_, tp, r)| (*tp, r.clone())).collect();
        let reports = self.reports(&asked, false).await;
        let best = merge(answered(&reports));
        wanted
            .into_iter()
            .filter(|(_, tp, replicas)| settled_one(&reports, &best, *tp, replicas))
            .filter_map(|(key, tp, _)| {
                let view = best.get(&(tp.topic.0, tp.partition.0))?;
                Some((key, view.bounds?))
            })
            .collect()
    }

    /// The `Metadata` answer: brokers, controller, and the leader of each
    /// partition of `topics` (all topics when empty).
    /// A request naming topics (a client's refresh) is answered as soon as
    /// their leaders are settled; one naming none (`cluster describe`)
    /// waits for every peer, so "alive" is every peer's answer.
    pub async fn metadata(self: &Rc<Self>, topics: Vec<String>) -> MetadataResponse {
        let every_peer = topics.is_empty();
        let names = if topics.is_empty() { self.list_topics().into_iter().map(|(n, _)| n).collect() } else { topics };
        let Some(cluster) = self.cluster() else {
            return self.single_node_metadata(names);
        };
        let wanted: Vec<(TopicPartition, Vec<u32>)> = names
            .iter()
            .filter_map(|name| self.topic(name))
            .flat_map(|entry| {
                (0..entry.meta.partitions).map(move |p| {
                    let replicas = entry.meta.replicas_of(p).unwrap_or_default().to_vec();
                    (TopicPartition { topic: entry.meta.id, partition: PartitionId(p) }, replicas)
                })
            })
            .collect();
        let reports = self.reports(&wanted, every_peer).await;
        let controller = cluster_leader(self).await.map(|n| n.0);
        let brokers = cluster
            .net
            .members()
            .into_iter()
            .map(|(node, replication)| {
                let report = reports.iter().find(|(n, _)| *n == node).and_then(|(_, r)| r.as_ref());
                BrokerInfo {
                    node_id: node.0,
                    address: cluster.client_addresses.borrow().get(&node).cloned().unwrap_or_default(),
                    replication_address: replication.to_string(),
                    alive: report.is_some(),
                }
            })
            .collect();
        let best = merge(answered(&reports));
        let topics = self.topics_metadata(names, |entry, p| {
            let replicas = entry.meta.replicas_of(p).unwrap_or_default().to_vec();
            let tp = TopicPartition { topic: entry.meta.id, partition: PartitionId(p) };
            match best.get(&(entry.meta.id.0, p)) {
                Some(v) => PartitionMetadata {
                    partition: p,
                    // Not settled (too few replicas answered, or
                    // the newest epoch names no leader yet): the
                    // best guess, marked so a client asks again.
                    error: if settled_one(&reports, &best, tp, &replicas) {
                        ErrorCode::NONE
                    } else {
                        ErrorCode::LEADER_NOT_AVAILABLE
                    },
                    leader: v.leader,
                    leader_epoch: v.epoch,
                    leader_shard: v.leading.then_some(v.shard),
                    replicas,
                    caught_up: v.caught_up.clone(),
                },
                None => PartitionMetadata {
                    partition: p,
                    error: ErrorCode::LEADER_NOT_AVAILABLE,
                    leader: None,
                    leader_epoch: 0,
                    leader_shard: None,
                    replicas,
                    caught_up: Vec::new(),
                },
            }
        });
        MetadataResponse { node_id: cluster.config.node.0, controller, brokers, topics }
    }

    /// Each of `names`, its partitions described by `partition` (an
    /// unknown name: `UNKNOWN_TOPIC`).
    fn topics_metadata(
        &self,
        names: Vec<String>,
        partition: impl Fn(&TopicEntry, u32) -> PartitionMetadata,
    ) -> Vec<TopicMetadata> {
        names
            .into_iter()
            .map(|name| match self.topic(&name) {
                Some(entry) => TopicMetadata {
                    name,
                    error: ErrorCode::NONE,
                    partitions: (0..entry.meta.partitions).map(|p| partition(&entry, p)).collect(),
                },
                None => TopicMetadata { name, error: ErrorCode::UNKNOWN_TOPIC, partitions: Vec::new() },
            })
            .collect()
    }

    /// A broker without `--peers` leads everything it has.
    fn single_node_metadata(&self, names: Vec<String>) -> MetadataResponse {
        let node = self.config.cluster.node_id;
        let topics = self.topics_metadata(names, |entry, p| PartitionMetadata {
            partition: p,
            error: ErrorCode::NONE,
            leader: Some(node),
            leader_epoch: 0,
            leader_shard: Some(u32::try_from(self.owner_of_entry(entry, p).0).expect("fits")),
            replicas: vec![node],
            caught_up: vec![node],
        });
        MetadataResponse {
            node_id: node,
            controller: Some(node),
            brokers: vec![BrokerInfo {
                node_id: node,
                address: self.config.listen.to_string(),
                replication_address: String::new(),
                alive: true,
            }],
            topics,
        }
    }

    /// Hands the leadership of `partition` of `name` to `broker`, and
    /// returns once the old leader follows it (or why not).
    pub async fn elect_leader(self: &Rc<Self>, name: &str, partition: u32, broker: u32) -> Result<(), ServiceError> {
        let (tp, _) = self.resolve(name, partition)?;
        let Some(cluster) = self.cluster() else {
            let node = self.config.cluster.node_id;
            return if broker == node {
                Ok(())
            } else {
                Err(ServiceError::UnknownBroker(format!("this one-broker cluster has no broker {broker}")))
            };
        };
        if !cluster.net.knows(NodeId(broker)) {
            return Err(ServiceError::UnknownBroker(format!("the cluster has no broker {broker}")));
        }
        let entry = self.topic(name).ok_or_else(|| ServiceError::UnknownTopic(name.to_owned()))?;
        let replicas = entry.meta.replicas_of(partition).unwrap_or_default().to_vec();
        if !replicas.contains(&broker) {
            return Err(ServiceError::UnknownBroker(format!(
                "broker {broker} holds no replica of {name}/{partition} (its replicas: {replicas:?})"
            )));
        }
        let reports = self.reports(&[(tp, replicas)], false).await;
        let best = merge(answered(&reports));
        let leader = best.get(&(tp.topic.0, tp.partition.0)).and_then(|v| v.leader);
        let call = ElectCall { topic: tp.topic.0, partition: tp.partition.0, to: broker };
        let body = Bytes::from(serde_json::to_vec(&call).expect("serializes"));
        match leader {
            Some(l) if l == broker => Ok(()),
            Some(l) if l == cluster.config.node.0 => self.elect_leader_here(&body).await,
            Some(l) => {
                let wait = self.transfer_wait() + REPORT_WAIT;
                let (_, answer) = cluster.net.call(NodeId(l), API_ELECT_LEADER, body, wait).await.map_err(|e| {
                    tracing::debug!(leader = l, error = %e, "an elect-leader call failed");
                    ServiceError::Timeout(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX))
                })?;
                let parsed: CallAnswer = serde_json::from_slice(&answer.body)
                    .map_err(|e| ServiceError::InvalidRequest(format!("the leader's answer: {e}")))?;
                parsed.error.map_or(Ok(()), |e| Err(decode_error(&e)))
            }
            None => Err(ServiceError::LeaderNotAvailable(format!(
                "{name}/{partition} has no leader now (an election is on): try again"
            ))),
        }
    }

    fn transfer_wait(&self) -> Duration {
        let params = self.cluster().expect("cluster mode").params(0);
        Duration::from_millis(params.leader_transfer_timeout_ms) + ELECT_SLACK
    }

    /// The leader's side of [`Shard::elect_leader`].
    pub(crate) async fn elect_leader_here(self: &Rc<Self>, body: &[u8]) -> Result<(), ServiceError> {
        let call: ElectCall = serde_json::from_slice(body)
            .map_err(|e| ServiceError::InvalidRequest(format!("an elect-leader call: {e}")))?;
        let tp = TopicPartition { topic: TopicId(call.topic), partition: PartitionId(call.partition) };
        let owner = self.owner_of_tp(tp).ok_or_else(|| ServiceError::UnknownTopic(call.topic.to_string()))?;
        let wait = self.transfer_wait();
        self.invoke_on(owner, move |s| async move {
            let partition = s.partition(tp)?;
            let driver = partition
                .driver()
                .ok_or_else(|| ServiceError::PartitionUnavailable("the partition is not replicated here".into()))?;
            let to = NodeId(call.to);
            let status = driver.status();
            if status.leader == Some(to) {
                return Ok(());
            }
            if status.role != Role::Leader {
                return Err(super::driver::not_leader(tp, status.leader, status.epoch));
            }
            let deadline = s.rt.now() + wait;
            let mut changed = driver.status_changed();
            driver.input(Input::Admin(Admin::TransferLeadership { to }));
            loop {
                // Registered before the look, so no change slips between.
                if driver.status().leader == Some(to) {
                    tracing::info!(topic = %partition.topic, partition = tp.partition.0, to = to.0,
                        "leadership handed over");
                    return Ok(());
                }
                if engine::rt::until(&s.rt, deadline, changed).await.is_none() {
                    break;
                }
                changed = driver.status_changed();
            }
            tracing::warn!(topic = %partition.topic, partition = tp.partition.0, to = to.0,
                leader = driver.status().leader.map(|l| l.0), "a leader transfer did not finish in time");
            Err(ServiceError::Timeout(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)))
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(topic: u64, leader: u32, epoch: u32, leading: bool) -> ReplicaView {
        ReplicaView {
            topic,
            partition: 0,
            leader: Some(leader),
            epoch,
            shard: 1,
            leading,
            caught_up: vec![],
            bounds: None,
        }
    }

    #[test]
    fn the_newest_epoch_wins_and_at_one_epoch_the_leaders_own_report() {
        let old_leader = BrokerReport { client_listen: "a".into(), replicas: vec![view(1, 1, 3, true)] };
        let follower = BrokerReport { client_listen: "b".into(), replicas: vec![view(1, 2, 4, false)] };
        let new_leader = BrokerReport { client_listen: "c".into(), replicas: vec![view(1, 2, 4, true)] };
        let unsure = BrokerReport {
            client_listen: "d".into(),
            replicas: vec![ReplicaView { leader: None, epoch: 9, ..view(1, 0, 9, false) }],
        };
        let merged = merge(&[old_leader.clone(), follower.clone(), unsure.clone()]);
        assert_eq!(merged[&(1, 0)], view(1, 2, 4, false), "a follower's newer epoch beats a deposed leader");
        let merged = merge(&[follower, old_leader, new_leader, unsure]);
        assert_eq!(merged[&(1, 0)], view(1, 2, 4, true), "the leader's own report is preferred");
    }

    #[test]
    fn leaders_are_settled_by_a_majority_of_replicas_and_the_leaders_own_newest_report() {
        let tp = TopicPartition { topic: TopicId(1), partition: PartitionId(0) };
        let wanted = vec![(tp, vec![1, 2, 3])];
        let report = |views: Vec<ReplicaView>| Some(BrokerReport { client_listen: String::new(), replicas: views });
        let leader = (NodeId(1), report(vec![view(1, 1, 4, true)]));
        let follower = (NodeId(2), report(vec![view(1, 1, 4, false)]));
        assert!(!settled(std::slice::from_ref(&leader), &wanted), "one replica of three is no majority");
        assert!(settled(&[leader.clone(), follower.clone()], &wanted));
        // A replica that voted in a newer epoch, whose leader is not known
        // yet: the old leader's report settles nothing.
        let voted = (NodeId(3), report(vec![ReplicaView { leader: None, ..view(1, 0, 5, false) }]));
        assert!(!settled(&[leader.clone(), voted.clone()], &wanted));
        // A follower naming a leader that has not answered: not settled.
        let hearsay = (NodeId(2), report(vec![view(1, 3, 5, false)]));
        assert!(!settled(&[leader, hearsay, voted], &wanted));
        assert!(!settled(&[follower, (NodeId(3), None)], &wanted), "no leader's own report");
    }
}
