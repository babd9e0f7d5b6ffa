//! The bus port of Homeroom.
//!
//! Events leave the event store in two ways: projectors follow `subscribe_all`
//! in-process, and everything that acts on the outside world (delivery workers, on any
//! machine) takes its work from a bus. This crate names what a bus must do, so the
//! workers are written once and run on NATS JetStream in a server deployment or on an
//! in-process queue in the embedded default:
//!
//! - [`subject_for`]: where an event travels,
//!   `homeroom.events.<district>.<category>.<event_type>`;
//! - [`EventPublisher`]: what the relay feeds, in log order, deduplicated by event id,
//!   and where it resumes after a restart ([`EventPublisher::last_published`]);
//! - [`WorkQueue`] and [`WorkItem`]: durable, shared, acknowledged consumption. An item
//!   is handed to one worker at a time and comes back (to any worker) until it is
//!   acknowledged, so a worker killed mid-batch loses nothing;
//! - [`inprocess::InProcessQueue`]: the work queue of the embedded default, fed from the
//!   event store in this process, with its checkpoint in a file;
//! - [`relay`]: the task that tails the event store and feeds an [`EventPublisher`].

pub mod inprocess;
pub mod relay;

use async_trait::async_trait;
use homeroom_eventstore::{Position, RecordedEvent};
use std::future::Future;
use std::time::Duration;

/// The prefix of every subject Homeroom publishes on.
pub const SUBJECT_PREFIX: &str = "homeroom.events";

/// The subject an event travels on: `homeroom.events.<district>.<category>.<event_type>`,
/// e.g. `homeroom.events.springfield.delivery.delivery_queued`.
///
/// District ids and event types never hold `.`, `*`, `>` or whitespace (the domain
/// refuses them), so each part is one subject token; a consumer filters with wildcards,
/// e.g. `homeroom.events.*.delivery.delivery_queued`.
pub fn subject_for(event: &RecordedEvent) -> String {
    let district = if event.metadata.district.is_empty() {
        "_"
    } else {
        event.metadata.district.as_str()
    };
    format!(
        "{SUBJECT_PREFIX}.{district}.{}.{}",
        event.stream.category(),
        event.event_type
    )
}

/// The subject filter matching one event type in every district and stream category
/// `category`: `homeroom.events.*.<category>.<event_type>`.
pub fn filter_for(category: &str, event_type: &str) -> String {
    format!("{SUBJECT_PREFIX}.*.{category}.{event_type}")
}

/// `subject` (built by [`subject_for`] or [`filter_for`]) moved from [`SUBJECT_PREFIX`] to
/// `prefix`: how a deployment, or a test, keeps its events apart from others' on a shared
/// bus while callers keep speaking in [`subject_for`] and [`filter_for`]. `None` when
/// `subject` is not under [`SUBJECT_PREFIX`].
pub fn under_prefix(prefix: &str, subject: &str) -> Option<String> {
    let rest = subject.strip_prefix(SUBJECT_PREFIX)?.strip_prefix('.')?;
    Some(format!("{prefix}.{rest}"))
}

/// Why the bus could not do what was asked. Every variant is worth retrying later: the
/// caller keeps what it has not acknowledged and tries again.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus could not be reached or refused the operation.
    #[error("bus unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A message on the bus is not a Homeroom event (or lacks the headers it needs).
    #[error("message {subject} on the bus is unreadable: {reason}")]
    Unreadable {
        /// Where it was found.
        subject: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The bus is shutting down and takes no more work.
    #[error("bus is closed")]
    Closed,
}

impl BusError {
    /// Wraps a client error as [`BusError::Unavailable`].
    pub fn unavailable(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Unavailable(Box::new(err))
    }
}

/// Publishes recorded events on the bus: what the relay feeds.
#[async_trait]
pub trait EventPublisher: Send + Sync {
    /// Publishes `events` in the order given, each on [`subject_for`] with its event id
    /// as the message id, and returns once the bus has stored all of them. An event
    /// published before (a relay that restarted) is dropped by the bus, not stored twice.
    ///
    /// # Errors
    /// [`BusError`]; some of the events may then be stored already, and publishing them
    /// again is safe.
    async fn publish(&self, events: &[RecordedEvent]) -> Result<(), BusError>;

    /// The log position of the last event the bus holds ([`Position::START`] when it
    /// holds none): where a restarted relay resumes, so it leaves no gap.
    ///
    /// # Errors
    /// [`BusError`].
    async fn last_published(&self) -> Result<Position, BusError>;
}

/// How an item taken from a [`WorkQueue`] is settled. Exactly one of
/// [`Settle::ack`] and [`Settle::retry_after`] is called per item; an item dropped
/// without either comes back after the queue's acknowledgement deadline.
#[async_trait]
pub trait Settle: Send + Sync {
    /// The work is done and its outcome recorded: never hand it out again.
    async fn ack(self: Box<Self>) -> Result<(), BusError>;

