//! The event-store conformance kit, unchanged, against PostgreSQL: every kit test gets a
//! fresh schema (`hr_test_<uuid>`), dropped when the test ends.
//!
//! Without a reachable PostgreSQL each test prints one `skipped:` line and passes, unless
//! `CI=true`, where it fails (see `homeroom_store_postgres::testing`).

use homeroom_eventstore::conformance::{async_trait, Harness};
use homeroom_eventstore::StreamId;
use homeroom_store_postgres::testing::{self, TestDb};
use homeroom_store_postgres::PgStore;
use std::sync::Arc;

struct PgHarness {
    db: TestDb,
}

impl PgHarness {
    /// `None` (after the `skipped:` line) when PostgreSQL is unreachable outside CI.
    async fn connect_or_skip() -> Option<Self> {
        TestDb::connect_or_skip().await.map(|db| Self { db })
    }
}

#[async_trait]
impl Harness for PgHarness {
    type Store = PgStore;

    async fn fresh(&self) -> Arc<PgStore> {
        Arc::new(self.db.store().await)
    }

    async fn tamper(&self, store: &PgStore, stream: &StreamId, version: u64) {
        testing::tamper(self.db.url(), store.schema(), stream.as_str(), version).await;
    }
}

// The kit evaluates the harness expression inside each test's async body, so `return`
// ends that test early: the service-discovery rule, applied per test.
homeroom_eventstore::conformance_tests!(match PgHarness::connect_or_skip().await {
    Some(harness) => harness,
    None => return,
});
