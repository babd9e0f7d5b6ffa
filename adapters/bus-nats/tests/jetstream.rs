//! The NATS bus against a real JetStream server (`NATS_URL`, default 127.0.0.1:4222).
//! Each test has its own stream and subject prefix and deletes its stream at the end.

use futures::FutureExt;
use homeroom_bus::relay::{Relay, RelayConfig};
use homeroom_bus::{filter_for, EventPublisher, WorkItem, WorkQueue};
use homeroom_bus_nats::testing::TestNats;
use homeroom_bus_nats::{NatsError, NatsWorkQueue, POSITION_HEADER, STREAM_HEADER, TYPE_HEADER};
use homeroom_eventstore::memory::InMemoryStore;
use homeroom_eventstore::{
    EventAppender, EventMetadata, EventReader, ExpectedVersion, NewEvent, Position, RecordedEvent,
    StreamId,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(30);
const DURABLE: &str = "homeroom-delivery";

/// Appends `count` events of `event_type` to a stream of `category` in district `d1`.
async fn append(store: &InMemoryStore, category: &str, event_type: &str, count: usize) {
    let events = (0..count)
        .map(|n| NewEvent {
            event_id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            schema_version: 1,
            data: serde_json::json!({ "n": n }),
            metadata: EventMetadata {
                district: "d1".to_owned(),
                ..EventMetadata::default()
            },
        })
        .collect();
    let stream = StreamId::parse(format!("{category}-d1:{}", Uuid::now_v7())).unwrap();
    store
        .append(&stream, ExpectedVersion::NoStream, events)
        .await
        .unwrap();
}

async fn log(store: &InMemoryStore) -> Vec<RecordedEvent> {
    store.read_all(Position::START, 100_000).await.unwrap()
}

fn queued() -> Vec<String> {
    vec![filter_for("delivery", "delivery_queued")]
}

fn ids<'a>(events: impl IntoIterator<Item = &'a RecordedEvent>) -> Vec<Uuid> {
    events.into_iter().map(|e| e.event_id).collect()
}

/// How many messages the test's stream holds, asked on a connection of its own.
async fn stored_messages(nats: &TestNats) -> u64 {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut stream = async_nats::jetstream::new(client)
        .get_stream(&nats.config().stream)
        .await
        .unwrap();
    stream.info().await.unwrap().state.messages
}

/// Fetches from `queue` until an item comes, within [`PATIENCE`].
async fn next_item(queue: &NatsWorkQueue) -> WorkItem {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let mut items = queue.fetch(1, Duration::from_millis(500)).await.unwrap();
            if let Some(item) = items.pop() {
                return item;
            }
        }
    })
    .await
    .expect("no item came")
}

/// Fetches and acks until `count` items came, within [`PATIENCE`]; returns their events in
/// the order received.
async fn drain(queue: &NatsWorkQueue, count: usize) -> Vec<RecordedEvent> {
    tokio::time::timeout(PATIENCE, async {
        let mut seen = Vec::new();
        while seen.len() < count {
            for item in queue.fetch(7, Duration::from_millis(500)).await.unwrap() {
                seen.push(item.event.clone());
                item.ack().await.unwrap();
            }
        }
        seen
    })
    .await
    .unwrap_or_else(|_| panic!("fewer than {count} items came"))
}

#[tokio::test]
async fn publishing_the_same_event_twice_stores_it_once() {
    let Some(nats) = TestNats::connect_or_skip().await else {
        return;
    };
    let bus = nats.bus().await;
    assert_eq!(bus.last_published().await.unwrap(), Position::START);
    let store = InMemoryStore::new();
    append(&store, "delivery", "delivery_queued", 4).await;
    let events = log(&store).await;

    bus.publish(&events[..1]).await.unwrap();
    bus.publish(&events[..1]).await.unwrap();
    // A batch that starts with a duplicate still stores the rest.
    bus.publish(&events[..3]).await.unwrap();
    // A batch of duplicates only.
    bus.publish(&events[1..3]).await.unwrap();
    // A duplicate in the middle.
    bus.publish(&events[2..]).await.unwrap();

    assert_eq!(stored_messages(&nats).await, 4);
    assert_eq!(bus.last_published().await.unwrap(), events[3].position);
    nats.cleanup().await;
}

