//! What an SMS provider posts back to Homeroom: status callbacks and inbound texts,
//! authenticated by the provider's signature. The HTTP API reads them through this port,
//! so it knows no provider's field names or signature scheme.

use homeroom_domain::OutcomeStatus;

/// One form field of a webhook, as posted.
pub type FormField = (String, String);

/// A status callback, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderStatus {
    /// The provider's id of the message.
    pub provider_message_id: String,
    /// The outcome it reports; `None` for an intermediate status (queued, sending).
    pub outcome: Option<OutcomeStatus>,
    /// The provider's error code, for failures.
    pub error: Option<String>,
    /// Whether the failure condemns the address (it can never succeed there, whoever
    /// sends): the contact point is then marked failing. An opt-out is not.
    pub permanent: bool,
}

/// An inbound text, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderInbound {
    /// The provider's id of the text.
    pub message_sid: String,
    /// The sender's number.
    pub from: String,
    /// The number it was sent to.
    pub to: String,
    /// The text.
    pub body: String,
    /// The pictures or files sent with it, as the provider's URLs, in order.
    pub media_urls: Vec<String>,
}

/// Why a webhook's form could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// A field the provider always sends is missing or unreadable.
    #[error("the webhook's {field} is missing or unreadable")]
    Field {
        /// The field.
        field: &'static str,
    },
}

/// An SMS provider's webhooks.
pub trait SmsWebhooks: Send + Sync {
    /// Whether `signature` (the provider's signature header) signs `form` posted to
    /// `full_url` (scheme, host, path and query, exactly as the provider called it).
    fn verify(&self, full_url: &str, form: &[FormField], signature: &str) -> bool;

    /// The name of the header carrying the signature.
    fn signature_header(&self) -> &'static str;

    /// Reads a status callback.
    ///
    /// # Errors
    /// [`WebhookError`] when a field is missing or unreadable.
    fn status(&self, form: &[FormField]) -> Result<ProviderStatus, WebhookError>;

    /// Reads an inbound text.
    ///
    /// # Errors
    /// [`WebhookError`] when a field is missing or unreadable.
    fn inbound(&self, form: &[FormField]) -> Result<ProviderInbound, WebhookError>;

    /// The answer to an inbound webhook: its content type and body, with `reply` sent
    /// back to the texter when there is one.
    fn answer(&self, reply: Option<&str>) -> (&'static str, String);
}
