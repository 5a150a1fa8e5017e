//! Durable records: tenants, users, API tokens, the audit and data-access logs, and job runs.
//!
//! Over 600 lines until the server-layers issue (open) moves the records into their own crate
//! (`keel-records`) with one module per record kind; not split piecemeal before that.
//!
//! [`RecordStore`] is the contract; [`SqlStore`] implements it for PostgreSQL and for SQLite
//! (sqlx, runtime queries through `sqlx::Any`, each database with its own migrations, up and
//! down, under `migrations/<db>/`). The queries are written once in the SQL both databases
//! share (`$n` parameters, `BIGINT` times in ms, `LIMIT/OFFSET`); where they differ the
//! migrations say so.
//!
//! Tenant isolation lives here, not in callers: every read of tenant-owned rows takes a
//! [`Scope`], and a tenant scope adds `tenant_id = $n` to the query itself.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use keel::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

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
    type Err = Error;
    fn from_str(s: &str) -> Result<Role> {
        match s {
            "owner" => Ok(Role::Owner),
            "admin" => Ok(Role::Admin),
            "viewer" => Ok(Role::Viewer),
            _ => Err(Error::invalid(
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
    fn tenant(&self) -> Option<&str> {
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
    /// `completed`, `failed` (will retry), `dead` (no attempt left) or `stalled` (the attempt
    /// died with its worker and was recovered).
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

/// The records contract.
#[async_trait]
pub trait RecordStore: Send + Sync + 'static {
    /// `postgres` or `sqlite`.
    fn database(&self) -> &'static str;
    /// Applies pending migrations; returns the versions applied.
    async fn migrate_up(&self) -> Result<Vec<i64>>;
    /// Reverts the latest `steps` migrations; returns the versions reverted.
    async fn migrate_down(&self, steps: usize) -> Result<Vec<i64>>;
    /// `SELECT 1` and pool figures.
    async fn health(&self) -> Result<PoolHealth>;

    /// Creates a tenant.
    async fn create_tenant(&self, name: &str) -> Result<Tenant>;
    /// A tenant by name.
    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>>;

    /// Creates a user with an argon2id password hash.
    async fn create_user(
        &self,
        email: &str,
        password: &str,
        role: Role,
        tenant: Option<&str>,
    ) -> Result<User>;
    /// The user if `password` matches.
    async fn verify_user(&self, email: &str, password: &str) -> Result<Option<User>>;

    /// Creates a token; returns it and its secret (shown once, stored only hashed).
    async fn create_token(
        &self,
        name: &str,
        role: Role,
        tenant: Option<&str>,
    ) -> Result<(ApiToken, String)>;
    /// Tokens visible in `scope`, newest first.
    async fn list_tokens(&self, scope: &Scope) -> Result<Vec<ApiToken>>;
    /// Revokes a token; false if unknown or already revoked.
    async fn revoke_token(&self, scope: &Scope, id: &str) -> Result<bool>;
    /// The live token whose secret this is (and records its use).
    async fn authenticate(&self, secret: &str) -> Result<Option<ApiToken>>;
    /// Live tokens with the owner role and no tenant.
    async fn count_owner_tokens(&self) -> Result<i64>;

    /// Appends to the audit log.
    async fn record_audit(&self, entry: NewAudit) -> Result<i64>;
    /// Appends audit and access entries in one transaction (the server's group commit).
    async fn record_logs(&self, audit: &[NewAudit], access: &[NewAccess]) -> Result<()>;
    /// Audit entries, newest first.
    async fn list_audit(
        &self,
        scope: &Scope,
        filter: &LogFilter,
        page: i64,
        limit: i64,
    ) -> Result<Page<AuditEntry>>;
    /// Appends to the data-access log.
    async fn record_access(&self, entry: NewAccess) -> Result<i64>;
    /// Access entries, newest first.
    async fn list_access(
        &self,
        scope: &Scope,
        filter: &LogFilter,
        page: i64,
        limit: i64,
    ) -> Result<Page<AccessEntry>>;

    /// Inserts job runs (one transaction) with their events.
    async fn insert_runs(&self, runs: &[NewRun]) -> Result<()>;
    /// Job runs, newest first.
    async fn list_runs(
        &self,
        scope: &Scope,
        filter: &RunFilter,
        page: i64,
        limit: i64,
    ) -> Result<Page<JobRun>>;
    /// One run with its events.
    async fn get_run(&self, scope: &Scope, id: i64) -> Result<Option<(JobRun, Vec<RunEvent>)>>;
    /// Runs finished since `since` (ms), counted per minute, oldest first; minutes without a
    /// finished run are left out.
    async fn runs_per_minute(&self, scope: &Scope, since: i64) -> Result<Vec<MinuteCounts>>;

    /// The token with this id, unless it is revoked (console sessions re-check their token
    /// with it).
    async fn token_by_id(&self, id: &str) -> Result<Option<ApiToken>>;
}

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Maximum connections (default 10; SQLite 5).
    pub max_connections: u32,
    /// Minimum kept open (default 0).
    pub min_connections: u32,
    /// Wait for a connection at most this long (default 5 s).
    pub acquire_timeout: Duration,
    /// Close connections idle this long (default 10 min).
    pub idle_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: 10,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
        }
    }
}

static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// [`RecordStore`] on PostgreSQL or SQLite.
#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
    database: &'static str,
    max: u32,
    /// PostgreSQL only: a small native pool for `COPY`, which `sqlx::Any` cannot do (bulk run
    /// records cost a fraction of INSERTs that way).
    copy: Option<sqlx::PgPool>,
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("database", &self.database)
            .finish()
    }
}

