//! The dialect layer: one projector and query code base over SQLite and PostgreSQL.
//!
//! Read models are written once, against this module, and run on either engine:
//!
//! - [`ReadDb`]: the read-model database, an enum over the engines' pools
//!   ([`crate::sqlite`], [`crate::postgres`] hold what opening each one takes);
//! - [`Tx`]: a transaction on either engine, with [`Tx::engine`] telling which;
//! - [`query`] and [`Builder`]: statements with engine-neutral [`Value`] parameters,
//!   converted to the engine's own types only when executed (a time is RFC 3339 text on
//!   SQLite and `timestamptz` on PostgreSQL, an id a 16-byte blob or a `uuid`);
//! - [`Row`]: a result row on either engine, read with [`Row::get`] and [`Row::time`];
//! - [`Engine::render`]: fills the few spellings that differ into SQL templates
//!   (`{uuid}`, `{ts}`, `{json}`, `{compact}`) and the generation suffixes of tables.
//!
//! Everything else is written once in the SQL both engines share: `$n` parameters,
//! `INSERT … ON CONFLICT … DO UPDATE SET x = excluded.x`, row-value comparisons,
//! `CREATE TABLE IF NOT EXISTS`. `sqlx::Any` is not used: it cannot bind ids or times,
//! and it would hide which engine a statement runs on where the engines must differ
//! (write locks, snapshots, the lease).

use crate::error::ProjectionError;
use crate::postgres::{PgDb, PgReadConfig};
use crate::projector::Generation;
use crate::sqlite::SqliteDb;
use chrono::{DateTime, Utc};
use homeroom_eventstore::Position;
use serde::Serialize;
use sqlx::postgres::{PgRow, Postgres};
use sqlx::sqlite::{Sqlite, SqliteRow};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// Which SQL engine holds the read models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// SQLite: the embedded deployment's `<data-dir>/read.sqlite`.
    Sqlite,
    /// PostgreSQL: the server deployment, one schema per instance.
    Postgres,
}

