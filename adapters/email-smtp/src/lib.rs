//! Homeroom's email through an SMTP server, with lettre.
//!
//! A tour:
//!
//! - [`SmtpEmail`] implements the [`EmailSender`] port: one attempt is one SMTP
//!   transaction of a UTF-8 plain-text message `From: "<from_name>" <HOMEROOM_EMAIL_FROM>`
//!   whose `Message-ID` is derived from the attempt key ([`message_id`]); that
//!   Message-ID is the provider message id a worker records.
//! - [`SmtpConfig`]: the server as a `HOMEROOM_SMTP_URL` (see [`SmtpConfig::url`] for
//!   the forms) and the sending address `HOMEROOM_EMAIL_FROM`.
//! - `fake` (feature `fake`): `FakeSmtp`, an SMTP server on loopback that records what
//!   it receives and can reject a recipient, for tests up to end-to-end.
//!
//! How a reply maps to the port: a permanent (`5xx`) reply is a permanent
//! [`ChannelError::Refused`] with the reply code (the mailbox does not exist, …), except
//! the authentication replies (`530`, `534`, `535`, `538`), which are this deployment's
//! problem and not the recipient's, and so are worth retrying once fixed; a transient
//! (`4xx`) reply is a refusal worth retrying; a connection, TLS or timeout failure is
//! [`ChannelError::Unavailable`].

#[cfg(feature = "fake")]
pub mod fake;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use homeroom_channels::{AttemptKey, ChannelError, EmailSender, Handover, OutboundEmail};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// How long one SMTP exchange may take before the attempt counts as unavailable.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The reply codes of a failed authentication: the deployment's credentials, not the
/// recipient, are wrong.
const AUTH_FAILURES: [u16; 4] = [530, 534, 535, 538];

/// Which mail server to hand emails to, and as whom.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    /// `HOMEROOM_SMTP_URL`, one of:
    ///
    /// - `smtp://host[:port]`: plain SMTP, no TLS (port 25); for a relay on a trusted
    ///   network or a local test server;
    /// - `smtp://host[:port]?tls=required`: STARTTLS, refused without it (port 587);
    /// - `smtp://host[:port]?tls=opportunistic`: STARTTLS when the server offers it;
    /// - `smtps://host[:port]`: TLS from the first byte (port 465);
    ///
    /// each optionally with `user:password@` before the host (percent-encoded) to log
    /// in, and a path naming the EHLO host (`smtp://relay:25/homeroom.example`).
    pub url: String,
    /// `HOMEROOM_EMAIL_FROM`: the envelope sender and the `From` address; the display
    /// name is each email's `from_name`.
    pub from: String,
    /// The longest one SMTP exchange may take.
    pub timeout: Duration,
}

