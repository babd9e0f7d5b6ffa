//! Blue/green rebuilds: same rows as the live build, queries answer throughout, a
//! killed rebuild resumes, a version bump rebuilds on start.

use super::support::*;
use crate::db::{Engine, Tx};
use crate::error::ProjectionError;
use crate::projector::{Envelope, Generation, Projector};
use crate::{models, Health, RebuildPhase, RebuildTarget};
use async_trait::async_trait;
use homeroom_domain::{ConversationKind, Event};
use homeroom_eventstore::{Position, RecordedEvent};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

async fn a_rebuild_gives_the_same_rows_as_the_live_build_after_a_random_history(w: World) {
    for seed in [7, 1_234, 99_991] {
        let w = w.fresh();
        let (runtime, read) = w.runtime().await;
        let db = w.db().await;
        let (stop, task) = spawn_live(&runtime);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut convs = Vec::new();
        let mut last = Position::START;
        for _ in 0..6 {
            last = random_history(&w, &mut rng, 40, &mut convs).await;
            // Sometimes let the live loop catch up, sometimes not.
            if rng.random_bool(0.5) {
                runtime.wait_for(last, WAIT).await.unwrap();
            }
        }
        runtime.wait_for(last, WAIT).await.unwrap();
        let live_rows = dump(&runtime, &db).await;
        let live_answers = answers(&read, &convs).await;
        assert!(
            live_rows
                .iter()
                .any(|(t, rows)| t == "messages" && rows.len() > 50),
            "seed {seed}"
        );

        let report = runtime.rebuild(RebuildTarget::All, |_| {}).await.unwrap();
        assert_eq!(report.projectors.len(), 4);
        assert!(report
            .projectors
            .iter()
            .all(|p| p.generation == 2 && !p.resumed));
        assert_eq!(dump(&runtime, &db).await, live_rows, "seed {seed}");
        assert_eq!(answers(&read, &convs).await, live_answers, "seed {seed}");
        assert!(
            !db.table_exists("messages_g1").await,
            "the old generation is dropped"
        );
        assert!(db.table_exists("messages_g2").await);
        stop.send(()).unwrap();
        task.await.unwrap();
    }
}

async fn a_rebuild_while_the_log_grows_switches_without_losing_an_event(w: World) {
    let (runtime, _) = w.runtime().await;
    let db = w.db().await;
    let (stop, task) = spawn_live(&runtime);
    let mut rng = StdRng::seed_from_u64(42);
    let mut convs = Vec::new();
    random_history(&w, &mut rng, 150, &mut convs).await;
    let rebuild = tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.rebuild(RebuildTarget::All, |_| {}).await }
    });
    let last = random_history(&w, &mut rng, 150, &mut convs).await;
    rebuild.await.unwrap().unwrap();
    runtime.wait_for(last, WAIT).await.unwrap();
    let switched = dump(&runtime, &db).await;
    let status = runtime.status().await.unwrap();
    assert!(status
        .iter()
        .all(|s| s.generation == 2 && s.health == Health::Live));

    runtime.rebuild(RebuildTarget::All, |_| {}).await.unwrap();
    assert_eq!(dump(&runtime, &db).await, switched);
    stop.send(()).unwrap();
    task.await.unwrap();
}

