//! Appending: every append is checked and takes its place in line when it
//! is *called*, then waits for its turn, for room (write buffer, allocated
//! file, segment) and for the flush policy. Taking the ticket at call time,
//! not at first poll, is what makes "appends enter the log in call order"
//! independent of the order an executor happens to run tasks in.

use std::future::Future;
use std::ops::Deref;
use std::rc::Rc;

use bytes::Bytes;

use super::io::{CancelGuard, Flushed, InFlight};
use super::segment::{Room, log_path};
use super::{AppendInfo, FlushPolicy, LogError, PartitionLog, State, TimestampType};
use crate::batch::{BATCH_VERSION_V1, BatchError, BatchHeader, Stamp, validate_batch, validate_records};
use crate::rt::{BLOCK_BYTES, DmaFile, Storage, align_up};
use crate::types::{LeaderEpoch, Offset, Timestamp};

/// Who chooses the batch's offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placement {
    /// The log: the batch gets the next offsets (a producer's batch).
    Assign,
    /// The batch: its base offset is kept, at or after the log end (a
    /// replicated, compacted or control batch; gaps are allowed).
    Keep,
}

/// The smallest pre-allocation step.
const PREALLOCATE_BYTES_MIN: u64 = 64 << 10;

/// An append's place in line; gives the turn away if the append is dropped
/// or fails before its batch entered the log. `L` is how it holds the log:
/// a reference, or an `Rc` for a future that outlives the caller's borrow.
struct Ticket<S: Storage, L: Deref<Target = PartitionLog<S>>> {
    log: L,
    number: u64,
    served: bool,
}

impl<S: Storage, L: Deref<Target = PartitionLog<S>>> Drop for Ticket<S, L> {
    fn drop(&mut self) {
        if self.served {
            return;
        }
        {
            let mut s = self.log.state.borrow_mut();
            if s.tickets_serving == self.number {
                s.advance_tickets();
            } else {
                assert!(self.number > s.tickets_serving, "a ticket is served once");
                s.tickets_abandoned.insert(self.number);
            }
        }
        self.log.io_done.notify_all();
    }
}

impl<F: DmaFile> State<F> {
    /// Passes the turn to the next append still waiting for it.
    fn advance_tickets(&mut self) {
        self.tickets_serving += 1;
        while self.tickets_abandoned.remove(&self.tickets_serving) {
            self.tickets_serving += 1;
        }
    }

    /// Whether a truncation since `epoch` removed offsets up to `last`, or
    /// happened too long ago to tell (then the answer must be yes).
    pub(super) fn truncated_since(&self, epoch: u64, last: Offset) -> bool {
        if self.truncations == epoch {
            return false;
        }
        let known = self.recent_truncations.front().is_some_and(|&(e, _)| e <= epoch + 1);
        let cut = self.recent_truncations.iter().any(|&(e, at)| e > epoch && at <= last);
        cut || !known
    }
}

/// A checked batch holding its place in line.
struct Prepared<S: Storage, L: Deref<Target = PartitionLog<S>>> {
    batch: Vec<u8>,
    header: BatchHeader,
    placement: Placement,
    /// The epoch to stamp (a replicated leader's), else the log's.
    epoch: Option<LeaderEpoch>,
    ticket: Ticket<S, L>,
}

enum Step {
    Wait,
    Roll,
    /// Claim space up to `target` (a whole step), or at least `needed`.
    Allocate {
        target: u64,
        needed: u64,
    },
    Flush,
    WaitMemory,
    Again,
}

