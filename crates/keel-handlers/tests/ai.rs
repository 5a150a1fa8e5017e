//! The `ai` handler against a local server speaking the OpenAI chat-completions protocol (no
//! provider is reachable from here): usage and cost, JSON answers, 429 with Retry-After,
//! 500, a slow answer, malformed JSON, a refused request, an oversized prompt — each attempt
//! an AI run with its messages and events.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use keel::{JobOptions, JobState};
use keel_handlers::Handlers;
use keel_records::messages::AiFilter;
use keel_records::prelude::*;
use keel_records::Scope;
use serde_json::{json, Value};
use support::*;

const KEY: &str = "sk-or-test-4242";

#[derive(Clone, Default)]
struct Provider {
    requests: Arc<Mutex<Vec<(Instant, Value)>>>,
    limited_once: Arc<Mutex<bool>>,
}

async fn completions(
    State(p): State<Provider>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {KEY}"))
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"message": "no key"}})),
        )
            .into_response();
    }
    p.requests
        .lock()
        .unwrap()
        .push((Instant::now(), body.clone()));
    let user = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string();
    let mode = user.split(':').next().unwrap_or("");
    let answer = |content: &str| {
        Json(json!({
            "id": "gen-1", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150}
        }))
        .into_response()
    };
    match mode {
        "ok" => answer("A short summary."),
        "json" => answer("```json\n{\"title\": \"Fast Rust\", \"keywords\": [\"rust\"]}\n```"),
        "rate" => {
            let mut once = p.limited_once.lock().unwrap();
            if *once {
                answer("after the limit")
            } else {
                *once = true;
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "1")],
                    Json(json!({"error": {"message": "rate limited"}})),
                )
                    .into_response()
            }
        }
        "boom" => (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded").into_response(),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            answer("too late")
        }
        "bad" => (
            StatusCode::OK,
            [("content-type", "application/json")],
            "{\"choices\": [",
        )
            .into_response(),
        _ => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"message": "invalid model"}})),
        )
            .into_response(),
    }
}

