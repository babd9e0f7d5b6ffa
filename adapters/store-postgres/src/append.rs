//! The appender port: head read, hash chain, one-statement batch insert, conflict and
//! idempotency handling.

use crate::error::{store_error, unique_violation, DuplicateEventId, OutOfOrderAppend, UniqueKey};
use crate::group::{Grouped, Rows};
use crate::read::parse_xid;
use crate::PgStore;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use homeroom_eventstore::hash;
use homeroom_eventstore::{
    AppendResult, EventAppender, ExpectedVersion, NewEvent, Position, StoreError, StreamId,
};
use sqlx::{PgConnection, Row};
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
/// the rows, in version order (so `seq` follows `version`). [`PgStore::append_in`] adds
/// the commit notification ([`INSERT_NOTIFYING`]), as its caller commits later; a pooled
/// append has it sent right after its commit (see [`crate::horizon`]).
///
/// Not inside a pooled append's own transaction: a transaction that has notified holds
/// a database-wide lock from its commit until its commit record is flushed, so appends
/// notifying in their own transaction would commit one at a time, each waiting for the
/// previous one's WAL flush, and group commit could not batch them (see
/// `docs/postgres.md`).
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
SELECT (SELECT max(seq) FROM ins) AS last_seq, pg_current_xact_id()::text AS commit_text";

/// [`INSERT`] sending the commit notification from inside the caller's transaction.
const INSERT_NOTIFYING: &str = "FROM pg_notify($14, '')";

/// Stream heads this process remembers, at most this many (then it starts over).
const HEAD_CACHE_CAPACITY: usize = 65_536;

/// The heads of streams this store appended to, so the next append to the same stream
/// can insert without reading the head first (one round trip fewer).
///
/// Only ever a hint: a stream's versions only grow, so a stale head (another process
/// appended meanwhile) makes the insert collide on `UNIQUE (stream, version)` (or on an
/// event id, for a re-append), and the append then reads the head and decides as if it
/// had never used the cache. A head is remembered only after its append committed.
#[derive(Default)]
pub(crate) struct HeadCache(std::sync::Mutex<std::collections::HashMap<StreamId, CachedHead>>);

/// A remembered head: what [`READ_HEAD`] would return for a stream, idempotency aside.
#[derive(Clone)]
pub(crate) struct CachedHead {
    version: u64,
    hash: String,
    tx_id: u64,
}

impl CachedHead {
    /// The head a committed append left: its last version and hash, and its transaction.
    pub(crate) fn new(version: u64, hash: String, tx_id: u64) -> Self {
        Self {
            version,
            hash,
            tx_id,
        }
    }
}

impl HeadCache {
    fn get(&self, stream: &StreamId) -> Option<CachedHead> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(stream)
            .cloned()
    }

    fn remember(&self, stream: &StreamId, head: CachedHead) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get(stream) {
            // A concurrent append of this process got further: keep its head.
            Some(known) if known.version >= head.version => return,
            Some(_) => {}
            None if map.len() >= HEAD_CACHE_CAPACITY => map.clear(),
            None => {}
        }
        map.insert(stream.clone(), head);
    }

    fn forget(&self, stream: &StreamId) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(stream);
    }
}

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
    /// Recorded now (with the stream's new head), or recorded before (an idempotent
    /// re-append, no head).
    Done(AppendResult, Option<CachedHead>),
    /// The insert hit a unique key: someone else won a race (or the cached head was
    /// stale).
    Collided(UniqueKey),
}

