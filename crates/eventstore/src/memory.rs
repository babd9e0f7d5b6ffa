//! The in-memory reference store: the contract in its simplest form, for unit tests and
//! as the yardstick the conformance kit is written against.

use crate::hash;
use crate::subscription::{catch_up_then_live, CommitSignal};
use crate::{
    AppendResult, EventAppender, EventReader, EventStream, EventSubscriber, ExpectedVersion,
    NewEvent, Position, RecordedEvent, StoreError, StreamId,
};
use async_trait::async_trait;
use chrono::Utc;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use uuid::Uuid;

#[derive(Default)]
struct Log {
    /// Every event in delivery order; `events[i]` has sequence `i + 1`.
    events: Vec<RecordedEvent>,
    /// Indexes into `events`, per stream, in version order.
    streams: HashMap<StreamId, Vec<usize>>,
    /// For every stored event, keyed by its stream and id, the result of the batch it was
    /// appended in: what a retry of that batch gets back.
    batches: HashMap<(StreamId, Uuid), AppendResult>,
}

/// An event store held in memory. Clones share one log.
#[derive(Clone, Default)]
pub struct InMemoryStore {
    log: Arc<Mutex<Log>>,
    signal: CommitSignal,
}

impl InMemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Overwrites one stored event's data without fixing its hash, as an attacker with
    /// access to the storage would. Test support for the conformance kit.
    ///
    /// # Panics
    /// When the event does not exist.
    pub fn tamper(&self, stream: &StreamId, version: u64, data: serde_json::Value) {
        let mut log = self.log();
        let index = log.streams[stream][(version - 1) as usize];
        log.events[index].data = data;
    }
}

#[async_trait]
impl EventAppender for InMemoryStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        self.append_with_facts(stream, expected, events, &[]).await
    }

    async fn append_with_facts(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        facts: &[(StreamId, u64)],
    ) -> Result<AppendResult, StoreError> {
        let first_id = events.first().ok_or(StoreError::EmptyAppend)?.event_id;
        let result = {
            let mut log = self.log();
            if let Some(original) = log.batches.get(&(stream.clone(), first_id)) {
                return Ok(*original);
            }
            for (fact, version) in facts {
                let actual = log.streams.get(fact).map_or(0, |i| i.len() as u64);
                if actual != *version {
                    return Err(StoreError::Conflict {
                        stream: fact.clone(),
                        expected: ExpectedVersion::from_version(*version),
                        actual,
                    });
                }
            }
            let indexes = log.streams.get(stream);
            let actual = indexes.map_or(0, |i| i.len() as u64);
            if !expected.admits(actual) {
                return Err(StoreError::Conflict {
                    stream: stream.clone(),
                    expected,
                    actual,
                });
            }
            let prev_hash = indexes
                .and_then(|i| i.last())
                .map_or_else(|| hash::GENESIS.to_owned(), |&i| log.events[i].hash.clone());
            let recorded_at = hash::storable_time(Utc::now());
            let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
            let links: Vec<_> =
                hash::chain_batch(stream, actual, &prev_hash, &events, recorded_at).collect();
            let mut version = actual;
            for (event, link) in events.into_iter().zip(links) {
                version = link.version;
                let position = Position::at(log.events.len() as u64 + 1);
                let index = log.events.len();
                log.events.push(RecordedEvent {
                    event_id: event.event_id,
                    stream: stream.clone(),
                    version,
                    position,
                    event_type: event.event_type,
                    schema_version: event.schema_version,
                    data: event.data,
                    metadata: event.metadata,
                    recorded_at,
                    prev_hash: link.prev_hash,
                    hash: link.hash,
                });
                log.streams.entry(stream.clone()).or_default().push(index);
            }
            let result = AppendResult {
                version,
                position: Position::at(log.events.len() as u64),
            };
            for id in ids {
                log.batches.insert((stream.clone(), id), result);
            }
            result
        };
        self.signal.notify();
        Ok(result)
    }

    fn checks_facts(&self) -> bool {
        true
    }
}

