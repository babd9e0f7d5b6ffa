//! One history, two engines: every view reads the same on SQLite and PostgreSQL.

use super::support::*;
use crate::{models, ProjectionRuntime};
use homeroom_eventstore::Position;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Feeds one random history to a SQLite and a PostgreSQL runtime at once (both live,
/// catching up at different moments) and compares what every query answers.
async fn every_view_reads_the_same(w: World, seed: u64) -> Vec<String> {
    let (sqlite, sqlite_read) = w
        .runtime_on(w.sqlite_db().await, models::all(), fast())
        .await;
    let (pg, pg_read) = w.runtime_on(w.db().await, models::all(), fast()).await;
    let live = [spawn_live(&sqlite), spawn_live(&pg)];
    let mut rng = StdRng::seed_from_u64(seed);
    let mut convs = Vec::new();
    let mut last = Position::START;
    for _ in 0..5 {
        last = random_history(&w, &mut rng, 50, &mut convs).await;
        if rng.random_bool(0.5) {
            sqlite.wait_for(last, WAIT).await.unwrap();
        }
        if rng.random_bool(0.5) {
            pg.wait_for(last, WAIT).await.unwrap();
        }
    }
    sqlite.wait_for(last, WAIT).await.unwrap();
    pg.wait_for(last, WAIT).await.unwrap();

    let on_sqlite = answers(&sqlite_read, &convs).await;
    let on_pg = answers(&pg_read, &convs).await;
    assert_eq!(on_sqlite.len(), on_pg.len());
    for (i, (a, b)) in on_sqlite.iter().zip(&on_pg).enumerate() {
        assert_eq!(a, b, "view {i} differs between SQLite and PostgreSQL");
    }
    assert_eq!(checkpoints(&sqlite).await, checkpoints(&pg).await);
    for (stop, task) in live {
        stop.send(()).unwrap();
        task.await.unwrap();
    }
    on_sqlite
}

async fn checkpoints(runtime: &ProjectionRuntime) -> Vec<(&'static str, Position)> {
    let status = runtime.status().await.unwrap();
    status.iter().map(|s| (s.name, s.checkpoint)).collect()
}

/// The views are not vacuous: inboxes, records, oversight, audit pages and exports all
/// hold something.
fn assert_substantial(views: &[String]) {
    for needle in [
        "\"unread_count\"",
        "\"direction\":\"inbound\"",
        "\"message_count\"",
        "\"prev_hash\"",
        "\"record\":\"message\"",
        "\"status\":\"delivered\"",
        "\"read_by\":[\"",
    ] {
        assert!(
            views.iter().any(|v| v.contains(needle)),
            "no view holds {needle}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_view_reads_the_same_on_sqlite_and_postgres() {
    let Some(w) = World::postgres().await else {
        return;
    };
    let views = every_view_reads_the_same(w, 2_024).await;
    assert_substantial(&views);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_view_reads_the_same_with_positions_from_the_postgres_store() {
    let Some(w) = World::postgres_with_pg_store().await else {
        return;
    };
    let views = every_view_reads_the_same(w, 77).await;
    assert_substantial(&views);
    // Positions carry the writing transaction's id: audit pages show them as strings.
    assert!(views
        .iter()
        .any(|v| v.contains("\"position\":\"0000000000")));
}
