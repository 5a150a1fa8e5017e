//! [`RateLimitLayer`]: Keel's shared rate limits on a tower service, one policy per route.

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use tower::{Layer, Service};

use super::{client_ip, error_body, route_of, take_ready, BoxFuture, SubjectFn};
use crate::{RateDecision, RateLimiter};

/// Which policy a request counts against: the most specific rule wins — a method's own rule
/// over the route's, the route's over its router's (longest path prefix), that over the
/// default. A route with no rule and no default is not limited.
#[derive(Debug, Clone, Default)]
pub struct RateRules {
    default: Option<String>,
    routers: Vec<(String, String)>,
    routes: Vec<(Option<Method>, String, String)>,
    exempt: Vec<(Option<Method>, String)>,
}

impl RateRules {
    /// No rules: nothing is limited.
    pub fn new() -> RateRules {
        RateRules::default()
    }

    /// Every route without a more specific rule counts against `policy`.
    pub fn default_policy(mut self, policy: &str) -> RateRules {
        self.default = Some(policy.into());
        self
    }

    /// Routes under `prefix` (`/api/admin`) count against `policy` (a router's rule).
    pub fn router(mut self, prefix: &str, policy: &str) -> RateRules {
        self.routers
            .push((prefix.trim_end_matches('/').into(), policy.into()));
        self
    }

    /// `route` (axum's pattern, `/login`) counts against `policy`, for every method or only
    /// `method` (a method's rule).
    pub fn route(mut self, method: Option<Method>, route: &str, policy: &str) -> RateRules {
        self.routes.push((method, route.into(), policy.into()));
        self
    }

    /// `route` (for every method, or only `method`) is not limited, whatever else applies.
    pub fn exempt(mut self, method: Option<Method>, route: &str) -> RateRules {
        self.exempt.push((method, route.into()));
        self
    }

    /// The policy of a request to `route` with `method`.
    pub fn policy_for(&self, method: &Method, route: &str) -> Option<&str> {
        let exempt =
            |m: &Option<Method>, r: &str| r == route && m.as_ref().is_none_or(|m| m == method);
        if self.exempt.iter().any(|(m, r)| exempt(m, r)) {
            return None;
        }
        let by_route = |want_method: bool| {
            self.routes
                .iter()
                .find(|(m, r, _)| {
                    r == route
                        && m.is_some() == want_method
                        && m.as_ref().is_none_or(|m| m == method)
                })
                .map(|(_, _, p)| p.as_str())
        };
        by_route(true)
            .or_else(|| by_route(false))
            .or_else(|| {
                self.routers
                    .iter()
                    .filter(|(prefix, _)| {
                        route == prefix
                            || route.starts_with(&format!("{prefix}/"))
                            || prefix.is_empty()
                    })
                    .max_by_key(|(prefix, _)| prefix.len())
                    .map(|(_, p)| p.as_str())
            })
            .or(self.default.as_deref())
    }
}

/// Called with every rejection (metrics, logs).
pub type OnReject = Arc<dyn Fn(&RateDecision) + Send + Sync>;

/// A tower layer checking each request against its route's policy.
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: RateLimiter,
    rules: Arc<RateRules>,
    subject: SubjectFn,
    on_reject: Option<OnReject>,
}

impl RateLimitLayer {
    /// Requests count per client address (the socket peer) under `rules`.
    pub fn new(limiter: RateLimiter, rules: RateRules) -> RateLimitLayer {
        RateLimitLayer {
            limiter,
            rules: Arc::new(rules),
            subject: Arc::new(|p| client_ip(p, false)),
            on_reject: None,
        }
    }

    /// Requests count per what `subject` returns (a user id, an API key, the proxied address).
    pub fn subject(
        mut self,
        subject: impl Fn(&axum::http::request::Parts) -> String + Send + Sync + 'static,
    ) -> RateLimitLayer {
        self.subject = Arc::new(subject);
        self
    }

    /// Calls `f` with each rejection.
    pub fn on_reject(
        mut self,
        f: impl Fn(&RateDecision) + Send + Sync + 'static,
    ) -> RateLimitLayer {
        self.on_reject = Some(Arc::new(f));
        self
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    layer: RateLimitLayer,
}

/// The headers of a decision on `resp`.
fn decorate(resp: &mut Response<Body>, d: &RateDecision) {
    for (name, value) in d.headers().into_iter().chain(d.ietf_headers()) {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            resp.headers_mut().insert(n, v);
        }
    }
}

/// The 429 of a rejected request.
fn rejected(d: &RateDecision) -> Response<Body> {
    let message = format!("over {} requests per {} s", d.limit, d.window_s);
    let mut resp = Response::new(Body::from(error_body("rate-limited", &message)));
    *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(r) = d.retry_after {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(r.as_millis().div_ceil(1000).max(1) as u64),
        );
    }
    resp
}

impl<S> Service<Request<Body>> for RateLimit<S>
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
            let Some(policy) = layer
                .rules
                .policy_for(req.method(), &route)
                .map(str::to_string)
            else {
                return inner.call(req).await;
            };
            let (parts, body) = req.into_parts();
            let subject = (layer.subject)(&parts);
            let req = Request::from_parts(parts, body);
            let decision = match layer.limiter.check(&policy, &subject).await {
                Ok(d) => d,
                Err(e) => {
                    // An unknown policy or an unusable subject: a configuration fault.
                    tracing::error!(policy, error = %e, "rate limit not applied");
                    let mut resp =
                        Response::new(Body::from(error_body("internal", &e.to_string())));
                    *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    return Ok(resp);
                }
            };
            let mut resp = if decision.allowed {
                inner.call(req).await?
            } else {
                if let Some(f) = &layer.on_reject {
                    f(&decision);
                }
                rejected(&decision)
            };
            decorate(&mut resp, &decision);
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_rule_wins() {
        let r = RateRules::new()
            .default_policy("default")
            .router("/api/admin", "admin")
            .router("/api", "api")
            .route(None, "/api/login", "login")
            .route(Some(Method::POST), "/api/login", "login-post")
            .exempt(None, "/api/health");
        assert_eq!(
            r.policy_for(&Method::POST, "/api/login"),
            Some("login-post")
        );
        assert_eq!(r.policy_for(&Method::GET, "/api/login"), Some("login"));
        assert_eq!(
            r.policy_for(&Method::GET, "/api/admin/users"),
            Some("admin")
        );
        assert_eq!(r.policy_for(&Method::GET, "/api/things"), Some("api"));
        assert_eq!(r.policy_for(&Method::GET, "/apix"), Some("default"));
        assert_eq!(r.policy_for(&Method::GET, "/api/health"), None);
        assert_eq!(RateRules::new().policy_for(&Method::GET, "/x"), None);
    }
}
