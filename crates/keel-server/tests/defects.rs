//! Input, protocol and socket defects found by real clients (schemathesis, curl, raw sockets):
//! each test failed on the code before its fix.

mod support;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use keel::Backend;
use serde_json::{json, Value};
use support::{App, Db};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONFIG: &str = r#"
[ratelimit.policies.owner-api]
limit = 100000
window_ms = 60000

[server]
request_timeout_ms = 1500
header_read_timeout_ms = 600

[queues.mail]
attempts = 1
"#;

async fn app(db: Db, redis: bool) -> App {
    let backend = if redis {
        support::redis().await
    } else {
        Backend::memory().with_keys(support::unique_keys())
    };
    App::start(CONFIG, backend, db).await
}

async fn audit_actions(app: &App) -> Vec<Value> {
    support::eventually("audit rows readable", || async {
        let (s, v) = app
            .get_json("/api/owner/logs/audit?limit=100", Some(&app.owner))
            .await;
        (s == StatusCode::OK).then(|| v["items"].as_array().unwrap().clone())
    })
    .await
}

/// NUL bytes in filters and path ids are refused with a 400 naming the field before any store
/// sees them, and a refused mutation still reaches the audit trail.
async fn nul_bytes_are_bad_input(db: Db) {
    let app = app(db, false).await;
    let cases = [
        ("/api/owner/runs?queue=a%00b", "queue"),
        ("/api/owner/runs?job_id=%00", "job_id"),
        ("/api/owner/logs/audit?action=x%00", "action"),
        ("/api/owner/logs/audit?resource=%00y", "resource"),
        ("/api/owner/logs/audit?actor=a%00", "actor"),
        ("/api/owner/logs/access?action=%00", "action"),
        ("/api/owner/logs/access?actor=%00", "actor"),
        ("/api/owner/queues/mail/jobs/a%00b", "path"),
        ("/api/owner/queues/mail/dlq?page=1%00", "page"),
    ];
    for (path, field) in cases {
        let (s, v) = app.get_json(path, Some(&app.owner)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {v}");
        assert_eq!(v["error"]["code"], "invalid-input", "{path}");
        assert_eq!(v["error"]["field"], field, "{path}");
    }
    for (method, path) in [
        (Method::DELETE, "/api/owner/tokens/a%00b"),
        (Method::DELETE, "/api/owner/queues/mail/jobs/x%00"),
        (Method::POST, "/api/owner/queues/mail/dlq/failed-%00/replay"),
        (Method::DELETE, "/api/owner/queues/mail/dlq/failed-1%00"),
    ] {
        let (s, v) = app.call(method.clone(), path, Some(&app.admin), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{method} {path}: {v}");
        assert_eq!(v["error"]["field"], "path");
    }
    // A NUL inside a JSON body is stored as data, and its audit entry is still written.
    let (s, v) = app
        .call(
            Method::POST,
            "/api/owner/queues/mail/jobs",
            Some(&app.admin),
            Some(json!({"name": "welcome", "data": {"note": "a\u{0}b"}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let rows = audit_actions(&app).await;
    let refused: Vec<_> = rows
        .iter()
        .filter(|r| r["action"] == "owner.request.invalid")
        .collect();
    assert_eq!(
        refused.len(),
        4,
        "every refused mutation is audited: {rows:?}"
    );
    assert!(refused.iter().all(|r| r["status"] == 400));
    assert!(refused
        .iter()
        .any(|r| r["resource"] == "DELETE /api/owner/tokens/a%00b"));
    assert!(rows.iter().any(|r| r["action"] == "owner.job.enqueue"
        && r["status"] == 201
        && r["payload"].to_string().contains("a\u{FFFD}b")));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_bytes_are_bad_input_on_sqlite() {
    nul_bytes_are_bad_input(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_bytes_are_bad_input_on_postgres() {
    nul_bytes_are_bad_input(Db::Postgres).await;
}

/// `dlq-*` queues are Keel's: enqueues there are refused, and a foreign job there (written by
/// another client) neither breaks the listing nor the replay-all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_queues_refuse_enqueues_and_list_foreign_jobs() {
    let app = app(Db::Sqlite, true).await;
    // What another client could write there anyway.
    app.state()
        .backend
        .raw()
        .add(
            "dlq-mail",
            keel::NewJob {
                name: "x".into(),
                data: json!({"not": "a dead letter"}),
                opts: keel::JobOptions {
                    job_id: Some("failed-999".into()),
                    ..Default::default()
                },
            },
        )
        .await
        .unwrap();
    for body in [
        json!({"name": "x", "data": {}, "opts": {"jobId": "failed-999"}}),
        json!([{"name": "x", "data": {}}]),
    ] {
        let (s, v) = app
            .call(
                Method::POST,
                "/api/owner/queues/dlq-mail/jobs",
                Some(&app.admin),
                Some(body),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error"]["field"], "queue");
    }
    let (s, v) = app
        .get_json("/api/owner/queues/mail/dlq", Some(&app.viewer))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["entries"], json!([]));
    assert_eq!(v["unreadable"], json!(["failed-999"]));
    let (s, v) = app
        .call(
            Method::POST,
            "/api/owner/queues/mail/dlq/replay",
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!((s, &v["replayed"]), (StatusCode::OK, &json!(0)), "{v}");
    let (s, v) = app
        .call(
            Method::POST,
            "/api/owner/queues/mail/dlq/failed-999/replay",
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, _) = app
        .call(
            Method::DELETE,
            "/api/owner/queues/mail/dlq/failed-999",
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    app.stop().await;
}

/// Heads over the limits answer 431 in the error shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_answer_431_in_the_error_shape() {
    let app = app(Db::Sqlite, false).await;
    let mut many = Request::builder().uri("/api/health");
    for i in 0..150 {
        many = many.header(format!("x-h{i}"), "v");
    }
    let big = Request::builder()
        .uri("/api/health")
        .header("x-big", "v".repeat(40 * 1024));
    for req in [many, big] {
        let (s, h, body) = app.send(req.body(Body::empty()).unwrap()).await;
        assert_eq!(s, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(h["content-type"], "application/json");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "headers-too-large");
    }
    app.stop().await;
}

/// Reads what the server sends until it closes the connection; returns it and when it closed.
async fn until_closed(stream: &mut tokio::net::TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server kept the connection open for {limit:?}"),
        }
    }
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

/// Slowloris: a client that sends nothing, trickles its headers, or idles after a request is
/// disconnected after `header_read_timeout_ms`; a body that never arrives ends in a 408 in
/// the error shape after `request_timeout_ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_clients_are_disconnected() {
    let app = app(Db::Sqlite, false).await;
    let addr = app.serve_socket().await;

    // Sends nothing.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (_, after) = until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(
        after < Duration::from_secs(3),
        "silent client held {after:?}"
    );

    // Trickles a header byte every 100 ms: closed although it never stops sending.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut closed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if slow.write_all(b"X").await.is_err() {
            closed = true;
            break;
        }
        let mut probe = [0u8; 64];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(1), slow.read(&mut probe)).await
        {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "a trickling client was served for {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    // Idle keep-alive after a request.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /api/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (text, after) = until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        after < Duration::from_secs(3),
        "idle connection held {after:?}"
    );

    // A body that never comes: 408 in the error shape.
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    let token = app.admin.clone();
    stalled
        .write_all(
            format!(
                "POST /api/owner/queues/mail/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let (text, after) = until_closed(&mut stalled, Duration::from_secs(6)).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"code\":\"request-timeout\""), "{text}");
    assert!(after < Duration::from_secs(5));
    app.stop().await;
}

/// A bulk enqueue that the backend refuses midway (a private Redis at its `maxmemory`) answers
/// what was added and what was not, by index and id, never a bare 500; the queue's stats
/// reflect the added jobs at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_enqueue_failing_midway_says_what_was_added() {
    let port = support::free_port();
    let mut redis = support::start_redis(port, &["--maxmemory-policy", "noeviction"]);
    let backend = Backend::redis(keel::backend::RedisSettings {
        url: format!("redis://127.0.0.1:{port}"),
        prefix: "kb".into(),
        command_timeout: Duration::from_secs(2),
        sharded_pubsub: false,
    })
    .await
    .unwrap()
    .with_keys(support::unique_keys());
    let app = App::start(CONFIG, backend, Db::Sqlite).await;
    // Warm the stats cache, so a stale count would show.
    let (_, before) = app
        .get_json("/api/owner/queues/mail/stats", Some(&app.viewer))
        .await;
    assert_eq!(before["waiting"], 0);
    // Room for a few hundred of the thousand jobs.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8(out.stdout).unwrap()
    };
    let used: u64 = cli(&["info", "memory"])
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    cli(&["config", "set", "maxmemory", &(used + 400_000).to_string()]);
    let jobs: Vec<Value> = (0..1000)
        .map(|i| json!({"name": "big", "data": {"i": i, "pad": "x".repeat(900)}}))
        .collect();
    let (s, v) = app
        .call(
            Method::POST,
            "/api/owner/queues/mail/jobs",
            Some(&app.admin),
            Some(Value::Array(jobs)),
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"]["code"], "backend-unavailable");
    let added = v["added"].as_array().unwrap();
    let not_added = v["not_added"].as_array().unwrap();
    assert!(!added.is_empty() && !not_added.is_empty(), "{v}");
    assert_eq!(added.len() + not_added.len(), 1000);
    let mut indexes: Vec<u64> = added
        .iter()
        .chain(not_added)
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    indexes.sort();
    assert_eq!(indexes, (0..1000).collect::<Vec<_>>(), "each index once");
    assert!(not_added[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("OOM"));
    // Every id said to be added exists; the count is fresh.
    for a in added.iter().take(20) {
        let id = a["id"].as_str().unwrap();
        let (s, _) = app
            .get_json(
                &format!("/api/owner/queues/mail/jobs/{id}"),
                Some(&app.viewer),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{id}");
    }
    let (_, after) = app
        .get_json("/api/owner/queues/mail/stats", Some(&app.viewer))
        .await;
    assert_eq!(after["waiting"].as_u64().unwrap() as usize, added.len());
    app.stop().await;
    redis.kill().unwrap();
    redis.wait().unwrap();
}

/// A revocation made elsewhere (another instance, `keel token revoke`) applies at once here:
/// the cached token is refused and its realtime socket is closed within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_loses_its_socket_and_cache_at_once() {
    use futures::StreamExt;
    let app = app(Db::Sqlite, true).await;
    let addr = app.serve_socket().await;
    let (s, _) = app.get_json("/api/owner/queues", Some(&app.viewer)).await;
    assert_eq!(s, StatusCode::OK, "the token is now cached");
    let url = format!("ws://{addr}/api/owner/realtime?token={}", app.viewer);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let first = ws.next().await.unwrap().unwrap();
    assert!(first.to_text().unwrap().contains("snapshot"));
    let id = app
        .state()
        .store
        .authenticate(&app.viewer)
        .await
        .unwrap()
        .unwrap()
        .id;
    // What `keel token revoke` does: the store, then the announcement.
    assert!(app
        .state()
        .store
        .revoke_token(&keel_records::Scope::All, &id)
        .await
        .unwrap());
    let revoked_at = Instant::now();
    keel_server::realtime::announce_revocation(&app.state().backend, &id)
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(tokio_tungstenite::tungstenite::Message::Close(frame)) => return frame,
                Ok(other) => assert!(
                    !other.to_text().unwrap_or("").contains("token_revoked"),
                    "revocations are not shown to clients"
                ),
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the socket is closed within a second of the revocation");
    assert_eq!(closed.map(|f| u16::from(f.code)), Some(1008));
    support::eventually("the cached token is refused", || async {
        let (s, _) = app.get_json("/api/owner/queues", Some(&app.viewer)).await;
        (s == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    assert!(revoked_at.elapsed() < Duration::from_secs(2));
    app.stop().await;
}

/// The seeds' names where Keel had its own: `status` for `state`, `actorId` for `actor`,
/// `DELETE …/dlq/:id/remove`, and realtime events on `<prefix>:terminal:events`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_names_are_accepted() {
    use futures::StreamExt;
    let app = app(Db::Sqlite, false).await;
    let backend = app.state().backend.clone();
    let channel = keel::pubsub::channels::terminal_events(backend.keys().prefix());
    let mut events = keel::Events::new(&backend)
        .subscribe(&[&channel], &[])
        .await
        .unwrap();
    let (s, v) = app
        .call(
            Method::POST,
            "/api/owner/queues/mail/jobs",
            Some(&app.admin),
            Some(json!({"name": "welcome"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["jobs"][0]["id"].as_str().unwrap().to_string();
    let stats = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let e = events.next().await.unwrap();
            if e.data["type"] == "queue_stats" {
                return e.data;
            }
        }
    })
    .await
    .expect("queue_stats on the terminal events channel");
    assert_eq!(stats["queue"], "mail");
    assert!(stats.is_object(), "one event per message: {stats}");

    let (s, v) = app
        .get_json(
            "/api/owner/queues/mail/jobs?status=waiting",
            Some(&app.viewer),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["jobs"][0]["id"], id.as_str());
    let actor = audit_actions(&app).await[0]["actor"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, v) = app
        .get_json(
            &format!(
                "/api/owner/logs/audit?actorId={}",
                support::urlencode(&actor)
            ),
            Some(&app.owner),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["actor"] == actor.as_str()));
    assert!(!v["items"].as_array().unwrap().is_empty());

    let q = keel::Queue::new(&backend, "mail").unwrap();
    let job = q.get_job(&id).await.unwrap().unwrap();
    let entry = q.dlq().record(&job, "boom", vec![]).await.unwrap();
    let (s, v) = app
        .call(
            Method::DELETE,
            &format!("/api/owner/queues/mail/dlq/{}/remove", entry.id),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(q.dlq().count().await.unwrap(), 0);
    app.stop().await;
}

/// A job recovered after its worker died is counted once: a `stalled` run in the records, the
/// `keel_jobs_stalled` metric, and the job is retried rather than failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_job_has_a_stalled_run_and_metric() {
    let hook = support::webhook().await;
    let config = format!(
        "[ratelimit.policies.owner-api]\nlimit = 100000\nwindow_ms = 60000\n\n[queues.mail]\nattempts = 2\nhandler = {{ kind = \"http\", url = \"{hook}\" }}\n"
    );
    let (backend, prefix) = support::redis_with_prefix().await;
    // The job as BullMQ's stalled check leaves it: its worker died once (stc = 1), and it is
    // back in wait.
    let q = keel::Queue::new(&backend, "mail").unwrap();
    let job = q
        .add("welcome", json!({"to": "a"}), Default::default())
        .await
        .unwrap();
    let out = std::process::Command::new("redis-cli")
        .args(["hset", &format!("{prefix}:mail:{}", job.id), "stc", "1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let app = App::start_with(&config, backend, Db::Sqlite, true).await;
    support::eventually("completed", || async {
        (q.job_state(&job.id).await.unwrap() == Some(keel::JobState::Completed)).then_some(())
    })
    .await;
    let runs = support::eventually("two runs", || async {
        let (_, v) = app
            .get_json(
                &format!("/api/owner/runs?job_id={}", job.id),
                Some(&app.viewer),
            )
            .await;
        (v["total"] == 2).then(|| v["items"].as_array().unwrap().clone())
    })
    .await;
    let statuses: Vec<&str> = runs.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert!(
        statuses.contains(&"stalled") && statuses.contains(&"completed"),
        "{statuses:?}"
    );
    let (s, v) = app
        .get_json(
            &format!("/api/owner/runs?status=stalled&job_id={}", job.id),
            Some(&app.viewer),
        )
        .await;
    assert_eq!((s, &v["total"]), (StatusCode::OK, &json!(1)), "{v}");
    let (_, _, metrics) = app.raw_text("/metrics").await;
    assert!(
        metrics.contains("keel_jobs_stalled_total{queue=\"mail\"} 1"),
        "{metrics}"
    );
    app.stop().await;
}
