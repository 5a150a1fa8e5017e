//! The queue contract ([`QueueBackend`]) on Redis: producers, listings, admin, schedulers,
//! events and workers, over bullmq-official and Keel's own scripts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use keel_core::backend::BackendKind;
use keel_core::{
    Error, EventStream, Job, JobState, NewJob, Processor, QueueBackend, QueueCounts, Result,
    Schedule, SchedulerInfo, WorkerEventSink, WorkerHandle, WorkerOptions,
};
use serde_json::Value;

use crate::convert::{bull_state_name, from_bull_job, from_bull_state, map_err};
use crate::{convert, scripts, worker, RedisBackend};

#[async_trait]
impl QueueBackend for RedisBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Redis
    }

    async fn add(&self, queue: &str, job: NewJob) -> Result<Job> {
        let q = self.queue(queue).await?;
        self.add_one(&q, job).await
    }

    /// Not atomic: each job is added with its own script, in parallel on the multiplexed
    /// connection. On an error some jobs may have been added (see `Queue::add_each` for a
    /// per-job outcome).
    async fn add_bulk(&self, queue: &str, jobs: Vec<NewJob>) -> Result<Vec<Job>> {
        let q = self.queue(queue).await?;
        let adds = jobs.into_iter().map(|j| self.add_one(&q, j));
        futures::future::try_join_all(adds).await
    }

    async fn get_job(&self, queue: &str, id: &str) -> Result<Option<Job>> {
        if self.unwritten_dlq(queue).await? {
            return Ok(None);
        }
        let q = self.queue(queue).await?;
        let Some(stored) = self.bounded("reading a job", q.get_job(id)).await? else {
            return Ok(None);
        };
        let mut job = from_bull_job(queue, &stored);
        if let Some(backoff) = &mut job.opts.backoff {
            if backoff.jitter == 0.0 {
                let raw: Option<String> = self
                    .cmd(
                        "reading a job's options",
                        redis::cmd("HGET")
                            .arg(q.keys().job_key(id))
                            .arg("opts")
                            .to_owned(),
                    )
                    .await?;
                backoff.jitter = raw.as_deref().map(scripts::jitter_in).unwrap_or(0.0);
            }
        }
        Ok(Some(job))
    }

    async fn job_state(&self, queue: &str, id: &str) -> Result<Option<JobState>> {
        if self.unwritten_dlq(queue).await? {
            return Ok(None);
        }
        let q = self.queue(queue).await?;
        let state = self
            .bounded("reading a job state", q.get_job_state(id))
            .await?;
        Ok(from_bull_state(state))
    }

    async fn list(
        &self,
        queue: &str,
        state: JobState,
        offset: usize,
        limit: usize,
        asc: bool,
    ) -> Result<Vec<Job>> {
        if limit == 0 || self.unwritten_dlq(queue).await? {
            return Ok(Vec::new());
        }
        let q = self.queue(queue).await?;
        if state == JobState::Waiting {
            // A BullMQ 5 queue's paused jobs wait in `paused`: they are waiting too.
            let parked: u64 = self
                .cmd(
                    "counting paused jobs",
                    redis::cmd("LLEN").arg(q.keys().paused()).to_owned(),
                )
                .await?;
            if parked > 0 {
                return self.list_waiting_with_paused(&q, offset, limit, asc).await;
            }
        }
        let start = offset as i64;
        let end = (offset + limit - 1) as i64;
        let jobs = self
            .bounded(
                "listing jobs",
                q.get_jobs(&[bull_state_name(state)], start, end, asc),
            )
            .await?;
        Ok(jobs.iter().map(|j| from_bull_job(queue, j)).collect())
    }

    async fn counts(&self, queue: &str) -> Result<QueueCounts> {
        if self.unwritten_dlq(queue).await? {
            return Ok(QueueCounts::default());
        }
        let q = self.queue(queue).await?;
        let types = [
            "wait",
            "paused",
            "active",
            "delayed",
            "prioritized",
            "completed",
            "failed",
        ];
        let counts = self
            .bounded("counting jobs", q.get_job_counts_by_types(&types))
            .await?;
        let paused = self.bounded("reading pause state", q.is_paused()).await?;
        let get = |k: &str| counts.get(k).copied().unwrap_or(0);
        Ok(QueueCounts {
            // BullMQ 6 keeps paused jobs in `wait`; a v5 `paused` list still counts as waiting.
            waiting: get("wait") + get("waiting") + get("paused"),
            active: get("active"),
            delayed: get("delayed"),
            prioritized: get("prioritized"),
            completed: get("completed"),
            failed: get("failed"),
            paused,
        })
    }

    async fn job_logs(
        &self,
        queue: &str,
        id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<String>, u64)> {
        if limit == 0 {
            return Ok((Vec::new(), 0));
        }
        let q = self.queue(queue).await?;
        let (lines, total) = self
            .bounded(
                "reading job logs",
                q.get_job_logs(id, offset as isize, (offset + limit - 1) as isize, true),
            )
            .await?;
        Ok((lines, total as u64))
    }

    async fn pause(&self, queue: &str) -> Result<()> {
        let q = self.queue(queue).await?;
        if scripts::is_v5_layout(self, q.keys()).await? {
            return scripts::pause(self, q.keys()).await.map(|_| ());
        }
        self.bounded("pausing", q.pause()).await
    }

    async fn resume(&self, queue: &str) -> Result<()> {
        let q = self.queue(queue).await?;
        if scripts::is_v5_layout(self, q.keys()).await? {
            // Moves every paused job (bullmq-official's resume moves at most 7000 per call).
            return scripts::resume(self, q.keys()).await.map(|_| ());
        }
        self.bounded("resuming", q.resume()).await
    }

    async fn retry_job(&self, queue: &str, id: &str) -> Result<()> {
        let q = self.queue(queue).await?;
        let Some(mut job) = self.bounded("reading a job", q.get_job(id)).await? else {
            return Err(Error::not_found(format!("job {id} in queue {queue}")));
        };
        match self.job_state(queue, id).await? {
            Some(JobState::Failed) => {}
            Some(other) => {
                return Err(Error::Conflict(format!(
                    "job {id} is {other}, only failed jobs can be retried"
                )))
            }
            None => return Err(Error::not_found(format!("job {id} in queue {queue}"))),
        }
        let opts = bullmq::RetryOptions {
            reset_attempts_made: true,
            reset_attempts_started: true,
        };
        self.bounded("retrying a job", job.retry("failed", Some(opts)))
            .await
    }

    async fn remove(&self, queue: &str, id: &str) -> Result<bool> {
        let q = self.queue(queue).await?;
        match self.job_state(queue, id).await? {
            None => return Ok(false),
            Some(JobState::Active) => {
                return Err(Error::Conflict(format!(
                    "job {id} is active (locked by a worker) and cannot be removed"
                )))
            }
            Some(_) => {}
        }
        let removed = self.bounded("removing a job", q.remove(id)).await?;
        if !removed && self.job_state(queue, id).await? == Some(JobState::Active) {
            return Err(Error::Conflict(format!(
                "job {id} became active (locked by a worker) and cannot be removed"
            )));
        }
        Ok(removed)
    }

    async fn clean(
        &self,
        queue: &str,
        grace: Duration,
        limit: usize,
        state: JobState,
    ) -> Result<Vec<String>> {
        let q = self.queue(queue).await?;
        self.bounded(
            "cleaning jobs",
            q.clean(
                grace.as_millis() as u64,
                limit.min(u32::MAX as usize) as u32,
                bull_state_name(state),
            ),
        )
        .await
    }

    async fn drain(&self, queue: &str, delayed: bool) -> Result<()> {
        let q = self.queue(queue).await?;
        self.bounded("draining", q.drain(delayed)).await
    }

    async fn obliterate(&self, queue: &str, force: bool) -> Result<()> {
        let q = self.queue(queue).await?;
        if !force {
            let active = self
                .bounded("counting active jobs", q.get_active_count())
                .await?;
            if active > 0 {
                return Err(Error::Conflict(format!(
                    "queue {queue} has {active} active jobs; obliterate with force to delete them"
                )));
            }
        }
        // BullMQ's obliterate script requires a paused queue (Node pauses first too).
        self.bounded("pausing before obliterate", q.pause()).await?;
        // Obliterate may take several script calls on a big queue: give it ten timeouts.
        let budget = self.inner.settings.command_timeout * 10;
        match tokio::time::timeout(budget, q.obliterate(force, 1000)).await {
            Ok(r) => r.map_err(|e| map_err("obliterating", e))?,
            Err(_) => {
                return Err(Error::BackendUnavailable(format!(
                    "obliterating {queue} did not finish within {budget:?}"
                )))
            }
        }
        self.inner
            .queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(queue);
        Ok(())
    }

    async fn failed_between(
        &self,
        queue: &str,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<Job>> {
        let q = self.queue(queue).await?;
        let ids: Vec<String> = self
            .cmd(
                "listing failed jobs",
                redis::cmd("ZRANGEBYSCORE")
                    .arg(q.keys().failed())
                    .arg(from_ms)
                    .arg(to_ms)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit)
                    .to_owned(),
            )
            .await?;
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(job) = self.get_job(queue, &id).await? {
                jobs.push(job);
            }
        }
        Ok(jobs)
    }

    async fn upsert_scheduler(
        &self,
        queue: &str,
        id: &str,
        schedule: Schedule,
        template: NewJob,
    ) -> Result<SchedulerInfo> {
        let q = self.queue(queue).await?;
        let repeat = match &schedule {
            Schedule::Cron { pattern, tz } => {
                let at = keel_core::now_ms();
                bullmq::job_scheduler::next_cron_millis(pattern, at, tz.as_deref(), None).map_err(
                    |e| {
                        let msg = e.to_string();
                        if msg.contains("timezone") {
                            Error::invalid("tz", msg)
                        } else {
                            Error::invalid("pattern", msg)
                        }
                    },
                )?;
                bullmq::job_scheduler::RepeatOptions {
                    pattern: Some(pattern.clone()),
                    tz: tz.clone(),
                    ..Default::default()
                }
            }
            Schedule::Every { every_ms } => bullmq::job_scheduler::RepeatOptions {
                every: Some(*every_ms),
                ..Default::default()
            },
        };
        let mut opts = convert::to_bull_opts(&template.opts);
        opts.job_id = None;
        opts.delay = None;
        self.bounded(
            "storing a scheduler",
            q.upsert_job_scheduler(
                id,
                repeat,
                Some(&template.name),
                Some(template.data),
                Some(opts),
            ),
        )
        .await?;
        self.list_schedulers(queue)
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| Error::Backend(format!("scheduler {id} vanished after being stored")))
    }

    async fn set_global_concurrency(&self, queue: &str, limit: Option<u32>) -> Result<()> {
        // BullMQ's own field (`meta.concurrency`), which its `moveToActive` honours: Node
        // workers on the queue keep to it too.
        let q = self.queue(queue).await?;
        match limit {
            Some(n) => {
                self.bounded(
                    "setting the global concurrency",
                    q.set_global_concurrency(u64::from(n)),
                )
                .await
            }
            None => {
                self.bounded(
                    "removing the global concurrency",
                    q.remove_global_concurrency(),
                )
                .await
            }
        }
    }

    async fn list_schedulers(&self, queue: &str) -> Result<Vec<SchedulerInfo>> {
        let q = self.queue(queue).await?;
        let all = self
            .bounded("listing schedulers", q.get_job_schedulers(0, -1, true))
            .await?;
        let mut out: Vec<SchedulerInfo> = all
            .into_iter()
            .map(|s| {
                let raw = serde_json::to_value(&s).unwrap_or(Value::Null);
                let schedule = match (&s.pattern, raw.get("every").and_then(Value::as_u64)) {
                    (Some(p), _) => Schedule::Cron {
                        pattern: p.clone(),
                        tz: s.tz.clone(),
                    },
                    (None, Some(every_ms)) => Schedule::Every { every_ms },
                    (None, None) => Schedule::Every { every_ms: 0 },
                };
                SchedulerInfo {
                    id: s.key.clone(),
                    name: s.name.clone(),
                    schedule,
                    next_run_ms: raw.get("next").and_then(Value::as_u64),
                    iteration_count: s.iteration_count,
                }
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn remove_scheduler(&self, queue: &str, id: &str) -> Result<bool> {
        let q = self.queue(queue).await?;
        self.bounded("removing a scheduler", q.remove_job_scheduler(id))
            .await
    }

    async fn set_rate_limit(&self, queue: &str, limit: Option<(u64, Duration)>) -> Result<()> {
        let q = self.queue(queue).await?;
        match limit {
            Some((max, d)) => {
                self.bounded(
                    "setting the rate limit",
                    q.set_global_rate_limit(max, d.as_millis() as u64),
                )
                .await
            }
            None => {
                self.bounded("removing the rate limit", q.remove_global_rate_limit())
                    .await
            }
        }
    }

    async fn queue_names(&self) -> Result<Vec<String>> {
        let prefix = &self.inner.settings.prefix;
        let mut names: Vec<String> = self
            .scan_keys("listing queues", &format!("{prefix}:*:meta"))
            .await?
            .into_iter()
            .filter_map(|key| {
                key.strip_prefix(&format!("{prefix}:"))
                    .and_then(|k| k.strip_suffix(":meta"))
                    .filter(|name| !name.contains(':'))
                    .and_then(|name| self.keel_name(name))
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn events(&self, queue: &str) -> Result<EventStream> {
        let opts = bullmq::QueueEventsOptions {
            connection: self.inner.conn_opts.clone(),
            prefix: self.inner.settings.prefix.clone(),
            blocking_timeout: 1000,
            ..Default::default()
        };
        let events = self
            .bounded(
                "subscribing to events",
                bullmq::QueueEvents::with_options(&self.bull_name(queue), opts),
            )
            .await?;
        let events = Arc::new(events);
        // The reader stops when the stream is dropped: the guard closes QueueEvents.
        let guard = Arc::new(EventsGuard(events.clone()));
        let stream = futures::stream::unfold((events, guard), |(ev, guard)| async move {
            loop {
                let entry = ev.next_event().await?;
                if let Some(e) = worker::map_queue_event(entry.event) {
                    return Some((e, (ev, guard)));
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
        // Make sure the queue meta (with `version`) exists before the worker runs.
        self.queue(queue).await?;
        let handle = worker::start(
            (queue, &self.bull_name(queue)),
            &self.inner.settings,
            &self.inner.conn_opts,
            &self.inner.conn,
            processor,
            opts,
            sink,
        )
        .await?;
        Ok(Box::new(handle))
    }

    async fn heartbeat(&self, id: &str, info: Value, ttl: Duration) -> Result<()> {
        let key = format!(
            "{}:health:worker:{id}:heartbeat",
            self.inner.settings.prefix
        );
        self.cmd::<()>(
            "writing the worker heartbeat",
            redis::cmd("SET")
                .arg(key)
                .arg(info.to_string())
                .arg("PX")
                .arg(ttl.as_millis().max(1) as u64)
                .to_owned(),
        )
        .await
    }

    async fn live_workers(&self) -> Result<Vec<Value>> {
        let pattern = format!("{}:health:worker:*:heartbeat", self.inner.settings.prefix);
        let mut keys = self.scan_keys("listing workers", &pattern).await?;
        keys.sort();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<String>> = self
            .cmd("reading workers", redis::cmd("MGET").arg(&keys).to_owned())
            .await?;
        Ok(values
            .into_iter()
            .flatten()
            .filter_map(|v| serde_json::from_str(&v).ok())
            .collect())
    }

    async fn ping(&self) -> Result<Duration> {
        let started = Instant::now();
        let pong: String = self.cmd("PING", redis::cmd("PING")).await?;
        if pong != "PONG" {
            return Err(Error::Backend(format!("PING answered {pong:?}")));
        }
        Ok(started.elapsed())
    }
}

/// Closes a `QueueEvents` reader when the last stream holding it is dropped.
struct EventsGuard(Arc<bullmq::QueueEvents>);

impl Drop for EventsGuard {
    fn drop(&mut self) {
        let ev = self.0.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { ev.close().await });
        }
    }
}
