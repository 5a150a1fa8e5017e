//! A job as stored by a backend.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::options::JobOptions;

/// A snapshot of one job. Field names in JSON are BullMQ's (`attemptsMade`, `failedReason`,
/// `returnvalue`, `processedOn`, `finishedOn`, ...), so the CLI and HTTP API show what Bull
/// Board shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// The job id, unique within its queue.
    pub id: String,
    /// The queue the job belongs to.
    pub queue: String,
    /// The job name, used to route it to a handler.
    pub name: String,
    /// The payload.
    pub data: Value,
    /// The options the job was added with, after queue defaults were applied.
    pub opts: JobOptions,
    /// Attempts that have ended (failed or completed).
    pub attempts_made: u32,
    /// Times a worker took the job (includes attempts cut short by a crash).
    pub attempts_started: u32,
    /// Times the job was found stalled (its worker lost its lock).
    pub stalled_counter: u32,
    /// The last progress the handler reported (a number or any JSON); 0 when none.
    pub progress: Value,
    /// When the job was added, ms since the epoch.
    pub timestamp: u64,
    /// When the current or last attempt started.
    pub processed_on: Option<u64>,
    /// When the job completed or finally failed.
    pub finished_on: Option<u64>,
    /// The error of the last failed attempt.
    pub failed_reason: Option<String>,
    /// Stack traces (or error chains) of failed attempts, most recent last.
    pub stacktrace: Vec<String>,
    /// What the handler returned, when the job completed.
    pub returnvalue: Option<Value>,
    /// The worker that processed it last, when known.
    pub processed_by: Option<String>,
}

impl Job {
    /// A job just added as `id` of `queue` at `timestamp`: nothing run yet.
    pub fn added(id: String, queue: &str, new: NewJob, timestamp: u64) -> Job {
        Job {
            id,
            queue: queue.to_string(),
            name: new.name,
            data: new.data,
            opts: new.opts,
            attempts_made: 0,
            attempts_started: 0,
            stalled_counter: 0,
            progress: Value::from(0),
            timestamp,
            processed_on: None,
            finished_on: None,
            failed_reason: None,
            stacktrace: Vec::new(),
            returnvalue: None,
            processed_by: None,
        }
    }

    /// The job's priority, 0 when not prioritized.
    pub fn priority(&self) -> u32 {
        self.opts.priority.unwrap_or(0)
    }
}

/// A job to add: name, payload and options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    /// The job name.
    pub name: String,
    /// The payload.
    #[serde(default)]
    pub data: Value,
    /// Options; unset fields take the queue's defaults.
    #[serde(default)]
    pub opts: JobOptions,
}

impl NewJob {
    /// A job with default options.
    pub fn new(name: impl Into<String>, data: Value) -> Self {
        NewJob {
            name: name.into(),
            data,
            opts: JobOptions::default(),
        }
    }

    /// The same job with `opts`.
    pub fn with_opts(mut self, opts: JobOptions) -> Self {
        self.opts = opts;
        self
    }
}
