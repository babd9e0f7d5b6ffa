//! PostgreSQL-specific behaviour beyond the conformance kit: the delivery horizon,
//! caller-owned transactions, refusals, connection settings, the append-only table.

use futures::StreamExt;
use homeroom_eventstore::{
    EventAppender as _, EventMetadata, EventReader as _, EventSubscriber as _, ExpectedVersion,
    NewEvent, Position, StoreError, StreamId,
};
use homeroom_store_postgres::testing::TestDb;
use homeroom_store_postgres::{
    ConnectError, DuplicateEventId, OutOfOrderAppend, PgStore, PgStoreConfig,
};
use sqlx::{Connection, PgConnection};
use std::time::Duration;
use uuid::Uuid;

/// A bound only a broken store reaches.
const PATIENCE: Duration = Duration::from_secs(10);

fn stream(name: &str) -> StreamId {
    StreamId::parse(format!("{name}-{}", Uuid::now_v7())).expect("valid")
}

fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent {
            event_id: Uuid::now_v7(),
            event_type: "pg_noted".into(),
            schema_version: 1,
            data: serde_json::json!({ "i": i }),
            metadata: EventMetadata {
                command_id: Uuid::now_v7(),
                ..EventMetadata::default()
            },
        })
        .collect()
}

/// The error an engine-level refusal travels in, downcast to this adapter's type.
fn unavailable<E>(result: Result<impl std::fmt::Debug, StoreError>) -> E
where
    E: std::error::Error + Clone + 'static,
{
    match result {
        Err(StoreError::Unavailable(inner)) => inner
            .downcast_ref::<E>()
            .cloned()
            .unwrap_or_else(|| panic!("unexpected engine error: {inner}")),
        other => panic!("expected an Unavailable refusal, got {other:?}"),
    }
}

/// Positions are ordered by transaction id as a number, also across a change in its
/// number of digits (read as text, 100 would sort before 99 and 10 before 9).
#[tokio::test]
async fn delivery_order_compares_transaction_ids_as_numbers() {
    let Some(db) = TestDb::connect_or_skip().await else {
        return;
    };
    let store = db.store().await;
    let command = Uuid::now_v7();
    let metadata = serde_json::to_string(&EventMetadata {
        command_id: command,
        ..EventMetadata::default()
    })
    .expect("metadata");
    // Rows as if written by old transactions 9, 10, 99 and 100 (ids every cluster has
    // long passed), inserted out of order.
    sqlx::query(
        "INSERT INTO events (tx_id, event_id, stream, version, event_type, schema_version, \
         data, metadata, command_id, recorded_at, prev_hash, hash, batch_end) \
         SELECT t::text::xid8, gen_random_uuid(), 'digits-' || t, 1, 'pg_digits', 1, \
                json_build_object('tx', t), $1::json, $2, now(), repeat('0', 64), repeat('0', 64), 1 \
         FROM unnest(ARRAY[100, 9, 99, 10]) AS t",
    )
    .bind(&metadata)
    .bind(command)
    .execute(store.pool())
    .await
    .expect("insert rows with chosen transaction ids");

    let all = store.read_all(Position::START, 10).await.expect("read_all");
    let commits: Vec<u64> = all.iter().map(|e| e.position.commit).collect();
    assert_eq!(commits, vec![9, 10, 99, 100]);
    let after_9 = store.read_all(all[0].position, 1).await.expect("read_all");
    assert_eq!(after_9[0].position.commit, 10);
    let after_99 = store.read_all(all[2].position, 10).await.expect("read_all");
    assert_eq!(after_99.len(), 1);
    assert_eq!(after_99[0].position.commit, 100);
    assert_eq!(store.head().await.expect("head"), all[3].position);
    let found = store.find_command(command).await.expect("find_command");
    assert_eq!(found, all, "find_command is in delivery order too");
    db.drop_schemas().await;
}

