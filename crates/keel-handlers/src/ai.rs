//! The `ai` handler: one OpenAI-compatible chat completion per attempt (OpenRouter by
//! default, as the seeds' `AI_PROVIDER=openrouter`).
//!
//! ```toml
//! [queues.ai-content.handlers.summarize_article]
//! kind = "ai"
//! provider = "openrouter"          # openrouter | openai | any name with base_url
//! base_url = "https://openrouter.ai/api/v1"   # the provider's default when absent
//! api_key_env = "OPENROUTER_API_KEY"          # the provider's default when absent
//! model = "openai/gpt-4o-mini"
//! system = "You are an editor."     # templates over the job's data
//! prompt = "Summarize: {{ body }}"
//! response = "text"                 # text | json (the answer parsed as JSON)
//! timeout_ms = 60000
//! max_tokens = 1024
//! temperature = 0.3
//! max_prompt_chars = 100000         # a longer prompt is refused, unrecoverably
//! max_record_chars = 20000          # messages are recorded up to this, masked
//! prices = { "openai/gpt-4o-mini" = { prompt = 0.15, completion = 0.60 } }  # USD / 1M tokens
//! ```
//! 2xx completes (the answer is the job's return value); 408, 429, 5xx, timeouts, refused
//! connections and malformed answers retry, not before a `Retry-After`; other 4xx are
//! unrecoverable. Every attempt is an AI run record with its messages and events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_core::{Error, JobContext, JobError, Processor, Result};
use keel_records::messages::{NewAiEvent, NewAiMessage, NewAiRun};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::template::Templates;
use crate::{settings, trace_id, Shared};
use protocol::{detail, strip_fence, Answer, Answered, Message, Request, Requested, Retried};

mod protocol;

/// Most bytes of a provider's answer read.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_provider")]
    provider: String,
    base_url: Option<String>,
    api_key_env: Option<String>,
    model: String,
    system: Option<String>,
    prompt: String,
    #[serde(default)]
    response: Format,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    max_tokens: Option<u32>,
    temperature: Option<f64>,
    #[serde(default = "default_max_prompt")]
    max_prompt_chars: usize,
    #[serde(default = "default_max_record")]
    max_record_chars: usize,
    #[serde(default)]
    prices: BTreeMap<String, Price>,
}

/// What the job returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Format {
    #[default]
    Text,
    Json,
}

/// US dollars per million tokens.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct Price {
    prompt: f64,
    completion: f64,
}

fn default_provider() -> String {
    "openrouter".into()
}
fn default_timeout_ms() -> u64 {
    60_000
}
fn default_max_prompt() -> usize {
    100_000
}
fn default_max_record() -> usize {
    20_000
}

/// A provider's base URL and API key variable.
fn provider_defaults(provider: &str) -> Option<(&'static str, &'static str)> {
    match provider {
        "openrouter" => Some(("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY")),
        "openai" => Some(("https://api.openai.com/v1", "OPENAI_API_KEY")),
        _ => None,
    }
}

const SYSTEM: &str = "system.txt";
const PROMPT: &str = "prompt.txt";

struct AiHandler {
    queue: String,
    tenant_id: Option<String>,
    provider: String,
    url: String,
    /// `url` parsed once.
    target: reqwest::Url,
    /// `Authorization: Bearer <key>`, made once (and marked sensitive: never printed).
    auth: reqwest::header::HeaderValue,
    model: String,
    format: Format,
    timeout: Duration,
    max_tokens: Option<u32>,
    temperature: Option<f64>,
    max_prompt: usize,
    max_record: usize,
    price: Option<Price>,
    templates: Templates,
    /// The names the templates read.
    roots: std::collections::BTreeSet<String>,
    shared: Arc<Shared>,
}

