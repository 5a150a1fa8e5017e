//! Job runs: listing, one run with its events, and attempts per minute.

use std::time::Duration;

use keel_records::{JobRun, MinuteCounts, Page, Role, RunEvent, RunFilter};
use serde::{Deserialize, Serialize};

use super::{accessed, cached, page_limit, parse_time, Read};
use crate::error::{ApiError, ApiResult};
use crate::extract::Caller;
use crate::state::AppState;
use crate::tags;

/// How long run listings are cached (the recorder invalidates them as it writes).
pub const RUNS_TTL: Duration = Duration::from_secs(30);
/// How long the per-minute counts are cached.
pub const PER_MINUTE_TTL: Duration = Duration::from_secs(10);
/// Default page size of the runs.
pub const DEFAULT_RUNS_LIMIT: usize = 50;
/// Default and most minutes of the per-minute counts.
pub const DEFAULT_MINUTES: i64 = 60;
/// Most minutes of the per-minute counts (a day).
pub const MAX_MINUTES: i64 = 1440;
/// The statuses a run can have.
pub const STATUSES: [&str; 5] = ["completed", "failed", "dead", "stalled", "delayed"];

/// A run listing's query.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunQuery {
    /// Queue.
    pub queue: Option<String>,
    /// Plugin id (the seeds' PluginExecutionLog).
    pub plugin: Option<String>,
    /// `completed`, `failed`, `dead` or `stalled`.
    pub status: Option<String>,
    /// Job id.
    pub job_id: Option<String>,
    /// Started from (ms or RFC 3339).
    pub from: Option<String>,
    /// Started until (ms or RFC 3339).
    pub to: Option<String>,
    /// Page, from 1.
    pub page: Option<usize>,
    /// Runs per page (1-1000, default 50).
    pub limit: Option<usize>,
}

/// Runs, newest first (viewer; cached 30 s; access-logged `owner.read.runs`).
pub async fn list(
    state: &AppState,
    caller: &Caller,
    q: &RunQuery,
) -> ApiResult<Read<Page<JobRun>>> {
    caller.require(Role::Viewer)?;
    if let Some(s) = &q.status {
        if !STATUSES.contains(&s.as_str()) {
            return Err(ApiError::invalid(
                "status",
                "one of completed, failed, dead, stalled, delayed",
            ));
        }
    }
    if let Some(queue) = &q.queue {
        if !state.can_see_queue(&caller.scope, queue) {
            return Err(ApiError::not_found(format!("queue {queue}")));
        }
    }
    let filter = RunFilter {
        queue: q.queue.clone(),
        plugin: q.plugin.clone(),
        status: q.status.clone(),
        job_id: q.job_id.clone(),
        from: parse_time("from", q.from.as_deref())?,
        to: parse_time("to", q.to.as_deref())?,
    };
    let (page, limit) = page_limit(q.page, q.limit, DEFAULT_RUNS_LIMIT)?;
    let key = format!(
        "{}|{}|{page}|{limit}",
        tags::RUNS,
        serde_json::to_string(&filter).unwrap_or_default()
    );
    let read = cached(state, caller, &key, &[tags::RUNS], RUNS_TTL, || async {
        Ok(state
            .store
            .list_runs(&caller.scope, &filter, page as i64, limit as i64)
            .await?)
    })
    .await?;
    accessed(
        state,
        caller,
        "owner.read.runs",
        "runs",
        read.cached,
        &read.value,
    )
    .await;
    Ok(read)
}

/// One run and its events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunDetail {
    /// The run.
    pub run: JobRun,
    /// Started, failures, end.
    pub events: Vec<RunEvent>,
}

/// One run (viewer; access-logged `owner.read.run`). `id` is the path's text.
pub async fn get(state: &AppState, caller: &Caller, id: &str) -> ApiResult<RunDetail> {
    caller.require(Role::Viewer)?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::invalid("id", "a run id is a number"))?;
    let (run, events) = state
        .store
        .get_run(&caller.scope, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {id}")))?;
    let out = RunDetail { run, events };
    accessed(
        state,
        caller,
        "owner.read.run",
        &format!("run:{id}"),
        false,
        &out,
    )
    .await;
    Ok(out)
}

/// Attempts per minute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerMinute {
    /// Start of the first minute, ms.
    pub from: i64,
    /// Every minute, oldest first (zeros too).
    pub minutes: Vec<MinuteCounts>,
}

/// Attempts completed and failed per minute over the last `minutes` (1-1440, default 60),
/// oldest first, every minute present (viewer; cached 10 s).
pub async fn per_minute(
    state: &AppState,
    caller: &Caller,
    minutes: Option<i64>,
) -> ApiResult<Read<PerMinute>> {
    caller.require(Role::Viewer)?;
    let minutes = minutes.unwrap_or(DEFAULT_MINUTES);
    if !(1..=MAX_MINUTES).contains(&minutes) {
        return Err(ApiError::invalid("minutes", "must be between 1 and 1440"));
    }
    let this_minute = keel::now_ms() as i64 / 60_000;
    let from = (this_minute - minutes + 1) * 60_000;
    cached(
        state,
        caller,
        &format!("runs-per-minute|{from}|{minutes}"),
        &[tags::RUNS],
        PER_MINUTE_TTL,
        || async {
            let found = state.store.runs_per_minute(&caller.scope, from).await?;
            let mut rows: Vec<MinuteCounts> = (0..minutes)
                .map(|i| MinuteCounts {
                    minute: from + i * 60_000,
                    completed: 0,
                    failed: 0,
                })
                .collect();
            for m in found {
                let i = ((m.minute - from) / 60_000) as usize;
                if let Some(r) = rows.get_mut(i) {
                    *r = m;
                }
            }
            Ok(PerMinute {
                from,
                minutes: rows,
            })
        },
    )
    .await
}
