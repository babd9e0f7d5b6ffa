//! An SMS line: one of the district's numbers and one family number
//! (`smsline-{district}:{ours}:{theirs}`). It knows which conversation last sent an SMS
//! over it, so a reply finds its way ("inbound SMS is accepted only from a number that
//! was sent an SMS from the number it replies to"), and whether the family number said
//! STOP, so nothing more goes to it by SMS from that number until START.

use crate::commands::{Command, RecordSmsSent, SetSmsOptOut};
use crate::events::{Event, SmsLineUsed, SmsOptedIn, SmsOptedOut};
use crate::facts::{Actor, Facts};
use crate::ids::{ConversationId, DeliveryId, PersonId};
use crate::validation::ValidationError;

/// Where the line's last SMS came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastSent {
    /// Its conversation.
    pub conversation_id: ConversationId,
    /// The person it was for.
    pub recipient_id: PersonId,
    /// The delivery that sent it.
    pub delivery_id: DeliveryId,
}

/// An SMS line's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SmsLineState {
    last_sent: Option<LastSent>,
    opted_out: bool,
}

impl SmsLineState {
    /// The conversation a reply over this line belongs to: the last one that sent an SMS
    /// over it.
    pub fn last_sent(&self) -> Option<LastSent> {
        self.last_sent
    }

    /// Whether the family number said STOP (and not START since).
    pub fn is_opted_out(&self) -> bool {
        self.opted_out
    }
}

/// Why an SMS line command was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SmsLineError {
    /// Only Homeroom's own services act on SMS lines.
    #[error("not permitted")]
    NotPermitted,
    /// A malformed value.
    #[error(transparent)]
    Validation(#[from] ValidationError),
}

impl SmsLineError {
    /// The API error code.
    pub fn code(&self) -> &'static str {
        match self {
            SmsLineError::NotPermitted => "not_permitted",
            SmsLineError::Validation(e) => e.code(),
        }
    }
}

/// Decides an SMS line command.
///
/// # Errors
/// [`SmsLineError`] when a rule refuses it.
pub fn decide(
    state: &SmsLineState,
    cmd: &Command,
    facts: &Facts,
) -> Result<Vec<Event>, SmsLineError> {
    if !matches!(facts.actor, Actor::System(_)) {
        return Err(SmsLineError::NotPermitted);
    }
    match cmd {
        Command::RecordSmsSent(c) => Ok(sent(state, c, facts)),
        Command::SetSmsOptOut(c) => Ok(opt_out(state, c, facts)),
        other => Err(ValidationError::WrongStream {
            command: other.name(),
            state: "sms line",
        }
        .into()),
    }
}

/// Recording the same delivery twice (a replayed reaction) changes nothing.
fn sent(state: &SmsLineState, c: &RecordSmsSent, facts: &Facts) -> Vec<Event> {
    if state
        .last_sent
        .is_some_and(|last| last.delivery_id == c.delivery_id)
    {
        return vec![];
    }
    vec![SmsLineUsed {
        our_number: c.our_number.clone(),
        their_number: c.their_number.clone(),
        conversation_id: c.conversation_id,
        recipient_id: c.recipient_id,
        delivery_id: c.delivery_id,
        at: facts.now,
    }
    .into()]
}

/// STOP on a stopped line changes nothing. START is recorded whenever it comes, on an
/// open line too: it is the family saying texts reach them, which also clears a failing
/// mark on their phone (a carrier's bounce, say), whatever set it.
fn opt_out(state: &SmsLineState, c: &SetSmsOptOut, facts: &Facts) -> Vec<Event> {
    if c.opted_out && state.opted_out {
        return vec![];
    }
    let (our_number, their_number, message_sid, at) = (
        c.our_number.clone(),
        c.their_number.clone(),
        c.message_sid.clone(),
        facts.now,
    );
    vec![if c.opted_out {
        SmsOptedOut {
            our_number,
            their_number,
            message_sid,
            at,
        }
        .into()
    } else {
        SmsOptedIn {
            our_number,
            their_number,
            message_sid,
            at,
        }
        .into()
    }]
}

/// Applies an SMS line event; other events leave the state as it is.
pub fn evolve(mut state: SmsLineState, event: &Event) -> SmsLineState {
    match event {
        Event::SmsLineUsed(e) => {
            state.last_sent = Some(LastSent {
                conversation_id: e.conversation_id,
                recipient_id: e.recipient_id,
                delivery_id: e.delivery_id,
            });
        }
        Event::SmsOptedOut(_) => state.opted_out = true,
        Event::SmsOptedIn(_) => state.opted_out = false,
        _ => {}
    }
    state
}

#[cfg(test)]
mod tests;