fn db_err(what: &str, e: sqlx::Error) -> Error {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::Io(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => {
            Error::BackendUnavailable(format!("{what}: database unreachable: {e}"))
        }
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            Error::Conflict(format!("{what}: already exists"))
        }
        other => Error::Backend(format!("{what}: {other}")),
    }
}

/// The database URL with any password replaced by `***`.
pub fn redact_database_url(url: &str) -> String {
    keel_redis::redact_url(url)
}

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn clamp_page(page: i64, limit: i64) -> Result<(i64, i64)> {
    if page < 1 {
        return Err(Error::invalid("page", "must be at least 1"));
    }
    if !(1..=1000).contains(&limit) {
        return Err(Error::invalid("limit", "must be between 1 and 1000"));
    }
    Ok((page, limit))
}

/// A WHERE clause built with `$n` parameters in order.
#[derive(Default)]
struct Where {
    clauses: Vec<String>,
    args: Vec<Arg>,
}

enum Arg {
    Text(String),
    Int(i64),
}

impl Where {
    fn next(&self) -> usize {
        self.args.len() + 1
    }
    fn text(&mut self, clause: &str, v: &str) {
        let n = self.next();
        self.clauses.push(clause.replace("?", &format!("${n}")));
        self.args.push(Arg::Text(v.to_string()));
    }
    fn int(&mut self, clause: &str, v: i64) {
        let n = self.next();
        self.clauses.push(clause.replace("?", &format!("${n}")));
        self.args.push(Arg::Int(v));
    }
    fn scope(&mut self, scope: &Scope) {
        if let Some(t) = scope.tenant() {
            self.text("tenant_id = ?", t);
        }
    }
    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }
    fn bind<'q>(
        &'q self,
        mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        for a in &self.args {
            q = match a {
                Arg::Text(s) => q.bind(s.as_str()),
                Arg::Int(i) => q.bind(*i),
            };
        }
        q
    }
    fn log_filter(&mut self, scope: &Scope, f: &LogFilter) {
        self.scope(scope);
        if let Some(id) = f.id {
            self.int("id = ?", id);
        }
        if let Some(a) = &f.action {
            self.text("action = ?", a);
        }
        if let Some(a) = &f.actor {
            self.text("actor = ?", a);
        }
        if let Some(r) = &f.resource {
            // Prefix match without LIKE wildcards in the value mattering.
            let n = self.next();
            self.clauses.push(format!(
                "(resource = ${n} OR substr(resource, 1, length(${n}) + 1) = ${n} || '/')"
            ));
            self.args.push(Arg::Text(r.clone()));
        }
        if let Some(v) = f.from {
            self.int("at >= ?", v);
        }
        if let Some(v) = f.to {
            self.int("at <= ?", v);
        }
    }
}

fn token_from(row: &AnyRow) -> Result<ApiToken> {
    let role: String = row.try_get("role").map_err(|e| db_err("token", e))?;
    Ok(ApiToken {
        id: row.try_get("id").map_err(|e| db_err("token", e))?,
        name: row.try_get("name").map_err(|e| db_err("token", e))?,
        role: role.parse()?,
        tenant_id: row.try_get("tenant_id").map_err(|e| db_err("token", e))?,
        hint: row.try_get("secret_hint").map_err(|e| db_err("token", e))?,
        created_at: row.try_get("created_at").map_err(|e| db_err("token", e))?,
        last_used_at: row
            .try_get("last_used_at")
            .map_err(|e| db_err("token", e))?,
        revoked_at: row.try_get("revoked_at").map_err(|e| db_err("token", e))?,
    })
}

fn json_opt(s: Option<String>) -> Option<serde_json::Value> {
    s.and_then(|s| serde_json::from_str(&s).ok())
}

fn audit_from(row: &AnyRow) -> std::result::Result<AuditEntry, sqlx::Error> {
    Ok(AuditEntry {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        tenant_id: row.try_get("tenant_id")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        resource: row.try_get("resource")?,
        ip: row.try_get("ip")?,
        user_agent: row.try_get("user_agent")?,
        status: row.try_get("status")?,
        payload: json_opt(row.try_get("payload")?),
    })
}

