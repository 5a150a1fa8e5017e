//! `/queues/{queue}/jobs/{id}`: one job — its times, attempts, progress, data, options,
//! result or error with stack, log lines and runs.

use askama::Template;
use axum::extract::Path;
use axum::response::Response;
use keel::JobState;
use serde_json::Value;

use super::runs::RunRow;
use crate::console::ctx::Ctx;
use crate::console::page::Layout;
use crate::console::view::{self, enc, time, time_of};
use crate::ops;

struct TimeRow {
    label: &'static str,
    value: String,
}

#[derive(Template)]
#[template(path = "console/job.html")]
struct JobPage {
    layout: Layout,
    queue: String,
    qhref: String,
    id: String,
    name: String,
    state: String,
    attempts: String,
    times: Vec<TimeRow>,
    progress: Option<u64>,
    progress_json: String,
    data: String,
    opts: String,
    returnvalue: String,
    error: String,
    stack: String,
    logs: Vec<String>,
    log_count: u64,
    runs: Vec<RunRow>,
    retry_href: String,
    remove_href: String,
    can_retry: bool,
}

/// `GET /queues/{queue}/jobs/{id}`.
pub async fn job(ctx: Ctx, Path((q, id)): Path<(String, String)>) -> Response {
    let (qe, ide) = (enc(&q), enc(&id));
    let detail = match ops::jobs::get(&ctx.state, &ctx.caller, &q, &id).await {
        Ok(d) => d,
        Err(e) => return ctx.failed(e),
    };
    let j = &detail.job;
    let created = (j.timestamp > 0).then_some(j.timestamp as i64);
    let started = j.processed_on.filter(|v| *v > 0).map(|v| v as i64);
    let finished = j.finished_on.filter(|v| *v > 0).map(|v| v as i64);
    let mut times = vec![TimeRow {
        label: "Created",
        value: time_of(created),
    }];
    if let Some(p) = started {
        times.push(TimeRow {
            label: "Started",
            value: time(p),
        });
        if let Some(c) = created {
            times.push(TimeRow {
                label: "Waited",
                value: view::duration((p - c).max(0)),
            });
        }
    }
    if let Some(f) = finished {
        times.push(TimeRow {
            label: "Finished",
            value: time(f),
        });
        if let Some(p) = started {
            times.push(TimeRow {
                label: "Ran for",
                value: view::duration((f - p).max(0)),
            });
        }
    }
    let delay = j.opts.delay_ms.unwrap_or(0);
    if delay > 0 {
        times.push(TimeRow {
            label: "Delay",
            value: view::duration(delay as i64),
        });
    }
    let active = detail.state == Some(JobState::Active);
    // BullMQ starts every job at progress 0: a bar only once a handler reported some (or the
    // job is running).
    let progress = j
        .progress
        .as_u64()
        .filter(|p| *p <= 100 && (*p > 0 || active));
    let progress_json = match &j.progress {
        Value::Number(n) if n.as_u64().is_some_and(|p| p <= 100) => String::new(),
        Value::Null | Value::Bool(false) => String::new(),
        other => view::json_viewer("progress", other),
    };
    let state = detail
        .state
        .and_then(|s| serde_json::to_value(s).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    let max_attempts = j.opts.attempts.unwrap_or(1);
    let returnvalue = match &j.returnvalue {
        None | Some(Value::Null) => String::new(),
        Some(r) => view::json_viewer("returnvalue", r),
    };
    let opts = serde_json::to_value(&j.opts).unwrap_or(Value::Null);
    ctx.page(JobPage {
        layout: ctx.layout(format!("Job {id} · {q}"), "queues"),
        qhref: format!("/queues/{qe}"),
        name: j.name.clone(),
        attempts: format!(
            "{} made of {max_attempts} (started {}, stalled {})",
            j.attempts_made, j.attempts_started, j.stalled_counter
        ),
        times,
        progress,
        progress_json,
        data: view::json_viewer("data", &j.data),
        opts: view::json_viewer("opts", &opts),
        returnvalue,
        error: j.failed_reason.clone().unwrap_or_default(),
        stack: j.stacktrace.join("\n\n"),
        log_count: detail.log_count,
        runs: detail.runs.iter().map(RunRow::from).collect(),
        logs: detail.logs,
        retry_href: format!("/queues/{qe}/jobs/{ide}/retry"),
        remove_href: format!("/queues/{qe}/jobs/{ide}/remove"),
        can_retry: state == "failed" || state == "completed",
        state,
        queue: q,
        id,
    })
}
