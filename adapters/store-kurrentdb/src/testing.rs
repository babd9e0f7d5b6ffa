//! Test support (feature `testing`): the `KURRENTDB_URL` rule, per-test namespaces, the
//! raw client for attacks that bypass the adapter, and the conformance kit's tamper hook.
//!
//! # The rule
//!
//! Tests against a real server run only where `KURRENTDB_URL` is set. Without it each
//! such test prints [`NOT_RUN`] to stderr and returns, **also under `CI=true`**: this
//! machine's CI can never reach a KurrentDB server, the one documented exception to the
//! project's rule. With it set, an unreachable server fails the test.
//!
//! # Tampering on KurrentDB
//!
//! A KurrentDB event cannot be changed through the server's API: writes only append.
//! What someone with access to the server *can* do, and what Homeroom's hash chain
//! must catch, is:
//!
//! 1. append a forged event with their own client, bypassing the adapter
//!    ([`raw_client`]; `tests/attacks.rs`);
//! 2. hide the start of a stream with the `$tb` (truncate-before) stream metadata, or
//!    delete it and write a rewritten history (`tests/attacks.rs`);
//! 3. edit the bytes of a stored event in the server's chunk files, as KurrentDB's own
//!    redaction tooling does: the only way to change a stored event in place, and what
//!    the conformance kit's `tamper` hook describes ("change one stored event's data
//!    behind the store's back, without fixing its hash").
//!
//! The third needs the server's files, which a test against an arbitrary server does
//! not have. [`TamperingStore::connect`] therefore puts a layer under the store that
//! replaces the *data bytes the server returns* for one event, below all of the
//! adapter's decoding, exactly as a chunk edit would look from the client. The
//! conformance kit then checks what it means to check: the adapter keeps the stored
//! hash (never recomputing it on read) and the chain reports that event, and only it.
//! [`crate::simulated::SimulatedServer::overwrite_data`] does the same to the model's
//! storage itself.

use crate::backend::{Backend, Deliveries, Delivery};
use crate::codec::{Outgoing, RawEvent};
use crate::{ConnectError, KurrentConfig, KurrentStore};
use async_trait::async_trait;
use futures::StreamExt;
use homeroom_eventstore::StreamId;
use kurrentdb::{StreamPosition, StreamState};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// The one line a KurrentDB test prints when it does not run.
pub const NOT_RUN: &str = "KurrentDB suite did not run: KURRENTDB_URL is not set; run: KURRENTDB_URL=esdb://localhost:2113?tls=false cargo nextest run -p homeroom-store-kurrentdb";

/// The stream categories of the conformance kit's streams (`kit_{test}-{uuid}`).
pub const KIT_CATEGORIES: &[&str] = &["kit_"];

/// `KURRENTDB_URL` when it is set; otherwise prints [`NOT_RUN`] and returns `None`
/// (also under `CI=true`, see the module docs).
pub fn kurrentdb_url_or_skip() -> Option<String> {
    match std::env::var("KURRENTDB_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!("{NOT_RUN}");
            None
        }
    }
}

/// A stream prefix no other test (or earlier run against the same server) uses.
pub fn unique_prefix() -> String {
    format!("t{}_", uuid::Uuid::now_v7().simple())
}

/// A configuration for a test: a fresh prefix, the given categories, and quick
/// resubscription.
pub fn test_config(categories: &[&str]) -> KurrentConfig {
    let mut config = KurrentConfig::with_stream_prefix(unique_prefix());
    config.categories = categories.iter().map(|c| (*c).to_owned()).collect();
    config.resubscribe.first_delay = std::time::Duration::from_millis(10);
    config.resubscribe.max_delay = std::time::Duration::from_millis(200);
    config
}

/// The official client on `url`, for writing behind the adapter's back.
///
/// # Panics
/// When the connection string is unusable.
pub fn raw_client(url: &str) -> kurrentdb::Client {
    let settings = url
        .parse::<kurrentdb::ClientSettings>()
        .unwrap_or_else(|e| panic!("KURRENTDB_URL is not a connection string: {e}"));
    kurrentdb::Client::new(settings).unwrap_or_else(|e| panic!("cannot create a client: {e}"))
}

