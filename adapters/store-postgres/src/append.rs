//! The appender port: head read, hash chain, one-statement batch insert, conflict and
//! idempotency handling.

use crate::error::{store_error, unique_violation, DuplicateEventId, OutOfOrderAppend, UniqueKey};
use crate::read::parse_xid;
use crate::PgStore;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use homeroom_eventstore::hash::{self, HashInput};
use homeroom_eventstore::{
    AppendResult, EventAppender, ExpectedVersion, NewEvent, Position, StoreError, StreamId,
};
use sqlx::{PgConnection, Row};
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// How often an [`ExpectedVersion::Any`] append retries after losing a race for the
/// same version before it reports the conflict (each loss means another writer won).
const MAX_ATTEMPTS: u32 = 64;

/// The stream's head, and whether the batch was already recorded, in one round trip.
const READ_HEAD: &str = "\
SELECT (SELECT f.batch_end FROM events f WHERE f.event_id = $1 AND f.stream = $2) AS original_end,
       h.version, h.hash, h.tx_id::text AS head_commit_text
FROM (SELECT 1) AS one
LEFT JOIN LATERAL (
    SELECT version, hash, tx_id FROM events WHERE stream = $2 ORDER BY version DESC LIMIT 1
) AS h ON true";

/// The whole batch in one statement, which is also the transaction of a pooled append:
/// the rows, in version order (so `seq` follows `version`), and the commit notification.
///
/// The `WHERE` refuses to insert when this transaction is older than the one that
/// wrote the stream's head (only possible through [`PgStore::append_in`] with a
/// transaction that got its id early); `last_seq` is then NULL.
const INSERT: &str = "\
WITH ins AS (
    INSERT INTO events (event_id, stream, version, event_type, schema_version, data, metadata,
                        command_id, recorded_at, prev_hash, hash, batch_end)
    SELECT u.event_id, $1, u.version, u.event_type, u.schema_version, u.data::json,
           u.metadata::json, u.command_id, $2, u.prev_hash, u.hash, $3
    FROM unnest($4::uuid[], $5::bigint[], $6::text[], $7::bigint[], $8::text[], $9::text[],
                $10::uuid[], $11::text[], $12::text[])
         WITH ORDINALITY AS u(event_id, version, event_type, schema_version, data, metadata,
                              command_id, prev_hash, hash, ord)
    WHERE pg_current_xact_id() >= $13::text::xid8
    ORDER BY u.ord
    RETURNING seq
)
SELECT (SELECT max(seq) FROM ins) AS last_seq, pg_current_xact_id()::text AS commit_text
FROM pg_notify($14, '')";

/// Whether a transaction has ended and every older one too: its rows are deliverable.
const DELIVERABLE: &str = "SELECT pg_snapshot_xmin(pg_current_snapshot()) > $1::text::xid8";

/// What [`READ_HEAD`] found.
struct Head {
    /// The last version of the stored batch that starts with this batch's first id.
    original_end: Option<i64>,
    version: u64,
    hash: String,
    /// The transaction that wrote the head (0 for an empty stream).
    tx_id: u64,
}

/// One try at an append.
enum Attempt {
    /// Recorded now, or recorded before (idempotent re-append).
    Done(AppendResult),
    /// The insert hit a unique key: someone else won a race.
    Collided(UniqueKey),
}

/// A batch's text fields, serialised once however often the append is retried.
struct Prepared<'a> {
    events: &'a [NewEvent],
    data: Vec<String>,
    metadata: Vec<String>,
}

impl<'a> Prepared<'a> {
    fn new(events: &'a [NewEvent]) -> Result<Self, StoreError> {
        let metadata = events
            .iter()
            .map(|e| serde_json::to_string(&e.metadata))
            .collect::<Result<_, _>>()
            .map_err(StoreError::unavailable)?;
        Ok(Self {
            events,
            data: events.iter().map(|e| e.data.to_string()).collect(),
            metadata,
        })
    }

