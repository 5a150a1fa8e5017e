//! Job-run records off the hot path: each finished attempt is handed to a bounded buffer
//! (`try_send`, never waiting), and one task writes batches (up to 2000 rows or every 200 ms) in
//! one transaction. When the buffer is full the record is dropped and counted
//! (`keel_run_records_dropped_total`), so a slow database never slows the queue. An `ai`
//! handler's call is left in the attempt's [`RunNote`] and written on its run's row; once
//! written, it is told to the handlers' observer (`ai_task`, the AI listings' cache).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel::config::QueueConfig;
use keel::{JobContext, Processor, RunNote};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use crate::realtime::Realtime;
use keel_handlers::{HandlerEvent, Observer};
use keel_records::messages::NewAiRun;
use keel_records::{NewRun, RecordStore};

/// Default most records one insert holds.
pub const DEFAULT_BATCH: usize = 2000;
/// Default longest a record waits for its batch.
pub const DEFAULT_FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Default records the buffer holds before it drops (and counts) new ones.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// The run recorder's settings (the shape of every background service: named defaults and
/// `validate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecorderConfig {
    /// Records the buffer holds (`[runs] buffer`).
    pub capacity: usize,
    /// Most records per insert.
    pub batch: usize,
    /// Longest a record waits for its batch.
    pub flush_every: Duration,
}

impl Default for RunRecorderConfig {
    fn default() -> Self {
        RunRecorderConfig {
            capacity: DEFAULT_CAPACITY,
            batch: DEFAULT_BATCH,
            flush_every: DEFAULT_FLUSH_EVERY,
        }
    }
}

impl RunRecorderConfig {
    /// The defaults with a buffer of `capacity`.
    pub fn with_capacity(capacity: usize) -> RunRecorderConfig {
        RunRecorderConfig {
            capacity,
            ..RunRecorderConfig::default()
        }
    }

    /// Checks the settings; errors name the field.
    pub fn validate(&self) -> keel::Result<()> {
        if self.capacity == 0 {
            return Err(keel::Error::invalid("runs.buffer", "must be at least 1"));
        }
        if self.batch == 0 || self.flush_every.is_zero() {
            return Err(keel::Error::invalid(
                "runs.batch",
                "batches need a size and a time",
            ));
        }
        Ok(())
    }
}

/// Counts of the recorder.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RunStats {
    /// Whether runs are recorded.
    pub enabled: bool,
    /// Waiting in the buffer.
    pub buffered: usize,
    /// Dropped because the buffer was full.
    pub dropped: u64,
    /// Written.
    pub written: u64,
    /// Lost to database errors.
    pub failed_writes: u64,
}

#[derive(Default)]
struct Counters {
    dropped: AtomicU64,
    written: AtomicU64,
    failed: AtomicU64,
}

/// Hands run records to the writer task. Cheap to clone.
#[derive(Clone)]
pub struct RunRecorder {
    tx: Option<mpsc::Sender<NewRun>>,
    capacity: usize,
    counters: Arc<Counters>,
    stop: Arc<tokio::sync::Notify>,
}

impl RunRecorder {
    /// Records nothing.
    pub fn disabled() -> RunRecorder {
        RunRecorder {
            tx: None,
            capacity: 0,
            counters: Arc::default(),
            stop: Arc::default(),
        }
    }

