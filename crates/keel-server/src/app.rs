//! The application: shared state, extractors (caller, request facts, JSON bodies), the rate
//! limit and metrics middleware, and the router with its tower-http layers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use keel::config::Config;
use keel::{Backend, Cache, CachePolicy, RateLimiter};
use serde::de::DeserializeOwned;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;
use crate::realtime::Realtime;
use crate::runs::RunRecorder;
use keel_records::{ApiToken, RecordStore, Role, Scope};

/// Everything a request handler reaches. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

/// The parts of [`AppState`].
pub struct Inner {
    /// The queue and toolkit backend.
    pub backend: Backend,
    /// The configuration.
    pub config: Config,
    /// The records.
    pub store: Arc<dyn RecordStore>,
    /// The owner API rate limit (`owner-api` policy).
    pub limiter: RateLimiter,
    /// Response cache of owner GETs.
    pub cache: Cache,
    /// Queue → tenant id, for queues bound to a tenant.
    pub queue_tenants: HashMap<String, String>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Job-run recorder.
    pub runs: RunRecorder,
    /// Audit and access log writer (group commit).
    pub logs: crate::logs::LogWriter,
    /// Authenticated tokens by secret hash, for 10 s, with the revocation epoch they were
    /// read in: a revocation anywhere (announced through [`crate::realtime`]) makes every
    /// instance read tokens again at once.
    pub token_cache: std::sync::Mutex<HashMap<String, (ApiToken, Instant, u64)>>,
    /// Queue names found on the backend, and when they were last read.
    pub known_queues: std::sync::Mutex<(std::collections::HashSet<String>, Option<Instant>)>,
    /// Live events.
    pub realtime: Realtime,
    /// Start time.
    pub started: Instant,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl AppState {
    /// Assembles the state.
    pub fn new(inner: Inner) -> AppState {
        AppState {
            inner: Arc::new(inner),
        }
    }

    /// Whether `scope` may see `queue`: every queue for an unbound token, only its own for a
    /// tenant's.
    pub fn can_see_queue(&self, scope: &Scope, queue: &str) -> bool {
        match scope {
            Scope::All => true,
            Scope::Tenant(t) => self.queue_tenants.get(queue) == Some(t),
        }
    }

    /// The token whose secret this is, from the 10 s cache or the store.
    pub async fn authenticate(&self, secret: &str) -> ApiResult<ApiToken> {
        let key = keel_records::secret::sha256_hex(secret);
        let epoch = self.realtime.revocation_epoch();
        {
            let cache = self.token_cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((t, at, seen)) = cache.get(&key) {
                if at.elapsed() < Duration::from_secs(10) && *seen == epoch {
                    return Ok(t.clone());
                }
            }
        }
        let token = self
            .store
            .authenticate(secret)
            .await?
            .ok_or_else(|| ApiError::unauthorized("the token is unknown or revoked"))?;
        let mut cache = self.token_cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(key, (token.clone(), Instant::now(), epoch));
        Ok(token)
    }

    /// Forgets cached tokens (after a revocation).
    pub fn forget_tokens(&self) {
        self.token_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Whether `name` is a queue on the backend (names are re-read at most every 500 ms when
    /// an unknown one is asked for, and kept 5 s).
    pub async fn queue_exists(&self, name: &str) -> ApiResult<bool> {
        {
            let k = self.known_queues.lock().unwrap_or_else(|p| p.into_inner());
            let fresh = k.1.is_some_and(|t| t.elapsed() < Duration::from_secs(5));
            let recent =
                k.1.is_some_and(|t| t.elapsed() < Duration::from_millis(500));
            if (fresh && k.0.contains(name)) || (recent && !k.0.contains(name)) {
                return Ok(k.0.contains(name));
            }
        }
        let names = self.backend.queue_names().await?;
        let mut k = self.known_queues.lock().unwrap_or_else(|p| p.into_inner());
        *k = (names.into_iter().collect(), Some(Instant::now()));
        Ok(k.0.contains(name))
    }

    /// The response cache for owner GETs (namespace `owner-api`).
    pub fn owner_cache(backend: &Backend) -> keel::Result<Cache> {
        Ok(Cache::new(backend, "owner-api")?.with_policy(CachePolicy {
            ttl: Duration::from_secs(10),
            jitter: 0.0,
            stale_for: Duration::from_secs(1),
            ..CachePolicy::default()
        }))
    }
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token.
    pub token: ApiToken,
    /// What it may read.
    pub scope: Scope,
}

impl Caller {
    /// `token:<id>`.
    pub fn actor(&self) -> String {
        format!("token:{}", self.token.id)
    }

    /// Fails 403 unless the caller has at least `role`.
    pub fn require(&self, role: Role) -> ApiResult<()> {
        if self.token.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this needs the {} role; the token has {}",
                role.as_str(),
                self.token.role.as_str()
            )))
        }
    }

    /// The tenant id, if bound.
    pub fn tenant(&self) -> Option<String> {
        self.token.tenant_id.clone()
    }
}

