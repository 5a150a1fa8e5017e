//! `keel.toml`: queues, handlers and defaults. The keys are a contract that scripts rely on.
//!
//! Over 600 lines: ~990 of code (the rest tests) because every key is parsed and validated here
//! with its error naming the key. Sections another crate owns (`keel serve`'s `[server]`,
//! `[database]`, `[runs]`) are kept as written when named to [`Config::parse_with`], and read
//! by their owner.
//!
//! ```toml
//! [redis]
//! url = "redis://127.0.0.1:6379"   # absent (and no REDIS_URL): memory backend
//! # cluster = ["10.0.0.1:7000", "10.0.0.2:7000"]  # or a Redis Cluster's seeds, instead of url
//! # sharded_pubsub = true          # on a cluster: SPUBLISH/SSUBSCRIBE, no pattern subscriptions
//! prefix = "bull"
//!
//! [defaults]                        # every queue inherits these
//! attempts = 3
//! backoff = { type = "exponential", delay_ms = 1000 }
//! remove_on_complete = { count = 1000, age_s = 86400 }
//! remove_on_fail = { age_s = 604800 }
//! concurrency = 5
//! lock_duration_ms = 30000
//! stalled_interval_ms = 30000
//! timeout_ms = 0                    # 0: no job timeout
//! dlq = true
//! engine = "bullmq"                 # bullmq: shared with Node BullMQ | keel: Keel's own, faster
//!
//! [queues.orders]
//! engine = "keel"
//! partitions = 3                    # one queue over 3 hash tags (so 3 cluster masters)
//!
//! [queues.webhooks]
//! concurrency = 10
//! handler = { kind = "http", url = "http://127.0.0.1:9000/hook", timeout_ms = 5000, secret_env = "WEBHOOK_SECRET" }
//! ```
//!
//! The toolkit:
//! ```toml
//! [toolkit]
//! prefix = "keel"                   # toolkit keys are prefix:env:category:...:vN
//! env = "prod"                      # KEEL_ENV (else NODE_ENV) overrides; default "dev"
//!
//! [ratelimit.policies.api]          # the seeds' policies are built in; this overrides one
//! algorithm = "gcra"                # gcra | sliding_window | sliding_log | fixed_window
//! limit = 1000
//! window_ms = 3600000               # the period, for gcra
//! burst = 100                       # gcra only; default: limit
//! on_failure = "open"               # open | closed
//! dark = false                      # count would-be rejections without rejecting
//! ```
//! `REDIS_URL` and `REDIS_KEY_PREFIX` override `[redis]`; `RATE_LIMIT_MAX` and
//! `RATE_LIMIT_WINDOW_MS` override the `owner-api` policy (60 per minute by default). Every
//! error names the key at fault.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keel_core::{validate_queue_name, Backoff, BackoffKind, JobOptions, KeepJobs, Schedule};
use serde::Deserialize;
use serde_json::Value;

use crate::backend::{Backend, RedisSettings, DEFAULT_COMMAND_TIMEOUT};
use crate::keys::Keys;
use crate::queue::Queue;
use crate::ratelimit::{FailMode, RateLimiter, RatePolicy};

mod handler;
pub use handler::{HandlerConfig, JobLimit, EXTERNAL_KINDS};

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "keel.toml";
/// The default key prefix (BullMQ's).
pub const DEFAULT_PREFIX: &str = "bull";

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key is missing, unknown, of the wrong type or out of range.
    #[error("{key}: {message}")]
    Invalid {
        /// The dotted key path, e.g. `queues.webhooks.backoff.delay_ms`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// An invalid key (the dotted path) and why.
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The key at fault, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Read { .. } => None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    redis: RawRedis,
    #[serde(default)]
    defaults: RawQueue,
    #[serde(default)]
    queues: BTreeMap<String, RawQueue>,
    #[serde(default)]
    toolkit: RawToolkit,
    #[serde(default)]
    ratelimit: RawRateLimit,
    #[serde(default)]
    locks: BTreeMap<String, RawLock>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLock {
    ttl_ms: u64,
    #[serde(default)]
    wait_ms: u64,
}

/// A named lock policy (`[locks.NAME]`): the lease and how long to wait for the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockPolicy {
    /// Lease length; `with_lock` extends it while the work runs.
    pub ttl: Duration,
    /// How long to wait for a held lock before failing `locked`.
    pub wait: Duration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToolkit {
    prefix: Option<String>,
    env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    #[serde(default)]
    policies: BTreeMap<String, RawPolicy>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawAlgorithm {
    Gcra,
    SlidingWindow,
    SlidingLog,
    FixedWindow,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default = "default_algorithm")]
    algorithm: RawAlgorithm,
    limit: u64,
    window_ms: u64,
    burst: Option<u64>,
    #[serde(default)]
    on_failure: FailMode,
    #[serde(default)]
    dark: bool,
    local_lease: Option<u64>,
}

fn default_algorithm() -> RawAlgorithm {
    RawAlgorithm::Gcra
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    url: Option<String>,
    /// A Redis Cluster's seed nodes (`host:port` or node URLs).
    cluster: Option<Vec<String>>,
    prefix: Option<String>,
    command_timeout_ms: Option<u64>,
    sharded_pubsub: Option<bool>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    attempts: Option<u32>,
    backoff: Option<RawBackoff>,
    remove_on_complete: Option<RawKeep>,
    remove_on_fail: Option<RawKeep>,
    concurrency: Option<usize>,
    lock_duration_ms: Option<u64>,
    stalled_interval_ms: Option<u64>,
    max_stalled_count: Option<u32>,
    timeout_ms: Option<u64>,
    dlq: Option<bool>,
    handler: Option<toml::Value>,
    #[serde(default)]
    handlers: BTreeMap<String, toml::Value>,
    limit: Option<toml::Value>,
    rate_limit: Option<RateLimitConfig>,
    global_concurrency: Option<u32>,
    #[serde(default)]
    schedulers: BTreeMap<String, RawScheduler>,
    tenant: Option<String>,
    engine: Option<String>,
    partitions: Option<u32>,
}

