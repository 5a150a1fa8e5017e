//! The records' model: roles and scopes, tenants, users, tokens, the audit and data-access log
//! entries, job runs, and pages of them.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};

/// A role: what a token or user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read only.
    Viewer,
    /// Operate queues and jobs (everything but tokens and tenants).
    Admin,
    /// Everything, including tokens and tenants.
    Owner,
}

impl Role {
    /// `owner`, `admin`, `viewer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }
}

impl FromStr for Role {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Role> {
        match s {
            "owner" => Ok(Role::Owner),
            "admin" => Ok(Role::Admin),
            "viewer" => Ok(Role::Viewer),
            _ => Err(StoreError::invalid(
                "role",
                format!("{s:?}: expected owner, admin or viewer"),
            )),
        }
    }
}

/// Whose rows a read may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every row (a token not bound to a tenant).
    All,
    /// Only this tenant's rows.
    Tenant(String),
}

impl Scope {
    /// The tenant a read is limited to, if any.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Scope::All => None,
            Scope::Tenant(t) => Some(t),
        }
    }
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    /// Id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Created, ms.
    pub created_at: i64,
}

/// A user of the console.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Id.
    pub id: String,
    /// Email (unique).
    pub email: String,
    /// Role.
    pub role: Role,
    /// Tenant, if bound to one.
    pub tenant_id: Option<String>,
    /// Created, ms.
    pub created_at: i64,
    /// Disabled, ms: the account can no longer sign in and its sessions end.
    pub disabled_at: Option<i64>,
}

impl User {
    /// What the user may see: everything, or their tenant's.
    pub fn scope(&self) -> Scope {
        match &self.tenant_id {
            Some(t) => Scope::Tenant(t.clone()),
            None => Scope::All,
        }
    }

    /// The actor recorded in the audit and access logs: `user:<email>`.
    pub fn actor(&self) -> String {
        format!("user:{}", self.email)
    }
}

/// An API token (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiToken {
    /// Id.
    pub id: String,
    /// A label.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Tenant, if bound to one.
    pub tenant_id: Option<String>,
    /// The first characters of the secret, to recognise it.
    pub hint: String,
    /// Created, ms.
    pub created_at: i64,
    /// Last authenticated use, ms.
    pub last_used_at: Option<i64>,
    /// Revoked, ms.
    pub revoked_at: Option<i64>,
}

impl ApiToken {
    /// What the token may see: everything, or its tenant's.
    pub fn scope(&self) -> Scope {
        match &self.tenant_id {
            Some(t) => Scope::Tenant(t.clone()),
            None => Scope::All,
        }
    }
}

/// A new audit entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewAudit {
    /// Tenant of the actor, if any.
    pub tenant_id: Option<String>,
    /// Who (`token:<id>`).
    pub actor: String,
    /// What (`owner.queue.pause`).
    pub action: String,
    /// On what (`queue:emails`, `job:emails/42`).
    pub resource: String,
    /// Client IP.
    pub ip: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// HTTP status of the outcome.
    pub status: i64,
    /// The request payload, secrets masked.
    pub payload: Option<serde_json::Value>,
}

/// A stored audit entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Id (increasing).
    pub id: i64,
    /// When, ms.
    pub at: i64,
    /// Tenant.
    pub tenant_id: Option<String>,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub resource: String,
    /// Client IP.
    pub ip: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// HTTP status.
    pub status: i64,
    /// Masked payload.
    pub payload: Option<serde_json::Value>,
}

/// A new data-access entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewAccess {
    /// Tenant of the actor.
    pub tenant_id: Option<String>,
    /// Who.
    pub actor: String,
    /// What (`owner.read.queue_job`).
    pub action: String,
    /// On what.
    pub resource: String,
    /// Client IP.
    pub ip: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// Served from the cache.
    pub cached: bool,
    /// Fields returned.
    pub fields: Vec<String>,
}

/// A stored data-access entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessEntry {
    /// Id.
    pub id: i64,
    /// When, ms.
    pub at: i64,
    /// Tenant.
    pub tenant_id: Option<String>,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub resource: String,
    /// Client IP.
    pub ip: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// Served from the cache.
    pub cached: bool,
    /// Fields returned.
    pub fields: Vec<String>,
}

