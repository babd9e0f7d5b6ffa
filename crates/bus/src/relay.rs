//! The relay: the one task that copies the event log onto the bus.
//!
//! It asks the bus where it stopped ([`EventPublisher::last_published`]), follows
//! [`EventSubscriber::subscribe_all`] from there, and publishes whatever is ready in
//! batches, in log order. Nothing is lost on any failure:
//!
//! - a [`BusError`] keeps the batch in hand; after a backoff the relay asks the bus again
//!   what it holds, drops those events from the batch and publishes the rest, so an event
//!   stored before the failure is not sent twice, however long the bus was away;
//! - a subscription that ends with [`StoreError::Unavailable`] is resubscribed from the
//!   last position published;
//! - a restart resumes from [`EventPublisher::last_published`]; the bus drops duplicates
//!   near the resume point by event id.
//!
//! One relay at a time per log: recovering from a failure trusts the bus to hold a
//! prefix of the log, which two relays publishing at once break (the binary makes the
//! relays of a PostgreSQL schema take turns).
//!
//! [`Relay::published`] tells how far it got, so the binary can export the relay's lag.
//!
//! [`EventSubscriber::subscribe_all`]: homeroom_eventstore::EventSubscriber::subscribe_all

use crate::{BusError, EventPublisher};
use futures::StreamExt;
use homeroom_eventstore::{EventStore, Position, RecordedEvent, StoreError};
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How the relay batches and how patiently it retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// The most events published in one [`EventPublisher::publish`] call (at least 1).
    pub batch_size: usize,
    /// The first pause after a failure.
    pub min_backoff: Duration,
    /// The longest pause between retries. Keep it well under the bus's duplicate window,
    /// so a retried batch still meets the bus's memory of what it stored.
    pub max_backoff: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 256,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// Why the relay stopped before it was asked to: retrying could not help.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The bus holds an event past the store's head: it was fed by another store (or the
    /// store was reset). Following the store from there would skip every event before it.
    #[error("the bus holds events up to position {bus}, past the event store's head {store}: is the bus shared with another store?")]
    BusAhead {
        /// The last position on the bus.
        bus: Position,
        /// The store's head when the relay started.
        store: Position,
    },
    /// The store failed in a way resubscribing would repeat (an unreadable event, or the
    /// store closing): publishing past it would leave a gap.
    #[error("the event store failed: {0}")]
    Store(#[source] StoreError),
}

/// The relay, built before it runs so its progress can be watched.
pub struct Relay {
    store: Arc<dyn EventStore>,
    publisher: Arc<dyn EventPublisher>,
    config: RelayConfig,
    published: watch::Sender<Position>,
}

impl Relay {
    /// A relay from `store` to `publisher`; it does nothing until [`Relay::run`].
    pub fn new(
        store: Arc<dyn EventStore>,
        publisher: Arc<dyn EventPublisher>,
        config: RelayConfig,
    ) -> Self {
        Self {
            store,
            publisher,
            config,
            published: watch::channel(Position::START).0,
        }
    }

    /// The position of the last event the bus acknowledged ([`Position::START`] until the
    /// relay knows): compare it with the store's head for the relay's lag.
    pub fn published(&self) -> watch::Receiver<Position> {
        self.published.subscribe()
    }

