//! The few server operations the adapter uses, behind one small trait, so the store's
//! logic (chaining, retries, indexes, resubscription) is written once and can also run
//! against the in-process model of the server in [`crate::simulated`].

use crate::codec::{Outgoing, RawEvent};
use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use kurrentdb::{
    Client, ReadAllOptions, ReadStreamOptions, ResolvedEvent, StreamPosition, StreamState,
    SubscribeToAllOptions, SubscriptionEvent, SubscriptionFilter,
};

/// What a `$all` subscription delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// An event of the filtered log.
    Event(RawEvent),
    /// Every matching event up to this position was delivered (filtered subscriptions
    /// send these while they scan past other streams' events).
    Checkpoint(kurrentdb::Position),
    /// Anything else (confirmation, caught up, fell behind).
    Other,
}

/// A live `$all` subscription: deliveries in log order until the first error.
pub(crate) type Deliveries = BoxStream<'static, kurrentdb::Result<Delivery>>;

/// The server operations the adapter needs, with the client's error type, so errors are
/// told apart by kind everywhere.
#[async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    /// Up to `count` events of `stream` from revision `from` (inclusive), in revision
    /// order; empty when the stream does not exist.
    async fn read_stream(
        &self,
        stream: &str,
        from: u64,
        count: usize,
    ) -> kurrentdb::Result<Vec<RawEvent>>;

    /// The last event of `stream`, if it has any.
    async fn read_last(&self, stream: &str) -> kurrentdb::Result<Option<RawEvent>>;

    /// Up to `count` events of `$all` whose stream starts with one of `prefixes`, from
    /// `from` on (an event at exactly `from` included).
    async fn read_all(
        &self,
        from: StreamPosition<kurrentdb::Position>,
        count: usize,
        prefixes: &[String],
    ) -> kurrentdb::Result<Vec<RawEvent>>;

    /// The last event of `$all` whose stream starts with one of `prefixes`.
    async fn read_all_last(&self, prefixes: &[String]) -> kurrentdb::Result<Option<RawEvent>>;

    /// Reads the last record of `$all`, unfiltered: cheap whatever the log holds, and
    /// it needs the same permission as every other read of `$all`.
    async fn probe(&self) -> kurrentdb::Result<()>;

    /// Appends `events` to `stream` if it is in `state`, atomically.
    async fn append(
        &self,
        stream: &str,
        state: StreamState,
        events: Vec<Outgoing>,
    ) -> kurrentdb::Result<()>;

    /// Every event of `$all` after `from` (exclusive) whose stream starts with one of
    /// `prefixes`: the stored ones, then new ones live.
    fn subscribe(
        &self,
        from: StreamPosition<kurrentdb::Position>,
        prefixes: &[String],
    ) -> Deliveries;
}

/// The real server, through the official gRPC client.
#[derive(Clone)]
pub(crate) struct GrpcBackend {
    client: Client,
}

impl GrpcBackend {
    /// Wraps a client.
    pub(crate) fn new(client: Client) -> Self {
        Self { client }
    }
}

/// A server-side filter on stream-name prefixes.
fn filter(prefixes: &[String]) -> SubscriptionFilter {
    prefixes
        .iter()
        .fold(SubscriptionFilter::on_stream_name(), |f, p| f.add_prefix(p))
}

/// The event a read delivered: the event itself (links are never resolved here).
fn original(resolved: ResolvedEvent) -> Option<RawEvent> {
    resolved
        .link
        .as_ref()
        .or(resolved.event.as_ref())
        .map(RawEvent::from_client)
}

