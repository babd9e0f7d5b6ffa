//! Test support (feature `testing`): find PostgreSQL or skip, and throwaway schemas.
//!
//! Service-backed tests follow one rule: when PostgreSQL cannot be reached, a test
//! **fails** under `CI=true` (CI must never pass by testing nothing) and otherwise prints
//! one `skipped: …` line to stderr and returns, so a laptop without PostgreSQL still runs
//! the rest of the suite.
//!
//! ```no_run
//! # async fn example() {
//! use homeroom_store_postgres::testing;
//! let Some(db) = testing::TestDb::connect_or_skip().await else { return };
//! let store = db.store().await;
//! // … use the store …
//! db.drop_schemas().await;
//! # }
//! ```

use crate::PgStore;
use sqlx::{Connection, PgConnection};
use std::sync::Mutex;
use std::time::Duration;

/// Where tests look for PostgreSQL when `DATABASE_URL` is not set.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// `DATABASE_URL`, or [`DEFAULT_URL`].
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// Tries to connect within a few seconds; `Err` carries the reason.
///
/// # Errors
/// The connection error (or a timeout) as text.
pub async fn probe(url: &str) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(url)).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("timed out after 5 s".to_owned()),
    }
}

/// Applies the rule to a probe's outcome: `Some(url)` when reachable; otherwise a panic
/// under `CI=true`, or the one `skipped:` line on stderr and `None`.
///
/// # Panics
/// When PostgreSQL is unreachable and `CI=true`.
pub async fn postgres_or_skip() -> Option<String> {
    let url = database_url();
    homeroom_testkit::reachable_or_skip("PostgreSQL", &url, probe(&url).await).then_some(url)
}

/// A fresh schema name, `hr_test_<uuid-simple>`.
pub fn unique_schema() -> String {
    format!("hr_test_{}", uuid::Uuid::new_v4().simple())
}

/// `DROP SCHEMA … CASCADE`, best effort: a failure is printed, never raised, so
/// cleanup cannot mask the test's own result.
pub async fn drop_schema(url: &str, schema: &str) {
    let result = async {
        let mut conn = PgConnection::connect(url).await?;
        // Never hang a test run on cleanup: give up (with a warning) instead.
        sqlx::query("SET lock_timeout = '10s'")
            .execute(&mut conn)
            .await?;
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&mut conn)
            .await?;
        conn.close().await
    }
    .await;
    if let Err(err) = result {
        eprintln!("warning: could not drop test schema {schema}: {err}");
    }
}

/// A reachable PostgreSQL and the schemas a test made in it, dropped together at the end.
#[derive(Debug)]
pub struct TestDb {
    url: String,
    schemas: Mutex<Vec<String>>,
}

impl TestDb {
    /// Applies the service-discovery rule ([`postgres_or_skip`]).
    ///
    /// # Panics
    /// When PostgreSQL is unreachable and `CI=true`.
    pub async fn connect_or_skip() -> Option<Self> {
        postgres_or_skip().await.map(|url| Self {
            url,
            schemas: Mutex::new(Vec::new()),
        })
    }

    /// The database URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A store in a fresh schema, remembered for [`TestDb::drop_schemas`].
    ///
    /// # Panics
    /// When the store cannot be set up (PostgreSQL was reachable a moment ago).
    pub async fn store(&self) -> PgStore {
        self.store_with(|_| {}).await
    }

    /// Like [`TestDb::store`], adjusting the configuration first.
    ///
    /// # Panics
    /// As [`TestDb::store`].
    pub async fn store_with(&self, adjust: impl FnOnce(&mut crate::PgStoreConfig)) -> PgStore {
        let schema = unique_schema();
        self.schemas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(schema.clone());
        let mut config = crate::PgStoreConfig::new(&self.url, &schema);
        adjust(&mut config);
        PgStore::connect_with(config)
            .await
            .unwrap_or_else(|e| panic!("cannot set up test store in {schema}: {e}"))
    }

    /// Drops every schema this handle created (best effort). Dropping the handle does
    /// the same, so a failing test cleans up too.
    pub async fn drop_schemas(&self) {
        for schema in self.take_schemas() {
            drop_schema(&self.url, &schema).await;
        }
    }

    fn take_schemas(&self) -> Vec<String> {
        std::mem::take(&mut *self.schemas.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Drop for TestDb {
    /// Drops the schemas still left, on a thread of its own with its own runtime: `Drop`
    /// cannot await, and may run inside (or while unwinding out of) a test's runtime.
    fn drop(&mut self) {
        let schemas = self.take_schemas();
        if schemas.is_empty() {
            return;
        }
        let url = self.url.clone();
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                for schema in schemas {
                    drop_schema(&url, &schema).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// Changes the data of `stream`'s event at `version` behind the store's back, through a
/// connection of its own, without fixing its hash: what an attacker with database access
/// would do (disabling the append-only trigger first, as the table's owner can).
///
/// # Panics
/// When the row does not exist or the update fails.
pub async fn tamper(url: &str, schema: &str, stream: &str, version: u64) {
    let mut conn = PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("tamper: cannot connect: {e}"));
    let mut tx = conn.begin().await.expect("tamper: begin");
    let trigger = |on: &str| format!("ALTER TABLE {schema}.events {on} TRIGGER events_append_only");
    sqlx::query(&trigger("DISABLE"))
        .execute(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("tamper: disable the append-only trigger: {e}"));
    let updated = sqlx::query(&format!(
        "UPDATE {schema}.events SET data = json_build_object('tampered', data) \
         WHERE stream = $1 AND version = $2"
    ))
    .bind(stream)
    .bind(i64::try_from(version).expect("a stored version"))
    .execute(&mut *tx)
    .await
    .unwrap_or_else(|e| panic!("tamper: update: {e}"));
    assert_eq!(
        updated.rows_affected(),
        1,
        "tamper: no event {stream} v{version}"
    );
    sqlx::query(&trigger("ENABLE"))
        .execute(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("tamper: enable the append-only trigger: {e}"));
    tx.commit().await.expect("tamper: commit");
}
