//! The storage-tier contract. Keel has two implementations — `keel-redis` (BullMQ's layout and
//! Lua scripts, through `bullmq-official`) and `keel-memory` (in-process) — and one conformance
//! suite (`crates/keel/tests/conformance`) that runs every behaviour against both. A behaviour
//! not in that suite does not exist; a difference between backends is a bug.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::error::Result;
use crate::events::EventStream;
use crate::job::{Job, NewJob};
use crate::schedule::{Schedule, SchedulerInfo};
use crate::state::{JobState, QueueCounts};

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// How a handler says an attempt failed.
#[derive(Debug, Clone, PartialEq)]
pub enum JobError {
    /// Retry if attempts remain (after the job's backoff, or `retry_after` if that is longer).
    Retry {
        /// The error message, stored as the job's `failedReason`.
        message: String,
        /// Optional stack trace or error chain, stored in the job's `stacktrace`.
        stack: Option<String>,
        /// A minimum wait before the next attempt (e.g. an HTTP `Retry-After`).
        retry_after: Option<Duration>,
    },
    /// Fail now: skip the remaining attempts (the job goes to failed and its DLQ).
    Unrecoverable {
        /// The error message.
        message: String,
        /// Optional stack trace or error chain.
        stack: Option<String>,
    },
    /// Not now: the job goes back to delayed for `wait` without counting an attempt, its
    /// reason in its log (BullMQ's `DelayedError` after `moveToDelayed`) — a per-key rate
    /// limit that does not admit it yet.
    Delay {
        /// Why (written to the job's log).
        reason: String,
        /// How long until it runs again.
        wait: Duration,
    },
}

impl JobError {
    /// A retryable failure.
    pub fn retry(message: impl Into<String>) -> Self {
        JobError::Retry {
            message: message.into(),
            stack: None,
            retry_after: None,
        }
    }

    /// A failure that skips the remaining attempts.
    pub fn unrecoverable(message: impl Into<String>) -> Self {
        JobError::Unrecoverable {
            message: message.into(),
            stack: None,
        }
    }

    /// Put back as delayed for `wait`, no attempt counted.
    pub fn delay(reason: impl Into<String>, wait: Duration) -> Self {
        JobError::Delay {
            reason: reason.into(),
            wait,
        }
    }

    /// How long a [`JobError::Delay`] puts the job back for.
    pub fn delayed_for(&self) -> Option<Duration> {
        match self {
            JobError::Delay { wait, .. } => Some(*wait),
            _ => None,
        }
    }

    /// The same error with a minimum wait before the next attempt (no effect when unrecoverable).
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        if let JobError::Retry { retry_after, .. } = &mut self {
            *retry_after = Some(wait);
        }
        self
    }

    /// The same error with a stack trace or error chain.
    pub fn with_stack(mut self, trace: impl Into<String>) -> Self {
        match &mut self {
            JobError::Retry { stack, .. } | JobError::Unrecoverable { stack, .. } => {
                *stack = Some(trace.into())
            }
            JobError::Delay { .. } => {}
        }
        self
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            JobError::Retry { message, .. } | JobError::Unrecoverable { message, .. } => message,
            JobError::Delay { reason, .. } => reason,
        }
    }

    /// The stack trace, if any.
    pub fn stack(&self) -> Option<&str> {
        match self {
            JobError::Retry { stack, .. } | JobError::Unrecoverable { stack, .. } => {
                stack.as_deref()
            }
            JobError::Delay { .. } => None,
        }
    }

    /// Whether remaining attempts are skipped.
    pub fn is_unrecoverable(&self) -> bool {
        matches!(self, JobError::Unrecoverable { .. })
    }

    /// The minimum wait before the next attempt, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            JobError::Retry { retry_after, .. } => *retry_after,
            JobError::Unrecoverable { .. } | JobError::Delay { .. } => None,
        }
    }

    /// The wait before the next attempt after this error on an attempt of `job`: the job's
    /// backoff (with its jitter drawn now) or the error's `retry_after`, whichever is longer.
    /// The same rule on every backend.
    pub fn retry_delay_ms(&self, job: &Job) -> u64 {
        let backoff = job
            .opts
            .backoff
            .as_ref()
            .map(|b| b.delay_after(job.attempts_made + 1, rand::random::<f64>()))
            .unwrap_or(0);
        let floor = self
            .retry_after()
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        backoff.max(floor)
    }

    /// Whether, after this error on an attempt of `job`, no attempt remains. Both backends use
    /// this one rule: attempts are counted in `attempts_made` before the failing attempt.
    pub fn is_final_for(&self, job: &Job) -> bool {
        if matches!(self, JobError::Delay { .. }) {
            return false;
        }
        self.is_unrecoverable() || job.attempts_made + 1 >= job.opts.max_attempts()
    }
}