fn access_from(row: &AnyRow) -> std::result::Result<AccessEntry, sqlx::Error> {
    let fields: String = row.try_get("fields")?;
    Ok(AccessEntry {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        tenant_id: row.try_get("tenant_id")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        resource: row.try_get("resource")?,
        ip: row.try_get("ip")?,
        user_agent: row.try_get("user_agent")?,
        cached: row.try_get::<i64, _>("cached")? != 0,
        fields: serde_json::from_str(&fields).unwrap_or_default(),
    })
}

fn run_from(row: &AnyRow) -> std::result::Result<JobRun, sqlx::Error> {
    Ok(JobRun {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        queue: row.try_get("queue")?,
        job_id: row.try_get("job_id")?,
        name: row.try_get("name")?,
        attempt: row.try_get("attempt")?,
        status: row.try_get("status")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        duration_ms: row.try_get("duration_ms")?,
        error: row.try_get("error")?,
        worker: row.try_get("worker")?,
        trace_id: row.try_get("trace_id")?,
    })
}

/// One COPY field in PostgreSQL's text format.
fn copy_field(out: &mut String, v: Option<&str>) {
    match v {
        None => out.push_str("\\N"),
        Some(v) => {
            for c in v.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\t' => out.push_str("\\t"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
        }
    }
}

/// Appends one row of COPY text.
fn copy_row(data: &mut String, fields: &[Option<&str>]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            data.push('\t');
        }
        copy_field(data, *f);
    }
    data.push('\n');
}

/// Sends `data` with `COPY <target> FROM STDIN` on `conn`.
async fn copy_in(
    conn: &mut sqlx::PgConnection,
    what: &str,
    target: &str,
    data: String,
) -> Result<()> {
    let mut copy = conn
        .copy_in_raw(&format!("COPY {target} FROM STDIN"))
        .await
        .map_err(|e| db_err(what, e))?;
    copy.send(data.into_bytes())
        .await
        .map_err(|e| db_err(what, e))?;
    copy.finish().await.map_err(|e| db_err(what, e))?;
    Ok(())
}

/// Writes audit and access entries with `COPY` (PostgreSQL), in one transaction.
async fn copy_logs(pg: &sqlx::PgPool, audit: &[NewAudit], access: &[NewAccess]) -> Result<()> {
    let now = (keel::now_ms() as i64).to_string();
    let mut tx = pg.begin().await.map_err(|e| db_err("logs", e))?;
    if !audit.is_empty() {
        let mut data = String::with_capacity(audit.len() * 200);
        for e in audit {
            let status = e.status.to_string();
            let payload = e.payload.as_ref().map(|p| p.to_string());
            copy_row(
                &mut data,
                &[
                    e.tenant_id.as_deref(),
                    Some(&now),
                    Some(&e.actor),
                    Some(&e.action),
                    Some(&e.resource),
                    e.ip.as_deref(),
                    e.user_agent.as_deref(),
                    Some(&status),
                    payload.as_deref(),
                ],
            );
        }
        copy_in(&mut tx, "audit log", "keel_audit_log (tenant_id, at, actor, action, resource, ip, user_agent, status, payload)", data).await?;
    }
    if !access.is_empty() {
        let mut data = String::with_capacity(access.len() * 200);
        for e in access {
            let cached = (e.cached as i64).to_string();
            let fields = serde_json::to_string(&e.fields).unwrap_or_else(|_| "[]".into());
            copy_row(
                &mut data,
                &[
                    e.tenant_id.as_deref(),
                    Some(&now),
                    Some(&e.actor),
                    Some(&e.action),
                    Some(&e.resource),
                    e.ip.as_deref(),
                    e.user_agent.as_deref(),
                    Some(&cached),
                    Some(&fields),
                ],
            );
        }
        copy_in(&mut tx, "access log", "keel_access_log (tenant_id, at, actor, action, resource, ip, user_agent, cached, fields)", data).await?;
    }
    tx.commit().await.map_err(|e| db_err("logs", e))
}

/// Writes runs with `COPY … FROM STDIN` (PostgreSQL).
async fn copy_runs(pg: &sqlx::PgPool, runs: &[&NewRun]) -> Result<()> {
    let mut data = String::with_capacity(runs.len() * 160);
    for r in runs {
        let attempt = r.attempt.to_string();
        let started = r.started_at.to_string();
        let finished = r.finished_at.to_string();
        let duration = (r.finished_at - r.started_at).to_string();
        let fields: [Option<&str>; 12] = [
            r.tenant_id.as_deref(),
            Some(&r.queue),
            Some(&r.job_id),
            Some(&r.name),
            Some(&attempt),
            Some(&r.status),
            Some(&started),
            Some(&finished),
            Some(&duration),
            r.error.as_deref(),
            Some(&r.worker),
            Some(&r.trace_id),
        ];
        copy_row(&mut data, &fields);
    }
    let mut conn = pg.acquire().await.map_err(|e| db_err("job runs", e))?;
    copy_in(&mut conn, "job runs", "keel_job_runs (tenant_id, queue, job_id, name, attempt, status, started_at, finished_at, duration_ms, error, worker, trace_id)", data).await
}

