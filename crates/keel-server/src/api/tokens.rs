//! `/api/owner/tokens[/{id}]` (owner).

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use serde_json::Value;

use super::created;
use crate::error::ApiResult;
use crate::extract::{Caller, JsonBody};
use crate::ops::tokens::{self, Revoked, Tokens};
use crate::state::AppState;

/// `GET /api/owner/tokens`.
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Tokens>> {
    Ok(Json(tokens::list(&state, &caller).await?))
}

/// `POST /api/owner/tokens`: `{"name", "role", "tenant"?}`; the secret is in the answer only.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(raw, _): JsonBody<Value>,
) -> ApiResult<Response> {
    Ok(created(tokens::create(&state, &caller, raw).await?))
}

/// `DELETE /api/owner/tokens/{id}`.
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Revoked>> {
    Ok(Json(tokens::revoke(&state, &caller, &id).await?))
}
