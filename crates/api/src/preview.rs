//! `POST /v1/preview`: the character counter. The sender's draft of a personal message,
//! rendered for its recipient (merge fields, channel, shared-phone label) and measured
//! as an SMS, or refused with the error sending it would get. Nothing is recorded.
//!
//! The rule is the domain's (`homeroom_domain::preview`), on the facts
//! `homeroom_app::preview::PreviewService` loads as a send would.

use crate::auth::Caller;
use crate::commands::body_bytes;
use crate::problem::ApiError;
use crate::state::ApiState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use homeroom_app::preview::PreviewError;
use homeroom_app::{QueryError, Reader};
use homeroom_domain::preview::{PreviewRequest, Render};
use homeroom_domain::sms::SmsEncoding;
use homeroom_domain::{Channel, PersonId};
use schemars::{JsonSchema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What `POST /v1/preview` takes: the personal message being written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewBody {
    /// Whom it is for: a student aged 13 or over, or a guardian (as `SendPersonalMessage`).
    pub recipient_id: PersonId,
    /// The text with merge fields (`{student_name}`, `{recipient_name}`, `{school_name}`,
    /// `{sender_name}`), as it would be sent.
    pub body: String,
    /// The sender's pick of channel; otherwise the recipient's preference or the
    /// district default decides, as for sending.
    #[serde(default)]
    pub channel: Option<Channel>,
}

/// The message as one recipient would get it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct RenderView {
    /// The recipient.
    pub recipient_id: PersonId,
    /// The channel it would go by.
    pub channel: Channel,
    /// The text as it would go out: merge fields rendered, and `For Dennis: ` before an
    /// SMS to a phone number other people of the district share. In the original
    /// language: delivery translates it into `language`.
    pub text: String,
    /// `GSM-7`, or `UCS-2` when a character is outside GSM-7. Reported for every channel
    /// (an email that bounces falls back to SMS with the same text); only an SMS is
    /// split and billed by it.
    pub encoding: SmsEncoding,
    /// SMS segments: one up to 160 GSM-7 septets or 70 UCS-2 units, else segments of 153
    /// or 67.
    pub segments: usize,
    /// The text's length in the encoding's units (GSM-7 septets, an extension character
    /// such as `€` counting two; UCS-2 UTF-16 units, an emoji counting two).
    pub units: usize,
    /// Whether the text is longer than one SMS may be (1,600 characters,
    /// `sms::too_long_for_sms`): by SMS it would not go out at all, but by the other
    /// channel. Reported for every channel, as the encoding is.
    pub too_long_for_sms: bool,
    /// Whether the shared-phone label leads the text.
    pub shared_phone_label: bool,
    /// The recipient's language.
    pub language: String,
}

impl From<Render> for RenderView {
    fn from(render: Render) -> Self {
        Self {
            recipient_id: render.recipient_id,
            channel: render.channel,
            encoding: render.measure.encoding,
            segments: render.measure.segments,
            units: render.measure.units,
            too_long_for_sms: homeroom_domain::sms::too_long_for_sms(&render.text),
            shared_phone_label: render.labelled,
            language: render.language,
            text: render.text,
        }
    }
}

/// What `POST /v1/preview` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PreviewAnswer {
    /// One render per recipient (a personal message has one).
    pub renders: Vec<RenderView>,
}

impl From<PreviewError> for ApiError {
    fn from(err: PreviewError) -> Self {
        match err {
            PreviewError::Command(e) => ApiError::Command(e),
            PreviewError::PhoneBook(e) => ApiError::Query(QueryError::ReadModel(e)),
        }
    }
}

/// Reads the body as a [`PreviewBody`], naming the offending field when it does not fit.
fn parse(bytes: &[u8]) -> Result<PreviewBody, ApiError> {
    let value = crate::json_body::object(bytes)?;
    let mut track = serde_path_to_error::Track::new();
    let deserializer = serde_path_to_error::Deserializer::new(value, &mut track);
    PreviewBody::deserialize(deserializer).map_err(|source| ApiError::Field {
        command: "Preview",
        field: track.path().to_string(),
        source,
    })
}

