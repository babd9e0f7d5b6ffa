//! Blue/green rebuilds: same rows as the live build, queries answer throughout, a
//! killed rebuild resumes, a version bump rebuilds on start.

use super::support::*;
use crate::error::ProjectionError;
use crate::projector::{Envelope, Generation, Projector};
use crate::queries::{Inbox, OversightFilter, OversightScope, PageRequest};
use crate::sqlite::{table_exists, Tx};
use crate::{models, Health, ReadModels, RebuildPhase, RebuildTarget};
use async_trait::async_trait;
use homeroom_domain::events::*;
use homeroom_domain::{
    delivery_id_for, ConversationId, ConversationKind, Event, MessageId, PersonId, PersonKind,
};
use homeroom_eventstore::{Position, RecordedEvent};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

struct Conv {
    district: &'static str,
    id: ConversationId,
    participants: Vec<PersonId>,
    messages: Vec<MessageId>,
}

/// Appends a random but well-formed history: people in two districts, guardian links,
/// conversations of every kind, messages, reads, toggles, renames, stops and delivery
/// outcomes (in any order: the read model must cope). Returns the last position.
async fn random_history(
    w: &World,
    rng: &mut StdRng,
    ops: usize,
    convs: &mut Vec<Conv>,
) -> Position {
    let mut last = Position::START;
    let staff: Vec<PersonId> = (1..=4).map(person).collect();
    let students: Vec<PersonId> = (10..=13).map(person).collect();
    let guardians: Vec<PersonId> = (20..=23).map(person).collect();
    if convs.is_empty() {
        for d in [NORTH, SOUTH] {
            for (i, p) in staff.iter().enumerate() {
                w.register(d, *p, PersonKind::Staff, &format!("Staff {i}"))
                    .await;
            }
            for (i, p) in students.iter().enumerate() {
                w.register(d, *p, PersonKind::Student, &format!("Student {i}"))
                    .await;
            }
            for (i, p) in guardians.iter().enumerate() {
                w.register(d, *p, PersonKind::Guardian, &format!("Guardian {i}"))
                    .await;
                last = w.link(d, *p, students[i]).await;
            }
        }
    }
    let family: Vec<PersonId> = students.iter().chain(&guardians).copied().collect();
    for _ in 0..ops {
        let choice = if convs.is_empty() {
            0
        } else {
            rng.random_range(0..10)
        };
        if choice == 0 {
            let district = if rng.random_bool(0.8) { NORTH } else { SOUTH };
            let kind = match rng.random_range(0..3) {
                0 => ConversationKind::Personal,
                1 => ConversationKind::School,
                _ => ConversationKind::Group,
            };
            let mut participants = vec![staff[rng.random_range(0..staff.len())]];
            let others = if kind == ConversationKind::Group {
                rng.random_range(1..4)
            } else {
                1
            };
            while participants.len() < 1 + others {
                let pool = if rng.random_bool(0.3) {
                    &staff
                } else {
                    &family
                };
                let p = pool[rng.random_range(0..pool.len())];
                if !participants.contains(&p) {
                    participants.push(p);
                }
            }
            let n = convs.len() as u128;
            let (id, m) = (conversation(n), message(n * 1000));
            last = w
                .start(district, id, kind, &participants, m, &format!("start {n}"))
                .await;
            convs.push(Conv {
                district,
                id,
                participants,
                messages: vec![m],
            });
            continue;
        }
        let i = rng.random_range(0..convs.len());
        let c = &mut convs[i];
        let who = c.participants[rng.random_range(0..c.participants.len())];
        let (d, id) = (c.district, c.id);
        last = match choice {
            1..=3 => {
                let m = message(i as u128 * 1000 + c.messages.len() as u128);
                c.messages.push(m);
                let to: Vec<_> = c
                    .participants
                    .iter()
                    .copied()
                    .filter(|p| *p != who)
                    .collect();
                let body = format!("message {} in {i}", c.messages.len());
                w.post(d, id, m, who, &body, &to).await
            }
            4 => {
                let m = c.messages[rng.random_range(0..c.messages.len())];
                let e = MessagesRead {
                    conversation_id: id,
                    person_id: who,
                    up_to_message_id: m,
                    at: w.now(),
                };
                w.conv_event(d, id, who, e.into()).await
            }
            5 => {
                let at = w.now();
                let e: Event = match rng.random_range(0..4) {
                    0 => ConversationMuted {
                        conversation_id: id,
                        person_id: who,
                        at,
                    }
                    .into(),
                    1 => ConversationUnmuted {
                        conversation_id: id,
                        person_id: who,
                        at,
                    }
                    .into(),
                    2 => ConversationArchived {
                        conversation_id: id,
                        person_id: who,
                        at,
                    }
                    .into(),
                    _ => ConversationUnarchived {
                        conversation_id: id,
                        person_id: who,
                        at,
                    }
                    .into(),
                };
                w.conv_event(d, id, who, e).await
            }
            6 => {
                let e = ConversationRenamed {
                    conversation_id: id,
                    title: format!("title {}", rng.random_range(0..100)),
                    by: who,
                    at: w.now(),
                };
                w.conv_event(d, id, who, e.into()).await
            }
            7 if rng.random_bool(0.2) => {
                let e = ConversationStopped {
                    conversation_id: id,
                    by: who,
                    at: w.now(),
                };
                w.conv_event(d, id, who, e.into()).await
            }
            _ => {
                let m = c.messages[rng.random_range(0..c.messages.len())];
                let to = c.participants[rng.random_range(0..c.participants.len())];
                let status = ["sent", "delivered", "failed"][rng.random_range(0..3)];
                w.outcome(d, delivery_id_for(m, to), status).await
            }
        };
    }
    last
}

