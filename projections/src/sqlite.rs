//! Everything specific to the SQL engine, in one place: SQLite today.
//!
//! Read models write portable SQL (`$n` parameters, `INSERT … ON CONFLICT`, row-value
//! comparisons) through [`render`], which fills in the few spellings that differ between
//! engines (`{uuid}`, `{ts}`, `{json}`, `{compact}`). What cannot be spelled portably
//! lives here: opening the database and its pragmas, the write transaction
//! (`BEGIN IMMEDIATE`), how times and positions are stored, case-insensitive matching,
//! dropping a generation's tables. A PostgreSQL read store replaces this module.

use crate::error::ProjectionError;
use crate::projector::Generation;
use chrono::{DateTime, SecondsFormat, Utc};
use homeroom_eventstore::Position;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::ConnectOptions;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The SQL engine of the read models.
pub type Db = sqlx::Sqlite;

/// A read-model transaction: projectors write a batch and the runtime its checkpoint in
/// one of these, so both commit or neither does.
pub type Tx<'c> = sqlx::Transaction<'c, Db>;

/// The file name of the read models inside a data directory.
pub const READ_DB_FILE: &str = "read.sqlite";

/// Read connections in the query pool (WAL lets them read while the writer writes).
const READERS: u32 = 4;
/// Prepared statements kept per connection: every projector's statements for two
/// generations (the serving one and the one being rebuilt) fit.
const STATEMENT_CACHE: usize = 512;

/// The read-model database: one writer connection (the runtime's batches and rebuilds
/// take turns on it, so they never fight over SQLite's write lock inside one process)
/// and a pool of read-only connections for queries.
#[derive(Clone, Debug)]
pub struct ReadDb {
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

impl ReadDb {
    /// `<data_dir>/read.sqlite`: where the embedded deployment keeps its read models.
    pub fn default_path(data_dir: &Path) -> PathBuf {
        data_dir.join(READ_DB_FILE)
    }

    /// Opens (creating when needed) the read-model database at `path` in WAL mode.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] when the file cannot be opened.
    pub async fn open(path: &Path) -> Result<Self, ProjectionError> {
        // The writer first: it creates the file and switches it to WAL, which the
        // read-only connections need.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(60))
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

    /// The file the read models live in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes both pools, waiting for connections in use.
    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }

    /// A write transaction holding SQLite's write lock from its first statement
    /// (`BEGIN IMMEDIATE`), so reading checkpoints and writing rows cannot be
    /// interleaved with another process's writes.
    pub(crate) async fn begin_write(&self) -> Result<Tx<'static>, sqlx::Error> {
        self.write.begin_with("BEGIN IMMEDIATE").await
    }

    /// A read connection, for the runtime's own bookkeeping reads.
    pub(crate) async fn read_conn(&self) -> Result<sqlx::pool::PoolConnection<Db>, sqlx::Error> {
        self.read.acquire().await
    }

    /// A read transaction: every statement in it sees one snapshot, so a query reads
    /// the generation it was told about even if a rebuild switches meanwhile.
    pub(crate) async fn begin_read(&self) -> Result<Tx<'static>, sqlx::Error> {
        self.read.begin().await
    }
}

