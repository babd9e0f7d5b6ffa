//! The edge between domain events and stored events: names, schema versions, JSON, and
//! upcasting of old shapes on read (the decoding half is the projections' codec,
//! re-exported, so every reader of the log decodes the same way).

use homeroom_domain::Event;
use homeroom_eventstore::{EventMetadata, NewEvent};
use uuid::Uuid;

pub use homeroom_projections::codec::{decode, decode_parts, DecodeError};

/// A domain event as the store will record it, with a fresh UUID v7 id.
pub fn encode(event: &Event, metadata: EventMetadata) -> NewEvent {
    let tagged = serde_json::to_value(event).expect("domain events always serialise to JSON");
    let data = match tagged {
        serde_json::Value::Object(mut fields) => fields.remove("data"),
        _ => None,
    }
    .unwrap_or(serde_json::Value::Null);
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: event.name().to_owned(),
        schema_version: event.schema_version(),
        data,
        metadata,
    }
}
