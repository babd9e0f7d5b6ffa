//! What can go wrong projecting, querying and waiting.

use crate::codec::DecodeError;
use homeroom_eventstore::{Position, StoreError};
use std::time::Duration;

/// A failure while building read models: retried with backoff when it may pass
/// ([`ProjectionError::is_transient`]), otherwise the projector is parked at the event.
/// Never swallowed.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// Reading the event log failed.
    #[error("reading the event log failed: {0}")]
    Store(#[from] StoreError),
    /// The read-model database failed.
    #[error("read-model database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored event is not a domain event this version understands.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The event contradicts what the projector already holds (e.g. a message for a
    /// conversation it never saw start): a bug or a damaged log, never retried away.
    #[error("projector {projector} cannot apply the {event_type} event at {position}: {reason}")]
    Inconsistent {
        /// The projector.
        projector: &'static str,
        /// The event's stored name.
        event_type: String,
        /// Where the event is in the log.
        position: Position,
        /// What did not fit.
        reason: &'static str,
    },
    /// A number does not fit an integer column.
    #[error("a value is out of range for the read-model database")]
    OutOfRange,
    /// A PostgreSQL schema name that would need quoting (see
    /// [`crate::PgReadConfig::schema`]).
    #[error("{0:?} is not a usable schema name: use 1-63 of [a-z0-9_], not starting with a digit or pg_")]
    BadSchema(String),
    /// A rebuild or status request named no registered projector.
    #[error("no projector is named {0:?}")]
    UnknownProjector(String),
    /// Two projectors were registered under one name.
    #[error("two projectors are named {0:?}")]
    DuplicateProjector(&'static str),
    /// A rebuild gave up on an event after retrying; its half-built generation is kept
    /// and the next rebuild resumes it.
    #[error("rebuilding {projector} stopped at {position}: {source}")]
    RebuildFailed {
        /// The projector.
        projector: String,
        /// The event it could not apply.
        position: Position,
        /// Why.
        #[source]
        source: Box<ProjectionError>,
    },
}

impl ProjectionError {
    /// Whether trying the same batch again later may succeed: an unavailable log or a
    /// busy, full or unreachable database (on PostgreSQL, told by SQLSTATE: lost
    /// connections, deadlocks, serialization failures, lock timeouts, shutdowns).
    /// Decoding errors, inconsistencies and constraint violations are deterministic and
    /// are not.
    pub fn is_transient(&self) -> bool {
        match self {
            ProjectionError::Store(e) => {
                matches!(e, StoreError::Unavailable(_) | StoreError::Closed)
            }
            ProjectionError::Database(e) => database_is_transient(e),
            _ => false,
        }
    }
}

/// Whether a database error may pass if tried again later: the database unreachable,
/// busy or shutting down (on PostgreSQL, told by SQLSTATE), not a wrong query or row.
fn database_is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => crate::db::is_transient(db.as_ref()),
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        _ => false,
    }
}

/// A read-model query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The read-model database failed.
    #[error("read-model database: {0}")]
    Database(#[from] sqlx::Error),
    /// The runtime has not created the read models yet (nothing has opened the
    /// projection runtime on this database).
    #[error("read model {0} is not initialised")]
    NotInitialised(&'static str),
    /// The paging cursor was not one this service handed out.
    #[error("malformed paging cursor")]
    BadCursor,
    /// A stored value could not be read back (a damaged read model: rebuild it).
    #[error("unreadable {0} in the read models")]
    Corrupt(&'static str),
}

impl QueryError {
    /// Whether the read-model database did not answer (unreachable, busy, shutting
    /// down): the API's 503 `unavailable`, worth retrying, not a bug.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, QueryError::Database(e) if database_is_transient(e))
    }
}

/// `wait_for` gave up.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The read models had not applied the position in time (the API's 503 `stale`).
    #[error("the read models had not applied position {position} after {waited:?}")]
    Timeout {
        /// The position waited for.
        position: Position,
        /// How long it waited.
        waited: Duration,
    },
    /// A projector named in the wait is not registered.
    #[error("no projector is named {0:?}")]
    UnknownProjector(String),
}
