//! Conversions between Keel's vocabulary and bullmq-official's, and error mapping.

use bullmq::types::{BackoffStrategy, JobProgress, KeepJobs as BullKeep, RemoveOnFinish};
use keel_core::{Backoff, BackoffKind, Deduplication, Error, Job, JobOptions, JobState, KeepJobs};
use serde_json::Value;

/// Prefix of the custom backoff type earlier Keel versions stored for a jittered backoff
/// (`keel-<fixed|exponential>-<delay ms>-<jitter>`). Still read, never written: the jitter now
/// goes into BullMQ's own `backoff.jitter` field (see `scripts`), which Node workers apply.
pub(crate) const JITTER_BACKOFF_PREFIX: &str = "keel-";

/// Keel options → bullmq options.
pub(crate) fn to_bull_opts(opts: &JobOptions) -> bullmq::JobOptions {
    bullmq::JobOptions {
        delay: opts.delay_ms.filter(|d| *d > 0),
        priority: opts.priority.filter(|p| *p > 0),
        lifo: opts.lifo.then_some(true),
        job_id: opts.job_id.clone(),
        attempts: opts.attempts,
        backoff: opts.backoff.as_ref().map(to_bull_backoff),
        remove_on_complete: opts.remove_on_complete.as_ref().map(to_bull_keep),
        remove_on_fail: opts.remove_on_fail.as_ref().map(to_bull_keep),
        deduplication: opts
            .deduplication
            .as_ref()
            .map(|d| bullmq::DeduplicationOptions {
                id: d.id.clone(),
                ttl: d.ttl_ms,
                ..Default::default()
            }),
        ..Default::default()
    }
}

/// BullMQ's type and delay; bullmq-official has no field for the jitter, which Keel's
/// scripts store beside them.
fn to_bull_backoff(b: &Backoff) -> BackoffStrategy {
    match b.kind {
        BackoffKind::Fixed => BackoffStrategy::Fixed(b.delay_ms),
        BackoffKind::Exponential => BackoffStrategy::Exponential(b.delay_ms),
    }
}

/// Parses a jittered backoff type written by earlier Keel versions.
pub(crate) fn parse_jitter_backoff(name: &str) -> Option<Backoff> {
    let rest = name.strip_prefix(JITTER_BACKOFF_PREFIX)?;
    let mut parts = rest.splitn(3, '-');
    let kind = match parts.next()? {
        "fixed" => BackoffKind::Fixed,
        "exponential" => BackoffKind::Exponential,
        _ => return None,
    };
    let delay_ms = parts.next()?.parse().ok()?;
    let jitter = parts.next()?.parse().ok()?;
    Some(Backoff {
        kind,
        delay_ms,
        jitter,
    })
}

fn to_bull_keep(k: &KeepJobs) -> RemoveOnFinish {
    match (k.count, k.age_s) {
        (Some(0), None) => RemoveOnFinish::Bool(true),
        (Some(c), None) => RemoveOnFinish::Count(c),
        (count, age) => RemoveOnFinish::Options(BullKeep {
            age,
            count,
            limit: None,
        }),
    }
}

fn from_bull_keep(r: &RemoveOnFinish) -> Option<KeepJobs> {
    match r {
        RemoveOnFinish::Bool(true) => Some(KeepJobs::remove_all()),
        RemoveOnFinish::Bool(false) => None,
        RemoveOnFinish::Count(c) => Some(KeepJobs::count(*c)),
        RemoveOnFinish::Options(k) => Some(KeepJobs {
            count: k.count,
            age_s: k.age,
        }),
    }
}

/// bullmq options (as stored) → Keel options.
pub(crate) fn from_bull_opts(o: &bullmq::JobOptions) -> JobOptions {
    JobOptions {
        delay_ms: o.delay.filter(|d| *d > 0),
        priority: o.priority.filter(|p| *p > 0),
        lifo: o.lifo.unwrap_or(false),
        job_id: o.job_id.clone(),
        attempts: o.attempts,
        backoff: o.backoff.as_ref().and_then(|b| match b {
            BackoffStrategy::Fixed(d) => Some(Backoff::fixed(*d)),
            BackoffStrategy::Exponential(d) => Some(Backoff::exponential(*d)),
            BackoffStrategy::Custom(name) => parse_jitter_backoff(name),
        }),
        remove_on_complete: o.remove_on_complete.as_ref().and_then(from_bull_keep),
        remove_on_fail: o.remove_on_fail.as_ref().and_then(from_bull_keep),
        deduplication: o.deduplication.as_ref().map(|d| Deduplication {
            id: d.id.clone(),
            ttl_ms: d.ttl,
        }),
    }
}

