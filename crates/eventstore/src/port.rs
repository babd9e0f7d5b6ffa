//! The ports, split by role so each caller asks only for what it uses.

use crate::{ExpectedVersion, NewEvent, Position, RecordedEvent, StoreError, StreamId};
use async_trait::async_trait;
use futures::stream::BoxStream;

/// What an append recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// The stream's version after the append (the last appended event's version).
    pub version: u64,
    /// The position of the last appended event.
    pub position: Position,
}

/// A live feed of recorded events in delivery order.
pub type EventStream = BoxStream<'static, Result<RecordedEvent, StoreError>>;

/// Appends events to one stream, atomically.
#[async_trait]
pub trait EventAppender: Send + Sync {
    /// Appends `events` to `stream` if the stream satisfies `expected`, all or nothing.
    ///
    /// Re-appending events whose first event id is already stored (in that stream) records
    /// nothing and returns the original result, whatever `expected` says: this is what
    /// makes a retried command safe.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the stream is not at `expected`;
    /// [`StoreError::EmptyAppend`] for no events; [`StoreError::Unavailable`] otherwise.
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError>;

    /// Like [`EventAppender::append`], but only while each stream in `facts` is still at
    /// the version given: the streams a decision read its facts from. A fact that moved
    /// answers [`StoreError::Conflict`] naming that stream, and nothing is recorded.
    ///
    /// Backends that check facts atomically with the append say so through
    /// [`EventAppender::checks_facts`]. The default ignores `facts`, and callers must
    /// then check them before appending (with [`EventReader::stream_versions`]).
    ///
    /// # Errors
    /// As [`EventAppender::append`].
    async fn append_with_facts(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        facts: &[(StreamId, u64)],
    ) -> Result<AppendResult, StoreError> {
        let _ = facts;
        self.append(stream, expected, events).await
    }

    /// Whether [`EventAppender::append_with_facts`] checks facts atomically with the append.
    fn checks_facts(&self) -> bool {
        false
    }
}

/// Reads what is recorded.
#[async_trait]
pub trait EventReader: Send + Sync {
    /// Up to `limit` events of `stream` with a version greater than `after_version`, in
    /// version order (`after_version = 0` reads from the start).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Corrupt`].
    async fn read_stream(
        &self,
        stream: &StreamId,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Up to `limit` events after `after`, in delivery order, with no gaps: an event not
    /// returned now will never later appear before the last one returned.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Corrupt`].
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The current version of each stream (0 for a stream with no events), in the order
    /// asked. One round trip, so a command can check every fact it rests on is fresh.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn stream_versions(&self, streams: &[StreamId]) -> Result<Vec<u64>, StoreError>;

    /// Every event recorded by the command `command_id`, in stream order (empty when that
    /// command recorded nothing). This is how a retried command finds its first result.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Corrupt`].
    async fn find_command(&self, command_id: uuid::Uuid) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The position of the last event that [`EventReader::read_all`] can deliver now.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn head(&self) -> Result<Position, StoreError>;
}

/// Follows the whole log.
pub trait EventSubscriber: Send + Sync {
    /// Every event after `after`, catching up from the stored log and then following new
    /// appends live, in delivery order, never skipping one. The stream ends only on an
    /// error (after which a subscriber resubscribes from its last position).
    fn subscribe_all(&self, after: Position) -> EventStream;
}

/// A complete event store: what the command service, projectors and the relay need.
pub trait EventStore: EventAppender + EventReader + EventSubscriber {}

impl<T: EventAppender + EventReader + EventSubscriber> EventStore for T {}