/// What the queries answer for every person and conversation: compared across builds.
async fn answers(read: &ReadModels, convs: &[Conv]) -> Vec<String> {
    let mut out = Vec::new();
    for d in [NORTH, SOUTH] {
        let district = district(d);
        for p in (1..=4).chain(10..=13).chain(20..=23).map(person) {
            for archived in [false, true] {
                let inbox: Inbox = read
                    .inbox_personal(&district, p, archived, &PageRequest::of(500))
                    .await
                    .unwrap();
                out.push(serde_json::to_string(&inbox).unwrap());
            }
            let school = read
                .inbox_school(&district, &[school(1)], p, false, &PageRequest::of(500))
                .await
                .unwrap();
            out.push(serde_json::to_string(&school).unwrap());
            let record = read
                .student_record(&district, p, true, &PageRequest::of(500))
                .await
                .unwrap();
            out.push(serde_json::to_string(&record).unwrap());
        }
        let oversight = read
            .oversight(
                &district,
                &OversightScope::District,
                &OversightFilter::default(),
                &PageRequest::of(500),
            )
            .await
            .unwrap();
        out.push(serde_json::to_string(&oversight).unwrap());
    }
    for c in convs {
        let thread = read
            .conversation(&district(c.district), c.id, c.participants.last().copied())
            .await
            .unwrap();
        out.push(serde_json::to_string(&thread).unwrap());
    }
    out
}

#[tokio::test]
async fn a_rebuild_gives_the_same_rows_as_the_live_build_after_a_random_history() {
    for seed in [7, 1_234, 99_991] {
        let w = World::new();
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
            !table_exists(&db, "messages_g1").await,
            "the old generation is dropped"
        );
        assert!(table_exists(&db, "messages_g2").await);
        stop.send(()).unwrap();
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_while_the_log_grows_switches_without_losing_an_event() {
    let w = World::new();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_keep_answering_from_the_old_generation_during_a_rebuild() {
    let w = World::new();
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
                        let _ = go_rx.recv();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_killed_midway_leaves_the_old_generation_serving_and_resumes() {
    let w = World::new();
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
                        let _ = go_rx.recv();
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
    assert!(!table_exists(&db, "conversations_g1").await);
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
    fn schema(&self, generation: Generation) -> Vec<String> {
        self.0.schema(generation)
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

#[tokio::test]
async fn bumping_a_version_rebuilds_on_start_while_the_old_generation_answers() {
    let w = World::new();
    let mut rng = StdRng::seed_from_u64(3);
    let mut convs = Vec::new();
    let last = random_history(&w, &mut rng, 120, &mut convs).await;
    let (runtime, read) = w.runtime().await;
    runtime.catch_up().await.unwrap();
    let expected = answers(&read, &convs).await;
    drop(runtime);

    let bumped = || {
        models::all()
            .into_iter()
            .map(|p| -> Arc<dyn Projector> {
                if p.name() == models::conversations::NAME {
                    Arc::new(Bumped(p, 2))
                } else {
                    p
                }
            })
            .collect::<Vec<_>>()
    };
    let (runtime, read) = w.runtime_with(bumped(), fast()).await;
    let status = runtime.status().await.unwrap();
    let conversations = status.iter().find(|s| s.name == "conversations").unwrap();
    assert_eq!(conversations.health, Health::Stale { built_by: 1 });
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
    assert_eq!((conversations.generation, conversations.version), (2, 2));
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

#[tokio::test]
async fn rebuilding_an_unknown_projector_is_refused_and_one_projector_rebuilds_alone() {
    let w = World::new();
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
