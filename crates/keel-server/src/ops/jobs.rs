//! Jobs: enqueue (one or a batch, all validated first), listing and search, one job with its
//! logs and runs, retry and remove.

use keel::{JobOptions, JobState, NewJob};
use keel_records::{JobRun, Role, RunFilter};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::queues::{change, changed};
use super::{accessed, visible_queue, Audit, JobRef};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::extract::Caller;
use crate::state::AppState;

/// Most jobs one enqueue call may add.
pub const MAX_ENQUEUE_BATCH: usize = 1000;
/// Most jobs a search looks at per request.
pub const SEARCH_SCAN: usize = 5000;
/// Jobs a search reads per round trip.
pub(crate) const SEARCH_CHUNK: usize = 500;
/// Default page size of a job listing.
pub const DEFAULT_JOBS_LIMIT: usize = 20;
/// Longest search text.
pub const MAX_SEARCH_CHARS: usize = 256;
/// Most log lines of one job returned with it.
pub const MAX_JOB_LOGS: usize = 1000;
/// Most runs of one job returned with it.
pub const MAX_JOB_RUNS: i64 = 50;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnqueueItem {
    name: String,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    opts: JobOptions,
}

/// The jobs of an enqueue body: one object or an array (≤ [`MAX_ENQUEUE_BATCH`]), every item
/// validated before any is added; errors name the field (`[3].opts.delay`).
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

/// What an enqueue added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enqueued {
    /// The jobs, in the order sent.
    pub jobs: Vec<JobRef>,
}

/// Adds one job (an object) or a batch (an array) to `queue` (admin; audited
/// `owner.job.enqueue` with the masked body). When the backend fails some adds of a batch,
/// the error says which were added and which were not.
pub async fn enqueue(
    state: &AppState,
    caller: &Caller,
    queue: &str,
    body: Value,
) -> ApiResult<Enqueued> {
    let audit = Audit::new("owner.job.enqueue", format!("queue:{queue}"))
        .payload(body.clone())
        .created();
    change(state, caller, audit, queue, |q| async move {
        let (items, bulk) = parse_items(&body)?;
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
            bulk_outcome(state, queue, outcomes).await?
        } else {
            let j = jobs.into_iter().next().expect("one job");
            vec![q.add(&j.name, j.data, j.opts).await?]
        };
        Ok(Enqueued {
            jobs: added.iter().map(JobRef::from).collect(),
        })
    })
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
            Ok(j) => added.push(serde_json::json!({"index": index, "id": j.id, "name": j.name})),
            Err(e) => {
                let e = ApiError::from(e);
                not_added.push(serde_json::json!({"index": index, "error": {"code": e.code.as_str(), "message": e.message}}));
                first.get_or_insert(e);
            }
        }
    }
    if !added.is_empty() {
        changed(state, queue).await;
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

/// A job listing's query.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsQuery {
    /// The state (default `waiting`); `status` is the seeds' name for it.
    #[serde(alias = "status")]
    pub state: Option<String>,
    /// Page, from 1.
    pub page: Option<usize>,
    /// Jobs per page (1-1000, default 20).
    pub limit: Option<usize>,
    /// Where the previous page ended (its `next_cursor`).
    pub cursor: Option<String>,
    /// Text looked for in names and data.
    pub search: Option<String>,
    /// Exact job name.
    pub name: Option<String>,
}

/// A job in a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSummary {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Payload.
    pub data: Value,
    /// Attempts made.
    pub attempts_made: u32,
    /// Created, ms.
    pub timestamp: u64,
    /// Started, ms.
    pub processed_on: Option<u64>,
    /// Finished, ms.
    pub finished_on: Option<u64>,
    /// Last error.
    pub failed_reason: Option<String>,
    /// Progress.
    pub progress: Value,
}

impl From<&keel::Job> for JobSummary {
    fn from(j: &keel::Job) -> JobSummary {
        JobSummary {
            id: j.id.clone(),
            name: j.name.clone(),
            data: j.data.clone(),
            attempts_made: j.attempts_made,
            timestamp: j.timestamp,
            processed_on: j.processed_on,
            finished_on: j.finished_on,
            failed_reason: j.failed_reason.clone(),
            progress: j.progress.clone(),
        }
    }
}

/// One page of a job listing, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobsPage {
    /// The queue.
    pub queue: String,
    /// The state listed.
    pub state: JobState,
    /// Jobs in that state.
    pub total: u64,
    /// Page size.
    pub limit: usize,
    /// The jobs.
    pub jobs: Vec<JobSummary>,
    /// Where the next page starts, when there is one.
    pub next_cursor: Option<String>,
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