impl Engine {
    /// The engine's spelling of a template token, if it is one.
    fn spelling(self, token: &str) -> Option<&'static str> {
        Some(match (self, token) {
            (Engine::Sqlite, "uuid") => "BLOB",
            (Engine::Postgres, "uuid") => "UUID",
            (Engine::Sqlite, "ts") => "TEXT",
            (Engine::Postgres, "ts") => "TIMESTAMPTZ",
            // Recorded JSON is kept as text on both engines, so it reads back exactly as
            // it was recorded (jsonb would reorder keys and drop duplicates).
            (_, "json") => "TEXT",
            (Engine::Sqlite, "compact") => "WITHOUT ROWID",
            (Engine::Postgres, "compact") => "",
            (Engine::Sqlite, "or_fail") => "OR FAIL",
            (Engine::Postgres, "or_fail") => "",
            _ => return None,
        })
    }

    /// Fills the engine-specific spellings into a SQL template:
    ///
    /// - `{uuid}`, `{ts}`, `{json}`: column types of ids, times and JSON documents;
    /// - `{compact}`: table options for small rows keyed by their primary key;
    /// - `{or_fail}`: after `INSERT` / `UPDATE` of many rows: on SQLite a failing row
    ///   stops the statement without undoing its earlier rows, so SQLite keeps no
    ///   statement journal (a copy of every page the statement touches). That is safe
    ///   because every projection batch is one transaction, rolled back whole on any
    ///   error; PostgreSQL has no such clause and needs none;
    /// - `{name}` for any other name: the table suffix of that projector's generation,
    ///   as `lookup` gives it (`messages{conversations}` → `messages_g3`).
    ///
    /// A name `lookup` does not know is left as written, so the statement fails loudly.
    pub fn render(self, template: &str, lookup: impl Fn(&str) -> Option<Generation>) -> String {
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
            match self.spelling(name) {
                Some(spelling) => out.push_str(spelling),
                None => match lookup(name) {
                    Some(generation) => out.push_str(&generation.suffix()),
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                },
            }
            rest = &after[close + 1..];
        }
        out.push_str(rest);
        out
    }

    /// `LIKE` ignoring the case of ASCII letters: SQLite's `LIKE` does already;
    /// PostgreSQL has `ILIKE`. Other letters are folded beforehand ([`crate::search`]).
    pub fn like_ci(self) -> &'static str {
        match self {
            Engine::Sqlite => "LIKE",
            Engine::Postgres => "ILIKE",
        }
    }

    /// `rows` rows of `columns` parameters, for multi-row `INSERT`s. SQLite gets
    /// anonymous `?` (each `$n` name costs a scan of the statement's parameter names,
    /// which makes wide statements quadratic); PostgreSQL needs `$1 … $n`.
    pub fn value_rows(self, rows: usize, columns: usize) -> String {
        match self {
            Engine::Sqlite => {
                let row = format!("({})", vec!["?"; columns].join(", "));
                vec![row; rows].join(", ")
            }
            Engine::Postgres => (0..rows)
                .map(|r| format!("({})", placeholders(r * columns + 1, columns)))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// The read-model database, on SQLite or PostgreSQL. Cheap to clone: clones share the
/// pools.
#[derive(Clone, Debug)]
pub struct ReadDb {
    backend: Backend,
}

#[derive(Clone, Debug)]
enum Backend {
    Sqlite(SqliteDb),
    Postgres(PgDb),
}

impl ReadDb {
    /// `<data_dir>/read.sqlite`: where the embedded deployment keeps its read models.
    pub fn default_path(data_dir: &Path) -> PathBuf {
        crate::sqlite::default_path(data_dir)
    }

    /// Opens (creating when needed) the SQLite read-model database at `path`, in WAL
    /// mode.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] when the file cannot be opened.
    pub async fn open(path: &Path) -> Result<Self, ProjectionError> {
        Ok(Self {
            backend: Backend::Sqlite(SqliteDb::open(path).await?),
        })
    }

    /// Connects to the read models in `schema` of the PostgreSQL database at `url`
    /// (creating the schema when missing), with the defaults of [`PgReadConfig::new`].
    /// Several instances can share one database, each in its own schema.
    ///
    /// # Errors
    /// [`ProjectionError::BadSchema`] for a schema name that would need quoting;
    /// [`ProjectionError::Database`] when PostgreSQL cannot be reached.
    pub async fn connect_postgres(url: &str, schema: &str) -> Result<Self, ProjectionError> {
        Self::connect_postgres_with(PgReadConfig::new(url, schema)).await
    }

    /// Like [`ReadDb::connect_postgres`], with an explicit configuration.
    ///
    /// # Errors
    /// As [`ReadDb::connect_postgres`].
    pub async fn connect_postgres_with(config: PgReadConfig) -> Result<Self, ProjectionError> {
        Ok(Self {
            backend: Backend::Postgres(PgDb::connect(config).await?),
        })
    }

    /// Whether the PostgreSQL `schema` holds read models (were they ever built there?),
    /// creating nothing to find out.
    ///
    /// # Errors
    /// [`ProjectionError::BadSchema`] for a schema name that would need quoting;
    /// [`ProjectionError::Database`] when PostgreSQL cannot be reached.
    pub async fn postgres_holds(url: &str, schema: &str) -> Result<bool, ProjectionError> {
        crate::postgres::holds_read_models(url, schema).await
    }

    /// The engine holding the read models.
    pub fn engine(&self) -> Engine {
        match self.backend {
            Backend::Sqlite(_) => Engine::Sqlite,
            Backend::Postgres(_) => Engine::Postgres,
        }
    }

    /// The SQLite file the read models live in (`None` on PostgreSQL).
    pub fn path(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Sqlite(db) => Some(db.path()),
            Backend::Postgres(_) => None,
        }
    }

    /// The PostgreSQL schema the read models live in (`None` on SQLite).
    pub fn schema(&self) -> Option<&str> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(db) => Some(db.schema()),
        }
    }

    /// Closes the pools, waiting for connections in use.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(db) => db.close().await,
            Backend::Postgres(db) => db.close().await,
        }
    }

    /// The PostgreSQL side, for the runtime's lease.
    pub(crate) fn postgres(&self) -> Option<&PgDb> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(db) => Some(db),
        }
    }

    /// A write transaction that no other writer of these read models (in this process
    /// or another) can interleave with: SQLite's write lock (`BEGIN IMMEDIATE`), a
    /// transaction-scoped advisory lock of the schema on PostgreSQL. Reading
    /// checkpoints and writing rows in it is therefore one atomic step.
    pub(crate) async fn begin_write(&self) -> Result<Tx<'static>, sqlx::Error> {
        Ok(match &self.backend {
            Backend::Sqlite(db) => Tx(TxInner::Sqlite(db.begin_write().await?)),
            Backend::Postgres(db) => Tx(TxInner::Postgres(db.begin_write().await?)),
        })
    }

    /// A read transaction: every statement in it sees one snapshot, so a query reads
    /// the generation it was told about even if a rebuild switches meanwhile.
    pub(crate) async fn begin_read(&self) -> Result<Tx<'static>, sqlx::Error> {
        Ok(match &self.backend {
            Backend::Sqlite(db) => Tx(TxInner::Sqlite(db.begin_read().await?)),
            Backend::Postgres(db) => Tx(TxInner::Postgres(db.begin_read().await?)),
        })
    }

    /// Prepares a write transaction for dropping retired generations' tables: on
    /// PostgreSQL it waits (briefly) until no query still reads an old generation.
    pub(crate) async fn before_drop(&self, tx: &mut Tx<'_>) -> Result<(), sqlx::Error> {
        match (&self.backend, tx.postgres()) {
            (Backend::Postgres(db), Some(conn)) => db.before_drop(conn).await,
            _ => Ok(()),
        }
    }

    /// Whether the lease is still held by the session `pid` (always on SQLite, which
    /// has no lease).
    pub(crate) async fn holds_lease(&self, tx: &mut Tx<'_>, pid: i32) -> Result<bool, sqlx::Error> {
        match (&self.backend, tx.postgres()) {
            (Backend::Postgres(db), Some(conn)) => db.holds_lease(conn, pid).await,
            _ => Ok(true),
        }
    }

    /// Tells other processes, when `tx` commits, that serving checkpoints moved
    /// (PostgreSQL's `NOTIFY`; nothing on SQLite).
    pub(crate) async fn notify(&self, tx: &mut Tx<'_>) -> Result<(), sqlx::Error> {
        match (&self.backend, tx.postgres()) {
            (Backend::Postgres(db), Some(conn)) => db.notify(conn).await,
            _ => Ok(()),
        }
    }

    /// Every row of a table as text in a stable order: test support for comparing
    /// two generations.
    #[cfg(test)]
    pub(crate) async fn dump_table(&self, table: &str) -> Vec<String> {
        match &self.backend {
            Backend::Sqlite(db) => db.dump_table(table).await,
            Backend::Postgres(db) => db.dump_table(table).await,
        }
    }

    /// Whether a table exists: test support.
    #[cfg(test)]
    pub(crate) async fn table_exists(&self, table: &str) -> bool {
        match &self.backend {
            Backend::Sqlite(db) => db.table_exists(table).await,
            Backend::Postgres(db) => db.table_exists(table).await,
        }
    }
}

