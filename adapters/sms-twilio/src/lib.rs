//! Homeroom's SMS through the Twilio Messages REST API.
//!
//! A tour:
//!
//! - [`TwilioSms`] implements the [`SmsSender`] port: one attempt is one
//!   `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` with the attempt key as
//!   Twilio's idempotency token, so a worker that retries an attempt Twilio already took
//!   never sends the text twice. [`TwilioConfig`] says where and as whom.
//! - [`signature`] and [`verify`]: the `X-Twilio-Signature` of a webhook (status
//!   callbacks, inbound texts), so the webhooks refuse anything Twilio did not sign.
//! - [`status`]: Twilio's message statuses as Homeroom outcomes ([`status_of`]) and
//!   which Twilio error codes can never succeed ([`is_permanent_error`]); a callback's
//!   form read as a [`StatusCallback`].
//! - [`TwilioWebhooks`]: the webhooks through the `SmsWebhooks` port (signature,
//!   status and inbound forms, TwiML answers).
//! - `fake` (feature `fake`): `FakeTwilio`, a local HTTP server that speaks the same
//!   API, posts signed status callbacks and inbound texts, for tests up to end-to-end.
//!
//! How an answer maps to the port: a `201` with a `sid` is [`Handover::Accepted`] (the
//! outcome comes later in a status callback); an error whose code can never succeed
//! is a permanent [`ChannelError::Refused`] when it blames the recipient's number (an
//! invalid number, …, [`blames_recipient`]) and [`ChannelError::Undeliverable`] when it
//! is about our side (our number, our account, a text over 1,600 characters), an
//! unsubscribed one (21610, they answered STOP) [`ChannelError::OptedOut`];
//! any other `4xx` (a rate limit, bad credentials, an unknown code) is a refusal worth
//! retrying; a `5xx`, a timeout or a connection failure is [`ChannelError::Unavailable`].

pub mod signature;
pub mod status;
pub mod webhooks;

#[cfg(feature = "fake")]
pub mod fake;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use homeroom_channels::{ChannelError, Handover, OutboundSms, SmsSender};
use reqwest::StatusCode;
use serde::Deserialize;

pub use signature::{signature, verify, SIGNATURE_HEADER};
pub use status::{
    blames_recipient, is_permanent_error, status_of, MessageStatus, StatusCallback, UNSUBSCRIBED,
};
pub use webhooks::TwilioWebhooks;

/// Twilio's API, where [`TwilioConfig::base_url`] points unless told otherwise.
pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";

/// The header Twilio reads an idempotency token from: a retried request with the same
/// token returns the first result instead of creating a second message.
pub const IDEMPOTENCY_HEADER: &str = "I-Twilio-Idempotency-Token";

/// How long one request to Twilio may take before it counts as unavailable.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and as whom to call Twilio.
#[derive(Clone, PartialEq, Eq)]
pub struct TwilioConfig {
    /// The account (`AC…`), in the URL and as the Basic-auth user.
    pub account_sid: String,
    /// The account's auth token: the Basic-auth password and the webhook signing key.
    pub auth_token: String,
    /// The API's base URL without a trailing slash ([`DEFAULT_BASE_URL`], or a fake's).
    pub base_url: String,
    /// Where Twilio posts a message's status changes (`{public url}/v1/webhooks/twilio/status`);
    /// without it no outcome beyond "accepted" ever arrives.
    pub status_callback_url: Option<String>,
    /// The longest one request may take.
    pub timeout: Duration,
}

impl TwilioConfig {
    /// A configuration for the real Twilio API with the default timeout and no status
    /// callback.
    pub fn new(account_sid: impl Into<String>, auth_token: impl Into<String>) -> Self {
        Self {
            account_sid: account_sid.into(),
            auth_token: auth_token.into(),
            base_url: DEFAULT_BASE_URL.to_owned(),
            status_callback_url: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same, calling `base_url` instead of Twilio (a trailing slash is dropped).
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into().trim_end_matches('/').to_owned();
        self
    }

    /// The same, asking Twilio to post status changes to `url`.
    pub fn with_status_callback(mut self, url: impl Into<String>) -> Self {
        self.status_callback_url = Some(url.into());
        self
    }

    /// The same, with another request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `{base_url}/2010-04-01/Accounts/{account_sid}/Messages.json`.
    pub fn messages_url(&self) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.base_url.trim_end_matches('/'),
            self.account_sid
        )
    }
}

