//! Fetch: the partitions of a request are read on their owning shards in
//! parallel, each owner within its share of the response's byte budget
//! (so the owners together read about what the response can carry, not
//! each the whole of it). With less than `min_bytes` and a `max_wait`, the
//! owners then wait for data beyond what they returned, each answering as
//! soon as it has some, and the answers accumulate until `min_bytes` or the
//! deadline.

use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::rt::Runtime;
use engine::types::Offset;
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::{ConnContext, ServiceError};
use crate::ids::{ShardId, TopicPartition};
use crate::metrics::ShardMetrics;
use crate::shard::Shard;

#[derive(Debug, Clone)]
pub struct FetchPartition {
    /// Shared by the partitions of one topic: no string per partition.
    pub topic: Rc<str>,
    pub partition: u32,
    pub offset: Offset,
    pub max_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct FetchRequest {
    pub max_wait: Duration,
    pub min_bytes: usize,
    pub max_bytes: usize,
    pub partitions: Vec<FetchPartition>,
}

/// One partition of a fetch response.
#[derive(Debug, Clone, Default)]
pub struct FetchedPartition {
    pub error: Option<ServiceError>,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
    /// Whole stored batches, in offset order.
    pub batches: Vec<Bytes>,
}

impl FetchedPartition {
    fn failed(e: ServiceError) -> FetchedPartition {
        FetchedPartition { error: Some(e), ..FetchedPartition::default() }
    }

    fn bytes(&self) -> usize {
        self.batches.iter().map(Bytes::len).sum()
    }
}

/// One partition as its owner reads it.
#[derive(Debug, Clone, Copy)]
struct Item {
    slot: usize,
    tp: TopicPartition,
    offset: Offset,
    max_bytes: usize,
}

/// The offset after the last of `batches`, or `offset` if there are none.
fn next_offset(batches: &[Bytes], offset: Offset) -> Offset {
    batches
        .last()
        .and_then(|b| protocol::batch::BatchHeader::decode(b).ok())
        .map_or(offset, |h| h.next_offset().max(offset))
}

impl<R: Runtime> Shard<R> {
    pub async fn fetch(
        self: &Rc<Self>,
        _ctx: &ConnContext,
        request: FetchRequest,
    ) -> Result<Vec<FetchedPartition>, ServiceError> {
        let limits = &self.config.limits;
        let mut seen = HashSet::new();
        for p in &request.partitions {
            if !seen.insert((&*p.topic, p.partition)) {
                return Err(ServiceError::InvalidRequest(format!("fetch names {}/{} twice", p.topic, p.partition)));
            }
        }
        let max_bytes = request.max_bytes.clamp(1, limits.fetch_bytes_max);
        let wait = request.max_wait.min(Duration::from_millis(u64::from(limits.fetch_wait_ms_max)));
        let deadline = self.rt.now() + wait;
        let mut out: Vec<FetchedPartition> = vec![FetchedPartition::default(); request.partitions.len()];
        let mut by_owner: BTreeMap<ShardId, Vec<Item>> = BTreeMap::new();
        for (slot, p) in request.partitions.iter().enumerate() {
            match self.resolve(&p.topic, p.partition) {
                Err(e) => out[slot] = FetchedPartition::failed(e),
                Ok((tp, owner)) => by_owner.entry(owner).or_default().push(Item {
                    slot,
                    tp,
                    offset: p.offset,
                    max_bytes: p.max_bytes.min(max_bytes),
                }),
            }
        }
        let partitions = by_owner.values().map(Vec::len).sum::<usize>().max(1);
        // Each owner's share of the response, by how many partitions it reads.
        let share = |n: usize| (max_bytes * n / partitions).max(1);
        let rounds: Vec<_> = by_owner
            .iter()
            .map(|(&owner, items)| self.fetch_on(owner, items.clone(), share(items.len()), None))
            .collect();
        let mut total = 0usize;
        let mut failed = false;
        for answers in futures::future::join_all(rounds).await {
            for (slot, fetched) in answers {
                total += fetched.bytes();
                failed |= fetched.error.is_some();
                out[slot] = fetched;
            }
        }
        if total < request.min_bytes && !failed && !wait.is_zero() && !by_owner.is_empty() {
            self.wait_for_more(&mut out, &mut by_owner, deadline, request.min_bytes, max_bytes, total, partitions)
                .await;
        }
        // The response's byte budget, keeping at least one batch overall.
        let mut used = 0usize;
        for fetched in &mut out {
            let mut kept = 0;
            for b in &fetched.batches {
                if used > 0 && used + b.len() > max_bytes {
                    break;
                }
                used += b.len();
                kept += 1;
            }
            fetched.batches.truncate(kept);
        }
        Ok(out)
    }

