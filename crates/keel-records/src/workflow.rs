//! Workflow records: versioned definitions, instances and their step executions, and the one
//! rule that moves an instance forward ([`WorkflowState::settle`]).
//!
//! The rule lives beside the records, not in the engine, because the store applies it inside
//! the transaction that records a step's end: two steps of a fan-in finishing at once on two
//! workers are serialised by the instance row, so exactly the later one sees both done.
//!
//! A step is *ready* when it is pending and each step it needs is completed, or failed with
//! `on_failure = "continue"`. A step failing (no attempt left) with `on_failure = "fail"` fails
//! the instance: its pending and queued steps are cancelled (running ones finish, unrecorded in
//! the outcome). An instance whose steps have all ended is completed. The engine enqueues ready
//! steps under idempotent job ids, so enqueuing one twice (a repair after a crash) is harmless.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, StoreError};

mod rule;
#[cfg(test)]
pub(crate) use rule::tests::new as test_state;

pub use rule::{parse_step_job_id, step_job_id};

/// How an instance stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceStatus {
    /// Created; no step has started.
    Pending,
    /// A step has started and the instance has not ended.
    Running,
    /// Every step ended and none failed the instance.
    Completed,
    /// A step with `on_failure = "fail"` failed.
    Failed,
    /// Cancelled by a caller.
    Cancelled,
}

impl InstanceStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [InstanceStatus; 5] = [
        InstanceStatus::Pending,
        InstanceStatus::Running,
        InstanceStatus::Completed,
        InstanceStatus::Failed,
        InstanceStatus::Cancelled,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Pending => "pending",
            InstanceStatus::Running => "running",
            InstanceStatus::Completed => "completed",
            InstanceStatus::Failed => "failed",
            InstanceStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a stored or requested name; the error names `field`.
    pub fn parse(s: &str, field: &str) -> Result<InstanceStatus> {
        InstanceStatus::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                StoreError::invalid(
                    field,
                    format!(
                        "unknown status {s:?} (pending, running, completed, failed, cancelled)"
                    ),
                )
            })
    }

    /// Whether the instance has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            InstanceStatus::Completed | InstanceStatus::Failed | InstanceStatus::Cancelled
        )
    }
}

/// How one step of an instance stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Waits for the steps it needs.
    Pending,
    /// Its job is enqueued.
    Queued,
    /// An attempt is running (or retries are scheduled).
    Running,
    /// Its job completed; the output is stored.
    Completed,
    /// Its job failed with no attempt left.
    Failed,
    /// The instance ended (failed or cancelled) before the step ran.
    Cancelled,
}

impl StepStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Queued => "queued",
            StepStatus::Running => "running",
            StepStatus::Completed => "completed",
            StepStatus::Failed => "failed",
            StepStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Result<StepStatus> {
        Ok(match s {
            "pending" => StepStatus::Pending,
            "queued" => StepStatus::Queued,
            "running" => StepStatus::Running,
            "completed" => StepStatus::Completed,
            "failed" => StepStatus::Failed,
            "cancelled" => StepStatus::Cancelled,
            other => return Err(StoreError::Database(format!("unknown step status {other}"))),
        })
    }

    /// Whether the step has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            StepStatus::Completed | StepStatus::Failed | StepStatus::Cancelled
        )
    }
}

/// What a step's final failure does to its instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Fail the instance (the default).
    #[default]
    Fail,
    /// Carry on: steps needing it run, seeing no output.
    Continue,
}

impl OnFailure {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Fail => "fail",
            OnFailure::Continue => "continue",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Result<OnFailure> {
        match s {
            "fail" => Ok(OnFailure::Fail),
            "continue" => Ok(OnFailure::Continue),
            other => Err(StoreError::Database(format!("unknown on_failure {other}"))),
        }
    }
}

/// One version of a workflow definition. The spec is the engine's (steps, triggers); the store
/// keeps it as JSON and versions it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Definition {
    /// Name, unique across versions.
    pub name: String,
    /// From 1, one more per change.
    pub version: i64,
    /// The tenant that defined it through the API; `None` for global ones (keel.toml).
    pub tenant_id: Option<String>,
    /// The definition as the engine reads it.
    pub spec: Value,
    /// `config` or `api`.
    pub source: String,
    /// Who saved this version.
    pub created_by: String,
    /// Saved, ms.
    pub created_at: i64,
}

