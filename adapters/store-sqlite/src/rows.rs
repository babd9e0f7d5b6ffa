//! Stored rows back into recorded events, and the text forms events are stored in.

use chrono::{DateTime, Utc};
use homeroom_eventstore::{Position, RecordedEvent, StoreError, StreamId};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

/// A `SELECT` of every column [`event`] reads, in its order, followed by `$rest`.
macro_rules! select_events {
    ($rest:literal) => {
        concat!(
            "SELECT position, event_id, stream, version, event_type, schema_version, data, \
             metadata, recorded_at, prev_hash, hash FROM events ",
            $rest
        )
    };
}
pub(crate) use select_events;

/// How `recorded_at` is stored: RFC 3339, UTC, microseconds (what the hash covers).
pub(crate) fn format_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Maps a driver error: a closed pool means the store was closed, anything else means
/// the file could not be used.
pub(crate) fn db_error(err: sqlx::Error) -> StoreError {
    match err {
        sqlx::Error::PoolClosed => StoreError::Closed,
        other => StoreError::unavailable(other),
    }
}

/// Turns every row of a read into events, stopping at the first unreadable one.
///
/// # Errors
/// See [`event`].
pub(crate) fn events(rows: &[SqliteRow]) -> Result<Vec<RecordedEvent>, StoreError> {
    rows.iter().map(event).collect()
}

/// One row (selected with [`select_events!`]) as a recorded event. A row that does not
/// decode is reported, never skipped: skipping would silently break the hash chain and
/// the gap-free promise of `read_all`.
///
/// # Errors
/// [`StoreError::Corrupt`] for a row whose values are not what the store writes;
/// [`StoreError::Unavailable`] when the driver fails.
pub(crate) fn event(row: &SqliteRow) -> Result<RecordedEvent, StoreError> {
    let stream: String = row.try_get(2).map_err(|e| decode("?", 0, e))?;
    let version: i64 = row.try_get(3).map_err(|e| decode(&stream, 0, e))?;
    let version = u64::try_from(version).map_err(|_| StoreError::Corrupt {
        stream: stream.clone(),
        version: 0,
        reason: format!("negative version {version}"),
    })?;
    let corrupt = |reason: String| StoreError::Corrupt {
        stream: stream.clone(),
        version,
        reason,
    };
    let column = |index: usize| -> Result<String, StoreError> {
        row.try_get::<String, _>(index)
            .map_err(|e| decode(&stream, version, e))
    };
    let integer = |index: usize| -> Result<i64, StoreError> {
        row.try_get::<i64, _>(index)
            .map_err(|e| decode(&stream, version, e))
    };
    let position = u64::try_from(integer(0)?).map_err(|e| corrupt(format!("position: {e}")))?;
    let schema_version =
        u32::try_from(integer(5)?).map_err(|e| corrupt(format!("schema version: {e}")))?;
    let event_id = column(1)?
        .parse()
        .map_err(|e| corrupt(format!("event id: {e}")))?;
    let recorded_at = DateTime::parse_from_rfc3339(&column(8)?)
        .map_err(|e| corrupt(format!("recorded_at: {e}")))?
        .with_timezone(&Utc);
    Ok(RecordedEvent {
        event_id,
        stream: StreamId::parse(stream.as_str()).map_err(|e| corrupt(e.to_string()))?,
        version,
        position: Position::at(position),
        event_type: column(4)?,
        schema_version,
        data: serde_json::from_str(&column(6)?).map_err(|e| corrupt(format!("data: {e}")))?,
        metadata: serde_json::from_str(&column(7)?)
            .map_err(|e| corrupt(format!("metadata: {e}")))?,
        recorded_at,
        prev_hash: column(9)?,
        hash: column(10)?,
    })
}

/// A column that does not decode is corruption; any other driver error is not.
fn decode(stream: &str, version: u64, err: sqlx::Error) -> StoreError {
    match err {
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => StoreError::Corrupt {
            stream: stream.to_owned(),
            version,
            reason: err.to_string(),
        },
        other => db_error(other),
    }
}
