//! The adapter's protocol against the in-process model of KurrentDB
//! (`homeroom_store_kurrentdb::simulated`), runnable anywhere: the conformance kit
//! unchanged, then what the kit cannot provoke on its own (dropped subscriptions,
//! repeated deliveries, lost acknowledgements, writes that bypass the adapter).
//!
//! These prove the adapter's logic under the server semantics the model encodes; the
//! same kit against a real server is `tests/conformance.rs` (needs `KURRENTDB_URL`).

use futures::StreamExt;
use homeroom_eventstore::conformance::{async_trait, Harness, PATIENCE};
use homeroom_eventstore::{
    hash, EventAppender, EventMetadata, EventReader, EventStream, EventSubscriber, ExpectedVersion,
    NewEvent, Position, RecordedEvent, StoreError, StreamId,
};
use homeroom_store_kurrentdb::simulated::SimulatedServer;
use homeroom_store_kurrentdb::testing::{test_config, KIT_CATEGORIES};
use homeroom_store_kurrentdb::{KurrentStore, KurrentStoreError};
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;
use uuid::Uuid;

/// One model server per kit test; every store on it gets a prefix of its own, so the
/// kit also checks that stores sharing a server do not see each other.
#[derive(Default)]
struct SimulatedHarness {
    server: SimulatedServer,
}

#[async_trait]
impl Harness for SimulatedHarness {
    type Store = KurrentStore;

    async fn fresh(&self) -> Arc<KurrentStore> {
        let store = self
            .server
            .store(&test_config(KIT_CATEGORIES))
            .expect("a usable test configuration");
        Arc::new(store)
    }

    /// Edits the stored bytes of the event's data in the model's storage.
    async fn tamper(&self, store: &KurrentStore, stream: &StreamId, version: u64) {
        self.server.overwrite_data(
            &store.kurrent_stream_name(stream),
            version - 1,
            br#"{"tampered":true}"#.to_vec(),
        );
    }
}

mod kit {
    homeroom_eventstore::conformance_tests!(super::SimulatedHarness::default());
}

fn stream(name: &str) -> StreamId {
    StreamId::parse(format!("district-{name}-{}", Uuid::now_v7())).unwrap()
}

fn event(i: usize) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "noted".into(),
        schema_version: 1,
        data: json!({ "i": i }),
        metadata: EventMetadata {
            district: "d".into(),
            command_id: Uuid::now_v7(),
            ..EventMetadata::default()
        },
    }
}

fn store_on(server: &SimulatedServer) -> KurrentStore {
    server.store(&test_config(&["district-"])).unwrap()
}

async fn append_many(store: &KurrentStore, streams: &[StreamId], n: usize) {
    for i in 0..n {
        store
            .append(
                &streams[i % streams.len()],
                ExpectedVersion::Any,
                vec![event(i)],
            )
            .await
            .unwrap();
    }
}

async fn whole_log(store: &KurrentStore) -> Vec<RecordedEvent> {
    store.read_all(Position::START, 10_000).await.unwrap()
}

async fn take(sub: &mut EventStream, n: usize) -> Vec<RecordedEvent> {
    let mut got = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while got.len() < n {
            match sub.next().await {
                Some(Ok(e)) => got.push(e),
                Some(Err(e)) => panic!("the subscription failed after {} events: {e}", got.len()),
                None => panic!("the subscription ended after {} events", got.len()),
            }
        }
    })
    .await
    .expect("the subscription delivered in time");
    got
}

fn too_slow() -> kurrentdb::Error {
    kurrentdb::Error::Grpc {
        code: tonic::Code::Aborted,
        message: "Operation timed out: Consumer too slow to handle event while live. Client resubscription required.".into(),
    }
}

