//! Job states and queue counts.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where a job is in its life. The names are BullMQ's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    /// Ready to run, in FIFO/LIFO order.
    Waiting,
    /// Held by a worker.
    Active,
    /// Waiting for its delay (or retry backoff) to pass.
    Delayed,
    /// Ready to run, ordered by priority.
    Prioritized,
    /// Finished successfully.
    Completed,
    /// Finished after its last attempt failed.
    Failed,
    /// A BullMQ flow parent waiting for its children (only seen on queues shared with Node).
    WaitingChildren,
}

impl JobState {
    /// The states a caller may list or count, in display order.
    pub const LISTABLE: [JobState; 6] = [
        JobState::Waiting,
        JobState::Active,
        JobState::Delayed,
        JobState::Prioritized,
        JobState::Completed,
        JobState::Failed,
    ];

    /// The lowercase name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Active => "active",
            JobState::Delayed => "delayed",
            JobState::Prioritized => "prioritized",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::WaitingChildren => "waiting-children",
        }
    }

    /// Parses a state name (`wait` is accepted for `waiting`). The error names the field `state`.
    pub fn parse(s: &str) -> Result<JobState> {
        Ok(match s {
            "waiting" | "wait" => JobState::Waiting,
            "active" => JobState::Active,
            "delayed" => JobState::Delayed,
            "prioritized" => JobState::Prioritized,
            "completed" => JobState::Completed,
            "failed" => JobState::Failed,
            "waiting-children" => JobState::WaitingChildren,
            other => {
                return Err(Error::invalid(
                    "state",
                    format!(
                        "unknown state {other:?}; expected one of waiting, active, delayed, prioritized, completed, failed"
                    ),
                ))
            }
        })
    }

    /// Whether the job has finished (completed or failed).
    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Completed | JobState::Failed)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        JobState::parse(s)
    }
}

/// How many jobs a queue holds in each state, and whether it is paused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCounts {
    /// Jobs ready to run in FIFO/LIFO order (while paused too: BullMQ 6 keeps them in `wait`).
    pub waiting: u64,
    /// Jobs held by workers.
    pub active: u64,
    /// Jobs waiting for a delay or a retry backoff.
    pub delayed: u64,
    /// Jobs ready to run by priority.
    pub prioritized: u64,
    /// Completed jobs still retained.
    pub completed: u64,
    /// Failed jobs still retained.
    pub failed: u64,
    /// Whether the queue is paused (no worker anywhere takes jobs).
    pub paused: bool,
}

impl QueueCounts {
    /// The count of one state.
    pub fn get(&self, state: JobState) -> u64 {
        match state {
            JobState::Waiting => self.waiting,
            JobState::Active => self.active,
            JobState::Delayed => self.delayed,
            JobState::Prioritized => self.prioritized,
            JobState::Completed => self.completed,
            JobState::Failed => self.failed,
            JobState::WaitingChildren => 0,
        }
    }

    /// Jobs not yet finished: waiting + active + delayed + prioritized.
    pub fn unfinished(&self) -> u64 {
        self.waiting + self.active + self.delayed + self.prioritized
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_and_rejects_unknown_with_field() {
        for s in JobState::LISTABLE {
            assert_eq!(JobState::parse(s.as_str()).unwrap(), s);
        }
        assert_eq!(JobState::parse("wait").unwrap(), JobState::Waiting);
        let err = JobState::parse("done").unwrap_err();
        assert_eq!(err.field(), Some("state"));
    }
}
