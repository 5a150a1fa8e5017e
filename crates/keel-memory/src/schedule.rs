//! Repeatable jobs in memory: a scheduler and its pending run (the next run itself is
//! `keel_core::schedule::Timetable`'s, shared with the Redis engines).

use keel_core::schedule::Timetable;
use keel_core::{NewJob, Result, Schedule, SchedulerInfo};

/// A stored scheduler: it keeps one pending delayed job for its next run.
pub(crate) struct Scheduler {
    pub id: String,
    pub schedule: Schedule,
    pub template: NewJob,
    timetable: Timetable,
    pub next_run: Option<u64>,
    pub iterations: u64,
    pub pending_job: Option<String>,
}

impl Scheduler {
    /// Parses the schedule; the error names `pattern` or `tz`.
    pub fn new(id: &str, schedule: Schedule, template: NewJob) -> Result<Scheduler> {
        Ok(Scheduler {
            id: id.to_string(),
            timetable: Timetable::new(&schedule)?,
            schedule,
            template,
            next_run: None,
            iterations: 0,
            pending_job: None,
        })
    }

    /// The first run strictly after `now` (ms).
    pub fn next_after(&self, now: u64) -> Option<u64> {
        self.timetable.next_after(now)
    }

    /// The public view.
    pub fn info(&self) -> SchedulerInfo {
        SchedulerInfo {
            id: self.id.clone(),
            name: self.template.name.clone(),
            schedule: self.schedule.clone(),
            next_run_ms: self.next_run,
            iteration_count: self.iterations,
        }
    }
}
