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
        let client = client_of(url).await?;
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

    /// Connects to `url` and checks that JetStream answers there, creating nothing: a
    /// process checks this before it creates anything of its own (a data directory, a
    /// schema), so a start refused for NATS leaves nothing behind.
    ///
    /// # Errors
    /// [`NatsError::Connect`] when the server cannot be reached,
    /// [`NatsError::NoJetStream`] when it runs without JetStream.
    pub async fn check_reachable(url: &str) -> Result<(), NatsError> {
        let client = client_of(url).await?;
        let jetstream = client.server_info().jetstream;
        drop(client);
        if jetstream {
            Ok(())
        } else {
            Err(NatsError::NoJetStream {
                url: without_credentials(url),
            })
        }
    }

    /// The configuration this bus was connected with.
    pub fn config(&self) -> &NatsConfig {
        &self.config
    }
}

/// A client connected to `url` under Homeroom's name; a failure names the URL without its
/// credentials.
async fn client_of(url: &str) -> Result<async_nats::Client, NatsError> {
    async_nats::ConnectOptions::new()
        .name("homeroom")
        .connect(url)
        .await
        .map_err(|source| NatsError::Connect {
            url: without_credentials(url),
            source,
        })
}

/// `url` with any user, password or token taken out (`nats://user:secret@host` →
/// `nats://…@host`; a comma-separated list server by server), so an error or a log
/// line never shows a credential.
pub fn without_credentials(url: &str) -> String {
    url.split(',')
        .map(|server| {
            let (scheme, rest) = match server.split_once("://") {
                Some((scheme, rest)) => (Some(scheme), rest),
                None => (None, server),
            };
            let rest = match rest.rsplit_once('@') {
                Some((_, host)) => format!("…@{host}"),
                None => rest.to_owned(),
            };
            match scheme {
                Some(scheme) => format!("{scheme}://{rest}"),
                None => rest,
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod credential_tests {
    use super::without_credentials;

    #[test]
    fn credentials_never_show_in_a_url_we_print() {
        assert_eq!(
            without_credentials("nats://natsuser:SeCrEt@127.0.0.1:4222"),
            "nats://…@127.0.0.1:4222"
        );
        assert_eq!(
            without_credentials("nats://tok@a:4222,nats://b:4222"),
            "nats://…@a:4222,nats://b:4222"
        );
        assert_eq!(
            without_credentials("nats://127.0.0.1:4222"),
            "nats://127.0.0.1:4222"
        );
        assert_eq!(without_credentials("u:p@host"), "…@host");
    }
}