/// Where an attempt's head comes from, and whether its statement notifies.
#[derive(Clone, Copy)]
enum Mode<'a> {
    /// A pooled append: the head from the cache when it admits the expectation, else
    /// read; no notification in the statement.
    Pooled(Option<&'a CachedHead>),
    /// [`PgStore::append_in`]: the head read in the caller's transaction, and the
    /// notification sent with it.
    InTransaction,
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

/// Reads the head (unless a cached one admits the expectation), checks idempotency and
/// the expectation, and inserts the batch.
async fn attempt(
    conn: &mut PgConnection,
    channel: &str,
    mode: Mode<'_>,
    stream: &StreamId,
    expected: ExpectedVersion,
    batch: &Prepared<'_>,
) -> Result<Attempt, StoreError> {
    let head = match mode {
        // A stale head cannot admit an insert: its version is taken (see `HeadCache`).
        Mode::Pooled(Some(cached)) if expected.admits(cached.version) => Head {
            original_end: None,
            version: cached.version,
            hash: cached.hash.clone(),
            tx_id: cached.tx_id,
        },
        _ => {
            let head = read_head(conn, stream, batch.first_id()).await?;
            if let Some(end) = head.original_end {
                return original_result(conn, stream, end)
                    .await
                    .map(|r| Attempt::Done(r, None));
            }
            if !expected.admits(head.version) {
                return Err(StoreError::Conflict {
                    stream: stream.clone(),
                    expected,
                    actual: head.version,
                });
            }
            head
        }
    };

    let recorded_at: DateTime<Utc> = hash::storable_time(Utc::now());
    let (versions, prev_hashes, hashes) =
        chain(stream, head.version, &head.hash, batch, recorded_at);
    let last_version = head.version + batch.events.len() as u64;

    let statement = match mode {
        Mode::Pooled(_) => std::borrow::Cow::Borrowed(INSERT),
        Mode::InTransaction => format!("{INSERT}\n{INSERT_NOTIFYING}").into(),
    };
    let inserted = sqlx::query(&statement)
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
        .bind(head.tx_id.to_string());
    let inserted = match mode {
        Mode::Pooled(_) => inserted,
        Mode::InTransaction => inserted.bind(channel),
    }
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
    let result = AppendResult {
        version: last_version,
        position: Position {
            commit: tx_id,
            sequence: u64::try_from(last_seq).unwrap_or(0),
        },
    };
    let new_head = CachedHead {
        version: last_version,
        hash: hashes.last().cloned().unwrap_or_default(),
        tx_id,
    };
    Ok(Attempt::Done(result, Some(new_head)))
}

/// The rows of `batch` hash-chained onto `head`, for the group task.
fn group_rows(stream: &StreamId, head: &CachedHead, batch: &Prepared<'_>) -> Rows {
    let recorded_at: DateTime<Utc> = hash::storable_time(Utc::now());
    let (versions, prev_hashes, hashes) =
        chain(stream, head.version, &head.hash, batch, recorded_at);
    Rows {
        stream: stream.clone(),
        event_ids: batch.events.iter().map(|e| e.event_id).collect(),
        versions,
        event_types: batch.events.iter().map(|e| e.event_type.clone()).collect(),
        schema_versions: batch
            .events
            .iter()
            .map(|e| i64::from(e.schema_version))
            .collect(),
        data: batch.data.clone(),
        metadata: batch.metadata.clone(),
        command_ids: batch.events.iter().map(|e| e.metadata.command_id).collect(),
        recorded_at,
        prev_hashes,
        hashes,
        last_version: head.version + batch.events.len() as u64,
    }
}

/// The versions, previous hashes and hashes of `batch` appended after `version`, whose
/// hash is `head_hash`.
fn chain(
    stream: &StreamId,
    version: u64,
    head_hash: &str,
    batch: &Prepared<'_>,
    recorded_at: DateTime<Utc>,
) -> (Vec<i64>, Vec<String>, Vec<String>) {
    let n = batch.events.len();
    let (mut versions, mut prev_hashes, mut hashes) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for link in hash::chain_batch(stream, version, head_hash, batch.events, recorded_at) {
        versions.push(to_i64(link.version));
        prev_hashes.push(link.prev_hash);
        hashes.push(link.hash);
    }
    (versions, prev_hashes, hashes)
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
        let mode = Mode::InTransaction;
        match attempt(conn, &self.inner.channel, mode, stream, expected, &batch).await? {
            // The caller may still roll back: the head is not remembered (and one
            // remembered from before is stale once the caller commits).
            Attempt::Done(result, _) => {
                self.inner.heads.forget(stream);
                Ok(result)
            }
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
    /// After a pooled append's commit: has subscribers notified and waits (at most
    /// [`crate::PgStoreConfig::deliverable_wait`]) until transaction `tx_id` is below
    /// the horizon, so `read_all` and `head` show what it wrote; both through the
    /// store's [`crate::horizon`] task, without holding a connection.
    ///
    /// Never fails: the append is committed by now, and reporting an error would only
    /// make the caller retry something that succeeded.
    async fn after_commit(&self, tx_id: u64) {
        let wait = self.inner.deliverable_wait;
        if wait.is_zero() {
            self.inner.horizon.committed();
        } else if !self.inner.horizon.committed_and_wait(tx_id, wait).await {
            tracing::debug!(
                tx_id,
                ?wait,
                "appended events wait behind an older open transaction"
            );
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
        let mut cached = self.inner.heads.get(stream);
        if let Some(head) = cached.take_if(|head| expected.admits(head.version)) {
            let rows = group_rows(stream, &head, &batch);
            match self.inner.group.append(rows).await {
                Grouped::Done(result, head) => {
                    self.inner.heads.remember(stream, head);
                    self.after_commit(result.position.commit).await;
                    return Ok(result);
                }
                // The head may be stale: read it.
                Grouped::Alone => self.inner.heads.forget(stream),
            }
        }
        let mut conn = self.inner.pool.acquire().await.map_err(store_error)?;
        let mut id_collisions = 0;
        for _ in 0..MAX_ATTEMPTS {
            // Each statement is its own transaction: the head read takes no xid, so the
            // insert's xid is younger than the head's writer (stream order = delivery
            // order), and a concurrent writer of the same version fails the unique key.
            // A cached head was written by a committed transaction, so the same holds.
            let cache_used = cached.as_ref().is_some_and(|c| expected.admits(c.version));
            let this_try = cached.take().filter(|_| cache_used);
            let mode = Mode::Pooled(this_try.as_ref());
            let tried = attempt(
                &mut conn,
                &self.inner.channel,
                mode,
                stream,
                expected,
                &batch,
            )
            .await
            .inspect_err(|_| self.inner.heads.forget(stream))?;
            if cache_used && matches!(tried, Attempt::Collided(_)) {
                // The cached head was stale: decide again from the stored one, as if
                // there had been no cache (this try does not count as a collision).
                self.inner.heads.forget(stream);
                continue;
            }
            match tried {
                Attempt::Done(result, head) => {
                    match head {
                        Some(head) => self.inner.heads.remember(stream, head),
                        None => self.inner.heads.forget(stream),
                    }
                    drop(conn);
                    self.after_commit(result.position.commit).await;
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
