//! One applier per PostgreSQL schema: the lease, its fence, and a takeover.

use super::support::*;
use crate::codec::decode;
use crate::projector::Envelope;
use crate::runtime::lanes::{self, BatchError, LaneSet};
use crate::{models, LeaseState, ProjectionRuntime, Projector};
use homeroom_domain::PersonKind;
use homeroom_eventstore::Position;
use rand::rngs::StdRng;
use rand::SeedableRng;
use sqlx::Connection;
use std::sync::Arc;

/// Ends the session holding the world's lease, waiting until it is gone; returns
/// whether there was one.
async fn terminate_lease_holder(w: &World) -> bool {
    let mut conn = sqlx::PgConnection::connect(w.pg().db.url()).await.unwrap();
    let key = crate::postgres::lock_key("lease", &w.pg().schema);
    let pid: Option<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_locks
         WHERE locktype = 'advisory' AND granted AND objsubid = 1
           AND classid::bigint = (hashtextextended($1, 0) >> 32) & 4294967295
           AND objid::bigint = hashtextextended($1, 0) & 4294967295",
    )
    .bind(&key)
    .fetch_optional(&mut conn)
    .await
    .unwrap();
    let Some(pid) = pid else {
        return false;
    };
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 10000)")
        .bind(pid)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(ended, "the lease session {pid} ends");
    true
}

async fn lease_becomes(runtime: &ProjectionRuntime, state: LeaseState) {
    let mut changes = runtime.lease_changes();
    tokio::time::timeout(WAIT, changes.wait_for(|l| *l == state))
        .await
        .unwrap_or_else(|_| panic!("the lease never became {state:?}"))
        .unwrap();
}

fn with_counter(counter: Arc<Counter>) -> Vec<Arc<dyn Projector>> {
    let mut projectors = models::all();
    projectors.push(counter);
    projectors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_when_the_holders_connection_is_terminated() {
    let Some(w) = World::postgres().await else {
        return;
    };
    let counter = || Counter::new("counter_a", &["count_a"], Plan::default());
    let (a, _) = w
        .runtime_on(w.db().await, with_counter(counter()), fast())
        .await;
    let live_a = spawn_live(&a);
    lease_becomes(&a, LeaseState::Held).await;
    let (b, b_read) = w
        .runtime_on(w.db().await, with_counter(counter()), fast())
        .await;
    let live_b = spawn_live(&b);

    let mut rng = StdRng::seed_from_u64(31);
    let mut convs = Vec::new();
    let first = random_history(&w, &mut rng, 80, &mut convs).await;
    // The standby answers `wait_for` from the holder's notifications.
    b.wait_for(first, WAIT).await.unwrap();
    assert_eq!(
        (a.lease(), b.lease()),
        (LeaseState::Held, LeaseState::Standby)
    );
    let status = b.status().await.unwrap();
    assert!(status.iter().all(|s| s.lease == LeaseState::Standby));
    assert!(status.iter().all(|s| s.checkpoint == first));

    // The holder "dies": its lease session is cut. Until b holds the lease, cut
    // whoever holds it (a gives standbys a head start, but that is not relied on).
    let mut last;
    loop {
        assert!(terminate_lease_holder(&w).await, "someone holds the lease");
        last = random_history(&w, &mut rng, 20, &mut convs).await;
        if a.lease() == LeaseState::Held {
            lease_becomes(&a, LeaseState::Standby).await;
        }
        let (mut to_a, mut to_b) = (a.lease_changes(), b.lease_changes());
        let taken = tokio::time::timeout(WAIT, async {
            tokio::select! {
                _ = to_a.wait_for(|l| *l == LeaseState::Held) => "a",
                _ = to_b.wait_for(|l| *l == LeaseState::Held) => "b",
            }
        })
        .await
        .expect("someone takes the lease over");
        if taken == "b" {
            break;
        }
    }
    last = last.max(random_history(&w, &mut rng, 40, &mut convs).await);
    b.wait_for(last, WAIT).await.unwrap();
    // The old holder now stands by, and follows the new one.
    a.wait_for(last, WAIT).await.unwrap();
    assert_eq!(
        (a.lease(), b.lease()),
        (LeaseState::Standby, LeaseState::Held)
    );
    assert!(b
        .status()
        .await
        .unwrap()
        .iter()
        .all(|s| s.lease == LeaseState::Held && s.checkpoint == last));

    // Every event applied exactly once, and every view complete: the same as a fresh
    // build of the whole log.
    let events = i64::try_from(w.store_events().await.len()).unwrap();
    assert_eq!(counted(&w.db().await, "count_a").await, once(events));
    let (fresh, fresh_read) = w
        .runtime_on(w.sqlite_db().await, models::all(), fast())
        .await;
    fresh.catch_up().await.unwrap();
    assert_eq!(
        answers(&b_read, &convs).await,
        answers(&fresh_read, &convs).await
    );
    for (stop, task) in [live_a, live_b] {
        stop.send(()).unwrap();
        task.await.unwrap();
    }
}

#[tokio::test]
async fn a_holder_whose_lease_is_gone_commits_no_batch() {
    let Some(w) = World::postgres().await else {
        return;
    };
    for i in 0..6 {
        w.register(NORTH, person(100 + i), PersonKind::Staff, "Pat")
            .await;
    }
    let counter = Counter::new("counter_a", &["count_a"], Plan::default());
    let (runtime, _) = w.runtime_with(vec![counter], fast()).await;
    let events: Vec<Envelope> = w
        .store_events()
        .await
        .into_iter()
        .map(|recorded| {
            let event = decode(&recorded).unwrap();
            Envelope::new(recorded, event)
        })
        .collect();
    let lease = runtime.inner.lease.as_ref().expect("a lease on PostgreSQL");
    let pid = lease
        .try_acquire()
        .await
        .unwrap()
        .expect("the lease is free");
    assert_eq!(lease.try_acquire().await.unwrap(), Some(pid), "held here");

    let write = |from: usize, to: usize, fence: i32| {
        let prev = events[..from]
            .last()
            .map_or(Position::START, |e| e.recorded.position);
        lanes::write_batch(
            &runtime.inner,
            LaneSet::Active,
            prev,
            &events[from..to],
            Some(fence),
        )
    };
    assert!(write(0, 3, pid).await.is_ok());
    assert!(terminate_lease_holder(&w).await);
    assert!(matches!(write(3, 6, pid).await, Err(BatchError::LeaseLost)));
    assert!(
        !lease.alive().await,
        "the holder finds out on its next check"
    );
    let db = w.db().await;
    assert_eq!(
        counted(&db, "count_a").await,
        once(3),
        "nothing after the loss"
    );

    // A new session takes the lease; batches fenced by the old one still fail.
    let new_pid = lease.try_acquire().await.unwrap().expect("free again");
    assert_ne!(new_pid, pid);
    assert!(matches!(write(3, 6, pid).await, Err(BatchError::LeaseLost)));
    assert!(write(3, 6, new_pid).await.is_ok());
    assert_eq!(counted(&db, "count_a").await, once(6));
    lease.release().await;
}
