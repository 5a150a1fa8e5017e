//! Dead-letter queues. After its last attempt a job is recorded in `dlq-<queue>` (BullMQ forbids
//! `:` in queue names, so the seeds' `dlq:<queue>` becomes `dlq-<queue>`), under an id derived
//! from the original job's (`failed-<id>`), so recording twice is harmless.
//!
//! Invariant, kept by every operation here: *every job in a queue's `failed` state has an
//! entry in its DLQ*, until the job leaves `failed` or ages out. Recording happens right after the
//! failure; the [reconciler](DeadLetterQueue::reconcile_once) repairs a crash in between.
//! Because of this invariant, removing an entry also removes the original failed job (or the
//! reconciler would bring the entry back), and replaying removes the entry before retrying the
//! job (so a crash in between leaves a failed job without entry, which the reconciler heals,
//! rather than a retried job with a stale entry).

use std::time::Duration;

use keel_core::{dlq_name, now_ms, Error, Job, JobOptions, JobState, NewJob, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::queue::Queue;

/// Most failed jobs one reconciler pass reads per round trip.
const RECONCILE_BATCH: usize = 500;
/// How often a dead-lettering worker runs the reconciler.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(30);
/// How old a failure must be before the background reconciler records it (the worker that saw
/// it records it first, with the handler's stack; the next pass catches what it missed).
pub const RECONCILE_GRACE: Duration = Duration::from_secs(10);
/// How far back the reconciler looks for failed jobs without a DLQ entry.
pub const RECONCILE_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The reconciler's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcilerConfig {
    /// Between passes (default [`RECONCILE_INTERVAL`]).
    pub interval: Duration,
    /// How far back a pass looks (default [`RECONCILE_WINDOW`]).
    pub window: Duration,
    /// How old a failure must be to be recorded (default [`RECONCILE_GRACE`]).
    pub grace: Duration,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        ReconcilerConfig {
            interval: RECONCILE_INTERVAL,
            window: RECONCILE_WINDOW,
            grace: RECONCILE_GRACE,
        }
    }
}

impl ReconcilerConfig {
    /// Checks the settings; errors name the field.
    pub fn validate(&self) -> Result<()> {
        if self.interval.is_zero() {
            return Err(Error::invalid("reconciler.interval", "must be above zero"));
        }
        if self.grace >= self.window {
            return Err(Error::invalid(
                "reconciler.grace",
                "must be shorter than the window",
            ));
        }
        Ok(())
    }
}

/// The DLQ reconciler as a background service ([`crate::service`]): each pass repairs one
/// queue's dead letters ([`DeadLetterQueue::reconcile_settled`]).
pub struct Reconciler {
    dlq: DeadLetterQueue,
    config: ReconcilerConfig,
}

impl Reconciler {
    /// The reconciler of `dlq`.
    pub fn new(dlq: DeadLetterQueue, config: ReconcilerConfig) -> Reconciler {
        Reconciler { dlq, config }
    }
}

#[async_trait::async_trait]
impl crate::service::Service for Reconciler {
    type Report = ReconcileReport;

    fn name(&self) -> String {
        format!("dlq-reconciler:{}", self.dlq.name())
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    async fn run_once(&self) -> Result<ReconcileReport> {
        let r = self
            .dlq
            .reconcile_settled(self.config.window, self.config.grace)
            .await?;
        if r.recorded > 0 {
            tracing::info!(
                dlq = self.dlq.name(),
                recorded = r.recorded,
                "reconciler recorded missing DLQ entries"
            );
        }
        Ok(r)
    }
}

/// One dead letter: the failed job and why it failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DlqEntry {
    /// The entry's id in the DLQ (`failed-<originalJobId>`).
    #[serde(default, skip_deserializing)]
    pub id: String,
    /// The failed job's id in its queue.
    pub original_job_id: String,
    /// The queue the job failed in.
    pub original_queue: String,
    /// The job name.
    pub name: String,
    /// The job payload.
    pub data: Value,
    /// The job's options.
    pub opts: JobOptions,
    /// The error of the last attempt.
    pub last_error: String,
    /// Stack traces of the failed attempts, when known.
    pub stacktrace: Vec<String>,
    /// When the job failed for good, ms since the epoch.
    pub failed_at: u64,
    /// Attempts made.
    pub attempts: u32,
}