/// Fills the engine-specific spellings into a SQL template:
///
/// - `{uuid}`, `{ts}`, `{json}`: column types of ids, times and JSON documents;
/// - `{compact}`: table options for small rows keyed by their primary key;
/// - `{name}` for any other name: the table suffix of that projector's generation,
///   as `lookup` gives it (`messages{conversations}` → `messages_g3`).
///
/// A name `lookup` does not know is left as written, so the statement fails loudly.
pub fn render(template: &str, lookup: impl Fn(&str) -> Option<Generation>) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let name = &after[..close];
        match name {
            "uuid" => out.push_str("BLOB"),
            "ts" => out.push_str("TEXT"),
            "json" => out.push_str("TEXT"),
            "compact" => out.push_str("WITHOUT ROWID"),
            other => match lookup(other) {
                Some(generation) => out.push_str(&generation.suffix()),
                None => {
                    out.push('{');
                    out.push_str(other);
                    out.push('}');
                }
            },
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// How a time is stored: RFC 3339 UTC with exactly six fractional digits, so text
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

/// A position as two integer columns `(commit, sequence)`.
///
/// # Errors
/// [`ProjectionError::OutOfRange`] beyond `i64::MAX` (SQLite integers are signed).
pub fn position_columns(position: Position) -> Result<(i64, i64), ProjectionError> {
    let commit = i64::try_from(position.commit).map_err(|_| ProjectionError::OutOfRange)?;
    let sequence = i64::try_from(position.sequence).map_err(|_| ProjectionError::OutOfRange)?;
    Ok((commit, sequence))
}

/// Reads back a position stored by [`position_columns`]; `None` for negative values.
pub fn position_from(commit: i64, sequence: i64) -> Option<Position> {
    Some(Position {
        commit: u64::try_from(commit).ok()?,
        sequence: u64::try_from(sequence).ok()?,
    })
}

/// Case-insensitive `LIKE` (SQLite's `LIKE` already ignores ASCII case).
pub const LIKE_CI: &str = "LIKE";

/// A `LIKE … ESCAPE '\'` pattern matching `text` anywhere, with `%`, `_` and `\` in
/// the text matched literally.
pub fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// `$first, $first+1, …` for `count` parameters: an `IN (…)` list of bound values.
pub fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `(?, …), (?, …)`: `rows` rows of `columns` anonymous parameters, for multi-row
/// `INSERT`s. SQLite binds anonymous parameters directly, whereas each `$n` name costs
/// a scan of the statement's parameter names, which makes wide statements quadratic.
pub fn value_rows(rows: usize, columns: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    vec![row; rows].join(", ")
}

/// The runtime's own tables: which generation of each projector serves queries, which
/// one is being built, every generation's checkpoint, and generations waiting to be
/// dropped.
pub(crate) const META_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS projection_generations (
        projector TEXT PRIMARY KEY NOT NULL,
        active_generation BIGINT NOT NULL,
        active_version BIGINT NOT NULL,
        building_generation BIGINT,
        building_version BIGINT,
        next_generation BIGINT NOT NULL,
        switched_at TEXT
    )",
    "CREATE TABLE IF NOT EXISTS projection_checkpoints (
        projector TEXT NOT NULL,
        generation BIGINT NOT NULL,
        commit_pos BIGINT NOT NULL,
        sequence BIGINT NOT NULL,
        PRIMARY KEY (projector, generation)
    )",
    "CREATE TABLE IF NOT EXISTS projection_retired (
        projector TEXT NOT NULL,
        generation BIGINT NOT NULL,
        PRIMARY KEY (projector, generation)
    )",
];

/// Drops one generation's tables (their indexes go with them).
pub(crate) async fn drop_tables(
    tx: &mut Tx<'_>,
    tables: &[&str],
    generation: Generation,
) -> Result<(), sqlx::Error> {
    for table in tables {
        let sql = format!("DROP TABLE IF EXISTS {table}{}", generation.suffix());
        sqlx::query(&sql).execute(&mut **tx).await?;
    }
    Ok(())
}

/// Every row of a table as JSON arrays in a stable order: test support for comparing
/// two generations.
#[cfg(test)]
pub(crate) async fn dump_table(db: &ReadDb, table: &str) -> Vec<String> {
    let mut conn = db.read.acquire().await.expect("a read connection");
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

/// Whether a table exists: test support.
#[cfg(test)]
pub(crate) async fn table_exists(db: &ReadDb, table: &str) -> bool {
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1")
            .bind(table)
            .fetch_one(&db.read)
            .await
            .expect("sqlite_master");
    n > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_get_engine_types_and_generation_suffixes() {
        let sql = render(
            "CREATE TABLE people{directory} (id {uuid}, at {ts}) {compact}",
            |name| (name == "directory").then_some(Generation::new(3)),
        );
        assert_eq!(
            sql,
            "CREATE TABLE people_g3 (id BLOB, at TEXT) WITHOUT ROWID"
        );
        assert_eq!(render("x{unknown}", |_| None), "x{unknown}");
    }

    #[test]
    fn stored_times_sort_as_text() {
        let a: DateTime<Utc> = "2025-03-10T09:00:00Z".parse().unwrap();
        let b: DateTime<Utc> = "2025-03-10T10:00:00.5Z".parse().unwrap();
        assert!(ts(&a) < ts(&b));
        assert_eq!(ts(&a), "2025-03-10T09:00:00.000000Z");
        assert_eq!(parse_ts(&ts(&b)), Some(b));
    }

    #[test]
    fn search_patterns_match_wildcards_literally() {
        assert_eq!(contains_pattern("50%_a\\"), "%50\\%\\_a\\\\%");
        assert_eq!(placeholders(3, 2), "$3, $4");
        assert_eq!(value_rows(2, 2), "(?, ?), (?, ?)");
    }
}
