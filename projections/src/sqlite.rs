//! What only SQLite needs: opening the file and its pragmas, the write transaction
//! (`BEGIN IMMEDIATE`), and how times are stored.
//!
//! The embedded deployment keeps its read models in their own file,
//! `<data-dir>/read.sqlite`, in WAL mode: one writer connection (the runtime's batches
//! and rebuilds take turns on it, so they never fight over SQLite's write lock inside
//! one process) and a pool of read-only connections for queries. Several processes on
//! one file take turns through SQLite's write lock; no lease is needed.

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::ConnectOptions;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The read-model database (either engine), where code written before PostgreSQL
/// looked for it.
pub use crate::db::ReadDb;

/// The file name of the read models inside a data directory.
pub const READ_DB_FILE: &str = "read.sqlite";

/// Read connections in the query pool (WAL lets them read while the writer writes).
const READERS: u32 = 4;
/// The page size of a new read-model file. Audit rows (a whole event each) and message
/// rows are large: 16 KiB pages hold a dozen of them, so a catch-up splits, balances
/// and writes to the WAL far fewer pages than with SQLite's 4 KiB (about an eighth
/// faster replay, the same inbox latency; docs/benchmarks.md). A file created before
/// keeps the page size it has: SQLite cannot change it in WAL mode.
const PAGE_SIZE: u32 = 16 * 1024;
/// The WAL size, in bytes, past which a commit checkpoints it into the file. A
/// checkpoint copies each page once however often the batches since the last one
/// rewrote it: fewer, larger checkpoints copy far less during catch-up (SQLite's
/// default, 1,000 pages, took a tenth of a replay).
const CHECKPOINT_BYTES: u32 = 32 * 1024 * 1024;
/// Prepared statements kept per connection: every projector's statements for two
/// generations (the serving one and the one being rebuilt) fit.
const STATEMENT_CACHE: usize = 512;

/// `<data_dir>/read.sqlite`.
pub(crate) fn default_path(data_dir: &Path) -> PathBuf {
    data_dir.join(READ_DB_FILE)
}

/// The SQLite read-model database: one writer connection and a pool of readers.
#[derive(Clone, Debug)]
pub(crate) struct SqliteDb {
    write: SqlitePool,
    read: SqlitePool,
    path: PathBuf,
}

fn options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .page_size(PAGE_SIZE)
        .journal_mode(SqliteJournalMode::Wal)
        // Read models are derived: after a power cut the last batches may be lost, but
        // batch and checkpoint are lost together, so the projector simply re-applies
        // them. NORMAL keeps WAL consistent and skips an fsync per batch.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(false)
        .statement_cache_capacity(STATEMENT_CACHE)
        .pragma("cache_size", "-65536")
        .pragma("temp_store", "memory")
        .log_statements(tracing::log::LevelFilter::Trace)
}

/// Sets the writer's `wal_autocheckpoint` (counted in pages) to [`CHECKPOINT_BYTES`]
/// of this file's pages, whatever page size the file was created with.
async fn checkpoint_by_bytes(conn: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
    let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(&mut *conn)
        .await?;
    let pages = i64::from(CHECKPOINT_BYTES) / page_size.max(512);
    sqlx::query(&format!("PRAGMA wal_autocheckpoint = {pages}"))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

impl SqliteDb {
    /// Opens (creating when needed) the database at `path` in WAL mode.
    pub(crate) async fn open(path: &Path) -> Result<Self, sqlx::Error> {
        // The writer first: it creates the file and switches it to WAL, which the
        // read-only connections need.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            .after_connect(|conn, _| Box::pin(checkpoint_by_bytes(conn)))
            .after_release(|conn, _| Box::pin(reusable(conn)))
            .connect_with(options(path))
            .await?;
        let read = SqlitePoolOptions::new()
            .max_connections(READERS)
            .min_connections(1)
            .connect_with(options(path).read_only(true))
            .await?;
        Ok(Self {
            write,
            read,
            path: path.to_owned(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }

    /// A write transaction holding SQLite's write lock from its first statement
    /// (`BEGIN IMMEDIATE`), so reading checkpoints and writing rows cannot be
    /// interleaved with another process's writes.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.write.begin_with("BEGIN IMMEDIATE").await
    }

    /// A read transaction on a read-only connection (WAL gives it one snapshot).
    pub(crate) async fn begin_read(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.read.begin().await
    }

    #[cfg(test)]
    pub(crate) async fn dump_table(&self, table: &str) -> Vec<String> {
        let mut conn = self.read.acquire().await.expect("a read connection");
        let columns: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
        ))
        .fetch_all(&mut *conn)
        .await
        .expect("table columns");
        assert!(!columns.is_empty(), "table {table} does not exist");
        let list = columns
            .iter()
            .map(|c| format!("quote({c})"))
            .collect::<Vec<_>>()
            .join(" || '|' || ");
        sqlx::query_scalar(&format!("SELECT {list} AS r FROM {table} ORDER BY r"))
            .fetch_all(&mut *conn)
            .await
            .expect("table rows")
    }

    #[cfg(test)]
    pub(crate) async fn table_exists(&self, table: &str) -> bool {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1",
        )
        .bind(table)
        .fetch_one(&self.read)
        .await
        .expect("sqlite_master");
        n > 0
    }
}