/// The job-log line of a [`JobError::Delay`], the same on every backend:
/// `delayed until 2026-12-01T10:00:00.000Z: <reason>`.
pub fn delay_log_line(until_ms: u64, reason: &str) -> String {
    let at = chrono::DateTime::from_timestamp_millis(until_ms as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| until_ms.to_string());
    format!("delayed until {at}: {reason}")
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for JobError {}

impl From<String> for JobError {
    fn from(message: String) -> Self {
        JobError::retry(message)
    }
}

impl From<&str> for JobError {
    fn from(message: &str) -> Self {
        JobError::retry(message)
    }
}

/// What a running handler can do to its own job.
#[async_trait]
pub trait JobControl: Send + Sync {
    /// Stores `progress` on the job and emits a `progress` event.
    async fn update_progress(&self, progress: Value) -> Result<()>;
    /// Appends a line to the job's log.
    async fn log(&self, line: &str) -> Result<()>;
}

/// What a handler receives: the job and a handle to report on it.
#[derive(Clone)]
pub struct JobContext {
    /// The job as taken by the worker (`attempts_made` counts the attempts before this one).
    pub job: Job,
    /// Progress and log lines.
    pub control: Arc<dyn JobControl>,
    /// Stalls of this job first reported by this attempt: earlier attempts whose worker died
    /// (or lost the job's lock) and that were recovered, each reported once across workers.
    /// Always 0 in memory (nothing stalls within one process).
    pub recovered_stalls: u32,
    /// Where the layer recording this attempt as a run (the server's run recorder) takes what
    /// the handler has to add to that record (the `ai` handler's call), so both are one row;
    /// `None` when nothing records the attempt (the handler then writes its own).
    pub run_note: Option<RunNote>,
}

/// A slot for one value, lent by the layer that records an attempt to the handler inside it.
#[derive(Clone, Default)]
pub struct RunNote(Arc<std::sync::Mutex<Option<Box<dyn std::any::Any + Send>>>>);

impl RunNote {
    /// Leaves `value` for the recorder (replacing what was left before).
    pub fn put<T: Send + 'static>(&self, value: T) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(value));
    }

    /// Takes what was left, when it is a `T`.
    pub fn take<T: Send + 'static>(&self) -> Option<T> {
        let value = self.0.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        value.downcast::<T>().ok().map(|b| *b)
    }
}

impl std::fmt::Debug for RunNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunNote")
    }
}

impl JobContext {
    /// Stores progress on the job.
    pub async fn progress(&self, progress: Value) -> Result<()> {
        self.control.update_progress(progress).await
    }

    /// Appends a line to the job's log.
    pub async fn log(&self, line: impl AsRef<str>) -> Result<()> {
        self.control.log(line.as_ref()).await
    }
}

/// A job handler as the backend's worker loop runs it.
pub type Processor = Arc<dyn Fn(JobContext) -> BoxFuture<Result<Value, JobError>> + Send + Sync>;

