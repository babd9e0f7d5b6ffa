//! The single writer and its group commit.
//!
//! Appends arrive as [`Request`]s on a channel. The writer owns the only write connection;
//! it takes every request waiting (up to [`MAX_BATCH`]) and applies them in one
//! `BEGIN IMMEDIATE … COMMIT`, so one fsync serves the whole batch:
//!
//! - **Fresh heads.** Right after `BEGIN IMMEDIATE` (which holds the file's write lock),
//!   `PRAGMA data_version` says whether another connection or process committed since
//!   the writer's last transaction; if so the cached stream heads are dropped. Under the
//!   write lock nobody else can commit, so a cached head is the truth for the whole
//!   transaction and a conflict found against it is real.
//! - **Group path.** Each request's facts (streams its decision read) and expectation
//!   are checked against the heads of those streams (cached, read from the file on a
//!   miss, advanced by earlier requests of the same batch), in queue order, as if the
//!   requests ran one after another. A refused request is answered with its original
//!   result if its first event id is already stored (an idempotent retry), else with a
//!   typed conflict; it never affects its neighbours. The rows of every admitted request are hash-chained and
//!   inserted by multi-row `INSERT … RETURNING` statements (one per 64 rows, each size
//!   prepared once and kept), the last of which carries the `COMMIT`.
//! - **Careful path.** If an insert hits a unique key anyway (a retried event id sent
//!   with an expectation that still holds, such as [`ExpectedVersion::Any`], or an event
//!   id reused in another stream), the transaction is rolled back and the batch is
//!   applied again one request at a time, each in its own savepoint, reading heads from
//!   the file. There a unique violation (detected by error kind, never by message) is
//!   answered as a conflict with the stream's actual version.
//!
//! Replies go out only after `COMMIT` returns, so an acknowledged append is on disk. If
//! the transaction fails, every request of the batch gets the error and the cached heads
//! are dropped (the file is the truth; the cache is refilled on demand).

use crate::rows::format_time;
use chrono::Utc;
use homeroom_eventstore::hash;
use homeroom_eventstore::subscription::CommitSignal;
use homeroom_eventstore::{
    AppendResult, ExpectedVersion, NewEvent, Position, StoreError, StreamId,
};
use sqlx::{Connection, Executor, Row as _, SqliteConnection};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Requests applied in one transaction at most. Beyond this a batch gains little (the
/// fsync is already shared) and its replies wait longer.
pub(crate) const MAX_BATCH: usize = 256;

/// Rows per `INSERT` statement at most. A batch's rows go in chunks of exactly this
/// many and one last chunk of the rest, which carries the `COMMIT`; so a typical batch is
/// one round trip. Each size is prepared once and kept (see [`STATEMENT_CACHE`]); 64 rows
/// × 12 values stays far below SQLite's 32,766 bound values.
const MAX_ROWS_PER_INSERT: usize = 64;

/// Prepared statements the write connection keeps: an `INSERT` of each size with and
/// without `COMMIT`, and the few other statements it runs.
pub(crate) const STATEMENT_CACHE: usize = 2 * MAX_ROWS_PER_INSERT + 32;

/// Stream heads kept in memory; past this the cache is dropped and refilled on demand,
/// which bounds memory however many streams the log holds.
const MAX_HEADS: usize = 100_000;

/// What an append is answered with.
pub(crate) type Outcome = Result<AppendResult, StoreError>;

/// One append waiting for the writer.
pub(crate) struct Request {
    /// The stream to append to.
    pub(crate) stream: StreamId,
    /// What the caller expects the stream's version to be.
    pub(crate) expected: ExpectedVersion,
    /// Other streams that must still be at these versions (the decision's facts).
    pub(crate) facts: Vec<(StreamId, u64)>,
    /// The events, in order; never empty (the store refuses empty appends up front).
    pub(crate) events: Vec<NewEvent>,
    /// The events' stored text, one per event, prepared by the caller's task so the
    /// single writer only hashes and inserts.
    pub(crate) encoded: Vec<Encoded>,
    /// Where the outcome goes, after commit.
    pub(crate) reply: oneshot::Sender<Outcome>,
}

/// The text columns of one event that do not depend on where it lands in its stream.
pub(crate) struct Encoded {
    event_id: String,
    command_id: String,
    data: String,
    metadata: String,
}

impl Encoded {
    /// Serialises what the writer stores verbatim.
    ///
    /// # Errors
    /// The metadata could not be serialised (its fields are strings and ids, so never).
    pub(crate) fn new(event: &NewEvent) -> Result<Self, serde_json::Error> {
        Ok(Self {
            event_id: event.event_id.to_string(),
            command_id: event.metadata.command_id.to_string(),
            data: serde_json::to_string(&event.data)?,
            metadata: serde_json::to_string(&event.metadata)?,
        })
    }
}

/// Live counters of the writer's work, shared with [`crate::SqliteStore::stats`].
#[derive(Default)]
pub(crate) struct Counters {
    requests: AtomicU64,
    transactions: AtomicU64,
    events: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> WriterStats {
        WriterStats {
            requests: self.requests.load(Ordering::Relaxed),
            transactions: self.transactions.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
        }
    }
}

/// How the writer has batched appends so far, so operators and tests can see group
/// commit at work: `requests / transactions` is the mean batch size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterStats {
    /// Append requests answered (appended, refused or failed).
    pub requests: u64,
    /// Write transactions begun for them (a batch that falls back to one request at a
    /// time counts twice).
    pub transactions: u64,
    /// Events recorded.
    pub events: u64,
}