/// `remove_on_complete` / `remove_on_fail` as written, BullMQ's forms: `false` keeps every
/// finished job, `true` removes each at once, a number keeps that many (and nothing else), a
/// table sets `count` and/or `age_s` over what the level above says (a partial table keeps
/// the other field).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawKeep {
    Flag(bool),
    Count(usize),
    Table(KeepJobs),
}

impl RawKeep {
    fn over(&self, inherited: Option<&KeepJobs>) -> Option<KeepJobs> {
        match self {
            RawKeep::Flag(false) => None,
            RawKeep::Flag(true) => Some(KeepJobs::remove_all()),
            RawKeep::Count(n) => Some(KeepJobs::count(*n)),
            RawKeep::Table(t) => {
                let base = inherited.cloned().unwrap_or_default();
                Some(KeepJobs {
                    count: t.count.or(base.count),
                    age_s: t.age_s.or(base.age_s),
                })
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackoff {
    #[serde(rename = "type")]
    kind: BackoffKind,
    delay_ms: u64,
    #[serde(default)]
    jitter: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScheduler {
    cron: Option<String>,
    tz: Option<String>,
    every_ms: Option<u64>,
    name: Option<String>,
    #[serde(default)]
    data: Option<toml::Value>,
}

/// A queue's rate limit: at most `max` job starts per `duration_ms`, across all workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Jobs per window.
    pub max: u64,
    /// Window length.
    pub duration_ms: u64,
}

/// One configured queue, with defaults applied.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// The queue name.
    pub name: String,
    /// Job options applied to every job added through Keel.
    pub job_defaults: JobOptions,
    /// Jobs processed at once per process.
    pub concurrency: usize,
    /// Lock duration of taken jobs.
    pub lock_duration: Duration,
    /// Stalled-job check interval.
    pub stalled_interval: Duration,
    /// Stalls a job survives before it fails.
    pub max_stalled_count: u32,
    /// Attempt timeout; `None` for none.
    pub timeout: Option<Duration>,
    /// Whether terminal failures go to `dlq-<name>`.
    pub dlq: bool,
    /// The fallback handler: runs every job name without its own in `handlers`.
    pub handler: Option<HandlerConfig>,
    /// Handlers by job name (`[queues.Q.handlers.JOB_NAME]`).
    pub handlers: BTreeMap<String, HandlerConfig>,
    /// The per-key limit of the queue's jobs (`limit`, or the fallback handler's `limit`).
    pub limit: Option<JobLimit>,
    /// Per-key limits by job name (`handlers.JOB_NAME.limit`), over `limit`.
    pub job_limits: BTreeMap<String, JobLimit>,
    /// The queue's rate limit.
    pub rate_limit: Option<RateLimitConfig>,
    /// At most this many of the queue's jobs active at once, across all workers.
    pub global_concurrency: Option<u32>,
    /// Repeatable jobs: id → (schedule, job name, data).
    pub schedulers: BTreeMap<String, (Schedule, String, Value)>,
    /// The tenant (by name) this queue belongs to: tenant tokens see only their queues.
    pub tenant: Option<String>,
    /// The Redis engine that runs the queue (`engine = "bullmq"`, the default, or `"keel"`).
    pub engine: crate::engines::Engine,
    /// Partitions the queue's jobs spread over (`partitions = N`, Keel's engine or memory;
    /// 1: none) — see [`crate::partitions`].
    pub partitions: u32,
}

/// The whole configuration.
#[derive(Clone)]
pub struct Config {
    /// Redis URL; `None` means the memory backend.
    pub redis_url: Option<String>,
    /// Key prefix.
    pub prefix: String,
    /// Bound on one Redis call.
    pub command_timeout: Duration,
    /// On a Redis Cluster, the toolkit's pub/sub is sharded (`[redis] sharded_pubsub`,
    /// `REDIS_SHARDED_PUBSUB`).
    pub sharded_pubsub: bool,
    /// Settings every queue inherits (also for queues not listed).
    pub defaults: QueueConfig,
    /// Configured queues by name.
    pub queues: BTreeMap<String, QueueConfig>,
    /// The file read, if any.
    pub source: Option<PathBuf>,
    /// The toolkit key space (`[toolkit]`, `KEEL_ENV`).
    pub keys: Keys,
    /// Rate-limit policies: the seeds' defaults, overridden and extended by
    /// `[ratelimit.policies]`, then `RATE_LIMIT_MAX` / `RATE_LIMIT_WINDOW_MS` on `owner-api`.
    pub rate_policies: Vec<RatePolicy>,
    /// The sections other crates own (`keel serve`'s `[server]`, `[database]`, `[runs]`),
    /// as written: passed to [`Config::parse_with`] by name and read by their owner.
    pub sections: BTreeMap<String, toml::Value>,
    /// `[locks.NAME]` policies.
    pub locks: BTreeMap<String, LockPolicy>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field(
                "redis_url",
                &self.redis_url.as_deref().map(keel_redis::redact_url),
            )
            .field("prefix", &self.prefix)
            .field("queues", &self.queues.keys().collect::<Vec<_>>())
            .field("source", &self.source)
            .finish()
    }
}

impl QueueConfig {
    /// The handler that runs jobs named `job`: its own, else the queue's fallback.
    pub fn handler_for(&self, job: &str) -> Option<&HandlerConfig> {
        self.handlers.get(job).or(self.handler.as_ref())
    }
}

impl Config {
    /// Reads `path`, or `keel.toml` in the working directory when it exists, or nothing (the
    /// built-in defaults); then applies `REDIS_URL` and `REDIS_KEY_PREFIX`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_with(path, &[])
    }

    /// [`Config::load`] keeping the top-level `sections` another crate owns (see
    /// [`Config::parse_with`]).
    pub fn load_with(path: Option<&Path>, sections: &[&str]) -> Result<Config, ConfigError> {
        let (text, source) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?,
                Some(p.to_path_buf()),
            ),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                let p = PathBuf::from(DEFAULT_CONFIG_FILE);
                (
                    std::fs::read_to_string(&p).map_err(|source| ConfigError::Read {
                        path: p.clone(),
                        source,
                    })?,
                    Some(p),
                )
            }
            None => (String::new(), None),
        };
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut config = Config::parse_with(&text, &env, sections)?;
        config.source = source;
        Ok(config)
    }

    /// Parses TOML text; `env` looks up environment variables (for the overrides and
    /// `secret_env`). Every top-level section must be Keel's own.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        Config::parse_with(text, env, &[])
    }

    /// [`Config::parse`], keeping the top-level sections named in `sections` — owned by
    /// another crate, which reads them from [`Config::sections`] — instead of refusing them.
    pub fn parse_with(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        sections: &[&str],
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = toml::from_str(text)
            .map_err(|e| ConfigError::invalid("(file)", e.message().to_string()))?;
        let mut own = BTreeMap::new();
        for name in sections {
            if let Some(v) = table.remove(*name) {
                if !v.is_table() {
                    return Err(ConfigError::invalid(*name, "must be a table"));
                }
                own.insert(name.to_string(), v);
            }
        }
        let sections = own;
        let raw: RawConfig =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                let key = if key == "." {
                    "(file)".to_string()
                } else {
                    key
                };
                ConfigError::invalid(key, e.inner().message().to_string())
            })?;
        let mut locks = BTreeMap::new();
        for (name, l) in &raw.locks {
            let key = format!("locks.{name}");
            crate::keys::validate_name("lock", name)
                .map_err(|e| ConfigError::invalid(&key, e.to_string()))?;
            if l.ttl_ms < 10 {
                return Err(ConfigError::invalid(
                    format!("{key}.ttl_ms"),
                    "must be at least 10",
                ));
            }
            locks.insert(
                name.clone(),
                LockPolicy {
                    ttl: Duration::from_millis(l.ttl_ms),
                    wait: Duration::from_millis(l.wait_ms),
                },
            );
        }
        if raw.redis.url.is_some() && raw.redis.cluster.is_some() {
            return Err(ConfigError::invalid(
                "redis.cluster",
                "set either redis.url or redis.cluster (a cluster's seed nodes), not both",
            ));
        }
        // A cluster's seeds (`[redis] cluster = [...]`, or `REDIS_CLUSTER_NODES`, comma
        // separated) become the one URL form, `redis+cluster://a,b`.
        let seeds = |key: &str, nodes: Vec<String>| {
            keel_core::redis_url::cluster_url(&nodes).map_err(|m| ConfigError::invalid(key, m))
        };
        let (redis_url, key) = if let Some(url) = env("REDIS_URL") {
            (Some(url), "REDIS_URL")
        } else if let Some(nodes) = env("REDIS_CLUSTER_NODES") {
            let nodes = nodes.split(',').map(|n| n.trim().to_string()).collect();
            (
                Some(seeds("REDIS_CLUSTER_NODES", nodes)?),
                "REDIS_CLUSTER_NODES",
            )
        } else if let Some(nodes) = raw.redis.cluster {
            (Some(seeds("redis.cluster", nodes)?), "redis.cluster")
        } else {
            (raw.redis.url, "redis.url")
        };
        if let Some(url) = &redis_url {
            check_redis_url(url).map_err(|m| ConfigError::invalid(key, m))?;
        }
        let sharded_pubsub = match env("REDIS_SHARDED_PUBSUB").as_deref() {
            None => raw.redis.sharded_pubsub.unwrap_or(false),
            Some("1" | "true") => true,
            Some("0" | "false") => false,
            Some(other) => {
                return Err(ConfigError::invalid(
                    "REDIS_SHARDED_PUBSUB",
                    format!("{other:?}: true or false (1 or 0)"),
                ))
            }
        };
        let prefix = env("REDIS_KEY_PREFIX")
            .or(raw.redis.prefix)
            .unwrap_or_else(|| DEFAULT_PREFIX.to_string());
        if prefix.is_empty() || prefix.contains(':') {
            return Err(ConfigError::invalid(
                "redis.prefix",
                "must be non-empty and contain no ':'",
            ));
        }
        let command_timeout = match raw.redis.command_timeout_ms {
            Some(0) => {
                return Err(ConfigError::invalid(
                    "redis.command_timeout_ms",
                    "must be at least 1",
                ))
            }
            Some(ms) => Duration::from_millis(ms),
            None => DEFAULT_COMMAND_TIMEOUT,
        };
        let defaults = resolve("defaults", "", &builtin_defaults(), &raw.defaults, env)?;
        let mut queues = BTreeMap::new();
        for (name, q) in &raw.queues {
            let key = format!("queues.{name}");
            validate_queue_name(name).map_err(|e| ConfigError::invalid(&key, e.to_string()))?;
            if name.starts_with(keel_core::DLQ_PREFIX) {
                return Err(ConfigError::invalid(
                    &key,
                    "names starting with dlq- are reserved for dead-letter queues",
                ));
            }
            queues.insert(name.clone(), resolve(&key, name, &defaults, q, env)?);
        }
        let keys = {
            let prefix = raw.toolkit.prefix.unwrap_or_else(|| "keel".into());
            // KEEL_ENV, else NODE_ENV (what the seeds' services key by), else the file.
            let (env_name, env_field) = match (env("KEEL_ENV"), env("NODE_ENV"), raw.toolkit.env) {
                (Some(e), _, _) => (e, "KEEL_ENV"),
                (None, Some(e), _) => (e, "NODE_ENV"),
                (None, None, Some(e)) => (e, "toolkit.env"),
                (None, None, None) => ("dev".into(), "toolkit.env"),
            };
            Keys::new(&prefix, &env_name).map_err(|e| {
                let field = if e.field() == Some("prefix") {
                    "toolkit.prefix"
                } else {
                    env_field
                };
                ConfigError::invalid(field, e.to_string())
            })?
        };
        let rate_policies = rate_policies(&raw.ratelimit, env)?;
        for (name, q) in &queues {
            let named = q
                .limit
                .iter()
                .map(|l| (format!("queues.{name}.limit.policy"), l));
            let by_job = q
                .job_limits
                .iter()
                .map(|(job, l)| (format!("queues.{name}.handlers.{job}.limit.policy"), l));
            for (key, l) in named.chain(by_job) {
                if !rate_policies.iter().any(|p| p.name == l.policy) {
                    return Err(ConfigError::invalid(
                        key,
                        format!(
                            "no rate-limit policy {:?} (define [ratelimit.policies.{}])",
                            l.policy, l.policy
                        ),
                    ));
                }
            }
        }
        Ok(Config {
            redis_url,
            prefix,
            command_timeout,
            sharded_pubsub,
            defaults,
            queues,
            source: None,
            keys,
            rate_policies,
            sections,
            locks,
        })
    }

    /// The lock policy `name` (`[locks.NAME]`).
    pub fn lock_policy(&self, name: &str) -> Option<LockPolicy> {
        self.locks.get(name).copied()
    }

    /// A rate limiter with this configuration's policies.
    pub fn rate_limiter(&self, backend: &Backend) -> keel_core::Result<RateLimiter> {
        RateLimiter::new(backend, self.rate_policies.clone())
    }

    /// The backend this configuration selects: Redis when a URL is set, else memory. On
    /// Redis each queue runs on its `engine`: when any queue (or `[defaults]`) says `keel`,
    /// Keel's own engine is connected beside BullMQ's.
    pub async fn backend(&self) -> keel_core::Result<Backend> {
        use crate::engines::Engine;
        let Some(url) = &self.redis_url else {
            return Ok(Backend::memory()
                .with_partitions(self.partitions())
                .with_keys(self.keys.clone()));
        };
        let settings = RedisSettings {
            url: url.clone(),
            prefix: self.prefix.clone(),
            command_timeout: self.command_timeout,
            sharded_pubsub: self.sharded_pubsub,
        };
        let default = self.defaults.engine;
        let others: std::collections::BTreeSet<String> = self
            .queues
            .values()
            .filter(|q| q.engine != default)
            .map(|q| q.name.clone())
            .collect();
        // Partitioned queues are on Keel's engine (`check_partitions`), so never on this path.
        let backend = if default == Engine::Bullmq && others.is_empty() {
            Backend::redis(settings).await?
        } else {
            Backend::redis_engines_partitioned(settings, default, others, self.partitions()).await?
        };
        Ok(backend.with_keys(self.keys.clone()))
    }

    /// The partitioned queues and their partition counts.
    pub fn partitions(&self) -> BTreeMap<String, u32> {
        self.queues
            .values()
            .filter(|q| q.partitions > 1)
            .map(|q| (q.name.clone(), q.partitions))
            .collect()
    }

    /// The settings of `name`: its own section, or the defaults for a queue not listed.
    pub fn queue_config(&self, name: &str) -> QueueConfig {
        self.queues
            .get(name)
            .cloned()
            .unwrap_or_else(|| QueueConfig {
                name: name.to_string(),
                ..self.defaults.clone()
            })
    }

    /// A handle to queue `name` with its configured job defaults.
    pub fn queue(&self, backend: &Backend, name: &str) -> keel_core::Result<Queue> {
        Queue::new(backend, name)?.with_defaults(self.queue_config(name).job_defaults)
    }
}