/// A transaction anywhere in the cluster that took an id before an append holds that
/// append back from `read_all`, `head` and subscribers (but not from stream reads), and
/// when it ends, without notifying anyone, the events are delivered all the same.
#[tokio::test]
async fn a_long_foreign_transaction_delays_delivery_but_loses_nothing() {
    let Some(db) = TestDb::connect_or_skip().await else {
        return;
    };
    let store = db
        .store_with(|c| {
            c.deliverable_wait = Duration::from_millis(50);
            c.lag_poll = Duration::from_millis(20);
        })
        .await;
    let mut sub = store.subscribe_all(Position::START);

    let mut foreign = PgConnection::connect(db.url()).await.expect("connect");
    let mut tx = foreign.begin().await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *tx)
        .await
        .expect("take an id");

    let s = stream("held_back");
    let written = events(2);
    let r = store
        .append(&s, ExpectedVersion::NoStream, written.clone())
        .await
        .expect("append returns once its wait is over");
    assert_eq!(
        store
            .read_stream(&s, 0, 10)
            .await
            .expect("read_stream")
            .len(),
        2,
        "stream reads see every committed event at once"
    );
    assert_eq!(
        store
            .stream_versions(std::slice::from_ref(&s))
            .await
            .expect("versions"),
        vec![2]
    );
    assert_eq!(
        store.head().await.expect("head"),
        Position::START,
        "not deliverable yet"
    );
    assert!(store
        .read_all(Position::START, 10)
        .await
        .expect("read_all")
        .is_empty());

    tx.commit().await.expect("the foreign transaction ends");
    let got = tokio::time::timeout(PATIENCE, async {
        let mut got = Vec::new();
        while got.len() < 2 {
            got.push(sub.next().await.expect("open").expect("event"));
        }
        got
    })
    .await
    .expect("delivered once the horizon moves, without a notification");
    assert_eq!(
        got.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        written.iter().map(|e| e.event_id).collect::<Vec<_>>()
    );
    assert_eq!(got[1].position, r.position);
    assert_eq!(store.head().await.expect("head"), r.position);
    foreign.close().await.expect("close");
    db.drop_schemas().await;
}

