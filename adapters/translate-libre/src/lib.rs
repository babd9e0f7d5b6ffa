//! Homeroom's machine translation through the LibreTranslate HTTP API.
//!
//! A tour:
//!
//! - [`LibreTranslate`] implements the [`Translator`] port: one translation is one
//!   `POST {base}/translate` with JSON `{"q", "source", "target", "format": "text"}`
//!   (and `api_key` when one is configured). [`LibreTranslateConfig`] says where, with
//!   which key and how long to wait.
//! - [`language_code`]: a recipient's language tag (`es-MX`, `zh-Hant`) as the code
//!   LibreTranslate names the language by (`es`, `zt`).
//! - [`LibreTranslateError`]: what went wrong, carried inside
//!   [`TranslateError::Unavailable`] so a worker can log it.
//! - `fake` (feature `fake`): `FakeLibreTranslate`, a local HTTP server that speaks the
//!   same API with a dictionary a test teaches it.
//!
//! How an answer maps to the port: a `200` with a `translatedText` is a
//! [`Translation`] marked `machine_translated` in the language asked for; a `400` (the
//! service cannot translate that pair) is the original, unmarked, because the port
//! never lets a guess through; anything else (`403` a bad key, `429` a rate limit, a
//! `5xx`, a `200` without a text, a timeout, no connection) is
//! [`TranslateError::Unavailable`]. A pair whose languages share a code never reaches
//! the service.

#[cfg(feature = "fake")]
pub mod fake;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use homeroom_channels::{TranslateError, Translation, Translator};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

/// How long one request to LibreTranslate may take before it counts as unavailable.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The most characters of the service's explanation an error keeps, so a proxy's
/// whole HTML page never ends up in a log line.
pub const MAX_ERROR_CHARS: usize = 500;

/// The code LibreTranslate names Traditional Chinese by.
pub const TRADITIONAL_CHINESE: &str = "zt";

/// Where and with which key to call LibreTranslate.
#[derive(Clone, PartialEq, Eq)]
pub struct LibreTranslateConfig {
    /// The service's base URL without a trailing slash (`https://libretranslate.com`, a
    /// self-hosted instance, or a fake's).
    pub base_url: String,
    /// The API key, sent as `api_key` in every request; instances without keys need none.
    pub api_key: Option<String>,
    /// The longest one request may take.
    pub timeout: Duration,
}

impl LibreTranslateConfig {
    /// A configuration for the service at `base_url` (a trailing slash is dropped), with
    /// no API key and the default timeout.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            api_key: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same, sending `api_key` with every request.
    pub fn with_api_key(mut self, api_key: impl Into<String>) -> Self {
        self.api_key = Some(api_key.into());
        self
    }

    /// The same, with another request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `{base_url}/translate`.
    pub fn translate_url(&self) -> String {
        format!("{}/translate", self.base_url.trim_end_matches('/'))
    }

    /// The key to send: none when unset or empty.
    fn key(&self) -> Option<&str> {
        self.api_key.as_deref().filter(|k| !k.is_empty())
    }
}

/// Never prints the API key, only whether there is one.
impl fmt::Debug for LibreTranslateConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LibreTranslateConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Why a [`LibreTranslate`] could not be built: its HTTPS client could not be set up.
pub use homeroom_https::SetupError;

/// Why LibreTranslate could not translate a text; carried inside
/// [`TranslateError::Unavailable`]. Never holds the API key.
#[derive(Debug, thiserror::Error)]
pub enum LibreTranslateError {
    /// The request did not complete: no connection, a timeout, a broken answer.
    #[error("request to LibreTranslate failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The service refused or failed (`403` a bad or missing key, `429` a rate limit,
    /// `5xx`, or any other status that is neither a translation nor an unsupported pair).
    #[error("LibreTranslate answered {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The service's `error` text (or the answer's text), at most
        /// [`MAX_ERROR_CHARS`] characters.
        message: String,
    },
    /// The service answered success but with no text: passing an empty text on would
    /// send the recipient nothing.
    #[error("LibreTranslate answered {status} without a translatedText")]
    NoTranslation {
        /// The HTTP status.
        status: u16,
    },
}

/// The code LibreTranslate names the language of `tag` (a BCP 47 tag) by: the primary
/// subtag lowercased (`es-MX` → `es`, `EN` → `en`), except Traditional Chinese
/// (`zh-Hant`, `zh-TW`, `zh-HK`, `zh-MO`) → [`TRADITIONAL_CHINESE`]. An explicit script
/// wins over the region (`zh-Hans-HK` → `zh`). `_` separates subtags as well as `-`, so
/// POSIX locales (`pt_BR`) read the same.
pub fn language_code(tag: &str) -> String {
    let mut subtags = tag.trim().split(['-', '_']);
    let primary = subtags.next().unwrap_or_default().to_ascii_lowercase();
    if primary != "zh" {
        return primary;
    }
    for subtag in subtags {
        let subtag = subtag.to_ascii_lowercase();
        let traditional = match subtag.len() {
            // A script decides on its own.
            4 => return script_code(&subtag),
            // A region names Traditional Chinese where that script is the one in use.
            2 => matches!(subtag.as_str(), "tw" | "hk" | "mo"),
            _ => false,
        };
        if traditional {
            return TRADITIONAL_CHINESE.to_owned();
        }
    }
    primary
}

