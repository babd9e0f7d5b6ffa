//! Operations endpoints: liveness, readiness, metrics and the OpenAPI document.

use crate::problem::ApiError;
use crate::state::ApiState;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Json;
use homeroom_eventstore::StoreError;
use schemars::JsonSchema;
use serde::Serialize;

/// The answer of `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// The answer of `GET /readyz` when the store answers.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Readiness {
    /// Always `ready`.
    pub status: String,
    /// The position of the last event in the log.
    #[schemars(schema_with = "crate::commands::position_schema")]
    pub position: serde_json::Value,
}

/// `GET /healthz`: the process serves.
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// How long `GET /readyz` waits for the store: a load balancer's probe gives up after a
/// few seconds, and should see a 503 rather than a hang while the store's pool waits out
/// its own (longer) timeout.
pub const READINESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /readyz`: the store answers (within [`READINESS_TIMEOUT`]).
pub(crate) async fn readyz(State(state): State<ApiState>) -> Result<Json<Readiness>, ApiError> {
    let head = tokio::time::timeout(READINESS_TIMEOUT, state.store.head())
        .await
        .map_err(|elapsed| ApiError::StoreUnavailable(StoreError::unavailable(elapsed)))?
        .map_err(ApiError::StoreUnavailable)?;
    Ok(Json(Readiness {
        status: "ready".into(),
        position: head.token(),
    }))
}

/// `GET /metrics`: Prometheus text format. Projection lag and parks are read at scrape
/// time.
pub(crate) async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    match state.queries.runtime().status().await {
        Ok(projectors) => {
            for p in projectors {
                state.metrics.projection_lag(p.name, p.lag);
                state
                    .metrics
                    .projection_parked(p.name, p.health.is_parked());
            }
        }
        Err(error) => tracing::warn!(%error, "projection status unavailable for /metrics"),
    }
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
}

/// `GET /openapi.json`.
pub(crate) async fn openapi() -> Json<&'static serde_json::Value> {
    Json(crate::openapi::document())
}
