//! The conformance kit run against the in-memory reference store.
#![cfg(feature = "conformance")]

use homeroom_eventstore::conformance::{async_trait, Harness};
use homeroom_eventstore::memory::InMemoryStore;
use homeroom_eventstore::StreamId;
use std::sync::Arc;

/// Each test gets a store of its own; tampering goes through the store's test hook.
struct MemoryHarness;

#[async_trait]
impl Harness for MemoryHarness {
    type Store = InMemoryStore;

    async fn fresh(&self) -> Arc<InMemoryStore> {
        Arc::new(InMemoryStore::new())
    }

    async fn tamper(&self, store: &InMemoryStore, stream: &StreamId, version: u64) {
        store.tamper(stream, version, serde_json::json!({ "tampered": true }));
    }
}

homeroom_eventstore::conformance_tests!(MemoryHarness);
