//! The router: the owner API (with its rate limit), the system routes and the console, under
//! the layers every request passes (NUL refusal, error logging, metrics, body limit,
//! compression, request bounds, tracing, request ids, panic answer).

use axum::extract::Request;
use axum::http::{header, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::error::{ApiError, ErrorCode};
use crate::middleware::{
    count_requests, owner_rate_limit, panic_response, refuse_nul, request_bounds,
};
use crate::state::AppState;

/// 404: the console's HTML page for a browser outside `/api`, the JSON error otherwise.
async fn not_found(
    method: Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> Response {
    let browser = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if browser && !uri.path().starts_with("/api/") && method == Method::GET {
        return crate::console::not_found_page(uri.path());
    }
    ApiError::new(
        ErrorCode::NotFound,
        format!("no route {method} {}", uri.path()),
    )
    .into_response()
}

/// The whole application with its layers.
pub fn router(state: AppState) -> Router {
    let owner = crate::api::owner_routes().route_layer(owner_rate_limit(&state));
    let body_limit = state.server.body_limit_bytes;
    let timeout = state.server.request_timeout;
    Router::new()
        .merge(crate::api::system_routes())
        .merge(owner)
        .merge(crate::console::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(|method: Method, uri: axum::http::Uri| async move {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                format!("{method} is not allowed on {}", uri.path()),
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), refuse_nul))
        .layer(middleware::from_fn(crate::error::log_errors))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(CompressionLayer::new())
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            request_bounds(timeout, req, next)
        }))
        .layer(TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}
