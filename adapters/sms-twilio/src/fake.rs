//! `FakeTwilio`: a real HTTP server on loopback that speaks the part of Twilio's API
//! Homeroom uses, so the SMS path can be tested end to end without Twilio.
//!
//! Like Twilio it:
//! - answers `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` (form fields `To`,
//!   `From`, `Body`, `StatusCallback`) after checking HTTP Basic auth, with `201` and a
//!   JSON message resource (`sid` `SM…`, `status` `queued`, …) or Twilio's error JSON
//!   (`code`, `message`, `more_info`, `status`);
//! - honours `I-Twilio-Idempotency-Token`: the same token answers the same resource and
//!   creates no second message;
//! - posts status callbacks ([`FakeTwilio::deliver`], [`FakeTwilio::fail`],
//!   [`FakeTwilio::post_status`]) to the message's `StatusCallback` and inbound texts
//!   ([`FakeTwilio::send_inbound`]) to a given URL, as form posts signed with
//!   `X-Twilio-Signature` over that URL.
//!
//! It can be told to refuse a number with an error code ([`FakeTwilio::refuse`]) or to
//! answer `503` to everything ([`FakeTwilio::set_unavailable`]), and it records every
//! request ([`FakeTwilio::requests`]) and message ([`FakeTwilio::messages`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use homeroom_sms_twilio::fake::FakeTwilio;
//! use homeroom_sms_twilio::TwilioSms;
//! let twilio = FakeTwilio::start().await?;
//! let sms = TwilioSms::new(twilio.config().with_status_callback("http://127.0.0.1:8080/v1/webhooks/twilio/status"))?;
//! // … send through `sms`, then:
//! let sent = twilio.wait_for_messages(1, std::time::Duration::from_secs(10)).await?;
//! twilio.deliver(&sent[0].sid).await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use homeroom_domain::sms::measure;
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch};

use crate::{signature, MessageStatus, TwilioConfig, IDEMPOTENCY_HEADER, SIGNATURE_HEADER};

/// The account the fake answers for unless told otherwise.
pub const FAKE_ACCOUNT_SID: &str = "AC00000000000000000000000000000001";
/// That account's auth token.
pub const FAKE_AUTH_TOKEN: &str = "fake-twilio-auth-token";

/// A message the fake accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeMessage {
    /// Its `SM…` sid.
    pub sid: String,
    /// The recipient.
    pub to: String,
    /// The sender.
    pub from: String,
    /// The text.
    pub body: String,
    /// Where its status changes go, if the request named a place.
    pub status_callback: Option<String>,
    /// The idempotency token it was created under.
    pub idempotency_token: Option<String>,
    /// Its status now (`queued` until a callback changes it).
    pub status: MessageStatus,
    /// Segments the text takes.
    pub num_segments: usize,
}

/// One create request as the fake received it, whatever it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRequest {
    /// The `I-Twilio-Idempotency-Token` header, if any.
    pub idempotency_token: Option<String>,
    /// The form fields, in the order sent.
    pub form: Vec<(String, String)>,
    /// The HTTP status the fake answered.
    pub answered: u16,
}

impl ReceivedRequest {
    /// The value of form field `name`, if sent.
    pub fn field(&self, name: &str) -> Option<&str> {
        field(&self.form, name)
    }
}

