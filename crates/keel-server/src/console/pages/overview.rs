//! `/`: the overview — queues, attempts per minute over the last hour, Redis, live workers.

use askama::Template;
use axum::response::Response;

use super::queues::QueueRow;
use super::redis::{redis_panel, RedisPanel};
use crate::console::ctx::Ctx;
use crate::console::page::Layout;
use crate::console::view::{self, time_of};
use crate::ops;

/// Minutes the overview's chart covers.
const CHART_MINUTES: i64 = 60;

struct WorkerRow {
    id: String,
    host: String,
    pid: String,
    queues: String,
    started: String,
}

#[derive(Template)]
#[template(path = "console/overview.html")]
struct OverviewPage {
    layout: Layout,
    queues: Vec<QueueRow>,
    queues_error: String,
    chart: String,
    chart_error: String,
    completed_hour: i64,
    failed_hour: i64,
    redis: RedisPanel,
    workers: Vec<WorkerRow>,
    workers_error: String,
}

/// `GET /`.
pub async fn overview(ctx: Ctx) -> Response {
    let (state, caller) = (&ctx.state, &ctx.caller);
    let (queues, minutes, workers, redis) = tokio::join!(
        ops::queues::list(state, caller),
        ops::runs::per_minute(state, caller, Some(CHART_MINUTES)),
        ops::workers::list(state, caller),
        redis_panel(&ctx),
    );
    let (queues, queues_error) = match queues {
        Ok(r) => (
            r.value.into_iter().map(QueueRow::from).collect(),
            String::new(),
        ),
        Err(e) => (Vec::new(), e.message),
    };
    let (chart, chart_error, completed_hour, failed_hour) = match minutes {
        Ok(r) => {
            let m = r.value.minutes;
            (
                view::chart(&m),
                String::new(),
                m.iter().map(|x| x.completed).sum(),
                m.iter().map(|x| x.failed).sum(),
            )
        }
        Err(e) => (String::new(), e.message, 0, 0),
    };
    let (workers, workers_error) = match workers {
        Ok(w) => (
            w.workers
                .into_iter()
                .map(|w| WorkerRow {
                    pid: w
                        .pid
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| "null".into()),
                    queues: w.queues.join(", "),
                    started: time_of(w.started_at.map(|t| t as i64)),
                    id: w.id,
                    host: w.host,
                })
                .collect(),
            String::new(),
        ),
        Err(e) => (Vec::new(), e.message),
    };
    ctx.page(OverviewPage {
        layout: ctx.layout("Overview", "overview").live("queues"),
        queues,
        queues_error,
        chart,
        chart_error,
        completed_hour,
        failed_hour,
        redis,
        workers,
        workers_error,
    })
}
