//! Running a step: the processor wrapper, the attempt's timeout and reports, and the commit
//! of its end before its job is acknowledged.

use std::sync::Arc;
use std::time::Duration;

use keel::{JobContext, JobError, Processor};
use keel_records::workflow::{
    parse_step_job_id, Settled, StepEvent, StepStatus, StepUpdate, WorkflowWrite,
};
use keel_records::{Scope, StoreError};
use serde_json::{json, Value};

use super::Engine;
use crate::WorkflowError;

/// Tries of a step's final write before the attempt is failed for a retry.
const WRITE_TRIES: u32 = 3;
/// How long a step runs before it is reported running (a quicker one is recorded once, when it
/// ends: one write a step instead of two).
pub const STARTED_AFTER: Duration = Duration::from_millis(250);

/// The attempt a step's end belongs to.
struct Attempt<'a> {
    job_id: &'a str,
    input: &'a Value,
    started_at: i64,
    attempt: i64,
}

impl Engine {
    /// Wraps `inner`, the processor of `queue`: step jobs are recorded and move their instance
    /// forward; other jobs start the workflows their completion triggers.
    pub fn wrap(&self, queue: &str, inner: Processor) -> Processor {
        let engine = self.clone();
        let queue = queue.to_string();
        Arc::new(move |ctx: JobContext| {
            let engine = engine.clone();
            let inner = inner.clone();
            let queue = queue.clone();
            Box::pin(async move {
                match parse_step_job_id(&ctx.job.id) {
                    Some((instance, step)) => {
                        let (instance, step) = (instance.to_string(), step.to_string());
                        engine.run_step(ctx, inner, &instance, &step).await
                    }
                    None => {
                        let job = ctx.job.clone();
                        let out = inner(ctx).await?;
                        engine.triggered_by(&queue, &job, &out).await?;
                        Ok(out)
                    }
                }
            })
        })
    }

    async fn run_step(
        &self,
        ctx: JobContext,
        inner: Processor,
        instance: &str,
        step: &str,
    ) -> std::result::Result<Value, JobError> {
        let job = ctx.job.clone();
        let attempt = job.attempts_made as i64 + 1;
        let cached = self
            .inner
            .instances
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(instance)
            .cloned();
        // A retry, a recovered stall, or another process's instance: read the stored state,
        // which also memoizes — a step whose output is stored is not run again.
        let stored = if cached.is_none() || job.attempts_made > 0 || ctx.recovered_stalls > 0 {
            let st = self
                .inner
                .store
                .workflow_state(&Scope::All, instance)
                .await
                .map_err(|e| records_down(&e))?;
            let Some(st) = st else {
                return Err(JobError::unrecoverable(format!(
                    "workflow instance {instance} does not exist"
                )));
            };
            self.remember(instance, &st.instance.workflow, st.instance.version);
            Some(st)
        } else {
            None
        };
        let (workflow, version) = match (&stored, cached) {
            (Some(st), _) => (st.instance.workflow.clone(), st.instance.version),
            (None, Some(c)) => c,
            (None, None) => unreachable!("read above"),
        };
        if let Some(st) = &stored {
            if st.instance.status.is_final() {
                return Ok(json!({"skipped": format!("instance {}", st.instance.status.as_str())}));
            }
            if let Some(s) = st.step(step) {
                if s.status == StepStatus::Completed {
                    let output = s.output.clone().unwrap_or(Value::Null);
                    let at = Attempt {
                        job_id: &job.id,
                        input: &job.data,
                        started_at: keel::now_ms() as i64,
                        attempt,
                    };
                    // The run that recorded this output may have died before adding the jobs
                    // of the steps it queued: `finish` hands them out again.
                    let settled = self
                        .finish(
                            &at,
                            instance,
                            step,
                            StepEvent::Completed {
                                output: output.clone(),
                            },
                        )
                        .await?;
                    self.enqueue(&settled).await.map_err(|e| queue_down(&e))?;
                    return Ok(output);
                }
                if s.status == StepStatus::Failed {
                    // Recorded as failed before the job could fail (a crash in between).
                    return Err(JobError::unrecoverable(
                        s.error.clone().unwrap_or_else(|| "step failed".into()),
                    ));
                }
            }
        }
        let c = self
            .definition_of(&workflow, version)
            .await
            .map_err(|e| JobError::retry(e.to_string()))?;
        let timeout = c
            .step(step)
            .and_then(|s| s.timeout_ms)
            .map(Duration::from_millis);
        // A step that ends within STARTED_AFTER is recorded in one write (its end, with the
        // attempt's start); a longer one is reported running once that time has passed, so
        // live views show it.
        let started = StepUpdate::now(instance, step, StepEvent::Started { attempt })
            .of_job(&job.id, &job.data);
        let started_at = started.at;
        let run = async {
            match timeout {
                Some(t) => tokio::time::timeout(t, inner(ctx))
                    .await
                    .unwrap_or_else(|_| {
                        Err(JobError::retry(format!(
                            "step timed out after {} ms",
                            t.as_millis()
                        )))
                    }),
                None => inner(ctx).await,
            }
        };
        tokio::pin!(run);
        let result = tokio::select! {
            r = &mut run => r,
            _ = tokio::time::sleep(STARTED_AFTER) => {
                self.inner.writer.report(WorkflowWrite::Step(started));
                run.await
            }
        };
        let at = Attempt {
            job_id: &job.id,
            input: &job.data,
            started_at,
            attempt,
        };
        match result {
            Ok(output) => {
                let settled = self
                    .finish(
                        &at,
                        instance,
                        step,
                        StepEvent::Completed {
                            output: output.clone(),
                        },
                    )
                    .await?;
                self.enqueue(&settled).await.map_err(|e| queue_down(&e))?;
                Ok(output)
            }
            // Postponed by a rate limit: not an attempt, nothing to record.
            Err(e) if e.delayed_for().is_some() => Err(e),
            Err(e) => {
                let terminal = e.is_final_for(&job);
                let event = StepEvent::Failed {
                    attempt,
                    error: e.message().to_string(),
                    stack: e.stack().map(str::to_string),
                    terminal,
                };
                if terminal {
                    // Recorded before the job fails, so the instance's outcome is never behind
                    // the job's; a `continue` failure lets the next steps run.
                    let settled = self.finish(&at, instance, step, event).await?;
                    self.enqueue(&settled).await.map_err(|e| queue_down(&e))?;
                } else {
                    self.inner.writer.report(
                        StepUpdate::now(instance, step, event)
                            .of_job(&job.id, &job.data)
                            .of_attempt(started_at, attempt)
                            .write(),
                    );
                }
                Err(e)
            }
        }
    }