#[tokio::test]
async fn dropped_subscriptions_resume_without_a_gap_or_a_duplicate() {
    let server = SimulatedServer::new();
    let store = store_on(&server);
    let other = store_on(&server);
    let streams = [stream("a"), stream("b"), stream("c")];
    append_many(&store, &streams, 20).await;
    // Other stores' events in between: the filter skips them, with checkpoints.
    append_many(&other, &[stream("x")], 5).await;
    append_many(&store, &streams, 10).await;

    server.repeat_before_start(3); // a reopened subscription repeats what it had sent
    server.drop_next_subscription(7, too_slow());
    server.drop_next_subscription(0, kurrentdb::Error::ConnectionClosed);
    server.drop_next_subscription(12, kurrentdb::Error::ServerError("leader lost".into()));

    let mut sub = store.subscribe_all(Position::START);
    let caught_up = take(&mut sub, 30).await;
    let log = whole_log(&store).await;
    assert_eq!(log.len(), 30);
    assert_eq!(
        caught_up, log,
        "every event once, in log order, across three drops"
    );

    // Live: the open subscription is cut, reopened from where it was, and goes on.
    server.drop_open_subscriptions(too_slow());
    append_many(&store, &streams, 5).await;
    let live = take(&mut sub, 5).await;
    assert_eq!(live, whole_log(&store).await[30..]);

    let opened = server.subscriptions_opened();
    assert_eq!(
        opened.len(),
        5,
        "the first subscription and four reopenings"
    );
    assert_eq!(opened[0], kurrentdb::StreamPosition::Start);
    let at = |e: &RecordedEvent| {
        kurrentdb::StreamPosition::Position(homeroom_store_kurrentdb::position::to_kurrent(
            e.position,
        ))
    };
    assert_eq!(
        opened[1],
        at(&log[6]),
        "reopened after the 7th event delivered"
    );
    assert_eq!(
        opened[2],
        at(&log[6]),
        "a failed reopening starts at the same place"
    );
    assert_eq!(
        opened[3],
        at(&log[15]),
        "12 deliveries, 3 of them repeats, then a drop"
    );
    assert_eq!(
        opened[4],
        at(&log[29]),
        "cut while live, after the whole log"
    );
}

#[tokio::test]
async fn a_subscription_joining_mid_log_survives_a_drop_too() {
    let server = SimulatedServer::new();
    let store = store_on(&server);
    append_many(&store, &[stream("a"), stream("b")], 12).await;
    let log = whole_log(&store).await;
    server.repeat_before_start(5);
    server.drop_next_subscription(2, too_slow());
    let mut sub = store.subscribe_all(log[3].position);
    assert_eq!(
        take(&mut sub, 8).await,
        log[4..],
        "nothing at or before the checkpoint"
    );
}

#[tokio::test]
async fn errors_that_will_not_pass_end_the_subscription() {
    let server = SimulatedServer::new();
    let store = store_on(&server);
    append_many(&store, &[stream("a")], 3).await;
    server.drop_next_subscription(1, kurrentdb::Error::AccessDenied);
    let mut sub = store.subscribe_all(Position::START);
    assert!(matches!(sub.next().await, Some(Ok(_))));
    assert!(matches!(
        sub.next().await,
        Some(Err(StoreError::Unavailable(_)))
    ));
    assert!(
        sub.next().await.is_none(),
        "the stream ends after the error"
    );
    assert_eq!(server.subscriptions_opened().len(), 1, "not reopened");
}

#[tokio::test]
async fn a_server_that_stays_away_ends_the_subscription_after_the_policy_s_attempts() {
    let server = SimulatedServer::new();
    let mut config = test_config(&["district-"]);
    config.resubscribe.attempts = 3;
    let store = server.store(&config).unwrap();
    for _ in 0..4 {
        server.drop_next_subscription(0, kurrentdb::Error::ConnectionClosed);
    }
    let mut sub = store.subscribe_all(Position::START);
    let first = tokio::time::timeout(PATIENCE, sub.next()).await.unwrap();
    assert!(matches!(first, Some(Err(StoreError::Unavailable(_)))));
    assert_eq!(
        server.subscriptions_opened().len(),
        4,
        "one opening and three retries"
    );
}

