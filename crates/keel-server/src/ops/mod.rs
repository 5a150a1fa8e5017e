//! Operations: one typed function per use case, `(&AppState, &Caller, input) -> ApiResult<Dto>`,
//! under both the owner API ([`crate::api`]) and the console ([`crate::console`]), which are
//! thin adapters: the API turns a DTO into JSON, the console into a page.
//!
//! Each operation does the role and tenant checks, validates its input (errors name the
//! field), writes the audit entry of a mutation (whatever its outcome, before the answer) or
//! the access entry of a sensitive read, and invalidates what a mutation changed in the owner
//! cache.
//!
//! Roles: `viewer` reads queues, jobs, dead letters and runs; `admin` also changes them and
//! reads the audit and access logs; `owner` also manages tokens. A caller bound to a tenant
//! sees only the queues bound to that tenant (others answer 404, as if they did not exist) and
//! only its tenant's log and run rows.
//!
//! # Layout
//! - [`queues`] — listing, stats, pause and resume.
//! - [`jobs`] — enqueue, listing and search, one job, retry and remove.
//! - [`bulk`] — retry or remove many jobs.
//! - [`dlq`] — dead letters: listing, replay, remove.
//! - [`logs`] — the audit and access logs.
//! - [`runs`] — job runs and their per-minute counts.
//! - [`messages`] — email logs; AI runs, messages, events, tasks and usage.
//! - [`otp`] — one-time codes: send (throttled) and verify.
//! - [`workflows`] — workflow definitions and instances: run, cancel, re-run.
//! - [`workers`] — live workers.
//! - [`tokens`] — API tokens.
//! - [`system`] — Redis health and `INFO`, readiness.

pub mod bulk;
pub mod dlq;
pub mod jobs;
pub mod logs;
pub mod messages;
pub mod otp;
pub mod queues;
pub mod runs;
pub mod system;
pub mod tokens;
pub mod workers;
pub mod workflows;

use std::future::Future;
use std::time::Duration;

use keel::{Queue, Write};
use keel_records::{NewAccess, NewAudit, Scope};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::extract::Caller;
use crate::logs::LogEntry;
use crate::state::AppState;

/// Most rows one page of any listing holds.
pub const MAX_PAGE_LIMIT: usize = 1000;

/// A read that the owner cache may have served.
#[derive(Debug, Clone, PartialEq)]
pub struct Read<T> {
    /// The answer.
    pub value: T,
    /// Whether the cache served it (`x-keel-cache: hit`).
    pub cached: bool,
}

/// The page and limit of a listing: pages start at 1, limits are 1 to [`MAX_PAGE_LIMIT`].
pub fn page_limit(
    page: Option<usize>,
    limit: Option<usize>,
    default: usize,
) -> ApiResult<(usize, usize)> {
    let page = page.unwrap_or(1);
    let limit = limit.unwrap_or(default);
    if page == 0 {
        return Err(ApiError::invalid("page", "pages start at 1"));
    }
    if !(1..=MAX_PAGE_LIMIT).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    Ok((page, limit))
}

/// A time as ms since the epoch or RFC 3339.
pub fn parse_time(field: &str, v: Option<&str>) -> ApiResult<Option<i64>> {
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

fn scope_key(scope: &Scope) -> String {
    match scope {
        Scope::All => "all".into(),
        Scope::Tenant(t) => format!("t-{t}"),
    }
}

/// A cached read: the value (from the cache or computed and stored with `tags` for `ttl`) and
/// whether the cache served it. Keys are per scope, so tenants never share answers.
pub(crate) async fn cached<T, F, Fut>(
    state: &AppState,
    caller: &Caller,
    what: &str,
    tags: &[&str],
    ttl: Duration,
    compute: F,
) -> ApiResult<Read<T>>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Fut,
    Fut: Future<Output = ApiResult<T>>,
{
    let key = keel_records::secret::sha256_hex(&format!("{}|{what}", scope_key(&caller.scope)));
    match state.cache.get::<T>(&key).await {
        Ok(Some(value)) => {
            state.metrics.cache("owner-api", true);
            return Ok(Read {
                value,
                cached: true,
            });
        }
        Ok(None) => state.metrics.cache("owner-api", false),
        Err(e) => tracing::debug!(error = %e, "owner cache unavailable"),
    }
    let value = compute().await?;
    let write = Write {
        ttl: Some(ttl),
        tags,
    };
    if let Err(e) = state.cache.set(&key, &value, write).await {
        tracing::debug!(error = %e, "owner cache not written");
    }
    Ok(Read {
        value,
        cached: false,
    })
}

/// What an audited mutation is: its action, resource and (masked) payload.
pub(crate) struct Audit<'a> {
    pub action: &'a str,
    pub resource: String,
    pub payload: Option<Value>,
    /// The status recorded when it succeeds (201 for a creation).
    pub ok_status: u16,
}