/// `INSERT INTO <table> VALUES ($1..$n), (...), ...` for `rows` rows of `cols` columns.
fn multi_insert(table: &str, cols: usize, rows: usize) -> String {
    let mut sql = format!("INSERT INTO {table} VALUES ");
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..cols {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", r * cols + c + 1));
        }
        sql.push(')');
    }
    sql
}

const INSERT_AUDIT: &str = "INSERT INTO keel_audit_log (tenant_id, at, actor, action, resource, ip, user_agent, status, payload) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id";
const INSERT_ACCESS: &str = "INSERT INTO keel_access_log (tenant_id, at, actor, action, resource, ip, user_agent, cached, fields) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id";

fn bind_audit<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    e: &'q NewAudit,
    payload: Option<String>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    q.bind(e.tenant_id.as_deref())
        .bind(keel::now_ms() as i64)
        .bind(e.actor.as_str())
        .bind(e.action.as_str())
        .bind(e.resource.as_str())
        .bind(e.ip.as_deref())
        .bind(e.user_agent.as_deref())
        .bind(e.status)
        .bind(payload)
}

fn bind_access<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    e: &'q NewAccess,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    let fields = serde_json::to_string(&e.fields).unwrap_or_else(|_| "[]".into());
    q.bind(e.tenant_id.as_deref())
        .bind(keel::now_ms() as i64)
        .bind(e.actor.as_str())
        .bind(e.action.as_str())
        .bind(e.resource.as_str())
        .bind(e.ip.as_deref())
        .bind(e.user_agent.as_deref())
        .bind(e.cached as i64)
        .bind(fields)
}

const TOKEN_COLUMNS: &str =
    "id, name, role, tenant_id, secret_hint, created_at, last_used_at, revoked_at";
const AUDIT_COLUMNS: &str =
    "id, at, tenant_id, actor, action, resource, ip, user_agent, status, payload";
const ACCESS_COLUMNS: &str =
    "id, at, tenant_id, actor, action, resource, ip, user_agent, cached, fields";
const RUN_COLUMNS: &str = "id, tenant_id, queue, job_id, name, attempt, status, started_at, finished_at, duration_ms, error, worker, trace_id";

