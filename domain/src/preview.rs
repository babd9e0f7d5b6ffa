//! The character counter (`POST /v1/preview`): a personal message as its recipient
//! would get it, shown to the sender before sending.
//!
//! [`preview`] decides the `SendPersonalMessage` the sender is writing, with the
//! conversation rules themselves ([`crate::conversation::decide`]) on the facts a send
//! loads, and keeps the recipient's planned delivery: merge fields rendered for them, the
//! channel chosen with the sender's pick ([`crate::plan::choose_channel`]). The decided
//! events are dropped: a preview records nothing. Then:
//!
//! - An SMS ends with the sender's name on a line of its own (`\n- Edna Krabappel`,
//!   [`sms::is_signed`]), as the worker sends it, and is counted with it.
//! - An SMS to a number that other people of the district have too leads with the
//!   shared-phone label naming the recipient ([`sms::label_for_shared_phone`]:
//!   `For Dennis: …`). Who else has a number is not a fact of the recipient's stream, so
//!   the caller says which of the recipient's numbers ([`sms_numbers`]) are shared.
//! - The text is measured with [`sms::measure`] whatever the channel: an email or in-app
//!   message has no segments, but the counter is the same, and a bounced email falls
//!   back to SMS with the same text. The channel tells the sender whether the count
//!   costs anything.
//! - The refusals are the decision's own, in the same order: `not_permitted`,
//!   `unknown_person`, `recipient_not_reachable`, `recipient_too_young`, `validation`
//!   (empty or overlong body, unknown merge field), `blocked_content`. So the sender
//!   learns before sending what sending would say. (A stopped personal conversation is
//!   no refusal: sending takes it up again.)
//!
//! The text is the original: translation into the recipient's language happens at
//! delivery ([`Render::language`] says which it will be).

use crate::commands::{Command, SendPersonalMessage};
use crate::conversation::{self, ConversationError, ConversationState};
use crate::events::Event;
use crate::facts::Facts;
use crate::ids::PersonId;
use crate::person::PersonState;
use crate::sms::{self, SmsMeasure};
use crate::values::{Channel, ContactChannel, SendAs};

/// What the sender is writing, before they send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewRequest {
    /// Whom the personal message is for.
    pub recipient_id: PersonId,
    /// The text, with merge fields, as it would be sent.
    pub body: String,
    /// The sender's pick of channel, as `SendPersonalMessage` takes it.
    pub channel: Option<Channel>,
}

/// The message as one recipient would get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Render {
    /// The recipient.
    pub recipient_id: PersonId,
    /// The channel the message would go by.
    pub channel: Channel,
    /// The phone number or email address it would go to; `None` for in-app.
    pub address: Option<String>,
    /// The recipient's language, which delivery translates the text into.
    pub language: String,
    /// The text as sent: merge fields rendered, the shared-phone label before an SMS to
    /// a shared number.
    pub text: String,
    /// Whether the shared-phone label leads the text.
    pub labelled: bool,
    /// The text's SMS encoding, length and segments (reported for every channel).
    pub measure: SmsMeasure,
}

/// The numbers an SMS to `recipient` may go to: their SMS contact points that are not
/// failing (the ones [`crate::plan::choose_channel`] picks from). The caller finds out
/// which of these other people of the district have too, and passes them to [`preview`].
pub fn sms_numbers(recipient: &PersonState) -> Vec<&str> {
    recipient
        .contact_points()
        .iter()
        .filter(|cp| cp.channel == ContactChannel::Sms && !cp.failing)
        .map(|cp| cp.address.as_str())
        .collect()
}

/// `request` as its recipient would get it, decided as sending it from `facts.actor`
/// now would be, against the sender's personal conversation with the recipient
/// (`conversation`, unstarted when there is none yet).
///
/// `facts` are what a send loads (the district, the sender, the recipient, and the
/// recipient's related people such as a guardian's students); `facts.command_id` only
/// names the message that is never recorded. `shared_numbers` are those of the
/// recipient's numbers that other people of the district have too.
///
/// # Errors
/// The [`ConversationError`] sending it would be refused with.
pub fn preview(
    conversation: &ConversationState,
    request: &PreviewRequest,
    facts: &Facts,
    shared_numbers: &[String],
) -> Result<Render, ConversationError> {
    let command = Command::SendPersonalMessage(SendPersonalMessage {
        recipient_id: request.recipient_id,
        body: request.body.clone(),
        subject: None,
        channel: request.channel,
        message_id: None,
    });
    let events = conversation::decide(conversation, &command, facts)?;
    let planned = events
        .into_iter()
        .find_map(|event| match event {
            Event::MessagePosted(posted) => posted
                .deliveries
                .into_iter()
                .find(|d| d.recipient_id == request.recipient_id),
            _ => None,
        })
        .ok_or(ConversationError::UnknownPerson {
            person_id: request.recipient_id,
        })?;
    // A personal message by SMS ends with the sender's name (`sms::is_signed`).
    let signed = match (
        planned.channel,
        facts.actor.person_id().and_then(|a| facts.person(a)),
    ) {
        (Channel::Sms, Some(sender))
            if sms::is_signed(sender.is_staff(), Some(SendAs::Personal)) =>
        {
            sms::signed_by(&planned.text, sender.name())
        }
        _ => planned.text,
    };
    let name = facts.person(request.recipient_id).map_or("", |p| p.name());
    let labelled = planned.channel == Channel::Sms
        && planned
            .address
            .as_ref()
            .is_some_and(|number| shared_numbers.contains(number))
        && !name.trim().is_empty();
    let text = if labelled {
        sms::label_for_shared_phone(&signed, name)
    } else {
        signed
    };
    Ok(Render {
        recipient_id: planned.recipient_id,
        channel: planned.channel,
        address: planned.address,
        language: planned.language,
        measure: sms::measure(&text),
        text,
        labelled,
    })
}

#[cfg(test)]
mod tests;