/// `POST /v1/preview`.
pub(crate) async fn preview(
    State(state): State<ApiState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PreviewAnswer>, ApiError> {
    let bytes = body_bytes(body, state.limits.command_body)?;
    let body = parse(&bytes)?;
    let reader = Reader {
        district: caller.district,
        actor: caller.actor,
    };
    let request = PreviewRequest {
        recipient_id: body.recipient_id,
        body: body.body,
        channel: body.channel,
    };
    let render = state
        .preview
        .preview(&reader, &request, chrono::Utc::now())
        .await?;
    Ok(Json(PreviewAnswer {
        renders: vec![render.into()],
    }))
}

/// The OpenAPI operation of `POST /v1/preview` (error answers are added by
/// [`crate::openapi`]), and the error statuses it answers with.
pub(crate) fn operation(
    generator: &mut SchemaGenerator,
) -> (&'static str, Value, Vec<(&'static str, &'static str)>) {
    let body = generator.subschema_for::<PreviewBody>().to_value();
    let answer = generator.subschema_for::<PreviewAnswer>().to_value();
    let operation = json!({"post": {
        "operationId": "Preview",
        "tags": ["messaging"],
        "summary": "The character counter: a personal message rendered for its recipient before it is sent.",
        "description": "Renders the body as `SendPersonalMessage` would for the recipient (merge fields, the channel chosen with the sender's pick, the shared-phone label `For Dennis: ` before an SMS to a number other people of the district share) and measures it as an SMS (encoding, segments). Refused exactly as sending would be. Nothing is recorded.",
        "security": [{"bearer": []}],
        "requestBody": {"required": true, "content": {"application/json": {"schema": body}}},
        "responses": {"200": {"description": "The render per recipient.", "content": {"application/json": {"schema": answer}}}}
    }});
    let errors = vec![
        ("400", "Malformed: not a JSON object, an unknown field, a wrong type; an empty or overlong body, or an unknown merge field (code `validation`)."),
        ("401", "No token, or one that does not verify (code `unauthenticated`)."),
        ("403", "The actor may not send personal messages (code `not_permitted`)."),
        ("404", "Unknown recipient, another district's included (code `unknown_person`)."),
        ("413", "The request is larger than 64 KiB (code `too_large`)."),
        ("422", "Sending would be refused: `recipient_too_young`, `recipient_not_reachable`, `blocked_content`, `conversation_stopped`."),
        ("500", "An internal failure (code `internal`)."),
        ("503", "The store is unavailable or the request timed out (code `unavailable`)."),
    ];
    ("/v1/preview", operation, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::BodyError;

    #[test]
    fn a_body_that_does_not_fit_names_its_field() {
        let err = parse(br#"{"recipient_id": "0190c1f6-0000-7000-8000-000000000001", "body": "Hi", "channel": "fax"}"#)
            .unwrap_err();
        assert_eq!(err.code(), "validation");
        assert!(err.to_string().contains("channel"), "{err}");
        let err = parse(br#"{"recipient_id": "0190c1f6-0000-7000-8000-000000000001", "body": "Hi", "subject": "x"}"#)
            .unwrap_err();
        assert!(err.to_string().contains("subject"), "{err}");
        assert!(matches!(parse(b" "), Err(ApiError::Body(BodyError::Empty))));
        assert!(matches!(
            parse(b"[]"),
            Err(ApiError::Body(BodyError::NotAnObject))
        ));
    }

    #[test]
    fn a_render_answers_with_the_binding_field_names() {
        let render = Render {
            recipient_id: PersonId::new(uuid::Uuid::from_u128(7)),
            channel: Channel::Sms,
            address: Some("+15550100001".into()),
            language: "es".into(),
            text: "For Pat: Hi".into(),
            labelled: true,
            measure: homeroom_domain::sms::measure("For Pat: Hi"),
        };
        let view = serde_json::to_value(RenderView::from(render)).unwrap();
        for field in ["recipient_id", "channel", "text", "encoding", "segments"] {
            assert!(view.get(field).is_some(), "{field} in {view}");
        }
        assert_eq!(view["encoding"], "GSM-7");
        assert_eq!(view["segments"], 1);
        assert!(view.get("address").is_none(), "the address is not shown");
        assert_eq!(view["too_long_for_sms"], false);
    }

    #[test]
    fn a_text_longer_than_one_sms_may_be_says_so() {
        let long = format!("{}\n- Principal Skinner", "a".repeat(1590));
        let render = Render {
            recipient_id: PersonId::new(uuid::Uuid::from_u128(7)),
            channel: Channel::Sms,
            address: Some("+15550100001".into()),
            language: "en".into(),
            labelled: false,
            measure: homeroom_domain::sms::measure(&long),
            text: long,
        };
        let view = serde_json::to_value(RenderView::from(render)).unwrap();
        assert_eq!(
            view["too_long_for_sms"], true,
            "the signature pushes it over"
        );
        assert_eq!(view["segments"], 11);
    }

    #[test]
    fn the_served_document_lists_the_preview_with_its_schemas() {
        let doc = crate::openapi::document();
        let op = &doc["paths"]["/v1/preview"]["post"];
        assert_eq!(
            op["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/PreviewBody"
        );
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["PreviewBody"]["required"],
            json!(["recipient_id", "body"])
        );
        let render = &schemas["RenderView"];
        for field in ["recipient_id", "channel", "text", "encoding", "segments"] {
            assert!(render["properties"][field].is_object(), "{field}");
        }
        for status in ["200", "400", "404", "422"] {
            assert!(op["responses"][status].is_object(), "{status}");
        }
    }
}