/// What one reconciler pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    /// Failed jobs looked at.
    pub scanned: usize,
    /// Entries that were missing and have been recorded.
    pub recorded: usize,
    /// Entries replaced because their job failed again after a retry elsewhere (Bull Board,
    /// Node's `job.retry()`), so that attempts, error and time are the latest failure's.
    pub refreshed: usize,
    /// Entries removed because their job is no longer failed (retried elsewhere and waiting,
    /// running or completed): replaying them would run old work again.
    pub removed: usize,
}

/// A page of entries, and the ids of jobs in the DLQ that are not Keel dead letters (added
/// there by hand or by another tool): listed so an operator can remove them, never an error.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DlqPage {
    /// The readable entries, newest first.
    pub entries: Vec<DlqEntry>,
    /// Ids on this page that could not be read as dead letters.
    pub unreadable: Vec<String>,
}

/// The DLQ id of a failed job.
pub fn entry_id(original_job_id: &str) -> String {
    format!("failed-{original_job_id}")
}

/// The dead-letter queue of one queue.
#[derive(Clone, Debug)]
pub struct DeadLetterQueue {
    original: Queue,
    dlq: Queue,
}

impl Queue {
    /// This queue's dead-letter queue, `dlq-<name>`.
    pub fn dlq(&self) -> DeadLetterQueue {
        let dlq = Queue::new(self.backend(), &dlq_name(self.name()))
            .expect("a valid queue name prefixed with dlq- is valid");
        DeadLetterQueue {
            original: self.clone(),
            dlq,
        }
    }
}

impl DeadLetterQueue {
    /// The DLQ's name, `dlq-<queue>`.
    pub fn name(&self) -> &str {
        self.dlq.name()
    }

    /// The queue whose failures this DLQ holds.
    pub fn original_queue(&self) -> &Queue {
        &self.original
    }

    /// The DLQ as a queue (its entries are waiting jobs that no worker takes).
    pub fn queue(&self) -> &Queue {
        &self.dlq
    }

    /// The entry a DLQ job holds, or a conflict naming the job when it holds none.
    fn entry_from(job: Job) -> Result<DlqEntry> {
        let mut entry: DlqEntry = serde_json::from_value(job.data).map_err(|e| {
            Error::Conflict(format!(
                "{} in the DLQ is not a Keel dead letter ({e}); remove it",
                job.id
            ))
        })?;
        entry.id = job.id;
        Ok(entry)
    }

    /// Entries, newest first; page 1 is the first `limit`. Jobs that are not dead letters are
    /// skipped (see [`DeadLetterQueue::page`] for their ids).
    pub async fn entries(&self, page: usize, limit: usize) -> Result<Vec<DlqEntry>> {
        Ok(self.page(page, limit).await?.entries)
    }

    /// A page of entries with the ids of the unreadable ones.
    pub async fn page(&self, page: usize, limit: usize) -> Result<DlqPage> {
        let mut out = DlqPage::default();
        for job in self.dlq.list(JobState::Waiting, page, limit).await? {
            let id = job.id.clone();
            match Self::entry_from(job) {
                Ok(entry) => out.entries.push(entry),
                Err(e) => {
                    tracing::warn!(dlq = self.name(), id, error = %e, "unreadable DLQ entry");
                    out.unreadable.push(id);
                }
            }
        }
        Ok(out)
    }

    /// One entry, or `None`. A job there that is not a dead letter is a conflict.
    pub async fn get(&self, id: &str) -> Result<Option<DlqEntry>> {
        match self.dlq.get_job(id).await? {
            Some(job) => Self::entry_from(job).map(Some),
            None => Ok(None),
        }
    }

    /// How many entries the DLQ holds.
    pub async fn count(&self) -> Result<u64> {
        Ok(self.dlq.counts().await?.waiting)
    }

