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
use homeroom_domain::sms_line::LastSent;
use homeroom_domain::{Actor, Command, DistrictId, PhoneNumber, State, StreamRef};
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

/// After this long with part of a batch still unsettled (a provider that hangs until its
/// timeout), [`consume`] fills the room the settled items left from the bus, so one slow
/// delivery never holds up the ones queued behind it. Shorter than any provider timeout,
/// longer than a batch takes when nothing hangs (at saturation a batch settles in tens
/// of milliseconds, and settling it whole before the next fetch measured fastest).
const STRAGGLER: std::time::Duration = std::time::Duration::from_millis(500);

/// Takes batches of up to `batch` items from `queue` until `shutdown` and settles them
/// with `settle`, concurrently: the loop the reactor and the workers share. A batch is
/// settled before the next is taken, except that items still unsettled after
/// [`STRAGGLER`] no longer hold up the rest: the free room is taken from the bus again.
/// A bus that fails is asked again after `pause`; a closed one ends the loop. On
/// `shutdown` nothing more is taken, and what is in hand is settled first.
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
    use futures::StreamExt;
    let batch = batch.max(1);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut stopping = false;
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut fetching: Option<std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send + '_>>> =
        None;
    // When the items in hand stop holding up the next fetch.
    let mut patience = tokio::time::Instant::now();
    loop {
        let room = batch.saturating_sub(in_flight.len());
        let due = in_flight.is_empty() || tokio::time::Instant::now() >= patience;
        if fetching.is_none() && !stopping && room > 0 && due {
            fetching = Some(Box::pin(queue.fetch(room, poll)));
        }
        if stopping && in_flight.is_empty() {
            return;
        }
        let waiting = fetching.is_none() && !stopping && room > 0 && !in_flight.is_empty();
        tokio::select! {
            () = &mut shutdown, if !stopping => {
                stopping = true;
                fetching = None;
            }
            fetched = async {
                match fetching.as_mut() {
                    Some(fetch) => fetch.await,
                    None => std::future::pending().await,
                }
            }, if fetching.is_some() => {
                fetching = None;
                match fetched {
                    Ok(items) => {
                        in_flight.extend(items.into_iter().map(&settle));
                        patience = tokio::time::Instant::now() + STRAGGLER;
                    }
                    Err(homeroom_bus::BusError::Closed) => stopping = true,
                    Err(error) => {
                        tracing::warn!(%error, who, "cannot take work from the bus; retrying");
                        patience = tokio::time::Instant::now() + pause;
                        if in_flight.is_empty() {
                            tokio::time::sleep(pause).await;
                        }
                    }
                }
            }
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            () = tokio::time::sleep_until(patience), if waiting => {}
        }
    }
}

/// The district an event belongs to.
fn district_of(event: &RecordedEvent) -> Result<DistrictId, RuntimeError> {
    DistrictId::parse(&event.metadata.district).map_err(|_| RuntimeError::NoDistrict {
        event_id: event.event_id,
    })
}

/// [`react`] for a reaction that is not idempotent by itself (noting which conversation
/// last texted a number, marking an address failing or usable again): its command id
/// derives from the event it reacts to, so reacting to that event again (a queue
/// replaying from an older checkpoint, or from the start when its checkpoint is lost)
/// answers the first result and records nothing. Run again, `RecordSmsSent` for an old
/// text would point the number's replies back at an old conversation.
async fn react_once(
    commands: &CommandService,
    district: &DistrictId,
    cause: &RecordedEvent,
    command: impl Into<Command>,
) -> Result<CommandOutcome, CommandError> {
    let command = command.into();
    let ctx = reaction_context(district, Some(cause)).with_command_id(uuid::Uuid::new_v5(
        &cause.event_id,
        command.name().as_bytes(),
    ));
    commands.execute(&ctx, &command).await
}

/// Who the SMS line between `ours` and `theirs` last texted, and for which
/// conversation: where a reply from `theirs` goes, and whom an answer is for. `None`
/// when the line never carried a text.
async fn last_sent_on(
    commands: &CommandService,
    district: &DistrictId,
    ours: PhoneNumber,
    theirs: PhoneNumber,
) -> Result<Option<LastSent>, CommandError> {
    let (_, line) = commands
        .load(district, &StreamRef::SmsLine { ours, theirs })
        .await?;
    Ok(match line {
        State::SmsLine(line) => line.last_sent(),
        _ => None,
    })
}

/// [`react_once`] for one of several reactions of the same command to one event, told
/// apart by `whom` (each person a reaction is for).
async fn react_once_for(
    commands: &CommandService,
    district: &DistrictId,
    cause: &RecordedEvent,
    whom: homeroom_domain::PersonId,
    command: impl Into<Command>,
) -> Result<CommandOutcome, CommandError> {
    let command = command.into();
    let key = format!("{} {}", command.name(), whom.as_uuid());
    let ctx = reaction_context(district, Some(cause))
        .with_command_id(uuid::Uuid::new_v5(&cause.event_id, key.as_bytes()));
    commands.execute(&ctx, &command).await
}

/// The context of the delivery service's commands, linked to the event that caused them
/// (so the audit trail shows the reaction beside what it reacted to).
fn reaction_context(district: &DistrictId, cause: Option<&RecordedEvent>) -> CommandContext {
    let mut ctx = CommandContext::new(district.clone(), Actor::System(SERVICE.to_owned()));
    if let Some(cause) = cause {
        ctx.correlation_id = Some(cause.metadata.correlation_id);
        ctx.causation_id = Some(cause.event_id);
    }
    ctx
}

/// Runs `command` as the delivery service in `district`, caused by `cause` (so the audit
/// trail links the reaction to what it reacted to).
async fn react(
    commands: &CommandService,
    district: &DistrictId,
    cause: Option<&RecordedEvent>,
    command: impl Into<Command>,
) -> Result<CommandOutcome, CommandError> {
    commands
        .execute(&reaction_context(district, cause), &command.into())
        .await
}
