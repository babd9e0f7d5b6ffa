//! Homeroom's HTTP API (`../shared/API.md`), on axum.
//!
//! A tour:
//!
//! - [`router`] builds the whole API from an [`ApiState`] (the command service, the
//!   store, the token keys, the metrics, the limits); [`serve`] runs it on a listener
//!   until a shutdown future resolves, finishing the requests in flight. Both take their
//!   resources as arguments: the binary and the tests build them.
//! - [`commands`]: `POST /v1/commands/{CommandName}`. The body is parsed by
//!   `homeroom_app::parse_command`, the `Idempotency-Key` header becomes the command id,
//!   and the answer is the [`commands::CommandResult`].
//! - [`queries`]: the reads (`/v1/inbox`, `/v1/conversations/{id}` and its export,
//!   `/v1/students/{id}/messages`, `/v1/oversight/conversations`, `/v1/audit` and
//!   `/v1/audit/verify`), answered by `homeroom_app::QueryService`.
//! - [`webhooks`]: the SMS provider's `POST /v1/webhooks/twilio/inbound` and `/status`,
//!   authenticated by the provider's signature (403 otherwise).
//! - [`import`]: `POST /v1/imports/role-assignments`, one `AssignRole` per CSV row; the
//!   `homeroom import roles` subcommand runs the same code.
//! - [`auth`]: HS256 bearer tokens, the [`auth::Caller`] extractor that scopes every
//!   request to the token's district, and the instance's key file.
//! - [`problem`]: [`ApiError`], the one place an error becomes an
//!   `application/problem+json` answer with a stable `code`.
//! - [`health`], [`metrics`], [`openapi`]: `/healthz`, `/readyz`, `/metrics`
//!   (Prometheus) and `/openapi.json` (generated from the command types).
//!
//! Limits: command bodies up to 64 KiB and 30 s, CSV imports up to 10 MiB and 300 s
//! ([`Limits`]).

pub mod auth;
pub mod commands;
pub mod health;
pub mod import;
mod json_body;
pub mod metrics;
pub mod openapi;
pub mod preview;
pub mod problem;
pub mod queries;
mod state;
pub mod stream;
pub mod webhooks;

pub use auth::{Caller, Claims, TokenKeys};
pub use problem::{ApiError, Problem};
pub use state::{ApiState, Limits};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Router};
use std::future::Future;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// The whole API over `state`.
pub fn router(state: ApiState) -> Router {
    let limits = state.limits;
    let bounded = |router: Router<ApiState>, body: usize, time| {
        router
            .layer(DefaultBodyLimit::max(body))
            .layer(RequestBodyLimitLayer::new(body))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::SERVICE_UNAVAILABLE,
                time,
            ))
    };
    let commands = bounded(
        Router::new().route("/v1/commands/{name}", post(commands::post_command)),
        limits.command_body,
        limits.command_timeout,
    );
    let imports = bounded(
        Router::new().route(
            "/v1/imports/role-assignments",
            post(import::post_role_assignments),
        ),
        limits.import_body,
        limits.import_timeout,
    );
    let reads = bounded(
        Router::new()
            .route("/v1/inbox", get(queries::inbox))
            .route("/v1/conversations/{id}", get(queries::conversation))
            .route("/v1/conversations/{id}/export", get(queries::export))
            .route("/v1/students/{id}/messages", get(queries::student_record))
            .route("/v1/oversight/conversations", get(queries::oversight))
            .route("/v1/audit", get(queries::audit))
            .route("/v1/audit/verify", get(queries::verify))
            .route("/v1/preview", post(preview::preview)),
        limits.command_body,
        limits.read_timeout,
    );
    let hooks = bounded(
        Router::new()
            .route("/v1/webhooks/twilio/inbound", post(webhooks::inbound))
            .route("/v1/webhooks/twilio/status", post(webhooks::status)),
        limits.command_body,
        limits.command_timeout,
    );
    Router::new()
        .merge(commands)
        .merge(imports)
        .merge(reads)
        .merge(hooks)
        .route("/v1/stream", get(stream::stream))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(health::openapi))
        .fallback(not_found)
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::map_response_with_state(
            limits,
            problem_for_bare_errors,
        ))
        // A 5xx the API answers on purpose (`503 stale`, `unavailable`) is no fault of
        // this process: a warning. Real failures are logged as errors, with their
        // reference, where the problem document is made.
        .layer(
            TraceLayer::new_for_http()
                .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::WARN)),
        )
        .with_state(state)
}

/// Serves `state`'s API on `listener` until `shutdown` resolves, then stops accepting
/// and returns once every request in flight is answered.
///
/// # Errors
/// The listener's I/O error.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Open event streams never end on their own: closing the hub ends them, so the
    // graceful shutdown does not wait on them forever.
    let live = state.live.clone();
    let shutdown = async move {
        shutdown.await;
        live.close();
    };
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound {
        path: uri.path().to_owned(),
    }
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %message, "a request handler panicked");
    ApiError::Panic.into_response()
}

/// Gives the bare error answers of layers below the handlers (405, 413, timeouts,
/// rejected paths) a problem document, so every error the API sends is one.
async fn problem_for_bare_errors(
    State(limits): State<Limits>,
    uri: Uri,
    response: Response,
) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(problem::PROBLEM_JSON.as_bytes()));
    if status.is_success() || status.is_redirection() || is_problem {
        return response;
    }
    ApiError::from_status(status, uri.path(), &limits).into_response()
}
