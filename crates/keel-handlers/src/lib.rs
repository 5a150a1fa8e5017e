//! Handlers that do a seed's real work from configuration alone and write what they did:
//! `email` (SMTP, templates, one-time codes), `ai` (OpenAI-compatible chat completions) and
//! `sql` (a configured statement on a named database). `keel serve` and `keel worker` build
//! every configured handler through [`Handlers`], which falls back to keel's own `http` and
//! `log`.
//!
//! # Layout
//! - [`template`] — templates over a job's data (minijinja, strict about undefined variables).
//! - [`email`] — the `email` handler.
//! - [`ai`] — the `ai` handler.
//! - [`sql`] — the `sql` handler.
//! - [`smtp`] — the SMTP connection pool.
//! - [`records`] — the record writer (off the hot path).
//! - `testing` (feature `testing`): a real SMTP server for tests.

pub mod ai;
pub mod email;
pub mod records;
pub mod smtp;
pub mod sql;
pub mod template;
#[cfg(feature = "testing")]
pub mod testing;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel::config::{HandlerConfig, QueueConfig};
use keel::handlers::{Builtin, HandlerFactory};
use keel::{Backend, RateLimiter};
use keel_core::{Error, Processor, Result};
use keel_records::messages::{NewAiRun, NewEmail};
use keel_records::MessageStore;
use serde::de::DeserializeOwned;

/// What a handler did, for live views (the server's realtime socket).
#[derive(Debug, Clone)]
pub enum HandlerEvent {
    /// An email attempt (`email_status`).
    Email(NewEmail),
    /// An AI call attempt (`ai_task`), with its record id when recorded.
    Ai(NewAiRun, Option<i64>),
}

/// Receives [`HandlerEvent`]s, a written batch at a time.
pub type Observer = Arc<dyn Fn(&[HandlerEvent]) + Send + Sync>;

/// Resolves environment variables (the process's, or a test's).
pub type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// What every handler shares: the backend (one-time codes), the records, the tenants of the
/// queues, the live-view observer, SMTP pools by URL.
pub struct Shared {
    backend: Backend,
    records: Option<Arc<dyn MessageStore>>,
    tenants: HashMap<String, String>,
    observer: Option<Observer>,
    limiter: Option<RateLimiter>,
    env: Env,
    base_dir: PathBuf,
    smtp: Mutex<HashMap<String, email::Smtp>>,
    http: reqwest::Client,
    writer: std::sync::OnceLock<records::RecordWriter>,
}

impl Shared {
    /// One pool per SMTP URL, whatever the handlers using it.
    fn smtp(
        &self,
        url: &str,
        timeout: Duration,
        pool: u32,
    ) -> std::result::Result<email::Smtp, String> {
        let mut pools = self.smtp.lock().expect("not poisoned");
        if let Some(t) = pools.get(url) {
            return Ok(t.clone());
        }
        let t = email::transport(url, timeout, pool)?;
        pools.insert(url.to_string(), t.clone());
        Ok(t)
    }

    /// The record writer, started at the first record (the builder is done by then).
    fn writer(&self) -> Option<&records::RecordWriter> {
        let store = self.records.as_ref()?;
        Some(
            self.writer
                .get_or_init(|| records::RecordWriter::start(store.clone(), self.observer.clone())),
        )
    }

    /// Whether anything reads what a handler did (records or a live view): when nothing
    /// does, handlers skip building it.
    fn observed(&self) -> bool {
        self.records.is_some() || self.observer.is_some()
    }

    fn email_sent(&self, record: NewEmail) {
        match self.writer() {
            // The observer hears of it once it is written.
            Some(w) => w.submit(records::Record::Email(record)),
            None => {
                if let Some(o) = &self.observer {
                    o(&[HandlerEvent::Email(record)]);
                }
            }
        }
    }

    fn ai_called(&self, record: NewAiRun) {
        match self.writer() {
            Some(w) => w.submit(records::Record::Ai(record)),
            None => {
                if let Some(o) = &self.observer {
                    o(&[HandlerEvent::Ai(record, None)]);
                }
            }
        }
    }
}

