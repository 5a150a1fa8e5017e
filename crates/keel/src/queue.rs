//! The producer and admin API of one queue.

use std::sync::Arc;
use std::time::Duration;

use keel_core::{
    validate_queue_name, Error, EventStream, Job, JobOptions, JobState, NewJob, QueueBackend,
    QueueCounts, Result, Schedule, SchedulerInfo,
};
use serde::Serialize;
use serde_json::Value;

use crate::backend::Backend;

/// Largest page [`Queue::list`] returns.
pub const MAX_PAGE: usize = 1000;

/// One queue: a cheap-clone handle (name, backend, default job options).
#[derive(Clone)]
pub struct Queue {
    name: Arc<str>,
    backend: Backend,
    defaults: Arc<JobOptions>,
}

impl Queue {
    /// A handle to queue `name` (nothing is created until a job is added). Fails with
    /// `invalid-input` (field `queue`) for an empty name or one containing `:`.
    pub fn new(backend: &Backend, name: &str) -> Result<Queue> {
        validate_queue_name(name)?;
        Ok(Queue {
            name: name.into(),
            backend: backend.clone(),
            defaults: Arc::new(JobOptions::default()),
        })
    }

    /// The same queue with `defaults` applied to every job whose options leave a field unset.
    pub fn with_defaults(mut self, defaults: JobOptions) -> Result<Queue> {
        defaults.validate()?;
        self.defaults = Arc::new(defaults);
        Ok(self)
    }

    /// The queue name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The backend the queue lives on.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The default job options.
    pub fn defaults(&self) -> &JobOptions {
        &self.defaults
    }

    fn raw(&self) -> &Arc<dyn QueueBackend> {
        self.backend.raw()
    }

    /// Refuses producing into a dead-letter queue: only Keel writes entries there.
    fn check_producible(&self) -> Result<()> {
        if self.name.starts_with(keel_core::DLQ_PREFIX) {
            return Err(Error::invalid(
                "queue",
                format!(
                    "{} is a dead-letter queue: Keel writes its entries (replay or remove them instead)",
                    self.name
                ),
            ));
        }
        Ok(())
    }

    fn prepare(&self, job: NewJob) -> Result<NewJob> {
        self.check_producible()?;
        self.prepare_unchecked(job)
    }

    fn prepare_unchecked(&self, job: NewJob) -> Result<NewJob> {
        if job.name.is_empty() {
            return Err(Error::invalid("name", "job name must not be empty"));
        }
        let opts = job.opts.merged_over(&self.defaults);
        opts.validate()?;
        Ok(NewJob { opts, ..job })
    }

    /// Adds a job. With a custom `job_id` that exists (or a held deduplication id) returns the
    /// existing job unchanged.
    pub async fn add(&self, name: &str, data: impl Serialize, opts: JobOptions) -> Result<Job> {
        let data = serde_json::to_value(data).map_err(|e| Error::invalid("data", e.to_string()))?;
        self.add_job(NewJob {
            name: name.to_string(),
            data,
            opts,
        })
        .await
    }

    /// Adds a prepared [`NewJob`].
    pub async fn add_job(&self, job: NewJob) -> Result<Job> {
        let job = self.prepare(job)?;
        self.raw().add(&self.name, job).await
    }

    /// Every job prepared, or the first bad one's error naming it (`jobs[3].opts.attempts`).
    fn prepare_all(&self, jobs: Vec<NewJob>) -> Result<Vec<NewJob>> {
        self.check_producible()?;
        jobs.into_iter()
            .enumerate()
            .map(|(i, j)| {
                self.prepare_unchecked(j).map_err(|e| match e {
                    Error::InvalidInput { field, message } => Error::InvalidInput {
                        field: format!("jobs[{i}].{field}"),
                        message,
                    },
                    other => other,
                })
            })
            .collect()
    }

    /// Adds a dead letter to this (`dlq-*`) queue: the one way in that [`Queue::add`] refuses.
    pub(crate) async fn add_dead_letter(&self, job: NewJob) -> Result<Job> {
        let job = self.prepare_unchecked(job)?;
        self.raw().add(&self.name, job).await
    }

    /// Adds several jobs. Every job is validated before any is added, so bad input adds nothing.
    /// Not atomic on Redis: if the backend fails midway, some jobs may have been added.
    pub async fn add_bulk(&self, jobs: Vec<NewJob>) -> Result<Vec<Job>> {
        let jobs = self.prepare_all(jobs)?;
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        self.raw().add_bulk(&self.name, jobs).await
    }

    /// Adds several jobs one by one, all validated before any is added (bad input adds
    /// nothing). Each add then succeeds or fails on its own and the outcomes come back in
    /// order, so that a caller whose backend failed midway knows exactly which jobs exist.
    pub async fn add_each(&self, jobs: Vec<NewJob>) -> Result<Vec<Result<Job>>> {
        let jobs = self.prepare_all(jobs)?;
        // Issued in order on the shared connection; awaited together.
        let adds = jobs.into_iter().map(|j| self.raw().add(&self.name, j));
        Ok(futures::future::join_all(adds).await)
    }

    /// One job, or `None`.
    pub async fn get_job(&self, id: &str) -> Result<Option<Job>> {
        self.raw().get_job(&self.name, id).await
    }

