//! Appending: what is recorded, when an append is refused, and retries.

use super::support::{
    assert_chain_intact, assert_conflict, assert_recorded, assert_strictly_increasing, event,
    events, ok, read_log, read_stream, stream, within,
};
use super::Harness;
use crate::{hash, AppendResult, ExpectedVersion, NewEvent, Position, StoreError};
use crate::{EventAppender as _, EventReader as _};
use chrono::{TimeDelta, Utc};
use serde_json::json;
use std::sync::Arc;

/// How far the store's clock may be from the kit's (a database on another host).
const CLOCK_SKEW: TimeDelta = TimeDelta::seconds(60);

/// Every field written comes back; versions count from 1; positions strictly increase in
/// commit order; `recorded_at` is now, in microseconds; each stream's hash chain starts at
/// [`hash::GENESIS`] and verifies. The basis of everything else the log promises.
pub async fn round_trip_keeps_every_field<H: Harness>(h: &H) {
    let store = h.fresh().await;
    let s = stream("round_trip");
    let other = stream("round_trip_other");
    let before = hash::storable_time(Utc::now());

    let mut first = vec![
        event(
            "kit_opened",
            json!({ "title": "Field trip", "seats": 42, "paid": false, "tags": ["a", "b"],
                    "nested": { "z": 1, "a": [null, 1.5, "x"] } }),
        ),
        event("kit_noted", json!("a bare string")),
        event("kit_noted", json!([1, 2, 3])),
    ];
    first[1].schema_version = 3;
    first[2].metadata.school = None;
    first[2].metadata.command_digest = Some("ab".repeat(32));
    let r1 = ok(
        store
            .append(&s, ExpectedVersion::NoStream, first.clone())
            .await,
        "first append",
    );
    assert_eq!(r1.version, 3, "a new stream's third event has version 3");

    let other_event = event("kit_noted", json!({ "other": true }));
    let r_other = ok(
        store
            .append(&other, ExpectedVersion::NoStream, vec![other_event.clone()])
            .await,
        "append to another stream",
    );
    assert_eq!(r_other.version, 1, "every stream counts its own versions");

    let second = vec![event("kit_closed", json!({}))];
    let r2 = ok(
        store
            .append(&s, ExpectedVersion::Exact(3), second.clone())
            .await,
        "second append",
    );
    assert_eq!(r2.version, 4);
    let after = hash::storable_time(Utc::now());

    assert!(
        r1.position < r_other.position && r_other.position < r2.position,
        "appends committed one after another get increasing positions: {} {} {}",
        r1.position,
        r_other.position,
        r2.position
    );

    let recorded = read_stream(&*store, &s).await;
    let written: Vec<&NewEvent> = first.iter().chain(&second).collect();
    assert_eq!(
        recorded.len(),
        written.len(),
        "read_stream returns every event"
    );
    for (i, (rec, new)) in recorded.iter().zip(&written).enumerate() {
        assert_recorded(rec, new, &s, i as u64 + 1);
        assert_eq!(
            rec.recorded_at,
            hash::storable_time(rec.recorded_at),
            "recorded_at keeps microseconds, no finer"
        );
        assert!(
            rec.recorded_at >= before - CLOCK_SKEW && rec.recorded_at <= after + CLOCK_SKEW,
            "recorded_at {} is not the time of the append ({before} .. {after})",
            rec.recorded_at
        );
        assert_eq!(rec.hash.len(), 64, "hashes are hex SHA-256");
        assert!(
            rec.hash
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "hashes are lowercase hex"
        );
        assert_eq!(rec.hash, hash::recompute(rec), "hash of version {}", i + 1);
    }
    assert_strictly_increasing(&recorded, "read_stream");
    assert_eq!(
        recorded[2].position, r1.position,
        "r1 is the batch's last event"
    );
    assert_eq!(
        recorded[3].position, r2.position,
        "r2 is the batch's last event"
    );
    assert_eq!(
        recorded[0].prev_hash,
        hash::GENESIS,
        "a stream's chain starts at GENESIS"
    );
    for pair in recorded.windows(2) {
        assert_eq!(
            pair[1].prev_hash, pair[0].hash,
            "each event links to the previous"
        );
    }
    assert_chain_intact(&recorded, "round trip");

    let other_recorded = read_stream(&*store, &other).await;
    assert_eq!(other_recorded.len(), 1);
    assert_recorded(&other_recorded[0], &other_event, &other, 1);
    assert_eq!(other_recorded[0].position, r_other.position);
    assert_eq!(
        other_recorded[0].prev_hash,
        hash::GENESIS,
        "chains are per stream"
    );
    assert_chain_intact(&other_recorded, "other stream");

    let log = read_log(&*store, 100).await;
    let mut expected_log = recorded[..3].to_vec();
    expected_log.extend(other_recorded);
    expected_log.push(recorded[3].clone());
    assert_eq!(
        log, expected_log,
        "read_all returns the same events, in commit order"
    );
}

