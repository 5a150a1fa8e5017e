//! [`CacheLayer`]: cache-aside of `GET` answers in Keel's shared [`Cache`], with tag
//! invalidation by the routes that change things.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tower::{Layer, Service};

use super::{fill, mutating, path_params, route_of, take_ready, BoxFuture, SubjectFn};
use crate::{Cache, Write};

/// Largest answer the layer stores (bigger ones pass uncached).
pub const MAX_CACHED_BODY: usize = 1 << 20;

/// One cached route: how long its answers live and what they are tagged with.
#[derive(Debug, Clone)]
pub struct CacheRule {
    route: String,
    ttl: Duration,
    tags: Vec<String>,
}

/// What is cached and what invalidates it.
#[derive(Debug, Clone, Default)]
pub struct CacheRules {
    gets: Vec<CacheRule>,
    invalidations: Vec<(Option<Method>, String, Vec<String>)>,
}

impl CacheRules {
    /// Nothing cached.
    pub fn new() -> CacheRules {
        CacheRules::default()
    }

    /// `GET route` answers (200) are cached for `ttl` under `tags` (`{param}` names a path
    /// parameter: `queue-{queue}`).
    pub fn get(mut self, route: &str, ttl: Duration, tags: &[&str]) -> CacheRules {
        self.gets.push(CacheRule {
            route: route.into(),
            ttl,
            tags: tags.iter().map(|t| t.to_string()).collect(),
        });
        self
    }

    /// A successful (2xx) mutation of `route` (every mutating method, or only `method`)
    /// invalidates `tags` before it answers.
    pub fn invalidate(mut self, method: Option<Method>, route: &str, tags: &[&str]) -> CacheRules {
        self.invalidations.push((
            method,
            route.into(),
            tags.iter().map(|t| t.to_string()).collect(),
        ));
        self
    }
}

/// A stored answer.
#[derive(Serialize, Deserialize)]
struct Stored {
    content_type: Option<String>,
    body: String,
}

/// A tower layer caching `GET` answers and invalidating them on mutations.
#[derive(Clone)]
pub struct CacheLayer {
    cache: Cache,
    rules: Arc<CacheRules>,
    caller: SubjectFn,
}

impl CacheLayer {
    /// Answers are cached per caller: by default per `Authorization` header (hashed), so two
    /// callers never share an answer.
    pub fn new(cache: Cache, rules: CacheRules) -> CacheLayer {
        CacheLayer {
            cache,
            rules: Arc::new(rules),
            caller: Arc::new(|p| {
                p.headers
                    .get(header::AUTHORIZATION)
                    .map(|v| hex::encode(Sha256::digest(v.as_bytes())))
                    .unwrap_or_else(|| "anonymous".into())
            }),
        }
    }

    /// Whose answer a request reads: `f` of the request head (a user id, a tenant), or the
    /// same string for everyone to share answers.
    pub fn caller(
        mut self,
        f: impl Fn(&axum::http::request::Parts) -> String + Send + Sync + 'static,
    ) -> CacheLayer {
        self.caller = Arc::new(f);
        self
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;
    fn layer(&self, inner: S) -> CacheService<S> {
        CacheService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`CacheLayer`].
#[derive(Clone)]
pub struct CacheService<S> {
    inner: S,
    layer: CacheLayer,
}

fn with_state(mut resp: Response<Body>, hit: bool) -> Response<Body> {
    resp.headers_mut().insert(
        "x-cache",
        HeaderValue::from_static(if hit { "hit" } else { "miss" }),
    );
    resp
}

impl<S> Service<Request<Body>> for CacheService<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let mut inner = take_ready(&mut self.inner);
        let layer = self.layer.clone();
        Box::pin(async move {
            let route = route_of(&req);
            let params = path_params(&route, req.uri().path());
            if mutating(req.method()) {
                let tags: Vec<String> = layer
                    .rules
                    .invalidations
                    .iter()
                    .filter(|(m, r, _)| *r == route && m.as_ref().is_none_or(|m| m == req.method()))
                    .flat_map(|(_, _, t)| t.iter().map(|t| fill(t, &params)))
                    .collect();
                let resp = inner.call(req).await?;
                if resp.status().is_success() && !tags.is_empty() {
                    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
                    if let Err(e) = layer.cache.invalidate_tags(&tags).await {
                        tracing::warn!(error = %e, ?tags, "cache invalidation failed");
                    }
                }
                return Ok(resp);
            }
            let rule = (req.method() == Method::GET)
                .then(|| layer.rules.gets.iter().find(|r| r.route == route))
                .flatten()
                .cloned();
            let Some(rule) = rule else {
                return inner.call(req).await;
            };
            let (parts, body) = req.into_parts();
            let who = (layer.caller)(&parts);
            let what = format!(
                "{}?{}|{who}",
                parts.uri.path(),
                parts.uri.query().unwrap_or("")
            );
            let key = hex::encode(Sha256::digest(what.as_bytes()));
            let req = Request::from_parts(parts, body);
            match layer.cache.get::<Stored>(&key).await {
                Ok(Some(s)) => {
                    let mut resp = Response::new(Body::from(s.body));
                    if let Some(ct) = s.content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
                        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
                    }
                    return Ok(with_state(resp, true));
                }
                Ok(None) => {}
                // The cache is an optimisation: without Redis the route still answers.
                Err(e) => tracing::debug!(error = %e, "cache unavailable"),
            }
            let resp = inner.call(req).await?;
            if resp.status() != StatusCode::OK {
                return Ok(resp);
            }
            let too_big = resp
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
                .is_some_and(|n| n > MAX_CACHED_BODY);
            if too_big {
                return Ok(with_state(resp, false));
            }
            let (parts, body) = resp.into_parts();
            let bytes = match axum::body::to_bytes(body, usize::MAX).await {
                Ok(b) => b,
                Err(e) => {
                    // The handler's body stream failed: so does the answer.
                    tracing::warn!(error = %e, "answer body failed");
                    let mut resp = Response::from_parts(parts, Body::empty());
                    *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    return Ok(resp);
                }
            };
            let text = (bytes.len() <= MAX_CACHED_BODY)
                .then(|| std::str::from_utf8(&bytes).ok())
                .flatten();
            if let Some(text) = text {
                let stored = Stored {
                    content_type: parts
                        .headers
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string),
                    body: text.to_string(),
                };
                let tags: Vec<String> = rule.tags.iter().map(|t| fill(t, &params)).collect();
                let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
                let write = Write {
                    ttl: Some(rule.ttl),
                    tags: &tags,
                };
                if let Err(e) = layer.cache.set(&key, &stored, write).await {
                    tracing::debug!(error = %e, "cache not written");
                }
            }
            Ok(with_state(
                Response::from_parts(parts, Body::from(bytes)),
                false,
            ))
        })
    }
}
