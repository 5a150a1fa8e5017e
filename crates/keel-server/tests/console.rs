//! The console over HTTP (no browser): sign-in and sessions, CSRF, roles, bulk confirmations,
//! states and error pages, and a link checker over every page. The browser tests are in
//! `console_browser.rs`.

mod support;

use std::collections::{BTreeSet, VecDeque};

use axum::http::{Method, StatusCode};
use keel::Backend;
use serde_json::{json, Value};
use support::{App, Db, Web};

fn config(hook: &str) -> String {
    format!(
        r#"
[ratelimit.policies.owner-api]
limit = 100000
window_ms = 60000

[queues.mail]
attempts = 1
handler = {{ kind = "http", url = "{hook}" }}

[queues.acme-reports]
tenant = "acme"
"#
    )
}

/// An app whose `mail` worker runs (3 jobs complete, `bad-1` and `bad-2` fail into the DLQ).
async fn seeded(db: Db, backend: Backend) -> App {
    let hook = support::webhook().await;
    let app = App::start_with(&config(&hook), backend, db, true).await;
    let (s, v) = app
        .call(
            Method::POST,
            "/api/owner/queues/mail/jobs",
            Some(&app.admin),
            Some(json!([
                {"name": "welcome", "data": {"to": "ada@example.com", "password": "hunter2"}},
                {"name": "welcome", "data": {"to": "grace@example.com"}},
                {"name": "digest", "data": {"to": "alan@example.com"}},
                {"name": "welcome", "data": {"fail": true, "to": "bad@example.com"}, "opts": {"jobId": "bad-1"}},
                {"name": "digest", "data": {"fail": true}, "opts": {"jobId": "bad-2"}}
            ])),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    support::eventually("3 completed, 2 dead-lettered", || async {
        let (_, v) = app
            .get_json("/api/owner/queues/mail/stats", Some(&app.viewer))
            .await;
        (v["completed"] == 3 && v["failed"] == 2 && v["dlq"] == 2).then_some(())
    })
    .await;
    support::eventually("5 runs recorded", || async {
        let (_, v) = app
            .get_json("/api/owner/runs?queue=mail", Some(&app.viewer))
            .await;
        (v["total"] == 5).then_some(())
    })
    .await;
    app
}

async fn memory_app() -> App {
    seeded(
        Db::Sqlite,
        Backend::memory().with_keys(support::unique_keys()),
    )
    .await
}

async fn paused(app: &App) -> bool {
    let (_, v) = app
        .get_json("/api/owner/queues/mail/stats", Some(&app.viewer))
        .await;
    v["paused"].as_bool().unwrap()
}

async fn audit(app: &App, action: &str) -> Vec<Value> {
    let (_, v) = app
        .get_json(
            &format!("/api/owner/logs/audit?action={action}"),
            Some(&app.owner),
        )
        .await;
    v["items"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_sets_a_strict_http_only_session_and_forms_need_the_csrf_token() {
    let app = memory_app().await;
    let mut web = Web::new(&app);
    // Signed out: pages send the browser to the sign-in form, remembering where it was going.
    let p = web.get("/queues/mail?state=failed").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(
        p.location.as_deref(),
        Some("/login?next=%2Fqueues%2Fmail%3Fstate%3Dfailed")
    );
    let form = web.get("/login").await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains("type=\"password\""));
    let csrf = form.csrf();
    // The sign-in form is double-submit protected.
    let forged = web
        .post("/login", &[("csrf", "nope"), ("token", &app.owner)], None)
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(!web.cookies.contains_key("keel_session"));
    let csrf = if forged.body.contains("name=\"csrf\"") {
        forged.csrf()
    } else {
        csrf
    };
    let wrong = web
        .post(
            "/login",
            &[("csrf", &csrf), ("token", "keel_0000"), ("next", "/")],
            None,
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("unknown or revoked"));
    let csrf = wrong.csrf();
    let ok = web
        .post(
            "/login",
            &[
                ("csrf", &csrf),
                ("token", &app.owner),
                ("next", "/queues/mail?state=failed"),
            ],
            None,
        )
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert_eq!(ok.location.as_deref(), Some("/queues/mail?state=failed"));
    let session = ok
        .set_cookies
        .iter()
        .find(|c| c.starts_with("keel_session="))
        .unwrap();
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Strict"));
    assert!(
        !session.contains(&app.owner),
        "the cookie holds a session id, not the token"
    );
    let page = web.get("/queues/mail?state=failed").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("bad-1") && page.body.contains("POST"));
    assert!(
        page.body
            .contains("answered 500 Internal Server Error: smtp refused"),
        "{}",
        page.body
    );
    let headers_ok = web.get("/").await;
    assert_eq!(headers_ok.status, StatusCode::OK);

    // CSRF: no token, a wrong token, a foreign origin: refused, nothing paused, nothing audited.
    let csrf = page.csrf();
    for (form, origin) in [
        (vec![], None),
        (vec![("csrf", "0".repeat(64))], None),
        (vec![("csrf", csrf.clone())], Some("http://evil.example")),
    ] {
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = web.post("/queues/mail/pause", &pairs, origin).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        assert!(r.body.contains("CSRF"));
    }
    assert!(!paused(&app).await);
    assert!(audit(&app, "owner.queue.pause").await.is_empty());
    // With the token (and this host as the origin): paused, audited, flashed.
    let r = web
        .post(
            "/queues/mail/pause",
            &[("csrf", &csrf), ("back", "/queues")],
            Some("http://console.test"),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location.as_deref(), Some("/queues"));
    assert!(paused(&app).await);
    let entries = audit(&app, "owner.queue.pause").await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["status"], 200);
    let queues = web.get("/queues").await;
    assert!(
        queues.body.contains("Queue mail paused."),
        "flash shown once"
    );
    assert!(queues.body.contains("data-action=\"resume\""));
    assert!(!web.get("/queues").await.body.contains("Queue mail paused."));
    // An open redirect through `back` is not possible.
    let r = web
        .post(
            "/queues/mail/resume",
            &[("csrf", &csrf), ("back", "//evil.example/")],
            None,
        )
        .await;
    assert_eq!(r.location.as_deref(), Some("/queues"));
    assert!(!paused(&app).await);

    // Sign-out ends the session on the server.
    let sid = web.cookies["keel_session"].clone();
    let out = web.post("/logout", &[("csrf", &csrf)], None).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    web.cookies.insert("keel_session".into(), sid);
    assert_eq!(web.get("/").await.status, StatusCode::SEE_OTHER);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_token_ends_its_sessions() {
    let app = memory_app().await;
    let (_, token) = app
        .state()
        .store
        .create_token("short-lived", keel_records::Role::Admin, None)
        .await
        .unwrap();
    let mut web = Web::signed_in(&app, &token).await;
    assert_eq!(web.get("/queues").await.status, StatusCode::OK);
    let id = app
        .state()
        .store
        .authenticate(&token)
        .await
        .unwrap()
        .unwrap()
        .id;
    let (s, _) = app
        .call(
            Method::DELETE,
            &format!("/api/owner/tokens/{id}"),
            Some(&app.owner),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let p = web.get("/queues").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert!(p.location.unwrap().starts_with("/login"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_no_action_buttons_and_the_server_refuses_the_action() {
    let app = memory_app().await;
    let mut web = Web::signed_in(&app, &app.viewer).await;
    for path in [
        "/queues",
        "/queues/mail?state=failed",
        "/queues/mail/jobs/bad-1",
        "/queues/mail/dlq",
    ] {
        let p = web.get(path).await;
        assert_eq!(p.status, StatusCode::OK, "{path}");
        for button in [
            "data-action=",
            ">Retry<",
            ">Remove<",
            "Retry selected",
            "Replay all",
            "name=\"ids\"",
        ] {
            assert!(!p.body.contains(button), "{path} shows {button}");
        }
    }
    let overview = web.get("/").await.body;
    assert!(
        !overview.contains("href=\"/audit\""),
        "the audit log needs admin: no link"
    );
    assert_eq!(web.get("/audit").await.status, StatusCode::FORBIDDEN);
    // The form post, made by hand with the viewer's own valid CSRF token, is refused by the API.
    let csrf = web.get("/queues").await.csrf();
    let r = web
        .post("/queues/mail/jobs/bad-1/retry", &[("csrf", &csrf)], None)
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let shown = web.get("/queues/mail?state=failed").await.body;
    assert!(
        shown.contains("flash-error") && shown.contains("admin role"),
        "{shown}"
    );
    let (_, job) = app
        .get_json("/api/owner/queues/mail/jobs/bad-1", Some(&app.viewer))
        .await;
    assert_eq!(job["state"], "failed", "nothing retried");
    let refused = audit(&app, "owner.job.retry").await;
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["status"], 403);
    // A tenant's session sees only its queues.
    let mut acme = Web::signed_in(&app, &app.acme).await;
    let q = acme.get("/queues").await.body;
    assert!(q.contains("acme-reports") && !q.contains("href=\"/queues/mail\""));
    assert_eq!(acme.get("/queues/mail").await.status, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_actions_and_replay_all_say_how_many_before_doing_it() {
    let app = memory_app().await;
    let mut web = Web::signed_in(&app, &app.admin).await;
    let page = web.get("/queues/mail?state=failed").await;
    let csrf = page.csrf();
    // Nothing selected: nothing done, and a sentence saying so.
    let r = web
        .post(
            "/queues/mail/bulk",
            &[("csrf", &csrf), ("action", "retry"), ("state", "failed")],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(web
        .get("/queues/mail?state=failed")
        .await
        .body
        .contains("Select jobs first"));
    // Selected: the confirmation counts them; nothing changes until it is confirmed.
    let ask = web
        .post(
            "/queues/mail/bulk",
            &[
                ("csrf", &csrf),
                ("action", "remove"),
                ("state", "failed"),
                ("ids", "bad-1"),
            ],
            None,
        )
        .await;
    assert_eq!(ask.status, StatusCode::OK);
    assert!(
        ask.body.contains("Remove 1 job?") && ask.body.contains("1 selected job in mail"),
        "{}",
        ask.body
    );
    let (_, stats) = app
        .get_json("/api/owner/queues/mail/stats", Some(&app.viewer))
        .await;
    assert_eq!(stats["failed"], 2);
    // All of a state: the count comes from the queue.
    let ask_all = web
        .post(
            "/queues/mail/bulk?all=1",
            &[
                ("csrf", &csrf),
                ("action", "retry"),
                ("state", "failed"),
                ("scope", "selected"),
            ],
            None,
        )
        .await;
    assert!(
        ask_all.body.contains("Retry 2 jobs?")
            && ask_all.body.contains("every failed job in mail (2 jobs)"),
        "{}",
        ask_all.body
    );
    // Confirming without the CSRF token does nothing.
    let r = web
        .post(
            "/queues/mail/bulk",
            &[
                ("action", "retry"),
                ("state", "failed"),
                ("scope", "all"),
                ("expected", "2"),
                ("confirm", "yes"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Confirmed: the hidden fields of the confirmation are posted back.
    let mut fields: Vec<(String, String)> = Vec::new();
    for chunk in ask_all.body.split("<input type=\"hidden\" name=\"").skip(1) {
        let (name, rest) = chunk.split_once("\" value=\"").unwrap();
        let value = &rest[..rest.find('"').unwrap()];
        fields.push((name.to_string(), value.to_string()));
    }
    let pairs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert!(pairs.contains(&("confirm", "yes")) && pairs.contains(&("scope", "all")));
    let r = web.post("/queues/mail/bulk", &pairs, None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(web
        .get("/queues/mail")
        .await
        .body
        .contains("Retried 2 jobs."));
    assert_eq!(
        audit(&app, "owner.job.retry").await.len(),
        2,
        "one entry per job"
    );
    // The retried jobs fail again (the webhook still refuses): two more runs, and their dead
    // letters are recorded again (one entry per job).
    support::eventually("retried jobs failed again", || async {
        let (_, v) = app
            .get_json("/api/owner/runs?queue=mail&status=dead", Some(&app.viewer))
            .await;
        (v["total"] == 4).then_some(())
    })
    .await;
    // Replay all: a dry run counts first.
    let dlq = web.get("/queues/mail/dlq").await;
    let csrf = dlq.csrf();
    let ask = web
        .post("/queues/mail/dlq/replay", &[("csrf", &csrf)], None)
        .await;
    assert!(ask.body.contains("Replay 2 entries?"), "{}", ask.body);
    let (_, v) = app
        .get_json("/api/owner/queues/mail/dlq", Some(&app.viewer))
        .await;
    assert_eq!(v["total"], 2, "a dry run replays nothing");
    let r = web
        .post(
            "/queues/mail/dlq/replay",
            &[("csrf", &csrf), ("confirm", "yes")],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(web
        .get("/queues/mail/dlq")
        .await
        .body
        .contains("Replayed 2 dead-letter entries into mail."));
    assert_eq!(
        audit(&app, "owner.dlq.replay_all").await.len(),
        2,
        "dry run and replay"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_have_empty_error_and_not_found_states() {
    let app = memory_app().await;
    let mut web = Web::signed_in(&app, &app.owner).await;
    let empty = web.get("/queues/acme-reports?state=delayed").await;
    assert_eq!(empty.status, StatusCode::OK);
    assert!(empty.body.contains("No delayed job in acme-reports."));
    let dlq = web.get("/queues/acme-reports/dlq").await.body;
    assert!(dlq.contains("The dead-letter queue of acme-reports is empty."));
    for (path, status, text) in [
        ("/queues/nope", 404, "queue nope not found"),
        (
            "/queues/mail/jobs/nope",
            404,
            "job nope in queue mail not found",
        ),
        ("/runs/999999", 404, "run 999999 not found"),
        ("/audit/999999", 404, "audit entry 999999 not found"),
        ("/queues/mail?state=sleeping", 400, "state"),
        ("/queues/mail?page=abc", 400, "page"),
        ("/no/such/page", 404, "There is no page at /no/such/page."),
    ] {
        let p = web.get(path).await;
        assert_eq!(p.status.as_u16(), status, "{path}: {}", p.body);
        assert!(p.body.contains(text), "{path}: {}", p.body);
        assert!(p.body.contains("<!doctype html>"), "{path} is a page");
    }
    // The API keeps JSON errors.
    let (s, v) = app.get_json("/api/owner/nope", Some(&app.owner)).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not-found"))
    );
    // Job detail: error, stack, data, runs; masked nowhere (this is the job's own data).
    let job = web.get("/queues/mail/jobs/bad-1").await.body;
    assert!(job.contains("id=\"job-error\""));
    assert!(job.contains("bad@example.com"));
    assert!(job.contains("/runs/"), "links its run");
    // The audit detail shows the enqueue payload with secrets masked.
    let (_, entries) = app
        .get_json(
            "/api/owner/logs/audit?action=owner.job.enqueue",
            Some(&app.owner),
        )
        .await;
    let id = entries["items"][0]["id"].as_i64().unwrap();
    let detail = web.get(&format!("/audit/{id}")).await.body;
    assert!(
        detail.contains("&quot;***&quot;") && !detail.contains("hunter2"),
        "{detail}"
    );
    // Security headers.
    let resp = app
        .respond(
            axum::http::Request::builder()
                .uri("/login")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    let csp = resp.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    app.stop().await;
}

fn links(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["href=\"", "src=\""] {
        for part in body.split(attr).skip(1) {
            let raw = &part[..part.find('"').unwrap_or(0)];
            let url = raw.replace("&amp;", "&");
            let url = url.split('#').next().unwrap_or("").to_string();
            if url.starts_with('/') && !url.starts_with("//") {
                out.push(url);
            }
        }
    }
    out
}

/// Crawls every page reachable from the overview (owner and viewer): no link answers 404 or
/// a server error; every one is a page the session may open.
async fn crawl(app: &App, token: &str) -> usize {
    let mut web = Web::signed_in(app, token).await;
    let mut seen = BTreeSet::new();
    let mut todo = VecDeque::from(["/".to_string()]);
    while let Some(url) = todo.pop_front() {
        if !seen.insert(url.clone()) {
            continue;
        }
        assert!(seen.len() < 500, "the crawl does not end: {seen:?}");
        let p = web.get(&url).await;
        assert!(
            p.status == StatusCode::OK,
            "{url} answered {}: {}",
            p.status,
            &p.body[..p.body.len().min(400)]
        );
        if p.body.starts_with("<!doctype html>") {
            for l in links(&p.body) {
                if !seen.contains(&l) {
                    todo.push_back(l);
                }
            }
        }
    }
    for must in [
        "/",
        "/queues",
        "/queues/mail?state=failed",
        "/queues/mail/dlq",
        "/queues/mail/jobs/bad-1",
        "/runs",
    ] {
        assert!(seen.contains(must), "{must} is linked: {seen:?}");
    }
    seen.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_link_of_any_page_is_dead_on_memory_and_sqlite() {
    let app = memory_app().await;
    let owner = crawl(&app, &app.owner).await;
    let viewer = crawl(&app, &app.viewer).await;
    assert!(
        owner > viewer,
        "the viewer has no audit, access or Redis pages"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_link_of_any_page_is_dead_on_redis_and_postgres() {
    let app = seeded(Db::Postgres, support::redis().await).await;
    crawl(&app, &app.owner).await;
    app.stop().await;
}

#[test]
fn the_readme_shows_screenshots_that_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let shots: Vec<&str> = readme
        .split("](docs/console/")
        .skip(1)
        .map(|s| &s[..s.find(')').unwrap()])
        .filter(|s| !s.is_empty())
        .collect();
    assert!(shots.len() >= 8, "{shots:?}");
    for s in shots {
        let png = std::fs::read(root.join("docs/console").join(s)).unwrap_or_default();
        assert!(png.starts_with(b"\x89PNG"), "docs/console/{s} is a PNG");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_out_address_is_refused_even_with_the_right_token() {
    let app = App::start(
        "",
        Backend::memory().with_keys(support::unique_keys()),
        Db::Sqlite,
    )
    .await;
    let mut web = Web::new(&app);
    let attempt = |token: String| {
        let mut web = Web::new(&app);
        async move {
            let csrf = web.get("/login").await.csrf();
            web.post("/login", &[("csrf", &csrf), ("token", &token)], None)
                .await
        }
    };
    // The `login` policy allows 5 failures per 15 minutes per address.
    for _ in 0..4 {
        assert_eq!(
            attempt("keel_wrong".into()).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        attempt(app.owner.clone()).await.status,
        StatusCode::SEE_OTHER,
        "not locked yet: the right token signs in"
    );
    assert_eq!(
        attempt("keel_wrong".into()).await.status,
        StatusCode::UNAUTHORIZED
    );
    // The fifth failure used the policy up: the address is locked, the right token included.
    let locked = attempt(app.owner.clone()).await;
    assert_eq!(
        locked.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        locked.body
    );
    assert!(locked.body.contains("Too many failed sign-ins"));
    assert_eq!(
        attempt("keel_wrong".into()).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    let csrf = web.get("/login").await.csrf();
    let p = web
        .post("/login", &[("csrf", &csrf), ("token", &app.owner)], None)
        .await;
    assert_eq!(p.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(!web.cookies_has_session(), "no session while locked out");
    app.stop().await;
}

/// Named accounts: sign-in by email and password (CSRF-checked, strict cookie), pages and
/// actions as the person (`user:<email>` in the audit and access logs), disabling the account
/// ends its session, and failed sign-ins lock the account whatever address they come from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_accounts_sign_in_act_as_themselves_and_are_locked_per_account() {
    let config = format!(
        "[server]\ntrust_proxy = true\n{}",
        config("http://127.0.0.1:9/")
    );
    let app = App::start(
        &config,
        Backend::memory().with_keys(support::unique_keys()),
        Db::Sqlite,
    )
    .await;
    let store = &app.state().store;
    let pw = "correct horse battery staple";
    store
        .create_user("Ops@Example.com", pw, keel_records::Role::Admin, None)
        .await
        .unwrap();
    let mut web = Web::new(&app);
    let csrf = web.get("/login").await.csrf();
    let forged = web
        .post(
            "/login",
            &[
                ("csrf", "nope"),
                ("email", "ops@example.com"),
                ("password", pw),
            ],
            None,
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(!web.cookies_has_session());
    // The refusal is a fresh form with a fresh double-submit token.
    let csrf = if forged.body.contains("name=\"csrf\"") {
        forged.csrf()
    } else {
        csrf
    };
    let wrong = web
        .post(
            "/login",
            &[
                ("csrf", &csrf),
                ("email", "ops@example.com"),
                ("password", "not it at all"),
            ],
            None,
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(
        wrong.body.contains("do not match an enabled account"),
        "{}",
        wrong.body
    );
    let csrf = wrong.csrf();
    let ok = web
        .post(
            "/login",
            &[
                ("csrf", &csrf),
                ("email", "OPS@example.com"),
                ("password", pw),
                ("next", "/queues"),
            ],
            None,
        )
        .await;
    assert_eq!(
        (ok.status, ok.location.as_deref()),
        (StatusCode::SEE_OTHER, Some("/queues")),
        "{}",
        ok.body
    );
    let session = ok
        .set_cookies
        .iter()
        .find(|c| c.starts_with("keel_session="))
        .unwrap();
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );
    // Pages show the person; a change is audited with the person as the actor.
    let page = web.get("/queues").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("ops@example.com"),
        "the frame names the account"
    );
    let csrf = page.csrf();
    let r = web
        .post("/queues/mail/pause", &[("csrf", &csrf)], None)
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(paused(&app).await);
    let entries = audit(&app, "owner.queue.pause").await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["actor"], "user:ops@example.com");
    assert_eq!(web.get("/queues/mail").await.status, StatusCode::OK);
    let (_, access) = app
        .get_json(
            "/api/owner/logs/access?action=owner.read.queue_jobs",
            Some(&app.owner),
        )
        .await;
    assert_eq!(
        access["items"][0]["actor"], "user:ops@example.com",
        "{access}"
    );
    // A form without the session's CSRF token changes nothing.
    let r = web
        .post("/queues/mail/resume", &[("csrf", "forged")], None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(paused(&app).await);
    // Disabled: the session ends at its next request, and the password no longer signs in.
    assert!(store
        .disable_user(&keel_records::Scope::All, "ops@example.com")
        .await
        .unwrap());
    let gone = web.get("/queues").await;
    assert_eq!(gone.status, StatusCode::SEE_OTHER);
    assert!(gone.location.unwrap().starts_with("/login"));
    let csrf = web.get("/login").await.csrf();
    let refused = web
        .post(
            "/login",
            &[
                ("csrf", &csrf),
                ("email", "ops@example.com"),
                ("password", pw),
            ],
            None,
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    // Per account: five failures from five addresses lock the account, so a sixth address
    // with the right password is refused too; another account is not affected.
    store
        .create_user("victim@example.com", pw, keel_records::Role::Viewer, None)
        .await
        .unwrap();
    store
        .create_user(
            "bystander@example.com",
            pw,
            keel_records::Role::Viewer,
            None,
        )
        .await
        .unwrap();
    let attempt = |ip: String, email: &'static str, password: &'static str| {
        let mut web = Web::new(&app);
        web.forwarded_for = Some(ip);
        async move {
            let csrf = web.get("/login").await.csrf();
            web.post(
                "/login",
                &[("csrf", &csrf), ("email", email), ("password", password)],
                None,
            )
            .await
        }
    };
    for i in 0..5 {
        let r = attempt(
            format!("10.0.0.{i}"),
            "victim@example.com",
            "guessing wrongly",
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let locked = attempt(
        "10.0.1.1".into(),
        "victim@example.com",
        "correct horse battery staple",
    )
    .await;
    assert_eq!(
        locked.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        locked.body
    );
    assert!(locked.body.contains("Too many failed sign-ins"));
    let other = attempt(
        "10.0.1.2".into(),
        "bystander@example.com",
        "correct horse battery staple",
    )
    .await;
    assert_eq!(other.status, StatusCode::SEE_OTHER, "{}", other.body);
    app.stop().await;
}