/// What went wrong driving the fake.
#[derive(Debug, thiserror::Error)]
pub enum FakeError {
    /// The fake could not listen on loopback.
    #[error("cannot start the fake Twilio: {0}")]
    Io(#[from] std::io::Error),
    /// No message has that sid.
    #[error("no message {0}")]
    UnknownMessage(String),
    /// The message was created without a `StatusCallback`.
    #[error("message {0} has no StatusCallback")]
    NoStatusCallback(String),
    /// The fake's own HTTP client could not be built.
    #[error(transparent)]
    Setup(#[from] crate::SetupError),
    /// Posting a webhook failed.
    #[error("webhook post failed: {0}")]
    Http(#[from] reqwest::Error),
    /// Fewer messages arrived than waited for.
    #[error("{got} of {wanted} messages arrived within {within:?}")]
    TimedOut {
        /// How many were awaited.
        wanted: usize,
        /// How many there were.
        got: usize,
        /// How long it waited.
        within: Duration,
    },
}

/// What a signed webhook post answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookAnswer {
    /// The HTTP status the receiver answered.
    pub status: u16,
    /// The `MessageSid` the webhook carried.
    pub message_sid: String,
    /// What the receiver answered (TwiML: a `<Message>` is texted back to the sender).
    pub body: String,
}

#[derive(Default)]
struct Ledger {
    messages: Vec<FakeMessage>,
    by_token: HashMap<String, usize>,
    refused: HashMap<String, u32>,
    unavailable: bool,
    requests: Vec<ReceivedRequest>,
}

struct Shared {
    account_sid: String,
    auth_token: String,
    ledger: Mutex<Ledger>,
    created: watch::Sender<usize>,
}

impl Shared {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A fake Twilio listening on `127.0.0.1` at a port of its own; stops when dropped.
pub struct FakeTwilio {
    shared: Arc<Shared>,
    addr: SocketAddr,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for FakeTwilio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeTwilio")
            .field("addr", &self.addr)
            .field("account_sid", &self.shared.account_sid)
            .finish_non_exhaustive()
    }
}

impl FakeTwilio {
    /// Starts a fake for [`FAKE_ACCOUNT_SID`] / [`FAKE_AUTH_TOKEN`].
    ///
    /// # Errors
    /// [`FakeError::Io`] when it cannot listen on loopback.
    pub async fn start() -> Result<Self, FakeError> {
        Self::start_for(FAKE_ACCOUNT_SID, FAKE_AUTH_TOKEN).await
    }

    /// Starts a fake for the given account and auth token (it must run inside a Tokio
    /// runtime, which serves it until the fake is dropped).
    ///
    /// # Errors
    /// [`FakeError::Io`] when it cannot listen on loopback.
    pub async fn start_for(account_sid: &str, auth_token: &str) -> Result<Self, FakeError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            account_sid: account_sid.to_owned(),
            auth_token: auth_token.to_owned(),
            ledger: Mutex::new(Ledger::default()),
            created: watch::channel(0).0,
        });
        let app = Router::new()
            .route("/2010-04-01/Accounts/{account}/Messages.json", post(create))
            .with_state(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
            if let Err(error) = served {
                eprintln!("fake Twilio stopped: {error}");
            }
        });
        Ok(Self {
            shared,
            addr,
            http: homeroom_https::client(Duration::from_secs(30))?,
            stop: Some(stop),
        })
    }

    /// `http://127.0.0.1:{port}`: the base URL to give a [`crate::TwilioSms`].
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A configuration that talks to this fake with its credentials.
    pub fn config(&self) -> TwilioConfig {
        TwilioConfig::new(&self.shared.account_sid, &self.shared.auth_token)
            .with_base_url(self.base_url())
    }

    /// The account sid it answers for.
    pub fn account_sid(&self) -> &str {
        &self.shared.account_sid
    }

    /// The auth token it checks and signs webhooks with.
    pub fn auth_token(&self) -> &str {
        &self.shared.auth_token
    }

    /// From now on, refuses any message to `to` with Twilio's error `code` (`400`), as
    /// Twilio does for an invalid (21211), unsubscribed (21610) or non-mobile (21614)
    /// number.
    pub fn refuse(&self, to: &str, code: u32) {
        self.shared.ledger().refused.insert(to.to_owned(), code);
    }

    /// While `unavailable`, answers every create with `503` and creates nothing.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.shared.ledger().unavailable = unavailable;
    }

    /// Every message created so far, in order.
    pub fn messages(&self) -> Vec<FakeMessage> {
        self.shared.ledger().messages.clone()
    }

    /// The message with `sid`, if there is one.
    pub fn message(&self, sid: &str) -> Option<FakeMessage> {
        self.shared
            .ledger()
            .messages
            .iter()
            .find(|m| m.sid == sid)
            .cloned()
    }

    /// Every create request received so far (retries and refusals included), in order.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.shared.ledger().requests.clone()
    }

    /// Waits until at least `count` messages were created, then answers them all.
    ///
    /// # Errors
    /// [`FakeError::TimedOut`] when fewer arrived `within` that time.
    pub async fn wait_for_messages(
        &self,
        count: usize,
        within: Duration,
    ) -> Result<Vec<FakeMessage>, FakeError> {
        let mut created = self.shared.created.subscribe();
        let arrived = tokio::time::timeout(within, created.wait_for(|n| *n >= count)).await;
        match arrived {
            Ok(Ok(_)) => Ok(self.messages()),
            _ => Err(FakeError::TimedOut {
                wanted: count,
                got: self.messages().len(),
                within,
            }),
        }
    }

    /// Marks message `sid` delivered and posts that status callback.
    ///
    /// # Errors
    /// [`FakeError`] when there is no such message, it has no `StatusCallback`, or the
    /// post fails.
    pub async fn deliver(&self, sid: &str) -> Result<WebhookAnswer, FakeError> {
        self.post_status(sid, MessageStatus::Delivered, None).await
    }

    /// Marks message `sid` failed with Twilio's `error_code` (e.g. 30003 unreachable,
    /// 30005 unknown handset) and posts that status callback.
    ///
    /// # Errors
    /// As [`FakeTwilio::deliver`].
    pub async fn fail(&self, sid: &str, error_code: u32) -> Result<WebhookAnswer, FakeError> {
        self.post_status(sid, MessageStatus::Failed, Some(error_code))
            .await
    }

    /// Sets message `sid` to `status` and posts the status callback Twilio would
    /// (`MessageSid`, `SmsSid`, `MessageStatus`, `SmsStatus`, `AccountSid`, `From`,
    /// `To`, `ApiVersion`, and `ErrorCode` when given), signed over the callback URL.
    ///
    /// # Errors
    /// As [`FakeTwilio::deliver`].
    pub async fn post_status(
        &self,
        sid: &str,
        status: MessageStatus,
        error_code: Option<u32>,
    ) -> Result<WebhookAnswer, FakeError> {
        let message = {
            let mut ledger = self.shared.ledger();
            let message = ledger
                .messages
                .iter_mut()
                .find(|m| m.sid == sid)
                .ok_or_else(|| FakeError::UnknownMessage(sid.to_owned()))?;
            message.status = status;
            message.clone()
        };
        let url = message
            .status_callback
            .clone()
            .ok_or_else(|| FakeError::NoStatusCallback(sid.to_owned()))?;
        let mut params = vec![
            ("ApiVersion", "2010-04-01".to_owned()),
            ("AccountSid", self.shared.account_sid.clone()),
            ("MessageSid", message.sid.clone()),
            ("SmsSid", message.sid.clone()),
            ("MessageStatus", status.as_str().to_owned()),
            ("SmsStatus", status.as_str().to_owned()),
            ("From", message.from.clone()),
            ("To", message.to.clone()),
        ];
        if let Some(code) = error_code {
            params.push(("ErrorCode", code.to_string()));
        }
        self.post_signed(&url, &params).await
    }

    /// The form fields of an inbound text, as Twilio posts them to a number's messaging
    /// webhook (`MessageSid`, `SmsSid`, `SmsMessageSid`, `AccountSid`, `From`, `To`,
    /// `Body`, `NumMedia`, `NumSegments`, `SmsStatus`, `ApiVersion` and the geographic
    /// fields, left blank here), with a fresh `MessageSid`.
    pub fn inbound_params(&self, from: &str, to: &str, body: &str) -> Vec<(&'static str, String)> {
        let sid = new_sid();
        vec![
            ("ToCountry", "US".to_owned()),
            ("ToState", String::new()),
            ("SmsMessageSid", sid.clone()),
            ("NumMedia", "0".to_owned()),
            ("ToCity", String::new()),
            ("FromZip", String::new()),
            ("SmsSid", sid.clone()),
            ("FromState", String::new()),
            ("SmsStatus", "received".to_owned()),
            ("FromCity", String::new()),
            ("Body", body.to_owned()),
            ("FromCountry", "US".to_owned()),
            ("To", to.to_owned()),
            ("ToZip", String::new()),
            ("NumSegments", measure(body).segments.to_string()),
            ("MessageSid", sid),
            ("AccountSid", self.shared.account_sid.clone()),
            ("From", from.to_owned()),
            ("ApiVersion", "2010-04-01".to_owned()),
        ]
    }

    /// Posts an inbound text from `from` to `to` to `url` (Homeroom's
    /// `/v1/webhooks/twilio/inbound`), signed as Twilio signs it.
    ///
    /// # Errors
    /// [`FakeError::Http`] when the post fails.
    pub async fn send_inbound(
        &self,
        url: &str,
        from: &str,
        to: &str,
        body: &str,
    ) -> Result<WebhookAnswer, FakeError> {
        let params = self.inbound_params(from, to, body);
        self.post_signed(url, &params).await
    }

    /// Posts `params` to `url` as a form, with `X-Twilio-Signature` over `url` and
    /// them, and a fresh `I-Twilio-Idempotency-Token` as Twilio adds to its webhooks.
    ///
    /// # Errors
    /// [`FakeError::Http`] when the post fails.
    pub async fn post_signed(
        &self,
        url: &str,
        params: &[(&str, String)],
    ) -> Result<WebhookAnswer, FakeError> {
        let signed = signature(&self.shared.auth_token, url, params);
        let response = self
            .http
            .post(url)
            .header(SIGNATURE_HEADER, signed)
            .header(IDEMPOTENCY_HEADER, uuid::Uuid::new_v4().to_string())
            .form(params)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok(WebhookAnswer {
            status,
            message_sid: field(params, "MessageSid").unwrap_or_default().to_owned(),
            body: response.text().await?,
        })
    }
}