/// The last event of a stream, as the writer knows it.
#[derive(Clone)]
struct Head {
    version: u64,
    hash: String,
}

impl Head {
    fn empty() -> Self {
        Self {
            version: 0,
            hash: hash::GENESIS.to_owned(),
        }
    }
}

/// Why the group path gave up.
enum Failure {
    /// A unique key was hit: nothing was committed, try one request at a time.
    Unique(sqlx::Error),
    /// The engine failed: nothing was committed, every request gets the error.
    Engine(sqlx::Error),
}

impl From<sqlx::Error> for Failure {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Unique(err),
            _ => Self::Engine(err),
        }
    }
}

/// The engine error that failed a whole batch, shared by every request of it.
#[derive(Debug, Clone)]
struct BatchFailed(Arc<sqlx::Error>);

impl fmt::Display for BatchFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the append transaction failed: {}", self.0)
    }
}

impl std::error::Error for BatchFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// The single writer: the write connection, the cached stream heads and the counters.
pub(crate) struct Writer {
    conn: SqliteConnection,
    heads: HashMap<StreamId, Head>,
    data_version: Option<i64>,
    counters: Arc<Counters>,
    signal: CommitSignal,
}

impl Writer {
    pub(crate) fn new(
        conn: SqliteConnection,
        counters: Arc<Counters>,
        signal: CommitSignal,
    ) -> Self {
        Self {
            conn,
            heads: HashMap::new(),
            data_version: None,
            counters,
            signal,
        }
    }

