//! With Redis gone, nothing waits out the command timeout: every route answers at once. Its
//! own test binary, so that no other test shares the two cores while it measures latencies
//! (cargo runs test binaries one after another).

mod support;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::json;

const CONFIG: &str = "[queues.mail]\nattempts = 1\n"; // the same queue as outage.rs

/// With Redis gone, nothing waits out the command timeout (5 s here): after the first call
/// finds it unreachable, every route answers within 200 ms — 503 where it needs Redis, 200
/// where it does not (the logs, runs and tokens live in the database) — and all comes back
/// once Redis does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_every_route_answers_at_once() {
    let (mut redis, port, app) =
        support::app_on_private_redis(CONFIG, Duration::from_secs(5)).await;
    redis.kill().unwrap();
    redis.wait().unwrap();
    // The first call finds it gone.
    let started = std::time::Instant::now();
    let (s, _) = app
        .get_json("/api/owner/queues/mail/stats", Some(&app.viewer))
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    eprintln!("first call with Redis down: {:?}", started.elapsed());
    let owner = app.owner.clone();
    let cases: Vec<(Method, &str, Option<&str>, StatusCode)> = vec![
        (
            Method::GET,
            "/api/owner/logs/audit",
            Some(&owner),
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/owner/logs/access",
            Some(&owner),
            StatusCode::OK,
        ),
        (Method::GET, "/api/owner/runs", Some(&owner), StatusCode::OK),
        (
            Method::GET,
            "/api/owner/tokens",
            Some(&owner),
            StatusCode::OK,
        ),
        (Method::GET, "/api/health/live", None, StatusCode::OK),
        (Method::GET, "/metrics", None, StatusCode::OK),
        (
            Method::GET,
            "/api/health/ready",
            None,
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            Method::GET,
            "/api/health/redis",
            None,
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            Method::GET,
            "/api/owner/queues",
            Some(&owner),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            Method::GET,
            "/api/owner/queues/mail/stats",
            Some(&owner),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            Method::GET,
            "/api/owner/queues/mail/jobs",
            Some(&owner),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            Method::GET,
            "/api/owner/queues/mail/dlq",
            Some(&owner),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            Method::POST,
            "/api/owner/queues/mail/pause",
            Some(&owner),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    ];
    for _round in 0..2 {
        for (method, path, token, want) in &cases {
            let started = std::time::Instant::now();
            let (s, _, body) = app.raw(method.clone(), path, *token, None).await;
            let took = started.elapsed();
            assert_eq!(s, *want, "{method} {path}: {body}");
            assert!(
                took < Duration::from_millis(200),
                "{method} {path} took {took:?} with Redis down"
            );
        }
    }
    let started = std::time::Instant::now();
    let (s, _) = app
        .call(
            Method::POST,
            "/api/owner/queues/mail/jobs",
            Some(&app.admin),
            Some(json!({"name": "b"})),
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_millis(200));
    let mut redis = support::start_redis(port, &[]);
    support::eventually("the API answers again", || async {
        let (s, _) = app
            .get_json("/api/owner/queues/mail/stats", Some(&app.viewer))
            .await;
        (s == StatusCode::OK).then_some(())
    })
    .await;
    app.stop().await;
    redis.kill().ok();
    redis.wait().ok();
}
