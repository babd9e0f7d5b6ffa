//! `POST /v1/commands/{CommandName}`: one command, decided and recorded, or refused with
//! nothing recorded.

use crate::auth::Caller;
use crate::problem::{ApiError, BodyError};
use crate::state::ApiState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use homeroom_app::{CommandContext, CommandOutcome, CommandParseError};
use homeroom_domain::Command;
use schemars::JsonSchema;
use serde::Serialize;
use std::time::Instant;
use uuid::Uuid;

/// The request header whose UUID becomes the command id.
pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The response header saying the answer is the first result of an earlier request.
pub static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// One event a command recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct RecordedEventRef {
    /// The stream it was appended to (`conversation-{district}:{id}`, …).
    pub stream: String,
    /// Its version in that stream (from 1).
    pub version: u64,
    /// Its stored type name (`message_posted`, …).
    #[serde(rename = "type")]
    pub event_type: String,
}

/// What a successful command answers: what it recorded and the ids it created.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct CommandResult {
    /// The command's id: the Idempotency-Key when one was sent.
    pub command_id: Uuid,
    /// The position of the last event recorded (or of the stream's last event when the
    /// command changed nothing): a number on SQLite, an order-preserving string where the
    /// engine needs one. Pass it back as `min_position` to read your own writes.
    #[schemars(schema_with = "position_schema")]
    pub position: serde_json::Value,
    /// The events recorded, in order (empty when the command changed nothing).
    pub events: Vec<RecordedEventRef>,
    /// The conversation the command started or wrote to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<Uuid>,
    /// The message the command posted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<Uuid>,
    /// One delivery per recipient of the posted message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delivery_ids: Vec<Uuid>,
}

pub(crate) fn position_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "A token of the log's delivery order; compare only for equality and order.",
        "oneOf": [
            {"type": "integer", "minimum": 0},
            {"type": "string"}
        ]
    })
}

impl From<&CommandOutcome> for CommandResult {
    fn from(outcome: &CommandOutcome) -> Self {
        Self {
            command_id: outcome.command_id,
            position: outcome.position.token(),
            events: outcome
                .events
                .iter()
                .map(|e| RecordedEventRef {
                    stream: e.stream.clone(),
                    version: e.version,
                    event_type: e.event_type.clone(),
                })
                .collect(),
            conversation_id: outcome.conversation_id.map(|id| id.as_uuid()),
            message_id: outcome.message_id.map(|id| id.as_uuid()),
            delivery_ids: outcome.delivery_ids.iter().map(|id| id.as_uuid()).collect(),
        }
    }
}

/// The API name of `name` as a `'static` label, if it is a command.
pub(crate) fn known_command(name: &str) -> Option<&'static str> {
    Command::API_NAMES.iter().copied().find(|n| *n == name)
}

/// Parses the body of the API command `name` (as `homeroom_app::parse_command` does),
/// naming the offending field's path when it does not fit.
///
/// # Errors
/// [`ApiError::Field`] (or [`ApiError::Parse`] when no path is known).
pub(crate) fn parse(name: &'static str, body: serde_json::Value) -> Result<Command, ApiError> {
    let mut track = serde_path_to_error::Track::new();
    let deserializer = serde_path_to_error::Deserializer::new(body, &mut track);
    match Command::deserialize_named(name, deserializer) {
        Ok(Some(command)) => Ok(command),
        Ok(None) => Err(CommandParseError::UnknownCommand {
            name: name.to_owned(),
        }
        .into()),
        Err(source) => {
            let field = track.path().to_string();
            Err(if field.is_empty() || field == "." {
                CommandParseError::Body {
                    name: name.to_owned(),
                    source,
                }
                .into()
            } else {
                ApiError::Field {
                    command: name,
                    field,
                    source,
                }
            })
        }
    }
}

/// Reads the `Idempotency-Key` header, if sent.
///
/// # Errors
/// [`ApiError::IdempotencyKey`] when it is not a UUID.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<Uuid>, ApiError> {
    let Some(value) = headers.get(&IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    Uuid::parse_str(text.trim())
        .map(Some)
        .map_err(|_| ApiError::IdempotencyKey {
            value: text.chars().take(64).collect(),
        })
}

/// The bytes of a body, or why there are none.
pub(crate) fn body_bytes(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge { limit }
        } else {
            BodyError::Unreadable.into()
        }
    })
}

/// `POST /v1/commands/{name}`.
pub(crate) async fn post_command(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let Some(label) = known_command(&name) else {
        return Err(CommandParseError::UnknownCommand { name }.into());
    };
    // The command service counts what it decides; a request refused before it gets
    // there is counted here.
    let (ctx, command) = match prepare(&state, caller, label, &headers, body) {
        Ok(prepared) => prepared,
        Err(error) => {
            state.metrics.record(label, error.code(), started.elapsed());
            return Err(error);
        }
    };
    let outcome = state.commands.execute(&ctx, &command).await?;
    let mut response = Json(CommandResult::from(&outcome)).into_response();
    if outcome.replayed {
        response.headers_mut().insert(
            IDEMPOTENT_REPLAYED.clone(),
            HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

/// The command a request carries, in its context, or why it carries none.
fn prepare(
    state: &ApiState,
    caller: Caller,
    name: &'static str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(CommandContext, Command), ApiError> {
    let bytes = body_bytes(body, state.limits.command_body)?;
    let key = idempotency_key(headers)?;
    let command = parse(name, crate::json_body::object(&bytes)?)?;
    let mut ctx = CommandContext::new(caller.district, caller.actor);
    if let Some(key) = key {
        ctx = ctx.with_command_id(key);
    }
    Ok((ctx, command))
}

#[cfg(test)]
mod tests {
    use super::*;
    use homeroom_app::RecordedRef;
    use homeroom_domain::{ConversationId, DeliveryId, MessageId};
    use homeroom_eventstore::Position;

    #[test]
    fn the_result_serialises_exactly_as_the_command_outcome() {
        let outcome = CommandOutcome {
            command_id: Uuid::now_v7(),
            position: Position::at(42),
            events: vec![RecordedRef {
                stream: "conversation-d:1".into(),
                version: 1,
                event_type: "message_posted".into(),
            }],
            conversation_id: Some(ConversationId::new(Uuid::now_v7())),
            message_id: Some(MessageId::new(Uuid::now_v7())),
            delivery_ids: vec![DeliveryId::new(Uuid::now_v7())],
            replayed: false,
        };
        assert_eq!(
            serde_json::to_value(CommandResult::from(&outcome)).unwrap(),
            serde_json::to_value(&outcome).unwrap()
        );
        let bare = CommandOutcome {
            conversation_id: None,
            message_id: None,
            delivery_ids: vec![],
            position: Position {
                commit: 3,
                sequence: 9,
            },
            ..outcome
        };
        assert_eq!(
            serde_json::to_value(CommandResult::from(&bare)).unwrap(),
            serde_json::to_value(&bare).unwrap()
        );
    }

    #[test]
    fn a_misfit_value_is_named_by_its_path() {
        let err = parse(
            "RegisterPerson",
            serde_json::json!({"person_id": Uuid::now_v7(), "kind": "staff", "name": "A", "school_ids": [],
                "contact_points": [{"channel": "fax", "address": "1"}]}),
        )
        .unwrap_err();
        assert_eq!(err.code(), "validation");
        assert!(
            err.to_string().contains("contact_points[0].channel"),
            "{err}"
        );
        let err = parse("StopConversation", serde_json::json!({"extra": 1})).unwrap_err();
        assert!(err.to_string().contains("extra"), "{err}");
    }
}
