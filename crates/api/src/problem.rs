//! Every error the API answers with, and the one place it becomes an HTTP response.
//!
//! An [`ApiError`] knows its stable machine `code` and its HTTP status; `IntoResponse`
//! turns it into an RFC 9457 `application/problem+json` body ([`Problem`]). Internal
//! failures are logged with a reference id and answered with that id only, never with
//! their details.

use crate::auth::AuthError;
use crate::import::ImportError;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use homeroom_app::{CommandError, CommandParseError, QueryError};
use homeroom_domain::Command;
use homeroom_eventstore::StoreError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use uuid::Uuid;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document, as every error is answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:homeroom:problem:{code}`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// A short summary of the kind of problem, the same for every occurrence of `code`.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong this time, for a person to read.
    pub detail: String,
    /// The stable machine code (`not_permitted`, `recipient_too_young`, `validation`, …).
    pub code: String,
}

/// Why a request body is not a command body.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Nothing was sent.
    #[error("the request body is empty; send the command's fields as a JSON object")]
    Empty,
    /// The bytes are not JSON.
    #[error("the request body is not valid JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// A key appears twice in one object: read as the last by some and the first by
    /// others, so refused rather than guessed.
    #[error("the key {field:?} is given twice; give each field once")]
    RepeatedKey {
        /// Where, as `a.b[0].c`.
        field: String,
    },
    /// JSON, but not an object.
    #[error("the request body must be a JSON object of the command's fields")]
    NotAnObject,
    /// The body could not be read off the connection.
    #[error("the request body could not be read")]
    Unreadable,
}

/// Everything a request can end in besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No token, or one that does not verify.
    #[error(transparent)]
    Unauthenticated(#[from] AuthError),
    /// The body is not a JSON object.
    #[error(transparent)]
    Body(#[from] BodyError),
    /// An unknown command name, or a body that does not fit the command.
    #[error(transparent)]
    Parse(#[from] CommandParseError),
    /// The body does not fit the command; `field` is where (e.g. `contact_points[0].channel`).
    #[error("{command}: {field}: {source}")]
    Field {
        /// The command's name.
        command: &'static str,
        /// The path of the offending field.
        field: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// The `Idempotency-Key` header is not a UUID.
    #[error("the Idempotency-Key header must be a UUID, got {value:?}")]
    IdempotencyKey {
        /// What was sent (lossily decoded).
        value: String,
    },
    /// The command service refused or failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The query service refused or failed.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// A provider's webhook was refused (signature, form).
    #[error(transparent)]
    Webhook(#[from] crate::webhooks::WebhookRefusal),
    /// The query string does not fit the endpoint (an unknown parameter, a wrong type).
    #[error("the query string is malformed: {}", .0.body_text())]
    QueryString(#[source] QueryRejection),
    /// A path segment is not what the route expects (e.g. an id that is not a UUID).
    #[error("the path is malformed: {}", .0.body_text())]
    PathSegment(#[source] PathRejection),
    /// A CSV file that cannot be imported at all (its header, its encoding).
    #[error(transparent)]
    Import(#[from] ImportError),
    /// The body is larger than the route accepts.
    #[error("the request body is larger than {limit} bytes")]
    TooLarge {
        /// The route's limit in bytes.
        limit: usize,
    },
    /// The request did not complete in time.
    #[error("the request did not complete within {} s; retry it with the same Idempotency-Key", after.as_secs())]
    TimedOut {
        /// The route's time limit.
        after: Duration,
    },
    /// The event store does not answer.
    #[error("the event store is not reachable")]
    StoreUnavailable(#[source] StoreError),
    /// No route at this path.
    #[error("no resource at {path}; see GET /openapi.json")]
    NotFound {
        /// The path asked for.
        path: String,
    },
    /// The path exists, the method does not.
    #[error("this method is not allowed here; see GET /openapi.json")]
    MethodNotAllowed,
    /// A request the server cannot interpret, refused by a layer below the handlers.
    #[error("the request is malformed")]
    BadRequest,
    /// The body's media type is not one the route reads.
    #[error("this route does not accept that content type")]
    UnsupportedMediaType,
    /// The person has as many live streams open as they may.
    #[error(transparent)]
    TooManyStreams(#[from] homeroom_app::live::TooManyFeeds),
    /// A bug: a handler panicked. Logged; the client learns only a reference.
    #[error("a request handler panicked")]
    Panic,
}

impl ApiError {
    /// The stable machine code of the error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "unauthenticated",
            Self::Body(_)
            | Self::Field { .. }
            | Self::IdempotencyKey { .. }
            | Self::Import(_)
            | Self::QueryString(_)
            | Self::PathSegment(_)
            | Self::BadRequest => "validation",
            Self::Parse(CommandParseError::UnknownCommand { .. }) => "unknown_command",
            Self::Parse(CommandParseError::Body { .. }) => "validation",
            Self::Command(e) => e.code(),
            Self::Query(e) => e.code(),
            Self::Webhook(e) => e.code(),
            Self::TooLarge { .. } => "too_large",
            Self::TooManyStreams(_) => "too_many_streams",
            Self::TimedOut { .. } | Self::StoreUnavailable(_) => "unavailable",
            Self::NotFound { .. } => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Panic => "internal",
        }
    }

    /// The HTTP status the error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => status_of_code(self.code()),
        }
    }

    /// The problem document this error answers with. Internal failures are logged here,
    /// with a fresh reference id that the document carries instead of their details.
    pub fn problem(&self) -> Problem {
        let code = self.code();
        let status = self.status();
        let detail = match self {
            Self::Parse(CommandParseError::UnknownCommand { name }) => format!(
                "unknown command {name:?}; known commands: {}",
                Command::API_NAMES.join(", ")
            ),
            Self::Command(CommandError::Rejected(refusal)) => refusal.to_string(),
            Self::Command(CommandError::Store(StoreError::Closed)) => {
                "the server is shutting down; retry the request with the same Idempotency-Key"
                    .to_owned()
            }
            // Nothing failed: the views are behind. Say so, so the caller retries.
            Self::Query(stale @ QueryError::Stale { .. }) => stale.to_string(),
            // A store or database that does not answer: the caller should retry.
            _ if code == "unavailable" && !matches!(self, Self::TimedOut { .. }) => {
                let reference = Uuid::now_v7();
                tracing::warn!(%reference, error = %self, source = ?std::error::Error::source(self), "a store did not answer");
                format!("a database the server needs did not answer; retry the request with the same Idempotency-Key (reference {reference})")
            }
            _ if status.is_server_error() => {
                let reference = Uuid::now_v7();
                tracing::error!(%reference, error = %self, source = ?std::error::Error::source(self), "request failed");
                format!("the server failed to handle the request; reference {reference}")
            }
            other => other.to_string(),
        };
        Problem {
            problem_type: format!("urn:homeroom:problem:{code}"),
            title: title_of_code(code).to_owned(),
            status: status.as_u16(),
            detail,
            code: code.to_owned(),
        }
    }

    /// The error a bare status answered by a layer below the handlers stands for, so
    /// those answers get a problem document too.
    pub fn from_status(status: StatusCode, path: &str, limits: &crate::Limits) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::NotFound {
                path: path.to_owned(),
            },
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => Self::TooLarge {
                limit: limits.body_limit_for(path),
            },
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType,
            // The timeout layer is the only layer that answers 503 on its own.
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => Self::TimedOut {
                after: limits.timeout_for(path),
            },
            s if s.is_server_error() => Self::Panic,
            _ => Self::BadRequest,
        }
    }
}

/// The HTTP status of a stable error code.
pub fn status_of_code(code: &str) -> StatusCode {
    match code {
        "validation" => StatusCode::BAD_REQUEST,
        "unauthenticated" => StatusCode::UNAUTHORIZED,
        "not_permitted" | "invalid_signature" => StatusCode::FORBIDDEN,
        "unknown_command"
        | "unknown_person"
        | "unknown_conversation"
        | "unknown_delivery"
        | "unknown_school"
        | "unknown_role"
        | "not_found" => StatusCode::NOT_FOUND,
        "method_not_allowed" => StatusCode::METHOD_NOT_ALLOWED,
        "version_conflict" | "idempotency_key_reused" | "already_exists" => StatusCode::CONFLICT,
        "too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "too_many_streams" => StatusCode::TOO_MANY_REQUESTS,
        "unsupported_media_type" => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "internal" => StatusCode::INTERNAL_SERVER_ERROR,
        "unavailable" | "stale" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

/// The fixed title of a stable error code.
fn title_of_code(code: &str) -> &'static str {
    match code {
        "validation" => "The request is malformed",
        "unauthenticated" => "A valid bearer token is required",
        "not_permitted" => "Not permitted",
        "invalid_signature" => "The request's signature does not verify",
        "unknown_command" => "Unknown command",
        "unknown_person" => "Unknown person",
        "unknown_conversation" => "Unknown conversation",
        "unknown_delivery" => "Unknown delivery",
        "unknown_school" => "Unknown school",
        "unknown_role" => "Unknown role",
        "not_found" => "Not found",
        "method_not_allowed" => "Method not allowed",
        "version_conflict" => "Too many concurrent changes",
        "idempotency_key_reused" => "Idempotency key already used for another request",
        "already_exists" => "Already exists",
        "too_large" => "Request body too large",
        "too_many_streams" => "Too many open streams",
        "unsupported_media_type" => "Unsupported media type",
        "internal" => "Internal error",
        "unavailable" => "Service unavailable",
        "stale" => "Read model not caught up",
        _ => "Refused by a rule",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let status = self.status();
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if matches!(self, Self::Query(QueryError::Stale { .. })) || self.code() == "unavailable" {
            // A stale read's wait already lasted `STALE_AFTER`, and a store that did not
            // answer has been waited for too: a second later is a fair retry.
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is never read, so the connection cannot carry another
            // request: say so, or a client reusing it fails its next request.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_read_says_so_and_when_to_retry() {
        let stale = ApiError::Query(QueryError::Stale {
            position: homeroom_eventstore::Position::at(42),
        });
        assert_eq!(stale.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            stale.problem().detail.contains("not caught up"),
            "{}",
            stale.problem().detail
        );
        let response = stale.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn every_listed_code_has_its_status() {
        for (code, status) in [
            ("validation", 400),
            ("unauthenticated", 401),
            ("not_permitted", 403),
            ("unknown_person", 404),
            ("unknown_conversation", 404),
            ("unknown_delivery", 404),
            ("unknown_school", 404),
            ("unknown_role", 404),
            ("unknown_command", 404),
            ("version_conflict", 409),
            ("idempotency_key_reused", 409),
            ("already_exists", 409),
            ("too_large", 413),
            ("recipient_too_young", 422),
            ("conversation_stopped", 422),
            ("internal", 500),
            ("unavailable", 503),
        ] {
            assert_eq!(status_of_code(code).as_u16(), status, "{code}");
        }
    }

    #[test]
    fn an_unknown_command_lists_every_known_name() {
        let problem = ApiError::Parse(CommandParseError::UnknownCommand {
            name: "EditMessage".into(),
        })
        .problem();
        assert_eq!(problem.status, 404);
        for name in Command::API_NAMES {
            assert!(problem.detail.contains(name), "{name} missing");
        }
    }

    #[test]
    fn a_store_or_database_that_does_not_answer_is_503_unavailable_not_a_bug() {
        let io = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        for err in [
            ApiError::Command(CommandError::Store(StoreError::unavailable(io()))),
            ApiError::Query(QueryError::Store(StoreError::unavailable(io()))),
            ApiError::Query(QueryError::ReadModel(
                homeroom_projections::QueryError::Database(sqlx::Error::PoolTimedOut),
            )),
        ] {
            let problem = err.problem();
            assert_eq!(
                (problem.status, problem.code.as_str()),
                (503, "unavailable")
            );
            assert!(problem.detail.contains("retry"), "{}", problem.detail);
            assert!(!problem.detail.contains("refused"), "{}", problem.detail);
            assert_eq!(err.into_response().headers()[header::RETRY_AFTER], "1");
        }
        // A wrong query is still a bug.
        let bug = ApiError::Query(QueryError::ReadModel(
            homeroom_projections::QueryError::Database(sqlx::Error::RowNotFound),
        ));
        assert_eq!(bug.problem().code, "internal");
    }

    #[test]
    fn internal_details_never_reach_the_client() {
        let err = ApiError::Command(CommandError::Store(StoreError::Corrupt {
            stream: "secret-stream".into(),
            version: 3,
            reason: "disk says no".into(),
        }));
        let problem = err.problem();
        assert_eq!((problem.status, problem.code.as_str()), (500, "internal"));
        assert!(!problem.detail.contains("secret") && !problem.detail.contains("disk"));
    }
}
