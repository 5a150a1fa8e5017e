//! `GET /metrics`: Prometheus text (OpenMetrics), queue depths read at scrape time.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use keel_records::Scope;

use crate::ops::queues::visible_names;
use crate::state::AppState;

/// `GET /metrics`.
pub async fn scrape(State(state): State<AppState>) -> Response {
    if let Ok(names) = visible_names(&state, &Scope::All).await {
        for name in names {
            let Ok(q) = state.config.queue(&state.backend, &name) else {
                continue;
            };
            if let Ok(c) = q.counts().await {
                state
                    .metrics
                    .queue_depths(&name, &c, q.dlq().count().await.ok());
            }
        }
    }
    let s = state.runs.stats();
    state.metrics.runs(s.buffered as i64, s.dropped, s.written);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
