//! The delivery worker: one queued delivery at a time (many at once), from the work
//! queue to the provider and back into the log.
//!
//! For each `delivery_queued` item:
//!
//! 1. The delivery's stream is read fresh. A delivery that already has its outcome
//!    (a redelivered item, another worker's) is acknowledged and left alone.
//! 2. The attempt number comes from the log (failed attempts recorded so far + 1), never
//!    from the queue. The provider's idempotency key is the attempt's own, or, after
//!    attempts the provider left unanswered, the first of theirs
//!    ([`DeliveryState::send_key`]): a worker killed after the provider took the
//!    message, or a provider that took it without answering, gets the same key again,
//!    and the provider does not send twice.
//! 3. The channel: an SMS goes from the school's number (school messages) or the
//!    sender's own number from the district's pool (assigned at their first SMS; the
//!    school's number when the pool is empty; family members' and students' messages
//!    from the school's number), never from a number the recipient said STOP to, with
//!    `For Dennis: ` in front when the number is shared; an email goes from the sender's
//!    or the school's name; the app is delivered on hand-over. The text is translated to
//!    the recipient's language by the [`Translator`] (the original stays in the log).
//! 4. The outcome is recorded (sent with what was handed over, or failed), or a
//!    retryable failure is recorded as a failed attempt and the item comes back after a
//!    backoff; the fifth failure is final (a domain rule). A failure blames the address
//!    (the contact point is marked failing) only when a provider refused it for good
//!    ([`ChannelError::condemns_address`]). Only then is the item acknowledged.

use crate::{consume, district_of, react, RuntimeError};
use homeroom_app::preview::PhoneBook;
use homeroom_app::turns::Turns;
use homeroom_app::{codec, CommandError, CommandService};
use homeroom_bus::{WorkItem, WorkQueue};
use homeroom_channels::{
    AttemptKey, ChannelError, EmailSender, Handover, OutboundEmail, OutboundSms, SmsSender,
    Translator,
};
use homeroom_domain::commands::{AssignSenderNumber, RecordDeliveryOutcome, RecordFailedAttempt};
use homeroom_domain::delivery::MAX_DELIVERY_ATTEMPTS;
use homeroom_domain::plan::{DeliverySender, PlannedDelivery};
use homeroom_domain::{
    sms, Channel, ConversationId, DeliveryId, DeliveryState, DistrictError, DistrictId,
    DistrictState, DomainError, Event, OutcomeStatus, PersonState, PhoneNumber, SendAs, State,
    StreamRef,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The event type workers take.
pub const WORKS_ON: &[&str] = &["delivery_queued"];

/// How a worker takes and retries its work.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Deliveries taken and handled together.
    pub batch: usize,
    /// How long one fetch waits for work.
    pub poll: Duration,
    /// The wait after the first failed attempt; it doubles with each further one.
    pub first_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// The external base URL status callbacks go to (`HOMEROOM_PUBLIC_URL`), if any.
    pub public_url: Option<String>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            batch: 64,
            poll: Duration::from_secs(1),
            first_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(300),
            public_url: None,
        }
    }
}