    /// Relays until `shutdown` completes, then returns `Ok(())`. A batch being published
    /// when `shutdown` completes is finished first; one waiting out a backoff is left to
    /// the next start, which resumes from the bus and so loses nothing.
    ///
    /// # Errors
    /// [`RelayError`] when retrying cannot help; bus failures and an unavailable store are
    /// retried for as long as it takes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), RelayError> {
        let mut shutdown = pin!(shutdown);
        let mut backoff = Backoff::new(&self.config);
        let Some(mut last) = self.resume_point(&mut backoff, &mut shutdown).await? else {
            return Ok(());
        };
        self.published.send_replace(last);
        tracing::info!(%last, "relay resumes after the last event on the bus");
        loop {
            let mut events = self
                .store
                .subscribe_all(last)
                .ready_chunks(self.config.batch_size.max(1));
            let ended = loop {
                let chunk = tokio::select! {
                    biased;
                    () = &mut shutdown => return Ok(()),
                    chunk = events.next() => chunk,
                };
                let Some(chunk) = chunk else {
                    break None;
                };
                let mut batch = Vec::with_capacity(chunk.len());
                let mut failure = None;
                for item in chunk {
                    match item {
                        Ok(event) if event.position > last => batch.push(event),
                        Ok(_) => {}
                        Err(err) => {
                            failure = Some(err);
                            break;
                        }
                    }
                }
                if !batch.is_empty() {
                    match self.publish(batch, &mut backoff, &mut shutdown).await {
                        Some(position) => last = position,
                        None => return Ok(()),
                    }
                }
                if failure.is_some() {
                    break failure;
                }
            };
            match ended {
                Some(err) if !transient(&err) => return Err(RelayError::Store(err)),
                Some(err) => {
                    tracing::warn!(error = %err, %last, "relay subscription failed; resubscribing");
                }
                None => tracing::warn!(%last, "relay subscription ended; resubscribing"),
            }
            if backoff.pause(&mut shutdown).await.is_stop() {
                return Ok(());
            }
        }
    }

    /// Where to resume: the bus's last position, once both the bus and the store answer.
    /// `None` when shutdown came first.
    async fn resume_point<S: Future<Output = ()>>(
        &self,
        backoff: &mut Backoff,
        shutdown: &mut Pin<&mut S>,
    ) -> Result<Option<Position>, RelayError> {
        loop {
            let asked = async {
                let bus = self
                    .publisher
                    .last_published()
                    .await
                    .map_err(Failure::Bus)?;
                let store = self.store.head().await.map_err(Failure::Store)?;
                Ok::<_, Failure>((bus, store))
            };
            let answer = tokio::select! {
                biased;
                () = &mut *shutdown => return Ok(None),
                answer = asked => answer,
            };
            match answer {
                Ok((bus, store)) if bus > store => return Err(RelayError::BusAhead { bus, store }),
                Ok((bus, _)) => return Ok(Some(bus)),
                Err(Failure::Store(err)) if !transient(&err) => return Err(RelayError::Store(err)),
                Err(Failure::Bus(err)) => {
                    tracing::warn!(error = %err, "relay cannot ask the bus where it stopped; retrying");
                }
                Err(Failure::Store(err)) => {
                    tracing::warn!(error = %err, "relay cannot read the store's head; retrying");
                }
            }
            if backoff.pause(shutdown).await.is_stop() {
                return Ok(None);
            }
        }
    }

    /// Publishes `batch` (non-empty, in log order) until the bus holds all of it, and
    /// returns its last position; `None` when shutdown came during a backoff.
    async fn publish<S: Future<Output = ()>>(
        &self,
        mut batch: Vec<RecordedEvent>,
        backoff: &mut Backoff,
        shutdown: &mut Pin<&mut S>,
    ) -> Option<Position> {
        let end = batch.last()?.position;
        loop {
            match self.publisher.publish(&batch).await {
                Ok(()) => break,
                Err(err) => {
                    let first = batch.first().map(|e| e.position);
                    tracing::warn!(error = %err, events = batch.len(), ?first, "relay could not publish; retrying");
                }
            }
            if backoff.pause(shutdown).await.is_stop() {
                return None;
            }
            // Send again only what the bus lacks: an event stored before the failure must
            // not depend on the bus's duplicate window, which a long outage outlasts.
            let held = tokio::select! {
                biased;
                () = &mut *shutdown => return None,
                held = self.publisher.last_published() => held,
            };
            match held {
                Ok(held) => batch.retain(|e| e.position > held),
                Err(err) => {
                    tracing::warn!(error = %err, "relay cannot ask the bus what it holds; sending the whole batch again");
                }
            }
            if batch.is_empty() {
                break;
            }
        }
        backoff.reset();
        self.published.send_replace(end);
        tracing::debug!(%end, "relay published a batch");
        Some(end)
    }
}

