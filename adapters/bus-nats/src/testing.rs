//! Test support (feature `testing`): find NATS or skip, and throwaway streams.
//!
//! Service-backed tests follow one rule: when NATS cannot be reached, a test **fails**
//! under `CI=true` (CI must never pass by testing nothing) and otherwise prints one
//! `skipped: …` line to stderr and returns.
//!
//! ```no_run
//! # async fn example() {
//! use homeroom_bus_nats::testing::TestNats;
//! let Some(nats) = TestNats::connect_or_skip().await else { return };
//! let bus = nats.bus().await;
//! // … publish, open work queues …
//! nats.cleanup().await;
//! # }
//! ```

use crate::{NatsBus, NatsConfig};
use std::time::Duration;

/// Where tests look for NATS when `NATS_URL` is not set.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// `NATS_URL`, or [`DEFAULT_URL`].
pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// Tries to reach JetStream within a few seconds; `Err` carries the reason.
///
/// # Errors
/// The connection or JetStream error (or a timeout) as text.
pub async fn probe(url: &str) -> Result<(), String> {
    let attempt = async {
        let client = async_nats::connect(url).await.map_err(|e| e.to_string())?;
        if client.server_info().jetstream {
            Ok(())
        } else {
            Err("the server runs without JetStream".to_owned())
        }
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .unwrap_or_else(|_| Err("timed out after 5 s".to_owned()))
}

/// Applies the rule to a probe's outcome: `Some(url)` when reachable; otherwise a panic
/// under `CI=true`, or the one `skipped:` line on stderr and `None`.
///
/// # Panics
/// When NATS is unreachable and `CI=true`.
pub async fn nats_or_skip() -> Option<String> {
    let url = nats_url();
    homeroom_testkit::reachable_or_skip("NATS", &url, probe(&url).await).then_some(url)
}

/// A configuration of its own: stream `HR_TEST_<uuid>`, prefix `hrtest.<uuid>.events`.
pub fn unique_config() -> NatsConfig {
    let id = uuid::Uuid::new_v4().simple();
    NatsConfig {
        stream: format!("HR_TEST_{id}"),
        subject_prefix: format!("hrtest.{id}.events"),
        ..NatsConfig::default()
    }
}

/// Deletes `stream`, best effort: a failure is printed, never raised, so cleanup cannot
/// mask the test's own result.
pub async fn delete_stream(url: &str, stream: &str) {
    let result = async {
        let client = async_nats::connect(url).await.map_err(|e| e.to_string())?;
        async_nats::jetstream::new(client)
            .delete_stream(stream)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    }
    .await;
    if let Err(err) = result {
        eprintln!("warning: could not delete test stream {stream}: {err}");
    }
}

/// A reachable NATS and one test's own stream and prefix, deleted at the end.
#[derive(Debug)]
pub struct TestNats {
    url: String,
    config: NatsConfig,
    cleaned: bool,
}

impl TestNats {
    /// Applies the service-discovery rule ([`nats_or_skip`]) and picks a
    /// [`unique_config`].
    ///
    /// # Panics
    /// When NATS is unreachable and `CI=true`.
    pub async fn connect_or_skip() -> Option<Self> {
        nats_or_skip().await.map(|url| Self {
            url,
            config: unique_config(),
            cleaned: false,
        })
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// This test's configuration; change it with [`TestNats::adjust`] before connecting.
    pub fn config(&self) -> &NatsConfig {
        &self.config
    }

    /// Changes this test's configuration; the stream name stays, since cleanup deletes
    /// that stream.
    pub fn adjust(&mut self, adjust: impl FnOnce(&mut NatsConfig)) {
        let stream = self.config.stream.clone();
        adjust(&mut self.config);
        self.config.stream = stream;
    }

    /// A new connection to this test's stream (created on the first).
    ///
    /// # Panics
    /// When the bus cannot be set up (NATS was reachable a moment ago).
    pub async fn bus(&self) -> NatsBus {
        NatsBus::connect(&self.url, self.config.clone())
            .await
            .unwrap_or_else(|e| panic!("cannot set up test bus {}: {e}", self.config.stream))
    }

    /// Deletes this test's stream (best effort). Dropping the handle does the same, so a
    /// failing test cleans up too.
    pub async fn cleanup(mut self) {
        self.cleaned = true;
        delete_stream(&self.url, &self.config.stream).await;
    }
}

impl Drop for TestNats {
    /// Deletes the stream on a thread of its own with its own runtime: `Drop` cannot
    /// await, and may run inside (or while unwinding out of) a test's runtime.
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        let (url, stream) = (self.url.clone(), self.config.stream.clone());
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(delete_stream(&url, &stream));
        });
        let _ = cleanup.join();
    }
}
