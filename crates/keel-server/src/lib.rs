//! `keel serve`: the owner HTTP API over Keel's queues and toolkit, with auth, tenants, audit
//! and data-access logs, job-run records (the `keel-records` crate, PostgreSQL or SQLite),
//! realtime events, metrics and the operator console.
//!
//! # Layout
//! Layers, each using only those below it (`tests/layers.rs` fails otherwise); the API and
//! the console never use each other:
//! 1. [`config`] (`[server]`, `[database]`, `[runs]`), [`error`] (the one error shape,
//!    [`error::ErrorCode`]), [`tags`] (the owner cache's tags), [`mask`] (secrets out of
//!    audit payloads), [`listener`].
//! 2. Background services and their handles: [`metrics`] (Prometheus registry), [`logs`]
//!    (audit/access group commit), [`runs`] (job-run recorder), [`realtime`] (event hub),
//!    [`invalidate`] (coalesced cache invalidation).
//! 3. [`state`]: [`state::AppState`], what every handler reaches.
//! 4. [`extract`] (the caller, request facts, JSON bodies, query strings), [`auth`] (console
//!    sessions and cookies), [`middleware`] (rate limit, metrics, bounds, NUL refusal).
//! 5. [`ops`]: one typed function per use case — role and tenant checks, validation, audit or
//!    access entry, cache invalidation.
//! 6. [`api`] (the owner API, health, metrics, OpenAPI, realtime socket) and [`console`]
//!    (server-rendered pages): thin adapters over [`ops`].
//! 7. [`router`]: the application with its layers.
//! 8. [`serve`] (start-up, `serve(config, listener, shutdown)`, graceful shutdown) and
//!    [`listener`] (hyper connections with slowloris bounds).

pub mod api;
pub mod auth;
pub mod config;
pub mod console;
pub mod error;
pub mod extract;
pub mod invalidate;
pub mod listener;
pub mod logs;
pub mod mask;
pub mod metrics;
pub mod middleware;
pub mod ops;
pub mod realtime;
pub mod router;
pub mod runs;
pub mod serve;
pub mod state;
pub mod tags;
