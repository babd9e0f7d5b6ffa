//! The runtime: batch and checkpoint together, crash safety, retries and parking,
//! catch-up then live, `wait_for`, status.

use super::support::*;
use crate::codec::decode;
use crate::error::ProjectionError;
use crate::projector::Envelope;
use crate::runtime::lanes::{self, BatchError, LaneSet};
use crate::{models, Health, LeaseState, RuntimeConfig, WaitError};
use homeroom_domain::{ConversationKind, PersonKind};
use homeroom_eventstore::{EventMetadata, ExpectedVersion, NewEvent, Position, StreamId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use uuid::Uuid;

async fn people(w: &World, n: u128) -> Position {
    let mut last = Position::START;
    for i in 0..n {
        last = w
            .register(NORTH, person(1000 + i), PersonKind::Staff, "Pat")
            .await;
    }
    last
}

async fn a_failed_batch_leaves_nothing_and_the_retry_applies_each_event_once(w: World) {
    people(&w, 10).await;
    let a = Counter::new(
        "counter_a",
        &["count_a"],
        Plan {
            at: Some(5),
            failures: 1,
            ..Plan::default()
        },
    );
    let b = Counter::new("counter_b", &["count_b"], Plan::default());
    let (runtime, _) = w.runtime_with(vec![b.clone(), a.clone()], fast()).await;
    let db = w.db().await;
    let events: Vec<Envelope> = w
        .store_events()
        .await
        .into_iter()
        .map(|recorded| {
            let event = decode(&recorded).unwrap();
            Envelope::new(recorded, event)
        })
        .collect();

    let failed = lanes::write_batch(
        &runtime.inner,
        LaneSet::Active,
        Position::START,
        &events,
        None,
    )
    .await;
    match failed {
        Err(BatchError::Lane { name, position, .. }) => {
            assert_eq!(name, "counter_a");
            assert_eq!(position, Position::at(1), "the first event the lane got");
        }
        _ => panic!("the batch should fail in counter_a"),
    }
    assert!(counted(&db, "count_a").await.is_empty());
    assert!(
        counted(&db, "count_b").await.is_empty(),
        "the other projector's work is rolled back too"
    );
    let status = runtime.status().await.unwrap();
    assert!(status.iter().all(|s| s.checkpoint == Position::START));

    assert!(lanes::write_batch(
        &runtime.inner,
        LaneSet::Active,
        Position::START,
        &events,
        None
    )
    .await
    .is_ok());
    assert_eq!(counted(&db, "count_a").await, once(10));
    assert_eq!(counted(&db, "count_b").await, once(10));
    // Fed the same events again, nothing is applied twice.
    assert!(lanes::write_batch(
        &runtime.inner,
        LaneSet::Active,
        Position::START,
        &events,
        None
    )
    .await
    .is_ok());
    assert_eq!(counted(&db, "count_a").await, once(10));
    let status = runtime.status().await.unwrap();
    assert!(status
        .iter()
        .all(|s| s.checkpoint == Position::at(10) && s.lag == 0));
}

async fn a_crash_mid_batch_loses_only_that_batch_and_a_restart_applies_it_once(w: World) {
    people(&w, 30).await;
    let reached = Arc::new(Notify::new());
    let hanging = Counter::new(
        "counter_a",
        &["count_a"],
        Plan {
            at: Some(17),
            hang: Some(reached.clone()),
            ..Plan::default()
        },
    );
    let config = RuntimeConfig {
        batch_size: 10,
        ..fast()
    };
    let (runtime, _) = w.runtime_with(vec![hanging], config.clone()).await;
    let task = tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.catch_up().await }
    });
    reached.notified().await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    drop(runtime);

    let db = w.db().await;
    assert_eq!(
        counted(&db, "count_a").await,
        once(10),
        "the interrupted batch left nothing"
    );
    let healthy = Counter::new("counter_a", &["count_a"], Plan::default());
    let (runtime, _) = w.runtime_with(vec![healthy], config).await;
    assert_eq!(runtime.checkpoint("counter_a"), Some(Position::at(10)));
    runtime.catch_up().await.unwrap();
    assert_eq!(counted(&db, "count_a").await, once(30));
}

