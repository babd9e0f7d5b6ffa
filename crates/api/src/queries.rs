//! The read endpoints of API.md: inboxes, threads and their export, a student's record,
//! oversight and the audit trail. Each takes `?min_position=P` to read its own writes
//! (a 503 `stale` after 5 s), and is answered by `homeroom_app::QueryService`, which
//! decides what the caller may see.

use crate::auth::Caller;
use crate::problem::ApiError;
use crate::state::ApiState;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use homeroom_app::queries::{InboxBox, VerifyReport};
use homeroom_app::views::{
    AuditFilter, ConversationExport, OversightFilter, PageRequest, EXPORT_MEDIA_TYPE,
};
use homeroom_app::Reader;
use homeroom_domain::{ConversationId, PersonId, SchoolId};
use homeroom_eventstore::Position;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
use std::num::NonZeroU32;
use uuid::Uuid;

/// A position token in a query string: a number, or an order-preserving string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PositionParam(pub Position);

impl<'de> Deserialize<'de> for PositionParam {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.trim()
            .parse()
            .map(PositionParam)
            .map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for PositionParam {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PositionToken".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A position from a command result (a number, or a string where the engine needs one), passed back unchanged.",
            "type": "string",
            "pattern": "^[0-9]{1,20}(-[0-9]{1,20})?$"
        })
    }
}

/// `?min_position=`, shared by every read.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadParams {
    /// Wait until the read models have applied this position (read your own writes);
    /// 503 `stale` when they have not after 5 s.
    pub min_position: Option<PositionParam>,
}

/// Which inbox tab (`GET /v1/inbox?box=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BoxParam {
    /// The caller's own conversations.
    #[default]
    Personal,
    /// The shared inboxes of the schools where the caller holds `school_inbox`.
    School,
}

/// `GET /v1/inbox`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InboxParams {
    /// `personal` (default) or `school`.
    #[serde(rename = "box", default)]
    pub tab: BoxParam,
    /// The archive tab instead of the main one (default false).
    #[serde(default)]
    pub archived: bool,
    /// With `box=school`: one school's inbox only.
    pub school_id: Option<Uuid>,
    /// Conversations per page (default 50, at most 500).
    pub limit: Option<NonZeroU32>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
    /// Read your writes: wait until the read models have applied this position (a
    /// command's `position`), or answer 503 `stale` after 5 s.
    pub min_position: Option<PositionParam>,
}

/// `GET /v1/students/{id}/messages`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    /// Items per page (default 50, at most 500).
    pub limit: Option<NonZeroU32>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
    /// Read your writes: wait until the read models have applied this position (a
    /// command's `position`), or answer 503 `stale` after 5 s.
    pub min_position: Option<PositionParam>,
}

/// `GET /v1/oversight/conversations`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OversightParams {
    /// One school only (it must be within the caller's oversight).
    pub school_id: Option<Uuid>,
    /// Text found, case-insensitively, in a title, a message or a participant's name.
    pub q: Option<String>,
    /// Conversations this person takes part in.
    pub participant_id: Option<Uuid>,
    /// With a message sent at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// With a message sent before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Conversations per page (default 50, at most 500).
    pub limit: Option<NonZeroU32>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
    /// Read your writes: wait until the read models have applied this position (a
    /// command's `position`), or answer 503 `stale` after 5 s.
    pub min_position: Option<PositionParam>,
}

/// `GET /v1/audit`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Events of this stream only (`conversation-{district}:{id}`, …).
    pub stream: Option<String>,
    /// Events by this actor only (a person's id, or `system:{service}`).
    pub actor: Option<String>,
    /// Recorded at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Recorded before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// After this position: the `next` of the previous page.
    pub after: Option<PositionParam>,
    /// Events per page (default 100, at most 1000).
    pub limit: Option<NonZeroU32>,
    /// Read your writes: wait until the read models have applied this position (a
    /// command's `position`), or answer 503 `stale` after 5 s.
    pub min_position: Option<PositionParam>,
}

/// The export's file format (`GET /v1/conversations/{id}/export?format=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// JSON Lines: a `conversation` line, then one `message` line per message.
    #[default]
    Jsonl,
    /// One JSON document.
    Json,
    /// CSV, one row per message and recipient (for spreadsheets).
    Csv,
}

/// `GET /v1/conversations/{id}/export`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// `jsonl` (default), `json` or `csv`.
    #[serde(default)]
    pub format: ExportFormat,
    /// Read your writes: wait until the read models have applied this position (a
    /// command's `position`), or answer 503 `stale` after 5 s.
    pub min_position: Option<PositionParam>,
}

fn params<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query.map(|Query(p)| p).map_err(ApiError::QueryString)
}

fn path_id(id: Result<Path<Uuid>, PathRejection>) -> Result<Uuid, ApiError> {
    id.map(|Path(id)| id).map_err(ApiError::PathSegment)
}

/// `limit=0` is refused (400 `validation`) by its type: a page holds at least one item.
fn page(limit: Option<NonZeroU32>, cursor: Option<String>) -> PageRequest {
    PageRequest {
        limit: limit.map_or(0, NonZeroU32::get),
        cursor,
    }
}