/// Builds the handler configured at `key`.
pub(crate) fn build(
    shared: &Arc<Shared>,
    queue: &str,
    key: &str,
    table: &toml::Table,
) -> Result<Processor> {
    let s: Settings = settings(key, table)?;
    let k = |f: &str| format!("{key}.{f}");
    let defaults = provider_defaults(&s.provider);
    let base = match (&s.base_url, defaults) {
        (Some(u), _) => u.clone(),
        (None, Some((u, _))) => u.to_string(),
        (None, None) => {
            return Err(Error::invalid(
                k("base_url"),
                format!("provider {:?} has no default: set base_url", s.provider),
            ))
        }
    };
    let parsed =
        reqwest::Url::parse(&base).map_err(|e| Error::invalid(k("base_url"), e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::invalid(
            k("base_url"),
            "must be an http:// or https:// URL",
        ));
    }
    let key_env = match (&s.api_key_env, defaults) {
        (Some(v), _) => v.clone(),
        (None, Some((_, v))) => v.to_string(),
        (None, None) => {
            return Err(Error::invalid(
                k("api_key_env"),
                format!("provider {:?} has no default: set api_key_env", s.provider),
            ))
        }
    };
    let api_key = (shared.env)(&key_env).ok_or_else(|| {
        Error::invalid(
            k("api_key_env"),
            format!("environment variable {key_env} is not set"),
        )
    })?;
    if s.model.trim().is_empty() {
        return Err(Error::invalid(k("model"), "must not be empty"));
    }
    if s.timeout_ms == 0 {
        return Err(Error::invalid(k("timeout_ms"), "must be at least 1"));
    }
    if let Some(t) = s.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(Error::invalid(k("temperature"), "must be between 0 and 2"));
        }
    }
    if s.max_tokens == Some(0) {
        return Err(Error::invalid(k("max_tokens"), "must be at least 1"));
    }
    if s.max_prompt_chars == 0 || s.max_record_chars == 0 {
        return Err(Error::invalid(
            k("max_prompt_chars"),
            "bounds must be at least 1",
        ));
    }
    for (model, p) in &s.prices {
        if !(p.prompt >= 0.0 && p.completion >= 0.0) {
            return Err(Error::invalid(
                k(&format!("prices.{model}")),
                "prices are US dollars per million tokens, at least 0",
            ));
        }
    }
    let mut templates = Templates::new();
    if let Some(system) = &s.system {
        templates
            .add(SYSTEM, system)
            .map_err(|e| Error::invalid(k("system"), e))?;
    }
    templates
        .add(PROMPT, &s.prompt)
        .map_err(|e| Error::invalid(k("prompt"), e))?;
    let url = format!("{}/chat/completions", base.trim_end_matches('/'));
    let handler = Arc::new(AiHandler {
        queue: queue.to_string(),
        tenant_id: shared.tenants.get(queue).cloned(),
        provider: s.provider,
        target: reqwest::Url::parse(&url)
            .map_err(|e| Error::invalid(k("base_url"), e.to_string()))?,
        url,
        auth: {
            let mut v = reqwest::header::HeaderValue::try_from(format!("Bearer {api_key}"))
                .map_err(|_| {
                    Error::invalid(
                        k("api_key_env"),
                        format!("{key_env} holds characters an HTTP header cannot carry"),
                    )
                })?;
            v.set_sensitive(true);
            v
        },
        price: s.prices.get(&s.model).copied(),
        model: s.model,
        format: s.response,
        timeout: Duration::from_millis(s.timeout_ms),
        max_tokens: s.max_tokens,
        temperature: s.temperature,
        max_prompt: s.max_prompt_chars,
        max_record: s.max_record_chars,
        roots: templates.roots(),
        templates,
        shared: shared.clone(),
    });
    Ok(Arc::new(move |ctx| {
        let h = handler.clone();
        Box::pin(async move { h.run(ctx).await })
    }))
}