fn rate_policies(
    raw: &RawRateLimit,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<RatePolicy>, ConfigError> {
    let mut policies: BTreeMap<String, RatePolicy> = RatePolicy::seed_defaults()
        .into_iter()
        .map(|p| (p.name.clone(), p))
        .collect();
    for (name, p) in &raw.policies {
        let key = format!("ratelimit.policies.{name}");
        let algorithm = match p.algorithm {
            RawAlgorithm::Gcra => keel_core::RateAlgorithm::Gcra {
                limit: p.limit,
                period_ms: p.window_ms,
                burst: p.burst.unwrap_or(p.limit),
            },
            RawAlgorithm::SlidingWindow => keel_core::RateAlgorithm::SlidingWindow {
                limit: p.limit,
                window_ms: p.window_ms,
            },
            RawAlgorithm::SlidingLog => keel_core::RateAlgorithm::SlidingLog {
                limit: p.limit,
                window_ms: p.window_ms,
            },
            RawAlgorithm::FixedWindow => keel_core::RateAlgorithm::FixedWindow {
                limit: p.limit,
                window_ms: p.window_ms,
            },
        };
        if p.burst.is_some() && !matches!(p.algorithm, RawAlgorithm::Gcra) {
            return Err(ConfigError::invalid(
                format!("{key}.burst"),
                "only the gcra algorithm has a burst",
            ));
        }
        let policy = RatePolicy {
            name: name.clone(),
            algorithm,
            on_failure: p.on_failure,
            dark: p.dark,
            local_lease: p.local_lease.unwrap_or(1),
        };
        policy.validate().map_err(|e| {
            let field = e.field().unwrap_or("").to_string();
            let field = field
                .strip_prefix(&format!("{name}."))
                .unwrap_or(&field)
                .to_string();
            let k = if field == "policy" {
                key.clone()
            } else {
                format!("{key}.{field}")
            };
            ConfigError::invalid(k, e.to_string())
        })?;
        policies.insert(name.clone(), policy);
    }
    let number = |var: &str| -> Result<Option<u64>, ConfigError> {
        match env(var) {
            None => Ok(None),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(ConfigError::invalid(
                    var,
                    format!("{v:?} is not a positive integer"),
                )),
            },
        }
    };
    let (max, window) = (number("RATE_LIMIT_MAX")?, number("RATE_LIMIT_WINDOW_MS")?);
    if max.is_some() || window.is_some() {
        if let Some(p) = policies.get_mut("owner-api") {
            let limit = max.unwrap_or(p.algorithm.limit());
            let window_ms = window.unwrap_or(p.algorithm.window_ms());
            p.algorithm = keel_core::RateAlgorithm::Gcra {
                limit,
                period_ms: window_ms,
                burst: limit,
            };
        }
    }
    Ok(policies.into_values().collect())
}

