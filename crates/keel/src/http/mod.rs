//! Tower layers for a user's own axum (or any tower) HTTP service, feature `http`: what the
//! seeds built as NestJS guards and interceptors (haystack's `@RateLimit()`, `@Cache()`,
//! `@CacheInvalidate()`), over Keel's [`RateLimiter`](crate::RateLimiter) and
//! [`Cache`](crate::Cache), so every instance of the service shares one limit and one cache.
//!
//! - [`RateLimitLayer`]: a policy per route — a method's own rule wins over the route's, the
//!   route's over its router's (the longest matching path prefix), the router's over the
//!   default — the `X-RateLimit-*` and IETF `RateLimit`/`RateLimit-Policy` headers on every
//!   answer, 429 with `Retry-After` in the `{"error": {...}}` shape, and the policy's own
//!   fail-open or fail-closed behaviour when Redis is down.
//! - [`CacheLayer`]: cache-aside of `GET` answers (200 only) keyed by route, query and caller,
//!   with a TTL and tags; mutating routes invalidate tags before they answer, so a client
//!   never reads a cached answer older than its own change. Tags can name path parameters
//!   (`queue-{queue}`).
//!
//! Routes are axum's route patterns (`/queues/{queue}/jobs`): apply the layers with
//! `Router::route_layer` so the matched route is known (without it the request path is used).
//! `examples/http_layers.rs` puts both on a plain axum app; `tests/http_layers.rs` drives it.
//!
//! # Layout
//! - [`ratelimit`]: [`RateRules`], [`RateLimitLayer`].
//! - [`cache`]: [`CacheRules`], [`CacheLayer`].

pub mod cache;
pub mod ratelimit;

pub use cache::{CacheLayer, CacheRule, CacheRules};
pub use ratelimit::{RateLimitLayer, RateRules};

use axum::extract::{ConnectInfo, MatchedPath};
use axum::http::request::Parts;
use axum::http::{Method, Request};

/// The answer future of the layers' services.
type BoxFuture<E> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<axum::http::Response<axum::body::Body>, E>> + Send>,
>;

/// The ready inner service, leaving a clone in its place: tower's rule for a service that is
/// called from inside a future (the clone has not been polled ready).
fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}

/// Who a request counts for: a function of the request head.
pub type SubjectFn = std::sync::Arc<dyn Fn(&Parts) -> String + Send + Sync>;

/// The subject of [`RateLimitLayer::new`] and the caller part of [`CacheLayer`]'s keys by
/// default: the client address — the socket peer (axum's `ConnectInfo`), or with
/// `trust_proxy` the first `X-Forwarded-For` hop; `unknown` without either.
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
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The route a request matched (`/queues/{queue}`), or its path outside a router.
fn route_of<B>(req: &Request<B>) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string())
}

/// The path parameters of `path` under `route` (`/q/{queue}` and `/q/mail` → `queue=mail`).
fn path_params(route: &str, path: &str) -> Vec<(String, String)> {
    route
        .split('/')
        .zip(path.split('/'))
        .filter_map(|(r, p)| {
            let name = r.strip_prefix('{')?.strip_suffix('}')?;
            Some((name.trim_start_matches('*').to_string(), p.to_string()))
        })
        .collect()
}

/// A tag template with `{param}` replaced by the request's path parameters.
fn fill(template: &str, params: &[(String, String)]) -> String {
    let mut out = template.to_string();
    for (k, v) in params {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// Whether `method` changes things (everything but GET, HEAD, OPTIONS).
fn mutating(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The `{"error": {...}}` answer of the layers.
fn error_body(code: &str, message: &str) -> String {
    serde_json::json!({"error": {"code": code, "message": message, "field": null}}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_name_path_parameters() {
        let p = path_params("/queues/{queue}/jobs/{id}", "/queues/mail/jobs/7");
        assert_eq!(
            p,
            vec![("queue".into(), "mail".into()), ("id".into(), "7".into())]
        );
        assert_eq!(fill("queue-{queue}", &p), "queue-mail");
        assert!(mutating(&Method::DELETE) && !mutating(&Method::GET));
    }
}
