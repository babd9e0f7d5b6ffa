//! [`WorkQueue`] on a durable JetStream pull consumer.

use crate::{NatsBus, NatsError};
use async_nats::jetstream::{self, consumer::PullConsumer, AckKind};
use async_trait::async_trait;
use futures::StreamExt;
use homeroom_bus::{under_prefix, BusError, Settle, WorkItem, WorkQueue};
use homeroom_eventstore::RecordedEvent;
use std::time::Duration;

/// A durable pull consumer shared by every worker process that opens it under the same
/// durable name: each item goes to one of them at a time and comes back until acked.
pub struct NatsWorkQueue {
    consumer: PullConsumer,
    /// The consumer's acknowledgement wait as the server keeps it (the last process to
    /// set up the consumer set it): what a worker's heartbeat must beat.
    ack_wait: Duration,
}

impl std::fmt::Debug for NatsWorkQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let info = self.consumer.cached_info();
        f.debug_struct("NatsWorkQueue")
            .field("stream", &info.stream_name)
            .field("durable", &info.name)
            .finish()
    }
}

impl NatsBus {
    /// Creates the durable consumer `durable` on `filters` (built with
    /// [`homeroom_bus::filter_for`]; none means every event), or brings an existing one to
    /// this bus's settings, and opens it. Every worker process calls this on start with the
    /// same arguments; the calls are idempotent.
    ///
    /// # Errors
    /// [`NatsError::ForeignFilter`] for a filter outside [`homeroom_bus::SUBJECT_PREFIX`];
    /// [`NatsError::FiltersIgnored`] when the server cannot filter as asked (several filters
    /// before NATS 2.10); [`NatsError::Consumer`] when the server refuses the consumer.
    pub async fn work_queue(
        &self,
        durable: &str,
        filters: &[String],
    ) -> Result<NatsWorkQueue, NatsError> {
        let mut asked = filters
            .iter()
            .map(|filter| {
                under_prefix(&self.config.subject_prefix, filter)
                    .ok_or_else(|| NatsError::ForeignFilter(filter.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Every process sets the shared consumer up with its own settings: the last one
        // to start wins, so a differing ack wait is said out loud.
        let earlier_ack_wait = self
            .stream
            .consumer_info(durable)
            .await
            .ok()
            .map(|info| info.config.ack_wait);
        if let Some(earlier) = earlier_ack_wait.filter(|wait| *wait != self.config.ack_wait) {
            tracing::warn!(
                durable,
                earlier_secs = earlier.as_secs_f64(),
                now_secs = self.config.ack_wait.as_secs_f64(),
                "this process changes the ack wait every worker of the consumer shares; give every process of the deployment the same HOMEROOM_NATS_ACK_WAIT"
            );
        }
        let consumer: PullConsumer = self
            .stream
            .create_consumer(self.config.consumer_config(durable, &asked))
            .await
            .map_err(|source| NatsError::Consumer {
                durable: durable.to_owned(),
                source: Box::new(source),
            })?;
        let config = &consumer.cached_info().config;
        let mut kept = if config.filter_subjects.is_empty() {
            Some(config.filter_subject.clone())
                .filter(|f| !f.is_empty())
                .into_iter()
                .collect()
        } else {
            config.filter_subjects.clone()
        };
        asked.sort();
        kept.sort();
        if kept != asked {
            return Err(NatsError::FiltersIgnored {
                durable: durable.to_owned(),
                asked,
                kept,
            });
        }
        let ack_wait = config.ack_wait;
        Ok(NatsWorkQueue { consumer, ack_wait })
    }
}

#[async_trait]
impl WorkQueue for NatsWorkQueue {
    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<WorkItem>, BusError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        // A no-wait pull with an expiry: the server answers as soon as it has anything,
        // or when `wait` runs out.
        let mut request = self.consumer.fetch().max_messages(max);
        if !wait.is_zero() {
            request = request.expires(wait);
        }
        let mut batch = request
            .messages()
            .await
            .map_err(|err| BusError::unavailable(NatsError::Request(Box::new(err))))?;
        let mut items = Vec::new();
        while let Some(next) = batch.next().await {
            let message = match next {
                Ok(message) => message,
                Err(err) if items.is_empty() => {
                    return Err(BusError::unavailable(NatsError::Request(err)))
                }
                Err(err) => {
                    // Hand out what came; the rest comes back after the ack wait.
                    tracing::warn!(error = %err, "work queue fetch ended early");
                    break;
                }
            };
            match read(&message) {
                Ok((event, attempt)) => {
                    items.push(WorkItem::new(
                        event,
                        attempt,
                        Box::new(Ack(message)),
                        self.ack_wait,
                    ));
                }
                Err(err) => {
                    // Not a Homeroom event: no worker can ever handle it. The log, not the
                    // bus, is the record, so stopping its redelivery loses nothing.
                    tracing::error!(error = %err, "work queue message dropped: terminating its delivery");
                    if let Err(err) = message.ack_with(AckKind::Term).await {
                        tracing::warn!(error = %err, "could not terminate an unreadable message");
                    }
                }
            }
        }
        Ok(items)
    }
}

/// The event in `message` and how many times it has been handed out.
fn read(message: &jetstream::Message) -> Result<(RecordedEvent, u32), BusError> {
    let unreadable = |reason: String| BusError::Unreadable {
        subject: message.subject.to_string(),
        reason,
    };
    let info = message.info().map_err(|err| unreadable(err.to_string()))?;
    let attempt = u32::try_from(info.delivered.max(1)).unwrap_or(u32::MAX);
    let event =
        serde_json::from_slice(&message.payload).map_err(|err| unreadable(err.to_string()))?;
    Ok((event, attempt))
}

/// Settles one message: ack waits for the server's confirmation (so an acked delivery is
/// never handed out again); nak and progress are one-way, and a lost one only means the
/// item comes back after the ack wait.
struct Ack(jetstream::Message);

#[async_trait]
impl Settle for Ack {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        self.0.double_ack().await.map_err(BusError::Unavailable)
    }

    async fn retry_after(self: Box<Self>, delay: Duration) -> Result<(), BusError> {
        self.0
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(BusError::Unavailable)
    }

    async fn in_progress(&self) -> Result<(), BusError> {
        self.0
            .ack_with(AckKind::Progress)
            .await
            .map_err(BusError::Unavailable)
    }
}
