//! Handlers a server runs from configuration, without Rust code.
//!
//! # Layout
//! - [`http`] — POST each job to a URL (HMAC-signed, timeout, 2xx completes, 4xx unrecoverable,
//!   408/429/5xx/timeouts retried honouring `Retry-After`).
//! - [`processor_for`] — the processor for a queue's configured handler.

pub mod http;

use std::time::Duration;

use keel_core::{Error, Processor, Result};
use serde_json::json;

use crate::config::HandlerConfig;
use crate::worker::handler_fn;

/// The processor for `handler` on `queue`. `env` resolves `secret_env`.
pub fn processor_for(
    handler: &HandlerConfig,
    queue: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Processor> {
    match handler {
        HandlerConfig::Http {
            url,
            timeout_ms,
            secret_env,
        } => {
            let secret = match secret_env {
                Some(var) => Some(env(var).ok_or_else(|| {
                    Error::invalid(
                        format!("queues.{queue}.handler.secret_env"),
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
                let processor = processor_for(&HandlerConfig::Log, "logged", &|_| None).unwrap();
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