/// Checks a Redis URL's form (see [`keel_redis::check_url`]).
pub fn check_redis_url(url: &str) -> Result<(), String> {
    keel_redis::check_url(url)
}

/// SPEC §1 defaults: attempts 3, exponential backoff from 1 s, keep completed 24 h / 1000,
/// keep failed 7 days, concurrency 5.
fn builtin_defaults() -> QueueConfig {
    QueueConfig {
        name: String::new(),
        job_defaults: JobOptions {
            attempts: Some(3),
            backoff: Some(Backoff::exponential(1000)),
            remove_on_complete: Some(KeepJobs {
                count: Some(1000),
                age_s: Some(86_400),
            }),
            remove_on_fail: Some(KeepJobs {
                count: None,
                age_s: Some(604_800),
            }),
            ..Default::default()
        },
        concurrency: 5,
        lock_duration: Duration::from_secs(30),
        stalled_interval: Duration::from_secs(30),
        max_stalled_count: keel_core::backend::DEFAULT_MAX_STALLED_COUNT,
        timeout: None,
        dlq: true,
        handler: None,
        handlers: BTreeMap::new(),
        limit: None,
        job_limits: BTreeMap::new(),
        rate_limit: None,
        global_concurrency: None,
        tenant: None,
        schedulers: BTreeMap::new(),
        engine: crate::engines::Engine::Bullmq,
        partitions: 1,
    }
}

