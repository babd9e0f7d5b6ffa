//! The store: connecting, reading, and the port implementations.

use crate::backend::{Backend, GrpcBackend};
use crate::codec::decode;
use crate::config::{KurrentConfig, Namespace, ResubscribePolicy};
use crate::error::{unavailable, ConnectError};
use crate::position::{from_kurrent, start_after};
use crate::{append, index, subscribe};
use async_trait::async_trait;
use homeroom_eventstore::{
    AppendResult, EventAppender, EventReader, EventStream, EventSubscriber, ExpectedVersion,
    NewEvent, Position, RecordedEvent, StoreError, StreamId,
};
use std::sync::Arc;
use uuid::Uuid;

/// The connection-string schemes accepted: the two names of KurrentDB's own form, each
/// with its DNS-discovery variant (`+discover`).
pub const SCHEMES: &[&str] = &["kurrentdb", "kurrentdb+discover", "esdb", "esdb+discover"];

/// The event store on KurrentDB. Cheap to clone: clones share one client.
#[derive(Clone)]
pub struct KurrentStore {
    pub(crate) inner: Arc<Inner>,
}

/// What every clone shares.
pub(crate) struct Inner {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) ns: Namespace,
    pub(crate) prefixes: Vec<String>,
    pub(crate) resubscribe: ResubscribePolicy,
}

impl std::fmt::Debug for KurrentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KurrentStore")
            .field("stream_prefix", &self.inner.ns.prefix())
            .field("filter", &self.inner.prefixes)
            .finish_non_exhaustive()
    }
}

impl KurrentStore {
    /// Connects to the KurrentDB server (or cluster) of `url` and checks that it answers
    /// a read of `$all`, which the store's user must be allowed to do.
    ///
    /// `url` is a KurrentDB connection string with one of [`SCHEMES`]:
    /// `kurrentdb://[user:password@]host[:port][,host[:port]…][?options]`,
    /// `kurrentdb+discover://…` for DNS discovery of a cluster, or the same with
    /// `esdb` (the EventStoreDB name). Options are the client's (`tls=false`,
    /// `tlsVerifyCert=false`, `tlsCAFile=…`, `nodePreference=leader`, `keepAliveInterval`,
    /// `defaultDeadline`, …); the port defaults to 2113.
    ///
    /// # Errors
    /// [`ConnectError`] for another scheme, a malformed string, an unusable `config`, or
    /// a server that does not answer within [`KurrentConfig::connect_timeout`].
    pub async fn connect(url: &str, config: KurrentConfig) -> Result<Self, ConnectError> {
        Self::connect_wrapped(url, config, |backend| backend).await
    }

    /// [`KurrentStore::connect`], with the client wrapped (test support wraps it to
    /// simulate storage-level tampering).
    pub(crate) async fn connect_wrapped(
        url: &str,
        config: KurrentConfig,
        wrap: impl FnOnce(Arc<dyn Backend>) -> Arc<dyn Backend>,
    ) -> Result<Self, ConnectError> {
        let scheme = scheme_of(url);
        if !SCHEMES.contains(&scheme.as_str()) {
            return Err(ConnectError::UnsupportedScheme { scheme });
        }
        config.namespace()?;
        let settings: kurrentdb::ClientSettings = url.parse().map_err(ConnectError::BadUrl)?;
        let client = kurrentdb::Client::new(settings)
            .map_err(|report| ConnectError::Client(report.into()))?;
        let store = Self::with_backend(wrap(Arc::new(GrpcBackend::new(client))), &config)?;
        match tokio::time::timeout(config.connect_timeout, store.inner.backend.probe()).await {
            Ok(Ok(())) => Ok(store),
            Ok(Err(err)) => Err(ConnectError::Unreachable(unavailable(err))),
            Err(_) => Err(ConnectError::Timeout(config.connect_timeout)),
        }
    }

    /// A store on any backend (the real client, or the in-process model).
    pub(crate) fn with_backend(
        backend: Arc<dyn Backend>,
        config: &KurrentConfig,
    ) -> Result<Self, ConnectError> {
        let ns = config.namespace()?;
        Ok(Self {
            inner: Arc::new(Inner {
                backend,
                prefixes: ns.filter_prefixes(),
                ns,
                resubscribe: config.resubscribe,
            }),
        })
    }

    /// The prefix in front of every stream name of this store.
    pub fn stream_prefix(&self) -> &str {
        self.inner.ns.prefix()
    }

    /// The stream-name prefixes `$all` is filtered on (the categories, prefixed).
    pub fn filter_prefixes(&self) -> &[String] {
        &self.inner.prefixes
    }

