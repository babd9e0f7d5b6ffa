//! The channel ports of Homeroom.
//!
//! A delivery worker hands one planned delivery to one provider and records what the
//! provider said. This crate names what a provider must do, so workers are written once
//! and run against Twilio and SMTP in a server deployment or against the sandbox of the
//! embedded default:
//!
//! - [`SmsSender`] with [`OutboundSms`], [`EmailSender`] with [`OutboundEmail`]: one
//!   attempt at one delivery, answered by a [`Handover`] (the provider took it) or a
//!   [`ChannelError`] (it refused, for good or for now);
//! - [`Translator`]: machine translation of a message body into the recipient's
//!   language; the original is always kept beside it;
//! - [`sandbox`]: providers that record a delivered outcome without sending, and a
//!   translator that marks text untranslated rather than inventing one;
//! - [`webhooks::SmsWebhooks`]: what a provider posts back (status callbacks, inbound
//!   texts), authenticated by its signature.
//!
//! Every attempt carries an [`AttemptKey`] derived from the delivery and the attempt
//! number: providers that accept an idempotency key get it, so a worker that is killed
//! after the provider accepted a message and retries it never sends it twice.

pub mod sandbox;
pub mod webhooks;

use async_trait::async_trait;
use homeroom_domain::DeliveryId;

/// Identifies one attempt at one delivery: the idempotency key a provider is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttemptKey {
    /// The delivery.
    pub delivery_id: DeliveryId,
    /// Which attempt (1 for the first).
    pub attempt: u32,
}

impl AttemptKey {
    /// A stable text form, `<delivery id>-<attempt>`, safe in headers and URLs.
    pub fn as_header_value(&self) -> String {
        format!("{}-{}", self.delivery_id, self.attempt)
    }
}

/// One text message to hand to an SMS provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundSms {
    /// The attempt this is.
    pub key: AttemptKey,
    /// The sending number (E.164): the sender's personal number or the school's.
    pub from: String,
    /// The recipient's number (E.164).
    pub to: String,
    /// The text exactly as it is to arrive (label prefix and translation applied).
    pub body: String,
    /// Where the provider should report this message's status (a URL naming the
    /// delivery), when the deployment has a public URL; a provider without status
    /// callbacks ignores it.
    pub status_callback: Option<String>,
}

/// One email to hand to a mail server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundEmail {
    /// The attempt this is.
    pub key: AttemptKey,
    /// The sender's display name (a person's name or the school's).
    pub from_name: String,
    /// The recipient's address.
    pub to: String,
    /// The subject line.
    pub subject: String,
    /// The plain-text body exactly as it is to arrive.
    pub body: String,
}

/// What a provider said when it took a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handover {
    /// Accepted for delivery; the final status comes later (a status callback).
    Accepted {
        /// The provider's id for the message (Twilio's `MessageSid`, the SMTP queue id).
        provider_message_id: String,
    },
    /// Delivered already (the sandbox, or a provider that confirms synchronously).
    Delivered {
        /// The provider's id for the message, if it gave one.
        provider_message_id: Option<String>,
    },
}

/// Why a provider did not take a message.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The provider refused this message; `permanent` refusals (a bad number, a mailbox
    /// that does not exist) are not retried, the address is marked failing, and the
    /// delivery falls back to the other channel.
    #[error("refused by the provider ({code}): {message}")]
    Refused {
        /// The provider's error code (Twilio's numeric code, the SMTP reply code).
        code: String,
        /// The provider's explanation, as given.
        message: String,
        /// Whether trying again can never help.
        permanent: bool,
    },
    /// The provider could not be reached or failed on its side: worth retrying.
    #[error("provider unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The recipient answered STOP to the number this text would go out from (Homeroom
    /// saw it, or the provider says so). Never retried, but not the address's fault:
    /// other numbers may still text it, so the contact point stays usable and only this
    /// delivery fails and falls back to the other channel.
    #[error("the recipient opted out of texts from this number: {message}")]
    OptedOut {
        /// Who said so, in words.
        message: String,
    },
    /// Homeroom cannot send this delivery as planned: one of its own rules refused a
    /// step of it, or the provider refused our side of it (the sending number, the
    /// account, the text). Deterministic, so never retried; not the address's fault, so
    /// the delivery fails and falls back without marking the contact point failing.
    #[error("not sent ({code}): {message}")]
    Undeliverable {
        /// The refusal's stable code.
        code: String,
        /// What the rule said.
        message: String,
    },
    /// This deployment has no provider for the channel.
    #[error("no provider is configured for this channel")]
    NotConfigured,
}