impl SqlStore {
    /// Connects to `url` (`postgres://…` or `sqlite:…`; a SQLite file is created if missing).
    pub async fn connect(url: &str, settings: &PoolSettings) -> Result<SqlStore> {
        sqlx::any::install_default_drivers();
        let database = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            "postgres"
        } else if url.starts_with("sqlite:") {
            "sqlite"
        } else {
            return Err(Error::invalid(
                "DATABASE_URL",
                "must start with postgres://, postgresql:// or sqlite:",
            ));
        };
        let url = if database == "sqlite" && !url.contains("mode=") && !url.contains(":memory:") {
            format!("{url}{}mode=rwc", if url.contains('?') { "&" } else { "?" })
        } else {
            url.to_string()
        };
        let max = if database == "sqlite" {
            settings.max_connections.min(5)
        } else {
            settings.max_connections
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max.max(1))
            .min_connections(settings.min_connections)
            .acquire_timeout(settings.acquire_timeout)
            .idle_timeout(settings.idle_timeout)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if database == "sqlite" {
                        // WAL lets readers run beside the run-record writer; wait, not fail,
                        // when another connection holds the write lock.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        // With WAL, NORMAL syncs at checkpoints, not at every commit: a power
                        // loss can lose the last transactions, never corrupt the file.
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 5000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA foreign_keys = ON")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(|e| {
                Error::BackendUnavailable(format!(
                    "cannot open the database {}: {e}",
                    redact_database_url(&url)
                ))
            })?;
        let copy = if database == "postgres" {
            Some(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(settings.acquire_timeout)
                    .idle_timeout(settings.idle_timeout)
                    .connect_lazy(&url)
                    .map_err(|e| Error::invalid("DATABASE_URL", e.to_string()))?,
            )
        } else {
            None
        };
        Ok(SqlStore {
            pool,
            database,
            max,
            copy,
        })
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        if self.database == "postgres" {
            &PG_MIGRATOR
        } else {
            &SQLITE_MIGRATOR
        }
    }

    async fn applied_versions(&self) -> Result<Vec<i64>> {
        let rows = sqlx::query(
            "SELECT version FROM _sqlx_migrations WHERE success = TRUE ORDER BY version",
        )
        .fetch_all(&self.pool)
        .await;
        match rows {
            Ok(rows) => rows
                .iter()
                .map(|r| {
                    r.try_get::<i64, _>("version")
                        .map_err(|e| db_err("migrations", e))
                })
                .collect(),
            Err(_) => Ok(Vec::new()), // no table yet: nothing applied
        }
    }

    /// Runs by multi-row INSERT (with their failure events), in one transaction.
    async fn insert_runs_sql(&self, runs: &[NewRun]) -> Result<()> {
        // One multi-row INSERT for the runs and one for their events, per chunk of 500 (well
        // inside both databases' parameter limits).
        let mut tx = self.pool.begin().await.map_err(|e| db_err("job runs", e))?;
        for chunk in runs.chunks(500) {
            let sql = format!(
                "{} RETURNING id, queue, job_id, attempt",
                multi_insert(
                    "keel_job_runs (tenant_id, queue, job_id, name, attempt, status, started_at, finished_at, duration_ms, error, worker, trace_id)",
                    12,
                    chunk.len(),
                )
            );
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q
                    .bind(r.tenant_id.as_deref())
                    .bind(r.queue.as_str())
                    .bind(r.job_id.as_str())
                    .bind(r.name.as_str())
                    .bind(r.attempt)
                    .bind(r.status.as_str())
                    .bind(r.started_at)
                    .bind(r.finished_at)
                    .bind(r.finished_at - r.started_at)
                    .bind(r.error.as_deref())
                    .bind(r.worker.as_str())
                    .bind(r.trace_id.as_str());
            }
            let rows = q
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| db_err("job runs", e))?;
            // Match ids back by (queue, job, attempt): RETURNING order is not promised.
            let mut ids = std::collections::HashMap::new();
            for row in &rows {
                let key: (String, String, i64) = (
                    row.try_get("queue").map_err(|e| db_err("job runs", e))?,
                    row.try_get("job_id").map_err(|e| db_err("job runs", e))?,
                    row.try_get("attempt").map_err(|e| db_err("job runs", e))?,
                );
                let id: i64 = row.try_get("id").map_err(|e| db_err("job runs", e))?;
                ids.entry(key).or_insert_with(Vec::new).push(id);
            }
            // The start and the end are the run row itself (`get_run` shows them as events);
            // the events table holds what the row cannot: a failure's detail.
            let failed: Vec<&NewRun> = chunk.iter().filter(|r| r.error.is_some()).collect();
            if !failed.is_empty() {
                let sql = multi_insert(
                    "keel_job_run_events (run_id, at, kind, detail)",
                    4,
                    failed.len(),
                );
                let mut q = sqlx::query(&sql);
                for r in failed {
                    let id = ids
                        .get_mut(&(r.queue.clone(), r.job_id.clone(), r.attempt))
                        .and_then(|v| v.pop())
                        .ok_or_else(|| Error::Backend("a run id was not returned".into()))?;
                    q = q
                        .bind(id)
                        .bind(r.finished_at)
                        .bind("error")
                        .bind(r.error.as_deref());
                }
                q.execute(&mut *tx)
                    .await
                    .map_err(|e| db_err("job run events", e))?;
            }
        }
        tx.commit().await.map_err(|e| db_err("job runs", e))
    }

    /// The pool, for tests and tools.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    async fn page<T>(
        &self,
        what: &str,
        table: &str,
        columns: &str,
        w: &Where,
        (page, limit): (i64, i64),
        map: fn(&AnyRow) -> std::result::Result<T, sqlx::Error>,
    ) -> Result<Page<T>> {
        let (page, limit) = clamp_page(page, limit)?;
        let count_sql = format!("SELECT COUNT(*) AS n FROM {table}{}", w.sql());
        let total: i64 = w
            .bind(sqlx::query(&count_sql))
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get("n"))
            .map_err(|e| db_err(what, e))?;
        let n = w.next();
        let sql = format!(
            "SELECT {columns} FROM {table}{} ORDER BY id DESC LIMIT ${n} OFFSET ${}",
            w.sql(),
            n + 1
        );
        let rows = w
            .bind(sqlx::query(&sql))
            .bind(limit)
            .bind((page - 1) * limit)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_err(what, e))?;
        let items = rows
            .iter()
            .map(map)
            .collect::<std::result::Result<Vec<T>, _>>()
            .map_err(|e| db_err(what, e))?;
        Ok(Page {
            items,
            total,
            page,
            limit,
        })
    }
}