#[async_trait]
impl EventReader for InMemoryStore {
    async fn read_stream(
        &self,
        stream: &StreamId,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let log = self.log();
        Ok(log
            .streams
            .get(stream)
            .map(|indexes| {
                indexes
                    .iter()
                    .skip(after_version as usize)
                    .take(limit)
                    .map(|&i| log.events[i].clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let log = self.log();
        let start = after.sequence as usize;
        Ok(log.events.iter().skip(start).take(limit).cloned().collect())
    }

    async fn stream_versions(&self, streams: &[StreamId]) -> Result<Vec<u64>, StoreError> {
        let log = self.log();
        Ok(streams
            .iter()
            .map(|s| log.streams.get(s).map_or(0, |i| i.len() as u64))
            .collect())
    }

    async fn find_command(&self, command_id: Uuid) -> Result<Vec<RecordedEvent>, StoreError> {
        let log = self.log();
        Ok(log
            .events
            .iter()
            .filter(|e| e.metadata.command_id == command_id)
            .cloned()
            .collect())
    }

    async fn head(&self) -> Result<Position, StoreError> {
        Ok(Position::at(self.log().events.len() as u64))
    }
}

impl EventSubscriber for InMemoryStore {
    fn subscribe_all(&self, after: Position) -> EventStream {
        catch_up_then_live(Arc::new(self.clone()), &self.signal, after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventMetadata;

    fn event(n: u64) -> NewEvent {
        NewEvent {
            event_id: Uuid::now_v7(),
            event_type: "noted".into(),
            schema_version: 1,
            data: serde_json::json!({ "n": n }),
            metadata: EventMetadata::default(),
        }
    }

    fn stream(name: &str) -> StreamId {
        StreamId::parse(name).unwrap()
    }

    #[tokio::test]
    async fn a_retry_starting_mid_batch_returns_that_batch_and_records_nothing() {
        let store = InMemoryStore::new();
        let s = stream("memory-a");
        let batch = vec![event(1), event(2), event(3)];
        let original = store
            .append(&s, ExpectedVersion::NoStream, batch.clone())
            .await
            .unwrap();
        let retry = store
            .append(&s, ExpectedVersion::NoStream, batch[1..].to_vec())
            .await
            .unwrap();
        assert_eq!(retry, original);
        assert_eq!(store.head().await.unwrap(), Position::at(3));
    }

    #[tokio::test]
    async fn an_id_reused_in_another_stream_does_not_break_retries_in_the_first() {
        let store = InMemoryStore::new();
        let (a, b) = (stream("memory-a"), stream("memory-b"));
        let e = event(1);
        let original = store
            .append(&a, ExpectedVersion::Any, vec![e.clone()])
            .await
            .unwrap();
        store
            .append(&b, ExpectedVersion::Any, vec![e.clone()])
            .await
            .unwrap();
        let retry = store
            .append(&a, ExpectedVersion::Any, vec![e])
            .await
            .unwrap();
        assert_eq!(retry, original);
        assert_eq!(store.stream_versions(&[a, b]).await.unwrap(), vec![1, 1]);
    }

    #[tokio::test]
    async fn tamper_changes_data_but_not_the_hash() {
        let store = InMemoryStore::new();
        let s = stream("memory-a");
        store
            .append(&s, ExpectedVersion::NoStream, vec![event(1), event(2)])
            .await
            .unwrap();
        let before = store.read_stream(&s, 0, 10).await.unwrap();
        store.tamper(&s, 2, serde_json::json!("changed"));
        let after = store.read_stream(&s, 0, 10).await.unwrap();
        assert_eq!(after[1].data, serde_json::json!("changed"));
        assert_eq!(after[1].hash, before[1].hash);
        assert_eq!(hash::verify_stream(&after), vec![2]);
    }
}
