//! What someone with write access to the KurrentDB server can do behind Homeroom's back,
//! with their own client, and how the hash chain shows it. Needs a real server
//! (`KURRENTDB_URL`); without it each test prints the one "did not run" line and
//! returns. The same attacks on the in-process model are in `tests/simulated.rs`.

use homeroom_eventstore::{
    hash, EventAppender, EventMetadata, EventReader, ExpectedVersion, NewEvent, Position,
    RecordedEvent, StoreError, StreamId,
};
use homeroom_store_kurrentdb::testing::{kurrentdb_url_or_skip, raw_client, test_config};
use homeroom_store_kurrentdb::KurrentStore;
use kurrentdb::{AppendToStreamOptions, EventData, StreamMetadata};
use serde_json::json;
use uuid::Uuid;

async fn store(url: &str) -> KurrentStore {
    KurrentStore::connect(url, test_config(&["district-"]))
        .await
        .unwrap_or_else(|e| panic!("KURRENTDB_URL is set but the server is not usable: {e}"))
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

/// An event that looks like Homeroom's: `e`'s metadata (hash included) on other data.
fn forged_copy(e: &RecordedEvent, data: serde_json::Value) -> EventData {
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
    EventData::json(&e.event_type, &data)
        .and_then(|d| d.metadata_as_json(&metadata))
        .expect("a JSON event")
}

#[tokio::test]
async fn a_forged_event_appended_with_the_raw_client_breaks_the_chain_there() {
    let Some(url) = kurrentdb_url_or_skip() else {
        return;
    };
    let store = store(&url).await;
    let s = stream("forged");
    store
        .append(&s, ExpectedVersion::NoStream, vec![event(0), event(1)])
        .await
        .unwrap();
    let before = store.read_stream(&s, 0, 10).await.unwrap();
    raw_client(&url)
        .append_to_stream(
            store.kurrent_stream_name(&s),
            &AppendToStreamOptions::default(),
            forged_copy(&before[1], json!({ "i": 99 })),
        )
        .await
        .expect("anyone with write access can append");
    let after = store.read_stream(&s, 0, 10).await.unwrap();
    assert_eq!(after.len(), 3);
    assert_eq!(after[..2], before[..], "the history before it is untouched");
    assert_eq!(
        hash::verify_stream(&after),
        vec![3],
        "the forged event is caught"
    );
    let in_log = store.read_all(Position::START, 10).await.unwrap();
    assert_eq!(
        in_log, after,
        "$all shows it too, for auditors and projections"
    );
}

#[tokio::test]
async fn a_stream_truncated_with_stream_metadata_no_longer_verifies() {
    let Some(url) = kurrentdb_url_or_skip() else {
        return;
    };
    let store = store(&url).await;
    let s = stream("truncated");
    store
        .append(&s, ExpectedVersion::NoStream, (0..4).map(event).collect())
        .await
        .unwrap();
    raw_client(&url)
        .set_stream_metadata(
            store.kurrent_stream_name(&s),
            &AppendToStreamOptions::default(),
            &StreamMetadata::builder().truncate_before(2).build(),
        )
        .await
        .expect("anyone with metadata write access can truncate");
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
        "the version still counts the hidden events"
    );
}

#[tokio::test]
async fn an_event_without_homeroom_metadata_is_corrupt_not_skipped() {
    let Some(url) = kurrentdb_url_or_skip() else {
        return;
    };
    let store = store(&url).await;
    let s = stream("foreign");
    store
        .append(&s, ExpectedVersion::NoStream, vec![event(0)])
        .await
        .unwrap();
    raw_client(&url)
        .append_to_stream(
            store.kurrent_stream_name(&s),
            &AppendToStreamOptions::default(),
            EventData::json("message_posted", &json!({ "body": "hi" })).unwrap(),
        )
        .await
        .unwrap();
    assert!(matches!(
        store.read_stream(&s, 0, 10).await,
        Err(StoreError::Corrupt { version: 2, .. })
    ));
    assert!(
        matches!(
            store.append(&s, ExpectedVersion::Any, vec![event(1)]).await,
            Err(StoreError::Corrupt { .. })
        ),
        "nothing is chained onto a head the adapter cannot read"
    );
}
