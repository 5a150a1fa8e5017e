//! Keel's own Redis queue engine (issue 14), designed for throughput from the first line:
//! Keel processes only (Node BullMQ and Bull Board do not read it), every key of a queue under
//! one hash tag, claims and acknowledgements in batches.
//!
//! [`NativeEngine`] implements `keel_core::QueueBackend`, so every layer above (queues,
//! workers, DLQ, handlers, server, workflows) runs on it unchanged, and the conformance suite
//! runs every behaviour on it as on the memory and BullMQ backends.
//!
//! Modules: `queue` (the contract: producers and admin), `worker` (the batched worker loop),
//! `control` (a running job's progress and log),
//! `lease` (heartbeats and stall recovery), `sched` (schedulers), `events` (the live events
//! reader); this file: the engine, its keys and scripts, the stored job.
//!
//! # Layout
//! Every key of queue `q` under prefix `p` is `p:keel:{q}:<name>` — one hash tag a queue, so a
//! queue lives in one Redis Cluster slot and different queues spread over the cluster; the
//! `keel:` namespace keeps them apart from BullMQ's keys under the same prefix (BullMQ queue
//! names hold no `:`, so no BullMQ queue's key starts so).
//!
//! | key | type | holds |
//! |---|---|---|
//! | `seq` | string | counter: generated ids, and the order of prioritized jobs |
//! | `jobs` | hash | id → the job as added: name, data, options, timestamp (JSON, written once) |
//! | `wait` | list | waiting ids: FIFO adds push left, the worker pops right; LIFO adds push right |
//! | `prio` | zset | prioritized waiting ids, score `priority × 2³² + sequence` |
//! | `pri` | hash | id → priority, for prioritized jobs only (a delayed one keeps it) |
//! | `delayed` | zset | ids → the time they may run (delays, retries after backoff) |
//! | `active` | zset | leased ids → lease deadline (ms) |
//! | `owner` | hash | leased id → the lease: `<worker token>:<take>:<n>`, one a take |
//! | `att` | hash | id → attempts made, only once one failed |
//! | `stalls` | hash | id → times its lease expired, only once it did |
//! | `done`, `ret` | zset, hash | kept completed ids → finish time; id → return value |
//! | `failed`, `err` | zset, hash | failed ids → finish time; id → the error (JSON) |
//! | `meta` | hash | `paused`; the queue's rate limit `rl_max` jobs a `rl_ms`; its global concurrency `gc` |
//! | `notify` | list | at most one token: idle workers block on it (`BLPOP`) |
//! | `dedup` | hash | deduplication id → `<job id>\|<until ms, 0 = until it finishes>` |
//! | `events` | stream | the queue's events, one entry a kind a call (`e` = kind, then id → detail pairs), capped near 1,000 entries |
//! | `progress` | hash | id → the last progress reported (JSON) |
//! | `scheds`, `schedz`, `schedi` | hash, zset, hash | scheduler id → spec (schedule and job template); → next run; → jobs added |
//! | `limiter` | string | jobs taken in the rate limit's current window (expires with it) |
//! | `fresh` | hash | id → stalls not yet reported to an attempt (`JobContext::recovered_stalls`) |
//! | `log:<id>` | list | a job's log lines (the one per-job key) |
//!
//! Why: a waiting job costs one hash field (its encoded job) and one list entry — no hash of a
//! dozen fields a job as in BullMQ, whose per-job key and field names are most of its 699 B.
//! The mutable facts of a job live in small hashes touched only when they exist (a failure, a
//! stall, a priority), so the common path — added, taken, completed — writes nothing per job
//! but the list entry, the lease and its removal.
//!
//! # Scripts (`lua/`, each opening with its ARGV and reply)
//! Every script gets the same KEYS — the queue's keys in the order of [`KEY_NAMES`] — and
//! `prelude.lua`'s helpers (chunked variadic calls, events, purging a job's data, putting jobs
//! back to waiting, retention).
//! - `add.lua`: one job or a whole bulk in one call (custom ids with `HSETNX`: adding again
//!   returns the existing job; deduplication ids held until the job finishes or for a ttl).
//! - `cycle.lua`: a worker's one round trip: applies a batch of acknowledgements (completed,
//!   kept or removed; retried with backoff; delayed without an attempt; failed), trims retention
//!   by count, moves due delayed jobs to waiting, and takes up to `want` jobs (fewer when the
//!   queue's rate limit or global concurrency says so), leasing them to the worker's token. One
//!   call a batch, never one a job; a worker keeps two in flight, each for half its slots
//!   (`run.rs`), so Redis runs one batch's cycle while the worker runs the other's jobs.
//!   Concurrent single adds are coalesced the same way (`adder.rs`): adds arriving while an
//!   `add.lua` call is in flight go out together in the next one.
//! - `extend.lua`: the heartbeat: every lease of a worker renewed in one call.
//! - `recover.lua`: leases past their deadline go back to the head of waiting with their stall
//!   counted; past the poison limit the job fails.
//! - `remove.lua`, `retry.lua`, `clean.lua`, `drain.lua`: the admin operations.
//! - `sched_upsert.lua`, `sched_fire.lua`, `sched_remove.lua`: a scheduler keeps one delayed job
//!   for its next run (id `sched:<scheduler>:<run ms>`); the worker that takes it adds the next
//!   one, once across workers (compare-and-set on the scheduler's next run), before running it.
//!   The next run itself is computed in Rust (`keel_core::schedule::Timetable`: cron with time
//!   zone, or aligned intervals), as on the other backends.
//!
//! # Not kept (against BullMQ)
//! - The `completed` event carries the return value of kept jobs only (a job removed on
//!   completion sends none); `processedOn` is the time the current worker took it, not stored.
//! - Deduplication entries stay in `dedup` after their job is gone (one field per distinct
//!   deduplication id; a later add with the same id overwrites it).
//!
//! # State machine
//! `add` → waiting (`wait` or `prio`) or delayed → `cycle` takes it: active (leased) → its
//! acknowledgement in a later `cycle`: completed (removed, or kept in `done`), delayed (a retry
//! after backoff, or a delay) or failed. An expired lease (`recover`) → waiting again, or
//! failed past the poison limit. An acknowledgement carries the lease its attempt ran under and
//! counts only while that is the job's lease: an attempt whose lease was recovered meanwhile
//! (even if the same worker took the job again) is ignored, and the job's new attempt decides.
//! Leases, delays and finish times are on Redis's clock (`TIME` in the scripts), whatever the
//! clients' clocks say.
//!
//! # Leases, and why not Redis Streams
//! Streams' pending lists and `XAUTOCLAIM` give leases too, but not priorities, LIFO, delays or
//! custom ids, which would need the same sorted sets beside the stream; lists and sorted sets
//! under scripts give all of them with one data structure each, and run on Redis 6.2+
//! (`RPOP` with a count).

