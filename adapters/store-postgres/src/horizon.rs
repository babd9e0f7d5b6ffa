//! The one task per store that notifies subscribers of this process's commits and tells
//! waiting appends when the delivery horizon has passed them (see the crate docs on
//! appends and live delivery).
//!
//! A pooled append used to send its notification and check its deliverability itself,
//! on its own connection, after its commit. Done here instead, on one connection, for
//! every append of the process at once: one statement (`pg_notify` and the snapshot's
//! `xmin` together) covers every commit made before it was sent, and an append returns
//! its connection to the pool right after its insert instead of holding it while it
//! waits. Under load many appends share each round trip.

use homeroom_eventstore::subscription::CommitSignal;
use sqlx::postgres::{PgConnection, PgPool};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// The snapshot's `xmin` (every transaction below it has ended), and the notification of
/// every commit made before this statement.
const NOTIFY_AND_XMIN: &str =
    "SELECT pg_snapshot_xmin(pg_current_snapshot())::text FROM pg_notify($1, '')";

/// The snapshot's `xmin` alone, while appends wait but nothing new was committed.
const XMIN: &str = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text";

/// While waiting appends find the horizon stuck (behind an older transaction that will
/// not notify), it is re-read after this, doubling up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_micros(200);
const MAX_PAUSE: Duration = Duration::from_millis(20);

/// What appends and the task share.
#[derive(Debug)]
pub(crate) struct Horizon {
    /// The highest `xmin` read so far (0 before the first read).
    seen: watch::Sender<u64>,
    /// Commits made since the last notification was sent.
    unnotified: AtomicBool,
    /// Appends waiting for the horizon to pass them.
    waiting: AtomicUsize,
    /// Wakes the task.
    wake: Notify,
}

impl Horizon {
    fn new() -> Self {
        Self {
            seen: watch::channel(0).0,
            unnotified: AtomicBool::new(false),
            waiting: AtomicUsize::new(0),
            wake: Notify::new(),
        }
    }

    /// Called after a commit: subscribers are notified soon, whether or not anyone
    /// waits.
    pub(crate) fn committed(&self) {
        self.unnotified.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Called after a commit by transaction `tx_id`: notifies subscribers and waits (at
    /// most `patience`) until every transaction up to `tx_id` has ended, so `read_all`
    /// and `head` show what it wrote. `false` when the wait ran out.
    pub(crate) async fn committed_and_wait(&self, tx_id: u64, patience: Duration) -> bool {
        let mut seen = self.seen.subscribe();
        let _waiting = Waiting::register(self);
        self.committed();
        tokio::time::timeout(patience, seen.wait_for(|xmin| *xmin > tx_id))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// One waiting append, counted while it waits (also when its future is dropped).
struct Waiting<'a>(&'a Horizon);

impl<'a> Waiting<'a> {
    fn register(horizon: &'a Horizon) -> Self {
        horizon.waiting.fetch_add(1, Ordering::SeqCst);
        Self(horizon)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Starts the task, which runs until its handle is aborted (the store's `close` and
/// drop do that).
pub(crate) fn spawn(
    pool: PgPool,
    channel: String,
    signal: CommitSignal,
) -> (Arc<Horizon>, JoinHandle<()>) {
    let horizon = Arc::new(Horizon::new());
    let task = tokio::spawn(run(horizon.clone(), pool, channel, signal));
    (horizon, task)
}

async fn run(horizon: Arc<Horizon>, pool: PgPool, channel: String, signal: CommitSignal) {
    let mut others = signal.watch();
    // A connection of its own, detached from the pool so it never takes a writer's
    // place there.
    let mut conn: Option<PgConnection> = None;
    let mut pause = FIRST_PAUSE;
    loop {
        let notify = horizon.unnotified.swap(false, Ordering::SeqCst);
        let waiting = horizon.waiting.load(Ordering::SeqCst) > 0;
        if !notify && !waiting {
            horizon.wake.notified().await;
            continue;
        }
        if conn.is_none() {
            match pool.acquire().await {
                Ok(c) => conn = Some(c.detach()),
                Err(sqlx::Error::PoolClosed) => return,
                Err(err) => {
                    tracing::warn!(%channel, error = %err, "cannot reach PostgreSQL to notify subscribers");
                    horizon.unnotified.fetch_or(notify, Ordering::SeqCst);
                    tokio::time::sleep(MAX_PAUSE).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        // Marked seen before the read: a commit of another process notified after it
        // bumps the signal again, and the wait below wakes for it.
        others.borrow_and_update();
        let read = if notify {
            sqlx::query_scalar::<_, String>(NOTIFY_AND_XMIN)
                .bind(&channel)
                .fetch_one(&mut *c)
                .await
        } else {
            sqlx::query_scalar::<_, String>(XMIN)
                .fetch_one(&mut *c)
                .await
        };
        let xmin = match read.map(|text| text.parse::<u64>()) {
            Ok(Ok(xmin)) => xmin,
            Ok(Err(err)) => {
                tracing::warn!(%channel, error = %err, "unreadable snapshot xmin");
                continue;
            }
            Err(sqlx::Error::PoolClosed) => return,
            Err(err) => {
                tracing::warn!(%channel, error = %err, "cannot notify subscribers; retrying");
                horizon.unnotified.fetch_or(notify, Ordering::SeqCst);
                conn = None;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
                continue;
            }
        };
        let advanced = horizon.seen.send_if_modified(|seen| {
            let moved = xmin > *seen;
            *seen = (*seen).max(xmin);
            moved
        });
        if advanced {
            pause = FIRST_PAUSE;
        }
        // Appends still wait for an older transaction. If it is this process's, its
        // commit wakes us; another process's append notifies (the LISTEN signal);
        // anything else is polled for, ever less often.
        if horizon.waiting.load(Ordering::SeqCst) > 0 && !horizon.unnotified.load(Ordering::SeqCst)
        {
            tokio::select! {
                () = horizon.wake.notified() => {}
                _ = others.changed() => {}
                () = tokio::time::sleep(pause) => pause = (pause * 2).min(MAX_PAUSE),
            }
        }
    }
}
