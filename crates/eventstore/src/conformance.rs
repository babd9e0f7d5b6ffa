//! The conformance kit: the event-store contract as tests, written once and run unchanged
//! against every backend.
//!
//! A backend implements [`Harness`] (how to get a fresh, empty store and how to tamper
//! with one stored row) and instantiates the whole kit in one of its test files:
//!
//! ```text
//! struct SqliteHarness;
//!
//! #[homeroom_eventstore::conformance::async_trait]
//! impl homeroom_eventstore::conformance::Harness for SqliteHarness {
//!     type Store = SqliteStore;
//!     async fn fresh(&self) -> std::sync::Arc<SqliteStore> { /* new temp file */ }
//!     async fn tamper(&self, store: &SqliteStore, stream: &StreamId, version: u64) {
//!         /* UPDATE events SET data = '"tampered"' WHERE … */
//!     }
//! }
//!
//! homeroom_eventstore::conformance_tests!(SqliteHarness);
//! ```
//!
//! Every kit test is also a plain `pub async fn name<H: Harness>(h: &H)`, so a backend can
//! run one on its own runtime. The tests are deterministic: they wait for what must
//! happen with generous timeouts ([`PATIENCE`]) and never sleep to wait; each uses a fresh
//! store and stream names of its own.
//!
//! What the kit checks, by group:
//! - appending: round trip of every field, `ExpectedVersion` semantics and typed
//!   conflicts, one winner per version under contention, idempotent retries, atomicity,
//!   empty appends;
//! - reading: stream and log paging, `head`, `stream_versions`, `find_command`;
//! - subscribing: gap-free, duplicate-free delivery in order under concurrent writers,
//!   joining mid-log, live delivery on an empty store;
//! - integrity: the hash chain catches a tampered row; large, unicode and odd-shaped JSON
//!   and metadata round-trip exactly (so the chain still verifies).

use crate::{EventStore, StreamId};
use std::sync::Arc;

mod append;
mod integrity;
mod read;
mod subscribe;
mod support;

pub use append::{
    any_expectation_always_appends, concurrent_exact_appends_have_one_winner_per_version,
    concurrent_retries_of_one_batch_record_it_once, conflicting_batch_records_nothing,
    empty_append_is_refused, exact_expectation_semantics,
    facts_are_checked_with_the_append_when_supported, idempotent_reappend_returns_original_result,
    no_stream_expectation_semantics, round_trip_keeps_every_field,
};
pub use integrity::{
    json_shapes_round_trip, large_payloads_round_trip, metadata_round_trips, tampering_is_detected,
    unicode_round_trips,
};
pub use read::{
    find_command_returns_what_a_command_recorded, read_all_pages_and_head, read_stream_pages,
    stream_versions_of_existing_and_missing_streams,
};
pub use subscribe::{
    subscriber_joining_mid_log_gets_the_rest_then_live,
    subscriber_sees_concurrent_writers_in_order_without_gaps,
    subscription_on_empty_store_receives_later_appends,
};
pub use support::PATIENCE;

/// Re-exported so a backend's test file can implement [`Harness`] without its own
/// `async-trait` dependency.
pub use async_trait::async_trait;

/// What a backend provides so the kit can test it.
#[async_trait::async_trait]
pub trait Harness: Send + Sync + 'static {
    /// The backend's store.
    type Store: EventStore + 'static;

    /// A fresh, empty store with its own database/file/schema.
    async fn fresh(&self) -> Arc<Self::Store>;

    /// Changes one stored event's data behind the store's back, as an attacker with
    /// database access would, without fixing its hash.
    async fn tamper(&self, store: &Self::Store, stream: &StreamId, version: u64);
}

/// Support for [`conformance_tests!`](crate::conformance_tests); not a public API.
#[doc(hidden)]
pub mod __private {
    use std::future::Future;

    /// Runs one kit test on the runtime `#[tokio::test(flavor = "multi_thread",
    /// worker_threads = 4)]` would build, without the backend depending on tokio's macros.
    pub fn run<F: Future>(test: F) -> F::Output {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("the conformance kit cannot build a tokio runtime")
            .block_on(test)
    }
}

/// Expands to one test per kit test, each on a fresh multi-thread tokio runtime with four
/// workers (what `#[tokio::test(flavor = "multi_thread", worker_threads = 4)]` builds),
/// calling `$crate::conformance::<name>(&$harness).await`.
///
/// The harness expression is evaluated once per test, inside that test's runtime. Invoke
/// it once per test file (or inside a `mod` per harness configuration):
/// `homeroom_eventstore::conformance_tests!(MyHarness::new());`
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::__conformance_kit!(
            $harness;
            // appending
            round_trip_keeps_every_field,
            no_stream_expectation_semantics,
            exact_expectation_semantics,
            any_expectation_always_appends,
            concurrent_exact_appends_have_one_winner_per_version,
            idempotent_reappend_returns_original_result,
            concurrent_retries_of_one_batch_record_it_once,
            conflicting_batch_records_nothing,
            empty_append_is_refused,
            facts_are_checked_with_the_append_when_supported,
            // reading
            read_stream_pages,
            read_all_pages_and_head,
            stream_versions_of_existing_and_missing_streams,
            find_command_returns_what_a_command_recorded,
            // subscribing
            subscriber_sees_concurrent_writers_in_order_without_gaps,
            subscriber_joining_mid_log_gets_the_rest_then_live,
            subscription_on_empty_store_receives_later_appends,
            // integrity
            tampering_is_detected,
            large_payloads_round_trip,
            unicode_round_trips,
            json_shapes_round_trip,
            metadata_round_trips,
        );
    };
}

/// Support for [`conformance_tests!`]: one test function per name.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_kit {
    ($harness:expr; $($name:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::conformance::__private::run(async {
                    let harness = $harness;
                    $crate::conformance::$name(&harness).await;
                });
            }
        )+
    };
}
