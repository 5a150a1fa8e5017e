//! `/api/owner/logs/audit` and `/api/owner/logs/access`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::cached_json;
use crate::error::ApiResult;
use crate::extract::{Caller, Params};
use crate::ops::logs::{self, LogQuery};
use crate::state::AppState;

/// `GET /api/owner/logs/audit?action=&resource=&actor=&from=&to=&page=&limit=`.
pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    Params(q): Params<LogQuery>,
) -> ApiResult<Response> {
    Ok(cached_json(logs::audit(&state, &caller, &q).await?))
}

/// `GET /api/owner/logs/access?…` (same filters).
pub async fn access(
    State(state): State<AppState>,
    caller: Caller,
    Params(q): Params<LogQuery>,
) -> ApiResult<Response> {
    Ok(Json(logs::access(&state, &caller, &q).await?).into_response())
}
