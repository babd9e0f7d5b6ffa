//! The process managers: reactions that span streams, driven by the log through a
//! [`WorkQueue`] and recorded through the command service.
//!
//! | the log says | the reactor records |
//! |---|---|
//! | `message_posted` | `QueueDelivery` for each planned recipient (who it goes out as included) |
//! | `delivery_failed` | `MarkContactPointFailing` (when permanent) and, where the recipient has another channel, `QueueDelivery` of the same message by it (once) |
//! | `delivery_sent` of an SMS | `RecordSmsSent` on the line between the sending number and the recipient's |
//! | `school_registered` with a number, `sender_numbers_added`, `sender_number_assigned` | `BindSmsNumber`, so inbound SMS to it find the district and no other district can take it |
//! | `sms_opted_in` | `ResetContactPoint` of the line's recipient and of everyone else with that phone (the [`PhoneBook`]), so texts go by SMS again whatever marked it failing (an opt-out no longer marks the phone failing, but logs from before did; a carrier's bounce of a shared phone marks only the person it was for) |
//!
//! Each reaction decides to do nothing when it was already done, so a replayed or
//! redelivered event converges on the same log.

use crate::{consume, district_of, last_sent_on, react, react_once, react_once_for, RuntimeError};
use homeroom_app::codec;
use homeroom_app::preview::PhoneBook;
use homeroom_app::{CommandError, CommandService};
use homeroom_bus::{WorkItem, WorkQueue};
use homeroom_domain::commands::{
    BindSmsNumber, DeliverySender, MarkContactPointFailing, QueueDelivery, RecordSmsSent,
    ResetContactPoint,
};
use homeroom_domain::events::MessagePosted;
use homeroom_domain::plan::fallback_for;
use homeroom_domain::{
    fallback_delivery_id, Channel, DistrictId, DomainError, Event, NumberOwner, PhoneNumber,
    SchoolId, SmsNumberError, State, StreamRef,
};
use homeroom_eventstore::RecordedEvent;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The event types the reactor acts on (an in-process queue is fed only these).
pub const REACTS_TO: &[&str] = &[
    "message_posted",
    "delivery_failed",
    "delivery_sent",
    "school_registered",
    "sender_numbers_added",
    "sender_number_assigned",
    "sms_opted_in",
];

/// How the reactor takes its work.
#[derive(Debug, Clone)]
pub struct ReactorConfig {
    /// Events taken and handled together.
    pub batch: usize,
    /// How long one fetch waits for work.
    pub poll: Duration,
    /// The pause before an event whose reaction failed comes back the first time; it
    /// doubles with every failure, up to [`LONGEST_RETRY_DELAY`].
    pub retry_delay: Duration,
}

/// The longest pause between two tries of a failing reaction: an event that cannot be
/// decoded (written by a newer Homeroom) fails every time, and should not fill the log
/// twice a second; a store back from an outage should not wait long for the reactions
/// held up meanwhile.
pub const LONGEST_RETRY_DELAY: Duration = Duration::from_secs(60);

/// The pause before the next try of a reaction that failed on its `attempt`-th try.
fn retry_delay(first: Duration, attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    first
        .saturating_mul(1 << doublings)
        .min(LONGEST_RETRY_DELAY)
}

impl Default for ReactorConfig {
    fn default() -> Self {
        Self {
            batch: 64,
            poll: Duration::from_secs(1),
            retry_delay: Duration::from_millis(500),
        }
    }
}

/// How many times a reaction a rule refuses is tried before it is given up: a refusal
/// may follow a fact the reaction read a moment too early, but not three times running.
pub const REFUSALS_BEFORE_GIVING_UP: u32 = 3;

/// The process managers, over one command service.
#[derive(Clone)]
pub struct Reactor {
    commands: Arc<CommandService>,
    phones: Arc<dyn PhoneBook>,
    config: ReactorConfig,
}

impl Reactor {
    /// Reactions recorded through `commands`; `phones` says who else has a phone a
    /// reaction is about.
    pub fn new(
        commands: Arc<CommandService>,
        phones: Arc<dyn PhoneBook>,
        config: ReactorConfig,
    ) -> Self {
        Self {
            commands,
            phones,
            config,
        }
    }

    /// Takes events from `queue` and reacts to them until `shutdown`, acknowledging each
    /// once its reaction is recorded; a failed reaction comes back after a pause, and
    /// one a rule refuses [`REFUSALS_BEFORE_GIVING_UP`] times is given up (logged as an
    /// error) so it cannot hold the events behind it.
    pub async fn run(&self, queue: Arc<dyn WorkQueue>, shutdown: impl Future<Output = ()>) {
        consume(
            &*queue,
            self.config.batch,
            self.config.poll,
            self.config.retry_delay,
            "reactor",
            shutdown,
            |item| self.settle(item),
        )
        .await;
    }