    /// Applies requests until `stop` fires (or every sender is gone), then closes the
    /// queue, applies what was already accepted, and closes the connection.
    pub(crate) async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            tokio::select! {
                // Stop first: under steady load the queue is never empty.
                biased;
                _ = &mut stop => {
                    // Later appends are refused; the ones queued are still applied.
                    requests.close();
                    while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
                        self.apply(&mut batch).await;
                    }
                    break;
                }
                received = requests.recv_many(&mut batch, MAX_BATCH) => {
                    if received == 0 {
                        break;
                    }
                    self.apply(&mut batch).await;
                }
            }
        }
        if let Err(error) = self.conn.close().await {
            tracing::warn!(%error, "closing the SQLite write connection failed");
        }
    }

    /// Applies one batch and answers (and drains) every request of it.
    async fn apply(&mut self, batch: &mut Vec<Request>) {
        self.counters.transactions.fetch_add(1, Ordering::Relaxed);
        self.counters
            .requests
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let outcomes = match self.group(batch).await {
            Ok(outcomes) => outcomes,
            Err(Failure::Unique(cause)) => {
                tracing::debug!(%cause, "group commit falls back to one request at a time");
                self.heads.clear();
                self.counters.transactions.fetch_add(1, Ordering::Relaxed);
                match self.one_by_one(batch).await {
                    Ok(outcomes) => outcomes,
                    Err(error) => return self.fail(batch, error),
                }
            }
            Err(Failure::Engine(error)) => return self.fail(batch, error),
        };
        let recorded: u64 = batch
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| matches!(outcome, Ok(Recorded::New(_))))
            .map(|(request, _)| request.events.len() as u64)
            .sum();
        if recorded > 0 {
            self.counters.events.fetch_add(recorded, Ordering::Relaxed);
            self.signal.notify();
        }
        for (request, outcome) in batch.drain(..).zip(outcomes) {
            // A caller that stopped waiting just misses its answer; the append stands.
            let _ = request
                .reply
                .send(outcome.map(|recorded| recorded.result()));
        }
    }

    /// Answers every request of a failed batch with the error; drops the cached heads.
    fn fail(&mut self, batch: &mut Vec<Request>, error: sqlx::Error) {
        tracing::error!(%error, requests = batch.len(), "an append transaction failed");
        self.heads.clear();
        let error = BatchFailed(Arc::new(error));
        for request in batch.drain(..) {
            let _ = request
                .reply
                .send(Err(StoreError::Unavailable(Box::new(error.clone()))));
        }
    }

    /// The group path: the whole batch in one transaction, checked in memory.
    async fn group(
        &mut self,
        batch: &[Request],
    ) -> Result<Vec<Result<Recorded, StoreError>>, Failure> {
        // One round trip: take the write lock, and learn whether anyone else wrote.
        let data_version = sqlx::query_scalar::<_, i64>("BEGIN IMMEDIATE; PRAGMA data_version")
            .fetch_one(&mut self.conn)
            .await;
        let result = match data_version {
            Ok(data_version) => self.group_in_transaction(batch, data_version).await,
            Err(error) => Err(error.into()),
        };
        match result {
            Ok((outcomes, heads)) => {
                if self.heads.len() + heads.len() > MAX_HEADS {
                    self.heads.clear();
                }
                self.heads.extend(heads);
                Ok(outcomes)
            }
            Err(failure) => {
                rollback(&mut self.conn).await;
                Err(failure)
            }
        }
    }

    /// Everything of the group path between `BEGIN` and a successful `COMMIT`; returns
    /// the outcomes and the heads to cache (valid only once committed).
    async fn group_in_transaction(
        &mut self,
        batch: &[Request],
        data_version: i64,
    ) -> Result<(Vec<Result<Recorded, StoreError>>, Vec<(StreamId, Head)>), Failure> {
        if self.data_version != Some(data_version) {
            if self.data_version.is_some() {
                tracing::debug!("another connection wrote to the file; stream heads reloaded");
            }
            self.heads.clear();
            self.data_version = Some(data_version);
        }

        // Heads read or advanced in this transaction: first every head not cached, in
        // one query (a new stream is a miss too), then advanced request by request.
        let mut pending: HashMap<&StreamId, Head> = HashMap::new();
        let mut missing: Vec<&StreamId> = Vec::new();
        let streams = batch.iter().flat_map(|request| {
            std::iter::once(&request.stream).chain(request.facts.iter().map(|(fact, _)| fact))
        });
        for stream in streams {
            if !self.heads.contains_key(stream) && !missing.contains(&stream) {
                missing.push(stream);
            }
        }
        if !missing.is_empty() {
            read_heads(&mut self.conn, &missing, &mut pending).await?;
        }

        let recorded_at = hash::storable_time(Utc::now());
        let recorded_at_text = format_time(recorded_at);
        // Which request of the batch writes each event id.
        let mut writers: HashMap<Uuid, usize> = HashMap::new();
        let mut plans = Vec::with_capacity(batch.len());
        let mut rows = Vec::with_capacity(batch.len());
        for (index, request) in batch.iter().enumerate() {
            let first_id = request.events[0].event_id;
            if let Some(&earlier) = writers.get(&first_id) {
                if batch[earlier].stream == request.stream {
                    // A retry racing its original inside one batch.
                    plans.push(Plan::SameAs(earlier));
                    continue;
                }
            }
            let version_of = |stream: &StreamId| match pending.get(stream) {
                Some(head) => head.version,
                None => self.heads.get(stream).map_or(0, |head| head.version),
            };
            let refusal = refusal(request, version_of);
            if let Some(conflict) = refusal {
                let answer = match find_original(&mut self.conn, &request.stream, first_id).await? {
                    Some(original) => Ok(Recorded::Before(original)),
                    None => Err(conflict),
                };
                plans.push(Plan::Answered(answer));
                continue;
            }
            let head = match pending.get(&request.stream) {
                Some(head) => head.clone(),
                None => self
                    .heads
                    .get(&request.stream)
                    .cloned()
                    .unwrap_or_else(Head::empty),
            };
            for event in &request.events {
                writers.insert(event.event_id, index);
            }
            let new_head = plan_rows(request, head, recorded_at, &recorded_at_text, &mut rows);
            plans.push(Plan::Insert {
                last_row: rows.len() - 1,
                version: new_head.version,
            });
            pending.insert(&request.stream, new_head);
        }

        let positions = insert_rows(&mut self.conn, &rows, Then::Commit).await?;

        let mut outcomes: Vec<Result<Recorded, StoreError>> = Vec::with_capacity(plans.len());
        for plan in plans {
            let outcome = match plan {
                Plan::Answered(answer) => answer,
                Plan::Insert { last_row, version } => Ok(Recorded::New(AppendResult {
                    version,
                    position: Position::at(positions[last_row]),
                })),
                // Only admitted requests are repeated, and those are recorded.
                Plan::SameAs(earlier) => match &outcomes[earlier] {
                    Ok(recorded) => Ok(Recorded::Before(recorded.result())),
                    Err(_) => Err(StoreError::Unavailable(
                        "a repeated append lost its original".into(),
                    )),
                },
            };
            outcomes.push(outcome);
        }
        let heads = pending
            .into_iter()
            .map(|(stream, head)| (stream.clone(), head))
            .collect();
        Ok((outcomes, heads))
    }

    /// The careful path: one request at a time, each in a savepoint, heads from the file.
    async fn one_by_one(
        &mut self,
        batch: &[Request],
    ) -> Result<Vec<Result<Recorded, StoreError>>, sqlx::Error> {
        let conn = &mut self.conn;
        conn.execute("BEGIN IMMEDIATE").await?;
        let result = async {
            let recorded_at = hash::storable_time(Utc::now());
            let recorded_at_text = format_time(recorded_at);
            let mut outcomes = Vec::with_capacity(batch.len());
            for request in batch {
                conn.execute("SAVEPOINT request").await?;
                let outcome = one_request(conn, request, recorded_at, &recorded_at_text).await;
                if !matches!(outcome, Ok(Ok(Recorded::New(_)))) {
                    conn.execute("ROLLBACK TO request").await?;
                }
                conn.execute("RELEASE request").await?;
                outcomes.push(outcome.unwrap_or_else(|e| Err(StoreError::unavailable(e))));
            }
            conn.execute("COMMIT").await?;
            Ok(outcomes)
        }
        .await;
        if result.is_err() {
            rollback(conn).await;
        }
        result
    }
}

