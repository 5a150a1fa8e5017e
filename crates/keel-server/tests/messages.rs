//! Email, one-time codes and AI through `keel serve`, on both databases: the `email` handler
//! against a real SMTP server (aiosmtpd), the `ai` handler against a local server speaking
//! the OpenAI protocol; `/api/otp/*` (throttle, verify, lock), `/api/owner/emails`,
//! `/api/owner/ai/*` (filters, errors naming the field, cache, access log, tenants) and the
//! realtime `ai_task` and `email_status` events.

#[macro_use]
mod support;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use keel_handlers::testing::SmtpServer;
use serde_json::{json, Value};
use support::{App, Db};

/// A provider answering every chat completion at once, with usage.
async fn provider() -> String {
    let app = Router::new().route(
        "/v1/chat/completions",
        post(|Json(body): Json<Value>| async move {
            Json(json!({
                "choices": [{"message": {"role": "assistant",
                    "content": format!("summary of {}", body["messages"][0]["content"].as_str().unwrap_or(""))}}],
                "usage": {"prompt_tokens": 11, "completion_tokens": 7}
            }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://127.0.0.1:{port}/v1")
}

fn config(smtp_env: &str, key_env: &str, ai: &str) -> String {
    format!(
        r#"
[ratelimit.policies.owner-api]
limit = 100000
window_ms = 60000

[queues.email-otp]
attempts = 1
[queues.email-otp.handlers.send_otp]
kind = "email"
smtp_url_env = "{smtp_env}"
from = "no-reply@teknav.example"
to = "{{{{ email }}}}"
template = "otp"
otp = {{ purpose = "login", max_attempts = 2, resend_after_s = 60 }}
templates.otp = {{ subject = "Your code", text = "Code: {{{{ code }}}}" }}

[queues.acme-mail]
tenant = "acme"
attempts = 1
[queues.acme-mail.handler]
kind = "email"
smtp_url_env = "{smtp_env}"
from = "no-reply@acme.example"
to = "{{{{ to }}}}"
template = "hello"
templates.hello = {{ subject = "Hello", text = "Hello {{{{ name }}}}" }}

[queues.ai-content]
attempts = 1
[queues.ai-content.handlers.summarize_article]
kind = "ai"
base_url = "{ai}"
api_key_env = "{key_env}"
model = "test/model-a"
prompt = "{{{{ text }}}}"
prices = {{ "test/model-a" = {{ prompt = 1.0, completion = 2.0 }} }}
"#
    )
}

both!(otp_email_and_ai_records_through_the_api);

async fn otp_email_and_ai_records_through_the_api(db: Db) {
    use futures::StreamExt;
    let smtp = SmtpServer::start(false);
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (smtp_env, key_env) = (format!("KEEL_TEST_SMTP_{id}"), format!("KEEL_TEST_AI_{id}"));
    // Unique names per test: the server reads the process environment, as in production.
    std::env::set_var(&smtp_env, format!("smtp://127.0.0.1:{}", smtp.port));
    std::env::set_var(&key_env, "sk-test-secret-9");
    let app = App::start_with(
        &config(&smtp_env, &key_env, &provider().await),
        support::redis().await,
        db,
        true,
    )
    .await;
    let addr = app.serve_socket().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{addr}/api/owner/realtime?token={}",
        app.viewer
    ))
    .await
    .unwrap();

    // One-time codes: sent, throttled, checked, consumed, locked.
    let send = json!({"email": "Ana@Example.com"});
    let (s, v) = app
        .call(
            Method::POST,
            "/api/otp/send",
            Some(&app.admin),
            Some(send.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        (v["queue"].as_str(), v["resendAfterS"].as_u64()),
        (Some("email-otp"), Some(60))
    );
    let (s, h, v) = app
        .raw(
            Method::POST,
            "/api/otp/send",
            Some(&app.admin),
            Some(send.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    let wait: u64 = h["retry-after"].parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let (s, _) = app
        .call(
            Method::POST,
            "/api/otp/send",
            Some(&app.viewer),
            Some(send.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    for (body, field) in [
        (json!({"email": "not an address"}), "email"),
        (
            json!({"email": "a@b.example", "purpose": "reset"}),
            "purpose",
        ),
        (json!({"email": "a@b.example", "code": "1"}), "code"),
    ] {
        let (s, v) = app
            .call(
                Method::POST,
                "/api/otp/send",
                Some(&app.admin),
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        let named = v["error"]["field"].as_str().unwrap_or_default().to_string()
            + v["error"]["message"].as_str().unwrap_or_default();
        assert!(named.contains(field), "{body}: {v}");
    }
    let text = smtp.messages(1).await[0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    let code = text.trim().trim_start_matches("Code: ").to_string();
    assert_eq!(code.len(), 6, "{text}");
    let verify = |code: &str| json!({"email": "ana@example.com", "code": code});
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (s, v) = app
        .call(
            Method::POST,
            "/api/otp/verify",
            Some(&app.admin),
            Some(verify(wrong)),
        )
        .await;
    assert_eq!(
        (s, &v),
        (
            StatusCode::OK,
            &json!({"valid": false, "result": "invalid", "remaining": 1})
        )
    );
    let (_, v) = app
        .call(
            Method::POST,
            "/api/otp/verify",
            Some(&app.admin),
            Some(verify(&code)),
        )
        .await;
    assert_eq!(v, json!({"valid": true, "result": "valid"}));
    let (_, v) = app
        .call(
            Method::POST,
            "/api/otp/verify",
            Some(&app.admin),
            Some(verify(&code)),
        )
        .await;
    assert_eq!(v["result"], "expired", "a code is used once");

    // The acme tenant's email, and an AI call.
    let (s, _) = app
        .call(
            Method::POST,
            "/api/owner/queues/acme-mail/jobs",
            Some(&app.acme),
            Some(json!({"name": "hello", "data": {"to": "bo@acme.example", "name": "Bo"}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = app
        .call(
            Method::POST,
            "/api/owner/queues/ai-content/jobs",
            Some(&app.admin),
            Some(json!({"name": "summarize_article", "data": {"text": "Rust"}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let mut seen = (false, false);
    let mut ai_run_id = None;
    while seen != (true, true) {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("events within 10 s")
            .unwrap()
            .unwrap();
        let m: Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
        if m["type"] == "ai_task" {
            assert_eq!(
                (m["status"].as_str(), m["model"].as_str()),
                (Some("completed"), Some("test/model-a"))
            );
            assert_eq!(m["prompt_tokens"], 11);
            ai_run_id = m["run_id"].as_i64();
            seen.0 = true;
        }
        if m["type"] == "email_status" {
            assert_eq!(m["status"], "sent");
            assert!(!m.to_string().contains("ana@example.com"), "masked: {m}");
            seen.1 = true;
        }
    }

    // AI records through the API.
    support::eventually("the AI run is recorded", || async {
        let all = keel_records::messages::AiFilter::default();
        let page = app
            .state()
            .store
            .list_ai_runs(&keel_records::Scope::All, &all, 1, 10)
            .await
            .unwrap();
        (page.total == 1).then_some(())
    })
    .await;
    let (s, runs) = app.get_json("/api/owner/ai/runs", Some(&app.viewer)).await;
    assert_eq!(s, StatusCode::OK, "{runs}");
    let run = &runs["items"][0];
    assert_eq!(
        (run["model"].as_str(), run["totalTokens"].as_i64()),
        (Some("test/model-a"), Some(18))
    );
    assert!(
        (run["costUsd"].as_f64().unwrap() - 25e-6).abs() < 1e-12,
        "{run}"
    );
    let run_id = run["id"].as_i64().unwrap();
    assert_eq!(ai_run_id, Some(run_id), "ai_task names the written run");
    // The call is its attempt's run record: one row, listed with the job's runs.
    let (_, v) = app
        .get_json("/api/owner/runs?queue=ai-content", Some(&app.viewer))
        .await;
    assert_eq!(v["total"], 1, "{v}");
    assert_eq!(
        (
            v["items"][0]["id"].as_i64(),
            v["items"][0]["status"].as_str()
        ),
        (Some(run_id), Some("completed")),
        "{v}"
    );
    let (s, v) = app
        .get_json(&format!("/api/owner/ai/runs/{run_id}"), Some(&app.viewer))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["messages"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["messages"][1]["content"], "summary of Rust");
    assert_eq!(v["events"][0]["kind"], "request");
    let (_, v) = app
        .get_json(
            &format!("/api/owner/ai/messages?runId={run_id}"),
            Some(&app.viewer),
        )
        .await;
    assert_eq!(v["total"], 2);
    let (_, v) = app
        .get_json(
            &format!("/api/owner/ai/event-logs?runId={run_id}"),
            Some(&app.viewer),
        )
        .await;
    assert_eq!(v["total"], 3);
    let (_, v) = app
        .get_json("/api/owner/ai/tasks?status=completed", Some(&app.viewer))
        .await;
    assert_eq!(v["items"][0]["runs"], 1, "{v}");
    let (_, v) = app
        .get_json("/api/owner/ai/usage?hours=1", Some(&app.viewer))
        .await;
    assert_eq!(v[0]["runs"], 1, "{v}");
    for (path, field) in [
        ("/api/owner/ai/runs?status=bogus", "status"),
        ("/api/owner/ai/messages", "runId"),
        ("/api/owner/ai/messages?runId=x", "runId"),
        ("/api/owner/ai/runs?from=yesterday", "from"),
        ("/api/owner/ai/usage?hours=0", "hours"),
        ("/api/owner/emails?status=lost", "status"),
        ("/api/owner/emails?limit=0", "limit"),
    ] {
        let (s, v) = app.get_json(path, Some(&app.viewer)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {v}");
        assert_eq!(v["error"]["field"], field, "{path}: {v}");
    }
    let (s, _) = app
        .get_json("/api/owner/ai/runs/999999", Some(&app.viewer))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app.get_json("/api/owner/ai/runs", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Emails: listed, cached 30 s, access-logged, tenant-scoped.
    // (Listings are cached 30 s, never invalidated: wait on the store, then ask.)
    support::eventually("both emails are recorded", || async {
        let all = keel_records::messages::EmailFilter::default();
        let page = app
            .state()
            .store
            .list_emails(&keel_records::Scope::All, &all, 1, 10)
            .await
            .unwrap();
        (page.total == 2).then_some(())
    })
    .await;
    let (_, emails) = app
        .get_json("/api/owner/emails?status=sent", Some(&app.viewer))
        .await;
    assert_eq!(emails["total"], 2, "{emails}");
    assert!(emails["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["recipient"] == "A***@Example.com" && e["template"] == "otp"));
    let (_, h, _) = app
        .raw(
            Method::GET,
            "/api/owner/emails?status=sent",
            Some(&app.viewer),
            None,
        )
        .await;
    assert_eq!(h["x-keel-cache"], "hit");
    let (_, v) = app.get_json("/api/owner/emails", Some(&app.acme)).await;
    assert_eq!(v["total"], 1, "acme sees its own: {v}");
    assert_eq!(v["items"][0]["queue"], "acme-mail");
    let (s, _) = app
        .get_json("/api/owner/emails?queue=email-otp", Some(&app.acme))
        .await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "another tenant's queue does not exist for acme"
    );
    let (_, v) = app.get_json("/api/owner/ai/runs", Some(&app.acme)).await;
    assert_eq!(v["total"], 0);

    // Audited and access-logged.
    let (_, v) = support::eventually("the audit entry is written", || async {
        let (s, v) = app
            .get_json("/api/owner/logs/audit?action=otp.send", Some(&app.admin))
            .await;
        (v["total"].as_i64().unwrap_or(0) >= 2).then_some((s, v))
    })
    .await;
    assert!(
        !v.to_string().contains("ana@"),
        "the address is not in the audit: {v}"
    );
    support::eventually("the access entry is written", || async {
        let (_, v) = app
            .get_json(
                "/api/owner/logs/access?action=owner.read.emails",
                Some(&app.admin),
            )
            .await;
        (v["total"].as_i64().unwrap_or(0) >= 1).then_some(())
    })
    .await;
    // The API key reaches no record.
    let (_, v) = app
        .get_json(&format!("/api/owner/ai/runs/{run_id}"), Some(&app.viewer))
        .await;
    assert!(!v.to_string().contains("sk-test-secret-9"));
    app.stop().await;
}