    /// A job's state, or `None` when it does not exist.
    pub async fn job_state(&self, id: &str) -> Result<Option<JobState>> {
        self.raw().job_state(&self.name, id).await
    }

    /// A page of jobs in `state`, newest first: page 1 is the first `limit` jobs.
    /// `limit` must be 1..=[`MAX_PAGE`] and `page` at least 1.
    pub async fn list(&self, state: JobState, page: usize, limit: usize) -> Result<Vec<Job>> {
        if page == 0 {
            return Err(Error::invalid("page", "pages start at 1"));
        }
        if limit == 0 || limit > MAX_PAGE {
            return Err(Error::invalid(
                "limit",
                format!("{limit} is not between 1 and {MAX_PAGE}"),
            ));
        }
        self.raw()
            .list(&self.name, state, (page - 1) * limit, limit, false)
            .await
    }

    /// Jobs in `state` from `offset`, oldest first (`asc`) or newest first.
    pub async fn list_range(
        &self,
        state: JobState,
        offset: usize,
        limit: usize,
        asc: bool,
    ) -> Result<Vec<Job>> {
        self.raw()
            .list(&self.name, state, offset, limit.min(MAX_PAGE), asc)
            .await
    }

    /// Counts by state.
    pub async fn counts(&self) -> Result<QueueCounts> {
        self.raw().counts(&self.name).await
    }

    /// A job's log lines (oldest first) and their total count.
    pub async fn job_logs(
        &self,
        id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<String>, u64)> {
        self.raw().job_logs(&self.name, id, offset, limit).await
    }

    /// Pauses the queue everywhere: no worker takes jobs until [`Queue::resume`].
    pub async fn pause(&self) -> Result<()> {
        self.raw().pause(&self.name).await
    }

    /// Resumes the queue.
    pub async fn resume(&self) -> Result<()> {
        self.raw().resume(&self.name).await
    }

    /// Moves a failed job back to waiting with fresh attempts.
    pub async fn retry(&self, id: &str) -> Result<()> {
        self.raw().retry_job(&self.name, id).await
    }

    /// Removes a job that is not active; `Ok(false)` when there was none.
    pub async fn remove(&self, id: &str) -> Result<bool> {
        self.raw().remove(&self.name, id).await
    }

    /// Removes up to `limit` jobs in `state` older than `grace`; returns their ids.
    pub async fn clean(
        &self,
        grace: Duration,
        limit: usize,
        state: JobState,
    ) -> Result<Vec<String>> {
        self.raw().clean(&self.name, grace, limit, state).await
    }

    /// Removes every waiting and prioritized job (and delayed ones when `delayed`).
    pub async fn drain(&self, delayed: bool) -> Result<()> {
        self.raw().drain(&self.name, delayed).await
    }

    /// Deletes the queue and every job in it; refuses while jobs are active unless `force`.
    pub async fn obliterate(&self, force: bool) -> Result<()> {
        self.raw().obliterate(&self.name, force).await
    }

    /// Creates or replaces a repeatable job: `name`/`data`/`opts` added on `schedule`.
    pub async fn upsert_scheduler(
        &self,
        id: &str,
        schedule: Schedule,
        name: &str,
        data: Value,
        opts: JobOptions,
    ) -> Result<SchedulerInfo> {
        keel_core::validate_job_id(id).map_err(|e| match e {
            Error::InvalidInput { message, .. } => Error::invalid("scheduler_id", message),
            other => other,
        })?;
        schedule.validate()?;
        let template = self.prepare(NewJob {
            name: name.to_string(),
            data,
            opts,
        })?;
        self.raw()
            .upsert_scheduler(&self.name, id, schedule, template)
            .await
    }

    /// The queue's repeatable jobs.
    pub async fn schedulers(&self) -> Result<Vec<SchedulerInfo>> {
        self.raw().list_schedulers(&self.name).await
    }

    /// Removes a repeatable job; `Ok(false)` when there was none.
    pub async fn remove_scheduler(&self, id: &str) -> Result<bool> {
        self.raw().remove_scheduler(&self.name, id).await
    }

    /// Limits the queue to `max` job starts per `duration` across all workers (`None` lifts it).
    pub async fn set_rate_limit(&self, limit: Option<(u64, Duration)>) -> Result<()> {
        if let Some((max, duration)) = limit {
            if max == 0 {
                return Err(Error::invalid("rate_limit.max", "must be at least 1"));
            }
            if duration.is_zero() {
                return Err(Error::invalid("rate_limit.duration", "must be positive"));
            }
        }
        self.raw().set_rate_limit(&self.name, limit).await
    }

    /// Limits the queue to `limit` active jobs at once across all workers (`None` lifts it).
    pub async fn set_global_concurrency(&self, limit: Option<u32>) -> Result<()> {
        if limit == Some(0) {
            return Err(Error::invalid("global_concurrency", "must be at least 1"));
        }
        self.raw().set_global_concurrency(&self.name, limit).await
    }

    /// Live events of this queue from now on.
    pub async fn events(&self) -> Result<EventStream> {
        self.raw().events(&self.name).await
    }
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("name", &self.name).finish()
    }
}
