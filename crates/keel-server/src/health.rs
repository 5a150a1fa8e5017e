//! Health routes: liveness, readiness (Redis and the database), Redis health and metrics.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use keel::health::{self, Status};
use serde_json::{json, Value};

use crate::app::{AppState, Caller};
use crate::error::ApiResult;
use keel_records::Role;

/// `GET /api/health`: overall status, versions and uptime.
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let (ready, body) = readiness(&state).await;
    let status = if ready { "ok" } else { "degraded" };
    (
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(json!({
            "status": status,
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": state.started.elapsed().as_secs(),
            "checks": body,
        })),
    )
}

/// `GET /api/health/live`: the process answers.
pub async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readiness(state: &AppState) -> (bool, Value) {
    let redis = health::ping(&state.backend).await;
    let db = state.store.health().await;
    let redis_ok = redis.status != Status::Critical;
    let db_ok = db.is_ok();
    let body = json!({
        "backend": redis,
        "database": match db {
            Ok(h) => json!({"status": "ok", "pool": h}),
            Err(e) => json!({"status": "critical", "error": e.to_string()}),
        },
        "run_records": state.runs.stats(),
    });
    (redis_ok && db_ok, body)
}

/// `GET /api/health/ready`: 200 when Redis (or the memory backend) and the database answer,
/// else 503.
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let (ok, body) = readiness(&state).await;
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({"status": if ok { "ready" } else { "not-ready" }, "checks": body})),
    )
}

/// `GET /api/health/redis`: `PING` latency with ok/warn/critical.
pub async fn redis(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let h = health::ping(&state.backend).await;
    let code = if h.status == Status::Critical {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(json!(h)))
}

/// `GET /api/admin/redis/metrics` (admin): the `INFO` summary with alerts.
pub async fn redis_metrics(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Admin)?;
    let info = health::info(&state.backend).await?;
    Ok(Json(json!(info)))
}