/// bullmq job → Keel job. Uses the job's serde form for the fields bullmq keeps private
/// (stack trace, stall counter).
pub(crate) fn from_bull_job(queue: &str, job: &bullmq::Job) -> Job {
    let raw = serde_json::to_value(job).unwrap_or(Value::Null);
    let stacktrace = raw
        .get("stacktrace")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(|s| serde_json::from_str::<Vec<String>>(s).unwrap_or_else(|_| vec![s.to_string()]))
        .unwrap_or_default();
    let stalled_counter = raw
        .get("stalled_counter")
        .and_then(Value::as_u64)
        .unwrap_or(0) as u32;
    let returnvalue = match job.returnvalue() {
        "" => None,
        s => Some(serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_string()))),
    };
    let progress = match job.progress() {
        JobProgress::Number(n) => serde_json::Number::from_f64(*n)
            .map(|n| {
                // Keep integers integral so 50 reads back as 50, not 50.0.
                match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9e15 => Value::from(f as i64),
                    _ => Value::Number(n),
                }
            })
            .unwrap_or(Value::from(0)),
        JobProgress::Object(v) => v.clone(),
    };
    Job {
        id: job.id().to_string(),
        queue: queue.to_string(),
        name: job.name().to_string(),
        data: job.data().clone(),
        opts: from_bull_opts(job.opts()),
        attempts_made: job.attempts_made(),
        attempts_started: job.attempts_started(),
        stalled_counter,
        progress,
        timestamp: job.timestamp(),
        processed_on: job.processed_on(),
        finished_on: job.finished_on(),
        failed_reason: Some(job.failed_reason().to_string()).filter(|s| !s.is_empty()),
        stacktrace,
        returnvalue,
        processed_by: job.processed_by().map(str::to_string),
    }
}

/// bullmq state → Keel state.
pub(crate) fn from_bull_state(s: bullmq::JobState) -> Option<JobState> {
    use bullmq::JobState as B;
    Some(match s {
        B::Waiting => JobState::Waiting,
        B::Active => JobState::Active,
        B::Delayed => JobState::Delayed,
        B::Prioritized => JobState::Prioritized,
        B::Completed => JobState::Completed,
        B::Failed => JobState::Failed,
        B::WaitingChildren => JobState::WaitingChildren,
        B::Unknown => return None,
    })
}

/// The name bullmq's scripts use for a state's key.
pub(crate) fn bull_state_name(s: JobState) -> &'static str {
    match s {
        JobState::Waiting => "wait",
        JobState::Active => "active",
        JobState::Delayed => "delayed",
        JobState::Prioritized => "prioritized",
        JobState::Completed => "completed",
        JobState::Failed => "failed",
        JobState::WaitingChildren => "waiting-children",
    }
}

/// Maps a bullmq error, with `what` naming the operation for context.
pub(crate) fn map_err(what: &str, e: bullmq::Error) -> Error {
    match e {
        bullmq::Error::Redis(r) => map_redis(what, r),
        bullmq::Error::JobNotFound(id) => Error::not_found(format!("job {id}")),
        bullmq::Error::ConnectionClosed => {
            Error::BackendUnavailable(format!("{what}: Redis connection closed"))
        }
        // bullmq's client-side checks (custom ids, sizes): bad input, not a server fault.
        // Keel validates the same rules first; this is the safety net.
        bullmq::Error::InvalidConfig(m) => Error::invalid(
            if m.contains("Id") { "job_id" } else { "opts" },
            format!("{what}: {m}"),
        ),
        other => Error::Backend(format!("{what}: {other}")),
    }
}

/// Maps a Redis client error: connection trouble is `backend-unavailable`.
pub(crate) fn map_redis(what: &str, e: redis::RedisError) -> Error {
    // A Redis Cluster node answering for a slot it does not own.
    if matches!(
        e.code(),
        Some("MOVED" | "ASK" | "CROSSSLOT" | "CLUSTERDOWN")
    ) {
        return Error::invalid(
            "REDIS_URL",
            format!("{what}: Redis answered {e}: this is a Redis Cluster, which Keel does not support yet; use a standalone Redis"),
        );
    }
    // OOM (maxmemory reached under noeviction), LOADING, READONLY replicas, MASTERDOWN: Redis
    // is there but refuses work for now, like an outage.
    let refusing = matches!(
        e.code(),
        Some("OOM" | "LOADING" | "READONLY" | "MASTERDOWN" | "BUSY")
    );
    if refusing
        || e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
    {
        Error::BackendUnavailable(format!("{what}: {e}"))
    } else {
        Error::Backend(format!("{what}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_through_bullmq_form() {
        let opts = JobOptions {
            delay_ms: Some(10),
            priority: Some(3),
            lifo: true,
            job_id: Some("a-1".into()),
            attempts: Some(4),
            backoff: Some(Backoff::exponential(250)),
            remove_on_complete: Some(KeepJobs::remove_all()),
            remove_on_fail: Some(KeepJobs {
                count: Some(5),
                age_s: Some(60),
            }),
            deduplication: Some(Deduplication {
                id: "d".into(),
                ttl_ms: Some(100),
            }),
        };
        let stored = serde_json::to_string(&to_bull_opts(&opts)).unwrap();
        let back: bullmq::JobOptions = serde_json::from_str(&stored).unwrap();
        assert_eq!(from_bull_opts(&back), opts);
    }

    #[test]
    fn legacy_jitter_backoff_names_still_parse() {
        let b = Backoff::fixed(100).with_jitter(0.25);
        assert_eq!(parse_jitter_backoff("keel-fixed-100-0.25"), Some(b));
        assert_eq!(parse_jitter_backoff("other"), None);
        // Written as BullMQ's own type now (the jitter travels in backoff.jitter).
        assert!(matches!(
            to_bull_backoff(&Backoff::exponential(5).with_jitter(0.5)),
            BackoffStrategy::Exponential(5)
        ));
    }
}