impl WorkerConfig {
    /// The wait before the attempt after `failed` failed ones.
    pub fn backoff(&self, failed: u32) -> Duration {
        let factor = 2u32.saturating_pow(failed.saturating_sub(1).min(20));
        self.first_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// The providers a worker hands messages to.
#[derive(Clone)]
pub struct Channels {
    /// SMS.
    pub sms: Arc<dyn SmsSender>,
    /// Email.
    pub email: Arc<dyn EmailSender>,
    /// Machine translation.
    pub translator: Arc<dyn Translator>,
    /// Who has a phone number (for the `For Dennis: ` label on a shared phone), the
    /// same book `POST /v1/preview` asks.
    pub phones: Arc<dyn PhoneBook>,
}

/// What became of one delivery item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Its outcome is recorded (now or earlier): acknowledge it.
    Done,
    /// An attempt failed and was recorded: hand it out again after the wait.
    RetryAfter(Duration),
}

/// A delivery worker over one command service and one set of channels.
#[derive(Clone)]
pub struct Worker {
    commands: Arc<CommandService>,
    channels: Channels,
    config: WorkerConfig,
    /// Deliveries to one address take turns, in the order the worker took them (the
    /// log's), so a family gets texts written back to back in the order they were
    /// written, while deliveries to other addresses go on beside them.
    turns: Turns<String>,
}

/// Why an attempt produced no hand-over: refused for good, or worth retrying.
enum Attempt {
    Handed {
        handover: Handover,
        sender: String,
        text: String,
        translated_to: Option<String>,
    },
    Failed(ChannelError),
}

impl Worker {
    /// A worker recording through `commands` and sending through `channels`.
    pub fn new(commands: Arc<CommandService>, channels: Channels, config: WorkerConfig) -> Self {
        Self {
            commands,
            channels,
            config,
            turns: Turns::default(),
        }
    }

    /// Takes deliveries from `queue` until `shutdown`, and settles each: acknowledged
    /// once its outcome is recorded, handed out again after a backoff otherwise. A
    /// batch in hand is finished before it stops.
    pub async fn run(&self, queue: Arc<dyn WorkQueue>, shutdown: impl Future<Output = ()>) {
        consume(
            &*queue,
            self.config.batch,
            self.config.poll,
            self.config.first_backoff.min(Duration::from_secs(1)),
            "worker",
            shutdown,
            |item| self.settle(item),
        )
        .await;
    }

    async fn settle(&self, item: WorkItem) {
        // A provider may hold a send longer than the queue waits: the item is kept ours
        // meanwhile, so no other worker sends it too.
        let handled = item.while_in_progress(self.handle(&item.event)).await;
        let settled = match handled {
            Ok(Handled::Done) => item.ack().await,
            Ok(Handled::RetryAfter(wait)) => item.retry_after(wait).await,
            Err(error) => {
                // Nothing was recorded for this attempt: the same attempt runs again,
                // with the same idempotency key.
                tracing::warn!(event = %item.event.event_id, attempt = item.attempt, %error, "a delivery could not be handled; it will be retried");
                let wait = self.config.backoff(item.attempt);
                item.retry_after(wait).await
            }
        };
        if let Err(error) = settled {
            tracing::warn!(%error, "a delivery could not be settled; it will come back");
        }
    }

    /// Handles one `delivery_queued` event: sends its current attempt (unless its
    /// outcome is already recorded) and records what happened.
    ///
    /// # Errors
    /// [`RuntimeError`] when nothing could be recorded; handling it again is safe.
    pub async fn handle(
        &self,
        recorded: &homeroom_eventstore::RecordedEvent,
    ) -> Result<Handled, RuntimeError> {
        let district = district_of(recorded)?;
        let Event::DeliveryQueued(queued) = codec::decode(recorded)? else {
            return Ok(Handled::Done);
        };
        // Taken before anything else is awaited, so turns follow the order of the batch.
        let _turn = match queued.delivery.address.as_deref() {
            Some(address) => Some(self.turns.take(address.to_owned()).await),
            None => None,
        };
        let id = queued.delivery.delivery_id;
        let (_, state) = self
            .commands
            .load(&district, &StreamRef::Delivery(id))
            .await?;
        let State::Delivery(delivery) = state else {
            return Ok(Handled::Done);
        };
        if delivery.lacks_hand_over_report() {
            return self
                .report_hand_over(&district, recorded, id, &delivery)
                .await;
        }
        if !delivery.awaits_sending() {
            return Ok(Handled::Done);
        }
        let attempt = delivery.attempt();
        // Sent with the key of the first of the attempts the provider left unanswered
        // (it may have taken the message), else this attempt's own.
        let key = AttemptKey {
            delivery_id: id,
            attempt: delivery.send_key(),
        };
        let outcome = match self.attempt(&district, &delivery, key).await {
            Ok(outcome) => outcome,
            // A rule refused a step of sending (it would refuse it again): the delivery
            // fails for the record instead of coming back for ever.
            Err(RuntimeError::Command(CommandError::Rejected(refusal))) => {
                Attempt::Failed(ChannelError::Undeliverable {
                    code: refusal.code().to_owned(),
                    message: refusal.to_string(),
                })
            }
            Err(error) => return Err(error),
        };
        self.record(&district, recorded, id, attempt, outcome).await
    }

