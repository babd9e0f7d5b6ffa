//! The event-store contract, run unchanged against the SQLite store.

use homeroom_eventstore::conformance::{async_trait, Harness};
use homeroom_eventstore::StreamId;
use homeroom_store_sqlite::SqliteStore;
use sqlx::{ConnectOptions, Connection};
use std::sync::{Arc, Mutex};

/// Each store gets a file in its own temporary directory, kept (and removed) with the
/// harness, which lives exactly as long as one kit test.
#[derive(Default)]
struct SqliteHarness {
    dirs: Mutex<Vec<tempfile::TempDir>>,
}

#[async_trait]
impl Harness for SqliteHarness {
    type Store = SqliteStore;

    async fn fresh(&self) -> Arc<SqliteStore> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SqliteStore::open(&dir.path().join("events.sqlite"))
            .await
            .expect("a fresh SQLite store");
        self.dirs.lock().unwrap().push(dir);
        Arc::new(store)
    }

    /// An attacker with the file: drops the append-only triggers and edits a row, on a
    /// connection of their own.
    async fn tamper(&self, store: &SqliteStore, stream: &StreamId, version: u64) {
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(store.path())
            .connect()
            .await
            .expect("open the file behind the store's back");
        for sql in [
            "DROP TRIGGER events_are_never_updated",
            "DROP TRIGGER events_are_never_deleted",
        ] {
            sqlx::query(sql)
                .execute(&mut conn)
                .await
                .expect("drop a trigger");
        }
        let changed = sqlx::query(
            r#"UPDATE events SET data = '{"tampered":true}' WHERE stream = ? AND version = ?"#,
        )
        .bind(stream.as_str())
        .bind(i64::try_from(version).expect("a kit version"))
        .execute(&mut conn)
        .await
        .expect("edit the row");
        assert_eq!(changed.rows_affected(), 1, "the row to tamper with exists");
        conn.close().await.expect("close the attacker's connection");
    }
}

homeroom_eventstore::conformance_tests!(SqliteHarness::default());
