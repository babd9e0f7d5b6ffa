//! Group commit: concurrent appends share transactions, and each request of a batch is
//! answered on its own (a conflict or a retry never affects its neighbours).
//!
//! Most tests run on tokio's current-thread runtime and issue their appends with one
//! `join_all` (or `join!`): every request is queued before the writer task runs, so they
//! land in one batch deterministically, and `stats()` proves it.

use futures::future::join_all;
use homeroom_eventstore::{
    hash, AppendResult, EventAppender, EventMetadata, EventReader, ExpectedVersion, NewEvent,
    Position, StoreError, StreamId,
};
use homeroom_store_sqlite::{SqliteStore, WriterStats};
use std::sync::Arc;
use uuid::Uuid;

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

async fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("events.sqlite"))
        .await
        .unwrap();
    (dir, store)
}

/// What the writer did between two snapshots.
fn since(before: WriterStats, after: WriterStats) -> WriterStats {
    WriterStats {
        requests: after.requests - before.requests,
        transactions: after.transactions - before.transactions,
        events: after.events - before.events,
    }
}

async fn whole(store: &SqliteStore, s: &StreamId) -> Vec<homeroom_eventstore::RecordedEvent> {
    store.read_stream(s, 0, 10_000).await.unwrap()
}

#[tokio::test]
async fn appends_issued_together_share_one_transaction() {
    let (_dir, store) = open().await;
    let streams: Vec<_> = (0..200).map(|i| stream(&format!("together-{i}"))).collect();
    let before = store.stats();
    // Outside tokio's cooperative budget, so queueing 200 requests never yields midway.
    let results = tokio::task::unconstrained(join_all(
        streams
            .iter()
            .zip(0..)
            .map(|(s, n)| store.append(s, ExpectedVersion::NoStream, vec![event(n)])),
    ))
    .await;
    let work = since(before, store.stats());
    assert_eq!(
        work,
        WriterStats {
            requests: 200,
            transactions: 1,
            events: 200
        }
    );
    let mut positions: Vec<_> = results
        .into_iter()
        .map(|r| r.unwrap().position.sequence)
        .collect();
    positions.sort_unstable();
    assert_eq!(
        positions,
        (1..=200).collect::<Vec<_>>(),
        "no gaps, no reuse"
    );
    assert_eq!(store.head().await.unwrap(), Position::at(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_appending_in_a_loop_use_fewer_transactions_than_requests() {
    let (_dir, store) = open().await;
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let s = stream(&format!("loop-{t}"));
                for v in 0..20 {
                    store
                        .append(&s, ExpectedVersion::from_version(v), vec![event(v)])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.requests, 64 * 20);
    assert_eq!(stats.events, 64 * 20);
    assert!(
        stats.transactions < stats.requests / 2,
        "64 concurrent writers should share commits: {stats:?}"
    );
    assert_eq!(store.head().await.unwrap(), Position::at(64 * 20));
    for t in 0..64 {
        let events = whole(&store, &stream(&format!("loop-{t}"))).await;
        assert_eq!(events.len(), 20);
        assert!(hash::verify_stream(&events).is_empty());
    }
}

#[tokio::test]
async fn a_conflict_in_a_batch_does_not_fail_its_neighbours() {
    let (_dir, store) = open().await;
    let contested = stream("contested-1");
    store
        .append(&contested, ExpectedVersion::NoStream, vec![event(0)])
        .await
        .unwrap();
    let own: Vec<_> = (0..10).map(|i| stream(&format!("own-{i}"))).collect();

    // In queue order: neighbours, then three writers that all saw version 1, then one
    // that believes the stream is new, then more neighbours.
    let mut calls = Vec::new();
    for s in &own[..5] {
        calls.push((s, ExpectedVersion::NoStream));
    }
    for _ in 0..3 {
        calls.push((&contested, ExpectedVersion::Exact(1)));
    }
    calls.push((&contested, ExpectedVersion::NoStream));
    for s in &own[5..] {
        calls.push((s, ExpectedVersion::NoStream));
    }
    let before = store.stats();
    let results = join_all(
        calls
            .iter()
            .zip(1..)
            .map(|((s, expected), n)| store.append(s, *expected, vec![event(n)])),
    )
    .await;
    assert_eq!(since(before, store.stats()).transactions, 1, "one batch");

    for (i, result) in results.iter().enumerate() {
        match i {
            0..=4 | 9..=13 => assert_eq!(result.as_ref().unwrap().version, 1, "neighbour {i}"),
            5 => assert_eq!(result.as_ref().unwrap().version, 2, "the first writer wins"),
            6 | 7 => assert!(
                matches!(
                    result,
                    Err(StoreError::Conflict {
                        expected: ExpectedVersion::Exact(1),
                        actual: 2,
                        ..
                    })
                ),
                "a later writer of the same batch sees the winner: {result:?}"
            ),
            8 => assert!(
                matches!(
                    result,
                    Err(StoreError::Conflict {
                        expected: ExpectedVersion::NoStream,
                        actual: 2,
                        ..
                    })
                ),
                "{result:?}"
            ),
            _ => unreachable!(),
        }
    }
    let events = whole(&store, &contested).await;
    assert_eq!(events.len(), 2);
    assert!(hash::verify_stream(&events).is_empty());
    for s in &own {
        assert_eq!(whole(&store, s).await.len(), 1);
    }
}

#[tokio::test]
async fn a_retry_in_the_same_batch_as_its_original_is_recorded_once() {
    let (_dir, store) = open().await;
    let s = stream("retried-together-1");
    let neighbour = stream("retried-neighbour-1");
    let batch = vec![event(1), event(2)];
    let before = store.stats();
    let (original, retry, other) = tokio::join!(
        store.append(&s, ExpectedVersion::NoStream, batch.clone()),
        store.append(&s, ExpectedVersion::NoStream, batch.clone()),
        store.append(&neighbour, ExpectedVersion::Any, vec![event(3)]),
    );
    let work = since(before, store.stats());
    assert_eq!((work.transactions, work.events), (1, 3), "{work:?}");
    let original = original.unwrap();
    assert_eq!(
        retry.unwrap(),
        original,
        "the retry answers the original result"
    );
    assert_eq!(original.version, 2);
    assert_eq!(other.unwrap().version, 1);
    assert_eq!(whole(&store, &s).await.len(), 2);
}

#[tokio::test]
async fn a_retry_whose_expectation_still_holds_is_answered_without_hurting_its_batch() {
    let (_dir, store) = open().await;
    let s = stream("retried-any-1");
    let batch = vec![event(1), event(2)];
    let original = store
        .append(&s, ExpectedVersion::Any, batch.clone())
        .await
        .unwrap();
    let contested = stream("retried-contested-1");
    store
        .append(&contested, ExpectedVersion::NoStream, vec![event(9)])
        .await
        .unwrap();

    let other = stream("retried-other-1");
    let before = store.stats();
    let (retry, neighbour, conflict) = tokio::join!(
        // `Any` admits the stream's current version, so only the stored ids reveal it.
        store.append(&s, ExpectedVersion::Any, batch.clone()),
        store.append(&other, ExpectedVersion::NoStream, vec![event(3)]),
        store.append(&contested, ExpectedVersion::NoStream, vec![event(4)]),
    );
    let work = since(before, store.stats());
    assert_eq!(
        work.transactions, 2,
        "the batch was retried one request at a time"
    );
    assert_eq!(work.events, 1);
    assert_eq!(retry.unwrap(), original);
    assert_eq!(neighbour.unwrap().version, 1);
    assert!(matches!(
        conflict,
        Err(StoreError::Conflict { actual: 1, .. })
    ));
    assert_eq!(whole(&store, &s).await.len(), 2, "nothing recorded twice");

    // Stale expectations and fresh ones alike get the original result.
    for expected in [ExpectedVersion::NoStream, ExpectedVersion::Exact(2)] {
        assert_eq!(
            store.append(&s, expected, batch.clone()).await.unwrap(),
            original
        );
    }
    // And the stream goes on from where it was.
    let next = store
        .append(&s, ExpectedVersion::Exact(2), vec![event(5)])
        .await
        .unwrap();
    assert_eq!(next.version, 3);
    assert!(hash::verify_stream(&whole(&store, &s).await).is_empty());
}

#[tokio::test]
async fn an_event_id_stored_in_another_stream_is_refused_alone() {
    let (_dir, store) = open().await;
    let reused = event(1);
    store
        .append(
            &stream("first-home-1"),
            ExpectedVersion::NoStream,
            vec![reused.clone()],
        )
        .await
        .unwrap();
    let elsewhere = stream("second-home-1");
    let bystander = stream("bystander-1");
    let (refused, neighbour) = tokio::join!(
        store.append(&elsewhere, ExpectedVersion::NoStream, vec![reused]),
        store.append(&bystander, ExpectedVersion::NoStream, vec![event(2)]),
    );
    // The port has no variant for this caller bug; a conflict makes the command
    // service reload and decide again with fresh ids.
    assert!(refused.unwrap_err().is_conflict());
    assert_eq!(neighbour.unwrap().version, 1);
    assert!(whole(&store, &elsewhere).await.is_empty());
}

#[tokio::test]
async fn multi_event_appends_in_one_batch_get_their_own_last_position() {
    let (_dir, store) = open().await;
    let (a, b) = (stream("multi-a"), stream("multi-b"));
    let (ra, rb) = tokio::join!(
        store.append(&a, ExpectedVersion::NoStream, (0..3).map(event).collect()),
        store.append(&b, ExpectedVersion::NoStream, (0..200).map(event).collect()),
    );
    let (ra, rb): (AppendResult, AppendResult) = (ra.unwrap(), rb.unwrap());
    assert_eq!((ra.version, ra.position), (3, Position::at(3)));
    assert_eq!((rb.version, rb.position), (200, Position::at(203)));
    let events = whole(&store, &b).await;
    assert_eq!(events.last().unwrap().position, Position::at(203));
    assert!(hash::verify_stream(&events).is_empty());
}

#[tokio::test]
async fn facts_are_checked_in_queue_order_within_a_batch() {
    let (_dir, store) = open().await;
    let fact = stream("fact-1");
    let (early, late) = (stream("decided-early-1"), stream("decided-late-1"));
    store
        .append(&fact, ExpectedVersion::NoStream, vec![event(0)])
        .await
        .unwrap();
    let (at_one, after_move) = (
        [(fact.clone(), 1)],
        [(fact.clone(), 2), (stream("never-written-1"), 0)],
    );
    let before = store.stats();
    // In queue order: a decision on the fact at 1, the fact moving to 2, a decision
    // on the stale 1, and one that read the fact after it moved.
    let (read_before, moved, stale, fresh) = tokio::join!(
        store.append_with_facts(&early, ExpectedVersion::NoStream, vec![event(1)], &at_one),
        store.append(&fact, ExpectedVersion::Exact(1), vec![event(2)]),
        store.append_with_facts(&late, ExpectedVersion::NoStream, vec![event(3)], &at_one),
        store.append_with_facts(
            &late,
            ExpectedVersion::NoStream,
            vec![event(4)],
            &after_move,
        ),
    );
    assert_eq!(since(before, store.stats()).transactions, 1, "one batch");
    assert!(store.checks_facts());
    assert_eq!(read_before.unwrap().version, 1);
    assert_eq!(moved.unwrap().version, 2);
    match stale {
        Err(StoreError::Conflict {
            stream,
            expected,
            actual,
        }) => {
            assert_eq!(
                (stream, expected, actual),
                (fact.clone(), ExpectedVersion::Exact(1), 2)
            );
        }
        other => panic!("a moved fact must be a conflict, got {other:?}"),
    }
    assert_eq!(fresh.unwrap().version, 1);
    assert_eq!(
        whole(&store, &late).await.len(),
        1,
        "only the fresh decision"
    );
}

#[tokio::test]
async fn a_retry_is_answered_even_when_its_facts_have_moved() {
    let (_dir, store) = open().await;
    let (fact, target) = (stream("retry-fact-1"), stream("retry-target-1"));
    let decided = vec![event(1)];
    let original = store
        .append_with_facts(
            &target,
            ExpectedVersion::NoStream,
            decided.clone(),
            &[(fact.clone(), 0)],
        )
        .await
        .unwrap();
    store
        .append(&fact, ExpectedVersion::NoStream, vec![event(2)])
        .await
        .unwrap();
    let retried = store
        .append_with_facts(&target, ExpectedVersion::NoStream, decided, &[(fact, 0)])
        .await
        .unwrap();
    assert_eq!(retried, original);
}