mod adder;
mod control;
mod events;
mod lease;
mod queue;
mod run;
mod sched;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use keel_core::{Error, Job, JobOptions, NewJob, Result};
use redis::Script;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use worker::NativeWorker;

/// Every key of a queue, in the order every script receives them as KEYS (`prelude.lua`).
pub const KEY_NAMES: [&str; 24] = [
    "jobs", "wait", "prio", "delayed", "active", "owner", "att", "stalls", "done", "ret", "failed",
    "err", "pri", "meta", "notify", "seq", "dedup", "events", "progress", "scheds", "schedz",
    "schedi", "limiter", "fresh",
];

/// The scripts, loaded once, each with the prelude in front.
pub(crate) struct Scripts {
    pub(crate) add: Script,
    pub(crate) cycle: Script,
    pub(crate) extend: Script,
    pub(crate) recover: Script,
    pub(crate) remove: Script,
    pub(crate) retry: Script,
    pub(crate) clean: Script,
    pub(crate) drain: Script,
    pub(crate) sched_upsert: Script,
    pub(crate) sched_fire: Script,
    pub(crate) sched_remove: Script,
}

impl Scripts {
    fn load() -> Scripts {
        let with =
            |body: &str| Script::new(&format!("{}\n{body}", include_str!("../lua/prelude.lua")));
        Scripts {
            add: with(include_str!("../lua/add.lua")),
            cycle: with(include_str!("../lua/cycle.lua")),
            extend: with(include_str!("../lua/extend.lua")),
            recover: with(include_str!("../lua/recover.lua")),
            remove: with(include_str!("../lua/remove.lua")),
            retry: with(include_str!("../lua/retry.lua")),
            clean: with(include_str!("../lua/clean.lua")),
            drain: with(include_str!("../lua/drain.lua")),
            sched_upsert: with(include_str!("../lua/sched_upsert.lua")),
            sched_fire: with(include_str!("../lua/sched_fire.lua")),
            sched_remove: with(include_str!("../lua/sched_remove.lua")),
        }
    }
}