/// A definition to save as its next version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewDefinition {
    /// Name.
    pub name: String,
    /// The tenant defining it, if any.
    pub tenant_id: Option<String>,
    /// The definition.
    pub spec: Value,
    /// `config` or `api`.
    pub source: String,
    /// Who saves it.
    pub created_by: String,
}

/// What started an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    /// `api`, `cli`, `schedule` or `job`.
    pub kind: String,
    /// The scheduler id, or `<queue>/<job id>` of the job that triggered it.
    pub reference: Option<String>,
}

/// A workflow instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// Id (32 hex digits).
    pub id: String,
    /// Tenant, if the caller had one.
    pub tenant_id: Option<String>,
    /// Definition name.
    pub workflow: String,
    /// Definition version it runs (a running instance keeps its version).
    pub version: i64,
    /// Status.
    pub status: InstanceStatus,
    /// The workflow's input.
    pub input: Value,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// What started it.
    pub trigger: Trigger,
    /// Who started it (`token:<id>`, `user:<email>`, `schedule`, `job:<queue>`).
    pub actor: String,
    /// Times it was re-run from its failed steps.
    pub reruns: i64,
    /// Created, ms.
    pub created_at: i64,
    /// First step started, ms.
    pub started_at: Option<i64>,
    /// Ended, ms.
    pub finished_at: Option<i64>,
    /// Last change, ms (the reconciler looks at quiet running instances).
    pub updated_at: i64,
}

/// One step of an instance: its latest execution (each attempt is also a job run record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepExecution {
    /// Step name.
    pub step: String,
    /// Its place in the definition.
    pub position: i64,
    /// Queue its job goes to.
    pub queue: String,
    /// Job name.
    pub job_name: String,
    /// Steps it needs.
    pub needs: Vec<String>,
    /// What its final failure does.
    pub on_failure: OnFailure,
    /// Status.
    pub status: StepStatus,
    /// Attempts started (this run).
    pub attempts: i64,
    /// The job id of its current run.
    pub job_id: Option<String>,
    /// The job data it was enqueued with.
    pub input: Option<Value>,
    /// Its job's return value, stored once.
    pub output: Option<Value>,
    /// The latest attempt's error.
    pub error: Option<String>,
    /// The latest attempt's stack.
    pub stack: Option<String>,
    /// Enqueued, ms.
    pub queued_at: Option<i64>,
    /// First attempt started, ms.
    pub started_at: Option<i64>,
    /// Ended, ms.
    pub finished_at: Option<i64>,
    /// `finished_at - started_at`.
    pub duration_ms: Option<i64>,
}

impl StepExecution {
    /// Whether steps needing this one may run.
    pub fn satisfies(&self) -> bool {
        self.status == StepStatus::Completed
            || (self.status == StepStatus::Failed && self.on_failure == OnFailure::Continue)
    }
}

/// A step of an instance to create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewStep {
    /// Step name.
    pub step: String,
    /// Queue.
    pub queue: String,
    /// Job name.
    pub job_name: String,
    /// Steps it needs.
    pub needs: Vec<String>,
    /// What its final failure does.
    pub on_failure: OnFailure,
}

/// An instance to create. Creating an id that exists changes nothing (triggers derive the id
/// from what triggered them, so a retried trigger starts one instance).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewInstance {
    /// Id (32 hex digits).
    pub id: String,
    /// Tenant.
    pub tenant_id: Option<String>,
    /// Definition name.
    pub workflow: String,
    /// Definition version.
    pub version: i64,
    /// Input.
    pub input: Value,
    /// What starts it.
    pub trigger: Trigger,
    /// Who starts it.
    pub actor: String,
    /// Its steps, in definition order.
    pub steps: Vec<NewStep>,
}

impl NewInstance {
    /// The state of the instance as created, at `now`.
    pub fn state(&self, now: i64) -> WorkflowState {
        WorkflowState {
            instance: Instance {
                id: self.id.clone(),
                tenant_id: self.tenant_id.clone(),
                workflow: self.workflow.clone(),
                version: self.version,
                status: InstanceStatus::Pending,
                input: self.input.clone(),
                error: None,
                trigger: self.trigger.clone(),
                actor: self.actor.clone(),
                reruns: 0,
                created_at: now,
                started_at: None,
                finished_at: None,
                updated_at: now,
            },
            steps: self
                .steps
                .iter()
                .enumerate()
                .map(|(i, s)| StepExecution {
                    step: s.step.clone(),
                    position: i as i64,
                    queue: s.queue.clone(),
                    job_name: s.job_name.clone(),
                    needs: s.needs.clone(),
                    on_failure: s.on_failure,
                    status: StepStatus::Pending,
                    attempts: 0,
                    job_id: None,
                    input: None,
                    output: None,
                    error: None,
                    stack: None,
                    queued_at: None,
                    started_at: None,
                    finished_at: None,
                    duration_ms: None,
                })
                .collect(),
        }
    }
}

