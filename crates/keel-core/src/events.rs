//! The per-queue events stream (BullMQ's `Q:events`, or the memory backend's broadcast).

use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One event of a queue, as any process watching it sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum QueueEvent {
    /// A job was added.
    Added {
        /// The job id.
        job_id: String,
        /// The job name.
        name: String,
    },
    /// A job became ready to run.
    Waiting {
        /// The job id.
        job_id: String,
    },
    /// A job was delayed (on add, or for a retry backoff) until `until_ms`.
    Delayed {
        /// The job id.
        job_id: String,
        /// When it becomes ready.
        until_ms: u64,
    },
    /// A worker took a job.
    Active {
        /// The job id.
        job_id: String,
    },
    /// A handler reported progress.
    Progress {
        /// The job id.
        job_id: String,
        /// The progress value.
        data: Value,
    },
    /// A job completed.
    Completed {
        /// The job id.
        job_id: String,
        /// What the handler returned.
        returnvalue: Value,
    },
    /// A job failed for good (its last attempt failed, or the error was unrecoverable).
    Failed {
        /// The job id.
        job_id: String,
        /// The error.
        reason: String,
    },
    /// A job's worker lost its lock; the job went back to wait.
    Stalled {
        /// The job id.
        job_id: String,
    },
    /// A job was removed.
    Removed {
        /// The job id.
        job_id: String,
    },
    /// The queue was paused.
    Paused,
    /// The queue was resumed.
    Resumed,
    /// The queue has no more waiting jobs.
    Drained,
}

impl QueueEvent {
    /// The job the event is about, if any.
    pub fn job_id(&self) -> Option<&str> {
        match self {
            QueueEvent::Added { job_id, .. }
            | QueueEvent::Waiting { job_id }
            | QueueEvent::Delayed { job_id, .. }
            | QueueEvent::Active { job_id }
            | QueueEvent::Progress { job_id, .. }
            | QueueEvent::Completed { job_id, .. }
            | QueueEvent::Failed { job_id, .. }
            | QueueEvent::Stalled { job_id }
            | QueueEvent::Removed { job_id } => Some(job_id),
            QueueEvent::Paused | QueueEvent::Resumed | QueueEvent::Drained => None,
        }
    }
}

/// A live stream of a queue's events. It ends when the backend closes.
pub type EventStream = BoxStream<'static, QueueEvent>;
