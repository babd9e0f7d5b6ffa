//! The store handle, its configuration and its setup.

use crate::error::ConnectError;
use crate::listen;
use homeroom_eventstore::subscription::{catch_up_then_live, CommitSignal};
use homeroom_eventstore::{EventStream, EventSubscriber, Position};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::Connection;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How to reach PostgreSQL and where this store lives in it.
///
/// Fields are public so a deployment can fill them from its own configuration;
/// [`PgStoreConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct PgStoreConfig {
    /// A `postgres://` URL.
    pub url: String,
    /// The schema holding this store's tables, created if missing. Restricted to
    /// 1-63 characters of `[a-z0-9_]`, not starting with a digit or `pg_`, so it never
    /// needs quoting in `search_path` or DDL.
    pub schema: String,
    /// Pool size. One connection is held by the `LISTEN` task.
    pub max_connections: u32,
    /// `idle_in_transaction_session_timeout` of this store's connections: a transaction
    /// left open (e.g. by a caller of [`PgStore::append_in`]) holds back delivery for the
    /// whole cluster, so it is cut off after this long.
    pub idle_in_transaction_timeout: Duration,
    /// While committed events wait behind an older open transaction that is not an
    /// append (and so will not notify when it ends), subscribers are woken this often.
    pub lag_poll: Duration,
    /// Otherwise, this often the `LISTEN` task checks whether the log's deliverable head
    /// moved without a notification (an appending process that died between its commit
    /// and its notification), and wakes subscribers if it did.
    pub idle_poll: Duration,
    /// How long [`homeroom_eventstore::EventAppender::append`] waits, after its commit,
    /// for its events to become deliverable (below every running transaction, so
    /// `read_all` and `head` show them to every reader). Usually no wait at all, or the
    /// rest of a concurrent older append; an older long transaction anywhere in the
    /// cluster is waited for only this long, then the append returns anyway (its events
    /// are recorded and will be delivered when that transaction ends). Zero disables the
    /// wait and saves a round trip per append.
    pub deliverable_wait: Duration,
}

impl PgStoreConfig {
    /// The defaults: 10 connections, a 60 s idle-in-transaction timeout, a 200 ms lag
    /// poll, a 1 s idle poll, a 2 s deliverable wait.
    pub fn new(url: impl Into<String>, schema: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: schema.into(),
            max_connections: 10,
            idle_in_transaction_timeout: Duration::from_secs(60),
            lag_poll: Duration::from_millis(200),
            idle_poll: Duration::from_secs(1),
            deliverable_wait: Duration::from_secs(2),
        }
    }
}

/// The event store on PostgreSQL. Cheap to clone: clones share one pool and one
/// `LISTEN` task, which stops when the last clone (and the last subscription) is dropped.
#[derive(Clone)]
pub struct PgStore {
    pub(crate) inner: Arc<Inner>,
}

/// A lock of a schema taken with [`PgStore::try_lock_schema`]: released when dropped
/// (its session closes) or when the process ends.
pub struct SchemaLock {
    _session: sqlx::PgConnection,
}

impl SchemaLock {
    /// Whether the lock is still held: its session still answers. PostgreSQL releases
    /// the lock when the session ends (a dropped connection, a restarted server), and
    /// another process may then take it; the holder asks this to find out and stop.
    pub async fn is_held(&mut self) -> bool {
        sqlx::query("SELECT 1")
            .execute(&mut self._session)
            .await
            .is_ok()
    }
}