impl SmtpConfig {
    /// A configuration for `url` sending from `from`, with the default timeout.
    pub fn new(url: impl Into<String>, from: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            from: from.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same, with another timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Never prints the password a URL may hold.
impl fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = match (self.url.split_once("://"), self.url.rfind('@')) {
            (Some((scheme, rest)), Some(at)) if at > scheme.len() => {
                let host = &self.url[at + 1..];
                let user = rest.split([':', '@']).next().unwrap_or_default();
                format!("{scheme}://{user}:<redacted>@{host}")
            }
            _ => self.url.clone(),
        };
        f.debug_struct("SmtpConfig")
            .field("url", &url)
            .field("from", &self.from)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Why an [`SmtpEmail`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `HOMEROOM_SMTP_URL` is not one of the forms [`SmtpConfig::url`] names.
    #[error("HOMEROOM_SMTP_URL is not a usable SMTP URL: {0}")]
    Url(#[source] smtp::Error),
    /// `HOMEROOM_EMAIL_FROM` is not an email address.
    #[error("HOMEROOM_EMAIL_FROM is not an email address: {0}")]
    From(#[source] lettre::address::AddressError),
}

/// Sends emails through one SMTP server, over a small pool of connections.
#[derive(Clone)]
pub struct SmtpEmail {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Address,
}

impl fmt::Debug for SmtpEmail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpEmail")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

/// The `Message-ID` of an attempt: `<{delivery id}-{attempt}@{domain of from}>`, so the
/// same attempt always carries the same id and the id names the delivery.
pub fn message_id(key: &AttemptKey, from: &Address) -> String {
    format!("<{}@{}>", key.as_header_value(), from.domain())
}

impl SmtpEmail {
    /// A sender for `config`. Nothing is connected yet: the first email opens the
    /// first connection. Build and drop it inside a Tokio runtime: its connection pool
    /// is a Tokio task.
    ///
    /// # Errors
    /// [`SetupError`] when the URL or the from address is not usable.
    pub fn new(config: &SmtpConfig) -> Result<Self, SetupError> {
        let from: Address = config.from.trim().parse().map_err(SetupError::From)?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&config.url)
            .map_err(SetupError::Url)?
            .timeout(Some(config.timeout))
            .build();
        Ok(Self { transport, from })
    }

    /// The address emails go out from.
    pub fn from_address(&self) -> &Address {
        &self.from
    }

    fn message(&self, email: &OutboundEmail, id: &str) -> Result<Message, ChannelError> {
        let invalid = |what: &str, error: &dyn std::error::Error| ChannelError::Refused {
            code: "invalid_address".to_owned(),
            message: format!("{what}: {error}"),
            permanent: true,
        };
        let to: Address = email
            .to
            .trim()
            .parse()
            .map_err(|e| invalid("the recipient's address", &e))?;
        let name = display_name(&email.from_name);
        let from = Mailbox::new((!name.is_empty()).then_some(name), self.from.clone());
        Message::builder()
            .from(from)
            .to(Mailbox::new(None, to))
            .subject(email.subject.as_str())
            .message_id(Some(id.to_owned()))
            .header(ContentType::TEXT_PLAIN)
            .body(email.body.clone())
            .map_err(|e| invalid("the message", &e))
    }
}

/// The sender's name as the `From` header shows it: on one line, control characters as
/// spaces. Names are refused with them since they could forge a header, but a log
/// recorded before that holds such names for ever, and no name may stop a worker
/// (lettre cannot write a display name holding a line break).
fn display_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// What an SMTP failure is to a delivery worker.
fn refusal(error: smtp::Error) -> ChannelError {
    match error.status() {
        Some(code) if error.is_permanent() || error.is_transient() => {
            let number: u16 = code.to_string().parse().unwrap_or_default();
            ChannelError::Refused {
                code: code.to_string(),
                message: error.to_string(),
                permanent: error.is_permanent() && !AUTH_FAILURES.contains(&number),
            }
        }
        _ => ChannelError::unavailable(error),
    }
}

#[async_trait]
impl EmailSender for SmtpEmail {
    async fn send_email(&self, email: &OutboundEmail) -> Result<Handover, ChannelError> {
        let id = message_id(&email.key, &self.from);
        let message = self.message(email, &id)?;
        self.transport.send(message).await.map_err(refusal)?;
        Ok(Handover::Accepted {
            provider_message_id: id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The transport's connection pool must be dropped inside a Tokio runtime.
    #[tokio::test]
    async fn every_documented_url_form_is_accepted() {
        for url in [
            "smtp://127.0.0.1:2525",
            "smtp://relay.example",
            "smtp://user:p%40ss@relay.example:587?tls=required",
            "smtp://relay.example?tls=opportunistic",
            "smtps://user:pass@smtp.example.com",
            "smtp://relay.example:25/homeroom.example",
        ] {
            let config = SmtpConfig::new(url, "office@hillside.example");
            assert!(SmtpEmail::new(&config).is_ok(), "{url}");
        }
    }

    #[test]
    fn an_unknown_scheme_or_tls_mode_is_refused_at_setup() {
        for url in [
            "http://relay.example",
            "smtp://relay.example?tls=maybe",
            "relay.example",
        ] {
            let config = SmtpConfig::new(url, "office@hillside.example");
            assert!(
                matches!(SmtpEmail::new(&config), Err(SetupError::Url(_))),
                "{url}"
            );
        }
    }

    #[test]
    fn a_from_that_is_not_an_address_is_refused_at_setup() {
        let config = SmtpConfig::new("smtp://relay.example", "Hillside office");
        assert!(matches!(SmtpEmail::new(&config), Err(SetupError::From(_))));
    }

    #[tokio::test]
    async fn a_name_with_a_line_break_stays_in_the_from_header() {
        let config = SmtpConfig::new("smtp://relay.example", "office@hillside.example");
        let sender = SmtpEmail::new(&config).unwrap();
        let email = OutboundEmail {
            key: AttemptKey {
                delivery_id: homeroom_domain::DeliveryId::new(uuid::Uuid::from_u128(7)),
                attempt: 1,
            },
            from_name: "Staff\r\nBcc: evil@x.example\0".to_owned(),
            to: "pat@family.example".to_owned(),
            subject: "Trip".to_owned(),
            body: "Hello".to_owned(),
        };
        let message = sender.message(&email, "<1@hillside.example>").unwrap();
        let text = String::from_utf8(message.formatted()).unwrap();
        let from = text.lines().find(|l| l.starts_with("From: ")).unwrap();
        assert!(from.ends_with(" <office@hillside.example>"), "{text}");
        assert!(!text.lines().any(|l| l.starts_with("Bcc:")), "{text}");
        assert_eq!(display_name(&email.from_name), "Staff Bcc: evil@x.example");
    }

    #[test]
    fn the_config_never_prints_the_password() {
        let config = SmtpConfig::new("smtps://mailer:hunter2@smtp.example.com:465", "a@b.example");
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(
            printed.contains("smtps://mailer:<redacted>@smtp.example.com:465"),
            "{printed}"
        );
    }
}
