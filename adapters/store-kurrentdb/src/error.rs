//! Errors of this adapter, and how the client's errors map onto the port's
//! [`StoreError`]: by the error's *kind* (its variant and gRPC code), never its text.

use homeroom_eventstore::{ExpectedVersion, StoreError, StreamId};
use kurrentdb::{CurrentRevision, Error as ClientError};
use tonic::Code;
use uuid::Uuid;

/// Why [`crate::KurrentStore::connect`] failed: a deployment problem, kept apart from
/// the [`StoreError`] of store operations.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Only KurrentDB connection strings are accepted (the scheme alone is shown, never
    /// credentials).
    #[error("{scheme}:// is not a KurrentDB connection string: use kurrentdb://, kurrentdb+discover://, esdb:// or esdb+discover://")]
    UnsupportedScheme {
        /// The scheme given.
        scheme: String,
    },
    /// The client refused the connection string (a bad host, port or parameter).
    #[error("bad KurrentDB connection string: {0}")]
    BadUrl(#[source] kurrentdb::ClientSettingsParseError),
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] crate::ConfigError),
    /// The client could not be created.
    #[error("cannot create the KurrentDB client: {0}")]
    Client(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The server did not answer the first read (of `$all`'s last record, which also
    /// checks that the user may read `$all`).
    #[error("KurrentDB did not answer: {0}")]
    Unreachable(#[source] StoreError),
    /// The server did not answer within the configured time.
    #[error("KurrentDB did not answer within {0:?}")]
    Timeout(std::time::Duration),
}

/// What can go wrong in this adapter beyond the client's own errors; it travels inside
/// [`StoreError::Unavailable`], as the port has no variant for it.
#[derive(Debug, thiserror::Error)]
pub enum KurrentStoreError {
    /// The client or the server failed.
    #[error("KurrentDB: {0}")]
    Client(#[from] ClientError),
    /// Appends go only to streams of the configured categories: events elsewhere would
    /// never reach `read_all` or a subscription.
    #[error("{stream} is not in one of this store's stream categories")]
    OutsideCategories {
        /// The stream appended to.
        stream: StreamId,
    },
    /// A batch carries an event id that is stored in another stream, or twice in itself.
    /// Event ids are unique in the log, so it cannot be recorded, and it is not a retry
    /// either (that needs the first id stored in the *same* stream).
    #[error("an event id of this batch for {stream} is already stored elsewhere or repeated (first id {first_event_id})")]
    DuplicateEventId {
        /// The stream the batch was meant for.
        stream: StreamId,
        /// The batch's first event id.
        first_event_id: Uuid,
    },
    /// The server acknowledged an append, but reading it back found other events where
    /// the batch should be: the stream was changed behind the adapter's back.
    #[error("the append to {stream} was acknowledged but its events are not at version {version}")]
    Unconfirmed {
        /// The stream appended to.
        stream: StreamId,
        /// Where the batch's first event should be.
        version: u64,
    },
    /// An index entry could not be read back.
    #[error("unreadable index entry in {stream}: {reason}")]
    BadIndexEntry {
        /// The index stream.
        stream: String,
        /// What was wrong with it.
        reason: String,
    },
    /// Serialising an event for the client failed.
    #[error("cannot encode an event: {0}")]
    Encode(#[from] serde_json::Error),
}

impl From<KurrentStoreError> for StoreError {
    fn from(err: KurrentStoreError) -> Self {
        StoreError::unavailable(err)
    }
}

/// Any client error as the port's [`StoreError::Unavailable`].
pub(crate) fn unavailable(err: ClientError) -> StoreError {
    KurrentStoreError::Client(err).into()
}

/// The stream's version when the server refused an expectation: the error's *kind*
/// [`ClientError::WrongExpectedVersion`], whatever its message says.
pub(crate) fn wrong_expected_version(err: &ClientError) -> Option<u64> {
    match err {
        ClientError::WrongExpectedVersion { current, .. } => Some(version_of(*current)),
        _ => None,
    }
}

/// A KurrentDB current revision as a Homeroom version (revisions count from 0).
pub(crate) fn version_of(current: CurrentRevision) -> u64 {
    match current {
        CurrentRevision::NoStream => 0,
        CurrentRevision::Current(revision) => revision.saturating_add(1),
    }
}

/// An append's failure on the port: a wrong expected version is
/// [`StoreError::Conflict`] (with the stream's actual version), anything else
/// [`StoreError::Unavailable`].
pub(crate) fn append_error(
    err: ClientError,
    stream: &StreamId,
    expected: ExpectedVersion,
) -> StoreError {
    match wrong_expected_version(&err) {
        Some(actual) => StoreError::Conflict {
            stream: stream.clone(),
            expected,
            actual,
        },
        None => unavailable(err),
    }
}

/// Whether a dropped subscription is worth reopening: lost connections, leader changes,
/// server-side timeouts and "consumer too slow" (gRPC `ABORTED`) are; refused
/// credentials, unsupported features and malformed requests are not.
pub(crate) fn is_transient(err: &ClientError) -> bool {
    match err {
        ClientError::ServerError(_)
        | ClientError::NotLeaderException(_)
        | ClientError::ConnectionClosed
        | ClientError::GrpcConnectionError(_)
        | ClientError::DeadlineExceeded => true,
        ClientError::Grpc { code, .. } => matches!(
            code,
            Code::Aborted
                | Code::Unavailable
                | Code::Cancelled
                | Code::DeadlineExceeded
                | Code::ResourceExhausted
                | Code::Internal
                | Code::Unknown
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kurrentdb::StreamState;

    fn stream() -> StreamId {
        StreamId::parse("conversation-d1:c").unwrap()
    }

    fn grpc(code: Code) -> ClientError {
        ClientError::Grpc {
            code,
            message: "whatever the server says".into(),
        }
    }

    #[test]
    fn a_wrong_expected_version_is_a_conflict_with_the_actual_version() {
        let err = ClientError::WrongExpectedVersion {
            expected: StreamState::StreamRevision(2),
            current: CurrentRevision::Current(4),
        };
        match append_error(err, &stream(), ExpectedVersion::Exact(3)) {
            StoreError::Conflict {
                stream: s,
                expected,
                actual,
            } => {
                assert_eq!(s, stream());
                assert_eq!(
                    expected,
                    ExpectedVersion::Exact(3),
                    "Homeroom's expectation"
                );
                assert_eq!(actual, 5, "revision 4 is version 5");
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        let missing = ClientError::WrongExpectedVersion {
            expected: StreamState::StreamRevision(0),
            current: CurrentRevision::NoStream,
        };
        assert!(matches!(
            append_error(missing, &stream(), ExpectedVersion::Exact(1)),
            StoreError::Conflict { actual: 0, .. }
        ));
    }

    #[test]
    fn every_other_error_is_unavailable() {
        let others = [
            ClientError::ConnectionClosed,
            ClientError::AccessDenied,
            ClientError::DeadlineExceeded,
            ClientError::ResourceDeleted,
            ClientError::ServerError("boom".into()),
            ClientError::InternalParsingError("x".into()),
            grpc(Code::InvalidArgument),
            // A message that talks about versions is still not the conflict kind.
            ClientError::ServerError("WrongExpectedVersion: expected 1, got 2".into()),
        ];
        for err in others {
            let shown = err.to_string();
            match append_error(err, &stream(), ExpectedVersion::Any) {
                StoreError::Unavailable(source) => {
                    assert!(
                        source.to_string().contains(&shown),
                        "{shown} is kept as the source"
                    )
                }
                other => panic!("{shown} must be Unavailable, got {other:?}"),
            }
        }
    }

    #[test]
    fn current_revisions_are_versions() {
        assert_eq!(version_of(CurrentRevision::NoStream), 0);
        assert_eq!(version_of(CurrentRevision::Current(0)), 1);
        assert_eq!(version_of(CurrentRevision::Current(u64::MAX)), u64::MAX);
    }

    #[test]
    fn dropped_subscriptions_are_reopened_only_for_passing_failures() {
        for err in [
            grpc(Code::Aborted), // "consumer too slow"
            grpc(Code::Unavailable),
            grpc(Code::Cancelled),
            ClientError::ConnectionClosed,
            ClientError::ServerError("restarting".into()),
            ClientError::DeadlineExceeded,
            ClientError::NotLeaderException(kurrentdb::Endpoint {
                host: "node2".into(),
                port: 2113,
            }),
        ] {
            assert!(is_transient(&err), "{err} is worth a resubscription");
        }
        for err in [
            ClientError::AccessDenied,
            ClientError::UnsupportedFeature,
            ClientError::ResourceNotFound,
            grpc(Code::InvalidArgument),
            grpc(Code::PermissionDenied),
            grpc(Code::Unauthenticated),
        ] {
            assert!(!is_transient(&err), "{err} will not pass by itself");
        }
    }
}