#[tokio::test]
async fn an_event_the_server_refuses_mid_batch_leaves_no_hole_after_it() {
    let Some(nats) = TestNats::connect_or_skip().await else {
        return;
    };
    let bus = nats.bus().await;
    // The server (not the client) refuses messages over 4 KiB on this stream.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream.get_stream(&nats.config().stream).await.unwrap();
    let mut config = stream.info().await.unwrap().config.clone();
    config.max_message_size = 4096;
    jetstream.update_stream(config).await.unwrap();

    let store = InMemoryStore::new();
    append(&store, "delivery", "delivery_queued", 1).await;
    let big = NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "delivery_queued".to_owned(),
        schema_version: 1,
        data: serde_json::json!({ "text": "x".repeat(8192) }),
        metadata: EventMetadata::default(),
    };
    store
        .append(
            &StreamId::parse("delivery-d1:big").unwrap(),
            ExpectedVersion::NoStream,
            vec![big],
        )
        .await
        .unwrap();
    append(&store, "delivery", "delivery_queued", 2).await;
    let events = log(&store).await;

    assert!(bus.publish(&events).await.is_err());
    // Only what precedes the refused event is stored: resuming from the bus's last
    // position cannot skip it.
    assert_eq!(stored_messages(&nats).await, 1);
    assert_eq!(bus.last_published().await.unwrap(), events[0].position);
    nats.cleanup().await;
}

#[tokio::test]
async fn last_published_is_read_back_after_reconnecting() {
    let Some(nats) = TestNats::connect_or_skip().await else {
        return;
    };
    let store = InMemoryStore::new();
    append(&store, "delivery", "delivery_queued", 3).await;
    append(&store, "conversation", "message_posted", 2).await;
    let events = log(&store).await;
    let first = nats.bus().await;
    first.publish(&events[..2]).await.unwrap();
    first.publish(&events[2..]).await.unwrap();
    drop(first);

    let again = nats.bus().await;
    assert_eq!(again.last_published().await.unwrap(), events[4].position);
    // The new connection learns the stream's sequence and carries on.
    append(&store, "delivery", "delivery_queued", 1).await;
    let events = log(&store).await;
    again.publish(&events[5..]).await.unwrap();
    assert_eq!(again.last_published().await.unwrap(), events[5].position);
    assert_eq!(stored_messages(&nats).await, 6);

    // Subject, message id and headers, as a foreign consumer sees them.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let stream = async_nats::jetstream::new(client)
        .get_stream(&nats.config().stream)
        .await
        .unwrap();
    let message = stream
        .get_last_raw_message_by_subject(&format!("{}.>", nats.config().subject_prefix))
        .await
        .unwrap();
    let last = &events[5];
    let header = |name: &str| message.headers.get(name).unwrap().as_str().to_owned();
    assert_eq!(
        message.subject.as_str(),
        format!(
            "{}.d1.delivery.delivery_queued",
            nats.config().subject_prefix
        )
    );
    assert_eq!(header("Nats-Msg-Id"), last.event_id.to_string());
    assert_eq!(header(POSITION_HEADER), last.position.to_string());
    assert_eq!(header(STREAM_HEADER), last.stream.as_str());
    assert_eq!(header(TYPE_HEADER), "delivery_queued");
    let body: RecordedEvent = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(&body, last);
    nats.cleanup().await;
}

#[tokio::test]
async fn two_workers_on_one_durable_share_the_items_between_them() {
    let Some(nats) = TestNats::connect_or_skip().await else {
        return;
    };
    let store = InMemoryStore::new();
    for _ in 0..4 {
        append(&store, "delivery", "delivery_queued", 5).await;
        append(&store, "conversation", "message_posted", 2).await;
    }
    let events = log(&store).await;
    let bus = nats.bus().await;
    bus.publish(&events).await.unwrap();

    // Two worker processes: a connection each, one durable.
    let (bus_a, bus_b) = (nats.bus().await, nats.bus().await);
    let a = bus_a.work_queue(DURABLE, &queued()).await.unwrap();
    let b = bus_b.work_queue(DURABLE, &queued()).await.unwrap();
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    tokio::time::timeout(PATIENCE, async {
        while got_a.len() + got_b.len() < 20 {
            for (queue, got) in [(&a, &mut got_a), (&b, &mut got_b)] {
                for item in queue.fetch(3, Duration::from_millis(200)).await.unwrap() {
                    got.push(item.event.event_id);
                    item.ack().await.unwrap();
                }
            }
        }
    })
    .await
    .expect("not every item came");

    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "one worker got nothing"
    );
    let (set_a, set_b): (HashSet<Uuid>, HashSet<Uuid>) = (
        got_a.iter().copied().collect(),
        got_b.iter().copied().collect(),
    );
    assert!(set_a.is_disjoint(&set_b), "an item went to both workers");
    let all: HashSet<Uuid> = set_a.union(&set_b).copied().collect();
    let expected: HashSet<Uuid> = events
        .iter()
        .filter(|e| e.event_type == "delivery_queued")
        .map(|e| e.event_id)
        .collect();
    assert_eq!(all, expected);
    assert_eq!(got_a.len() + got_b.len(), 20, "an item came twice");
    nats.cleanup().await;
}

