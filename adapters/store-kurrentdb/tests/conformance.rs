//! The event-store conformance kit, unchanged, against a real KurrentDB server.
//!
//! Runs only where `KURRENTDB_URL` is set (e.g. `esdb://localhost:2113?tls=false`);
//! elsewhere each test prints the one `KurrentDB suite did not run: …` line and
//! returns, also under `CI=true` (this machine's CI cannot reach a KurrentDB server).
//! With `KURRENTDB_URL` set, an unreachable server fails every test.
//!
//! Each kit test gets stores with a stream prefix of their own (`t<uuid>_`), so runs
//! never see each other's events on a shared server. The tamper hook edits the bytes
//! the server returns for one event's data, which is what an edit of the server's
//! chunk files looks like (events cannot be changed through KurrentDB's API; see
//! `homeroom_store_kurrentdb::testing` and `tests/attacks.rs` for the attacks that can).

use homeroom_eventstore::conformance::{async_trait, Harness};
use homeroom_eventstore::StreamId;
use homeroom_store_kurrentdb::testing::{self, TamperingStore, KIT_CATEGORIES};
use homeroom_store_kurrentdb::KurrentStore;
use std::sync::{Arc, Mutex};

struct KurrentHarness {
    url: String,
    stores: Mutex<Vec<TamperingStore>>,
}

impl KurrentHarness {
    fn new(url: String) -> Self {
        Self {
            url,
            stores: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait]
impl Harness for KurrentHarness {
    type Store = KurrentStore;

    async fn fresh(&self) -> Arc<KurrentStore> {
        let store = TamperingStore::connect(&self.url, testing::test_config(KIT_CATEGORIES))
            .await
            .unwrap_or_else(|e| panic!("KURRENTDB_URL is set but the server is not usable: {e}"));
        let plain = store.store().clone();
        self.stores.lock().unwrap().push(store);
        Arc::new(plain)
    }

    async fn tamper(&self, store: &KurrentStore, stream: &StreamId, version: u64) {
        let stores = self.stores.lock().unwrap();
        let tampering = stores
            .iter()
            .find(|t| t.store().stream_prefix() == store.stream_prefix())
            .expect("the store came from this harness");
        tampering.edit_data(stream, version, &serde_json::json!({ "tampered": true }));
    }
}

// The kit evaluates the harness expression inside each test's async body, so `return`
// ends that test early: the KURRENTDB_URL rule, applied per test.
homeroom_eventstore::conformance_tests!(match testing::kurrentdb_url_or_skip() {
    Some(url) => KurrentHarness::new(url),
    None => return,
});
