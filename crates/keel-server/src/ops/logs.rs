//! The audit and data-access logs, filtered and paged (admin).

use std::time::Duration;

use keel_records::{AccessEntry, AuditEntry, LogFilter, Page, Role};
use serde::{Deserialize, Serialize};

use super::{accessed, cached, page_limit, parse_time, Read};
use crate::error::ApiResult;
use crate::extract::Caller;
use crate::state::AppState;
use crate::tags;

/// How long audit listings are cached (a write invalidates them).
pub const AUDIT_TTL: Duration = Duration::from_secs(15);
/// Default page size of the logs.
pub const DEFAULT_LOG_LIMIT: usize = 50;

/// A log listing's query.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// One entry by id.
    pub id: Option<i64>,
    /// Exact action.
    pub action: Option<String>,
    /// Resource prefix.
    pub resource: Option<String>,
    /// Exact actor; `actorId` is the seeds' name for it.
    #[serde(alias = "actorId")]
    pub actor: Option<String>,
    /// From (ms or RFC 3339).
    pub from: Option<String>,
    /// To (ms or RFC 3339).
    pub to: Option<String>,
    /// Page, from 1.
    pub page: Option<usize>,
    /// Entries per page (1-1000, default 50).
    pub limit: Option<usize>,
}

fn filter_of(q: &LogQuery) -> ApiResult<(LogFilter, usize, usize)> {
    let filter = LogFilter {
        id: q.id,
        action: q.action.clone(),
        resource: q.resource.clone(),
        actor: q.actor.clone(),
        from: parse_time("from", q.from.as_deref())?,
        to: parse_time("to", q.to.as_deref())?,
    };
    let (page, limit) = page_limit(q.page, q.limit, DEFAULT_LOG_LIMIT)?;
    Ok((filter, page, limit))
}

/// Audit entries, newest first (admin; cached 15 s; access-logged `owner.read.audit_log`).
pub async fn audit(
    state: &AppState,
    caller: &Caller,
    q: &LogQuery,
) -> ApiResult<Read<Page<AuditEntry>>> {
    caller.require(Role::Admin)?;
    let (filter, page, limit) = filter_of(q)?;
    let key = format!(
        "{}|{}|{page}|{limit}",
        tags::AUDIT,
        serde_json::to_string(&filter).unwrap_or_default()
    );
    let read = cached(state, caller, &key, &[tags::AUDIT], AUDIT_TTL, || async {
        Ok(state
            .store
            .list_audit(&caller.scope, &filter, page as i64, limit as i64)
            .await?)
    })
    .await?;
    accessed(
        state,
        caller,
        "owner.read.audit_log",
        "logs:audit",
        read.cached,
        &read.value,
    )
    .await;
    Ok(read)
}

/// Access entries, newest first (admin; never cached: each read is itself logged, after it
/// is read, so the page is stable).
pub async fn access(
    state: &AppState,
    caller: &Caller,
    q: &LogQuery,
) -> ApiResult<Page<AccessEntry>> {
    caller.require(Role::Admin)?;
    let (filter, page, limit) = filter_of(q)?;
    let out = state
        .store
        .list_access(&caller.scope, &filter, page as i64, limit as i64)
        .await?;
    accessed(
        state,
        caller,
        "owner.read.access_log",
        "logs:access",
        false,
        &out,
    )
    .await;
    Ok(out)
}
