//! The `http` handler (the seeds' plugin webhooks): lets any language process jobs.
//!
//! Each attempt POSTs `{"id","queue","name","data","attempt","timestamp"}` with headers
//! `X-Keel-Job-Id`, `X-Keel-Queue`, `X-Keel-Attempt`, and, when a secret is configured,
//! `X-Keel-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>`.
//! - 2xx completes the job; its return value is the response body, parsed as JSON when it is
//!   JSON, else a string, read up to 64 KiB.
//! - A failing answer's JSON `stack` (or `errorStack`) is kept as the failure's stack (the job's
//!   stacktrace and its run record's `error_stack`).
//! - 4xx other than 408 and 429 is unrecoverable: the request itself is wrong, retrying cannot
//!   help (no more attempts; the job goes to its DLQ).
//! - 408, 429, 5xx, other statuses, timeouts and connection errors are retried with the job's
//!   backoff, and not before a `Retry-After` the server sent.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use keel_core::{now_ms, Error, JobContext, JobError, Processor, Result};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;

/// Most response body bytes kept as the return value.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Characters of a failing response body quoted in the error.
const ERROR_EXCERPT_CHARS: usize = 200;

/// POSTs each job to a URL.
#[derive(Clone)]
pub struct HttpHandler {
    url: String,
    /// `url` parsed once (parsing it for every request was a measurable part of a job).
    target: reqwest::Url,
    timeout: Duration,
    secret: Option<String>,
    client: reqwest::Client,
}

impl std::fmt::Debug for HttpHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpHandler")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .finish()
    }
}

impl HttpHandler {
    /// A handler posting to `url` (http or https) with a per-request `timeout`, signing bodies
    /// with `secret` when given.
    pub fn new(url: &str, timeout: Duration, secret: Option<String>) -> Result<HttpHandler> {
        let parsed = reqwest::Url::parse(url).map_err(|e| Error::invalid("url", e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::invalid("url", "must be an http:// or https:// URL"));
        }
        if timeout.is_zero() {
            return Err(Error::invalid("timeout_ms", "must be at least 1"));
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("keel/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Backend(format!("building the HTTP client: {e}")))?;
        Ok(HttpHandler {
            url: url.to_string(),
            target: parsed,
            timeout,
            secret: secret.filter(|s| !s.is_empty()),
            client,
        })
    }

    /// The processor for jobs of `queue`.
    pub fn into_processor(self, queue: &str) -> Processor {
        let this = Arc::new(self);
        let queue: Arc<str> = queue.into();
        Arc::new(move |ctx| {
            let this = this.clone();
            let queue = queue.clone();
            Box::pin(async move { this.call(&queue, ctx).await })
        })
    }

    async fn call(&self, queue: &str, ctx: JobContext) -> std::result::Result<Value, JobError> {
        let job = &ctx.job;
        let attempt = job.attempts_made + 1;
        let body = serde_json::to_vec(&json!({
            "id": job.id,
            "queue": queue,
            "name": job.name,
            "data": job.data,
            "attempt": attempt,
            "timestamp": now_ms(),
        }))
        .map_err(|e| JobError::unrecoverable(format!("encoding the job: {e}")))?;
        let mut req = self
            .client
            .post(self.target.clone())
            .timeout(self.timeout)
            .header("Content-Type", "application/json")
            .header("X-Keel-Job-Id", job.id.as_str())
            .header("X-Keel-Queue", queue)
            .header("X-Keel-Attempt", attempt.to_string());
        if let Some(secret) = &self.secret {
            req = req.header("X-Keel-Signature", signature(secret, &body));
        }
        let mut resp = match req.body(body).send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Err(JobError::retry(format!(
                    "POST {} timed out after {} ms",
                    self.url,
                    self.timeout.as_millis()
                )))
            }
            Err(e) => return Err(JobError::retry(format!("POST {} failed: {e}", self.url))),
        };
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        let mut bytes = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_RESPONSE_BYTES - bytes.len();
                    bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if bytes.len() >= MAX_RESPONSE_BYTES {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) if status.is_success() => {
                    return Err(JobError::retry(format!(
                        "reading the response of POST {}: {e}",
                        self.url
                    )))
                }
                Err(_) => break,
            }
        }
        if status.is_success() {
            return Ok(serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())));
        }
        let excerpt: String = String::from_utf8_lossy(&bytes)
            .chars()
            .take(ERROR_EXCERPT_CHARS)
            .collect();
        let message = format!("POST {} answered {status}: {excerpt}", self.url);
        // A JSON error body's `stack` (or `errorStack`) is the failure's stack trace.
        let stack = serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| {
            ["stack", "errorStack"]
                .iter()
                .find_map(|k| v.get(*k).and_then(Value::as_str).map(str::to_string))
        });
        let with_stack = |e: JobError| match &stack {
            Some(s) => e.with_stack(s.clone()),
            None => e,
        };
        if status.is_client_error()
            && status != StatusCode::REQUEST_TIMEOUT
            && status != StatusCode::TOO_MANY_REQUESTS
        {
            return Err(with_stack(JobError::unrecoverable(message)));
        }
        let err = with_stack(JobError::retry(message));
        Err(match retry_after {
            Some(wait) => err.with_retry_after(wait),
            None => err,
        })
    }
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any size");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Parses `Retry-After`: delta seconds or an HTTP date (also used by the `ai` handler).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let ms = at.timestamp_millis() - now_ms() as i64;
    Some(Duration::from_millis(ms.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(
            retry_after(&h),
            Some(Duration::ZERO),
            "a past date means now"
        );
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn only_http_urls_are_accepted() {
        assert_eq!(
            HttpHandler::new("ftp://x", Duration::from_secs(1), None)
                .unwrap_err()
                .field(),
            Some("url")
        );
        assert_eq!(
            HttpHandler::new("not a url", Duration::from_secs(1), None)
                .unwrap_err()
                .field(),
            Some("url")
        );
        assert!(HttpHandler::new("http://127.0.0.1:1/h", Duration::from_secs(1), None).is_ok());
    }
}
