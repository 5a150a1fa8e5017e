//! `/queues`: every queue with its counts; pause and resume.

use askama::Template;
use axum::extract::{Path, RawForm};
use axum::response::Response;

use crate::console::ctx::Ctx;
use crate::console::page::{Form, Layout};
use crate::console::view::enc;
use crate::ops;
use crate::ops::queues::QueueStats;

/// One queue's row.
pub struct QueueRow {
    pub name: String,
    pub href: String,
    pub tenant: String,
    pub waiting: u64,
    pub active: u64,
    pub delayed: u64,
    pub prioritized: u64,
    pub completed: u64,
    pub failed: u64,
    pub dlq: u64,
    pub paused: bool,
}

impl From<QueueStats> for QueueRow {
    fn from(q: QueueStats) -> QueueRow {
        QueueRow {
            href: format!("/queues/{}", enc(&q.name)),
            tenant: q.tenant.unwrap_or_default(),
            waiting: q.counts.waiting,
            active: q.counts.active,
            delayed: q.counts.delayed,
            prioritized: q.counts.prioritized,
            completed: q.counts.completed,
            failed: q.counts.failed,
            dlq: q.dlq,
            paused: q.counts.paused,
            name: q.name,
        }
    }
}

#[derive(Template)]
#[template(path = "console/queues.html")]
struct QueuesPage {
    layout: Layout,
    queues: Vec<QueueRow>,
}

/// `GET /queues`.
pub async fn queues(ctx: Ctx) -> Response {
    match ops::queues::list(&ctx.state, &ctx.caller).await {
        Ok(read) => ctx.page(QueuesPage {
            layout: ctx.layout("Queues", "queues").live("queues"),
            queues: read.value.into_iter().map(QueueRow::from).collect(),
        }),
        Err(e) => ctx.failed(e),
    }
}

/// `POST /queues/{queue}/pause`.
pub async fn pause(ctx: Ctx, Path(q): Path<String>, RawForm(raw): RawForm) -> Response {
    set_paused(ctx, q, raw, true).await
}

/// `POST /queues/{queue}/resume`.
pub async fn resume(ctx: Ctx, Path(q): Path<String>, RawForm(raw): RawForm) -> Response {
    set_paused(ctx, q, raw, false).await
}

async fn set_paused(ctx: Ctx, q: String, raw: axum::body::Bytes, pause: bool) -> Response {
    let form = Form::parse(&raw);
    if let Some(r) = ctx.refuse(&form) {
        return r;
    }
    let done = if pause { "paused" } else { "resumed" };
    let result = ops::queues::set_paused(&ctx.state, &ctx.caller, &q, pause).await;
    ctx.outcome(
        &form,
        "/queues",
        result.map(|_| format!("Queue {q} {done}.")),
    )
}
