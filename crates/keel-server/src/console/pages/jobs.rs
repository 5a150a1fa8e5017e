//! `/queues/{queue}`: a queue's jobs by state, with search, paging and the per-job retry and
//! remove buttons.

use askama::Template;
use axum::extract::{Path, RawForm, RawQuery};
use axum::response::Response;
use serde::Deserialize;

use crate::console::ctx::Ctx;
use crate::console::page::{Form, Layout, PAGE_SIZE};
use crate::console::view::{enc, query, short, time_of, Pager};
use crate::extract::parse_query;
use crate::ops;
use crate::ops::jobs::JobsQuery;

/// The job states with a tab, in order.
pub const STATES: [&str; 6] = [
    "waiting",
    "active",
    "delayed",
    "prioritized",
    "completed",
    "failed",
];

struct Tab {
    state: &'static str,
    count: u64,
    href: String,
    current: bool,
}

struct JobRow {
    id: String,
    href: String,
    name: String,
    data: String,
    attempts: u64,
    created: String,
    finished: String,
    error: String,
    retry_href: String,
    remove_href: String,
}

#[derive(Template)]
#[template(path = "console/jobs.html")]
struct JobsPage {
    layout: Layout,
    queue: String,
    qhref: String,
    paused: bool,
    tabs: Vec<Tab>,
    state: String,
    total: u64,
    dlq: u64,
    jobs: Vec<JobRow>,
    search: String,
    name: String,
    filtering: bool,
    pager: Pager,
    more: String,
    empty: String,
}

#[derive(Deserialize)]
struct JobsParams {
    state: Option<String>,
    page: Option<usize>,
    search: Option<String>,
    name: Option<String>,
    cursor: Option<String>,
}

fn empty_sentence(state: &str, queue: &str, filtering: bool) -> String {
    if filtering {
        return "No job matches this search. The search looks at job names and data (the \
                newest 5,000 jobs of the state); clear it to see every job."
            .into();
    }
    match state {
        "waiting" => format!("No job is waiting in {queue}. Jobs added with POST /api/owner/queues/{queue}/jobs (or Queue::add) wait here until a worker takes them."),
        "active" => format!("No job of {queue} is running. Jobs show here while a worker processes them."),
        "delayed" => format!("No delayed job in {queue}. Jobs added with a delay, and failed attempts waiting for their backoff, show here."),
        "prioritized" => format!("No prioritized job in {queue}. Jobs added with a priority wait here."),
        "completed" => format!("No completed job in {queue} yet. Jobs that finish show here (until removeOnComplete trims them)."),
        "failed" => format!("No failed job in {queue}. Jobs whose last attempt failed show here; they are also copied to the DLQ."),
        _ => "Nothing here.".into(),
    }
}

/// `GET /queues/{queue}?state=&page=&search=&name=&cursor=`.
pub async fn jobs(ctx: Ctx, Path(q): Path<String>, RawQuery(raw): RawQuery) -> Response {
    let p: JobsParams = match parse_query(raw.as_deref()) {
        Ok(p) => p,
        Err(e) => return ctx.failed(e),
    };
    let state = p.state.clone().unwrap_or_else(|| "waiting".into());
    let page = p.page.unwrap_or(1).max(1);
    let search = p.search.clone().unwrap_or_default();
    let name = p.name.clone().unwrap_or_default();
    let filtering = !search.is_empty() || !name.is_empty();
    let qe = enc(&q);
    let stats = match ops::queues::stats(&ctx.state, &ctx.caller, &q).await {
        Ok(r) => r.value,
        Err(e) => return ctx.failed(e),
    };
    let cursor = p.cursor.clone().filter(|c| !c.is_empty());
    let listing = JobsQuery {
        state: Some(state.clone()),
        limit: Some(PAGE_SIZE),
        page: cursor.is_none().then_some(page),
        cursor: cursor.clone(),
        search: Some(search.clone()).filter(|s| !s.is_empty()),
        name: Some(name.clone()).filter(|s| !s.is_empty()),
    };
    let listed = match ops::jobs::list(&ctx.state, &ctx.caller, &q, &listing).await {
        Ok(v) => v,
        Err(e) => return ctx.failed(e),
    };
    let link = |st: &str, page: usize, cursor: &str| {
        let page_s = if page > 1 {
            page.to_string()
        } else {
            String::new()
        };
        format!(
            "/queues/{qe}{}",
            query(&[
                ("state", st),
                ("page", &page_s),
                ("cursor", cursor),
                ("search", &search),
                ("name", &name),
            ])
        )
    };
    let total = listed.total;
    let pager = if filtering {
        Pager {
            page: 1,
            pages: 1,
            total,
            prev: None,
            next: None,
            unit: "jobs",
        }
    } else {
        Pager::new(page, PAGE_SIZE, total, |n| link(&state, n, ""))
    };
    let more = if filtering {
        listed
            .next_cursor
            .as_deref()
            .map(|c| link(&state, 1, c))
            .unwrap_or_default()
    } else {
        String::new()
    };
    let jobs = listed
        .jobs
        .into_iter()
        .map(|j| {
            let ide = enc(&j.id);
            JobRow {
                href: format!("/queues/{qe}/jobs/{ide}"),
                retry_href: format!("/queues/{qe}/jobs/{ide}/retry"),
                remove_href: format!("/queues/{qe}/jobs/{ide}/remove"),
                data: short(&j.data.to_string(), 80),
                attempts: u64::from(j.attempts_made),
                created: time_of(Some(j.timestamp as i64)),
                finished: time_of(j.finished_on.map(|t| t as i64)),
                error: short(j.failed_reason.as_deref().unwrap_or_default(), 120),
                name: j.name,
                id: j.id,
            }
        })
        .collect();
    let tabs = STATES
        .iter()
        .map(|s| Tab {
            state: s,
            count: stats.count(s),
            href: link(s, 1, ""),
            current: *s == state,
        })
        .collect();
    ctx.page(JobsPage {
        layout: ctx
            .layout(format!("{q} · {state}"), "queues")
            .live(format!("queue:{q}")),
        empty: empty_sentence(&state, &q, filtering),
        qhref: format!("/queues/{qe}"),
        paused: stats.counts.paused,
        dlq: stats.dlq,
        queue: q,
        tabs,
        state,
        total,
        jobs,
        search,
        name,
        filtering,
        pager,
        more,
    })
}

/// `POST /queues/{queue}/jobs/{id}/retry`.
pub async fn retry_job(
    ctx: Ctx,
    Path((q, id)): Path<(String, String)>,
    RawForm(raw): RawForm,
) -> Response {
    job_action(ctx, q, id, raw, true).await
}

/// `POST /queues/{queue}/jobs/{id}/remove`.
pub async fn remove_job(
    ctx: Ctx,
    Path((q, id)): Path<(String, String)>,
    RawForm(raw): RawForm,
) -> Response {
    job_action(ctx, q, id, raw, false).await
}

async fn job_action(
    ctx: Ctx,
    q: String,
    id: String,
    raw: axum::body::Bytes,
    retry: bool,
) -> Response {
    let form = Form::parse(&raw);
    if let Some(r) = ctx.refuse(&form) {
        return r;
    }
    let fallback = format!("/queues/{}", enc(&q));
    let result = if retry {
        ops::jobs::retry(&ctx.state, &ctx.caller, &q, &id)
            .await
            .map(|_| format!("Job {id} retried."))
    } else {
        ops::jobs::remove(&ctx.state, &ctx.caller, &q, &id)
            .await
            .map(|_| format!("Job {id} removed."))
    };
    ctx.outcome(&form, &fallback, result)
}
