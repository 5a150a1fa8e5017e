//! Workers: handlers routed by job name, job timeouts, dead-lettering, graceful shutdown, and
//! the process heartbeat.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use keel_core::{
    Job, JobContext, JobError, Processor, Result, WorkerEvent, WorkerEventSink, WorkerHandle,
    WorkerOptions,
};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::backend::Backend;
use crate::dlq::DeadLetterQueue;
use crate::queue::Queue;

pub use crate::dlq::{RECONCILE_GRACE, RECONCILE_INTERVAL, RECONCILE_WINDOW};
/// Most final failures a worker remembers until their terminal events arrive.
const PENDING_MAX: usize = 10_000;
/// Longest a closing worker waits for its pending DLQ writes.
const DLQ_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Boxes an async closure as a [`Processor`].
pub fn handler_fn<F, Fut>(f: F) -> Processor
where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<Value, JobError>> + Send + 'static,
{
    Arc::new(move |ctx| Box::pin(f(ctx)))
}

/// Configures and starts a [`Worker`]; see [`Queue::worker`].
pub struct WorkerBuilder {
    queue: Queue,
    routes: HashMap<String, Processor>,
    fallback: Option<Processor>,
    opts: WorkerOptions,
    timeout: Option<Duration>,
    dead_letter: bool,
}

impl Queue {
    /// A worker for this queue: add handlers, then [`WorkerBuilder::start`].
    pub fn worker(&self) -> WorkerBuilder {
        WorkerBuilder {
            queue: self.clone(),
            routes: HashMap::new(),
            fallback: None,
            opts: WorkerOptions::default(),
            timeout: None,
            dead_letter: true,
        }
    }
}

impl WorkerBuilder {
    /// Runs `p` for jobs named `job_name`.
    pub fn handler(mut self, job_name: &str, p: Processor) -> Self {
        self.routes.insert(job_name.to_string(), p);
        self
    }

    /// Runs `p` for every job name without its own handler. Without a fallback, such a job
    /// fails unrecoverably ("no handler for job name ...").
    pub fn fallback(mut self, p: Processor) -> Self {
        self.fallback = Some(p);
        self
    }

    /// Jobs processed at once (default 5).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.opts.concurrency = n;
        self
    }

    /// Lock duration of taken jobs (default 30 s; Redis only).
    pub fn lock_duration(mut self, d: Duration) -> Self {
        self.opts.lock_duration = d;
        self
    }

    /// How often stalled jobs are looked for (default 30 s; Redis only).
    pub fn stalled_interval(mut self, d: Duration) -> Self {
        self.opts.stalled_interval = d;
        self
    }

    /// How many stalls a job survives before it fails as a poison pill (default
    /// [`keel_core::backend::DEFAULT_MAX_STALLED_COUNT`]).
    pub fn max_stalled_count(mut self, n: u32) -> Self {
        self.opts.max_stalled_count = n;
        self
    }

    /// Cancels an attempt that runs longer than this; the attempt fails (retryable).
    pub fn timeout(mut self, t: Option<Duration>) -> Self {
        self.timeout = t.filter(|t| !t.is_zero());
        self
    }

    /// Whether terminally failed jobs go to `dlq-<queue>` (default true).
    pub fn dead_letter(mut self, on: bool) -> Self {
        self.dead_letter = on;
        self
    }

    /// A name stored on processed jobs.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.opts.name = Some(name.into());
        self
    }

    /// Starts the worker.
    pub async fn start(self) -> Result<Worker> {
        if self.opts.concurrency == 0 {
            return Err(keel_core::Error::invalid(
                "concurrency",
                "must be at least 1",
            ));
        }
        let dlq = self.dead_letter.then(|| self.queue.dlq());
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let tasks = TaskTracker::new();
        let processor = route(
            self.routes,
            self.fallback,
            self.timeout,
            dlq.is_some().then(|| pending.clone()),
        );
        let sink = dead_letter_sink(dlq.clone(), pending, tasks.clone());
        let handle = self
            .queue
            .backend()
            .raw()
            .start_worker(self.queue.name(), processor, self.opts, sink)
            .await?;
        let stop = CancellationToken::new();
        let reconciler = dlq.map(|dlq| tokio::spawn(reconcile_loop(dlq, stop.clone())));
        info!(
            queue = self.queue.name(),
            worker = handle.id(),
            "worker started"
        );
        Ok(Worker {
            queue: self.queue,
            handle,
            stop,
            reconciler,
            tasks,
        })
    }
}

