//! Repeatable jobs: a scheduler adds a job on a cron pattern or every N milliseconds.

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
