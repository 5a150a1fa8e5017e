//! The worker adapter: a bullmq `Worker` running Keel's `Processor`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bullmq::options::RedisConnectionOptions;
use bullmq::redis_connection::RedisConnection;
use bullmq::worker::{CancellationToken, ProcessorFn, WorkerEvent as BullEvent};
use bullmq::QueueKeys;
use keel_core::{
    now_ms, Error, JobContext, JobControl, JobError, Processor, QueueEvent, Result, WorkerEvent,
    WorkerEventSink, WorkerHandle, WorkerOptions,
};
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::convert::{from_bull_job, map_err, parse_jitter_backoff};
use crate::RedisSettings;

/// After a failed fetch (Redis away), retry after this long instead of bullmq's 15 s default.
const RUN_RETRY_DELAY_MS: u64 = 1000;
/// How long an idle worker blocks waiting for a job before looking again. Short, so `close`
/// of an idle worker returns quickly (bullmq waits for the blocking fetch to end).
const DRAIN_DELAY_S: u64 = 1;

/// Outcome of a failed attempt that the processor wrapper recorded, keyed by job id, for the
/// event pump to label bullmq's `Failed` event as terminal or not.
type Verdicts = Arc<Mutex<HashMap<String, bool>>>;

/// A running Redis worker.
pub(crate) struct RedisWorker {
    id: String,
    worker: Arc<bullmq::Worker>,
    pump: std::sync::Mutex<Option<JoinHandle<()>>>,
}

/// Starts a bullmq worker on `queue`: (Keel's name, BullMQ's name; see
/// [`crate::RedisBackend::bull_name`]).
pub(crate) async fn start(
    (queue, bull_name): (&str, &str),
    settings: &RedisSettings,
    conn_opts: &RedisConnectionOptions,
    conn: &RedisConnection,
    processor: Processor,
    opts: WorkerOptions,
    sink: WorkerEventSink,
) -> Result<RedisWorker> {
    let verdicts: Verdicts = Arc::new(Mutex::new(HashMap::new()));
    let keys = QueueKeys::new(bull_name, Some(&settings.prefix));
    let wrapped = wrap(
        queue.to_string(),
        conn.clone(),
        keys,
        processor,
        verdicts.clone(),
        sink.clone(),
    );
    let mut bull = bullmq::WorkerOptions::new()
        .connection(conn_opts.clone())
        .prefix(settings.prefix.clone())
        .concurrency(opts.concurrency)
        .lock_duration(opts.lock_duration)
        .stalled_interval(opts.stalled_interval)
        .max_stalled_count(opts.max_stalled_count)
        .drain_delay(Duration::from_secs(DRAIN_DELAY_S))
        .run_retry_delay(Duration::from_millis(RUN_RETRY_DELAY_MS))
        .skip_version_check()
        .backoff_strategy(Arc::new(|attempts, kind, _msg, _data| {
            let delay = parse_jitter_backoff(kind)
                .map(|b| b.delay_after(attempts, rand::random::<f64>()) as i64)
                .unwrap_or(0);
            Box::pin(async move { delay })
        }));
    if let Some(name) = &opts.name {
        bull = bull.name(name.clone());
    }
    let worker = tokio::time::timeout(
        settings.command_timeout,
        bullmq::Worker::with_options(bull_name, wrapped, bull),
    )
    .await
    .map_err(|_| {
        Error::BackendUnavailable(format!(
            "starting a worker on {queue}: Redis did not answer within {:?}",
            settings.command_timeout
        ))
    })?
    .map_err(|e| map_err("starting a worker", e))?;
    let worker = Arc::new(worker);
    let pump = tokio::spawn(pump_events(worker.clone(), verdicts, sink));
    Ok(RedisWorker {
        id: worker.id().to_string(),
        worker,
        pump: std::sync::Mutex::new(Some(pump)),
    })
}

/// Drains bullmq's (unbounded) event channel for the worker's whole life, translating events
/// for the sink. Not draining it would leak ~250 bytes per job.
async fn pump_events(worker: Arc<bullmq::Worker>, verdicts: Verdicts, sink: WorkerEventSink) {
    while let Some(event) = worker.next_event().await {
        let out = match event {
            BullEvent::Active { job_id } => WorkerEvent::Active { job_id },
            BullEvent::Completed { job_id, .. } => WorkerEvent::Completed { job_id },
            BullEvent::Failed { job_id, error } => {
                // No verdict: the job failed without its processor failing — failed by bullmq
                // for stalling too often, or finishing failed on a lost lock ("Missing lock
                // for job X. moveToFinished"). The dead-letter sink tells them apart by the
                // job's stored state (a lost lock leaves it active, then stalled-recovered).
                let terminal = verdicts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&job_id)
                    .unwrap_or(true);
                WorkerEvent::Failed {
                    job_id,
                    reason: error,
                    terminal,
                }
            }
            // Stalls are reported by the processor wrapper, once per stall across workers.
            BullEvent::Error(message) => WorkerEvent::Error { message },
            BullEvent::Closed => break,
            _ => continue,
        };
        sink(out);
    }
}

