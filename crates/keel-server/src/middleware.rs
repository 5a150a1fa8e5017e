//! Middleware of every route: request metrics, request bounds (431/408 in the API's shape),
//! the NUL refusal and the panic answer. (The owner API's rate limit is `keel::http`'s
//! [`RateLimitLayer`](keel::http::RateLimitLayer), set up in [`owner_rate_limit`].)

use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ErrorCode};
use crate::extract::Caller;
use crate::state::AppState;

/// Counts requests by matched route, method and status.
pub async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let resp = next.run(req).await;
    state
        .metrics
        .http_request(&route, method.as_str(), resp.status().as_u16());
    resp
}

/// 431 for a head over the listener's limits and 408 for a request over `timeout`, both in the
/// API's error shape (tower-http's timeout layer answers an empty 408).
pub async fn request_bounds(timeout: Duration, req: Request, next: Next) -> Response {
    use crate::listener::{MAX_HEADERS, MAX_HEAD_BYTES};
    let headers = req.headers();
    let head_bytes = req.uri().to_string().len()
        + headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if headers.len() > MAX_HEADERS || head_bytes > MAX_HEAD_BYTES {
        return ApiError::new(ErrorCode::HeadersTooLarge,
            format!(
                "the request head has {} headers and {head_bytes} bytes; at most {MAX_HEADERS} headers and {MAX_HEAD_BYTES} bytes are accepted",
                headers.len()
            ),
        )
        .into_response();
    }
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            ErrorCode::RequestTimeout,
            format!(
                "the request took longer than {} ms and was abandoned",
                timeout.as_millis()
            ),
        )
        .into_response(),
    }
}

/// Where a request's path or query carries a NUL byte (`%00`): `path`, or the query
/// parameter's name. No store holds NUL in text, so such input is refused before any handler.
fn nul_field(uri: &axum::http::Uri) -> Option<String> {
    // A NUL can only arrive percent-encoded (a raw one is no valid URI), and `0` has no case:
    // one substring search per request, no decoding unless it finds one.
    if uri.path().contains("%00") {
        return Some("path".into());
    }
    let query = uri.query().filter(|q| q.contains("%00"))?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, v)| k.contains('\0') || v.contains('\0'))
        .map(|(k, _)| {
            if k.contains('\0') {
                "query".to_string()
            } else {
                k.into_owned()
            }
        })
}

/// Refuses NUL bytes in the path or query with a 400 naming the field; a refused mutation of
/// the owner API is audited like any other (`owner.request.invalid`, with the caller when its
/// token is valid).
pub async fn refuse_nul(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(field) = nul_field(req.uri()) else {
        return next.run(req).await;
    };
    let err = ApiError::invalid(
        &field,
        format!("{field} contains a NUL byte (%00), which is not accepted anywhere"),
    );
    let mutation = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if mutation && req.uri().path().starts_with("/api/owner/") {
        let (mut parts, _) = req.into_parts();
        let caller = Caller::from_request_parts(&mut parts, &state).await.ok();
        let meta = crate::extract::Meta::of(&parts, &state);
        let entry = keel_records::NewAudit {
            tenant_id: caller.as_ref().and_then(Caller::tenant),
            actor: caller
                .as_ref()
                .map(Caller::actor)
                .unwrap_or_else(|| "anonymous".into()),
            action: "owner.request.invalid".into(),
            resource: format!("{} {}", parts.method, parts.uri.path()),
            ip: Some(meta.ip),
            user_agent: meta.user_agent,
            status: err.status().as_u16() as i64,
            payload: Some(serde_json::json!({"field": field, "query": parts.uri.query()})),
        };
        if let Err(e) = state.logs.write(crate::logs::LogEntry::Audit(entry)).await {
            tracing::error!(error = %e, "audit entry of a refused request not written");
        }
    }
    err.into_response()
}

/// The answer of a handler that panicked: a logged 500 in the API's shape.
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    tracing::error!("a request handler panicked");
    ApiError::new(
        ErrorCode::Internal,
        "the server failed on this request; it was logged",
    )
    .into_response()
}

/// The owner API's rate limit: the `owner-api` policy per client address (the proxied one
/// with `trust_proxy`), the rate-limit headers on every answer, 429 with `Retry-After`; the
/// policy fails open when Redis is down. Rejections are counted in the metrics.
pub fn owner_rate_limit(state: &AppState) -> keel::http::RateLimitLayer {
    let trust_proxy = state.server.trust_proxy;
    let metrics = state.metrics.clone();
    keel::http::RateLimitLayer::new(
        state.limiter.clone(),
        keel::http::RateRules::new().default_policy(OWNER_API_POLICY),
    )
    .subject(move |p| keel::http::client_ip(p, trust_proxy))
    .on_reject(move |_| metrics.rate_limited(OWNER_API_POLICY))
}

/// The rate-limit policy of the owner API.
pub const OWNER_API_POLICY: &str = "owner-api";
