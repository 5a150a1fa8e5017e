//! `/ai`: AI calls per model over the last 24 hours (calls, tokens, cost, latency) and the
//! runs, filtered (live); `/ai/runs/{id}`: one call's messages and events; `/emails`: the
//! email sends with their status (live).

use std::fmt::Write;

use askama::Template;
use axum::extract::{Path, RawQuery};
use axum::response::Response;
use keel_records::messages::{AiRun, AiUsage, EmailLog};
use serde::Deserialize;

use crate::console::ctx::Ctx;
use crate::console::page::{Layout, PAGE_SIZE};
use crate::console::view::{self, enc, esc, query, short, time, Pager};
use crate::extract::parse_query;
use crate::ops;
use crate::ops::messages::{AiQuery, EmailQuery};

/// Hours the usage charts cover.
const HOURS: i64 = 24;

/// The AI page's query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AiParams {
    status: Option<String>,
    model: Option<String>,
    task: Option<String>,
    page: Option<usize>,
}

struct RunRow {
    href: String,
    started: String,
    queue: String,
    task: String,
    job_href: String,
    job_id: String,
    model: String,
    status: String,
    attempt: i64,
    tokens: i64,
    cost: String,
    latency: String,
    error: String,
}

fn dollars(v: f64) -> String {
    if v == 0.0 {
        "$0".into()
    } else if v < 0.01 {
        format!("${v:.6}")
    } else {
        format!("${v:.4}")
    }
}

impl From<&AiRun> for RunRow {
    fn from(r: &AiRun) -> RunRow {
        RunRow {
            href: format!("/ai/runs/{}", r.id),
            started: time(r.run.started_at),
            queue: r.run.queue.clone(),
            task: r.run.job_name.clone(),
            job_href: format!("/queues/{}/jobs/{}", enc(&r.run.queue), enc(&r.run.job_id)),
            job_id: r.run.job_id.clone(),
            model: r.run.model.clone(),
            status: r.run.status.clone(),
            attempt: r.run.attempt,
            tokens: r.total_tokens,
            cost: dollars(r.run.cost_usd),
            latency: view::duration(r.run.latency_ms),
            error: short(r.run.error.as_deref().unwrap_or_default(), 120),
        }
    }
}

/// One model's last 24 hours: totals and a chart per measure.
struct ModelUsage {
    model: String,
    runs: i64,
    failed: i64,
    tokens: i64,
    cost: String,
    latency: String,
    tokens_chart: String,
    cost_chart: String,
    latency_chart: String,
}

/// A small bar chart of one measure per hour (oldest left), with a tooltip per bar.
fn sparkline(label: &str, hours: &[(i64, f64)], fmt: &dyn Fn(f64) -> String) -> String {
    let max = hours.iter().map(|(_, v)| *v).fold(0.0_f64, f64::max);
    let (w, h) = (240.0_f64, 40.0_f64);
    let slot = w / hours.len().max(1) as f64;
    let bar = (slot * 0.8).max(1.0);
    let mut out = format!(
        "<svg class=\"spark\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{} per hour, last {HOURS} hours\">",
        esc(label)
    );
    for (i, (hour, v)) in hours.iter().enumerate() {
        let bh = if max > 0.0 { v / max * (h - 2.0) } else { 0.0 };
        let at = chrono::DateTime::from_timestamp_millis(*hour)
            .map(|t| t.format("%H:00 UTC").to_string())
            .unwrap_or_default();
        let _ = write!(
            out,
            "<g class=\"bar\"><title>{at}: {} {}</title><rect class=\"hit\" x=\"{:.1}\" y=\"0\" width=\"{bar:.1}\" height=\"{h}\"/><rect class=\"completed\" x=\"{:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{bh:.1}\"/></g>",
            esc(&fmt(*v)),
            esc(label),
            i as f64 * slot,
            i as f64 * slot,
            h - bh
        );
    }
    out.push_str("</svg>");
    out
}

