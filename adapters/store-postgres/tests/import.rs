//! Moving an embedded (SQLite) instance's log into PostgreSQL with `import::import_log`:
//! verbatim, chains intact, in order, resumable, and refusing what it must refuse.
//!
//! Each test builds its own SQLite log in a temporary directory (many streams, appends
//! of one to three events, concurrent so the SQLite writer group-commits them) and
//! imports it into a fresh PostgreSQL schema.

use futures::StreamExt;
use homeroom_eventstore::hash::verify_log;
use homeroom_eventstore::{
    EventAppender as _, EventMetadata, EventReader, EventSubscriber as _, ExpectedVersion,
    NewEvent, Position, RecordedEvent, StoreError, StreamId,
};
use homeroom_store_postgres::import::{
    import_log, ImportError, ImportOptions, ImportProgress, ImportReport,
};
use homeroom_store_postgres::testing::{self, TestDb};
use homeroom_store_postgres::PgStore;
use homeroom_store_sqlite::SqliteStore;
use sqlx::{ConnectOptions, Connection, PgConnection};
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

/// A bound only a broken import reaches.
const PATIENCE: Duration = Duration::from_secs(20);

/// What the source log holds: its stream names in creation order, and one append of
/// three events (stream and events) to re-append for the idempotency check.
struct Source {
    store: SqliteStore,
    streams: Vec<StreamId>,
    events: usize,
    three: (StreamId, Vec<NewEvent>),
}

/// Event data of many shapes, so "verbatim" covers more than plain strings.
fn data(stream: usize, append: usize, i: usize) -> serde_json::Value {
    match (stream + append + i) % 5 {
        0 => serde_json::json!({ "body": "Picture day is Friday. Bring the form.", "n": i }),
        1 => {
            serde_json::json!({ "body": "Élève absent — réunion à 8h ✓ 你好 🎒", "tags": ["a", "b"] })
        }
        2 => {
            serde_json::json!({ "big": u64::MAX, "neg": i64::MIN, "float": 0.1, "tiny": 1e-300, "nested": { "z": [1, { "y": null }], "a": true } })
        }
        3 => serde_json::json!({ "nul": "a\u{0}b", "quote": "\"'\\", "empty": {}, "list": [] }),
        _ => serde_json::json!([stream, append, i, "x".repeat(300)]),
    }
}

fn append_events(stream: usize, append: usize, n: usize) -> Vec<NewEvent> {
    let command = Uuid::now_v7();
    (0..n)
        .map(|i| NewEvent {
            event_id: Uuid::now_v7(),
            event_type: format!("import_noted_{}", i % 2),
            schema_version: 1 + (i % 2) as u32,
            data: data(stream, append, i),
            metadata: EventMetadata {
                district: format!("district-{}", stream % 3),
                school: stream
                    .is_multiple_of(2)
                    .then(|| format!("school-{}", stream % 7)),
                actor: format!("staff-{stream}"),
                correlation_id: Uuid::now_v7(),
                causation_id: command,
                command_id: command,
                command_digest: append.is_multiple_of(2).then(|| "d".repeat(64)),
            },
        })
        .collect()
}

/// A SQLite log of `streams` streams with `appends` appends each (of 1 to 3 events),
/// written by one task per stream at once.
async fn sqlite_source(dir: &Path, streams: usize, appends: usize) -> Source {
    let store = SqliteStore::open(&dir.join("events.sqlite"))
        .await
        .expect("open the SQLite source");
    let names: Vec<StreamId> = (0..streams)
        .map(|s| {
            let category = ["conversation", "person", "delivery"][s % 3];
            StreamId::parse(format!("{category}-d{}:{}", s % 3, Uuid::now_v7())).expect("valid")
        })
        .collect();
    let writers = names.iter().enumerate().map(|(s, name)| {
        let (store, name) = (store.clone(), name.clone());
        tokio::spawn(async move {
            let mut version = 0;
            let mut count = 0;
            let mut three = None;
            for a in 0..appends {
                let n = 1 + (s + a) % 3;
                let events = append_events(s, a, n);
                if n == 3 && three.is_none() {
                    three = Some(events.clone());
                }
                let r = store
                    .append(&name, ExpectedVersion::from_version(version), events)
                    .await
                    .expect("a source append");
                version = r.version;
                count += n;
            }
            (count, three.map(|t| (name, t)))
        })
    });
    let mut events = 0;
    let mut three = None;
    for writer in futures::future::join_all(writers).await {
        let (count, t) = writer.expect("a source writer");
        events += count;
        three = three.or(t);
    }
    Source {
        store,
        streams: names,
        events,
        three: three.expect("some append had three events"),
    }
}

