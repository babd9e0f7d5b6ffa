//! Out-of-order commits: the reason positions are `(transaction id, sequence)`.
//!
//! Each iteration opens transactions that take their transaction id and sequence
//! numbers first (events appended with `append_in`, or just an id, as any other writer
//! in the cluster might) and commit only after many younger appends have committed. A
//! subscriber, on a second store instance over the same schema (as another process
//! would be), must deliver every committed event exactly once, in `(tx, seq)` order,
//! never an event of a rolled-back transaction, and each stream's versions in order.
//!
//! `HOMEROOM_PG_STRESS_ITERS=2000 cargo test -p homeroom-store-postgres --test
//! out_of_order -- --nocapture` runs a longer loop (the default is 50 iterations).

use futures::StreamExt;
use homeroom_eventstore::{
    EventAppender as _, EventMetadata, EventReader as _, EventSubscriber as _, ExpectedVersion,
    NewEvent, Position, RecordedEvent, StoreError, StreamId,
};
use homeroom_store_postgres::testing::TestDb;
use homeroom_store_postgres::{PgStore, PgStoreConfig};
use sqlx::{Connection, PgConnection};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::{watch, Barrier};
use uuid::Uuid;

const DEFAULT_ITERATIONS: usize = 50;
/// Writers appending concurrently while the held transactions stay open.
const WRITERS: usize = 6;
/// Appends per writer per iteration.
const APPENDS: usize = 6;
/// Transactions holding events (and an early id) open per iteration.
const HOLDERS: usize = 2;
/// Streams every writer appends to with `Any`, so writers also race for versions.
const SHARED: usize = 2;
/// A bound only a broken store reaches; nothing here waits on a timer otherwise.
const PATIENCE: Duration = Duration::from_secs(30);

fn iterations() -> usize {
    std::env::var("HOMEROOM_PG_STRESS_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ITERATIONS)
}

fn stream(name: String) -> StreamId {
    StreamId::parse(name).expect("test stream names are valid")
}

fn batch(n: usize, tag: &str) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent {
            event_id: Uuid::now_v7(),
            event_type: "stress_noted".into(),
            schema_version: 1,
            data: serde_json::json!({ "tag": tag, "i": i }),
            metadata: EventMetadata {
                command_id: Uuid::now_v7(),
                ..EventMetadata::default()
            },
        })
        .collect()
}

/// What one iteration committed, for the checks.
#[derive(Default)]
struct Iteration {
    /// Every event id that must be delivered.
    committed: HashSet<Uuid>,
    /// Event ids of rolled-back transactions, which must never be delivered.
    rolled_back: HashSet<Uuid>,
    /// The last event id of each committed append and the position it was given.
    results: Vec<(Uuid, Position)>,
    /// Held transactions that committed after a younger append with a higher sequence
    /// had committed: a reader going by sequence alone would have skipped them.
    overtaken: usize,
}

