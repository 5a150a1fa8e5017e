//! Job options: what a producer asks of a job. Field names and JSON shapes follow BullMQ's
//! stored `opts` (`delay`, `priority`, `lifo`, `jobId`, `attempts`, `backoff`,
//! `removeOnComplete`, `removeOnFail`, `de`) so a job reads the same in Keel and in Node.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::names::validate_job_id;

/// Highest priority value BullMQ accepts (lower runs first; 0 or unset = not prioritized).
pub const MAX_PRIORITY: u32 = 2_097_152;

/// Longest delay accepted, one year in milliseconds: anything longer is almost surely a unit
/// mistake (seconds vs. milliseconds, or a timestamp passed as a delay).
pub const MAX_DELAY_MS: u64 = 365 * 24 * 3600 * 1000;

/// Most attempts a job may be given.
pub const MAX_ATTEMPTS: u32 = 1000;

/// Options of one job. Unset fields take the queue's defaults (see `keel::QueueConfig`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobOptions {
    /// Milliseconds before the job may run.
    #[serde(rename = "delay", skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// 1 (first) ..= [`MAX_PRIORITY`]; unset or 0 means not prioritized (FIFO/LIFO order).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Add to the front of the waiting list instead of the back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lifo: bool,
    /// Caller-chosen id. Adding an id that exists returns the existing job and changes nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Total attempts (1 = no retry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Delay between attempts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Retention of completed jobs; unset keeps them all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remove_on_complete: Option<KeepJobs>,
    /// Retention of failed jobs; unset keeps them all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remove_on_fail: Option<KeepJobs>,
    /// While a job with this deduplication id is not finished (or within `ttl`), adding another
    /// returns the existing job.
    #[serde(
        rename = "de",
        alias = "deduplication",
        skip_serializing_if = "Option::is_none"
    )]
    pub deduplication: Option<Deduplication>,
}

impl JobOptions {
    /// Checks every field; the error names the first field at fault.
    pub fn validate(&self) -> Result<()> {
        if let Some(delay) = self.delay_ms {
            if delay > MAX_DELAY_MS {
                return Err(Error::invalid(
                    "delay",
                    format!("{delay} ms is more than a year ({MAX_DELAY_MS} ms)"),
                ));
            }
        }
        if let Some(p) = self.priority {
            if p > MAX_PRIORITY {
                return Err(Error::invalid(
                    "priority",
                    format!("{p} is above the maximum {MAX_PRIORITY}"),
                ));
            }
        }
        if let Some(id) = &self.job_id {
            validate_job_id(id)?;
        }
        if let Some(a) = self.attempts {
            if a == 0 || a > MAX_ATTEMPTS {
                return Err(Error::invalid(
                    "attempts",
                    format!("{a} is not between 1 and {MAX_ATTEMPTS}"),
                ));
            }
        }
        if let Some(b) = &self.backoff {
            b.validate()?;
        }
        if let Some(d) = &self.deduplication {
            if d.id.is_empty() {
                return Err(Error::invalid("deduplication.id", "must not be empty"));
            }
        }
        Ok(())
    }

    /// Fills every unset field from `defaults` (job options win).
    pub fn merged_over(mut self, defaults: &JobOptions) -> JobOptions {
        self.delay_ms = self.delay_ms.or(defaults.delay_ms);
        self.priority = self.priority.or(defaults.priority);
        self.lifo = self.lifo || defaults.lifo;
        self.attempts = self.attempts.or(defaults.attempts);
        self.backoff = self.backoff.or_else(|| defaults.backoff.clone());
        self.remove_on_complete = self
            .remove_on_complete
            .or_else(|| defaults.remove_on_complete.clone());
        self.remove_on_fail = self
            .remove_on_fail
            .or_else(|| defaults.remove_on_fail.clone());
        self
    }

    /// Total attempts this job gets (unset means one).
    pub fn max_attempts(&self) -> u32 {
        self.attempts.unwrap_or(1).max(1)
    }
}