    async fn settle(&self, item: WorkItem) {
        let settled = match self.react_to(&item.event).await {
            Ok(()) => item.ack().await,
            // A rule refused the reaction again and again: it is not a passing failure,
            // and retrying it for ever would hold a place in the queue from the events
            // behind it. The event stays in the log and the refusal in the log output
            // and the command metrics (`homeroom_commands_total{outcome=code}`).
            Err(RuntimeError::Command(CommandError::Rejected(refusal)))
                if item.attempt >= REFUSALS_BEFORE_GIVING_UP =>
            {
                tracing::error!(
                    event = %item.event.event_id,
                    event_type = %item.event.event_type,
                    attempt = item.attempt,
                    code = refusal.code(),
                    %refusal,
                    "a reaction was refused by a rule every time; giving it up"
                );
                item.ack().await
            }
            Err(error) => {
                tracing::warn!(
                    event = %item.event.event_id,
                    event_type = %item.event.event_type,
                    attempt = item.attempt,
                    %error,
                    "a reaction failed; it will be retried"
                );
                let pause = retry_delay(self.config.retry_delay, item.attempt);
                item.retry_after(pause).await
            }
        };
        if let Err(error) = settled {
            tracing::warn!(%error, "a reaction could not be settled; it will come back");
        }
    }

    /// Reacts to one recorded event (doing nothing for events it does not react to).
    ///
    /// # Errors
    /// [`RuntimeError`] when the reaction could not be recorded; retrying is safe.
    pub async fn react_to(&self, recorded: &RecordedEvent) -> Result<(), RuntimeError> {
        if !REACTS_TO.contains(&recorded.event_type.as_str()) {
            return Ok(());
        }
        let district = district_of(recorded)?;
        match codec::decode(recorded)? {
            Event::MessagePosted(m) => self.queue_deliveries(&district, recorded, &m).await,
            Event::DeliveryFailed(f) => {
                self.fall_back(&district, recorded, f.delivery_id, f.permanent)
                    .await
            }
            Event::DeliverySent(s) => {
                self.record_line(&district, recorded, s.delivery_id, s.sender.as_deref())
                    .await
            }
            Event::SchoolRegistered(e) => match e.sms_number {
                Some(number) => {
                    self.bind(
                        &district,
                        recorded,
                        number,
                        NumberOwner::School(e.school_id),
                    )
                    .await
                }
                None => Ok(()),
            },
            Event::SenderNumbersAdded(e) => {
                for number in e.numbers {
                    self.bind(&district, recorded, number, NumberOwner::Pool)
                        .await?;
                }
                Ok(())
            }
            Event::SenderNumberAssigned(e) => {
                self.bind(
                    &district,
                    recorded,
                    e.number,
                    NumberOwner::Person(e.person_id),
                )
                .await
            }
            Event::SmsOptedIn(e) => {
                self.reset_line(&district, recorded, e.our_number, e.their_number)
                    .await
            }
            _ => Ok(()),
        }
    }

    async fn queue_deliveries(
        &self,
        district: &DistrictId,
        cause: &RecordedEvent,
        posted: &MessagePosted,
    ) -> Result<(), RuntimeError> {
        let school_id = match cause
            .metadata
            .school
            .as_deref()
            .and_then(|s| s.parse::<uuid::Uuid>().ok())
        {
            Some(id) => SchoolId::new(id),
            None => {
                let (_, state) = self
                    .commands
                    .load(district, &StreamRef::Conversation(posted.conversation_id))
                    .await?;
                match state {
                    State::Conversation(c) => match c.school_id() {
                        Some(school) => school,
                        None => return Ok(()),
                    },
                    _ => return Ok(()),
                }
            }
        };
        let sender = DeliverySender {
            author_id: posted.author_id,
            sent_as: posted.sent_as,
            school_id,
        };
        let queued = posted.deliveries.iter().map(|delivery| {
            react(
                &self.commands,
                district,
                Some(cause),
                QueueDelivery {
                    delivery: delivery.clone(),
                    message_id: posted.message_id,
                    conversation_id: posted.conversation_id,
                    fallback_of: None,
                    sender: Some(sender.clone()),
                },
            )
        });
        for outcome in futures::future::join_all(queued).await {
            outcome?;
        }
        Ok(())
    }

