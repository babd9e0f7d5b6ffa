//! Subscribing: catch-up then live, in order, never skipping or repeating an event.

use super::support::{
    assert_chain_intact, assert_strictly_increasing, event, events, ok, read_log, take,
    take_unbounded, within, PATIENCE,
};
use super::{support, Harness};
use crate::{AppendResult, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId};
use crate::{EventAppender as _, EventReader as _, EventSubscriber as _};
use futures::StreamExt;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// What one writer appended: the stream, the batch's ids, and the result.
type Written = Vec<(StreamId, Vec<Uuid>, AppendResult)>;

/// Many writers append concurrently to streams of their own and to shared ones, while one
/// subscriber follows from the start and another joins mid-way: both receive every event
/// exactly once, in the order `read_all` returns, with positions strictly increasing and
/// each stream's versions in order. Projections are only as right as this.
pub async fn subscriber_sees_concurrent_writers_in_order_without_gaps<H: Harness>(h: &H) {
    const WRITERS: usize = 16;
    const APPENDS: usize = 50;
    const SHARED: usize = 4;
    /// Every fifth append is a batch of this many events.
    const BATCH: usize = 3;
    let per_writer = APPENDS - APPENDS / 5 + (APPENDS / 5) * BATCH;
    let total = WRITERS * per_writer;

    let store = h.fresh().await;
    assert_eq!(
        ok(store.head().await, "head"),
        Position::START,
        "a fresh store is empty (does the harness share a database?)"
    );
    let shared: Vec<StreamId> = (0..SHARED)
        .map(|i| support::stream(&format!("shared{i}")))
        .collect();

    let mut early = store.subscribe_all(Position::START);
    let early = tokio::spawn(async move {
        let got = take_unbounded(&mut early, total, "the early subscriber").await;
        (got, early)
    });

    let (halfway_tx, halfway_rx) = tokio::sync::oneshot::channel::<()>();
    let mut halfway_tx = Some(halfway_tx);
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            let shared = shared.clone();
            let mut halfway = if w == 0 { halfway_tx.take() } else { None };
            tokio::spawn(async move {
                let own = support::stream(&format!("writer{w}"));
                let mut own_version = 0;
                let mut written: Written = Vec::new();
                for j in 0..APPENDS {
                    let size = if j % 5 == 4 { BATCH } else { 1 };
                    let batch = events(size, &format!("writer {w} append {j}"));
                    let ids = batch.iter().map(|e| e.event_id).collect();
                    let (target, expected) = if j % 2 == 0 {
                        (own.clone(), ExpectedVersion::from_version(own_version))
                    } else {
                        (shared[(w + j) % SHARED].clone(), ExpectedVersion::Any)
                    };
                    let r = ok(store.append(&target, expected, batch).await, "a writer");
                    if target == own {
                        own_version = r.version;
                    }
                    written.push((target, ids, r));
                    if j == APPENDS / 2 {
                        if let Some(tx) = halfway.take() {
                            let _ = tx.send(());
                        }
                    }
                    tokio::task::yield_now().await;
                }
                written
            })
        })
        .collect();

    within("writer 0 to reach halfway", halfway_rx)
        .await
        .expect("writer 0 stopped before halfway");
    let mut late = store.subscribe_all(Position::START);
    let late = tokio::spawn(async move {
        let got = take_unbounded(&mut late, total, "the late subscriber").await;
        (got, late)
    });

    let mut written: Written = Vec::new();
    for writer in writers {
        // Writers on a slow engine may take a while; a hang still fails, after long enough.
        let done = tokio::time::timeout(PATIENCE * 6, writer)
            .await
            .expect("the writers did not finish")
            .expect("a writer panicked");
        written.extend(done);
    }
    let (early_got, mut early) = within("the early subscriber", early)
        .await
        .expect("the early subscriber panicked");
    let (late_got, mut late) = within("the late subscriber", late)
        .await
        .expect("the late subscriber panicked");

    let log = read_log(&*store, 100).await;
    assert_eq!(log.len(), total, "read_all returns every appended event");
    assert_strictly_increasing(&log, "read_all");
    let ids: HashSet<Uuid> = log.iter().map(|e| e.event_id).collect();
    let written_ids: HashSet<Uuid> = written.iter().flat_map(|(_, ids, _)| ids.clone()).collect();
    assert_eq!(ids.len(), total, "no event is in the log twice");
    assert_eq!(ids, written_ids, "the log holds exactly what was written");

    assert_delivered(&early_got, &log, "the early subscriber");
    assert_delivered(&late_got, &log, "the late subscriber");

    let by_id: HashMap<Uuid, &RecordedEvent> = log.iter().map(|e| (e.event_id, e)).collect();
    for (target, ids, r) in &written {
        for (k, id) in ids.iter().enumerate() {
            let e = by_id[id];
            assert_eq!(&e.stream, target, "an event landed in the wrong stream");
            assert_eq!(
                e.version,
                r.version - (ids.len() - 1 - k) as u64,
                "a batch takes consecutive versions ending at its result"
            );
        }
        let last = by_id[ids.last().expect("batches are not empty")];
        assert_eq!(
            last.position, r.position,
            "the result is the batch's last position"
        );
    }

    let mut streams: HashMap<&StreamId, Vec<RecordedEvent>> = HashMap::new();
    for e in &log {
        streams.entry(&e.stream).or_default().push(e.clone());
    }
    assert_eq!(streams.len(), WRITERS + SHARED);
    for (s, in_log) in &streams {
        assert_eq!(
            &ok(store.read_stream(s, 0, total + 1).await, "read_stream"),
            in_log,
            "read_stream and read_all agree on {s}"
        );
        assert_chain_intact(in_log, "a concurrently written stream");
    }

    let sentinel = event("kit_sentinel", json!({ "last": true }));
    let r = ok(
        store
            .append(&shared[0], ExpectedVersion::Any, vec![sentinel.clone()])
            .await,
        "the sentinel",
    );
    for (sub, who) in [
        (&mut early, "the early subscriber"),
        (&mut late, "the late subscriber"),
    ] {
        let next = take(sub, 1, who).await;
        assert_eq!(
            (next[0].event_id, next[0].position),
            (sentinel.event_id, r.position),
            "{who}: after the whole log comes the next append, nothing repeated"
        );
    }
}

