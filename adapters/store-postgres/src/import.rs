//! Moving another store's whole log into PostgreSQL verbatim, hash chains intact.
//!
//! [`import_log`] is what `homeroom migrate sqlite-to-postgres` runs: it reads the source
//! with [`EventReader::read_all`] in pages and writes every event into the target with
//! its original event id, stream, version, type, schema version, data, metadata, recorded
//! time, `prev_hash` and `hash`, so `audit verify` and any hash an auditor noted before
//! the move still match. Only positions are the target's own.
//!
//! How it keeps that promise:
//!
//! - **Chains checked on the way.** Every source event goes through its stream's
//!   [`ChainLink`] before it is written (and before it is skipped, on a resumed run): a
//!   changed, missing or reordered event stops the import with
//!   [`ImportError::BrokenChain`] naming it, and nothing of the transaction it would have
//!   joined is written.
//! - **Source order kept.** Batches are written one after another, each in a transaction
//!   that is begun only after the previous one committed, so each gets a younger
//!   transaction id; within one, rows are inserted in source order, so identity sequence
//!   numbers follow it (checked on every batch). Delivery order `(tx_id, seq)` is thus the
//!   source's order, and the rows take the same path through the visibility rules as any
//!   append: `tx_id` is the writing transaction's, and each batch sends the store's commit
//!   notification, so live subscribers receive imported events as they commit, in order.
//!   A source append is never split across two transactions.
//! - **Resumable.** Killed half-way, the target holds a prefix of the source's log (whole
//!   batches). The next run first reads the target from its start beside the source and
//!   requires every stored event to be identical to the source's event at the same place
//!   ([`ImportError::ForeignEvent`] otherwise, or [`ImportError::TargetAhead`] when the
//!   target holds more than the source); then it writes the rest. A run over a complete
//!   target writes nothing. At the end it checks that the target holds exactly the
//!   source's number of events, so nothing another writer added meanwhile goes unnoticed.
//! - **One import at a time.** A session advisory lock per schema, on the import's own
//!   connection, keeps two imports from interleaving; the session ends with the import
//!   (also when its future is dropped), which releases the lock and rolls back a batch
//!   in flight. The session shows as `homeroom-import` in `pg_stat_activity`.
//!
//! Batch boundaries of the source (which events were one append, used to answer an
//! idempotent re-append with the original result) are not part of the reader port; they
//! are recovered as runs of consecutive versions of one stream with one command id and
//! one recorded time, which is what every append records. The command service does not
//! depend on them: it finds a retried command's result with `find_command`.

use crate::error::{store_error, unique_violation};
use crate::read::{decode, parse_xid, COLUMNS};
use crate::PgStore;
use chrono::{DateTime, Utc};
use homeroom_eventstore::hash::ChainLink;
use homeroom_eventstore::{EventReader, Position, RecordedEvent, StoreError, StreamId};
use sqlx::{Connection, PgConnection, Row};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use uuid::Uuid;

/// How an import reads and writes. [`ImportOptions::default`] suits any log.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Source events asked for per `read_all` call (and target rows per page when a
    /// resumed run compares what is already there).
    pub page: usize,
    /// Events written per target transaction. A source append is never split, so a
    /// transaction can hold a few more.
    pub batch: usize,
    /// How long to wait for another import of the same schema (or the session of one
    /// that was just killed) to end before giving up with [`ImportError::Busy`].
    pub lock_wait: Duration,
}

impl Default for ImportOptions {
    /// Pages of 1,000 events, transactions of 1,000 events, 30 s for the import lock.
    fn default() -> Self {
        Self {
            page: 1_000,
            batch: 1_000,
            lock_wait: Duration::from_secs(30),
        }
    }
}

/// Where an import stands, reported after each page found already imported and after
/// each committed transaction, so a command line can show progress (or a test stop it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportProgress {
    /// Source events read and chain-checked so far in this run.
    pub read: u64,
    /// Of those, events the target already held, found identical and skipped.
    pub skipped: u64,
    /// Events this run wrote to the target.
    pub written: u64,
    /// Transactions this run committed.
    pub batches: u64,
    /// The source position of the last event read.
    pub source_position: Position,
}