/// Never prints the auth token.
impl fmt::Debug for TwilioConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioConfig")
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"<redacted>")
            .field("base_url", &self.base_url)
            .field("status_callback_url", &self.status_callback_url)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Why a [`TwilioSms`] could not be built: its HTTPS client could not be set up.
pub use homeroom_https::SetupError;

/// Why Twilio could not be used for an attempt; carried inside
/// [`ChannelError::Unavailable`].
#[derive(Debug, thiserror::Error)]
pub enum TwilioError {
    /// The request did not complete: no connection, a timeout, a broken answer.
    #[error("request to Twilio failed: {0}")]
    Http(#[from] reqwest::Error),
    /// Twilio answered with a server error (`5xx`).
    #[error("Twilio answered {status}: {message}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// Twilio's error code, when the answer carried one.
        code: Option<u32>,
        /// Twilio's explanation, or the answer's text.
        message: String,
    },
    /// Twilio accepted the request but its answer held no message `sid`.
    #[error("Twilio answered {status} without a message sid")]
    NoSid {
        /// The HTTP status.
        status: u16,
    },
}

/// Sends texts through Twilio. Cheap to share: one connection pool inside.
#[derive(Clone)]
pub struct TwilioSms {
    config: Arc<TwilioConfig>,
    http: reqwest::Client,
}

impl fmt::Debug for TwilioSms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioSms")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The answer to a message create, as far as Homeroom reads it.
#[derive(Debug, Deserialize)]
struct MessageResource {
    sid: Option<String>,
}

/// Twilio's error document (`{"code", "message", "more_info", "status"}`).
#[derive(Debug, Deserialize)]
struct ErrorDocument {
    code: Option<u32>,
    message: Option<String>,
}

