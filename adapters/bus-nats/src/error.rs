//! What can go wrong setting the bus up, and what a publish or a fetch reports inside a
//! [`homeroom_bus::BusError`].

use uuid::Uuid;

type Source = Box<dyn std::error::Error + Send + Sync>;

/// A failure of the NATS adapter. Setting up ([`crate::NatsBus::connect`],
/// [`crate::NatsBus::work_queue`]) returns it; the bus ports wrap it in
/// [`homeroom_bus::BusError::Unavailable`].
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// A stream name must be one token: no `.`, wildcards, slashes or whitespace.
    #[error("{0:?} cannot name a JetStream stream")]
    BadStreamName(String),
    /// A subject prefix is dot-separated non-empty tokens without wildcards or whitespace.
    #[error("{0:?} is not a subject prefix")]
    BadPrefix(String),
    /// The server could not be reached (or refused the connection).
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        /// Where we tried.
        url: String,
        /// Why it failed.
        #[source]
        source: async_nats::ConnectError,
    },
    /// The server answers, but without JetStream.
    #[error("the NATS server at {url} runs without JetStream (start it with -js)")]
    NoJetStream {
        /// Where.
        url: String,
    },
    /// The stream could not be created, updated or looked up.
    #[error("cannot set up JetStream stream {stream}: {source}")]
    Stream {
        /// The stream's name.
        stream: String,
        /// The server's or client's reason.
        #[source]
        source: Source,
    },
    /// A work queue filter is not a Homeroom subject: build it with
    /// [`homeroom_bus::filter_for`].
    #[error("{0:?} is not under {prefix}: build filters with homeroom_bus::filter_for", prefix = homeroom_bus::SUBJECT_PREFIX)]
    ForeignFilter(String),
    /// The consumer could not be created or updated.
    #[error("cannot set up consumer {durable}: {source}")]
    Consumer {
        /// The durable name.
        durable: String,
        /// The server's or client's reason.
        #[source]
        source: Source,
    },
    /// The server kept other filters than asked: a NATS server before 2.10 ignores a list of
    /// several filters and would hand out every event. Use one filter, or NATS 2.10+.
    #[error("the server set consumer {durable} to filter {kept:?}, not {asked:?} (several filters need NATS 2.10 or later)")]
    FiltersIgnored {
        /// The durable name.
        durable: String,
        /// The filters asked for.
        asked: Vec<String>,
        /// The filters the server kept.
        kept: Vec<String>,
    },
    /// An event was not stored: its send or its acknowledgement failed (e.g. a message over
    /// the server's size limit, a timeout, a lost connection).
    #[error("event {event_id} could not be sent: {source}")]
    Publish {
        /// The event that failed.
        event_id: Uuid,
        /// The client's or server's reason.
        #[source]
        source: async_nats::jetstream::context::PublishError,
    },
    /// An event could not be turned into JSON (it cannot happen with events the store
    /// recorded, but is reported rather than assumed).
    #[error("event {event_id} cannot be encoded: {source}")]
    Encode {
        /// The event.
        event_id: Uuid,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A JetStream request (stream info, last message, fetch, ack) failed.
    #[error("JetStream request failed: {0}")]
    Request(#[source] Source),
}