/// Wraps Keel's processor in bullmq's processor signature.
fn wrap(
    queue: String,
    conn: RedisConnection,
    keys: QueueKeys,
    processor: Processor,
    verdicts: Verdicts,
    sink: WorkerEventSink,
) -> ProcessorFn {
    Arc::new(move |job: bullmq::Job, _token: CancellationToken| {
        let snapshot = from_bull_job(&queue, &job);
        let processor = processor.clone();
        let conn = conn.clone();
        let keys = keys.clone();
        let verdicts = verdicts.clone();
        let sink = sink.clone();
        Box::pin(async move {
            let job = Arc::new(tokio::sync::Mutex::new(job));
            // A job recovered after its worker died: report each stall once, here and to the
            // processor (run records, metrics). It is retried, not failed, until the stall
            // limit says poison pill.
            let recovered_stalls = if snapshot.stalled_counter > 0 {
                crate::scripts::note_stalls(&conn, &keys, &snapshot.id)
                    .await
                    .unwrap_or(0)
            } else {
                0
            };
            if recovered_stalls > 0 {
                sink(WorkerEvent::Stalled {
                    job_id: snapshot.id.clone(),
                });
            }
            let ctx = JobContext {
                job: snapshot.clone(),
                control: Arc::new(RedisControl { job: job.clone() }),
                recovered_stalls,
                run_note: None,
            };
            let err = match processor(ctx).await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            if let JobError::Delay { reason, wait } = &err {
                // Not an attempt: back to delayed, the reason in the job's log. If the move
                // fails the job is failed as a retry instead (nothing is lost).
                let guard = job.lock().await;
                let until = now_ms() + wait.as_millis() as u64;
                let line = keel_core::delay_log_line(until, reason);
                if guard.log(&line).await.is_ok() && guard.move_to_delayed(until).await.is_ok() {
                    return Err(bullmq::Error::Delayed);
                }
            }
            let terminal = err.is_final_for(&snapshot);
            if !terminal {
                // bullmq-official computes BullMQ's backoffs without their jitter, and knows
                // nothing of Retry-After: either makes Keel delay the retry itself.
                let jitter = match &snapshot.opts.backoff {
                    Some(_) => stored_jitter(&conn, &keys, &snapshot.id).await,
                    None => 0.0,
                };
                let backoff = snapshot
                    .opts
                    .backoff
                    .as_ref()
                    .map(|b| {
                        b.clone()
                            .with_jitter(jitter)
                            .delay_after(snapshot.attempts_made + 1, rand::random::<f64>())
                    })
                    .unwrap_or(0);
                let retry_after = err.retry_after().map(|w| w.as_millis() as u64);
                let own = jitter > 0.0 || retry_after.is_some_and(|w| w > backoff);
                if own {
                    let wait = Duration::from_millis(retry_after.unwrap_or(0).max(backoff));
                    let guard = job.lock().await;
                    if delay_for_retry_after(&conn, &keys, &guard, &err, wait)
                        .await
                        .is_ok()
                    {
                        sink(WorkerEvent::Failed {
                            job_id: snapshot.id.clone(),
                            reason: err.message().to_string(),
                            terminal: false,
                        });
                        return Err(bullmq::Error::Delayed);
                    }
                }
            }
            verdicts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(snapshot.id.clone(), terminal);
            Err(match err {
                JobError::Unrecoverable { message, .. } => bullmq::Error::Unrecoverable(message),
                JobError::Retry { message, .. }
                | JobError::Delay {
                    reason: message, ..
                } => bullmq::Error::ProcessingError(message),
            })
        })
    })
}

/// The jitter stored in a job's options (0 when none, or when it cannot be read: the retry
/// then waits the plain backoff).
async fn stored_jitter(conn: &RedisConnection, keys: &QueueKeys, id: &str) -> f64 {
    let mut c = conn.connection();
    redis::cmd("HGET")
        .arg(keys.job_key(id))
        .arg("opts")
        .query_async::<Option<String>>(&mut c)
        .await
        .ok()
        .flatten()
        .map(|raw| crate::scripts::jitter_in(&raw))
        .unwrap_or(0.0)
}

