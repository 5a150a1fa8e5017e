//! Starting the workers a configuration declares: rate limits, schedulers, handlers, worker
//! options — shared by `keel worker` and `keel serve`.

use std::time::Duration;

use keel_core::{Error, JobOptions, Processor, Result};

use crate::config::{Config, QueueConfig};
use crate::{Backend, Worker};

/// Wraps a queue's processor (e.g. to record runs); receives the queue's settings.
pub type Wrap<'a> = &'a dyn Fn(&QueueConfig, Processor) -> Processor;

/// The queues to run: `only` (each must be configured), or every configured queue with a
/// handler. Errors name the setting.
pub fn select(config: &Config, only: &[String], arg: &str) -> Result<Vec<String>> {
    if only.is_empty() {
        return Ok(config
            .queues
            .iter()
            .filter(|(_, q)| q.handler.is_some())
            .map(|(n, _)| n.clone())
            .collect());
    }
    for q in only {
        if !config.queues.contains_key(q) {
            return Err(Error::invalid(
                arg,
                format!("queue {q:?} is not in the configuration"),
            ));
        }
    }
    Ok(only.to_vec())
}

/// Starts one worker per queue in `names`, after applying its rate limit and schedulers.
/// Handlers are built (and their settings checked) before anything starts.
pub async fn start_workers(
    config: &Config,
    backend: &Backend,
    names: &[String],
    wrap: Option<Wrap<'_>>,
) -> Result<Vec<Worker>> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut plans = Vec::new();
    for name in names {
        let qc = config.queue_config(name);
        let handler = qc.handler.as_ref().ok_or_else(|| {
            Error::invalid(
                format!("queues.{name}.handler"),
                "this queue has no handler to run",
            )
        })?;
        let processor = crate::handlers::processor_for(handler, name, &env)?;
        let processor = match wrap {
            Some(w) => w(&qc, processor),
            None => processor,
        };
        plans.push((qc, processor));
    }
    let mut workers = Vec::new();
    for (qc, processor) in plans {
        let q = config.queue(backend, &qc.name)?;
        // The configuration is the source of truth at start: a limit it no longer sets is
        // cleared from the backend, or every worker (Node's too) would stay throttled.
        q.set_rate_limit(
            qc.rate_limit
                .map(|r| (r.max, Duration::from_millis(r.duration_ms))),
        )
        .await?;
        for (id, (schedule, name, data)) in &qc.schedulers {
            q.upsert_scheduler(
                id,
                schedule.clone(),
                name,
                data.clone(),
                JobOptions::default(),
            )
            .await
            .map_err(|e| match e {
                Error::InvalidInput { message, .. } => {
                    Error::invalid(format!("queues.{}.schedulers.{id}", qc.name), message)
                }
                other => other,
            })?;
        }
        let w = q
            .worker()
            .fallback(processor)
            .concurrency(qc.concurrency)
            .lock_duration(qc.lock_duration)
            .stalled_interval(qc.stalled_interval)
            .max_stalled_count(qc.max_stalled_count)
            .timeout(qc.timeout)
            .dead_letter(qc.dlq)
            .start()
            .await?;
        workers.push(w);
    }
    Ok(workers)
}

/// Closes workers together, each finishing in-flight jobs within `deadline`.
pub async fn close_all(workers: Vec<Worker>, deadline: Duration) -> Result<()> {
    let closing = workers.into_iter().map(|w| w.close(deadline));
    for r in futures::future::join_all(closing).await {
        r?;
    }
    Ok(())
}
