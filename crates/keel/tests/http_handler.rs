//! The `http` handler against a local receiver, on both backends: 2xx (JSON and text), 4xx →
//! failed without retry and dead-lettered, 5xx retried, timeout, Retry-After respected,
//! signature verified by the receiver, headers present.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use keel::backend::RedisSettings;
use keel::handlers::http::{signature, HttpHandler};
use keel::{Backend, JobOptions, JobState, Queue};
use serde_json::{json, Value};

const SECRET: &str = "s3cret";

#[derive(Clone, Debug)]
struct Seen {
    route: String,
    at: Instant,
    headers: HeaderMap,
    body: Value,
    signature_ok: bool,
}

#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn hook(
    State(r): State<Receiver>,
    Path(route): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let signature_ok = headers
        .get("x-keel-signature")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == signature(SECRET, &body));
    let calls = {
        let mut seen = r.seen.lock().unwrap();
        seen.push(Seen {
            route: route.clone(),
            at: Instant::now(),
            headers: headers.clone(),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            signature_ok,
        });
        seen.iter().filter(|s| s.route == route).count()
    };
    match route.as_str() {
        "json" => (
            StatusCode::OK,
            [("content-type", "application/json")],
            r#"{"ok":true}"#,
        )
            .into_response(),
        "text" => (StatusCode::OK, "plain words").into_response(),
        "bad" => (StatusCode::UNPROCESSABLE_ENTITY, "missing field").into_response(),
        "flaky" if calls == 1 => (StatusCode::SERVICE_UNAVAILABLE, "try later").into_response(),
        "flaky" => (StatusCode::OK, "recovered").into_response(),
        "limited" if calls == 1 => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            "slow down",
        )
            .into_response(),
        "limited" => (StatusCode::OK, "thanks").into_response(),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            (StatusCode::OK, "too late").into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn receiver() -> (String, Receiver) {
    let r = Receiver::default();
    let app = Router::new()
        .route("/{route}", post(hook))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), r)
}

async fn wait_state(q: &Queue, id: &str, state: JobState) -> keel::Job {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if q.job_state(id).await.unwrap() == Some(state) {
            return q.get_job(id).await.unwrap().unwrap();
        }
        assert!(Instant::now() < until, "job {id} never reached {state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run_route(
    b: &Backend,
    base: &str,
    route: &str,
    opts: JobOptions,
    timeout_ms: u64,
) -> (Queue, keel::Job, keel::Worker) {
    let q = Queue::new(
        b,
        &format!(
            "http-{route}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ),
    )
    .unwrap();
    let handler = HttpHandler::new(
        &format!("{base}/{route}"),
        Duration::from_millis(timeout_ms),
        Some(SECRET.into()),
    )
    .unwrap();
    let job = q.add("hook", json!({"order": 7}), opts).await.unwrap();
    let w = q
        .worker()
        .fallback(handler.into_processor(q.name()))
        .start()
        .await
        .unwrap();
    (q, job, w)
}

async fn scenario(b: Backend) {
    let (base, r) = receiver().await;
    let fixed = |attempts| JobOptions {
        attempts: Some(attempts),
        backoff: Some(keel::Backoff::fixed(50)),
        ..Default::default()
    };

    // 2xx with JSON: completes with the parsed body; body, headers and signature as documented.
    let (q, job, w) = run_route(&b, &base, "json", fixed(1), 2000).await;
    let done = wait_state(&q, &job.id, JobState::Completed).await;
    w.close(Duration::from_secs(5)).await.unwrap();
    assert_eq!(done.returnvalue, Some(json!({"ok": true})));
    let s = r
        .seen
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.route == "json")
        .cloned()
        .unwrap();
    assert!(s.signature_ok, "receiver verified X-Keel-Signature");
    assert_eq!(s.headers["x-keel-job-id"], job.id.as_str());
    assert_eq!(s.headers["x-keel-queue"], q.name());
    assert_eq!(s.headers["x-keel-attempt"], "1");
    assert_eq!(s.body["id"], json!(job.id));
    assert_eq!(s.body["queue"], json!(q.name()));
    assert_eq!(s.body["name"], json!("hook"));
    assert_eq!(s.body["data"], json!({"order": 7}));
    assert_eq!(s.body["attempt"], json!(1));
    assert!(s.body["timestamp"].as_u64().unwrap() > 0);

    // 2xx with text: the string.
    let (q, job, w) = run_route(&b, &base, "text", fixed(1), 2000).await;
    assert_eq!(
        wait_state(&q, &job.id, JobState::Completed)
            .await
            .returnvalue,
        Some(json!("plain words"))
    );
    w.close(Duration::from_secs(5)).await.unwrap();

    // 4xx: unrecoverable, one call, dead-lettered.
    let (q, job, w) = run_route(&b, &base, "bad", fixed(5), 2000).await;
    let failed = wait_state(&q, &job.id, JobState::Failed).await;
    assert_eq!(failed.attempts_made, 1);
    assert!(failed.failed_reason.unwrap().contains("422"));
    let dlq = q.dlq();
    let until = Instant::now() + Duration::from_secs(10);
    while dlq.count().await.unwrap() == 0 {
        assert!(Instant::now() < until, "4xx job never reached the DLQ");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.close(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        r.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.route == "bad")
            .count(),
        1
    );

    // 5xx: retried, then completes; the attempt header counts.
    let (q, job, w) = run_route(&b, &base, "flaky", fixed(3), 2000).await;
    let done = wait_state(&q, &job.id, JobState::Completed).await;
    w.close(Duration::from_secs(5)).await.unwrap();
    assert_eq!(done.returnvalue, Some(json!("recovered")));
    let attempts: Vec<_> = r
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.route == "flaky")
        .map(|s| s.headers["x-keel-attempt"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(attempts, vec!["1", "2"]);

    // Timeout: retryable failure with a timeout message.
    let (q, job, w) = run_route(&b, &base, "slow", fixed(1), 200).await;
    let failed = wait_state(&q, &job.id, JobState::Failed).await;
    w.close(Duration::from_secs(5)).await.unwrap();
    assert!(failed
        .failed_reason
        .unwrap()
        .contains("timed out after 200 ms"));

    // 429 with Retry-After: 1 → the retry comes no sooner than a second later (backoff is 50 ms).
    let (q, job, w) = run_route(&b, &base, "limited", fixed(3), 2000).await;
    wait_state(&q, &job.id, JobState::Completed).await;
    w.close(Duration::from_secs(5)).await.unwrap();
    let times: Vec<Instant> = r
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.route == "limited")
        .map(|s| s.at)
        .collect();
    assert_eq!(times.len(), 2);
    assert!(
        times[1] - times[0] >= Duration::from_millis(950),
        "retried after {:?}",
        times[1] - times[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_handler_on_memory() {
    scenario(Backend::memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_handler_on_redis() {
    let b = Backend::redis(RedisSettings {
        url: std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        prefix: format!("kh-{}", uuid::Uuid::new_v4().simple()),
        command_timeout: Duration::from_secs(5),
        sharded_pubsub: false,
    })
    .await
    .expect("Redis must be running");
    scenario(b).await;
}
