//! Errors of this adapter, and the mapping of sqlx errors onto the port's [`StoreError`].

use homeroom_eventstore::{StoreError, StreamId};
use uuid::Uuid;

/// Why [`crate::PgStore::connect`] failed: kept apart from [`StoreError`] because a bad
/// schema name or a failed migration is a deployment problem, not a store operation's.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Schema names are restricted so they never need quoting (see
    /// [`crate::PgStoreConfig::schema`]).
    #[error("{0:?} is not a usable schema name: use 1-63 of [a-z0-9_], not starting with a digit or pg_")]
    BadSchema(String),
    /// The database URL could not be parsed.
    #[error("bad database url: {0}")]
    BadUrl(#[source] sqlx::Error),
    /// PostgreSQL could not be reached or refused a setup statement.
    #[error("cannot set up the event store: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed (or the schema holds migrations this build does not know).
    #[error("event store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// An append carried an event id that is already stored in another stream (or a batch
/// whose first event id is new repeated a stored id later on).
///
/// Event ids are unique across the whole log, so such a batch cannot be recorded; it is
/// not an idempotent retry either (that needs the *first* id stored in the *same*
/// stream). The port has no variant for it, so it travels inside
/// [`StoreError::Unavailable`]; it is a caller's bug, not worth retrying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an event id of this batch for {stream} is already stored in the log (first id {first_event_id})")]
pub struct DuplicateEventId {
    /// The stream the batch was meant for.
    pub stream: StreamId,
    /// The batch's first event id.
    pub first_event_id: Uuid,
}

/// [`crate::PgStore::append_in`] was given a transaction that obtained its id before the
/// stream's latest event was committed by a younger transaction.
///
/// Recording the batch would put it before that event in delivery order while it comes
/// after it in the stream. The caller must roll back and append in a new transaction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("append to {stream} in transaction {tx_id}, older than {head_tx_id} which wrote the stream's head: roll back and retry in a new transaction")]
pub struct OutOfOrderAppend {
    /// The stream appended to.
    pub stream: StreamId,
    /// The caller's transaction id.
    pub tx_id: u64,
    /// The transaction that wrote the stream's current head.
    pub head_tx_id: u64,
}

/// Maps an engine error onto the port: a closed pool is [`StoreError::Closed`], anything
/// else [`StoreError::Unavailable`].
pub(crate) fn store_error(err: sqlx::Error) -> StoreError {
    match err {
        sqlx::Error::PoolClosed => StoreError::Closed,
        other => StoreError::unavailable(other),
    }
}

/// The name of the unique constraint an error violated, if it is a unique violation
/// (SQLSTATE 23505, read from the error's fields, never from its text).
pub(crate) fn unique_violation(err: &sqlx::Error) -> Option<UniqueKey> {
    let db = err.as_database_error()?;
    if !db.is_unique_violation() {
        return None;
    }
    Some(match db.constraint() {
        Some("events_stream_version") => UniqueKey::StreamVersion,
        Some("events_event_id") => UniqueKey::EventId,
        _ => UniqueKey::Other,
    })
}

/// Which key a concurrent or repeated append collided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UniqueKey {
    /// Someone else recorded the version this append wanted.
    StreamVersion,
    /// An event id of the batch is already stored.
    EventId,
    /// Any other unique key (none today).
    Other,
}