impl TwilioSms {
    /// A client for `config`, speaking TLS with rustls (ring) and the Mozilla roots.
    ///
    /// # Errors
    /// [`SetupError`] when the TLS configuration or the HTTP client cannot be built.
    pub fn new(config: TwilioConfig) -> Result<Self, SetupError> {
        let http = homeroom_https::client(config.timeout)?;
        Ok(Self {
            config: Arc::new(config),
            http,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &TwilioConfig {
        &self.config
    }

    async fn create(&self, sms: &OutboundSms) -> Result<Handover, ChannelError> {
        let mut form = vec![
            ("To", sms.to.as_str()),
            ("From", sms.from.as_str()),
            ("Body", sms.body.as_str()),
        ];
        // The message's own callback (naming its delivery) wins over the configured one.
        if let Some(url) = sms
            .status_callback
            .as_ref()
            .or(self.config.status_callback_url.as_ref())
        {
            form.push(("StatusCallback", url.as_str()));
        }
        let response = self
            .http
            .post(self.config.messages_url())
            .basic_auth(&self.config.account_sid, Some(&self.config.auth_token))
            .header(IDEMPOTENCY_HEADER, sms.key.as_header_value())
            .form(&form)
            .send()
            .await
            .map_err(|e| ChannelError::unavailable(TwilioError::Http(e)))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| ChannelError::unavailable(TwilioError::Http(e)))?;
        interpret(status, &text)
    }
}

/// Reads Twilio's answer to a create.
fn interpret(status: StatusCode, text: &str) -> Result<Handover, ChannelError> {
    if status.is_success() {
        let sid = serde_json::from_str::<MessageResource>(text)
            .ok()
            .and_then(|m| m.sid)
            .filter(|sid| !sid.is_empty());
        return match sid {
            Some(provider_message_id) => Ok(Handover::Accepted {
                provider_message_id,
            }),
            None => Err(ChannelError::unavailable(TwilioError::NoSid {
                status: status.as_u16(),
            })),
        };
    }
    let error = serde_json::from_str::<ErrorDocument>(text).ok();
    let code = error.as_ref().and_then(|e| e.code);
    let message = error
        .and_then(|e| e.message)
        .unwrap_or_else(|| text.chars().take(500).collect());
    if status.is_server_error() {
        return Err(ChannelError::unavailable(TwilioError::Server {
            status: status.as_u16(),
            code,
            message,
        }));
    }
    if code == Some(UNSUBSCRIBED) {
        return Err(ChannelError::OptedOut {
            message: format!("Twilio {UNSUBSCRIBED}: {message}"),
        });
    }
    if let Some(code) = code.filter(|c| is_permanent_error(*c) && !blames_recipient(*c)) {
        // Our number, our account or our text: never worth retrying, never the family's
        // number's fault.
        return Err(ChannelError::Undeliverable {
            code: format!("twilio_{code}"),
            message,
        });
    }
    Err(ChannelError::Refused {
        code: code.map_or_else(|| status.as_u16().to_string(), |c| c.to_string()),
        message,
        permanent: code.is_some_and(is_permanent_error),
    })
}

#[async_trait]
impl SmsSender for TwilioSms {
    async fn send_sms(&self, sms: &OutboundSms) -> Result<Handover, ChannelError> {
        self.create(sms).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(result: Result<Handover, ChannelError>) -> (String, bool) {
        match result {
            Err(ChannelError::Refused {
                code, permanent, ..
            }) => (code, permanent),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_created_message_is_accepted_with_its_sid() {
        let answer = interpret(StatusCode::CREATED, r#"{"sid":"SM123","status":"queued"}"#);
        assert_eq!(
            answer.unwrap(),
            Handover::Accepted {
                provider_message_id: "SM123".to_owned()
            }
        );
    }

    #[test]
    fn a_success_without_a_sid_is_unavailable_not_accepted() {
        let answer = interpret(StatusCode::CREATED, "<html>proxy</html>");
        assert!(matches!(answer, Err(ChannelError::Unavailable(_))));
    }

    #[test]
    fn an_unsubscribed_recipient_is_an_opt_out_that_does_not_condemn_the_number() {
        let body = r#"{"code":21610,"message":"Attempt to send to unsubscribed recipient","more_info":"https://www.twilio.com/docs/errors/21610","status":400}"#;
        let error = interpret(StatusCode::BAD_REQUEST, body).unwrap_err();
        assert!(matches!(error, ChannelError::OptedOut { .. }), "{error:?}");
        assert!(error.is_permanent());
        assert!(!error.condemns_address());
    }

    #[test]
    fn an_invalid_number_is_a_permanent_refusal_that_condemns_it() {
        let body = r#"{"code":21211,"message":"Invalid 'To' Phone Number","status":400}"#;
        let error = interpret(StatusCode::BAD_REQUEST, body).unwrap_err();
        assert!(error.condemns_address());
        assert_eq!(refusal(Err(error)), ("21211".to_owned(), true));
    }

    #[test]
    fn a_refusal_of_our_number_fails_the_text_without_condemning_the_family() {
        let body = r#"{"code":21606,"message":"The 'From' number is not a valid, SMS-capable Twilio number","status":400}"#;
        let error = interpret(StatusCode::BAD_REQUEST, body).unwrap_err();
        assert!(error.is_permanent());
        assert!(!error.condemns_address());
        assert!(error.to_string().contains("twilio_21606"), "{error}");
    }

    #[test]
    fn a_rate_limit_is_a_refusal_worth_retrying() {
        let body = r#"{"code":20429,"message":"Too Many Requests","status":429}"#;
        assert_eq!(
            refusal(interpret(StatusCode::TOO_MANY_REQUESTS, body)),
            ("20429".to_owned(), false)
        );
    }

    #[test]
    fn an_error_without_twilio_json_is_named_by_its_http_status() {
        assert_eq!(
            refusal(interpret(StatusCode::TOO_MANY_REQUESTS, "slow down")),
            ("429".to_owned(), false)
        );
    }

    #[test]
    fn a_server_error_is_unavailable() {
        let answer = interpret(StatusCode::BAD_GATEWAY, "bad gateway");
        assert!(matches!(answer, Err(ChannelError::Unavailable(_))));
    }

    #[test]
    fn the_config_never_prints_the_auth_token() {
        let config = TwilioConfig::new("AC1", "s3cret-token");
        assert!(!format!("{config:?}").contains("s3cret-token"));
    }

    #[test]
    fn the_messages_url_is_built_from_the_base_url_and_account() {
        let config = TwilioConfig::new("AC1", "t").with_base_url("http://127.0.0.1:9/");
        assert_eq!(
            config.messages_url(),
            "http://127.0.0.1:9/2010-04-01/Accounts/AC1/Messages.json"
        );
    }
}