/// Delays a retry by Keel's own reckoning (a `Retry-After` longer than the job's backoff, or a
/// jittered backoff): counts the attempt and records its
/// error on the job hash, then moves the job to delayed with BullMQ's `moveToDelayed` script
/// (which, called from a processor, does not count an attempt: BullMQ's DelayedError
/// semantics). If the process dies between the two steps the job stays active with its lock
/// expiring, and stalled recovery puts it back to wait: the attempt is counted once and nothing
/// is lost.
async fn delay_for_retry_after(
    conn: &RedisConnection,
    keys: &QueueKeys,
    job: &bullmq::Job,
    err: &JobError,
    wait: Duration,
) -> std::result::Result<(), bullmq::Error> {
    let mut c = conn.connection();
    redis::pipe()
        .cmd("HINCRBY")
        .arg(keys.job_key(job.id()))
        .arg("atm")
        .arg(1)
        .ignore()
        .cmd("HSET")
        .arg(keys.job_key(job.id()))
        .arg("failedReason")
        .arg(err.message())
        .ignore()
        .query_async::<()>(&mut c)
        .await?;
    job.move_to_delayed(now_ms() + wait.as_millis() as u64)
        .await
}

/// Progress and log lines through bullmq's job methods (BullMQ's scripts).
struct RedisControl {
    /// `tokio::sync::Mutex`: `update_progress` needs `&mut` and is awaited while held.
    job: Arc<tokio::sync::Mutex<bullmq::Job>>,
}

#[async_trait]
impl JobControl for RedisControl {
    async fn update_progress(&self, progress: Value) -> Result<()> {
        let value = match &progress {
            Value::Number(n) => bullmq::JobProgress::Number(n.as_f64().unwrap_or(0.0)),
            other => bullmq::JobProgress::Object(other.clone()),
        };
        self.job
            .lock()
            .await
            .update_progress(value)
            .await
            .map_err(|e| map_err("updating progress", e))
    }

    async fn log(&self, line: &str) -> Result<()> {
        self.job
            .lock()
            .await
            .log(line)
            .await
            .map(|_| ())
            .map_err(|e| map_err("writing a job log line", e))
    }
}

#[async_trait]
impl WorkerHandle for RedisWorker {
    fn id(&self) -> &str {
        &self.id
    }

    async fn close(&self, deadline: Duration) -> Result<()> {
        // bullmq stops fetching, waits for in-flight jobs up to the deadline, then aborts the
        // rest without finishing them: their locks expire and another worker's stalled check
        // moves them back to wait. They are never lost.
        self.worker
            .close(deadline.as_millis() as u64)
            .await
            .map_err(|e| map_err("closing a worker", e))?;
        let pump = self.pump.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(pump) = pump {
            // The pump ends on bullmq's Closed event; bound the wait anyway.
            let _ = tokio::time::timeout(Duration::from_secs(2), pump).await;
        }
        Ok(())
    }
}

/// Maps an event of BullMQ's per-queue stream to Keel's.
pub(crate) fn map_queue_event(e: bullmq::QueueEvent) -> Option<QueueEvent> {
    use bullmq::QueueEvent as B;
    Some(match e {
        B::Added { job_id, name } => QueueEvent::Added { job_id, name },
        B::Waiting { job_id, .. } => QueueEvent::Waiting { job_id },
        B::Delayed { job_id, delay } => QueueEvent::Delayed {
            job_id,
            until_ms: delay.max(0) as u64,
        },
        B::Active { job_id, .. } => QueueEvent::Active { job_id },
        B::Progress { job_id, data } => QueueEvent::Progress { job_id, data },
        B::Completed {
            job_id,
            return_value,
            ..
        } => QueueEvent::Completed {
            job_id,
            returnvalue: serde_json::from_str(&return_value).unwrap_or(Value::String(return_value)),
        },
        B::Failed {
            job_id,
            failed_reason,
            ..
        } => QueueEvent::Failed {
            job_id,
            reason: failed_reason,
        },
        B::Stalled { job_id } => QueueEvent::Stalled { job_id },
        B::Removed { job_id, .. } => QueueEvent::Removed { job_id },
        B::Paused => QueueEvent::Paused,
        B::Resumed => QueueEvent::Resumed,
        B::Drained => QueueEvent::Drained,
        _ => return None,
    })
}
