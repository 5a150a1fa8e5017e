//! Keel's own Redis queue engine (issue 14), designed for throughput from the first line:
//! Keel processes only (Node BullMQ and Bull Board do not read it), every key of a queue under
//! one hash tag, claims and acknowledgements in batches.
//!
//! **State of this crate**: the engine's core — adding (one or a bulk in one call), taking and
//! finishing jobs in batches, retries with backoff, delays, priorities, LIFO, custom ids, pause,
//! leases with heartbeats and stalled-job recovery with a poison limit, retention by count —
//! with its own tests and `keel bench --engine keel`. It is not yet a `keel_core::QueueBackend`
//! (listing, search, schedulers, rate limits, deduplication, events, clean/drain/obliterate and
//! the conformance suite are still to do), so no queue can select it yet.
//!
//! # Layout
//! Every key of queue `q` under prefix `p` is `p:{q}:<name>` — one hash tag a queue, so a queue
//! lives in one Redis Cluster slot and different queues spread over the cluster.
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
//! | `owner` | hash | leased id → the lease's token (the worker's) |
//! | `att` | hash | id → attempts made, only once one failed |
//! | `stalls` | hash | id → times its lease expired, only once it did |
//! | `done`, `ret` | zset, hash | kept completed ids → finish time; id → return value |
//! | `failed`, `err` | zset, hash | failed ids → finish time; id → the error (JSON) |
//! | `meta` | hash | `paused` |
//! | `notify` | list | at most one token: idle workers block on it (`BLPOP`) |
//!
//! Why: a waiting job costs one hash field (its encoded job) and one list entry — no hash of a
//! dozen fields a job as in BullMQ, whose per-job key and field names are most of its 699 B.
//! The mutable facts of a job live in small hashes touched only when they exist (a failure, a
//! stall, a priority), so the common path — added, taken, completed — writes nothing per job
//! but the list entry, the lease and its removal.
//!
//! # Scripts (`lua/`, each opening with its KEYS, ARGV and reply)
//! - `add.lua`: one job or a whole bulk in one call (custom ids with `HSETNX`: adding again
//!   returns the existing job).
//! - `cycle.lua`: a worker's one round trip: applies a batch of acknowledgements (completed,
//!   kept or removed; retried with backoff; delayed without an attempt; failed), trims retention
//!   by count, moves due delayed jobs to waiting, and takes up to `want` jobs, leasing them to
//!   the worker's token. One call a batch, never one a job.
//! - `extend.lua`: the heartbeat: every lease of a worker renewed in one call.
//! - `recover.lua`: leases past their deadline go back to the head of waiting with their stall
//!   counted; past the poison limit the job fails.
//!
//! # State machine
//! `add` → waiting (`wait` or `prio`) or delayed → `cycle` takes it: active (leased) → its
//! acknowledgement in a later `cycle`: completed (removed, or kept in `done`), delayed (a retry
//! after backoff, or a delay) or failed. An expired lease (`recover`) → waiting again, or
//! failed past the poison limit. An acknowledgement whose lease is no longer the worker's (it
//! was recovered meanwhile) is ignored: the job's new attempt decides.
//!
//! # Leases, and why not Redis Streams
//! Streams' pending lists and `XAUTOCLAIM` give leases too, but not priorities, LIFO, delays or
//! custom ids, which would need the same sorted sets beside the stream; lists and sorted sets
//! under scripts give all of them with one data structure each, and run on Redis 6.2+
//! (`RPOP` with a count).

mod worker;

use std::time::Duration;

use keel_core::{Error, Job, JobOptions, NewJob, QueueCounts, Result};
use redis::aio::ConnectionManager;
use redis::Script;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use worker::NativeWorker;

/// The scripts, loaded once.
pub(crate) struct Scripts {
    pub(crate) add: Script,
    pub(crate) cycle: Script,
    pub(crate) extend: Script,
    pub(crate) recover: Script,
}

impl Scripts {
    fn load() -> Scripts {
        Scripts {
            add: Script::new(include_str!("../lua/add.lua")),
            cycle: Script::new(include_str!("../lua/cycle.lua")),
            extend: Script::new(include_str!("../lua/extend.lua")),
            recover: Script::new(include_str!("../lua/recover.lua")),
        }
    }
}

/// The keys of one queue.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    base: String,
}

impl Keys {
    fn new(prefix: &str, queue: &str) -> Keys {
        Keys {
            base: format!("{prefix}:{{{queue}}}:"),
        }
    }