/// The keys of one queue.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    base: String,
    /// Every key's full name, in [`KEY_NAMES`] order: built once, passed to every script call
    /// (a worker's cycle would otherwise format 24 names a round trip).
    all: Arc<[String]>,
}

impl Keys {
    fn new(prefix: &str, queue: &str) -> Keys {
        let base = format!("{prefix}:keel:{{{queue}}}:");
        let all = KEY_NAMES.iter().map(|k| format!("{base}{k}")).collect();
        Keys { base, all }
    }

    pub(crate) fn k(&self, name: &str) -> String {
        format!("{}{name}", self.base)
    }

    /// An invocation of `script` with every key of the queue.
    pub(crate) fn invoke<'a>(&self, script: &'a Script) -> redis::ScriptInvocation<'a> {
        let mut inv = script.prepare_invoke();
        for k in self.all.iter() {
            inv.key(k);
        }
        inv
    }
}

/// A job as stored in `jobs`: what never changes after the add.
#[derive(Serialize, Deserialize)]
pub(crate) struct Stored {
    #[serde(rename = "n")]
    pub(crate) name: String,
    #[serde(rename = "d")]
    pub(crate) data: Value,
    #[serde(rename = "o", default)]
    pub(crate) opts: JobOptions,
    #[serde(rename = "t")]
    pub(crate) timestamp: u64,
    /// The scheduler whose run this job is, and the run's time.
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub(crate) scheduler: Option<(String, u64)>,
}

/// Keel's own engine on one Redis: queues under one key prefix.
#[derive(Clone)]
pub struct NativeEngine {
    pub(crate) conn: keel_redis::conn::Conn,
    pub(crate) client: keel_redis::conn::Client,
    pub(crate) prefix: String,
    pub(crate) scripts: Arc<Scripts>,
    pub(crate) command_timeout: Duration,
    /// Concurrent single adds, coalesced a queue at a time (`adder.rs`).
    pub(crate) adds: Arc<adder::Adds>,
}

pub(crate) fn redis_err(e: redis::RedisError) -> Error {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        Error::BackendUnavailable(format!("redis: {e}"))
    } else {
        Error::Backend(format!("redis: {e}"))
    }
}

/// One value of a script's reply.
pub(crate) fn parse<T: redis::FromRedisValue>(v: &redis::Value) -> Result<T> {
    redis::from_redis_value_ref(v).map_err(|e| Error::Backend(format!("redis reply: {e}")))
}