    /// Records a step's end, waiting for the commit (a few tries: the job is acknowledged
    /// only once it is recorded). When the end was already recorded — by a run that died
    /// after its commit, or by an earlier try whose commit succeeded but was reported failed —
    /// the steps it queued then are handed out again as ready: nothing else would add their
    /// jobs until the reconciler's pass (adding a job that exists keeps it).
    async fn finish(
        &self,
        at: &Attempt<'_>,
        instance: &str,
        step: &str,
        event: StepEvent,
    ) -> std::result::Result<Settled, JobError> {
        let mut last = None;
        for i in 0..WRITE_TRIES {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(500 << i)).await;
            }
            match self
                .inner
                .writer
                .write(
                    StepUpdate::now(instance, step, event.clone())
                        .of_job(at.job_id, at.input)
                        .of_attempt(at.started_at, at.attempt)
                        .write(),
                )
                .await
            {
                Ok(mut s) => {
                    if !s.steps_changed.iter().any(|c| c == step) {
                        hand_out_queued_after(&mut s, step);
                    }
                    return Ok(s);
                }
                Err(StoreError::NotFound(_)) => {
                    return Err(JobError::unrecoverable(format!(
                        "workflow instance {instance} does not exist"
                    )))
                }
                Err(e) => last = Some(e),
            }
        }
        Err(records_down(&last.expect("a failed try")))
    }
}

/// Adds to `s.ready` the steps queued after `step` (needing it) that are not there yet.
fn hand_out_queued_after(s: &mut Settled, step: &str) {
    let again: Vec<String> = s
        .state
        .steps
        .iter()
        .filter(|n| n.status == StepStatus::Queued && n.needs.iter().any(|x| x == step))
        .map(|n| n.step.clone())
        .filter(|n| !s.ready.contains(n))
        .collect();
    s.ready.extend(again);
}

fn records_down(e: &StoreError) -> JobError {
    // The attempt is not lost: it runs again once the records can be written.
    JobError::retry(format!("workflow records unavailable: {e}"))
        .with_retry_after(Duration::from_secs(5))
}

fn queue_down(e: &WorkflowError) -> JobError {
    JobError::retry(format!("enqueuing the next steps failed: {e}"))
}
