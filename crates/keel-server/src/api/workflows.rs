//! `/api/owner/workflows…`: definitions, manual runs, instances, cancel and re-run.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use keel_records::workflow::WorkflowState;
use serde_json::Value;

use super::{cached_json, created};
use crate::error::ApiResult;
use crate::extract::{Caller, JsonBody, Params};
use crate::ops::workflows::{self, InstancesQuery, Saved};
use crate::state::AppState;

/// `GET /api/owner/workflows`: the latest version of every definition.
pub async fn definitions(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    Ok(cached_json(workflows::definitions(&state, &caller).await?))
}

/// `PUT /api/owner/workflows/{name}`: saves a definition (the shape of `[workflows.NAME]`) as
/// its next version.
pub async fn define(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body, _): JsonBody<Value>,
) -> ApiResult<Json<Saved>> {
    Ok(Json(workflows::define(&state, &caller, &name, body).await?))
}

/// `POST /api/owner/workflows/{name}/run` with `{"input": {…}}` (or no body): 201 with the
/// instance and its steps.
pub async fn run(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Option<JsonBody<Value>>,
) -> ApiResult<Response> {
    let body = body.map(|JsonBody(b, _)| b).unwrap_or(Value::Null);
    Ok(created(
        workflows::run(&state, &caller, &name, body, "api").await?,
    ))
}

/// `GET /api/owner/workflows/instances?status=&workflow=&from=&to=&page=&limit=`.
pub async fn instances(
    State(state): State<AppState>,
    caller: Caller,
    Params(q): Params<InstancesQuery>,
) -> ApiResult<Response> {
    Ok(cached_json(
        workflows::instances(&state, &caller, &q).await?,
    ))
}

/// `GET /api/owner/workflows/instances/{id}`: the instance and its steps.
pub async fn instance(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<WorkflowState>> {
    Ok(Json(workflows::instance(&state, &caller, &id).await?))
}

/// `POST /api/owner/workflows/instances/{id}/cancel`.
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<WorkflowState>> {
    Ok(Json(workflows::cancel(&state, &caller, &id).await?))
}

/// `POST /api/owner/workflows/instances/{id}/rerun`: from the failed steps.
pub async fn rerun(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<WorkflowState>> {
    Ok(Json(workflows::rerun(&state, &caller, &id).await?))
}