    /// The work failed in a way worth retrying: hand it out again after `delay`.
    async fn retry_after(self: Box<Self>, delay: Duration) -> Result<(), BusError>;

    /// The work is still going: push the acknowledgement deadline back.
    async fn in_progress(&self) -> Result<(), BusError>;
}

/// One event handed to one worker, until it is settled.
pub struct WorkItem {
    /// The event to act on.
    pub event: RecordedEvent,
    /// How many times this event has been handed out, this time included (1 the first
    /// time): a worker uses it to tell a retry from a first attempt.
    pub attempt: u32,
    settle: Box<dyn Settle>,
    /// How long the queue waits for a settlement before it hands the item out again.
    ack_wait: Duration,
}

impl WorkItem {
    /// An item that `settle` acknowledges, handed out again when left unsettled for
    /// `ack_wait`.
    pub fn new(
        event: RecordedEvent,
        attempt: u32,
        settle: Box<dyn Settle>,
        ack_wait: Duration,
    ) -> Self {
        Self {
            event,
            attempt,
            settle,
            ack_wait,
        }
    }

    /// Runs `work`, telling the queue every third of its acknowledgement wait that the
    /// item is still being worked on ([`Settle::in_progress`]), so that a send a slow
    /// provider holds for longer than the wait is not handed to another worker and sent
    /// twice meanwhile. A heartbeat that fails is logged; the work goes on.
    pub async fn while_in_progress<T>(&self, work: impl Future<Output = T>) -> T {
        let beat = (self.ack_wait / 3).max(Duration::from_millis(50));
        let mut work = std::pin::pin!(work);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + beat, beat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                done = &mut work => return done,
                _ = ticker.tick() => {
                    if let Err(error) = self.in_progress().await {
                        tracing::warn!(event = %self.event.event_id, %error, "could not hold on to a work item still in progress");
                    }
                }
            }
        }
    }

    /// See [`Settle::ack`].
    ///
    /// # Errors
    /// [`BusError`]; the item may then come back, and the worker must handle it again
    /// idempotently.
    pub async fn ack(self) -> Result<(), BusError> {
        self.settle.ack().await
    }

    /// See [`Settle::retry_after`].
    ///
    /// # Errors
    /// [`BusError`]; the item then comes back after the acknowledgement deadline.
    pub async fn retry_after(self, delay: Duration) -> Result<(), BusError> {
        self.settle.retry_after(delay).await
    }

    /// See [`Settle::in_progress`].
    ///
    /// # Errors
    /// [`BusError`].
    pub async fn in_progress(&self) -> Result<(), BusError> {
        self.settle.in_progress().await
    }
}

impl std::fmt::Debug for WorkItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkItem")
            .field("event", &self.event.event_id)
            .field("type", &self.event.event_type)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

/// A durable queue shared by every worker of a deployment: each item goes to one worker
/// at a time and comes back until acknowledged.
#[async_trait]
pub trait WorkQueue: Send + Sync {
    /// Up to `max` items, waiting at most `wait` for the first one (an empty batch when
    /// none came).
    ///
    /// # Errors
    /// [`BusError`]; the caller waits a little and fetches again.
    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<WorkItem>, BusError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use homeroom_eventstore::{EventMetadata, StreamId};

    fn event(district: &str, stream: &str, event_type: &str) -> RecordedEvent {
        RecordedEvent {
            event_id: Default::default(),
            stream: StreamId::parse(stream).unwrap(),
            version: 1,
            position: Position::at(1),
            event_type: event_type.to_owned(),
            schema_version: 1,
            data: serde_json::Value::Null,
            metadata: EventMetadata {
                district: district.to_owned(),
                ..EventMetadata::default()
            },
            recorded_at: Default::default(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn subjects_name_district_category_and_type() {
        let e = event("springfield", "delivery-springfield:abc", "delivery_queued");
        assert_eq!(
            subject_for(&e),
            "homeroom.events.springfield.delivery.delivery_queued"
        );
        assert_eq!(
            filter_for("delivery", "delivery_queued"),
            "homeroom.events.*.delivery.delivery_queued"
        );
    }

    #[test]
    fn subjects_and_filters_move_under_another_prefix() {
        let e = event("springfield", "delivery-springfield:abc", "delivery_queued");
        assert_eq!(
            under_prefix("t1.events", &subject_for(&e)).as_deref(),
            Some("t1.events.springfield.delivery.delivery_queued")
        );
        assert_eq!(
            under_prefix("t1.events", &filter_for("delivery", "delivery_queued")).as_deref(),
            Some("t1.events.*.delivery.delivery_queued")
        );
        assert_eq!(under_prefix("t1.events", "other.subject"), None);
        assert_eq!(under_prefix("t1.events", "homeroom.eventsx.a"), None);
    }

    #[test]
    fn an_event_without_a_district_still_has_a_valid_subject() {
        let e = event("", "district-x", "school_registered");
        assert_eq!(
            subject_for(&e),
            "homeroom.events._.district.school_registered"
        );
    }
}
