//! What a command can end in besides success.

use crate::codec::DecodeError;
use homeroom_domain::DomainError;
use homeroom_eventstore::{ExpectedVersion, StoreError};
use uuid::Uuid;

/// Why a command recorded nothing. A rule's refusal is kept apart from a failure: the
/// first is the caller's to fix, the second the operator's.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A product rule refused the command; its code is the API's error code.
    #[error("refused: {0}")]
    Rejected(#[from] DomainError),
    /// Other writers kept changing the stream; every retry lost the race.
    #[error("stream {stream} moved on: expected {expected}, found version {actual}")]
    Conflict {
        /// The contended stream.
        stream: String,
        /// The version the last attempt expected.
        expected: ExpectedVersion,
        /// The version the store reported.
        actual: u64,
    },
    /// The command id was already used for a different command.
    #[error("command id {command_id} was already used for a different request")]
    IdempotencyKeyReused {
        /// The reused id.
        command_id: Uuid,
    },
    /// The event store failed.
    #[error("event store: {0}")]
    Store(#[source] StoreError),
    /// A stored event could not be read back.
    #[error("stored event unreadable: {0}")]
    Codec(#[from] DecodeError),
}

impl From<StoreError> for CommandError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict {
                stream,
                expected,
                actual,
            } => Self::Conflict {
                stream: stream.to_string(),
                expected,
                actual,
            },
            other => Self::Store(other),
        }
    }
}

impl CommandError {
    /// The stable machine code an API answers with.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Rejected(e) => e.code(),
            Self::Conflict { .. } => "version_conflict",
            Self::IdempotencyKeyReused { .. } => "idempotency_key_reused",
            // The store does not answer (down, unreachable, its pool exhausted): worth
            // retrying with the same key, not a bug.
            Self::Store(StoreError::Closed | StoreError::Unavailable(_)) => "unavailable",
            Self::Store(_) | Self::Codec(_) => "internal",
        }
    }
}