/// The whole log in delivery order.
async fn read_log(reader: &dyn EventReader) -> Vec<RecordedEvent> {
    let mut log = Vec::new();
    let mut after = Position::START;
    loop {
        let page = reader.read_all(after, 700).await.expect("read_all");
        let Some(last) = page.last() else {
            return log;
        };
        after = last.position;
        log.extend(page);
    }
}

/// An event as an auditor sees it: everything but the store's own position.
fn audited(mut e: RecordedEvent) -> RecordedEvent {
    e.position = Position::START;
    e
}

/// Everything the brief promises: `read_all` in the same relative order with strictly
/// increasing positions, every stream read identical, every chain verifying.
async fn assert_identical(source: &Source, target: &PgStore) {
    let from = read_log(&source.store).await;
    let to = read_log(target).await;
    assert_eq!(
        from.len(),
        source.events,
        "the source holds what was written"
    );
    assert_eq!(to.len(), from.len(), "the target holds as many events");
    for pair in to.windows(2) {
        assert!(
            pair[0].position < pair[1].position,
            "target positions increase"
        );
    }
    for (i, (a, b)) in from.iter().zip(&to).enumerate() {
        assert_eq!(
            audited(a.clone()),
            audited(b.clone()),
            "event {i} of the log differs after the import"
        );
    }
    for stream in &source.streams {
        let a = source
            .store
            .read_stream(stream, 0, 10_000)
            .await
            .expect("read a source stream");
        let b = target
            .read_stream(stream, 0, 10_000)
            .await
            .expect("read a target stream");
        assert!(!a.is_empty());
        assert_eq!(
            a.into_iter().map(audited).collect::<Vec<_>>(),
            b.into_iter().map(audited).collect::<Vec<_>>(),
            "{stream} reads differently after the import"
        );
    }
    let verified = verify_log(target, |_| true)
        .await
        .expect("verify the target");
    assert_eq!(verified.checked(), source.events as u64);
    assert!(
        verified.broken().is_empty(),
        "broken: {:?}",
        verified.broken()
    );
}

/// Follows `store` from the start on a task of its own (a subscription reads only when
/// polled), forwarding what it delivers.
fn follow(store: &PgStore) -> mpsc::UnboundedReceiver<Result<RecordedEvent, StoreError>> {
    let mut sub = store.subscribe_all(Position::START);
    let (forward, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(item) = sub.next().await {
            if forward.send(item).is_err() {
                break;
            }
        }
    });
    received
}

async fn take(
    received: &mut mpsc::UnboundedReceiver<Result<RecordedEvent, StoreError>>,
    n: usize,
) -> Vec<RecordedEvent> {
    let collect = async {
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            match received.recv().await {
                Some(Ok(event)) => got.push(event),
                Some(Err(err)) => panic!("the subscription failed after {}: {err}", got.len()),
                None => panic!("the subscription ended after {} events", got.len()),
            }
        }
        got
    };
    tokio::time::timeout(PATIENCE, collect)
        .await
        .unwrap_or_else(|_| panic!("fewer than {n} events delivered within {PATIENCE:?}"))
}

/// `what`, or a panic naming it when it takes longer than [`PATIENCE`].
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {PATIENCE:?}"))
}

async fn target_count(store: &PgStore) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(store.pool())
        .await
        .expect("count the target's events")
}

fn options(batch: usize) -> ImportOptions {
    ImportOptions {
        batch,
        page: 300,
        ..ImportOptions::default()
    }
}