/// A read-model transaction on either engine: projectors write a batch and the runtime
/// its checkpoint in one of these, so both commit or neither does.
pub struct Tx<'c>(TxInner<'c>);

enum TxInner<'c> {
    Sqlite(sqlx::Transaction<'c, Sqlite>),
    Postgres(sqlx::Transaction<'c, Postgres>),
}

impl std::fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Tx").field(&self.engine()).finish()
    }
}

impl Tx<'_> {
    /// The engine this transaction runs on: projectors render their statements for it.
    pub fn engine(&self) -> Engine {
        match self.0 {
            TxInner::Sqlite(_) => Engine::Sqlite,
            TxInner::Postgres(_) => Engine::Postgres,
        }
    }

    /// The SQLite connection, for a projector that needs what only SQLite can say.
    pub fn sqlite(&mut self) -> Option<&mut sqlx::SqliteConnection> {
        match &mut self.0 {
            TxInner::Sqlite(tx) => Some(&mut **tx),
            TxInner::Postgres(_) => None,
        }
    }

    /// The PostgreSQL connection, for a projector that needs what only PostgreSQL can
    /// say.
    pub fn postgres(&mut self) -> Option<&mut sqlx::PgConnection> {
        match &mut self.0 {
            TxInner::Sqlite(_) => None,
            TxInner::Postgres(tx) => Some(&mut **tx),
        }
    }

    /// Commits.
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        match self.0 {
            TxInner::Sqlite(tx) => tx.commit().await,
            TxInner::Postgres(tx) => tx.commit().await,
        }
    }

    /// Rolls back.
    pub(crate) async fn rollback(self) -> Result<(), sqlx::Error> {
        match self.0 {
            TxInner::Sqlite(tx) => tx.rollback().await,
            TxInner::Postgres(tx) => tx.rollback().await,
        }
    }
}