fn usage_by_model(usage: &[AiUsage], now_hour: i64) -> Vec<ModelUsage> {
    let first = now_hour - (HOURS - 1) * 3_600_000;
    let mut models: Vec<String> = usage.iter().map(|u| u.model.clone()).collect();
    models.sort();
    models.dedup();
    models
        .into_iter()
        .map(|model| {
            let of: Vec<&AiUsage> = usage.iter().filter(|u| u.model == model).collect();
            let series = |f: &dyn Fn(&AiUsage) -> f64| -> Vec<(i64, f64)> {
                (0..HOURS)
                    .map(|i| {
                        let hour = first + i * 3_600_000;
                        let v = of
                            .iter()
                            .find(|u| u.hour == hour)
                            .map(|u| f(u))
                            .unwrap_or(0.0);
                        (hour, v)
                    })
                    .collect()
            };
            let runs: i64 = of.iter().map(|u| u.runs).sum();
            let latency = if runs > 0 {
                of.iter()
                    .map(|u| u.avg_latency_ms * u.runs as f64)
                    .sum::<f64>()
                    / runs as f64
            } else {
                0.0
            };
            ModelUsage {
                runs,
                failed: of.iter().map(|u| u.failed).sum(),
                tokens: of.iter().map(|u| u.total_tokens).sum(),
                cost: dollars(of.iter().map(|u| u.cost_usd).sum()),
                latency: view::duration(latency as i64),
                tokens_chart: sparkline("tokens", &series(&|u| u.total_tokens as f64), &|v| {
                    format!("{v:.0}")
                }),
                cost_chart: sparkline("cost", &series(&|u| u.cost_usd), &|v| dollars(v)),
                latency_chart: sparkline("mean latency", &series(&|u| u.avg_latency_ms), &|v| {
                    view::duration(v as i64)
                }),
                model,
            }
        })
        .collect()
}

#[derive(Template)]
#[template(path = "console/ai.html")]
struct AiPage {
    layout: Layout,
    usage: Vec<ModelUsage>,
    runs: Vec<RunRow>,
    pager: Pager,
    status: String,
    model: String,
    task: String,
    models: Vec<String>,
}

/// `GET /ai?status=&model=&task=&page=`.
pub async fn ai(ctx: Ctx, RawQuery(raw): RawQuery) -> Response {
    let p: AiParams = match parse_query(raw.as_deref()) {
        Ok(p) => p,
        Err(e) => return ctx.failed(e),
    };
    let page = p.page.unwrap_or(1).max(1);
    let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    let q = AiQuery {
        status: nonempty(&p.status),
        model: nonempty(&p.model),
        task: nonempty(&p.task),
        page: Some(page),
        limit: Some(PAGE_SIZE),
        ..Default::default()
    };
    let (listed, usage) = tokio::join!(
        ops::messages::ai_runs(&ctx.state, &ctx.caller, &q),
        ops::messages::ai_usage(&ctx.state, &ctx.caller, Some(HOURS))
    );
    let listed = match listed {
        Ok(r) => r.value,
        Err(e) => return ctx.failed(e),
    };
    let usage = usage.map(|u| u.value).unwrap_or_default();
    let now_hour = keel::now_ms() as i64 / 3_600_000 * 3_600_000;
    let (status, model, task) = (
        p.status.unwrap_or_default(),
        p.model.unwrap_or_default(),
        p.task.unwrap_or_default(),
    );
    let link = |n: usize| {
        format!(
            "/ai{}",
            query(&[
                ("status", &status),
                ("model", &model),
                ("task", &task),
                ("page", &n.to_string()),
            ])
        )
    };
    let by_model = usage_by_model(&usage, now_hour);
    ctx.page(AiPage {
        layout: ctx.layout("AI", "ai").live("ai"),
        models: by_model.iter().map(|m| m.model.clone()).collect(),
        usage: by_model,
        runs: listed.items.iter().map(RunRow::from).collect(),
        pager: Pager::new(page, PAGE_SIZE, listed.total as u64, link).of("runs"),
        status,
        model,
        task,
    })
}

struct MessageRow {
    role: String,
    content: String,
    truncated: bool,
}

struct EventRow {
    at: String,
    kind: String,
    message: String,
}

#[derive(Template)]
#[template(path = "console/ai_run.html")]
struct AiRunPage {
    layout: Layout,
    id: i64,
    r: RunRow,
    provider: String,
    prompt_tokens: i64,
    completion_tokens: i64,
    http_status: String,
    trace_id: String,
    error: String,
    messages: Vec<MessageRow>,
    events: Vec<EventRow>,
    task_href: String,
}