impl ChannelError {
    /// Wraps a client error as [`ChannelError::Unavailable`].
    pub fn unavailable(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Unavailable(Box::new(err))
    }

    /// Whether retrying the same attempt can never succeed.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::Refused {
                permanent: true,
                ..
            } | Self::OptedOut { .. }
                | Self::Undeliverable { .. }
                | Self::NotConfigured
        )
    }

    /// Whether the failure says the address itself does not work, so later messages
    /// should use the recipient's other channel until the contact point is reset. An
    /// opt-out fails for good but condemns only the pair of numbers, not the address.
    pub fn condemns_address(&self) -> bool {
        self.is_permanent() && !matches!(self, Self::OptedOut { .. } | Self::Undeliverable { .. })
    }
}

/// Sends text messages.
#[async_trait]
pub trait SmsSender: Send + Sync {
    /// Hands one message to the provider.
    ///
    /// # Errors
    /// [`ChannelError`] when the provider did not take it.
    async fn send_sms(&self, sms: &OutboundSms) -> Result<Handover, ChannelError>;
}

/// Sends emails.
#[async_trait]
pub trait EmailSender: Send + Sync {
    /// Hands one email to the mail server.
    ///
    /// # Errors
    /// [`ChannelError`] when the server did not take it.
    async fn send_email(&self, email: &OutboundEmail) -> Result<Handover, ChannelError>;
}

/// A body in a recipient's language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    /// The text to send (the original when it was not translated).
    pub text: String,
    /// The language `text` is in.
    pub language: String,
    /// Whether a machine translated it (false: `text` is the original).
    pub machine_translated: bool,
}

/// Why a translation failed.
#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    /// The translation service could not be reached or failed: worth retrying.
    #[error("translation unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Machine translation. Human translation is never applied to personal messages, so
/// there is only the machine kind here.
#[async_trait]
pub trait Translator: Send + Sync {
    /// `text` (in `from`) in the language `to`. A translator that cannot translate a
    /// pair answers the original with `machine_translated: false`, never a guess.
    ///
    /// # Errors
    /// [`TranslateError`] when the service fails.
    async fn translate(
        &self,
        text: &str,
        from: &str,
        to: &str,
    ) -> Result<Translation, TranslateError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bad_address_condemns_it_though_every_final_failure_is_permanent() {
        let bounce = ChannelError::Refused {
            code: "550".into(),
            message: "no such mailbox".into(),
            permanent: true,
        };
        let opted_out = ChannelError::OptedOut {
            message: "STOP".into(),
        };
        let undeliverable = ChannelError::Undeliverable {
            code: "not_permitted".into(),
            message: "a rule refused".into(),
        };
        let rate_limited = ChannelError::Refused {
            code: "429".into(),
            message: "slow down".into(),
            permanent: false,
        };
        for final_failure in [&bounce, &opted_out, &undeliverable] {
            assert!(final_failure.is_permanent(), "{final_failure}");
        }
        assert!(!rate_limited.is_permanent());
        assert!(bounce.condemns_address());
        for spares in [&opted_out, &undeliverable, &rate_limited] {
            assert!(!spares.condemns_address(), "{spares}");
        }
    }
}
