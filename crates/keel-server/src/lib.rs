//! `keel serve`: the owner HTTP API over Keel's queues and toolkit, with auth, tenants, audit
//! and data-access logs and job-run records in PostgreSQL or SQLite.
//!
//! # Layout
//! - [`store`]: [`store::RecordStore`] and its PostgreSQL/SQLite implementation, migrations.
//! - [`auth`]: token secrets, argon2id passwords.
//! - [`mask`]: secrets masked out of audited payloads.

pub mod auth;
pub mod mask;
pub mod store;
