//! Handlers a server runs from configuration, without Rust code.
//!
//! # Layout
//! - [`http`] — POST each job to a URL (HMAC-signed, timeout, 2xx completes, 4xx unrecoverable,
//!   408/429/5xx/timeouts retried honouring `Retry-After`).
//! - [`HandlerFactory`] — builds a configured handler's processor; [`Builtin`] (`http`, `log`)
//!   and [`no_handler`] (a job name nothing handles fails unrecoverably).

pub mod http;

use std::time::Duration;

use keel_core::{Error, JobError, Processor, Result};
use serde_json::json;

use crate::config::{HandlerConfig, QueueConfig};
use crate::worker::handler_fn;

/// Builds the processor of a configured handler: [`Builtin`] knows `http` and `log`;
/// `keel-handlers` adds `email`, `ai` and `sql` (which write records) over it.
pub trait HandlerFactory: Send + Sync {
    /// The processor for `handler` on `queue`; `key` is where it is configured
    /// (`queues.Q.handler` or `queues.Q.handlers.JOB`), for errors.
    fn build(&self, queue: &QueueConfig, key: &str, handler: &HandlerConfig) -> Result<Processor>;
}

/// The handlers of this crate, `http` and `log`, with secrets from the process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Builtin;

impl HandlerFactory for Builtin {
    fn build(&self, queue: &QueueConfig, key: &str, handler: &HandlerConfig) -> Result<Processor> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        processor_for(handler, &queue.name, key, &env)
    }
}

/// What runs a job whose name has no handler: an unrecoverable failure naming the job name
/// and where its handler would be configured (the job goes to the DLQ; it never completes).
pub fn no_handler(queue: &str) -> Processor {
    let queue: std::sync::Arc<str> = queue.into();
    handler_fn(move |ctx| {
        let queue = queue.clone();
        async move {
            Err(JobError::unrecoverable(format!(
                "no handler for job name {:?} on queue {queue:?}: configure queues.{queue}.handlers.{} or queues.{queue}.handler",
                ctx.job.name, ctx.job.name
            )))
        }
    })
}

/// `p` under a per-key rate limit: a job `limiter`'s policy does not admit yet goes back to
/// delayed until the window admits it ([`JobError::Delay`]: not failed, no attempt counted,
/// the reason in its log). A job without the key's field fails unrecoverably (naming it);
/// when the limiter's backend cannot answer, its policy's `on_failure` decides (open runs
/// the job; closed retries it).
pub fn limited(
    p: Processor,
    queue: &str,
    limit: crate::config::JobLimit,
    limiter: crate::RateLimiter,
) -> Processor {
    let queue: std::sync::Arc<str> = queue.into();
    let limit = std::sync::Arc::new(limit);
    std::sync::Arc::new(move |ctx| {
        let (p, queue, limit, limiter) = (p.clone(), queue.clone(), limit.clone(), limiter.clone());
        Box::pin(async move {
            let key = limit
                .key_of(&queue, &ctx.job)
                .map_err(|e| JobError::unrecoverable(format!("limit key {}: {e}", limit.key)))?;
            match limiter.check(&limit.policy, &key).await {
                Ok(d) if d.allowed => p(ctx).await,
                Ok(d) => {
                    let wait = d
                        .retry_after
                        .unwrap_or(d.reset_after)
                        .max(Duration::from_millis(1));
                    Err(JobError::delay(
                        format!(
                            "rate limit {} for {key}: {} per window used; next slot in {} ms",
                            limit.policy,
                            d.limit,
                            wait.as_millis()
                        ),
                        wait,
                    ))
                }
                Err(e) => Err(JobError::retry(format!(
                    "rate limit {} unavailable: {e}",
                    limit.policy
                ))),
            }
        })
    })
}

/// The processor for the built-in `handler` on `queue`, configured at `key`. `env` resolves
/// `secret_env`.
pub fn processor_for(
    handler: &HandlerConfig,
    queue: &str,
    key: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Processor> {
    match handler {
        HandlerConfig::Http {
            url,
            timeout_ms,
            secret_env,
            ..
        } => {
            let secret = match secret_env {
                Some(var) => Some(env(var).ok_or_else(|| {
                    Error::invalid(
                        format!("{key}.secret_env"),
                        format!("environment variable {var} is not set"),
                    )
                })?),
                None => None,
            };
            Ok(
                http::HttpHandler::new(url, Duration::from_millis(*timeout_ms), secret)?
                    .into_processor(queue),
            )
        }
        HandlerConfig::External { kind, .. } => Err(Error::invalid(
            format!("{key}.kind"),
            format!("the {kind} handler writes records: it runs under keel serve or keel worker"),
        )),
        HandlerConfig::Log => {
            let queue = queue.to_string();
            Ok(handler_fn(move |ctx| {
                let queue = queue.clone();
                async move {
                    tracing::info!(
                        queue,
                        job_id = ctx.job.id,
                        name = ctx.job.name,
                        // Masked as the audit log is: job data often carries credentials.
                        data = %keel_core::secrets::mask(&ctx.job.data),
                        attempt = ctx.job.attempts_made + 1,
                        "job"
                    );
                    Ok(json!({"logged": true}))
                }
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Collects what the `log` handler writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_log_handler_masks_job_data() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let backend = crate::Backend::memory();
                let queue = crate::Queue::new(&backend, "logged").unwrap();
                let job = queue
                    .add(
                        "signup",
                        json!({"email": "a@example.com", "password": "hunter2",
                               "note": "url redis://u:pw-secret@h:1 and Bearer tok-123"}),
                        Default::default(),
                    )
                    .await
                    .unwrap();
                let processor = processor_for(
                    &HandlerConfig::Log,
                    "logged",
                    "queues.logged.handler",
                    &|_| None,
                )
                .unwrap();
                let worker = queue.worker().fallback(processor).start().await.unwrap();
                for _ in 0..200 {
                    if queue.job_state(&job.id).await.unwrap()
                        == Some(keel_core::JobState::Completed)
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                worker.close(Duration::from_secs(1)).await.unwrap();
            });
        });
        let out = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(out.contains("a@example.com"), "the job was logged: {out}");
        for secret in ["hunter2", "pw-secret", "tok-123"] {
            assert!(!out.contains(secret), "{secret} reached the log: {out}");
        }
        assert!(out.contains("***"), "{out}");
    }
}