/// `NoStream` admits only a stream with no events, and a refusal reports where the stream
/// is: the app relies on this to create an aggregate exactly once.
pub async fn no_stream_expectation_semantics<H: Harness>(h: &H) {
    let store = h.fresh().await;
    let s = stream("no_stream");
    let r = ok(
        store
            .append(&s, ExpectedVersion::NoStream, events(1, "a"))
            .await,
        "NoStream on a new stream",
    );
    assert_eq!(r.version, 1);
    assert_conflict(
        store
            .append(&s, ExpectedVersion::NoStream, events(1, "b"))
            .await,
        &s,
        ExpectedVersion::NoStream,
        1,
    );
    ok(
        store.append(&s, ExpectedVersion::Any, events(2, "c")).await,
        "Any",
    );
    let refused = store
        .append(&s, ExpectedVersion::NoStream, events(2, "d"))
        .await;
    assert!(
        matches!(&refused, Err(e) if e.is_conflict()),
        "a conflict is a conflict"
    );
    assert_conflict(refused, &s, ExpectedVersion::NoStream, 3);
    assert_eq!(
        ok(
            store.stream_versions(std::slice::from_ref(&s)).await,
            "versions"
        ),
        vec![3]
    );
    assert_chain_intact(&read_stream(&*store, &s).await, "no stream");
}

/// `Exact(v)` admits only a stream at version `v` (`Exact(0)` is an empty stream, like
/// `NoStream`), and a refusal reports the actual version: optimistic concurrency.
pub async fn exact_expectation_semantics<H: Harness>(h: &H) {
    let store = h.fresh().await;
    let s = stream("exact");
    assert_conflict(
        store
            .append(&s, ExpectedVersion::Exact(1), events(1, "a"))
            .await,
        &s,
        ExpectedVersion::Exact(1),
        0,
    );
    let r = ok(
        store
            .append(&s, ExpectedVersion::Exact(0), events(1, "b"))
            .await,
        "Exact(0) on a new stream",
    );
    assert_eq!(r.version, 1);
    let r = ok(
        store
            .append(&s, ExpectedVersion::Exact(1), events(2, "c"))
            .await,
        "Exact(1)",
    );
    assert_eq!(r.version, 3);
    for stale in [0, 1, 2, 4, 99] {
        assert_conflict(
            store
                .append(&s, ExpectedVersion::Exact(stale), events(1, "stale"))
                .await,
            &s,
            ExpectedVersion::Exact(stale),
            3,
        );
    }
    let r = ok(
        store
            .append(&s, ExpectedVersion::Exact(3), events(1, "d"))
            .await,
        "Exact(3)",
    );
    assert_eq!(r.version, 4);
    let recorded = read_stream(&*store, &s).await;
    assert_eq!(
        recorded.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![1, 2, 3, 4],
        "refused appends recorded nothing"
    );
    assert_chain_intact(&recorded, "exact");
}

