//! `/runs`: job runs with filters; `/runs/{id}`: one run and its events.

use askama::Template;
use axum::extract::{Path, RawQuery};
use axum::response::Response;
use keel_records::JobRun;

use super::logs::{LogParams, Range};
use crate::console::ctx::Ctx;
use crate::console::page::{Layout, PAGE_SIZE};
use crate::console::view::{self, enc, query, short, time_of, Pager};
use crate::extract::parse_query;
use crate::ops;
use crate::ops::runs::RunQuery;

/// One run's row.
pub struct RunRow {
    pub id: i64,
    pub href: String,
    pub queue: String,
    pub job_id: String,
    pub job_href: String,
    pub name: String,
    pub attempt: i64,
    pub status: String,
    pub started: String,
    pub duration: String,
    pub error: String,
    pub worker: String,
}

impl From<&JobRun> for RunRow {
    fn from(r: &JobRun) -> RunRow {
        RunRow {
            id: r.id,
            href: format!("/runs/{}", r.id),
            job_href: format!("/queues/{}/jobs/{}", enc(&r.queue), enc(&r.job_id)),
            name: r.name.clone(),
            attempt: r.attempt,
            status: r.status.clone(),
            started: time_of(Some(r.started_at)),
            duration: r
                .duration_ms
                .map(view::duration)
                .unwrap_or_else(|| "—".into()),
            error: short(r.error.as_deref().unwrap_or_default(), 120),
            worker: r.worker.clone(),
            queue: r.queue.clone(),
            job_id: r.job_id.clone(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/runs.html")]
struct RunsPage {
    layout: Layout,
    runs: Vec<RunRow>,
    pager: Pager,
    queue: String,
    status: String,
    from: String,
    to: String,
    tz: String,
    filter_error: String,
    queues: Vec<String>,
}

/// `GET /runs?queue=&status=&from=&to=&tz=&page=`.
pub async fn runs(ctx: Ctx, RawQuery(raw): RawQuery) -> Response {
    let p: LogParams = match parse_query(raw.as_deref()) {
        Ok(p) => p,
        Err(e) => return ctx.failed(e),
    };
    let page = p.page.unwrap_or(1).max(1);
    let queue = p.queue.clone().unwrap_or_default();
    let status = p.status.clone().unwrap_or_default();
    let Range {
        from,
        to,
        tz,
        from_api,
        to_api,
        error: filter_error,
    } = Range::of(&p);
    let nonempty = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
    let filter = RunQuery {
        queue: nonempty(&queue),
        plugin: None,
        status: nonempty(&status),
        job_id: p.job_id.clone().filter(|j| !j.is_empty()),
        from: nonempty(&from_api),
        to: nonempty(&to_api),
        page: Some(page),
        limit: Some(PAGE_SIZE),
    };
    let (listed, names) = tokio::join!(
        ops::runs::list(&ctx.state, &ctx.caller, &filter),
        ops::queues::list(&ctx.state, &ctx.caller)
    );
    let listed = match listed {
        Ok(r) => r.value,
        Err(e) => return ctx.failed(e),
    };
    let link = |n: usize| {
        format!(
            "/runs{}",
            query(&[
                ("queue", &queue),
                ("status", &status),
                ("from", &from),
                ("to", &to),
                ("tz", &tz),
                ("page", &n.to_string()),
            ])
        )
    };
    ctx.page(RunsPage {
        layout: ctx.layout("Runs", "runs").live("runs"),
        runs: listed.items.iter().map(RunRow::from).collect(),
        pager: Pager::new(page, PAGE_SIZE, listed.total as u64, link).of("runs"),
        queues: names
            .map(|n| n.value.into_iter().map(|q| q.name).collect())
            .unwrap_or_default(),
        queue,
        status,
        from,
        to,
        tz,
        filter_error,
    })
}

#[derive(Template)]
#[template(path = "console/run.html")]
struct RunPage {
    layout: Layout,
    run: RunRow,
    trace: String,
    finished: String,
    events: Vec<(String, String, String)>,
}

/// `GET /runs/{id}`.
pub async fn run(ctx: Ctx, Path(id): Path<String>) -> Response {
    let detail = match ops::runs::get(&ctx.state, &ctx.caller, &id).await {
        Ok(v) => v,
        Err(e) => return ctx.failed(e),
    };
    ctx.page(RunPage {
        layout: ctx.layout(format!("Run {id}"), "runs"),
        trace: detail.run.trace_id.clone(),
        finished: time_of(detail.run.finished_at),
        events: detail
            .events
            .iter()
            .map(|e| {
                (
                    time_of(Some(e.at)),
                    e.kind.clone(),
                    e.detail.clone().unwrap_or_default(),
                )
            })
            .collect(),
        run: RunRow::from(&detail.run),
    })
}
