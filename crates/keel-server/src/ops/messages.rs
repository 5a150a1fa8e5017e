//! What the `email` and `ai` handlers did: email logs, AI runs with their messages and
//! events, AI tasks and usage. Viewer reads, tenant-scoped, cached 30 s, access-logged.

use std::time::Duration;

use keel_records::messages::{
    AiEvent, AiFilter, AiMessage, AiRun, AiTask, AiUsage, EmailFilter, EmailLog,
};
use keel_records::{Page, Role};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{accessed, cached, page_limit, parse_time, Read};
use crate::error::{ApiError, ApiResult};
use crate::extract::Caller;
use crate::state::AppState;
use crate::tags;

/// How long these listings are cached (the seeds' 30 s; a recorded send or call drops them).
pub const MESSAGES_TTL: Duration = Duration::from_secs(30);
/// Default page size.
pub const DEFAULT_LIMIT: usize = 50;
/// The statuses of an AI run (and task).
pub const AI_STATUSES: [&str; 3] = ["completed", "retrying", "failed"];
/// The statuses of an email log.
pub const EMAIL_STATUSES: [&str; 3] = ["sent", "deferred", "failed"];
/// Most hours of the usage chart (a week).
pub const MAX_USAGE_HOURS: i64 = 168;

/// The query of the AI listings (runs, tasks, events, messages: each takes what applies).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AiQuery {
    /// `completed`, `retrying` or `failed`.
    pub status: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Queue.
    pub queue: Option<String>,
    /// The task kind (job name).
    pub task: Option<String>,
    /// One task (its job id).
    pub task_id: Option<String>,
    /// One run.
    pub run_id: Option<String>,
    /// From (ms or RFC 3339).
    pub from: Option<String>,
    /// Until (ms or RFC 3339).
    pub to: Option<String>,
    /// Page, from 1.
    pub page: Option<usize>,
    /// Rows per page (1-1000, default 50).
    pub limit: Option<usize>,
}

/// The query of the email log.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EmailQuery {
    /// `sent`, `deferred` or `failed`.
    pub status: Option<String>,
    /// Template.
    pub template: Option<String>,
    /// Queue.
    pub queue: Option<String>,
    /// Job id.
    pub job_id: Option<String>,
    /// From (ms or RFC 3339).
    pub from: Option<String>,
    /// Until (ms or RFC 3339).
    pub to: Option<String>,
    /// Page, from 1.
    pub page: Option<usize>,
    /// Rows per page (1-1000, default 50).
    pub limit: Option<usize>,
}

fn one_of(field: &str, v: &Option<String>, allowed: &[&str]) -> ApiResult<()> {
    match v {
        Some(s) if !allowed.contains(&s.as_str()) => Err(ApiError::invalid(
            field,
            format!("one of {}", allowed.join(", ")),
        )),
        _ => Ok(()),
    }
}

fn visible_queue(state: &AppState, caller: &Caller, queue: &Option<String>) -> ApiResult<()> {
    match queue {
        Some(q) if !state.can_see_queue(&caller.scope, q) => {
            Err(ApiError::not_found(format!("queue {q}")))
        }
        _ => Ok(()),
    }
}

impl AiQuery {
    fn filter(&self, state: &AppState, caller: &Caller) -> ApiResult<AiFilter> {
        one_of("status", &self.status, &AI_STATUSES)?;
        visible_queue(state, caller, &self.queue)?;
        let run_id = match &self.run_id {
            Some(v) => Some(
                v.parse::<i64>()
                    .map_err(|_| ApiError::invalid("runId", "a run id is a number"))?,
            ),
            None => None,
        };
        Ok(AiFilter {
            status: self.status.clone(),
            model: self.model.clone(),
            queue: self.queue.clone(),
            job_name: self.task.clone(),
            job_id: self.task_id.clone(),
            run_id,
            from: parse_time("from", self.from.as_deref())?,
            to: parse_time("to", self.to.as_deref())?,
        })
    }
}

/// A cached, access-logged listing: `what` names it in the cache key and the access log
/// (`owner.read.<action>`).
async fn listing<T, F, Fut>(
    state: &AppState,
    caller: &Caller,
    (action, tag): (&str, &str),
    key: String,
    compute: F,
) -> ApiResult<Read<T>>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ApiResult<T>>,
{
    caller.require(Role::Viewer)?;
    let read = cached(
        state,
        caller,
        &format!("{action}|{key}"),
        &[tag],
        MESSAGES_TTL,
        compute,
    )
    .await?;
    accessed(
        state,
        caller,
        &format!("owner.read.{action}"),
        action,
        read.cached,
        &read.value,
    )
    .await;
    Ok(read)
}

fn key_of(filter: &impl Serialize, page: usize, limit: usize) -> String {
    format!(
        "{}|{page}|{limit}",
        serde_json::to_string(filter).unwrap_or_default()
    )
}

