//! `keel serve`: the owner HTTP API over Keel's queues and toolkit, with auth, tenants, audit
//! and data-access logs, job-run records in PostgreSQL or SQLite, realtime events and metrics.
//!
//! # Layout
//! - [`serve`]: start-up and shutdown (workers, records, first owner token, HTTP server).
//! - [`app`]: state, extractors, rate-limit and metrics middleware, the router.
//! - [`owner`]: the owner API handlers; [`health`]: health routes; [`realtime`]: WebSocket.
//! - the records (tokens, logs, runs) are the `keel-records` crate.
//! - [`runs`]: job-run records off the hot path; [`metrics`]: Prometheus; [`openapi`]: the document.
//! - [`mask`]: secrets masked out of audit payloads.
//! - [`tags`]: the owner cache's tags.
//! - [`error`]: the one error shape; [`listener`]: hyper connections with slowloris bounds.
//! - [`console`]: the operator console (server-rendered pages over the owner API).

pub mod app;
pub mod console;
pub mod error;
pub mod health;
pub mod listener;
pub mod logs;
pub mod mask;
pub mod metrics;
pub mod openapi;
pub mod owner;
pub mod realtime;
pub mod runs;
pub mod serve;
pub mod tags;