fn resolve(
    key: &str,
    name: &str,
    base: &QueueConfig,
    raw: &RawQueue,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<QueueConfig, ConfigError> {
    let k = |field: &str| format!("{key}.{field}");
    let mut q = base.clone();
    q.name = name.to_string();
    if let Some(a) = raw.attempts {
        if a == 0 || a > keel_core::options::MAX_ATTEMPTS {
            return Err(ConfigError::invalid(
                k("attempts"),
                "must be between 1 and 1000",
            ));
        }
        q.job_defaults.attempts = Some(a);
    }
    if let Some(b) = &raw.backoff {
        let backoff = Backoff {
            kind: b.kind,
            delay_ms: b.delay_ms,
            jitter: b.jitter,
        };
        backoff.validate().map_err(|e| {
            let field = e
                .field()
                .unwrap_or("backoff")
                .replace("backoff.delay", "backoff.delay_ms");
            ConfigError::invalid(k(&field), e.to_string())
        })?;
        q.job_defaults.backoff = Some(backoff);
    }
    if let Some(r) = &raw.remove_on_complete {
        q.job_defaults.remove_on_complete = r.over(q.job_defaults.remove_on_complete.as_ref());
    }
    if let Some(r) = &raw.remove_on_fail {
        q.job_defaults.remove_on_fail = r.over(q.job_defaults.remove_on_fail.as_ref());
    }
    if let Some(c) = raw.concurrency {
        if c == 0 || c > 10_000 {
            return Err(ConfigError::invalid(
                k("concurrency"),
                "must be between 1 and 10000",
            ));
        }
        q.concurrency = c;
    }
    let positive_ms = |field: &str, v: Option<u64>| -> Result<Option<Duration>, ConfigError> {
        match v {
            Some(0) => Err(ConfigError::invalid(k(field), "must be at least 1")),
            Some(ms) => Ok(Some(Duration::from_millis(ms))),
            None => Ok(None),
        }
    };
    if let Some(d) = positive_ms("lock_duration_ms", raw.lock_duration_ms)? {
        q.lock_duration = d;
    }
    if let Some(d) = positive_ms("stalled_interval_ms", raw.stalled_interval_ms)? {
        q.stalled_interval = d;
    }
    if let Some(n) = raw.max_stalled_count {
        q.max_stalled_count = n;
    }
    if let Some(t) = raw.timeout_ms {
        q.timeout = (t > 0).then(|| Duration::from_millis(t));
    }
    if let Some(d) = raw.dlq {
        q.dlq = d;
    }
    if let Some(r) = raw.rate_limit {
        if r.max == 0 {
            return Err(ConfigError::invalid(
                k("rate_limit.max"),
                "must be at least 1",
            ));
        }
        if r.duration_ms == 0 {
            return Err(ConfigError::invalid(
                k("rate_limit.duration_ms"),
                "must be at least 1",
            ));
        }
        q.rate_limit = Some(r);
    }
    if let Some(n) = raw.global_concurrency {
        if n == 0 {
            return Err(ConfigError::invalid(
                k("global_concurrency"),
                "must be at least 1",
            ));
        }
        q.global_concurrency = Some(n);
    }
    if let Some(t) = &raw.tenant {
        crate::keys::validate_name("tenant", t)
            .map_err(|e| ConfigError::invalid(k("tenant"), e.to_string()))?;
        q.tenant = Some(t.clone());
    }
    if let Some(e) = &raw.engine {
        q.engine =
            crate::engines::Engine::parse(e).map_err(|m| ConfigError::invalid(k("engine"), m))?;
    }
    if let Some(n) = raw.partitions {
        if !(1..=crate::partitions::MAX_PARTITIONS).contains(&n) {
            return Err(ConfigError::invalid(
                k("partitions"),
                format!("from 1 to {}", crate::partitions::MAX_PARTITIONS),
            ));
        }
        q.partitions = n;
    }
    if let Some(l) = &raw.limit {
        q.limit = Some(JobLimit::parse(&k("limit"), l)?);
    }
    if let Some(h) = &raw.handler {
        let (h, limit) = handler::split_limit(&k("handler"), h)?;
        q.handler = Some(handler::parse(&k("handler"), &h, env)?);
        if limit.is_some() {
            q.limit = limit;
        }
    }
    for (job, h) in &raw.handlers {
        let hk = k(&format!("handlers.{job}"));
        if job.is_empty() || job.len() > 200 {
            return Err(ConfigError::invalid(
                hk,
                "a job name of 1 to 200 characters",
            ));
        }
        let (h, limit) = handler::split_limit(&hk, h)?;
        q.handlers
            .insert(job.clone(), handler::parse(&hk, &h, env)?);
        if let Some(l) = limit {
            q.job_limits.insert(job.clone(), l);
        }
    }
    for (id, s) in &raw.schedulers {
        let sk = format!("{key}.schedulers.{id}");
        keel_core::validate_job_id(id).map_err(|e| ConfigError::invalid(&sk, e.to_string()))?;
        let schedule = match (&s.cron, s.every_ms) {
            (Some(pattern), None) => Schedule::Cron {
                pattern: pattern.clone(),
                tz: s.tz.clone(),
            },
            (None, Some(every_ms)) if every_ms > 0 => Schedule::Every { every_ms },
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    format!("{sk}.every_ms"),
                    "must be at least 1",
                ))
            }
            _ => {
                return Err(ConfigError::invalid(
                    &sk,
                    "needs exactly one of cron or every_ms",
                ))
            }
        };
        let data = match &s.data {
            Some(v) => serde_json::to_value(v)
                .map_err(|e| ConfigError::invalid(format!("{sk}.data"), e.to_string()))?,
            None => Value::Object(Default::default()),
        };
        q.schedulers.insert(
            id.clone(),
            (schedule, s.name.clone().unwrap_or_else(|| id.clone()), data),
        );
    }
    check_partitions(key, name, &q)?;
    Ok(q)
}

