//! `GET /v1/stream`: server-sent events for the acting person, from the process's one
//! [`homeroom_app::live::LiveHub`].
//!
//! - `ready` first, with the position the stream is live from as its id;
//! - `reset` when a client came back too far behind for its missed events to be replayed
//!   (or read too slowly): live from the head again, and the client reloads its views;
//! - `message` when a message is posted in a conversation the person takes part in (by
//!   anyone, SMS replies included), `delivery` when a delivery of a message they wrote
//!   becomes `sent`, `delivered` or `failed` (staff only: a family member writing in a
//!   group is not told how the other families were reached). Their data is JSON naming
//!   the conversation, message, delivery, status and position; their id is the position;
//! - `roles_changed` when the person's roles change, and the stream ends: the client
//!   reconnects with its last event id, and the new stream follows the roles as they are;
//! - at most [`homeroom_app::live::MAX_FEEDS_PER_PERSON`] streams per person per
//!   process (`429 too_many_streams` beyond);
//! - a `keep-alive` comment every [`ApiState::stream_keep_alive`](crate::ApiState);
//! - `Last-Event-ID: <position>` resumes after that position, so a client that
//!   reconnects misses nothing;
//! - the stream ends when the server shuts down ([`crate::serve`] closes the hub) or the
//!   store fails; the client reconnects with its last event id.
//!
//! Only the caller's district, and only people: a service has no stream of its own.

use crate::auth::Caller;
use crate::problem::ApiError;
use crate::state::ApiState;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use homeroom_app::live::{DeliveryNotice, MessageNotice, RolesNotice, Update};
use homeroom_app::QueryError;
use homeroom_eventstore::Position;
use schemars::{JsonSchema, SchemaGenerator};
use serde::Serialize;
use serde_json::{json, Value};
use std::convert::Infallible;

/// The request header an SSE client sends back with the id of the last event it got.
pub static LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// The data of the `ready` and `reset` events.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct PositionData {
    /// `ready` (the stream is live) or `reset` (it was too far behind to replay what it
    /// missed: reload what you show).
    #[serde(rename = "type")]
    pub kind: String,
    /// Everything after this position will be sent (also the event's id).
    #[schemars(schema_with = "crate::commands::position_schema")]
    pub position: Value,
}

/// Reads `Last-Event-ID`, if sent.
fn resume_after(headers: &HeaderMap) -> Result<Option<Position>, ApiError> {
    let Some(value) = headers.get(&LAST_EVENT_ID) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| ApiError::BadRequest)?.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| ApiError::BadRequest)
}

fn marker(kind: &str, position: Position) -> Event {
    let data = PositionData {
        kind: kind.into(),
        position: position.token(),
    };
    Event::default()
        .event(kind)
        .id(position.to_string())
        .data(serde_json::to_string(&data).unwrap_or_default())
}

fn event(update: Update) -> Event {
    match update {
        Update::Ready { position } => marker("ready", position),
        Update::Reset { position } => marker("reset", position),
        Update::Notice(notice) => Event::default()
            .event(notice.kind())
            .id(notice.position().to_string())
            .data(serde_json::to_string(&notice).unwrap_or_default()),
    }
}

/// `GET /v1/stream`.
pub(crate) async fn stream(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if caller.actor.person_id().is_none() {
        return Err(QueryError::NotPermitted("a service has no stream of its own").into());
    }
    let after = resume_after(&headers)?;
    let caller_expiry = caller.expires_at;
    let listener = state
        .queries
        .listener(&crate::queries::reader(caller))
        .await?;
    // The stream ends when the token runs out; the client reconnects with a fresh one
    // (and `Last-Event-ID`), so nothing is missed.
    let expired = match caller_expiry {
        Some(at) => {
            let left = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            futures::future::Either::Left(tokio::time::sleep(left))
        }
        None => futures::future::Either::Right(std::future::pending()),
    };
    // A place among the person's open streams, held for as long as this one is open.
    let slot = state
        .live
        .admit(&listener)
        .map_err(ApiError::TooManyStreams)?;
    let feed = state.live.subscribe(listener, after);
    let events = feed
        .map(move |item| {
            let _held = &slot;
            item
        })
        .take_until(expired)
        .take_while(|item| {
            if let Err(error) = item {
                tracing::warn!(%error, "a live stream ended early; the client reconnects");
            }
            std::future::ready(item.is_ok())
        })
        .filter_map(|item| std::future::ready(item.ok().map(|u| Ok::<_, Infallible>(event(u)))));
    let keep_alive = KeepAlive::new()
        .interval(state.stream_keep_alive)
        .text("keep-alive");
    let mut response = Sse::new(events).keep_alive(keep_alive).into_response();
    // Proxies that buffer responses (nginx) would hold the events back.
    response.headers_mut().insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    Ok(response)
}