impl Drop for FakeTwilio {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn field<'a, K: AsRef<str>, V: AsRef<str>>(form: &'a [(K, V)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k.as_ref() == name)
        .map(|(_, v)| v.as_ref())
}

fn new_sid() -> String {
    format!("SM{}", uuid::Uuid::new_v4().simple())
}

/// Twilio's error document.
fn error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    });
    (status, Json(body)).into_response()
}

/// Whether `headers` carry Basic auth for the account.
fn authorised(headers: &HeaderMap, shared: &Shared) -> bool {
    let Some(value) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(encoded) = value.strip_prefix("Basic ") else {
        return false;
    };
    let expected = format!("{}:{}", shared.account_sid, shared.auth_token);
    STANDARD
        .decode(encoded.trim())
        .is_ok_and(|decoded| decoded == expected.as_bytes())
}

fn resource(account_sid: &str, message: &FakeMessage) -> Value {
    let now = chrono::Utc::now().to_rfc2822();
    let uri = format!(
        "/2010-04-01/Accounts/{account_sid}/Messages/{}",
        message.sid
    );
    json!({
        "account_sid": account_sid,
        "api_version": "2010-04-01",
        "body": message.body,
        "date_created": now,
        "date_sent": null,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": message.from,
        "messaging_service_sid": null,
        "num_media": "0",
        "num_segments": message.num_segments.to_string(),
        "price": null,
        "price_unit": "USD",
        "sid": message.sid,
        "status": message.status.as_str(),
        "subresource_uris": { "media": format!("{uri}/Media.json") },
        "to": message.to,
        "uri": format!("{uri}.json"),
    })
}

