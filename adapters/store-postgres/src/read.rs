//! The reader port: stream reads, the gap-free global read, versions, commands, head.

use crate::error::store_error;
use crate::PgStore;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use homeroom_eventstore::{
    EventMetadata, EventReader, Position, RecordedEvent, StoreError, StreamId,
};
use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;

/// The columns every event read selects from `events e`, in the shape [`decode`] expects.
///
/// The transaction id comes out as text (sqlx has no `xid8` type) under an alias that
/// is *not* a column name: `ORDER BY tx_id` would otherwise sort by the text output
/// column, putting transaction 100000 before 99999.
pub(crate) const COLUMNS: &str = "e.tx_id::text AS commit_text, e.seq, e.event_id, e.stream, \
     e.version, e.event_type, e.schema_version, e.data, e.metadata, e.recorded_at, \
     e.prev_hash, e.hash";

/// The deliverable part of the log (`events e`): rows of transactions that ended before
/// every transaction still running when this statement's snapshot was taken.
pub(crate) const BELOW_XMIN: &str = "e.tx_id < pg_snapshot_xmin(pg_current_snapshot())";

/// Parses an `xid8` read as text.
pub(crate) fn parse_xid(text: &str) -> Result<u64, String> {
    text.parse::<u64>()
        .map_err(|e| format!("transaction id {text:?}: {e}"))
}

/// Turns a stored row back into an event; any malformed field is
/// [`StoreError::Corrupt`], naming the row.
pub(crate) fn decode(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let stream: String = row.try_get("stream").map_err(store_error)?;
    let version: i64 = row.try_get("version").map_err(store_error)?;
    let corrupt = |reason: String| StoreError::Corrupt {
        stream: stream.clone(),
        version: u64::try_from(version).unwrap_or(0),
        reason,
    };
    let field = |name: &str, e: sqlx::Error| corrupt(format!("{name}: {e}"));

    let tx_id: String = row.try_get("commit_text").map_err(|e| field("tx_id", e))?;
    let seq: i64 = row.try_get("seq").map_err(|e| field("seq", e))?;
    let schema_version: i64 = row
        .try_get("schema_version")
        .map_err(|e| field("schema_version", e))?;
    let metadata: serde_json::Value = row.try_get("metadata").map_err(|e| field("metadata", e))?;
    Ok(RecordedEvent {
        event_id: row
            .try_get::<Uuid, _>("event_id")
            .map_err(|e| field("event_id", e))?,
        stream: StreamId::parse(stream.as_str()).map_err(|e| corrupt(format!("stream: {e}")))?,
        version: u64::try_from(version).map_err(|e| corrupt(format!("version: {e}")))?,
        position: Position {
            commit: parse_xid(&tx_id).map_err(corrupt)?,
            sequence: u64::try_from(seq).map_err(|e| corrupt(format!("seq: {e}")))?,
        },
        event_type: row
            .try_get("event_type")
            .map_err(|e| field("event_type", e))?,
        schema_version: u32::try_from(schema_version)
            .map_err(|e| corrupt(format!("schema_version: {e}")))?,
        data: row.try_get("data").map_err(|e| field("data", e))?,
        metadata: serde_json::from_value::<EventMetadata>(metadata)
            .map_err(|e| corrupt(format!("metadata: {e}")))?,
        recorded_at: row
            .try_get::<DateTime<Utc>, _>("recorded_at")
            .map_err(|e| field("recorded_at", e))?,
        prev_hash: row
            .try_get("prev_hash")
            .map_err(|e| field("prev_hash", e))?,
        hash: row.try_get("hash").map_err(|e| field("hash", e))?,
    })
}

fn decode_all(rows: &[PgRow]) -> Result<Vec<RecordedEvent>, StoreError> {
    rows.iter().map(decode).collect()
}

/// A `LIMIT` from a `usize` (PostgreSQL takes a signed 64-bit count).
fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A version bound from a `u64`, saturating: no stream reaches `i64::MAX` events.
fn version_bound(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[async_trait]
impl EventReader for PgStore {
    async fn read_stream(
        &self,
        stream: &StreamId,
        after_version: u64,
        limit_to: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM events e WHERE e.stream = $1 AND e.version > $2 \
             ORDER BY e.version LIMIT $3"
        ))
        .bind(stream.as_str())
        .bind(version_bound(after_version))
        .bind(limit(limit_to))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(store_error)?;
        decode_all(&rows)
    }

    async fn read_all(
        &self,
        after: Position,
        limit_to: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        // A sequence beyond i64 cannot exist; saturating keeps the bound exclusive.
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM events e \
             WHERE (e.tx_id, e.seq) > ($1::text::xid8, $2) AND {BELOW_XMIN} \
             ORDER BY e.tx_id, e.seq LIMIT $3"
        ))
        .bind(after.commit.to_string())
        .bind(version_bound(after.sequence))
        .bind(limit(limit_to))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(store_error)?;
        decode_all(&rows)
    }

    async fn stream_versions(&self, streams: &[StreamId]) -> Result<Vec<u64>, StoreError> {
        let names: Vec<&str> = streams.iter().map(StreamId::as_str).collect();
        let versions: Vec<i64> = sqlx::query_scalar(
            "SELECT COALESCE((SELECT max(e.version) FROM events e WHERE e.stream = s.name), 0) \
             FROM unnest($1::text[]) WITH ORDINALITY AS s(name, ord) ORDER BY s.ord",
        )
        .bind(&names)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(store_error)?;
        Ok(versions
            .into_iter()
            .map(|v| u64::try_from(v).unwrap_or(0))
            .collect())
    }

    async fn find_command(&self, command_id: Uuid) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM events e WHERE e.command_id = $1 ORDER BY e.tx_id, e.seq"
        ))
        .bind(command_id)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(store_error)?;
        decode_all(&rows)
    }

    async fn head(&self) -> Result<Position, StoreError> {
        let row: Option<(String, i64)> = sqlx::query_as(&format!(
            "SELECT e.tx_id::text AS commit_text, e.seq FROM events e WHERE {BELOW_XMIN} \
             ORDER BY e.tx_id DESC, e.seq DESC LIMIT 1"
        ))
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(store_error)?;
        match row {
            None => Ok(Position::START),
            Some((tx_id, seq)) => Ok(Position {
                commit: parse_xid(&tx_id).map_err(|reason| StoreError::Corrupt {
                    stream: String::new(),
                    version: 0,
                    reason,
                })?,
                sequence: u64::try_from(seq).unwrap_or(0),
            }),
        }
    }
}
