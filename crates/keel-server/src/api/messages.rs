//! `/api/owner/ai/*` (runs, one run, messages, event logs, tasks, usage), `/api/owner/emails`
//! and `/api/otp/send`, `/api/otp/verify`.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use serde::Deserialize;

use super::{cached_json, created};
use crate::error::ApiResult;
use crate::extract::{Caller, JsonBody, Params};
use crate::ops::messages::{self, AiQuery, AiRunDetail, EmailQuery};
use crate::ops::otp::{self, Checked, SendRequest, VerifyRequest};
use crate::state::AppState;

/// `?hours=`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    hours: Option<i64>,
}

/// `GET /api/owner/ai/runs?status=&model=&queue=&task=&taskId=&from=&to=&page=&limit=`.
pub async fn ai_runs(
    State(state): State<AppState>,
    caller: Caller,
    Params(q): Params<AiQuery>,
) -> ApiResult<Response> {
    Ok(cached_json(messages::ai_runs(&state, &caller, &q).await?))
}

/// `GET /api/owner/ai/runs/{id}`: the run, its messages and events.
pub async fn ai_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AiRunDetail>> {
    Ok(Json(messages::ai_run(&state, &caller, &id).await?))
}

/// `GET /api/owner/ai/messages?runId=` (or `taskId=`).
pub async fn ai_messages(
    State(state): State<AppState>,
    caller: Caller,
    Params(q): Params<AiQuery>,
) -> ApiResult<Response> {
    Ok(cached_json(
        messages::ai_messages(&state, &caller, &q).await?,
    ))
}

/// `GET /api/owner/ai/event-logs?runId=&taskId=&model=&queue=&from=&to=&page=&limit=`.
pub async fn ai_events(
    State(state): State<AppState>,
    caller: Caller,
    Params(q): Params<AiQuery>,
) -> ApiResult<Response> {
    Ok(cached_json(messages::ai_events(&state, &caller, &q).await?))
}

/// `GET /api/owner/ai/tasks?status=&model=&queue=&task=&from=&to=&page=&limit=`.
pub async fn ai_tasks(
    State(state): State<AppState>,
    caller: Caller,
    Params(q): Params<AiQuery>,
) -> ApiResult<Response> {
    Ok(cached_json(messages::ai_tasks(&state, &caller, &q).await?))
}

/// `GET /api/owner/ai/usage?hours=24`: calls, tokens, cost and latency per model per hour.
pub async fn ai_usage(
    State(state): State<AppState>,
    caller: Caller,
    Params(q): Params<UsageQuery>,
) -> ApiResult<Response> {
    Ok(cached_json(
        messages::ai_usage(&state, &caller, q.hours).await?,
    ))
}

/// `GET /api/owner/emails?status=&template=&queue=&jobId=&from=&to=&page=&limit=`.
pub async fn emails(
    State(state): State<AppState>,
    caller: Caller,
    Params(q): Params<EmailQuery>,
) -> ApiResult<Response> {
    Ok(cached_json(messages::emails(&state, &caller, &q).await?))
}

/// `POST /api/otp/send` `{"email", "purpose"}`: 201 with the job, 429 + `Retry-After` inside
/// the resend window.
pub async fn otp_send(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req, _): JsonBody<SendRequest>,
) -> ApiResult<Response> {
    Ok(created(otp::send(&state, &caller, &req).await?))
}

/// `POST /api/otp/verify` `{"email", "code", "purpose"}`: the verdict; 429 + `Retry-After`
/// when locked or rate-limited.
pub async fn otp_verify(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req, _): JsonBody<VerifyRequest>,
) -> ApiResult<Json<Checked>> {
    Ok(Json(otp::verify(&state, &caller, &req).await?))
}
