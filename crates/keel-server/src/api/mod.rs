//! The owner API (`/api/owner/*`), health and admin routes: thin adapters that read the
//! request, call one operation of [`crate::ops`] and answer its DTO as JSON.
//!
//! # Layout
//! - [`queues`], [`jobs`], [`dlq`], [`logs`], [`runs`], [`workers`], [`tokens`],
//!   [`workflows`]: one file per resource of `/api/owner/*`.
//! - [`messages`] — `/api/owner/ai/*`, `/api/owner/emails` and `/api/otp/*`.
//! - [`health`] — `/api/health*` and `/api/admin/redis/metrics`.
//! - [`realtime`] — the `/api/owner/realtime` WebSocket.
//! - [`metrics`] — `/metrics` (Prometheus).
//! - [`openapi`] — `/api/openapi.json`.

pub mod dlq;
pub mod health;
pub mod jobs;
pub mod logs;
pub mod messages;
pub mod metrics;
pub mod openapi;
pub mod queues;
pub mod realtime;
pub mod runs;
pub mod tokens;
pub mod workers;
pub mod workflows;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Serialize;

use crate::ops::Read;
use crate::state::AppState;

/// A cached read as JSON, with `x-keel-cache: hit` or `miss`.
pub fn cached_json<T: Serialize>(read: Read<T>) -> Response {
    with_cache_header(Json(read.value).into_response(), read.cached)
}

/// `x-keel-cache: hit` or `miss`.
pub fn with_cache_header(mut resp: Response, cached: bool) -> Response {
    resp.headers_mut().insert(
        "x-keel-cache",
        HeaderValue::from_static(if cached { "hit" } else { "miss" }),
    );
    resp
}

/// 201 with the DTO.
pub fn created<T: Serialize>(value: T) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

/// The owner API's routes (`/api/owner/*`); the router adds the `owner-api` rate limit.
pub fn owner_routes() -> Router<AppState> {
    Router::new()
        .route("/api/owner/queues", get(queues::list))
        .route("/api/owner/queues/{queue}/stats", get(queues::stats))
        .route("/api/owner/queues/{queue}/pause", post(queues::pause))
        .route("/api/owner/queues/{queue}/resume", post(queues::resume))
        .route(
            "/api/owner/queues/{queue}/jobs",
            get(jobs::list).post(jobs::enqueue),
        )
        .route("/api/owner/queues/{queue}/bulk", post(jobs::bulk))
        .route(
            "/api/owner/queues/{queue}/jobs/{id}",
            get(jobs::get).delete(jobs::remove),
        )
        .route(
            "/api/owner/queues/{queue}/jobs/{id}/retry",
            post(jobs::retry),
        )
        .route("/api/owner/queues/{queue}/dlq", get(dlq::list))
        .route(
            "/api/owner/queues/{queue}/dlq/replay",
            post(dlq::replay_all),
        )
        .route(
            "/api/owner/queues/{queue}/dlq/{id}/replay",
            post(dlq::replay),
        )
        .route("/api/owner/queues/{queue}/dlq/{id}", delete(dlq::remove))
        // The seeds' route for the same.
        .route(
            "/api/owner/queues/{queue}/dlq/{id}/remove",
            delete(dlq::remove),
        )
        .route("/api/owner/logs/audit", get(logs::audit))
        .route("/api/owner/logs/access", get(logs::access))
        .route("/api/owner/runs", get(runs::list))
        .route("/api/owner/runs/per-minute", get(runs::per_minute))
        .route("/api/owner/runs/{id}", get(runs::get))
        .route("/api/owner/workers", get(workers::list))
        .route("/api/owner/ai/runs", get(messages::ai_runs))
        .route("/api/owner/ai/runs/{id}", get(messages::ai_run))
        .route("/api/owner/ai/messages", get(messages::ai_messages))
        .route("/api/owner/ai/event-logs", get(messages::ai_events))
        .route("/api/owner/ai/tasks", get(messages::ai_tasks))
        .route("/api/owner/ai/usage", get(messages::ai_usage))
        .route("/api/owner/emails", get(messages::emails))
        .route("/api/otp/send", post(messages::otp_send))
        .route("/api/otp/verify", post(messages::otp_verify))
        .route("/api/owner/workflows", get(workflows::definitions))
        .route("/api/owner/workflows/instances", get(workflows::instances))
        .route(
            "/api/owner/workflows/instances/{id}",
            get(workflows::instance),
        )
        .route(
            "/api/owner/workflows/instances/{id}/cancel",
            post(workflows::cancel),
        )
        .route(
            "/api/owner/workflows/instances/{id}/rerun",
            post(workflows::rerun),
        )
        .route("/api/owner/workflows/{name}", put(workflows::define))
        .route("/api/owner/workflows/{name}/run", post(workflows::run))
        .route("/api/owner/tokens", get(tokens::list).post(tokens::create))
        .route("/api/owner/tokens/{id}", delete(tokens::revoke))
        .route("/api/owner/realtime", get(realtime::socket))
}

/// Health, admin, metrics and the OpenAPI document (no owner rate limit).
pub fn system_routes() -> Router<AppState> {
    Router::new()
        .route("/api/health", get(health::health))
        .route("/api/health/live", get(health::live))
        .route("/api/health/ready", get(health::ready))
        .route("/api/health/redis", get(health::redis))
        .route("/api/admin/redis/metrics", get(health::redis_metrics))
        .route("/metrics", get(metrics::scrape))
        .route("/api/openapi.json", get(openapi::document))
}
