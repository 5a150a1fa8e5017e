//! The server with Redis going away and coming back (a private `redis-server` on a spare
//! port, never the shared one), and a realtime client too slow to keep up.

mod support;

use std::process::Child;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use futures::StreamExt;
use keel::backend::RedisSettings;
use keel::{Backend, Events};
use serde_json::json;
use support::{App, Db};

const CONFIG: &str = "[queues.mail]\nattempts = 1\n";

fn start_redis(port: u16) -> Child {
    support::start_redis(port, &[])
}

/// An app on a private Redis (command timeout `timeout`) that took one job.
async fn app_on_private_redis(timeout: Duration) -> (Child, u16, App) {
    let port = support::free_port();
    let redis = start_redis(port);
    let backend = Backend::redis(RedisSettings {
        url: format!("redis://127.0.0.1:{port}"),
        prefix: "ko".into(),
        command_timeout: timeout,
    })
    .await
    .unwrap()
    .with_keys(support::unique_keys());
    let app = App::start(CONFIG, backend, Db::Sqlite).await;
    let (s, _) = app
        .call(
            Method::POST,
            "/api/owner/queues/mail/jobs",
            Some(&app.admin),
            Some(json!({"name": "a"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    (redis, port, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_gives_503_fails_open_and_recovers() {
    let (mut redis, port, app) = app_on_private_redis(Duration::from_secs(1)).await;
    let mut web = support::Web::signed_in(&app, &app.admin).await;
    assert_eq!(web.get("/queues/mail").await.status, StatusCode::OK);

    redis.kill().unwrap();
    redis.wait().unwrap();
    // The console says what failed (its sessions are on the backend too).
    let page = web.get("/queues/mail").await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        page.body.contains("<h1>Redis unreachable</h1>"),
        "{}",
        page.body
    );
    // The owner API limit fails open: the request reaches the handler, which answers 503.
    let (s, headers, body) = app
        .raw(
            Method::GET,
            "/api/owner/queues/mail/stats",
            Some(&app.viewer),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "backend-unavailable");
    assert!(headers.contains_key("retry-after"));
    let (s, body) = app
        .call(
            Method::POST,
            "/api/owner/queues/mail/jobs",
            Some(&app.admin),
            Some(json!({"name": "b"})),
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // The refused enqueue is audited with its status; the database is fine.
    let (s, audit) = app
        .get_json(
            "/api/owner/logs/audit?action=owner.job.enqueue",
            Some(&app.admin),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{audit}");
    assert_eq!(audit["items"][0]["status"], 503);
    let (s, ready) = app.get_json("/api/health/ready", None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(ready["checks"]["database"]["status"], "ok");
    assert_eq!(
        app.call(Method::GET, "/api/health/live", None, None)
            .await
            .0,
        StatusCode::OK
    );

    let mut redis = start_redis(port);
    support::eventually("the API answers again", || async {
        let (s, _) = app
            .call(
                Method::GET,
                "/api/owner/queues/mail/stats",
                Some(&app.viewer),
                None,
            )
            .await;
        (s == StatusCode::OK).then_some(())
    })
    .await;
    let (s, _) = app
        .call(
            Method::POST,
            "/api/owner/queues/mail/jobs",
            Some(&app.admin),
            Some(json!({"name": "c"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(
        app.get_json("/api/health/ready", None).await.0,
        StatusCode::OK
    );
    // This Redis keeps nothing on disk, so the session went with it: back to sign-in, and
    // signing in again works.
    let page = web.get("/queues/mail").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let mut web = support::Web::signed_in(&app, &app.admin).await;
    assert_eq!(web.get("/queues/mail").await.status, StatusCode::OK);
    app.stop().await;
    redis.kill().ok();
    redis.wait().ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realtime_client_that_does_not_read_is_disconnected() {
    let backend = Backend::memory().with_keys(support::unique_keys());
    let app = App::start(CONFIG, backend.clone(), Db::Sqlite).await;
    let addr = app.serve_socket().await;
    let url = format!("ws://{addr}/api/owner/realtime?token={}", app.viewer);
    let (mut slow, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    // Flood the hub: far more than the connection's buffer, far more than socket buffers hold.
    let events = Events::new(&backend);
    let channel = keel::pubsub::channels::terminal_events(backend.keys().prefix());
    let big = "x".repeat(16 * 1024);
    for i in 0..2000 {
        events
            .publish(
                &channel,
                &json!({"type": "job_status", "queue": "mail", "i": i, "pad": big}),
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(7)).await;
    // The server gave up on it: the stream ends (after whatever was already in flight).
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        let mut n = 0;
        while let Some(Ok(m)) = slow.next().await {
            if m.is_close() {
                break;
            }
            n += 1;
        }
        n
    })
    .await
    .expect("the server closed the slow connection");
    assert!(drained < 2000, "it did not get every event: {drained}");
    // A new client still gets its snapshot: the hub is fine.
    let (mut fresh, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), fresh.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.to_text().unwrap().contains("snapshot"));
    app.stop().await;
}

/// With Redis gone, nothing waits out the command timeout (5 s here): after the first call
/// finds it unreachable, every route answers within 200 ms — 503 where it needs Redis, 200
/// where it does not (the logs, runs and tokens live in the database) — and all comes back
/// once Redis does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_every_route_answers_at_once() {
    let (mut redis, port, app) = app_on_private_redis(Duration::from_secs(5)).await;
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
    let mut redis = start_redis(port);
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
