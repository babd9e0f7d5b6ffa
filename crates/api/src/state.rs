//! What every handler shares: the command service, the store, the keys, the metrics and
//! the limits. Built by the composition root and passed to [`crate::router`].

use crate::auth::TokenKeys;
use crate::metrics::Metrics;
use homeroom_app::live::{LiveConfig, LiveHub};
use homeroom_app::preview::PreviewService;
use homeroom_app::{CommandService, QueryService};
use homeroom_eventstore::EventStore;
use std::sync::Arc;
use std::time::Duration;

/// Body size and time limits, per kind of route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest command body (`POST /v1/commands/…`).
    pub command_body: usize,
    /// Largest CSV import (`POST /v1/imports/…`).
    pub import_body: usize,
    /// Longest a command request may take.
    pub command_timeout: Duration,
    /// Longest an import request may take.
    pub import_timeout: Duration,
    /// Longest a read may take (a `min_position` wait is 5 s of it; verifying a whole
    /// log takes longer).
    pub read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            command_body: 64 * 1024,
            import_body: 10 * 1024 * 1024,
            command_timeout: Duration::from_secs(30),
            import_timeout: Duration::from_secs(300),
            read_timeout: Duration::from_secs(120),
        }
    }
}

impl Limits {
    /// The body limit of the route at `path`.
    pub fn body_limit_for(&self, path: &str) -> usize {
        if path.starts_with("/v1/imports/") {
            self.import_body
        } else {
            self.command_body
        }
    }

    /// The time limit of the route at `path`.
    pub fn timeout_for(&self, path: &str) -> Duration {
        if path.starts_with("/v1/imports/") {
            self.import_timeout
        } else if path.starts_with("/v1/commands/") {
            self.command_timeout
        } else {
            self.read_timeout
        }
    }
}

/// The resources the API serves from. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    /// Decides and records commands.
    pub commands: Arc<CommandService>,
    /// Answers reads from the read models.
    pub queries: Arc<QueryService>,
    /// The event store (readiness and reads).
    pub store: Arc<dyn EventStore>,
    /// Verifies bearer tokens.
    pub auth: Arc<TokenKeys>,
    /// Command counts and latencies.
    pub metrics: Metrics,
    /// Body size and time limits.
    pub limits: Limits,
    /// The SMS provider's webhooks, when a provider is configured.
    pub webhooks: Option<crate::webhooks::Webhooks>,
    /// Renders personal messages before they are sent (`POST /v1/preview`).
    pub preview: Arc<PreviewService>,
    /// The process's live feed (`GET /v1/stream`); [`crate::serve`] closes it on shutdown.
    pub live: LiveHub,
    /// How often an open event stream gets a keep-alive comment.
    pub stream_keep_alive: Duration,
}

impl ApiState {
    /// State over the services the composition root built, with fresh metrics (which
    /// the command service counts every command in, unless it already counts them
    /// elsewhere) and default limits.
    pub fn new(commands: Arc<CommandService>, queries: Arc<QueryService>, auth: TokenKeys) -> Self {
        let metrics = Metrics::new();
        commands.count_in(Arc::new(metrics.clone()));
        Self {
            store: commands.store().clone(),
            preview: Arc::new(
                PreviewService::new(commands.clone())
                    .with_phone_book(Arc::new(queries.runtime().read_models())),
            ),
            live: LiveHub::new(commands.store().clone(), LiveConfig::default()),
            stream_keep_alive: Duration::from_secs(15),
            commands,
            queries,
            auth: Arc::new(auth),
            metrics,
            limits: Limits::default(),
            webhooks: None,
        }
    }
}