async fn provider() -> (Provider, u16) {
    let p = Provider::default();
    let app = Router::new()
        .route("/v1/chat/completions", post(completions))
        .with_state(p.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (p, port)
}

fn ai_config(port: u16) -> keel::config::Config {
    config(&format!(
        r#"
[queues.ai-content]
attempts = 3
backoff = {{ type = "fixed", delay_ms = 20 }}

[queues.ai-content.handlers.summarize_article]
kind = "ai"
base_url = "http://127.0.0.1:{port}/v1"
model = "openai/gpt-4o-mini"
system = "You summarize {{{{ lang }}}} articles."
prompt = "{{{{ mode }}}}: {{{{ text }}}}"
timeout_ms = 500
max_tokens = 256
temperature = 0.2
max_prompt_chars = 200
max_record_chars = 10
prices = {{ "openai/gpt-4o-mini" = {{ prompt = 0.15, completion = 0.60 }} }}

[queues.ai-content.handlers.seo_optimize_article]
kind = "ai"
base_url = "http://127.0.0.1:{port}/v1"
model = "openai/gpt-4o-mini"
prompt = "json: optimize {{{{ title }}}}"
response = "json"
"#
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_calls_follow_the_protocol_and_are_recorded() {
    let (provider, port) = provider().await;
    let config = ai_config(port);
    let backend = redis().await;
    let db = keel_records::testing::sqlite().await;
    db.store.migrate_up().await.unwrap();
    let store: Arc<dyn keel_records::MessageStore> = db.store.clone();
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let handlers = Handlers::new(&backend)
        .records(store)
        .env(env(&[("OPENROUTER_API_KEY", KEY.to_string())]))
        .observer(Arc::new(move |batch| {
            let mut seen = seen.lock().unwrap();
            seen.extend(batch.iter().map(|e| format!("{e:?}")));
        }));
    let names = keel::runner::select(&config, &[], "queues").unwrap();
    let workers = keel::runner::start_workers(&config, &backend, &names, &handlers, None)
        .await
        .unwrap();
    let q = config.queue(&backend, "ai-content").unwrap();
    let add = |name: &'static str, data: Value| {
        let q = q.clone();
        async move { q.add(name, data, JobOptions::default()).await.unwrap() }
    };
    let article = |mode: &str| json!({"mode": mode, "text": "Rust is fast.", "lang": "English"});
    let ok = add("summarize_article", article("ok")).await;
    let seo = add("seo_optimize_article", json!({"title": "Rust"})).await;
    let rate = add("summarize_article", article("rate")).await;
    let boom = add("summarize_article", article("boom")).await;
    let slow = add("summarize_article", article("slow")).await;
    let bad = add("summarize_article", article("bad")).await;
    let refused = add("summarize_article", article("refused")).await;
    let long = add(
        "summarize_article",
        json!({"mode": "ok", "text": "x".repeat(300), "lang": "English"}),
    )
    .await;
    let missing = add("summarize_article", json!({"mode": "ok", "text": "t"})).await;

    let done = settled(&q, &ok.id).await;
    assert_eq!(done.returnvalue, Some(json!("A short summary.")));
    let s = settled(&q, &seo.id).await;
    assert_eq!(
        s.returnvalue,
        Some(json!({"title": "Fast Rust", "keywords": ["rust"]})),
        "asked for JSON: the answer parsed (a Markdown fence removed)"
    );
    let r = settled(&q, &rate.id).await;
    assert_eq!(
        q.job_state(&rate.id).await.unwrap(),
        Some(JobState::Completed)
    );
    assert_eq!(r.attempts_made, 2, "the 429, then the answer");
    let b = settled(&q, &boom.id).await;
    assert_eq!(b.attempts_made, 3, "500 is retried");
    assert!(b.failed_reason.unwrap().contains("500"));
    let sl = settled(&q, &slow.id).await;
    assert_eq!(sl.attempts_made, 3, "a timeout is retried");
    assert!(sl.failed_reason.unwrap().contains("timed out"));
    let bd = settled(&q, &bad.id).await;
    assert_eq!(bd.attempts_made, 3, "malformed JSON is retried");
    assert!(bd.failed_reason.unwrap().contains("not JSON"));
    let rf = settled(&q, &refused.id).await;
    assert_eq!(rf.attempts_made, 1, "400 is unrecoverable");
    assert!(rf.failed_reason.unwrap().contains("400"));
    let l = settled(&q, &long.id).await;
    assert_eq!(l.attempts_made, 1);
    assert!(l.failed_reason.unwrap().contains("max_prompt_chars is 200"));
    let m = settled(&q, &missing.id).await;
    assert!(m
        .failed_reason
        .unwrap()
        .contains("variable lang is undefined"));

    // What the provider received.
    let requests = provider.requests.lock().unwrap().clone();
    let first = requests
        .iter()
        .find(|(_, b)| b["messages"][1]["content"] == "ok: Rust is fast.")
        .expect("the ok request")
        .1
        .clone();
    assert_eq!(first["model"], "openai/gpt-4o-mini");
    assert_eq!(
        first["messages"][0],
        json!({"role": "system", "content": "You summarize English articles."})
    );
    assert_eq!(first["max_tokens"], 256);
    assert_eq!(first["temperature"], 0.2);
    let seo_req = requests
        .iter()
        .find(|(_, b)| b["messages"][0]["content"] == "json: optimize Rust")
        .unwrap();
    assert_eq!(seo_req.1["response_format"], json!({"type": "json_object"}));
    let rate_times: Vec<Instant> = requests
        .iter()
        .filter(|(_, b)| b["messages"][1]["content"] == "rate: Rust is fast.")
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(rate_times.len(), 2);
    assert!(
        rate_times[1] - rate_times[0] >= Duration::from_millis(950),
        "Retry-After: 1 was honoured ({:?})",
        rate_times[1] - rate_times[0]
    );
    assert!(
        !requests
            .iter()
            .any(|(_, b)| b.to_string().contains(&"x".repeat(300))),
        "an oversized prompt is never sent"
    );

    // The records (written off the hot path: flushed here).
    keel::runner::close_all(workers, Duration::from_secs(5))
        .await
        .unwrap();
    handlers.close().await;
    let all = AiFilter::default();
    let runs = db
        .store
        .list_ai_runs(&Scope::All, &all, 1, 100)
        .await
        .unwrap()
        .items;
    let of = |id: &str| {
        let mut v: Vec<_> = runs
            .iter()
            .filter(|r| r.run.job_id == id)
            .cloned()
            .collect();
        v.sort_by_key(|r| r.id);
        v
    };
    let okr = &of(&ok.id)[0];
    assert_eq!(
        (
            okr.run.status.as_str(),
            okr.run.prompt_tokens,
            okr.run.completion_tokens,
            okr.total_tokens
        ),
        ("completed", 120, 30, 150)
    );
    assert!((okr.run.cost_usd - (120.0 * 0.15 + 30.0 * 0.60) / 1e6).abs() < 1e-12);
    assert_eq!(okr.run.provider, "openrouter");
    assert_eq!(okr.run.http_status, Some(200));
    assert_eq!(okr.run.job_name, "summarize_article");
    let statuses = |id: &str| {
        of(id)
            .iter()
            .map(|r| r.run.status.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(statuses(&rate.id), ["retrying", "completed"]);
    assert_eq!(of(&rate.id)[0].run.http_status, Some(429));
    assert_eq!(statuses(&boom.id), ["retrying", "retrying", "failed"]);
    assert_eq!(statuses(&refused.id), ["failed"]);
    assert_eq!(statuses(&long.id), ["failed"]);

    let by_run = AiFilter {
        run_id: Some(okr.id),
        ..Default::default()
    };
    let messages = db
        .store
        .list_ai_messages(&Scope::All, &by_run, 1, 10)
        .await
        .unwrap()
        .items;
    assert_eq!(
        messages.iter().map(|m| m.role.as_str()).collect::<Vec<_>>(),
        ["system", "user", "assistant"]
    );
    assert_eq!(
        messages[2].content, "A short su",
        "bounded by max_record_chars"
    );
    assert!(messages[2].truncated);
    let evs = db
        .store
        .list_ai_events(&Scope::All, &by_run, 1, 10)
        .await
        .unwrap()
        .items;
    let mut kinds: Vec<_> = evs.iter().map(|e| e.kind.as_str()).collect();
    kinds.reverse();
    assert_eq!(kinds, ["request", "response", "completed"]);
    assert!(evs[0].message.contains("\"costUsd\""));
    let rate_events = db
        .store
        .list_ai_events(
            &Scope::All,
            &AiFilter {
                job_id: Some(rate.id.clone()),
                ..Default::default()
            },
            1,
            20,
        )
        .await
        .unwrap()
        .items;
    assert!(rate_events
        .iter()
        .any(|e| e.kind == "retry" && e.message.contains("1000")));
    let tasks = db
        .store
        .list_ai_tasks(&Scope::All, &all, 1, 100)
        .await
        .unwrap();
    let t = tasks.items.iter().find(|t| t.job_id == rate.id).unwrap();
    assert_eq!((t.runs, t.status.as_str()), (2, "completed"));

    // The key never reaches a record or an event.
    let everything = format!(
        "{runs:?}{:?}{:?}",
        db.store
            .list_ai_messages(&Scope::All, &all, 1, 1000)
            .await
            .unwrap(),
        db.store
            .list_ai_events(&Scope::All, &all, 1, 1000)
            .await
            .unwrap()
    );
    assert!(!everything.contains(KEY));
    assert!(events
        .lock()
        .unwrap()
        .iter()
        .any(|e| e.contains("summarize_article")));
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .all(|e| !e.ends_with(", None)")),
        "the observer hears of a call once it is recorded, with its id"
    );
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ai_settings_name_their_key_at_start() {
    let backend = redis().await;
    let only = ["ai-content".to_string()];
    let cases = [
        (
            "model = \"m\"\nprompt = \"p\"\n",
            "queues.ai-content.handler.api_key_env",
            false,
        ),
        ("model = \"m\"\n", "queues.ai-content.handler", true),
        (
            "model = \"m\"\nprompt = \"{{ x \"\n",
            "queues.ai-content.handler.prompt",
            true,
        ),
        (
            "model = \"m\"\nprompt = \"p\"\ntemperature = 3.0\n",
            "queues.ai-content.handler.temperature",
            true,
        ),
        (
            "model = \"m\"\nprompt = \"p\"\nprovider = \"local\"\n",
            "queues.ai-content.handler.base_url",
            true,
        ),
        (
            "model = \"m\"\nprompt = \"p\"\nresponse = \"xml\"\n",
            "queues.ai-content.handler.response",
            true,
        ),
    ];
    for (extra, key, with_key) in cases {
        let c = config(&format!(
            "[queues.ai-content.handler]\nkind = \"ai\"\n{extra}"
        ));
        let vars = if with_key {
            env(&[("OPENROUTER_API_KEY", KEY.to_string())])
        } else {
            env(&[])
        };
        let h = Handlers::new(&backend).env(vars);
        let err = keel::runner::start_workers(&c, &backend, &only, &h, None)
            .await
            .err()
            .unwrap_or_else(|| panic!("{extra} started"));
        assert_eq!(err.field(), Some(key), "{extra}: {err}");
        if !with_key {
            assert!(err.to_string().contains("OPENROUTER_API_KEY"), "{err}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_a_header_cannot_carry_is_refused_at_start() {
    let backend = redis().await;
    let c = config("[queues.ai-content.handler]\nkind = \"ai\"\nmodel = \"m\"\nprompt = \"p\"\n");
    let h = Handlers::new(&backend).env(env(&[("OPENROUTER_API_KEY", "sk\nx".to_string())]));
    let err = keel::runner::start_workers(&c, &backend, &["ai-content".to_string()], &h, None)
        .await
        .err()
        .expect("a key with a newline");
    assert_eq!(err.field(), Some("queues.ai-content.handler.api_key_env"));
    assert!(
        !err.to_string().contains("sk\nx"),
        "the key is not shown: {err}"
    );
}

/// A provider that sends its headers and part of the answer, then stalls: the request's
/// timeout runs on over the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_stalls_midway_times_out_and_is_retried() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0; 64 * 1024];
                let _ = conn.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 400\r\n\r\n{\"choices\": [";
                let _ = conn.write_all(head.as_bytes()).await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            });
        }
    });
    let c = config(&format!(
        "[queues.ai-content]\nattempts = 2\nbackoff = {{ type = \"fixed\", delay_ms = 10 }}\n[queues.ai-content.handler]\nkind = \"ai\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\nmodel = \"m\"\nprompt = \"p\"\ntimeout_ms = 300\n"
    ));
    let backend = redis().await;
    let h = Handlers::new(&backend).env(env(&[("OPENROUTER_API_KEY", KEY.to_string())]));
    let workers = keel::runner::start_workers(&c, &backend, &["ai-content".to_string()], &h, None)
        .await
        .unwrap();
    let q = c.queue(&backend, "ai-content").unwrap();
    let started = Instant::now();
    let job = q
        .add("summarize_article", json!({}), JobOptions::default())
        .await
        .unwrap();
    let done = settled(&q, &job.id).await;
    assert_eq!(done.attempts_made, 2, "a timeout is retried");
    let reason = done.failed_reason.unwrap();
    assert!(reason.contains("timed out after 300 ms"), "{reason}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "not the stall's 5 s"
    );
    keel::runner::close_all(workers, Duration::from_secs(5))
        .await
        .unwrap();
}