/// How the delay between attempts grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackoffKind {
    /// The same delay before every retry.
    Fixed,
    /// `delay * 2^(n-1)` before the n-th retry: 1 s, 2 s, 4 s, ...
    Exponential,
}

/// Delay between attempts. Serialized as BullMQ does: `{"type":"fixed","delay":100}`, plus
/// `"jitter"` when set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// Fixed or exponential.
    #[serde(rename = "type")]
    pub kind: BackoffKind,
    /// Base delay in milliseconds.
    #[serde(rename = "delay", alias = "delay_ms")]
    pub delay_ms: u64,
    /// 0.0 ..= 1.0: the delay is drawn uniformly from `[delay * (1 - jitter), delay]`, so
    /// retries of many jobs that failed together do not arrive together.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub jitter: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

impl Backoff {
    /// A fixed backoff of `delay_ms`.
    pub fn fixed(delay_ms: u64) -> Self {
        Backoff {
            kind: BackoffKind::Fixed,
            delay_ms,
            jitter: 0.0,
        }
    }

    /// An exponential backoff starting at `delay_ms`.
    pub fn exponential(delay_ms: u64) -> Self {
        Backoff {
            kind: BackoffKind::Exponential,
            delay_ms,
            jitter: 0.0,
        }
    }

    /// The same backoff with `jitter` (0.0 ..= 1.0).
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Parses the command line form `fixed:MS` or `exponential:MS`.
    pub fn parse_spec(spec: &str) -> Result<Backoff> {
        let bad = || {
            Error::invalid(
                "backoff",
                format!("{spec:?} is not fixed:MS or exponential:MS (e.g. exponential:1000)"),
            )
        };
        let (kind, ms) = spec.split_once(':').ok_or_else(bad)?;
        let delay_ms: u64 = ms.trim().parse().map_err(|_| bad())?;
        let backoff = match kind.trim() {
            "fixed" => Backoff::fixed(delay_ms),
            "exponential" => Backoff::exponential(delay_ms),
            _ => return Err(bad()),
        };
        backoff.validate()?;
        Ok(backoff)
    }

    /// Checks the delay and jitter ranges.
    pub fn validate(&self) -> Result<()> {
        if self.delay_ms > MAX_DELAY_MS {
            return Err(Error::invalid(
                "backoff.delay",
                format!("{} ms is more than a year", self.delay_ms),
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) || self.jitter.is_nan() {
            return Err(Error::invalid(
                "backoff.jitter",
                format!("{} is not between 0.0 and 1.0", self.jitter),
            ));
        }
        Ok(())
    }

    /// Delay before the next attempt after `attempts_made` attempts have failed (1-based: the
    /// first retry follows attempt 1). `unit` is a uniform draw in `[0, 1)` used for jitter;
    /// passing it in keeps this function pure and testable.
    pub fn delay_after(&self, attempts_made: u32, unit: f64) -> u64 {
        let base = match self.kind {
            BackoffKind::Fixed => self.delay_ms,
            BackoffKind::Exponential => {
                let exp = attempts_made.saturating_sub(1).min(63);
                self.delay_ms.saturating_mul(1u64 << exp)
            }
        }
        .min(MAX_DELAY_MS);
        if self.jitter > 0.0 {
            let low = base as f64 * (1.0 - self.jitter);
            (low + unit.clamp(0.0, 1.0) * (base as f64 - low)).floor() as u64
        } else {
            base
        }
    }
}

/// Retention of finished jobs, BullMQ's `KeepJobs`: keep at most `count` jobs and none older
/// than `age_s` seconds. `count = 0` removes a job as soon as it finishes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepJobs {
    /// Keep at most this many finished jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// Keep finished jobs at most this many seconds.
    #[serde(default, alias = "age", skip_serializing_if = "Option::is_none")]
    pub age_s: Option<u64>,
}

impl KeepJobs {
    /// Remove finished jobs immediately.
    pub fn remove_all() -> Self {
        KeepJobs {
            count: Some(0),
            age_s: None,
        }
    }

