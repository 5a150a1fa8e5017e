//! Keel's workflow engine: DAGs of steps, each a job on a Keel queue — so a step has what a job
//! has (retries with backoff, DLQ, timeouts, rate limits, pause, stalled recovery, run
//! records, both backends) — with durable instances and step executions in the records store.
//!
//! # Layout
//! - [`spec`] — definitions (`[workflows.NAME]` in keel.toml, or the API) and their validation.
//! - [`template`] — step inputs from the workflow's input and earlier steps' outputs.
//! - [`engine`] — [`Engine`]: start, enqueue ready steps, the processor wrapper that records a
//!   step's end and moves its instance forward, cancel, re-run, triggers (schedules on
//!   [`engine::TRIGGER_QUEUE`], completions of other queues' jobs).
//! - [`writer`] — the group-commit writer every workflow write goes through.
//! - [`reconcile`] — [`Reconciler`]: repairs instances a crash left without their next job.
//!
//! The rule that moves an instance forward (ready steps, fan-in, failure, completion) is
//! `keel_records::workflow::WorkflowState::settle`, applied by the store inside the
//! transaction that records a step's end.

pub mod engine;
pub mod reconcile;
pub mod spec;
pub mod template;
pub mod writer;

pub use engine::{derived_id, Engine, EngineConfig, Observer, Start, WorkflowEvent};
pub use reconcile::{ReconcileReport, Reconciler, ReconcilerConfig};
pub use spec::{Compiled, StepSpec, WorkflowSpec};

/// What a workflow call can fail with: the queues' errors or the records'.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// The queue backend (or bad input, with the field named).
    #[error(transparent)]
    Queue(#[from] keel::Error),
    /// The records store.
    #[error(transparent)]
    Records(#[from] keel_records::StoreError),
}

impl WorkflowError {
    /// The stable code of the error.
    pub fn code(&self) -> &'static str {
        match self {
            WorkflowError::Queue(e) => e.code(),
            WorkflowError::Records(e) => e.code(),
        }
    }
}

/// A workflow result.
pub type Result<T, E = WorkflowError> = std::result::Result<T, E>;
