//! Queue groups in the broker: what the coordinator needs to know of the
//! data partitions — their log start offsets and high watermarks — read
//! from the replicas on this broker (one cross-shard call per shard), and
//! for partitions without one here, from their leaders' reports (one
//! round of `API_LEADERS` calls, as `Metadata` makes). A follower here is
//! asked too: its high watermark may trail the leader's, never pass it,
//! so what it allows is committed. A partition whose bounds nobody knows
//! is left out of that one fetch (the next asks again), so one broker
//! down does not stop the acks and deliveries of the other partitions.

use std::collections::BTreeMap;
use std::rc::Rc;

use engine::rt::Runtime;
use protocol::ErrorCode;

use crate::service::ServiceError;
use crate::shard::Shard;

use super::group_error;

impl<R: Runtime> Shard<R> {
    /// `(log start offset, high watermark)` of each of `partitions`: of
    /// the replica on this broker, else as its leader reports it (left out
    /// when neither is known).
    pub(super) async fn partition_bounds(
        self: &Rc<Self>,
        partitions: Vec<(String, u32)>,
    ) -> BTreeMap<(String, u32), (u64, u64)> {
        let mut out = self.local_bounds(partitions.clone()).await;
        let missing: Vec<(String, u32)> = partitions.into_iter().filter(|k| !out.contains_key(k)).collect();
        if !missing.is_empty() {
            out.extend(self.leader_bounds(&missing).await);
        }
        out
    }

    /// The bounds of each of `partitions` with a replica on this broker;
    /// one call per owning shard.
    async fn local_bounds(self: &Rc<Self>, partitions: Vec<(String, u32)>) -> BTreeMap<(String, u32), (u64, u64)> {
        let mut by_shard: BTreeMap<_, Vec<_>> = BTreeMap::new();
        for (topic, p) in partitions {
            if let Ok((tp, owner)) = self.resolve(&topic, p) {
                by_shard.entry(owner).or_default().push(((topic, p), tp));
            }
        }
        let mut out = BTreeMap::new();
        for (owner, wanted) in by_shard {
            let got = self
                .invoke_on(owner, move |shard| async move {
                    wanted
                        .into_iter()
                        .filter_map(|(key, tp)| {
                            let p = shard.partition(tp).ok()?;
                            Some((key, (p.log_start_offset().ok()?.0, p.high_watermark().ok()?.0)))
                        })
                        .collect::<Vec<_>>()
                })
                .await;
            if let Ok(got) = got {
                out.extend(got);
            }
        }
        out
    }

    /// The bounds of the partitions a queue fetch may hand out. One whose
    /// bounds nobody here knows (its only replica's broker is down, or a
    /// leader is being elected) is left out of this fetch, not the others:
    /// the rest are handed out and the acks applied. Only a fetch with no
    /// acks that could hand out nothing at all is refused, so the consumer
    /// learns why it gets nothing.
    pub(super) async fn queue_bounds(
        self: &Rc<Self>,
        topics: &[String],
        has_acks: bool,
    ) -> Result<BTreeMap<(String, u32), (u64, u64)>, ServiceError> {
        let mut wanted = Vec::new();
        for t in topics {
            let entry = self.topic(t).ok_or_else(|| ServiceError::UnknownTopic(t.clone()))?;
            wanted.extend((0..entry.meta.partitions).map(|p| (t.clone(), p)));
        }
        let bounds = self.partition_bounds(wanted.clone()).await;
        if let Some((t, p)) = wanted.iter().find(|k| !bounds.contains_key(*k)) {
            if bounds.is_empty() && !has_acks {
                return Err(group_error(
                    ErrorCode::QUEUE_PARTITION_UNAVAILABLE,
                    format!(
                        "neither a replica here nor a leader elsewhere told the queue's coordinator the bounds of {t}/{p} (nor of any other partition): try again"
                    ),
                ));
            }
            tracing::debug!(topic = %t, partition = p, known = bounds.len(), "a queue fetch leaves out partitions of unknown bounds");
        }
        Ok(bounds)
    }
}