/// Runs a relay from `store` to `publisher` until `shutdown` completes (see
/// [`Relay::run`]); build a [`Relay`] instead to watch its progress.
///
/// # Errors
/// As [`Relay::run`].
pub async fn run(
    store: Arc<dyn EventStore>,
    publisher: Arc<dyn EventPublisher>,
    config: RelayConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RelayError> {
    Relay::new(store, publisher, config).run(shutdown).await
}

/// Whether resubscribing may help.
fn transient(err: &StoreError) -> bool {
    matches!(err, StoreError::Unavailable(_))
}

enum Failure {
    Bus(BusError),
    Store(StoreError),
}

#[derive(PartialEq, Eq)]
enum Paused {
    Elapsed,
    Stop,
}

impl Paused {
    fn is_stop(&self) -> bool {
        *self == Self::Stop
    }
}

/// Doubling pauses between retries, capped. No jitter: one relay runs per deployment, so
/// there is no herd to spread.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(config: &RelayConfig) -> Self {
        let max = config.max_backoff.max(config.min_backoff);
        Self {
            min: config.min_backoff,
            max,
            next: config.min_backoff,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    async fn pause<S: Future<Output = ()>>(&mut self, shutdown: &mut Pin<&mut S>) -> Paused {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        tokio::select! {
            biased;
            () = &mut *shutdown => Paused::Stop,
            () = tokio::time::sleep(delay) => Paused::Elapsed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use futures::stream;
    use homeroom_eventstore::memory::InMemoryStore;
    use homeroom_eventstore::{
        AppendResult, EventAppender, EventMetadata, EventReader, EventStream, EventSubscriber,
        ExpectedVersion, NewEvent, StreamId,
    };
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;
    use tokio::sync::{oneshot, Semaphore};
    use uuid::Uuid;

    const PATIENCE: Duration = Duration::from_secs(10);

    fn quick(batch_size: usize) -> RelayConfig {
        RelayConfig {
            batch_size,
            min_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
        }
    }

    async fn append(store: &InMemoryStore, stream: &str, count: usize) {
        let events = (0..count)
            .map(|n| NewEvent {
                event_id: Uuid::now_v7(),
                event_type: "noted".into(),
                schema_version: 1,
                data: serde_json::json!({ "n": n }),
                metadata: EventMetadata::default(),
            })
            .collect();
        store
            .append(
                &StreamId::parse(stream).unwrap(),
                ExpectedVersion::Any,
                events,
            )
            .await
            .unwrap();
    }

    fn failure() -> BusError {
        BusError::unavailable(std::io::Error::other("the test bus fails on purpose"))
    }

    /// A bus that dedupes by event id as JetStream does, and fails on a schedule: every
    /// `fail_every`-th publish stores only the first half of its batch and then fails, and
    /// every `fail_every`-th `last_published` fails.
    #[derive(Default)]
    struct FlakyBus {
        fail_every: u64,
        stored: Mutex<Vec<RecordedEvent>>,
        ids: Mutex<HashSet<Uuid>>,
        publishes: AtomicU64,
        failures: AtomicU64,
        asks: AtomicU64,
        /// When set, each publish takes a permit first (the test hands them out).
        gate: Option<Semaphore>,
        started: Option<watch::Sender<u64>>,
        always_fail: bool,
    }

    impl FlakyBus {
        fn failing_every(fail_every: u64) -> Self {
            Self {
                fail_every,
                ..Self::default()
            }
        }

        fn store(&self, events: &[RecordedEvent]) {
            let mut stored = self.stored.lock().unwrap();
            let mut ids = self.ids.lock().unwrap();
            for event in events {
                if ids.insert(event.event_id) {
                    stored.push(event.clone());
                }
            }
        }

        fn stored(&self) -> Vec<RecordedEvent> {
            self.stored.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl EventPublisher for FlakyBus {
        async fn publish(&self, events: &[RecordedEvent]) -> Result<(), BusError> {
            if let Some(started) = &self.started {
                started.send_modify(|n| *n += 1);
            }
            if let Some(gate) = &self.gate {
                gate.acquire().await.unwrap().forget();
            }
            if self.always_fail {
                return Err(failure());
            }
            let call = self.publishes.fetch_add(1, Ordering::SeqCst) + 1;
            if self.fail_every > 0 && call.is_multiple_of(self.fail_every) {
                self.failures.fetch_add(1, Ordering::SeqCst);
                self.store(&events[..events.len() / 2]);
                return Err(failure());
            }
            self.store(events);
            Ok(())
        }

        async fn last_published(&self) -> Result<Position, BusError> {
            let call = self.asks.fetch_add(1, Ordering::SeqCst) + 1;
            if self.always_fail || (self.fail_every > 0 && call.is_multiple_of(self.fail_every)) {
                return Err(failure());
            }
            Ok(self
                .stored
                .lock()
                .unwrap()
                .last()
                .map_or(Position::START, |e| e.position))
        }
    }

    enum Breaks {
        Unavailable,
        Corrupt,
    }

    /// An in-memory store whose subscriptions end with an error after `after` events.
    struct FlakyStore {
        inner: InMemoryStore,
        after: usize,
        breaks: Breaks,
        subscriptions: AtomicU64,
    }

    #[async_trait]
    impl EventAppender for FlakyStore {
        async fn append(
            &self,
            stream: &StreamId,
            expected: ExpectedVersion,
            events: Vec<NewEvent>,
        ) -> Result<AppendResult, StoreError> {
            self.inner.append(stream, expected, events).await
        }
    }

    #[async_trait]
    impl EventReader for FlakyStore {
        async fn read_stream(
            &self,
            stream: &StreamId,
            after_version: u64,
            limit: usize,
        ) -> Result<Vec<RecordedEvent>, StoreError> {
            self.inner.read_stream(stream, after_version, limit).await
        }
        async fn read_all(
            &self,
            after: Position,
            limit: usize,
        ) -> Result<Vec<RecordedEvent>, StoreError> {
            self.inner.read_all(after, limit).await
        }
        async fn stream_versions(&self, streams: &[StreamId]) -> Result<Vec<u64>, StoreError> {
            self.inner.stream_versions(streams).await
        }
        async fn find_command(&self, command_id: Uuid) -> Result<Vec<RecordedEvent>, StoreError> {
            self.inner.find_command(command_id).await
        }
        async fn head(&self) -> Result<Position, StoreError> {
            self.inner.head().await
        }
    }

    impl EventSubscriber for FlakyStore {
        fn subscribe_all(&self, after: Position) -> EventStream {
            self.subscriptions.fetch_add(1, Ordering::SeqCst);
            let err = match self.breaks {
                Breaks::Unavailable => {
                    StoreError::unavailable(std::io::Error::other("the test store fails"))
                }
                Breaks::Corrupt => StoreError::Corrupt {
                    stream: "test".into(),
                    version: 1,
                    reason: "broken on purpose".into(),
                },
            };
            self.inner
                .subscribe_all(after)
                .take(self.after)
                .chain(stream::once(async move { Err(err) }))
                .boxed()
        }
    }

    async fn wait_for(published: &mut watch::Receiver<Position>, position: Position) {
        tokio::time::timeout(PATIENCE, published.wait_for(|p| *p >= position))
            .await
            .unwrap_or_else(|_| panic!("relay did not reach {position} in time"))
            .expect("relay dropped its progress");
    }

    /// The bus holds every event of the log exactly once, in log order.
    async fn assert_bus_holds_the_log(bus: &FlakyBus, store: &dyn EventStore) {
        let log = store.read_all(Position::START, 10_000).await.unwrap();
        let held: Vec<Uuid> = bus.stored().iter().map(|e| e.event_id).collect();
        let expected: Vec<Uuid> = log.iter().map(|e| e.event_id).collect();
        assert_eq!(held, expected);
    }

    #[tokio::test]
    async fn every_event_arrives_once_and_in_order_across_bus_failures() {
        let store = InMemoryStore::new();
        for _ in 0..3 {
            append(&store, "noted-a", 10).await;
        }
        let bus = Arc::new(FlakyBus::failing_every(2));
        let relay = Relay::new(Arc::new(store.clone()), bus.clone(), quick(4));
        let mut published = relay.published();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(relay.run(async {
            let _ = stopped.await;
        }));
        for _ in 0..4 {
            append(&store, "noted-b", 5).await;
        }
        wait_for(&mut published, store.head().await.unwrap()).await;
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();

        assert!(
            bus.failures.load(Ordering::SeqCst) >= 3,
            "the bus never failed"
        );
        assert_bus_holds_the_log(&bus, &store).await;
    }

    #[tokio::test]
    async fn a_stopped_relay_finishes_its_batch_and_a_restart_leaves_no_gap() {
        let store = InMemoryStore::new();
        append(&store, "noted-a", 50).await;
        let (started, mut publishes) = watch::channel(0);
        let bus = Arc::new(FlakyBus {
            gate: Some(Semaphore::new(3)),
            started: Some(started),
            ..FlakyBus::default()
        });

        let relay = Relay::new(Arc::new(store.clone()), bus.clone(), quick(5));
        let mut published = relay.published();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(relay.run(async {
            let _ = stopped.await;
        }));
        // Three batches go through; the fourth is in hand, waiting on the bus.
        wait_for(&mut published, Position::at(15)).await;
        tokio::time::timeout(PATIENCE, publishes.wait_for(|n| *n >= 4))
            .await
            .unwrap()
            .unwrap();
        stop.send(()).unwrap();
        bus.gate.as_ref().unwrap().add_permits(1_000);
        tokio::time::timeout(PATIENCE, task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(*published.borrow(), Position::at(20));
        assert_eq!(
            bus.stored().len(),
            20,
            "the batch in hand was finished, no more"
        );

        append(&store, "noted-b", 10).await;
        let relay = Relay::new(Arc::new(store.clone()), bus.clone(), quick(5));
        let mut published = relay.published();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(relay.run(async {
            let _ = stopped.await;
        }));
        wait_for(&mut published, Position::at(60)).await;
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
        assert_bus_holds_the_log(&bus, &store).await;
    }

    #[tokio::test]
    async fn a_failed_subscription_resubscribes_from_the_last_published_event() {
        let store = Arc::new(FlakyStore {
            inner: InMemoryStore::new(),
            after: 7,
            breaks: Breaks::Unavailable,
            subscriptions: AtomicU64::new(0),
        });
        for _ in 0..4 {
            append(&store.inner, "noted-a", 10).await;
        }
        let bus = Arc::new(FlakyBus::failing_every(3));
        let relay = Relay::new(store.clone(), bus.clone(), quick(4));
        let mut published = relay.published();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(relay.run(async {
            let _ = stopped.await;
        }));
        wait_for(&mut published, Position::at(40)).await;
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();

        assert!(store.subscriptions.load(Ordering::SeqCst) >= 6);
        assert_bus_holds_the_log(&bus, store.as_ref()).await;
    }

    #[tokio::test]
    async fn an_unreadable_event_stops_the_relay_after_what_precedes_it() {
        let store = Arc::new(FlakyStore {
            inner: InMemoryStore::new(),
            after: 5,
            breaks: Breaks::Corrupt,
            subscriptions: AtomicU64::new(0),
        });
        append(&store.inner, "noted-a", 10).await;
        let bus = Arc::new(FlakyBus::default());
        let outcome = tokio::time::timeout(
            PATIENCE,
            run(store.clone(), bus.clone(), quick(3), std::future::pending()),
        )
        .await
        .unwrap();
        assert!(matches!(
            outcome,
            Err(RelayError::Store(StoreError::Corrupt { .. }))
        ));
        assert_eq!(bus.stored().len(), 5);
    }

    #[tokio::test]
    async fn a_bus_ahead_of_the_store_is_refused() {
        let other = InMemoryStore::new();
        append(&other, "noted-a", 3).await;
        let bus = Arc::new(FlakyBus::default());
        bus.store(&other.read_all(Position::START, 10).await.unwrap());

        let store = InMemoryStore::new();
        append(&store, "noted-a", 1).await;
        let outcome = run(Arc::new(store), bus, quick(3), std::future::pending::<()>()).await;
        assert!(matches!(
            outcome,
            Err(RelayError::BusAhead { bus, store }) if bus == Position::at(3) && store == Position::at(1)
        ));
    }

    #[tokio::test]
    async fn shutdown_stops_a_relay_whose_bus_is_down() {
        let store = InMemoryStore::new();
        append(&store, "noted-a", 3).await;
        let bus = Arc::new(FlakyBus {
            always_fail: true,
            ..FlakyBus::default()
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(Arc::new(store), bus.clone(), quick(3), async {
            let _ = stopped.await;
        }));
        // Let it fail a few times first.
        tokio::time::timeout(PATIENCE, async {
            while bus.asks.load(Ordering::SeqCst) < 3 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        stop.send(()).unwrap();
        tokio::time::timeout(PATIENCE, task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(bus.stored().is_empty());
    }
}