/// What the processor wrapper saw of a final failed attempt, for the DLQ entry.
struct FinalFailure {
    job: Job,
    stack: Vec<String>,
}

type Pending = Arc<Mutex<HashMap<String, FinalFailure>>>;

/// The processor the backend runs: routing by name, timeout, panic capture, and noting final
/// failures for the DLQ.
fn route(
    routes: HashMap<String, Processor>,
    fallback: Option<Processor>,
    timeout: Option<Duration>,
    pending: Option<Pending>,
) -> Processor {
    let routes = Arc::new(routes);
    Arc::new(move |ctx: JobContext| {
        let handler = routes
            .get(&ctx.job.name)
            .cloned()
            .or_else(|| fallback.clone());
        let pending = pending.clone();
        Box::pin(async move {
            let job = ctx.job.clone();
            let result = match handler {
                None => Err(JobError::unrecoverable(format!(
                    "no handler for job name {:?}",
                    job.name
                ))),
                Some(h) => {
                    let run = AssertUnwindSafe(h(ctx)).catch_unwind();
                    let outcome = match timeout {
                        // Dropping the handler future on timeout is what cancels it.
                        Some(t) => tokio::time::timeout(t, run).await.unwrap_or_else(|_| {
                            Ok(Err(JobError::retry(format!(
                                "job timed out after {} ms",
                                t.as_millis()
                            ))))
                        }),
                        None => run.await,
                    };
                    outcome.unwrap_or_else(|panic| {
                        Err(JobError::retry(format!(
                            "handler panicked: {}",
                            panic_message(&panic)
                        )))
                    })
                }
            };
            if let (Err(e), Some(pending)) = (&result, &pending) {
                if e.is_final_for(&job) {
                    let stack = e.stack().map(|s| vec![s.to_string()]).unwrap_or_default();
                    let mut pending = pending.lock().unwrap_or_else(|p| p.into_inner());
                    // Bounded: entries only carry the handler's stack into the DLQ entry (the
                    // stored job and the reconciler cover the rest).
                    if pending.len() >= PENDING_MAX {
                        pending.clear();
                    }
                    pending.insert(job.id.clone(), FinalFailure { job, stack });
                }
            }
            result
        })
    })
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_string())
}

/// The backend's event sink: records a DLQ entry for each terminal failure, on a tracked task
/// (the sink itself must not block the worker).
fn dead_letter_sink(
    dlq: Option<DeadLetterQueue>,
    pending: Pending,
    tasks: TaskTracker,
) -> WorkerEventSink {
    Arc::new(move |event| {
        let Some(dlq) = &dlq else { return };
        match event {
            WorkerEvent::Failed {
                job_id,
                reason,
                terminal: true,
            } => {
                let seen = pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&job_id);
                let dlq = dlq.clone();
                tasks.spawn(async move {
                    if let Err(e) = record_failure(&dlq, &job_id, &reason, seen).await {
                        // The reconciler will record it on its next pass.
                        warn!(job_id, error = %e, "could not dead-letter a failed job yet");
                    }
                });
            }
            // A retried attempt's event leaves the entry alone: events arrive asynchronously,
            // so that event may be an earlier attempt's, arriving after the final attempt noted
            // its failure (a retry without backoff starts at once). A stale entry is replaced by
            // the next final attempt, or dropped when the job completes.
            WorkerEvent::Completed { job_id } => {
                pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&job_id);
            }
            _ => {}
        }
    })
}

