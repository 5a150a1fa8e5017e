//! Keel's Redis queue backend, built on `bullmq-official` (the BullMQ authors' Rust port). Every
//! multi-step queue transition runs one of BullMQ's own Lua scripts, so Node BullMQ 5 and 6
//! services, Bull Board and Keel share the same queues — except standard adds and the pause of
//! a queue in BullMQ 5's layout, which run Keel's own scripts ([`scripts`](crate::scripts))
//! written from BullMQ's documented behaviour. The only plain commands Keel issues are reads
//! (`ZRANGEBYSCORE`, `SCAN`, `LRANGE`), the queue meta `version` field (when no client wrote
//! one), and its own heartbeat keys.
//!
//! What this layer adds over bullmq-official (its rough edges):
//! - every producer/admin call is bounded by [`RedisSettings::command_timeout`] and fails with
//!   `backend-unavailable` instead of hanging for ~40 s when Redis is away;
//! - worker events are always drained (bullmq's channel is unbounded);
//! - a failed fetch retries after 1 s, not 15 s (`run_retry_delay`);
//! - the `ring` rustls provider is installed so `rediss://` works;
//! - the queue meta `version` field is written so Node's `Queue.getVersion()` answers;
//! - `add_bulk` is documented as not atomic (bullmq adds each job with its own script).
//!
//! # Layout
//! - [`circuit`](crate::circuit): calls fail fast while Redis is unreachable; a probe closes it.
//! - [`convert`](crate::convert): Keel ↔ bullmq options, jobs, states, errors.
//! - `kv`: the toolkit (`keel_core::KvBackend`) on Redis.
//! - `queue`: the queue contract (`keel_core::QueueBackend`) on Redis.
//! - [`scripts`](crate::scripts): Keel's own scripts: standard adds (BullMQ 5's paused layout,
//!   backoff jitter), BullMQ 5-style pause/resume, the jitter of other adds.
//! - [`worker`](crate::worker): the worker adapter (processor wrapper, events, Retry-After).
//! - this file: [`RedisBackend`], [`RedisSettings`].
//! - `lua/`: every script Keel runs itself (queue and toolkit), each opening with its KEYS,
//!   ARGV and return value, loaded with `include_str!`.

mod circuit;
mod cluster;
pub mod conn;
mod convert;
mod info;
mod kv;
mod queue;
mod scripts;
mod worker;

pub use kv::TRIVIAL_SCRIPT;

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bullmq::options::RedisConnectionOptions;
use bullmq::redis_connection::RedisConnection;
use bullmq::{Queue as BullQueue, QueueOptions};
use keel_core::{Error, Job, NewJob, QueueBackend, Result};

use crate::convert::{from_bull_job, map_err, map_redis};

/// The value Keel writes to a queue's meta `version` field (Node's `getVersion()` reads it;
/// Node itself writes `bullmq:<version>`).
pub const META_VERSION: &str = "bullmq-official:1.4.4";

/// How to reach Redis.
#[derive(Clone)]
pub struct RedisSettings {
    /// `redis://[user:pass@]host:port[/db]` or `rediss://...`.
    pub url: String,
    /// Key prefix (BullMQ's `prefix`, default `bull`).
    pub prefix: String,
    /// Upper bound on one producer/admin call; past it the call fails `backend-unavailable`.
    pub command_timeout: Duration,
    /// On a Redis Cluster, the toolkit's pub/sub is sharded (`SPUBLISH`/`SSUBSCRIBE`: a message
    /// goes to its channel's shard only, not over the whole cluster bus); pattern
    /// subscriptions are then refused, as they never hear sharded messages. Ignored on one
    /// server. `[redis] sharded_pubsub`.
    pub sharded_pubsub: bool,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("command_timeout", &self.command_timeout)
            .field("sharded_pubsub", &self.sharded_pubsub)
            .finish()
    }
}

/// The URL with any password (and secret query parameter) replaced by `***`.
pub use keel_core::secrets::redact_url;