/// One queued delivery on the bus, and two worker processes' queues on the shared
/// consumer with an ack wait of one second; `None` when NATS is not there to test.
async fn one_delivery_for_two_workers(
) -> Option<(TestNats, Vec<RecordedEvent>, NatsWorkQueue, NatsWorkQueue)> {
    let mut nats = TestNats::connect_or_skip().await?;
    nats.adjust(|c| {
        c.ack_wait = Duration::from_secs(1);
    });
    let store = InMemoryStore::new();
    append(&store, "delivery", "delivery_queued", 1).await;
    let events = log(&store).await;
    let (bus_a, bus_b) = (nats.bus().await, nats.bus().await);
    bus_a.publish(&events).await.unwrap();
    let a = bus_a.work_queue(DURABLE, &queued()).await.unwrap();
    let b = bus_b.work_queue(DURABLE, &queued()).await.unwrap();
    Some((nats, events, a, b))
}

#[tokio::test]
async fn an_item_left_unsettled_comes_back_to_another_worker_after_the_ack_wait() {
    let Some((nats, events, a, b)) = one_delivery_for_two_workers().await else {
        return;
    };

    let taken = next_item(&a).await;
    assert_eq!(taken.attempt, 1);
    assert_eq!(taken.event.event_id, events[0].event_id);
    drop(taken); // the worker died holding it

    let back = next_item(&b).await;
    assert_eq!(back.event.event_id, events[0].event_id);
    // A retry, counted: 2, or more when a loaded machine let another ack wait pass
    // before this worker's fetch (the server hands it out again each time).
    assert!(back.attempt >= 2, "attempt {}", back.attempt);
    let acked_at_attempt = back.attempt;
    back.ack().await.unwrap();
    // Acked: it is never handed out again, to either worker, even after another ack
    // wait. (A copy handed out before the ack, to a pull request that had expired on a
    // loaded machine, may still arrive late with its older delivery count; workers read
    // the delivery's stream fresh, so such a copy sends nothing. Only a redelivery after
    // the ack would count higher.)
    for queue in [&a, &b] {
        let items = queue.fetch(1, Duration::from_millis(1_500)).await.unwrap();
        assert!(
            items.iter().all(|i| i.attempt < acked_at_attempt),
            "an acked item came back: {items:?}"
        );
    }
    nats.cleanup().await;
}

#[tokio::test]
async fn an_item_worked_on_longer_than_the_ack_wait_stays_with_its_worker() {
    let Some((nats, events, a, b)) = one_delivery_for_two_workers().await else {
        return;
    };

    let taken = next_item(&a).await;
    assert_eq!(taken.event.event_id, events[0].event_id);
    // A send the provider holds for three ack waits, while the other worker asks for work.
    let (_, meanwhile) = tokio::join!(
        taken.while_in_progress(tokio::time::sleep(Duration::from_secs(3))),
        b.fetch(1, Duration::from_millis(2_800)),
    );
    assert!(
        meanwhile.unwrap().is_empty(),
        "the item was handed to the other worker while still being worked on"
    );
    taken.ack().await.unwrap();
    nats.cleanup().await;
}

#[tokio::test]
async fn retry_after_hands_the_item_out_again_later_with_a_higher_attempt() {
    let Some(nats) = TestNats::connect_or_skip().await else {
        return;
    };
    let store = InMemoryStore::new();
    append(&store, "delivery", "delivery_queued", 1).await;
    let events = log(&store).await;
    let bus = nats.bus().await;
    bus.publish(&events).await.unwrap();
    let queue = bus.work_queue(DURABLE, &queued()).await.unwrap();

    let first = next_item(&queue).await;
    assert_eq!(first.attempt, 1);
    first.in_progress().await.unwrap();
    first.retry_after(Duration::from_millis(300)).await.unwrap();
    let second = next_item(&queue).await;
    assert_eq!(second.event.event_id, events[0].event_id);
    assert_eq!(second.attempt, 2);
    second.retry_after(Duration::ZERO).await.unwrap();
    let third = next_item(&queue).await;
    assert_eq!(third.attempt, 3);
    third.ack().await.unwrap();
    nats.cleanup().await;
}

