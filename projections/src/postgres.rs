//! What only PostgreSQL needs: the schema, the write lock, read snapshots, the lease
//! that lets one process of many apply the log, and the notifications that keep the
//! others' checkpoints current.
//!
//! - **Where.** Every table of an instance lives in one schema ([`PgReadConfig::schema`],
//!   created if missing; connections set `search_path` to it), so one database holds
//!   several instances, and tests a fresh schema each.
//! - **Writes.** Every write transaction first takes a transaction-scoped advisory lock
//!   of the schema (`pg_advisory_xact_lock`): the equivalent of SQLite's
//!   `BEGIN IMMEDIATE`. Batches, rebuilds and switches of every process on the schema
//!   take turns, and each re-reads its checkpoints after the lock (read committed: each
//!   statement sees what committed before it), so an event is never applied twice.
//! - **Reads.** A query runs in a `REPEATABLE READ READ ONLY` transaction whose first
//!   statement locks `projection_generations` in `ACCESS SHARE` mode: its snapshot is
//!   taken after that lock. Dropping a retired generation first locks that table in
//!   `ACCESS EXCLUSIVE` mode (for at most [`PgReadConfig::drop_lock_timeout`]), so it
//!   waits for every query that may still read the old generation, and later queries
//!   see the new one.
//! - **The lease.** A session-level advisory lock, held on a connection of its own by
//!   the process that applies the log live (`PgLease`). Others stand by: they answer
//!   queries, learn checkpoints from `NOTIFY`, and try to take the lease every
//!   [`PgReadConfig::lease_retry`]. PostgreSQL releases it the moment the holder's
//!   session ends (process exit, crash, `pg_terminate_backend`; a vanished machine
//!   within the TCP keepalive set on that connection). Each live batch checks, inside
//!   its transaction, that the lease is still held by this process, so a holder that
//!   lost it never commits another batch.

use crate::error::ProjectionError;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Prepared statements kept per connection (every projector's statements for two
/// generations fit).
const STATEMENT_CACHE: usize = 512;

/// How to reach the PostgreSQL read models and how the lease behaves.
///
/// Fields are public so a deployment can fill them from its own configuration;
/// [`PgReadConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct PgReadConfig {
    /// A `postgres://` URL.
    pub url: String,
    /// The schema holding this instance's read models, created if missing. 1-63
    /// characters of `[a-z0-9_]`, not starting with a digit or `pg_`, so it never needs
    /// quoting.
    pub schema: String,
    /// Connections for queries (writes use two more, the lease and notifications one
    /// each).
    pub max_connections: u32,
    /// How often a standby tries to take the lease: the longest a dead holder's work
    /// waits for a successor, once PostgreSQL has ended the holder's session.
    pub lease_retry: Duration,
    /// How often the holder checks that its lease connection is alive.
    pub lease_check: Duration,
    /// `idle_in_transaction_session_timeout` of these connections: a read-model
    /// transaction left open would hold back the event store's delivery horizon if the
    /// store shares the cluster.
    pub idle_in_transaction_timeout: Duration,
    /// How long dropping a retired generation waits for the queries still reading it
    /// (new queries wait behind it meanwhile); when they take longer, it is dropped on
    /// the next switch or start instead.
    pub drop_lock_timeout: Duration,
}

impl PgReadConfig {
    /// The defaults: 8 query connections, a 1 s lease retry and check, a 60 s
    /// idle-in-transaction timeout, a 2 s drop lock timeout.
    pub fn new(url: impl Into<String>, schema: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: schema.into(),
            max_connections: 8,
            lease_retry: Duration::from_secs(1),
            lease_check: Duration::from_secs(1),
            idle_in_transaction_timeout: Duration::from_secs(60),
            drop_lock_timeout: Duration::from_secs(2),
        }
    }
}

/// The PostgreSQL read-model database: a small write pool, a read pool, and what the
/// lease and notifications need.
#[derive(Clone)]
pub(crate) struct PgDb {
    write: PgPool,
    read: PgPool,
    options: Arc<PgConnectOptions>,
    config: Arc<PgReadConfig>,
    channel: String,
}

impl std::fmt::Debug for PgDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDb")
            .field("schema", &self.config.schema)
            .finish_non_exhaustive()
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

/// What `pg_stat_activity.application_name` says for the read models' connections of
/// `schema`, so an operator can tell instances apart (PostgreSQL keeps 63 bytes).
pub(crate) fn application_name(schema: &str) -> String {
    format!("homeroom-read:{schema}")
}

/// The key text of one of the schema's advisory locks (hashed by PostgreSQL's
/// `hashtextextended`).
pub(crate) fn lock_key(purpose: &str, schema: &str) -> String {
    format!("homeroom-projections-{purpose}:{schema}")
}

