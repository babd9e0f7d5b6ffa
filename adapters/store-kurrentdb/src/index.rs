//! The adapter's two indexes: where each batch went, by its first event id and by each
//! command id it carries.
//!
//! KurrentDB can look an event up by stream and revision, but not by event id or by
//! command id, and it cannot write two streams atomically. So before every append the
//! adapter writes an *intent* (an [`IndexEntry`]: the stream, the revision the batch
//! is meant to start at, and its event ids) to
//!
//! - `{prefix}homeroom_index.batch-{first event id}`, and
//! - `{prefix}homeroom_index.command-{command id}` for each command id in the batch,
//!
//! and only then appends the batch itself, expecting exactly that revision. An entry is
//! believed only after checking it: the stream is read at the entry's revision and the
//! event ids must be the entry's. An entry whose append lost a race or never happened
//! (a crash in between) points at other events, or at none, and is ignored.
//!
//! Because the intent is durable before the batch can exist, a retried command finds
//! its first attempt as soon as that attempt's append is acknowledged (or, if the
//! acknowledgement was lost, as soon as the batch is readable): there is no window in
//! which the batch is stored but not findable. Index streams are outside every
//! category, so `$all` reads and subscriptions never see them.

use crate::codec::{Outgoing, RawEvent};
use crate::error::{unavailable, KurrentStoreError};
use crate::store::Inner;
use homeroom_eventstore::{AppendResult, NewEvent, StoreError, StreamId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use uuid::Uuid;

/// The event type of index entries.
pub(crate) const ENTRY_TYPE: &str = "homeroom_index_entry";

/// Where one batch was meant to go.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct IndexEntry {
    /// The Homeroom stream.
    pub stream: String,
    /// The revision of the batch's first event.
    pub revision: u64,
    /// The batch's event ids, in order.
    pub event_ids: Vec<Uuid>,
}

impl IndexEntry {
    /// The entry for `events` appended to `stream` after version `head_version`.
    pub(crate) fn new(stream: &StreamId, head_version: u64, events: &[NewEvent]) -> Self {
        Self {
            stream: stream.as_str().to_owned(),
            revision: head_version,
            event_ids: events.iter().map(|e| e.event_id).collect(),
        }
    }

    /// The entry as an event of an index stream.
    pub(crate) fn to_outgoing(&self) -> Outgoing {
        Outgoing {
            id: Uuid::now_v7(),
            event_type: ENTRY_TYPE.to_owned(),
            data: serde_json::to_value(self).unwrap_or(serde_json::Value::Null),
            metadata: serde_json::json!({}),
        }
    }

    /// Whether `events`, read from the entry's stream at its revision, are the batch.
    pub(crate) fn matches(&self, events: &[RawEvent]) -> bool {
        events.len() == self.event_ids.len()
            && events
                .iter()
                .zip(&self.event_ids)
                .enumerate()
                .all(|(i, (e, id))| e.id == *id && e.revision == self.revision + i as u64)
    }
}

/// Every distinct entry of an index stream (none when it does not exist).
pub(crate) async fn entries(inner: &Inner, index: &str) -> Result<Vec<IndexEntry>, StoreError> {
    let raw = inner
        .backend
        .read_stream(index, 0, usize::MAX)
        .await
        .map_err(unavailable)?;
    let mut entries = BTreeSet::new();
    for event in raw {
        if event.event_type != ENTRY_TYPE {
            continue;
        }
        let entry: IndexEntry =
            serde_json::from_slice(&event.data).map_err(|e| KurrentStoreError::BadIndexEntry {
                stream: index.to_owned(),
                reason: e.to_string(),
            })?;
        entries.insert(entry);
    }
    Ok(entries.into_iter().collect())
}