    /// Starts the writer; after each batch it invalidates the `runs` tag of `cache` (the
    /// owner API's cached run lists) and tells `observer` of the AI calls it wrote.
    pub fn start(
        store: Arc<dyn RecordStore>,
        config: RunRecorderConfig,
        cache: Option<keel::Cache>,
        observer: Option<Observer>,
    ) -> (RunRecorder, JoinHandle<()>) {
        let RunRecorderConfig {
            capacity,
            batch: max_batch,
            flush_every,
        } = config;
        let (tx, mut rx) = mpsc::channel::<NewRun>(capacity.max(1));
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopped = stop.clone();
        let to = Told { cache, observer };
        let task = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(max_batch);
            loop {
                let first = tokio::select! {
                    r = rx.recv() => r,
                    _ = stopped.notified() => {
                        // Shutdown: write everything already handed over, then end.
                        while let Ok(r) = rx.try_recv() {
                            batch.push(r);
                            if batch.len() == max_batch {
                                write(&*store, &mut batch, &c, &to).await;
                            }
                        }
                        break;
                    }
                };
                let Some(first) = first else { break };
                batch.push(first);
                let deadline = Instant::now() + flush_every;
                while batch.len() < max_batch {
                    match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
                        Ok(Some(r)) => batch.push(r),
                        _ => break,
                    }
                }
                write(&*store, &mut batch, &c, &to).await;
            }
            // Stopped or the senders are gone: write what is left.
            write(&*store, &mut batch, &c, &to).await;
        });
        (
            RunRecorder {
                tx: Some(tx),
                capacity,
                counters,
                stop,
            },
            task,
        )
    }

    /// Hands one record over; drops it (counted) when the buffer is full.
    pub fn record(&self, run: NewRun) {
        if let Some(tx) = &self.tx {
            if tx.try_send(run).is_err() {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Asks the writer to write what it holds and end (at shutdown, after the workers closed).
    pub fn stop(&self) {
        self.stop.notify_one();
    }

    /// Figures for health and metrics.
    pub fn stats(&self) -> RunStats {
        RunStats {
            enabled: self.tx.is_some(),
            buffered: self
                .tx
                .as_ref()
                .map(|t| self.capacity - t.capacity())
                .unwrap_or(0),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            written: self.counters.written.load(Ordering::Relaxed),
            failed_writes: self.counters.failed.load(Ordering::Relaxed),
        }
    }

    /// Wraps a queue's processor: each attempt becomes a run record, a metric and a
    /// `job_status` event.
    pub fn wrap(
        &self,
        qc: &QueueConfig,
        tenant_id: Option<String>,
        worker: String,
        metrics: Metrics,
        realtime: Realtime,
        inner: Processor,
    ) -> Processor {
        let recorder = self.clone();
        let queue = qc.name.clone();
        let labels = Arc::new(Metrics::queue_labels(&queue));
        let qc = Arc::new(qc.clone());
        Arc::new(move |mut ctx: JobContext| {
            let job = ctx.job.clone();
            // What the handler adds to the run (an AI call), when runs are recorded.
            let note = recorder.tx.is_some().then(RunNote::default);
            ctx.run_note = note.clone();
            let started_ms = keel::now_ms() as i64;
            let started = Instant::now();
            let run = NewRun {
                tenant_id: tenant_id.clone(),
                queue: queue.clone(),
                job_id: job.id.clone(),
                name: job.name.clone(),
                attempt: job.attempts_made as i64 + 1,
                status: String::new(),
                started_at: started_ms,
                finished_at: started_ms,
                error: None,
                worker: worker.clone(),
                trace_id: job
                    .data
                    .get("traceId")
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>())),
                plugin_id: job
                    .data
                    .get("pluginId")
                    .and_then(|v| v.as_str())
                    .or_else(|| qc.handler_for(&job.name).and_then(|h| h.plugin()))
                    .map(str::to_string),
                error_stack: None,
                ai: None,
            };
            if ctx.recovered_stalls > 0 {
                // The attempt(s) before this one died with their worker: a run of their own,
                // so the record shows why the job ran again.
                metrics.jobs_stalled(&labels, ctx.recovered_stalls);
                let stalled = NewRun {
                    status: "stalled".into(),
                    error: Some(format!(
                        "the worker running this attempt died or lost the job's lock; recovered and retried ({} stall(s) so far; the queue's max_stalled_count is the poison-pill limit)",
                        job.stalled_counter
                    )),
                    ..run.clone()
                };
                realtime.job_status(&stalled);
                recorder.record(stalled);
            }
            let fut = inner(ctx);
            let guard = Finish {
                labels: labels.clone(),
                recorder: recorder.clone(),
                metrics: metrics.clone(),
                realtime: realtime.clone(),
                run: Some(run),
                started,
                stack: None,
                note,
            };
            Box::pin(async move {
                let mut guard = guard;
                let result = fut.await;
                match &result {
                    Ok(_) => guard.finish("completed", None),
                    Err(e) if e.delayed_for().is_some() => {
                        guard.metrics.job_delayed(&guard.labels);
                        guard.finish("delayed", Some(e.to_string()));
                    }
                    Err(e) => {
                        let status = if e.is_final_for(&job) {
                            "dead"
                        } else {
                            "failed"
                        };
                        guard.stack = e.stack().map(str::to_string);
                        guard.finish(status, Some(e.to_string()));
                    }
                }
                result
            })
        })
    }
}

/// Records the run when the attempt ends — also when its future is dropped (timeout, shutdown).
struct Finish {
    labels: Arc<Vec<(String, String)>>,
    recorder: RunRecorder,
    metrics: Metrics,
    realtime: Realtime,
    run: Option<NewRun>,
    started: Instant,
    stack: Option<String>,
    note: Option<RunNote>,
}

impl Finish {
    fn finish(&mut self, status: &str, error: Option<String>) {
        let Some(mut run) = self.run.take() else {
            return;
        };
        run.status = status.to_string();
        run.error = error;
        run.error_stack = self.stack.take();
        run.finished_at = keel::now_ms() as i64;
        run.ai = self
            .note
            .as_ref()
            .and_then(|n| n.take::<NewAiRun>())
            .map(|mut ai| {
                // One row: the run's trace id is the call's.
                ai.trace_id.clone_from(&run.trace_id);
                Box::new(ai)
            });
        if status != "delayed" {
            self.metrics.job_finished(
                &self.labels,
                status == "completed",
                self.started.elapsed().as_secs_f64(),
            );
        }
        self.realtime.job_status(&run);
        self.recorder.record(run);
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        if self.run.is_some() {
            self.finish("failed", Some("cancelled: timed out or shut down".into()));
        }
    }
}

/// Whom a written batch is told to.
struct Told {
    cache: Option<keel::Cache>,
    observer: Option<Observer>,
}

async fn write(store: &dyn RecordStore, batch: &mut Vec<NewRun>, c: &Counters, to: &Told) {
    if batch.is_empty() {
        return;
    }
    let mut result = store.insert_runs(batch).await;
    if result.is_err() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        result = store.insert_runs(batch).await;
    }
    match result {
        Ok(ids) => {
            c.written.fetch_add(batch.len() as u64, Ordering::Relaxed);
            let calls: Vec<HandlerEvent> = batch
                .iter_mut()
                .zip(ids)
                .filter_map(|(r, id)| r.ai.take().map(|ai| HandlerEvent::Ai(*ai, Some(id))))
                .collect();
            if let (Some(o), false) = (&to.observer, calls.is_empty()) {
                o(&calls);
            }
            if let Some(cache) = &to.cache {
                let _ = cache.invalidate_tags(&[crate::tags::RUNS]).await;
            }
        }
        Err(e) => {
            tracing::error!(error = %e, rows = batch.len(), "job run records lost");
            c.failed.fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
    }
    batch.clear();
}
