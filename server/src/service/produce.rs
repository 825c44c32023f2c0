//! Produce: every partition's batch starts its append before the call
//! returns (here, or queued on the owning shard in order), so requests read
//! in order land in order; the returned future collects the outcomes.

use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use engine::rt::Runtime;
use engine::types::Offset;

use super::{ConnContext, ServiceError};
use crate::ids::TopicPartition;
use crate::shard::Shard;

#[derive(Debug, Clone)]
pub struct ProducePartition {
    /// Shared by the partitions of one topic: no string per partition.
    pub topic: Rc<str>,
    pub partition: u32,
    /// One record batch as a producer built it.
    pub batch: Bytes,
}

#[derive(Debug, Clone)]
pub struct ProduceRequest {
    /// How long the outcome may take before it is reported as a timeout
    /// (the append itself goes on and may land).
    pub timeout: Duration,
    /// When a replicated partition answers (a single replica: once its
    /// flush policy holds, whatever this says).
    pub acks: crate::partition::Acks,
    /// A replica that does not lead sends the batch on to the leader it
    /// knows (one hop) rather than answer `NOT_LEADER`.
    pub forward: bool,
    pub partitions: Vec<ProducePartition>,
}

/// The offset given to the batch's first record, or why not.
pub type ProduceResult = Result<Offset, ServiceError>;

impl<R: Runtime> Shard<R> {
    /// A compacted topic keeps the latest record per key: a record without
    /// a key has no place in it, and is refused (`INVALID_RECORD`).
    fn refuse_keyless(&self, tp: TopicPartition, batch: &[u8]) -> Result<(), ServiceError> {
        let Some(topic) = self.topic_by_id(tp.topic) else { return Ok(()) };
        if !crate::topic_config::cleaner_settings(&self.config, &topic.meta.config).compact {
            return Ok(());
        }
        // A batch that does not check out is the append's to refuse.
        let Ok(view) = protocol::batch::validate_batch(batch) else { return Ok(()) };
        let Ok(records) = view.records() else { return Ok(()) };
        if records.iter().any(|r| r.key.is_none()) {
            return Err(ServiceError::InvalidRecord(format!(
                "topic {:?} is compacted (cleanup.policy includes compact): every record needs a key",
                topic.meta.name
            )));
        }
        Ok(())
    }

    /// Starts every append of `request`, in order, and returns the future of
    /// their outcomes (in the request's order). Appends on another shard are
    /// queued on its channel in order; when that queue is full this waits,
    /// which stops the caller from reading more requests: backpressure.
    pub async fn produce(
        self: &Rc<Self>,
        ctx: &ConnContext,
        request: ProduceRequest,
    ) -> impl Future<Output = Vec<ProduceResult>> + 'static + use<R> {
        let mut started = Vec::with_capacity(request.partitions.len());
        let acks = request.acks;
        let forward = request.forward;
        for p in request.partitions {
            let pending =
                match super::admin::refuse_internal(&p.topic).and_then(|()| self.resolve(&p.topic, p.partition)) {
                    Err(e) => futures::future::Either::Left(std::future::ready(Err(e))),
                    Ok((tp, owner)) => {
                        let batch = p.batch;
                        let reply = self
                            .start_on(owner, move |shard| {
                                let append = shard
                                    .refuse_keyless(tp, &batch)
                                    .and_then(|()| shard.partition(tp))
                                    .map(|partition| partition.append(&batch, acks, forward));
                                async move {
                                    match append {
                                        Ok(append) => append.await,
                                        Err(e) => Err(e),
                                    }
                                }
                            })
                            .await;
                        futures::future::Either::Right(async move { reply.await? })
                    }
                };
            started.push(pending);
        }
        let timeout_ms = u64::try_from(request.timeout.as_millis()).unwrap_or(u64::MAX);
        let deadline = self.rt.now() + request.timeout;
        let rt = self.rt.clone();
        let client = ctx.client_id.clone();
        async move {
            let mut results = Vec::with_capacity(started.len());
            for pending in started {
                let outcome =
                    engine::rt::until(&rt, deadline, pending).await.unwrap_or(Err(ServiceError::Timeout(timeout_ms)));
                if let Err(e) = &outcome {
                    tracing::debug!(client, error = %e, "produce failed");
                }
                results.push(outcome);
            }
            results
        }
    }
}
