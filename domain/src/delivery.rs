//! The delivery aggregate: one message to one recipient on one channel, from queued to
//! sent, delivered or failed. Provider callbacks arrive late, twice or out of order, so
//! every outcome that would not move the delivery forward is an idempotent no-op.

use crate::commands::{Command, QueueDelivery, RecordDeliveryOutcome, RecordFailedAttempt};
use crate::events::{
    DeliveryAttemptFailed, DeliveryDelivered, DeliveryFailed, DeliveryQueued, DeliverySent, Event,
};
use crate::facts::{Actor, Facts};
use crate::ids::{ConversationId, DeliveryId, MessageId};
use crate::plan::{DeliverySender, PlannedDelivery};
use crate::validation::ValidationError;
use crate::values::OutcomeStatus;

/// The longest provider error text recorded.
pub const MAX_ERROR_CHARS: usize = 2000;

/// How many attempts a delivery gets before a failure worth retrying becomes a
/// permanent one: a delivery that keeps failing ends as a failure, never silently.
pub const MAX_DELIVERY_ATTEMPTS: u32 = 5;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// Waiting for a channel worker.
    Queued,
    /// Handed to the provider.
    Sent,
    /// Arrived (final).
    Delivered,
    /// Did not arrive (final).
    Failed,
}

/// A delivery stream's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryState {
    plan: Option<PlannedDelivery>,
    message_id: Option<MessageId>,
    conversation_id: Option<ConversationId>,
    fallback_of: Option<DeliveryId>,
    sender: Option<DeliverySender>,
    status: Option<DeliveryStatus>,
    failed_attempts: u32,
    /// The attempt whose idempotency key the next attempt uses (0 before any failure:
    /// the next attempt's own).
    key_of: u32,
    /// Whether the worker's report of what it handed over (sender, text) is recorded.
    handed_over: bool,
    /// The provider's id of the message this delivery is, once one was recorded.
    provider_message_id: Option<String>,
}

impl DeliveryState {
    /// Whether the delivery was queued.
    pub fn is_queued(&self) -> bool {
        self.plan.is_some()
    }

    /// The plan, once queued.
    pub fn plan(&self) -> Option<&PlannedDelivery> {
        self.plan.as_ref()
    }

    /// The message delivered, once queued.
    pub fn message_id(&self) -> Option<MessageId> {
        self.message_id
    }

    /// The message's conversation, once queued.
    pub fn conversation_id(&self) -> Option<ConversationId> {
        self.conversation_id
    }

    /// Where it stands, once queued.
    pub fn status(&self) -> Option<DeliveryStatus> {
        self.status
    }

    /// Who it goes out as, once queued (when the queueing service said).
    pub fn sender(&self) -> Option<&DeliverySender> {
        self.sender.as_ref()
    }

    /// The failed delivery this one replaces on the other channel, if it does.
    pub fn fallback_of(&self) -> Option<DeliveryId> {
        self.fallback_of
    }

    /// The attempt a worker makes next (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.failed_attempts + 1
    }

    /// The attempt whose idempotency key the next attempt is sent with: its own, unless
    /// the attempts before it went unanswered (the provider may have taken the message),
    /// then the first of those. A worker that dies after the provider took a message,
    /// or a provider that took it but never answered, gets the same key again, and the
    /// provider does not send twice.
    pub fn send_key(&self) -> u32 {
        if self.key_of == 0 {
            self.attempt()
        } else {
            self.key_of
        }
    }

    /// Whether it still waits for a worker (queued, no outcome yet).
    pub fn awaits_sending(&self) -> bool {
        self.status == Some(DeliveryStatus::Queued)
    }

    /// Whether the provider reported an SMS sent or delivered that the worker never
    /// reported handing over: its request went unanswered (a timeout, a worker killed
    /// mid-request) and the status callback came first. The number and text it went
    /// with are then unknown, and without the number a reply cannot be routed; sending
    /// again with the same idempotency key ([`DeliveryState::send_key`]: a failed
    /// attempt after the callback is not recorded, so the key is still the one the
    /// provider took) gets the provider's answer without a second text.
    pub fn lacks_hand_over_report(&self) -> bool {
        matches!(
            self.status,
            Some(DeliveryStatus::Sent | DeliveryStatus::Delivered)
        ) && !self.handed_over
            && self.plan.as_ref().map(|p| p.channel) == Some(crate::values::Channel::Sms)
    }
}

