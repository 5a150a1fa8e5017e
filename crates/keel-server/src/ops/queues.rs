//! Queues: the listing with each queue's counts, one queue's stats, pause and resume.

use std::collections::BTreeSet;
use std::time::Duration;

use keel::{JobState, Queue, QueueCounts};
use keel_records::{Role, Scope};
use serde::{Deserialize, Serialize};

use super::{cached, record, status_of, visible_queue, Audit, Read};
use crate::error::ApiResult;
use crate::extract::Caller;
use crate::state::AppState;
use crate::tags;

/// How long queue listings and stats are cached.
pub const STATS_TTL: Duration = Duration::from_secs(10);

/// One queue's counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Name.
    pub name: String,
    /// Tenant name, when bound to one.
    pub tenant: Option<String>,
    /// Jobs per state, and whether it is paused.
    #[serde(flatten)]
    pub counts: QueueCounts,
    /// Dead letters.
    pub dlq: u64,
}

impl QueueStats {
    /// The count of a job state by its name (`waiting`, …; 0 for another name).
    pub fn count(&self, state: &str) -> u64 {
        JobState::parse(state)
            .map(|s| self.counts.get(s))
            .unwrap_or(0)
    }
}

/// A pause or resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Paused {
    /// The queue.
    pub queue: String,
    /// Whether it is paused now.
    pub paused: bool,
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
        counts: c,
        dlq,
    })
}

/// Every queue name `scope` may see: configured ones and those found on the backend, without
/// the dead-letter queues (they show as each queue's `dlq` count).
pub async fn visible_names(state: &AppState, scope: &Scope) -> ApiResult<Vec<String>> {
    let mut names: BTreeSet<String> = state.config.queues.keys().cloned().collect();
    names.extend(state.backend.queue_names().await?);
    Ok(names
        .into_iter()
        .filter(|n| !n.starts_with(keel_core::DLQ_PREFIX))
        .filter(|n| state.can_see_queue(scope, n))
        .collect())
}

/// The stats of every queue `scope` may see (also sent on realtime connect), uncached.
pub async fn all_stats(state: &AppState, scope: &Scope) -> ApiResult<Vec<QueueStats>> {
    let mut out = Vec::new();
    for name in visible_names(state, scope).await? {
        let q = state.config.queue(&state.backend, &name)?;
        out.push(stats_of(state, &q).await?);
    }
    Ok(out)
}

/// Every visible queue with its counts (viewer; cached 10 s).
pub async fn list(state: &AppState, caller: &Caller) -> ApiResult<Read<Vec<QueueStats>>> {
    caller.require(Role::Viewer)?;
    cached(state, caller, "queues", &[tags::QUEUES], STATS_TTL, || {
        all_stats(state, &caller.scope)
    })
    .await
}

/// One queue's counts (viewer; cached 10 s).
pub async fn stats(state: &AppState, caller: &Caller, queue: &str) -> ApiResult<Read<QueueStats>> {
    caller.require(Role::Viewer)?;
    let q = visible_queue(state, caller, queue).await?;
    let tag = tags::queue(queue);
    cached(
        state,
        caller,
        &format!("stats/{queue}"),
        &[tag.as_str()],
        STATS_TTL,
        || async { stats_of(state, &q).await },
    )
    .await
}

/// After a change to `queue`: its cached answers go (coalesced with concurrent changes) and
/// live pages hear of it.
pub(crate) async fn changed(state: &AppState, queue: &str) {
    state
        .invalidator
        .invalidate(&[tags::QUEUES, &tags::queue(queue)])
        .await;
    state.realtime.queue_changed(queue);
}

/// A mutation of one queue by an admin: done, then — at the same time, both before the
/// answer — audited and the queue's cache entries dropped.
pub(crate) async fn change<T, F, Fut>(
    state: &AppState,
    caller: &Caller,
    audit: Audit<'_>,
    queue: &str,
    run: F,
) -> ApiResult<T>
where
    F: FnOnce(Queue) -> Fut,
    Fut: std::future::Future<Output = ApiResult<T>>,
{
    let result = async {
        caller.require(Role::Admin)?;
        let q = visible_queue(state, caller, queue).await?;
        run(q).await
    }
    .await;
    let status = status_of(&audit, &result);
    if result.is_ok() {
        tokio::join!(changed(state, queue), record(state, caller, audit, status));
    } else {
        record(state, caller, audit, status).await;
    }
    result
}

/// Pauses (`true`) or resumes a queue (admin; audited `owner.queue.pause`/`resume`).
pub async fn set_paused(
    state: &AppState,
    caller: &Caller,
    queue: &str,
    pause: bool,
) -> ApiResult<Paused> {
    let action = if pause {
        "owner.queue.pause"
    } else {
        "owner.queue.resume"
    };
    change(
        state,
        caller,
        Audit::new(action, format!("queue:{queue}")),
        queue,
        |q| async move {
            if pause {
                q.pause().await?;
            } else {
                q.resume().await?;
            }
            Ok(Paused {
                queue: q.name().to_string(),
                paused: pause,
            })
        },
    )
    .await
}
