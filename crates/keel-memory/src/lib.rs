//! Keel's in-process queue backend: the embedded default when no Redis is configured.
//!
//! It keeps BullMQ's semantics (ordering, delays, priorities, retries and backoff, retention,
//! deduplication, pause, rate limit, schedulers, events) so that code written against it behaves
//! the same on Redis. The conformance suite in `crates/keel/tests/conformance` runs every
//! behaviour against both backends.
//!
//! **What it cannot do**: nothing is durable — jobs live in this process and are gone when it
//! exits; no other process can see or process them (the `keel` commands that work on queues
//! from another process refuse to run against it); there is no crash recovery across restarts.
//! What it does instead of lock-based stall recovery: a worker that is closed with jobs still
//! running past its deadline hands those jobs straight back to waiting (counting a stall), and a
//! handler that panics is a failed attempt. `lock_duration`, `stalled_interval` and
//! `max_stalled_count` therefore have nothing to act on in one process and are ignored.
//!
//! # Layout
//! - [`state`](crate::state): one queue's data and every transition on it (add, take,
//!   complete, fail, retry, remove, clean, drain, retention, rate limit).
//! - [`schedule`](crate::schedule): cron (with time zone) and interval schedulers.
//! - [`worker`](crate::worker): the worker loop (concurrency, wake-ups, graceful close).
//! - this file: [`MemoryBackend`], the `QueueBackend` implementation tying them together.

mod kv;
mod schedule;
mod state;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use keel_core::backend::BackendKind;
use keel_core::{
    now_ms, Error, EventStream, Job, JobState, NewJob, Processor, QueueBackend, QueueCounts,
    QueueEvent, Result, Schedule, SchedulerInfo, WorkerEventSink, WorkerHandle, WorkerOptions,
};
use serde_json::Value;

pub use crate::kv::MemoryKv;
use tokio::sync::{broadcast, Notify};

use crate::state::QueueData;

/// Capacity of each queue's event channel; a subscriber further behind skips events.
const EVENT_CAPACITY: usize = 4096;

/// One queue: its data behind a mutex, a wake-up for workers, and its event channel.
pub(crate) struct QueueCell {
    /// `std::sync::Mutex`: every critical section is a short, synchronous transition and the
    /// lock is never held across an `.await`.
    data: Mutex<QueueData>,
    /// Woken whenever a job may have become available (add, retry, resume, promotion).
    work: Notify,
    events: broadcast::Sender<QueueEvent>,
}

impl QueueCell {
    fn new() -> QueueCell {
        QueueCell {
            data: Mutex::new(QueueData::default()),
            work: Notify::new(),
            events: broadcast::channel(EVENT_CAPACITY).0,
        }
    }

    /// Runs a transition under the lock, then publishes its events and wakes workers.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut QueueData) -> T) -> T {
        let (out, events) = {
            let mut data = self.data.lock().unwrap_or_else(|e| e.into_inner());
            let out = f(&mut data);
            (out, std::mem::take(&mut data.pending_events))
        };
        if !events.is_empty() {
            for event in events {
                // No subscriber is fine: events are for whoever listens now.
                let _ = self.events.send(event);
            }
            self.work.notify_waiters();
        }
        out
    }
}

/// The in-process backend. Cheap to clone; all clones share the same queues.
#[derive(Clone, Default)]
pub struct MemoryBackend {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    queues: Mutex<HashMap<String, Arc<QueueCell>>>,
    /// worker id → (info, expiry ms).
    heartbeats: Mutex<HashMap<String, (Value, u64)>>,
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    fn cell(&self, queue: &str) -> Arc<QueueCell> {
        let mut queues = self.inner.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues
            .entry(queue.to_string())
            .or_insert_with(|| Arc::new(QueueCell::new()))
            .clone()
    }

    fn existing(&self, queue: &str) -> Option<Arc<QueueCell>> {
        let queues = self.inner.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues.get(queue).cloned()
    }
}