/// What a backend worker reports as it works, for the layers above (DLQ, metrics, run records).
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    /// An attempt started.
    Active {
        /// The job id.
        job_id: String,
    },
    /// The job completed and is stored as completed.
    Completed {
        /// The job id.
        job_id: String,
    },
    /// An attempt failed and the job is stored accordingly (delayed/waiting for a retry, or
    /// failed when `terminal`).
    Failed {
        /// The job id.
        job_id: String,
        /// The error message.
        reason: String,
        /// No attempt remains: the job is now in the failed state.
        terminal: bool,
    },
    /// A job of this queue was found stalled and moved back to wait (or failed past max stalls).
    Stalled {
        /// The job id.
        job_id: String,
    },
    /// The worker hit an error of its own (e.g. Redis unreachable); it keeps going.
    Error {
        /// What went wrong.
        message: String,
    },
}

/// Receives [`WorkerEvent`]s. Called on the worker's tasks: it must not block.
pub type WorkerEventSink = Arc<dyn Fn(WorkerEvent) + Send + Sync>;

/// Default of [`WorkerOptions::max_stalled_count`]: a job survives this many recoveries after
/// its worker died under it (a rolling deploy without grace kills workers every second or two)
/// and fails on the next, as a poison pill that kills every worker taking it. BullMQ's default
/// is 1, which fails innocent jobs in such a deploy; Sidekiq Pro quarantines after 3.
pub const DEFAULT_MAX_STALLED_COUNT: u32 = 5;

/// Options of one worker (one queue, one process).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerOptions {
    /// Jobs processed at once.
    pub concurrency: usize,
    /// How long a taken job stays locked without a heartbeat; the worker renews it at half.
    pub lock_duration: Duration,
    /// How often stalled jobs (whose lock expired) are looked for.
    pub stalled_interval: Duration,
    /// How many times a job may stall (its worker died or lost its lock) and be retried before
    /// it fails as a poison pill. A stall does not use up an attempt.
    pub max_stalled_count: u32,
    /// A name stored on processed jobs (`processedBy`) and shown in worker lists.
    pub name: Option<String>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            concurrency: 5,
            lock_duration: Duration::from_secs(30),
            stalled_interval: Duration::from_secs(30),
            max_stalled_count: DEFAULT_MAX_STALLED_COUNT,
            name: None,
        }
    }
}

/// A running worker.
#[async_trait]
pub trait WorkerHandle: Send + Sync {
    /// The worker's id (unique per process and queue).
    fn id(&self) -> &str;
    /// Stops taking jobs, lets in-flight jobs finish for up to `deadline`, then stops. A job
    /// still running at the deadline is abandoned without being finished: on Redis its lock
    /// expires and another worker recovers it as stalled; in memory it goes back to waiting.
    /// Either way it is never lost.
    async fn close(&self, deadline: Duration) -> Result<()>;
}

/// Which storage tier a backend is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// In-process memory: one process, not durable.
    Memory,
    /// Redis (BullMQ layout): shared by every process, durable as Redis is.
    Redis,
}

