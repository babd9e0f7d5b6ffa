//! The file: reopening it, sharing it with another process, refusing edits, reporting
//! corruption, and shutting down cleanly.

use futures::StreamExt;
use homeroom_eventstore::subscription::PAGE;
use homeroom_eventstore::{
    hash, EventAppender, EventMetadata, EventReader, EventSubscriber, ExpectedVersion, NewEvent,
    Position, RecordedEvent, StoreError, StreamId,
};
use homeroom_store_sqlite::SqliteStore;
use sqlx::{ConnectOptions, Connection};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// A bound only a broken store reaches; nothing here sleeps to wait.
const PATIENCE: Duration = Duration::from_secs(10);

fn event(n: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "noted".into(),
        schema_version: 1,
        data: serde_json::json!({ "n": n }),
        metadata: EventMetadata {
            district: "d".into(),
            actor: "test".into(),
            command_id: Uuid::now_v7(),
            ..Default::default()
        },
    }
}

fn stream(name: &str) -> StreamId {
    StreamId::parse(name).unwrap()
}

fn file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.sqlite");
    (dir, path)
}

/// A connection of someone else's, straight to the file.
async fn raw(path: &Path) -> sqlx::SqliteConnection {
    sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap()
}

async fn whole_log(store: &SqliteStore) -> Vec<RecordedEvent> {
    let mut log = Vec::new();
    loop {
        let after = log
            .last()
            .map_or(Position::START, |e: &RecordedEvent| e.position);
        let page = store.read_all(after, PAGE).await.unwrap();
        if page.is_empty() {
            return log;
        }
        log.extend(page);
    }
}