/// A statement parameter, converted to the engine's type when the statement runs.
/// Each variant carries its own `NULL`, because PostgreSQL needs the type of a `NULL`
/// parameter too.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'q> {
    /// `BOOLEAN`.
    Bool(Option<bool>),
    /// `BIGINT`.
    Int(Option<i64>),
    /// `TEXT`.
    Text(Option<Cow<'q, str>>),
    /// An id: a 16-byte `BLOB` on SQLite, `UUID` on PostgreSQL.
    Uuid(Option<Uuid>),
    /// A time: RFC 3339 text with six fractional digits on SQLite (so text order is
    /// time order), `TIMESTAMPTZ` on PostgreSQL; both keep microseconds.
    Time(Option<DateTime<Utc>>),
}

macro_rules! value_from {
    ($($t:ty => |$v:ident| $e:expr),* $(,)?) => {
        $(impl<'q> From<$t> for Value<'q> {
            fn from($v: $t) -> Self {
                $e
            }
        })*
    };
}

value_from! {
    bool => |v| Value::Bool(Some(v)),
    Option<bool> => |v| Value::Bool(v),
    i64 => |v| Value::Int(Some(v)),
    Option<i64> => |v| Value::Int(v),
    &'q str => |v| Value::Text(Some(Cow::Borrowed(v))),
    &'q String => |v| Value::Text(Some(Cow::Borrowed(v.as_str()))),
    String => |v| Value::Text(Some(Cow::Owned(v))),
    Option<&'q str> => |v| Value::Text(v.map(Cow::Borrowed)),
    &'q Option<String> => |v| Value::Text(v.as_deref().map(Cow::Borrowed)),
    Option<String> => |v| Value::Text(v.map(Cow::Owned)),
    Uuid => |v| Value::Uuid(Some(v)),
    Option<Uuid> => |v| Value::Uuid(v),
    DateTime<Utc> => |v| Value::Time(Some(v)),
    &'q DateTime<Utc> => |v| Value::Time(Some(*v)),
    Option<DateTime<Utc>> => |v| Value::Time(v),
}

/// A statement and its parameters, for either engine.
#[derive(Debug, Clone)]
#[must_use = "a query does nothing until executed"]
pub struct Query<'q> {
    sql: Cow<'q, str>,
    args: Vec<Value<'q>>,
}

/// A statement (`$1`, `$2`, … for its parameters, bound in order with
/// [`Query::bind`]).
pub fn query(sql: &str) -> Query<'_> {
    Query {
        sql: Cow::Borrowed(sql),
        args: Vec::new(),
    }
}

type SqliteQuery<'a> = sqlx::query::Query<'a, Sqlite, sqlx::sqlite::SqliteArguments<'a>>;
type PgQuery<'a> = sqlx::query::Query<'a, Postgres, sqlx::postgres::PgArguments>;