#[tokio::test]
async fn work_queue_filters_are_honoured_or_refused_never_widened() {
    let Some(nats) = TestNats::connect_or_skip().await else {
        return;
    };
    let store = InMemoryStore::new();
    append(&store, "delivery", "delivery_queued", 1).await;
    append(&store, "delivery", "delivery_sent", 1).await;
    append(&store, "conversation", "message_posted", 1).await;
    let events = log(&store).await;
    let bus = nats.bus().await;
    bus.publish(&events).await.unwrap();

    let foreign = bus.work_queue(DURABLE, &["elsewhere.>".to_owned()]).await;
    assert!(matches!(foreign, Err(NatsError::ForeignFilter(_))));

    let two = vec![
        filter_for("delivery", "delivery_queued"),
        filter_for("delivery", "delivery_sent"),
    ];
    match bus.work_queue("two-filters", &two).await {
        // NATS before 2.10 would ignore the list and hand out everything.
        Err(NatsError::FiltersIgnored { kept, .. }) => assert!(kept.is_empty()),
        Err(other) => panic!("unexpected error: {other}"),
        Ok(queue) => {
            let got = drain(&queue, 2).await;
            let types: HashSet<&str> = got.iter().map(|e| e.event_type.as_str()).collect();
            assert_eq!(types, HashSet::from(["delivery_queued", "delivery_sent"]));
            let more = queue.fetch(5, Duration::from_millis(300)).await.unwrap();
            assert!(more.is_empty(), "a filtered-out event came: {more:?}");
        }
    }
    // Opening the same durable again is idempotent.
    bus.work_queue(DURABLE, &queued()).await.unwrap();
    bus.work_queue(DURABLE, &queued()).await.unwrap();
    nats.cleanup().await;
}

#[tokio::test]
async fn the_relay_carries_the_log_to_the_work_queue_once_and_in_order_across_a_restart() {
    let Some(nats) = TestNats::connect_or_skip().await else {
        return;
    };
    let store = InMemoryStore::new();
    append(&store, "delivery", "delivery_queued", 10).await;
    let config = RelayConfig {
        batch_size: 4,
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
    };

    // The first relay runs while events keep being appended, and is stopped mid-way.
    let relay = Relay::new(
        Arc::new(store.clone()),
        Arc::new(nats.bus().await),
        config.clone(),
    );
    let mut published = relay.published();
    let (stop, stopped) = oneshot::channel::<()>();
    let first = tokio::spawn(relay.run(stopped.map(|_| ())));
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for round in 0..20 {
                append(&store, "delivery", "delivery_queued", 1 + round % 3).await;
                append(&store, "conversation", "message_posted", 1).await;
                tokio::task::yield_now().await;
            }
        })
    };
    tokio::time::timeout(PATIENCE, published.wait_for(|p| *p >= Position::at(12)))
        .await
        .unwrap()
        .unwrap();
    stop.send(()).unwrap();
    first.await.unwrap().unwrap();
    writer.await.unwrap();

    // More while no relay runs, then a second relay on a new connection.
    append(&store, "delivery", "delivery_queued", 5).await;
    let head = store.head().await.unwrap();
    let relay = Relay::new(Arc::new(store.clone()), Arc::new(nats.bus().await), config);
    let mut published = relay.published();
    let (stop, stopped) = oneshot::channel::<()>();
    let second = tokio::spawn(relay.run(stopped.map(|_| ())));
    tokio::time::timeout(PATIENCE, published.wait_for(|p| *p >= head))
        .await
        .unwrap()
        .unwrap();
    stop.send(()).unwrap();
    second.await.unwrap().unwrap();

    let events = log(&store).await;
    assert_eq!(stored_messages(&nats).await, events.len() as u64);
    let expected: Vec<&RecordedEvent> = events
        .iter()
        .filter(|e| e.event_type == "delivery_queued")
        .collect();
    let bus = nats.bus().await;
    let queue = bus.work_queue(DURABLE, &queued()).await.unwrap();
    let got = drain(&queue, expected.len()).await;
    assert_eq!(ids(got.iter()), ids(expected));
    let more = queue.fetch(5, Duration::from_millis(300)).await.unwrap();
    assert!(more.is_empty(), "an event came twice: {more:?}");
    nats.cleanup().await;
}
