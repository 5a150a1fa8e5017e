//! `/api/owner/runs`, `/api/owner/runs/{id}`, `/api/owner/runs/per-minute`.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use serde::Deserialize;

use super::cached_json;
use crate::error::ApiResult;
use crate::extract::{Caller, Params};
use crate::ops::runs::{self, RunDetail, RunQuery};
use crate::state::AppState;

/// `?minutes=`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerMinuteQuery {
    minutes: Option<i64>,
}

/// `GET /api/owner/runs?queue=&status=&job_id=&from=&to=&page=&limit=`.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Params(q): Params<RunQuery>,
) -> ApiResult<Response> {
    Ok(cached_json(runs::list(&state, &caller, &q).await?))
}

/// `GET /api/owner/runs/{id}`.
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<RunDetail>> {
    Ok(Json(runs::get(&state, &caller, &id).await?))
}

/// `GET /api/owner/runs/per-minute?minutes=60`: attempts completed and failed per minute over
/// the last `minutes` (1-1440, default 60), oldest first, every minute present (zeros too).
pub async fn per_minute(
    State(state): State<AppState>,
    caller: Caller,
    Params(q): Params<PerMinuteQuery>,
) -> ApiResult<Response> {
    Ok(cached_json(
        runs::per_minute(&state, &caller, q.minutes).await?,
    ))
}