/// Builds every configured handler: `email`, `ai` and `sql` here, the rest by keel's
/// [`Builtin`].
#[derive(Clone)]
pub struct Handlers {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handlers")
            .field("records", &self.shared.records.is_some())
            .finish()
    }
}

impl Handlers {
    /// Handlers over `backend`, secrets from the process environment, relative paths from
    /// the working directory.
    pub fn new(backend: &Backend) -> Handlers {
        Handlers {
            shared: Arc::new(Shared {
                backend: backend.clone(),
                records: None,
                tenants: HashMap::new(),
                observer: None,
                limiter: None,
                env: Arc::new(|k| std::env::var(k).ok().filter(|v| !v.is_empty())),
                base_dir: PathBuf::from("."),
                smtp: Mutex::new(HashMap::new()),
                writer: std::sync::OnceLock::new(),
                http: reqwest::Client::builder()
                    .user_agent(concat!("keel/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .expect("a plain HTTP client builds"),
            }),
        }
    }

    fn with(mut self, f: impl FnOnce(&mut Shared)) -> Handlers {
        f(Arc::get_mut(&mut self.shared).expect("configured before use"));
        self
    }

    /// Records sends and calls in `store`.
    pub fn records(self, store: Arc<dyn MessageStore>) -> Handlers {
        self.with(|s| s.records = Some(store))
    }

    /// The tenant id of each tenant-bound queue (by queue name), written into records.
    pub fn tenants(self, tenants: HashMap<String, String>) -> Handlers {
        self.with(|s| s.tenants = tenants)
    }

    /// Told of every send and call.
    pub fn observer(self, observer: Observer) -> Handlers {
        self.with(|s| s.observer = Some(observer))
    }

    /// The rate limiter one-time code checks use.
    pub fn limiter(self, limiter: RateLimiter) -> Handlers {
        self.with(|s| s.limiter = Some(limiter))
    }

    /// Environment lookups (API keys, SMTP URLs) through `env`.
    pub fn env(self, env: Env) -> Handlers {
        self.with(|s| s.env = env)
    }

    /// Writes the records still buffered (at shutdown, after the workers closed).
    pub async fn close(&self) {
        if let Some(w) = self.shared.writer.get() {
            w.close().await;
        }
    }

    /// Waits until every record handed over so far is written (or counted as lost).
    pub async fn flush(&self) {
        if let Some(w) = self.shared.writer.get() {
            w.flush().await;
        }
    }

    /// Records written, dropped (buffer full) and lost (failed writes) so far.
    pub fn record_counts(&self) -> (u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        match self.shared.writer.get() {
            Some(w) => {
                let c = w.counts();
                (
                    c.written.load(Relaxed),
                    c.dropped.load(Relaxed),
                    c.failed.load(Relaxed),
                )
            }
            None => (0, 0, 0),
        }
    }

    /// Relative template paths are read from `dir` (the configuration file's directory).
    pub fn base_dir(self, dir: PathBuf) -> Handlers {
        self.with(|s| s.base_dir = dir)
    }
}

impl HandlerFactory for Handlers {
    fn build(&self, queue: &QueueConfig, key: &str, handler: &HandlerConfig) -> Result<Processor> {
        match handler {
            HandlerConfig::External { kind, settings } => match kind.as_str() {
                "email" => email::build(&self.shared, &queue.name, key, settings),
                "ai" => ai::build(&self.shared, &queue.name, key, settings),
                "sql" => sql::build(&self.shared, &queue.name, key, settings),
                other => Err(Error::invalid(
                    format!("{key}.kind"),
                    format!("unknown kind {other:?}"),
                )),
            },
            _ => Builtin.build(queue, key, handler),
        }
    }
}

/// Reads a handler's settings; errors name the key (`queues.q.handlers.j.timeout_ms`).
fn settings<T: DeserializeOwned>(key: &str, table: &toml::Table) -> Result<T> {
    serde_path_to_error::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            key.to_string()
        } else {
            format!("{key}.{path}")
        };
        Error::invalid(at, e.into_inner().message().to_string())
    })
}