/// `Any` appends whatever the stream holds, new or not.
pub async fn any_expectation_always_appends<H: Harness>(h: &H) {
    let store = h.fresh().await;
    let s = stream("any");
    let r = ok(
        store.append(&s, ExpectedVersion::Any, events(1, "a")).await,
        "Any on a new stream",
    );
    assert_eq!(r.version, 1);
    let r = ok(
        store.append(&s, ExpectedVersion::Any, events(3, "b")).await,
        "Any on an existing stream",
    );
    assert_eq!(r.version, 4);
    let recorded = read_stream(&*store, &s).await;
    assert_eq!(recorded.len(), 4);
    assert_eq!(recorded[3].position, r.position);
    assert_chain_intact(&recorded, "any");
}

/// Many writers race for each version of one stream with the same expectation: exactly one
/// wins, every other gets a typed conflict naming the winner's version, and the stream
/// ends gapless with each winner's batch whole. This is what keeps two commands on one
/// aggregate from both deciding on stale state.
pub async fn concurrent_exact_appends_have_one_winner_per_version<H: Harness>(h: &H) {
    const ROUNDS: u64 = 20;
    const CONTENDERS: usize = 8;
    const BATCH: u64 = 2;
    let store = h.fresh().await;
    let s = stream("contended");
    let mut winners: Vec<Vec<NewEvent>> = Vec::new();

    for round in 0..ROUNDS {
        let at = round * BATCH;
        let expected = if round == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(at)
        };
        let start = Arc::new(tokio::sync::Barrier::new(CONTENDERS));
        let tasks: Vec<_> = (0..CONTENDERS)
            .map(|c| {
                let (store, s, start) = (store.clone(), s.clone(), start.clone());
                tokio::spawn(async move {
                    let batch = events(BATCH as usize, &format!("round {round} contender {c}"));
                    start.wait().await;
                    let result = store.append(&s, expected, batch.clone()).await;
                    (batch, result)
                })
            })
            .collect();
        let mut round_winners = Vec::new();
        for task in tasks {
            let (batch, result) = within("a contender", task)
                .await
                .expect("a contender panicked");
            match result {
                Ok(r) => {
                    assert_eq!(r.version, at + BATCH, "the winner of round {round}");
                    round_winners.push(batch);
                }
                Err(_) => assert_conflict(result, &s, expected, at + BATCH),
            }
        }
        assert_eq!(
            round_winners.len(),
            1,
            "round {round}: exactly one of {CONTENDERS} appends expecting {expected} wins"
        );
        winners.extend(round_winners);
    }

    let recorded = read_stream(&*store, &s).await;
    assert_eq!(
        recorded.len() as u64,
        ROUNDS * BATCH,
        "only winners are recorded"
    );
    for (i, (rec, new)) in recorded.iter().zip(winners.iter().flatten()).enumerate() {
        assert_recorded(rec, new, &s, i as u64 + 1);
    }
    assert_strictly_increasing(&recorded, "contended stream");
    assert_chain_intact(&recorded, "contended stream");
}

