//! Bulk actions: retry or remove many jobs of a queue — named ones, or up to a number of
//! those in a state — each audited on its own, as if done one by one.

use keel::JobState;
use keel_records::Role;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::jobs::{remove, retry, SEARCH_CHUNK};
use super::visible_queue;
use crate::error::{ApiError, ApiResult};
use crate::extract::{from_json, Caller};
use crate::state::AppState;

/// Most jobs one bulk action touches.
pub const MAX_BULK_ACTION: usize = 10_000;

/// What a bulk action does to each job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BulkKind {
    /// Retry.
    Retry,
    /// Remove.
    Remove,
}

/// A bulk action: the jobs named in `ids`, or (without `ids`) up to `limit` jobs of `state`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkInput {
    /// `retry` or `remove`.
    pub action: BulkKind,
    /// The jobs.
    #[serde(default)]
    pub ids: Vec<String>,
    /// Without `ids`: every job in this state (the newest first).
    pub state: Option<String>,
    /// Without `ids`: at most this many (default and most: 10,000) — the number an operator
    /// confirmed.
    pub limit: Option<usize>,
}

/// A job a bulk action could not handle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BulkFailure {
    /// The job.
    pub id: String,
    /// Its error's code.
    pub code: String,
    /// Its error's message.
    pub message: String,
}

/// What a bulk action did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BulkOutcome {
    /// `retry` or `remove`.
    pub action: BulkKind,
    /// Jobs handled.
    pub done: u64,
    /// Jobs that could not be handled, with why.
    pub failed: Vec<BulkFailure>,
}

/// Retries or removes many jobs (admin): each job is audited on its own (`owner.job.retry` /
/// `owner.job.remove`), as if done one by one, and the answer says which failed.
pub async fn bulk(
    state: &AppState,
    caller: &Caller,
    queue: &str,
    body: Value,
) -> ApiResult<BulkOutcome> {
    caller.require(Role::Admin)?;
    let input: BulkInput = from_json(body)?;
    let q = visible_queue(state, caller, queue).await?;
    let limit = input.limit.unwrap_or(MAX_BULK_ACTION);
    if !(1..=MAX_BULK_ACTION).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 10000"));
    }
    if input.ids.len() > MAX_BULK_ACTION {
        return Err(ApiError::invalid("ids", "at most 10000 jobs per call"));
    }
    let one = |id: String| async move {
        let r = match input.action {
            BulkKind::Retry => retry(state, caller, queue, &id).await.map(|_| ()),
            BulkKind::Remove => remove(state, caller, queue, &id).await.map(|_| ()),
        };
        r.map_err(|e| BulkFailure {
            id,
            code: e.code.as_str().into(),
            message: e.message,
        })
    };
    let mut out = BulkOutcome {
        action: input.action,
        done: 0,
        failed: Vec::new(),
    };
    if !input.ids.is_empty() {
        if input.state.is_some() {
            return Err(ApiError::invalid("state", "send ids or a state, not both"));
        }
        for id in input.ids {
            match one(id).await {
                Ok(()) => out.done += 1,
                Err(f) => out.failed.push(f),
            }
        }
        return Ok(out);
    }
    let Some(st) = &input.state else {
        return Err(ApiError::invalid(
            "ids",
            "send the ids of the jobs, or a state",
        ));
    };
    let job_state = JobState::parse(st).map_err(|e| ApiError::invalid("state", e.to_string()))?;
    // Jobs leave the state as they are handled, so the first page is read again until the
    // limit is reached; jobs that could not be handled are skipped past.
    while (out.done as usize) + out.failed.len() < limit {
        let want = (limit - out.done as usize - out.failed.len()).min(SEARCH_CHUNK);
        let batch = q
            .list_range(job_state, out.failed.len(), want, false)
            .await?;
        if batch.is_empty() {
            break;
        }
        for j in batch {
            match one(j.id).await {
                Ok(()) => out.done += 1,
                Err(f) => out.failed.push(f),
            }
        }
    }
    Ok(out)
}