async fn run_iteration(store: &PgStore, url: &str, iter: usize) -> Iteration {
    let total_appends = WRITERS * APPENDS;
    let (progress_tx, progress_rx) = watch::channel(0usize);
    let highest_writer_seq = Arc::new(AtomicU64::new(0));
    // Held transactions and the foreign id holder take their ids before any writer starts.
    let ready = Arc::new(Barrier::new(HOLDERS + 2));

    let holders: Vec<_> = (0..HOLDERS)
        .map(|h| {
            let (store, ready, mut progress) = (store.clone(), ready.clone(), progress_rx.clone());
            let highest = highest_writer_seq.clone();
            tokio::spawn(async move {
                let mut tx = store
                    .pool()
                    .begin()
                    .await
                    .expect("begin a held transaction");
                let s = stream(format!("held-{iter}-{h}"));
                let events = batch(1 + h, "held");
                let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
                let r = store
                    .append_in(&mut tx, &s, ExpectedVersion::NoStream, events)
                    .await
                    .expect("append in a held transaction");
                ready.wait().await;
                // The first holder commits halfway through the writers, the second after
                // all of them.
                let threshold = if h == 0 {
                    total_appends / 2
                } else {
                    total_appends
                };
                progress
                    .wait_for(|n| *n >= threshold)
                    .await
                    .expect("progress");
                let overtaken = highest.load(Ordering::SeqCst) > r.position.sequence;
                let commit = !(h == 0 && iter % 4 == 3);
                if commit {
                    tx.commit().await.expect("commit a held transaction");
                } else {
                    tx.rollback().await.expect("roll back a held transaction");
                }
                (commit, ids, r.position, overtaken)
            })
        })
        .collect();

    // Another client of the cluster holding an id (no events, no NOTIFY when it ends).
    let foreign = {
        let (ready, mut progress, url) = (ready.clone(), progress_rx.clone(), url.to_owned());
        tokio::spawn(async move {
            let mut conn = PgConnection::connect(&url).await.expect("connect");
            let mut tx = conn.begin().await.expect("begin");
            sqlx::query("SELECT pg_current_xact_id()")
                .execute(&mut *tx)
                .await
                .expect("take an id");
            ready.wait().await;
            let threshold = if iter.is_multiple_of(2) {
                total_appends / 3
            } else {
                total_appends
            };
            progress
                .wait_for(|n| *n >= threshold)
                .await
                .expect("progress");
            tx.commit().await.expect("commit the foreign transaction");
            conn.close().await.expect("close");
        })
    };

    ready.wait().await;
    let shared: Vec<StreamId> = (0..SHARED)
        .map(|k| stream(format!("shared-{iter}-{k}")))
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, shared, progress) = (store.clone(), shared.clone(), progress_tx.clone());
            let highest = highest_writer_seq.clone();
            tokio::spawn(async move {
                let own = stream(format!("own-{iter}-{w}"));
                let mut version = 0;
                let mut written = Vec::new();
                for j in 0..APPENDS {
                    let events = batch(1 + (w + j) % 3, "writer");
                    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
                    let (target, expected) = if j % 2 == 0 {
                        (own.clone(), ExpectedVersion::from_version(version))
                    } else {
                        (shared[(w + j) % SHARED].clone(), ExpectedVersion::Any)
                    };
                    let r = store
                        .append(&target, expected, events)
                        .await
                        .expect("a writer's append");
                    if target == own {
                        version = r.version;
                    }
                    highest.fetch_max(r.position.sequence, Ordering::SeqCst);
                    written.push((ids, r.position));
                    progress.send_modify(|n| *n += 1);
                }
                written
            })
        })
        .collect();

    let mut out = Iteration::default();
    for writer in writers {
        for (ids, position) in writer.await.expect("a writer panicked") {
            out.results
                .push((*ids.last().expect("not empty"), position));
            out.committed.extend(ids);
        }
    }
    for holder in holders {
        let (committed, ids, position, overtaken) = holder.await.expect("a holder panicked");
        if committed {
            out.results
                .push((*ids.last().expect("not empty"), position));
            out.committed.extend(ids);
            out.overtaken += usize::from(overtaken);
        } else {
            out.rolled_back.extend(ids);
        }
    }
    foreign.await.expect("the foreign transaction panicked");
    out
}