macro_rules! ai_listing {
    ($(#[$doc:meta])* $name:ident, $action:literal, $method:ident, $item:ty) => {
        $(#[$doc])*
        pub async fn $name(
            state: &AppState,
            caller: &Caller,
            q: &AiQuery,
        ) -> ApiResult<Read<Page<$item>>> {
            caller.require(Role::Viewer)?;
            let filter = q.filter(state, caller)?;
            let (page, limit) = page_limit(q.page, q.limit, DEFAULT_LIMIT)?;
            listing(state, caller, ($action, tags::AI), key_of(&filter, page, limit), || async {
                Ok(state
                    .store
                    .$method(&caller.scope, &filter, page as i64, limit as i64)
                    .await?)
            })
            .await
        }
    };
}

ai_listing!(
    /// AI runs, newest first (`owner.read.ai_runs`).
    ai_runs, "ai_runs", list_ai_runs, AiRun
);
ai_listing!(
    /// AI tasks, latest first (`owner.read.ai_tasks`).
    ai_tasks, "ai_tasks", list_ai_tasks, AiTask
);
ai_listing!(
    /// AI events, newest first (`owner.read.ai_events`).
    ai_events, "ai_events", list_ai_events, AiEvent
);

/// AI messages of one run (`runId`) or task (`taskId`), in order (`owner.read.ai_messages`).
pub async fn ai_messages(
    state: &AppState,
    caller: &Caller,
    q: &AiQuery,
) -> ApiResult<Read<Page<AiMessage>>> {
    caller.require(Role::Viewer)?;
    if q.run_id.is_none() && q.task_id.is_none() {
        return Err(ApiError::invalid(
            "runId",
            "name the run (runId) or the task (taskId) whose messages to list",
        ));
    }
    let filter = q.filter(state, caller)?;
    let (page, limit) = page_limit(q.page, q.limit, DEFAULT_LIMIT)?;
    listing(
        state,
        caller,
        ("ai_messages", tags::AI),
        key_of(&filter, page, limit),
        || async {
            Ok(state
                .store
                .list_ai_messages(&caller.scope, &filter, page as i64, limit as i64)
                .await?)
        },
    )
    .await
}

/// One AI run with its messages and events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AiRunDetail {
    /// The run.
    pub run: AiRun,
    /// Its messages, in order (the first 1000).
    pub messages: Vec<AiMessage>,
    /// Its events, oldest first (the first 1000).
    pub events: Vec<AiEvent>,
}

/// One AI run (`owner.read.ai_run`). `id` is the path's text.
pub async fn ai_run(state: &AppState, caller: &Caller, id: &str) -> ApiResult<AiRunDetail> {
    caller.require(Role::Viewer)?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::invalid("id", "a run id is a number"))?;
    let run = state
        .store
        .ai_run(&caller.scope, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("AI run {id}")))?;
    let of_run = AiFilter {
        run_id: Some(id),
        ..Default::default()
    };
    let messages = state
        .store
        .list_ai_messages(&caller.scope, &of_run, 1, 1000)
        .await?
        .items;
    let mut events = state
        .store
        .list_ai_events(&caller.scope, &of_run, 1, 1000)
        .await?
        .items;
    events.reverse();
    let out = AiRunDetail {
        run,
        messages,
        events,
    };
    accessed(
        state,
        caller,
        "owner.read.ai_run",
        &format!("ai_run:{id}"),
        false,
        &out,
    )
    .await;
    Ok(out)
}

/// AI usage per model per hour over the last `hours` (1-168, default 24), oldest first.
pub async fn ai_usage(
    state: &AppState,
    caller: &Caller,
    hours: Option<i64>,
) -> ApiResult<Read<Vec<AiUsage>>> {
    let hours = hours.unwrap_or(24);
    if !(1..=MAX_USAGE_HOURS).contains(&hours) {
        return Err(ApiError::invalid("hours", "must be between 1 and 168"));
    }
    let since = (keel::now_ms() as i64 / 3_600_000 - hours + 1) * 3_600_000;
    listing(
        state,
        caller,
        ("ai_usage", tags::AI),
        format!("{hours}|{}", since),
        || async { Ok(state.store.ai_usage(&caller.scope, since).await?) },
    )
    .await
}

/// Email logs, newest first (`owner.read.emails`).
pub async fn emails(
    state: &AppState,
    caller: &Caller,
    q: &EmailQuery,
) -> ApiResult<Read<Page<EmailLog>>> {
    caller.require(Role::Viewer)?;
    one_of("status", &q.status, &EMAIL_STATUSES)?;
    visible_queue(state, caller, &q.queue)?;
    let filter = EmailFilter {
        status: q.status.clone(),
        template: q.template.clone(),
        queue: q.queue.clone(),
        job_id: q.job_id.clone(),
        from: parse_time("from", q.from.as_deref())?,
        to: parse_time("to", q.to.as_deref())?,
    };
    let (page, limit) = page_limit(q.page, q.limit, DEFAULT_LIMIT)?;
    listing(
        state,
        caller,
        ("emails", tags::EMAILS),
        key_of(&filter, page, limit),
        || async {
            Ok(state
                .store
                .list_emails(&caller.scope, &filter, page as i64, limit as i64)
                .await?)
        },
    )
    .await
}
