//! The reconciler: repairs instances that a crash left without a way forward. Every pass walks
//! the pending and running instances that have been quiet for a while (a cursor over their
//! ids, so every one is looked at however many there are) and, for each:
//! - a queued or running step whose job no longer exists was never enqueued (a crash between
//!   the commit that made it ready and the add) or its job was removed: it is added again under
//!   the same id — safe, because a step's end is recorded before its job is acknowledged, so a
//!   step that ran to its end is never still queued or running;
//! - a step whose job completed or failed without the record (the records were unreachable
//!   when it ended) gets the job's outcome;
//! - a pending step whose needs are all satisfied gets its job (the same crash window).

use std::time::Duration;

use async_trait::async_trait;
use keel::service::Service;
use keel::JobState;
use keel_records::workflow::{StepEvent, StepStatus, StepUpdate};
use keel_records::Scope;
use std::sync::Mutex;

use crate::engine::Engine;

/// Default time between passes.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
/// Default quiet time before an instance is looked at.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// Instances looked at per pass.
pub const DEFAULT_PAGE: i64 = 500;

/// The reconciler's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcilerConfig {
    /// Time between passes.
    pub interval: Duration,
    /// How long an instance must have been quiet.
    pub grace: Duration,
    /// Instances per pass.
    pub page: i64,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        ReconcilerConfig {
            interval: DEFAULT_INTERVAL,
            grace: DEFAULT_GRACE,
            page: DEFAULT_PAGE,
        }
    }
}

impl ReconcilerConfig {
    /// Checks the settings; errors name the field.
    pub fn validate(&self) -> keel::Result<()> {
        if self.interval.is_zero() {
            return Err(keel::Error::invalid(
                "workflows.reconcile_interval",
                "must be positive",
            ));
        }
        if self.page < 1 {
            return Err(keel::Error::invalid(
                "workflows.reconcile_page",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Instances looked at.
    pub looked_at: usize,
    /// Step jobs added again (missing, or ready without a job).
    pub enqueued: usize,
    /// Step outcomes taken from their jobs.
    pub recorded: usize,
}

/// Repairs stuck instances; run it with [`keel::service::run`].
pub struct Reconciler {
    engine: Engine,
    config: ReconcilerConfig,
    cursor: Mutex<String>,
}

impl Reconciler {
    /// A reconciler for `engine`.
    pub fn new(engine: Engine, config: ReconcilerConfig) -> Reconciler {
        Reconciler {
            engine,
            config,
            cursor: Mutex::new(String::new()),
        }
    }

    async fn repair(&self, id: &str, report: &mut ReconcileReport) -> crate::Result<()> {
        let store = self.engine.store();
        let Some(st) = store.workflow_state(&Scope::All, id).await? else {
            return Ok(());
        };
        if st.instance.status.is_final() {
            return Ok(());
        }
        let mut writes = Vec::new();
        let mut missing = Vec::new();
        for s in &st.steps {
            let (StepStatus::Queued | StepStatus::Running, Some(job_id)) = (s.status, &s.job_id)
            else {
                continue;
            };
            let queue = self.engine.queue_named(&s.queue)?;
            match queue.job_state(job_id).await? {
                None => missing.push(s.step.clone()),
                Some(JobState::Completed) => {
                    let job = queue.get_job(job_id).await?;
                    let (data, output) = job
                        .map(|j| (j.data, j.returnvalue.unwrap_or_default()))
                        .unwrap_or_default();
                    writes.push(
                        StepUpdate::now(id, &s.step, StepEvent::Completed { output })
                            .of_job(job_id, &data)
                            .write(),
                    );
                }
                Some(JobState::Failed) => {
                    let job = queue.get_job(job_id).await?;
                    let data = job.as_ref().map(|j| j.data.clone()).unwrap_or_default();
                    let event = StepEvent::Failed {
                        attempt: job.as_ref().map(|j| j.attempts_made as i64).unwrap_or(1),
                        error: job
                            .and_then(|j| j.failed_reason)
                            .unwrap_or_else(|| "failed".into()),
                        stack: None,
                        terminal: true,
                    };
                    writes.push(
                        StepUpdate::now(id, &s.step, event)
                            .of_job(job_id, &data)
                            .write(),
                    );
                }
                Some(_) => {}
            }
        }
        report.recorded += writes.len();
        let mut settled = store.write_workflows(&writes).await?;
        let mut now = match settled.pop() {
            Some(s) => s,
            None => {
                // Nothing to record: settle a copy to see what is ready.
                let mut copy = st.clone();
                let (ready, _) = copy.settle(keel::now_ms() as i64);
                keel_records::workflow::Settled {
                    state: copy,
                    ready,
                    instance_changed: false,
                    steps_changed: Vec::new(),
                }
            }
        };
        if !missing.is_empty() {
            // Read again after looking at the jobs: a step whose job was found missing and
            // is still not ended was never enqueued.
            if let Some(fresh) = store.workflow_state(&Scope::All, id).await? {
                for name in missing {
                    let still = fresh
                        .step(&name)
                        .map(|s| matches!(s.status, StepStatus::Queued | StepStatus::Running))
                        .unwrap_or(false);
                    if still && !fresh.instance.status.is_final() {
                        now.ready.push(name);
                    }
                }
            }
        }
        report.enqueued += now.ready.len();
        self.engine.enqueue(&now).await
    }
}

#[async_trait]
impl Service for Reconciler {
    type Report = ReconcileReport;

    fn name(&self) -> String {
        "workflow reconciler".into()
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    async fn run_once(&self) -> keel::Result<ReconcileReport> {
        let mut report = ReconcileReport::default();
        let before = keel::now_ms() as i64 - self.config.grace.as_millis() as i64;
        let after = self
            .cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let ids = self
            .engine
            .store()
            .quiet_instances(before, &after, self.config.page)
            .await
            .map_err(|e| keel::Error::Backend(e.to_string()))?;
        *self.cursor.lock().unwrap_or_else(|p| p.into_inner()) =
            if (ids.len() as i64) < self.config.page {
                String::new()
            } else {
                ids.last().cloned().unwrap_or_default()
            };
        for id in &ids {
            report.looked_at += 1;
            if let Err(e) = self.repair(id, &mut report).await {
                tracing::warn!(instance = id, error = %e, "could not repair a workflow instance");
            }
        }
        Ok(report)
    }
}