/// What a finished import did. The target now holds exactly the source's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportReport {
    /// Events in the source, and so in the target.
    pub events: u64,
    /// Streams among them, each of whose chains verified.
    pub streams: u64,
    /// Events already in the target (from an earlier, interrupted run), found identical.
    pub skipped: u64,
    /// Events this run wrote.
    pub written: u64,
    /// Transactions this run committed.
    pub batches: u64,
    /// The target's position of the last event ([`Position::START`] for an empty log):
    /// what `head` answers once the delivery horizon has passed it.
    pub target_head: Position,
}

/// Why an import stopped. Whatever it committed before stays, and a new run continues
/// from there once the cause is dealt with.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Reading the source failed.
    #[error("cannot read the source log: {0}")]
    Source(#[source] StoreError),
    /// Reading or writing the target failed.
    #[error("cannot write the target log: {0}")]
    Target(#[source] StoreError),
    /// A source event's hash, `prev_hash` or version does not follow its stream's chain:
    /// the source was tampered with (or damaged). Nothing from there on is imported.
    #[error("the source's hash chain is broken at {stream} version {version}: refusing to import a log that does not verify")]
    BrokenChain {
        /// The stream of the first event that does not verify.
        stream: StreamId,
        /// Its version.
        version: u64,
    },
    /// The target holds an event that is not the source's event at the same place of the
    /// log: it holds another instance's events (or its copy was changed). Nothing is
    /// written; import into an empty schema.
    #[error("the target holds {stream} version {version} where the source's log has {source_stream} version {source_version} (or the two differ): the target is not an earlier import of this source")]
    ForeignEvent {
        /// The stream of the target's event.
        stream: String,
        /// Its version.
        version: u64,
        /// The stream of the source's event at that place.
        source_stream: StreamId,
        /// Its version.
        source_version: u64,
    },
    /// The target holds more events than the source, the first extra one named.
    #[error("the target holds {stream} version {version} beyond the end of the source's log: the target is not an earlier import of this source")]
    TargetAhead {
        /// The stream of the first extra event.
        stream: String,
        /// Its version.
        version: u64,
    },
    /// Another writer recorded an event id or a stream version this import was writing:
    /// stop every other writer of the schema and run the import again, which then names
    /// what is foreign. The batch was rolled back.
    #[error("another writer recorded an event id or stream version this import was writing; stop other writers of the schema and run the import again")]
    WrittenMeanwhile,
    /// At the end the target holds another number of events than the source: someone
    /// else wrote to it during the import. Stop other writers and run the import again.
    #[error("the target holds {found} events but the source {expected}: someone else wrote to it during the import; stop other writers and run the import again")]
    TargetChanged {
        /// Events the target should hold (the source's count).
        expected: u64,
        /// Events it holds.
        found: u64,
    },
    /// Another import of this schema holds the import lock.
    #[error("another import into schema {schema} is running (its lock was not released within {waited:?})")]
    Busy {
        /// The target schema.
        schema: String,
        /// How long this import waited.
        waited: Duration,
    },
    /// PostgreSQL numbered one batch's rows out of source order (never seen; checked so
    /// delivery order is proven rather than assumed). The batch was rolled back.
    #[error("the target numbered a batch's rows out of source order; nothing of it was kept")]
    OrderNotKept,
}

/// Copies `source`'s whole log into `target`, verbatim, verifying every hash chain, in
/// batches of [`ImportOptions::batch`] events per transaction; resumes an interrupted
/// import. See the module docs for what is kept and checked.
///
/// `progress` is called after each page the target already held and after each
/// committed transaction.
///
/// # Errors
/// [`ImportError`]: the source's chain does not verify, the target holds what is not a
/// prefix of the source, someone else writes to the target meanwhile, another import
/// runs, or either store fails. What was committed before stays, and a new run resumes.
pub async fn import_log(
    source: &dyn EventReader,
    target: &PgStore,
    options: ImportOptions,
    mut progress: impl FnMut(ImportProgress),
) -> Result<ImportReport, ImportError> {
    // A connection of its own, outside the pool: its session holds the import lock, and
    // ends (releasing it, rolling back a batch in flight) whenever the import ends.
    let mut conn = target
        .inner
        .pool
        .acquire()
        .await
        .map_err(target_error)?
        .detach();
    let result = async {
        lock(&mut conn, target.schema(), options.lock_wait).await?;
        let mut run = Run {
            source: SourceCursor::new(source, options.page),
            links: HashMap::new(),
            progress: ImportProgress::default(),
        };
        run.skip_what_is_there(&mut conn, options.page, &mut progress)
            .await?;
        run.write_the_rest(&mut conn, &target.inner.channel, &options, &mut progress)
            .await?;
        run.finish(&mut conn).await
    }
    .await;
    // Ends the session and with it the lock, whatever happened above.
    let _closed = conn.close().await;
    result
}

fn target_error(err: sqlx::Error) -> ImportError {
    ImportError::Target(store_error(err))
}

/// The advisory lock key of imports into `schema` (distinct from the migration lock).
fn lock_key(schema: &str) -> String {
    format!("homeroom-import:{schema}")
}

async fn lock(conn: &mut PgConnection, schema: &str, wait: Duration) -> Result<(), ImportError> {
    sqlx::query("SELECT set_config('application_name', 'homeroom-import', false)")
        .execute(&mut *conn)
        .await
        .map_err(target_error)?;
    let wait_ms = wait.as_millis().max(1);
    sqlx::query(&format!("SET lock_timeout = {wait_ms}"))
        .execute(&mut *conn)
        .await
        .map_err(target_error)?;
    let locked = sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
        .bind(lock_key(schema))
        .execute(&mut *conn)
        .await;
    if let Err(err) = locked {
        // 55P03 lock_not_available: the wait ran out.
        let timed_out = err
            .as_database_error()
            .and_then(|db| db.code())
            .is_some_and(|code| code == "55P03");
        return Err(if timed_out {
            ImportError::Busy {
                schema: schema.to_owned(),
                waited: wait,
            }
        } else {
            target_error(err)
        });
    }
    // Writes must not give up on a lock wait: only the import lock had a deadline.
    sqlx::query("SET lock_timeout = 0")
        .execute(&mut *conn)
        .await
        .map_err(target_error)?;
    Ok(())
}

/// The source's log, one event at a time, read a page ahead.
struct SourceCursor<'a> {
    reader: &'a dyn EventReader,
    page: usize,
    after: Position,
    buffer: VecDeque<RecordedEvent>,
    ended: bool,
}

