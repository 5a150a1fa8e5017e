//! `/api/owner/queues`, `/api/owner/queues/{queue}/stats|pause|resume`.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;

use super::cached_json;
use crate::error::ApiResult;
use crate::extract::Caller;
use crate::ops::{self, queues::Paused, Read};
use crate::state::AppState;

/// `GET /api/owner/queues`: `{"queues": [stats…]}`.
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    let read = ops::queues::list(&state, &caller).await?;
    Ok(cached_json(Read {
        value: serde_json::json!({ "queues": read.value }),
        cached: read.cached,
    }))
}

/// `GET /api/owner/queues/{queue}/stats`.
pub async fn stats(
    State(state): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
) -> ApiResult<Response> {
    Ok(cached_json(
        ops::queues::stats(&state, &caller, &queue).await?,
    ))
}

/// `POST /api/owner/queues/{queue}/pause`.
pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
) -> ApiResult<Json<Paused>> {
    Ok(Json(
        ops::queues::set_paused(&state, &caller, &queue, true).await?,
    ))
}

/// `POST /api/owner/queues/{queue}/resume`.
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
) -> ApiResult<Json<Paused>> {
    Ok(Json(
        ops::queues::set_paused(&state, &caller, &queue, false).await?,
    ))
}