/// Reads `Authorization: Bearer <secret>`.
pub fn bearer(parts: &Parts) -> Option<&str> {
    bearer_in(&parts.headers)
}

/// Reads `Authorization: Bearer <secret>` from headers.
pub fn bearer_in(headers: &axum::http::HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, secret) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| secret.trim())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Caller> {
        if let Some(c) = parts.extensions.get::<Caller>() {
            return Ok(c.clone());
        }
        let secret = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized("send Authorization: Bearer <token> (keel token create)")
        })?;
        let token = state.authenticate(secret).await?;
        let caller = Caller {
            scope: token.scope(),
            token,
        };
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

/// Facts about the request for the logs.
#[derive(Debug, Clone)]
pub struct Meta {
    /// Client IP.
    pub ip: String,
    /// User agent.
    pub user_agent: Option<String>,
}

/// The client IP: the socket peer, or the first `X-Forwarded-For` hop when trusted.
pub fn client_ip(parts: &Parts, trust_proxy: bool) -> String {
    if trust_proxy {
        if let Some(ip) = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            return ip.to_string();
        }
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

impl FromRequestParts<AppState> for Meta {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Meta> {
        Ok(Meta {
            ip: client_ip(parts, state.config.server.trust_proxy),
            user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(512).collect()),
        })
    }
}

/// A JSON body, with errors in the API's shape: 400 `malformed-json` naming the field path, 413
/// when over the body limit, 415 without a JSON content type.
pub struct JsonBody<T>(pub T, pub serde_json::Value);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> ApiResult<JsonBody<T>> {
        let json_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    crate::error::ErrorCode::PayloadTooLarge,
                    format!(
                        "the body is over the limit of {} bytes",
                        state.config.server.body_limit_bytes
                    ),
                )
            } else {
                ApiError::new(crate::error::ErrorCode::MalformedBody, e.body_text())
            }
        })?;
        if !json_type {
            return Err(ApiError::new(
                crate::error::ErrorCode::UnsupportedMediaType,
                "send the body as Content-Type: application/json",
            ));
        }
        let raw: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| ApiError {
            field: None,
            ..ApiError::new(
                crate::error::ErrorCode::MalformedJson,
                format!("the body is not valid JSON: {e}"),
            )
        })?;
        let value = serde_path_to_error::deserialize(raw.clone()).map_err(|e| {
            let path = e.path().to_string();
            ApiError {
                field: Some(if path == "." { "body".into() } else { path }),
                ..ApiError::new(crate::error::ErrorCode::InvalidInput, e.inner().to_string())
            }
        })?;
        Ok(JsonBody(value, raw))
    }
}

/// Rate limit of `/api/owner/*`: the `owner-api` policy per client IP, headers on every
/// response, 429 with `Retry-After`; fails open when Redis is down (the policy's setting).
async fn owner_rate_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let ip = client_ip(&parts, state.config.server.trust_proxy);
    let req = Request::from_parts(parts, body);
    let decision = match state.limiter.check("owner-api", &ip).await {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::warn!(error = %e, "owner-api rate limit check failed; admitting");
            None
        }
    };
    let mut resp = match &decision {
        Some(d) if !d.allowed => {
            state.metrics.rate_limited("owner-api");
            ApiError {
                retry_after: d.retry_after.map(|r| r.as_millis().div_ceil(1000) as u64),
                ..ApiError::new(
                    crate::error::ErrorCode::RateLimited,
                    format!(
                        "over {} requests per {} s from this address",
                        d.limit, d.window_s
                    ),
                )
            }
            .into_response()
        }
        _ => next.run(req).await,
    };
    if let Some(d) = decision {
        for (name, value) in d.headers().into_iter().chain(d.ietf_headers()) {
            if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::from_str(&value)) {
                resp.headers_mut().insert(n, v);
            }
        }
    }
    resp
}

/// Counts requests by matched route, method and status.
async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
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
        crate::error::ErrorCode::NotFound,
        format!("no route {method} {}", uri.path()),
    )
    .into_response()
}