/// What one attempt produced, for the record.
#[derive(Default)]
struct Call {
    /// Whether anything reads the record (else no events are made).
    observed: bool,
    messages: Vec<(&'static str, String)>,
    prompt_tokens: i64,
    completion_tokens: i64,
    http_status: Option<i64>,
    events: Vec<NewAiEvent>,
}

impl Call {
    fn event(&mut self, kind: &str, message: impl FnOnce() -> String) {
        if self.observed {
            self.events.push(NewAiEvent {
                at: keel::now_ms() as i64,
                kind: kind.into(),
                message: message(),
            });
        }
    }
}

impl AiHandler {
    async fn run(&self, ctx: JobContext) -> std::result::Result<Value, JobError> {
        let started_at = keel::now_ms() as i64;
        let started = Instant::now();
        // A run recorder around this attempt takes the record onto the attempt's run row;
        // without one the handler writes its own (when it has records or an observer).
        let note = ctx.run_note.clone();
        let mut call = Call {
            observed: note.is_some() || self.shared.observed(),
            ..Call::default()
        };
        let result = self.call(&ctx, &mut call).await;
        if !call.observed {
            return result;
        }
        let latency_ms = started.elapsed().as_millis() as i64;
        let job = &ctx.job;
        let (status, error) = match &result {
            Ok(_) => ("completed", None),
            Err(e) if e.is_final_for(job) => ("failed", Some(e.message().to_string())),
            Err(e) => ("retrying", Some(e.message().to_string())),
        };
        let cost_usd = self
            .price
            .map(|p| {
                (call.prompt_tokens as f64 * p.prompt
                    + call.completion_tokens as f64 * p.completion)
                    / 1_000_000.0
            })
            .unwrap_or(0.0);
        // The call's end (`completed` or `failed`, with its tokens, cost and time) is the
        // record itself: the store makes that last event from it.
        let messages = std::mem::take(&mut call.messages)
            .into_iter()
            .map(|(role, content)| {
                let masked = keel_core::secrets::mask_string(content);
                // Bytes bound characters: most messages are counted by their length alone.
                let truncated =
                    masked.len() > self.max_record && masked.chars().count() > self.max_record;
                NewAiMessage {
                    role: role.to_string(),
                    content: if truncated {
                        masked.chars().take(self.max_record).collect()
                    } else {
                        masked
                    },
                    truncated,
                }
            })
            .collect();
        let record = NewAiRun {
            tenant_id: self.tenant_id.clone(),
            queue: self.queue.clone(),
            job_id: job.id.clone(),
            job_name: job.name.clone(),
            attempt: job.attempts_made as i64 + 1,
            provider: self.provider.clone(),
            model: self.model.clone(),
            status: status.into(),
            prompt_tokens: call.prompt_tokens,
            completion_tokens: call.completion_tokens,
            cost_usd,
            latency_ms,
            http_status: call.http_status,
            error,
            // The run's own, when a recorder writes it.
            trace_id: if note.is_some() {
                String::new()
            } else {
                trace_id(&job.data)
            },
            started_at,
            finished_at: started_at + latency_ms,
            messages,
            events: std::mem::take(&mut call.events),
        };
        match note {
            Some(note) => note.put(record),
            None => self.shared.ai_called(record),
        }
        result
    }