    /// Asks the provider again, with the key of the attempt it left unanswered, for the
    /// text it already took (it answers with that message instead of sending another),
    /// and records what was handed over. The outcome is the provider's already: when
    /// asking fails, nothing more is recorded.
    async fn report_hand_over(
        &self,
        district: &DistrictId,
        cause: &homeroom_eventstore::RecordedEvent,
        id: DeliveryId,
        delivery: &DeliveryState,
    ) -> Result<Handled, RuntimeError> {
        let key = AttemptKey {
            delivery_id: id,
            attempt: delivery.send_key(),
        };
        match self.attempt(district, delivery, key).await {
            Ok(handed @ Attempt::Handed { .. }) => {
                self.record(district, cause, id, delivery.attempt(), handed)
                    .await
            }
            Ok(Attempt::Failed(error)) => {
                tracing::warn!(delivery = %id, %error, "the provider reported this text sent, but asking it again for what it took failed; the number it went from stays unknown");
                Ok(Handled::Done)
            }
            Err(RuntimeError::Command(CommandError::Rejected(refusal))) => {
                tracing::warn!(delivery = %id, %refusal, "the provider reported this text sent, but a rule refused a step of asking it again; the number it went from stays unknown");
                Ok(Handled::Done)
            }
            Err(error) => Err(error),
        }
    }