impl<'a> Audit<'a> {
    pub fn new(action: &'a str, resource: impl Into<String>) -> Audit<'a> {
        Audit {
            action,
            resource: resource.into(),
            payload: None,
            ok_status: 200,
        }
    }
    pub fn payload(mut self, payload: Value) -> Audit<'a> {
        self.payload = Some(payload);
        self
    }
    pub fn created(mut self) -> Audit<'a> {
        self.ok_status = 201;
        self
    }
}

/// Writes the audit entry of a mutation that ended with `status`.
pub(crate) async fn record(state: &AppState, caller: &Caller, audit: Audit<'_>, status: u16) {
    let entry = NewAudit {
        tenant_id: caller.tenant(),
        actor: caller.actor(),
        action: audit.action.into(),
        resource: audit.resource,
        ip: Some(caller.meta.ip.clone()),
        user_agent: caller.meta.user_agent.clone(),
        status: status as i64,
        payload: audit.payload.map(|p| crate::mask::mask(&p)),
    };
    let (action, resource) = (entry.action.clone(), entry.resource.clone());
    if let Err(e) = state.logs.write(LogEntry::Audit(entry)).await {
        tracing::error!(error = %e, action, resource, "audit entry not written");
    }
}

/// The status an audit entry records for `result`.
pub(crate) fn status_of<T>(audit: &Audit<'_>, result: &ApiResult<T>) -> u16 {
    match result {
        Ok(_) => audit.ok_status,
        Err(e) => e.status().as_u16(),
    }
}

/// Runs a mutation and writes its audit entry, whatever the outcome, before answering.
pub(crate) async fn audited<T, Fut>(
    state: &AppState,
    caller: &Caller,
    audit: Audit<'_>,
    run: Fut,
) -> ApiResult<T>
where
    Fut: Future<Output = ApiResult<T>>,
{
    let result = run.await;
    let status = status_of(&audit, &result);
    record(state, caller, audit, status).await;
    result
}

/// Writes the access entry of a sensitive read: who read what, and which fields it returned.
pub(crate) async fn accessed(
    state: &AppState,
    caller: &Caller,
    action: &str,
    resource: &str,
    cached: bool,
    body: &impl Serialize,
) {
    let fields = match serde_json::to_value(body) {
        Ok(Value::Object(m)) => m.into_iter().map(|(k, _)| k).collect(),
        _ => Vec::new(),
    };
    let entry = NewAccess {
        tenant_id: caller.tenant(),
        actor: caller.actor(),
        action: action.into(),
        resource: resource.into(),
        ip: Some(caller.meta.ip.clone()),
        user_agent: caller.meta.user_agent.clone(),
        cached,
        fields,
    };
    if let Err(e) = state.logs.write(LogEntry::Access(entry)).await {
        tracing::error!(error = %e, action, resource, "access entry not written");
    }
}

/// The queue `name`, if the caller may see it and it exists (configured or on the backend);
/// 404 otherwise, as if a tenant's foreign queue did not exist.
pub async fn visible_queue(state: &AppState, caller: &Caller, name: &str) -> ApiResult<Queue> {
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

/// A job reference: what an enqueue or replay answers with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRef {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
}

impl From<&keel::Job> for JobRef {
    fn from(j: &keel::Job) -> JobRef {
        JobRef {
            id: j.id.clone(),
            name: j.name.clone(),
        }
    }
}
