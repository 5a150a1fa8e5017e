//! `/api/owner/queues/{queue}/dlq[/replay | /{id}[/replay|/remove]]`.

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;

use crate::error::ApiResult;
use crate::extract::{Caller, Params};
use crate::ops::dlq::{self, DlqListing, Replayed, ReplayedAll};
use crate::ops::jobs::Removed;
use crate::state::AppState;

/// `?page=&limit=`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    page: Option<usize>,
    limit: Option<usize>,
}

/// `?dry_run=`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayQuery {
    dry_run: Option<bool>,
}

/// `GET /api/owner/queues/{queue}/dlq?page=&limit=`.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
    Params(p): Params<PageQuery>,
) -> ApiResult<Json<DlqListing>> {
    Ok(Json(
        dlq::list(&state, &caller, &queue, p.page, p.limit).await?,
    ))
}

/// `POST /api/owner/queues/{queue}/dlq/replay[?dry_run=true]`: every entry back to the queue,
/// or how many would go.
pub async fn replay_all(
    State(state): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
    Params(p): Params<ReplayQuery>,
) -> ApiResult<Json<ReplayedAll>> {
    let dry = p.dry_run.unwrap_or(false);
    Ok(Json(dlq::replay_all(&state, &caller, &queue, dry).await?))
}

/// `POST /api/owner/queues/{queue}/dlq/{id}/replay`.
pub async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    Path((queue, id)): Path<(String, String)>,
) -> ApiResult<Json<Replayed>> {
    Ok(Json(dlq::replay(&state, &caller, &queue, &id).await?))
}

/// `DELETE /api/owner/queues/{queue}/dlq/{id}` (and `…/{id}/remove`, the seeds' route).
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path((queue, id)): Path<(String, String)>,
) -> ApiResult<Json<Removed>> {
    Ok(Json(dlq::remove(&state, &caller, &queue, &id).await?))
}