    /// Long polling: each owner waits for data beyond what it returned and
    /// answers as soon as some arrives; answers accumulate until `min_bytes`
    /// or the deadline.
    #[allow(clippy::too_many_arguments)] // the fetch's state, passed once
    async fn wait_for_more(
        self: &Rc<Self>,
        out: &mut [FetchedPartition],
        by_owner: &mut BTreeMap<ShardId, Vec<Item>>,
        deadline: Instant,
        min_bytes: usize,
        max_bytes: usize,
        mut total: usize,
        partitions: usize,
    ) {
        let advance = |items: &mut Vec<Item>, out: &[FetchedPartition]| {
            for item in items.iter_mut() {
                item.offset = next_offset(&out[item.slot].batches, item.offset);
            }
        };
        let arm = |owner: ShardId, items: Vec<Item>, total: usize| {
            let budget = (max_bytes.saturating_sub(total) * items.len() / partitions).max(1);
            let call = self.fetch_on(owner, items, budget, Some(deadline));
            async move { (owner, call.await) }
        };
        let mut waits = FuturesUnordered::new();
        for (&owner, items) in by_owner.iter_mut() {
            advance(items, out);
            waits.push(arm(owner, items.clone(), total));
        }
        while let Some((owner, answers)) = waits.next().await {
            let mut failed = false;
            for (slot, fetched) in answers {
                total += fetched.bytes();
                failed |= fetched.error.is_some();
                let into = &mut out[slot];
                into.error = fetched.error;
                into.high_watermark = fetched.high_watermark;
                into.log_start_offset = fetched.log_start_offset;
                into.batches.extend(fetched.batches);
            }
            if total >= min_bytes || failed || self.rt.now() >= deadline || total >= max_bytes {
                break;
            }
            // This owner had something but not enough: it waits again,
            // from past what it returned.
            let items = by_owner.get_mut(&owner).expect("an owner of the fetch");
            advance(items, out);
            waits.push(arm(owner, items.clone(), total));
        }
        // Dropping the waits still in flight ends them on their owners.
    }

    /// Reads `items` on `owner` within `budget` bytes (each at least one
    /// batch while the budget lasts); with `wait_until`, first waits there
    /// until one of them has data, or the deadline.
    fn fetch_on(
        self: &Rc<Self>,
        owner: ShardId,
        items: Vec<Item>,
        budget: usize,
        wait_until: Option<Instant>,
    ) -> impl std::future::Future<Output = Vec<(usize, FetchedPartition)>> + use<R> {
        let this = self.clone();
        async move {
            let slots: Vec<usize> = items.iter().map(|i| i.slot).collect();
            let got = this
                .invoke_on(owner, move |shard| async move { shard.fetch_owned(items, budget, wait_until).await })
                .await;
            got.unwrap_or_else(|e| slots.into_iter().map(|s| (s, FetchedPartition::failed(e.clone()))).collect())
        }
    }

    /// The owner's side of a fetch.
    async fn fetch_owned(
        self: &Rc<Self>,
        items: Vec<Item>,
        budget: usize,
        wait_until: Option<Instant>,
    ) -> Vec<(usize, FetchedPartition)> {
        let partitions: Vec<_> = items.iter().map(|i| self.partition(i.tp)).collect();
        if let Some(deadline) = wait_until {
            let ready =
                items.iter().zip(&partitions).any(|(item, p)| p.as_ref().map_or(true, |p| p.ready_at(item.offset)));
            if !ready && !self.shutdown.is_fired() {
                let waits: Vec<_> = items
                    .iter()
                    .zip(&partitions)
                    .filter_map(|(item, p)| p.as_ref().ok().map(|p| (p.clone(), item.offset)))
                    .map(|(p, offset)| Box::pin(async move { p.wait_for_data(offset).await }))
                    .collect();
                if !waits.is_empty() {
                    ShardMetrics::add(&self.metrics.fetches_waiting, 1);
                    let stop = std::pin::pin!(self.shutdown.wait());
                    let any = futures::future::select_all(waits);
                    let _ = engine::rt::until(&self.rt, deadline, futures::future::select(any, stop)).await;
                    ShardMetrics::add(&self.metrics.fetches_waiting, -1);
                }
            }
        }
        let mut used = 0usize;
        let mut out = Vec::with_capacity(items.len());
        for (item, partition) in items.iter().zip(partitions) {
            let partition = match partition {
                Ok(p) => p,
                Err(e) => {
                    out.push((item.slot, FetchedPartition::failed(e)));
                    continue;
                }
            };
            let (hw, start) =
                (partition.high_watermark().unwrap_or_default(), partition.log_start_offset().unwrap_or_default());
            if used >= budget {
                // This owner's share is full: the rest get nothing this time.
                out.push((
                    item.slot,
                    FetchedPartition { error: None, high_watermark: hw, log_start_offset: start, batches: Vec::new() },
                ));
                continue;
            }
            // Each read returns at least one batch, so no consumer stalls
            // behind a batch larger than its share (the response's own
            // budget, applied last, keeps at least its first batch).
            let bytes_max = item.max_bytes.min(budget - used).max(1);
            let fetched = match partition.read(item.offset, bytes_max).await {
                Ok(r) => FetchedPartition {
                    error: None,
                    high_watermark: r.high_watermark,
                    log_start_offset: r.log_start_offset,
                    batches: r.batches,
                },
                Err(e) => FetchedPartition {
                    error: Some(e),
                    high_watermark: hw,
                    log_start_offset: start,
                    batches: Vec::new(),
                },
            };
            used += fetched.bytes();
            out.push((item.slot, fetched));
        }
        out
    }
}