/// A text as the read models keep it: a NUL as U+FFFD. PostgreSQL cannot store a NUL in
/// text at all, and one name recorded with it (events are never changed) would stop a
/// projector for every district; names are refused with one now, but older logs and
/// texts from outside (a provider's error) may hold one. Both engines keep the same.
fn without_nul(text: Option<Cow<'_, str>>) -> Option<Cow<'_, str>> {
    match text {
        Some(t) if t.contains('\0') => Some(Cow::Owned(t.replace('\0', "\u{FFFD}"))),
        other => other,
    }
}

fn sqlite_query<'a>(sql: &'a str, args: Vec<Value<'a>>) -> SqliteQuery<'a> {
    let mut q = sqlx::query(sql);
    for arg in args {
        q = match arg {
            Value::Bool(v) => q.bind(v),
            Value::Int(v) => q.bind(v),
            Value::Text(v) => q.bind(without_nul(v)),
            Value::Uuid(v) => q.bind(v),
            Value::Time(v) => q.bind(v.map(|t| crate::sqlite::ts(&t))),
        };
    }
    q
}

fn pg_query<'a>(sql: &'a str, args: Vec<Value<'a>>) -> PgQuery<'a> {
    let mut q = sqlx::query(sql);
    for arg in args {
        q = match arg {
            Value::Bool(v) => q.bind(v),
            Value::Int(v) => q.bind(v),
            Value::Text(v) => q.bind(without_nul(v)),
            Value::Uuid(v) => q.bind(v),
            Value::Time(v) => q.bind(v),
        };
    }
    q
}

impl<'q> Query<'q> {
    /// Binds the next parameter.
    pub fn bind(mut self, value: impl Into<Value<'q>>) -> Self {
        self.args.push(value.into());
        self
    }

    /// Runs the statement; returns the number of rows it changed.
    ///
    /// # Errors
    /// The engine's error.
    pub async fn execute(self, tx: &mut Tx<'_>) -> Result<u64, sqlx::Error> {
        let Query { sql, args } = self;
        Ok(match &mut tx.0 {
            TxInner::Sqlite(t) => sqlite_query(&sql, args)
                .execute(&mut **t)
                .await?
                .rows_affected(),
            TxInner::Postgres(t) => pg_query(&sql, args)
                .execute(&mut **t)
                .await?
                .rows_affected(),
        })
    }

    /// Every row the statement returns.
    ///
    /// # Errors
    /// The engine's error.
    pub async fn fetch_all(self, tx: &mut Tx<'_>) -> Result<Vec<Row>, sqlx::Error> {
        let Query { sql, args } = self;
        Ok(match &mut tx.0 {
            TxInner::Sqlite(t) => sqlite_query(&sql, args)
                .fetch_all(&mut **t)
                .await?
                .into_iter()
                .map(|r| Row(RowInner::Sqlite(r)))
                .collect(),
            TxInner::Postgres(t) => pg_query(&sql, args)
                .fetch_all(&mut **t)
                .await?
                .into_iter()
                .map(|r| Row(RowInner::Postgres(r)))
                .collect(),
        })
    }

    /// The first row the statement returns, if any.
    ///
    /// # Errors
    /// The engine's error.
    pub async fn fetch_optional(self, tx: &mut Tx<'_>) -> Result<Option<Row>, sqlx::Error> {
        let Query { sql, args } = self;
        Ok(match &mut tx.0 {
            TxInner::Sqlite(t) => sqlite_query(&sql, args)
                .fetch_optional(&mut **t)
                .await?
                .map(|r| Row(RowInner::Sqlite(r))),
            TxInner::Postgres(t) => pg_query(&sql, args)
                .fetch_optional(&mut **t)
                .await?
                .map(|r| Row(RowInner::Postgres(r))),
        })
    }

    /// The first row the statement returns.
    ///
    /// # Errors
    /// [`sqlx::Error::RowNotFound`] when there is none; the engine's error.
    pub async fn fetch_one(self, tx: &mut Tx<'_>) -> Result<Row, sqlx::Error> {
        self.fetch_optional(tx)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }
}

/// Runs one multi-row statement per `chunk` rows of `rows` (each row the same number of
/// values, in column order), so a batch of events costs a few round trips instead of
/// one per event. `statement(n)` is the statement for `n` rows, rendered for the
/// engine (see [`Engine::value_rows`]). Returns the rows changed.
///
/// # Errors
/// The engine's error; the caller's transaction is then to be rolled back.
pub async fn execute_rows<'q>(
    tx: &mut Tx<'_>,
    rows: Vec<Vec<Value<'q>>>,
    chunk: usize,
    statement: impl Fn(usize) -> String,
) -> Result<u64, sqlx::Error> {
    let mut changed = 0;
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let args: Vec<Vec<Value<'q>>> = rows.by_ref().take(chunk.max(1)).collect();
        let query = Query {
            sql: Cow::Owned(statement(args.len())),
            args: args.into_iter().flatten().collect(),
        };
        changed += query.execute(tx).await?;
    }
    Ok(changed)
}

