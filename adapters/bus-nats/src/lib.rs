//! Homeroom's bus on NATS JetStream.
//!
//! One JetStream stream holds a copy of the event log, one message per event, on the
//! subjects [`homeroom_bus::subject_for`] builds (moved under
//! [`NatsConfig::subject_prefix`]). It keeps events by limits, not as a work queue, so any
//! number of consumers can follow it. This crate gives the two sides of it:
//!
//! - [`NatsBus`] as an [`EventPublisher`]: what the relay feeds. Each event goes out with
//!   its event id as `Nats-Msg-Id` (JetStream drops a duplicate inside the
//!   [duplicate window](NatsConfig::duplicate_window)) and with the stream sequence it
//!   must follow, so a message lost in flight fails the ones after it instead of leaving
//!   a hole: the stream is always a gap-free prefix of the log, and its last message's
//!   [`POSITION_HEADER`] is where a restarted relay resumes
//!   ([`EventPublisher::last_published`]);
//! - [`NatsWorkQueue`] (from [`NatsBus::work_queue`]) as a [`homeroom_bus::WorkQueue`]: a
//!   durable pull consumer every worker process shares, with explicit acks, redelivery
//!   after the ack wait (optionally backing off), and no silent drop.
//!
//! The `testing` feature adds service discovery and throwaway streams for tests.
//!
//! [`EventPublisher`]: homeroom_bus::EventPublisher
//! [`EventPublisher::last_published`]: homeroom_bus::EventPublisher::last_published

mod config;
mod error;
mod publisher;
mod queue;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::NatsConfig;
pub use error::NatsError;
pub use queue::NatsWorkQueue;

use async_nats::jetstream::{self, stream};
use tokio::sync::Mutex;

/// The `Homeroom-Position` header: the event's log position, as [`homeroom_eventstore::Position`]'s
/// `Display` writes it.
pub const POSITION_HEADER: &str = "Homeroom-Position";
/// The `Homeroom-Stream` header: the event's stream id.
pub const STREAM_HEADER: &str = "Homeroom-Stream";
/// The `Homeroom-Event-Type` header: the event's stored type name.
pub const TYPE_HEADER: &str = "Homeroom-Event-Type";

/// A connection to NATS with the Homeroom stream in place: publish with it (it is the
/// relay's [`EventPublisher`](homeroom_bus::EventPublisher)) and open work queues on it.
pub struct NatsBus {
    jetstream: jetstream::Context,
    stream: stream::Stream,
    config: NatsConfig,
    /// The stream sequence the next publish expects as last; `None` when it must be read
    /// from the server first (at start, and after any failure).
    chain: Mutex<Option<u64>>,
}

impl NatsBus {
    /// Connects to `url` (`nats://[user:pass@]host:port`, as `HOMEROOM_BUS` gives it) and
    /// creates the stream, or brings an existing one to `config`.
    ///
    /// # Errors
    /// [`NatsError`] when the configuration is invalid, the server cannot be reached, or it
    /// refuses the stream (e.g. an existing stream with another storage type).
    pub async fn connect(url: &str, config: NatsConfig) -> Result<Self, NatsError> {
        config.validate()?;
        let client = async_nats::ConnectOptions::new()
            .name("homeroom")
            .connect(url)
            .await
            .map_err(|source| NatsError::Connect {
                url: url.to_owned(),
                source,
            })?;
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout)
            .build(client);
        jetstream
            .create_or_update_stream(config.stream_config())
            .await
            .map_err(|source| NatsError::Stream {
                stream: config.stream.clone(),
                source: Box::new(source),
            })?;
        let stream = jetstream
            .get_stream(&config.stream)
            .await
            .map_err(|source| NatsError::Stream {
                stream: config.stream.clone(),
                source: Box::new(source),
            })?;
        Ok(Self {
            jetstream,
            stream,
            config,
            chain: Mutex::new(None),
        })
    }

    /// The configuration this bus was connected with.
    pub fn config(&self) -> &NatsConfig {
        &self.config
    }
}
