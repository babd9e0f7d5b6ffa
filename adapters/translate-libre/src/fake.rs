//! `FakeLibreTranslate`: a real HTTP server on loopback that speaks the part of the
//! LibreTranslate API Homeroom uses, so the translation path can be tested end to end
//! without the service.
//!
//! Like LibreTranslate it answers `POST /translate` (a JSON body `q`, `source`, `target`,
//! `format`, `api_key`) with `200 {"translatedText": ...}` or an error document
//! `{"error": ...}`. What it knows is what a test teaches it:
//!
//! - [`FakeLibreTranslate::learn`] teaches one text of one pair (by LibreTranslate's
//!   codes: `en`, `es`, `zt`). A text of a taught pair that was never taught is answered
//!   **unchanged** (`translatedText` = `q`), as a real engine may answer a word it has
//!   no translation for; a pair it was taught nothing of is answered
//!   `400 {"error": "<source>→<target> is not supported"}`.
//! - [`FakeLibreTranslate::expect_api_key`] makes it answer `403` to any request whose
//!   `api_key` is missing or another.
//! - [`FakeLibreTranslate::fail_next`] makes it answer `500` to the next requests.
//!
//! It records every request ([`FakeLibreTranslate::requests`]), whatever it answered.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use homeroom_channels::Translator;
//! use homeroom_translate_libre::fake::FakeLibreTranslate;
//! use homeroom_translate_libre::LibreTranslate;
//! let fake = FakeLibreTranslate::start().await?;
//! fake.learn("en", "es", "Field trip", "Excursión");
//! let translator = LibreTranslate::new(fake.config())?;
//! let translated = translator.translate("Field trip", "en", "es-MX").await?;
//! assert_eq!(translated.text, "Excursión");
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::LibreTranslateConfig;

/// One translate request as the fake received it, whatever it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRequest {
    /// The `q` field (the text), if it was a string.
    pub q: Option<String>,
    /// The `source` field.
    pub source: Option<String>,
    /// The `target` field.
    pub target: Option<String>,
    /// The `format` field.
    pub format: Option<String>,
    /// The `api_key` field, if sent.
    pub api_key: Option<String>,
    /// The `Content-Type` header, if sent.
    pub content_type: Option<String>,
    /// The HTTP status the fake answered.
    pub answered: u16,
}

/// What went wrong starting the fake.
#[derive(Debug, thiserror::Error)]
pub enum FakeError {
    /// The fake could not listen on loopback.
    #[error("cannot start the fake LibreTranslate: {0}")]
    Io(#[from] std::io::Error),
}

/// Texts taught for one `(source, target)` pair.
type Pair = (String, String);

#[derive(Default)]
struct Ledger {
    dictionary: HashMap<Pair, HashMap<String, String>>,
    expected_key: Option<String>,
    failures_left: usize,
    requests: Vec<ReceivedRequest>,
}

#[derive(Default)]
struct Shared {
    ledger: Mutex<Ledger>,
}

impl Shared {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A fake LibreTranslate listening on `127.0.0.1` at a port of its own; stops when
/// dropped.
pub struct FakeLibreTranslate {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for FakeLibreTranslate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeLibreTranslate")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeLibreTranslate {
    /// Starts a fake that knows no pair and needs no key (it must run inside a Tokio
    /// runtime, which serves it until the fake is dropped).
    ///
    /// # Errors
    /// [`FakeError::Io`] when it cannot listen on loopback.
    pub async fn start() -> Result<Self, FakeError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/translate", post(translate))
            .with_state(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
            if let Err(error) = served {
                eprintln!("fake LibreTranslate stopped: {error}");
            }
        });
        Ok(Self {
            shared,
            addr,
            stop: Some(stop),
        })
    }

    /// `http://127.0.0.1:{port}`: the base URL to give a [`crate::LibreTranslate`].
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A configuration that talks to this fake, with the key it expects if it expects one.
    pub fn config(&self) -> LibreTranslateConfig {
        let config = LibreTranslateConfig::new(self.base_url());
        match self.shared.ledger().expected_key.clone() {
            Some(key) => config.with_api_key(key),
            None => config,
        }
    }

    /// Teaches that `text` in `source` is `translation` in `target` (LibreTranslate's
    /// codes); from now on the pair is supported.
    pub fn learn(&self, source: &str, target: &str, text: &str, translation: &str) {
        self.shared
            .ledger()
            .dictionary
            .entry((source.to_owned(), target.to_owned()))
            .or_default()
            .insert(text.to_owned(), translation.to_owned());
    }

    /// From now on, answers `403 {"error": "Invalid API key"}` to any request whose
    /// `api_key` is not `key`.
    pub fn expect_api_key(&self, key: &str) {
        self.shared.ledger().expected_key = Some(key.to_owned());
    }

    /// Answers the next `n` requests with `500 {"error": ...}`, before looking at them.
    pub fn fail_next(&self, n: usize) {
        self.shared.ledger().failures_left = n;
    }

    /// Every request received so far (failures and refusals included), in order.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.shared.ledger().requests.clone()
    }
}

impl Drop for FakeLibreTranslate {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// LibreTranslate's error document.
fn error(status: StatusCode, message: &str) -> (StatusCode, Json<Value>) {
    (status, Json(json!({ "error": message })))
}

async fn translate(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    let fields = serde_json::from_slice::<Value>(&body).ok();
    let field = |name: &str| {
        fields
            .as_ref()
            .and_then(|f| f.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let mut request = ReceivedRequest {
        q: field("q"),
        source: field("source"),
        target: field("target"),
        format: field("format"),
        api_key: field("api_key"),
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        answered: 0,
    };
    let mut ledger = shared.ledger();
    let response = answer(&mut ledger, &request, fields.is_some());
    request.answered = response.0.as_u16();
    ledger.requests.push(request);
    response
}

fn answer(
    ledger: &mut Ledger,
    request: &ReceivedRequest,
    is_json: bool,
) -> (StatusCode, Json<Value>) {
    if ledger.failures_left > 0 {
        ledger.failures_left -= 1;
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Cannot translate text: the fake was told to fail",
        );
    }
    if let Some(expected) = &ledger.expected_key {
        if request.api_key.as_ref() != Some(expected) {
            return error(StatusCode::FORBIDDEN, "Invalid API key");
        }
    }
    if !is_json {
        return error(
            StatusCode::BAD_REQUEST,
            "Invalid request: the fake reads JSON bodies only",
        );
    }
    let (Some(q), Some(source), Some(target)) = (&request.q, &request.source, &request.target)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "Invalid request: missing q, source or target parameter",
        );
    };
    let Some(texts) = ledger.dictionary.get(&(source.clone(), target.clone())) else {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("{source}→{target} is not supported"),
        );
    };
    let translated = texts.get(q).unwrap_or(q);
    (
        StatusCode::OK,
        Json(json!({ "translatedText": translated })),
    )
}