#[tokio::test]
async fn a_retry_after_a_lost_acknowledgement_records_nothing_and_finds_the_command() {
    let server = SimulatedServer::new();
    let store = store_on(&server);
    let s = stream("retried");
    let command = Uuid::now_v7();
    let batch: Vec<NewEvent> = (0..2)
        .map(|i| {
            let mut e = event(i);
            e.metadata.command_id = command;
            e
        })
        .collect();
    server.fail_next_append(
        &store.kurrent_stream_name(&s),
        kurrentdb::Error::DeadlineExceeded,
        true,
    );
    let lost = store
        .append(&s, ExpectedVersion::NoStream, batch.clone())
        .await;
    assert!(matches!(lost, Err(StoreError::Unavailable(_))), "{lost:?}");
    // The command service retries right away: the first attempt is found, not repeated.
    let found = store.find_command(command).await.unwrap();
    assert_eq!(
        found.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        batch.iter().map(|e| e.event_id).collect::<Vec<_>>()
    );
    let retry = store
        .append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    assert_eq!(retry.version, 2);
    assert_eq!(retry.position, found[1].position);
    assert_eq!(store.read_stream(&s, 0, 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn an_append_that_never_happened_leaves_an_intent_nobody_believes() {
    let server = SimulatedServer::new();
    let store = store_on(&server);
    let s = stream("failed");
    let mut first = event(0);
    let command = first.metadata.command_id;
    server.fail_next_append(
        &store.kurrent_stream_name(&s),
        kurrentdb::Error::ServerError("disk full".into()),
        false,
    );
    assert!(store
        .append(&s, ExpectedVersion::NoStream, vec![first.clone()])
        .await
        .is_err());
    assert!(store.find_command(command).await.unwrap().is_empty());
    // Someone else takes that version; the intent now points at their event.
    store
        .append(&s, ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();
    assert!(store.find_command(command).await.unwrap().is_empty());
    // The same batch, appended for real, is not mistaken for a retry.
    first.data = json!("now");
    let r = store
        .append(&s, ExpectedVersion::Exact(1), vec![first])
        .await
        .unwrap();
    assert_eq!(r.version, 2);
    assert_eq!(store.find_command(command).await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_event_id_stored_in_another_stream_is_refused() {
    let server = SimulatedServer::new();
    let store = store_on(&server);
    let e = event(0);
    store
        .append(&stream("a"), ExpectedVersion::Any, vec![e.clone()])
        .await
        .unwrap();
    let again = store
        .append(&stream("b"), ExpectedVersion::Any, vec![e.clone()])
        .await;
    assert!(is_adapter_error(&again, |k| matches!(
        k,
        KurrentStoreError::DuplicateEventId { .. }
    )));
    let twice = store
        .append(
            &stream("c"),
            ExpectedVersion::Any,
            vec![event(1), e.clone(), e],
        )
        .await;
    assert!(is_adapter_error(&twice, |k| matches!(
        k,
        KurrentStoreError::DuplicateEventId { .. }
    )));
}

#[tokio::test]
async fn appends_outside_the_categories_are_refused() {
    let server = SimulatedServer::new();
    let store = store_on(&server);
    let s = StreamId::parse("elsewhere-1").unwrap();
    let refused = store.append(&s, ExpectedVersion::Any, vec![event(0)]).await;
    assert!(is_adapter_error(&refused, |k| matches!(
        k,
        KurrentStoreError::OutsideCategories { .. }
    )));
    assert_eq!(store.head().await.unwrap(), Position::START);
}

fn is_adapter_error<T: std::fmt::Debug>(
    result: &Result<T, StoreError>,
    kind: impl Fn(&KurrentStoreError) -> bool,
) -> bool {
    match result {
        Err(StoreError::Unavailable(source)) => {
            source.downcast_ref::<KurrentStoreError>().is_some_and(kind)
        }
        other => panic!("expected an adapter error, got {other:?}"),
    }
}

/// A copy of the stored metadata of `e` with its data replaced: what an attacker who
/// read the stream would forge.
fn forged_copy(e: &RecordedEvent, data: serde_json::Value) -> (String, Vec<u8>, Vec<u8>) {
    let metadata = json!({
        "$correlationId": e.metadata.correlation_id,
        "$causationId": e.metadata.causation_id,
        "district": e.metadata.district,
        "actor": e.metadata.actor,
        "command_id": e.metadata.command_id,
        "schema_version": e.schema_version.to_string(),
        "recorded_at": e.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "prev_hash": e.hash,
        "hash": e.hash,
    });
    (
        e.event_type.clone(),
        serde_json::to_vec(&data).unwrap(),
        serde_json::to_vec(&metadata).unwrap(),
    )
}

#[tokio::test]
async fn a_forged_event_written_around_the_adapter_breaks_the_chain_there() {
    let server = SimulatedServer::new();
    let store = store_on(&server);
    let s = stream("forged");
    store
        .append(&s, ExpectedVersion::NoStream, vec![event(0), event(1)])
        .await
        .unwrap();
    let before = store.read_stream(&s, 0, 10).await.unwrap();
    server.append_raw(
        &store.kurrent_stream_name(&s),
        vec![forged_copy(&before[1], json!({ "i": 99 }))],
    );
    let after = store.read_stream(&s, 0, 10).await.unwrap();
    assert_eq!(after.len(), 3);
    assert_eq!(
        hash::verify_stream(&after),
        vec![3],
        "the forged event is caught"
    );
    assert_eq!(after[..2], before[..], "the history before it is untouched");
    let sub_log = whole_log(&store).await;
    assert_eq!(sub_log.len(), 3, "$all shows the forged event too");
}

#[tokio::test]
async fn a_truncated_stream_no_longer_verifies() {
    let server = SimulatedServer::new();
    let store = store_on(&server);
    let s = stream("truncated");
    store
        .append(&s, ExpectedVersion::NoStream, (0..4).map(event).collect())
        .await
        .unwrap();
    server.truncate_before(&store.kurrent_stream_name(&s), 2);
    let left = store.read_stream(&s, 0, 10).await.unwrap();
    assert_eq!(
        left.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert_eq!(
        hash::verify_stream(&left),
        vec![3],
        "the chain no longer starts at 1"
    );
    assert_eq!(
        store
            .stream_versions(std::slice::from_ref(&s))
            .await
            .unwrap(),
        vec![4],
        "the version still counts the hidden events, so nothing is appended twice"
    );
}

#[tokio::test]
async fn an_event_without_homeroom_metadata_is_corrupt_not_skipped() {
    let server = SimulatedServer::new();
    let store = store_on(&server);
    let s = stream("foreign");
    store
        .append(&s, ExpectedVersion::NoStream, vec![event(0)])
        .await
        .unwrap();
    server.append_raw(
        &store.kurrent_stream_name(&s),
        vec![("message_posted".into(), b"{}".to_vec(), Vec::new())],
    );
    assert!(matches!(
        store.read_stream(&s, 0, 10).await,
        Err(StoreError::Corrupt { version: 2, .. })
    ));
    assert!(matches!(
        store.read_all(Position::START, 10).await,
        Err(StoreError::Corrupt { version: 2, .. })
    ));
    assert!(
        matches!(
            store.append(&s, ExpectedVersion::Any, vec![event(1)]).await,
            Err(StoreError::Corrupt { .. })
        ),
        "no event is chained onto a head the adapter cannot read"
    );
}

#[tokio::test]
async fn stores_sharing_a_server_see_only_their_own_streams() {
    let server = SimulatedServer::new();
    let (a, b) = (store_on(&server), store_on(&server));
    let s = stream("shared-name");
    a.append(&s, ExpectedVersion::NoStream, vec![event(0)])
        .await
        .unwrap();
    b.append(&s, ExpectedVersion::NoStream, vec![event(1), event(2)])
        .await
        .unwrap();
    assert_eq!(a.read_stream(&s, 0, 10).await.unwrap().len(), 1);
    assert_eq!(b.read_stream(&s, 0, 10).await.unwrap().len(), 2);
    assert_eq!(whole_log(&a).await.len(), 1);
    assert_eq!(whole_log(&b).await.len(), 2);
    let ids: HashSet<_> = whole_log(&b).await.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), 2);
    assert!(a.head().await.unwrap() < b.head().await.unwrap());
}
