//! Homeroom events as KurrentDB events, and back.
//!
//! A recorded Homeroom event becomes one KurrentDB event in the stream
//! `{stream_prefix}{stream}`:
//!
//! | Homeroom | KurrentDB |
//! |---|---|
//! | `event_id` | the event id |
//! | `stream`, `version` | the stream, and revision `version - 1` |
//! | `position` | the `$all` position (see [`crate::position`]) |
//! | `event_type` | the event type |
//! | `data` | the data, as JSON (`application/json`) |
//! | metadata, `schema_version`, `recorded_at`, `prev_hash`, `hash` | the event's metadata, a JSON object of strings (below) |
//!
//! The metadata object holds only strings, so it is also valid where newer KurrentDB
//! APIs require that, and it uses KurrentDB's own names for the two ids its system
//! projections understand:
//!
//! ```json
//! {
//!   "$correlationId": "0190…", "$causationId": "0190…",
//!   "district": "d1", "school": "s1", "actor": "0190…",
//!   "command_id": "0190…", "command_digest": "9f…",
//!   "schema_version": "1", "recorded_at": "2026-05-04T10:11:12.123456Z",
//!   "prev_hash": "00…", "hash": "5e…"
//! }
//! ```
//!
//! `school` and `command_digest` are left out when absent (an empty string is kept as
//! one). KurrentDB's own `created` time is not used: the recorded time is chosen before
//! the write because the hash covers it.

use crate::config::Namespace;
use crate::position::{from_kurrent, is_placed};
use chrono::{DateTime, SecondsFormat, Utc};
use homeroom_eventstore::hash;
use homeroom_eventstore::{EventMetadata, NewEvent, RecordedEvent, StoreError, StreamId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An event as the server returns it, reduced to what the adapter reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawEvent {
    /// The KurrentDB stream.
    pub stream: String,
    /// Its revision in that stream (0 for the first event).
    pub revision: u64,
    /// The event id.
    pub id: Uuid,
    /// The event type.
    pub event_type: String,
    /// The data bytes.
    pub data: Vec<u8>,
    /// The (custom) metadata bytes.
    pub metadata: Vec<u8>,
    /// The `$all` position.
    pub position: kurrentdb::Position,
}

impl RawEvent {
    /// Reads what the client delivered.
    pub(crate) fn from_client(event: &kurrentdb::RecordedEvent) -> Self {
        Self {
            stream: event.stream_id().to_owned(),
            revision: event.revision,
            id: event.id,
            event_type: event.event_type.clone(),
            data: event.data.to_vec(),
            metadata: event.custom_metadata.to_vec(),
            position: event.position,
        }
    }
}

/// An event on its way to the server: JSON data and JSON metadata.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outgoing {
    /// The event id.
    pub id: Uuid,
    /// The event type.
    pub event_type: String,
    /// The data.
    pub data: serde_json::Value,
    /// The metadata object.
    pub metadata: serde_json::Value,
}

impl Outgoing {
    /// The bytes the client sends as data (what [`kurrentdb::EventData::json`] writes).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn data_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.data).unwrap_or_default()
    }

    /// The bytes the client sends as metadata.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn metadata_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.metadata).unwrap_or_default()
    }

    /// The event for the client.
    pub(crate) fn to_client(&self) -> Result<kurrentdb::EventData, serde_json::Error> {
        kurrentdb::EventData::json(&self.event_type, &self.data)?
            .id(self.id)
            .metadata_as_json(&self.metadata)
    }
}

/// The metadata object of a Homeroom event in KurrentDB (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredMetadata {
    #[serde(rename = "$correlationId")]
    correlation_id: Uuid,
    #[serde(rename = "$causationId")]
    causation_id: Uuid,
    district: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    school: Option<String>,
    actor: String,
    command_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    command_digest: Option<String>,
    schema_version: String,
    recorded_at: String,
    prev_hash: String,
    hash: String,
}