async fn a_poison_event_parks_only_its_projector_until_resumed(w: World) {
    people(&w, 15).await;
    let a = Counter::new(
        "counter_a",
        &["count_a"],
        Plan {
            at: Some(8),
            failures: u32::MAX,
            ..Plan::default()
        },
    );
    let b = Counter::new("counter_b", &["count_b"], Plan::default());
    let (runtime, _) = w.runtime_with(vec![a.clone(), b.clone()], fast()).await;
    let db = w.db().await;
    runtime.catch_up().await.unwrap();

    let status = runtime.status().await.unwrap();
    let (sa, sb) = (&status[0], &status[1]);
    match &sa.health {
        Health::Parked { position, error } => {
            assert_eq!(*position, Position::at(8));
            assert!(error.contains("told to fail"), "{error}");
        }
        other => panic!("expected parked, got {other:?}"),
    }
    assert_eq!(
        sa.checkpoint,
        Position::at(7),
        "every event before the poison one"
    );
    assert_eq!(sa.lag, 8);
    assert_eq!(sb.health, Health::Live);
    assert_eq!(sb.checkpoint, Position::at(15));
    assert_eq!(counted(&db, "count_a").await, once(7));
    assert_eq!(counted(&db, "count_b").await, once(15));
    // Another process (`homeroom projections status`, a standby) knows it from the
    // read models, not from memory.
    let (elsewhere, _) = w.runtime_with(vec![a.clone(), b.clone()], fast()).await;
    let seen = elsewhere.status().await.unwrap();
    assert_eq!(
        seen[0].health, sa.health,
        "the park, seen by another process"
    );
    assert_eq!(seen[1].health, Health::Live);

    a.heal();
    runtime.resume("counter_a").unwrap();
    runtime.catch_up().await.unwrap();
    assert_eq!(counted(&db, "count_a").await, once(15));
    assert_eq!(counted(&db, "count_b").await, once(15));
    let status = runtime.status().await.unwrap();
    assert_eq!(status[0].health, Health::Live);
    let seen = elsewhere.status().await.unwrap();
    assert_eq!(
        seen[0].health,
        Health::Live,
        "once the checkpoint passed the event, for every process"
    );
    assert!(matches!(
        runtime.resume("nobody"),
        Err(ProjectionError::UnknownProjector(_))
    ));
}

async fn transient_failures_are_retried_until_they_pass(w: World) {
    people(&w, 10).await;
    let a = Counter::new(
        "counter_a",
        &["count_a"],
        Plan {
            at: Some(5),
            failures: 6,
            transient: true,
            ..Plan::default()
        },
    );
    let (runtime, _) = w.runtime_with(vec![a], fast()).await;
    let db = w.db().await;
    runtime.catch_up().await.unwrap();
    assert_eq!(counted(&db, "count_a").await, once(10));
    let status = runtime.status().await.unwrap();
    assert_eq!(status[0].health, Health::Live);
}

async fn an_event_that_does_not_decode_parks_every_projector_that_needs_it(w: World) {
    people(&w, 3).await;
    let stream = StreamId::parse("mystery-north:1").unwrap();
    w.store
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![NewEvent {
                event_id: Uuid::now_v7(),
                event_type: "from_the_future".into(),
                schema_version: 1,
                data: serde_json::json!({}),
                metadata: EventMetadata {
                    district: NORTH.into(),
                    ..EventMetadata::default()
                },
            }],
        )
        .await
        .unwrap();
    people(&w, 2).await;
    let (runtime, _) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    for s in runtime.status().await.unwrap() {
        assert_eq!(s.checkpoint, Position::at(3), "{}", s.name);
        match &s.health {
            Health::Parked { position, error } => {
                assert_eq!(*position, Position::at(4));
                assert!(error.contains("from_the_future"), "{error}");
            }
            other => panic!("{} should be parked, is {other:?}", s.name),
        }
    }
}

