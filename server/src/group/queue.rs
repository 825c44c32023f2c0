//! Queue groups in the broker: the wire types to and from the sans-IO
//! `groups::queue` machine, and what the coordinator needs to know of the
//! data partitions — their log start offsets and high watermarks, read
//! from the replicas on this broker, one cross-shard call per shard.
//!
//! Only partitions with a replica here are handed out from: a high
//! watermark learnt elsewhere (from a client) could be ahead of the log,
//! and the offsets past it would be skipped as gaps. In a cluster whose
//! replication factor is its broker count (the default up to three
//! brokers), every partition has one.

use std::collections::BTreeMap;
use std::rc::Rc;

use engine::rt::Runtime;
use groups::queue::{Ack, AckKind, QueueDescription, QueueFetch, QueueFetchReply, Reason};
use protocol::ErrorCode;
use protocol::api::groups::{
    AcquiredRange, QueueFetchRequest, QueueFetchResponse, QueueInfo, QueueMemberInfo, QueuePartitionInfo,
};

use crate::service::ServiceError;
use crate::shard::Shard;

use super::group_error;

pub(super) fn to_fetch(req: QueueFetchRequest) -> Result<QueueFetch, ServiceError> {
    let acks = req
        .acks
        .into_iter()
        .map(|a| {
            let kind = match a.kind {
                0 => AckKind::Accept,
                1 => AckKind::Release { delay_ms: a.delay_ms },
                2 => AckKind::Reject,
                3 => AckKind::Gap,
                4 => AckKind::DeadLettered,
                k => return Err(group_error(ErrorCode::INVALID_REQUEST, format!("unknown ack kind {k}"))),
            };
            Ok(Ack { topic: a.topic, partition: a.partition, first: a.first, last: a.last, kind })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(QueueFetch {
        queue: req.queue,
        member: req.member,
        topics: req.topics,
        acks,
        records_max: req.records_max,
        lock_ms: req.lock_ms,
    })
}

pub(super) fn from_reply(r: QueueFetchReply, dead_letter_topic: String) -> QueueFetchResponse {
    QueueFetchResponse {
        ack_errors: r.ack_errors.iter().map(|c| c.0).collect(),
        acquired: r
            .acquired
            .into_iter()
            .map(|a| AcquiredRange {
                topic: a.topic,
                partition: a.partition,
                first: a.first,
                last: a.last,
                deliveries: a.deliveries,
                dead_letter: match a.dead_letter {
                    None => 0,
                    Some(Reason::Rejected) => 1,
                    Some(Reason::DeliveryLimit) => 2,
                },
            })
            .collect(),
        lock_until_ms: r.lock_until.0,
        dead_letter_topic,
    }
}

pub(super) fn from_description(d: QueueDescription) -> QueueInfo {
    QueueInfo {
        queue: d.queue,
        dead_letter_topic: d.dead_letter_topic,
        members: d
            .members
            .into_iter()
            .map(|m| QueueMemberInfo { member: m.member, last_seen_ms: m.last_seen.0, holding: m.holding })
            .collect(),
        partitions: d
            .partitions
            .into_iter()
            .map(|p| QueuePartitionInfo {
                topic: p.topic,
                partition: p.partition,
                start: p.start,
                next: p.next,
                acked: p.acked,
                dead_lettered: p.dead_lettered,
                skipped: p.skipped,
                available: p.available,
                acquired: p.acquired,
                dead_letter_pending: p.dead_letter_pending,
                deliveries: p.deliveries.into_iter().collect(),
            })
            .collect(),
    }
}

impl<R: Runtime> Shard<R> {
    /// `(log start offset, high watermark)` of each of `partitions` with a
    /// replica on this broker; one call per owning shard.
    pub(super) async fn partition_bounds(
        self: &Rc<Self>,
        partitions: Vec<(String, u32)>,
    ) -> BTreeMap<(String, u32), (u64, u64)> {
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

    /// The bounds of every partition of `topics` (each must exist).
    pub(super) async fn queue_bounds(
        self: &Rc<Self>,
        topics: &[String],
    ) -> Result<BTreeMap<(String, u32), (u64, u64)>, ServiceError> {
        let mut wanted = Vec::new();
        for t in topics {
            let entry = self.topic(t).ok_or_else(|| ServiceError::UnknownTopic(t.clone()))?;
            wanted.extend((0..entry.meta.partitions).map(|p| (t.clone(), p)));
        }
        Ok(self.partition_bounds(wanted).await)
    }
}
