//! One applier per PostgreSQL schema: the lease.
//!
//! Any number of processes may run [`ProjectionRuntime::run`] on one schema (API nodes,
//! `homeroom projections` runners). The lease is a session-level advisory lock held on
//! a connection of its own ([`crate::postgres`]); a session lock rather than a lease
//! row with an expiry because PostgreSQL itself ends it the moment the holder's
//! session does, with no clock, no renewal writes and no transaction id held (which
//! would hold back the event store's delivery horizon).
//!
//! - **Standby.** Tries the lease every `lease_retry`; meanwhile listens for the
//!   holder's checkpoint notifications and moves its own checkpoint watches, so
//!   `wait_for` (a query's `?min_position`) answers as promptly as on the holder.
//! - **Holder.** Runs the start-up rebuilds and the live loop, with every batch checking
//!   inside its transaction that the lease is still held by its session, and pings the
//!   lease connection every `lease_check`. When either finds the lease gone it stops
//!   applying at once (the batch in flight rolls back) and stands by again, letting
//!   two turns of `lease_retry` pass before its first try so a standby takes over.
//!
//! Exactly-once does not rest on the lease: every batch, on any process, re-reads its
//! checkpoints under the schema's write lock and commits with them. The lease makes
//! the others stand by instead of competing for that lock.

use super::{Inner, ProjectionRuntime};
use crate::error::ProjectionError;
use crate::postgres::{PgDb, PgLease};
use serde::Serialize;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// Whether this process applies the log, as [`ProjectionRuntime::lease`] and
/// [`crate::ProjectorStatus::lease`] report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    /// SQLite: there is no lease; a running runtime applies the log, taking turns with
    /// any other process on the file through SQLite's write lock.
    NotNeeded,
    /// PostgreSQL: this process holds the schema's lease and applies the log.
    Held,
    /// PostgreSQL: this process does not hold the lease (another does, or `run` is not
    /// running here). It answers queries and takes over when the holder goes.
    Standby,
}

/// Turns of `lease_retry` a holder that lost its lease waits before trying again, so a
/// standby (which tries every turn) takes over first.
const HEAD_START: u32 = 2;

/// Why a holder stopped applying.
enum Stop {
    Shutdown,
    LeaseLost,
}

/// Aborts a background task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ProjectionRuntime {
    /// Whether this process applies the log now.
    pub fn lease(&self) -> LeaseState {
        *self.inner.lease_state.borrow()
    }

    /// Every change of [`Self::lease`], for a caller that waits for a takeover or
    /// exports it.
    pub fn lease_changes(&self) -> watch::Receiver<LeaseState> {
        self.inner.lease_state.subscribe()
    }

    /// `run` on PostgreSQL: stand by until the lease is ours, apply until it is lost or
    /// `shutdown`, and stand by again after a loss.
    pub(super) async fn run_leased(
        &self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ProjectionError> {
        let inner = &*self.inner;
        let (Some(lease), Some(pg)) = (inner.lease.as_ref(), inner.db.postgres()) else {
            inner.live(shutdown, None).await;
            return Ok(());
        };
        let check = pg.config().lease_check;
        let mut shutdown = pin!(shutdown);
        let mut patience = 0;
        loop {
            let Some(pid) = inner.stand_by(lease, pg, patience, shutdown.as_mut()).await else {
                return Ok(());
            };
            inner.lease_state.send_replace(LeaseState::Held);
            tracing::info!(pid, "took the projection lease; applying the log");
            if let Err(error) = inner.refresh_checkpoints().await {
                tracing::warn!(%error, "reading checkpoints after taking the lease");
            }
            let background = match self.start_pending_rebuilds().await {
                Ok(task) => task.map(AbortOnDrop),
                Err(error) => {
                    lease.release().await;
                    inner.lease_state.send_replace(LeaseState::Standby);
                    return Err(error);
                }
            };
            let lost = async {
                loop {
                    tokio::time::sleep(check).await;
                    if !lease.alive().await {
                        break;
                    }
                }
            };
            let stop = async {
                tokio::select! {
                    () = &mut shutdown => Stop::Shutdown,
                    () = lost => Stop::LeaseLost,
                }
            };
            let ended = inner.live(stop, Some(pid)).await.unwrap_or(Stop::LeaseLost);
            // An unfinished start-up rebuild resumes from its own checkpoint under the
            // next holder.
            drop(background);
            lease.release().await;
            inner.lease_state.send_replace(LeaseState::Standby);
            match ended {
                Stop::Shutdown => return Ok(()),
                Stop::LeaseLost => {
                    tracing::warn!("lost the projection lease; standing by");
                    // Whatever cut this process off may strike again: give the
                    // standbys a head start.
                    patience = HEAD_START;
                }
            }
        }
    }
}

impl Inner {
    /// Stands by until this process takes the lease (`Some` of its session's backend
    /// id) or `shutdown` completes (`None`), keeping the checkpoint watches current.
    /// The first `patience` turns of `lease_retry` pass without trying.
    async fn stand_by(
        &self,
        lease: &PgLease,
        pg: &PgDb,
        mut patience: u32,
        mut shutdown: Pin<&mut (impl Future<Output = ()> + Send)>,
    ) -> Option<i32> {
        let wake = Arc::new(Notify::new());
        let _listening = AbortOnDrop(pg.listen(wake.clone()));
        let retry = pg.config().lease_retry;
        loop {
            if patience > 0 {
                patience -= 1;
            } else {
                match lease.try_acquire().await {
                    Ok(Some(pid)) => return Some(pid),
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%error, "cannot try the projection lease"),
                }
            }
            let mut tick = pin!(tokio::time::sleep(retry));
            loop {
                if let Err(error) = self.refresh_checkpoints().await {
                    tracing::warn!(%error, "reading the holder's checkpoints failed");
                }
                tokio::select! {
                    biased;
                    () = &mut shutdown => return None,
                    () = &mut tick => break,
                    () = wake.notified() => {}
                }
            }
        }
    }
}