/// The recorded time as stored: RFC 3339, UTC, exactly six fractional digits.
fn time_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A batch chained onto a stream whose last event has version `head_version` and hash
/// `head_hash`, all recorded at `recorded_at` (already truncated to microseconds).
pub(crate) fn encode_batch(
    stream: &StreamId,
    head_version: u64,
    head_hash: &str,
    events: &[NewEvent],
    recorded_at: DateTime<Utc>,
) -> Vec<Outgoing> {
    hash::chain_batch(stream, head_version, head_hash, events, recorded_at)
        .zip(events)
        .map(|(link, event)| encode(event, recorded_at, link.prev_hash, link.hash))
        .collect()
}

/// One event with its place in the chain already computed.
pub(crate) fn encode(
    event: &NewEvent,
    recorded_at: DateTime<Utc>,
    prev_hash: String,
    hash: String,
) -> Outgoing {
    let m = &event.metadata;
    let stored = StoredMetadata {
        correlation_id: m.correlation_id,
        causation_id: m.causation_id,
        district: m.district.clone(),
        school: m.school.clone(),
        actor: m.actor.clone(),
        command_id: m.command_id,
        command_digest: m.command_digest.clone(),
        schema_version: event.schema_version.to_string(),
        recorded_at: time_text(recorded_at),
        prev_hash,
        hash,
    };
    Outgoing {
        id: event.event_id,
        event_type: event.event_type.clone(),
        data: event.data.clone(),
        metadata: serde_json::to_value(stored).unwrap_or(serde_json::Value::Null),
    }
}