/// The OpenAPI operation of `GET /v1/stream` (error answers are added by
/// [`crate::openapi`]), and the error statuses it answers with.
pub(crate) fn operation(
    generator: &mut SchemaGenerator,
) -> (&'static str, Value, Vec<(&'static str, &'static str)>) {
    let marker = generator.subschema_for::<PositionData>().to_value();
    // Each notice's data also names its event (`"type": "message"`).
    let named = |name: &str, schema: Value| {
        json!({"allOf": [schema, {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"const": name}}
        }]})
    };
    let message = named(
        "message",
        generator.subschema_for::<MessageNotice>().to_value(),
    );
    let delivery = named(
        "delivery",
        generator.subschema_for::<DeliveryNotice>().to_value(),
    );
    let roles = named(
        "roles_changed",
        generator.subschema_for::<RolesNotice>().to_value(),
    );
    let operation = json!({"get": {
        "operationId": "Stream",
        "tags": ["reads"],
        "summary": "Server-sent events for the caller: new messages in their conversations and status changes of their messages' deliveries.",
        "description": "`text/event-stream`. First a `ready` event; then `message` (a message posted in a conversation the caller takes part in, by anyone, SMS replies included), `delivery` (a delivery of a message the caller wrote became sent, delivered or failed; staff only) and `roles_changed` (the caller's roles changed: the stream ends, reconnect with `Last-Event-ID` and the new stream follows the new roles) events, whose data is the JSON in `x-sse-events` (a `type` field names it too) and whose id is the event's position. A `:keep-alive` comment comes every 15 s. Reconnect with `Last-Event-ID` to resume after that position without loss; a client too far behind, or resuming from a position this log never handed out (beyond its head, or in another engine's shape), gets a `reset` event instead (live from the head again: reload what you show). The stream ends when the server shuts down or the token expires (reconnect with a fresh one and `Last-Event-ID`).",
        "security": [{"bearer": []}],
        "parameters": [{
            "name": "Last-Event-ID", "in": "header", "required": false,
            "description": "The id of the last event received: the stream resumes after that position.",
            "schema": {"type": "string"}
        }],
        "responses": {"200": {
            "description": "The event stream, open until the client leaves or the server shuts down.",
            "content": {"text/event-stream": {
                "schema": {"type": "string"},
                "x-sse-events": {"ready": marker, "reset": marker, "message": message, "delivery": delivery, "roles_changed": roles}
            }}
        }}
    }});
    let errors = vec![
        (
            "400",
            "`Last-Event-ID` is not a position (code `validation`).",
        ),
        (
            "401",
            "No token, or one that does not verify (code `unauthenticated`).",
        ),
        (
            "403",
            "A service token: only people have a stream (code `not_permitted`).",
        ),
        (
            "429",
            "The caller has as many streams open as a person may (code `too_many_streams`): close one.",
        ),
    ];
    ("/v1/stream", operation, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_event_id_is_a_position_token() {
        let mut headers = HeaderMap::new();
        assert_eq!(resume_after(&headers).unwrap(), None);
        headers.insert(&LAST_EVENT_ID, HeaderValue::from_static(" 42 "));
        assert_eq!(resume_after(&headers).unwrap(), Some(Position::at(42)));
        let paired = Position {
            commit: 7,
            sequence: 9,
        };
        headers.insert(
            &LAST_EVENT_ID,
            HeaderValue::from_str(&paired.to_string()).unwrap(),
        );
        assert_eq!(resume_after(&headers).unwrap(), Some(paired));
        headers.insert(&LAST_EVENT_ID, HeaderValue::from_static("nope"));
        assert_eq!(resume_after(&headers).unwrap_err().code(), "validation");
    }

    #[test]
    fn the_served_document_lists_the_stream_with_its_event_schemas() {
        let doc = crate::openapi::document();
        let op = &doc["paths"]["/v1/stream"]["get"];
        let events = &op["responses"]["200"]["content"]["text/event-stream"]["x-sse-events"];
        for (event, schema) in [
            ("message", "MessageNotice"),
            ("delivery", "DeliveryNotice"),
            ("roles_changed", "RolesNotice"),
        ] {
            let parts = &events[event]["allOf"];
            assert_eq!(parts[0]["$ref"], format!("#/components/schemas/{schema}"));
            assert_eq!(
                parts[1]["properties"]["type"]["const"], event,
                "the data names it"
            );
        }
        let delivery = &doc["components"]["schemas"]["DeliveryNotice"]["properties"];
        for field in [
            "conversation_id",
            "message_id",
            "delivery_id",
            "status",
            "position",
        ] {
            assert!(delivery[field].is_object(), "{field}");
        }
        assert_eq!(op["parameters"][0]["name"], "Last-Event-ID");
        assert!(op["responses"]["401"].is_object());
    }
}