    pub(crate) fn k(&self, name: &str) -> String {
        format!("{}{name}", self.base)
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
}

/// The engine on one Redis: queues under one key prefix.
#[derive(Clone)]
pub struct NativeEngine {
    pub(crate) conn: ConnectionManager,
    pub(crate) client: redis::Client,
    pub(crate) prefix: String,
    pub(crate) scripts: std::sync::Arc<Scripts>,
}

pub(crate) fn redis_err(e: redis::RedisError) -> Error {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
        Error::BackendUnavailable(format!("redis: {e}"))
    } else {
        Error::Backend(format!("redis: {e}"))
    }
}

/// One value of a script's reply.
pub(crate) fn parse<T: redis::FromRedisValue>(v: &redis::Value) -> Result<T> {
    redis::from_redis_value_ref(v).map_err(|e| Error::Backend(format!("redis reply: {e}")))
}

/// Jobs added by one `add.lua` call at most (a bulk is split).
const ADD_CHUNK: usize = 1000;

impl NativeEngine {
    /// Connects to `url` (`redis://…`, `rediss://…`); keys under `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<NativeEngine> {
        let client =
            redis::Client::open(url).map_err(|e| Error::invalid("redis.url", e.to_string()))?;
        let conn = ConnectionManager::new(client.clone())
            .await
            .map_err(redis_err)?;
        Ok(NativeEngine {
            conn,
            client,
            prefix: prefix.to_string(),
            scripts: std::sync::Arc::new(Scripts::load()),
        })
    }

    pub(crate) fn keys(&self, queue: &str) -> Keys {
        Keys::new(&self.prefix, queue)
    }

    /// Adds one job; a custom id that exists returns the existing job unchanged.
    pub async fn add(&self, queue: &str, job: NewJob) -> Result<Job> {
        Ok(self.add_bulk(queue, vec![job]).await?.remove(0))
    }

    /// Adds jobs in order, up to a thousand a script call (each call atomic).
    pub async fn add_bulk(&self, queue: &str, jobs: Vec<NewJob>) -> Result<Vec<Job>> {
        let keys = self.keys(queue);
        let now = keel_core::now_ms();
        let mut out = Vec::with_capacity(jobs.len());
        let mut jobs = jobs.into_iter().peekable();
        while jobs.peek().is_some() {
            let chunk: Vec<NewJob> = jobs.by_ref().take(ADD_CHUNK).collect();
            let mut inv = self.scripts.add.prepare_invoke();
            for k in ["seq", "jobs", "wait", "prio", "delayed", "pri", "notify"] {
                inv.key(keys.k(k));
            }
            inv.arg(now);
            for j in &chunk {
                let stored = Stored {
                    name: j.name.clone(),
                    data: j.data.clone(),
                    opts: JobOptions {
                        job_id: None,
                        ..j.opts.clone()
                    },
                    timestamp: now,
                };
                let encoded = serde_json::to_string(&stored)
                    .map_err(|e| Error::invalid("data", format!("not serializable: {e}")))?;
                inv.arg(j.opts.job_id.as_deref().unwrap_or(""))
                    .arg(encoded)
                    .arg(j.opts.delay_ms.unwrap_or(0))
                    .arg(j.opts.priority.unwrap_or(0))
                    .arg(if j.opts.lifo { "1" } else { "0" });
            }
            let reply: Vec<redis::Value> = inv
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(redis_err)?;
            for (j, pair) in chunk.into_iter().zip(reply.chunks(2)) {
                let id: String = crate::parse(&pair[0])?;
                let added: i64 = crate::parse(&pair[1])?;
                if added == 1 {
                    out.push(new_job(queue, id, j, now));
                } else {
                    let existing = self.get_job(queue, &id).await?;
                    out.push(existing.ok_or_else(|| {
                        Error::Backend(format!("job {id} vanished while being added"))
                    })?);
                }
            }
        }
        Ok(out)
    }

    /// One job, or `None`.
    pub async fn get_job(&self, queue: &str, id: &str) -> Result<Option<Job>> {
        let keys = self.keys(queue);
        let mut conn = self.conn.clone();
        let (stored, att, stalls, ret, err): (
            Option<String>,
            Option<u32>,
            Option<u32>,
            Option<String>,
            Option<String>,
        ) = redis::pipe()
            .hget(keys.k("jobs"), id)
            .hget(keys.k("att"), id)
            .hget(keys.k("stalls"), id)
            .hget(keys.k("ret"), id)
            .hget(keys.k("err"), id)
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        let mut job = decode(queue, id.to_string(), &stored)?;
        job.attempts_made = att.unwrap_or(0);
        job.stalled_counter = stalls.unwrap_or(0);
        job.returnvalue = ret.and_then(|r| serde_json::from_str(&r).ok());
        if let Some(e) = err.and_then(|e| serde_json::from_str::<Value>(&e).ok()) {
            job.failed_reason = e["reason"].as_str().map(str::to_string);
            job.stacktrace = e["stack"]
                .as_str()
                .map(|s| vec![s.to_string()])
                .unwrap_or_default();
        }
        Ok(Some(job))
    }

    /// Counts by state and the paused flag.
    pub async fn counts(&self, queue: &str) -> Result<QueueCounts> {
        let keys = self.keys(queue);
        let mut conn = self.conn.clone();
        let (waiting, prioritized, delayed, active, completed, failed, paused): (
            u64,
            u64,
            u64,
            u64,
            u64,
            u64,
            bool,
        ) = redis::pipe()
            .llen(keys.k("wait"))
            .zcard(keys.k("prio"))
            .zcard(keys.k("delayed"))
            .zcard(keys.k("active"))
            .zcard(keys.k("done"))
            .zcard(keys.k("failed"))
            .hexists(keys.k("meta"), "paused")
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(QueueCounts {
            waiting,
            active,
            delayed,
            prioritized,
            completed,
            failed,
            paused,
        })
    }

    /// Pauses the queue: no worker takes jobs; adding still works.
    pub async fn pause(&self, queue: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        redis::cmd("HSET")
            .arg(self.keys(queue).k("meta"))
            .arg("paused")
            .arg(1)
            .query_async::<()>(&mut conn)
            .await
            .map_err(redis_err)
    }

    /// Resumes the queue and wakes an idle worker.
    pub async fn resume(&self, queue: &str) -> Result<()> {
        let keys = self.keys(queue);
        let mut conn = self.conn.clone();
        redis::pipe()
            .hdel(keys.k("meta"), "paused")
            .lpush(keys.k("notify"), "1")
            .ltrim(keys.k("notify"), 0, 0)
            .query_async::<()>(&mut conn)
            .await
            .map_err(redis_err)
    }

    /// Deletes every key of the queue (`SCAN` of its hash tag).
    pub async fn obliterate(&self, queue: &str) -> Result<()> {
        let keys = self.keys(queue);
        let mut conn = self.conn.clone();
        let pattern = format!("{}*", keys.base.replace('[', "\\[").replace('?', "\\?"));
        let found: Vec<String> = {
            let mut iter: redis::AsyncIter<String> =
                redis::AsyncCommands::scan_match(&mut conn, &pattern)
                    .await
                    .map_err(redis_err)?;
            let mut v = Vec::new();
            while let Some(k) = futures::StreamExt::next(&mut iter).await {
                v.push(k.map_err(redis_err)?);
            }
            v
        };
        if !found.is_empty() {
            redis::cmd("DEL")
                .arg(found)
                .query_async::<()>(&mut conn)
                .await
                .map_err(redis_err)?;
        }
        Ok(())
    }

    /// Bytes Redis holds for the queue's keys (`MEMORY USAGE` of each, all samples).
    pub async fn memory_usage(&self, queue: &str) -> Result<u64> {
        let keys = self.keys(queue);
        let mut conn = self.conn.clone();
        let mut total = 0;
        for k in [
            "seq", "jobs", "wait", "prio", "pri", "delayed", "active", "owner", "att", "stalls",
            "done", "ret", "failed", "err", "meta", "notify",
        ] {
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

fn new_job(queue: &str, id: String, j: NewJob, now: u64) -> Job {
    Job {
        id,
        queue: queue.to_string(),
        name: j.name,
        data: j.data,
        opts: j.opts,
        attempts_made: 0,
        attempts_started: 0,
        stalled_counter: 0,
        progress: Value::from(0),
        timestamp: now,
        processed_on: None,
        finished_on: None,
        failed_reason: None,
        stacktrace: Vec::new(),
        returnvalue: None,
        processed_by: None,
    }
}

pub(crate) fn decode(queue: &str, id: String, stored: &str) -> Result<Job> {
    let s: Stored = serde_json::from_str(stored)
        .map_err(|e| Error::Backend(format!("job {id} of {queue} is not readable: {e}")))?;
    let mut opts = s.opts;
    if !id.bytes().all(|b| b.is_ascii_digit()) {
        opts.job_id = Some(id.clone());
    }
    Ok(new_job(
        queue,
        id,
        NewJob {
            name: s.name,
            data: s.data,
            opts,
        },
        s.timestamp,
    ))
}

/// How long the idle wait for new jobs blocks at most before looking at delayed jobs again.
pub(crate) const IDLE_WAIT: Duration = Duration::from_secs(1);