impl<'a> SourceCursor<'a> {
    fn new(reader: &'a dyn EventReader, page: usize) -> Self {
        Self {
            reader,
            page: page.max(1),
            after: Position::START,
            buffer: VecDeque::new(),
            ended: false,
        }
    }

    async fn next(&mut self) -> Result<Option<RecordedEvent>, ImportError> {
        if self.buffer.is_empty() && !self.ended {
            let page = self
                .reader
                .read_all(self.after, self.page)
                .await
                .map_err(ImportError::Source)?;
            match page.last() {
                Some(last) => self.after = last.position,
                None => self.ended = true,
            }
            self.buffer.extend(page);
        }
        Ok(self.buffer.pop_front())
    }
}

/// One import run's state: the source cursor, each stream's chain, the counters.
struct Run<'a> {
    source: SourceCursor<'a>,
    links: HashMap<StreamId, ChainLink>,
    progress: ImportProgress,
}

impl Run<'_> {
    /// The next source event, its chain checked.
    async fn next_checked(&mut self) -> Result<Option<RecordedEvent>, ImportError> {
        let Some(event) = self.source.next().await? else {
            return Ok(None);
        };
        let link = self.links.entry(event.stream.clone()).or_default();
        if !link.accept(&event) {
            return Err(ImportError::BrokenChain {
                stream: event.stream,
                version: event.version,
            });
        }
        self.progress.read += 1;
        self.progress.source_position = event.position;
        Ok(Some(event))
    }

    /// Reads the target from its start beside the source, requiring each stored event to
    /// be the source's event at the same place; leaves the source cursor after them.
    async fn skip_what_is_there(
        &mut self,
        conn: &mut PgConnection,
        page: usize,
        progress: &mut impl FnMut(ImportProgress),
    ) -> Result<(), ImportError> {
        // Every committed row, also those above the delivery horizon: this is about what
        // the table holds, not about what may be delivered yet.
        let query = format!(
            "SELECT {COLUMNS} FROM events e WHERE (e.tx_id, e.seq) > ($1::text::xid8, $2) \
             ORDER BY e.tx_id, e.seq LIMIT $3"
        );
        let mut after = Position::START;
        loop {
            let rows = sqlx::query(&query)
                .bind(after.commit.to_string())
                .bind(i64::try_from(after.sequence).unwrap_or(i64::MAX))
                .bind(i64::try_from(page.max(1)).unwrap_or(i64::MAX))
                .fetch_all(&mut *conn)
                .await
                .map_err(target_error)?;
            if rows.is_empty() {
                return Ok(());
            }
            for row in &rows {
                let stored = decode(row).map_err(ImportError::Target)?;
                after = stored.position;
                let Some(expected) = self.next_checked().await? else {
                    return Err(ImportError::TargetAhead {
                        stream: stored.stream.to_string(),
                        version: stored.version,
                    });
                };
                if !stored.is_same_event_as(&expected) {
                    return Err(ImportError::ForeignEvent {
                        stream: stored.stream.to_string(),
                        version: stored.version,
                        source_stream: expected.stream,
                        source_version: expected.version,
                    });
                }
                self.progress.skipped += 1;
            }
            progress(self.progress);
        }
    }

    /// Writes every source event after the skipped prefix, whole source appends at a
    /// time, `options.batch` events (or a few more) per transaction.
    async fn write_the_rest(
        &mut self,
        conn: &mut PgConnection,
        channel: &str,
        options: &ImportOptions,
        progress: &mut impl FnMut(ImportProgress),
    ) -> Result<(), ImportError> {
        let target_batch = options.batch.max(1);
        let mut batch = Batch::default();
        // The source append being gathered: complete only once the next event is not
        // part of it.
        let mut append: Vec<RecordedEvent> = Vec::new();
        while let Some(event) = self.next_checked().await? {
            if append.last().is_some_and(|last| !same_append(last, &event)) {
                batch.push_append(std::mem::take(&mut append))?;
                if batch.len() >= target_batch {
                    self.commit(conn, channel, &mut batch, progress).await?;
                }
            }
            append.push(event);
        }
        batch.push_append(append)?;
        if !batch.is_empty() {
            self.commit(conn, channel, &mut batch, progress).await?;
        }
        Ok(())
    }

    async fn commit(
        &mut self,
        conn: &mut PgConnection,
        channel: &str,
        batch: &mut Batch,
        progress: &mut impl FnMut(ImportProgress),
    ) -> Result<(), ImportError> {
        let written = std::mem::take(batch).write(conn, channel).await?;
        self.progress.written += written;
        self.progress.batches += 1;
        progress(self.progress);
        Ok(())
    }

    /// Checks the target holds exactly the source's events, and reports.
    async fn finish(self, conn: &mut PgConnection) -> Result<ImportReport, ImportError> {
        let found: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&mut *conn)
            .await
            .map_err(target_error)?;
        let found = u64::try_from(found).unwrap_or(0);
        if found != self.progress.read {
            return Err(ImportError::TargetChanged {
                expected: self.progress.read,
                found,
            });
        }
        let head: Option<(String, i64)> = sqlx::query_as(
            "SELECT tx_id::text AS commit_text, seq FROM events ORDER BY tx_id DESC, seq DESC LIMIT 1",
        )
        .fetch_optional(&mut *conn)
        .await
        .map_err(target_error)?;
        let target_head = match head {
            None => Position::START,
            Some((tx_id, seq)) => Position {
                commit: parse_xid(&tx_id).map_err(|reason| {
                    ImportError::Target(StoreError::Corrupt {
                        stream: String::new(),
                        version: 0,
                        reason,
                    })
                })?,
                sequence: u64::try_from(seq).unwrap_or(0),
            },
        };
        Ok(ImportReport {
            events: self.progress.read,
            streams: self.links.len() as u64,
            skipped: self.progress.skipped,
            written: self.progress.written,
            batches: self.progress.batches,
            target_head,
        })
    }
}

