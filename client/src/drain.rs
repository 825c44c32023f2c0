//! Draining a broker before it is removed (`cairn broker drain N`): every
//! partition with a replica on it moves that replica to another live
//! broker, through the same online moves as `cairn partition reassign` (a
//! learner catches up, the voters switch, a leader moved away hands over
//! first). The plan is the client's, as Kafka's `kafka-reassign-partitions`
//! plans on the client: the cluster only carries out moves, so a drain
//! interrupted halfway leaves every partition whole, and running it again
//! finishes it. The metadata partition's voters stay as they are (the
//! controller quorum is the brokers of `--peers`; ADR 29).

use std::collections::BTreeMap;
use std::time::Duration;

use protocol::api::MetadataResponse;

use crate::client::Client;
use crate::error::{ClientError, Result};

/// Moves the cluster runs at once (its own limit is 4).
const MOVES_IN_FLIGHT_MAX: usize = 4;

/// One partition's move off the drained broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub topic: String,
    pub partition: u32,
    pub from: Vec<u32>,
    pub to: Vec<u32>,
}

/// The moves that take every replica off `node`: each goes to the live
/// broker holding the fewest replicas that does not hold one of that
/// partition already (the lowest id on a tie). The drained broker's place
/// in the list is dropped and the newcomer goes last, so the next replica
/// becomes the preferred leader.
pub fn plan(metadata: &MetadataResponse, node: u32) -> std::result::Result<Vec<Move>, String> {
    if !metadata.brokers.iter().any(|b| b.node_id == node) {
        return Err(format!("the cluster has no broker {node}"));
    }
    let mut load: BTreeMap<u32, usize> =
        metadata.brokers.iter().filter(|b| b.alive && b.node_id != node).map(|b| (b.node_id, 0)).collect();
    if load.is_empty() {
        return Err(format!("no other live broker can take broker {node}'s replicas"));
    }
    for p in metadata.topics.iter().flat_map(|t| &t.partitions) {
        for r in &p.replicas {
            if let Some(n) = load.get_mut(r) {
                *n += 1;
            }
        }
    }
    let mut moves = Vec::new();
    for topic in &metadata.topics {
        for p in &topic.partitions {
            if !p.replicas.contains(&node) {
                continue;
            }
            let Some((&newcomer, _)) =
                load.iter().filter(|(b, _)| !p.replicas.contains(b)).min_by_key(|(b, n)| (**n, **b))
            else {
                return Err(format!(
                    "{}/{} has a replica on every live broker: broker {node} cannot be drained \
                     (add a broker, or lower the topic's replication factor)",
                    topic.name, p.partition
                ));
            };
            *load.get_mut(&newcomer).expect("a live broker") += 1;
            let to = p.replicas.iter().copied().filter(|&r| r != node).chain([newcomer]).collect();
            moves.push(Move { topic: topic.name.clone(), partition: p.partition, from: p.replicas.clone(), to });
        }
    }
    Ok(moves)
}

/// Why a drain stopped (the moves before it stay done).
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("{0}")]
    Plan(String),
    #[error("reading the cluster's metadata: {0}")]
    Metadata(ClientError),
    #[error("{}/{}: the cluster refused the move to {:?}: {error}", mv.topic, mv.partition, mv.to)]
    Refused { mv: Move, error: ClientError },
    #[error("{}/{} is still moving to {:?} after {} (it goes on; run the drain again to finish)",
        mv.topic, mv.partition, mv.to, humantime::format_duration(*timeout))]
    TimedOut { mv: Move, timeout: Duration },
}

impl Client {
    /// Moves every replica off broker `node` ([`plan`]), a few moves at a
    /// time, each waited for up to `timeout`; `done` hears of each
    /// finished move.
    pub async fn drain_broker(
        &self,
        node: u32,
        timeout: Duration,
        mut done: impl FnMut(&Move),
    ) -> std::result::Result<Vec<Move>, DrainError> {
        let metadata = self.metadata(&[]).await.map_err(DrainError::Metadata)?;
        let moves = plan(&metadata, node).map_err(DrainError::Plan)?;
        for chunk in moves.chunks(MOVES_IN_FLIGHT_MAX) {
            for mv in chunk {
                self.start_move(mv, timeout).await.map_err(|error| DrainError::Refused { mv: mv.clone(), error })?;
            }
            for mv in chunk {
                if !self.wait_reassigned(&mv.topic, mv.partition, &mv.to, timeout).await {
                    return Err(DrainError::TimedOut { mv: mv.clone(), timeout });
                }
                done(mv);
            }
        }
        Ok(moves)
    }

    /// Starts one move, asking again while the cluster is busy (another
    /// move of the partition, or as many moves as it runs at once).
    async fn start_move(&self, m: &Move, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.reassign_partition(&m.topic, m.partition, &m.to).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_retriable() && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use protocol::ErrorCode;
    use protocol::api::{BrokerInfo, PartitionMetadata, TopicMetadata};

    use super::*;

    fn metadata(alive: &[(u32, bool)], partitions: &[&[u32]]) -> MetadataResponse {
        MetadataResponse {
            node_id: 1,
            controller: Some(1),
            brokers: alive
                .iter()
                .map(|&(node_id, alive)| BrokerInfo {
                    node_id,
                    address: String::new(),
                    replication_address: String::new(),
                    alive,
                })
                .collect(),
            topics: vec![TopicMetadata {
                name: "t".into(),
                error: ErrorCode::NONE,
                partitions: partitions
                    .iter()
                    .enumerate()
                    .map(|(i, r)| PartitionMetadata {
                        partition: u32::try_from(i).unwrap(),
                        error: ErrorCode::NONE,
                        leader: r.first().copied(),
                        leader_epoch: 1,
                        leader_shard: None,
                        replicas: r.to_vec(),
                        caught_up: r.to_vec(),
                    })
                    .collect(),
            }],
        }
    }

    #[test]
    fn every_replica_leaves_the_drained_broker_for_the_least_loaded_live_one() {
        let m = metadata(
            &[(1, true), (2, true), (3, true), (4, true), (5, false)],
            &[&[1, 2, 3], &[2, 3, 4], &[3, 4, 1], &[4, 1, 2]],
        );
        let moves = plan(&m, 1).unwrap();
        let to: Vec<_> = moves.iter().map(|m| (m.partition, m.to.clone())).collect();
        // 4 holds 3 replicas, 2 and 3 hold 3: each takes the least loaded
        // broker it lacks; the dead broker 5 takes none.
        assert_eq!(to, vec![(0, vec![2, 3, 4]), (2, vec![3, 4, 2]), (3, vec![4, 2, 3])]);
        for m in &moves {
            assert!(!m.to.contains(&1) && !m.to.contains(&5), "{m:?}");
            let mut sorted = m.to.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), m.from.len(), "the replication factor stays: {m:?}");
        }
    }

    #[test]
    fn a_drain_that_would_lower_the_replication_factor_is_refused() {
        let m = metadata(&[(1, true), (2, true), (3, true), (4, false)], &[&[1, 2, 3]]);
        let e = plan(&m, 1).unwrap_err();
        assert!(e.contains("t/0 has a replica on every live broker"), "{e}");
        assert!(plan(&m, 9).unwrap_err().contains("no broker 9"));
    }
}
