//! Stored events back into domain events, for projectors.
//!
//! This is the same decoding as `homeroom_app::codec::decode` (`{"type": event_type,
//! "data": data}` into [`homeroom_domain::Event`], after upcasting old shapes). It lives
//! here because the app depends on projections, not the other way round; the app's
//! codec can later call this one so that upcasters are written once.

use homeroom_domain::Event;
use homeroom_eventstore::{Position, RecordedEvent};
use serde::de::value::MapDeserializer;
use serde::Deserialize;
use std::borrow::Cow;

/// Why a stored event could not become a domain event. Decoding is deterministic, so
/// retrying never helps: the runtime parks the projector at such an event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The stored shape version is newer than this version of Homeroom knows.
    #[error("unknown schema version {schema_version} of event type {event_type} at {position}")]
    UnknownVersion {
        /// The stored name.
        event_type: String,
        /// The stored shape version.
        schema_version: u32,
        /// Where the event is in the log.
        position: Position,
    },
    /// The stored name is unknown, or the data does not fit the event's shape.
    #[error("event {event_type} v{schema_version} at {position} does not fit its shape: {source}")]
    Shape {
        /// The stored name.
        event_type: String,
        /// The stored shape version.
        schema_version: u32,
        /// Where the event is in the log.
        position: Position,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
}

/// The domain event a stored event says, upcast to the current shape first.
///
/// The data is read in place (no copy of the JSON document), which matters when a
/// rebuild decodes the whole log.
///
/// # Errors
/// [`DecodeError`] when the type or shape version is unknown or the data does not fit.
pub fn decode(recorded: &RecordedEvent) -> Result<Event, DecodeError> {
    let data = upcast(recorded)?;
    let tag = serde_json::Value::String(recorded.event_type.clone());
    let fields = [("type", &tag), ("data", data.as_ref())];
    let map = MapDeserializer::<_, serde_json::Error>::new(fields.into_iter());
    Event::deserialize(map).map_err(|source| DecodeError::Shape {
        event_type: recorded.event_type.clone(),
        schema_version: recorded.schema_version,
        position: recorded.position,
        source,
    })
}

/// Brings an old shape of an event up to the current one. Every event is at schema
/// version 1 today; a new shape adds a match arm here, as in the app's codec.
fn upcast(recorded: &RecordedEvent) -> Result<Cow<'_, serde_json::Value>, DecodeError> {
    match recorded.schema_version {
        1 => Ok(Cow::Borrowed(&recorded.data)),
        _ => Err(DecodeError::UnknownVersion {
            event_type: recorded.event_type.clone(),
            schema_version: recorded.schema_version,
            position: recorded.position,
        }),
    }
}