async fn live_projection_answers_wait_for_without_polling(w: World) {
    let (runtime, read) = w
        .runtime_with(models::all(), RuntimeConfig::default())
        .await;
    let (stop, task) = spawn_live(&runtime);
    runtime
        .wait_for(Position::START, Duration::ZERO)
        .await
        .unwrap();
    if w.engine == crate::Engine::Postgres {
        // Alone on its schema, the runtime takes the lease.
        let mut lease = runtime.lease_changes();
        tokio::time::timeout(WAIT, lease.wait_for(|l| *l == LeaseState::Held))
            .await
            .expect("the lease is taken")
            .unwrap();
    }

    let (t, g) = (person(1), person(2));
    w.register(NORTH, t, PersonKind::Staff, "Tess").await;
    w.register(NORTH, g, PersonKind::Guardian, "Gail").await;
    let at = w
        .start(
            NORTH,
            conversation(1),
            ConversationKind::Personal,
            &[t, g],
            message(1),
            "Hi",
        )
        .await;
    runtime.wait_for(at, WAIT).await.unwrap();
    let thread = read
        .conversation(&district(NORTH), conversation(1), None)
        .await
        .unwrap()
        .expect("visible once wait_for returned");
    assert_eq!(thread.messages.len(), 1);

    let later = w
        .post(NORTH, conversation(1), message(2), g, "Hello", &[t])
        .await;
    runtime
        .wait_for_projectors(&["conversations"], later, WAIT)
        .await
        .unwrap();
    let thread = read
        .conversation(&district(NORTH), conversation(1), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(thread.messages.len(), 2);

    let beyond = Position::at(later.sequence + 100);
    assert!(matches!(
        runtime.wait_for(beyond, Duration::from_millis(20)).await,
        Err(WaitError::Timeout { .. })
    ));
    assert!(matches!(
        runtime
            .wait_for_projectors(&["nope"], later, Duration::ZERO)
            .await,
        Err(WaitError::UnknownProjector(_))
    ));
    stop.send(()).unwrap();
    task.await.unwrap();
}

async fn the_live_loop_resumes_from_its_checkpoint_after_a_restart(w: World) {
    let first = people(&w, 5).await;
    let counter = || Counter::new("counter_a", &["count_a"], Plan::default());
    let (runtime, _) = w.runtime_with(vec![counter()], fast()).await;
    let (stop, task) = spawn_live(&runtime);
    runtime.wait_for(first, WAIT).await.unwrap();
    stop.send(()).unwrap();
    task.await.unwrap();
    drop(runtime);

    let last = people(&w, 12).await;
    let (runtime, _) = w.runtime_with(vec![counter()], fast()).await;
    assert_eq!(runtime.checkpoint("counter_a"), Some(first));
    let (stop, task) = spawn_live(&runtime);
    runtime.wait_for(last, WAIT).await.unwrap();
    stop.send(()).unwrap();
    task.await.unwrap();
    assert_eq!(counted(&w.db().await, "count_a").await, once(17));
}

async fn status_reports_generation_checkpoint_and_lag(w: World) {
    people(&w, 10).await;
    let (runtime, _) = w.runtime().await;
    let before = runtime.status().await.unwrap();
    assert_eq!(
        before.iter().map(|s| s.name).collect::<Vec<_>>(),
        vec!["directory", "conversations", "deliveries", "audit"]
    );
    for s in &before {
        assert_eq!(
            (s.generation, s.checkpoint, s.lag),
            (1, Position::START, 10)
        );
        assert_eq!(s.health, Health::Live);
        assert!(s.rebuild.is_none());
    }
    // Not running: on PostgreSQL this process does not hold the lease.
    let expected = match w.engine {
        crate::Engine::Sqlite => LeaseState::NotNeeded,
        crate::Engine::Postgres => LeaseState::Standby,
    };
    assert!(before.iter().all(|s| s.lease == expected));
    assert_eq!(runtime.lease(), expected);
    runtime.catch_up().await.unwrap();
    for s in runtime.status().await.unwrap() {
        assert_eq!((s.checkpoint, s.lag), (Position::at(10), 0));
    }
    let json = serde_json::to_value(runtime.status().await.unwrap()).unwrap();
    assert_eq!(json[0]["health"]["state"], "live");
    assert_eq!(json[0]["checkpoint"], 10);
    assert_eq!(json[0]["lease"], serde_json::to_value(expected).unwrap());
}

async fn projector_names_must_be_unique(w: World) {
    let a = || Counter::new("counter_a", &["count_a"], Plan::default());
    let opened = crate::ProjectionRuntime::open(
        w.dyn_store(),
        w.db().await,
        vec![a(), a()],
        RuntimeConfig::default(),
    )
    .await;
    assert!(matches!(
        opened,
        Err(ProjectionError::DuplicateProjector("counter_a"))
    ));
}

async fn why_a_rebuild_stopped_is_reported_by_every_process(w: World) {
    people(&w, 10).await;
    let healthy = Counter::new("counter_a", &["count_a"], Plan::default());
    let (serving, _) = w.runtime_with(vec![healthy], fast()).await;
    serving.catch_up().await.unwrap();
    // `homeroom projections rebuild` in another process, with a build whose fold
    // cannot apply the fifth event.
    let broken = Counter::new(
        "counter_a",
        &["count_a"],
        Plan {
            at: Some(5),
            failures: u32::MAX,
            ..Plan::default()
        },
    );
    let (rebuilding, _) = w.runtime_with(vec![broken.clone()], fast()).await;
    let stopped = rebuilding.rebuild(crate::RebuildTarget::All, |_| {}).await;
    assert!(
        matches!(stopped, Err(ProjectionError::RebuildFailed { .. })),
        "{stopped:?}"
    );
    drop(rebuilding);
    let status = serving.status().await.unwrap();
    let rebuild = status[0]
        .rebuild
        .as_ref()
        .expect("the half-built generation");
    assert_eq!(rebuild.checkpoint, Position::at(4));
    let error = rebuild.error.as_deref().unwrap_or_default();
    assert!(error.contains("told to fail"), "{status:?}");
    assert_eq!(
        status[0].health,
        Health::Live,
        "the serving generation is fine"
    );

    broken.heal();
    let (again, _) = w.runtime_with(vec![broken], fast()).await;
    again
        .rebuild(crate::RebuildTarget::All, |_| {})
        .await
        .unwrap();
    let status = serving.status().await.unwrap();
    assert_eq!(status[0].rebuild, None, "{status:?}");
    assert_eq!(status[0].generation, 2);
}

on_both_engines! {
    #[tokio::test] a_failed_batch_leaves_nothing_and_the_retry_applies_each_event_once,
    #[tokio::test] a_crash_mid_batch_loses_only_that_batch_and_a_restart_applies_it_once,
    #[tokio::test] a_poison_event_parks_only_its_projector_until_resumed,
    #[tokio::test] why_a_rebuild_stopped_is_reported_by_every_process,
    #[tokio::test] transient_failures_are_retried_until_they_pass,
    #[tokio::test] an_event_that_does_not_decode_parks_every_projector_that_needs_it,
    #[tokio::test] live_projection_answers_wait_for_without_polling,
    #[tokio::test] the_live_loop_resumes_from_its_checkpoint_after_a_restart,
    #[tokio::test] status_reports_generation_checkpoint_and_lag,
    #[tokio::test] projector_names_must_be_unique,
}
