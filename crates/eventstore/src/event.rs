//! Events as written and as recorded.

use crate::{Position, StreamId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Who and what caused an event: the trail an auditor follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EventMetadata {
    /// The tenant the event belongs to.
    pub district: String,
    /// The school the event concerns, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub school: Option<String>,
    /// The acting person's id, or a service name (`sis-sync`, `delivery-worker`).
    pub actor: String,
    /// The id shared by every event of one user action and its reactions.
    pub correlation_id: Uuid,
    /// The id of the command or event that directly caused this one.
    pub causation_id: Uuid,
    /// The command that recorded this event.
    pub command_id: Uuid,
    /// SHA-256 (hex) of the command's name and body, so a retried command id can be told
    /// apart from the same id reused for a different request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_digest: Option<String>,
}

/// An event on its way into the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Chosen by the writer (UUID v7); re-appending a stored id is a no-op.
    pub event_id: Uuid,
    /// The stored name, explicit and stable (`conversation_stopped`).
    pub event_type: String,
    /// The shape version of `data`, for upcasting on read.
    pub schema_version: u32,
    /// The event's fields.
    pub data: serde_json::Value,
    /// Who and what caused it.
    pub metadata: EventMetadata,
}

/// An event as the store recorded it: immutable, positioned, hash-chained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// The writer's event id.
    pub event_id: Uuid,
    /// The stream it belongs to.
    pub stream: StreamId,
    /// Its version in the stream (the first event is 1).
    pub version: u64,
    /// Its place in the delivery order of the whole log.
    pub position: Position,
    /// The stored name.
    pub event_type: String,
    /// The shape version of `data`.
    pub schema_version: u32,
    /// The event's fields.
    pub data: serde_json::Value,
    /// Who and what caused it.
    pub metadata: EventMetadata,
    /// When the store recorded it, truncated to microseconds (every engine keeps those).
    pub recorded_at: DateTime<Utc>,
    /// Hex SHA-256 of the previous event of the stream (64 zeros for the first).
    pub prev_hash: String,
    /// Hex SHA-256 chaining this event to `prev_hash` (see [`crate::hash`]).
    pub hash: String,
}

impl RecordedEvent {
    /// Whether `other` is this very event as recorded, field for field, its position
    /// aside: the position is the engine's (another shape after a move to another
    /// engine), not part of what was said. What a copy of the log (an import, an
    /// auditor's export) is compared with the log by.
    pub fn is_same_event_as(&self, other: &RecordedEvent) -> bool {
        self.event_id == other.event_id
            && self.stream == other.stream
            && self.version == other.version
            && self.event_type == other.event_type
            && self.schema_version == other.schema_version
            && self.data == other.data
            && self.metadata == other.metadata
            && self.recorded_at == other.recorded_at
            && self.prev_hash == other.prev_hash
            && self.hash == other.hash
    }
}
