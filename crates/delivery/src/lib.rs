//! Homeroom's delivery runtime: what happens after a message is recorded.
//!
//! Everything here acts on the outside world or reacts to the log, and records what it
//! did as events through the command service, so the log alone explains every delivery:
//!
//! - [`reactor::Reactor`]: the process managers. On `message_posted` it queues one
//!   delivery per planned recipient; on a failed delivery it marks the address failing
//!   and queues the same message by the other channel; on a sent SMS it records the SMS
//!   line (so replies find their conversation); it binds school and personal numbers
//!   to their district; on START it resets the number. Every reaction is idempotent
//!   (deterministic ids, no-op decisions), so replays and redeliveries converge.
//! - [`worker::Worker`]: takes `delivery_queued` work from a [`WorkQueue`], picks the
//!   sending number or name, honours STOP, labels texts to a phone others of the
//!   district share (asking the [`PhoneBook`]), translates,
//!   hands the message to the channel with an idempotency key per attempt, records the
//!   outcome (or the failed attempt, retried with backoff) and only then acknowledges.
//! - [`inbound::InboundSms`]: an SMS from the provider's webhook: recorded first (never
//!   lost), then routed to the conversation whose number and recipient it answers, or
//!   honoured as STOP/START/HELP, or kept as unroutable.
//! - [`status::StatusCallbacks`]: a provider's status callback becomes the delivery's
//!   outcome.
//!
//! [`WorkQueue`]: homeroom_bus::WorkQueue
//! [`PhoneBook`]: homeroom_app::preview::PhoneBook

pub mod inbound;
pub mod reactor;
pub mod status;
pub mod worker;

use homeroom_app::{CommandContext, CommandError, CommandOutcome, CommandService};
use homeroom_domain::{Actor, Command, DistrictId};
use homeroom_eventstore::RecordedEvent;

/// The service name Homeroom's own delivery services act under.
pub const SERVICE: &str = "delivery";

/// Why reacting to an event, or handling a delivery, failed in a way worth retrying: the
/// work item is not acknowledged and comes back.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The command service failed or refused (a refusal here is a bug or a race that a
    /// retry resolves).
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A stored event could not be read.
    #[error(transparent)]
    Codec(#[from] homeroom_app::codec::DecodeError),
    /// The event names a district that is not a district id.
    #[error("event {event_id} names no valid district")]
    NoDistrict {
        /// The event.
        event_id: uuid::Uuid,
    },
    /// The read models could not answer.
    #[error(transparent)]
    ReadModel(#[from] homeroom_projections::QueryError),
}

/// Takes batches from `queue` until `shutdown` and settles every item of a batch with
/// `settle` (concurrently) before taking the next: the loop the reactor and the workers
/// share. A bus that fails is asked again after `pause`; a closed one ends the loop.
async fn consume<F, Fut>(
    queue: &dyn homeroom_bus::WorkQueue,
    batch: usize,
    poll: std::time::Duration,
    pause: std::time::Duration,
    who: &'static str,
    shutdown: impl std::future::Future<Output = ()>,
    settle: F,
) where
    F: Fn(homeroom_bus::WorkItem) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let fetched = tokio::select! {
            fetched = queue.fetch(batch, poll) => fetched,
            () = &mut shutdown => return,
        };
        match fetched {
            Ok(items) => {
                futures::future::join_all(items.into_iter().map(&settle)).await;
            }
            Err(homeroom_bus::BusError::Closed) => return,
            Err(error) => {
                tracing::warn!(%error, who, "cannot take work from the bus; retrying");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// The district an event belongs to.
fn district_of(event: &RecordedEvent) -> Result<DistrictId, RuntimeError> {
    DistrictId::parse(&event.metadata.district).map_err(|_| RuntimeError::NoDistrict {
        event_id: event.event_id,
    })
}

/// Runs `command` as the delivery service in `district`, caused by `cause` (so the audit
/// trail links the reaction to what it reacted to).
async fn react(
    commands: &CommandService,
    district: &DistrictId,
    cause: Option<&RecordedEvent>,
    command: impl Into<Command>,
) -> Result<CommandOutcome, CommandError> {
    let mut ctx = CommandContext::new(district.clone(), Actor::System(SERVICE.to_owned()));
    if let Some(cause) = cause {
        ctx.correlation_id = Some(cause.metadata.correlation_id);
        ctx.causation_id = Some(cause.event_id);
    }
    commands.execute(&ctx, &command.into()).await
}