impl NativeEngine {
    /// Connects to `url` — one node (`redis://…`, `rediss://…`) or a Redis Cluster
    /// (`redis+cluster://host:port,host:port`, `rediss+cluster://…`; a node URL that names a
    /// cluster node connects to its cluster) — with keys under `prefix`. Producer and admin
    /// calls fail `backend-unavailable` past `command_timeout`.
    pub async fn connect(
        url: &str,
        prefix: &str,
        command_timeout: Duration,
    ) -> Result<NativeEngine> {
        let mut client = keel_redis::conn::Client::open(url)?;
        let bounded = |what: &'static str| {
            move |_| {
                Error::BackendUnavailable(format!(
                    "redis: {what}: no answer within {command_timeout:?}"
                ))
            }
        };
        let mut conn = tokio::time::timeout(command_timeout, client.shared())
            .await
            .map_err(bounded("connecting"))?
            .map_err(redis_err)?;
        if let keel_redis::conn::Client::Node(_) = client {
            let info: String = tokio::time::timeout(
                command_timeout,
                redis::cmd("INFO").arg("cluster").query_async(&mut conn),
            )
            .await
            .map_err(bounded("reading INFO cluster"))?
            // INFO may be renamed or disabled on managed Redis: then it is one node.
            .unwrap_or_default();
            if info.lines().any(|l| l.trim() == "cluster_enabled:1") {
                client = keel_redis::conn::Client::cluster(&[url.to_string()])
                    .map_err(|m| Error::invalid("redis.url", m))?;
                conn = tokio::time::timeout(command_timeout, client.shared())
                    .await
                    .map_err(bounded("connecting to the cluster"))?
                    .map_err(redis_err)?;
            }
        }
        Ok(NativeEngine {
            conn,
            client,
            prefix: prefix.to_string(),
            scripts: Arc::new(Scripts::load()),
            command_timeout,
            adds: Arc::default(),
        })
    }

    pub(crate) fn keys(&self, queue: &str) -> Keys {
        Keys::new(&self.prefix, queue)
    }

    /// A connection of its own (blocking reads: `BLPOP`, `XREAD BLOCK`), without a reply
    /// timeout, bounded by the command timeout to open.
    pub(crate) async fn dedicated(&self) -> Result<keel_redis::conn::Conn> {
        self.bounded("opening a connection", self.client.dedicated())
            .await
    }

    /// Whether this engine runs on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.client, keel_redis::conn::Client::Cluster(_))
    }

    /// `fut` bounded by the command timeout: past it, `backend-unavailable`.
    pub(crate) async fn bounded<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.command_timeout, fut).await {
            Ok(r) => r.map_err(redis_err),
            Err(_) => Err(Error::BackendUnavailable(format!(
                "{what}: Redis did not answer within {:?}",
                self.command_timeout
            ))),
        }
    }

    /// The full name of key `name` (one of [`KEY_NAMES`]) of `queue` — for tools and tests
    /// that look at the layout.
    pub fn key_of(&self, queue: &str, name: &str) -> String {
        self.keys(queue).k(name)
    }

    /// Bytes Redis holds for the queue's keys (`MEMORY USAGE` of each, all samples).
    pub async fn memory_usage(&self, queue: &str) -> Result<u64> {
        let keys = self.keys(queue);
        let mut conn = self.conn.clone();
        let mut total = 0;
        for k in KEY_NAMES {
            let n: Option<u64> = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(keys.k(k))
                .arg("SAMPLES")
                .arg(0)
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            total += n.unwrap_or(0);
        }
        Ok(total)
    }
}

/// The job as stored, and its scheduler run when it is one.
pub(crate) fn decode(
    queue: &str,
    id: String,
    stored: &str,
) -> Result<(Job, Option<(String, u64)>)> {
    let s: Stored = serde_json::from_str(stored)
        .map_err(|e| Error::Backend(format!("job {id} of {queue} is not readable: {e}")))?;
    let job = Job::added(
        id,
        queue,
        NewJob {
            name: s.name,
            data: s.data,
            opts: s.opts,
        },
        s.timestamp,
    );
    Ok((job, s.scheduler))
}

/// How long the idle wait for new jobs blocks at most before looking at delayed jobs again.
pub(crate) const IDLE_WAIT: Duration = Duration::from_secs(1);
