//! The log's disk I/O: taking writes from the write buffer, fdatasync,
//! and exclusive access for structural changes. Whoever waits for I/O drives
//! it (no background task), so the same code runs on glommio and on the
//! simulated disk.

use super::segment::{PendingWrite, log_path};
use super::{FlushPolicy, LogError, PartitionLog, State};
use crate::rt::{DmaFile, Storage};

/// Writes smaller than this wait one scheduler turn for more appends.
const COALESCE_BYTES_MAX: u64 = 64 << 10;

/// Writes in flight at once per log.
const WRITES_IN_FLIGHT_MAX: usize = 2;

/// What a cancelled I/O future leaves behind.
pub(super) enum InFlight {
    Write(u64),
    Sync,
    Allocate,
}

/// Poisons the log if the future driving an I/O is dropped before the I/O
/// completes: whether it reached the disk is then unknown, and the
/// bookkeeping that waits for it would otherwise wait forever. (Callers that
/// must not poison the log on cancellation run appends in their own task.)
pub(super) struct CancelGuard<'a, S: Storage> {
    pub log: &'a PartitionLog<S>,
    pub pending: InFlight,
}

impl<S: Storage> CancelGuard<'_, S> {
    pub fn disarm(self) {
        std::mem::forget(self);
    }
}

impl<S: Storage> Drop for CancelGuard<'_, S> {
    fn drop(&mut self) {
        let log = self.log;
        {
            let mut s = log.state.borrow_mut();
            match self.pending {
                InFlight::Write(end_bytes) => s.active.abandon_write(end_bytes),
                InFlight::Sync => s.sync_in_flight = false,
                InFlight::Allocate => s.allocating = false,
            }
            let cause = "an I/O was cancelled before it completed; its outcome is unknown";
            if s.poison(cause.into(), false) {
                tracing::error!(dir = %log.dir.display(), cause, "log poisoned");
            }
        }
        log.io_done.notify_all();
    }
}

enum IoAction<B> {
    Wait,
    Idle,
    Write(PendingWrite<B>),
    Sync,
}

/// What a [`PartitionLog::flush_step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flushed {
    /// Some I/O started or landed: look again.
    Moved,
    /// Nothing is in flight and nothing is left to write or sync.
    Idle,
}

impl<S: Storage> PartitionLog<S> {
    /// Writes and syncs everything appended so far.
    pub async fn sync(&self) -> Result<(), LogError> {
        let target = self.log_end_offset();
        self.wait_for(target, true, None).await
    }

    /// Syncs if the `IntervalMs` deadline has passed and data is unsynced;
    /// the owner's timer calls this.
    pub async fn sync_if_due(&self) -> Result<(), LogError> {
        let due = {
            let s = self.state.borrow();
            s.usable()?;
            match self.cfg().flush {
                FlushPolicy::IntervalMs(ms) => {
                    s.durable_offset < s.next_offset && self.storage.now_ms() - s.last_sync_ms >= ms as i64
                }
                FlushPolicy::Always | FlushPolicy::Never => false,
            }
        };
        if due { self.sync().await } else { Ok(()) }
    }

    fn sync_wanted(&self, s: &State<S::File>, sync: bool) -> bool {
        sync || match self.cfg().flush {
            FlushPolicy::Always => true,
            FlushPolicy::IntervalMs(ms) => self.storage.now_ms() - s.last_sync_ms >= ms as i64,
            FlushPolicy::Never => false,
        }
    }

    /// Moves the log's I/O on by one step: starts an fdatasync, or a write
    /// (up to `WRITES_IN_FLIGHT_MAX` at once, so the appends one write
    /// acknowledges refill the buffer while the next is on the device), or
    /// waits for one in flight to land. Appends that arrive meanwhile join
    /// the next write and the next sync: group commit.
    pub(super) async fn flush_step(&self, sync: bool) -> Result<Flushed, LogError> {
        let coalesce = {
            let s = self.state.borrow();
            s.usable()?;
            let unissued = s.active.unissued_bytes();
            !s.exclusive && s.active.writes_in_flight() == 0 && unissued > 0 && unissued < COALESCE_BYTES_MAX
        };
        if coalesce {
            // A small write costs a whole device round trip: let the tasks
            // that are ready to append do so first and share it.
            super::notify::yield_now().await;
        }
        let action = {
            let mut s = self.state.borrow_mut();
            s.usable()?;
            if s.exclusive {
                IoAction::Wait
            } else if self.sync_wanted(&s, sync) && !s.sync_in_flight && s.unsynced() {
                s.sync_in_flight = true;
                IoAction::Sync
            } else {
                let unsynced_max = (self.cfg().flush == FlushPolicy::Always).then(|| self.cfg().unsynced_bytes_max());
                match s.active.try_take_write(WRITES_IN_FLIGHT_MAX, unsynced_max) {
                    Some(p) => IoAction::Write(p),
                    None if s.active.writes_in_flight() == 0
                        && !s.sync_in_flight
                        && !s.allocating
                        && s.active.unissued_bytes() == 0 =>
                    {
                        IoAction::Idle
                    }
                    None => IoAction::Wait,
                }
            }
        };
        match action {
            IoAction::Wait => {
                self.io_done.notified().await;
                Ok(Flushed::Moved)
            }
            IoAction::Idle => Ok(Flushed::Idle),
            IoAction::Write(p) => self.write_chunk(p).await.map(|()| Flushed::Moved),
            IoAction::Sync => self.sync_now().await.map(|()| Flushed::Moved),
        }
    }

