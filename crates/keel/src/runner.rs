//! Starting the workers a configuration declares: rate limits, schedulers, handlers, worker
//! options — shared by `keel worker` and `keel serve`.

use std::time::Duration;

use keel_core::{Error, JobOptions, Processor, Result};

use crate::config::{Config, QueueConfig};
use crate::handlers::{limited, no_handler, HandlerFactory};
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
            .filter(|(_, q)| q.handler.is_some() || !q.handlers.is_empty())
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
/// Handlers are built by `factory` (and their settings checked) before anything starts: the
/// queue's `handlers` by job name, its `handler` for the other names (without one, those
/// fail unrecoverably naming the job name). `wrap` wraps each.
pub async fn start_workers(
    config: &Config,
    backend: &Backend,
    names: &[String],
    factory: &dyn HandlerFactory,
    wrap: Option<Wrap<'_>>,
) -> Result<Vec<Worker>> {
    let needs_limiter = names.iter().any(|n| {
        let qc = config.queue_config(n);
        qc.limit.is_some() || !qc.job_limits.is_empty()
    });
    let limiter = if needs_limiter {
        Some(config.rate_limiter(backend)?)
    } else {
        None
    };
    let mut plans = Vec::new();
    for name in names {
        let qc = config.queue_config(name);
        if qc.handler.is_none() && qc.handlers.is_empty() {
            return Err(Error::invalid(
                format!("queues.{name}.handler"),
                "this queue has no handler to run",
            ));
        }
        // The limit is inside the wrappers: a postponement is seen (and counted) as one.
        let wrapped = |p: Processor, job: Option<&str>| {
            let limit = job.and_then(|j| qc.job_limits.get(j)).or(qc.limit.as_ref());
            let p = match (limit, &limiter) {
                (Some(l), Some(r)) => limited(p, name, l.clone(), r.clone()),
                _ => p,
            };
            match wrap {
                Some(w) => w(&qc, p),
                None => p,
            }
        };
        let fallback = match &qc.handler {
            Some(h) => factory.build(&qc, &format!("queues.{name}.handler"), h)?,
            None => no_handler(name),
        };
        let fallback = wrapped(fallback, None);
        let mut routes = Vec::new();
        for (job, h) in &qc.handlers {
            let p = factory.build(&qc, &format!("queues.{name}.handlers.{job}"), h)?;
            routes.push((job.clone(), wrapped(p, Some(job))));
        }
        plans.push((qc, fallback, routes));
    }
    let mut workers = Vec::new();
    for (qc, fallback, routes) in plans {
        let q = config.queue(backend, &qc.name)?;
        // The configuration is the source of truth at start: a limit it no longer sets is
        // cleared from the backend, or every worker (Node's too) would stay throttled.
        q.set_rate_limit(
            qc.rate_limit
                .map(|r| (r.max, Duration::from_millis(r.duration_ms))),
        )
        .await?;
        q.set_global_concurrency(qc.global_concurrency).await?;
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
        let mut builder = q.worker().fallback(fallback);
        for (job, p) in routes {
            builder = builder.handler(&job, p);
        }
        let w = builder
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