/// `GET /ai/runs/{id}`.
pub async fn ai_run(ctx: Ctx, Path(id): Path<String>) -> Response {
    let d = match ops::messages::ai_run(&ctx.state, &ctx.caller, &id).await {
        Ok(d) => d,
        Err(e) => return ctx.failed(e),
    };
    let run = &d.run.run;
    ctx.page(AiRunPage {
        layout: ctx.layout(format!("AI run {}", d.run.id), "ai"),
        id: d.run.id,
        provider: run.provider.clone(),
        prompt_tokens: run.prompt_tokens,
        completion_tokens: run.completion_tokens,
        http_status: run
            .http_status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "—".into()),
        trace_id: run.trace_id.clone(),
        error: run.error.clone().unwrap_or_default(),
        task_href: format!("/ai{}", query(&[("task", &run.job_name)])),
        messages: d
            .messages
            .iter()
            .map(|m| MessageRow {
                role: m.role.clone(),
                content: m.content.clone(),
                truncated: m.truncated,
            })
            .collect(),
        events: d
            .events
            .iter()
            .map(|e| EventRow {
                at: time(e.at),
                kind: e.kind.clone(),
                message: e.message.clone(),
            })
            .collect(),
        r: RunRow::from(&d.run),
    })
}

/// The email page's query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailParams {
    status: Option<String>,
    template: Option<String>,
    page: Option<usize>,
}

struct EmailRow {
    at: String,
    queue: String,
    job_href: String,
    job_id: String,
    template: String,
    recipient: String,
    subject: String,
    status: String,
    attempt: i64,
    smtp: String,
    duration: String,
    error: String,
}

impl From<&EmailLog> for EmailRow {
    fn from(l: &EmailLog) -> EmailRow {
        let e = &l.email;
        EmailRow {
            at: time(e.created_at),
            queue: e.queue.clone(),
            job_href: format!("/queues/{}/jobs/{}", enc(&e.queue), enc(&e.job_id)),
            job_id: e.job_id.clone(),
            template: e.template.clone(),
            recipient: e.recipient.clone(),
            subject: short(&e.subject, 80),
            status: e.status.clone(),
            attempt: e.attempt,
            smtp: match (e.smtp_code, &e.smtp_reply) {
                (Some(c), Some(r)) => short(&format!("{c} {r}"), 80),
                (Some(c), None) => c.to_string(),
                _ => "—".into(),
            },
            duration: view::duration(e.duration_ms),
            error: short(e.error.as_deref().unwrap_or_default(), 120),
        }
    }
}

#[derive(Template)]
#[template(path = "console/emails.html")]
struct EmailsPage {
    layout: Layout,
    emails: Vec<EmailRow>,
    pager: Pager,
    status: String,
    template: String,
}

/// `GET /emails?status=&template=&page=`.
pub async fn emails(ctx: Ctx, RawQuery(raw): RawQuery) -> Response {
    let p: EmailParams = match parse_query(raw.as_deref()) {
        Ok(p) => p,
        Err(e) => return ctx.failed(e),
    };
    let page = p.page.unwrap_or(1).max(1);
    let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    let q = EmailQuery {
        status: nonempty(&p.status),
        template: nonempty(&p.template),
        page: Some(page),
        limit: Some(PAGE_SIZE),
        ..Default::default()
    };
    let listed = match ops::messages::emails(&ctx.state, &ctx.caller, &q).await {
        Ok(r) => r.value,
        Err(e) => return ctx.failed(e),
    };
    let (status, template) = (p.status.unwrap_or_default(), p.template.unwrap_or_default());
    let link = |n: usize| {
        format!(
            "/emails{}",
            query(&[
                ("status", &status),
                ("template", &template),
                ("page", &n.to_string())
            ])
        )
    };
    ctx.page(EmailsPage {
        layout: ctx.layout("Emails", "emails").live("emails"),
        emails: listed.items.iter().map(EmailRow::from).collect(),
        pager: Pager::new(page, PAGE_SIZE, listed.total as u64, link).of("sends"),
        status,
        template,
    })
}
