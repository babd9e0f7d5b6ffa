//! [`EventPublisher`] for [`NatsBus`]: pipelined publishes chained by expected sequence.
//!
//! Every message of a batch is sent before any acknowledgement is awaited, each carrying
//! `Nats-Expected-Last-Sequence`: the stream sequence it must follow. If one is lost in
//! flight (a connection dropped mid-batch), the server refuses every later one instead of
//! storing them after a hole, so the stream stays a gap-free prefix of the log and its
//! last message tells exactly where to resume.
//!
//! A duplicate (an event stored before) is acknowledged without being stored, so the
//! messages after it expect one sequence too many and are refused; the batch is then sent
//! again from the first refused message, with the sequence read back from the server.

use crate::{NatsBus, NatsError, POSITION_HEADER, STREAM_HEADER, TYPE_HEADER};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::HeaderMap;
use async_trait::async_trait;
use bytes::Bytes;
use homeroom_bus::{subject_for, under_prefix, BusError, EventPublisher};
use homeroom_eventstore::{Position, RecordedEvent};
use uuid::Uuid;

/// One event, ready to send.
struct Outgoing {
    event_id: Uuid,
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
}

/// Why a round of sends stopped at `index`.
struct Broken {
    index: usize,
    wrong_sequence: bool,
    error: NatsError,
}

impl NatsBus {
    /// The subject of `event` under this bus's prefix.
    pub(crate) fn subject(&self, event: &RecordedEvent) -> String {
        let subject = subject_for(event);
        under_prefix(&self.config.subject_prefix, &subject).unwrap_or(subject)
    }

    fn encode(&self, event: &RecordedEvent) -> Result<Outgoing, BusError> {
        let payload = serde_json::to_vec(event).map_err(|source| {
            BusError::unavailable(NatsError::Encode {
                event_id: event.event_id,
                source,
            })
        })?;
        let mut headers = HeaderMap::new();
        headers.insert(POSITION_HEADER, event.position.to_string().as_str());
        headers.insert(STREAM_HEADER, event.stream.as_str());
        headers.insert(TYPE_HEADER, event.event_type.as_str());
        Ok(Outgoing {
            event_id: event.event_id,
            subject: self.subject(event),
            headers,
            payload: Bytes::from(payload),
        })
    }

    /// The stream's last sequence, as the server has it now.
    async fn last_sequence(&self) -> Result<u64, BusError> {
        let info = self.stream.get_info().await.map_err(request_error)?;
        Ok(info.state.last_sequence)
    }

    /// Sends `messages` pipelined, the first expecting `last` as the stream's last
    /// sequence, then awaits every acknowledgement; returns the stream's new last sequence.
    async fn send(&self, messages: &[Outgoing], last: u64) -> Result<u64, Broken> {
        let mut acks = Vec::with_capacity(messages.len());
        let mut unsent = None;
        for (expected, message) in (last..).zip(messages) {
            let publish = PublishMessage::build()
                .payload(message.payload.clone())
                .headers(message.headers.clone())
                .message_id(message.event_id.to_string())
                .expected_last_sequence(expected);
            match self
                .jetstream
                .send_publish(message.subject.clone(), publish)
                .await
            {
                Ok(ack) => acks.push(ack),
                Err(source) => {
                    // Stop here: sending later events would leave this one out.
                    unsent = Some(Broken {
                        index: acks.len(),
                        wrong_sequence: false,
                        error: NatsError::Publish {
                            event_id: message.event_id,
                            source,
                        },
                    });
                    break;
                }
            }
        }
        let mut stored = last;
        for (index, ack) in acks.into_iter().enumerate() {
            match ack.await {
                Ok(ack) if ack.duplicate => {}
                Ok(ack) => stored = ack.sequence,
                Err(source) => {
                    return Err(Broken {
                        index,
                        wrong_sequence: source.kind() == PublishErrorKind::WrongLastSequence,
                        error: NatsError::Publish {
                            event_id: messages[index].event_id,
                            source,
                        },
                    })
                }
            }
        }
        match unsent {
            Some(broken) => Err(broken),
            None => Ok(stored),
        }
    }
}

#[async_trait]
impl EventPublisher for NatsBus {
    async fn publish(&self, events: &[RecordedEvent]) -> Result<(), BusError> {
        if events.is_empty() {
            return Ok(());
        }
        let outgoing = events
            .iter()
            .map(|event| self.encode(event))
            .collect::<Result<Vec<_>, _>>()?;
        let mut chain = self.chain.lock().await;
        let mut start = 0;
        loop {
            let (last, fresh) = match chain.take() {
                Some(last) => (last, false),
                None => (self.last_sequence().await?, true),
            };
            match self.send(&outgoing[start..], last).await {
                Ok(stored) => {
                    *chain = Some(stored);
                    return Ok(());
                }
                // Refused for a sequence after progress (a duplicate before it) or on a
                // remembered sequence: read the sequence back and send the rest again.
                // Refused on a sequence just read: someone else is publishing; give up.
                Err(broken) if broken.wrong_sequence && (broken.index > 0 || !fresh) => {
                    start += broken.index;
                    tracing::debug!(
                        resent = outgoing.len() - start,
                        "stream sequence moved; sending the rest of the batch again"
                    );
                }
                Err(broken) => return Err(BusError::unavailable(broken.error)),
            }
        }
    }

    async fn last_published(&self) -> Result<Position, BusError> {
        let info = self.stream.get_info().await.map_err(request_error)?;
        if info.state.messages == 0 {
            if info.state.last_sequence == 0 {
                return Ok(Position::START);
            }
            return Err(BusError::Unreadable {
                subject: format!("stream {}", self.config.stream),
                reason: format!(
                    "the stream held {} messages and now holds none (purged?): \
                     where the relay stopped is lost",
                    info.state.last_sequence
                ),
            });
        }
        let message = self
            .stream
            .get_last_raw_message_by_subject(&format!("{}.>", self.config.subject_prefix))
            .await
            .map_err(request_error)?;
        let unreadable = |reason: String| BusError::Unreadable {
            subject: message.subject.to_string(),
            reason,
        };
        let token = message
            .headers
            .get(POSITION_HEADER)
            .ok_or_else(|| unreadable(format!("no {POSITION_HEADER} header")))?;
        token
            .as_str()
            .parse()
            .map_err(|err| unreadable(format!("{POSITION_HEADER}: {err}")))
    }
}

fn request_error(err: impl std::error::Error + Send + Sync + 'static) -> BusError {
    BusError::unavailable(NatsError::Request(Box::new(err)))
}