/// Checks a Redis URL's form: one node (`redis://`, `rediss://`) or a Redis Cluster by its
/// seeds (`redis+cluster://host:port,host:port`, `rediss+cluster://…`); see
/// [`keel_core::redis_url`].
pub fn check_url(url: &str) -> std::result::Result<(), String> {
    keel_core::redis_url::parse(url).map(|_| ())
}

/// The Redis backend: one multiplexed connection shared by every queue handle of the process;
/// each worker gets its own connections from bullmq (a blocking one for fetching).
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    settings: RedisSettings,
    conn_opts: RedisConnectionOptions,
    conn: RedisConnection,
    /// A Redis Cluster's seed nodes (empty on one node).
    cluster_seeds: Vec<String>,
    /// Queue handles by name. `std::sync::Mutex`: looked up and inserted without awaiting.
    queues: Mutex<HashMap<String, Arc<BullQueue>>>,
    /// The toolkit's latency samples and outage logger.
    kv: kv::KvState,
    /// Fails calls fast while Redis is unreachable.
    circuit: Arc<circuit::Circuit>,
}

fn install_crypto_provider() {
    // bullmq-official's `rediss://` support panics without a process-wide rustls provider.
    // Installing twice is an error we can ignore: someone already chose one.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl RedisBackend {
    /// Connects and checks the connection with a `PING`; fails `backend-unavailable` within
    /// `settings.command_timeout` when Redis cannot be reached.
    pub async fn connect(settings: RedisSettings) -> Result<RedisBackend> {
        install_crypto_provider();
        if settings.prefix.is_empty() || settings.prefix.contains(':') {
            return Err(Error::invalid(
                "prefix",
                format!("{:?} must be non-empty and contain no ':'", settings.prefix),
            ));
        }
        check_url(&settings.url).map_err(|m| {
            Error::invalid("REDIS_URL", format!("{}: {m}", redact_url(&settings.url)))
        })?;
        let seeds = match keel_core::redis_url::parse(&settings.url) {
            Ok(keel_core::redis_url::RedisTarget::Cluster(seeds)) => seeds,
            _ => Vec::new(),
        };
        let backend = Self::open(settings, seeds).await?;
        if backend.inner.cluster_seeds.is_empty() && backend.is_cluster_node().await? {
            // A node of a cluster, named by a plain URL: the cluster, through it.
            let seeds = vec![backend.inner.settings.url.clone()];
            return Self::open(backend.inner.settings.clone(), seeds).await;
        }
        Ok(backend)
    }

    async fn open(settings: RedisSettings, cluster_seeds: Vec<String>) -> Result<RedisBackend> {
        let conn_opts = if cluster_seeds.is_empty() {
            RedisConnectionOptions::new().url(settings.url.clone())
        } else {
            RedisConnectionOptions::new().cluster_nodes(cluster_seeds.clone())
        };
        let timeout = settings.command_timeout;
        let conn = tokio::time::timeout(timeout, RedisConnection::new_managed_only(&conn_opts))
            .await
            .map_err(|_| {
                Error::BackendUnavailable(format!(
                    "could not connect to Redis at {} within {timeout:?}",
                    redact_url(&settings.url)
                ))
            })?
            .map_err(|e| map_err("connecting to Redis", e))?;
        let backend = RedisBackend {
            inner: Arc::new(Inner {
                settings,
                conn_opts,
                conn,
                cluster_seeds,
                queues: Mutex::new(HashMap::new()),
                kv: kv::KvState::default(),
                circuit: Default::default(),
            }),
        };
        backend.ping().await?;
        Ok(backend)
    }

    /// Whether the server is a Redis Cluster node.
    async fn is_cluster_node(&self) -> Result<bool> {
        let info: String = match self
            .cmd(
                "reading INFO cluster",
                redis::cmd("INFO").arg("cluster").to_owned(),
            )
            .await
        {
            Ok(i) => i,
            // INFO may be renamed or disabled on managed Redis: nothing to learn then.
            Err(Error::Backend(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        Ok(info.lines().any(|l| l.trim() == "cluster_enabled:1"))
    }

    /// Whether this backend is on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        !self.inner.cluster_seeds.is_empty()
    }

    /// The name BullMQ knows the queue by: on a Redis Cluster `{queue}`, so that every key of
    /// the queue (`bull:{queue}:wait`, `…:meta`, …) shares one hash tag and so one slot (and
    /// queues spread over the masters); on one node the queue's own name.
    pub fn bull_name(&self, queue: &str) -> String {
        if self.is_cluster() {
            format!("{{{queue}}}")
        } else {
            queue.to_string()
        }
    }

    /// Keel's name of the queue behind a bullmq handle.
    fn queue_of<'a>(&self, q: &'a BullQueue) -> &'a str {
        self.keel_name(q.name()).unwrap_or(q.name())
    }

    /// The queue a BullMQ name names (the inverse of [`Self::bull_name`]); on a cluster `None`
    /// for a name without the tag (not one of Keel's queues there).
    pub(crate) fn keel_name<'a>(&self, bull: &'a str) -> Option<&'a str> {
        if self.is_cluster() {
            bull.strip_prefix('{').and_then(|n| n.strip_suffix('}'))
        } else {
            Some(bull)
        }
    }

    /// The settings this backend was made with.
    pub fn settings(&self) -> &RedisSettings {
        &self.inner.settings
    }

    /// Whether calls are failing fast because Redis was found unreachable.
    pub fn is_unreachable(&self) -> bool {
        self.inner.circuit.is_open()
    }

    /// Runs `fut` bounded by the command timeout, failing fast while the circuit is open and
    /// opening it when the call finds Redis unreachable (per `unreachable`).
    async fn guarded<T, E>(
        &self,
        what: &str,
        fut: impl Future<Output = std::result::Result<T, E>>,
        unreachable: fn(&E) -> bool,
        map: fn(&str, E) -> Error,
    ) -> Result<T> {
        self.inner.circuit.check(what)?;
        match tokio::time::timeout(self.inner.settings.command_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if unreachable(&e) {
                    self.inner.circuit.trip(&self.inner.conn);
                }
                Err(map(what, e))
            }
            Err(_) => {
                self.inner.circuit.trip(&self.inner.conn);
                Err(Error::BackendUnavailable(format!(
                    "{what}: Redis did not answer within {:?}",
                    self.inner.settings.command_timeout
                )))
            }
        }
    }

    /// A bullmq call through [`RedisBackend::guarded`].
    async fn bounded<T>(
        &self,
        what: &str,
        fut: impl Future<Output = std::result::Result<T, bullmq::Error>>,
    ) -> Result<T> {
        self.guarded(what, fut, circuit::bull_unreachable, map_err)
            .await
    }

    /// A plain Redis call (command, script, pipeline) through [`RedisBackend::guarded`].
    pub(crate) async fn redis_call<T>(
        &self,
        what: &str,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T> {
        self.guarded(what, fut, circuit::unreachable, map_redis)
            .await
    }

    /// Runs a plain Redis command bounded by the command timeout.
    async fn cmd<T: redis::FromRedisValue>(&self, what: &str, cmd: redis::Cmd) -> Result<T> {
        let mut conn = self.inner.conn.connection();
        self.redis_call(what, async move { cmd.query_async::<T>(&mut conn).await })
            .await
    }

    /// Every key matching `pattern`, by `SCAN` (never `KEYS`, which blocks Redis).
    async fn scan_keys(&self, what: &str, pattern: &str) -> Result<Vec<String>> {
        keel_core::KvBackend::scan(self, pattern, usize::MAX)
            .await
            .map_err(|e| match e {
                Error::BackendUnavailable(m) => Error::BackendUnavailable(format!("{what}: {m}")),
                Error::Backend(m) => Error::Backend(format!("{what}: {m}")),
                other => other,
            })
    }

    /// The bullmq handle of `name`, created (and its meta `version` written) on first use.
    async fn queue(&self, name: &str) -> Result<Arc<BullQueue>> {
        if let Some(q) = self
            .inner
            .queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Ok(q.clone());
        }
        let opts = QueueOptions::new()
            .prefix(self.inner.settings.prefix.clone())
            .skip_version_check();
        let q = self
            .bounded(
                "opening queue",
                BullQueue::with_connection(&self.bull_name(name), self.inner.conn.clone(), opts),
            )
            .await?;
        // Only when no client wrote one: Node BullMQ 5's `bullmq:5.…` tells Keel the queue is
        // in BullMQ 5's layout (see `scripts`).
        self.cmd::<()>(
            "writing queue meta version",
            redis::cmd("HSETNX")
                .arg(q.keys().meta())
                .arg("version")
                .arg(META_VERSION)
                .to_owned(),
        )
        .await?;
        let q = Arc::new(q);
        self.inner
            .queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), q.clone());
        Ok(q)
    }

    /// Whether `name` is a dead-letter queue that was never written (no meta key). Reading such
    /// a queue answers "empty" without opening it: opening a queue writes its meta hash, and a
    /// DLQ should appear in Redis (and in Bull Board's listings) only once it holds an entry.
    async fn unwritten_dlq(&self, name: &str) -> Result<bool> {
        if !name.starts_with(keel_core::DLQ_PREFIX)
            || self
                .inner
                .queues
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(name)
        {
            return Ok(false);
        }
        let meta = format!(
            "{}:{}:meta",
            self.inner.settings.prefix,
            self.bull_name(name)
        );
        let exists: bool = self
            .cmd(
                "looking for a queue",
                redis::cmd("EXISTS").arg(meta).to_owned(),
            )
            .await?;
        Ok(!exists)
    }

    /// Waiting jobs of a queue whose `paused` list holds some (BullMQ 5's layout): `wait`
    /// (newest first), then `paused`.
    async fn list_waiting_with_paused(
        &self,
        q: &BullQueue,
        offset: usize,
        limit: usize,
        asc: bool,
    ) -> Result<Vec<Job>> {
        let mut ids: Vec<String> = Vec::new();
        for key in [q.keys().wait(), q.keys().paused()] {
            let part: Vec<String> = self
                .cmd(
                    "listing waiting jobs",
                    redis::cmd("LRANGE").arg(key).arg(0).arg(-1).to_owned(),
                )
                .await?;
            ids.extend(part);
        }
        if asc {
            ids.reverse();
        }
        let mut jobs = Vec::new();
        for id in ids.into_iter().skip(offset).take(limit) {
            if let Some(j) = self.bounded("reading a job", q.get_job(&id)).await? {
                jobs.push(from_bull_job(self.queue_of(q), &j));
            }
        }
        Ok(jobs)
    }

    async fn add_one(&self, q: &BullQueue, job: NewJob) -> Result<Job> {
        let custom = job.opts.job_id.is_some() || job.opts.deduplication.is_some();
        if scripts::is_standard(&job.opts) {
            let timestamp = keel_core::now_ms();
            let id = scripts::add_standard(self, q.keys(), &job, timestamp).await?;
            if custom {
                if let Some(stored) = self.bounded("reading a job", q.get_job(&id)).await? {
                    return Ok(from_bull_job(self.queue_of(q), &stored));
                }
            }
            return Ok(Job::added(id, self.queue_of(q), job, timestamp));
        }
        let jitter = job.opts.backoff.clone().filter(|b| b.jitter > 0.0);
        let opts = convert::to_bull_opts(&job.opts);
        let added = self
            .bounded(
                "adding a job",
                q.add(&job.name, job.data).options(opts).into_future(),
            )
            .await?;
        if let Some(b) = &jitter {
            scripts::patch_backoff(self, q.keys(), added.id(), b).await?;
        }
        if custom {
            // The id may belong to an existing job (custom id or held deduplication id): BullMQ
            // then returns that id without writing, so read back what is stored.
            if let Some(stored) = self.bounded("reading a job", q.get_job(added.id())).await? {
                return Ok(from_bull_job(self.queue_of(q), &stored));
            }
        }
        Ok(from_bull_job(self.queue_of(q), &added))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_debug_output() {
        let s = RedisSettings {
            url: "redis://user:hunter2@host:6379/0".into(),
            prefix: "bull".into(),
            command_timeout: Duration::from_secs(1),
            sharded_pubsub: false,
        };
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("user:***@host"), "{shown}");
        assert_eq!(redact_url("redis://:pw@h:1"), "redis://:***@h:1");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
    }
}
