//! The console in a real headless Chromium (Debian's `chromium` and `chromium-driver`, driven
//! over WebDriver; `.ci/run` installs them). Against `keel serve`'s app on a loopback socket,
//! Redis and PostgreSQL. Screenshots of every page go to `<target>/tmp/console-screenshots/`,
//! and also to `$KEEL_SCREENSHOTS_DIR` when set (that is how `docs/console/*.png` are made).

mod browser;
mod support;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use browser::{browser, click, shot, sign_in, text, until};
use fantoccini::Locator;
use serde_json::{json, Value};
use support::{App, Db};

async fn stats(app: &App, queue: &str) -> Value {
    let (s, v) = app
        .get_json(
            &format!("/api/owner/queues/{queue}/stats"),
            Some(&app.viewer),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_chromium() {
    let hook = support::webhook().await;
    let config = format!(
        r#"
[ratelimit.policies.owner-api]
limit = 100000
window_ms = 60000

[queues.mail]
attempts = 1
handler = {{ kind = "http", url = "{hook}" }}

[queues.reports]
"#
    );
    let app = App::start_with(&config, support::redis().await, Db::Postgres, true).await;
    let (s, v) = app
        .call(
            Method::POST,
            "/api/owner/queues/mail/jobs",
            Some(&app.admin),
            Some(json!([
                {"name": "welcome", "data": {"to": "ada@example.com", "plan": "pro", "apiKey": "sk-live-123"}},
                {"name": "welcome", "data": {"to": "grace@example.com", "plan": "free"}},
                {"name": "digest", "data": {"to": "alan@example.com", "items": [1, 2, 3]}},
                {"name": "welcome", "data": {"fail": true, "to": "bad@example.com"}, "opts": {"jobId": "bad-1"}},
                {"name": "digest", "data": {"fail": true}, "opts": {"jobId": "bad-2"}}
            ])),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    support::eventually("jobs processed and runs recorded", || async {
        let (_, r) = app
            .get_json("/api/owner/runs?queue=mail", Some(&app.viewer))
            .await;
        let s = stats(&app, "mail").await;
        (s["dlq"] == 2 && s["completed"] == 3 && r["total"] == 5).then_some(())
    })
    .await;
    let addr = app.serve_socket().await;
    let base = format!("http://{addr}");
    let (_driver, c) = browser().await;

    // Sign in: the overview, with the socket live.
    c.goto(&format!("{base}/")).await.unwrap();
    until(&c, "the sign-in form", "location.pathname === '/login'").await;
    shot(&c, "login").await;
    sign_in(&c, &base, &app.owner).await;
    until(
        &c,
        "the live indicator",
        "document.getElementById('live-status').dataset.state === 'live'",
    )
    .await;
    until(
        &c,
        "the chart",
        "document.querySelectorAll('svg.chart g.bar').length === 60",
    )
    .await;
    shot(&c, "overview").await;

    // Enqueue through the API: the count changes in place, without a reload.
    c.execute("window.__sameDocument = true;", vec![])
        .await
        .unwrap();
    assert_eq!(text(&c, "[data-q='reports'][data-k='waiting']").await, "0");
    let (s, _) = app
        .call(
            Method::POST,
            "/api/owner/queues/reports/jobs",
            Some(&app.admin),
            Some(json!([{"name": "monthly", "data": {"month": "2026-11"}}, {"name": "monthly"}, {"name": "weekly"}])),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    until(
        &c,
        "the waiting count to become 3",
        "document.querySelector(\"[data-q='reports'][data-k='waiting']\").textContent === '3'",
    )
    .await;
    assert_eq!(
        c.execute("return window.__sameDocument === true;", vec![])
            .await
            .unwrap(),
        json!(true),
        "the page was not reloaded"
    );

    // When the socket drops the page says so and refreshes by itself; then it reconnects.
    c.execute("window.keelConsole.socket.close();", vec![])
        .await
        .unwrap();
    let note = until(
        &c,
        "the fallback notice",
        "document.getElementById('live-status').dataset.state === 'fallback' && document.getElementById('live-status').textContent",
    )
    .await;
    assert!(
        note.as_str().unwrap().contains("refreshing every 10 s"),
        "{note}"
    );
    until(
        &c,
        "the socket to come back",
        "document.getElementById('live-status').dataset.state === 'live'",
    )
    .await;

    // A queue's jobs: search over name and data.
    c.goto(&format!("{base}/queues/mail?state=completed"))
        .await
        .unwrap();
    until(
        &c,
        "three completed jobs",
        "document.querySelectorAll('table.jobs tbody tr').length === 3",
    )
    .await;
    shot(&c, "jobs").await;
    let search = c.find(Locator::Css("input[name=search]")).await.unwrap();
    search.send_keys("grace").await.unwrap();
    click(&c, "form.filters button[type=submit]").await;
    until(&c, "one match", "location.search.includes('search=grace') && document.querySelectorAll('table.jobs tbody tr').length === 1").await;
    assert!(text(&c, "table.jobs tbody")
        .await
        .contains("grace@example.com"));
    shot(&c, "jobs-search").await;

    // A failed job: open it from the failed tab and read its error.
    c.goto(&format!("{base}/queues/mail?state=failed"))
        .await
        .unwrap();
    click(&c, "table.jobs a[href='/queues/mail/jobs/bad-1']").await;
    let error = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#job-error"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        error.contains("answered 500 Internal Server Error: smtp refused"),
        "{error}"
    );
    assert!(text(&c, ".json-tree").await.contains("bad@example.com"));
    shot(&c, "job").await;

    // Bulk: the confirmation says how many.
    c.goto(&format!("{base}/queues/mail?state=failed"))
        .await
        .unwrap();
    click(&c, "input[data-select-all]").await;
    click(&c, "button[name=action][value=retry][data-scope=selected]").await;
    until(&c, "the confirmation", "document.querySelector('h1') && document.querySelector('h1').textContent === 'Retry 2 jobs?'").await;
    shot(&c, "confirm").await;
    click(&c, "a.button").await; // Cancel: nothing happens.
    until(
        &c,
        "back on the jobs",
        "location.pathname === '/queues/mail'",
    )
    .await;
    assert_eq!(stats(&app, "mail").await["failed"], 2);

    // The DLQ: replay one entry.
    c.goto(&format!("{base}/queues/mail/dlq")).await.unwrap();
    until(
        &c,
        "two entries",
        "document.querySelectorAll('table.dlq tbody tr').length === 2",
    )
    .await;
    shot(&c, "dlq").await;
    let (_, before) = app
        .get_json(
            "/api/owner/logs/audit?action=owner.dlq.replay",
            Some(&app.owner),
        )
        .await;
    assert_eq!(before["total"], 0);
    click(&c, "table.dlq tbody tr button[data-action=replay]").await;
    let flash = until(
        &c,
        "the replay's message",
        "document.querySelector('.flash') && document.querySelector('.flash').textContent",
    )
    .await;
    assert!(flash.as_str().unwrap().starts_with("Replayed "), "{flash}");
    let (_, after) = app
        .get_json(
            "/api/owner/logs/audit?action=owner.dlq.replay",
            Some(&app.owner),
        )
        .await;
    assert_eq!(after["total"], 1, "the replay is audited");
    assert_eq!(after["items"][0]["status"], 200);

    // Pause and resume a queue from the queues page.
    c.goto(&format!("{base}/queues")).await.unwrap();
    click(&c, "tr[data-queue-row='reports'] button[data-action=pause]").await;
    until(&c, "the paused badge", "document.querySelector(\"tr[data-queue-row='reports'] button[data-action=resume]\") !== null").await;
    assert_eq!(stats(&app, "reports").await["paused"], true);
    shot(&c, "queues").await;
    click(
        &c,
        "tr[data-queue-row='reports'] button[data-action=resume]",
    )
    .await;
    until(&c, "the running badge", "document.querySelector(\"tr[data-queue-row='reports'] button[data-action=pause]\") !== null").await;
    assert_eq!(stats(&app, "reports").await["paused"], false);

    // A forged form (no valid CSRF token) is refused and changes nothing.
    c.execute(
        "document.body.insertAdjacentHTML('beforeend', '<form id=\"forged\" method=\"post\" action=\"/queues/reports/pause\"><input name=\"csrf\" value=\"forged\"></form>'); document.getElementById('forged').submit();",
        vec![],
    )
    .await
    .unwrap();
    until(&c, "the refusal", "document.querySelector('h1') && document.querySelector('h1').textContent === 'Form refused'").await;
    assert!(text(&c, "main").await.contains("CSRF"));
    shot(&c, "csrf-refused").await;
    assert_eq!(stats(&app, "reports").await["paused"], false);

    // The other pages.
    for (path, name, heading) in [
        ("/runs", "runs", "Runs"),
        ("/audit", "audit", "Audit log"),
        ("/access", "access", "Access log"),
        ("/redis", "redis", "Redis"),
        ("/no/such/page", "not-found", "Page not found"),
    ] {
        c.goto(&format!("{base}{path}")).await.unwrap();
        until(&c, heading, &format!("document.querySelector('h1') && document.querySelector('h1').textContent.startsWith({heading:?})")).await;
        shot(&c, name).await;
    }
    c.goto(&format!(
        "{base}/audit?action=owner.job.enqueue&resource=queue%3Amail"
    ))
    .await
    .unwrap();
    click(&c, "table tbody tr a").await;
    until(
        &c,
        "an audit entry",
        "location.pathname.startsWith('/audit/')",
    )
    .await;
    let payload = text(&c, ".json-tree").await;
    assert!(
        payload.contains("apiKey: \"***\"") && !payload.contains("sk-live-123"),
        "{payload}"
    );
    shot(&c, "audit-entry").await;
    c.goto(&format!("{base}/access")).await.unwrap();
    click(&c, "table tbody tr a").await;
    until(
        &c,
        "an access entry",
        "location.pathname.startsWith('/access/') && document.querySelector('ul.chips') !== null",
    )
    .await;
    shot(&c, "access-entry").await;
    c.goto(&format!("{base}/runs")).await.unwrap();
    click(&c, "table tbody tr a[href^='/runs/']").await;
    until(&c, "a run", "location.pathname.startsWith('/runs/')").await;
    shot(&c, "run").await;
    // Times are shown in the browser's zone, with the exact timestamp on hover.
    let title = until(&c, "a local time", "document.querySelector('time[data-local]') && document.querySelector('time[data-local]').title").await;
    assert!(title.as_str().unwrap().contains('Z'), "{title}");

    // 390 px wide: nothing wider than the screen but the scrollable tables.
    c.set_window_size(390, 844).await.unwrap();
    for (path, name) in [
        ("/", "overview-mobile"),
        ("/queues/mail?state=failed", "jobs-mobile"),
    ] {
        c.goto(&format!("{base}{path}")).await.unwrap();
        until(&c, "the page", "document.readyState === 'complete'").await;
        let overflow = c
            .execute(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
                vec![],
            )
            .await
            .unwrap();
        assert!(
            overflow.as_i64().unwrap() <= 0,
            "{path} overflows by {overflow} px"
        );
        shot(&c, name).await;
    }
    c.set_window_size(1280, 900).await.unwrap();

    // A viewer sees no buttons.
    c.goto(&format!("{base}/queues")).await.unwrap();
    click(&c, "form[action='/logout'] button").await;
    until(&c, "signed out", "location.pathname === '/login'").await;
    sign_in(&c, &base, &app.viewer).await;
    for path in [
        "/queues",
        "/queues/mail?state=failed",
        "/queues/mail/jobs/bad-1",
        "/queues/mail/dlq",
    ] {
        c.goto(&format!("{base}{path}")).await.unwrap();
        until(&c, "the page", "document.readyState === 'complete'").await;
        let buttons = c
            .execute(
                "return Array.from(document.querySelectorAll('main button, main input[type=checkbox]')).filter(b => !b.closest('form.filters') && !b.closest('.json-tools')).map(b => b.textContent || b.name);",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(buttons, json!([]), "{path}: a viewer sees {buttons}");
    }
    shot(&c, "viewer-jobs").await;

    c.close().await.unwrap();
    app.stop().await;
}

/// The workflow pages in Chromium: the instance list updating live as an instance is started
/// through the API, the detail's step timeline, a re-run through the button and its browser
/// confirmation, the definitions with their run form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workflow_pages_in_chromium() {
    let hook = support::webhook().await;
    let config = format!(
        r#"
[ratelimit.policies.owner-api]
limit = 100000
window_ms = 60000

[queues.ai-content]
attempts = 1
handler = {{ kind = "http", url = "{hook}" }}

[queues.notify]
attempts = 1
handler = {{ kind = "http", url = "{hook}" }}

[workflows.publish_article]
description = "Draft, audit, notify"
[[workflows.publish_article.steps]]
name = "draft"
queue = "ai-content"
job = "generate_article_draft"
input = {{ topic = "${{input.topic}}", fail = "${{input.fail}}" }}
[[workflows.publish_article.steps]]
name = "seo_audit"
queue = "ai-content"
needs = ["draft"]
[[workflows.publish_article.steps]]
name = "images"
queue = "ai-content"
needs = ["draft"]
[[workflows.publish_article.steps]]
name = "notify"
queue = "notify"
needs = ["seo_audit", "images"]
"#
    );
    let app = App::start_with(&config, support::redis().await, Db::Postgres, true).await;
    let run = |input: Value| {
        let app = &app;
        async move {
            let (s, v) = app
                .call(
                    Method::POST,
                    "/api/owner/workflows/publish_article/run",
                    Some(&app.admin),
                    Some(json!({ "input": input })),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
            v["instance"]["id"].as_str().unwrap().to_string()
        }
    };
    let ok = run(json!({"topic": "rust"})).await;
    let failed = run(json!({"topic": "x", "fail": true})).await;
    for id in [&ok, &failed] {
        support::eventually("the instance ends", || async {
            let (_, v) = app
                .get_json(
                    &format!("/api/owner/workflows/instances/{id}"),
                    Some(&app.viewer),
                )
                .await;
            ["completed", "failed"]
                .contains(&v["instance"]["status"].as_str().unwrap_or(""))
                .then_some(())
        })
        .await;
    }
    let addr = app.serve_socket().await;
    let base = format!("http://{addr}");
    let (_driver, c) = browser().await;
    sign_in(&c, &base, &app.owner).await;

    c.goto(&format!("{base}/workflows")).await.unwrap();
    until(
        &c,
        "the live indicator",
        "document.getElementById('live-status').dataset.state === 'live'",
    )
    .await;
    assert_eq!(
        c.execute(
            "return document.querySelectorAll('section[data-region=instances] tbody tr').length;",
            vec![]
        )
        .await
        .unwrap(),
        json!(2)
    );
    shot(&c, "workflows").await;
    // An instance started elsewhere appears without a reload.
    c.execute("window.__sameDocument = true;", vec![])
        .await
        .unwrap();
    let third = run(json!({"topic": "live"})).await;
    until(
        &c,
        "the new instance in the list",
        &format!("document.body.textContent.includes({third:?})"),
    )
    .await;
    assert_eq!(
        c.execute("return window.__sameDocument === true;", vec![])
            .await
            .unwrap(),
        json!(true),
        "the page was not reloaded"
    );

    // The completed instance: every step completed, with its bar on the timeline.
    c.goto(&format!("{base}/workflows/instances/{ok}"))
        .await
        .unwrap();
    until(
        &c,
        "the steps",
        "document.querySelectorAll('tr[data-step]').length === 4",
    )
    .await;
    let bars = c
        .execute(
            "return document.querySelectorAll('svg.track rect.bar.state-completed').length;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(bars, json!(4), "a bar per completed step");
    click(&c, "tr.step-detail details summary").await;
    shot(&c, "workflow").await;

    // The failed one: re-run through its button, confirmed in the browser's dialog.
    c.goto(&format!("{base}/workflows/instances/{failed}"))
        .await
        .unwrap();
    until(
        &c,
        "the failed badge",
        "document.querySelector('.title-row .badge').textContent === 'failed'",
    )
    .await;
    assert!(text(&c, "main").await.contains("step draft failed"));
    shot(&c, "workflow-failed").await;
    click(&c, "button[data-confirm^='Re-run']").await;
    let dialog = c.get_alert_text().await.unwrap();
    assert!(
        dialog.contains("Completed steps keep their outputs"),
        "{dialog}"
    );
    c.accept_alert().await.unwrap();
    until(
        &c,
        "the re-run's flash",
        "document.querySelector('.flash') && document.querySelector('.flash').textContent.includes('re-runs')",
    )
    .await;

    // Definitions, with the run form for admins.
    c.goto(&format!("{base}/workflows/definitions"))
        .await
        .unwrap();
    until(
        &c,
        "the definition",
        "document.querySelector('#wf-publish_article') !== null",
    )
    .await;
    assert!(text(&c, "#wf-publish_article")
        .await
        .contains("Draft, audit, notify"));
    shot(&c, "workflow-definitions").await;
    c.close().await.unwrap();
    app.stop().await;
}