/// What became of an admitted or repeated request.
enum Recorded {
    /// Its events were inserted by this transaction.
    New(AppendResult),
    /// They were already stored: this is the original result.
    Before(AppendResult),
}

impl Recorded {
    fn result(&self) -> AppendResult {
        match self {
            Self::New(result) | Self::Before(result) => *result,
        }
    }
}

/// What the group path will answer a request with.
enum Plan {
    /// Decided without inserting: an original result or a conflict.
    Answered(Result<Recorded, StoreError>),
    /// Inserted; its result is the position of its last row.
    Insert { last_row: usize, version: u64 },
    /// A repeat of an earlier request of the same batch: the same result.
    SameAs(usize),
}

/// One event ready to insert, hash-chained onto its stream.
struct Row<'a> {
    stream: &'a str,
    event: &'a NewEvent,
    encoded: &'a Encoded,
    recorded_at: &'a str,
    version: u64,
    batch_end: u64,
    prev_hash: String,
    hash: String,
}

/// Adds the rows of `request` on top of `head` to `rows`; returns the stream's new head.
fn plan_rows<'a>(
    request: &'a Request,
    head: Head,
    recorded_at: chrono::DateTime<Utc>,
    recorded_at_text: &'a str,
    rows: &mut Vec<Row<'a>>,
) -> Head {
    let batch_end = head.version + request.events.len() as u64;
    let links = hash::chain_batch(
        &request.stream,
        head.version,
        &head.hash,
        &request.events,
        recorded_at,
    );
    let first = rows.len();
    for ((event, encoded), link) in request.events.iter().zip(&request.encoded).zip(links) {
        rows.push(Row {
            stream: request.stream.as_str(),
            event,
            encoded,
            recorded_at: recorded_at_text,
            version: link.version,
            batch_end,
            prev_hash: link.prev_hash,
            hash: link.hash,
        });
    }
    Head {
        version: batch_end,
        hash: rows[first..]
            .last()
            .map_or(head.hash, |row| row.hash.clone()),
    }
}