/// Filters of the audit and access logs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LogFilter {
    /// One entry by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// Exact action.
    pub action: Option<String>,
    /// Resource prefix (`queue:emails` matches `queue:emails` and `queue:emails/…`).
    pub resource: Option<String>,
    /// Exact actor.
    pub actor: Option<String>,
    /// From (inclusive), ms.
    pub from: Option<i64>,
    /// To (inclusive), ms.
    pub to: Option<i64>,
}

/// One page of results, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The rows.
    pub items: Vec<T>,
    /// Rows matching the filter.
    pub total: i64,
    /// Page number, from 1.
    pub page: i64,
    /// Rows per page.
    pub limit: i64,
}

/// A job run to record (one attempt of one job).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewRun {
    /// The queue's tenant, if bound.
    pub tenant_id: Option<String>,
    /// Queue.
    pub queue: String,
    /// Job id.
    pub job_id: String,
    /// Job name.
    pub name: String,
    /// Attempt number, from 1.
    pub attempt: i64,
    /// `completed`, `failed` (will retry), `dead` (no attempt left), `stalled` (the attempt
    /// died with its worker and was recovered) or `delayed` (postponed by a per-key rate
    /// limit: not an attempt).
    pub status: String,
    /// Started, ms.
    pub started_at: i64,
    /// Finished, ms.
    pub finished_at: i64,
    /// Error message, when it failed.
    pub error: Option<String>,
    /// Worker id.
    pub worker: String,
    /// Trace id (the job's, or generated).
    pub trace_id: String,
    /// The plugin the attempt ran (the `http` handler's `plugin`, or the job's `pluginId`).
    #[serde(default)]
    pub plugin_id: Option<String>,
    /// The failure's stack, when the handler gave one.
    #[serde(default)]
    pub error_stack: Option<String>,
    /// The AI call this attempt made (the `ai` handler's record), written on the run's row:
    /// the AI runs, messages and events listings read it there. Its queue, job, attempt,
    /// times, error and trace id are the run's.
    #[serde(skip)]
    pub ai: Option<Box<crate::messages::NewAiRun>>,
}

/// A recorded job run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRun {
    /// Id.
    pub id: i64,
    /// Tenant.
    pub tenant_id: Option<String>,
    /// Queue.
    pub queue: String,
    /// Job id.
    pub job_id: String,
    /// Job name.
    pub name: String,
    /// Attempt.
    pub attempt: i64,
    /// Status.
    pub status: String,
    /// Started, ms.
    pub started_at: i64,
    /// Finished, ms.
    pub finished_at: Option<i64>,
    /// Duration, ms.
    pub duration_ms: Option<i64>,
    /// Error.
    pub error: Option<String>,
    /// Worker.
    pub worker: String,
    /// Trace id.
    pub trace_id: String,
    /// The plugin the attempt ran.
    pub plugin_id: Option<String>,
    /// The failure's stack.
    pub error_stack: Option<String>,
}

/// An event of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEvent {
    /// When, ms.
    pub at: i64,
    /// `started`, `completed`, `failed`.
    pub kind: String,
    /// Detail.
    pub detail: Option<String>,
}

/// Filters of job runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunFilter {
    /// Queue.
    pub queue: Option<String>,
    /// Plugin id.
    #[serde(default)]
    pub plugin: Option<String>,
    /// Status.
    pub status: Option<String>,
    /// Job id.
    pub job_id: Option<String>,
    /// Started from, ms.
    pub from: Option<i64>,
    /// Started until, ms.
    pub to: Option<i64>,
}

/// Finished job runs in one minute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinuteCounts {
    /// Start of the minute, ms since the epoch.
    pub minute: i64,
    /// Attempts that completed.
    pub completed: i64,
    /// Attempts that failed (retried or dead).
    pub failed: i64,
}

/// Pool figures for health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolHealth {
    /// `postgres` or `sqlite`.
    pub database: String,
    /// Connections open.
    pub size: u32,
    /// Of which idle.
    pub idle: u32,
    /// Configured maximum.
    pub max: u32,
    /// Round trip of `SELECT 1`, ms.
    pub latency_ms: f64,
}
