//! Inbound SMS: one stream per SMS the provider hands us (`inbound-{district}:{sid}`),
//! holding what arrived, exactly as it arrived, and then where it went. Recording it
//! comes first and needs nothing to be known, so nothing inbound is ever lost: an SMS
//! to a number no district owns is kept under the reserved district `_unrouted`.

use serde::{Deserialize, Serialize};

use crate::commands::{Command, ReceiveSms, RouteInboundSms};
use crate::events::{Event, InboundSmsReceived, InboundSmsRouted};
use crate::facts::{Actor, Facts};
use crate::ids::{ConversationId, MessageId, ProviderMessageId};
use crate::validation::ValidationError;

/// The longest inbound text kept whole (SMS concatenation tops out far below it).
pub const MAX_INBOUND_CHARS: usize = 10_000;

/// The most pictures or files one inbound text carries (Twilio's MMS limit).
pub const MAX_INBOUND_MEDIA: usize = 10;

/// The longest media URL kept.
pub const MAX_MEDIA_URL_CHARS: usize = 2_048;

/// The reply an inbound text becomes in its conversation: its words, then one line per
/// picture or file it carried, so a photo sent without words still reaches the staff
/// and the thread shows where to find it. The text itself is never changed.
pub fn reply_text(body: &str, media_urls: &[String]) -> String {
    let mut text = body.to_owned();
    for url in media_urls {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str("Attachment: ");
        text.push_str(url);
    }
    text
}

pub use crate::sms::InboundKeyword;

/// Why an inbound SMS could not be routed (it stays recorded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum UnroutableReason {
    /// No district sends from the number it was sent to.
    UnknownNumber,
    /// The number it came from was never sent an SMS from the number it replies to.
    NoConversation,
    /// The number it came from is no longer a phone of the person it was last texted
    /// for (nor of anyone else in that conversation): they changed phones, and whoever
    /// has the old one does not write as them.
    NotTheirNumber,
    /// A number is not a phone number.
    MalformedNumber,
    /// The text cannot be posted as a message (empty, or far too long).
    Unreadable,
}

/// Where an inbound SMS went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum InboundRoute {
    /// Posted as a reply in its conversation.
    Conversation {
        /// The conversation.
        conversation_id: ConversationId,
        /// The message it became.
        message_id: MessageId,
    },
    /// Its conversation was stopped: kept there, not posted.
    Refused {
        /// The conversation.
        conversation_id: ConversationId,
    },
    /// A keyword, honoured on its line.
    Keyword {
        /// Which.
        keyword: InboundKeyword,
    },
    /// Nowhere it could go.
    Unroutable {
        /// Why.
        reason: UnroutableReason,
    },
}

/// An inbound SMS stream's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InboundState {
    received: Option<InboundSmsReceived>,
    route: Option<InboundRoute>,
}

impl InboundState {
    /// What arrived, once recorded.
    pub fn received(&self) -> Option<&InboundSmsReceived> {
        self.received.as_ref()
    }

    /// Where it went, once routed.
    pub fn route(&self) -> Option<&InboundRoute> {
        self.route.as_ref()
    }
}

/// Why an inbound command was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InboundError {
    /// Only the webhook service records inbound SMS.
    #[error("not permitted")]
    NotPermitted,
    /// Routing an SMS that was never recorded.
    #[error("inbound SMS {message_sid} was never recorded")]
    NotReceived {
        /// The SMS.
        message_sid: ProviderMessageId,
    },
    /// A malformed value.
    #[error(transparent)]
    Validation(#[from] ValidationError),
}

impl InboundError {
    /// The API error code.
    pub fn code(&self) -> &'static str {
        match self {
            InboundError::NotPermitted => "not_permitted",
            InboundError::NotReceived { .. } => "unknown_inbound",
            InboundError::Validation(e) => e.code(),
        }
    }
}

/// Decides an inbound command.
///
/// # Errors
/// [`InboundError`] when a rule refuses it.
pub fn decide(
    state: &InboundState,
    cmd: &Command,
    facts: &Facts,
) -> Result<Vec<Event>, InboundError> {
    if !matches!(facts.actor, Actor::System(_)) {
        return Err(InboundError::NotPermitted);
    }
    match cmd {
        Command::ReceiveSms(c) => receive(state, c, facts),
        Command::RouteInboundSms(c) => route(state, c, facts),
        other => Err(ValidationError::WrongStream {
            command: other.name(),
            state: "inbound",
        }
        .into()),
    }
}

/// A provider that retries its webhook records the SMS once.
fn receive(
    state: &InboundState,
    c: &ReceiveSms,
    facts: &Facts,
) -> Result<Vec<Event>, InboundError> {
    if state.received.is_some() {
        return Ok(vec![]);
    }
    let got = c.body.chars().count();
    if got > MAX_INBOUND_CHARS {
        return Err(ValidationError::TooLong {
            field: "Body",
            max: MAX_INBOUND_CHARS,
            got,
        }
        .into());
    }
    if c.media_urls.len() > MAX_INBOUND_MEDIA {
        return Err(ValidationError::OutOfRange {
            field: "NumMedia",
            min: 0,
            max: MAX_INBOUND_MEDIA as u32,
            got: u32::try_from(c.media_urls.len()).unwrap_or(u32::MAX),
        }
        .into());
    }
    if let Some(got) = c
        .media_urls
        .iter()
        .map(|url| url.chars().count())
        .find(|&n| n > MAX_MEDIA_URL_CHARS)
    {
        return Err(ValidationError::TooLong {
            field: "MediaUrl",
            max: MAX_MEDIA_URL_CHARS,
            got,
        }
        .into());
    }
    Ok(vec![InboundSmsReceived {
        message_sid: c.message_sid.clone(),
        from: c.from.clone(),
        to: c.to.clone(),
        body: c.body.clone(),
        media_urls: c.media_urls.clone(),
        at: facts.now,
    }
    .into()])
}

/// An SMS is routed once; the first route stands.
fn route(
    state: &InboundState,
    c: &RouteInboundSms,
    facts: &Facts,
) -> Result<Vec<Event>, InboundError> {
    if state.received.is_none() {
        return Err(InboundError::NotReceived {
            message_sid: c.message_sid.clone(),
        });
    }
    if state.route.is_some() {
        return Ok(vec![]);
    }
    Ok(vec![InboundSmsRouted {
        message_sid: c.message_sid.clone(),
        route: c.route.clone(),
        at: facts.now,
    }
    .into()])
}

/// Applies an inbound event; other events leave the state as it is.
pub fn evolve(mut state: InboundState, event: &Event) -> InboundState {
    match event {
        Event::InboundSmsReceived(e) => state.received = Some(e.clone()),
        Event::InboundSmsRouted(e) => state.route = Some(e.route.clone()),
        _ => {}
    }
    state
}

#[cfg(test)]
mod tests;
