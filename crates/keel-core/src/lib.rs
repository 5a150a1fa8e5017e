//! Keel's queue vocabulary, shared by every backend and by the public `keel` library.
//!
//! # Layout
//! - [`options`] — what a producer asks for — [`JobOptions`], [`Backoff`], [`KeepJobs`],
//!   [`Deduplication`] — with validation that names the offending field.
//! - [`job`] — [`Job`], the snapshot of one job as a backend stores it, and [`NewJob`].
//! - [`state`] — [`JobState`] and [`QueueCounts`].
//! - [`backend`] — the [`QueueBackend`] trait every storage tier implements (Redis via
//!   `bullmq-official`, in-process memory), the worker-side [`Processor`] contract and
//!   [`JobError`], the way a handler says "retry", "give up" or "retry after".
//! - [`events`] — [`QueueEvent`], the per-queue events stream.
//! - [`schedule`] — repeatable jobs (cron with time zone, fixed interval).
//! - [`names`] — the BullMQ naming rules Keel keeps (no `:` in queue names and job ids) and
//!   the dead-letter queue name.
//! - [`kv`] — the toolkit contract [`KvBackend`] (atomic key-value, rate-limit, lock, pub/sub
//!   and monitoring operations) and [`ratemath`], the pure arithmetic of the rate limiters.
//! - [`secrets`] — what counts as a secret and how keys, values and URLs are masked.
//! - [`error`] — [`Error`], with stable kebab-case codes for the HTTP and CLI layers.
//!
//! Nothing here does I/O: the crate is the contract, the backends are the mechanisms.

pub mod backend;
pub mod error;
pub mod events;
pub mod job;
pub mod kv;
pub mod names;
pub mod options;
pub mod ratemath;
pub mod redis_url;
pub mod schedule;
pub mod secrets;
pub mod state;

pub use backend::{
    delay_log_line, BackendKind, BoxFuture, JobContext, JobControl, JobError, Processor,
    QueueBackend, RunNote, WorkerEvent, WorkerEventSink, WorkerHandle, WorkerOptions,
};
pub use error::{Error, Result};
pub use events::{EventStream, QueueEvent};
pub use job::{Job, NewJob};
pub use kv::{
    KvBackend, NodeInfo, PubSubMessage, RateAlgorithm, RateOutcome, ServerInfo, SetMode,
    Subscription,
};
pub use names::{dlq_name, validate_job_id, validate_queue_name, DLQ_PREFIX};
pub use options::{Backoff, BackoffKind, Deduplication, JobOptions, KeepJobs};
pub use schedule::{Schedule, SchedulerInfo};
pub use state::{JobState, QueueCounts};

/// Milliseconds since the Unix epoch, the time unit of every stored timestamp (as in BullMQ).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
