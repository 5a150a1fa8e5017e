//! `/api/owner/workers`.

use axum::extract::State;
use axum::Json;

use crate::error::ApiResult;
use crate::extract::Caller;
use crate::ops::workers::{self, Workers};
use crate::state::AppState;

/// `GET /api/owner/workers`: the live workers (heartbeats), each with the queues it runs that
/// the caller may see; a tenant sees only workers of its queues.
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Workers>> {
    Ok(Json(workers::list(&state, &caller).await?))
}