/// A statement assembled piece by piece (optional filters, `IN` lists), numbering its
/// parameters as they are pushed.
#[derive(Debug, Clone)]
pub struct Builder<'q> {
    sql: String,
    args: Vec<Value<'q>>,
}

impl<'q> Builder<'q> {
    /// Starts with `sql`.
    pub fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            args: Vec::new(),
        }
    }

    /// Appends SQL text.
    pub fn push(&mut self, sql: impl AsRef<str>) -> &mut Self {
        self.sql.push_str(sql.as_ref());
        self
    }

    /// Appends the next parameter's placeholder and binds it.
    pub fn push_bind(&mut self, value: impl Into<Value<'q>>) -> &mut Self {
        self.args.push(value.into());
        self.sql.push('$');
        self.sql.push_str(&self.args.len().to_string());
        self
    }

    /// Appends `$a, $b, …` for `values` (an `IN (…)` list).
    pub fn push_list<V: Into<Value<'q>>>(
        &mut self,
        values: impl IntoIterator<Item = V>,
    ) -> &mut Self {
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                self.sql.push_str(", ");
            }
            self.push_bind(value);
        }
        self
    }

    /// The statement.
    pub fn build(self) -> Query<'q> {
        Query {
            sql: Cow::Owned(self.sql),
            args: self.args,
        }
    }
}

/// A result row on either engine.
pub struct Row(RowInner);

enum RowInner {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

/// Why a stored time could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("unreadable stored time {0:?}")]
struct BadTime(String);

impl Row {
    /// A column by name or index, as a type both engines decode the same way (text,
    /// integers, booleans, ids, and `Option`s of them).
    ///
    /// # Errors
    /// The engine's error for a missing column or a value of another type.
    pub fn get<'r, T, I>(&'r self, index: I) -> Result<T, sqlx::Error>
    where
        I: sqlx::ColumnIndex<SqliteRow> + sqlx::ColumnIndex<PgRow>,
        T: sqlx::Decode<'r, Sqlite>
            + sqlx::Type<Sqlite>
            + sqlx::Decode<'r, Postgres>
            + sqlx::Type<Postgres>,
    {
        match &self.0 {
            RowInner::Sqlite(row) => sqlx::Row::try_get(row, index),
            RowInner::Postgres(row) => sqlx::Row::try_get(row, index),
        }
    }

    /// A time column (stored from [`Value::Time`]); `None` for `NULL`.
    ///
    /// # Errors
    /// [`sqlx::Error::Decode`] for text that is not a stored time; the engine's error.
    pub fn time<I>(&self, index: I) -> Result<Option<DateTime<Utc>>, sqlx::Error>
    where
        I: sqlx::ColumnIndex<SqliteRow> + sqlx::ColumnIndex<PgRow>,
    {
        match &self.0 {
            RowInner::Sqlite(row) => {
                let text: Option<String> = sqlx::Row::try_get(row, index)?;
                text.map(|t| {
                    crate::sqlite::parse_ts(&t)
                        .ok_or_else(|| sqlx::Error::Decode(Box::new(BadTime(t))))
                })
                .transpose()
            }
            RowInner::Postgres(row) => sqlx::Row::try_get(row, index),
        }
    }
}

