//! The edge between domain events and stored events: names, schema versions, JSON, and
//! upcasting of old shapes on read.

use homeroom_domain::Event;
use homeroom_eventstore::{EventMetadata, NewEvent, RecordedEvent};
use uuid::Uuid;

/// Why a stored event could not become a domain event.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The stored shape version is newer than this version of Homeroom knows.
    #[error("unknown schema version {schema_version} of event type {event_type}")]
    UnknownType {
        /// The stored name.
        event_type: String,
        /// The stored shape version.
        schema_version: u32,
    },
    /// The stored name is unknown, or its data does not fit the event's shape after
    /// upcasting.
    #[error("event {event_type} v{schema_version} does not fit its shape: {source}")]
    Shape {
        /// The stored name.
        event_type: String,
        /// The stored shape version.
        schema_version: u32,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
}

/// A domain event as the store will record it, with a fresh UUID v7 id.
pub fn encode(event: &Event, metadata: EventMetadata) -> NewEvent {
    let tagged = serde_json::to_value(event).expect("domain events always serialise to JSON");
    let data = tagged
        .get("data")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: event.name().to_owned(),
        schema_version: event.schema_version(),
        data,
        metadata,
    }
}

/// The domain event a stored event says, upcast to the current shape first.
///
/// # Errors
/// [`CodecError`] when the type is unknown or the data does not fit.
pub fn decode(recorded: &RecordedEvent) -> Result<Event, CodecError> {
    decode_parts(
        &recorded.event_type,
        recorded.schema_version,
        recorded.data.clone(),
    )
}

/// Like [`decode`], from the stored name, shape version and data.
///
/// # Errors
/// [`CodecError`] when the type is unknown or the data does not fit.
pub fn decode_parts(
    event_type: &str,
    schema_version: u32,
    data: serde_json::Value,
) -> Result<Event, CodecError> {
    let data = upcast(event_type, schema_version, data)?;
    let tagged = serde_json::json!({ "type": event_type, "data": data });
    serde_json::from_value(tagged).map_err(|source| CodecError::Shape {
        event_type: event_type.to_owned(),
        schema_version,
        source,
    })
}

/// Brings an old shape of an event up to the current one.
///
/// Every event is at schema version 1 today, so nothing needs changing yet; a future
/// version adds a match arm here (`("message_posted", 1) => …`) and a stored sample in
/// `tests/samples/` that proves the old shape still loads.
fn upcast(
    event_type: &str,
    schema_version: u32,
    data: serde_json::Value,
) -> Result<serde_json::Value, CodecError> {
    match schema_version {
        1 => Ok(data),
        _ => Err(CodecError::UnknownType {
            event_type: event_type.to_owned(),
            schema_version,
        }),
    }
}
