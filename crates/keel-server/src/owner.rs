//! The owner API: queues, jobs, dead letters, logs, runs and tokens.
//!
//! Over 600 lines until the server-layers issue (open) splits the owner API into one file per
//! resource (`api/queues.rs`, …) over an `ops/` layer; not split piecemeal before that reshaping.
//!
//! Roles: `viewer` reads queues, jobs, dead letters and runs; `admin` also changes them and
//! reads the audit and access logs; `owner` also manages tokens. A token bound to a tenant sees
//! only the queues bound to that tenant (others answer 404, as if they did not exist) and only
//! its tenant's log and run rows.
//!
//! Every mutation is audited (with the request payload, secrets masked) whatever its outcome;
//! every sensitive read is written to the access log. Queue lists and stats are cached 10 s,
//! logs 15 s and runs 30 s; mutations invalidate the tags they touch.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use keel::{Error, JobOptions, JobState, NewJob, Queue, Write};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::app::{AppState, Caller, JsonBody, Meta};
use crate::error::{ApiError, ApiResult};
use keel_records::{LogFilter, MinuteCounts, NewAccess, NewAudit, Role, RunFilter, Scope};

/// Most jobs one enqueue call may add.
pub const MAX_ENQUEUE_BATCH: usize = 1000;
/// Most jobs a search looks at per request.
pub const SEARCH_SCAN: usize = 5000;

fn scope_key(scope: &Scope) -> String {
    match scope {
        Scope::All => "all".into(),
        Scope::Tenant(t) => format!("t-{t}"),
    }
}

/// A cached read: the value and whether the cache served it.
async fn cached<T, F, Fut>(
    state: &AppState,
    caller: &Caller,
    what: &str,
    tags: &[&str],
    ttl: Duration,
    compute: F,
) -> ApiResult<(Value, bool)>
where
    T: Serialize,
    F: FnOnce() -> Fut,
    Fut: Future<Output = ApiResult<T>>,
{
    let key = keel_records::secret::sha256_hex(&format!("{}|{what}", scope_key(&caller.scope)));
    match state.cache.get::<Value>(&key).await {
        Ok(Some(v)) => {
            state.metrics.cache("owner-api", true);
            return Ok((v, true));
        }
        Ok(None) => state.metrics.cache("owner-api", false),
        Err(e) => tracing::debug!(error = %e, "owner cache unavailable"),
    }
    let value = serde_json::to_value(compute().await?)
        .map_err(|e| ApiError::from(Error::Backend(e.to_string())))?;
    let write = Write {
        ttl: Some(ttl),
        tags,
    };
    if let Err(e) = state.cache.set(&key, &value, write).await {
        tracing::debug!(error = %e, "owner cache not written");
    }
    Ok((value, false))
}

async fn invalidate(state: &AppState, tags: &[&str]) {
    if let Err(e) = state.cache.invalidate_tags(tags).await {
        tracing::warn!(error = %e, ?tags, "owner cache invalidation failed");
    }
}

