//! Live workers: the heartbeats of Keel processes, each with the queues it runs.

use keel_records::{Role, Scope};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ApiResult;
use crate::extract::Caller;
use crate::state::AppState;

/// One live worker process, from its heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Heartbeat id.
    #[serde(default)]
    pub id: String,
    /// Host name.
    #[serde(default)]
    pub host: String,
    /// Process id.
    #[serde(default)]
    pub pid: Option<u64>,
    /// Started, ms.
    #[serde(default)]
    pub started_at: Option<u64>,
    /// The queues it runs that the caller may see.
    #[serde(default)]
    pub queues: Vec<String>,
    /// Whatever else the heartbeat carries (`server`, …).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The live workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workers {
    /// The workers.
    pub workers: Vec<WorkerInfo>,
}

/// The live workers, each with the queues it runs that the caller may see; a tenant sees only
/// workers of its queues (viewer).
pub async fn list(state: &AppState, caller: &Caller) -> ApiResult<Workers> {
    caller.require(Role::Viewer)?;
    let mut workers = Vec::new();
    for beat in state.backend.raw().live_workers().await? {
        let Ok(mut w) = serde_json::from_value::<WorkerInfo>(beat) else {
            continue;
        };
        w.queues.retain(|q| state.can_see_queue(&caller.scope, q));
        if w.queues.is_empty() && caller.scope != Scope::All {
            continue;
        }
        workers.push(w);
    }
    Ok(Workers { workers })
}
