//! Health routes: liveness, readiness (Redis and the database), Redis health and metrics.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use keel::health::{InfoReport, Status};
use serde_json::{json, Value};

use crate::error::ApiResult;
use crate::extract::Caller;
use crate::ops::system;
use crate::state::AppState;

fn status_of(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// `GET /api/health`: overall status, versions and uptime.
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let checks = system::readiness(&state).await;
    let ready = checks.ready();
    (
        status_of(ready),
        Json(json!({
            "status": if ready { "ok" } else { "degraded" },
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": state.started.elapsed().as_secs(),
            "checks": checks,
        })),
    )
}

/// `GET /api/health/live`: the process answers.
pub async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /api/health/ready`: 200 when Redis (or the memory backend) and the database answer,
/// else 503.
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let checks = system::readiness(&state).await;
    let ok = checks.ready();
    (
        status_of(ok),
        Json(json!({"status": if ok { "ready" } else { "not-ready" }, "checks": checks})),
    )
}

/// `GET /api/health/redis`: `PING` latency with ok/warn/critical.
pub async fn redis(State(state): State<AppState>) -> (StatusCode, Json<keel::health::Health>) {
    let h = system::redis_health(&state).await;
    (status_of(h.status != Status::Critical), Json(h))
}

/// `GET /api/admin/redis/metrics` (admin): the `INFO` summary with alerts.
pub async fn redis_metrics(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<InfoReport>> {
    Ok(Json(system::redis_info(&state, &caller).await?))
}