/// Runs a mutation and writes its audit entry, whatever the outcome.
async fn audited<F, Fut>(
    state: &AppState,
    caller: &Caller,
    meta: &Meta,
    action: &str,
    resource: &str,
    payload: Option<Value>,
    run: F,
) -> Response
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ApiResult<(StatusCode, Value)>>,
{
    let result = run().await;
    let status = match &result {
        Ok((s, _)) => s.as_u16(),
        Err(e) => e.status().as_u16(),
    };
    let entry = NewAudit {
        tenant_id: caller.tenant(),
        actor: caller.actor(),
        action: action.into(),
        resource: resource.into(),
        ip: Some(meta.ip.clone()),
        user_agent: meta.user_agent.clone(),
        status: status as i64,
        payload: payload.map(|p| crate::mask::mask(&p)),
    };
    if let Err(e) = state.logs.write(crate::logs::LogEntry::Audit(entry)).await {
        tracing::error!(error = %e, action, resource, "audit entry not written");
    }
    match result {
        Ok((s, body)) => (s, Json(body)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn accessed(
    state: &AppState,
    caller: &Caller,
    meta: &Meta,
    action: &str,
    resource: &str,
    cached: bool,
    body: &Value,
) {
    let fields = match body {
        Value::Object(m) => m.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let entry = NewAccess {
        tenant_id: caller.tenant(),
        actor: caller.actor(),
        action: action.into(),
        resource: resource.into(),
        ip: Some(meta.ip.clone()),
        user_agent: meta.user_agent.clone(),
        cached,
        fields,
    };
    if let Err(e) = state.logs.write(crate::logs::LogEntry::Access(entry)).await {
        tracing::error!(error = %e, action, resource, "access entry not written");
    }
}

/// Parses a query string into `T`, errors naming the parameter.
pub struct Params<T>(pub T);

impl<T: DeserializeOwned> axum::extract::FromRequestParts<AppState> for Params<T> {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &AppState,
    ) -> ApiResult<Params<T>> {
        let q = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded_de(q)?;
        Ok(Params(de))
    }
}

fn serde_urlencoded_de<T: DeserializeOwned>(q: &str) -> ApiResult<T> {
    Query::<T>::try_from_uri(
        &format!("http://x/?{q}")
            .parse()
            .map_err(|_| ApiError::invalid("query", "the query string is not valid"))?,
    )
    .map(|Query(v)| v)
    .map_err(|e| {
        let text = e.body_text();
        ApiError::invalid(&query_field(&text), text)
    })
}

/// The parameter a query-string error is about: `…query string: limit: invalid digit…` or
/// `…unknown field `bogus`…`.
fn query_field(text: &str) -> String {
    if let Some(rest) = text.split("query string: ").nth(1) {
        if let Some((head, _)) = rest.split_once(':') {
            if !head.is_empty() && head.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return head.to_string();
            }
        }
    }
    text.split('`')
        .nth(1)
        .map(str::to_string)
        .unwrap_or_else(|| "query".into())
}

/// The queue `name`, if the caller may see it and it exists (configured or on the backend).
async fn visible_queue(state: &AppState, caller: &Caller, name: &str) -> ApiResult<Queue> {
    keel_core::validate_queue_name(name).map_err(|e| ApiError::invalid("queue", e.to_string()))?;
    if !state.can_see_queue(&caller.scope, name) {
        return Err(ApiError::not_found(format!("queue {name}")));
    }
    let known = state.config.queues.contains_key(name) || state.queue_exists(name).await?;
    if !known {
        return Err(ApiError::not_found(format!("queue {name}")));
    }
    Ok(state.config.queue(&state.backend, name)?)
}

#[derive(Serialize)]
struct QueueStats {
    name: String,
    tenant: Option<String>,
    waiting: u64,
    active: u64,
    delayed: u64,
    prioritized: u64,
    completed: u64,
    failed: u64,
    paused: bool,
    dlq: u64,
}

async fn stats_of(state: &AppState, q: &Queue) -> ApiResult<QueueStats> {
    let c = q.counts().await?;
    let dlq = q.dlq().count().await?;
    Ok(QueueStats {
        name: q.name().to_string(),
        tenant: state
            .config
            .queues
            .get(q.name())
            .and_then(|c| c.tenant.clone()),
        waiting: c.waiting,
        active: c.active,
        delayed: c.delayed,
        prioritized: c.prioritized,
        completed: c.completed,
        failed: c.failed,
        paused: c.paused,
        dlq,
    })
}

/// Every queue name the caller may see: configured ones and those found on the backend,
/// without the dead-letter queues (they show as each queue's `dlq` count).
pub async fn visible_queue_names(state: &AppState, scope: &Scope) -> ApiResult<Vec<String>> {
    let mut names: BTreeSet<String> = state.config.queues.keys().cloned().collect();
    names.extend(state.backend.queue_names().await?);
    Ok(names
        .into_iter()
        .filter(|n| !n.starts_with(keel_core::DLQ_PREFIX))
        .filter(|n| state.can_see_queue(scope, n))
        .collect())
}

/// The stats of every visible queue (also sent on realtime connect).
pub async fn all_stats(state: &AppState, scope: &Scope) -> ApiResult<Value> {
    let mut out = Vec::new();
    for name in visible_queue_names(state, scope).await? {
        let q = state.config.queue(&state.backend, &name)?;
        out.push(stats_of(state, &q).await?);
    }
    Ok(json!(out))
}

/// `GET /api/owner/queues`.
pub async fn list_queues(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    caller.require(Role::Viewer)?;
    let (queues, cached) = cached(
        &state,
        &caller,
        "queues",
        &[crate::tags::QUEUES],
        Duration::from_secs(10),
        || async { all_stats(&state, &caller.scope).await },
    )
    .await?;
    Ok(with_cache_header(
        Json(json!({ "queues": queues })).into_response(),
        cached,
    ))
}

fn with_cache_header(mut resp: Response, cached: bool) -> Response {
    resp.headers_mut().insert(
        "x-keel-cache",
        axum::http::HeaderValue::from_static(if cached { "hit" } else { "miss" }),
    );
    resp
}

/// `GET /api/owner/queues/{queue}/stats`.
pub async fn queue_stats(
    State(state): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
) -> ApiResult<Response> {
    caller.require(Role::Viewer)?;
    let q = visible_queue(&state, &caller, &queue).await?;
    let tag = crate::tags::queue(&queue);
    let (stats, cached) = cached(
        &state,
        &caller,
        &format!("stats/{queue}"),
        &[tag.as_str()],
        Duration::from_secs(10),
        || async { stats_of(&state, &q).await },
    )
    .await?;
    Ok(with_cache_header(Json(stats).into_response(), cached))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnqueueItem {
    name: String,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    opts: JobOptions,
}

fn parse_items(raw: &Value) -> ApiResult<(Vec<EnqueueItem>, bool)> {
    let parse_one = |v: &Value, at: &str| -> ApiResult<EnqueueItem> {
        let item: EnqueueItem = serde_path_to_error::deserialize(v.clone()).map_err(|e| {
            let path = e.path().to_string();
            let field = match (at.is_empty(), path.as_str()) {
                (true, ".") => "body".to_string(),
                (true, p) => p.to_string(),
                (false, ".") => at.to_string(),
                (false, p) => format!("{at}.{p}"),
            };
            ApiError::invalid(&field, e.inner().to_string())
        })?;
        if item.name.is_empty() || item.name.len() > 512 {
            let f = if at.is_empty() {
                "name".into()
            } else {
                format!("{at}.name")
            };
            return Err(ApiError::invalid(&f, "must be 1 to 512 characters"));
        }
        item.opts.validate().map_err(|e| {
            let inner = format!("opts.{}", e.field().unwrap_or("opts"));
            let f = if at.is_empty() {
                inner
            } else {
                format!("{at}.{inner}")
            };
            ApiError::invalid(&f, e.to_string())
        })?;
        Ok(item)
    };
    match raw {
        Value::Array(items) => {
            if items.is_empty() || items.len() > MAX_ENQUEUE_BATCH {
                return Err(ApiError::invalid(
                    "body",
                    format!("send 1 to {MAX_ENQUEUE_BATCH} jobs; got {}", items.len()),
                ));
            }
            let parsed = items
                .iter()
                .enumerate()
                .map(|(i, v)| parse_one(v, &format!("[{i}]")))
                .collect::<ApiResult<Vec<_>>>()?;
            Ok((parsed, true))
        }
        Value::Object(_) => Ok((vec![parse_one(raw, "")?], false)),
        _ => Err(ApiError::invalid(
            "body",
            "send a job object or an array of them",
        )),
    }
}

/// An audited change to one queue: it needs the admin role and a queue the caller can see;
/// when it succeeds, the queue's cached lists and stats are invalidated and realtime is told.
async fn queue_change<F, Fut>(
    state: &AppState,
    caller: &Caller,
    meta: &Meta,
    (action, resource): (&str, String),
    queue: &str,
    payload: Option<Value>,
    change: F,
) -> Response
where
    F: FnOnce(Queue) -> Fut,
    Fut: Future<Output = ApiResult<(StatusCode, Value)>>,
{
    audited(state, caller, meta, action, &resource, payload, || async {
        caller.require(Role::Admin)?;
        let q = visible_queue(state, caller, queue).await?;
        let out = change(q).await?;
        invalidate(state, &[crate::tags::QUEUES, &crate::tags::queue(queue)]).await;
        state.realtime.queue_changed(queue);
        Ok(out)
    })
    .await
}

/// `POST /api/owner/queues/{queue}/jobs`: one job object or an array (≤ 1000), all validated
/// before any is added.
pub async fn enqueue(
    State(state): State<AppState>,
    caller: Caller,
    meta: Meta,
    Path(queue): Path<String>,
    JsonBody(raw, _): JsonBody<Value>,
) -> Response {
    let resource = format!("queue:{queue}");
    let payload = Some(raw.clone());
    let action = ("owner.job.enqueue", resource);
    let (st, name) = (state.clone(), queue.clone());
    queue_change(
        &state,
        &caller,
        &meta,
        action,
        &queue,
        payload,
        |q| async move {
            let (state, queue) = (st, name);
            let (items, bulk) = parse_items(&raw)?;
            let jobs: Vec<NewJob> = items
                .into_iter()
                .map(|i| NewJob {
                    name: i.name,
                    data: i.data,
                    opts: i.opts,
                })
                .collect();
            let added = if bulk {
                let outcomes = q.add_each(jobs).await?;
                bulk_outcome(&state, &queue, outcomes).await?
            } else {
                let j = jobs.into_iter().next().expect("one job");
                vec![q.add(&j.name, j.data, j.opts).await?]
            };
            let out: Vec<Value> = added
                .iter()
                .map(|j| json!({"id": j.id, "name": j.name}))
                .collect();
            Ok((StatusCode::CREATED, json!({ "jobs": out })))
        },
    )
    .await
}

/// The jobs of a bulk enqueue, or — when the backend failed some adds — an error that says
/// which indexes were added (with their ids) and which were not, after invalidating what the
/// added ones changed. Never a bare failure: a client must know what to retry.
async fn bulk_outcome(
    state: &AppState,
    queue: &str,
    outcomes: Vec<keel::Result<keel::Job>>,
) -> ApiResult<Vec<keel::Job>> {
    if outcomes.iter().all(Result::is_ok) {
        return Ok(outcomes.into_iter().filter_map(Result::ok).collect());
    }
    let mut added = Vec::new();
    let mut not_added = Vec::new();
    let mut first: Option<ApiError> = None;
    for (index, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            Ok(j) => added.push(json!({"index": index, "id": j.id, "name": j.name})),
            Err(e) => {
                let e = ApiError::from(e);
                not_added
                    .push(json!({"index": index, "error": {"code": e.code.as_str(), "message": e.message}}));
                first.get_or_insert(e);
            }
        }
    }
    if !added.is_empty() {
        invalidate(state, &[crate::tags::QUEUES, &crate::tags::queue(queue)]).await;
        state.realtime.queue_changed(queue);
    }
    let first = first.expect("one failed");
    let message = format!(
        "{} of {} jobs were added; the others were not ({}). Retry only those in not_added.",
        added.len(),
        added.len() + not_added.len(),
        first.message
    );
    let mut details = serde_json::Map::new();
    details.insert("added".into(), Value::Array(added));
    details.insert("not_added".into(), Value::Array(not_added));
    Err(ApiError {
        message,
        field: None,
        ..first
    }
    .with_details(details))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsQuery {
    /// `status` is the seeds' name for it.
    #[serde(alias = "status")]
    state: Option<String>,
    page: Option<usize>,
    limit: Option<usize>,
    cursor: Option<String>,
    search: Option<String>,
    name: Option<String>,
}

fn job_summary(j: &keel::Job) -> Value {
    json!({
        "id": j.id, "name": j.name, "data": j.data, "attemptsMade": j.attempts_made,
        "timestamp": j.timestamp, "processedOn": j.processed_on, "finishedOn": j.finished_on,
        "failedReason": j.failed_reason, "progress": j.progress,
    })
}

fn matches(j: &keel::Job, search: Option<&str>, name: Option<&str>) -> bool {
    if let Some(n) = name {
        if j.name != n {
            return false;
        }
    }
    match search {
        None => true,
        Some(s) => {
            let s = s.to_lowercase();
            j.name.to_lowercase().contains(&s) || j.data.to_string().to_lowercase().contains(&s)
        }
    }
}

/// `GET /api/owner/queues/{queue}/jobs?state=&page=&limit=&cursor=&search=&name=`: newest
/// first. `cursor` (from `next_cursor`) continues where a page ended, also through searches.
pub async fn list_jobs(
    State(state): State<AppState>,
    caller: Caller,
    meta: Meta,
    Path(queue): Path<String>,
    Params(p): Params<JobsQuery>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    let job_state = JobState::parse(p.state.as_deref().unwrap_or("waiting"))
        .map_err(|e| ApiError::invalid("state", e.to_string()))?;
    let limit = p.limit.unwrap_or(20);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    let page = p.page.unwrap_or(1);
    if page == 0 {
        return Err(ApiError::invalid("page", "pages start at 1"));
    }
    let mut offset = match &p.cursor {
        Some(c) => c
            .parse::<usize>()
            .map_err(|_| ApiError::invalid("cursor", "use the next_cursor of a previous page"))?,
        None => (page - 1) * limit,
    };
    if p.search.as_ref().is_some_and(|s| s.len() > 256) {
        return Err(ApiError::invalid("search", "at most 256 characters"));
    }
    let q = visible_queue(&state, &caller, &queue).await?;
    let total = q.counts().await?.get(job_state);
    let filtering = p.search.is_some() || p.name.is_some();
    let mut jobs = Vec::new();
    let next_cursor;
    if !filtering {
        jobs = q.list_range(job_state, offset, limit, false).await?;
        next_cursor =
            (offset + jobs.len() < total as usize).then(|| (offset + jobs.len()).to_string());
    } else {
        let mut scanned = 0;
        loop {
            let chunk = q.list_range(job_state, offset, 500, false).await?;
            let n = chunk.len();
            for (i, j) in chunk.into_iter().enumerate() {
                if matches(&j, p.search.as_deref(), p.name.as_deref()) {
                    jobs.push(j);
                    if jobs.len() == limit {
                        offset += i + 1;
                        break;
                    }
                }
                if i + 1 == n {
                    offset += n;
                }
            }
            scanned += n;
            if jobs.len() == limit || n < 500 || scanned >= SEARCH_SCAN {
                break;
            }
        }
        next_cursor = (offset < total as usize).then(|| offset.to_string());
    }
    let body = json!({
        "queue": queue, "state": job_state, "total": total, "limit": limit,
        "jobs": jobs.iter().map(job_summary).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
    });
    accessed(
        &state,
        &caller,
        &meta,
        "owner.read.queue_jobs",
        &format!("queue:{queue}"),
        false,
        &body,
    )
    .await;
    Ok(Json(body))
}

/// `GET /api/owner/queues/{queue}/jobs/{id}`: the job, its state, log lines and runs.
pub async fn get_job(
    State(state): State<AppState>,
    caller: Caller,
    meta: Meta,
    Path((queue, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    let q = visible_queue(&state, &caller, &queue).await?;
    let job = q
        .get_job(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("job {id} in queue {queue}")))?;
    let job_state = q.job_state(&id).await?;
    let (logs, log_count) = q.job_logs(&id, 0, 1000).await?;
    let runs = state
        .store
        .list_runs(
            &caller.scope,
            &RunFilter {
                queue: Some(queue.clone()),
                job_id: Some(id.clone()),
                ..Default::default()
            },
            1,
            50,
        )
        .await?;
    let body = json!({
        "job": job, "state": job_state, "logs": logs, "log_count": log_count, "runs": runs.items,
    });
    accessed(
        &state,
        &caller,
        &meta,
        "owner.read.queue_job",
        &format!("job:{queue}/{id}"),
        false,
        &body,
    )
    .await;
    Ok(Json(body))
}

/// `POST /api/owner/queues/{queue}/jobs/{id}/retry`.
pub async fn retry_job(
    State(state): State<AppState>,
    caller: Caller,
    meta: Meta,
    Path((queue, id)): Path<(String, String)>,
) -> Response {
    let action = ("owner.job.retry", format!("job:{queue}/{id}"));
    queue_change(
        &state,
        &caller,
        &meta,
        action,
        &queue,
        None,
        |q| async move {
            if q.get_job(&id).await?.is_none() {
                return Err(ApiError::not_found(format!(
                    "job {id} in queue {}",
                    q.name()
                )));
            }
            q.retry(&id).await?;
            Ok((StatusCode::OK, json!({"retried": id})))
        },
    )
    .await
}

/// `DELETE /api/owner/queues/{queue}/jobs/{id}`.
pub async fn remove_job(
    State(state): State<AppState>,
    caller: Caller,
    meta: Meta,
    Path((queue, id)): Path<(String, String)>,
) -> Response {
    let action = ("owner.job.remove", format!("job:{queue}/{id}"));
    queue_change(
        &state,
        &caller,
        &meta,
        action,
        &queue,
        None,
        |q| async move {
            if !q.remove(&id).await? {
                return Err(ApiError::not_found(format!(
                    "job {id} in queue {}",
                    q.name()
                )));
            }
            Ok((StatusCode::OK, json!({"removed": id})))
        },
    )
    .await
}

async fn pause_resume(
    state: AppState,
    caller: Caller,
    meta: Meta,
    queue: String,
    pause: bool,
) -> Response {
    let action = if pause {
        "owner.queue.pause"
    } else {
        "owner.queue.resume"
    };
    let action = (action, format!("queue:{queue}"));
    queue_change(
        &state,
        &caller,
        &meta,
        action,
        &queue,
        None,
        |q| async move {
            if pause {
                q.pause().await?;
            } else {
                q.resume().await?;
            }
            Ok((StatusCode::OK, json!({"queue": q.name(), "paused": pause})))
        },
    )
    .await
}

/// `POST /api/owner/queues/{queue}/pause`.
pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    meta: Meta,
    Path(queue): Path<String>,
) -> Response {
    pause_resume(state, caller, meta, queue, true).await
}

/// `POST /api/owner/queues/{queue}/resume`.
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    meta: Meta,
    Path(queue): Path<String>,
) -> Response {
    pause_resume(state, caller, meta, queue, false).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    page: Option<usize>,
    limit: Option<usize>,
}

fn page_limit(
    page: Option<usize>,
    limit: Option<usize>,
    default: usize,
) -> ApiResult<(usize, usize)> {
    let page = page.unwrap_or(1);
    let limit = limit.unwrap_or(default);
    if page == 0 {
        return Err(ApiError::invalid("page", "pages start at 1"));
    }
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    Ok((page, limit))
}

/// `GET /api/owner/queues/{queue}/dlq?page=&limit=`.
pub async fn list_dlq(
    State(state): State<AppState>,
    caller: Caller,
    meta: Meta,
    Path(queue): Path<String>,
    Params(p): Params<PageQuery>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    let (page, limit) = page_limit(p.page, p.limit, 50)?;
    let q = visible_queue(&state, &caller, &queue).await?;
    let dlq = q.dlq();
    let listed = dlq.page(page, limit).await?;
    let total = dlq.count().await?;
    let body = json!({"queue": queue, "total": total, "page": page, "limit": limit,
        "entries": listed.entries, "unreadable": listed.unreadable});
    accessed(
        &state,
        &caller,
        &meta,
        "owner.read.dlq",
        &format!("dlq:{queue}"),
        false,
        &body,
    )
    .await;
    Ok(Json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayQuery {
    dry_run: Option<bool>,
}

/// `POST /api/owner/queues/{queue}/dlq/replay[?dry_run=true]`: every entry back to the queue,
/// or how many would go.
pub async fn replay_all(
    State(state): State<AppState>,
    caller: Caller,
    meta: Meta,
    Path(queue): Path<String>,
    Params(p): Params<ReplayQuery>,
) -> Response {
    let dry = p.dry_run.unwrap_or(false);
    let action = ("owner.dlq.replay_all", format!("dlq:{queue}"));
    let payload = Some(json!({"dry_run": dry}));
    queue_change(
        &state,
        &caller,
        &meta,
        action,
        &queue,
        payload,
        |q| async move {
            if dry {
                let n = q.dlq().replay_all_dry_run().await?;
                return Ok((StatusCode::OK, json!({"dry_run": true, "would_replay": n})));
            }
            let n = q.dlq().replay_all().await?;
            Ok((StatusCode::OK, json!({"dry_run": false, "replayed": n})))
        },
    )
    .await
}

/// `POST /api/owner/queues/{queue}/dlq/{id}/replay`.
pub async fn replay_one(
    State(state): State<AppState>,
    caller: Caller,
    meta: Meta,
    Path((queue, id)): Path<(String, String)>,
) -> Response {
    let action = ("owner.dlq.replay", format!("dlq:{queue}/{id}"));
    queue_change(
        &state,
        &caller,
        &meta,
        action,
        &queue,
        None,
        |q| async move {
            let job = q.dlq().replay(&id).await?;
            Ok((
                StatusCode::OK,
                json!({"replayed": id, "job": {"id": job.id, "name": job.name}}),
            ))
        },
    )
    .await
}

/// `DELETE /api/owner/queues/{queue}/dlq/{id}`.
pub async fn remove_dlq(
    State(state): State<AppState>,
    caller: Caller,
    meta: Meta,
    Path((queue, id)): Path<(String, String)>,
) -> Response {
    let action = ("owner.dlq.remove", format!("dlq:{queue}/{id}"));
    queue_change(
        &state,
        &caller,
        &meta,
        action,
        &queue,
        None,
        |q| async move {
            if !q.dlq().remove(&id).await? {
                return Err(ApiError::not_found(format!(
                    "dead letter {id} of queue {}",
                    q.name()
                )));
            }
            Ok((StatusCode::OK, json!({"removed": id})))
        },
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    id: Option<i64>,
    action: Option<String>,
    resource: Option<String>,
    /// `actorId` is the seeds' name for it.
    #[serde(alias = "actorId")]
    actor: Option<String>,
    from: Option<String>,
    to: Option<String>,
    page: Option<usize>,
    limit: Option<usize>,
}

/// A time as ms since the epoch or RFC 3339.
fn parse_time(field: &str, v: Option<&str>) -> ApiResult<Option<i64>> {
    let Some(v) = v else { return Ok(None) };
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(Some(ms));
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| Some(t.timestamp_millis()))
        .map_err(|_| {
            ApiError::invalid(
                field,
                "use milliseconds since the epoch or RFC 3339 (2026-01-31T12:00:00Z)",
            )
        })
}

fn log_filter(q: &LogQuery) -> ApiResult<LogFilter> {
    Ok(LogFilter {
        id: q.id,
        action: q.action.clone(),
        resource: q.resource.clone(),
        actor: q.actor.clone(),
        from: parse_time("from", q.from.as_deref())?,
        to: parse_time("to", q.to.as_deref())?,
    })
}

/// A cached, access-logged listing.
struct Listing<'a> {
    tag: &'a str,
    ttl: Duration,
    action: &'a str,
    resource: &'a str,
}

async fn cached_listing<T, F, Fut>(
    state: &AppState,
    caller: &Caller,
    meta: &Meta,
    listing: Listing<'_>,
    (filter, page, limit): (&impl Serialize, usize, usize),
    compute: F,
) -> ApiResult<Response>
where
    T: Serialize,
    F: FnOnce() -> Fut,
    Fut: Future<Output = ApiResult<T>>,
{
    let filter = serde_json::to_string(filter).unwrap_or_default();
    let key = format!("{}|{filter}|{page}|{limit}", listing.tag);
    let (body, hit) = cached(state, caller, &key, &[listing.tag], listing.ttl, compute).await?;
    accessed(
        state,
        caller,
        meta,
        listing.action,
        listing.resource,
        hit,
        &body,
    )
    .await;
    Ok(with_cache_header(Json(body).into_response(), hit))
}

/// `GET /api/owner/logs/audit`.
pub async fn audit_log(
    State(state): State<AppState>,
    caller: Caller,
    meta: Meta,
    Params(q): Params<LogQuery>,
) -> ApiResult<Response> {
    caller.require(Role::Admin)?;
    let filter = log_filter(&q)?;
    let (page, limit) = page_limit(q.page, q.limit, 50)?;
    let listing = Listing {
        tag: crate::tags::AUDIT,
        ttl: Duration::from_secs(15),
        action: "owner.read.audit_log",
        resource: "logs:audit",
    };
    cached_listing(
        &state,
        &caller,
        &meta,
        listing,
        (&filter, page, limit),
        || async {
            Ok(state
                .store
                .list_audit(&caller.scope, &filter, page as i64, limit as i64)
                .await?)
        },
    )
    .await
}

/// `GET /api/owner/logs/access`.
pub async fn access_log(
    State(state): State<AppState>,
    caller: Caller,
    meta: Meta,
    Params(q): Params<LogQuery>,
) -> ApiResult<Response> {
    caller.require(Role::Admin)?;
    let filter = log_filter(&q)?;
    let (page, limit) = page_limit(q.page, q.limit, 50)?;
    // Read before this read is itself logged, so the page is stable.
    let body = serde_json::to_value(
        state
            .store
            .list_access(&caller.scope, &filter, page as i64, limit as i64)
            .await?,
    )
    .unwrap_or(Value::Null);
    accessed(
        &state,
        &caller,
        &meta,
        "owner.read.access_log",
        "logs:access",
        false,
        &body,
    )
    .await;
    Ok(Json(body).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunQuery {
    queue: Option<String>,
    status: Option<String>,
    job_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    page: Option<usize>,
    limit: Option<usize>,
}

/// `GET /api/owner/runs?queue=&status=&from=&to=`.
pub async fn list_runs(
    State(state): State<AppState>,
    caller: Caller,
    meta: Meta,
    Params(q): Params<RunQuery>,
) -> ApiResult<Response> {
    caller.require(Role::Viewer)?;
    if let Some(s) = &q.status {
        if !["completed", "failed", "dead", "stalled"].contains(&s.as_str()) {
            return Err(ApiError::invalid(
                "status",
                "one of completed, failed, dead, stalled",
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
        status: q.status.clone(),
        job_id: q.job_id.clone(),
        from: parse_time("from", q.from.as_deref())?,
        to: parse_time("to", q.to.as_deref())?,
    };
    let (page, limit) = page_limit(q.page, q.limit, 50)?;
    let listing = Listing {
        tag: crate::tags::RUNS,
        ttl: Duration::from_secs(30),
        action: "owner.read.runs",
        resource: "runs",
    };
    cached_listing(
        &state,
        &caller,
        &meta,
        listing,
        (&filter, page, limit),
        || async {
            Ok(state
                .store
                .list_runs(&caller.scope, &filter, page as i64, limit as i64)
                .await?)
        },
    )
    .await
}

/// `GET /api/owner/runs/{id}`.
pub async fn get_run(
    State(state): State<AppState>,
    caller: Caller,
    meta: Meta,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::invalid("id", "a run id is a number"))?;
    let (run, events) = state
        .store
        .get_run(&caller.scope, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {id}")))?;
    let body = json!({"run": run, "events": events});
    accessed(
        &state,
        &caller,
        &meta,
        "owner.read.run",
        &format!("run:{id}"),
        false,
        &body,
    )
    .await;
    Ok(Json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerMinuteQuery {
    minutes: Option<i64>,
}

/// `GET /api/owner/runs/per-minute?minutes=60`: attempts completed and failed per minute over
/// the last `minutes` (1-1440, default 60), oldest first, every minute present (zeros too).
pub async fn runs_per_minute(
    State(state): State<AppState>,
    caller: Caller,
    Params(q): Params<PerMinuteQuery>,
) -> ApiResult<Response> {
    caller.require(Role::Viewer)?;
    let minutes = q.minutes.unwrap_or(60);
    if !(1..=1440).contains(&minutes) {
        return Err(ApiError::invalid("minutes", "must be between 1 and 1440"));
    }
    let this_minute = keel::now_ms() as i64 / 60_000;
    let from = (this_minute - minutes + 1) * 60_000;
    let (body, hit) = cached(
        &state,
        &caller,
        &format!("runs-per-minute|{from}|{minutes}"),
        &[crate::tags::RUNS],
        Duration::from_secs(10),
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
            Ok(json!({ "from": from, "minutes": rows }))
        },
    )
    .await?;
    Ok(with_cache_header(Json(body).into_response(), hit))
}

/// `GET /api/owner/workers`: the live workers (heartbeats), each with the queues it runs that
/// the caller may see; a tenant sees only workers of its queues.
pub async fn list_workers(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    let mut out = Vec::new();
    for mut w in state.backend.raw().live_workers().await? {
        let queues: Vec<Value> = w
            .get("queues")
            .and_then(Value::as_array)
            .map(|qs| {
                qs.iter()
                    .filter(|q| {
                        q.as_str()
                            .is_some_and(|q| state.can_see_queue(&caller.scope, q))
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if queues.is_empty() && caller.scope != Scope::All {
            continue;
        }
        if let Some(obj) = w.as_object_mut() {
            obj.insert("queues".into(), Value::Array(queues));
        }
        out.push(w);
    }
    Ok(Json(json!({ "workers": out })))
}

/// `GET /api/owner/tokens` (owner).
pub async fn list_tokens(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require(Role::Owner)?;
    let tokens = state.store.list_tokens(&caller.scope).await?;
    Ok(Json(json!({ "tokens": tokens })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    name: String,
    role: String,
    tenant: Option<String>,
}

/// `POST /api/owner/tokens` (owner): `{"name", "role", "tenant"?}`; the secret is in the answer
/// only.
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    meta: Meta,
    JsonBody(raw, _): JsonBody<Value>,
) -> Response {
    let payload = Some(raw.clone());
    audited(
        &state,
        &caller,
        &meta,
        "owner.token.create",
        "tokens",
        payload,
        || async {
            caller.require(Role::Owner)?;
            let req: NewToken = serde_path_to_error::deserialize(raw.clone()).map_err(|e| {
                let p = e.path().to_string();
                ApiError::invalid(if p == "." { "body" } else { &p }, e.inner().to_string())
            })?;
            let role: Role = req.role.parse().map_err(ApiError::from)?;
            let tenant_id = match (&req.tenant, &caller.scope) {
                (None, Scope::All) => None,
                (None, Scope::Tenant(t)) => Some(t.clone()),
                (Some(name), scope) => {
                    let t = state.store.tenant_by_name(name).await?.ok_or_else(|| {
                        ApiError::invalid("tenant", format!("no tenant {name:?}"))
                    })?;
                    if let Scope::Tenant(own) = scope {
                        if *own != t.id {
                            return Err(ApiError::forbidden(
                                "a tenant's token cannot create tokens of another tenant",
                            ));
                        }
                    }
                    Some(t.id)
                }
            };
            let (token, secret) = state
                .store
                .create_token(&req.name, role, tenant_id.as_deref())
                .await?;
            Ok((
                StatusCode::CREATED,
                json!({"token": token, "secret": secret}),
            ))
        },
    )
    .await
}

/// `DELETE /api/owner/tokens/{id}` (owner).
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    meta: Meta,
    Path(id): Path<String>,
) -> Response {
    let resource = format!("token:{id}");
    audited(
        &state,
        &caller,
        &meta,
        "owner.token.revoke",
        &resource,
        None,
        || async {
            caller.require(Role::Owner)?;
            if !state.store.revoke_token(&caller.scope, &id).await? {
                return Err(ApiError::not_found(format!("live token {id}")));
            }
            state.forget_tokens();
            if let Err(e) = crate::realtime::announce_revocation(&state.backend, &id).await {
                tracing::warn!(error = %e, "revocation not announced; other instances apply it within 10 s");
            }
            Ok((StatusCode::OK, json!({"revoked": id})))
        },
    )
    .await
}