type Edits = Arc<Mutex<HashMap<(String, u64), Vec<u8>>>>;

fn lock(edits: &Edits) -> MutexGuard<'_, HashMap<(String, u64), Vec<u8>>> {
    edits
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A store on a real server whose reads can be made to see one event's data edited in
/// the server's files (see the module docs).
#[derive(Clone, Debug)]
pub struct TamperingStore {
    store: KurrentStore,
    edits: Edits,
}

impl TamperingStore {
    /// Connects like [`KurrentStore::connect`].
    ///
    /// # Errors
    /// As [`KurrentStore::connect`].
    pub async fn connect(url: &str, config: KurrentConfig) -> Result<Self, ConnectError> {
        let edits = Edits::default();
        let layer = edits.clone();
        let store = KurrentStore::connect_wrapped(url, config, move |inner| {
            Arc::new(EditedFiles {
                inner,
                edits: layer,
            })
        })
        .await?;
        Ok(Self { store, edits })
    }

    /// The store.
    pub fn store(&self) -> &KurrentStore {
        &self.store
    }

    /// From now on, the server's bytes for the data of `stream`'s event at `version`
    /// read as `data`.
    pub fn edit_data(&self, stream: &StreamId, version: u64, data: &serde_json::Value) {
        let bytes = serde_json::to_vec(data).unwrap_or_default();
        lock(&self.edits).insert(
            (
                self.store.kurrent_stream_name(stream),
                version.saturating_sub(1),
            ),
            bytes,
        );
    }
}

/// The server, as seen after an edit of its files.
struct EditedFiles {
    inner: Arc<dyn Backend>,
    edits: Edits,
}

impl EditedFiles {
    fn edited(edits: &Edits, mut event: RawEvent) -> RawEvent {
        if let Some(data) = lock(edits).get(&(event.stream.clone(), event.revision)) {
            event.data.clone_from(data);
        }
        event
    }

    fn all(&self, events: Vec<RawEvent>) -> Vec<RawEvent> {
        events
            .into_iter()
            .map(|e| Self::edited(&self.edits, e))
            .collect()
    }
}

#[async_trait]
impl Backend for EditedFiles {
    async fn read_stream(
        &self,
        stream: &str,
        from: u64,
        count: usize,
    ) -> kurrentdb::Result<Vec<RawEvent>> {
        Ok(self.all(self.inner.read_stream(stream, from, count).await?))
    }

    async fn read_last(&self, stream: &str) -> kurrentdb::Result<Option<RawEvent>> {
        Ok(self
            .inner
            .read_last(stream)
            .await?
            .map(|e| Self::edited(&self.edits, e)))
    }

    async fn read_all(
        &self,
        from: StreamPosition<kurrentdb::Position>,
        count: usize,
        prefixes: &[String],
    ) -> kurrentdb::Result<Vec<RawEvent>> {
        Ok(self.all(self.inner.read_all(from, count, prefixes).await?))
    }

    async fn read_all_last(&self, prefixes: &[String]) -> kurrentdb::Result<Option<RawEvent>> {
        Ok(self
            .inner
            .read_all_last(prefixes)
            .await?
            .map(|e| Self::edited(&self.edits, e)))
    }

    async fn probe(&self) -> kurrentdb::Result<()> {
        self.inner.probe().await
    }

    async fn append(
        &self,
        stream: &str,
        state: StreamState,
        events: Vec<Outgoing>,
    ) -> kurrentdb::Result<()> {
        self.inner.append(stream, state, events).await
    }

    fn subscribe(
        &self,
        from: StreamPosition<kurrentdb::Position>,
        prefixes: &[String],
    ) -> Deliveries {
        let edits = self.edits.clone();
        self.inner
            .subscribe(from, prefixes)
            .map(move |item| {
                item.map(|delivery| match delivery {
                    Delivery::Event(e) => Delivery::Event(Self::edited(&edits, e)),
                    other => other,
                })
            })
            .boxed()
    }
}