/// The job's trace id (`traceId` in its data), or a fresh one.
fn trace_id(data: &serde_json::Value) -> String {
    data.get("traceId")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()))
}

/// What a handler's templates see: the job's data (an object), and `job` (`id`, `name`,
/// `queue`, `attempt`).
fn template_context(
    kind: &str,
    queue: &str,
    job: &keel_core::Job,
) -> std::result::Result<serde_json::Value, keel_core::JobError> {
    let m = data_object(kind, job)?;
    let mut data = serde_json::Value::Object(m.clone());
    data["job"] = serde_json::json!({"id": job.id, "name": job.name, "queue": queue,
                                     "attempt": job.attempts_made + 1});
    Ok(data)
}

/// [`template_context`] as the templates read it, holding only `roots` (the top-level names
/// the templates read, [`template::Templates::roots`]): what a template does not name is not
/// converted (a job's long article, say), and `job` is made only when read.
fn template_value(
    kind: &str,
    queue: &str,
    job: &keel_core::Job,
    roots: &std::collections::BTreeSet<String>,
) -> std::result::Result<minijinja::Value, keel_core::JobError> {
    let m = data_object(kind, job)?;
    let context: std::collections::BTreeMap<&str, minijinja::Value> = roots
        .iter()
        .filter_map(|name| {
            let value = if name == "job" {
                minijinja::context! {
                    id => job.id.as_str(), name => job.name.as_str(), queue => queue,
                    attempt => job.attempts_made + 1
                }
            } else {
                minijinja::Value::from(minijinja::value::Serde(m.get(name)?))
            };
            Some((name.as_str(), value))
        })
        .collect();
    Ok(minijinja::Value::from(context))
}

fn data_object<'a>(
    kind: &str,
    job: &'a keel_core::Job,
) -> std::result::Result<&'a serde_json::Map<String, serde_json::Value>, keel_core::JobError> {
    match &job.data {
        serde_json::Value::Object(m) => Ok(m),
        _ => Err(keel_core::JobError::unrecoverable(format!(
            "an {kind} job's data must be a JSON object"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(data: serde_json::Value) -> keel_core::Job {
        keel_core::Job {
            id: "7".into(),
            queue: "ai-content".into(),
            name: "summarize_article".into(),
            data,
            opts: Default::default(),
            attempts_made: 1,
            attempts_started: 2,
            stalled_counter: 0,
            progress: json!(0),
            timestamp: 0,
            processed_on: None,
            finished_on: None,
            failed_reason: None,
            stacktrace: vec![],
            returnvalue: None,
            processed_by: None,
        }
    }

    #[test]
    fn template_values_hold_what_the_templates_read() {
        let mut t = template::Templates::new();
        t.add(
            "p.txt",
            "{{ user.name }} on {{ job.queue }}/{{ job.id }} #{{ job.attempt }}",
        )
        .unwrap();
        let data = json!({"user": {"name": "Ana"}, "article": "long text", "job": "theirs"});
        let j = job(data);
        let roots = t.roots();
        let value = template_value("ai", "ai-content", &j, &roots).unwrap();
        let ctx = || template_context("ai", "ai-content", &j).unwrap();
        assert_eq!(
            t.render_value("p.txt", &value, ctx).unwrap(),
            "Ana on ai-content/7 #2",
            "the same as over the whole context, `job` over the data's own"
        );
        assert_eq!(t.render("p.txt", &ctx()).unwrap(), "Ana on ai-content/7 #2");
        assert!(
            value.get_attr("article").unwrap().is_undefined(),
            "what no template reads is not converted"
        );
        let without = job(json!({"article": "x"}));
        let value = template_value("ai", "ai-content", &without, &roots).unwrap();
        let err = t
            .render_value("p.txt", &value, || {
                template_context("ai", "ai-content", &without).unwrap()
            })
            .unwrap_err();
        assert!(err.contains("variable user.name is undefined"), "{err}");
        assert!(template_value("ai", "q", &job(json!([1])), &roots).is_err());
    }
}