/// Whether `schema` holds read models (the runtime's own tables), found without
/// creating anything, for the commands that only report.
pub(crate) async fn holds_read_models(url: &str, schema: &str) -> Result<bool, ProjectionError> {
    if !valid_schema(schema) {
        return Err(ProjectionError::BadSchema(schema.to_owned()));
    }
    let options = PgConnectOptions::from_str(url)?;
    let mut conn = PgConnection::connect_with(&options).await?;
    let found: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM information_schema.tables
         WHERE table_schema = $1 AND table_name = 'projection_generations'",
    )
    .bind(schema)
    .fetch_optional(&mut conn)
    .await?;
    conn.close().await?;
    Ok(found.is_some())
}

impl PgDb {
    /// Creates the schema if missing (under an advisory lock of its own, so processes
    /// starting together do not collide) and opens the pools.
    pub(crate) async fn connect(config: PgReadConfig) -> Result<Self, ProjectionError> {
        if !valid_schema(&config.schema) {
            return Err(ProjectionError::BadSchema(config.schema));
        }
        let idle_ms = config.idle_in_transaction_timeout.as_millis().max(1);
        let options = PgConnectOptions::from_str(&config.url)?
            .application_name(&application_name(&config.schema))
            .options([
                ("search_path", config.schema.clone()),
                ("idle_in_transaction_session_timeout", idle_ms.to_string()),
                // No NOTICEs ("relation … already exists, skipping") in the logs.
                ("client_min_messages", "warning".to_owned()),
            ])
            .statement_cache_capacity(STATEMENT_CACHE)
            .log_statements(tracing::log::LevelFilter::Trace)
            // A statement is slow here mostly by waiting for an advisory lock another
            // process holds (a rebuild's batch, the lease): expected, not a warning.
            .log_slow_statements(
                tracing::log::LevelFilter::Debug,
                std::time::Duration::from_secs(1),
            );

        let mut conn = PgConnection::connect_with(&options).await?;
        let mut tx = conn.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(lock_key("schema", &config.schema))
            .execute(&mut *tx)
            .await?;
        // The name is validated to need no quoting; DDL cannot take it as a parameter.
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {}", config.schema))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let plain = format!("homeroom_projections.{}", config.schema);
        let channel = if plain.len() <= 63 {
            plain
        } else {
            let digest: String = sqlx::query_scalar("SELECT md5($1)")
                .bind(&config.schema)
                .fetch_one(&mut conn)
                .await?;
            format!("homeroom_projections.{digest}")
        };
        conn.close().await?;

        let write = PgPoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await?;
        let read = PgPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        Ok(Self {
            write,
            read,
            options: Arc::new(options),
            config: Arc::new(config),
            channel,
        })
    }

    pub(crate) fn schema(&self) -> &str {
        &self.config.schema
    }

    pub(crate) fn config(&self) -> &PgReadConfig {
        &self.config
    }

    pub(crate) async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }

    /// A write transaction holding the schema's write lock (see the module docs).
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        let mut tx = self.write.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(lock_key("write", &self.config.schema))
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// A read-only snapshot taken after locking `projection_generations` against a
    /// concurrent drop of the generations it names (see the module docs).
    pub(crate) async fn begin_read(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        let mut tx = self
            .read
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        sqlx::query("LOCK TABLE projection_generations IN ACCESS SHARE MODE")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// Waits, inside a write transaction, until no query can still be reading a
    /// generation about to be dropped.
    pub(crate) async fn before_drop(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        let ms = self.config.drop_lock_timeout.as_millis().max(1);
        sqlx::query(&format!("SET LOCAL lock_timeout = {ms}"))
            .execute(&mut *conn)
            .await?;
        sqlx::query("LOCK TABLE projection_generations IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Tells standbys, when the transaction commits, that checkpoints moved.
    pub(crate) async fn notify(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(&self.channel)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// A lease handle for one runtime (not yet held).
    pub(crate) fn lease(&self) -> PgLease {
        PgLease {
            // Server-side keepalives, so a holder whose machine vanished loses the
            // lease within seconds rather than the OS default of hours.
            options: (*self.options).clone().options([
                ("tcp_keepalives_idle", "5"),
                ("tcp_keepalives_interval", "2"),
                ("tcp_keepalives_count", "3"),
            ]),
            key: lock_key("lease", &self.config.schema),
            ping_timeout: self.config.lease_check.max(Duration::from_secs(5)),
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// Whether the lease is held right now by the session `pid` (checked inside a
    /// batch's transaction, so a holder that lost its lease commits nothing more).
    pub(crate) async fn holds_lease(
        &self,
        conn: &mut PgConnection,
        pid: i32,
    ) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_locks
                WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND pid = $1
                  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                  AND classid::bigint = (hashtextextended($2, 0) >> 32) & 4294967295
                  AND objid::bigint = hashtextextended($2, 0) & 4294967295)",
        )
        .bind(pid)
        .bind(lock_key("lease", &self.config.schema))
        .fetch_one(&mut *conn)
        .await
    }

    /// Listens for checkpoint notifications in the background, raising `wake` for
    /// each (and after a reconnection, as notifications may have been missed).
    pub(crate) fn listen(&self, wake: Arc<Notify>) -> JoinHandle<()> {
        // A pool of its own: the listener keeps its connection, which must not take
        // one from the queries.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .connect_lazy_with((*self.options).clone());
        let channel = self.channel.clone();
        let pause = self.config.lease_retry;
        tokio::spawn(async move {
            loop {
                match PgListener::connect_with(&pool).await {
                    Ok(mut listener) => match listener.listen(&channel).await {
                        Ok(()) => loop {
                            wake.notify_one();
                            match listener.try_recv().await {
                                // A notification, or a lost connection (now
                                // re-established): either way, read checkpoints again.
                                Ok(_) => {}
                                Err(error) => {
                                    tracing::warn!(%error, "projection notifications lost");
                                    break;
                                }
                            }
                        },
                        Err(error) => tracing::warn!(%error, "cannot listen for checkpoints"),
                    },
                    Err(error) => tracing::warn!(%error, "cannot listen for checkpoints"),
                }
                wake.notify_one();
                tokio::time::sleep(pause).await;
            }
        })
    }

    #[cfg(test)]
    pub(crate) async fn dump_table(&self, table: &str) -> Vec<String> {
        assert!(
            self.table_exists(table).await,
            "table {table} does not exist"
        );
        sqlx::query_scalar(&format!("SELECT t::text AS r FROM {table} t ORDER BY r"))
            .fetch_all(&self.read)
            .await
            .expect("table rows")
    }

    #[cfg(test)]
    pub(crate) async fn table_exists(&self, table: &str) -> bool {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = $2)",
        )
        .bind(&self.config.schema)
        .bind(table)
        .fetch_one(&self.read)
        .await
        .expect("pg_tables")
    }
}