/// One storage tier for queues. Queue names and custom job ids are validated by the caller
/// (`keel::Queue`) before they reach a backend; options arrive already merged with queue
/// defaults and validated.
#[async_trait]
pub trait QueueBackend: Send + Sync + 'static {
    /// Which tier this is.
    fn kind(&self) -> BackendKind;

    /// Adds one job. With a custom `job_id` that exists, or a deduplication id that is held,
    /// returns the existing job and changes nothing.
    async fn add(&self, queue: &str, job: NewJob) -> Result<Job>;

    /// Adds several jobs, in order. Not atomic on Redis (jobs are added one script each, in
    /// parallel): on error some may have been added; the error says which failed.
    async fn add_bulk(&self, queue: &str, jobs: Vec<NewJob>) -> Result<Vec<Job>>;

    /// One job, or `None`.
    async fn get_job(&self, queue: &str, id: &str) -> Result<Option<Job>>;

    /// A job's state, or `None` when the job does not exist.
    async fn job_state(&self, queue: &str, id: &str) -> Result<Option<JobState>>;

    /// Jobs in `state`, `offset` and `limit` counted from the newest (`asc = false`: waiting and
    /// active by add order, the others by their score — run-at time, priority, finish time) or
    /// from the oldest (`asc = true`).
    async fn list(
        &self,
        queue: &str,
        state: JobState,
        offset: usize,
        limit: usize,
        asc: bool,
    ) -> Result<Vec<Job>>;

    /// Counts by state and the paused flag.
    async fn counts(&self, queue: &str) -> Result<QueueCounts>;

    /// The log lines of a job, oldest first, from `offset`, at most `limit`; and the total.
    async fn job_logs(
        &self,
        queue: &str,
        id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<String>, u64)>;

    /// Pauses the queue: no worker anywhere takes jobs; adding still works.
    async fn pause(&self, queue: &str) -> Result<()>;
    /// Resumes the queue.
    async fn resume(&self, queue: &str) -> Result<()>;

    /// Moves a failed job back to waiting with its attempts reset. `NotFound` when the job does
    /// not exist, `Conflict` when it is not failed.
    async fn retry_job(&self, queue: &str, id: &str) -> Result<()>;

    /// Removes a job in any state but active. `Ok(false)` when there was no such job;
    /// `Conflict` when it is active (locked by a worker).
    async fn remove(&self, queue: &str, id: &str) -> Result<bool>;

    /// Removes up to `limit` jobs in `state` older than `grace` (by finish time for completed
    /// and failed, add time otherwise). Returns the removed ids.
    async fn clean(
        &self,
        queue: &str,
        grace: Duration,
        limit: usize,
        state: JobState,
    ) -> Result<Vec<String>>;

    /// Removes every waiting and prioritized job, and delayed ones too when `delayed`.
    async fn drain(&self, queue: &str, delayed: bool) -> Result<()>;

    /// Deletes the queue and all its jobs. Refuses (`Conflict`) while jobs are active unless
    /// `force`.
    async fn obliterate(&self, queue: &str, force: bool) -> Result<()>;

    /// Failed jobs whose finish time is in `[from_ms, to_ms]`, oldest first, at most `limit`.
    /// The DLQ reconciler walks this.
    async fn failed_between(
        &self,
        queue: &str,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<Job>>;

    /// Creates or replaces scheduler `id`, which adds jobs `template` on `schedule`.
    async fn upsert_scheduler(
        &self,
        queue: &str,
        id: &str,
        schedule: Schedule,
        template: NewJob,
    ) -> Result<SchedulerInfo>;
    /// The queue's schedulers.
    async fn list_schedulers(&self, queue: &str) -> Result<Vec<SchedulerInfo>>;
    /// Removes a scheduler; `Ok(false)` when there was none.
    async fn remove_scheduler(&self, queue: &str, id: &str) -> Result<bool>;

    /// Sets (or with `None` removes) the queue's rate limit: at most `max` jobs started per
    /// `duration`, across all workers.
    async fn set_rate_limit(&self, queue: &str, limit: Option<(u64, Duration)>) -> Result<()>;

    /// Sets (or with `None` removes) the queue's global concurrency: at most `limit` of its
    /// jobs active at once, across all workers (each worker's own concurrency still holds).
    async fn set_global_concurrency(&self, queue: &str, limit: Option<u32>) -> Result<()>;

    /// Queues known to this backend (that hold or held jobs), sorted.
    async fn queue_names(&self) -> Result<Vec<String>>;

    /// Live events of `queue` from now on.
    async fn events(&self, queue: &str) -> Result<EventStream>;

    /// Starts a worker on `queue` that runs `processor`. Events go to `sink`.
    async fn start_worker(
        &self,
        queue: &str,
        processor: Processor,
        opts: WorkerOptions,
        sink: WorkerEventSink,
    ) -> Result<Box<dyn WorkerHandle>>;

    /// Records that worker process `id` is alive, with `info` (host, pid, queues, ...), for
    /// `ttl`; the SPEC's `health:worker:{id}:heartbeat`.
    async fn heartbeat(&self, id: &str, info: Value, ttl: Duration) -> Result<()>;

    /// The `info` of every worker process whose heartbeat has not expired.
    async fn live_workers(&self) -> Result<Vec<Value>>;

    /// Round trip to the backend.
    async fn ping(&self) -> Result<Duration>;
}