/// The stored events an entry points at, when they are the entry's batch.
pub(crate) async fn landed(
    inner: &Inner,
    entry: &IndexEntry,
) -> Result<Option<Vec<RawEvent>>, StoreError> {
    let Ok(stream) = StreamId::parse(entry.stream.as_str()) else {
        return Ok(None);
    };
    let events = inner
        .backend
        .read_stream(
            &inner.ns.stream_name(&stream),
            entry.revision,
            entry.event_ids.len(),
        )
        .await
        .map_err(unavailable)?;
    Ok(entry.matches(&events).then_some(events))
}

/// The result a batch starting with `first_id` was recorded with in `stream`, if it was.
///
/// # Errors
/// [`KurrentStoreError::DuplicateEventId`] when that id starts a batch stored in another
/// stream; [`StoreError::Unavailable`] when the server fails.
pub(crate) async fn recorded_batch(
    inner: &Inner,
    stream: &StreamId,
    first_id: Uuid,
) -> Result<Option<AppendResult>, StoreError> {
    for entry in entries(inner, &inner.ns.batch_index(first_id)).await? {
        if entry.event_ids.first() != Some(&first_id) {
            continue;
        }
        let Some(events) = landed(inner, &entry).await? else {
            continue;
        };
        if entry.stream != stream.as_str() {
            return Err(KurrentStoreError::DuplicateEventId {
                stream: stream.clone(),
                first_event_id: first_id,
            }
            .into());
        }
        return Ok(events.last().map(|last| AppendResult {
            version: last.revision + 1,
            position: crate::position::from_kurrent(last.position),
        }));
    }
    Ok(None)
}

/// Writes the intents of a batch: one entry in its first event's index and one in each
/// of its commands' indexes, concurrently.
pub(crate) async fn write_intents(
    inner: &Inner,
    stream: &StreamId,
    head_version: u64,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    let entry = IndexEntry::new(stream, head_version, events);
    let commands: BTreeSet<Uuid> = events.iter().map(|e| e.metadata.command_id).collect();
    let mut targets: Vec<String> = entry
        .event_ids
        .first()
        .map(|first| inner.ns.batch_index(*first))
        .into_iter()
        .collect();
    targets.extend(commands.into_iter().map(|c| inner.ns.command_index(c)));
    let writes = targets.iter().map(|index| {
        inner.backend.append(
            index,
            kurrentdb::StreamState::Any,
            vec![entry.to_outgoing()],
        )
    });
    futures::future::try_join_all(writes)
        .await
        .map_err(unavailable)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(revision: u64, id: Uuid) -> RawEvent {
        RawEvent {
            stream: "district-d".into(),
            revision,
            id,
            event_type: "x".into(),
            data: b"1".to_vec(),
            metadata: b"{}".to_vec(),
            position: kurrentdb::Position {
                commit: 1,
                prepare: 1,
            },
        }
    }

    #[test]
    fn an_entry_is_believed_only_where_its_batch_is() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let entry = IndexEntry {
            stream: "district-d".into(),
            revision: 3,
            event_ids: vec![a, b],
        };
        assert!(entry.matches(&[raw(3, a), raw(4, b)]));
        assert!(
            !entry.matches(&[raw(3, a)]),
            "half a batch is not the batch"
        );
        assert!(!entry.matches(&[]), "nothing landed");
        assert!(
            !entry.matches(&[raw(3, Uuid::now_v7()), raw(4, b)]),
            "someone else's events took that revision"
        );
        assert!(!entry.matches(&[raw(4, a), raw(5, b)]), "another revision");
    }

    #[test]
    fn entries_travel_as_json_events_outside_the_log() {
        let entry = IndexEntry {
            stream: "conversation-d:c".into(),
            revision: 0,
            event_ids: vec![Uuid::now_v7()],
        };
        let out = entry.to_outgoing();
        assert_eq!(out.event_type, ENTRY_TYPE);
        let back: IndexEntry = serde_json::from_slice(&out.data_bytes()).unwrap();
        assert_eq!(back, entry);
        assert_ne!(out.id, entry.to_outgoing().id, "each intent is a new event");
    }
}
