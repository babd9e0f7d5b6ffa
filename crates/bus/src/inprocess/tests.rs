use super::*;
use homeroom_eventstore::memory::InMemoryStore;
use homeroom_eventstore::{EventAppender, EventMetadata, ExpectedVersion, NewEvent, StreamId};

const PATIENCE: Duration = Duration::from_secs(10);

async fn append(store: &InMemoryStore, stream: &str, event_type: &str) -> Position {
    let event = NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: event_type.to_owned(),
        schema_version: 1,
        data: serde_json::json!({}),
        metadata: EventMetadata {
            district: "north".into(),
            ..EventMetadata::default()
        },
    };
    store
        .append(
            &StreamId::parse(stream).unwrap(),
            ExpectedVersion::Any,
            vec![event],
        )
        .await
        .unwrap()
        .position
}

fn config() -> InProcessConfig {
    InProcessConfig {
        ack_wait: Duration::from_millis(300),
        ..InProcessConfig::default()
    }
}

async fn fetch_n(queue: &InProcessQueue, n: usize) -> Vec<WorkItem> {
    let mut items = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while items.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} items came",
            items.len()
        );
        items.extend(queue.fetch(n - items.len(), PATIENCE).await.unwrap());
    }
    items
}

#[tokio::test]
async fn only_the_chosen_event_types_are_handed_out_in_log_order() {
    let store = Arc::new(InMemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    let queue = InProcessQueue::open(
        store.clone(),
        &dir.path().join("q.checkpoint"),
        &["delivery_queued"],
        config(),
    )
    .unwrap();
    let a = append(&store, "delivery-north:1", "delivery_queued").await;
    append(&store, "district-north", "school_registered").await;
    let b = append(&store, "delivery-north:2", "delivery_queued").await;
    let items = fetch_n(&queue, 2).await;
    let positions: Vec<Position> = items.iter().map(|i| i.event.position).collect();
    assert_eq!(positions, vec![a, b]);
    assert!(items.iter().all(|i| i.attempt == 1));
    queue.close();
}

#[tokio::test]
async fn an_item_left_unsettled_comes_back_with_a_higher_attempt() {
    let store = Arc::new(InMemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    let queue = InProcessQueue::open(
        store.clone(),
        &dir.path().join("q.checkpoint"),
        &["delivery_queued"],
        config(),
    )
    .unwrap();
    append(&store, "delivery-north:1", "delivery_queued").await;
    let first = fetch_n(&queue, 1).await;
    drop(first); // the worker died without settling it
    let again = fetch_n(&queue, 1).await;
    assert_eq!(again[0].attempt, 2);
    let item = again.into_iter().next().unwrap();
    item.retry_after(Duration::from_millis(50)).await.unwrap();
    let third = fetch_n(&queue, 1).await;
    assert_eq!(third[0].attempt, 3);
    third.into_iter().next().unwrap().ack().await.unwrap();
    assert!(queue
        .fetch(1, Duration::from_millis(400))
        .await
        .unwrap()
        .is_empty());
    queue.close();
}

#[tokio::test]
async fn a_restart_resumes_after_the_acknowledged_prefix_without_a_gap() {
    let store = Arc::new(InMemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("q.checkpoint");
    let queue = InProcessQueue::open(store.clone(), &file, &["delivery_queued"], config()).unwrap();
    let mut positions = Vec::new();
    for i in 0..5 {
        positions.push(append(&store, &format!("delivery-north:{i}"), "delivery_queued").await);
        append(&store, "district-north", "school_registered").await;
    }
    let mut items = fetch_n(&queue, 5).await;
    // Acknowledge the first two and the last; the third and fourth are in flight.
    let last = items.pop().unwrap();
    let fourth = items.pop().unwrap();
    let third = items.pop().unwrap();
    for item in items {
        item.ack().await.unwrap();
    }
    last.ack().await.unwrap();
    drop((third, fourth));
    queue.close();

    let reopened =
        InProcessQueue::open(store.clone(), &file, &["delivery_queued"], config()).unwrap();
    let again = fetch_n(&reopened, 3).await;
    let got: Vec<Position> = again.iter().map(|i| i.event.position).collect();
    assert_eq!(
        got,
        positions[2..].to_vec(),
        "the unacknowledged ones come back, and the acknowledged one after them too"
    );
    for item in again {
        item.ack().await.unwrap();
    }
    let tail = append(&store, "delivery-north:9", "delivery_queued").await;
    let next = fetch_n(&reopened, 1).await;
    assert_eq!(next[0].event.position, tail);
    reopened.close();
}

#[tokio::test]
async fn a_closed_queue_answers_closed() {
    let store = Arc::new(InMemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    let queue = InProcessQueue::open(
        store,
        &dir.path().join("q.checkpoint"),
        &["delivery_queued"],
        config(),
    )
    .unwrap();
    let waiting = {
        let queue = queue.clone();
        tokio::spawn(async move { queue.fetch(1, PATIENCE).await })
    };
    queue.close();
    assert!(matches!(
        tokio::time::timeout(PATIENCE, waiting)
            .await
            .unwrap()
            .unwrap(),
        Err(BusError::Closed)
    ));
}

#[test]
fn a_checkpoint_file_that_holds_no_position_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("q.checkpoint");
    std::fs::write(&file, "garbage").unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = Arc::new(InMemoryStore::new());
        assert!(matches!(
            InProcessQueue::open(store, &file, &["x"], config()),
            Err(InProcessError::Checkpoint { .. })
        ));
    });
}