#[async_trait]
impl QueueBackend for MemoryBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Memory
    }

    async fn add(&self, queue: &str, job: NewJob) -> Result<Job> {
        Ok(self.cell(queue).with(|q| q.add(queue, job, now_ms())))
    }

    async fn add_bulk(&self, queue: &str, jobs: Vec<NewJob>) -> Result<Vec<Job>> {
        let now = now_ms();
        // All under one lock: in memory a bulk add is atomic.
        Ok(self
            .cell(queue)
            .with(|q| jobs.into_iter().map(|j| q.add(queue, j, now)).collect()))
    }

    async fn get_job(&self, queue: &str, id: &str) -> Result<Option<Job>> {
        Ok(self
            .existing(queue)
            .and_then(|c| c.with(|q| q.jobs.get(id).map(|e| e.job.clone()))))
    }

    async fn job_state(&self, queue: &str, id: &str) -> Result<Option<JobState>> {
        Ok(self
            .existing(queue)
            .and_then(|c| c.with(|q| q.jobs.get(id).map(|e| e.state))))
    }

    async fn list(
        &self,
        queue: &str,
        state: JobState,
        offset: usize,
        limit: usize,
        asc: bool,
    ) -> Result<Vec<Job>> {
        let Some(cell) = self.existing(queue) else {
            return Ok(Vec::new());
        };
        Ok(cell.with(|q| {
            q.promote_due(now_ms());
            q.ids(state, offset, limit, asc)
                .iter()
                .filter_map(|id| q.jobs.get(id).map(|e| e.job.clone()))
                .collect()
        }))
    }

    async fn counts(&self, queue: &str) -> Result<QueueCounts> {
        Ok(self
            .existing(queue)
            .map(|c| {
                c.with(|q| {
                    q.promote_due(now_ms());
                    q.counts()
                })
            })
            .unwrap_or_default())
    }

    async fn job_logs(
        &self,
        queue: &str,
        id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<String>, u64)> {
        Ok(self
            .existing(queue)
            .and_then(|c| {
                c.with(|q| {
                    q.jobs.get(id).map(|e| {
                        let lines = e.logs.iter().skip(offset).take(limit).cloned().collect();
                        (lines, e.logs.len() as u64)
                    })
                })
            })
            .unwrap_or_default())
    }

    async fn pause(&self, queue: &str) -> Result<()> {
        self.cell(queue).with(|q| {
            q.paused = true;
            q.pending_events.push(QueueEvent::Paused);
        });
        Ok(())
    }

    async fn resume(&self, queue: &str) -> Result<()> {
        self.cell(queue).with(|q| {
            q.paused = false;
            q.pending_events.push(QueueEvent::Resumed);
        });
        Ok(())
    }

    async fn retry_job(&self, queue: &str, id: &str) -> Result<()> {
        self.cell(queue).with(|q| q.retry(queue, id))
    }

    async fn remove(&self, queue: &str, id: &str) -> Result<bool> {
        match self.existing(queue) {
            Some(c) => c.with(|q| q.remove(id)),
            None => Ok(false),
        }
    }

    async fn clean(
        &self,
        queue: &str,
        grace: Duration,
        limit: usize,
        state: JobState,
    ) -> Result<Vec<String>> {
        let cutoff = now_ms().saturating_sub(grace.as_millis() as u64);
        Ok(self
            .existing(queue)
            .map(|c| c.with(|q| q.clean(cutoff, limit, state)))
            .unwrap_or_default())
    }

    async fn drain(&self, queue: &str, delayed: bool) -> Result<()> {
        if let Some(c) = self.existing(queue) {
            c.with(|q| q.drain(delayed));
        }
        Ok(())
    }

    async fn obliterate(&self, queue: &str, force: bool) -> Result<()> {
        let Some(cell) = self.existing(queue) else {
            return Ok(());
        };
        cell.with(|q| {
            if !force && !q.active.is_empty() {
                return Err(Error::Conflict(format!(
                    "queue {queue} has {} active jobs; obliterate with force to delete them",
                    q.active.len()
                )));
            }
            // Reset in place, like BullMQ deleting every key including meta (pause flag, rate
            // limit, id counter): running workers keep the same cell and see later jobs.
            *q = QueueData::default();
            Ok(())
        })
    }

    async fn failed_between(
        &self,
        queue: &str,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<Job>> {
        Ok(self
            .existing(queue)
            .map(|c| c.with(|q| q.failed_between(from_ms, to_ms, limit)))
            .unwrap_or_default())
    }

    async fn upsert_scheduler(
        &self,
        queue: &str,
        id: &str,
        schedule: Schedule,
        template: NewJob,
    ) -> Result<SchedulerInfo> {
        let scheduler = schedule::Scheduler::new(id, schedule, template)?;
        Ok(self.cell(queue).with(|q| {
            if let Some(old) = q.schedulers.remove(id) {
                if let Some(pending) = old.pending_job {
                    if q.jobs.get(&pending).map(|e| e.state) == Some(JobState::Delayed) {
                        q.delete(&pending);
                    }
                }
            }
            q.schedulers.insert(id.to_string(), scheduler);
            q.schedule_next(queue, id, now_ms());
            q.schedulers[id].info()
        }))
    }

    async fn list_schedulers(&self, queue: &str) -> Result<Vec<SchedulerInfo>> {
        let mut all = self
            .existing(queue)
            .map(|c| c.with(|q| q.schedulers.values().map(|s| s.info()).collect::<Vec<_>>()))
            .unwrap_or_default();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    async fn remove_scheduler(&self, queue: &str, id: &str) -> Result<bool> {
        Ok(self
            .existing(queue)
            .map(|c| {
                c.with(|q| match q.schedulers.remove(id) {
                    Some(s) => {
                        if let Some(pending) = s.pending_job {
                            if q.jobs.get(&pending).map(|e| e.state) == Some(JobState::Delayed) {
                                q.delete(&pending);
                            }
                        }
                        true
                    }
                    None => false,
                })
            })
            .unwrap_or(false))
    }

    async fn set_rate_limit(&self, queue: &str, limit: Option<(u64, Duration)>) -> Result<()> {
        self.cell(queue).with(|q| {
            q.rate_limit = limit.map(|(max, d)| (max, d.as_millis().max(1) as u64));
            q.starts.clear();
            // Wake workers: a lifted limit may free them.
            q.pending_events.push(QueueEvent::Resumed);
        });
        Ok(())
    }

    async fn set_global_concurrency(&self, queue: &str, limit: Option<u32>) -> Result<()> {
        let cell = self.cell(queue);
        cell.with(|q| q.global_concurrency = limit.map(u64::from));
        // A raised or lifted limit may free waiting workers.
        cell.work.notify_waiters();
        Ok(())
    }

    async fn queue_names(&self) -> Result<Vec<String>> {
        let cells: Vec<(String, Arc<QueueCell>)> = self
            .inner
            .queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut names: Vec<String> = cells
            .into_iter()
            .filter(|(_, cell)| cell.with(|q| q.in_use()))
            .map(|(name, _)| name)
            .collect();
        names.sort();
        Ok(names)
    }

    async fn events(&self, queue: &str) -> Result<EventStream> {
        let rx = self.cell(queue).events.subscribe();
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(event) => return Some((event, rx)),
                    // A slow subscriber skips what it missed rather than slowing producers.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(stream.boxed())
    }

    async fn start_worker(
        &self,
        queue: &str,
        processor: Processor,
        opts: WorkerOptions,
        sink: WorkerEventSink,
    ) -> Result<Box<dyn WorkerHandle>> {
        if opts.concurrency == 0 {
            return Err(Error::invalid("concurrency", "must be at least 1"));
        }
        Ok(Box::new(worker::start(
            self.cell(queue),
            queue,
            processor,
            opts,
            sink,
        )))
    }

    async fn heartbeat(&self, id: &str, info: Value, ttl: Duration) -> Result<()> {
        let expires = now_ms() + ttl.as_millis() as u64;
        self.inner
            .heartbeats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), (info, expires));
        Ok(())
    }

    async fn live_workers(&self) -> Result<Vec<Value>> {
        let now = now_ms();
        let mut beats = self
            .inner
            .heartbeats
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        beats.retain(|_, (_, exp)| *exp > now);
        let mut ids: Vec<_> = beats.keys().cloned().collect();
        ids.sort();
        Ok(ids.into_iter().map(|id| beats[&id].0.clone()).collect())
    }

    async fn ping(&self) -> Result<Duration> {
        Ok(Duration::ZERO)
    }
}