    async fn attempt(
        &self,
        district: &DistrictId,
        delivery: &DeliveryState,
        key: AttemptKey,
    ) -> Result<Attempt, RuntimeError> {
        let Some(plan) = delivery.plan() else {
            return Ok(Attempt::Failed(ChannelError::NotConfigured));
        };
        let sender = delivery.sender();
        let mut people = vec![plan.recipient_id];
        people.extend(sender.map(|s| s.author_id));
        let (district_state, people) = self.commands.directory(district, &people).await?;
        let recipient = &people[0];
        let author = people.get(1);
        let source_language = author.map_or("en", |a| a.language());
        let (text, translated_to) = match self
            .channels
            .translator
            .translate(&plan.text, source_language, &plan.language)
            .await
        {
            Ok(t) if t.machine_translated => (t.text, Some(t.language)),
            Ok(_) => (plan.text.clone(), None),
            // The translation service is down: try again later, but on the last attempt
            // the message goes out as written rather than not at all (and is recorded
            // untranslated). A translator's outage says nothing about the address.
            Err(error) if delivery.attempt() < MAX_DELIVERY_ATTEMPTS => {
                return Ok(Attempt::Failed(ChannelError::unavailable(error)))
            }
            Err(error) => {
                tracing::warn!(delivery = %key.delivery_id, attempt = delivery.attempt(), %error, "translation unavailable on the last attempt; sending the original");
                (plan.text.clone(), None)
            }
        };
        let sender_name = sender_name(&district_state, sender, author.map(|a| a.name()));
        match plan.channel {
            Channel::App if !homeroom_domain::app_reaches(recipient) => {
                Ok(Attempt::Failed(refused(
                    "no_contact_point",
                    "the recipient has no working phone or email and does not use the app; the message waits in their Homeroom inbox",
                )))
            }
            Channel::App => Ok(Attempt::Handed {
                handover: Handover::Delivered {
                    provider_message_id: None,
                },
                sender: "app".to_owned(),
                text,
                translated_to,
            }),
            Channel::Email => {
                let Some(to) = plan.address.clone() else {
                    return Ok(Attempt::Failed(refused(
                        "no_address",
                        "the recipient has no email address",
                    )));
                };
                let email = OutboundEmail {
                    key,
                    from_name: sender_name.clone(),
                    to,
                    subject: match &plan.subject {
                        Some(subject) => {
                            self.subject_for(subject, source_language, translated_to.as_deref())
                                .await
                        }
                        None => format!("A message from {sender_name}"),
                    },
                    body: text.clone(),
                };
                Ok(match contained(self.channels.email.send_email(&email)).await {
                    Ok(handover) => Attempt::Handed {
                        handover,
                        sender: sender_name,
                        text,
                        translated_to,
                    },
                    Err(error) => Attempt::Failed(error),
                })
            }
            Channel::Sms => {
                let goes_out_as = GoesOutAs {
                    sender,
                    author,
                    conversation: delivery.conversation_id(),
                };
                self.attempt_sms(
                    district,
                    &district_state,
                    plan,
                    &goes_out_as,
                    key,
                    text,
                    translated_to,
                    recipient.name(),
                )
                .await
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempt_sms(
        &self,
        district: &DistrictId,
        district_state: &DistrictState,
        plan: &PlannedDelivery,
        goes_out_as: &GoesOutAs<'_>,
        key: AttemptKey,
        text: String,
        translated_to: Option<String>,
        recipient_name: &str,
    ) -> Result<Attempt, RuntimeError> {
        let Some(to) = plan
            .address
            .as_deref()
            .and_then(|a| PhoneNumber::parse(a).ok())
        else {
            return Ok(Attempt::Failed(refused(
                "no_address",
                "the recipient has no phone number",
            )));
        };
        let Some(from) = self
            .sending_number(district, district_state, goes_out_as)
            .await?
        else {
            return Ok(Attempt::Failed(refused(
                "no_sender_number",
                "no SMS number to send from: register the school's number or add sender numbers",
            )));
        };
        let (_, line) = self
            .commands
            .load(
                district,
                &StreamRef::SmsLine {
                    ours: from.clone(),
                    theirs: to.clone(),
                },
            )
            .await?;
        if matches!(&line, State::SmsLine(l) if l.is_opted_out()) {
            return Ok(Attempt::Failed(ChannelError::OptedOut {
                message: format!("the recipient answered STOP to {from}"),
            }));
        }
        let holders = self
            .channels
            .phones
            .people_with_number(district, to.as_str())
            .await?;
        // Signed with its author's name where the rule says (`sms::is_signed`): a staff
        // member's own message, a family member's words relayed to the others.
        let sent_as = goes_out_as.sender.map(|s| s.sent_as);
        let text = match goes_out_as.author {
            Some(author) if sms::is_signed(author.is_staff(), sent_as) => {
                sms::signed_by(&text, author.name())
            }
            _ => text,
        };
        let body = if holders.iter().any(|p| *p != plan.recipient_id) {
            sms::label_for_shared_phone(&text, recipient_name)
        } else {
            text
        };
        // Providers refuse a text over what one SMS may carry: it goes by the other
        // channel instead (the reactor's fallback), as `POST /v1/preview` warned.
        if sms::too_long_for_sms(&body) {
            return Ok(Attempt::Failed(refused(
                "too_long_for_sms",
                &format!(
                    "{} characters, more than the {} one SMS may carry",
                    body.chars().count(),
                    sms::MAX_SMS_CHARS
                ),
            )));
        }
        let status_callback = self.config.public_url.as_ref().map(|base| {
            format!(
                "{}/v1/webhooks/twilio/status?district={district}&delivery={}",
                base.trim_end_matches('/'),
                key.delivery_id
            )
        });
        let sms = OutboundSms {
            key,
            from: from.to_string(),
            to: to.to_string(),
            body: body.clone(),
            status_callback,
        };
        Ok(match contained(self.channels.sms.send_sms(&sms)).await {
            Ok(handover) => Attempt::Handed {
                handover,
                sender: from.to_string(),
                text: body,
                translated_to,
            },
            Err(error) => Attempt::Failed(error),
        })
    }

    /// An email's subject in the language its body was translated to; as written when
    /// the body was not translated, or when the translator fails now (the body already
    /// went through it, so the message is not held up for its subject line).
    async fn subject_for(&self, subject: &str, from: &str, translated_to: Option<&str>) -> String {
        let Some(to) = translated_to else {
            return subject.to_owned();
        };
        match self.channels.translator.translate(subject, from, to).await {
            Ok(t) if t.machine_translated => t.text,
            Ok(_) => subject.to_owned(),
            Err(error) => {
                tracing::warn!(%error, "an email subject could not be translated; it goes as written");
                subject.to_owned()
            }
        }
    }

    /// The number an SMS goes out from: the school's for school messages; the sender's
    /// own for personal ones (assigned from the pool at their first SMS), the school's
    /// when the pool has none left. Only staff have numbers of their own: a family
    /// member's or student's message in a group goes out from the school's number, or,
    /// for a school without one, from the number of the staff member who started the
    /// conversation (the number the others were texted from); replies to it find the
    /// conversation by that line.
    async fn sending_number(
        &self,
        district: &DistrictId,
        district_state: &DistrictState,
        goes_out_as: &GoesOutAs<'_>,
    ) -> Result<Option<PhoneNumber>, RuntimeError> {
        let Some(sender) = goes_out_as.sender else {
            return Ok(None);
        };
        let school_number = district_state
            .school(sender.school_id)
            .and_then(|s| s.sms_number.clone());
        if sender.sent_as == SendAs::School {
            return Ok(school_number);
        }
        if !goes_out_as.author.is_some_and(PersonState::is_staff) {
            if school_number.is_some() {
                return Ok(school_number);
            }
            let Some(conversation) = goes_out_as.conversation else {
                return Ok(None);
            };
            let (_, state) = self
                .commands
                .load(district, &StreamRef::Conversation(conversation))
                .await?;
            let starter = match state {
                State::Conversation(c) => c.started_by(),
                _ => None,
            };
            return Ok(starter.and_then(|s| district_state.sender_number_of(s).cloned()));
        }
        if let Some(own) = district_state.sender_number_of(sender.author_id) {
            return Ok(Some(own.clone()));
        }
        if district_state.sender_numbers().is_empty() {
            return Ok(school_number);
        }
        match react(
            &self.commands,
            district,
            None,
            AssignSenderNumber {
                person_id: sender.author_id,
            },
        )
        .await
        {
            Ok(_) => {
                let (district_state, _) = self.commands.directory(district, &[]).await?;
                Ok(district_state
                    .sender_number_of(sender.author_id)
                    .cloned()
                    .or(school_number))
            }
            Err(CommandError::Rejected(DomainError::District(
                DistrictError::NoSenderNumberAvailable,
            ))) => Ok(school_number),
            Err(error) => Err(error.into()),
        }
    }

    async fn record(
        &self,
        district: &DistrictId,
        cause: &homeroom_eventstore::RecordedEvent,
        delivery_id: DeliveryId,
        attempt: u32,
        outcome: Attempt,
    ) -> Result<Handled, RuntimeError> {
        let report = |status,
                      provider_message_id,
                      error,
                      permanent,
                      handed: Option<(String, String, Option<String>)>| {
            let (sender, sent_text, translated_to) = match handed {
                Some((s, t, l)) => (Some(s), Some(t), l),
                None => (None, None, None),
            };
            RecordDeliveryOutcome {
                delivery_id,
                status,
                provider_message_id,
                error,
                permanent,
                sender,
                sent_text,
                translated_to,
            }
        };
        match outcome {
            Attempt::Handed {
                handover,
                sender,
                text,
                translated_to,
            } => {
                let (status, provider_message_id) = match handover {
                    Handover::Accepted {
                        provider_message_id,
                    } => (OutcomeStatus::Sent, Some(provider_message_id)),
                    Handover::Delivered {
                        provider_message_id,
                    } => (OutcomeStatus::Delivered, provider_message_id),
                };
                react(
                    &self.commands,
                    district,
                    Some(cause),
                    report(
                        status,
                        provider_message_id,
                        None,
                        None,
                        Some((sender, text, translated_to)),
                    ),
                )
                .await?;
                Ok(Handled::Done)
            }
            Attempt::Failed(error) if error.is_permanent() => {
                react(
                    &self.commands,
                    district,
                    Some(cause),
                    report(
                        OutcomeStatus::Failed,
                        None,
                        Some(error.to_string()),
                        Some(error.condemns_address()),
                        None,
                    ),
                )
                .await?;
                Ok(Handled::Done)
            }
            Attempt::Failed(error) => {
                let recorded = react(
                    &self.commands,
                    district,
                    Some(cause),
                    RecordFailedAttempt {
                        delivery_id,
                        attempt,
                        error: error.to_string().chars().take(1_000).collect(),
                        // No answer (a timeout, a dropped connection, a provider
                        // failing on its side): it may have taken the message.
                        unanswered: matches!(error, ChannelError::Unavailable(_)),
                    },
                )
                .await?;
                let gave_up = recorded
                    .events
                    .iter()
                    .any(|e| e.event_type == "delivery_failed");
                Ok(if gave_up {
                    Handled::Done
                } else {
                    Handled::RetryAfter(self.config.backoff(attempt))
                })
            }
        }
    }
}

/// Who a delivery goes out as, for choosing the number it is texted from.
struct GoesOutAs<'a> {
    /// The message's author and the identity they sent it under.
    sender: Option<&'a DeliverySender>,
    /// The author, as the directory has them (only staff have numbers of their own).
    author: Option<&'a PersonState>,
    /// The message's conversation (whose starter's number a family member's message
    /// uses when the school has none).
    conversation: Option<ConversationId>,
}

/// The name a message goes out under: the school's for school messages, the author's
/// for their own.
fn sender_name(
    district: &DistrictState,
    sender: Option<&DeliverySender>,
    author_name: Option<&str>,
) -> String {
    let school = sender
        .and_then(|s| district.school(s.school_id))
        .map(|s| s.name.clone());
    match sender.map(|s| s.sent_as) {
        Some(SendAs::School) => school.unwrap_or_else(|| "Your school".to_owned()),
        _ => author_name
            .map(str::to_owned)
            .or(school)
            .unwrap_or_else(|| "Your school".to_owned()),
    }
}

/// A refusal of Homeroom's own, before any provider is asked (no address, no number to
/// send from): final, and never the address's fault.
fn refused(code: &str, message: &str) -> ChannelError {
    ChannelError::Undeliverable {
        code: code.to_owned(),
        message: message.to_owned(),
    }
}

/// A channel adapter's send, with a panic inside it made this one delivery's failure
/// (`Undeliverable`, code `adapter_failed`: not retried, not the address's fault, falls
/// back to the other channel). Without it one odd value in one delivery (a library that
/// panics on a header it cannot write) stops the worker, and every delivery queued
/// behind it, in every district, waits for ever.
async fn contained(
    send: impl std::future::Future<Output = Result<Handover, ChannelError>>,
) -> Result<Handover, ChannelError> {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(send).catch_unwind().await {
        Ok(sent) => sent,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the channel adapter panicked".to_owned());
            tracing::error!(%message, "a channel adapter panicked; the delivery fails");
            Err(ChannelError::Undeliverable {
                code: "adapter_failed".to_owned(),
                message,
            })
        }
    }
}