async fn create(
    State(shared): State<Arc<Shared>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let token = headers
        .get(IDEMPOTENCY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let response = answer(&shared, &account, &headers, &form, token.as_deref());
    let mut ledger = shared.ledger();
    ledger.requests.push(ReceivedRequest {
        idempotency_token: token,
        form,
        answered: response.status().as_u16(),
    });
    let count = ledger.messages.len();
    drop(ledger);
    shared.created.send_replace(count);
    response
}

fn answer(
    shared: &Shared,
    account: &str,
    headers: &HeaderMap,
    form: &[(String, String)],
    token: Option<&str>,
) -> Response {
    if !authorised(headers, shared) {
        return error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    if account != shared.account_sid {
        return error(
            StatusCode::NOT_FOUND,
            20404,
            "The requested resource was not found",
        );
    }
    let mut ledger = shared.ledger();
    if ledger.unavailable {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            20503,
            "Service unavailable",
        );
    }
    if let Some(existing) = token.and_then(|t| ledger.by_token.get(t)) {
        let message = &ledger.messages[*existing];
        return (
            StatusCode::CREATED,
            Json(resource(&shared.account_sid, message)),
        )
            .into_response();
    }
    let (Some(to), Some(from)) = (field(form, "To"), field(form, "From")) else {
        let (code, what) = if field(form, "To").is_none() {
            (21604, "A 'To' phone number is required.")
        } else {
            (21603, "A 'From' phone number is required.")
        };
        return error(StatusCode::BAD_REQUEST, code, what);
    };
    let Some(body) = field(form, "Body").filter(|b| !b.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, 21602, "Message body is required.");
    };
    if let Some(code) = ledger.refused.get(to) {
        let message = format!("The 'To' number {to} cannot receive this message.");
        return error(StatusCode::BAD_REQUEST, *code, &message);
    }
    let message = FakeMessage {
        sid: new_sid(),
        to: to.to_owned(),
        from: from.to_owned(),
        body: body.to_owned(),
        status_callback: field(form, "StatusCallback").map(str::to_owned),
        idempotency_token: token.map(str::to_owned),
        status: MessageStatus::Queued,
        num_segments: measure(body).segments,
    };
    let json = resource(&shared.account_sid, &message);
    if let Some(token) = token {
        let index = ledger.messages.len();
        ledger.by_token.insert(token.to_owned(), index);
    }
    ledger.messages.push(message);
    (StatusCode::CREATED, Json(json)).into_response()
}
