//! `audit verify` against a log altered behind Homeroom's back: the hash chains and the
//! comparison with the audit trail, on the SQLite store (an attacker with the file).

use homeroom_app::verification::verify;
use homeroom_app::CommandService;
use homeroom_eventstore::EventStore;
use homeroom_projections::{models, ProjectionRuntime, ReadDb, RuntimeConfig};
use homeroom_store_sqlite::SqliteStore;
use homeroom_tests::District;
use serde_json::json;
use std::sync::Arc;

/// Runs `sql` on the store's file with the never-update and never-delete triggers
/// dropped, as someone with the file could: `texts` are bound first, then `position`.
async fn behind_its_back(store: &SqliteStore, sql: &str, texts: &[&str], position: i64) {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(store.path())
        .connect()
        .await
        .expect("open the file behind the store's back");
    for drop in [
        "DROP TRIGGER IF EXISTS events_are_never_updated",
        "DROP TRIGGER IF EXISTS events_are_never_deleted",
    ] {
        sqlx::query(drop).execute(&mut conn).await.unwrap();
    }
    let mut query = sqlx::query(sql);
    for text in texts {
        query = query.bind(*text);
    }
    let changed = query
        .bind(position)
        .execute(&mut conn)
        .await
        .expect("alter the row");
    assert_eq!(changed.rows_affected(), 1, "the row to alter exists");
}

/// Rewrites the body of the message `sent` posted (the last event it recorded) behind
/// the store's back, with the event's hash recomputed so its own chain still links.
async fn rewrite_the_message(
    sqlite: &SqliteStore,
    store: &dyn EventStore,
    sent: &homeroom_app::CommandOutcome,
    body: &str,
) {
    let last = sent.events.last().unwrap();
    let stream = homeroom_eventstore::StreamId::parse(&last.stream).unwrap();
    let mut stored = store
        .read_stream(&stream, last.version - 1, 1)
        .await
        .unwrap();
    let mut forged = stored.remove(0);
    forged.data["body"] = json!(body);
    let hash = homeroom_eventstore::hash::recompute(&forged);
    behind_its_back(
        sqlite,
        "UPDATE events SET data = ?, hash = ? WHERE position = ?",
        &[&forged.data.to_string(), &hash],
        i64::try_from(sent.position.sequence).unwrap(),
    )
    .await;
}

/// A district on an SQLite log with one personal message sent, and its read models
/// caught up.
struct Logged {
    _dir: tempfile::TempDir,
    sqlite: Arc<SqliteStore>,
    store: Arc<dyn EventStore>,
    d: District,
    sent: homeroom_app::CommandOutcome,
    runtime: ProjectionRuntime,
    trail: homeroom_projections::ReadModels,
}

