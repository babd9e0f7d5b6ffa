//! Stored events back into domain events, for projectors.
//!
//! `{"type": event_type, "data": data}` into [`homeroom_domain::Event`], after upcasting
//! old shapes. It lives here, not in the app, because the app depends on projections;
//! `homeroom_app::codec` re-exports it, so there is one decoder and one set of
//! upcasters.

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
    decode_parts(
        &recorded.event_type,
        recorded.schema_version,
        &recorded.data,
        recorded.position,
    )
}

/// Like [`decode`], from the stored name, shape version and data of the event at
/// `position` (which only the error names). Every reader of the log (projectors, the
/// command service, the delivery workers) decodes through here, so an old shape needs
/// one upcaster.
///
/// # Errors
/// As [`decode`].
pub fn decode_parts(
    event_type: &str,
    schema_version: u32,
    data: &serde_json::Value,
    position: Position,
) -> Result<Event, DecodeError> {
    let data = upcast(event_type, schema_version, data, position)?;
    let tag = serde_json::Value::String(event_type.to_owned());
    let fields = [("type", &tag), ("data", data.as_ref())];
    let map = MapDeserializer::<_, serde_json::Error>::new(fields.into_iter());
    Event::deserialize(map).map_err(|source| DecodeError::Shape {
        event_type: event_type.to_owned(),
        schema_version,
        position,
        source,
    })
}

/// Brings an old shape of an event up to the current one.
///
/// Every event is at schema version 1 today, so nothing needs changing yet; a future
/// version adds a match arm here (`("message_posted", 1) => …`, returning an owned,
/// rewritten document) and a stored sample in `tests/samples/` that proves the old shape
/// still loads.
fn upcast<'a>(
    event_type: &str,
    schema_version: u32,
    data: &'a serde_json::Value,
    position: Position,
) -> Result<Cow<'a, serde_json::Value>, DecodeError> {
    match schema_version {
        1 => Ok(Cow::Borrowed(data)),
        _ => Err(DecodeError::UnknownVersion {
            event_type: event_type.to_owned(),
            schema_version,
            position,
        }),
    }
}