    async fn call(
        &self,
        ctx: &JobContext,
        call: &mut Call,
    ) -> std::result::Result<Value, JobError> {
        let job = &ctx.job;
        let value = crate::template_value("ai", &self.queue, job, &self.roots)?;
        // The context as JSON, made only to name an undefined variable.
        let data = || crate::template_context("ai", &self.queue, job).unwrap_or_default();
        if self.templates.has(SYSTEM) {
            let system = self
                .templates
                .render_value(SYSTEM, &value, data)
                .map_err(JobError::unrecoverable)?;
            call.messages.push(("system", system));
        }
        let prompt = self
            .templates
            .render_value(PROMPT, &value, data)
            .map_err(JobError::unrecoverable)?;
        call.messages.push(("user", prompt));
        let size: usize = call.messages.iter().map(|(_, c)| c.chars().count()).sum();
        if size > self.max_prompt {
            return Err(JobError::unrecoverable(format!(
                "the prompt is {size} characters; max_prompt_chars is {}",
                self.max_prompt
            )));
        }
        let body = Request {
            model: &self.model,
            messages: call
                .messages
                .iter()
                .map(|(role, content)| Message { role, content })
                .collect(),
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            response_format: (self.format == Format::Json).then(|| json!({"type": "json_object"})),
        };
        let body = serde_json::to_vec(&body)
            .map_err(|e| JobError::unrecoverable(format!("encoding the request: {e}")))?;
        call.event("request", || {
            detail(&Requested {
                model: &self.model,
                prompt_chars: size,
                url: &self.url,
            })
        });
        let sent = self
            .shared
            .http
            .post(self.target.clone())
            .timeout(self.timeout)
            .header(reqwest::header::AUTHORIZATION, self.auth.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Err(JobError::retry(format!(
                    "{} timed out after {} ms",
                    self.provider,
                    self.timeout.as_millis()
                )))
            }
            Err(e) => {
                return Err(JobError::retry(format!(
                    "calling {}: {}",
                    self.provider,
                    keel_core::secrets::mask_str(&e.to_string())
                )))
            }
        };
        let status = resp.status();
        call.http_status = Some(status.as_u16() as i64);
        let retry_after = keel::handlers::http::retry_after(resp.headers());
        // The request's timeout runs on until the answer's last byte is read.
        let mut bytes = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    bytes.extend_from_slice(&c);
                    if bytes.len() > MAX_ANSWER_BYTES {
                        return Err(JobError::retry(format!(
                            "{}'s answer is over {MAX_ANSWER_BYTES} bytes",
                            self.provider
                        )));
                    }
                }
                Ok(None) => break,
                Err(e) if e.is_timeout() => {
                    return Err(JobError::retry(format!(
                        "{}'s answer timed out after {} ms",
                        self.provider,
                        self.timeout.as_millis()
                    )))
                }
                Err(e) => {
                    return Err(JobError::retry(format!(
                        "reading {}'s answer: {e}",
                        self.provider
                    )))
                }
            }
        }
        call.event("response", || {
            detail(&Answered {
                bytes: bytes.len(),
                status: status.as_u16(),
            })
        });
        if !status.is_success() {
            let excerpt: String = String::from_utf8_lossy(&bytes).chars().take(300).collect();
            let message = format!("{} answered {status}: {excerpt}", self.provider);
            if status.is_client_error()
                && status != StatusCode::REQUEST_TIMEOUT
                && status != StatusCode::TOO_MANY_REQUESTS
            {
                return Err(JobError::unrecoverable(message));
            }
            let err = JobError::retry(message);
            return Err(match retry_after {
                Some(wait) => {
                    call.event("retry", || {
                        detail(&Retried {
                            retry_after_ms: wait.as_millis() as u64,
                        })
                    });
                    err.with_retry_after(wait)
                }
                None => err,
            });
        }
        let answer: Answer = serde_json::from_slice(&bytes).map_err(|e| {
            JobError::retry(if e.is_data() {
                format!("{}'s answer is not a chat completion: {e}", self.provider)
            } else {
                format!("{}'s answer is not JSON: {e}", self.provider)
            })
        })?;
        (call.prompt_tokens, call.completion_tokens) = answer.tokens();
        let content = answer.into_content().ok_or_else(|| {
            JobError::retry(format!(
                "{}'s answer has no choices[0].message.content",
                self.provider
            ))
        })?;
        call.messages.push(("assistant", content.clone()));
        match self.format {
            Format::Text => Ok(Value::String(content)),
            Format::Json => serde_json::from_str(strip_fence(&content)).map_err(|e| {
                JobError::retry(format!("the model's answer is not the JSON asked for: {e}"))
            }),
        }
    }
}