pub(crate) fn reader(caller: Caller) -> Reader {
    Reader {
        district: caller.district,
        actor: caller.actor,
    }
}

fn min(position: Option<PositionParam>) -> Option<Position> {
    position.map(|p| p.0)
}

/// `GET /v1/inbox`.
pub(crate) async fn inbox(
    State(state): State<ApiState>,
    caller: Caller,
    query: Result<Query<InboxParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = params(query)?;
    let tab = match p.tab {
        BoxParam::Personal => InboxBox::Personal,
        BoxParam::School => InboxBox::School,
    };
    let inbox = state
        .queries
        .inbox(
            &reader(caller),
            tab,
            p.school_id.map(SchoolId::new),
            p.archived,
            &page(p.limit, p.cursor),
            min(p.min_position),
        )
        .await?;
    Ok(Json(inbox).into_response())
}

/// `GET /v1/conversations/{id}`.
pub(crate) async fn conversation(
    State(state): State<ApiState>,
    caller: Caller,
    id: Result<Path<Uuid>, PathRejection>,
    query: Result<Query<ReadParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let p = params(query)?;
    let conversation = state
        .queries
        .conversation(
            &reader(caller),
            ConversationId::new(id),
            min(p.min_position),
        )
        .await?;
    Ok(Json(conversation).into_response())
}