/// What happened to one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StepEvent {
    /// Its job was enqueued with this id and data.
    Queued {
        /// Job id.
        job_id: String,
        /// Job data.
        input: Value,
    },
    /// An attempt started.
    Started {
        /// Attempt number, from 1.
        attempt: i64,
    },
    /// Its job completed with this return value.
    Completed {
        /// Return value.
        output: Value,
    },
    /// An attempt failed; `terminal` when no attempt remains.
    Failed {
        /// Attempt number, from 1.
        attempt: i64,
        /// Error message.
        error: String,
        /// Stack, if any.
        stack: Option<String>,
        /// No attempt remains.
        terminal: bool,
    },
}

/// One step event of one instance, at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepUpdate {
    /// Instance id.
    pub instance_id: String,
    /// Step name.
    pub step: String,
    /// When, ms.
    pub at: i64,
    /// The step's job, when the reporter knows it (a worker does): fills in the step's job id
    /// when the `Queued` report was lost with the process that enqueued it.
    #[serde(default)]
    pub job_id: Option<String>,
    /// The job's data, likewise (fills in the step's input).
    #[serde(default)]
    pub input: Option<Value>,
    /// When the attempt started, when the reporter skipped its `Started` report (a step that
    /// ends quickly is recorded in one write).
    #[serde(default)]
    pub started_at: Option<i64>,
    /// The attempt number, likewise.
    #[serde(default)]
    pub attempt: Option<i64>,
    /// What.
    pub event: StepEvent,
}

impl StepUpdate {
    /// `event` of step `step` of instance `instance_id`, now.
    pub fn now(instance_id: &str, step: &str, event: StepEvent) -> StepUpdate {
        StepUpdate {
            instance_id: instance_id.to_string(),
            step: step.to_string(),
            at: keel_core::now_ms() as i64,
            job_id: None,
            input: None,
            started_at: None,
            attempt: None,
            event,
        }
    }

    /// The same, reported by the worker of job `job_id` with data `input`.
    pub fn of_job(mut self, job_id: &str, input: &Value) -> StepUpdate {
        self.job_id = Some(job_id.to_string());
        self.input = Some(input.clone());
        self
    }

    /// The same, for the attempt `attempt` that started at `started_at`.
    pub fn of_attempt(mut self, started_at: i64, attempt: i64) -> StepUpdate {
        self.started_at = Some(started_at);
        self.attempt = Some(attempt);
        self
    }

    /// As a write.
    pub fn write(self) -> WorkflowWrite {
        WorkflowWrite::Step(self)
    }
}

/// What the store applies in one transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WorkflowWrite {
    /// Create an instance (no change when its id exists).
    Create(NewInstance),
    /// Record a step event.
    Step(StepUpdate),
}

impl WorkflowWrite {
    /// The instance written.
    pub fn instance_id(&self) -> &str {
        match self {
            WorkflowWrite::Create(n) => &n.id,
            WorkflowWrite::Step(u) => &u.instance_id,
        }
    }
}

/// An instance and its steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowState {
    /// The instance.
    pub instance: Instance,
    /// Its steps, in definition order.
    pub steps: Vec<StepExecution>,
}

/// An instance after a write: its state, the steps to enqueue now, and what changed (for
/// realtime events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settled {
    /// The state after the write.
    pub state: WorkflowState,
    /// Steps whose job should be enqueued (pending, every need satisfied).
    pub ready: Vec<String>,
    /// Whether the instance's status changed.
    pub instance_changed: bool,
    /// Steps whose status changed.
    pub steps_changed: Vec<String>,
}

/// Filters of an instance listing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceFilter {
    /// Status.
    pub status: Option<InstanceStatus>,
    /// Definition name.
    pub workflow: Option<String>,
    /// Created at or after, ms.
    pub from: Option<i64>,
    /// Created at or before, ms.
    pub to: Option<i64>,
}
