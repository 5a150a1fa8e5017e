//! Keel: background jobs with retries and dead-letter queues, on Redis (BullMQ-compatible:
//! Node BullMQ 6 services share the same queues) or in process memory (zero setup).
//!
//! # Layout
//! - [`backend`] — [`Backend`], the cheap-clone handle to a storage tier — Redis through
//!   `keel-redis` (BullMQ's own Lua scripts via `bullmq-official`) or memory through
//!   `keel-memory`. Both implement `keel_core::QueueBackend` and pass one conformance suite
//!   (`tests/conformance`).
//! - [`queue`] — [`Queue`], the producer and admin API of one queue (add, list, count, pause,
//!   retry, remove, clean, drain, obliterate, schedulers, rate limit, events).
//! - [`worker`] — [`Worker`], which runs handlers per queue and per job name with concurrency,
//!   job timeouts, dead-lettering and graceful shutdown; and the process heartbeat.
//! - [`dlq`] — [`DeadLetterQueue`] (`dlq-<queue>`): entries, replay, replay all, remove, and the
//!   reconciler that repairs a crash between "failed" and "dead-lettered".
//! - The toolkit, on both backends through `keel_core::KvBackend`: [`keys`] (every key,
//!   `prefix:env:category:…:vN`), [`cache`] ([`Cache`]: stampede protection, tags, XFetch),
//!   [`ratelimit`] ([`RateLimiter`]: GCRA, sliding window, sliding log, fixed window), [`lock`]
//!   ([`Locks`] with fencing tokens), [`store`] ([`Counters`], [`Flags`], [`Idempotency`],
//!   [`Sessions`]), [`pubsub`] ([`Events`]) and [`health`] (ping, `INFO` with thresholds).
//! - [`handlers`] — handlers a server runs without Rust code (`http`).
//! - [`service`] — background services in one shape (config, `run_once` with a report,
//!   `run(shutdown)` with jitter): the DLQ reconciler ([`dlq::Reconciler`]).
//! - `http` (feature `http`) — tower layers for a user's own axum service: per-route rate
//!   limits ([`http::RateLimitLayer`]) and cache-aside of `GET` answers with tag invalidation
//!   ([`http::CacheLayer`]).
//! - [`config`] — the `keel.toml` file and the environment variables that override it;
//!   [`runner`] starts the workers a configuration declares (`keel worker`, `keel serve`).
//!
//! # Example
//! ```no_run
//! # async fn demo() -> Result<(), keel::Error> {
//! use keel::{Backend, Queue, JobOptions};
//! let backend = Backend::memory();
//! let queue = Queue::new(&backend, "emails")?;
//! let job = queue.add("welcome", serde_json::json!({"to": "a@example.com"}), JobOptions::default()).await?;
//! println!("added {}", job.id);
//! # Ok(()) }
//! ```

pub mod backend;
pub mod cache;
pub mod config;
pub mod dlq;
pub mod engines;
pub mod handlers;
pub mod health;
#[cfg(feature = "http")]
pub mod http;
pub mod keys;
pub mod lock;
pub mod otp;
pub mod partitions;
pub mod pubsub;
pub mod queue;
pub mod ratelimit;
pub mod runner;
pub mod service;
pub mod store;
pub mod worker;

pub use backend::Backend;
pub use cache::{Cache, CachePolicy, CacheStats, Write};
pub use dlq::{DeadLetterQueue, DlqEntry, DlqPage, ReconcileReport};
pub use keel_core::secrets;
pub use keel_core::{
    dlq_name, now_ms, BackendKind, Backoff, BackoffKind, Deduplication, Error, EventStream, Job,
    JobContext, JobError, JobOptions, JobState, KeepJobs, NewJob, NodeInfo, QueueCounts,
    QueueEvent, RateAlgorithm, Result, Schedule, SchedulerInfo,
};
pub use keel_core::{Processor, QueueBackend, RunNote, WorkerOptions};
pub use keys::Keys;
pub use lock::{LockGuard, Locks};
pub use pubsub::{Event, Events};
pub use queue::Queue;
pub use ratelimit::{FailMode, RateDecision, RateLimiter, RatePolicy};
pub use store::{Begin, Counters, Flag, Flags, Idempotency, Session, Sessions};
pub use worker::{handler_fn, shutdown_signal, Heartbeat, Worker, WorkerBuilder};
