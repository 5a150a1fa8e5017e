//! Dead letters: a queue's DLQ page by page, replay (one or all, with a dry run) and remove.

use keel::DlqEntry;
use keel_records::Role;
use serde::{Deserialize, Serialize};

use super::jobs::Removed;
use super::queues::change;
use super::{accessed, page_limit, visible_queue, Audit, JobRef};
use crate::error::{ApiError, ApiResult};
use crate::extract::Caller;
use crate::state::AppState;

/// Default page size of a DLQ listing.
pub const DEFAULT_DLQ_LIMIT: usize = 50;

/// A page of a queue's dead letters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DlqListing {
    /// The queue.
    pub queue: String,
    /// Entries in the DLQ.
    pub total: u64,
    /// Page, from 1.
    pub page: usize,
    /// Page size.
    pub limit: usize,
    /// The entries, newest first.
    pub entries: Vec<DlqEntry>,
    /// Ids on this page that are not Keel dead letters (listed so they can be removed).
    pub unreadable: Vec<String>,
}

/// One page of a queue's dead letters (viewer; access-logged `owner.read.dlq`).
pub async fn list(
    state: &AppState,
    caller: &Caller,
    queue: &str,
    page: Option<usize>,
    limit: Option<usize>,
) -> ApiResult<DlqListing> {
    caller.require(Role::Viewer)?;
    let (page, limit) = page_limit(page, limit, DEFAULT_DLQ_LIMIT)?;
    let q = visible_queue(state, caller, queue).await?;
    let dlq = q.dlq();
    let listed = dlq.page(page, limit).await?;
    let total = dlq.count().await?;
    let out = DlqListing {
        queue: queue.to_string(),
        total,
        page,
        limit,
        entries: listed.entries,
        unreadable: listed.unreadable,
    };
    accessed(
        state,
        caller,
        "owner.read.dlq",
        &format!("dlq:{queue}"),
        false,
        &out,
    )
    .await;
    Ok(out)
}

/// What a replay of every entry did, or (dry run) would do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayedAll {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Dry run: entries that would go back to the queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_replay: Option<usize>,
    /// Entries that went back to the queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replayed: Option<usize>,
}

/// Every entry back to the queue as a new job, or how many would go (admin; audited
/// `owner.dlq.replay_all`).
pub async fn replay_all(
    state: &AppState,
    caller: &Caller,
    queue: &str,
    dry_run: bool,
) -> ApiResult<ReplayedAll> {
    let audit = Audit::new("owner.dlq.replay_all", format!("dlq:{queue}"))
        .payload(serde_json::json!({ "dry_run": dry_run }));
    change(state, caller, audit, queue, |q| async move {
        if dry_run {
            let n = q.dlq().replay_all_dry_run().await?;
            return Ok(ReplayedAll {
                dry_run: true,
                would_replay: Some(n),
                replayed: None,
            });
        }
        let n = q.dlq().replay_all().await?;
        Ok(ReplayedAll {
            dry_run: false,
            would_replay: None,
            replayed: Some(n),
        })
    })
    .await
}

/// One replayed entry and the job it became.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replayed {
    /// The entry's id.
    pub replayed: String,
    /// The new job.
    pub job: JobRef,
}

/// One entry back to the queue (admin; audited `owner.dlq.replay`).
pub async fn replay(
    state: &AppState,
    caller: &Caller,
    queue: &str,
    id: &str,
) -> ApiResult<Replayed> {
    let audit = Audit::new("owner.dlq.replay", format!("dlq:{queue}/{id}"));
    change(state, caller, audit, queue, |q| async move {
        let job = q.dlq().replay(id).await?;
        Ok(Replayed {
            replayed: id.to_string(),
            job: JobRef::from(&job),
        })
    })
    .await
}

/// Removes one entry (admin; audited `owner.dlq.remove`).
pub async fn remove(
    state: &AppState,
    caller: &Caller,
    queue: &str,
    id: &str,
) -> ApiResult<Removed> {
    let audit = Audit::new("owner.dlq.remove", format!("dlq:{queue}/{id}"));
    change(state, caller, audit, queue, |q| async move {
        if !q.dlq().remove(id).await? {
            return Err(ApiError::not_found(format!(
                "dead letter {id} of queue {}",
                q.name()
            )));
        }
        Ok(Removed {
            removed: id.to_string(),
        })
    })
    .await
}