    /// The KurrentDB stream that holds `stream`.
    pub fn kurrent_stream_name(&self, stream: &StreamId) -> String {
        self.inner.ns.stream_name(stream)
    }
}

/// The scheme of a URL, lowercased (the whole text when it has none).
fn scheme_of(url: &str) -> String {
    url.split_once("://")
        .map_or(url, |(scheme, _)| scheme)
        .to_ascii_lowercase()
}

impl Inner {
    /// Decodes events read from the server.
    pub(crate) fn decode_all(
        &self,
        raw: &[crate::codec::RawEvent],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        raw.iter().map(|r| decode(&self.ns, r)).collect()
    }
}

#[async_trait]
impl EventAppender for KurrentStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        append::append(&self.inner, stream, expected, events).await
    }
}

#[async_trait]
impl EventReader for KurrentStore {
    async fn read_stream(
        &self,
        stream: &StreamId,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let raw = self
            .inner
            .backend
            .read_stream(&self.inner.ns.stream_name(stream), after_version, limit)
            .await
            .map_err(unavailable)?;
        self.inner.decode_all(&raw)
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // A read from a position includes the event there: ask for one more and drop it.
        let extra = usize::from(after != Position::START);
        let raw = self
            .inner
            .backend
            .read_all(
                start_after(after),
                limit.saturating_add(extra),
                &self.inner.prefixes,
            )
            .await
            .map_err(unavailable)?;
        let fresh: Vec<_> = raw
            .into_iter()
            .filter(|e| after == Position::START || from_kurrent(e.position) > after)
            .take(limit)
            .collect();
        self.inner.decode_all(&fresh)
    }

    async fn stream_versions(&self, streams: &[StreamId]) -> Result<Vec<u64>, StoreError> {
        let reads = streams.iter().map(|s| {
            let name = self.inner.ns.stream_name(s);
            async move { self.inner.backend.read_last(&name).await }
        });
        let lasts = futures::future::try_join_all(reads)
            .await
            .map_err(unavailable)?;
        Ok(lasts
            .into_iter()
            .map(|last| last.map_or(0, |e| e.revision + 1))
            .collect())
    }

    async fn find_command(&self, command_id: Uuid) -> Result<Vec<RecordedEvent>, StoreError> {
        let inner = &self.inner;
        let mut found: Vec<RecordedEvent> = Vec::new();
        for entry in index::entries(inner, &inner.ns.command_index(command_id)).await? {
            let Some(batch) = index::landed(inner, &entry).await? else {
                continue;
            };
            for event in inner.decode_all(&batch)? {
                if event.metadata.command_id == command_id {
                    found.push(event);
                }
            }
        }
        found.sort_by_key(|e| e.position);
        found.dedup_by_key(|e| e.position);
        Ok(found)
    }

    async fn head(&self) -> Result<Position, StoreError> {
        let last = self
            .inner
            .backend
            .read_all_last(&self.inner.prefixes)
            .await
            .map_err(unavailable)?;
        Ok(last.map_or(Position::START, |e| from_kurrent(e.position)))
    }
}

impl EventSubscriber for KurrentStore {
    fn subscribe_all(&self, after: Position) -> EventStream {
        subscribe::subscribe(self.inner.clone(), after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_are_read_without_looking_at_credentials() {
        assert_eq!(scheme_of("kurrentdb://admin:changeit@h:2113"), "kurrentdb");
        assert_eq!(
            scheme_of("ESDB+DISCOVER://cluster.example"),
            "esdb+discover"
        );
        assert_eq!(scheme_of("postgres://u:p@db/x"), "postgres");
        assert_eq!(scheme_of("nothing"), "nothing");
    }

    #[tokio::test]
    async fn only_kurrentdb_connection_strings_are_accepted() {
        for url in [
            "postgres://u:secret@db/x",
            "http://localhost:2113",
            "kdb://h",
        ] {
            match KurrentStore::connect(url, KurrentConfig::default()).await {
                Err(ConnectError::UnsupportedScheme { scheme }) => {
                    assert!(!scheme.contains("secret"));
                    assert!(url.starts_with(&scheme));
                }
                other => panic!("{url}: expected UnsupportedScheme, got {other:?}"),
            }
        }
        assert!(matches!(
            KurrentStore::connect("esdb://", KurrentConfig::default()).await,
            Err(ConnectError::BadUrl(_))
        ));
        let mut bad = KurrentConfig::default();
        bad.categories.clear();
        assert!(matches!(
            KurrentStore::connect("esdb://localhost:1?tls=false", bad).await,
            Err(ConnectError::Config(crate::ConfigError::NoCategories))
        ));
    }
}
