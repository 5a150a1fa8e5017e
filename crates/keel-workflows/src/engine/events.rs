//! What the engine tells live views: step and instance changes of each committed write.

use keel_records::workflow::{InstanceStatus, Settled, StepStatus};
use serde::Serialize;

/// Something that happened to an instance or one of its steps, for live views.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkflowEvent {
    /// An instance's status changed.
    WorkflowInstance {
        /// Instance id.
        instance_id: String,
        /// Definition.
        workflow: String,
        /// New status.
        status: InstanceStatus,
        /// Why it failed.
        error: Option<String>,
        /// The instance's tenant (live views show a tenant only its own).
        tenant_id: Option<String>,
    },
    /// A step's status changed.
    WorkflowStep {
        /// Instance id.
        instance_id: String,
        /// Definition.
        workflow: String,
        /// Step.
        step: String,
        /// New status.
        status: StepStatus,
        /// Attempts so far.
        attempts: i64,
        /// Its job id.
        job_id: Option<String>,
        /// Its queue.
        queue: String,
        /// The latest error.
        error: Option<String>,
        /// Duration when it ended.
        duration_ms: Option<i64>,
        /// The instance's tenant (live views show a tenant only its own).
        tenant_id: Option<String>,
    },
}

impl WorkflowEvent {
    /// The events a write produced.
    pub fn of(s: &Settled) -> Vec<WorkflowEvent> {
        let inst = &s.state.instance;
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for name in &s.steps_changed {
            if seen.contains(&name) {
                continue;
            }
            seen.push(name);
            if let Some(st) = s.state.step(name) {
                out.push(WorkflowEvent::WorkflowStep {
                    instance_id: inst.id.clone(),
                    workflow: inst.workflow.clone(),
                    step: st.step.clone(),
                    status: st.status,
                    attempts: st.attempts,
                    job_id: st.job_id.clone(),
                    queue: st.queue.clone(),
                    error: st.error.clone(),
                    duration_ms: st.duration_ms,
                    tenant_id: inst.tenant_id.clone(),
                });
            }
        }
        if s.instance_changed {
            out.push(WorkflowEvent::WorkflowInstance {
                instance_id: inst.id.clone(),
                workflow: inst.workflow.clone(),
                status: inst.status,
                error: inst.error.clone(),
                tenant_id: inst.tenant_id.clone(),
            });
        }
        out
    }
}
