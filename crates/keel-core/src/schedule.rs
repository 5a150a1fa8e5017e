//! Repeatable jobs: a scheduler adds a job on a cron pattern or every N milliseconds.

use chrono::TimeZone;
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// When a scheduler fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// A cron pattern (5 fields, or 6 with seconds first) in time zone `tz` (IANA name; UTC
    /// when unset).
    Cron {
        /// The pattern, e.g. `0 */5 * * * *`.
        pattern: String,
        /// IANA time zone, e.g. `Europe/Berlin`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tz: Option<String>,
    },
    /// Every `every_ms` milliseconds.
    Every {
        /// The interval.
        every_ms: u64,
    },
}

impl Schedule {
    /// Checks the interval and the time zone name (the cron pattern itself is checked by the
    /// backend's cron engine when the scheduler is stored).
    pub fn validate(&self) -> Result<()> {
        match self {
            Schedule::Every { every_ms } if *every_ms == 0 => {
                Err(Error::invalid("every", "must be at least 1 ms"))
            }
            Schedule::Cron { pattern, .. } if pattern.trim().is_empty() => {
                Err(Error::invalid("pattern", "must not be empty"))
            }
            _ => Ok(()),
        }
    }
}

/// A stored scheduler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchedulerInfo {
    /// The scheduler id (unique per queue).
    pub id: String,
    /// The name of the jobs it adds.
    pub name: String,
    /// When it fires.
    pub schedule: Schedule,
    /// When it fires next, ms since the epoch.
    pub next_run_ms: Option<u64>,
    /// How many jobs it has added.
    pub iteration_count: u64,
}

/// A [`Schedule`] parsed once: its next run after any time, the same on every backend.
#[derive(Debug, Clone)]
pub struct Timetable {
    every_ms: Option<u64>,
    cron: Option<(Cron, chrono_tz::Tz)>,
}

impl Timetable {
    /// Parses the schedule; the error names `pattern` or `tz`.
    pub fn new(schedule: &Schedule) -> Result<Timetable> {
        schedule.validate()?;
        match schedule {
            Schedule::Every { every_ms } => Ok(Timetable {
                every_ms: Some(*every_ms),
                cron: None,
            }),
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
                Ok(Timetable {
                    every_ms: None,
                    cron: Some((cron, zone)),
                })
            }
        }
    }

    /// The first run strictly after `now` (ms). Intervals are aligned to multiples of the
    /// interval, as BullMQ's `every` schedulers are.
    pub fn next_after(&self, now: u64) -> Option<u64> {
        if let Some(every) = self.every_ms {
            return Some((now / every + 1) * every);
        }
        let (cron, tz) = self.cron.as_ref()?;
        let at = tz.timestamp_millis_opt(now as i64).single()?;
        cron.find_next_occurrence(&at, false)
            .ok()
            .map(|t| t.timestamp_millis() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_is_aligned_and_strictly_after() {
        let t = Timetable::new(&Schedule::Every { every_ms: 1000 }).unwrap();
        assert_eq!(t.next_after(1000), Some(2000));
        assert_eq!(t.next_after(1500), Some(2000));
    }

    #[test]
    fn cron_respects_the_time_zone() {
        // 09:00 every day in Berlin is 08:00 UTC in winter.
        let t = Timetable::new(&Schedule::Cron {
            pattern: "0 9 * * *".into(),
            tz: Some("Europe/Berlin".into()),
        })
        .unwrap();
        // 2026-01-01T00:00:00Z
        let next = t.next_after(1_767_225_600_000).unwrap();
        assert_eq!(next, 1_767_225_600_000 + 8 * 3600 * 1000);
    }

    #[test]
    fn bad_pattern_and_zone_name_the_field() {
        let bad = Timetable::new(&Schedule::Cron {
            pattern: "nope".into(),
            tz: None,
        });
        assert_eq!(bad.err().unwrap().field(), Some("pattern"));
        let bad = Timetable::new(&Schedule::Cron {
            pattern: "* * * * *".into(),
            tz: Some("Mars/Base".into()),
        });
        assert_eq!(bad.err().unwrap().field(), Some("tz"));
    }
}