    async fn fall_back(
        &self,
        district: &DistrictId,
        cause: &RecordedEvent,
        failed: homeroom_domain::DeliveryId,
        permanent: bool,
    ) -> Result<(), RuntimeError> {
        let (_, state) = self
            .commands
            .load(district, &StreamRef::Delivery(failed))
            .await?;
        let State::Delivery(delivery) = state else {
            return Ok(());
        };
        let (Some(plan), Some(message_id), Some(conversation_id)) = (
            delivery.plan(),
            delivery.message_id(),
            delivery.conversation_id(),
        ) else {
            return Ok(());
        };
        if permanent && plan.channel != Channel::App {
            if let Some(address) = &plan.address {
                react_once(
                    &self.commands,
                    district,
                    cause,
                    MarkContactPointFailing {
                        person_id: plan.recipient_id,
                        address: address.clone(),
                        delivery_id: failed,
                    },
                )
                .await?;
            }
        }
        let (_, people) = self
            .commands
            .directory(district, &[plan.recipient_id])
            .await?;
        let Some(fallback) = fallback_for(
            plan,
            delivery.fallback_of().is_some(),
            &people[0],
            fallback_delivery_id(failed),
        ) else {
            return Ok(());
        };
        react(
            &self.commands,
            district,
            Some(cause),
            QueueDelivery {
                delivery: fallback,
                message_id,
                conversation_id,
                fallback_of: Some(failed),
                sender: delivery.sender().cloned(),
            },
        )
        .await?;
        Ok(())
    }

    async fn record_line(
        &self,
        district: &DistrictId,
        cause: &RecordedEvent,
        delivery_id: homeroom_domain::DeliveryId,
        sender: Option<&str>,
    ) -> Result<(), RuntimeError> {
        let Some(ours) = sender.and_then(|s| PhoneNumber::parse(s).ok()) else {
            return Ok(());
        };
        let (_, state) = self
            .commands
            .load(district, &StreamRef::Delivery(delivery_id))
            .await?;
        let State::Delivery(delivery) = state else {
            return Ok(());
        };
        let (Some(plan), Some(conversation_id)) = (delivery.plan(), delivery.conversation_id())
        else {
            return Ok(());
        };
        let Some(theirs) = plan
            .address
            .as_deref()
            .filter(|_| plan.channel == Channel::Sms)
            .and_then(|a| PhoneNumber::parse(a).ok())
        else {
            return Ok(());
        };
        react_once(
            &self.commands,
            district,
            cause,
            RecordSmsSent {
                our_number: ours,
                their_number: theirs,
                conversation_id,
                recipient_id: plan.recipient_id,
                delivery_id,
            },
        )
        .await?;
        Ok(())
    }

    async fn bind(
        &self,
        district: &DistrictId,
        cause: &RecordedEvent,
        number: PhoneNumber,
        owner: NumberOwner,
    ) -> Result<(), RuntimeError> {
        let bound = react(
            &self.commands,
            district,
            Some(cause),
            BindSmsNumber {
                number: number.clone(),
                district: district.clone(),
                owner,
            },
        )
        .await;
        match bound {
            Ok(_) => Ok(()),
            // Another district sends from it: replies to it stay with that district.
            // Retrying cannot change that; the operator must fix the number.
            Err(CommandError::Rejected(DomainError::SmsNumber(SmsNumberError::NumberTaken {
                ..
            }))) => {
                tracing::error!(%number, district = %district, "this SMS number already belongs to another district; inbound SMS to it will not reach this district");
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn reset_line(
        &self,
        district: &DistrictId,
        cause: &RecordedEvent,
        ours: PhoneNumber,
        theirs: PhoneNumber,
    ) -> Result<(), RuntimeError> {
        let texted = last_sent_on(&self.commands, district, ours, theirs.clone())
            .await?
            .map(|last| last.recipient_id);
        let reset = |person_id| ResetContactPoint {
            person_id,
            address: theirs.to_string(),
        };
        // The line's recipient under the reaction's first id (as recorded before shared
        // phones were reset too), then everyone else with the phone.
        if let Some(person) = texted {
            settled(react_once(&self.commands, district, cause, reset(person)).await)?;
        }
        for person in self
            .phones
            .people_with_number(district, theirs.as_str())
            .await?
        {
            if Some(person) != texted {
                settled(
                    react_once_for(&self.commands, district, cause, person, reset(person)).await,
                )?;
            }
        }
        Ok(())
    }
}

/// A contact point reset that a rule refused is done: the number is no longer theirs,
/// or nothing was failing.
fn settled(reset: Result<homeroom_app::CommandOutcome, CommandError>) -> Result<(), RuntimeError> {
    match reset {
        Ok(_) | Err(CommandError::Rejected(_)) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_reaction_waits_twice_as_long_each_time_up_to_a_minute() {
        let first = Duration::from_millis(500);
        let waits: Vec<_> = [1, 2, 3, 4]
            .map(|attempt| retry_delay(first, attempt))
            .into();
        assert_eq!(
            waits,
            [500, 1_000, 2_000, 4_000]
                .map(Duration::from_millis)
                .to_vec()
        );
        assert_eq!(retry_delay(first, 8), LONGEST_RETRY_DELAY);
        assert_eq!(retry_delay(first, u32::MAX), LONGEST_RETRY_DELAY);
    }
}