async fn queries_keep_answering_from_the_old_generation_during_a_rebuild(w: World) {
    let mut rng = StdRng::seed_from_u64(5);
    let mut convs = Vec::new();
    random_history(&w, &mut rng, 200, &mut convs).await;
    let config = crate::RuntimeConfig {
        batch_size: 20,
        ..fast()
    };
    let (runtime, read) = w.runtime_with(models::all(), config).await;
    runtime.catch_up().await.unwrap();
    let before = answers(&read, &convs).await;

    let (reached_tx, reached_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let rebuild = tokio::spawn({
        let runtime = runtime.clone();
        async move {
            let mut paused = false;
            runtime
                .rebuild(RebuildTarget::All, move |p| {
                    if !paused && p.phase == RebuildPhase::Building && p.done() > 0 {
                        paused = true;
                        let _ = reached_tx.send(());
                        // Hand this worker's other tasks (and the I/O driver) to
                        // another thread while paused: PostgreSQL's sockets need them.
                        let _ = tokio::task::block_in_place(|| go_rx.recv());
                    }
                })
                .await
        }
    });
    tokio::task::spawn_blocking(move || reached_rx.recv())
        .await
        .unwrap()
        .unwrap();

    // Mid-rebuild: the old generation answers, complete; the new one is visible in status.
    assert_eq!(answers(&read, &convs).await, before);
    let status = runtime.status().await.unwrap();
    for s in &status {
        assert_eq!(s.generation, 1);
        let building = s.rebuild.as_ref().expect("a generation being built");
        assert_eq!(building.generation, 2);
        assert!(building.lag > 0);
    }
    go_tx.send(()).unwrap();
    rebuild.await.unwrap().unwrap();
    assert_eq!(answers(&read, &convs).await, before);
    assert!(runtime
        .status()
        .await
        .unwrap()
        .iter()
        .all(|s| s.generation == 2 && s.rebuild.is_none()));
}

async fn a_rebuild_killed_midway_leaves_the_old_generation_serving_and_resumes(w: World) {
    let mut rng = StdRng::seed_from_u64(11);
    let mut convs = Vec::new();
    random_history(&w, &mut rng, 200, &mut convs).await;
    let config = crate::RuntimeConfig {
        batch_size: 10,
        ..fast()
    };
    let (runtime, read) = w.runtime_with(models::all(), config.clone()).await;
    runtime.catch_up().await.unwrap();
    let db = w.db().await;
    let expected_rows = dump(&runtime, &db).await;
    let expected = answers(&read, &convs).await;

    let (reached_tx, reached_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let rebuild = tokio::spawn({
        let runtime = runtime.clone();
        async move {
            let mut calls = 0;
            runtime
                .rebuild(RebuildTarget::All, move |_| {
                    calls += 1;
                    if calls == 5 {
                        let _ = reached_tx.send(());
                        // Hand this worker's other tasks (and the I/O driver) to
                        // another thread while paused: PostgreSQL's sockets need them.
                        let _ = tokio::task::block_in_place(|| go_rx.recv());
                    }
                })
                .await
        }
    });
    tokio::task::spawn_blocking(move || reached_rx.recv())
        .await
        .unwrap()
        .unwrap();
    // Kill it: it stops at its next await, in the middle of its next batch.
    rebuild.abort();
    go_tx.send(()).unwrap();
    assert!(rebuild.await.unwrap_err().is_cancelled());
    drop(runtime);
    drop(read);

    // "Restart": a new runtime on the same files.
    let (runtime, read) = w.runtime_with(models::all(), config).await;
    let status = runtime.status().await.unwrap();
    for s in &status {
        assert_eq!(s.generation, 1, "the old generation still serves");
        let building = s
            .rebuild
            .as_ref()
            .expect("the half-built generation is kept");
        assert!(building.checkpoint > Position::START);
    }
    assert_eq!(answers(&read, &convs).await, expected);

    let report = runtime
        .rebuild(RebuildTarget::Outdated, |_| {})
        .await
        .unwrap();
    assert_eq!(report.projectors.len(), 4);
    assert!(report
        .projectors
        .iter()
        .all(|p| p.resumed && p.generation == 2));
    assert_eq!(dump(&runtime, &db).await, expected_rows);
    assert_eq!(answers(&read, &convs).await, expected);
    assert!(!db.table_exists("conversations_g1").await);
}

/// A projector under another version number.
struct Bumped(Arc<dyn Projector>, u32);

#[async_trait]
impl Projector for Bumped {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn version(&self) -> u32 {
        self.1
    }
    fn tables(&self) -> &'static [&'static str] {
        self.0.tables()
    }
    fn schema(&self, engine: Engine, generation: Generation) -> Vec<String> {
        self.0.schema(engine, generation)
    }
    async fn apply(
        &self,
        tx: &mut Tx<'_>,
        generation: Generation,
        recorded: &RecordedEvent,
        event: &Event,
    ) -> Result<(), ProjectionError> {
        self.0.apply(tx, generation, recorded, event).await
    }
    async fn apply_batch(
        &self,
        tx: &mut Tx<'_>,
        generation: Generation,
        events: &[Envelope],
    ) -> Result<(), ProjectionError> {
        self.0.apply_batch(tx, generation, events).await
    }
}

async fn bumping_a_version_rebuilds_on_start_while_the_old_generation_answers(w: World) {
    let mut rng = StdRng::seed_from_u64(3);
    let mut convs = Vec::new();
    let last = random_history(&w, &mut rng, 120, &mut convs).await;
    let (runtime, read) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    let expected = answers(&read, &convs).await;
    drop(runtime);

    let built_by = models::conversations::Conversations::default().version();
    let bumped = || {
        models::all()
            .into_iter()
            .map(|p| -> Arc<dyn Projector> {
                if p.name() == models::conversations::NAME {
                    Arc::new(Bumped(p, built_by + 1))
                } else {
                    p
                }
            })
            .collect::<Vec<_>>()
    };
    let (runtime, read) = w.runtime_with(bumped(), fast()).await;
    let status = runtime.status().await.unwrap();
    let conversations = status.iter().find(|s| s.name == "conversations").unwrap();
    assert_eq!(conversations.health, Health::Stale { built_by });
    assert_eq!(
        answers(&read, &convs).await,
        expected,
        "the old generation answers"
    );

    let mut switches = runtime.switches();
    let (stop, task) = spawn_live(&runtime);
    tokio::time::timeout(WAIT, switches.wait_for(|n| *n >= 1))
        .await
        .expect("the start-up rebuild finishes")
        .unwrap();
    runtime.wait_for(last, WAIT).await.unwrap();
    let status = runtime.status().await.unwrap();
    let conversations = status.iter().find(|s| s.name == "conversations").unwrap();
    assert_eq!(
        (conversations.generation, conversations.version),
        (2, built_by + 1)
    );
    assert_eq!(conversations.health, Health::Live);
    assert!(status
        .iter()
        .filter(|s| s.name != "conversations")
        .all(|s| s.generation == 1));
    assert_eq!(answers(&read, &convs).await, expected);

    // The live loop follows the new generation.
    let (t, g) = (person(1), person(20));
    let at = w
        .start(
            NORTH,
            conversation(9_999),
            ConversationKind::Personal,
            &[t, g],
            message(9_999_000),
            "after",
        )
        .await;
    runtime.wait_for(at, WAIT).await.unwrap();
    assert!(read
        .conversation(&district(NORTH), conversation(9_999), None)
        .await
        .unwrap()
        .is_some());
    stop.send(()).unwrap();
    task.await.unwrap();
}

async fn rebuilding_an_unknown_projector_is_refused_and_one_projector_rebuilds_alone(w: World) {
    let mut rng = StdRng::seed_from_u64(8);
    random_history(&w, &mut rng, 30, &mut Vec::new()).await;
    let (runtime, _) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    assert!(matches!(
        runtime
            .rebuild(RebuildTarget::Projector("nope".into()), |_| {})
            .await,
        Err(ProjectionError::UnknownProjector(_))
    ));
    let mut phases = Vec::new();
    let report = runtime
        .rebuild(RebuildTarget::Projector("audit".into()), |p| {
            phases.push((p.phase, p.done(), p.total()))
        })
        .await
        .unwrap();
    assert_eq!(report.projectors.len(), 1);
    assert_eq!(phases.first().map(|p| p.0), Some(RebuildPhase::Building));
    let (phase, done, total) = *phases.last().unwrap();
    assert_eq!((phase, done), (RebuildPhase::Done, total));
    let status = runtime.status().await.unwrap();
    let generations: Vec<_> = status.iter().map(|s| (s.name, s.generation)).collect();
    assert_eq!(
        generations,
        vec![
            ("directory", 1),
            ("conversations", 1),
            ("deliveries", 1),
            ("audit", 2)
        ]
    );
    let nothing = runtime
        .rebuild(RebuildTarget::Outdated, |_| {})
        .await
        .unwrap();
    assert!(nothing.projectors.is_empty());
}

on_both_engines! {
    #[tokio::test] a_rebuild_gives_the_same_rows_as_the_live_build_after_a_random_history,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_rebuild_while_the_log_grows_switches_without_losing_an_event,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    queries_keep_answering_from_the_old_generation_during_a_rebuild,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_rebuild_killed_midway_leaves_the_old_generation_serving_and_resumes,
    #[tokio::test] bumping_a_version_rebuilds_on_start_while_the_old_generation_answers,
    #[tokio::test] rebuilding_an_unknown_projector_is_refused_and_one_projector_rebuilds_alone,
}