impl<S: Storage> PartitionLog<S> {
    /// Appends one batch built by a producer ([`crate::batch::BatchBuilder`]):
    /// the log gives it the next offsets. The batch is checked whole when
    /// this is called — header, CRCs and the records archive (rkyv
    /// bytecheck, agreement with the header), offset deltas `0..n`, and the
    /// timestamp bounds — so nothing a reader could not read back is ever
    /// stored, and the batch takes its place in line at once. The future
    /// resolves once the flush policy holds for it. The bytes are stored as
    /// given, with only the envelope stamped (base offset, leader epoch,
    /// append time).
    pub fn append(&self, batch: Vec<u8>) -> impl Future<Output = Result<AppendInfo, LogError>> + '_ {
        let prepared = Self::prepare(self, batch, Placement::Assign);
        async move { self.append_prepared(prepared?).await }
    }

    /// [`PartitionLog::append`] for a log behind an `Rc`: the future owns a
    /// handle on the log, so it can run in a task of its own. The batch is
    /// checked and takes its place in line now, as with `append`.
    pub fn append_owned(
        self: &Rc<Self>,
        batch: Vec<u8>,
    ) -> impl Future<Output = Result<AppendInfo, LogError>> + 'static {
        let prepared = Self::prepare(self.clone(), batch, Placement::Assign);
        async move {
            let prepared = prepared?;
            let log = prepared.ticket.log.clone();
            log.append_prepared(prepared).await
        }
    }

    /// [`PartitionLog::append_owned`] stamped with `epoch` rather than the
    /// log's: a replicated leader's batch carries the epoch it was proposed
    /// in, even if the log has since heard of a newer one. The checks run
    /// (and the place in line is taken) now, and a batch they refuse is an
    /// error now, before replication counts it in.
    pub fn append_in_epoch(
        self: &Rc<Self>,
        batch: Vec<u8>,
        epoch: LeaderEpoch,
    ) -> Result<impl Future<Output = Result<AppendInfo, LogError>> + 'static, LogError> {
        let mut prepared = Self::prepare(self.clone(), batch, Placement::Assign)?;
        prepared.epoch = Some(epoch);
        Ok(async move {
            let log = prepared.ticket.log.clone();
            log.append_prepared(prepared).await
        })
    }

    /// [`PartitionLog::append_at`] for a log behind an `Rc`, taking its place
    /// in line now.
    pub fn append_at_owned(
        self: &Rc<Self>,
        batch: Vec<u8>,
    ) -> impl Future<Output = Result<AppendInfo, LogError>> + 'static {
        let prepared = Self::prepare(self.clone(), batch, Placement::Keep);
        async move {
            let prepared = prepared?;
            let log = prepared.ticket.log.clone();
            log.append_prepared(prepared).await
        }
    }

    /// Appends a batch at the offsets it carries, which must start at or
    /// after the log end: a follower's copy of its leader's batch, a
    /// compacted batch, a control batch. Gaps before it are kept. Its
    /// envelope is stored as given (the leader stamped it).
    pub fn append_at(&self, batch: Vec<u8>) -> impl Future<Output = Result<AppendInfo, LogError>> + '_ {
        let prepared = Self::prepare(self, batch, Placement::Keep);
        async move { self.append_prepared(prepared?).await }
    }

    fn prepare<L: Deref<Target = Self>>(
        log: L,
        batch: Vec<u8>,
        placement: Placement,
    ) -> Result<Prepared<S, L>, LogError> {
        let view = validate_batch(&batch)?;
        let stats = validate_records(&view)?;
        let header = view.header;
        if batch.len() != header.batch_length as usize {
            return Err(LogError::InvalidBatch(BatchError::BadLength { batch_length: header.batch_length }));
        }
        {
            let config = log.cfg();
            if header.batch_length > config.batch_bytes_max {
                return Err(LogError::BatchTooLarge {
                    batch_length: header.batch_length,
                    batch_bytes_max: config.batch_bytes_max,
                });
            }
            if placement == Placement::Assign {
                if !stats.dense {
                    return Err(LogError::NotDense);
                }
                if config.timestamp_type == TimestampType::CreateTime {
                    let now = log.storage.now_ms();
                    let min = config.timestamp_before_max_ms.map_or(i64::MIN, |d| now.saturating_sub(d));
                    let max = config.timestamp_after_max_ms.map_or(i64::MAX, |d| now.saturating_add(d));
                    for t in [stats.min_timestamp, header.max_timestamp] {
                        if t.0 < min || t.0 > max {
                            return Err(LogError::InvalidTimestamp { timestamp: t.0, min, max });
                        }
                    }
                }
            }
        }
        let number = {
            let mut s = log.state.borrow_mut();
            s.usable()?;
            let number = s.tickets_next;
            s.tickets_next += 1;
            number
        };
        Ok(Prepared { batch, header, placement, epoch: None, ticket: Ticket { log, number, served: false } })
    }

    async fn append_prepared<L: Deref<Target = Self>>(&self, p: Prepared<S, L>) -> Result<AppendInfo, LogError> {
        let Prepared { mut batch, header, placement, epoch: stamp_epoch, mut ticket } = p;
        let (info, epoch) = loop {
            let step = {
                let mut s = self.state.borrow_mut();
                s.usable()?;
                if s.exclusive || s.allocating || s.tickets_serving != ticket.number {
                    Step::Wait
                } else {
                    let base = match placement {
                        Placement::Assign => s.next_offset,
                        Placement::Keep => {
                            let behind = header.base_offset < s.next_offset
                                || (header.version == BATCH_VERSION_V1 && header.base_offset != s.next_offset);
                            if behind {
                                // Dropping the ticket passes the turn on.
                                return Err(LogError::OffsetBehind {
                                    base_offset: header.base_offset,
                                    log_end: s.next_offset,
                                });
                            }
                            header.base_offset
                        }
                    };
                    let active_base = s.active.index.summary.base_offset;
                    if s.active.size_bytes() == 0
                        && base.0 + u64::from(header.last_offset_delta) - active_base.0 >= u64::from(u32::MAX)
                    {
                        // Offsets in a segment are relative to its base, in
                        // 32 bits: a batch placed this far ahead cannot go in.
                        return Err(LogError::GapTooLarge { base_offset: base, segment_base: active_base });
                    }
                    match self.next_step(&mut s, base, &header, batch.len()) {
                        None => {
                            let info = self.append_in_memory(
                                &mut s,
                                std::mem::take(&mut batch),
                                &header,
                                base,
                                placement,
                                stamp_epoch,
                            );
                            ticket.served = true;
                            s.advance_tickets();
                            let waiting = s.tickets_next != s.tickets_serving;
                            let epoch = s.truncations;
                            drop(s);
                            if waiting {
                                self.io_done.notify_all();
                            }
                            break (info, epoch);
                        }
                        Some(step) => step,
                    }
                }
            };
            match step {
                Step::Wait => self.io_done.notified().await,
                // Boxed: rolls are rare, and an append future (one task per
                // append) should not carry a roll's state all the time.
                Step::Roll => Box::pin(self.roll()).await?,
                Step::Allocate { target, needed } => self.allocate(target, needed).await?,
                Step::Flush => {
                    self.flush_step(false).await?;
                }
                Step::WaitMemory => self.pool.write_freed().await,
                Step::Again => {}
            }
        };
        let sync = self.cfg().flush == FlushPolicy::Always;
        self.wait_for(info.last_offset.next(), sync, Some((epoch, info))).await?;
        Ok(info)
    }

    /// What must happen before a batch of `len` bytes at `base` can be
    /// copied in, if anything. Runs at the batch's turn, with the state held.
    fn next_step(&self, s: &mut State<S::File>, base: Offset, header: &BatchHeader, len: usize) -> Option<Step> {
        let config = self.cfg();
        let active_size = s.active.size_bytes();
        let active_base = s.active.index.summary.base_offset;
        let aged = config.segment_ms_max.is_some_and(|max| self.storage.now_ms() - s.active.created_ms >= max);
        // Offsets in a segment are stored relative to its base, in 32 bits.
        let wraps = base.0 + u64::from(header.last_offset_delta) - active_base.0 >= u64::from(u32::MAX);
        if active_size > 0 && (active_size + len as u64 > config.segment_bytes_max || aged || wraps) {
            return Some(Step::Roll);
        }
        if !s.active.allocated_for(len) {
            let needed = align_up(active_size + len as u64);
            let step_max = config.preallocate_bytes_max;
            let step = s.active.allocated_bytes.clamp(PREALLOCATE_BYTES_MIN.min(step_max), step_max);
            let cap = align_up(config.segment_bytes_max).max(needed);
            s.allocating = true;
            return Some(Step::Allocate { target: (needed + step).min(cap), needed });
        }
        match s.active.room_for(len) {
            Room::Fits => None,
            Room::Full => Some(Step::Flush),
            Room::Grow(_) if s.active.grow(&self.pool, len) => Some(Step::Again),
            // The pool is spent. If this log holds some of it, its own
            // writes give it back; otherwise another log's will.
            Room::Grow(_) if s.active.unissued_bytes() > 0 || s.active.writes_in_flight() > 0 => Some(Step::Flush),
            Room::Grow(_) => Some(Step::WaitMemory),
        }
    }

    fn append_in_memory(
        &self,
        s: &mut State<S::File>,
        mut batch: Vec<u8>,
        header: &BatchHeader,
        base: Offset,
        placement: Placement,
        epoch: Option<LeaderEpoch>,
    ) -> AppendInfo {
        let next = base.plus(u64::from(header.last_offset_delta) + 1);
        let now = Timestamp(self.storage.now_ms());
        let (max_timestamp, append_time) = if placement == Placement::Assign {
            let log_append_time = self.cfg().timestamp_type == TimestampType::LogAppendTime;
            crate::batch::stamp(
                &mut batch,
                &Stamp {
                    base_offset: base,
                    leader_epoch: epoch.unwrap_or(s.leader_epoch),
                    append_time: now,
                    log_append_time,
                },
            );
            let stamped = BatchHeader::decode(&batch).expect("a checked batch stays valid when stamped");
            (stamped.effective_max_timestamp(), now)
        } else {
            (header.effective_max_timestamp(), super::scan::append_time_of(header, now))
        };
        let position = s.active.size_bytes();
        s.active.copy_in(&batch, next);
        let interval = self.cfg().index_interval_bytes;
        s.active.index.on_append(base, next, max_timestamp, append_time, position, batch.len() as u64, interval);
        s.active.first_append_ms.get_or_insert(append_time.0);
        s.next_offset = next;
        self.pool.cache_push(self.id, base, next, Bytes::from(batch));
        self.placed.notify_all();
        AppendInfo { base_offset: base, last_offset: Offset(next.0 - 1) }
    }

    /// Grows the active segment's file to `target` bytes. The caller set
    /// `allocating`; a full disk refuses this append and leaves the log
    /// usable, so the next append tries again.
    async fn allocate(&self, target: u64, needed: u64) -> Result<(), LogError> {
        debug_assert!(target.is_multiple_of(BLOCK_BYTES as u64) && needed <= target);
        let (file, base) = {
            let s = self.state.borrow();
            (s.active.file().clone(), s.active.index.summary.base_offset)
        };
        let guard = CancelGuard { log: self, pending: InFlight::Allocate };
        let mut target = target;
        let mut result = file.allocate(target).await;
        if result.as_ref().is_err_and(super::error::is_enospc) && needed < target {
            // No room for a whole step: the space this append needs may
            // still be there.
            target = needed;
            result = file.allocate(target).await;
        }
        guard.disarm();
        let result = {
            let mut s = self.state.borrow_mut();
            s.allocating = false;
            match result {
                Ok(()) => {
                    s.active.allocated_bytes = s.active.allocated_bytes.max(target);
                    s.stats.allocations += 1;
                    Ok(())
                }
                Err(e) => {
                    let e = LogError::io("allocate", log_path(&self.dir, base), e);
                    tracing::warn!(dir = %self.dir.display(), error = %e, "cannot grow the active segment");
                    Err(e)
                }
            }
        };
        self.io_done.notify_all();
        result
    }

    /// Waits until everything below `target` is written (and synced when
    /// `sync`), driving the I/O itself when no one else is. With `appended`,
    /// fails at once if a truncation removes that append meanwhile.
    pub(super) async fn wait_for(
        &self,
        target: Offset,
        sync: bool,
        appended: Option<(u64, AppendInfo)>,
    ) -> Result<(), LogError> {
        loop {
            let doomed = {
                let s = self.state.borrow();
                if let Some((epoch, info)) = appended
                    && s.truncated_since(epoch, info.last_offset)
                {
                    return Err(LogError::Truncated { base_offset: info.base_offset });
                }
                s.usable()?;
                // A truncation under way that will cut this batch: its own
                // flush may make the batch durable first, but it must not be
                // acknowledged (it learns `Truncated` once the cut is done).
                let doomed = appended.is_some_and(|(_, info)| s.pending_cut.is_some_and(|cut| info.last_offset >= cut));
                let reached = if sync { s.durable_offset } else { s.written_offset };
                if reached >= target && !doomed {
                    return Ok(());
                }
                doomed
            };
            if doomed {
                self.io_done.notified().await;
                continue;
            }
            if self.flush_step(sync).await? == Flushed::Idle {
                // Nothing is in flight or left to do, yet the target is not
                // reached: a truncation removed what was below it (appends
                // learn it above on the next turn; `sync` has nothing more
                // to make durable).
                let s = self.state.borrow();
                return match appended {
                    Some((epoch, info)) => {
                        // An append's data is written or in flight until it is
                        // acknowledged, so only a truncation gets here; if not,
                        // refusing the acknowledgement is the safe answer.
                        debug_assert!(s.truncated_since(epoch, info.last_offset), "an idle log lost an append");
                        Err(LogError::Truncated { base_offset: info.base_offset })
                    }
                    None => Ok(()),
                };
            }
        }
    }
}
