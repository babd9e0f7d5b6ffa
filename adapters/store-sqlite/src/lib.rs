//! Homeroom's embedded event store: the whole log in one SQLite file.
//!
//! [`SqliteStore`] implements the event-store ports of `homeroom-eventstore`
//! ([`EventAppender`], [`EventReader`], [`EventSubscriber`]) and passes its conformance
//! kit unchanged. What it adds, and why:
//!
//! - **Durable.** WAL journal with `synchronous=FULL`: an append is acknowledged only
//!   after its transaction is fsynced, so neither a SIGKILL nor a power cut loses an
//!   acknowledged event.
//! - **Group commit** (the `writer` module). One writer task owns the only write
//!   connection. Appends queue on a channel while the previous transaction syncs; the
//!   next transaction applies all of them (up to 256) at once, so many appends share one
//!   fsync. Each request is checked on its own (idempotent retry, the facts its decision
//!   read, expected version), so a conflict never fails its neighbours; a failed
//!   transaction fails its whole batch and nothing of it is kept.
//!   [`SqliteStore::stats`] shows the batching.
//! - **Facts checked with the append.** The single writer checks
//!   [`append_with_facts`](EventAppender::append_with_facts)'s fact versions under the
//!   write lock, so [`checks_facts`](EventAppender::checks_facts) is true and the
//!   command service needs no separate version check.
//! - **Gap-free reads.** With one writer, rows are inserted in commit order, so the
//!   `position` column (the global sequence, [`Position::at`]) is the delivery order and
//!   `read_all` by position never skips an event. Reads use a pool of read-only
//!   connections that WAL lets run beside the writer.
//! - **Live subscriptions** through the kit's [`catch_up_then_live`] and a
//!   [`CommitSignal`] the writer raises after each commit.
//! - **Immutable.** Triggers refuse any `UPDATE` or `DELETE` of an event; the hash
//!   chain detects whoever drops them.
//! - **Several processes.** Another process may append to the same file. The writer
//!   checks `PRAGMA data_version` under the write lock and drops its cached stream heads
//!   when the file changed; the `UNIQUE(stream, version)` key is the final guard. A
//!   background tick (the `maintenance` module, every 250 ms) wakes this process's
//!   subscribers for commits made elsewhere, and checkpoints the WAL off the commit path.
//! - **Graceful shutdown.** [`SqliteStore::close`] stops taking appends, commits what is
//!   queued, and closes the file, so a server can drain on SIGTERM.
//!
//! The schema is `migrations/`, applied with `sqlx::migrate!` when the file is opened.
//!
//! ```no_run
//! # async fn demo() -> Result<(), homeroom_eventstore::StoreError> {
//! use homeroom_eventstore::{EventReader, Position};
//! use homeroom_store_sqlite::SqliteStore;
//!
//! let store = SqliteStore::open(std::path::Path::new("homeroom-data/events.sqlite")).await?;
//! let first_page = store.read_all(Position::START, 100).await?;
//! store.close().await;
//! # Ok(()) }
//! ```

mod maintenance;
mod reader;
mod rows;
mod writer;

pub use writer::WriterStats;

use async_trait::async_trait;
use homeroom_eventstore::subscription::{catch_up_then_live, CommitSignal};
use homeroom_eventstore::{
    AppendResult, EventAppender, EventReader, EventStream, EventSubscriber, ExpectedVersion,
    NewEvent, Position, RecordedEvent, StoreError, StreamId,
};
use reader::Reader;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::ConnectOptions;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// The schema, embedded in the binary.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Appends that may wait for the writer before `append` itself waits: a bound on memory,
/// far above what one batch takes.
const QUEUE: usize = 4 * writer::MAX_BATCH;

/// Read connections: enough for the command service and a few subscribers at once.
const READ_CONNECTIONS: u32 = 4;

/// How long a connection waits for a lock held by another process before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The embedded event store: one file, one writer task, a pool of readers.
///
/// Clones share the same file, writer and pool; [`SqliteStore::close`] closes it for all
/// of them. Dropping every clone without closing also stops the writer once the queued
/// appends are committed.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    reader: Arc<Reader>,
    /// The writer's queue; the writer closes it when told to stop, after which sends
    /// fail and appends answer [`StoreError::Closed`].
    requests: mpsc::Sender<writer::Request>,
    /// Stops the writer (dropping it, with the store, stops it too).
    writer: tokio::sync::Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
    /// Stops the tick; dropping it (with the store) stops it too.
    maintenance: Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
    counters: Arc<writer::Counters>,
}

/// What every connection to the file sets.
fn connect_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(false)
        .log_statements(tracing::log::LevelFilter::Trace)
}

impl SqliteStore {
    /// Opens the log in the file at `path`, creating the file and its schema when needed.
    ///
    /// Starts the writer task and the background tick, so it must be called inside a
    /// tokio runtime.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the file cannot be opened, is not an event log
    /// this version understands, or cannot be migrated (nothing is changed then).
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        // The schema first, through a one-connection pool (migrating a bare connection
        // would make `open`'s future unusable where a `Send` future is needed).
        let migrations = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(connect_options(path))
            .await
            .map_err(StoreError::unavailable)?;
        let migrated = MIGRATOR.run(&migrations).await;
        migrations.close().await;
        migrated.map_err(StoreError::unavailable)?;