#[tokio::test]
async fn reopening_continues_positions_and_hash_chains() {
    let (_dir, path) = file();
    let s = stream("reopened-1");
    let store = SqliteStore::open(&path).await.unwrap();
    store
        .append(&s, ExpectedVersion::NoStream, vec![event(1), event(2)])
        .await
        .unwrap();
    store
        .append(
            &stream("other-1"),
            ExpectedVersion::NoStream,
            vec![event(3)],
        )
        .await
        .unwrap();
    store.close().await;

    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.head().await.unwrap(), Position::at(3));
    let appended = store
        .append(&s, ExpectedVersion::Exact(2), vec![event(4)])
        .await
        .unwrap();
    assert_eq!(appended.version, 3);
    assert_eq!(appended.position, Position::at(4));
    let events = store.read_stream(&s, 0, 10).await.unwrap();
    assert_eq!(events.len(), 3);
    assert!(hash::verify_stream(&events).is_empty());
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_file_never_trust_a_stale_head() {
    // Two stores on one file behave like two processes: separate writers and caches.
    let (_dir, path) = file();
    let a = SqliteStore::open(&path).await.unwrap();
    let b = SqliteStore::open(&path).await.unwrap();
    let s = stream("shared-1");

    assert_eq!(
        a.append(&s, ExpectedVersion::NoStream, vec![event(1)])
            .await
            .unwrap()
            .version,
        1
    );
    assert_eq!(
        b.append(&s, ExpectedVersion::Exact(1), vec![event(2)])
            .await
            .unwrap()
            .version,
        2
    );
    // A cached version 1; the file says 2.
    assert_eq!(
        a.append(&s, ExpectedVersion::Exact(2), vec![event(3)])
            .await
            .unwrap()
            .version,
        3
    );
    assert!(matches!(
        a.append(&s, ExpectedVersion::Exact(2), vec![event(4)])
            .await,
        Err(StoreError::Conflict { actual: 3, .. })
    ));
    assert!(matches!(
        b.append(&s, ExpectedVersion::Exact(2), vec![event(5)])
            .await,
        Err(StoreError::Conflict { actual: 3, .. })
    ));
    assert_eq!(
        b.append(&s, ExpectedVersion::Any, vec![event(6)])
            .await
            .unwrap()
            .version,
        4
    );

    let events = a.read_stream(&s, 0, 10).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert!(
        hash::verify_stream(&events).is_empty(),
        "one chain across both writers"
    );
    let log = whole_log(&b).await;
    assert_eq!(
        log.iter().map(|e| e.position.sequence).collect::<Vec<_>>(),
        [1, 2, 3, 4],
        "positions stay gap-free across writers"
    );
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_see_commits_made_by_another_process() {
    let (_dir, path) = file();
    let here = SqliteStore::open(&path).await.unwrap();
    let elsewhere = SqliteStore::open(&path).await.unwrap();
    let mut live = here.subscribe_all(Position::START);
    let s = stream("foreign-1");
    elsewhere
        .append(&s, ExpectedVersion::NoStream, vec![event(1), event(2)])
        .await
        .unwrap();
    // Nothing in this process commits: only the background tick can wake `live`.
    for version in 1..=2 {
        let got = tokio::time::timeout(PATIENCE, live.next())
            .await
            .expect("the foreign commit is delivered")
            .expect("the subscription is open")
            .unwrap();
        assert_eq!((got.stream.clone(), got.version), (s.clone(), version));
    }
    drop(live);
    here.close().await;
    elsewhere.close().await;
}

#[tokio::test]
async fn history_cannot_be_edited_through_sql() {
    let (_dir, path) = file();
    let store = SqliteStore::open(&path).await.unwrap();
    let s = stream("immutable-1");
    store
        .append(&s, ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();
    let mut conn = raw(&path).await;
    let update = sqlx::query("UPDATE events SET data = '{}'")
        .execute(&mut conn)
        .await;
    let delete = sqlx::query("DELETE FROM events").execute(&mut conn).await;
    assert!(update.is_err() && delete.is_err(), "triggers refuse edits");
    conn.close().await.unwrap();
    let events = store.read_stream(&s, 0, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert!(hash::verify_stream(&events).is_empty());
    store.close().await;
}

#[tokio::test]
async fn a_corrupt_row_is_reported_not_skipped() {
    let (_dir, path) = file();
    let store = SqliteStore::open(&path).await.unwrap();
    let s = stream("corrupt-1");
    store
        .append(&s, ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();
    // Appending needs no trigger to be dropped: the damage is a row no store wrote.
    let mut conn = raw(&path).await;
    sqlx::query(
        "INSERT INTO events (event_id, stream, version, event_type, schema_version, data, \
         metadata, command_id, recorded_at, prev_hash, hash, batch_end) \
         VALUES (?, 'corrupt-1', 2, 'noted', 1, '{not json', '{}', ?, 'yesterday', '', '', 2)",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(Uuid::now_v7().to_string())
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    for result in [
        store.read_stream(&s, 0, 10).await,
        store.read_all(Position::START, 10).await,
    ] {
        match result {
            Err(StoreError::Corrupt {
                stream, version, ..
            }) => assert_eq!((stream.as_str(), version), ("corrupt-1", 2)),
            other => panic!("expected a corrupt row, got {other:?}"),
        }
    }
    // Reading before the damage still works, and the writer still knows the head.
    assert_eq!(store.read_stream(&s, 0, 1).await.unwrap().len(), 1);
    assert!(matches!(
        store
            .append(&s, ExpectedVersion::Exact(1), vec![event(3)])
            .await,
        Err(StoreError::Conflict { actual: 2, .. })
    ));
    store.close().await;
}

#[tokio::test]
async fn stream_versions_of_many_streams_in_chunks() {
    let (_dir, path) = file();
    let store = SqliteStore::open(&path).await.unwrap();
    let streams: Vec<_> = (0..1_200).map(|i| stream(&format!("many-{i}"))).collect();
    // Every other stream gets one to three events, all in a few group commits.
    let appends = streams
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(i, s)| {
            let events = (0..=(i as u64 % 3)).map(event).collect();
            store.append(s, ExpectedVersion::NoStream, events)
        });
    for appended in tokio::task::unconstrained(futures::future::join_all(appends)).await {
        appended.unwrap();
    }
    let versions = store.stream_versions(&streams).await.unwrap();
    for (i, version) in versions.into_iter().enumerate() {
        let expected = if i % 2 == 0 { i as u64 % 3 + 1 } else { 0 };
        assert_eq!(version, expected, "stream many-{i}");
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn close_commits_what_it_accepted_and_refuses_the_rest() {
    let (_dir, path) = file();
    let store = Arc::new(SqliteStore::open(&path).await.unwrap());
    let (started, mut running) = tokio::sync::mpsc::channel::<()>(64);
    let writers: Vec<_> = (0..32)
        .map(|t| {
            let store = store.clone();
            let started = started.clone();
            tokio::spawn(async move {
                let s = stream(&format!("draining-{t}"));
                let mut acknowledged = 0;
                loop {
                    match store
                        .append(
                            &s,
                            ExpectedVersion::Exact(acknowledged),
                            vec![event(acknowledged)],
                        )
                        .await
                    {
                        Ok(result) => acknowledged = result.version,
                        Err(StoreError::Closed) => return (s, acknowledged),
                        Err(other) => panic!("unexpected {other}"),
                    }
                    if acknowledged == 3 {
                        let _ = started.send(()).await;
                    }
                }
            })
        })
        .collect();
    drop(started);
    for _ in 0..32 {
        running.recv().await.expect("every writer gets going");
    }
    store.close().await;

    let mut acknowledged = HashMap::new();
    for writer in writers {
        let (s, version) = writer.await.unwrap();
        acknowledged.insert(s, version);
    }
    assert!(matches!(
        store
            .append(&stream("late-1"), ExpectedVersion::Any, vec![event(0)])
            .await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(
        store.read_all(Position::START, 1).await,
        Err(StoreError::Closed)
    ));
    assert!(
        !PathBuf::from(format!("{}-wal", path.display())).exists(),
        "the last connection to close checkpoints and removes the WAL"
    );

    let reopened = SqliteStore::open(&path).await.unwrap();
    for (s, version) in &acknowledged {
        let events = reopened.read_stream(s, 0, 1_000_000).await.unwrap();
        assert_eq!(
            events.len() as u64,
            *version,
            "{s}: exactly what was acknowledged"
        );
        assert!(hash::verify_stream(&events).is_empty());
    }
    reopened.close().await;
}

#[tokio::test]
async fn closing_ends_live_subscriptions() {
    let (_dir, path) = file();
    let store = SqliteStore::open(&path).await.unwrap();
    store
        .append(
            &stream("ending-1"),
            ExpectedVersion::NoStream,
            vec![event(1)],
        )
        .await
        .unwrap();
    let mut live = store.subscribe_all(Position::START);
    let first = tokio::time::timeout(PATIENCE, live.next()).await.unwrap();
    assert!(matches!(first, Some(Ok(_))));
    // The subscription now waits for a commit that will never come.
    let waiting = tokio::spawn(async move {
        let last = live.next().await;
        (last, live.next().await)
    });
    store.close().await;
    let (last, after) = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("the subscription wakes up")
        .unwrap();
    assert!(matches!(last, Some(Err(StoreError::Closed))), "{last:?}");
    assert!(after.is_none(), "and then ends");
}