/// Re-appending a stored batch (same first event id) records nothing and returns the
/// original result, whatever the expectation now says and whatever the retry carries:
/// this is what makes a retried command safe.
pub async fn idempotent_reappend_returns_original_result<H: Harness>(h: &H) {
    let store = h.fresh().await;
    let s = stream("idempotent");
    let first = events(2, "first");
    let r1 = ok(
        store
            .append(&s, ExpectedVersion::NoStream, first.clone())
            .await,
        "first batch",
    );
    let second = events(1, "second");
    let r2 = ok(
        store
            .append(&s, ExpectedVersion::Exact(2), second.clone())
            .await,
        "second batch",
    );
    let head = ok(store.head().await, "head");
    let before = read_stream(&*store, &s).await;

    let mut changed = first.clone();
    changed[0].data = json!({ "a": "different body under the same id" });
    let retries: Vec<(ExpectedVersion, Vec<NewEvent>, AppendResult)> = vec![
        (ExpectedVersion::NoStream, first.clone(), r1),
        (ExpectedVersion::Exact(0), first.clone(), r1),
        (ExpectedVersion::Exact(2), first.clone(), r1),
        (ExpectedVersion::Exact(3), first.clone(), r1),
        (ExpectedVersion::Exact(99), first.clone(), r1),
        (ExpectedVersion::Any, first.clone(), r1),
        (ExpectedVersion::NoStream, first[..1].to_vec(), r1),
        (ExpectedVersion::Any, changed, r1),
        (ExpectedVersion::Exact(2), second.clone(), r2),
        (ExpectedVersion::NoStream, second.clone(), r2),
    ];
    for (expected, batch, original) in retries {
        let retry = ok(
            store.append(&s, expected, batch).await,
            &format!("retry expecting {expected}"),
        );
        assert_eq!(
            retry, original,
            "a retry expecting {expected} returns the original result"
        );
    }

    assert_eq!(
        ok(store.head().await, "head"),
        head,
        "retries record nothing"
    );
    assert_eq!(
        read_stream(&*store, &s).await,
        before,
        "retries change nothing"
    );
    assert_eq!(read_log(&*store, 100).await.len(), 3);
}