impl std::fmt::Debug for SchemaLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaLock").finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) pool: PgPool,
    pub(crate) schema: String,
    pub(crate) channel: String,
    pub(crate) signal: CommitSignal,
    pub(crate) deliverable_wait: Duration,
    pub(crate) heads: crate::append::HeadCache,
    pub(crate) horizon: Arc<crate::horizon::Horizon>,
    pub(crate) group: crate::group::GroupCommit,
    listener: JoinHandle<()>,
    horizon_task: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
        self.horizon_task.abort();
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("schema", &self.inner.schema)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects with the defaults of [`PgStoreConfig::new`]: creates `schema` if missing,
    /// migrates it, and starts the `LISTEN` task.
    ///
    /// # Errors
    /// [`ConnectError`] when the schema name is refused, PostgreSQL cannot be reached, or
    /// a migration fails.
    pub async fn connect(url: &str, schema: &str) -> Result<Self, ConnectError> {
        Self::connect_with(PgStoreConfig::new(url, schema)).await
    }

    /// Connects with an explicit configuration. See [`PgStore::connect`].
    ///
    /// # Errors
    /// As [`PgStore::connect`].
    pub async fn connect_with(config: PgStoreConfig) -> Result<Self, ConnectError> {
        let schema = config.schema.clone();
        if !valid_schema(&schema) {
            return Err(ConnectError::BadSchema(schema));
        }
        let timeout_ms = config.idle_in_transaction_timeout.as_millis().max(1);
        let options = PgConnectOptions::from_str(&config.url)
            .map_err(ConnectError::BadUrl)?
            .options([
                ("search_path", schema.clone()),
                (
                    "idle_in_transaction_session_timeout",
                    format!("{timeout_ms}"),
                ),
                // `CREATE … IF NOT EXISTS` on an existing schema answers NOTICEs, which
                // sqlx logs: every start printed "already exists, skipping" lines.
                ("client_min_messages", "warning".to_owned()),
            ]);
        set_up_schema(&options, &schema).await?;
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections.max(2))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;

        let channel = channel_name(&schema);
        let signal = CommitSignal::default();
        let listener = listen::spawn(
            pool.clone(),
            channel.clone(),
            signal.clone(),
            config.lag_poll,
            config.idle_poll,
        )
        .await?;
        let (horizon, horizon_task) =
            crate::horizon::spawn(pool.clone(), channel.clone(), signal.clone());
        let group = crate::group::GroupCommit::spawn(pool.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                schema,
                channel,
                signal,
                deliverable_wait: config.deliverable_wait,
                heads: crate::append::HeadCache::default(),
                group,
                horizon,
                listener,
                horizon_task,
            }),
        })
    }

    /// Whether `schema` already holds an event log, asked without creating anything:
    /// operator tools that only read (`audit verify`, `projections status`) must not
    /// make a new, empty log out of a mistyped schema name and then report on it.
    ///
    /// # Errors
    /// [`ConnectError`] when the schema name is refused or PostgreSQL cannot be reached.
    pub async fn holds_log(url: &str, schema: &str) -> Result<bool, ConnectError> {
        if !valid_schema(schema) {
            return Err(ConnectError::BadSchema(schema.to_owned()));
        }
        let options = PgConnectOptions::from_str(url).map_err(ConnectError::BadUrl)?;
        let mut conn = sqlx::PgConnection::connect_with(&options).await?;
        let found: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'events'",
        )
        .bind(schema)
        .fetch_optional(&mut conn)
        .await?;
        conn.close().await?;
        Ok(found.is_some())
    }

    /// Takes the lock named `purpose` of this schema, held for as long as the returned
    /// guard lives, unless another session holds it (`None`): what makes one process at
    /// a time do a job that must not be done twice on one log (the in-process delivery
    /// queues of `homeroom serve`, which would send every text once per process). A
    /// session advisory lock on a connection of its own: PostgreSQL releases it when
    /// that session ends, however the process ends.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database does not answer.
    pub async fn try_lock_schema(
        &self,
        purpose: &str,
    ) -> Result<Option<SchemaLock>, homeroom_eventstore::StoreError> {
        let mut conn = self
            .inner
            .pool
            .acquire()
            .await
            .map_err(crate::error::store_error)?
            .detach();
        let taken: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                .bind(format!("homeroom-{purpose}:{}", self.inner.schema))
                .fetch_one(&mut conn)
                .await
                .map_err(crate::error::store_error)?;
        if taken {
            Ok(Some(SchemaLock { _session: conn }))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }

    /// The schema this store lives in (test harnesses qualify their own SQL with it).
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// The pool, for callers that open their own transactions for
    /// [`PgStore::append_in`]. Its connections have `search_path` set to the schema.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Stops the `LISTEN` task and closes the pool, waiting for connections in use to
    /// be returned. Live subscriptions then end with [`StoreError::Closed`], and every
    /// later operation fails with it.
    ///
    /// [`StoreError::Closed`]: homeroom_eventstore::StoreError::Closed
    pub async fn close(&self) {
        self.inner.listener.abort();
        self.inner.horizon_task.abort();
        self.inner.pool.close().await;
        // Wake sleeping subscriptions: their next read meets the closed pool.
        self.inner.signal.notify();
    }
}

impl EventSubscriber for PgStore {
    fn subscribe_all(&self, after: Position) -> EventStream {
        catch_up_then_live(Arc::new(self.clone()), &self.inner.signal, after)
    }
}

/// Whether `name` can be used unquoted as a schema name.
fn valid_schema(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    name.len() <= 63
        && (first.is_ascii_lowercase() || first == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with("pg_")
}

/// The notification channel of a schema: readable when it fits PostgreSQL's 63-byte
/// identifiers, hashed when it would not.
pub(crate) fn channel_name(schema: &str) -> String {
    let plain = format!("homeroom_events.{schema}");
    if plain.len() <= 63 {
        plain
    } else {
        let digest = hex::encode(Sha256::digest(schema.as_bytes()));
        format!("homeroom_events.{}", &digest[..32])
    }
}

/// Creates the schema if missing and runs the embedded migrations in it, on one
/// connection of its own holding a session advisory lock for this schema.
///
/// sqlx's own migration lock is one per *database*, shared by every schema and every
/// other sqlx application there; a lock another application leaks would stall every
/// store. This lock covers one schema only, and closing the connection (also after an
/// error) releases it.
async fn set_up_schema(options: &PgConnectOptions, schema: &str) -> Result<(), ConnectError> {
    let mut conn = sqlx::PgConnection::connect_with(options).await?;
    let result = async {
        sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
            .bind(format!("homeroom-eventstore-schema:{schema}"))
            .execute(&mut conn)
            .await?;
        // The name is validated to need no quoting; DDL cannot take it as a parameter.
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .execute(&mut conn)
            .await?;
        let mut migrator = sqlx::migrate!("./migrations");
        migrator.set_locking(false);
        migrator.run_direct(&mut conn).await?;
        Ok::<(), ConnectError>(())
    }
    .await;
    // Closing ends the session, and with it the advisory lock, whatever happened above.
    let closed = conn.close().await;
    result?;
    Ok(closed?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_that_need_quoting_are_refused() {
        assert!(valid_schema("homeroom"));
        assert!(valid_schema("hr_test_0190abcd"));
        assert!(valid_schema("_x1"));
        assert!(!valid_schema(""));
        assert!(!valid_schema("1abc"));
        assert!(!valid_schema("Homeroom"));
        assert!(!valid_schema("a-b"));
        assert!(!valid_schema("a;drop"));
        assert!(!valid_schema("pg_catalog"));
        assert!(!valid_schema(&"a".repeat(64)));
    }

    #[test]
    fn channels_fit_in_an_identifier() {
        assert_eq!(channel_name("hr"), "homeroom_events.hr");
        let long = "a".repeat(63);
        assert!(channel_name(&long).len() <= 63);
        assert_ne!(channel_name(&long), channel_name(&"b".repeat(63)));
    }
}