/// Whether `next` was recorded by the same append as `last` (see the module docs).
fn same_append(last: &RecordedEvent, next: &RecordedEvent) -> bool {
    next.stream == last.stream
        && next.version == last.version + 1
        && next.metadata.command_id == last.metadata.command_id
        && next.recorded_at == last.recorded_at
}

/// One target transaction's rows, column by column, in source order.
#[derive(Default)]
struct Batch {
    event_ids: Vec<Uuid>,
    streams: Vec<String>,
    versions: Vec<i64>,
    event_types: Vec<String>,
    schema_versions: Vec<i64>,
    data: Vec<String>,
    metadata: Vec<String>,
    command_ids: Vec<Uuid>,
    recorded_at: Vec<DateTime<Utc>>,
    prev_hashes: Vec<String>,
    hashes: Vec<String>,
    batch_ends: Vec<i64>,
}

/// The whole batch in one statement, rows in source order (so `seq` follows it), with
/// the commit notification; returns the sequence numbers in source order to prove it.
const INSERT: &str = concat!(
    insert_many_streams!("event_id, seq"),
    "SELECT (SELECT array_agg(ins.seq ORDER BY o.ord)
        FROM ins JOIN unnest($1::uuid[]) WITH ORDINALITY AS o(event_id, ord) USING (event_id))
       AS seqs