/// A few thousand events over hundreds of streams arrive identical, in order, with
/// verifying chains; a live subscriber on the target receives them in the source's
/// order; idempotency and command lookups work on the imported log; a second run finds
/// everything there and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_log_moves_to_postgres_verbatim() {
    let Some(db) = TestDb::connect_or_skip().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let source = sqlite_source(dir.path(), 300, 6).await;
    let target = db.store().await;
    let mut live = follow(&target);

    let mut seen = Vec::new();
    let report = import_log(&source.store, &target, options(250), |p| seen.push(p))
        .await
        .expect("the import succeeds");
    let n = source.events as u64;
    assert!(n >= 3_000, "a few thousand events, got {n}");
    assert_eq!(
        (report.events, report.written, report.skipped),
        (n, n, 0),
        "{report:?}"
    );
    assert_eq!(report.streams, source.streams.len() as u64);
    assert!(
        report.batches >= n / 260,
        "batches of about 250: {report:?}"
    );
    assert_eq!(
        seen.len() as u64,
        report.batches,
        "one progress per transaction"
    );
    assert!(seen.windows(2).all(|w| w[0].written < w[1].written));

    // A subscriber that was following the target saw every event once, in source order
    // (waiting for it also waits out any other transaction of the cluster that holds
    // the delivery horizon back, so the reads below see the whole log).
    let delivered = take(&mut live, source.events).await;
    assert_eq!(
        delivered.last().map(|e| e.position),
        Some(report.target_head)
    );
    assert_identical(&source, &target).await;
    let expected: Vec<Uuid> = read_log(&source.store)
        .await
        .iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(
        delivered.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        expected,
        "live delivery follows the source's order"
    );

    // Append boundaries came along: re-appending a three-event append answers with the
    // original result (its last version), and commands are found by id.
    let (stream, events) = source.three.clone();
    let command = events[0].metadata.command_id;
    let stored = target
        .read_stream(&stream, 0, 100)
        .await
        .expect("read the stream");
    let first = stored
        .iter()
        .position(|e| e.event_id == events[0].event_id)
        .expect("the append was imported");
    let again = target
        .append(&stream, ExpectedVersion::Any, events)
        .await
        .expect("an idempotent re-append");
    assert_eq!(again.version, stored[first + 2].version);
    assert_eq!(again.position, stored[first + 2].position);
    let by_command = target.find_command(command).await.expect("find_command");
    assert_eq!(
        by_command.into_iter().map(audited).collect::<Vec<_>>(),
        source
            .store
            .find_command(command)
            .await
            .expect("find_command in the source")
            .into_iter()
            .map(audited)
            .collect::<Vec<_>>()
    );

    // Running it again finds everything there, identical, and writes nothing.
    let again = import_log(&source.store, &target, options(250), |_| {})
        .await
        .expect("a second run succeeds");
    assert_eq!(
        (again.events, again.written, again.skipped, again.batches),
        (n, 0, n, 0)
    );
    assert_eq!(again.target_head, report.target_head);

    source.store.close().await;
    target.close().await;
    db.drop_schemas().await;
}

/// Starts an import of `source` into `target` on a task of its own, reporting each
/// committed transaction's progress on `progress`.
fn spawn_import(
    source: &SqliteStore,
    target: &PgStore,
    progress: mpsc::UnboundedSender<ImportProgress>,
) -> tokio::task::JoinHandle<Result<ImportReport, ImportError>> {
    let (source, target) = (source.clone(), target.clone());
    tokio::spawn(async move {
        import_log(&source, &target, options(50), move |p| {
            if p.batches > 0 {
                let _ = progress.send(p);
            }
        })
        .await
    })
}

/// Progress reports until the one that committed the `n`th transaction of the run.
async fn until_batch(
    progress: &mut mpsc::UnboundedReceiver<ImportProgress>,
    n: u64,
) -> ImportProgress {
    within("the import's progress", async {
        loop {
            match progress.recv().await {
                Some(p) if p.batches >= n => break p,
                Some(_) => {}
                None => panic!("the import ended before its batch {n}"),
            }
        }
    })
    .await
}