#[async_trait]
impl RecordStore for SqlStore {
    fn database(&self) -> &'static str {
        self.database
    }

    async fn migrate_up(&self) -> Result<Vec<i64>> {
        let before = self.applied_versions().await?;
        self.migrator()
            .run(&self.pool)
            .await
            .map_err(|e| Error::Backend(format!("migrating up: {e}")))?;
        let after = self.applied_versions().await?;
        Ok(after.into_iter().filter(|v| !before.contains(v)).collect())
    }

    async fn migrate_down(&self, steps: usize) -> Result<Vec<i64>> {
        let applied = self.applied_versions().await?;
        if steps == 0 || applied.is_empty() {
            return Ok(Vec::new());
        }
        let keep = applied.len().saturating_sub(steps);
        let target = if keep == 0 { 0 } else { applied[keep - 1] };
        self.migrator()
            .undo(&self.pool, target)
            .await
            .map_err(|e| Error::Backend(format!("migrating down: {e}")))?;
        Ok(applied[keep..].iter().rev().copied().collect())
    }

    async fn health(&self) -> Result<PoolHealth> {
        let started = std::time::Instant::now();
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(|e| db_err("health", e))?;
        Ok(PoolHealth {
            database: self.database.into(),
            size: self.pool.size(),
            idle: self.pool.num_idle() as u32,
            max: self.max,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    async fn create_tenant(&self, name: &str) -> Result<Tenant> {
        keel::keys::validate_name("name", name)?;
        let t = Tenant {
            id: new_id(),
            name: name.into(),
            created_at: keel::now_ms() as i64,
        };
        sqlx::query("INSERT INTO keel_tenants (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&t.id)
            .bind(&t.name)
            .bind(t.created_at)
            .execute(&self.pool)
            .await
            .map_err(|e| db_err(&format!("tenant {name}"), e))?;
        Ok(t)
    }

    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>> {
        let row = sqlx::query("SELECT id, name, created_at FROM keel_tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_err("tenant", e))?;
        row.map(|r| {
            Ok(Tenant {
                id: r.try_get("id").map_err(|e| db_err("tenant", e))?,
                name: r.try_get("name").map_err(|e| db_err("tenant", e))?,
                created_at: r.try_get("created_at").map_err(|e| db_err("tenant", e))?,
            })
        })
        .transpose()
    }

    async fn create_user(
        &self,
        email: &str,
        password: &str,
        role: Role,
        tenant: Option<&str>,
    ) -> Result<User> {
        if !email.contains('@') || email.len() > 320 {
            return Err(Error::invalid("email", "must be an email address"));
        }
        if password.chars().count() < 12 {
            return Err(Error::invalid("password", "must be at least 12 characters"));
        }
        let hash = crate::auth::hash_password(password)?;
        let u = User {
            id: new_id(),
            email: email.to_lowercase(),
            role,
            tenant_id: tenant.map(str::to_string),
            created_at: keel::now_ms() as i64,
        };
        sqlx::query("INSERT INTO keel_users (id, tenant_id, email, password_hash, role, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&u.id)
            .bind(u.tenant_id.as_deref())
            .bind(&u.email)
            .bind(&hash)
            .bind(role.as_str())
            .bind(u.created_at)
            .execute(&self.pool)
            .await
            .map_err(|e| db_err(&format!("user {email}"), e))?;
        Ok(u)
    }

    async fn verify_user(&self, email: &str, password: &str) -> Result<Option<User>> {
        let row = sqlx::query("SELECT id, tenant_id, email, password_hash, role, created_at FROM keel_users WHERE email = $1")
            .bind(email.to_lowercase())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_err("user", e))?;
        let Some(r) = row else {
            // Same work as a wrong password, so timing does not reveal which emails exist.
            let _ = crate::auth::verify_password(password, &crate::auth::DUMMY_HASH);
            return Ok(None);
        };
        let hash: String = r.try_get("password_hash").map_err(|e| db_err("user", e))?;
        if !crate::auth::verify_password(password, &hash) {
            return Ok(None);
        }
        let role: String = r.try_get("role").map_err(|e| db_err("user", e))?;
        Ok(Some(User {
            id: r.try_get("id").map_err(|e| db_err("user", e))?,
            email: r.try_get("email").map_err(|e| db_err("user", e))?,
            role: role.parse()?,
            tenant_id: r.try_get("tenant_id").map_err(|e| db_err("user", e))?,
            created_at: r.try_get("created_at").map_err(|e| db_err("user", e))?,
        }))
    }

    async fn create_token(
        &self,
        name: &str,
        role: Role,
        tenant: Option<&str>,
    ) -> Result<(ApiToken, String)> {
        if name.is_empty() || name.len() > 200 {
            return Err(Error::invalid("name", "must be 1 to 200 characters"));
        }
        let secret = crate::auth::new_secret();
        let t = ApiToken {
            id: new_id()[..12].to_string(),
            name: name.into(),
            role,
            tenant_id: tenant.map(str::to_string),
            hint: secret[..12].to_string(),
            created_at: keel::now_ms() as i64,
            last_used_at: None,
            revoked_at: None,
        };
        sqlx::query("INSERT INTO keel_api_tokens (id, tenant_id, name, role, secret_hash, secret_hint, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&t.id)
            .bind(t.tenant_id.as_deref())
            .bind(&t.name)
            .bind(role.as_str())
            .bind(hash_secret(&secret))
            .bind(&t.hint)
            .bind(t.created_at)
            .execute(&self.pool)
            .await
            .map_err(|e| db_err("token", e))?;
        Ok((t, secret))
    }

    async fn list_tokens(&self, scope: &Scope) -> Result<Vec<ApiToken>> {
        let mut w = Where::default();
        w.scope(scope);
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM keel_api_tokens{} ORDER BY created_at DESC, id",
            w.sql()
        );
        let rows = w
            .bind(sqlx::query(&sql))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_err("tokens", e))?;
        rows.iter().map(token_from).collect()
    }

    async fn revoke_token(&self, scope: &Scope, id: &str) -> Result<bool> {
        let mut w = Where::default();
        w.clauses.push("revoked_at IS NULL".into());
        w.text("id = ?", id);
        w.scope(scope);
        let n = w.next();
        let sql = format!("UPDATE keel_api_tokens SET revoked_at = ${n}{}", w.sql());
        let done = w
            .bind(sqlx::query(&sql))
            .bind(keel::now_ms() as i64)
            .execute(&self.pool)
            .await
            .map_err(|e| db_err("token", e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn authenticate(&self, secret: &str) -> Result<Option<ApiToken>> {
        if !secret.starts_with(crate::auth::SECRET_PREFIX) || secret.len() > 200 {
            return Ok(None);
        }
        let hash = hash_secret(secret);
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM keel_api_tokens WHERE secret_hash = $1 AND revoked_at IS NULL");
        let row = sqlx::query(&sql)
            .bind(&hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_err("token", e))?;
        let Some(row) = row else { return Ok(None) };
        let mut token = token_from(&row)?;
        let now = keel::now_ms() as i64;
        // At most one write per token per minute: authentication is on every request.
        if token.last_used_at.is_none_or(|t| now - t > 60_000) {
            sqlx::query("UPDATE keel_api_tokens SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(&token.id)
                .execute(&self.pool)
                .await
                .map_err(|e| db_err("token", e))?;
            token.last_used_at = Some(now);
        }
        Ok(Some(token))
    }

    async fn count_owner_tokens(&self) -> Result<i64> {
        sqlx::query("SELECT COUNT(*) AS n FROM keel_api_tokens WHERE role = 'owner' AND tenant_id IS NULL AND revoked_at IS NULL")
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get("n"))
            .map_err(|e| db_err("tokens", e))
    }

    async fn record_audit(&self, e: NewAudit) -> Result<i64> {
        let payload = e.payload.as_ref().map(|p| p.to_string());
        bind_audit(sqlx::query(INSERT_AUDIT), &e, payload)
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get("id"))
            .map_err(|err| db_err("audit log", err))
    }

    async fn record_logs(&self, audit: &[NewAudit], access: &[NewAccess]) -> Result<()> {
        if audit.is_empty() && access.is_empty() {
            return Ok(());
        }
        if let Some(pg) = &self.copy {
            return copy_logs(pg, audit, access).await;
        }
        // One multi-row INSERT per table: a batch costs two round trips, not one per entry.
        let mut tx = self.pool.begin().await.map_err(|e| db_err("logs", e))?;
        let now = keel::now_ms() as i64;
        if !audit.is_empty() {
            let sql = multi_insert(
                "keel_audit_log (tenant_id, at, actor, action, resource, ip, user_agent, status, payload)",
                9,
                audit.len(),
            );
            let payloads: Vec<Option<String>> = audit
                .iter()
                .map(|e| e.payload.as_ref().map(|p| p.to_string()))
                .collect();
            let mut q = sqlx::query(&sql);
            for (e, payload) in audit.iter().zip(&payloads) {
                q = q
                    .bind(e.tenant_id.as_deref())
                    .bind(now)
                    .bind(e.actor.as_str())
                    .bind(e.action.as_str())
                    .bind(e.resource.as_str())
                    .bind(e.ip.as_deref())
                    .bind(e.user_agent.as_deref())
                    .bind(e.status)
                    .bind(payload.as_deref());
            }
            q.execute(&mut *tx)
                .await
                .map_err(|err| db_err("audit log", err))?;
        }
        if !access.is_empty() {
            let sql = multi_insert(
                "keel_access_log (tenant_id, at, actor, action, resource, ip, user_agent, cached, fields)",
                9,
                access.len(),
            );
            let fields: Vec<String> = access
                .iter()
                .map(|e| serde_json::to_string(&e.fields).unwrap_or_else(|_| "[]".into()))
                .collect();
            let mut q = sqlx::query(&sql);
            for (e, f) in access.iter().zip(&fields) {
                q = q
                    .bind(e.tenant_id.as_deref())
                    .bind(now)
                    .bind(e.actor.as_str())
                    .bind(e.action.as_str())
                    .bind(e.resource.as_str())
                    .bind(e.ip.as_deref())
                    .bind(e.user_agent.as_deref())
                    .bind(e.cached as i64)
                    .bind(f.as_str());
            }
            q.execute(&mut *tx)
                .await
                .map_err(|err| db_err("access log", err))?;
        }
        tx.commit().await.map_err(|e| db_err("logs", e))
    }

    async fn list_audit(
        &self,
        scope: &Scope,
        filter: &LogFilter,
        page: i64,
        limit: i64,
    ) -> Result<Page<AuditEntry>> {
        let mut w = Where::default();
        w.log_filter(scope, filter);
        self.page(
            "audit log",
            "keel_audit_log",
            AUDIT_COLUMNS,
            &w,
            (page, limit),
            audit_from,
        )
        .await
    }

    async fn record_access(&self, e: NewAccess) -> Result<i64> {
        bind_access(sqlx::query(INSERT_ACCESS), &e)
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get("id"))
            .map_err(|err| db_err("access log", err))
    }

    async fn list_access(
        &self,
        scope: &Scope,
        filter: &LogFilter,
        page: i64,
        limit: i64,
    ) -> Result<Page<AccessEntry>> {
        let mut w = Where::default();
        w.log_filter(scope, filter);
        self.page(
            "access log",
            "keel_access_log",
            ACCESS_COLUMNS,
            &w,
            (page, limit),
            access_from,
        )
        .await
    }

    async fn insert_runs(&self, runs: &[NewRun]) -> Result<()> {
        if runs.is_empty() {
            return Ok(());
        }
        if let Some(pg) = &self.copy {
            // Runs without an error need no id back (they have no event rows): COPY them.
            let (plain, failed): (Vec<&NewRun>, Vec<&NewRun>) =
                runs.iter().partition(|r| r.error.is_none());
            if !plain.is_empty() {
                copy_runs(pg, &plain).await?;
            }
            if failed.is_empty() {
                return Ok(());
            }
            let failed: Vec<NewRun> = failed.into_iter().cloned().collect();
            return self.insert_runs_sql(&failed).await;
        }
        self.insert_runs_sql(runs).await
    }

    async fn list_runs(
        &self,
        scope: &Scope,
        f: &RunFilter,
        page: i64,
        limit: i64,
    ) -> Result<Page<JobRun>> {
        let mut w = Where::default();
        w.scope(scope);
        if let Some(q) = &f.queue {
            w.text("queue = ?", q);
        }
        if let Some(s) = &f.status {
            w.text("status = ?", s);
        }
        if let Some(j) = &f.job_id {
            w.text("job_id = ?", j);
        }
        if let Some(v) = f.from {
            w.int("started_at >= ?", v);
        }
        if let Some(v) = f.to {
            w.int("started_at <= ?", v);
        }
        self.page(
            "job runs",
            "keel_job_runs",
            RUN_COLUMNS,
            &w,
            (page, limit),
            run_from,
        )
        .await
    }

    async fn get_run(&self, scope: &Scope, id: i64) -> Result<Option<(JobRun, Vec<RunEvent>)>> {
        let mut w = Where::default();
        w.int("id = ?", id);
        w.scope(scope);
        let sql = format!("SELECT {RUN_COLUMNS} FROM keel_job_runs{}", w.sql());
        let row = w
            .bind(sqlx::query(&sql))
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_err("job run", e))?;
        let Some(row) = row else { return Ok(None) };
        let run = run_from(&row).map_err(|e| db_err("job run", e))?;
        let stored = sqlx::query(
            "SELECT at, kind, detail FROM keel_job_run_events WHERE run_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_err("job run events", e))?
        .iter()
        .map(|r| {
            Ok(RunEvent {
                at: r.try_get("at")?,
                kind: r.try_get("kind")?,
                detail: r.try_get("detail")?,
            })
        })
        .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
        .map_err(|e| db_err("job run events", e))?;
        let mut events = vec![RunEvent {
            at: run.started_at,
            kind: "started".into(),
            detail: None,
        }];
        events.extend(stored);
        if let Some(at) = run.finished_at {
            events.push(RunEvent {
                at,
                kind: run.status.clone(),
                detail: run.error.clone(),
            });
        }
        Ok(Some((run, events)))
    }

    async fn runs_per_minute(&self, scope: &Scope, since: i64) -> Result<Vec<MinuteCounts>> {
        let mut w = Where::default();
        w.int("finished_at >= ?", since);
        w.scope(scope);
        let sql = format!(
            "SELECT finished_at / 60000 AS m, \
             SUM(CASE WHEN status = 'completed' THEN 1 ELSE 0 END) AS completed, \
             SUM(CASE WHEN status = 'completed' THEN 0 ELSE 1 END) AS failed \
             FROM keel_job_runs{} GROUP BY finished_at / 60000 ORDER BY m",
            w.sql()
        );
        w.bind(sqlx::query(&sql))
            .fetch_all(&self.pool)
            .await
            .and_then(|rows| {
                rows.iter()
                    .map(|r| {
                        Ok(MinuteCounts {
                            minute: r.try_get::<i64, _>("m")? * 60_000,
                            completed: r.try_get("completed")?,
                            failed: r.try_get("failed")?,
                        })
                    })
                    .collect()
            })
            .map_err(|e| db_err("job runs per minute", e))
    }

    async fn token_by_id(&self, id: &str) -> Result<Option<ApiToken>> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM keel_api_tokens WHERE id = $1 AND revoked_at IS NULL"
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_err("token", e))?;
        row.as_ref().map(token_from).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_fields_escape_the_text_format() {
        let mut out = String::new();
        copy_field(&mut out, Some("a\tb\nc\\d\re"));
        assert_eq!(out, "a\\tb\\nc\\\\d\\re");
        let mut out = String::new();
        copy_field(&mut out, None);
        assert_eq!(out, "\\N");
        assert_eq!(
            multi_insert("t (a, b)", 2, 2),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)"
        );
    }
}