FROM pg_notify($13, '')"
);

impl Batch {
    fn len(&self) -> usize {
        self.event_ids.len()
    }

    fn is_empty(&self) -> bool {
        self.event_ids.is_empty()
    }

    /// Adds one source append's events (consecutive versions of one stream).
    fn push_append(&mut self, events: Vec<RecordedEvent>) -> Result<(), ImportError> {
        let Some(end) = events.last().map(|e| e.version) else {
            return Ok(());
        };
        for e in events {
            self.event_ids.push(e.event_id);
            self.streams.push(e.stream.as_str().to_owned());
            self.versions
                .push(i64::try_from(e.version).unwrap_or(i64::MAX));
            self.event_types.push(e.event_type);
            self.schema_versions.push(i64::from(e.schema_version));
            self.data.push(e.data.to_string());
            self.metadata.push(
                serde_json::to_string(&e.metadata)
                    .map_err(|err| ImportError::Target(StoreError::unavailable(err)))?,
            );
            self.command_ids.push(e.metadata.command_id);
            self.recorded_at.push(e.recorded_at);
            self.prev_hashes.push(e.prev_hash);
            self.hashes.push(e.hash);
            self.batch_ends.push(i64::try_from(end).unwrap_or(i64::MAX));
        }
        Ok(())
    }

    /// Writes the batch in one transaction; returns how many events it wrote.
    async fn write(self, conn: &mut PgConnection, channel: &str) -> Result<u64, ImportError> {
        let mut tx = conn.begin().await.map_err(target_error)?;
        let inserted = sqlx::query(INSERT)
            .bind(&self.event_ids)
            .bind(&self.streams)
            .bind(&self.versions)
            .bind(&self.event_types)
            .bind(&self.schema_versions)
            .bind(&self.data)
            .bind(&self.metadata)
            .bind(&self.command_ids)
            .bind(&self.recorded_at)
            .bind(&self.prev_hashes)
            .bind(&self.hashes)
            .bind(&self.batch_ends)
            .bind(channel)
            .fetch_one(&mut *tx)
            .await;
        let row = match inserted {
            Ok(row) => row,
            // Someone else took an id or a version this batch carries. The transaction
            // rolls back when `tx` is dropped.
            Err(err) if unique_violation(&err).is_some() => {
                return Err(ImportError::WrittenMeanwhile)
            }
            Err(err) => return Err(target_error(err)),
        };
        let seqs: Vec<i64> = row
            .try_get::<Option<Vec<i64>>, _>("seqs")
            .map_err(target_error)?
            .unwrap_or_default();
        if seqs.len() != self.len() || seqs.windows(2).any(|w| w[0] >= w[1]) {
            return Err(ImportError::OrderNotKept);
        }
        tx.commit().await.map_err(target_error)?;
        Ok(self.len() as u64)
    }
}
