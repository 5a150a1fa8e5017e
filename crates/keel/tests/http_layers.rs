//! `keel::http`'s layers on the plain axum app of `examples/http_layers.rs`, on both backends:
//! the most specific rate-limit rule wins, every answer carries the rate-limit headers, a
//! rejection is a 429 with `Retry-After`, exempt routes are never limited, `GET` answers are
//! cached per caller and a successful mutation invalidates them before it answers.

#[path = "../examples/http_layers.rs"]
#[allow(dead_code)]
mod example;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use keel::backend::RedisSettings;
use keel::{Backend, Keys};
use tower::ServiceExt;

#[path = "support/private_redis.rs"]
mod private_redis;
use private_redis::PrivateRedis;

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

async fn call(app: &axum::Router, method: Method, path: &str, who: &str, body: &str) -> Answer {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {who}"))
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn scenario(backend: Backend) {
    let app = example::app(&backend, (100, 3, 2)).unwrap();
    // Cache-aside per caller: a miss, then a hit; another caller has its own entry.
    let a = call(&app, Method::GET, "/notes/inbox", "ada", "").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["x-cache"], "miss");
    assert_eq!(a.headers["x-ratelimit-limit"], "100", "the default policy");
    assert!(a.headers.contains_key("ratelimit-policy"));
    let a2 = call(&app, Method::GET, "/notes/inbox", "ada", "").await;
    assert_eq!(a2.headers["x-cache"], "hit");
    assert_eq!(a2.body, a.body);
    assert_eq!(
        call(&app, Method::GET, "/notes/inbox", "bob", "")
            .await
            .headers["x-cache"],
        "miss"
    );
    // A mutation invalidates the list's tag before it answers: the next read is fresh.
    let w = call(&app, Method::POST, "/notes/inbox", "ada", "hello").await;
    assert_eq!(w.status, StatusCode::CREATED);
    assert_eq!(
        w.headers["x-ratelimit-limit"], "3",
        "the method's own rule wins"
    );
    let fresh = call(&app, Method::GET, "/notes/inbox", "ada", "").await;
    assert_eq!(fresh.headers["x-cache"], "miss");
    assert!(fresh.body.contains("hello"), "{}", fresh.body);
    // Another list's cache is untouched by it.
    call(&app, Method::GET, "/notes/other", "ada", "").await;
    call(&app, Method::POST, "/notes/inbox", "ada", "again").await;
    assert_eq!(
        call(&app, Method::GET, "/notes/other", "ada", "")
            .await
            .headers["x-cache"],
        "hit"
    );
    // The writes policy (3 per minute) is used up: a 429 in the error shape with Retry-After,
    // and nothing was written.
    let third = call(&app, Method::POST, "/notes/inbox", "ada", "third").await;
    assert_eq!(third.status, StatusCode::CREATED);
    let refused = call(&app, Method::POST, "/notes/inbox", "ada", "fourth").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers.contains_key("retry-after"));
    assert_eq!(refused.headers["x-ratelimit-remaining"], "0");
    let v: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
    assert_eq!(v["error"]["code"], "rate-limited");
    let after = call(&app, Method::GET, "/notes/inbox", "ada", "").await;
    assert!(
        !after.body.contains("fourth") && after.body.contains("third"),
        "{}",
        after.body
    );
    // Reads count against the default policy, not the exhausted writes one.
    assert_eq!(after.status, StatusCode::OK);
    // The route's own rule: login has 2.
    for _ in 0..2 {
        assert_eq!(
            call(&app, Method::POST, "/login", "x", "").await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        call(&app, Method::POST, "/login", "x", "").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Exempt: no headers, never limited.
    for _ in 0..5 {
        let h = call(&app, Method::GET, "/health", "x", "").await;
        assert_eq!(h.status, StatusCode::OK);
        assert!(!h.headers.contains_key("x-ratelimit-limit"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_on_memory() {
    let keys = Keys::new(&format!("hl-{}", uuid::Uuid::new_v4().simple()), "test").unwrap();
    scenario(Backend::memory().with_keys(keys)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_on_redis() {
    let keys = Keys::new(&format!("hl-{}", uuid::Uuid::new_v4().simple()), "test").unwrap();
    let b = Backend::redis(RedisSettings {
        url: std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        prefix: format!("hl-{}", uuid::Uuid::new_v4().simple()),
        command_timeout: Duration::from_secs(5),
        sharded_pubsub: false,
    })
    .await
    .expect("Redis must be running");
    scenario(b.with_keys(keys)).await;
}

/// Redis gone after start: the policy decides (the example's policies fail open, the
/// default) and the cache steps aside, so the app still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_the_app_still_answers() {
    let port = PrivateRedis::spare_port();
    let mut redis = PrivateRedis::start(port);
    let b = Backend::redis(RedisSettings {
        url: format!("redis://127.0.0.1:{port}"),
        prefix: "down".into(),
        command_timeout: Duration::from_millis(300),
        sharded_pubsub: false,
    })
    .await
    .unwrap();
    let app = example::app(&b, (100, 3, 2)).unwrap();
    assert_eq!(
        call(&app, Method::GET, "/notes/inbox", "ada", "")
            .await
            .headers["x-cache"],
        "miss"
    );
    redis.stop();
    let r = call(&app, Method::GET, "/notes/inbox", "ada", "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.headers["x-cache"], "miss",
        "nothing could be read from the cache"
    );
    let w = call(&app, Method::POST, "/notes/inbox", "ada", "still").await;
    assert_eq!(w.status, StatusCode::CREATED, "{}", w.body);
}