/// Why a delivery command was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeliveryError {
    /// Only `system` services (the process manager, delivery workers) act on deliveries.
    #[error("not permitted")]
    NotPermitted,
    /// No delivery with this id was queued.
    #[error("unknown delivery {delivery_id}")]
    UnknownDelivery {
        /// The delivery.
        delivery_id: DeliveryId,
    },
    /// A malformed value.
    #[error(transparent)]
    Validation(#[from] ValidationError),
}

impl DeliveryError {
    /// The API error code.
    pub fn code(&self) -> &'static str {
        match self {
            DeliveryError::NotPermitted => "not_permitted",
            DeliveryError::UnknownDelivery { .. } => "unknown_delivery",
            DeliveryError::Validation(e) => e.code(),
        }
    }
}

/// Decides a delivery command.
///
/// # Errors
/// [`DeliveryError`] when a rule refuses it.
pub fn decide(
    state: &DeliveryState,
    cmd: &Command,
    facts: &Facts,
) -> Result<Vec<Event>, DeliveryError> {
    if !matches!(facts.actor, Actor::System(_)) {
        return Err(DeliveryError::NotPermitted);
    }
    match cmd {
        Command::QueueDelivery(c) => queue(state, c, facts),
        Command::RecordDeliveryOutcome(c) => record(state, c, facts),
        Command::RecordFailedAttempt(c) => failed_attempt(state, c, facts),
        other => Err(ValidationError::WrongStream {
            command: other.name(),
            state: "delivery",
        }
        .into()),
    }
}

fn queue(
    state: &DeliveryState,
    c: &QueueDelivery,
    facts: &Facts,
) -> Result<Vec<Event>, DeliveryError> {
    if state.is_queued() {
        return Ok(vec![]);
    }
    Ok(vec![DeliveryQueued {
        delivery: c.delivery.clone(),
        message_id: c.message_id,
        conversation_id: c.conversation_id,
        fallback_of: c.fallback_of,
        sender: c.sender.clone(),
        at: facts.now,
    }
    .into()])
}

fn check_error_length(error: Option<&str>) -> Result<(), DeliveryError> {
    if let Some(got) = error.map(|e| e.chars().count()) {
        if got > MAX_ERROR_CHARS {
            return Err(ValidationError::TooLong {
                field: "error",
                max: MAX_ERROR_CHARS,
                got,
            }
            .into());
        }
    }
    Ok(())
}

/// A retryable failure of the current attempt; the last allowed attempt's failure is
/// the delivery's final failure (it falls back; the address is not blamed). A report for another attempt, or for a delivery
/// that already has its outcome, changes nothing (a worker's retry of its report).
fn failed_attempt(
    state: &DeliveryState,
    c: &RecordFailedAttempt,
    facts: &Facts,
) -> Result<Vec<Event>, DeliveryError> {
    if state.status.is_none() {
        return Err(DeliveryError::UnknownDelivery {
            delivery_id: c.delivery_id,
        });
    }
    check_error_length(Some(&c.error))?;
    if !state.awaits_sending() || c.attempt != state.attempt() {
        return Ok(vec![]);
    }
    let mut events: Vec<Event> = vec![DeliveryAttemptFailed {
        delivery_id: c.delivery_id,
        attempt: c.attempt,
        error: c.error.clone(),
        unanswered: c.unanswered,
        at: facts.now,
    }
    .into()];
    if c.attempt >= MAX_DELIVERY_ATTEMPTS {
        events.push(
            DeliveryFailed {
                delivery_id: c.delivery_id,
                provider_message_id: None,
                error: Some(format!(
                    "gave up after {} attempts; the last said: {}",
                    c.attempt, c.error
                ))
                .map(|e| e.chars().take(MAX_ERROR_CHARS).collect()),
                // The attempts ran out (outages, rate limits); nothing said the address
                // is bad, so it is not marked failing. The message still falls back.
                permanent: false,
                at: facts.now,
            }
            .into(),
        );
    }
    Ok(events)
}

