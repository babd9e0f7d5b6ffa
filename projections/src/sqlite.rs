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

impl SqliteDb {
    /// Opens (creating when needed) the database at `path` in WAL mode.
    pub(crate) async fn open(path: &Path) -> Result<Self, sqlx::Error> {
        // The writer first: it creates the file and switches it to WAL, which the
        // read-only connections need.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(
                // A checkpoint copies each page once however often the batches since the
                // last one rewrote it: fewer, larger checkpoints copy far less during
                // catch-up (the default, 1,000 pages, took a tenth of a replay).
                options(path).pragma("wal_autocheckpoint", "8192"),
            )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_times_sort_as_text() {
        let a: DateTime<Utc> = "2025-03-10T09:00:00Z".parse().unwrap();
        let b: DateTime<Utc> = "2025-03-10T10:00:00.5Z".parse().unwrap();
        assert!(ts(&a) < ts(&b));
        assert_eq!(ts(&a), "2025-03-10T09:00:00.000000Z");
        assert_eq!(parse_ts(&ts(&b)), Some(b));
    }
}
