//! What can go wrong talking to an event store.

use crate::{ExpectedVersion, StreamId};

/// A store failure, kept apart from a rule's refusal (that is the domain's business).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The stream was not at the expected version: someone else appended first.
    #[error("stream {stream} expected {expected} but is at version {actual}")]
    Conflict {
        /// The stream appended to.
        stream: StreamId,
        /// What the writer expected.
        expected: ExpectedVersion,
        /// The stream's version when the append was tried.
        actual: u64,
    },
    /// An append with no events: always a caller's bug.
    #[error("an append needs at least one event")]
    EmptyAppend,
    /// A stored row could not be turned back into an event (corruption or a bad upcast).
    #[error("stored event at {stream} version {version} is unreadable: {reason}")]
    Corrupt {
        /// The stream of the unreadable row.
        stream: String,
        /// Its version.
        version: u64,
        /// What was wrong with it.
        reason: String,
    },
    /// The engine could not be reached or refused the operation.
    #[error("event store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store is shutting down and takes no more work.
    #[error("event store is closed")]
    Closed,
}

impl StoreError {
    /// Wraps an engine error as [`StoreError::Unavailable`].
    pub fn unavailable(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Unavailable(Box::new(err))
    }

    /// Whether this is an optimistic-concurrency conflict (worth retrying after a reload).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }
}
