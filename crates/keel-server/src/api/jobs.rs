//! `/api/owner/queues/{queue}/jobs[/{id}[/retry]]` and `/api/owner/queues/{queue}/bulk`.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use serde_json::Value;

use super::created;
use crate::error::ApiResult;
use crate::extract::{Caller, JsonBody, Params};
use crate::ops::bulk::{self, BulkOutcome};
use crate::ops::jobs::{self, JobDetail, JobsPage, JobsQuery, Removed, Retried};
use crate::state::AppState;

/// `POST /api/owner/queues/{queue}/jobs`: one job object or an array (≤ 1000), all validated
/// before any is added; 201 `{"jobs": [{"id", "name"}…]}`.
pub async fn enqueue(
    State(state): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
    JsonBody(raw, _): JsonBody<Value>,
) -> ApiResult<Response> {
    Ok(created(jobs::enqueue(&state, &caller, &queue, raw).await?))
}

/// `GET /api/owner/queues/{queue}/jobs?state=&page=&limit=&cursor=&search=&name=`: newest
/// first. `cursor` (from `next_cursor`) continues where a page ended, also through searches.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
    Params(q): Params<JobsQuery>,
) -> ApiResult<Json<JobsPage>> {
    Ok(Json(jobs::list(&state, &caller, &queue, &q).await?))
}

/// `GET /api/owner/queues/{queue}/jobs/{id}`: the job, its state, log lines and runs.
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((queue, id)): Path<(String, String)>,
) -> ApiResult<Json<JobDetail>> {
    Ok(Json(jobs::get(&state, &caller, &queue, &id).await?))
}

/// `POST /api/owner/queues/{queue}/jobs/{id}/retry`.
pub async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    Path((queue, id)): Path<(String, String)>,
) -> ApiResult<Json<Retried>> {
    Ok(Json(jobs::retry(&state, &caller, &queue, &id).await?))
}

/// `DELETE /api/owner/queues/{queue}/jobs/{id}`.
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path((queue, id)): Path<(String, String)>,
) -> ApiResult<Json<Removed>> {
    Ok(Json(jobs::remove(&state, &caller, &queue, &id).await?))
}

/// `POST /api/owner/queues/{queue}/bulk`: `{"action": "retry"|"remove", "ids": […]}` or
/// `{"action", "state", "limit"?}`; each job audited on its own.
pub async fn bulk(
    State(state): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
    JsonBody(raw, _): JsonBody<Value>,
) -> ApiResult<Json<BulkOutcome>> {
    Ok(Json(bulk::bulk(&state, &caller, &queue, raw).await?))
}