/// One request of the careful path; the outer error is the engine's, the inner one the
/// request's answer.
async fn one_request(
    conn: &mut SqliteConnection,
    request: &Request,
    recorded_at: chrono::DateTime<Utc>,
    recorded_at_text: &str,
) -> Result<Result<Recorded, StoreError>, sqlx::Error> {
    if let Some(original) = find_original(conn, &request.stream, request.events[0].event_id).await?
    {
        return Ok(Ok(Recorded::Before(original)));
    }
    let mut versions = HashMap::with_capacity(request.facts.len());
    for (fact, _) in &request.facts {
        versions.insert(fact, read_head(conn, fact).await?.version);
    }
    let head = read_head(conn, &request.stream).await?;
    let refused = refusal(request, |stream| {
        if *stream == request.stream {
            head.version
        } else {
            versions.get(stream).copied().unwrap_or(0)
        }
    });
    if let Some(conflict) = refused {
        return Ok(Err(conflict));
    }
    let mut rows = Vec::with_capacity(request.events.len());
    let new_head = plan_rows(request, head, recorded_at, recorded_at_text, &mut rows);
    match insert_rows(conn, &rows, Then::Continue).await {
        Ok(positions) => Ok(Ok(Recorded::New(AppendResult {
            version: new_head.version,
            position: Position::at(positions[positions.len() - 1]),
        }))),
        Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
            // Another writer took the version, or an event id is stored elsewhere.
            Ok(Err(StoreError::Conflict {
                stream: request.stream.clone(),
                expected: request.expected,
                actual: read_head(conn, &request.stream).await?.version,
            }))
        }
        Err(e) => Err(e),
    }
}

/// Why `request` may not be appended given the current version of each stream, if it
/// may not: the first fact that moved, else its own stream's expectation (the order the
/// in-memory store checks them in).
fn refusal(request: &Request, version_of: impl Fn(&StreamId) -> u64) -> Option<StoreError> {
    for (fact, seen) in &request.facts {
        let actual = version_of(fact);
        if actual != *seen {
            return Some(StoreError::Conflict {
                stream: fact.clone(),
                expected: ExpectedVersion::from_version(*seen),
                actual,
            });
        }
    }
    let actual = version_of(&request.stream);
    (!request.expected.admits(actual)).then(|| StoreError::Conflict {
        stream: request.stream.clone(),
        expected: request.expected,
        actual,
    })
}

/// Ends a failed transaction. If even that fails, SQLite has already rolled it back (an
/// I/O error or a full disk do) or the connection is lost; both show on the next batch.
async fn rollback(conn: &mut SqliteConnection) {
    if let Err(error) = conn.execute("ROLLBACK").await {
        tracing::debug!(%error, "rolling back a failed append transaction");
    }
}

/// The stream's last version and hash, from the file.
async fn read_head(conn: &mut SqliteConnection, stream: &StreamId) -> Result<Head, sqlx::Error> {
    let row = sqlx::query(
        "SELECT version, hash FROM events WHERE stream = ? ORDER BY version DESC LIMIT 1",
    )
    .bind(stream.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match row {
        Some(row) => Head {
            version: u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0),
            hash: row.try_get(1)?,
        },
        None => Head::empty(),
    })
}

/// The heads of `streams` (none cached), into `heads`; a stream with no events is at
/// version 0 with the genesis hash.
async fn read_heads<'a>(
    conn: &mut SqliteConnection,
    streams: &[&'a StreamId],
    heads: &mut HashMap<&'a StreamId, Head>,
) -> Result<(), sqlx::Error> {
    if let [stream] = streams {
        heads.insert(stream, read_head(conn, stream).await?);
        return Ok(());
    }
    // SQLite takes the bare columns of a `MAX()` query from the row holding the maximum.
    let sql = format!(
        "SELECT stream, MAX(version), hash FROM events WHERE stream IN ({}) GROUP BY stream",
        vec!["?"; streams.len()].join(",")
    );
    let mut query = sqlx::query(&sql);
    for stream in streams {
        query = query.bind(stream.as_str());
    }
    let rows = query.persistent(false).fetch_all(&mut *conn).await?;
    let mut found: HashMap<&str, Head> = HashMap::with_capacity(rows.len());
    for row in &rows {
        found.insert(
            row.try_get(0)?,
            Head {
                version: u64::try_from(row.try_get::<i64, _>(1)?).unwrap_or(0),
                hash: row.try_get(2)?,
            },
        );
    }
    for stream in streams {
        let head = found.remove(stream.as_str()).unwrap_or_else(Head::empty);
        heads.insert(stream, head);
    }
    Ok(())
}