/// A partitioned queue runs on Keel's engine, and what is split among its partitions (a
/// worker's concurrency, the rate limit, the global concurrency) covers every partition.
fn check_partitions(key: &str, name: &str, q: &QueueConfig) -> Result<(), ConfigError> {
    let n = q.partitions;
    if n == 1 {
        return Ok(());
    }
    let k = |field: &str| format!("{key}.{field}");
    if name.is_empty() {
        return Err(ConfigError::invalid(
            k("partitions"),
            "set partitions per queue ([queues.NAME] partitions = N), not in [defaults]",
        ));
    }
    if q.engine != crate::engines::Engine::Keel {
        return Err(ConfigError::invalid(
            k("partitions"),
            "needs engine = \"keel\": Node BullMQ and Bull Board read a queue from one set of keys, so they would see one partition of it",
        ));
    }
    let split = [
        ("concurrency", Some(q.concurrency as u64)),
        ("rate_limit.max", q.rate_limit.map(|r| r.max)),
        ("global_concurrency", q.global_concurrency.map(u64::from)),
    ];
    for (field, value) in split {
        if value.is_some_and(|v| v < u64::from(n)) {
            return Err(ConfigError::invalid(
                k(field),
                format!("must be at least the queue's {n} partitions (it is split among them)"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    const ISSUE_EXAMPLE: &str = r#"
[redis]
url = "redis://127.0.0.1:6379"
prefix = "bull"

[defaults]
attempts = 3
backoff = { type = "exponential", delay_ms = 1000 }
remove_on_complete = { count = 1000, age_s = 86400 }
remove_on_fail = { age_s = 604800 }
concurrency = 5
lock_duration_ms = 30000
stalled_interval_ms = 30000
timeout_ms = 0
dlq = true

[queues.webhooks]
concurrency = 10
attempts = 2
backoff = { type = "fixed", delay_ms = 100 }
handler = { kind = "http", url = "http://127.0.0.1:9000/hook", timeout_ms = 5000, secret_env = "WEBHOOK_SECRET" }
"#;

    #[test]
    fn partial_retention_merges_with_the_level_above() {
        let text = r#"
[defaults]
remove_on_complete = { age_s = 3600 }

[queues.a]

[queues.b]
remove_on_complete = { count = 5 }
remove_on_fail = false

[queues.c]
remove_on_complete = true

[queues.d]
remove_on_complete = 10
"#;
        let c = Config::parse(text, &no_env).unwrap();
        let keep = |count, age_s| Some(KeepJobs { count, age_s });
        // The built-in count 1000 stays under [defaults]' age.
        assert_eq!(
            c.queues["a"].job_defaults.remove_on_complete,
            keep(Some(1000), Some(3600))
        );
        assert_eq!(
            c.queues["b"].job_defaults.remove_on_complete,
            keep(Some(5), Some(3600))
        );
        assert_eq!(
            c.queues["b"].job_defaults.remove_on_fail, None,
            "false keeps every failed job"
        );
        assert_eq!(
            c.queues["a"].job_defaults.remove_on_fail,
            keep(None, Some(604_800))
        );
        assert_eq!(
            c.queues["c"].job_defaults.remove_on_complete,
            Some(KeepJobs::remove_all())
        );
        assert_eq!(
            c.queues["d"].job_defaults.remove_on_complete,
            keep(Some(10), None)
        );
        let err =
            Config::parse("[queues.x]\nremove_on_fail = { agee = 1 }\n", &no_env).unwrap_err();
        assert!(err.to_string().contains("remove_on_fail"), "{err}");
    }

    #[test]
    fn a_cluster_is_named_by_its_seeds_in_the_file_or_the_env() {
        let c = Config::parse(
            "[redis]\ncluster = [\"127.0.0.1:7000\", \"redis://127.0.0.1:7001\"]\n",
            &no_env,
        )
        .unwrap();
        assert_eq!(
            c.redis_url.as_deref(),
            Some("redis+cluster://127.0.0.1:7000,127.0.0.1:7001")
        );
        let env = |k: &str| (k == "REDIS_CLUSTER_NODES").then(|| "a:1, b:2".to_string());
        let c = Config::parse("", &env).unwrap();
        assert_eq!(c.redis_url.as_deref(), Some("redis+cluster://a:1,b:2"));
        let both = "[redis]\nurl = \"redis://a:1\"\ncluster = [\"b:2\"]\n";
        let err = Config::parse(both, &no_env).unwrap_err();
        assert!(err.to_string().contains("redis.cluster"), "{err}");
        let err = Config::parse("[redis]\ncluster = []\n", &no_env).unwrap_err();
        assert!(err.to_string().contains("redis.cluster"), "{err}");
    }

    #[test]
    fn sharded_pubsub_is_read_from_the_file_and_the_env() {
        assert!(!Config::parse("", &no_env).unwrap().sharded_pubsub);
        let on = Config::parse("[redis]\nsharded_pubsub = true\n", &no_env).unwrap();
        assert!(on.sharded_pubsub);
        let env_off = |k: &str| (k == "REDIS_SHARDED_PUBSUB").then(|| "0".to_string());
        let off = Config::parse("[redis]\nsharded_pubsub = true\n", &env_off).unwrap();
        assert!(!off.sharded_pubsub);
        let env_bad = |k: &str| (k == "REDIS_SHARDED_PUBSUB").then(|| "yes please".to_string());
        let err = Config::parse("", &env_bad).unwrap_err().to_string();
        assert!(err.contains("REDIS_SHARDED_PUBSUB"), "{err}");
    }

    #[test]
    fn partitions_need_keel_engine_and_enough_to_split() {
        let ok = "[queues.a]\nengine = \"keel\"\npartitions = 3\nconcurrency = 6\n[queues.b]\n";
        let c = Config::parse(ok, &no_env).unwrap();
        assert_eq!(c.queues["a"].partitions, 3);
        assert_eq!(c.queues["b"].partitions, 1);
        assert_eq!(c.partitions(), BTreeMap::from([("a".to_string(), 3)]));
        for (text, key, says) in [
            ("[queues.a]\npartitions = 3\nconcurrency = 6", "queues.a.partitions", "engine"),
            ("[queues.a]\nengine = \"keel\"\npartitions = 0", "queues.a.partitions", "from 1"),
            ("[queues.a]\nengine = \"keel\"\npartitions = 257", "queues.a.partitions", "256"),
            ("[queues.a]\nengine = \"keel\"\npartitions = 8", "queues.a.concurrency", "8 partitions"),
            (
                "[queues.a]\nengine = \"keel\"\npartitions = 3\nconcurrency = 6\nrate_limit = { max = 2, duration_ms = 1000 }",
                "queues.a.rate_limit.max",
                "split",
            ),
            (
                "[queues.a]\nengine = \"keel\"\npartitions = 3\nconcurrency = 6\nglobal_concurrency = 2",
                "queues.a.global_concurrency",
                "split",
            ),
            ("[defaults]\nengine = \"keel\"\npartitions = 2", "defaults.partitions", "per queue"),
        ] {
            let err = Config::parse(text, &no_env).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn global_concurrency_is_read_and_zero_is_refused() {
        let c = Config::parse("[queues.a]\nglobal_concurrency = 4\n[queues.b]\n", &no_env).unwrap();
        assert_eq!(c.queues["a"].global_concurrency, Some(4));
        assert_eq!(c.queues["b"].global_concurrency, None);
        let err = Config::parse("[queues.a]\nglobal_concurrency = 0\n", &no_env).unwrap_err();
        assert!(
            err.to_string().contains("queues.a.global_concurrency"),
            "{err}"
        );
    }

    #[test]
    fn the_seed_examples_keep_the_seeds_retention() {
        let rabbit =
            Config::parse(include_str!("../../../examples/24rabbit.toml"), &no_env).unwrap();
        assert_eq!(
            rabbit.queues["publish"].job_defaults.remove_on_complete,
            Some(KeepJobs {
                count: Some(1000),
                age_s: Some(86_400)
            }),
            "seed 004: 24 h and 1000"
        );
        // teknav also defines a workflow, a section keel serve reads (kept, not refused, here).
        let teknav = Config::parse_with(
            include_str!("../../../examples/teknav.toml"),
            &no_env,
            &["workflows"],
        )
        .unwrap();
        let q = &teknav.queues["ai-content"].job_defaults;
        assert_eq!(
            q.remove_on_complete,
            Some(KeepJobs::count(10)),
            "seed 002: removeOnComplete 10"
        );
        assert_eq!(q.remove_on_fail, None, "seed 002: removeOnFail false");
    }

    #[test]
    fn the_documented_example_parses() {
        let env = |k: &str| (k == "WEBHOOK_SECRET").then(|| "s3cret".to_string());
        let c = Config::parse(ISSUE_EXAMPLE, &env).unwrap();
        assert_eq!(c.redis_url.as_deref(), Some("redis://127.0.0.1:6379"));
        let w = &c.queues["webhooks"];
        assert_eq!(w.concurrency, 10);
        assert_eq!(w.job_defaults.attempts, Some(2));
        assert_eq!(w.job_defaults.backoff, Some(Backoff::fixed(100)));
        assert_eq!(
            w.job_defaults.remove_on_fail,
            Some(KeepJobs {
                count: None,
                age_s: Some(604800)
            }),
            "inherited from [defaults]"
        );
        assert_eq!(w.timeout, None);
        assert!(matches!(
            w.handler,
            Some(HandlerConfig::Http {
                timeout_ms: 5000,
                plugin: None,
                ..
            })
        ));
    }

    #[test]
    fn empty_file_means_memory_and_spec_defaults() {
        let c = Config::parse("", &no_env).unwrap();
        assert_eq!(c.redis_url, None);
        assert_eq!(c.prefix, "bull");
        assert_eq!(c.defaults.job_defaults.attempts, Some(3));
        assert_eq!(
            c.defaults.job_defaults.backoff,
            Some(Backoff::exponential(1000))
        );
        assert_eq!(c.defaults.concurrency, 5);
    }

    #[test]
    fn env_overrides_the_file() {
        let env = |k: &str| match k {
            "REDIS_URL" => Some("redis://10.0.0.1:6380".to_string()),
            "REDIS_KEY_PREFIX" => Some("app".to_string()),
            _ => None,
        };
        let c = Config::parse("[redis]\nurl = \"redis://a:1\"\nprefix = \"x\"\n", &env).unwrap();
        assert_eq!(c.redis_url.as_deref(), Some("redis://10.0.0.1:6380"));
        assert_eq!(c.prefix, "app");
    }

    #[test]
    fn every_error_names_its_key() {
        let cases = [
            ("[queues.a]\nbackoff = { type = \"fixed\", delay_ms = -5 }", "queues.a.backoff.delay_ms"),
            ("[queues.a]\nconcurrency = \"ten\"", "queues.a.concurrency"),
            ("[queues.a]\nconcurency = 3", "queues.a.concurency"),
            ("[queues.a]\nattempts = 0", "queues.a.attempts"),
            ("[queues.\"a:b\"]\nattempts = 1", "queues.a:b"),
            ("[queues.a]\nhandler = { kind = \"http\" }", "queues.a.handler"),
            ("[queues.a]\nhandler = { kind = \"smtp\" }", "queues.a.handler.kind"),
            ("[queues.a]\nhandler = { url = \"x\" }", "queues.a.handler.kind"),
            ("[queues.a]\nhandler = { kind = \"log\", x = 1 }", "queues.a.handler.x"),
            (
                "[queues.a.handlers.send_otp]\nkind = \"http\"\nurl = \"ftp://x\"",
                "queues.a.handlers.send_otp.url",
            ),
            ("[queues.a.handlers.b]\nkind = 3", "queues.a.handlers.b.kind"),
            ("[queues.a]\nhandler = { kind = \"http\", url = \"ftp://x\" }", "queues.a.handler.url"),
            (
                "[queues.a]\nhandler = { kind = \"http\", url = \"http://x\", secret_env = \"NOPE_UNSET\" }",
                "queues.a.handler.secret_env",
            ),
            ("[redis]\nurl = \"http://x\"", "redis.url"),
            ("[defaults]\nbackoff = { type = \"linear\", delay_ms = 1 }", "defaults.backoff.type"),
            ("[queues.a.schedulers.s]\nname = \"x\"", "queues.a.schedulers.s"),
            ("nonsense = [", "(file)"),
            ("[ratelimit.policies.api]\nlimit = 0\nwindow_ms = 1000", "ratelimit.policies.api.limit"),
            ("[ratelimit.policies.api]\nlimit = 5\nwindow_ms = 0", "ratelimit.policies.api.window_ms"),
            ("[ratelimit.policies.api]\nlimit = 5", "ratelimit.policies.api"),
            ("[ratelimit.policies.x]\nalgorithm = \"leaky\"\nlimit = 5\nwindow_ms = 9", "ratelimit.policies.x.algorithm"),
            (
                "[ratelimit.policies.x]\nalgorithm = \"sliding_log\"\nlimit = 5\nwindow_ms = 9\nburst = 2",
                "ratelimit.policies.x.burst",
            ),
            ("[ratelimit.policies.\"a b\"]\nlimit = 5\nwindow_ms = 9", "ratelimit.policies.a b"),
            ("[toolkit]\nenv = \"pr od\"", "toolkit.env"),
            ("[toolkit]\nprefix = \"a:b\"", "toolkit.prefix"),
            ("[locks.payout]\nttl_ms = 5", "locks.payout.ttl_ms"),
            ("[locks.payout]\nwait_ms = 5", "locks.payout"),
            ("[queues.a]\ntenant = \"a b\"", "queues.a.tenant"),
            ("[queues.a]\nengine = \"fast\"", "queues.a.engine"),
        ];
        for (text, key) in cases {
            let err = Config::parse(text, &no_env).unwrap_err();
            assert_eq!(err.key(), Some(key), "{text}: {err}");
        }
    }

    #[test]
    fn rate_policies_start_from_the_seeds_and_env_overrides_owner_api() {
        let c = Config::parse("", &no_env).unwrap();
        let names: Vec<&str> = c.rate_policies.iter().map(|p| p.name.as_str()).collect();
        for n in [
            "api",
            "login",
            "owner-api",
            "post-twitter",
            "upload",
            "message",
            "export",
        ] {
            assert!(names.contains(&n), "{n} missing from {names:?}");
        }
        assert_eq!(c.keys, Keys::default());
        let text = "[toolkit]\nprefix = \"shop\"\n[ratelimit.policies.api]\nalgorithm = \"sliding_window\"\nlimit = 20\nwindow_ms = 1000\n[ratelimit.policies.search]\nlimit = 3\nwindow_ms = 1000\nburst = 1\non_failure = \"closed\"\ndark = true\n";
        let env = |k: &str| match k {
            "RATE_LIMIT_MAX" => Some("120".to_string()),
            "KEEL_ENV" => Some("prod".to_string()),
            _ => None,
        };
        let c = Config::parse(text, &env).unwrap();
        assert_eq!(c.keys, Keys::new("shop", "prod").unwrap());
        // NODE_ENV where KEEL_ENV is unset; KEEL_ENV wins over it; both over the file.
        let node = |k: &str| (k == "NODE_ENV").then(|| "staging".to_string());
        let file = "[toolkit]\nenv = \"filed\"\n";
        assert_eq!(Config::parse(file, &node).unwrap().keys.env(), "staging");
        let both = |k: &str| match k {
            "NODE_ENV" => Some("staging".to_string()),
            "KEEL_ENV" => Some("prod".to_string()),
            _ => None,
        };
        assert_eq!(Config::parse(file, &both).unwrap().keys.env(), "prod");
        assert_eq!(Config::parse(file, &|_| None).unwrap().keys.env(), "filed");
        let get = |n: &str| {
            c.rate_policies
                .iter()
                .find(|p| p.name == n)
                .unwrap()
                .clone()
        };
        assert_eq!(
            get("api").algorithm,
            keel_core::RateAlgorithm::SlidingWindow {
                limit: 20,
                window_ms: 1000
            }
        );
        let search = get("search");
        assert_eq!(
            search.algorithm,
            keel_core::RateAlgorithm::Gcra {
                limit: 3,
                period_ms: 1000,
                burst: 1
            }
        );
        assert_eq!(search.on_failure, FailMode::Closed);
        assert!(search.dark);
        assert_eq!(
            get("owner-api").algorithm,
            keel_core::RateAlgorithm::Gcra {
                limit: 120,
                period_ms: 60_000,
                burst: 120
            }
        );
        let bad = |k: &str| (k == "RATE_LIMIT_WINDOW_MS").then(|| "soon".to_string());
        assert_eq!(
            Config::parse("", &bad).unwrap_err().key(),
            Some("RATE_LIMIT_WINDOW_MS")
        );
    }
}