/// By default an append returns once its events are deliverable, so `head` and
/// `read_all` show them to every reader, even right after an older concurrent append.
#[tokio::test]
async fn an_append_returns_once_it_is_deliverable() {
    let Some(db) = TestDb::connect_or_skip().await else {
        return;
    };
    let store = db.store().await;
    let mut foreign = PgConnection::connect(db.url()).await.expect("connect");
    let mut tx = foreign.begin().await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *tx)
        .await
        .expect("take an id");
    let s = stream("waits");
    let append = {
        let (store, s) = (store.clone(), s.clone());
        tokio::spawn(async move { store.append(&s, ExpectedVersion::NoStream, events(1)).await })
    };
    // The append has committed (its stream shows it) but must not return yet.
    tokio::time::timeout(PATIENCE, async {
        while store
            .stream_versions(std::slice::from_ref(&s))
            .await
            .expect("versions")[0]
            == 0
        {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the append commits");
    assert!(
        !append.is_finished(),
        "returned while an older transaction still runs"
    );
    tx.commit().await.expect("commit");
    let r = tokio::time::timeout(PATIENCE, append)
        .await
        .expect("returns once deliverable")
        .expect("no panic")
        .expect("appended");
    assert_eq!(store.head().await.expect("head"), r.position);
    foreign.close().await.expect("close");
    db.drop_schemas().await;
}

/// `append_in` records with the caller's transaction: nothing on rollback, everything
/// (and a live notification) on commit.
#[tokio::test]
async fn append_in_commits_or_rolls_back_with_the_callers_transaction() {
    let Some(db) = TestDb::connect_or_skip().await else {
        return;
    };
    let store = db.store().await;
    let mut sub = store.subscribe_all(Position::START);
    let s = stream("in_tx");

    let mut tx = store.pool().begin().await.expect("begin");
    store
        .append_in(&mut tx, &s, ExpectedVersion::NoStream, events(2))
        .await
        .expect("append_in");
    tx.rollback().await.expect("rollback");
    assert_eq!(
        store
            .stream_versions(std::slice::from_ref(&s))
            .await
            .expect("versions"),
        vec![0]
    );

    let written = events(2);
    let mut tx = store.pool().begin().await.expect("begin");
    let r = store
        .append_in(&mut tx, &s, ExpectedVersion::NoStream, written.clone())
        .await
        .expect("append_in after the rollback: nothing was taken");
    assert_eq!(r.version, 2);
    tx.commit().await.expect("commit");
    let got = tokio::time::timeout(PATIENCE, async {
        let first = sub.next().await.expect("open").expect("event");
        let second = sub.next().await.expect("open").expect("event");
        [first, second]
    })
    .await
    .expect("the commit is delivered live");
    assert_eq!(got[0].event_id, written[0].event_id);
    assert_eq!(got[1].position, r.position);
    db.drop_schemas().await;
}

/// A caller's transaction that took its id before the stream's head was written by a
/// younger one would put the new events before the head in delivery order: refused, and
/// nothing is recorded.
#[tokio::test]
async fn append_in_refuses_a_transaction_older_than_the_streams_head() {
    let Some(db) = TestDb::connect_or_skip().await else {
        return;
    };
    let store = db.store_with(|c| c.deliverable_wait = Duration::ZERO).await;
    let s = stream("old_tx");
    let mut tx = store.pool().begin().await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *tx)
        .await
        .expect("take an id early");
    store
        .append(&s, ExpectedVersion::NoStream, events(1))
        .await
        .expect("a younger transaction writes the head");
    let refused: OutOfOrderAppend = unavailable(
        store
            .append_in(&mut tx, &s, ExpectedVersion::Any, events(1))
            .await,
    );
    assert_eq!(refused.stream, s);
    assert!(refused.tx_id < refused.head_tx_id);
    tx.rollback().await.expect("rollback");
    assert_eq!(
        store.stream_versions(&[s]).await.expect("versions"),
        vec![1]
    );
    db.drop_schemas().await;
}

/// Event ids are unique across the log: reusing one in another stream, or later in a new
/// batch, is refused (it is not an idempotent retry) and records nothing.
#[tokio::test]
async fn an_event_id_already_stored_elsewhere_is_refused() {
    let Some(db) = TestDb::connect_or_skip().await else {
        return;
    };
    let store = db.store().await;
    let (a, b) = (stream("ids_a"), stream("ids_b"));
    let first = events(1);
    store
        .append(&a, ExpectedVersion::NoStream, first.clone())
        .await
        .expect("first");

    let refused: DuplicateEventId =
        unavailable(store.append(&b, ExpectedVersion::Any, first.clone()).await);
    assert_eq!(refused.stream, b);

    let mut mixed = events(1);
    mixed.push(first[0].clone());
    let refused: DuplicateEventId =
        unavailable(store.append(&a, ExpectedVersion::Any, mixed).await);
    assert_eq!(refused.stream, a);

    assert_eq!(
        store.stream_versions(&[a, b]).await.expect("versions"),
        vec![1, 0]
    );
    db.drop_schemas().await;
}

/// No global lock: while a transaction holds an uncommitted append to one stream, an
/// append to another stream completes; a racing append to the same stream waits for it
/// and then reports the conflict with the version it re-read.
#[tokio::test]
async fn writers_to_different_streams_do_not_wait_for_each_other() {
    let Some(db) = TestDb::connect_or_skip().await else {
        return;
    };
    let store = db.store_with(|c| c.deliverable_wait = Duration::ZERO).await;
    let (a, b) = (stream("busy"), stream("free"));
    let mut tx = store.pool().begin().await.expect("begin");
    store
        .append_in(&mut tx, &a, ExpectedVersion::NoStream, events(1))
        .await
        .expect("held append");

    let other = tokio::time::timeout(
        PATIENCE,
        store.append(&b, ExpectedVersion::NoStream, events(3)),
    )
    .await
    .expect("another stream's append does not wait for the open transaction")
    .expect("appended");
    assert_eq!(other.version, 3);

    let racing = {
        let (store, a) = (store.clone(), a.clone());
        tokio::spawn(async move { store.append(&a, ExpectedVersion::NoStream, events(1)).await })
    };
    let any = {
        let (store, a) = (store.clone(), a.clone());
        tokio::spawn(async move { store.append(&a, ExpectedVersion::Any, events(1)).await })
    };
    tx.commit().await.expect("commit");
    match racing.await.expect("no panic") {
        Err(StoreError::Conflict {
            expected, actual, ..
        }) => {
            assert_eq!(expected, ExpectedVersion::NoStream);
            assert!(actual >= 1, "the conflict re-reads the version: {actual}");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let any = any
        .await
        .expect("no panic")
        .expect("Any retries past the race");
    assert_eq!(any.version, 2);
    db.drop_schemas().await;
}

/// Connections carry the schema as `search_path` and the idle-in-transaction timeout;
/// a second store on the same schema shares its log; unusable names are refused.
#[tokio::test]
async fn connections_are_configured_and_schemas_are_shared_or_refused() {
    let Some(db) = TestDb::connect_or_skip().await else {
        return;
    };
    let store = db
        .store_with(|c| c.idle_in_transaction_timeout = Duration::from_millis(1500))
        .await;
    let search_path: String = sqlx::query_scalar("SHOW search_path")
        .fetch_one(store.pool())
        .await
        .expect("show");
    assert_eq!(search_path, store.schema());
    let timeout: String = sqlx::query_scalar("SHOW idle_in_transaction_session_timeout")
        .fetch_one(store.pool())
        .await
        .expect("show");
    assert_eq!(timeout, "1500ms");

    let s = stream("shared_schema");
    let r = store
        .append(&s, ExpectedVersion::NoStream, events(1))
        .await
        .expect("append");
    let again = PgStore::connect(db.url(), store.schema())
        .await
        .expect("connecting to a migrated schema again");
    assert_eq!(again.head().await.expect("head"), r.position);
    again.close().await;

    for bad in ["", "Upper", "with-dash", "x;drop", "pg_mine", "1st"] {
        assert!(
            matches!(
                PgStore::connect_with(PgStoreConfig::new(db.url(), bad)).await,
                Err(ConnectError::BadSchema(_))
            ),
            "{bad:?} must be refused"
        );
    }
    db.drop_schemas().await;
}

/// The application cannot update or delete an event: the table refuses it.
#[tokio::test]
async fn the_event_table_is_append_only() {
    let Some(db) = TestDb::connect_or_skip().await else {
        return;
    };
    let store = db.store().await;
    let s = stream("append_only");
    store
        .append(&s, ExpectedVersion::NoStream, events(1))
        .await
        .expect("append");
    for sql in [
        "UPDATE events SET data = '{}'",
        "DELETE FROM events",
        "TRUNCATE events",
    ] {
        let err = sqlx::query(sql)
            .execute(store.pool())
            .await
            .expect_err("refused");
        let code = err
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("42501"), "{sql}: {err}");
    }
    assert_eq!(store.read_stream(&s, 0, 10).await.expect("read").len(), 1);
    db.drop_schemas().await;
}

/// After `close`, a live subscription ends with `Closed` instead of waiting forever, and
/// the store takes no more work.
#[tokio::test]
async fn closing_the_store_ends_subscriptions_and_refuses_work() {
    let Some(db) = TestDb::connect_or_skip().await else {
        return;
    };
    let store = db.store().await;
    let mut sub = store.subscribe_all(Position::START);
    let waiting = tokio::spawn(async move { sub.next().await });
    store.close().await;
    let item = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("the subscription ends")
        .expect("no panic");
    assert!(
        matches!(item, Some(Err(StoreError::Closed))),
        "expected Closed, got {item:?}"
    );
    assert!(matches!(
        store
            .append(&stream("closed"), ExpectedVersion::Any, events(1))
            .await,
        Err(StoreError::Closed)
    ));
    db.drop_schemas().await;
}

/// Two store instances on one schema (two processes) appending to the same stream: the
/// head each remembers from its own last append goes stale, and that never records an
/// event at a taken version, never hides a conflict and never breaks idempotency.
#[tokio::test]
async fn a_stale_remembered_head_never_records_wrongly_nor_hides_a_conflict() {
    let Some(db) = TestDb::connect_or_skip().await else {
        return;
    };
    let a = db.store().await;
    let b = PgStore::connect(db.url(), a.schema())
        .await
        .expect("a second store on the same schema");
    let s = stream("shared_head");
    let first = events(2);
    a.append(&s, ExpectedVersion::NoStream, first.clone())
        .await
        .expect("a appends v1-2");
    b.append(&s, ExpectedVersion::Exact(2), events(1))
        .await
        .expect("b appends v3");
    // `a` remembers v2: an exact expectation of its stale head is a conflict at v3.
    match a.append(&s, ExpectedVersion::Exact(2), events(1)).await {
        Err(StoreError::Conflict { actual, .. }) => assert_eq!(actual, 3),
        other => panic!("expected a conflict at 3, got {other:?}"),
    }
    b.append(&s, ExpectedVersion::Exact(3), events(1))
        .await
        .expect("b appends v4");
    // `Any` on a stale head lands after the real one.
    let r = a
        .append(&s, ExpectedVersion::Any, events(1))
        .await
        .expect("a appends with Any");
    assert_eq!(r.version, 5);
    // The right exact version after the other process wrote goes through.
    b.append(&s, ExpectedVersion::Exact(5), events(1))
        .await
        .expect("b appends v6");
    let r = a
        .append(&s, ExpectedVersion::Exact(6), events(1))
        .await
        .expect("a appends v7 knowing v6");
    assert_eq!(r.version, 7);
    // Re-appending the first batch, whatever is expected, answers the original result.
    for expected in [ExpectedVersion::Any, ExpectedVersion::Exact(7)] {
        let again = a
            .append(&s, expected, first.clone())
            .await
            .expect("an idempotent re-append");
        assert_eq!(again.version, 2);
    }
    let stored = a.read_stream(&s, 0, 100).await.expect("read_stream");
    assert_eq!(
        stored.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    assert!(homeroom_eventstore::hash::verify_stream(&stored).is_empty());
    b.close().await;
    a.close().await;
    db.drop_schemas().await;
}

/// An appending process that dies between its commit and its notification leaves a
/// committed event nobody was told about: the LISTEN task's idle check delivers it.
/// Several rounds, so that the subscriber is surely waiting (not catching up) in some.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_notification_never_came_is_delivered_all_the_same() {
    let Some(db) = TestDb::connect_or_skip().await else {
        return;
    };
    let store = db
        .store_with(|c| c.idle_poll = Duration::from_millis(20))
        .await;
    let mut sub = store.subscribe_all(Position::START);
    let (forward, mut received) = tokio::sync::mpsc::unbounded_channel();
    let follower = tokio::spawn(async move {
        while let Some(item) = sub.next().await {
            if forward.send(item).is_err() {
                break;
            }
        }
    });
    let s = stream("silent");
    let metadata = serde_json::to_string(&EventMetadata::default()).expect("metadata");
    let mut writer = PgConnection::connect(db.url()).await.expect("connect");
    for version in 1..=5_i64 {
        // What `append` writes, minus the notification that would follow its commit
        // (the chain is not the point here).
        sqlx::query(&format!(
            "INSERT INTO {}.events (event_id, stream, version, event_type, schema_version, \
             data, metadata, command_id, recorded_at, prev_hash, hash, batch_end) \
             VALUES ($1, $2, $3, 'pg_silent', 1, '{{}}', $4::json, $5, now(), \
                     repeat('0', 64), repeat('0', 64), $3)",
            store.schema()
        ))
        .bind(Uuid::now_v7())
        .bind(s.as_str())
        .bind(version)
        .bind(&metadata)
        .bind(Uuid::nil())
        .execute(&mut writer)
        .await
        .expect("a commit without a notification");
        let got = tokio::time::timeout(PATIENCE, received.recv())
            .await
            .unwrap_or_else(|_| panic!("silent commit {version} not delivered"))
            .expect("open")
            .expect("event");
        assert_eq!((&got.stream, got.version), (&s, version as u64));
    }
    follower.abort();
    writer.close().await.expect("close");
    store.close().await;
    db.drop_schemas().await;
}