/// Drains a read; a missing stream reads as empty.
async fn drain(read: kurrentdb::Result<kurrentdb::ReadStream>) -> kurrentdb::Result<Vec<RawEvent>> {
    let mut read = match read {
        Ok(read) => read,
        Err(kurrentdb::Error::ResourceNotFound) => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut events = Vec::new();
    loop {
        match read.next().await {
            Ok(Some(resolved)) => events.extend(original(resolved)),
            Ok(None) => return Ok(events),
            Err(kurrentdb::Error::ResourceNotFound) => return Ok(Vec::new()),
            Err(err) => return Err(err),
        }
    }
}

#[async_trait]
impl Backend for GrpcBackend {
    async fn read_stream(
        &self,
        stream: &str,
        from: u64,
        count: usize,
    ) -> kurrentdb::Result<Vec<RawEvent>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let options = ReadStreamOptions::default()
            .forwards()
            .position(StreamPosition::Position(from))
            .max_count(count)
            .requires_leader(true);
        drain(self.client.read_stream(stream, &options).await).await
    }

    async fn read_last(&self, stream: &str) -> kurrentdb::Result<Option<RawEvent>> {
        let options = ReadStreamOptions::default()
            .position(StreamPosition::End)
            .max_count(1)
            .requires_leader(true);
        Ok(drain(self.client.read_stream(stream, &options).await)
            .await?
            .pop())
    }

    async fn read_all(
        &self,
        from: StreamPosition<kurrentdb::Position>,
        count: usize,
        prefixes: &[String],
    ) -> kurrentdb::Result<Vec<RawEvent>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let options = ReadAllOptions::default()
            .position(from)
            .forwards()
            .filter(filter(prefixes))
            .max_count(count)
            .requires_leader(true);
        drain(self.client.read_all(&options).await).await
    }

    async fn read_all_last(&self, prefixes: &[String]) -> kurrentdb::Result<Option<RawEvent>> {
        let options = ReadAllOptions::default()
            .position(StreamPosition::End)
            .filter(filter(prefixes))
            .max_count(1)
            .requires_leader(true);
        Ok(drain(self.client.read_all(&options).await).await?.pop())
    }

    async fn probe(&self) -> kurrentdb::Result<()> {
        let options = ReadAllOptions::default()
            .position(StreamPosition::End)
            .max_count(1)
            .requires_leader(true);
        drain(self.client.read_all(&options).await)
            .await
            .map(|_| ())
    }

    async fn append(
        &self,
        stream: &str,
        state: StreamState,
        events: Vec<Outgoing>,
    ) -> kurrentdb::Result<()> {
        let events = events
            .iter()
            .map(Outgoing::to_client)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| kurrentdb::Error::InternalParsingError(e.to_string()))?;
        let options = kurrentdb::AppendToStreamOptions::default().stream_state(state);
        self.client
            .append_to_stream(stream, &options, events)
            .await
            .map(|_| ())
    }

    fn subscribe(
        &self,
        from: StreamPosition<kurrentdb::Position>,
        prefixes: &[String],
    ) -> Deliveries {
        let client = self.client.clone();
        // No client-side retries: the store reopens the subscription itself, from the
        // last position it delivered, so it knows exactly where it stands.
        let options = SubscribeToAllOptions::default()
            .position(from)
            .filter(filter(prefixes))
            .requires_leader(true);
        let opened = async move { client.subscribe_to_all(&options).await };
        futures::stream::once(opened)
            .flat_map(|subscription| {
                futures::stream::unfold(Some(subscription), |state| async move {
                    let mut subscription = state?;
                    match subscription.next_subscription_event().await {
                        Ok(event) => Some((Ok(delivery(event)), Some(subscription))),
                        Err(err) => Some((Err(err), None)),
                    }
                })
            })
            .boxed()
    }
}

/// What a subscription event means to the store.
fn delivery(event: SubscriptionEvent) -> Delivery {
    match event {
        SubscriptionEvent::EventAppeared(resolved) => {
            original(resolved).map_or(Delivery::Other, Delivery::Event)
        }
        SubscriptionEvent::Checkpoint(position) => Delivery::Checkpoint(position),
        _ => Delivery::Other,
    }
}
