//! Triggers: a job's completion in another queue, and scheduled starts on
//! [`super::TRIGGER_QUEUE`].

use std::sync::Arc;

use keel::{JobContext, JobError, Processor};
use keel_records::workflow::Trigger;
use keel_records::{Scope, StoreError};
use serde_json::{json, Value};

use super::{derived_id, Engine, Start, TRIGGER_JOB, TRIGGER_QUEUE};
use crate::{Result, WorkflowError};

impl Engine {
    /// Starts the workflows whose `on_complete` names `queue` (and this job's name).
    pub(super) async fn triggered_by(
        &self,
        queue: &str,
        job: &keel::Job,
        result: &Value,
    ) -> std::result::Result<(), JobError> {
        let workflows: Vec<String> = self
            .inner
            .on_complete
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(queue)
            .map(|l| {
                l.iter()
                    .filter(|(_, name)| name.as_deref().map(|n| n == job.name).unwrap_or(true))
                    .map(|(w, _)| w.clone())
                    .collect()
            })
            .unwrap_or_default();
        for w in workflows {
            let start = Start {
                workflow: w.clone(),
                input: json!({
                    "queue": queue, "job_id": job.id, "name": job.name,
                    "data": job.data, "result": result,
                }),
                trigger: Trigger {
                    kind: "job".into(),
                    reference: Some(format!("{queue}/{}", job.id)),
                },
                actor: format!("job:{queue}"),
                scope: Scope::All,
                id: Some(derived_id(&format!("job:{w}:{queue}:{}", job.id))),
            };
            // Before the job is acknowledged: a crash here re-runs the job, and the derived id
            // makes the second start find the first instance.
            self.start(start)
                .await
                .map_err(|e| JobError::retry(format!("starting workflow {w}: {e}")))?;
        }
        Ok(())
    }

    /// The processor of [`TRIGGER_QUEUE`]: a scheduler tick starts its workflow.
    pub fn trigger_processor(&self) -> Processor {
        let engine = self.clone();
        Arc::new(move |ctx: JobContext| {
            let engine = engine.clone();
            Box::pin(async move {
                let job = ctx.job;
                let workflow = job
                    .data
                    .get("workflow")
                    .and_then(Value::as_str)
                    .ok_or_else(|| JobError::unrecoverable("the start job names no workflow"))?
                    .to_string();
                let state = engine
                    .start(Start {
                        workflow: workflow.clone(),
                        input: job.data.get("input").cloned().unwrap_or(json!({})),
                        trigger: Trigger {
                            kind: "schedule".into(),
                            reference: Some(format!("workflow-{workflow}")),
                        },
                        actor: "schedule".into(),
                        scope: Scope::All,
                        id: Some(derived_id(&format!("schedule:{}", job.id))),
                    })
                    .await
                    .map_err(|e| match &e {
                        WorkflowError::Records(StoreError::NotFound(_)) => {
                            JobError::unrecoverable(e.to_string())
                        }
                        _ => JobError::retry(e.to_string()),
                    })?;
                Ok(json!({"instance": state.instance.id}))
            })
        })
    }

    /// Starts the worker of [`TRIGGER_QUEUE`] (scheduled starts).
    pub async fn start_trigger_worker(&self) -> Result<keel::Worker> {
        Ok(self
            .queue(TRIGGER_QUEUE)?
            .worker()
            .handler(TRIGGER_JOB, self.trigger_processor())
            .concurrency(2)
            .start()
            .await?)
    }
}
