//! The records contract, one trait per record kind so that each kind's implementation lives in
//! its own module; [`RecordStore`] is all of them (what the server holds as
//! `Arc<dyn RecordStore>`). Every read of tenant-owned rows takes a [`Scope`].

use async_trait::async_trait;

use crate::error::Result;
use crate::messages::{
    AiEvent, AiFilter, AiMessage, AiRun, AiTask, AiUsage, EmailFilter, EmailLog, NewAiRun, NewEmail,
};
use crate::model::{
    AccessEntry, ApiToken, AuditEntry, JobRun, LogFilter, MinuteCounts, NewAccess, NewAudit,
    NewRun, Page, PoolHealth, Role, RunEvent, RunFilter, Scope, Tenant, User,
};
use crate::workflow::{
    Definition, Instance, InstanceFilter, NewDefinition, Settled, WorkflowState, WorkflowWrite,
};

/// The database itself: its kind, migrations and health.
#[async_trait]
pub trait Admin: Send + Sync + 'static {
    /// `postgres` or `sqlite`.
    fn database(&self) -> &'static str;
    /// Applies pending migrations; returns the versions applied.
    async fn migrate_up(&self) -> Result<Vec<i64>>;
    /// Reverts the latest `steps` migrations; returns the versions reverted.
    async fn migrate_down(&self, steps: usize) -> Result<Vec<i64>>;
    /// `SELECT 1` and pool figures.
    async fn health(&self) -> Result<PoolHealth>;
}

/// Tenants.
#[async_trait]
pub trait TenantStore: Send + Sync + 'static {
    /// Creates a tenant.
    async fn create_tenant(&self, name: &str) -> Result<Tenant>;
    /// A tenant by name.
    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>>;
}

/// Named accounts of the console (people), with argon2id passwords.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Creates a user with an argon2id password hash (at least 12 characters).
    async fn create_user(
        &self,
        email: &str,
        password: &str,
        role: Role,
        tenant: Option<&str>,
    ) -> Result<User>;
    /// The user if `password` matches and the account is not disabled. An unknown email costs
    /// the same work as a wrong password.
    async fn verify_user(&self, email: &str, password: &str) -> Result<Option<User>>;
    /// Users visible in `scope`, by email.
    async fn list_users(&self, scope: &Scope) -> Result<Vec<User>>;
    /// Disables the account with this email; false if unknown or already disabled.
    async fn disable_user(&self, scope: &Scope, email: &str) -> Result<bool>;
    /// The user with this id, unless disabled (console sessions re-check their account).
    async fn user_by_id(&self, id: &str) -> Result<Option<User>>;
}

/// API tokens (automation's credentials).
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
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
    /// The token with this id, unless it is revoked (console sessions re-check their token
    /// with it).
    async fn token_by_id(&self, id: &str) -> Result<Option<ApiToken>>;
}

/// The audit and data-access logs.
#[async_trait]
pub trait LogStore: Send + Sync + 'static {
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
}

/// Job runs.
#[async_trait]
pub trait RunStore: Send + Sync + 'static {
    /// Inserts job runs (one transaction) with their events and the AI calls they carry;
    /// returns their ids, in order.
    async fn insert_runs(&self, runs: &[NewRun]) -> Result<Vec<i64>>;
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
}