/// Killed twice, once by dropping it (what killing the process does) and once by the
/// server ending its session in the middle of a transaction, the import resumes each
/// time where the target stands and ends with the target identical to the source; a
/// subscriber following the target all along sees each event once, in source order,
/// and never an event of a rolled-back batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_import_resumes_and_ends_identical() {
    let Some(db) = TestDb::connect_or_skip().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let source = sqlite_source(dir.path(), 120, 8).await;
    let target = db.store().await;
    let mut live = follow(&target);
    let schema = target.schema().to_owned();

    // Run 1: dropped (its task aborted) once it has committed three transactions.
    let (tx, mut progress) = mpsc::unbounded_channel();
    let run1 = spawn_import(&source.store, &target, tx);
    let third = until_batch(&mut progress, 3).await;
    run1.abort();
    assert!(
        within("run 1 ends", run1)
            .await
            .is_err_and(|e| e.is_cancelled()),
        "run 1 was killed before it finished"
    );
    // A kill during COMMIT may still commit: count once run 1's session has ended,
    // which the import lock tells (a resumed run waits for it the same way).
    let mut holder = PgConnection::connect(db.url()).await.expect("connect");
    within(
        "run 1's session ends",
        sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
            .bind(format!("homeroom-import:{schema}"))
            .execute(&mut holder),
    )
    .await
    .expect("take the import lock");
    let after_run1 = target_count(&target).await;
    holder.close().await.expect("release the import lock");
    assert!(after_run1 >= third.written as i64, "committed batches stay");
    assert!(
        (after_run1 as usize) < source.events,
        "run 1 did not finish"
    );

    // Run 2: resumes after what run 1 committed; once it has committed two transactions
    // of its own, the table is locked against writes so its next INSERT waits inside its
    // transaction, and its session is terminated there.
    let (tx, mut progress) = mpsc::unbounded_channel();
    let run2 = spawn_import(&source.store, &target, tx);
    let second = until_batch(&mut progress, 2).await;
    assert_eq!(
        second.skipped as i64, after_run1,
        "run 2 skipped what run 1 wrote"
    );
    let mut locker = PgConnection::connect(db.url()).await.expect("connect");
    let mut lock = locker.begin().await.expect("begin");
    within(
        "the table lock",
        sqlx::query(&format!("LOCK TABLE {schema}.events IN SHARE MODE")).execute(&mut *lock),
    )
    .await
    .expect("lock the table against writes");
    let waiting: i32 = within("run 2 waits for the lock", async {
        loop {
            let pid: Option<i32> = sqlx::query_scalar(
                "SELECT pid FROM pg_locks WHERE NOT granted AND relation = $1::text::regclass",
            )
            .bind(format!("{schema}.events"))
            .fetch_optional(&mut *lock)
            .await
            .expect("look for the waiting import");
            if let Some(pid) = pid {
                break pid;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(waiting)
        .fetch_one(&mut *lock)
        .await
        .expect("terminate the import's session");
    assert!(terminated);
    lock.rollback().await.expect("release the lock");
    let killed = within("run 2 ends", run2).await.expect("run 2's task");
    assert!(
        matches!(killed, Err(ImportError::Target(_))),
        "run 2 ends with its session: {killed:?}"
    );
    let mut last = second;
    while let Ok(p) = progress.try_recv() {
        last = p;
    }
    let after_run2 = target_count(&target).await;
    assert_eq!(
        after_run2,
        (last.skipped + last.written) as i64,
        "every committed transaction stays, nothing of the one in flight"
    );
    assert!(
        (after_run2 as usize) < source.events,
        "run 2 did not finish"
    );

    // Run 3: finishes, skipping whatever the two earlier runs committed.
    let report = within(
        "run 3",
        import_log(&source.store, &target, options(50), |_| {}),
    )
    .await
    .expect("the third run completes");
    assert_eq!(report.skipped as i64, after_run2);
    assert_eq!(report.events, source.events as u64);
    assert_eq!(report.skipped + report.written, report.events);
    let delivered = take(&mut live, source.events).await;
    assert_identical(&source, &target).await;
    let expected: Vec<Uuid> = read_log(&source.store)
        .await
        .iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(
        delivered.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        expected,
        "across the kills, live delivery is the source's order, each event once"
    );

    source.store.close().await;
    target.close().await;
    db.drop_schemas().await;
}

/// An attacker edited one row of the SQLite file (dropping its append-only trigger):
/// the import stops at that event, naming its stream and version, and writes nothing
/// of that stream from there on.
#[tokio::test]
async fn a_tampered_source_is_refused_naming_the_event() {
    let Some(db) = TestDb::connect_or_skip().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let source = sqlite_source(dir.path(), 40, 5).await;
    let victim = source.streams[17].clone();
    let path = source.store.path().to_owned();
    source.store.close().await;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .connect()
        .await
        .expect("open the file behind the store's back");
    sqlx::query("DROP TRIGGER events_are_never_updated")
        .execute(&mut conn)
        .await
        .expect("drop the trigger");
    let changed = sqlx::query(
        r#"UPDATE events SET data = '{"body":"edited"}' WHERE stream = ? AND version = 3"#,
    )
    .bind(victim.as_str())
    .execute(&mut conn)
    .await
    .expect("edit a row");
    assert_eq!(changed.rows_affected(), 1);
    conn.close().await.expect("close");
    let store = SqliteStore::open(&path).await.expect("reopen the source");

    let target = db.store().await;
    let refused = import_log(&store, &target, options(20), |_| {}).await;
    match refused {
        Err(ImportError::BrokenChain { stream, version }) => {
            assert_eq!((stream, version), (victim.clone(), 3));
        }
        other => panic!("expected a broken chain at {victim} v3, got {other:?}"),
    }
    let after: Vec<u64> = target
        .read_stream(&victim, 0, 100)
        .await
        .expect("read the victim stream")
        .iter()
        .map(|e| e.version)
        .collect();
    assert!(
        after.iter().all(|v| *v < 3),
        "nothing from the broken event on was imported: {after:?}"
    );
    assert!((target_count(&target).await as usize) < read_log(&store).await.len());

    store.close().await;
    target.close().await;
    db.drop_schemas().await;
}

/// A target holding another instance's events, more events than the source, or a
/// changed copy of an imported event is refused, naming the event, and nothing is
/// written; an import lock held elsewhere makes it give up as busy.
#[tokio::test]
async fn a_target_that_is_not_a_prefix_of_the_source_is_refused() {
    let Some(db) = TestDb::connect_or_skip().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let source = sqlite_source(dir.path(), 30, 4).await;

    // Another instance's event.
    let foreign = db.store().await;
    let elsewhere =
        StreamId::parse(format!("conversation-other:{}", Uuid::now_v7())).expect("valid");
    foreign
        .append(
            &elsewhere,
            ExpectedVersion::NoStream,
            append_events(0, 0, 1),
        )
        .await
        .expect("a foreign append");
    match import_log(&source.store, &foreign, options(20), |_| {}).await {
        Err(ImportError::ForeignEvent {
            stream, version, ..
        }) => assert_eq!((stream.as_str(), version), (elsewhere.as_str(), 1)),
        other => panic!("expected the foreign event to be named, got {other:?}"),
    }
    assert_eq!(target_count(&foreign).await, 1, "nothing was written");

    // A complete import with one event more.
    let ahead = db.store().await;
    import_log(&source.store, &ahead, options(20), |_| {})
        .await
        .expect("import");
    ahead
        .append(
            &elsewhere,
            ExpectedVersion::NoStream,
            append_events(0, 0, 1),
        )
        .await
        .expect("an extra append");
    match import_log(&source.store, &ahead, options(20), |_| {}).await {
        Err(ImportError::TargetAhead { stream, version }) => {
            assert_eq!((stream.as_str(), version), (elsewhere.as_str(), 1));
        }
        other => panic!("expected the extra event to be named, got {other:?}"),
    }

    // A complete import whose copy of one event was changed afterwards.
    let changed = db.store().await;
    import_log(&source.store, &changed, options(20), |_| {})
        .await
        .expect("import");
    let victim = source.streams[5].clone();
    testing::tamper(db.url(), changed.schema(), victim.as_str(), 2).await;
    match import_log(&source.store, &changed, options(20), |_| {}).await {
        Err(ImportError::ForeignEvent {
            stream,
            version,
            source_stream,
            source_version,
        }) => {
            assert_eq!((stream.as_str(), version), (victim.as_str(), 2));
            assert_eq!((source_stream, source_version), (victim.clone(), 2));
        }
        other => panic!("expected the changed event to be named, got {other:?}"),
    }

    // Another import holding the lock.
    let busy = db.store().await;
    let mut holder = PgConnection::connect(db.url()).await.expect("connect");
    sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
        .bind(format!("homeroom-import:{}", busy.schema()))
        .execute(&mut holder)
        .await
        .expect("hold the import lock");
    let short = ImportOptions {
        lock_wait: Duration::from_millis(200),
        ..options(20)
    };
    match import_log(&source.store, &busy, short, |_| {}).await {
        Err(ImportError::Busy { schema, .. }) => assert_eq!(schema, busy.schema()),
        other => panic!("expected busy, got {other:?}"),
    }
    assert_eq!(target_count(&busy).await, 0);
    holder.close().await.expect("release the lock");

    source.store.close().await;
    for store in [foreign, ahead, changed, busy] {
        store.close().await;
    }
    db.drop_schemas().await;
}