    /// Writes one taken chunk and records what landed; its buffer goes back
    /// to the pool once the write is done.
    pub(super) async fn write_chunk(&self, p: PendingWrite<<S::File as DmaFile>::Buf>) -> Result<(), LogError> {
        let (file, base) = {
            let s = self.state.borrow();
            (s.active.file().clone(), s.active.index.summary.base_offset)
        };
        let PendingWrite { buf, len, pos, end_bytes, reservation } = p;
        let guard = CancelGuard { log: self, pending: InFlight::Write(end_bytes) };
        let result =
            file.write_at(buf, len, pos).await.map_err(|e| LogError::io("write", log_path(&self.dir, base), e));
        guard.disarm();
        drop(reservation);
        {
            let mut s = self.state.borrow_mut();
            match &result {
                Ok(()) => {
                    let written = s.active.finish_write(end_bytes);
                    // After a failed write the log is poisoned: what landed
                    // behind the failure must not become readable.
                    if let (Some(written), None) = (written, &s.poisoned) {
                        s.written_offset = written;
                    }
                    s.stats.writes += 1;
                    s.stats.bytes_written += len as u64;
                }
                Err(e) => {
                    s.active.abandon_write(end_bytes);
                    self.poison(&mut s, e);
                }
            }
        }
        self.io_done.notify_all();
        result
    }

    /// fdatasync of the active segment, covering every write landed so far.
    /// The caller has set `sync_in_flight`.
    pub(super) async fn sync_now(&self) -> Result<(), LogError> {
        let (file, base, written, written_bytes) = {
            let s = self.state.borrow();
            (s.active.file().clone(), s.active.index.summary.base_offset, s.written_offset, s.active.written_bytes)
        };
        let now = self.storage.now_ms();
        let started = self.storage.instant();
        let guard = CancelGuard { log: self, pending: InFlight::Sync };
        let result = file.fdatasync().await.map_err(|e| LogError::sync_failed(log_path(&self.dir, base), e));
        guard.disarm();
        {
            let mut s = self.state.borrow_mut();
            s.sync_in_flight = false;
            match &result {
                Ok(()) => {
                    s.durable_offset = s.durable_offset.max(written);
                    s.active.durable_bytes = s.active.durable_bytes.max(written_bytes);
                    s.last_sync_ms = now;
                    s.stats.fdatasyncs += 1;
                    s.fdatasync_latency.record(self.storage.instant().saturating_duration_since(started));
                }
                Err(e) => self.poison(&mut s, e),
            }
        }
        self.io_done.notify_all();
        result
    }

    /// Takes the log for an operation that rewrites its structure (roll,
    /// truncate, close): no new write, sync or allocation starts, and the
    /// I/O in flight lands first. With `quiet_retention`, a retention pass
    /// must also be done (truncation and close remove or finish segments it
    /// may be deleting; a roll only adds one at the end, so appends that need
    /// a roll do not wait for retention's deletes).
    pub(super) async fn acquire_exclusive(&self, quiet_retention: bool) -> Result<(), LogError> {
        self.take_exclusive(true).await?;
        self.io_quiet(quiet_retention).await;
        let usable = self.state.borrow().usable();
        if usable.is_err() {
            self.release_exclusive(None);
        }
        usable
    }

    /// Sets the exclusive flag once no one else holds it (a roll or
    /// truncation in progress finishes first); with `usable`, fails instead
    /// if the log is closed or poisoned meanwhile.
    pub(super) async fn take_exclusive(&self, usable: bool) -> Result<(), LogError> {
        loop {
            {
                let mut s = self.state.borrow_mut();
                if usable {
                    s.usable()?;
                }
                if !s.exclusive {
                    s.exclusive = true;
                    return Ok(());
                }
            }
            self.io_done.notified().await;
        }
    }

    /// Waits until no write, sync or allocation (and, with `retention`, no
    /// retention pass) is in flight.
    pub(super) async fn io_quiet(&self, retention: bool) {
        loop {
            {
                let s = self.state.borrow();
                let busy = s.active.writes_in_flight() > 0
                    || s.sync_in_flight
                    || s.allocating
                    || (retention && s.retention_running);
                if !busy {
                    return;
                }
            }
            self.io_done.notified().await;
        }
    }

    /// Gives the log back; `error`, unless it only says the disk was full
    /// (the operation can be tried again), poisons it.
    pub(super) fn release_exclusive(&self, error: Option<&LogError>) {
        {
            let mut s = self.state.borrow_mut();
            s.exclusive = false;
            if let Some(e) = error
                && !matches!(e, LogError::DiskFull { .. })
            {
                self.poison(&mut s, e);
            }
        }
        self.io_done.notify_all();
    }

    /// Writes everything buffered, then syncs if asked for or if the policy
    /// is `Always`. Runs with the log held exclusively; keeps the bound on
    /// unsynced bytes by syncing between writes when needed.
    pub(super) async fn flush_all_locked(&self, sync: bool) -> Result<(), LogError> {
        let always = self.cfg().flush == FlushPolicy::Always;
        let unsynced_max = always.then(|| self.cfg().unsynced_bytes_max());
        loop {
            let (pending, unissued) = {
                let mut s = self.state.borrow_mut();
                let pending = s.active.try_take_write(1, unsynced_max);
                (pending, s.active.unissued_bytes())
            };
            match pending {
                Some(p) => self.write_chunk(p).await?,
                None if unissued == 0 => break,
                None => self.sync_locked().await?,
            }
        }
        if sync || always {
            self.sync_locked().await?;
        }
        Ok(())
    }

    /// An fdatasync if anything is unsynced, with the log held exclusively.
    pub(super) async fn sync_locked(&self) -> Result<(), LogError> {
        let needed = {
            let mut s = self.state.borrow_mut();
            let needed = s.unsynced();
            s.sync_in_flight = needed;
            needed
        };
        if needed { self.sync_now().await } else { Ok(()) }
    }
}