    /// Keep the last `count` finished jobs.
    pub fn count(count: usize) -> Self {
        KeepJobs {
            count: Some(count),
            age_s: None,
        }
    }
}

/// Deduplication: while the job that holds `id` is not finished, or for `ttl_ms` after it was
/// added when `ttl_ms` is set, adding a job with the same `id` returns that job instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deduplication {
    /// The deduplication key.
    pub id: String,
    /// Window in milliseconds; unset means "until the job finishes".
    #[serde(
        rename = "ttl",
        alias = "ttl_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_doubles_from_the_base() {
        let b = Backoff::exponential(1000);
        assert_eq!(b.delay_after(1, 0.0), 1000);
        assert_eq!(b.delay_after(2, 0.0), 2000);
        assert_eq!(b.delay_after(3, 0.0), 4000);
        assert_eq!(
            b.delay_after(200, 0.0),
            MAX_DELAY_MS,
            "saturates, never overflows"
        );
    }

    #[test]
    fn fixed_is_constant_and_jitter_stays_in_range() {
        let b = Backoff::fixed(100);
        assert_eq!(b.delay_after(1, 0.5), 100);
        assert_eq!(b.delay_after(9, 0.5), 100);
        let j = Backoff::fixed(1000).with_jitter(0.5);
        assert_eq!(j.delay_after(1, 0.0), 500);
        assert_eq!(j.delay_after(1, 0.999_999), 999);
        for i in 0..100 {
            let d = j.delay_after(1, i as f64 / 100.0);
            assert!((500..=1000).contains(&d), "{d}");
        }
    }

    #[test]
    fn backoff_spec_parses_and_rejects_with_the_field_named() {
        assert_eq!(
            Backoff::parse_spec("fixed:250").unwrap(),
            Backoff::fixed(250)
        );
        assert_eq!(
            Backoff::parse_spec("exponential:1000").unwrap(),
            Backoff::exponential(1000)
        );
        for bad in ["fixed", "linear:10", "fixed:-1", "exponential:abc", ""] {
            let err = Backoff::parse_spec(bad).unwrap_err();
            assert_eq!(err.field(), Some("backoff"), "{bad}");
        }
    }

    #[test]
    fn serialized_like_bullmq() {
        let opts = JobOptions {
            delay_ms: Some(5),
            attempts: Some(3),
            backoff: Some(Backoff::exponential(1000)),
            job_id: Some("x-1".into()),
            remove_on_complete: Some(KeepJobs::count(10)),
            ..Default::default()
        };
        let v = serde_json::to_value(&opts).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"delay":5,"attempts":3,"jobId":"x-1",
                "backoff":{"type":"exponential","delay":1000},
                "removeOnComplete":{"count":10}})
        );
        let back: JobOptions = serde_json::from_value(v).unwrap();
        assert_eq!(back, opts);
    }

    #[test]
    fn validation_names_the_field() {
        let cases = [
            (
                JobOptions {
                    attempts: Some(0),
                    ..Default::default()
                },
                "attempts",
            ),
            (
                JobOptions {
                    priority: Some(MAX_PRIORITY + 1),
                    ..Default::default()
                },
                "priority",
            ),
            (
                JobOptions {
                    delay_ms: Some(MAX_DELAY_MS + 1),
                    ..Default::default()
                },
                "delay",
            ),
            (
                JobOptions {
                    job_id: Some("a:b".into()),
                    ..Default::default()
                },
                "job_id",
            ),
            (
                JobOptions {
                    backoff: Some(Backoff::fixed(1).with_jitter(2.0)),
                    ..Default::default()
                },
                "backoff.jitter",
            ),
        ];
        for (opts, field) in cases {
            assert_eq!(opts.validate().unwrap_err().field(), Some(field));
        }
    }

    #[test]
    fn job_options_win_over_defaults() {
        let defaults = JobOptions {
            attempts: Some(3),
            backoff: Some(Backoff::exponential(1000)),
            ..Default::default()
        };
        let merged = JobOptions {
            attempts: Some(1),
            ..Default::default()
        }
        .merged_over(&defaults);
        assert_eq!(merged.attempts, Some(1));
        assert_eq!(merged.backoff, Some(Backoff::exponential(1000)));
    }
}