fn record(
    state: &DeliveryState,
    c: &RecordDeliveryOutcome,
    facts: &Facts,
) -> Result<Vec<Event>, DeliveryError> {
    let Some(current) = state.status else {
        return Err(DeliveryError::UnknownDelivery {
            delivery_id: c.delivery_id,
        });
    };
    check_error_length(c.error.as_deref())?;
    if let (Some(ours), Some(theirs)) = (&state.provider_message_id, &c.provider_message_id) {
        if ours != theirs {
            // A report about another provider message than the one this delivery is
            // (a stray copy, a mixed-up callback): it says nothing about this one.
            return Ok(vec![]);
        }
    }
    use DeliveryStatus as S;
    use OutcomeStatus as O;
    let details_given = c.sender.is_some() || c.sent_text.is_some();
    // An email the receiving server accepted can still bounce later (a full mailbox):
    // a permanent failure after `delivered` is recorded, so the message falls back to
    // SMS and the address is marked failing. Anything else after it is a late echo.
    let bounced = current == S::Delivered
        && c.status == O::Failed
        && c.permanent == Some(true)
        && state.plan.as_ref().map(|p| p.channel) == Some(crate::values::Channel::Email);
    let moves_forward = bounced
        || matches!(
            (current, c.status),
            (S::Queued, _) | (S::Sent, O::Delivered | O::Failed)
        );
    let (delivery_id, provider_message_id, at) =
        (c.delivery_id, c.provider_message_id.clone(), facts.now);
    let hand_over = || -> Event {
        DeliverySent {
            delivery_id,
            provider_message_id: provider_message_id.clone(),
            sender: c.sender.clone(),
            sent_text: c.sent_text.clone(),
            translated_to: c.translated_to.clone(),
            at,
        }
        .into()
    };
    if details_given && !state.handed_over && current != S::Queued {
        // The provider's callback (`sent`, `delivered`, `failed`) came before the
        // worker's report: what was handed over (from which number, which text) is
        // still recorded, so replies to that number are routed; the status moves only
        // forward.
        let mut events = vec![hand_over()];
        if moves_forward && c.status == O::Delivered {
            events.push(
                DeliveryDelivered {
                    delivery_id,
                    provider_message_id: provider_message_id.clone(),
                    at,
                }
                .into(),
            );
        }
        return Ok(events);
    }
    if !moves_forward {
        return Ok(vec![]);
    }
    if current == S::Queued && c.status == O::Delivered && details_given {
        // A channel that delivers on hand-over (the app, the sandbox): record what was
        // handed over, then that it arrived.
        return Ok(vec![
            hand_over(),
            DeliveryDelivered {
                delivery_id,
                provider_message_id,
                at,
            }
            .into(),
        ]);
    }
    let event: Event = match c.status {
        O::Sent => hand_over(),
        O::Delivered => DeliveryDelivered {
            delivery_id,
            provider_message_id,
            at,
        }
        .into(),
        O::Failed => DeliveryFailed {
            delivery_id,
            provider_message_id,
            error: c.error.clone(),
            permanent: c.permanent.unwrap_or(false),
            at,
        }
        .into(),
    };
    Ok(vec![event])
}

/// The first provider message id recorded is the delivery's.
fn remember_message(state: &mut DeliveryState, id: Option<&String>) {
    if state.provider_message_id.is_none() {
        state.provider_message_id = id.cloned();
    }
}

/// Applies a delivery event; other events leave the state as it is.
pub fn evolve(mut state: DeliveryState, event: &Event) -> DeliveryState {
    match event {
        Event::DeliveryQueued(e) => {
            state.plan = Some(e.delivery.clone());
            state.message_id = Some(e.message_id);
            state.conversation_id = Some(e.conversation_id);
            state.fallback_of = e.fallback_of;
            state.sender.clone_from(&e.sender);
            state.status = Some(DeliveryStatus::Queued);
        }
        Event::DeliverySent(e) => {
            // A provider's `sent` callback says nothing of the hand-over; the worker's
            // report does.
            if e.sender.is_some() || e.sent_text.is_some() {
                state.handed_over = true;
            }
            if state.status == Some(DeliveryStatus::Queued) {
                state.status = Some(DeliveryStatus::Sent);
            }
            remember_message(&mut state, e.provider_message_id.as_ref());
        }
        Event::DeliveryDelivered(e) => {
            state.status = Some(DeliveryStatus::Delivered);
            remember_message(&mut state, e.provider_message_id.as_ref());
        }
        Event::DeliveryFailed(e) => {
            state.status = Some(DeliveryStatus::Failed);
            remember_message(&mut state, e.provider_message_id.as_ref());
        }
        Event::DeliveryAttemptFailed(e) => {
            // The key the failed attempt went with, kept while attempts go unanswered.
            let sent_with = if state.key_of == 0 {
                e.attempt
            } else {
                state.key_of
            };
            state.key_of = if e.unanswered { sent_with } else { 0 };
            state.failed_attempts = e.attempt;
        }
        _ => {}
    }
    state
}

#[cfg(test)]
mod tests;
