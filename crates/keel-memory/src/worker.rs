//! The memory backend's worker loop: takes jobs up to `concurrency`, runs each handler on its
//! own task (so a panic is contained and reported as a failed attempt), and closes gracefully.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use keel_core::{
    now_ms, Job, JobContext, JobControl, JobError, Processor, QueueEvent, Result, WorkerEvent,
    WorkerEventSink, WorkerHandle, WorkerOptions,
};
use serde_json::Value;
use tokio::sync::{Notify, Semaphore};
use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::state::Take;
use crate::QueueCell;

/// Longest idle sleep when nothing is scheduled: a safety net only, wake-ups come by notify.
const IDLE_RECHECK: Duration = Duration::from_secs(5);

struct Shared {
    id: String,
    cell: Arc<QueueCell>,
    processor: Processor,
    sink: WorkerEventSink,
    /// Jobs running now: id → abort handle of the handler task. `std::sync::Mutex`: only held
    /// for map updates, never across `.await`.
    inflight: Mutex<HashMap<String, AbortHandle>>,
    /// Signalled each time an in-flight job ends.
    finished: Notify,
    closing: CancellationToken,
}

/// A running memory worker.
pub(crate) struct MemoryWorker {
    shared: Arc<Shared>,
    main: Mutex<Option<JoinHandle<()>>>,
}

pub(crate) fn start(
    cell: Arc<QueueCell>,
    queue: &str,
    processor: Processor,
    opts: WorkerOptions,
    sink: WorkerEventSink,
) -> MemoryWorker {
    let id = format!(
        "{}-{}-{}",
        opts.name.as_deref().unwrap_or("keel"),
        queue,
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let shared = Arc::new(Shared {
        id,
        cell,
        processor,
        sink,
        inflight: Mutex::new(HashMap::new()),
        finished: Notify::new(),
        closing: CancellationToken::new(),
    });
    let main = tokio::spawn(main_loop(shared.clone(), opts.concurrency));
    MemoryWorker {
        shared,
        main: Mutex::new(Some(main)),
    }
}

async fn main_loop(shared: Arc<Shared>, concurrency: usize) {
    let slots = Arc::new(Semaphore::new(concurrency));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("semaphore is never closed"),
            _ = shared.closing.cancelled() => return,
        };
        let Some(job) = next_job(&shared).await else {
            return;
        };
        let shared2 = shared.clone();
        tokio::spawn(async move {
            run_one(&shared2, *job).await;
            drop(permit);
        });
    }
}

/// Waits for a job, or `None` once the worker is closing.
async fn next_job(shared: &Shared) -> Option<Box<Job>> {
    loop {
        // Register interest before looking, so a job added between the look and the wait
        // still wakes us (no lost wake-up).
        let notified = shared.cell.work.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let take = shared.cell.with(|q| q.take(now_ms(), Some(&shared.id)));
        let wait = match take {
            Take::Job(job) => return Some(job),
            Take::WaitUntil(Some(t)) => Duration::from_millis(t.saturating_sub(now_ms()).max(1)),
            Take::WaitUntil(None) => IDLE_RECHECK,
        };
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shared.closing.cancelled() => return None,
        }
    }
}

async fn run_one(shared: &Arc<Shared>, job: Job) {
    let job_id = job.id.clone();
    (shared.sink)(WorkerEvent::Active {
        job_id: job_id.clone(),
    });
    let ctx = JobContext {
        job: job.clone(),
        control: Arc::new(MemoryControl {
            cell: shared.cell.clone(),
            job_id: job_id.clone(),
        }),
        recovered_stalls: 0,
        run_note: None,
    };
    // Its own task: a panic stays inside it, and close() can abort it at the deadline.
    let handle = tokio::spawn((shared.processor)(ctx));
    shared
        .inflight
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(job_id.clone(), handle.abort_handle());
    let outcome = handle.await;
    shared
        .inflight
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&job_id);
    let result = match outcome {
        Ok(result) => Some(result),
        Err(e) if e.is_panic() => Some(Err(JobError::retry(format!(
            "handler panicked: {}",
            panic_message(e.into_panic())
        )))),
        // Aborted by close(): the job was already handed back to waiting.
        Err(_) => None,
    };
    match result {
        Some(Ok(value)) => {
            let stored = shared.cell.with(|q| q.complete(&job_id, value, now_ms()));
            if stored {
                (shared.sink)(WorkerEvent::Completed { job_id });
            }
        }
        Some(Err(JobError::Delay { reason, wait })) => {
            // Not an attempt: back to delayed, the reason in the job's log.
            let until = now_ms() + wait.as_millis() as u64;
            let line = keel_core::delay_log_line(until, &reason);
            shared.cell.with(|q| q.postpone(&job_id, until, &line));
        }
        Some(Err(err)) => {
            let terminal = err.is_final_for(&job);
            let delay = if terminal {
                0
            } else {
                err.retry_delay_ms(&job)
            };
            let stored = shared
                .cell
                .with(|q| q.fail(&job_id, err.message(), terminal, delay, now_ms()));
            if stored {
                (shared.sink)(WorkerEvent::Failed {
                    job_id,
                    reason: err.message().to_string(),
                    terminal,
                });
            }
        }
        None => {}
    }
    shared.finished.notify_waiters();
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

#[async_trait]
impl WorkerHandle for MemoryWorker {
    fn id(&self) -> &str {
        &self.shared.id
    }

    async fn close(&self, deadline: Duration) -> Result<()> {
        self.shared.closing.cancel();
        let main = self.main.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(main) = main {
            let _ = main.await;
        }
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let notified = self.shared.finished.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self
                .shared
                .inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
            {
                return Ok(());
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                break;
            }
        }
        // Deadline passed: hand the unfinished jobs back so another worker can run them.
        let left: Vec<(String, AbortHandle)> = self
            .shared
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        for (job_id, abort) in left {
            abort.abort();
            if self.shared.cell.with(|q| q.release_stalled(&job_id)) {
                (self.shared.sink)(WorkerEvent::Stalled { job_id });
            }
        }
        Ok(())
    }
}

impl Drop for MemoryWorker {
    fn drop(&mut self) {
        self.shared.closing.cancel();
    }
}

/// Progress and log lines for a job running in memory.
struct MemoryControl {
    cell: Arc<QueueCell>,
    job_id: String,
}

#[async_trait]
impl JobControl for MemoryControl {
    async fn update_progress(&self, progress: Value) -> Result<()> {
        self.cell.with(|q| {
            if let Some(e) = q.jobs.get_mut(&self.job_id) {
                e.job.progress = progress.clone();
                q.pending_events.push(QueueEvent::Progress {
                    job_id: self.job_id.clone(),
                    data: progress,
                });
            }
        });
        Ok(())
    }

    async fn log(&self, line: &str) -> Result<()> {
        self.cell.with(|q| {
            if let Some(e) = q.jobs.get_mut(&self.job_id) {
                e.logs.push(line.to_string());
            }
        });
        Ok(())
    }
}
