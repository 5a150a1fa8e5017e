//! Handlers a server runs from configuration, without Rust code.
//!
//! # Layout
//! - [`http`]: POST each job to a URL (HMAC-signed, timeout, 2xx completes, 4xx unrecoverable,
//!   408/429/5xx/timeouts retried honouring `Retry-After`).
//! - [`processor_for`]: the processor for a queue's configured handler.

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
                        data = %ctx.job.data,
                        attempt = ctx.job.attempts_made + 1,
                        "job"
                    );
                    Ok(json!({"logged": true}))
                }
            }))
        }
    }
}