/// A position as two integer columns `(commit, sequence)`.
///
/// # Errors
/// [`ProjectionError::OutOfRange`] beyond `i64::MAX` (both engines' integers are
/// signed).
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

/// `$first, $first+1, …` for `count` parameters.
pub fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether a database error may pass if the same work is tried again. PostgreSQL says
/// so by SQLSTATE class; SQLite's busy and locked errors have no kind of their own.
pub(crate) fn is_transient(error: &(dyn sqlx::error::DatabaseError + 'static)) -> bool {
    match error.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        Some(pg) => crate::postgres::transient_sqlstate(pg.code()),
        None => matches!(error.kind(), sqlx::error::ErrorKind::Other),
    }
}

/// Whether an error says a table does not exist: PostgreSQL's `undefined_table`; on
/// SQLite, whose errors carry no such code, any error of the database itself (the
/// statements this is asked about can fail no other way).
pub(crate) fn is_missing_table(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => match db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        {
            Some(pg) => pg.code() == "42P01",
            None => true,
        },
        _ => false,
    }
}

/// The runtime's own tables: which generation of each projector serves queries, which
/// one is being built, every generation's checkpoint, generations waiting to be
/// dropped, where a projector was last parked and why a rebuild last stopped (so every
/// process, not only the one it happened in, can say so). Templates for
/// [`Engine::render`].
pub(crate) const META_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS projection_generations (
        projector TEXT PRIMARY KEY NOT NULL,
        active_generation BIGINT NOT NULL,
        active_version BIGINT NOT NULL,
        building_generation BIGINT,
        building_version BIGINT,
        next_generation BIGINT NOT NULL,
        switched_at {ts}
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
    "CREATE TABLE IF NOT EXISTS projection_parked (
        projector TEXT NOT NULL,
        generation BIGINT NOT NULL,
        commit_pos BIGINT NOT NULL,
        sequence BIGINT NOT NULL,
        error TEXT NOT NULL,
        parked_at {ts} NOT NULL,
        PRIMARY KEY (projector, generation)
    )",
    "CREATE TABLE IF NOT EXISTS projection_rebuild_failures (
        projector TEXT NOT NULL,
        generation BIGINT NOT NULL,
        error TEXT NOT NULL,
        failed_at {ts} NOT NULL,
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
        query(&sql).execute(tx).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_get_engine_types_and_generation_suffixes() {
        let template = "CREATE TABLE people{directory} (id {uuid}, at {ts}) {compact}";
        let lookup = |name: &str| (name == "directory").then_some(Generation::new(3));
        assert_eq!(
            Engine::Sqlite.render(template, lookup),
            "CREATE TABLE people_g3 (id BLOB, at TEXT) WITHOUT ROWID"
        );
        assert_eq!(
            Engine::Postgres.render(template, lookup),
            "CREATE TABLE people_g3 (id UUID, at TIMESTAMPTZ) "
        );
        assert_eq!(Engine::Sqlite.render("x{unknown}", |_| None), "x{unknown}");
    }

    #[test]
    fn search_patterns_match_wildcards_literally() {
        assert_eq!(contains_pattern("50%_a\\"), "%50\\%\\_a\\\\%");
        assert_eq!(placeholders(3, 2), "$3, $4");
        assert_eq!(Engine::Sqlite.value_rows(2, 2), "(?, ?), (?, ?)");
        assert_eq!(Engine::Postgres.value_rows(2, 2), "($1, $2), ($3, $4)");
    }

    #[test]
    fn builders_number_their_parameters() {
        let mut b = Builder::new("SELECT 1 WHERE a = ");
        b.push_bind(1i64)
            .push(" AND b IN (")
            .push_list(["x", "y"])
            .push(")");
        let q = b.build();
        assert_eq!(q.sql, "SELECT 1 WHERE a = $1 AND b IN ($2, $3)");
        assert_eq!(q.args.len(), 3);
    }
}
