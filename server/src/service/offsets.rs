//! Offsets of partitions: log start, high watermark, or the first offset at
//! or after a time, asked of every owning shard in parallel.

use std::collections::BTreeMap;
use std::rc::Rc;

use engine::rt::Runtime;
use engine::types::{Offset, Timestamp};

use super::{ConnContext, ServiceError};
use crate::ids::{ShardId, TopicPartition};
use crate::shard::Shard;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetQuery {
    /// The log start offset.
    Earliest,
    /// The high watermark: the offset the next readable record will get.
    Latest,
    /// The first offset whose record is at or after this time; the high
    /// watermark if none is.
    Timestamp(Timestamp),
}

impl<R: Runtime> Shard<R> {
    /// One answer per `(topic, partition, query)`, in order.
    pub async fn list_offsets(
        self: &Rc<Self>,
        _ctx: &ConnContext,
        queries: Vec<(String, u32, OffsetQuery)>,
    ) -> Vec<Result<Offset, ServiceError>> {
        let mut out: Vec<Result<Offset, ServiceError>> = vec![Ok(Offset(0)); queries.len()];
        let mut by_owner: BTreeMap<ShardId, Vec<(usize, TopicPartition, OffsetQuery)>> = BTreeMap::new();
        for (slot, (topic, partition, query)) in queries.iter().enumerate() {
            match self.resolve(topic, *partition) {
                Ok((tp, owner)) => by_owner.entry(owner).or_default().push((slot, tp, *query)),
                Err(e) => out[slot] = Err(e),
            }
        }
        let calls = by_owner.into_iter().map(|(owner, items)| {
            let slots: Vec<usize> = items.iter().map(|i| i.0).collect();
            let call = self.invoke_on(owner, move |shard| async move {
                let mut answers = Vec::with_capacity(items.len());
                for (slot, tp, query) in items {
                    let answer = match shard.partition(tp) {
                        Err(e) => Err(e),
                        Ok(p) => match query {
                            OffsetQuery::Earliest => p.log_start_offset(),
                            OffsetQuery::Latest => p.high_watermark(),
                            OffsetQuery::Timestamp(t) => p.offset_for_timestamp(t).await,
                        },
                    };
                    answers.push((slot, answer));
                }
                answers
            });
            async move { call.await.unwrap_or_else(|e| slots.into_iter().map(|s| (s, Err(e.clone()))).collect()) }
        });
        for answers in futures::future::join_all(calls).await {
            for (slot, answer) in answers {
                out[slot] = answer;
            }
        }
        out
    }
}
