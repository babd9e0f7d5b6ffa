//! The SMS provider's webhooks: `POST /v1/webhooks/twilio/inbound` (a text arrived) and
//! `POST /v1/webhooks/twilio/status` (a message's status changed). They carry no token:
//! the provider's signature over the full URL and the form authenticates them, and
//! anything else is refused with 403 before it is read.
//!
//! The signed URL is `HOMEROOM_PUBLIC_URL` followed by the path and query the request
//! came to (without a public URL: `http://` and the request's `Host`), exactly what the
//! provider was told to call.

use crate::problem::ApiError;
use crate::state::ApiState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use homeroom_channels::webhooks::{FormField, SmsWebhooks, WebhookError};
use homeroom_delivery::inbound::{InboundSms, IncomingSms};
use homeroom_delivery::status::{StatusCallbacks, StatusReport};
use homeroom_domain::{DeliveryId, DistrictId, ProviderMessageId};
use std::sync::Arc;

/// What the webhooks need: the provider's port and the services that record.
#[derive(Clone)]
pub struct Webhooks {
    /// Reads and verifies what the provider posts.
    pub provider: Arc<dyn SmsWebhooks>,
    /// Records and routes inbound texts.
    pub inbound: InboundSms,
    /// Records status callbacks.
    pub status: StatusCallbacks,
    /// `HOMEROOM_PUBLIC_URL`: the base the provider calls.
    pub public_url: Option<String>,
}

/// Why a webhook was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookRefusal {
    /// No provider is configured to verify webhooks with.
    #[error("no SMS provider is configured to verify webhooks (set HOMEROOM_SMS=twilio and HOMEROOM_TWILIO_AUTH_TOKEN)")]
    NotConfigured,
    /// The signature header is missing or does not sign this request.
    #[error("the request's signature does not verify")]
    BadSignature,
    /// The form is not a form, or lacks a field the provider always sends.
    #[error("the webhook's form is unreadable: {0}")]
    Form(#[source] WebhookError),
    /// The status callback URL does not name a district and a delivery.
    #[error("the status callback URL must name a district and a delivery")]
    UnnamedDelivery,
    /// A field holds a value that cannot be one (e.g. a message id with spaces).
    #[error("the webhook's {0} is malformed")]
    Malformed(&'static str),
}

impl WebhookRefusal {
    /// The stable API error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotConfigured | Self::BadSignature => "invalid_signature",
            Self::Form(_) | Self::UnnamedDelivery | Self::Malformed(_) => "validation",
        }
    }
}

/// The URL the provider signed.
fn signed_url(webhooks: &Webhooks, headers: &HeaderMap, uri: &Uri) -> String {
    let path = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    match &webhooks.public_url {
        Some(base) => format!("{}{path}", base.trim_end_matches('/')),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            format!("http://{host}{path}")
        }
    }
}

/// Reads the form and checks its signature.
fn verified(
    state: &ApiState,
    headers: &HeaderMap,
    uri: &Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Webhooks, Vec<FormField>), ApiError> {
    let Some(webhooks) = state.webhooks.clone() else {
        return Err(WebhookRefusal::NotConfigured.into());
    };
    let bytes = body.map_err(|_| ApiError::BadRequest)?;
    let signature = headers
        .get(webhooks.provider.signature_header())
        .and_then(|v| v.to_str().ok())
        .ok_or(WebhookRefusal::BadSignature)?;
    let form: Vec<FormField> = serde_urlencoded::from_bytes(&bytes)
        .map_err(|_| WebhookRefusal::Form(WebhookError::Field { field: "body" }))?;
    if !webhooks
        .provider
        .verify(&signed_url(&webhooks, headers, uri), &form, signature)
    {
        return Err(WebhookRefusal::BadSignature.into());
    }
    Ok((webhooks, form))
}

/// `POST /v1/webhooks/twilio/inbound`: records the text, routes it, and answers with
/// the reply to send back (STOP/START/HELP), if any.
pub(crate) async fn inbound(
    State(state): State<ApiState>,
    headers: HeaderMap,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (webhooks, form) = verified(&state, &headers, &uri, body)?;
    let read = webhooks
        .provider
        .inbound(&form)
        .map_err(WebhookRefusal::Form)?;
    let message_sid = ProviderMessageId::parse(&read.message_sid)
        .map_err(|_| WebhookRefusal::Malformed("MessageSid"))?;
    let received = webhooks
        .inbound
        .receive(IncomingSms {
            message_sid,
            from: read.from,
            to: read.to,
            body: read.body,
            media_urls: read.media_urls,
        })
        .await?;
    tracing::info!(district = %received.district, route = ?received.route, "inbound SMS recorded");
    Ok(answer(&webhooks, received.reply.as_deref()))
}

/// The provider's answer format, with `reply` texted back when there is one.
fn answer(webhooks: &Webhooks, reply: Option<&str>) -> Response {
    let (content_type, body) = webhooks.provider.answer(reply);
    let mut response = (StatusCode::OK, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The delivery a status callback URL names (`?district=…&delivery=…`).
#[derive(serde::Deserialize)]
struct Named {
    district: String,
    delivery: uuid::Uuid,
}

/// `POST /v1/webhooks/twilio/status?district=…&delivery=…`: records the outcome.
pub(crate) async fn status(
    State(state): State<ApiState>,
    headers: HeaderMap,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (webhooks, form) = verified(&state, &headers, &uri, body)?;
    let named: Named = serde_urlencoded::from_str(uri.query().unwrap_or(""))
        .map_err(|_| WebhookRefusal::UnnamedDelivery)?;
    let district =
        DistrictId::parse(&named.district).map_err(|_| WebhookRefusal::UnnamedDelivery)?;
    let read = webhooks
        .provider
        .status(&form)
        .map_err(WebhookRefusal::Form)?;
    let recorded = webhooks
        .status
        .record(StatusReport {
            district,
            delivery_id: DeliveryId::new(named.delivery),
            outcome: read.outcome,
            provider_message_id: Some(read.provider_message_id),
            error: read.error,
            permanent: read.permanent,
        })
        .await;
    match recorded {
        Ok(()) => {}
        // A callback for a delivery this instance does not know: answering an error
        // would only make the provider retry it forever.
        Err(homeroom_app::CommandError::Rejected(refusal)) => {
            tracing::warn!(delivery = %named.delivery, code = refusal.code(), "a status callback was refused");
        }
        Err(error) => return Err(error.into()),
    }
    Ok(answer(&webhooks, None))
}

impl Webhooks {
    /// The webhooks of `provider`, recording through the command service of `state`'s
    /// services.
    pub fn new(
        provider: Arc<dyn SmsWebhooks>,
        commands: Arc<homeroom_app::CommandService>,
        translator: Arc<dyn homeroom_channels::Translator>,
        public_url: Option<String>,
    ) -> Self {
        Self {
            provider,
            inbound: InboundSms::new(commands.clone(), translator),
            status: StatusCallbacks::new(commands),
            public_url,
        }
    }
}