/// How SQLite stores a time: RFC 3339 UTC with exactly six fractional digits, so text
/// order is time order and range filters can compare strings.
pub fn ts(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Reads back a time stored by [`ts`].
pub fn parse_ts(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Whether the writer connection, handed back to its pool, may serve the next batch.
/// Not when a transaction ended on SQLite's side but not on sqlx's: a disk that fills
/// up fails the COMMIT and SQLite rolls the transaction back by itself, so the ROLLBACK
/// sqlx then sends fails too and sqlx goes on counting a transaction that no longer
/// exists, refusing every later BEGIN. Such a connection is closed and the pool opens a
/// fresh one, so the runtime's retries succeed once there is room again.
async fn reusable(conn: &mut sqlx::SqliteConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Connection;
    // A committed batch (the usual case) is counted out already: no round trip.
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    // The ROLLBACK a dropped transaction queued runs before this ping answers.
    conn.ping().await?;
    Ok(!conn.is_in_transaction())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_transaction_sqlite_ended_by_itself_does_not_wedge_the_writer() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = SqliteDb::open(&dir.path().join("read.sqlite"))
            .await
            .expect("a new file");
        sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(&db.write)
            .await
            .expect("a table");
        {
            let mut tx = db.begin_write().await.expect("a write transaction");
            // What a full disk does at COMMIT: SQLite ends the transaction on its own.
            sqlx::raw_sql("ROLLBACK")
                .execute(&mut *tx)
                .await
                .expect("ended behind sqlx's back");
            let failed = tx.commit().await;
            assert!(failed.is_err(), "the COMMIT fails: no transaction is open");
        }
        let mut tx = db
            .begin_write()
            .await
            .expect("the next batch begins on a fresh connection");
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut *tx)
            .await
            .expect("a write");
        tx.commit().await.expect("committed");
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
            .fetch_one(&db.write)
            .await
            .expect("a count");
        assert_eq!(rows, 1);
    }

    #[test]
    fn stored_times_sort_as_text() {
        let a: DateTime<Utc> = "2025-03-10T09:00:00Z".parse().unwrap();
        let b: DateTime<Utc> = "2025-03-10T10:00:00.5Z".parse().unwrap();
        assert!(ts(&a) < ts(&b));
        assert_eq!(ts(&a), "2025-03-10T09:00:00.000000Z");
        assert_eq!(parse_ts(&ts(&b)), Some(b));
    }

    async fn writer_pragma(db: &SqliteDb, name: &str) -> i64 {
        sqlx::query_scalar(&format!("PRAGMA {name}"))
            .fetch_one(&db.write)
            .await
            .expect("a pragma")
    }

    #[tokio::test]
    async fn a_new_file_has_large_pages_and_an_old_one_keeps_its_own() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let fresh = SqliteDb::open(&dir.path().join("fresh.sqlite"))
            .await
            .expect("a new file");
        assert_eq!(writer_pragma(&fresh, "page_size").await, 16_384);
        assert_eq!(writer_pragma(&fresh, "wal_autocheckpoint").await, 2_048);
        fresh.close().await;

        // A file an older build created, with SQLite's default 4 KiB pages, in WAL mode.
        let old_path = dir.path().join("old.sqlite");
        let mut old = SqliteConnectOptions::new()
            .filename(&old_path)
            .create_if_missing(true)
            .page_size(4096)
            .journal_mode(SqliteJournalMode::Wal)
            .connect()
            .await
            .expect("an old file");
        sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(&mut old)
            .await
            .expect("a table");
        sqlx::Connection::close(old).await.expect("closed");
        let reopened = SqliteDb::open(&old_path).await.expect("the old file");
        assert_eq!(writer_pragma(&reopened, "page_size").await, 4_096);
        // The same 32 MiB of WAL between checkpoints, counted in its smaller pages.
        assert_eq!(writer_pragma(&reopened, "wal_autocheckpoint").await, 8_192);
        reopened.close().await;
    }
}
