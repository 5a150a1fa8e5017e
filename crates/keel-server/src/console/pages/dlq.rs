//! `/queues/{queue}/dlq`: a queue's dead letters; replay all (after a dry run), replay or
//! remove one.

use askama::Template;
use axum::extract::{Path, RawForm, RawQuery};
use axum::response::Response;
use serde::Deserialize;

use crate::console::ctx::Ctx;
use crate::console::page::{ConfirmPage, Form, Layout, PAGE_SIZE};
use crate::console::view::{self, enc, time_of, Pager};
use crate::extract::parse_query;
use crate::ops;

struct DlqRow {
    id: String,
    original_queue: String,
    original_job: String,
    original_href: String,
    name: String,
    error: String,
    failed_at: String,
    attempts: u64,
    data: String,
    stack: String,
    replay_href: String,
    remove_href: String,
}

#[derive(Template)]
#[template(path = "console/dlq.html")]
struct DlqPage {
    layout: Layout,
    queue: String,
    qhref: String,
    entries: Vec<DlqRow>,
    pager: Pager,
    replay_all_href: String,
}

#[derive(Deserialize)]
struct PageParams {
    page: Option<usize>,
}

/// `GET /queues/{queue}/dlq?page=`.
pub async fn dlq(ctx: Ctx, Path(q): Path<String>, RawQuery(raw): RawQuery) -> Response {
    let p: PageParams = match parse_query(raw.as_deref()) {
        Ok(p) => p,
        Err(e) => return ctx.failed(e),
    };
    let page = p.page.unwrap_or(1).max(1);
    let qe = enc(&q);
    let listed =
        match ops::dlq::list(&ctx.state, &ctx.caller, &q, Some(page), Some(PAGE_SIZE)).await {
            Ok(v) => v,
            Err(e) => return ctx.failed(e),
        };
    let entries = listed
        .entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let ide = enc(&e.id);
            let oq = if e.original_queue.is_empty() {
                q.clone()
            } else {
                e.original_queue
            };
            DlqRow {
                original_href: format!("/queues/{}/jobs/{}", enc(&oq), enc(&e.original_job_id)),
                name: e.name,
                error: e.last_error,
                failed_at: time_of(Some(e.failed_at as i64)),
                attempts: u64::from(e.attempts),
                data: view::json_viewer(&format!("dlq{i}"), &e.data),
                stack: e.stacktrace.join("\n\n"),
                replay_href: format!("/queues/{qe}/dlq/{ide}/replay"),
                remove_href: format!("/queues/{qe}/dlq/{ide}/remove"),
                original_queue: oq,
                original_job: e.original_job_id,
                id: e.id,
            }
        })
        .collect();
    ctx.page(DlqPage {
        layout: ctx
            .layout(format!("{q} · dead letters"), "queues")
            .live(format!("queue:{q}")),
        qhref: format!("/queues/{qe}"),
        pager: Pager::new(page, PAGE_SIZE, listed.total, |n| {
            format!("/queues/{qe}/dlq?page={n}")
        })
        .of("entries"),
        replay_all_href: format!("/queues/{qe}/dlq/replay"),
        queue: q,
        entries,
    })
}

/// `POST /queues/{queue}/dlq/replay`: a dry run and a confirmation first.
pub async fn replay_all(ctx: Ctx, Path(q): Path<String>, RawForm(raw): RawForm) -> Response {
    let form = Form::parse(&raw);
    if let Some(r) = ctx.refuse(&form) {
        return r;
    }
    let qe = enc(&q);
    let fallback = format!("/queues/{qe}/dlq");
    if form.get("confirm") != Some("yes") {
        let n = match ops::dlq::replay_all(&ctx.state, &ctx.caller, &q, true).await {
            Ok(v) => v.would_replay.unwrap_or(0),
            Err(e) => return ctx.done(&form, &fallback, false, &e.message),
        };
        if n == 0 {
            return ctx.done(
                &form,
                &fallback,
                false,
                "The dead-letter queue is empty: nothing to replay.",
            );
        }
        let plural = if n == 1 { "entry" } else { "entries" };
        return ctx.page(ConfirmPage {
            layout: ctx.layout(format!("Replay {n} {plural}?"), "queues"),
            heading: format!("Replay {n} {plural}?"),
            message: format!(
                "A dry run found {n} dead-letter {plural} for {q}. Replaying adds each job to \
                 {q} again as a new job and removes the entry."
            ),
            action: format!("/queues/{qe}/dlq/replay"),
            fields: vec![
                ("confirm".into(), "yes".into()),
                (
                    "back".into(),
                    form.get("back").unwrap_or(&fallback).to_string(),
                ),
            ],
            confirm: format!("Replay {n} {plural}"),
            cancel: form.get("back").unwrap_or(&fallback).to_string(),
            danger: false,
        });
    }
    let result = ops::dlq::replay_all(&ctx.state, &ctx.caller, &q, false)
        .await
        .map(|v| {
            format!(
                "Replayed {} dead-letter entries into {q}.",
                v.replayed.unwrap_or(0)
            )
        });
    ctx.outcome(&form, &fallback, result)
}

/// `POST /queues/{queue}/dlq/{id}/replay`.
pub async fn replay(
    ctx: Ctx,
    Path((q, id)): Path<(String, String)>,
    RawForm(raw): RawForm,
) -> Response {
    action(ctx, q, id, raw, true).await
}

/// `POST /queues/{queue}/dlq/{id}/remove`.
pub async fn remove(
    ctx: Ctx,
    Path((q, id)): Path<(String, String)>,
    RawForm(raw): RawForm,
) -> Response {
    action(ctx, q, id, raw, false).await
}

async fn action(ctx: Ctx, q: String, id: String, raw: axum::body::Bytes, replay: bool) -> Response {
    let form = Form::parse(&raw);
    if let Some(r) = ctx.refuse(&form) {
        return r;
    }
    let fallback = format!("/queues/{}/dlq", enc(&q));
    let result = if replay {
        ops::dlq::replay(&ctx.state, &ctx.caller, &q, &id)
            .await
            .map(|v| format!("Replayed {id} into {q} as job {}.", v.job.id))
    } else {
        ops::dlq::remove(&ctx.state, &ctx.caller, &q, &id)
            .await
            .map(|_| format!("Removed dead letter {id}."))
    };
    ctx.outcome(&form, &fallback, result)
}
