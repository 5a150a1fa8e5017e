//! Keel's durable records — tenants, users, API tokens, the audit and data-access logs, job
//! runs, workflows — behind one contract, on PostgreSQL or SQLite.
//!
//! The server (`keel serve`) holds an `Arc<dyn RecordStore>`; nothing here knows about HTTP or
//! queues. Errors are [`StoreError`], so a database outage is `database-unavailable`, never
//! the queue backend's `backend-unavailable`.
//!
//! # Layout
//! - [`model`] — roles, scopes and the records themselves.
//! - [`store`] — the contract, one trait per record kind ([`TokenStore`], [`LogStore`], …) and
//!   [`RecordStore`], all of them.
//! - [`sql`] — [`SqlStore`], the PostgreSQL and SQLite implementation; its migrations are in
//!   `migrations/<db>/`, embedded at compile time.
//! - [`messages`] — what the `email` and `ai` handlers did: email logs, AI runs, messages,
//!   events and tasks.
//! - [`workflow`] — workflow definitions, instances and steps, and the rule that moves an
//!   instance forward.
//! - [`secret`] — token secrets and argon2id passwords.
//! - [`error`] — the records' errors ([`StoreError`]).
//! - `testing` (feature `testing`): a fresh database per test, for this crate's store suite
//!   and the server's tests.

pub mod error;
pub mod messages;
pub mod model;
pub mod secret;
pub mod sql;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod workflow;

pub use error::{Result, StoreError};
pub use model::{
    AccessEntry, ApiToken, AuditEntry, JobRun, LogFilter, MinuteCounts, NewAccess, NewAudit,
    NewRun, Page, PoolHealth, Role, RunEvent, RunFilter, Scope, Tenant, User,
};
pub use sql::{redact_database_url, PoolSettings, SqlStore};
pub use store::{
    Admin, LogStore, MessageStore, RecordStore, RunStore, TenantStore, TokenStore, UserStore,
    WorkflowStore,
};

/// The store traits, for calling their methods on an `Arc<dyn RecordStore>`:
/// `use keel_records::prelude::*`.
pub mod prelude {
    pub use crate::store::{
        Admin as _, LogStore as _, MessageStore as _, RecordStore, RunStore as _, TenantStore as _,
        TokenStore as _, UserStore as _, WorkflowStore as _,
    };
}