/// The lease: a session-level advisory lock of the schema, held on a connection of its
/// own for as long as this process applies the log.
pub(crate) struct PgLease {
    options: PgConnectOptions,
    key: String,
    ping_timeout: Duration,
    conn: tokio::sync::Mutex<Option<PgConnection>>,
}

impl PgLease {
    /// Tries once to take the lease; `Some(pid)` (the holding session's backend id)
    /// when this process holds it now.
    pub(crate) async fn try_acquire(&self) -> Result<Option<i32>, sqlx::Error> {
        let mut slot = self.conn.lock().await;
        let conn = match &mut *slot {
            Some(conn) => conn,
            none => none.insert(PgConnection::connect_with(&self.options).await?),
        };
        let attempt = async {
            let got: bool =
                sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                    .bind(&self.key)
                    .fetch_one(&mut *conn)
                    .await?;
            if !got {
                return Ok(None);
            }
            let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(&mut *conn)
                .await?;
            Ok(Some(pid))
        }
        .await;
        if attempt.is_err() {
            // A broken connection: the next attempt starts with a fresh one.
            *slot = None;
        }
        attempt
    }

    /// Whether the lease connection still answers (and so still holds the lease).
    pub(crate) async fn alive(&self) -> bool {
        let mut slot = self.conn.lock().await;
        let Some(conn) = slot.as_mut() else {
            return false;
        };
        let ping = tokio::time::timeout(self.ping_timeout, conn.ping()).await;
        if matches!(ping, Ok(Ok(()))) {
            true
        } else {
            *slot = None;
            false
        }
    }

    /// Gives the lease up (ends its session).
    pub(crate) async fn release(&self) {
        if let Some(conn) = self.conn.lock().await.take() {
            if let Err(error) = conn.close().await {
                tracing::debug!(%error, "closing the lease connection");
            }
        }
    }
}

/// Whether an error of this SQLSTATE may pass when the work is tried again: lost
/// connections (08), rolled-back transactions (40: serialization failures, deadlocks),
/// insufficient resources (53), lock timeouts (55P03), operator intervention (57:
/// cancelled, shutting down, terminated) and system errors (58). Data, constraint and
/// syntax errors are deterministic.
pub(crate) fn transient_sqlstate(code: &str) -> bool {
    matches!(code.get(..2), Some("08" | "40" | "53" | "57" | "58")) || code == "55P03"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_that_need_quoting_are_refused() {
        assert!(valid_schema("homeroom_read"));
        assert!(valid_schema("_x1"));
        assert!(!valid_schema(""));
        assert!(!valid_schema("1abc"));
        assert!(!valid_schema("Read"));
        assert!(!valid_schema("a;drop"));
        assert!(!valid_schema("pg_catalog"));
        assert!(!valid_schema(&"a".repeat(64)));
    }

    #[test]
    fn sqlstates_are_sorted_into_transient_and_deterministic() {
        for code in [
            "08006", "40001", "40P01", "53300", "55P03", "57P01", "57014",
        ] {
            assert!(transient_sqlstate(code), "{code}");
        }
        for code in ["23505", "42601", "42P01", "22P02", ""] {
            assert!(!transient_sqlstate(code), "{code}");
        }
    }
}