    /// Records a terminally failed job. Idempotent: the entry id is derived from the job id, and
    /// adding an existing id returns the existing entry.
    pub async fn record(
        &self,
        job: &Job,
        last_error: &str,
        stacktrace: Vec<String>,
    ) -> Result<DlqEntry> {
        let entry = DlqEntry {
            id: entry_id(&job.id),
            original_job_id: job.id.clone(),
            original_queue: self.original.name().to_string(),
            name: job.name.clone(),
            data: job.data.clone(),
            opts: job.opts.clone(),
            last_error: last_error.to_string(),
            stacktrace,
            failed_at: job.finished_on.unwrap_or_else(now_ms),
            attempts: job.attempts_made,
        };
        let data = serde_json::to_value(&entry)
            .map_err(|e| Error::Backend(format!("encoding a DLQ entry: {e}")))?;
        let stored = self
            .dlq
            .add_dead_letter(NewJob {
                name: job.name.clone(),
                data,
                opts: JobOptions {
                    job_id: Some(entry.id.clone()),
                    ..Default::default()
                },
            })
            .await?;
        Self::entry_from(stored)
    }

    /// Sends an entry back to its queue with fresh attempts and removes it from the DLQ. When
    /// the original job is still failed it is retried in place (same id); otherwise a new job is
    /// added with the entry's name, data and options.
    pub async fn replay(&self, id: &str) -> Result<Job> {
        let entry = self
            .get(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("DLQ entry {id} in {}", self.name())))?;
        // Entry first, then the job: see the module docs for why this order heals itself.
        self.dlq.remove(id).await?;
        let original = &entry.original_job_id;
        match self.original.job_state(original).await? {
            Some(JobState::Failed) => {
                self.original.retry(original).await?;
                self.original
                    .get_job(original)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("job {original}")))
            }
            state => {
                let mut opts = entry.opts.clone();
                if state.is_some() {
                    // The id is taken by a job that moved on: replay under a fresh id.
                    opts.job_id = None;
                }
                opts.deduplication = None;
                opts.delay_ms = None;
                self.original
                    .add_job(NewJob {
                        name: entry.name,
                        data: entry.data,
                        opts,
                    })
                    .await
            }
        }
    }

    /// Ids of every entry, oldest first.
    async fn all_ids(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let mut offset = 0;
        loop {
            let page = self
                .dlq
                .list_range(JobState::Waiting, offset, 500, true)
                .await?;
            if page.is_empty() {
                break;
            }
            offset += page.len();
            ids.extend(page.into_iter().map(|j| j.id));
        }
        Ok(ids)
    }

    /// Replays every entry; returns how many were replayed.
    pub async fn replay_all(&self) -> Result<usize> {
        let ids = self.all_ids().await?;
        let mut done = 0;
        for id in ids {
            match self.replay(&id).await {
                Ok(_) => done += 1,
                // Replayed concurrently by someone else, or not a dead letter: nothing to do.
                Err(Error::NotFound { .. }) | Err(Error::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// How many entries [`DeadLetterQueue::replay_all`] would replay now.
    pub async fn replay_all_dry_run(&self) -> Result<usize> {
        Ok(self.count().await? as usize)
    }

    /// Removes an entry, and the original job if it is still failed (otherwise the reconciler
    /// would record it again). `Ok(false)` when there was no such entry.
    pub async fn remove(&self, id: &str) -> Result<bool> {
        let entry = match self.get(id).await {
            Ok(Some(entry)) => entry,
            Ok(None) => return Ok(false),
            // Not a dead letter: it has no original to look after.
            Err(Error::Conflict(_)) => return self.dlq.remove(id).await,
            Err(e) => return Err(e),
        };
        if self.original.job_state(&entry.original_job_id).await? == Some(JobState::Failed) {
            self.original.remove(&entry.original_job_id).await?;
        }
        self.dlq.remove(id).await
    }

    /// Makes the DLQ match the queue's failed jobs: every job that failed within `window` has
    /// its entry, describing its latest failure; no entry outlives its job's failure. An entry
    /// whose job is gone (aged out or removed) stays: the DLQ is where the record survives.
    pub async fn reconcile_once(&self, window: Duration) -> Result<ReconcileReport> {
        self.reconcile_settled(window, Duration::ZERO).await
    }

    /// [`DeadLetterQueue::reconcile_once`] for failures older than `grace` only: a worker
    /// records a fresh failure itself (with its handler's stack) within milliseconds, and a
    /// reconciler racing it would write the entry first, without that stack. The workers'
    /// background pass uses [`crate::worker::RECONCILE_GRACE`].
    pub async fn reconcile_settled(
        &self,
        window: Duration,
        grace: Duration,
    ) -> Result<ReconcileReport> {
        let mut report = self.record_missing(window, grace).await?;
        report.removed = self.remove_stale().await?;
        Ok(report)
    }

    /// Removes entries whose original job exists and is no longer failed.
    async fn remove_stale(&self) -> Result<usize> {
        let mut removed = 0;
        for id in self.all_ids().await? {
            let entry = match self.get(&id).await {
                Ok(Some(entry)) => entry,
                // Gone meanwhile, or not a dead letter (listed as unreadable instead).
                Ok(None) | Err(Error::Conflict(_)) => continue,
                Err(e) => return Err(e),
            };
            let state = self.original.job_state(&entry.original_job_id).await?;
            if matches!(state, Some(s) if s != JobState::Failed) {
                // Check again right before removing: a replay may be between its two steps.
                if self.dlq.remove(&id).await? {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    async fn record_missing(&self, window: Duration, grace: Duration) -> Result<ReconcileReport> {
        let until = now_ms().saturating_sub(grace.as_millis() as u64);
        let mut from = until.saturating_sub(window.as_millis() as u64);
        let mut report = ReconcileReport::default();
        loop {
            let batch = self
                .original
                .backend()
                .raw()
                .failed_between(self.original.name(), from, until, RECONCILE_BATCH)
                .await?;
            let full = batch.len() == RECONCILE_BATCH;
            for job in &batch {
                report.scanned += 1;
                let id = entry_id(&job.id);
                let reason = job.failed_reason.clone().unwrap_or_default();
                match self.get(&id).await {
                    Ok(None) => {
                        self.record(job, &reason, job.stacktrace.clone()).await?;
                        report.recorded += 1;
                    }
                    Ok(Some(entry)) if is_older_failure(&entry, job) => {
                        // Failed again after a retry elsewhere: the entry describes the first
                        // failure. Replace it, keeping the handler's stack if the job has none.
                        let stack = if job.stacktrace.is_empty() {
                            entry.stacktrace
                        } else {
                            job.stacktrace.clone()
                        };
                        self.dlq.remove(&id).await?;
                        self.record(job, &reason, stack).await?;
                        report.refreshed += 1;
                    }
                    Ok(Some(_)) | Err(Error::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            match batch.last().and_then(|j| j.finished_on) {
                // Several jobs may share the last millisecond: the next batch starts just after
                // it unless the whole batch was that one millisecond.
                Some(last) if full => from = if last > from { last } else { last + 1 },
                _ => break,
            }
        }
        Ok(report)
    }
}

/// Whether `entry` was written for an earlier failure than the one `job` shows now.
fn is_older_failure(entry: &DlqEntry, job: &Job) -> bool {
    job.finished_on.is_some_and(|f| f > entry.failed_at) || job.attempts_made != entry.attempts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_are_derived_and_valid_job_ids() {
        assert_eq!(entry_id("42"), "failed-42");
        keel_core::validate_job_id(&entry_id("42")).unwrap();
    }

    #[test]
    fn entry_json_has_the_documented_fields() {
        let e = DlqEntry {
            id: "failed-1".into(),
            original_job_id: "1".into(),
            original_queue: "emails".into(),
            name: "send".into(),
            data: serde_json::json!({"to": "a"}),
            opts: JobOptions::default(),
            last_error: "boom".into(),
            stacktrace: vec![],
            failed_at: 5,
            attempts: 3,
        };
        let v = serde_json::to_value(&e).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "attempts",
                "data",
                "failedAt",
                "id",
                "lastError",
                "name",
                "opts",
                "originalJobId",
                "originalQueue",
                "stacktrace"
            ]
        );
    }
}