fn script_code(script: &str) -> String {
    if script == "hant" {
        TRADITIONAL_CHINESE.to_owned()
    } else {
        "zh".to_owned()
    }
}

/// Translates through LibreTranslate. Cheap to share: one connection pool inside.
#[derive(Clone)]
pub struct LibreTranslate {
    config: Arc<LibreTranslateConfig>,
    http: reqwest::Client,
}

impl fmt::Debug for LibreTranslate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LibreTranslate")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The body of `POST /translate`.
#[derive(Debug, Serialize)]
struct TranslateRequest<'a> {
    q: &'a str,
    source: &'a str,
    target: &'a str,
    format: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<&'a str>,
}

/// A successful answer, as far as Homeroom reads it.
#[derive(Debug, Deserialize)]
struct TranslateAnswer {
    #[serde(rename = "translatedText")]
    translated_text: Option<String>,
}

/// LibreTranslate's error document (`{"error": "..."}`).
#[derive(Debug, Deserialize)]
struct ErrorDocument {
    error: Option<String>,
}

/// What an answer said, once read.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// The text in the target language.
    Translated(String),
    /// The service cannot translate this pair (or this request): keep the original.
    NotTranslatable,
}

impl LibreTranslate {
    /// A client for `config`, speaking TLS with rustls (ring) and the Mozilla roots.
    ///
    /// # Errors
    /// [`SetupError`] when the TLS configuration or the HTTP client cannot be built.
    pub fn new(config: LibreTranslateConfig) -> Result<Self, SetupError> {
        let http = homeroom_https::client(config.timeout)?;
        Ok(Self {
            config: Arc::new(config),
            http,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &LibreTranslateConfig {
        &self.config
    }

    async fn call(
        &self,
        text: &str,
        source: &str,
        target: &str,
    ) -> Result<Answer, LibreTranslateError> {
        let request = TranslateRequest {
            q: text,
            source,
            target,
            format: "text",
            api_key: self.config.key(),
        };
        let response = self
            .http
            .post(self.config.translate_url())
            .json(&request)
            .send()
            .await?;
        let status = response.status();
        let body = response.text().await?;
        interpret(status, &body, self.config.key())
    }
}

/// Reads LibreTranslate's answer to a translate request; `api_key` is blanked out of
/// any text the service echoes back.
fn interpret(
    status: StatusCode,
    body: &str,
    api_key: Option<&str>,
) -> Result<Answer, LibreTranslateError> {
    if status.is_success() {
        let translated = serde_json::from_str::<TranslateAnswer>(body)
            .ok()
            .and_then(|a| a.translated_text)
            .filter(|t| !t.trim().is_empty());
        return translated
            .map(Answer::Translated)
            .ok_or(LibreTranslateError::NoTranslation {
                status: status.as_u16(),
            });
    }
    if status == StatusCode::BAD_REQUEST {
        return Ok(Answer::NotTranslatable);
    }
    let explanation = serde_json::from_str::<ErrorDocument>(body)
        .ok()
        .and_then(|e| e.error)
        .unwrap_or_else(|| body.trim().to_owned());
    let explanation = if explanation.is_empty() {
        status.canonical_reason().unwrap_or_default().to_owned()
    } else {
        explanation
    };
    Err(LibreTranslateError::Status {
        status: status.as_u16(),
        message: truncate(&redact(&explanation, api_key), MAX_ERROR_CHARS),
    })
}

/// `text` with every occurrence of the key replaced.
fn redact(text: &str, api_key: Option<&str>) -> String {
    match api_key {
        Some(key) if !key.is_empty() => text.replace(key, "<redacted>"),
        _ => text.to_owned(),
    }
}

/// At most `max` characters of `text`, marked with `…` when cut.
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// The original, unmarked: what the port answers for a text not translated.
fn untranslated(text: &str, from: &str) -> Translation {
    Translation {
        text: text.to_owned(),
        language: from.to_owned(),
        machine_translated: false,
    }
}

#[async_trait]
impl Translator for LibreTranslate {
    /// Answers the original without calling the service when both tags name the same
    /// LibreTranslate language or there is no text to translate.
    async fn translate(
        &self,
        text: &str,
        from: &str,
        to: &str,
    ) -> Result<Translation, TranslateError> {
        let (source, target) = (language_code(from), language_code(to));
        if source == target || text.trim().is_empty() {
            return Ok(untranslated(text, from));
        }
        match self.call(text, &source, &target).await {
            Ok(Answer::Translated(translated)) => Ok(Translation {
                text: translated,
                language: to.to_owned(),
                machine_translated: true,
            }),
            Ok(Answer::NotTranslatable) => Ok(untranslated(text, from)),
            Err(error) => Err(TranslateError::Unavailable(Box::new(error))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(answer: Result<Answer, LibreTranslateError>) -> (u16, String) {
        match answer {
            Err(LibreTranslateError::Status { status, message }) => (status, message),
            other => panic!("expected a status error, got {other:?}"),
        }
    }

    #[test]
    fn a_language_tag_is_named_by_its_primary_subtag_lowercased() {
        for (tag, code) in [
            ("es-MX", "es"),
            ("EN", "en"),
            ("en-US", "en"),
            ("pt-BR", "pt"),
            ("pt_BR", "pt"),
            ("fr", "fr"),
            ("zh", "zh"),
            ("zh-CN", "zh"),
            ("zh-Hans", "zh"),
            ("zh-Hans-HK", "zh"),
            ("ar-001", "ar"),
        ] {
            assert_eq!(language_code(tag), code, "{tag}");
        }
    }

    #[test]
    fn traditional_chinese_is_named_zt() {
        for tag in ["zh-Hant", "zh-TW", "zh-HK", "zh-MO", "ZH-hant-TW", "zh_TW"] {
            assert_eq!(language_code(tag), TRADITIONAL_CHINESE, "{tag}");
        }
    }

    #[test]
    fn a_translation_is_read_from_translated_text() {
        let answer = interpret(StatusCode::OK, r#"{"translatedText":"Excursión"}"#, None);
        assert_eq!(answer.unwrap(), Answer::Translated("Excursión".to_owned()));
    }

    #[test]
    fn a_success_without_a_text_is_no_translation_never_an_empty_one() {
        for body in [
            r#"{"translatedText":""}"#,
            r#"{"translatedText":"  "}"#,
            r#"{"translatedText":null}"#,
            "{}",
            "<html>proxy</html>",
        ] {
            match interpret(StatusCode::OK, body, None) {
                Err(LibreTranslateError::NoTranslation { status: 200 }) => {}
                other => panic!("{body}: expected NoTranslation, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_bad_request_means_the_pair_cannot_be_translated() {
        let body = r#"{"error":"xx is not supported"}"#;
        let answer = interpret(StatusCode::BAD_REQUEST, body, None);
        assert_eq!(answer.unwrap(), Answer::NotTranslatable);
    }

    #[test]
    fn a_refusal_keeps_the_status_and_the_services_error() {
        for (status, text) in [
            (StatusCode::FORBIDDEN, "Invalid API key"),
            (StatusCode::TOO_MANY_REQUESTS, "Slowdown: 20 per 1 minute"),
            (StatusCode::INTERNAL_SERVER_ERROR, "Cannot translate text"),
        ] {
            let body = serde_json::json!({ "error": text }).to_string();
            assert_eq!(
                refusal(interpret(status, &body, None)),
                (status.as_u16(), text.to_owned())
            );
        }
    }

    #[test]
    fn an_error_without_json_keeps_the_text_or_the_reason() {
        assert_eq!(
            refusal(interpret(StatusCode::BAD_GATEWAY, "upstream down\n", None)),
            (502, "upstream down".to_owned())
        );
        assert_eq!(
            refusal(interpret(StatusCode::SERVICE_UNAVAILABLE, "", None)),
            (503, "Service Unavailable".to_owned())
        );
    }

    #[test]
    fn a_long_explanation_is_cut_to_the_limit() {
        let body = "é".repeat(MAX_ERROR_CHARS * 3);
        let (_, message) = refusal(interpret(StatusCode::BAD_GATEWAY, &body, None));
        assert_eq!(message.chars().count(), MAX_ERROR_CHARS + 1);
        assert!(message.ends_with('…'));
    }

    #[test]
    fn an_echoed_api_key_never_reaches_the_error() {
        let body = r#"{"error":"Invalid API key s3cret-key"}"#;
        let answer = interpret(StatusCode::FORBIDDEN, body, Some("s3cret-key"));
        let error = answer.unwrap_err();
        assert!(!error.to_string().contains("s3cret-key"), "{error}");
        assert!(error.to_string().contains("Invalid API key"), "{error}");
    }

    #[test]
    fn the_config_never_prints_the_api_key() {
        let config = LibreTranslateConfig::new("http://127.0.0.1:9").with_api_key("s3cret-key");
        let printed = format!("{config:?}");
        assert!(!printed.contains("s3cret-key"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
    }

    #[test]
    fn the_translate_url_is_built_from_the_base_url_without_its_trailing_slash() {
        let config = LibreTranslateConfig::new("http://127.0.0.1:9/");
        assert_eq!(config.base_url, "http://127.0.0.1:9");
        assert_eq!(config.translate_url(), "http://127.0.0.1:9/translate");
    }

    #[test]
    fn an_empty_key_is_not_sent() {
        let config = LibreTranslateConfig::new("http://x").with_api_key("");
        assert_eq!(config.key(), None);
    }
}
