//! The one `LISTEN` task per store that turns commit notifications into a
//! [`CommitSignal`], keeps waking subscribers while committed events wait behind an
//! older open transaction, and catches commits whose notification never came (see the
//! crate docs on lag and live delivery).

use crate::read::BELOW_XMIN;
use homeroom_eventstore::subscription::CommitSignal;
use sqlx::postgres::{PgListener, PgPool};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Whether committed events are stored but not yet deliverable: visible rows at or
/// above the snapshot's xmin.
const WAITING_ABOVE_XMIN: &str = "SELECT EXISTS (SELECT 1 FROM events \
     WHERE tx_id >= pg_snapshot_xmin(pg_current_snapshot()))";

/// The deliverable head, as text (`tx_id-seq`); no row for an empty log.
fn deliverable_head() -> String {
    format!(
        "SELECT e.tx_id::text || '-' || e.seq FROM events e WHERE {BELOW_XMIN} \
         ORDER BY e.tx_id DESC, e.seq DESC LIMIT 1"
    )
}

/// Starts listening on `channel` and returns once the first `LISTEN` is in place, so an
/// append made after [`crate::PgStore::connect`] returns is never missed.
pub(crate) async fn spawn(
    pool: PgPool,
    channel: String,
    signal: CommitSignal,
    lag_poll: Duration,
    idle_poll: Duration,
) -> Result<JoinHandle<()>, sqlx::Error> {
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(&channel).await?;
    Ok(tokio::spawn(run(
        listener, pool, channel, signal, lag_poll, idle_poll,
    )))
}

async fn run(
    mut listener: PgListener,
    pool: PgPool,
    channel: String,
    signal: CommitSignal,
    lag_poll: Duration,
    idle_poll: Duration,
) {
    // Armed after a commit: until no committed event waits above xmin, poll.
    let mut armed = false;
    // The deliverable head at the last idle check.
    let mut idle_head: Option<Option<String>> = None;
    let head_query = deliverable_head();
    loop {
        let wait = if armed { lag_poll } else { idle_poll };
        match tokio::time::timeout(wait, listener.try_recv()).await {
            Ok(Ok(Some(_notification))) => {
                armed = true;
                signal.notify();
            }
            // The connection was lost; the next `try_recv` reconnects and listens again.
            // Notifications sent meanwhile are gone, so wake everyone to re-read.
            Ok(Ok(None)) => {
                armed = true;
                signal.notify();
            }
            // The store was closed.
            Ok(Err(sqlx::Error::PoolClosed)) => return,
            Ok(Err(err)) => {
                tracing::warn!(%channel, error = %err, "event store LISTEN failed; retrying");
                armed = true;
                signal.notify();
                tokio::time::sleep(lag_poll).await;
            }
            Err(_elapsed) if armed => {
                // Check first, then wake: a subscriber woken now reads with a horizon
                // at least as new as the one checked, so disarming on "nothing waits"
                // cannot strand an event.
                let waiting = sqlx::query_scalar::<_, bool>(WAITING_ABOVE_XMIN)
                    .fetch_one(&pool)
                    .await
                    .unwrap_or(true);
                signal.notify();
                armed = waiting;
            }
            Err(_elapsed) => {
                // Appends notify right after committing; one whose process died in
                // between never did. Wake subscribers when the deliverable head moved
                // since the last idle check (its first time, too).
                match sqlx::query_scalar::<_, String>(&head_query)
                    .fetch_optional(&pool)
                    .await
                {
                    Ok(head) if idle_head.as_ref() != Some(&head) => {
                        idle_head = Some(head);
                        signal.notify();
                    }
                    Ok(_) => {}
                    Err(sqlx::Error::PoolClosed) => return,
                    Err(err) => {
                        tracing::warn!(%channel, error = %err, "cannot check the event log's head");
                    }
                }
            }
        }
    }
}