/// The jobs of a queue in a state, newest first (viewer; access-logged
/// `owner.read.queue_jobs`). `cursor` continues where a page ended, also through searches.
pub async fn list(
    state: &AppState,
    caller: &Caller,
    queue: &str,
    p: &JobsQuery,
) -> ApiResult<JobsPage> {
    caller.require(Role::Viewer)?;
    let job_state = JobState::parse(p.state.as_deref().unwrap_or("waiting"))
        .map_err(|e| ApiError::invalid("state", e.to_string()))?;
    let (page, limit) = super::page_limit(p.page, p.limit, DEFAULT_JOBS_LIMIT)?;
    let mut offset = match &p.cursor {
        Some(c) => c
            .parse::<usize>()
            .map_err(|_| ApiError::invalid("cursor", "use the next_cursor of a previous page"))?,
        None => (page - 1) * limit,
    };
    if p.search
        .as_ref()
        .is_some_and(|s| s.len() > MAX_SEARCH_CHARS)
    {
        return Err(ApiError::invalid("search", "at most 256 characters"));
    }
    let q = visible_queue(state, caller, queue).await?;
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
            let chunk = q.list_range(job_state, offset, SEARCH_CHUNK, false).await?;
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
            if jobs.len() == limit || n < SEARCH_CHUNK || scanned >= SEARCH_SCAN {
                break;
            }
        }
        next_cursor = (offset < total as usize).then(|| offset.to_string());
    }
    let out = JobsPage {
        queue: queue.to_string(),
        state: job_state,
        total,
        limit,
        jobs: jobs.iter().map(JobSummary::from).collect(),
        next_cursor,
    };
    accessed(
        state,
        caller,
        "owner.read.queue_jobs",
        &format!("queue:{queue}"),
        false,
        &out,
    )
    .await;
    Ok(out)
}

/// One job with its state, log lines and runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDetail {
    /// The job.
    pub job: keel::Job,
    /// Its state (none when it left the queue meanwhile).
    pub state: Option<JobState>,
    /// Its log lines.
    pub logs: Vec<String>,
    /// How many log lines it has.
    pub log_count: u64,
    /// Its runs, newest first.
    pub runs: Vec<JobRun>,
}

/// One job (viewer; access-logged `owner.read.queue_job`).
pub async fn get(state: &AppState, caller: &Caller, queue: &str, id: &str) -> ApiResult<JobDetail> {
    caller.require(Role::Viewer)?;
    let q = visible_queue(state, caller, queue).await?;
    let job = q
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("job {id} in queue {queue}")))?;
    let job_state = q.job_state(id).await?;
    let (logs, log_count) = q.job_logs(id, 0, MAX_JOB_LOGS).await?;
    let filter = RunFilter {
        queue: Some(queue.to_string()),
        job_id: Some(id.to_string()),
        ..Default::default()
    };
    let runs = state
        .store
        .list_runs(&caller.scope, &filter, 1, MAX_JOB_RUNS)
        .await?;
    let out = JobDetail {
        job,
        state: job_state,
        logs,
        log_count,
        runs: runs.items,
    };
    accessed(
        state,
        caller,
        "owner.read.queue_job",
        &format!("job:{queue}/{id}"),
        false,
        &out,
    )
    .await;
    Ok(out)
}

/// A retried job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retried {
    /// Its id.
    pub retried: String,
}

/// A removed job or dead letter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Removed {
    /// Its id.
    pub removed: String,
}

/// Retries a failed or completed job (admin; audited `owner.job.retry`).
pub async fn retry(state: &AppState, caller: &Caller, queue: &str, id: &str) -> ApiResult<Retried> {
    let audit = Audit::new("owner.job.retry", format!("job:{queue}/{id}"));
    change(state, caller, audit, queue, |q| async move {
        if q.get_job(id).await?.is_none() {
            return Err(ApiError::not_found(format!(
                "job {id} in queue {}",
                q.name()
            )));
        }
        if let Some((instance, step)) = keel_records::workflow::parse_step_job_id(id) {
            // A step's failure is final in its instance's records: running the job again
            // would not move the instance. A re-run of the instance does (from this step).
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "job {id} is step {step} of workflow instance {instance}: re-run the instance \
                 (POST /api/owner/workflows/instances/{instance}/rerun) instead of the job"
                ),
            ));
        }
        q.retry(id).await?;
        Ok(Retried {
            retried: id.to_string(),
        })
    })
    .await
}

/// Removes a job (admin; audited `owner.job.remove`).
pub async fn remove(
    state: &AppState,
    caller: &Caller,
    queue: &str,
    id: &str,
) -> ApiResult<Removed> {
    let audit = Audit::new("owner.job.remove", format!("job:{queue}/{id}"));
    change(state, caller, audit, queue, |q| async move {
        if !q.remove(id).await? {
            return Err(ApiError::not_found(format!(
                "job {id} in queue {}",
                q.name()
            )));
        }
        Ok(Removed {
            removed: id.to_string(),
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enqueue_bodies_are_validated_whole_naming_the_field() {
        let (jobs, bulk) = parse_items(&serde_json::json!({"name": "a"})).unwrap();
        assert!(!bulk && jobs.len() == 1);
        let e = parse_items(&serde_json::json!([{"name": "a"}, {"name": ""}])).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("[1].name"));
        let e =
            parse_items(&serde_json::json!([{"name": "a", "opts": {"delay": -1}}])).unwrap_err();
        assert!(
            e.field
                .as_deref()
                .is_some_and(|f| f.starts_with("[0].opts")),
            "{e:?}"
        );
        let e = parse_items(&serde_json::json!([])).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body"));
    }
}