/// Turns a stored KurrentDB event back into the Homeroom event it records.
///
/// # Errors
/// [`StoreError::Corrupt`] when the event is not in this store's namespace, has no
/// `$all` position (a server before 22.10), or its data or metadata are not what
/// [`encode`] writes.
pub(crate) fn decode(ns: &Namespace, raw: &RawEvent) -> Result<RecordedEvent, StoreError> {
    let version = raw.revision.saturating_add(1);
    let corrupt = |reason: String| StoreError::Corrupt {
        stream: raw.stream.clone(),
        version,
        reason,
    };
    let stream = ns
        .homeroom_stream(&raw.stream)
        .ok_or_else(|| corrupt("not a stream of this store".into()))?;
    if !is_placed(raw.position) {
        return Err(corrupt(
            "the server gave no $all position (KurrentDB 22.10 or later is required)".into(),
        ));
    }
    let data: serde_json::Value =
        serde_json::from_slice(&raw.data).map_err(|e| corrupt(format!("data: {e}")))?;
    let stored: StoredMetadata = serde_json::from_slice(&raw.metadata)
        .map_err(|e| corrupt(format!("metadata (not written by Homeroom?): {e}")))?;
    let schema_version = stored
        .schema_version
        .parse::<u32>()
        .map_err(|e| corrupt(format!("schema_version: {e}")))?;
    let recorded_at = DateTime::parse_from_rfc3339(&stored.recorded_at)
        .map_err(|e| corrupt(format!("recorded_at: {e}")))?
        .with_timezone(&Utc);
    Ok(RecordedEvent {
        event_id: raw.id,
        stream,
        version,
        position: from_kurrent(raw.position),
        event_type: raw.event_type.clone(),
        schema_version,
        data,
        metadata: EventMetadata {
            district: stored.district,
            school: stored.school,
            actor: stored.actor,
            correlation_id: stored.correlation_id,
            causation_id: stored.causation_id,
            command_id: stored.command_id,
            command_digest: stored.command_digest,
        },
        recorded_at,
        prev_hash: stored.prev_hash,
        hash: stored.hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KurrentConfig;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn ns() -> Namespace {
        KurrentConfig::with_stream_prefix("t1_")
            .namespace()
            .unwrap()
    }

    fn metadata() -> EventMetadata {
        EventMetadata {
            district: "d1".into(),
            school: Some("s1".into()),
            actor: "0190c1f6-0000-7000-8000-0000000000aa".into(),
            correlation_id: Uuid::now_v7(),
            causation_id: Uuid::now_v7(),
            command_id: Uuid::now_v7(),
            command_digest: Some("ab".repeat(32)),
        }
    }

    fn new_event(event_type: &str, schema_version: u32, data: serde_json::Value) -> NewEvent {
        NewEvent {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version,
            data,
            metadata: metadata(),
        }
    }

    /// What the server would hand back for `outgoing` at `revision` in `stream`.
    fn stored(stream: &str, revision: u64, outgoing: &Outgoing, at: u64) -> RawEvent {
        RawEvent {
            stream: stream.into(),
            revision,
            id: outgoing.id,
            event_type: outgoing.event_type.clone(),
            data: outgoing.data_bytes(),
            metadata: outgoing.metadata_bytes(),
            position: kurrentdb::Position {
                commit: at,
                prepare: at,
            },
        }
    }

    /// Appends `events` after a stream head and reads them back as the server would.
    fn round_trip(stream: &StreamId, head: (u64, &str), events: &[NewEvent]) -> Vec<RecordedEvent> {
        let ns = ns();
        let at = hash::storable_time(Utc::now());
        let outgoing = encode_batch(stream, head.0, head.1, events, at);
        outgoing
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let raw = stored(
                    &ns.stream_name(stream),
                    head.0 + i as u64,
                    o,
                    4096 + i as u64,
                );
                decode(&ns, &raw).expect("what the adapter writes, it reads")
            })
            .collect()
    }

    /// `tests/samples/events.json`: one stored sample of every Homeroom event type.
    fn samples() -> BTreeMap<String, serde_json::Value> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/samples/events.json"
        );
        let text = std::fs::read_to_string(path).expect("the stored event samples");
        serde_json::from_str(&text).expect("the samples are JSON")
    }

    #[test]
    fn every_homeroom_event_type_round_trips_through_a_kurrentdb_event() {
        let samples = samples();
        assert!(samples.len() >= 20, "the samples hold every event type");
        let stream =
            StreamId::parse("conversation-d1:0190c1f6-0000-7000-8000-000000000001").unwrap();
        let events: Vec<NewEvent> = samples
            .iter()
            .map(|(key, data)| {
                let (event_type, version) = key.split_once('@').expect("type@version");
                new_event(event_type, version.parse().unwrap(), data.clone())
            })
            .collect();
        let recorded = round_trip(&stream, (0, hash::GENESIS), &events);
        assert_eq!(recorded.len(), events.len());
        for (i, (rec, new)) in recorded.iter().zip(&events).enumerate() {
            assert_eq!(rec.event_id, new.event_id);
            assert_eq!(rec.stream, stream);
            assert_eq!(rec.version, i as u64 + 1);
            assert_eq!(rec.event_type, new.event_type);
            assert_eq!(rec.schema_version, new.schema_version);
            assert_eq!(rec.data, new.data, "{} data", new.event_type);
            assert_eq!(rec.metadata, new.metadata, "{} metadata", new.event_type);
            assert_eq!(rec.hash, hash::recompute(rec), "{} hash", new.event_type);
        }
        assert_eq!(recorded[0].prev_hash, hash::GENESIS);
        assert!(hash::verify_stream(&recorded).is_empty(), "the chain holds");
    }

    #[test]
    fn a_batch_chains_onto_the_stream_head() {
        let stream = StreamId::parse("person-d1:p").unwrap();
        let first = round_trip(&stream, (0, hash::GENESIS), &[new_event("a", 1, json!(1))]);
        let next = round_trip(
            &stream,
            (1, &first[0].hash),
            &[new_event("b", 1, json!(2)), new_event("c", 2, json!(3))],
        );
        assert_eq!(next[0].version, 2);
        assert_eq!(next[0].prev_hash, first[0].hash);
        assert_eq!(next[1].prev_hash, next[0].hash);
        let whole: Vec<_> = first.into_iter().chain(next).collect();
        assert!(hash::verify_stream(&whole).is_empty());
    }

    #[test]
    fn optional_and_empty_metadata_fields_keep_their_shape() {
        let stream = StreamId::parse("district-d1").unwrap();
        let mut none = new_event("x", 1, json!(null));
        none.metadata.school = None;
        none.metadata.command_digest = None;
        let mut empty = new_event("x", 1, json!(""));
        empty.metadata.school = Some(String::new());
        empty.metadata.district = String::new();
        empty.metadata.actor = String::new();
        empty.metadata.correlation_id = Uuid::nil();
        empty.metadata.causation_id = Uuid::max();
        let back = round_trip(&stream, (0, hash::GENESIS), &[none.clone(), empty.clone()]);
        assert_eq!(back[0].metadata, none.metadata);
        assert_eq!(back[1].metadata, empty.metadata);
    }

    #[test]
    fn odd_json_and_unicode_come_back_as_the_same_value() {
        let stream = StreamId::parse("district-漢字:👩‍👩‍👧‍👦").unwrap();
        let shapes = [
            json!(null),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(1e300),
            json!(1.0),
            json!(0.1),
            json!({"": 1, "new\nline": [[], {}], "é": "\u{200F}\u{2028}"}),
            json!("escapes: \" \\ / \n \u{1} \u{7F} 😀"),
        ];
        let events: Vec<_> = shapes
            .iter()
            .map(|d| new_event("x", 1, d.clone()))
            .collect();
        let back = round_trip(&stream, (0, hash::GENESIS), &events);
        for (rec, shape) in back.iter().zip(&shapes) {
            assert_eq!(&rec.data, shape);
        }
        assert!(hash::verify_stream(&back).is_empty());
    }

    #[test]
    fn the_metadata_is_a_json_object_of_strings_with_kurrentdb_names() {
        let event = new_event("message_posted", 3, json!({"body": "hi"}));
        let at = hash::storable_time(Utc::now());
        let out = encode(&event, at, hash::GENESIS.into(), "ab".repeat(32));
        let object = out.metadata.as_object().expect("an object");
        assert!(object.values().all(serde_json::Value::is_string));
        assert_eq!(
            object["$correlationId"],
            json!(event.metadata.correlation_id.to_string())
        );
        assert_eq!(
            object["$causationId"],
            json!(event.metadata.causation_id.to_string())
        );
        assert_eq!(object["schema_version"], json!("3"));
        let text = object["recorded_at"].as_str().unwrap();
        assert!(text.ends_with('Z') && text.len() == "2026-05-04T10:11:12.123456Z".len());
        assert_eq!(out.id, event.event_id);
        assert_eq!(out.event_type, "message_posted");
    }

    #[test]
    fn recorded_time_keeps_microseconds_exactly() {
        let stream = StreamId::parse("district-d1").unwrap();
        let back = round_trip(&stream, (0, hash::GENESIS), &[new_event("x", 1, json!(1))]);
        assert_eq!(
            back[0].recorded_at,
            hash::storable_time(back[0].recorded_at)
        );
        assert_eq!(hash::recompute(&back[0]), back[0].hash);
    }

    #[test]
    fn events_not_written_by_the_adapter_are_corrupt_not_guessed() {
        let ns = ns();
        let good = encode(
            &new_event("x", 1, json!(1)),
            hash::storable_time(Utc::now()),
            hash::GENESIS.into(),
            "00".repeat(32),
        );
        let base = stored("t1_district-d1", 4, &good, 800);
        let is_corrupt = |raw: &RawEvent, why: &str| match decode(&ns, raw) {
            Err(StoreError::Corrupt {
                stream, version, ..
            }) => {
                assert_eq!(stream, raw.stream, "{why}: names the stream");
                assert_eq!(version, 5, "{why}: names the version (revision + 1)");
            }
            other => panic!("{why}: expected Corrupt, got {other:?}"),
        };
        assert!(decode(&ns, &base).is_ok());
        let mut raw = base.clone();
        raw.metadata = b"{}".to_vec();
        is_corrupt(&raw, "no Homeroom metadata");
        raw = base.clone();
        raw.metadata = Vec::new();
        is_corrupt(&raw, "empty metadata");
        raw = base.clone();
        raw.data = b"not json".to_vec();
        is_corrupt(&raw, "data is not JSON");
        raw = base.clone();
        raw.stream = "district-d1".into();
        is_corrupt(&raw, "outside the prefix");
        raw = base.clone();
        raw.position = kurrentdb::Position {
            commit: u64::MAX,
            prepare: u64::MAX,
        };
        is_corrupt(&raw, "no $all position");
        raw = base;
        let mut meta: serde_json::Value = serde_json::from_slice(&raw.metadata).unwrap();
        meta["schema_version"] = json!("one");
        raw.metadata = serde_json::to_vec(&meta).unwrap();
        is_corrupt(&raw, "schema version is not a number");
    }
}
