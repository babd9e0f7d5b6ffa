//! The read half: a pool of read-only connections that WAL lets run beside the writer.

use crate::rows::{self, db_error, select_events};
use async_trait::async_trait;
use homeroom_eventstore::subscription::CommitSignal;
use homeroom_eventstore::{EventReader, Position, RecordedEvent, StoreError, StreamId};
use sqlx::{Connection, SqliteConnection, SqlitePool};
use std::collections::HashMap;
use uuid::Uuid;

/// Streams asked for in one `stream_versions` statement (SQLite allows 32,766 variables;
/// this keeps each statement small and its plan cached).
const VERSIONS_CHUNK: usize = 500;

/// What subscriptions share with the store: the read pool and the commit signal.
///
/// A subscription holds an `Arc` of this (see [`crate::SqliteStore`]'s `subscribe_all`),
/// never the writer, so a forgotten subscription cannot keep the writer alive.
#[derive(Clone)]
pub(crate) struct Reader {
    pub(crate) pool: SqlitePool,
    pub(crate) signal: CommitSignal,
}

/// SQLite integers are `i64`; a limit or version past that reads "everything".
fn to_sql(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

#[async_trait]
impl EventReader for Reader {
    async fn read_stream(
        &self,
        stream: &StreamId,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(select_events!(
            "WHERE stream = ? AND version > ? ORDER BY version LIMIT ?"
        ))
        .bind(stream.as_str())
        .bind(to_sql(after_version))
        .bind(to_sql(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows::events(&rows)
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        // `commit` is always 0 here: the position alone is in commit order.
        let rows = sqlx::query(select_events!(
            "WHERE position > ? ORDER BY position LIMIT ?"
        ))
        .bind(to_sql(after.sequence))
        .bind(to_sql(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows::events(&rows)
    }

    async fn stream_versions(&self, streams: &[StreamId]) -> Result<Vec<u64>, StoreError> {
        let mut found: HashMap<String, u64> = HashMap::with_capacity(streams.len());
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        if streams.len() <= VERSIONS_CHUNK {
            versions_into(&mut conn, streams, &mut found).await?;
        } else {
            // Several statements, one snapshot: a read transaction.
            let mut tx = conn.begin().await.map_err(db_error)?;
            for chunk in streams.chunks(VERSIONS_CHUNK) {
                versions_into(&mut tx, chunk, &mut found).await?;
            }
            tx.commit().await.map_err(db_error)?;
        }
        Ok(streams
            .iter()
            .map(|s| found.get(s.as_str()).copied().unwrap_or(0))
            .collect())
    }

    async fn find_command(&self, command_id: Uuid) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(select_events!("WHERE command_id = ? ORDER BY position"))
            .bind(command_id.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows::events(&rows)
    }

    async fn head(&self) -> Result<Position, StoreError> {
        let max: Option<i64> = sqlx::query_scalar("SELECT MAX(position) FROM events")
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(Position::at(
            max.map_or(0, |p| u64::try_from(p).unwrap_or(0)),
        ))
    }
}

/// Adds the current version of each of `streams` that has events to `found`.
async fn versions_into(
    conn: &mut SqliteConnection,
    streams: &[StreamId],
    found: &mut HashMap<String, u64>,
) -> Result<(), StoreError> {
    let sql = format!(
        "SELECT stream, MAX(version) FROM events WHERE stream IN ({}) GROUP BY stream",
        vec!["?"; streams.len()].join(",")
    );
    let mut query = sqlx::query_as::<_, (String, i64)>(&sql);
    for stream in streams {
        query = query.bind(stream.as_str());
    }
    // Statements for one or a few streams recur (a command's facts); keep only those
    // prepared, so odd-sized lists do not churn the statement cache.
    let rows = query
        .persistent(streams.len() <= 8)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?;
    found.extend(
        rows.into_iter()
            .map(|(stream, version)| (stream, u64::try_from(version).unwrap_or(0))),
    );
    Ok(())
}
