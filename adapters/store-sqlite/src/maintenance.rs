//! The background tick: checkpoints off the commit path, and commits by other processes.
//!
//! Once per [`TICK`] it
//! - runs `PRAGMA wal_checkpoint(PASSIVE)`, copying committed pages from the WAL into the
//!   main file. A passive checkpoint never blocks the writer or readers, so its page
//!   copies and fsyncs stay out of the writer's commits (the writer's own automatic
//!   checkpoint is kept only as a safety net, at a much larger WAL; see
//!   [`WRITER_AUTOCHECKPOINT_PAGES`]);
//! - compares `PRAGMA data_version` with the last tick and raises the commit signal when
//!   the file changed. The writer raises the signal itself after each of its commits, so
//!   this only matters for commits made by *another process* on the same file (a CLI
//!   command, a second server by mistake): their events reach this process's
//!   subscribers within one tick. The check also fires after this process's own
//!   commits, which merely makes idle subscribers read once more.

use homeroom_eventstore::subscription::CommitSignal;
use sqlx::{Connection, SqliteConnection};
use std::time::Duration;
use tokio::sync::oneshot;

/// How often the tick runs.
pub(crate) const TICK: Duration = Duration::from_millis(250);

/// The WAL size (in pages) at which the writer checkpoints by itself, inside a commit.
/// Reached only if the tick falls far behind; SQLite's default is 1,000.
pub(crate) const WRITER_AUTOCHECKPOINT_PAGES: u32 = 16_000;

/// Runs until `stop` fires or its sender is dropped, then closes its connection (the last
/// connection to close checkpoints the whole WAL and removes it).
pub(crate) async fn run(
    mut conn: SqliteConnection,
    signal: CommitSignal,
    mut stop: oneshot::Receiver<()>,
) {
    let mut data_version: Option<i64> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        match sqlx::query_scalar::<_, i64>("PRAGMA data_version")
            .fetch_one(&mut conn)
            .await
        {
            Ok(now) => {
                if data_version.is_some_and(|before| before != now) {
                    signal.notify();
                }
                data_version = Some(now);
            }
            Err(error) => tracing::warn!(%error, "reading the SQLite data version failed"),
        }
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut conn)
            .await
        {
            tracing::warn!(%error, "the SQLite WAL checkpoint failed");
        }
    }
    if let Err(error) = conn.close().await {
        tracing::warn!(%error, "closing the SQLite maintenance connection failed");
    }
}