/// Checks that a subscriber received exactly the log, in its order, each stream's
/// versions consecutive from 1.
#[track_caller]
fn assert_delivered(got: &[RecordedEvent], log: &[RecordedEvent], who: &str) {
    assert_strictly_increasing(got, who);
    let mut versions: HashMap<&StreamId, u64> = HashMap::new();
    for e in got {
        let last = versions.entry(&e.stream).or_insert(0);
        assert_eq!(
            e.version,
            *last + 1,
            "{who}: {} version {} arrived after version {last}",
            e.stream,
            e.version
        );
        *last = e.version;
    }
    assert!(got == log, "{who}: delivered events differ from read_all");
}

/// A subscription from a position in the middle of the log delivers exactly the events
/// after it, then new appends live; one from `head` delivers only new appends. This is how
/// a projector resumes from its checkpoint.
pub async fn subscriber_joining_mid_log_gets_the_rest_then_live<H: Harness>(h: &H) {
    let store = h.fresh().await;
    let streams = [support::stream("resume_a"), support::stream("resume_b")];
    for i in 0..20 {
        ok(
            store
                .append(&streams[i % 2], ExpectedVersion::Any, events(1, "before"))
                .await,
            "append",
        );
    }
    let log = read_log(&*store, 100).await;
    assert_eq!(log.len(), 20);
    let mut mid = store.subscribe_all(log[9].position);
    let mut at_head = store.subscribe_all(ok(store.head().await, "head"));

    let rest = take(&mut mid, 10, "the resumed subscriber").await;
    assert_eq!(rest, log[10..], "exactly the events after the checkpoint");

    let mut later: Vec<NewEvent> = Vec::new();
    for i in 0..5 {
        let batch = events(1 + i % 2, "after");
        ok(
            store
                .append(&streams[i % 2], ExpectedVersion::Any, batch.clone())
                .await,
            "append",
        );
        later.extend(batch);
    }
    let new_events = ok(store.read_all(log[19].position, 100).await, "read_all");
    assert_eq!(
        new_events.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        later.iter().map(|e| e.event_id).collect::<Vec<_>>()
    );
    assert_eq!(
        take(&mut mid, later.len(), "the resumed subscriber, live").await,
        new_events
    );
    assert_eq!(
        take(&mut at_head, later.len(), "the subscriber from head").await,
        new_events
    );
}

/// A subscription from the start of an empty store waits, then delivers each append as
/// it commits, without the kit assuming any polling delay.
pub async fn subscription_on_empty_store_receives_later_appends<H: Harness>(h: &H) {
    let store = h.fresh().await;
    assert_eq!(ok(store.head().await, "head"), Position::START);
    let mut sub = store.subscribe_all(Position::START);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let forward = tokio::spawn(async move {
        while let Some(item) = sub.next().await {
            if tx.send(item).is_err() {
                break;
            }
        }
    });
    let s = support::stream("live");
    for i in 0..5 {
        let e = event("kit_live", json!({ "i": i }));
        let r = ok(
            store
                .append(&s, ExpectedVersion::Any, vec![e.clone()])
                .await,
            "append",
        );
        let got = within("a live event", rx.recv())
            .await
            .expect("the subscription ended");
        let got = ok(got, "the live subscription");
        assert_eq!(
            (got.event_id, got.version, got.position),
            (e.event_id, i + 1, r.position),
            "each append arrives live, in order"
        );
    }
    forward.abort();
}
