//! The server with Redis going away and coming back (a private `redis-server` on a spare
//! port, never the shared one), and a realtime client too slow to keep up.

mod support;

use std::process::Child;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use futures::StreamExt;
use keel::{Backend, Events};
use serde_json::json;
use support::{App, Db};

const CONFIG: &str = "[queues.mail]\nattempts = 1\n";

fn start_redis(port: u16) -> Child {
    support::start_redis(port, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_gives_503_fails_open_and_recovers() {
    let (mut redis, port, app) =
        support::app_on_private_redis(CONFIG, Duration::from_secs(1)).await;
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
