//! The AI and email pages in a real headless Chromium: usage per model over time (calls,
//! tokens, cost, latency), the runs (live: a new call appears without a reload), one run's
//! messages and events, the emails with their status. The `ai` handler calls a local server
//! speaking the OpenAI protocol; the `email` handler sends to a real SMTP server (aiosmtpd).

mod browser;
mod support;

use axum::http::{Method, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use browser::{browser, click, shot, sign_in, until};
use keel_handlers::testing::SmtpServer;
use serde_json::{json, Value};
use support::{App, Db};

async fn provider() -> String {
    let app = Router::new().route(
        "/v1/chat/completions",
        post(|Json(body): Json<Value>| async move {
            let prompt = body["messages"][0]["content"].as_str().unwrap_or("").to_string();
            Json(json!({
                "choices": [{"message": {"role": "assistant", "content": format!("Summary: {prompt}")}}],
                "usage": {"prompt_tokens": 120, "completion_tokens": 30}
            }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://127.0.0.1:{port}/v1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ai_and_email_pages_in_chromium() {
    let smtp = SmtpServer::start(false);
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (smtp_env, key_env) = (format!("KEEL_TEST_SMTP_{id}"), format!("KEEL_TEST_AI_{id}"));
    // Unique names: the server reads the process environment, as in production.
    std::env::set_var(&smtp_env, format!("smtp://127.0.0.1:{}", smtp.port));
    std::env::set_var(&key_env, "sk-test");
    let ai = provider().await;
    let config = format!(
        r#"
[ratelimit.policies.owner-api]
limit = 100000
window_ms = 60000

[queues.ai-content]
attempts = 1
[queues.ai-content.handlers.summarize_article]
kind = "ai"
base_url = "{ai}"
api_key_env = "{key_env}"
model = "openai/gpt-4o-mini"
prompt = "{{{{ text }}}}"
prices = {{ "openai/gpt-4o-mini" = {{ prompt = 0.15, completion = 0.60 }} }}
[queues.ai-content.handlers.seo_optimize_article]
kind = "ai"
base_url = "{ai}"
api_key_env = "{key_env}"
model = "anthropic/claude-3.5-haiku"
prompt = "{{{{ text }}}}"

[queues.email-otp]
attempts = 1
[queues.email-otp.handlers.send_email_template]
kind = "email"
smtp_url_env = "{smtp_env}"
from = "no-reply@teknav.example"
to = "{{{{ email }}}}"
template = "welcome"
templates.welcome = {{ subject = "Welcome, {{{{ name }}}}", text = "Hello {{{{ name }}}}" }}
"#
    );
    let app = App::start_with(&config, support::redis().await, Db::Postgres, true).await;
    let add = |queue: &'static str, name: &'static str, data: Value| {
        let app = &app;
        async move {
            let (s, v) = app
                .call(
                    Method::POST,
                    &format!("/api/owner/queues/{queue}/jobs"),
                    Some(&app.admin),
                    Some(json!({"name": name, "data": data})),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
        }
    };
    for i in 0..3 {
        add(
            "ai-content",
            "summarize_article",
            json!({"text": format!("article {i}")}),
        )
        .await;
    }
    add(
        "ai-content",
        "seo_optimize_article",
        json!({"text": "seo me"}),
    )
    .await;
    add(
        "email-otp",
        "send_email_template",
        json!({"email": "ana@example.com", "name": "Ana"}),
    )
    .await;
    add(
        "email-otp",
        "send_email_template",
        json!({"email": "bo@example.com"}),
    )
    .await;
    support::eventually("the calls and sends are recorded", || async {
        let store = &app.state().store;
        let ai = store
            .list_ai_runs(&keel_records::Scope::All, &Default::default(), 1, 10)
            .await
            .unwrap();
        let mail = store
            .list_emails(&keel_records::Scope::All, &Default::default(), 1, 10)
            .await
            .unwrap();
        (ai.total == 4 && mail.total == 2).then_some(())
    })
    .await;
    let addr = app.serve_socket().await;
    let base = format!("http://{addr}");
    let (_driver, c) = browser().await;
    sign_in(&c, &base, &app.owner).await;

    c.goto(&format!("{base}/ai")).await.unwrap();
    until(
        &c,
        "the live indicator",
        "document.getElementById('live-status').dataset.state === 'live'",
    )
    .await;
    let models = c
        .execute(
            "return [...document.querySelectorAll('table.usage tbody tr')].map(r => [r.dataset.model, r.cells[1].textContent, r.querySelectorAll('svg.spark').length]);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        models,
        json!([
            ["anthropic/claude-3.5-haiku", "1", 3],
            ["openai/gpt-4o-mini", "3", 3]
        ]),
        "one row per model, with its tokens, cost and latency charts"
    );
    let cost = c
        .execute("return document.querySelector('table.usage tr[data-model=\"openai/gpt-4o-mini\"]').cells[4].textContent;", vec![])
        .await
        .unwrap();
    assert_eq!(
        cost,
        json!("$0.000108"),
        "3 × (120 × 0.15 + 30 × 0.60) / 1e6"
    );
    assert_eq!(
        c.execute(
            "return document.querySelectorAll('section[data-region=runs] tbody tr').length;",
            vec![]
        )
        .await
        .unwrap(),
        json!(4)
    );
    shot(&c, "ai").await;
    // A call made elsewhere appears without a reload.
    c.execute("window.__sameDocument = true;", vec![])
        .await
        .unwrap();
    add(
        "ai-content",
        "summarize_article",
        json!({"text": "live one"}),
    )
    .await;
    until(
        &c,
        "the new run in the list",
        "document.querySelectorAll('section[data-region=runs] tbody tr').length === 5",
    )
    .await;
    assert_eq!(
        c.execute("return window.__sameDocument === true;", vec![])
            .await
            .unwrap(),
        json!(true),
        "refreshed in place"
    );
    // One run: its messages and events.
    click(&c, "section[data-region=runs] tbody tr:last-child a").await;
    until(
        &c,
        "the run page",
        "document.querySelectorAll('article.message').length === 2",
    )
    .await;
    let roles = c
        .execute("return [...document.querySelectorAll('article.message h3')].map(h => h.textContent.trim());", vec![])
        .await
        .unwrap();
    assert_eq!(roles, json!(["user", "assistant"]));
    let answer = c
        .execute(
            "return document.querySelector('article.role-assistant pre').textContent;",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        answer.as_str().unwrap().starts_with("Summary: article"),
        "{answer}"
    );
    let events = c
        .execute("return [...document.querySelectorAll('tbody tr td:nth-child(2)')].map(t => t.textContent);", vec![])
        .await
        .unwrap();
    assert_eq!(events, json!(["request", "response", "completed"]));
    shot(&c, "ai_run").await;

    c.goto(&format!("{base}/emails")).await.unwrap();
    until(
        &c,
        "the emails",
        "document.querySelectorAll('section[data-region=emails] tbody tr').length === 2",
    )
    .await;
    let statuses = c
        .execute("return [...document.querySelectorAll('section[data-region=emails] tbody tr')].map(r => [r.cells[1].textContent.trim(), r.cells[3].textContent]).sort();", vec![])
        .await
        .unwrap();
    assert_eq!(
        statuses,
        json!([["failed", "b***@example.com"], ["sent", "a***@example.com"]]),
        "the send without a name failed (variable name undefined); recipients masked"
    );
    let error = c
        .execute("return [...document.querySelectorAll('section[data-region=emails] tbody tr .error-text')].map(t => t.textContent).join('');", vec![])
        .await
        .unwrap();
    assert!(
        error
            .as_str()
            .unwrap()
            .contains("variable name is undefined"),
        "{error}"
    );
    shot(&c, "emails").await;
    c.close().await.unwrap();
    app.stop().await;
}
