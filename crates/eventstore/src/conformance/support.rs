//! Small helpers the kit's tests share: events, stream names, assertions, waiting.

use crate::{
    hash, EventMetadata, EventReader, EventStream, ExpectedVersion, NewEvent, Position,
    RecordedEvent, StoreError, StreamId,
};
use futures::StreamExt;
use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;
use uuid::Uuid;

/// How long the kit waits for something that must happen promptly (a live event, the end
/// of the writers). A bound that only a broken or hung backend reaches, never a delay the
/// kit relies on.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The most events any kit stream holds; reads ask for this many to get a whole stream.
pub(super) const WHOLE: usize = 10_000;

/// A stream name no other test (or earlier run against a shared engine) uses.
pub(super) fn stream(test: &str) -> StreamId {
    StreamId::parse(format!("kit_{test}-{}", Uuid::now_v7())).expect("kit stream ids are valid")
}

/// Metadata with every field set and fresh ids.
pub(super) fn metadata() -> EventMetadata {
    EventMetadata {
        district: "district-kit".into(),
        school: Some("school-kit".into()),
        actor: "actor-kit".into(),
        correlation_id: Uuid::now_v7(),
        causation_id: Uuid::now_v7(),
        command_id: Uuid::now_v7(),
        command_digest: None,
    }
}

/// A new event with a fresh id.
pub(super) fn event(event_type: &str, data: serde_json::Value) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: event_type.into(),
        schema_version: 1,
        data,
        metadata: metadata(),
    }
}

/// `n` new events whose data says which one they are.
pub(super) fn events(n: usize, tag: &str) -> Vec<NewEvent> {
    (0..n)
        .map(|i| event("kit_noted", serde_json::json!({ "tag": tag, "i": i })))
        .collect()
}

/// The value of a store call that must succeed.
#[track_caller]
pub(super) fn ok<T>(result: Result<T, StoreError>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(err) => panic!("{what}: unexpected store error: {err} ({err:?})"),
    }
}

/// Checks that an append failed with exactly this conflict.
#[track_caller]
pub(super) fn assert_conflict<T: Debug>(
    result: Result<T, StoreError>,
    stream: &StreamId,
    expected: ExpectedVersion,
    actual: u64,
) {
    match result {
        Err(StoreError::Conflict {
            stream: got_stream,
            expected: got_expected,
            actual: got_actual,
        }) => {
            assert_eq!(&got_stream, stream, "the conflict names the wrong stream");
            assert_eq!(
                got_expected, expected,
                "the conflict reports the wrong expectation"
            );
            assert_eq!(
                got_actual, actual,
                "the conflict on {stream} (expected {expected}) reports the wrong actual version"
            );
        }
        other => panic!(
            "appending to {stream} expecting {expected} while it is at {actual} must be a \
             Conflict, got {other:?}"
        ),
    }
}

/// Checks that a recorded event says exactly what was written, where it was written.
#[track_caller]
pub(super) fn assert_recorded(
    recorded: &RecordedEvent,
    written: &NewEvent,
    stream: &StreamId,
    version: u64,
) {
    let at = format!("{stream} version {version}");
    assert_eq!(recorded.event_id, written.event_id, "event id at {at}");
    assert_eq!(&recorded.stream, stream, "stream at {at}");
    assert_eq!(recorded.version, version, "version at {at}");
    assert_eq!(
        recorded.event_type, written.event_type,
        "event type at {at}"
    );
    assert_eq!(
        recorded.schema_version, written.schema_version,
        "schema version at {at}"
    );
    assert!(recorded.data == written.data, "data at {at} changed");
    assert_eq!(recorded.metadata, written.metadata, "metadata at {at}");
}

/// Checks that positions strictly increase along `events`.
#[track_caller]
pub(super) fn assert_strictly_increasing(events: &[RecordedEvent], what: &str) {
    for pair in events.windows(2) {
        assert!(
            pair[0].position < pair[1].position,
            "{what}: position {} is followed by {}",
            pair[0].position,
            pair[1].position
        );
    }
}

/// Checks that a whole stream's hash chain holds.
#[track_caller]
pub(super) fn assert_chain_intact(events: &[RecordedEvent], what: &str) {
    let broken = hash::verify_stream(events);
    assert!(
        broken.is_empty(),
        "{what}: the hash chain breaks at {broken:?}"
    );
}

/// A whole stream, in version order.
pub(super) async fn read_stream<S: EventReader + ?Sized>(
    store: &S,
    stream: &StreamId,
) -> Vec<RecordedEvent> {
    let events = ok(store.read_stream(stream, 0, WHOLE).await, "read_stream");
    assert!(
        events.len() < WHOLE,
        "kit streams stay under {WHOLE} events"
    );
    events
}

/// The whole log, in delivery order, read in pages of `page`.
pub(super) async fn read_log<S: EventReader + ?Sized>(
    store: &S,
    page: usize,
) -> Vec<RecordedEvent> {
    let mut log: Vec<RecordedEvent> = Vec::new();
    let mut after = Position::START;
    loop {
        let batch = ok(store.read_all(after, page).await, "read_all");
        assert!(batch.len() <= page, "read_all returned more than its limit");
        let Some(last) = batch.last() else {
            return log;
        };
        assert!(
            batch[0].position > after,
            "read_all after {after} returned position {}",
            batch[0].position
        );
        assert!(log.len() < WHOLE * 10, "read_all never reaches the end");
        after = last.position;
        log.extend(batch);
    }
}

/// Waits at most [`PATIENCE`] for `future`.
pub(super) async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: still waiting after {PATIENCE:?}"),
    }
}

/// The next `n` events of a subscription, failing on an error, an end, or a hang.
pub(super) async fn take(sub: &mut EventStream, n: usize, what: &str) -> Vec<RecordedEvent> {
    within(what, take_unbounded(sub, n, what)).await
}

/// The next `n` events of a subscription, with no time bound (the caller adds one).
pub(super) async fn take_unbounded(
    sub: &mut EventStream,
    n: usize,
    what: &str,
) -> Vec<RecordedEvent> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match sub.next().await {
            Some(Ok(event)) => got.push(event),
            Some(Err(err)) => panic!(
                "{what}: the subscription failed after {} events: {err}",
                got.len()
            ),
            None => panic!("{what}: the subscription ended after {} events", got.len()),
        }
    }
    got
}