async fn record_failure(
    dlq: &DeadLetterQueue,
    job_id: &str,
    reason: &str,
    seen: Option<FinalFailure>,
) -> Result<()> {
    // Prefer the stored job (final attempt counts and finish time); fall back to what the
    // wrapper saw when retention already removed it.
    let queue = dlq.original_queue();
    let stored = queue.get_job(job_id).await?;
    match (stored, seen) {
        // A failure event for a job that is not failed: the worker lost the job's lock (Redis
        // restarted, or the lock expired under a long pause), so the job is recovered as
        // stalled and runs again. That is not the job failing: no dead letter.
        (Some(job), _) if queue.job_state(&job.id).await? != Some(keel_core::JobState::Failed) => {
            tracing::info!(
                job_id,
                reason,
                "not dead-lettered: the job is not failed (lost lock)"
            );
        }
        (Some(job), seen) => {
            let stack = seen
                .map(|s| s.stack)
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| job.stacktrace.clone());
            dlq.record(&job, reason, stack).await?;
        }
        (None, Some(FinalFailure { mut job, stack })) => {
            job.attempts_made += 1;
            job.finished_on = Some(keel_core::now_ms());
            dlq.record(&job, reason, stack).await?;
        }
        (None, None) => {}
    }
    Ok(())
}

async fn reconcile_loop(dlq: DeadLetterQueue, stop: CancellationToken) {
    let reconciler = crate::dlq::Reconciler::new(dlq, crate::dlq::ReconcilerConfig::default());
    crate::service::run(reconciler, stop).await;
}

/// A running worker. Close it with [`Worker::close`]; dropping it stops taking jobs abruptly.
pub struct Worker {
    queue: Queue,
    handle: Box<dyn WorkerHandle>,
    stop: CancellationToken,
    reconciler: Option<JoinHandle<()>>,
    tasks: TaskTracker,
}

impl Worker {
    /// The worker id.
    pub fn id(&self) -> &str {
        self.handle.id()
    }

    /// The queue it works on.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Stops taking jobs, lets in-flight jobs finish for up to `deadline`, then stops; jobs still
    /// running are recovered as stalled (never lost). Pending DLQ writes are flushed.
    pub async fn close(self, deadline: Duration) -> Result<()> {
        let result = self.handle.close(deadline).await;
        self.stop.cancel();
        if let Some(r) = self.reconciler {
            let _ = r.await;
        }
        self.tasks.close();
        let _ = tokio::time::timeout(DLQ_FLUSH_TIMEOUT, self.tasks.wait()).await;
        info!(queue = self.queue.name(), "worker closed");
        result
    }
}

/// The process heartbeat: `health:worker:{id}:heartbeat`, refreshed every `interval` with a
/// time to live of three intervals.
pub struct Heartbeat {
    id: String,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Heartbeat {
    /// Starts beating for this process with `info` (merged with id, host, pid, started_at).
    pub fn start(backend: &Backend, info: Value, interval: Duration) -> Heartbeat {
        let id = format!(
            "{}-{}",
            hostname(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let mut body = serde_json::json!({
            "id": id,
            "host": hostname(),
            "pid": std::process::id(),
            "started_at": keel_core::now_ms(),
        });
        if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), info) {
            b.extend(extra);
        }
        let stop = CancellationToken::new();
        let raw = backend.raw().clone();
        let (id2, stop2) = (id.clone(), stop.clone());
        let task = tokio::spawn(async move {
            loop {
                if let Err(e) = raw.heartbeat(&id2, body.clone(), interval * 3).await {
                    warn!(error = %e, "heartbeat failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stop2.cancelled() => return,
                }
            }
        });
        Heartbeat { id, stop, task }
    }

    /// This process's worker id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Stops beating (the key expires by itself).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