/// 431 for a head over the listener's limits and 408 for a request over `timeout`, both in the
/// API's error shape (tower-http's timeout layer answers an empty 408).
async fn request_bounds(timeout: Duration, req: Request, next: Next) -> Response {
    use crate::listener::{MAX_HEADERS, MAX_HEAD_BYTES};
    let headers = req.headers();
    let head_bytes = req.uri().to_string().len()
        + headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if headers.len() > MAX_HEADERS || head_bytes > MAX_HEAD_BYTES {
        return ApiError::new(crate::error::ErrorCode::HeadersTooLarge,
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
            crate::error::ErrorCode::RequestTimeout,
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
async fn refuse_nul(State(state): State<AppState>, req: Request, next: Next) -> Response {
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
        let meta = Meta::from_request_parts(&mut parts, &state).await.ok();
        let entry = keel_records::NewAudit {
            tenant_id: caller.as_ref().and_then(Caller::tenant),
            actor: caller
                .as_ref()
                .map(Caller::actor)
                .unwrap_or_else(|| "anonymous".into()),
            action: "owner.request.invalid".into(),
            resource: format!("{} {}", parts.method, parts.uri.path()),
            ip: meta.as_ref().map(|m| m.ip.clone()),
            user_agent: meta.and_then(|m| m.user_agent),
            status: err.status().as_u16() as i64,
            payload: Some(serde_json::json!({"field": field, "query": parts.uri.query()})),
        };
        if let Err(e) = state.logs.write(crate::logs::LogEntry::Audit(entry)).await {
            tracing::error!(error = %e, "audit entry of a refused request not written");
        }
    }
    err.into_response()
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    tracing::error!("a request handler panicked");
    ApiError::new(
        crate::error::ErrorCode::Internal,
        "the server failed on this request; it was logged",
    )
    .into_response()
}

/// The owner API routes (`/api/owner/*`), without the rate limit.
fn owner_api() -> Router<AppState> {
    use crate::owner;
    Router::new()
        .route("/api/owner/queues", get(owner::list_queues))
        .route("/api/owner/queues/{queue}/stats", get(owner::queue_stats))
        .route(
            "/api/owner/queues/{queue}/jobs",
            get(owner::list_jobs).post(owner::enqueue),
        )
        .route(
            "/api/owner/queues/{queue}/jobs/{id}",
            get(owner::get_job).delete(owner::remove_job),
        )
        .route(
            "/api/owner/queues/{queue}/jobs/{id}/retry",
            post(owner::retry_job),
        )
        .route("/api/owner/queues/{queue}/pause", post(owner::pause))
        .route("/api/owner/queues/{queue}/resume", post(owner::resume))
        .route("/api/owner/queues/{queue}/dlq", get(owner::list_dlq))
        .route(
            "/api/owner/queues/{queue}/dlq/replay",
            post(owner::replay_all),
        )
        .route(
            "/api/owner/queues/{queue}/dlq/{id}/replay",
            post(owner::replay_one),
        )
        .route(
            "/api/owner/queues/{queue}/dlq/{id}",
            delete(owner::remove_dlq),
        )
        // The seeds' route for the same.
        .route(
            "/api/owner/queues/{queue}/dlq/{id}/remove",
            delete(owner::remove_dlq),
        )
        .route("/api/owner/logs/audit", get(owner::audit_log))
        .route("/api/owner/logs/access", get(owner::access_log))
        .route("/api/owner/runs", get(owner::list_runs))
        .route("/api/owner/runs/per-minute", get(owner::runs_per_minute))
        .route("/api/owner/workers", get(owner::list_workers))
        .route("/api/owner/runs/{id}", get(owner::get_run))
        .route(
            "/api/owner/tokens",
            get(owner::list_tokens).post(owner::create_token),
        )
        .route("/api/owner/tokens/{id}", delete(owner::revoke_token))
        .route("/api/owner/realtime", get(crate::realtime::socket))
}

/// The whole router with its layers.
pub fn router(state: AppState) -> Router {
    use crate::health;
    let owner_routes = owner_api().route_layer(middleware::from_fn_with_state(
        state.clone(),
        owner_rate_limit,
    ));
    // What the console's pages call in-process: the same handlers, without the per-IP limit
    // (one page view makes several calls).
    let internal = owner_api()
        .route("/api/health/redis", get(health::redis))
        .route("/api/admin/redis/metrics", get(health::redis_metrics))
        .with_state(state.clone());
    let body_limit = state.config.server.body_limit_bytes;
    let timeout = state.config.server.request_timeout;
    Router::new()
        .route("/api/health", get(health::health))
        .route("/api/health/live", get(health::live))
        .route("/api/health/ready", get(health::ready))
        .route("/api/health/redis", get(health::redis))
        .route("/api/admin/redis/metrics", get(health::redis_metrics))
        .route("/metrics", get(crate::metrics::scrape))
        .route("/api/openapi.json", get(crate::openapi::document))
        .merge(owner_routes)
        .merge(crate::console::routes(internal))
        .fallback(not_found)
        .method_not_allowed_fallback(|method: Method, uri: axum::http::Uri| async move {
            ApiError::new(
                crate::error::ErrorCode::MethodNotAllowed,
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