/// The original result of the append that stored `event_id` in `stream`, if one did.
async fn find_original(
    conn: &mut SqliteConnection,
    stream: &StreamId,
    event_id: Uuid,
) -> Result<Option<AppendResult>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT last.version, last.position FROM events first \
         JOIN events last ON last.stream = first.stream AND last.version = first.batch_end \
         WHERE first.event_id = ? AND first.stream = ?",
    )
    .bind(event_id.to_string())
    .bind(stream.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|row| {
        Ok(AppendResult {
            version: u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0),
            position: Position::at(u64::try_from(row.try_get::<i64, _>(1)?).unwrap_or(0)),
        })
    })
    .transpose()
}

/// What follows the inserts of a batch in the same round trip.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Nothing: more statements follow in the transaction.
    Continue,
    /// `COMMIT`: the group path saves a round trip.
    Commit,
}

/// The `INSERT` of `rows` rows (at most [`MAX_ROWS_PER_INSERT`]), followed by `then`.
fn insert_sql(rows: usize, then: Then) -> &'static str {
    static SQL: OnceLock<Vec<[String; 2]>> = OnceLock::new();
    let all = SQL.get_or_init(|| {
        (1..=MAX_ROWS_PER_INSERT)
            .map(|n| {
                // OR FAIL: a unique violation stops the statement without a statement
                // journal; the caller rolls the whole transaction or savepoint back.
                let insert = format!(
                    "INSERT OR FAIL INTO events (event_id, stream, version, event_type, \
                     schema_version, data, metadata, command_id, recorded_at, prev_hash, \
                     hash, batch_end) VALUES {} RETURNING position, event_id",
                    vec!["(?,?,?,?,?,?,?,?,?,?,?,?)"; n].join(",")
                );
                let commit = format!("{insert}; COMMIT");
                [insert, commit]
            })
            .collect()
    });
    &all[rows - 1][usize::from(then == Then::Commit)]
}

/// Inserts `rows` in chunks of at most [`MAX_ROWS_PER_INSERT`], then does `then` (in the
/// round trip of the last chunk); returns each row's position in the order given.
async fn insert_rows(
    conn: &mut SqliteConnection,
    rows: &[Row<'_>],
    then: Then,
) -> Result<Vec<u64>, sqlx::Error> {
    if rows.is_empty() {
        if then == Then::Commit {
            conn.execute("COMMIT").await?;
        }
        return Ok(Vec::new());
    }
    let mut positions = vec![0; rows.len()];
    let chunks = rows.len().div_ceil(MAX_ROWS_PER_INSERT);
    for (index, chunk) in rows.chunks(MAX_ROWS_PER_INSERT).enumerate() {
        let last = index + 1 == chunks;
        let mut query = sqlx::query(insert_sql(
            chunk.len(),
            if last { then } else { Then::Continue },
        ));
        for row in chunk {
            query = query
                .bind(row.encoded.event_id.as_str())
                .bind(row.stream)
                .bind(to_sql(row.version))
                .bind(row.event.event_type.as_str())
                .bind(i64::from(row.event.schema_version))
                .bind(row.encoded.data.as_str())
                .bind(row.encoded.metadata.as_str())
                .bind(row.encoded.command_id.as_str())
                .bind(row.recorded_at)
                .bind(row.prev_hash.as_str())
                .bind(row.hash.as_str())
                .bind(to_sql(row.batch_end));
        }
        let returned = query.fetch_all(&mut *conn).await?;
        if returned.len() != chunk.len() {
            return Err(sqlx::Error::Protocol(format!(
                "an insert of {} events returned {} rows",
                chunk.len(),
                returned.len()
            )));
        }
        // SQLite does not promise RETURNING order, so match rows by event id (in order
        // in practice, so the first guess almost always hits).
        let done = index * MAX_ROWS_PER_INSERT;
        for (guess, returned) in returned.iter().enumerate() {
            let position: i64 = returned.try_get(0)?;
            let event_id: &str = returned.try_get(1)?;
            let row = if chunk[guess].encoded.event_id == event_id {
                guess
            } else {
                chunk
                    .iter()
                    .position(|row| row.encoded.event_id == event_id)
                    .ok_or_else(|| {
                        sqlx::Error::Protocol(format!(
                            "the insert returned unknown event {event_id}"
                        ))
                    })?
            };
            positions[done + row] = u64::try_from(position).unwrap_or(0);
        }
    }
    Ok(positions)
}

/// SQLite integers are `i64`; versions never come near the limit.
fn to_sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
