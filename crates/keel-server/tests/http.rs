//! The owner API through the whole app (`oneshot`), and the realtime socket on a real one.
//! Most tests use the memory backend with SQLite; the main flow also runs on Redis with
//! PostgreSQL.

mod support;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use keel::{handler_fn, Backend, JobError, Queue};
use keel_server::api::openapi::ROUTES;
use serde_json::{json, Value};
use support::{App, Db};

/// A bad-input case: body, path, status, code, field.
type Case<'a> = (&'a str, &'a str, StatusCode, &'a str, Option<&'a str>);

const CONFIG: &str = r#"
[ratelimit.policies.owner-api]
limit = 100000
window_ms = 60000

[queues.mail]
attempts = 1

[queues.acme-reports]
tenant = "acme"

[queues.globex-reports]
tenant = "globex"
"#;

async fn memory_app() -> App {
    App::start(
        CONFIG,
        Backend::memory().with_keys(support::unique_keys()),
        Db::Sqlite,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_listed_and_answers() {
    let app = memory_app().await;
    let spec = app.get_json("/api/openapi.json", None).await.1;
    assert_eq!(spec["openapi"], "3.0.3");
    let paths = spec["paths"].as_object().unwrap();
    // Structurally valid OpenAPI 3: every templated segment is a required path parameter,
    // every operation answers something in 2xx and references only defined components.
    let schemes = spec["components"]["securitySchemes"].as_object().unwrap();
    for (path, item) in paths {
        assert!(path.starts_with('/'), "{path}");
        for (method, op) in item.as_object().unwrap() {
            assert!(
                ["get", "post", "put", "patch", "delete"].contains(&method.as_str()),
                "{method} {path}"
            );
            let params = op["parameters"].as_array().unwrap();
            for seg in path.split('/').filter(|s| s.starts_with('{')) {
                let name = &seg[1..seg.len() - 1];
                assert!(
                    params
                        .iter()
                        .any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true),
                    "{method} {path}: path parameter {name}"
                );
            }
            assert!(params
                .iter()
                .all(|p| ["path", "query"].contains(&p["in"].as_str().unwrap())));
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|k| k.starts_with('2')),
                "{method} {path}: no 2xx"
            );
            for r in responses.values() {
                if let Some(reference) = r.get("$ref").and_then(|v| v.as_str()) {
                    let name = reference.rsplit('/').next().unwrap();
                    assert!(
                        spec["components"]["responses"].get(name).is_some(),
                        "{reference}"
                    );
                }
            }
            if let Some(sec) = op.get("security") {
                for req in sec.as_array().unwrap() {
                    for k in req.as_object().unwrap().keys() {
                        assert!(schemes.contains_key(k), "{k}");
                    }
                }
            }
            assert!(op["operationId"].is_string());
        }
    }
    assert_eq!(
        paths
            .values()
            .map(|i| i.as_object().unwrap().len())
            .sum::<usize>(),
        ROUTES.len(),
        "one operation per route"
    );
    for r in ROUTES {
        assert!(
            paths[r.path].get(r.method).is_some(),
            "{} {} missing from the document",
            r.method,
            r.path
        );
        let path = r.path.replace("{queue}", "mail").replace("{id}", "1");
        let method = Method::from_bytes(r.method.to_uppercase().as_bytes()).unwrap();
        let body =
            (method == Method::POST && r.path.ends_with("/jobs")).then(|| json!({"name": "x"}));
        let body = body.or_else(|| {
            (r.path == "/api/owner/tokens" && method == Method::POST)
                .then(|| json!({"name": "t", "role": "viewer"}))
        });
        let (status, v) = app
            .call(method.clone(), &path, Some(&app.owner), body)
            .await;
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(
            !msg.starts_with("no route"),
            "{method} {path}: {status} {v}"
        );
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            status.as_u16() < 500 || path.contains("realtime"),
            "{method} {path}: {status} {v}"
        );
    }
    // And nothing else answers: an unknown route is a JSON 404.
    let (status, v) = app
        .call(Method::GET, "/api/owner/nope", Some(&app.owner), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "not-found");
    let (status, v) = app
        .call(Method::PUT, "/api/owner/queues", Some(&app.owner), None)
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(v["error"]["code"], "method-not-allowed");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_tenants_decide_who_sees_and_does_what() {
    let app = memory_app().await;
    // No token, a bad token.
    let (s, v) = app.call(Method::GET, "/api/owner/queues", None, None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (s, _) = app
        .call(Method::GET, "/api/owner/queues", Some("keel_nope"), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let mutations = [
        (
            Method::POST,
            "/api/owner/queues/mail/jobs",
            Some(json!({"name": "x"})),
        ),
        (Method::POST, "/api/owner/queues/mail/pause", None),
        (Method::POST, "/api/owner/queues/mail/resume", None),
        (Method::POST, "/api/owner/queues/mail/dlq/replay", None),
        (Method::DELETE, "/api/owner/queues/mail/jobs/1", None),
    ];
    for (m, p, body) in &mutations {
        let (s, v) = app
            .call(m.clone(), p, Some(&app.viewer), body.clone())
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "viewer {m} {p}: {v}");
        assert_eq!(v["error"]["code"], "forbidden");
    }
    let (s, _) = app
        .call(
            Method::POST,
            "/api/owner/queues/mail/pause",
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "admin may pause");
    for (who, token, expect) in [
        ("viewer", &app.viewer, StatusCode::FORBIDDEN),
        ("admin", &app.admin, StatusCode::OK),
        ("owner", &app.owner, StatusCode::OK),
    ] {
        let (s, _) = app
            .call(Method::GET, "/api/owner/logs/audit", Some(token), None)
            .await;
        assert_eq!(s, expect, "{who} reads the audit log");
    }
    let (s, _) = app
        .call(Method::GET, "/api/owner/tokens", Some(&app.admin), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "tokens are the owner's");
    let (s, v) = app
        .call(Method::GET, "/api/owner/tokens", Some(&app.owner), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["tokens"].as_array().unwrap().len() >= 4);
    assert!(
        !v.to_string().contains(&app.owner),
        "secrets are never listed"
    );
    // Tenants: acme sees its queue only; another tenant's queue does not exist for it.
    let (_, v) = app.get_json("/api/owner/queues", Some(&app.acme)).await;
    let names: Vec<&str> = v["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["acme-reports"]);
    for p in [
        "/api/owner/queues/globex-reports/stats",
        "/api/owner/queues/mail/jobs",
    ] {
        let (s, _) = app.call(Method::GET, p, Some(&app.acme), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{p}");
    }
    let (s, _) = app
        .call(
            Method::POST,
            "/api/owner/queues/globex-reports/jobs",
            Some(&app.acme),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .call(
            Method::POST,
            "/api/owner/queues/acme-reports/jobs",
            Some(&app.acme),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "acme's admin token works on acme's queue"
    );
    // acme's audit view holds only acme's entries.
    let (_, v) = app.get_json("/api/owner/logs/audit", Some(&app.acme)).await;
    let items = v["items"].as_array().unwrap();
    assert_eq!(
        items.len(),
        2,
        "acme's two calls, not the admin's pause: {v}"
    );
    let acme_tenant = items[0]["tenant_id"].clone();
    assert!(acme_tenant.is_string());
    assert!(items.iter().all(|e| e["tenant_id"] == acme_tenant), "{v}");
    // Revoked tokens stop working.
    let (_, created) = app
        .call(
            Method::POST,
            "/api/owner/tokens",
            Some(&app.owner),
            Some(json!({"name": "tmp", "role": "viewer", "password": "p"})),
        )
        .await;
    assert_eq!(
        created["error"]["field"], "password",
        "unknown fields are refused"
    );
    let (s, created) = app
        .call(
            Method::POST,
            "/api/owner/tokens",
            Some(&app.owner),
            Some(json!({"name": "tmp", "role": "viewer"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let secret = created["secret"].as_str().unwrap().to_string();
    let id = created["token"]["id"].as_str().unwrap();
    assert_eq!(
        app.call(Method::GET, "/api/owner/queues", Some(&secret), None)
            .await
            .0,
        StatusCode::OK
    );
    let (s, _) = app
        .call(
            Method::DELETE,
            &format!("/api/owner/tokens/{id}"),
            Some(&app.owner),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        app.call(Method::GET, "/api/owner/queues", Some(&secret), None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    app.stop().await;
}

async fn flow(app: &App) {
    let q = Queue::new(&app.state().backend, "mail").unwrap();
    // A worker that fails jobs asking for it; attempts = 1, so they are dead-lettered.
    let worker = q
        .worker()
        .handler(
            "send",
            handler_fn(|ctx| async move {
                if ctx.job.data["fail"] == json!(true) {
                    Err(JobError::retry("smtp refused"))
                } else {
                    Ok(json!({"sent": true}))
                }
            }),
        )
        .start()
        .await
        .unwrap();
    let (s, v) = app
        .call(
            Method::POST,
            "/api/owner/queues/mail/jobs",
            Some(&app.admin),
            Some(json!([
                {"name": "send", "data": {"to": "a@example.com", "apiKey": "sk-live-123"}},
                {"name": "send", "data": {"fail": true}, "opts": {"jobId": "will-fail"}}
            ])),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let ok_id = v["jobs"][0]["id"].as_str().unwrap().to_string();
    support::eventually("the failing job dead-lettered", || async {
        let (_, v) = app
            .get_json("/api/owner/queues/mail/dlq", Some(&app.viewer))
            .await;
        (v["total"] == 1).then_some(())
    })
    .await;
    let (_, job) = app
        .get_json("/api/owner/queues/mail/jobs/will-fail", Some(&app.viewer))
        .await;
    assert_eq!(job["state"], "failed");
    assert_eq!(job["job"]["failedReason"], "smtp refused");
    let (_, dlq) = app
        .get_json("/api/owner/queues/mail/dlq", Some(&app.viewer))
        .await;
    let entry = &dlq["entries"][0];
    assert_eq!(entry["lastError"], "smtp refused");
    let entry_id = entry["id"].as_str().unwrap().to_string();
    // Dry run, then replay all.
    let (s, v) = app
        .call(
            Method::POST,
            "/api/owner/queues/mail/dlq/replay?dry_run=true",
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!((s, v["would_replay"].as_u64()), (StatusCode::OK, Some(1)));
    let (_, dlq2) = app
        .get_json("/api/owner/queues/mail/dlq", Some(&app.viewer))
        .await;
    assert_eq!(dlq2["total"], 1, "a dry run changes nothing");
    let (s, v) = app
        .call(
            Method::POST,
            &format!("/api/owner/queues/mail/dlq/{entry_id}/replay"),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Replayed with fresh attempts it fails again and is dead-lettered again.
    support::eventually("dead-lettered again", || async {
        let (_, v) = app
            .get_json("/api/owner/queues/mail/dlq", Some(&app.viewer))
            .await;
        (v["total"] == 1).then_some(())
    })
    .await;
    // Retry the failed job itself: it leaves the failed state.
    let (s, v) = app
        .call(
            Method::POST,
            "/api/owner/queues/mail/jobs/will-fail/retry",
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Retrying a completed job is a conflict; an unknown one is 404.
    support::eventually("the good job completed", || async {
        let (_, v) = app
            .get_json(
                &format!("/api/owner/queues/mail/jobs/{ok_id}"),
                Some(&app.viewer),
            )
            .await;
        (v["state"] == "completed").then_some(())
    })
    .await;
    let (s, v) = app
        .call(
            Method::POST,
            &format!("/api/owner/queues/mail/jobs/{ok_id}/retry"),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict")),
        "{v}"
    );
    let (s, _) = app
        .call(
            Method::POST,
            "/api/owner/queues/mail/jobs/nope/retry",
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Remove the dead letter, then the job.
    support::eventually("dead-lettered after the retry", || async {
        let (_, v) = app
            .get_json("/api/owner/queues/mail/dlq", Some(&app.viewer))
            .await;
        (v["total"] == 1).then_some(())
    })
    .await;
    let (s, _) = app
        .call(
            Method::DELETE,
            &format!("/api/owner/queues/mail/dlq/{entry_id}"),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .call(
            Method::DELETE,
            &format!("/api/owner/queues/mail/dlq/{entry_id}"),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .call(
            Method::DELETE,
            &format!("/api/owner/queues/mail/jobs/{ok_id}"),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // Search and listing.
    app.call(
        Method::POST,
        "/api/owner/queues/mail/pause",
        Some(&app.admin),
        None,
    )
    .await;
    for i in 0..30 {
        let name = if i % 3 == 0 { "digest" } else { "send" };
        app.call(
            Method::POST,
            "/api/owner/queues/mail/jobs",
            Some(&app.admin),
            Some(json!({"name": name, "data": {"n": i, "to": format!("user{i}@example.com")}})),
        )
        .await;
    }
    let (_, v) = app
        .get_json(
            "/api/owner/queues/mail/jobs?state=waiting&limit=5",
            Some(&app.viewer),
        )
        .await;
    assert_eq!(v["jobs"].as_array().unwrap().len(), 5);
    assert_eq!(v["total"], 30);
    assert_eq!(v["jobs"][0]["data"]["n"], 29, "newest first");
    let cursor = v["next_cursor"].as_str().unwrap().to_string();
    let (_, v2) = app
        .get_json(
            &format!("/api/owner/queues/mail/jobs?state=waiting&limit=5&cursor={cursor}"),
            Some(&app.viewer),
        )
        .await;
    assert_eq!(v2["jobs"][0]["data"]["n"], 24);
    let (_, v) = app
        .get_json(
            "/api/owner/queues/mail/jobs?state=waiting&search=user1",
            Some(&app.viewer),
        )
        .await;
    let found: Vec<i64> = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["data"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(found, vec![19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 1]);
    let (_, v) = app
        .get_json(
            "/api/owner/queues/mail/jobs?state=waiting&name=digest&limit=3",
            Some(&app.viewer),
        )
        .await;
    assert_eq!(v["jobs"].as_array().unwrap().len(), 3);
    assert!(v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|j| j["name"] == "digest"));
    let (_, v) = app
        .get_json(
            &format!(
                "/api/owner/queues/mail/jobs?state=waiting&name=digest&limit=3&cursor={}",
                v["next_cursor"].as_str().unwrap()
            ),
            Some(&app.viewer),
        )
        .await;
    assert_eq!(v["jobs"][0]["data"]["n"], 18);
    // Audit: every mutation, with masked payloads; access: the reads.
    let (_, audit) = app
        .get_json("/api/owner/logs/audit?limit=200", Some(&app.admin))
        .await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "owner.job.enqueue",
        "owner.dlq.replay_all",
        "owner.dlq.replay",
        "owner.job.retry",
        "owner.dlq.remove",
        "owner.job.remove",
        "owner.queue.pause",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    assert!(
        !audit.to_string().contains("sk-live-123"),
        "secrets never reach the audit log"
    );
    assert!(audit.to_string().contains("\"apiKey\":\"***\""));
    let conflict = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "owner.job.retry" && e["status"] == 409);
    assert!(
        conflict.is_some(),
        "failed mutations are audited with their status"
    );
    let (_, filtered) = app
        .get_json(
            "/api/owner/logs/audit?action=owner.dlq.remove",
            Some(&app.admin),
        )
        .await;
    assert_eq!(filtered["total"], 2);
    let (_, access) = app
        .get_json(
            "/api/owner/logs/access?action=owner.read.queue_job",
            Some(&app.admin),
        )
        .await;
    let e = &access["items"][0];
    assert_eq!(e["action"], "owner.read.queue_job");
    assert_eq!(
        e["fields"],
        json!(["job", "log_count", "logs", "runs", "state"])
    );
    assert_eq!(e["ip"], "unknown");
    worker.close(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_fail_dead_letter_replay_retry_remove_on_memory_and_sqlite() {
    let app = memory_app().await;
    flow(&app).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_fail_dead_letter_replay_retry_remove_on_redis_and_postgres() {
    let app = App::start(CONFIG, support::redis().await, Db::Postgres).await;
    flow(&app).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_fail_dead_letter_replay_retry_remove_on_keels_engine() {
    let app = App::start(CONFIG, support::native().await, Db::Sqlite).await;
    flow(&app).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_are_cached_and_mutations_invalidate() {
    let app = memory_app().await;
    let (h1, v1) = app
        .get_with_headers("/api/owner/queues/mail/stats", &app.viewer)
        .await;
    assert_eq!(h1["x-keel-cache"], "miss");
    let (h2, v2) = app
        .get_with_headers("/api/owner/queues/mail/stats", &app.viewer)
        .await;
    assert_eq!(h2["x-keel-cache"], "hit");
    assert_eq!(v1, v2);
    app.call(
        Method::POST,
        "/api/owner/queues/mail/pause",
        Some(&app.admin),
        None,
    )
    .await;
    let (h3, v3) = app
        .get_with_headers("/api/owner/queues/mail/stats", &app.viewer)
        .await;
    assert_eq!(
        h3["x-keel-cache"], "miss",
        "the pause invalidated the stats"
    );
    assert_eq!(v3["paused"], true);
    app.call(
        Method::POST,
        "/api/owner/queues/mail/jobs",
        Some(&app.admin),
        Some(json!({"name": "x"})),
    )
    .await;
    let (_, list) = app.get_with_headers("/api/owner/queues", &app.viewer).await;
    let mail = list["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "mail")
        .unwrap()
        .clone();
    assert_eq!(
        mail["waiting"], 1,
        "a client never sees its own enqueue missing"
    );
    // The audit log shows the enqueue at once too.
    let (_, a1) = app
        .get_json("/api/owner/logs/audit", Some(&app.admin))
        .await;
    assert_eq!(a1["items"][0]["action"], "owner.job.enqueue");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_routes_are_rate_limited_per_ip_with_headers() {
    let config = CONFIG.replace("limit = 100000", "limit = 3");
    let app = App::start(
        &config,
        Backend::memory().with_keys(support::unique_keys()),
        Db::Sqlite,
    )
    .await;
    for left in [2, 1, 0] {
        let (h, _) = app.get_with_headers("/api/owner/queues", &app.viewer).await;
        assert_eq!(h["x-ratelimit-limit"], "3");
        assert_eq!(h["x-ratelimit-remaining"], left.to_string());
        assert!(h.contains_key("ratelimit-policy"));
    }
    let (status, headers, body) = app
        .raw(Method::GET, "/api/owner/queues", Some(&app.viewer), None)
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "rate-limited");
    let retry: u64 = headers["retry-after"].parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    // Health is not limited.
    assert_eq!(
        app.call(Method::GET, "/api/health/live", None, None)
            .await
            .0,
        StatusCode::OK
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let app = memory_app().await;
    let jobs = "/api/owner/queues/mail/jobs";
    let cases: Vec<Case> = vec![
        (
            "{not json",
            jobs,
            StatusCode::BAD_REQUEST,
            "malformed-json",
            None,
        ),
        (
            r#"{"name": 5}"#,
            jobs,
            StatusCode::BAD_REQUEST,
            "invalid-input",
            Some("name"),
        ),
        (
            r#"{"name": "x", "opts": {"delay": -1}}"#,
            jobs,
            StatusCode::BAD_REQUEST,
            "invalid-input",
            Some("opts.delay"),
        ),
        (
            r#"{"name": "x", "opts": {"attempts": 0}}"#,
            jobs,
            StatusCode::BAD_REQUEST,
            "invalid-input",
            Some("opts.attempts"),
        ),
        (
            r#"[{"name": "ok"}, {"name": ""}]"#,
            jobs,
            StatusCode::BAD_REQUEST,
            "invalid-input",
            Some("[1].name"),
        ),
        (
            r#"{"name": "x", "extra": 1}"#,
            jobs,
            StatusCode::BAD_REQUEST,
            "invalid-input",
            Some("extra"),
        ),
        (
            "[]",
            jobs,
            StatusCode::BAD_REQUEST,
            "invalid-input",
            Some("body"),
        ),
        (
            "42",
            jobs,
            StatusCode::BAD_REQUEST,
            "invalid-input",
            Some("body"),
        ),
        (
            r#"{"name": "x"}"#,
            "/api/owner/queues/a:b/jobs",
            StatusCode::BAD_REQUEST,
            "invalid-input",
            Some("queue"),
        ),
        (
            r#"{"name": "x"}"#,
            "/api/owner/queues/ghost/jobs",
            StatusCode::NOT_FOUND,
            "not-found",
            None,
        ),
    ];
    for (body, path, status, code, field) in cases {
        let (s, v) = app
            .raw_body(Method::POST, path, &app.admin, body, "application/json")
            .await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{body:?} → {v}"
        );
        if let Some(f) = field {
            assert_eq!(v["error"]["field"], f, "{body:?} → {v}");
        }
    }
    let (s, v) = app
        .raw_body(
            Method::POST,
            jobs,
            &app.admin,
            r#"{"name": "x"}"#,
            "text/plain",
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("unsupported-media-type")
        )
    );
    let big = format!(
        r#"{{"name": "x", "data": "{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let (s, v) = app
        .raw_body(Method::POST, jobs, &app.admin, &big, "application/json")
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload-too-large"))
    );
    for (path, field) in [
        ("/api/owner/queues/mail/jobs?state=sleeping", "state"),
        ("/api/owner/queues/mail/jobs?limit=0", "limit"),
        ("/api/owner/queues/mail/jobs?limit=ten", "limit"),
        ("/api/owner/queues/mail/jobs?page=0", "page"),
        ("/api/owner/queues/mail/jobs?cursor=abc", "cursor"),
        ("/api/owner/queues/mail/jobs?bogus=1", "bogus"),
        ("/api/owner/logs/audit?from=yesterday", "from"),
        ("/api/owner/runs?status=weird", "status"),
        ("/api/owner/runs/abc", "id"),
    ] {
        let (s, v) = app.call(Method::GET, path, Some(&app.admin), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {v}");
        assert_eq!(v["error"]["field"], field, "{path}: {v}");
    }
    let (s, _) = app
        .call(
            Method::GET,
            "/api/owner/queues/mail/jobs/nope",
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Nothing was added by any of it.
    let (_, stats) = app
        .get_json("/api/owner/queues/mail/stats", Some(&app.admin))
        .await;
    assert_eq!(stats["waiting"], 0, "{stats}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_and_health_reports_both_stores() {
    let app = memory_app().await;
    app.call(Method::GET, "/api/owner/queues", Some(&app.viewer), None)
        .await;
    let (status, headers, text) = app.raw_text("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].starts_with("application/openmetrics-text"));
    let mut samples = 0;
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            assert!(
                line.is_empty()
                    || line.starts_with("# HELP ")
                    || line.starts_with("# TYPE ")
                    || line == "# EOF",
                "{line}"
            );
            continue;
        }
        let (name_labels, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line {line}"));
        assert!(value.parse::<f64>().is_ok(), "{line}");
        let name = name_labels.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        assert!(name.starts_with("keel_"), "{line}");
        samples += 1;
    }
    assert!(samples > 5);
    for m in [
        "keel_queue_jobs{",
        "keel_http_requests_total{",
        "keel_run_records_dropped_total",
        "keel_queue_dlq_jobs{",
    ] {
        assert!(text.contains(m), "{m} missing:\n{text}");
    }
    assert!(text.trim_end().ends_with("# EOF"));
    let (s, v) = app.get_json("/api/health/ready", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["checks"]["database"]["pool"]["database"], "sqlite");
    let (s, v) = app
        .get_json("/api/admin/redis/metrics", Some(&app.admin))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["version"].as_str().unwrap().starts_with("keel-memory"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_sends_a_snapshot_then_stats_after_an_enqueue() {
    use futures::SinkExt;
    let app = memory_app().await;
    let addr = app.serve_socket().await;
    let url = format!("ws://{addr}/api/owner/realtime?token={}", app.viewer);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let snap = next(&mut ws).await;
    assert_eq!(snap["type"], "snapshot");
    let names: Vec<&str> = snap["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"mail"));
    app.call(
        Method::POST,
        "/api/owner/queues/mail/jobs",
        Some(&app.admin),
        Some(json!({"name": "x"})),
    )
    .await;
    loop {
        let m = next(&mut ws).await;
        if m["type"] == "queue_stats" && m["queue"] == "mail" {
            assert_eq!(m["stats"]["waiting"], 1);
            break;
        }
    }
    // A tenant's socket never sees other tenants' queues.
    let url = format!("ws://{addr}/api/owner/realtime?token={}", app.acme);
    let (mut acme, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let snap = next(&mut acme).await;
    assert_eq!(snap["queues"].as_array().unwrap().len(), 1);
    app.call(
        Method::POST,
        "/api/owner/queues/mail/pause",
        Some(&app.admin),
        None,
    )
    .await;
    app.call(
        Method::POST,
        "/api/owner/queues/acme-reports/pause",
        Some(&app.admin),
        None,
    )
    .await;
    let m = next(&mut acme).await;
    assert_eq!(m["queue"], "acme-reports", "{m}");
    // Without a token: refused.
    let bad = tokio_tungstenite::connect_async(format!("ws://{addr}/api/owner/realtime")).await;
    assert!(bad.is_err());
    ws.send(tokio_tungstenite::tungstenite::Message::Close(None))
        .await
        .ok();
    app.stop().await;
}

async fn next<S>(ws: &mut S) -> Value
where
    S: futures::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    support::ws_next_matching(ws, "a message", |_| true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_workers_record_runs_and_count_them() {
    let config = format!("{CONFIG}\n[queues.logs]\nattempts = 1\nhandler = {{ kind = \"log\" }}\n");
    let app = App::start_with(
        &config,
        Backend::memory().with_keys(support::unique_keys()),
        Db::Sqlite,
        true,
    )
    .await;
    let (s, v) = app
        .call(Method::POST, "/api/owner/queues/logs/jobs", Some(&app.admin), Some(json!([{"name": "a"}, {"name": "b"}, {"name": "c", "data": {"traceId": "trace-42"}}])))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Stats are cached for 10 s, but what the served workers change is invalidated within a
    // second: the read right after the enqueue does not hide the completions for 10 s.
    let first = app
        .get_json("/api/owner/queues/logs/stats", Some(&app.viewer))
        .await
        .1;
    let started = std::time::Instant::now();
    support::eventually("the completions in the cached stats", || async {
        let (_, v) = app
            .get_json("/api/owner/queues/logs/stats", Some(&app.viewer))
            .await;
        (v["completed"] == 3).then_some(())
    })
    .await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "stale for {:?} after {first}",
        started.elapsed()
    );
    let runs = support::eventually("three runs recorded", || async {
        let (_, v) = app
            .get_json("/api/owner/runs?queue=logs&limit=10", Some(&app.viewer))
            .await;
        (v["total"] == 3).then_some(v)
    })
    .await;
    let items = runs["items"].as_array().unwrap();
    assert!(items
        .iter()
        .all(|r| r["status"] == "completed" && r["attempt"] == 1));
    assert!(items
        .iter()
        .all(|r| r["worker"].as_str().unwrap().starts_with("keel-serve-")));
    let traced = items.iter().find(|r| r["name"] == "c").unwrap();
    assert_eq!(traced["trace_id"], "trace-42");
    let id = traced["id"].as_i64().unwrap();
    let (_, one) = app
        .get_json(&format!("/api/owner/runs/{id}"), Some(&app.viewer))
        .await;
    let kinds: Vec<&str> = one["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["started", "completed"]);
    let job_id = traced["job_id"].as_str().unwrap();
    let (_, job) = app
        .get_json(
            &format!("/api/owner/queues/logs/jobs/{job_id}"),
            Some(&app.viewer),
        )
        .await;
    assert_eq!(
        job["runs"].as_array().unwrap().len(),
        1,
        "the job shows its runs"
    );
    let (_, _, text) = app.raw_text("/metrics").await;
    assert!(
        text.contains("keel_jobs_completed_total{queue=\"logs\"} 3"),
        "{text}"
    );
    assert!(text.contains("keel_run_records_written_total 3"), "{text}");
    app.stop().await;
}

/// The `http` handler's runs are the seeds' PluginExecutionLog: the plugin (configured, or the
/// job's `pluginId`), status, duration, the failure's stack from the plugin's answer, the trace
/// id; the runs API filters by plugin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_runs_record_the_plugin_and_its_error_stack() {
    use axum::routing::post;
    let hook = axum::Router::new().route(
        "/hook",
        post(|axum::Json(body): axum::Json<Value>| async move {
            if body["data"]["fail"] == true {
                (
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    axum::Json(json!({"error": "bad article", "stack": "Error: bad article\n    at run (seo.js:12:3)"})),
                )
            } else {
                (axum::http::StatusCode::OK, axum::Json(json!({"ok": true})))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, hook).await.unwrap() });
    let config = format!(
        "{CONFIG}\n[queues.plugin]\nattempts = 1\nhandler = {{ kind = \"http\", url = \"http://{addr}/hook\", plugin = \"seo-pack\" }}\n"
    );
    let app = App::start_with(
        &config,
        Backend::memory().with_keys(support::unique_keys()),
        Db::Sqlite,
        true,
    )
    .await;
    let (s, v) = app
        .call(
            Method::POST,
            "/api/owner/queues/plugin/jobs",
            Some(&app.admin),
            Some(json!([
                {"name": "execute_plugin", "data": {"traceId": "tr-1"}},
                {"name": "execute_plugin", "data": {"fail": true}},
                {"name": "execute_plugin", "data": {"pluginId": "og-image"}}
            ])),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    support::eventually("three runs recorded", || async {
        let f = keel_records::RunFilter::default();
        let p = app
            .state()
            .store
            .list_runs(&keel_records::Scope::All, &f, 1, 10)
            .await
            .unwrap();
        (p.total == 3).then_some(())
    })
    .await;
    let (s, v) = app
        .get_json("/api/owner/runs?plugin=seo-pack", Some(&app.viewer))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["total"], 2, "{v}");
    let items = v["items"].as_array().unwrap();
    let failed = items.iter().find(|r| r["status"] == "dead").unwrap();
    assert_eq!(
        failed["error_stack"],
        "Error: bad article\n    at run (seo.js:12:3)"
    );
    assert!(failed["duration_ms"].is_i64());
    let ok = items.iter().find(|r| r["status"] == "completed").unwrap();
    assert_eq!(
        (ok["plugin_id"].as_str(), ok["trace_id"].as_str()),
        (Some("seo-pack"), Some("tr-1"))
    );
    let (_, v) = app
        .get_json("/api/owner/runs?plugin=og-image", Some(&app.viewer))
        .await;
    assert_eq!(v["total"], 1, "a job's pluginId names its plugin: {v}");
    app.stop().await;
}