/// `GET /v1/conversations/{id}/export`.
pub(crate) async fn export(
    State(state): State<ApiState>,
    caller: Caller,
    id: Result<Path<Uuid>, PathRejection>,
    query: Result<Query<ExportParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let p = params(query)?;
    let export = state
        .queries
        .export(
            &reader(caller),
            ConversationId::new(id),
            min(p.min_position),
        )
        .await?;
    let (media_type, extension, body) = match p.format {
        ExportFormat::Jsonl => (EXPORT_MEDIA_TYPE, "jsonl", export.to_json_lines()),
        ExportFormat::Json => (
            "application/json",
            "json",
            serde_json::to_string_pretty(&export).map_err(|_| ApiError::Panic)?,
        ),
        ExportFormat::Csv => ("text/csv; charset=utf-8", "csv", export_csv(&export)?),
    };
    let disposition = format!("attachment; filename=\"conversation-{id}.{extension}\"");
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// The export as CSV, for a spreadsheet: a `participant` row per participant, then a
/// `delivery` row per message and recipient (a message nobody received, such as one in
/// a conversation of one, gets one `message` row without a recipient). A delivery row
/// says whether its recipient has `read` the message; every row carries the
/// conversation's kind and whether it was stopped, and a failed delivery why in
/// `delivery_error`. Last, a `refused_reply` row per SMS reply the conversation kept
/// without posting it, with the reason in `refused_because`.
///
/// A free-text cell that a spreadsheet would run as a formula (starting with `=`, `+`,
/// `-`, `@`, a tab or a carriage return) is written with a leading apostrophe, so opening
/// the file never executes what a family typed; the JSON exports hold the text exactly.
fn export_csv(export: &ConversationExport) -> Result<String, ApiError> {
    let mut out = csv::Writer::from_writer(Vec::new());
    let header = [
        "record",
        "conversation_id",
        "title",
        "message_id",
        "sent_at",
        "author_id",
        "author_name",
        "sent_as",
        "subject",
        "body",
        "person_id",
        "person_name",
        "person_kind",
        "channel",
        "status",
        "status_at",
        "delivered_text",
        "sent_text",
        "translated_to",
        "read",
        "conversation_kind",
        "conversation_stopped",
        "refused_because",
        "delivery_error",
    ];
    let failed = |_| ApiError::Panic;
    out.write_record(header).map_err(failed)?;
    let word = |value: serde_json::Value| value.as_str().map(str::to_owned).unwrap_or_default();
    let text = |value: Option<&str>| spreadsheet_safe(value.unwrap_or_default());
    let title = text(export.title.as_deref());
    let conversation = [
        word(serde_json::to_value(export.kind).unwrap_or_default()),
        export.stopped.to_string(),
        String::new(),
        String::new(),
    ];
    let kind_of = |person: PersonId| {
        export
            .participants
            .iter()
            .find(|p| p.person_id == person)
            .and_then(|p| p.kind)
            .map(|k| word(serde_json::to_value(k).unwrap_or_default()))
            .unwrap_or_default()
    };
    for p in &export.participants {
        let mut row = vec![
            "participant".to_owned(),
            export.conversation_id.to_string(),
            title.clone(),
        ];
        row.extend(std::iter::repeat_n(String::new(), 7));
        row.extend([
            p.person_id.to_string(),
            text(p.name.as_deref()),
            kind_of(p.person_id),
        ]);
        row.extend(std::iter::repeat_n(String::new(), 7));
        row.extend(conversation.iter().cloned());
        out.write_record(&row).map_err(failed)?;
    }
    for message in &export.messages {
        let common = [
            export.conversation_id.to_string(),
            title.clone(),
            message.message_id.to_string(),
            message.sent_at.to_rfc3339(),
            message.author_id.to_string(),
            text(message.author_name.as_deref()),
            word(serde_json::to_value(message.sent_as).unwrap_or_default()),
            text(message.subject.as_deref()),
            text(Some(&message.body)),
        ];
        if message.deliveries.is_empty() {
            let mut row = vec!["message".to_owned()];
            row.extend(common.iter().cloned());
            row.extend(std::iter::repeat_n(String::new(), 10));
            row.extend(conversation.iter().cloned());
            out.write_record(&row).map_err(failed)?;
        }
        for delivery in &message.deliveries {
            let mut row = vec!["delivery".to_owned()];
            row.extend(common.iter().cloned());
            row.extend([
                delivery.recipient_id.to_string(),
                text(delivery.recipient_name.as_deref()),
                kind_of(delivery.recipient_id),
                word(serde_json::to_value(delivery.channel).unwrap_or_default()),
                word(serde_json::to_value(delivery.status).unwrap_or_default()),
                delivery.status_at.to_rfc3339(),
                text(Some(&delivery.text)),
                text(delivery.sent_text.as_deref()),
                delivery.translated_to.clone().unwrap_or_default(),
                message.read_by.contains(&delivery.recipient_id).to_string(),
            ]);
            row.extend(conversation[..3].iter().cloned());
            row.push(text(delivery.error.as_deref()));
            out.write_record(&row).map_err(failed)?;
        }
    }
    // A reply kept without being posted: its sender, text and time, and why.
    for refused in &export.refused_replies {
        let mut row = vec![
            "refused_reply".to_owned(),
            export.conversation_id.to_string(),
            title.clone(),
            String::new(),
            refused.received_at.to_rfc3339(),
            refused.author_id.to_string(),
            text(refused.author_name.as_deref()),
            String::new(),
            String::new(),
            text(Some(&refused.body)),
        ];
        row.extend(std::iter::repeat_n(String::new(), 10));
        row.extend(conversation[..2].iter().cloned());
        row.push(refused.reason.clone());
        row.push(String::new());
        out.write_record(&row).map_err(failed)?;
    }
    let bytes = out.into_inner().map_err(|_| ApiError::Panic)?;
    String::from_utf8(bytes).map_err(|_| ApiError::Panic)
}

/// `text` as a spreadsheet cell that is never run as a formula (OWASP's advice for
/// CSV injection: a leading apostrophe when the cell starts with a formula character).
fn spreadsheet_safe(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

/// `GET /v1/students/{id}/messages`.
pub(crate) async fn student_record(
    State(state): State<ApiState>,
    caller: Caller,
    id: Result<Path<Uuid>, PathRejection>,
    query: Result<Query<PageParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let p = params(query)?;
    let record = state
        .queries
        .student_record(
            &reader(caller),
            PersonId::new(id),
            &page(p.limit, p.cursor),
            min(p.min_position),
        )
        .await?;
    Ok(Json(record).into_response())
}

/// `GET /v1/oversight/conversations`.
pub(crate) async fn oversight(
    State(state): State<ApiState>,
    caller: Caller,
    query: Result<Query<OversightParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = params(query)?;
    let filter = OversightFilter {
        q: p.q.filter(|q| !q.trim().is_empty()),
        participant: p.participant_id.map(PersonId::new),
        since: p.since,
        until: p.until,
    };
    let found = state
        .queries
        .oversight(
            &reader(caller),
            p.school_id.map(SchoolId::new),
            &filter,
            &page(p.limit, p.cursor),
            min(p.min_position),
        )
        .await?;
    Ok(Json(found).into_response())
}

/// `GET /v1/audit`.
pub(crate) async fn audit(
    State(state): State<ApiState>,
    caller: Caller,
    query: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = params(query)?;
    let filter = AuditFilter {
        stream: p.stream,
        actor: p.actor,
        since: p.since,
        until: p.until,
        after: p.after.map(|a| a.0),
        limit: p.limit.map_or(0, NonZeroU32::get),
    };
    let events = state
        .queries
        .audit(&reader(caller), &filter, min(p.min_position))
        .await?;
    Ok(Json(events).into_response())
}

/// `GET /v1/audit/verify`: it reads the event store itself; `min_position` waits as in
/// every read.
pub(crate) async fn verify(
    State(state): State<ApiState>,
    caller: Caller,
    query: Result<Query<ReadParams>, QueryRejection>,
) -> Result<Json<VerifyReport>, ApiError> {
    let p = params(query)?;
    Ok(Json(
        state
            .queries
            .verify(&reader(caller), min(p.min_position))
            .await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_tokens_read_back_from_query_strings() {
        let p: ReadParams = serde_urlencoded::from_str("min_position=42").unwrap();
        assert_eq!(p.min_position, Some(PositionParam(Position::at(42))));
        let paired = Position {
            commit: 7,
            sequence: 9,
        };
        let p: ReadParams = serde_urlencoded::from_str(&format!("min_position={paired}")).unwrap();
        assert_eq!(p.min_position, Some(PositionParam(paired)));
        assert!(serde_urlencoded::from_str::<ReadParams>("min_position=x").is_err());
        assert!(serde_urlencoded::from_str::<ReadParams>("nope=1").is_err());
    }
}