/// Many tasks retrying the same new batch at once all get the same result, and the batch
/// is recorded once: a command retried while its first attempt is still in flight.
pub async fn concurrent_retries_of_one_batch_record_it_once<H: Harness>(h: &H) {
    const RETRIES: usize = 8;
    let store = h.fresh().await;
    let s = stream("retried");
    ok(
        store
            .append(&s, ExpectedVersion::Any, events(1, "before"))
            .await,
        "first event",
    );
    let batch = events(3, "retried");
    let start = Arc::new(tokio::sync::Barrier::new(RETRIES));
    let tasks: Vec<_> = (0..RETRIES)
        .map(|_| {
            let (store, s, start, batch) = (store.clone(), s.clone(), start.clone(), batch.clone());
            tokio::spawn(async move {
                start.wait().await;
                store.append(&s, ExpectedVersion::Any, batch).await
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        let result = within("a retry", task).await.expect("a retry panicked");
        results.push(ok(result, "a concurrent retry"));
    }
    assert_eq!(results[0].version, 4);
    assert!(
        results.iter().all(|r| *r == results[0]),
        "every retry gets the same result: {results:?}"
    );
    let recorded = read_stream(&*store, &s).await;
    assert_eq!(recorded.len(), 4, "the batch is recorded once");
    for (rec, new) in recorded[1..].iter().zip(&batch) {
        assert_recorded(rec, new, &s, rec.version);
    }
    assert_eq!(recorded[3].position, results[0].position);
    assert_chain_intact(&recorded, "retried");
}

/// A refused multi-event append records none of its events, and leaves no trace that
/// would make a later, correct append of the same batch look like a retry.
pub async fn conflicting_batch_records_nothing<H: Harness>(h: &H) {
    let store = h.fresh().await;
    let s = stream("atomic");
    ok(
        store
            .append(&s, ExpectedVersion::NoStream, events(1, "first"))
            .await,
        "first event",
    );
    let head = ok(store.head().await, "head");
    let batch = events(5, "refused");
    assert_conflict(
        store
            .append(&s, ExpectedVersion::NoStream, batch.clone())
            .await,
        &s,
        ExpectedVersion::NoStream,
        1,
    );
    assert_conflict(
        store
            .append(&s, ExpectedVersion::Exact(4), batch.clone())
            .await,
        &s,
        ExpectedVersion::Exact(4),
        1,
    );
    assert_eq!(ok(store.head().await, "head"), head, "nothing was recorded");
    assert_eq!(
        ok(
            store.stream_versions(std::slice::from_ref(&s)).await,
            "versions"
        ),
        vec![1]
    );
    let log = read_log(&*store, 100).await;
    assert!(
        log.iter()
            .all(|e| batch.iter().all(|b| b.event_id != e.event_id)),
        "no event of the refused batch is in the log"
    );

    let r = ok(
        store
            .append(&s, ExpectedVersion::Exact(1), batch.clone())
            .await,
        "the same batch, now expecting the right version",
    );
    assert_eq!(r.version, 6, "the batch was not taken for a retry");
    let recorded = read_stream(&*store, &s).await;
    for (rec, new) in recorded[1..].iter().zip(&batch) {
        assert_recorded(rec, new, &s, rec.version);
    }
    assert_chain_intact(&recorded, "atomic");
}

/// An append with no events is a caller's bug, refused as such, and records nothing.
pub async fn empty_append_is_refused<H: Harness>(h: &H) {
    let store = h.fresh().await;
    let s = stream("empty");
    for expected in [ExpectedVersion::NoStream, ExpectedVersion::Any] {
        let result = store.append(&s, expected, Vec::new()).await;
        assert!(
            matches!(result, Err(StoreError::EmptyAppend)),
            "an empty append expecting {expected} must be EmptyAppend, got {result:?}"
        );
    }
    assert_eq!(ok(store.head().await, "head"), Position::START);
    ok(
        store
            .append(&s, ExpectedVersion::NoStream, events(1, "a"))
            .await,
        "one event",
    );
    let head = ok(store.head().await, "head");
    for expected in [ExpectedVersion::Exact(1), ExpectedVersion::Any] {
        let result = store.append(&s, expected, Vec::new()).await;
        assert!(
            matches!(result, Err(StoreError::EmptyAppend)),
            "an empty append expecting {expected} must be EmptyAppend, got {result:?}"
        );
    }
    assert_eq!(ok(store.head().await, "head"), head);
    assert_eq!(
        ok(
            store.stream_versions(std::slice::from_ref(&s)).await,
            "versions"
        ),
        vec![1]
    );
}

/// A store that says it checks facts refuses an append when a stream the decision read
/// has moved on (naming that stream, recording nothing), and accepts it while every fact
/// is current, also for facts moved earlier in the same group of appends. Stores that do
/// not check facts are skipped: their callers check versions before appending.
pub async fn facts_are_checked_with_the_append_when_supported<H: Harness>(h: &H) {
    let store = h.fresh().await;
    if !store.checks_facts() {
        return;
    }
    let target = stream("facts-target");
    let fact = stream("facts-fact");
    let missing = stream("facts-missing");
    ok(
        store
            .append(&fact, ExpectedVersion::NoStream, events(1, "f1"))
            .await,
        "the fact's first event",
    );
    let facts_seen = [(fact.clone(), 1), (missing.clone(), 0)];
    ok(
        store
            .append_with_facts(
                &target,
                ExpectedVersion::NoStream,
                events(1, "t1"),
                &facts_seen,
            )
            .await,
        "facts at the versions read",
    );
    ok(
        store
            .append(&fact, ExpectedVersion::Exact(1), events(1, "f2"))
            .await,
        "the fact moves on",
    );
    let head = ok(store.head().await, "head");
    let result = store
        .append_with_facts(
            &target,
            ExpectedVersion::Exact(1),
            events(1, "t2"),
            &facts_seen,
        )
        .await;
    match result {
        Err(StoreError::Conflict { stream, actual, .. }) => {
            assert_eq!(stream, fact, "the conflict names the fact that moved");
            assert_eq!(actual, 2);
        }
        other => panic!("a moved fact must be a conflict, got {other:?}"),
    }
    assert_eq!(ok(store.head().await, "head"), head, "nothing recorded");
    ok(
        store
            .append_with_facts(
                &target,
                ExpectedVersion::Exact(1),
                events(1, "t2"),
                &[(fact.clone(), 2), (missing, 0)],
            )
            .await,
        "current facts",
    );
}