        let write_conn = connect_options(path)
            // Temporary b-trees and any statement journal stay in memory.
            .pragma("temp_store", "memory")
            .statement_cache_capacity(writer::STATEMENT_CACHE)
            // 8 MiB holds the pages appends touch (the tails of the table and its
            // indexes, one index leaf per busy stream). Bigger costs more than it saves:
            // a b-tree page split parks a page at the lock-page number, and the next
            // commit then walks the whole page cache to drop it (`pcache1Truncate`),
            // which at 64 MiB took 9% of the command benchmark.
            .pragma("cache_size", "-8192")
            .pragma(
                "wal_autocheckpoint",
                maintenance::WRITER_AUTOCHECKPOINT_PAGES.to_string(),
            )
            .connect()
            .await
            .map_err(StoreError::unavailable)?;
        let maintenance_conn = connect_options(path)
            .connect()
            .await
            .map_err(StoreError::unavailable)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .min_connections(1)
            // A SQLite connection in this process cannot go stale: skip the ping.
            .test_before_acquire(false)
            .connect_with(
                connect_options(path)
                    .read_only(true)
                    .pragma("cache_size", "-16384"),
            )
            .await
            .map_err(StoreError::unavailable)?;

        let signal = CommitSignal::default();
        let counters = Arc::new(writer::Counters::default());
        let (requests, queue) = mpsc::channel(QUEUE);
        let writer = writer::Writer::new(write_conn, counters.clone(), signal.clone());
        let (stop_writer, writer_stopped) = oneshot::channel();
        let writer = tokio::spawn(writer.run(queue, writer_stopped));
        let (stop, stopped) = oneshot::channel();
        let tick = tokio::spawn(maintenance::run(maintenance_conn, signal.clone(), stopped));
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                reader: Arc::new(Reader { pool, signal }),
                requests,
                writer: tokio::sync::Mutex::new(Some((stop_writer, writer))),
                maintenance: Mutex::new(Some((stop, tick))),
                counters,
            }),
        })
    }

    /// The file the log lives in. Back it up together with its `-wal` companion (or
    /// with `VACUUM INTO`), never the main file alone while the store is open.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// How the writer has batched appends so far, so group commit can be observed
    /// (in tests, and by operators through metrics).
    pub fn stats(&self) -> WriterStats {
        self.inner.counters.snapshot()
    }

    /// Shuts the store down gracefully, so a server can drain on SIGTERM: refuses new
    /// appends ([`StoreError::Closed`]), commits and answers every append already
    /// accepted, waits for the writer, closes the read pool (live subscriptions end with
    /// an error) and finally the file, which checkpoints and removes the WAL.
    ///
    /// Calling it again, or on a clone, does nothing more.
    pub async fn close(&self) {
        if let Some((stop, writer)) = self.inner.writer.lock().await.take() {
            let _ = stop.send(());
            if let Err(error) = writer.await {
                tracing::error!(%error, "the SQLite writer task failed");
            }
        }
        self.inner.reader.pool.close().await;
        // Subscribers waiting for a commit read once more, find the pool closed, and end.
        self.inner.reader.signal.notify();
        let maintenance = self
            .inner
            .maintenance
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((stop, tick)) = maintenance {
            let _ = stop.send(());
            if let Err(error) = tick.await {
                tracing::error!(%error, "the SQLite maintenance task failed");
            }
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("stats", &self.stats())
            .finish()
    }
}

#[async_trait]
impl EventAppender for SqliteStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        self.append_with_facts(stream, expected, events, &[]).await
    }

    /// Checks the facts in the writer, under the file's write lock, so they cannot move
    /// between the check and the commit.
    async fn append_with_facts(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        facts: &[(StreamId, u64)],
    ) -> Result<AppendResult, StoreError> {
        if events.is_empty() {
            return Err(StoreError::EmptyAppend);
        }
        let encoded = events
            .iter()
            .map(writer::Encoded::new)
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::unavailable)?;
        let (reply, answer) = oneshot::channel();
        self.inner
            .requests
            .send(writer::Request {
                stream: stream.clone(),
                expected,
                facts: facts.to_vec(),
                events,
                encoded,
                reply,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Always: the single writer checks facts atomically with the append.
    fn checks_facts(&self) -> bool {
        true
    }
}

#[async_trait]
impl EventReader for SqliteStore {
    async fn read_stream(
        &self,
        stream: &StreamId,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner
            .reader
            .read_stream(stream, after_version, limit)
            .await
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.reader.read_all(after, limit).await
    }

    async fn stream_versions(&self, streams: &[StreamId]) -> Result<Vec<u64>, StoreError> {
        self.inner.reader.stream_versions(streams).await
    }

    async fn find_command(&self, command_id: Uuid) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.reader.find_command(command_id).await
    }

    async fn head(&self) -> Result<Position, StoreError> {
        self.inner.reader.head().await
    }
}

impl EventSubscriber for SqliteStore {
    /// Catch-up then live, woken by the writer's commit signal (and, for commits made by
    /// other processes, by the background tick within 250 ms).
    fn subscribe_all(&self, after: Position) -> EventStream {
        catch_up_then_live(self.inner.reader.clone(), &self.inner.reader.signal, after)
    }
}