async fn take(
    received: &mut UnboundedReceiver<Result<RecordedEvent, StoreError>>,
    n: usize,
) -> Vec<RecordedEvent> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match received.recv().await {
            Some(Ok(event)) => got.push(event),
            Some(Err(err)) => panic!("the subscription failed after {} events: {err}", got.len()),
            None => panic!("the subscription ended after {} events", got.len()),
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscriber_sees_out_of_order_commits_exactly_once_in_order() {
    let Some(db) = TestDb::connect_or_skip().await else {
        return;
    };
    // Writers do not wait for their events to become deliverable: the point is that
    // their commits overtake the held transactions.
    let writer = db
        .store_with(|c| {
            c.deliverable_wait = Duration::ZERO;
            c.max_connections = (WRITERS + HOLDERS + 4) as u32;
        })
        .await;
    // The subscriber's own store instance on the same schema: its own pool and LISTEN
    // task, as in another process. A short lag poll, since the foreign transaction
    // never notifies.
    let mut config = PgStoreConfig::new(db.url(), writer.schema());
    config.lag_poll = Duration::from_millis(20);
    let reader = PgStore::connect_with(config)
        .await
        .expect("a second store on the same schema");
    // The subscriber runs all the time, reading while transactions are still open (a
    // subscription only reads when polled, so it gets a task of its own).
    let mut sub = reader.subscribe_all(Position::START);
    let (forward, mut received) = tokio::sync::mpsc::unbounded_channel();
    let follower = tokio::spawn(async move {
        while let Some(item) = sub.next().await {
            if forward.send(item).is_err() {
                break;
            }
        }
    });

    let n = iterations();
    let started = Instant::now();
    let mut delivered: Vec<RecordedEvent> = Vec::new();
    let mut rolled_back: HashSet<Uuid> = HashSet::new();
    let mut results: Vec<(Uuid, Position)> = Vec::new();
    let mut overtaken = 0;
    for iter in 0..n {
        let done = run_iteration(&writer, db.url(), iter).await;
        let got = tokio::time::timeout(PATIENCE, take(&mut received, done.committed.len()))
            .await
            .unwrap_or_else(|_| {
                panic!("iteration {iter}: events still missing after {PATIENCE:?}")
            });
        let ids: HashSet<Uuid> = got.iter().map(|e| e.event_id).collect();
        assert_eq!(
            ids.len(),
            got.len(),
            "iteration {iter}: an event was delivered twice"
        );
        assert_eq!(
            ids, done.committed,
            "iteration {iter}: delivered events differ from the committed ones"
        );
        assert!(
            ids.is_disjoint(&done.rolled_back),
            "iteration {iter}: a rolled-back event was delivered"
        );
        delivered.extend(got);
        rolled_back.extend(done.rolled_back);
        results.extend(done.results);
        overtaken += done.overtaken;
    }
    let elapsed = started.elapsed();

    // The whole delivery: strictly increasing positions, consecutive versions per stream,
    // each append's result the position of its last event, and exactly `read_all`.
    for pair in delivered.windows(2) {
        assert!(
            pair[0].position < pair[1].position,
            "delivery order broken: {} then {}",
            pair[0].position,
            pair[1].position
        );
    }
    let mut versions: HashMap<&StreamId, u64> = HashMap::new();
    for e in &delivered {
        let last = versions.entry(&e.stream).or_insert(0);
        assert_eq!(
            e.version,
            *last + 1,
            "{} version {} after {last}",
            e.stream,
            e.version
        );
        *last = e.version;
    }
    let positions: HashMap<Uuid, Position> =
        delivered.iter().map(|e| (e.event_id, e.position)).collect();
    for (last_id, position) in &results {
        assert_eq!(
            positions[last_id], *position,
            "an append's result is its last event"
        );
    }
    let mut log = Vec::new();
    let mut after = Position::START;
    loop {
        let page = reader.read_all(after, 1000).await.expect("read_all");
        let Some(last) = page.last() else { break };
        after = last.position;
        log.extend(page);
    }
    assert!(
        log == delivered,
        "the subscription delivered exactly read_all"
    );
    assert!(log.iter().all(|e| !rolled_back.contains(&e.event_id)));

    // Nothing is left over: the next event is the next append.
    let sentinel = batch(1, "sentinel");
    let r = writer
        .append(
            &stream("sentinel".into()),
            ExpectedVersion::NoStream,
            sentinel.clone(),
        )
        .await
        .expect("sentinel");
    let next = tokio::time::timeout(PATIENCE, take(&mut received, 1))
        .await
        .expect("the sentinel arrives");
    assert_eq!(
        (next[0].event_id, next[0].position),
        (sentinel[0].event_id, r.position)
    );

    assert!(
        overtaken > 0,
        "no held transaction committed after a younger one: the test did not test anything"
    );
    eprintln!(
        "out-of-order stress: {n} iterations, {} events delivered exactly once in order, \
         {overtaken} held transactions overtaken by younger commits, {} rolled-back events \
         never delivered, {elapsed:.1?}",
        delivered.len(),
        rolled_back.len(),
    );

    follower.abort();
    reader.close().await;
    writer.close().await;
    db.drop_schemas().await;
}