/// Workflow definitions (versioned), instances and their steps.
#[async_trait]
pub trait WorkflowStore: Send + Sync + 'static {
    /// Saves `d` as the next version of its name, unless the latest version has the same
    /// spec; returns the latest version and whether it is new. `Conflict` when another tenant
    /// owns the name.
    async fn save_definition(&self, d: NewDefinition) -> Result<(Definition, bool)>;
    /// The latest version of every definition in scope (global ones and the tenant's), by name.
    async fn definitions(&self, scope: &Scope) -> Result<Vec<Definition>>;
    /// One version of a definition (the latest when `version` is `None`).
    async fn definition(
        &self,
        scope: &Scope,
        name: &str,
        version: Option<i64>,
    ) -> Result<Option<Definition>>;
    /// Applies creations and step events in one transaction and settles every instance they
    /// touch ([`crate::workflow::WorkflowState::settle`]); returns each touched instance after.
    async fn write_workflows(&self, writes: &[WorkflowWrite]) -> Result<Vec<Settled>>;
    /// An instance and its steps.
    async fn workflow_state(&self, scope: &Scope, id: &str) -> Result<Option<WorkflowState>>;
    /// Instances, newest first.
    async fn list_instances(
        &self,
        scope: &Scope,
        filter: &InstanceFilter,
        page: i64,
        limit: i64,
    ) -> Result<Page<Instance>>;
    /// Cancels a pending or running instance (`Conflict` otherwise): steps that have not
    /// started are cancelled; running ones finish, unrecorded in the outcome.
    async fn cancel_instance(&self, scope: &Scope, id: &str) -> Result<Settled>;
    /// Runs a failed or cancelled instance again from its failed and cancelled steps;
    /// completed steps keep their outputs. `Conflict` for other statuses.
    async fn rerun_instance(&self, scope: &Scope, id: &str) -> Result<Settled>;
    /// Pending or running instances unchanged since `updated_before` (ms) with ids after
    /// `after`, by id, at most `limit`: what the reconciler walks (a pass continues where the
    /// last one stopped, so every instance is looked at, however many there are).
    async fn quiet_instances(
        &self,
        updated_before: i64,
        after: &str,
        limit: i64,
    ) -> Result<Vec<String>>;
}

/// What the `email` and `ai` handlers did.
#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Records email send attempts (one transaction).
    async fn record_emails(&self, emails: &[NewEmail]) -> Result<()>;
    /// Email logs, newest first.
    async fn list_emails(
        &self,
        scope: &Scope,
        filter: &EmailFilter,
        page: i64,
        limit: i64,
    ) -> Result<Page<EmailLog>>;
    /// Records AI call attempts with their messages and events (one transaction) that no run
    /// recorder carries: each becomes a job run of its own (worker `keel-handlers`, the call's
    /// status as a run's: `completed`, `failed` when retried, `dead`); returns their ids, in
    /// order.
    async fn record_ai_runs(&self, runs: &[NewAiRun]) -> Result<Vec<i64>>;
    /// AI runs, newest first.
    async fn list_ai_runs(
        &self,
        scope: &Scope,
        filter: &AiFilter,
        page: i64,
        limit: i64,
    ) -> Result<Page<AiRun>>;
    /// One AI run.
    async fn ai_run(&self, scope: &Scope, id: i64) -> Result<Option<AiRun>>;
    /// AI messages of the runs matching `filter` (by `run_id` or `job_id`), in order.
    async fn list_ai_messages(
        &self,
        scope: &Scope,
        filter: &AiFilter,
        page: i64,
        limit: i64,
    ) -> Result<Page<AiMessage>>;
    /// AI events, newest first.
    async fn list_ai_events(
        &self,
        scope: &Scope,
        filter: &AiFilter,
        page: i64,
        limit: i64,
    ) -> Result<Page<AiEvent>>;
    /// AI tasks (one per AI job), latest first.
    async fn list_ai_tasks(
        &self,
        scope: &Scope,
        filter: &AiFilter,
        page: i64,
        limit: i64,
    ) -> Result<Page<AiTask>>;
    /// AI usage per model per hour since `since` (ms), oldest first.
    async fn ai_usage(&self, scope: &Scope, since: i64) -> Result<Vec<AiUsage>>;
}

/// Every kind of record: what the server holds.
pub trait RecordStore:
    Admin + TenantStore + UserStore + TokenStore + LogStore + RunStore + WorkflowStore + MessageStore
{
}

impl<
        T: Admin
            + TenantStore
            + UserStore
            + TokenStore
            + LogStore
            + RunStore
            + WorkflowStore
            + MessageStore,
    > RecordStore for T
{
}
