//! Repeatable jobs in memory: the next run of a cron pattern (with time zone) or an interval.

use chrono::TimeZone;
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use keel_core::{Error, NewJob, Result, Schedule, SchedulerInfo};

/// A stored scheduler: it keeps one pending delayed job for its next run.
pub(crate) struct Scheduler {
    pub id: String,
    pub schedule: Schedule,
    pub template: NewJob,
    cron: Option<(Cron, chrono_tz::Tz)>,
    pub next_run: Option<u64>,
    pub iterations: u64,
    pub pending_job: Option<String>,
}

impl Scheduler {
    /// Parses the schedule; the error names `pattern` or `tz`.
    pub fn new(id: &str, schedule: Schedule, template: NewJob) -> Result<Scheduler> {
        let cron = match &schedule {
            Schedule::Cron { pattern, tz } => {
                let cron = CronParser::builder()
                    .seconds(Seconds::Optional)
                    .build()
                    .parse(pattern)
                    .map_err(|e| Error::invalid("pattern", format!("{pattern:?}: {e}")))?;
                let zone = match tz {
                    Some(name) => name
                        .parse::<chrono_tz::Tz>()
                        .map_err(|_| Error::invalid("tz", format!("unknown time zone {name:?}")))?,
                    None => chrono_tz::UTC,
                };
                Some((cron, zone))
            }
            Schedule::Every { .. } => None,
        };
        Ok(Scheduler {
            id: id.to_string(),
            schedule,
            template,
            cron,
            next_run: None,
            iterations: 0,
            pending_job: None,
        })
    }

    /// The first run strictly after `now` (ms).
    pub fn next_after(&self, now: u64) -> Option<u64> {
        match (&self.schedule, &self.cron) {
            (Schedule::Every { every_ms }, _) => {
                // Aligned to multiples of the interval, as BullMQ's `every` schedulers are.
                Some((now / every_ms + 1) * every_ms)
            }
            (Schedule::Cron { .. }, Some((cron, tz))) => {
                let at = tz.timestamp_millis_opt(now as i64).single()?;
                cron.find_next_occurrence(&at, false)
                    .ok()
                    .map(|t| t.timestamp_millis() as u64)
            }
            (Schedule::Cron { .. }, None) => None,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_is_aligned_and_strictly_after() {
        let s = Scheduler::new(
            "s",
            Schedule::Every { every_ms: 1000 },
            NewJob::new("t", json!(1)),
        )
        .unwrap();
        assert_eq!(s.next_after(1000), Some(2000));
        assert_eq!(s.next_after(1500), Some(2000));
    }

    #[test]
    fn cron_respects_the_time_zone() {
        // 09:00 every day in Berlin is 08:00 UTC in winter.
        let s = Scheduler::new(
            "s",
            Schedule::Cron {
                pattern: "0 9 * * *".into(),
                tz: Some("Europe/Berlin".into()),
            },
            NewJob::new("t", json!(1)),
        )
        .unwrap();
        // 2026-01-01T00:00:00Z
        let next = s.next_after(1_767_225_600_000).unwrap();
        assert_eq!(next, 1_767_225_600_000 + 8 * 3600 * 1000);
    }

    #[test]
    fn bad_pattern_and_zone_name_the_field() {
        let bad = Scheduler::new(
            "s",
            Schedule::Cron {
                pattern: "nope".into(),
                tz: None,
            },
            NewJob::new("t", json!(1)),
        );
        assert_eq!(bad.err().unwrap().field(), Some("pattern"));
        let bad = Scheduler::new(
            "s",
            Schedule::Cron {
                pattern: "* * * * *".into(),
                tz: Some("Mars/Base".into()),
            },
            NewJob::new("t", json!(1)),
        );
        assert_eq!(bad.err().unwrap().field(), Some("tz"));
    }
}