    fn first_id(&self) -> Uuid {
        self.events[0].event_id
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn corrupt_head(stream: &StreamId, reason: String) -> StoreError {
    StoreError::Corrupt {
        stream: stream.to_string(),
        version: 0,
        reason,
    }
}

async fn read_head(
    conn: &mut PgConnection,
    stream: &StreamId,
    first_id: Uuid,
) -> Result<Head, StoreError> {
    let row = sqlx::query(READ_HEAD)
        .bind(first_id)
        .bind(stream.as_str())
        .fetch_one(&mut *conn)
        .await
        .map_err(store_error)?;
    let get_err = |e: sqlx::Error| corrupt_head(stream, e.to_string());
    let version: Option<i64> = row.try_get("version").map_err(get_err)?;
    let hash: Option<String> = row.try_get("hash").map_err(get_err)?;
    let tx_id: Option<String> = row.try_get("head_commit_text").map_err(get_err)?;
    Ok(Head {
        original_end: row.try_get("original_end").map_err(get_err)?,
        version: version.map_or(0, |v| u64::try_from(v).unwrap_or(0)),
        hash: hash.unwrap_or_else(|| hash::GENESIS.to_owned()),
        tx_id: match tx_id {
            Some(text) => parse_xid(&text).map_err(|r| corrupt_head(stream, r))?,
            None => 0,
        },
    })
}

/// The result the stored batch ending at `end` was recorded with.
async fn original_result(
    conn: &mut PgConnection,
    stream: &StreamId,
    end: i64,
) -> Result<AppendResult, StoreError> {
    let (tx_id, seq): (String, i64) = sqlx::query_as(
        "SELECT tx_id::text AS commit_text, seq FROM events WHERE stream = $1 AND version = $2",
    )
    .bind(stream.as_str())
    .bind(end)
    .fetch_one(&mut *conn)
    .await
    .map_err(store_error)?;
    Ok(AppendResult {
        version: u64::try_from(end).unwrap_or(0),
        position: Position {
            commit: parse_xid(&tx_id).map_err(|r| corrupt_head(stream, r))?,
            sequence: u64::try_from(seq).unwrap_or(0),
        },
    })
}

/// Reads the head, checks idempotency and the expectation, and inserts the batch.
async fn attempt(
    conn: &mut PgConnection,
    channel: &str,
    stream: &StreamId,
    expected: ExpectedVersion,
    batch: &Prepared<'_>,
) -> Result<Attempt, StoreError> {
    let head = read_head(conn, stream, batch.first_id()).await?;
    if let Some(end) = head.original_end {
        return original_result(conn, stream, end).await.map(Attempt::Done);
    }
    if !expected.admits(head.version) {
        return Err(StoreError::Conflict {
            stream: stream.clone(),
            expected,
            actual: head.version,
        });
    }

    let recorded_at: DateTime<Utc> = hash::storable_time(Utc::now());
    let n = batch.events.len();
    let (mut versions, mut prev_hashes, mut hashes) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut prev = head.hash;
    for (i, event) in batch.events.iter().enumerate() {
        let version = head.version + 1 + i as u64;
        let hash = hash::chain_hash(HashInput {
            prev_hash: &prev,
            stream,
            version,
            event_id: event.event_id,
            event_type: &event.event_type,
            schema_version: event.schema_version,
            data: &event.data,
            metadata: &event.metadata,
            recorded_at,
        });
        versions.push(to_i64(version));
        prev_hashes.push(std::mem::replace(&mut prev, hash.clone()));
        hashes.push(hash);
    }
    let last_version = head.version + n as u64;

    let inserted = sqlx::query(INSERT)
        .bind(stream.as_str())
        .bind(recorded_at)
        .bind(to_i64(last_version))
        .bind(batch.events.iter().map(|e| e.event_id).collect::<Vec<_>>())
        .bind(&versions)
        .bind(
            batch
                .events
                .iter()
                .map(|e| e.event_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            batch
                .events
                .iter()
                .map(|e| i64::from(e.schema_version))
                .collect::<Vec<_>>(),
        )
        .bind(&batch.data)
        .bind(&batch.metadata)
        .bind(
            batch
                .events
                .iter()
                .map(|e| e.metadata.command_id)
                .collect::<Vec<_>>(),
        )
        .bind(&prev_hashes)
        .bind(&hashes)
        .bind(head.tx_id.to_string())
        .bind(channel)
        .fetch_one(&mut *conn)
        .await;
    let row = match inserted {
        Ok(row) => row,
        Err(err) => {
            return match unique_violation(&err) {
                Some(key) => Ok(Attempt::Collided(key)),
                None => Err(store_error(err)),
            }
        }
    };
    let get_err = |e: sqlx::Error| corrupt_head(stream, e.to_string());
    let tx_text: String = row.try_get("commit_text").map_err(get_err)?;
    let tx_id = parse_xid(&tx_text).map_err(|r| corrupt_head(stream, r))?;
    let Some(last_seq) = row.try_get::<Option<i64>, _>("last_seq").map_err(get_err)? else {
        return Err(StoreError::unavailable(OutOfOrderAppend {
            stream: stream.clone(),
            tx_id,
            head_tx_id: head.tx_id,
        }));
    };
    Ok(Attempt::Done(AppendResult {
        version: last_version,
        position: Position {
            commit: tx_id,
            sequence: u64::try_from(last_seq).unwrap_or(0),
        },
    }))
}

impl PgStore {
    /// Appends inside the caller's transaction (or on any connection of
    /// [`PgStore::pool`]), so events can be recorded atomically with other writes; the
    /// commit notification is sent when the caller commits.
    ///
    /// Same contract as [`EventAppender::append`], with two differences that follow from
    /// not owning the transaction:
    /// - losing a race for a version (or for an event id) aborts the caller's
    ///   transaction, so it is reported as [`StoreError::Conflict`] even for
    ///   [`ExpectedVersion::Any`] (and even when the winner was this very batch): roll
    ///   back and retry in a new transaction, where an idempotent retry finds the
    ///   original result;
    /// - delivery order must follow stream order, so the transaction may not have
    ///   obtained its id (by writing anything, here or elsewhere) before the stream's
    ///   latest event was committed. Append first, or in a fresh transaction; otherwise
    ///   nothing is recorded and the error wraps [`OutOfOrderAppend`].
    ///
    /// While the transaction stays open, every event committed after it got its id waits
    /// to be delivered (see the crate docs on lag): keep it short.
    ///
    /// # Errors
    /// As [`EventAppender::append`]; on any error, roll the transaction back.
    pub async fn append_in(
        &self,
        conn: &mut PgConnection,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        if events.is_empty() {
            return Err(StoreError::EmptyAppend);
        }
        let batch = Prepared::new(&events)?;
        match attempt(conn, &self.inner.channel, stream, expected, &batch).await? {
            Attempt::Done(result) => Ok(result),
            Attempt::Collided(key) => {
                // The caller's transaction is aborted: look from outside it.
                let mut fresh = self.inner.pool.acquire().await.map_err(store_error)?;
                let head = read_head(&mut fresh, stream, batch.first_id()).await?;
                if key == UniqueKey::EventId && head.original_end.is_none() {
                    return Err(StoreError::unavailable(DuplicateEventId {
                        stream: stream.clone(),
                        first_event_id: batch.first_id(),
                    }));
                }
                Err(StoreError::Conflict {
                    stream: stream.clone(),
                    expected,
                    actual: head.version,
                })
            }
        }
    }
}

impl PgStore {
    /// Waits (at most [`crate::PgStoreConfig::deliverable_wait`]) until transaction
    /// `tx_id` is below the horizon, so `read_all` and `head` show what it wrote.
    ///
    /// Never fails: the append is committed by now, and reporting an error would only
    /// make the caller retry something that succeeded.
    async fn wait_deliverable(&self, conn: &mut PgConnection, tx_id: u64) {
        let wait = self.inner.deliverable_wait;
        if wait.is_zero() {
            return;
        }
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_micros(200);
        loop {
            let below = sqlx::query_scalar::<_, bool>(DELIVERABLE)
                .bind(tx_id.to_string())
                .fetch_one(&mut *conn)
                .await;
            match below {
                Ok(true) => return,
                Ok(false) if Instant::now() < deadline => {}
                Ok(false) => {
                    tracing::debug!(
                        tx_id,
                        ?wait,
                        "appended events wait behind an older open transaction"
                    );
                    return;
                }
                Err(err) => {
                    tracing::warn!(tx_id, error = %err, "cannot check that an append is deliverable");
                    return;
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

#[async_trait]
impl EventAppender for PgStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        if events.is_empty() {
            return Err(StoreError::EmptyAppend);
        }
        let batch = Prepared::new(&events)?;
        let mut conn = self.inner.pool.acquire().await.map_err(store_error)?;
        let mut id_collisions = 0;
        for _ in 0..MAX_ATTEMPTS {
            // Each statement is its own transaction: the head read takes no xid, so the
            // insert's xid is younger than the head's writer (stream order = delivery
            // order), and a concurrent writer of the same version fails the unique key.
            match attempt(&mut conn, &self.inner.channel, stream, expected, &batch).await? {
                Attempt::Done(result) => {
                    self.wait_deliverable(&mut conn, result.position.commit)
                        .await;
                    return Ok(result);
                }
                // Re-read: the winner may have been this very batch (a concurrent
                // retry), or moved the stream past `expected` (a conflict), or, for
                // `Any`, just taken the version we wanted.
                Attempt::Collided(UniqueKey::StreamVersion | UniqueKey::Other) => {}
                Attempt::Collided(UniqueKey::EventId) => {
                    id_collisions += 1;
                    if id_collisions > 1 {
                        return Err(StoreError::unavailable(DuplicateEventId {
                            stream: stream.clone(),
                            first_event_id: batch.first_id(),
                        }));
                    }
                }
            }
        }
        let head = read_head(&mut conn, stream, batch.first_id()).await?;
        Err(StoreError::Conflict {
            stream: stream.clone(),
            expected,
            actual: head.version,
        })
    }
}