impl Logged {
    async fn start(district: &str, body: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Arc::new(
            SqliteStore::open(&dir.path().join("events.sqlite"))
                .await
                .unwrap(),
        );
        let store: Arc<dyn EventStore> = sqlite.clone();
        let d = District::build(store.clone(), district).await;
        let sent = d
            .by(
                d.principal,
                "SendPersonalMessage",
                json!({"recipient_id": d.parent, "body": body}),
            )
            .await
            .unwrap();
        let db = ReadDb::open(&dir.path().join("read.sqlite")).await.unwrap();
        let runtime =
            ProjectionRuntime::open(store.clone(), db, models::all(), RuntimeConfig::default())
                .await
                .unwrap();
        runtime.catch_up().await.unwrap();
        let trail = runtime.read_models();
        Self {
            _dir: dir,
            sqlite,
            store,
            d,
            sent,
            runtime,
            trail,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversations_last_message_taken_out_of_the_log_is_found_even_after_later_writes() {
    let Logged {
        _dir,
        sqlite,
        store,
        d,
        sent,
        runtime,
        trail,
    } = Logged::start("tamperville", "Your son was absent today").await;
    let clean = verify(&*store, Some(&trail), Some("tamperville"))
        .await
        .unwrap();
    assert!(clean.broken.is_empty(), "{:?}", clean.broken);

    // The message (the stream's last event) is deleted from the file.
    let last = sent.events.last().unwrap();
    let position = i64::try_from(sent.position.sequence).unwrap();
    behind_its_back(
        &sqlite,
        "DELETE FROM events WHERE position = ?",
        &[],
        position,
    )
    .await;
    let shortened = verify(&*store, Some(&trail), Some("tamperville"))
        .await
        .unwrap();
    assert_eq!(
        shortened.broken,
        vec![(last.stream.clone(), last.version)],
        "the chain that is left still links; the trail shows the gap"
    );
    let chains_only = verify(&*store, None, Some("tamperville")).await.unwrap();
    assert!(
        chains_only.broken.is_empty(),
        "what the chains alone cannot show"
    );

    // A later write takes the deleted version again; the trail still remembers.
    let fresh = Arc::new(CommandService::new(store.clone(), 100));
    let later = District {
        service: fresh,
        ..d
    };
    later
        .by(
            later.principal,
            "SendPersonalMessage",
            json!({"recipient_id": later.parent, "body": "See you tomorrow"}),
        )
        .await
        .unwrap();
    runtime.catch_up().await.unwrap();
    let covered = verify(&*store, Some(&trail), Some("tamperville"))
        .await
        .unwrap();
    assert!(
        covered
            .broken
            .contains(&(last.stream.clone(), last.version)),
        "{:?}",
        covered.broken
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_rewritten_with_its_hash_recomputed_is_found_by_the_trail() {
    let Logged {
        _dir,
        sqlite,
        store,
        sent,
        trail,
        ..
    } = Logged::start("rewriteton", "The trip costs $20").await;
    // The stored hash is replaced too, so the stream's chain is no help: a new hash
    // that nothing links to after it (it is the last event) and nothing checks.
    let last = sent.events.last().unwrap();
    rewrite_the_message(&sqlite, &*store, &sent, "The trip costs $200").await;
    let chains_only = verify(&*store, None, Some("rewriteton")).await.unwrap();
    assert!(chains_only.broken.is_empty(), "the forgery links");
    let found = verify(&*store, Some(&trail), Some("rewriteton"))
        .await
        .unwrap();
    assert_eq!(found.broken, vec![(last.stream.clone(), last.version)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_of_the_audit_trail_edited_under_its_old_hash_is_found() {
    let Logged {
        _dir,
        store,
        sent,
        trail,
        ..
    } = Logged::start("trailedit", "The trip costs $20").await;
    // Someone with the read-model file rewrites what the trail says was sent and by
    // whom, leaving the hash as it was: GET /v1/audit would serve the forgery.
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(_dir.path().join("read.sqlite"))
        .connect()
        .await
        .unwrap();
    let table: String = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'audit_events%'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let last = sent.events.last().unwrap();
    let changed = sqlx::query(&format!(
        "UPDATE {table} SET data = replace(data, '$20', '$200'), actor = 'someone-else'
         WHERE stream = ? AND version = ?"
    ))
    .bind(&last.stream)
    .bind(i64::try_from(last.version).unwrap())
    .execute(&mut conn)
    .await
    .unwrap();
    assert_eq!(changed.rows_affected(), 1);
    let found = verify(&*store, Some(&trail), Some("trailedit"))
        .await
        .unwrap();
    assert_eq!(found.broken, vec![(last.stream.clone(), last.version)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_kept_apart_shows_a_log_rewritten_since_with_its_hashes_recomputed() {
    use homeroom_app::verification::ExportChecker;
    let Logged {
        _dir,
        sqlite,
        store,
        sent,
        ..
    } = Logged::start("exportville", "The trip costs $20").await;
    let export: Vec<_> = store
        .read_all(homeroom_eventstore::Position::START, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.metadata.district == "exportville")
        .collect();
    let check = |export: Vec<homeroom_eventstore::RecordedEvent>| {
        let store = store.clone();
        async move {
            let mut checker = ExportChecker::new(&*store);
            for event in &export {
                checker.check(event).await.unwrap();
            }
            checker.finish()
        }
    };
    let found = check(export.clone()).await;
    assert!(found.holds(), "{found:?}");
    assert_eq!(found.checked, export.len() as u64);

    // The file itself altered: its hash no longer recomputes.
    let last = sent.events.last().unwrap();
    let mut doctored = export.clone();
    let forged = doctored
        .iter_mut()
        .find(|e| e.stream.as_str() == last.stream && e.version == last.version)
        .unwrap();
    forged.data["body"] = json!("The trip is free");
    let found = check(doctored).await;
    assert_eq!(
        found.altered_in_file,
        vec![(last.stream.clone(), last.version)]
    );
    assert!(
        found.changed_in_log.is_empty() && found.missing_from_log.is_empty(),
        "the log was not touched: {found:?}"
    );
    // A line taken out of a stream, and two lines swapped: the file's own chains show
    // both, and nothing is blamed on the log.
    let first = export
        .iter()
        .position(|e| {
            e.version == 1
                && export
                    .iter()
                    .any(|x| x.stream == e.stream && x.version == 2)
        })
        .expect("a stream with two events");
    let stream_of = export[first].stream.to_string();
    let mut cut = export.clone();
    cut.remove(first);
    let found = check(cut).await;
    assert!(
        found
            .altered_in_file
            .iter()
            .any(|(s, v)| *s == stream_of && *v == 2),
        "the event after the gap: {found:?}"
    );
    assert!(
        found.changed_in_log.is_empty() && found.missing_from_log.is_empty(),
        "{found:?}"
    );
    let mut swapped = export.clone();
    swapped.swap(1, 2);
    let found = check(swapped).await;
    assert!(!found.altered_in_file.is_empty(), "{found:?}");
    assert!(
        found.changed_in_log.is_empty() && found.missing_from_log.is_empty(),
        "{found:?}"
    );

    // A whole stream taken out of the file (every one of its lines, so no chain in the
    // file shows a gap): the log holds the district's events the file skipped.
    let gone = export[0].stream.clone();
    assert_ne!(export.last().unwrap().stream, gone);
    let without: Vec<_> = export
        .iter()
        .filter(|e| e.stream != gone)
        .cloned()
        .collect();
    let removed: Vec<(String, u64)> = export
        .iter()
        .filter(|e| e.stream == gone)
        .map(|e| (e.stream.to_string(), e.version))
        .collect();
    let found = check(without).await;
    assert_eq!(found.missing_from_file, removed, "{found:?}");
    assert!(!found.holds());
    assert!(
        found.altered_in_file.is_empty() && found.changed_in_log.is_empty(),
        "{found:?}"
    );

    // The log rewritten behind the store's back, its hash recomputed so its chain
    // holds: the export kept apart still shows it.
    rewrite_the_message(&sqlite, &*store, &sent, "The trip costs $200").await;
    assert!(verify(&*store, None, Some("exportville"))
        .await
        .unwrap()
        .broken
        .is_empty());
    let found = check(export).await;
    assert!(found.altered_in_file.is_empty());
    assert_eq!(
        found.changed_in_log,
        vec![(last.stream.clone(), last.version)]
    );
}
