//! The operator console: server-rendered pages over the typed operations of [`crate::ops`],
//! served by `keel serve`.
//!
//! - **Sign-in** with an API token (the owner token printed at first start, or any token from
//!   `keel token create`) or with a named account (`keel user create`, email and argon2id
//!   password): the server keeps a session on the backend (12 h, [`crate::auth`]) and sets an
//!   `HttpOnly; SameSite=Strict` cookie holding only the session id. Each request re-reads the
//!   token or account, so revoking the token or disabling the account ends its sessions.
//!   Failed sign-ins count against the `login` policy per address and per account.
//! - **CSRF**: every form that changes something carries the session's random token and is
//!   refused (403) without it or with a foreign `Origin`; the sign-in form uses a
//!   double-submit cookie.
//! - **Data** comes from the same operations the owner API calls, as the signed-in caller:
//!   the same role checks, tenant scoping, caching, audit and access logging (the actor is
//!   `token:<id>` or `user:<email>`). Pages render the operations' DTOs.
//! - **Pages** work without JavaScript; `assets/console.js` adds live updates from
//!   `/api/owner/realtime` (cookie-authenticated), a 10 s refresh when the socket fails,
//!   local times, copy buttons and confirmations. All assets are embedded in the binary.
//!
//! # Layout
//! - [`ctx`] — the signed-in request ([`ctx::Ctx`]) and how pages answer.
//! - [`page`] — the frame, rendering, error and confirmation pages, forms, assets, headers.
//! - [`view`] — formatting helpers (times, durations, JSON viewer, chart, pager).
//! - [`pages`] — one file per page: `overview` (`/`), `queues` (`/queues`), `jobs`
//!   (`/queues/{q}`), `job` (`/queues/{q}/jobs/{id}`), `bulk`, `dlq` (`/queues/{q}/dlq`),
//!   `runs` (`/runs`, `/runs/{id}`), `logs` (`/audit`, `/access` and their entries), `redis`
//!   (`/redis`), `login` (`/login`, `/logout`).

pub mod ctx;
pub mod page;
pub mod pages;
pub mod view;

use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::state::AppState;
use page::{asset, CSS, JS};
use pages::{
    bulk, dlq, job, jobs, login, logs, messages, overview, queues, redis, runs, workflows,
};

/// The HTML 404 page for browsers asking for a path that does not exist.
pub fn not_found_page(path: &str) -> Response {
    page::not_found_page(path)
}

/// The console's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(overview::overview))
        .route("/login", get(login::login_form).post(login::login))
        .route("/logout", post(login::logout))
        .route("/queues", get(queues::queues))
        .route("/queues/{queue}", get(jobs::jobs))
        .route("/queues/{queue}/pause", post(queues::pause))
        .route("/queues/{queue}/resume", post(queues::resume))
        .route("/queues/{queue}/bulk", post(bulk::bulk))
        .route("/queues/{queue}/jobs/{id}", get(job::job))
        .route("/queues/{queue}/jobs/{id}/retry", post(jobs::retry_job))
        .route("/queues/{queue}/jobs/{id}/remove", post(jobs::remove_job))
        .route("/queues/{queue}/dlq", get(dlq::dlq))
        .route("/queues/{queue}/dlq/replay", post(dlq::replay_all))
        .route("/queues/{queue}/dlq/{id}/replay", post(dlq::replay))
        .route("/queues/{queue}/dlq/{id}/remove", post(dlq::remove))
        .route("/runs", get(runs::runs))
        .route("/runs/{id}", get(runs::run))
        .route("/ai", get(messages::ai))
        .route("/ai/runs/{id}", get(messages::ai_run))
        .route("/emails", get(messages::emails))
        .route("/workflows", get(workflows::instances))
        .route("/workflows/definitions", get(workflows::definitions))
        .route("/workflows/instances/{id}", get(workflows::instance))
        .route("/workflows/instances/{id}/cancel", post(workflows::cancel))
        .route("/workflows/instances/{id}/rerun", post(workflows::rerun))
        .route("/workflows/{name}/run", post(workflows::run))
        .route("/audit", get(logs::audit_log))
        .route("/audit/{id}", get(logs::audit_entry))
        .route("/access", get(logs::access_log))
        .route("/access/{id}", get(logs::access_entry))
        .route("/redis", get(redis::redis))
        .route(
            "/assets/console.css",
            get(|| async { asset(CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/assets/console.js",
            get(|| async { asset(JS, "text/javascript; charset=utf-8") }),
        )
        .layer(axum::middleware::from_fn(page::security_headers))
}
