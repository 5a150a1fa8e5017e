//! Keel's own queue scripts (`lua/*.lua`, each opening with its KEYS, ARGV and return value),
//! for what bullmq-official's BullMQ 6 scripts cannot do beside Node BullMQ 5 or store:
//!
//! - [`add_standard`] — every standard add (no delay, no priority). It puts the job where the
//!   queue's layout expects it — the `paused` list of a paused queue in BullMQ 5's layout,
//!   `wait` otherwise — deciding inside the script, so no pause or resume can slip between
//!   the check and the push, and it stores the options BullMQ's way, `backoff.jitter`
//!   included.
//! - [`pause`]/[`resume`] of a queue in BullMQ 5's layout, BullMQ 5's way (jobs move between
//!   `wait` and `paused`), so that a Node BullMQ 5 resume never renames `paused` over jobs
//!   waiting in `wait`.
//! - [`patch_backoff`] — the jitter of a delayed or prioritized job (added by bullmq-official).
//! - [`note_stalls`] — a job's stalls (BullMQ's `stc`) reported once across workers.
//!
//! A queue is in BullMQ 5's layout when a Node BullMQ 5 `Queue` wrote its meta `version`
//! (`bullmq:5.…`; Keel never overwrites another client's version) or a `paused` list exists.

use std::sync::LazyLock;

use bullmq::QueueKeys;
use keel_core::{Backoff, BackoffKind, JobOptions, NewJob, Result};
use serde_json::{json, Value};

use crate::convert::to_bull_opts;
use crate::RedisBackend;

static ADD_STANDARD: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../lua/add_standard.lua")));
static PAUSE_V5: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../lua/pause_v5.lua")));
static NOTE_STALLS: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../lua/note_stalls.lua")));
static PATCH_BACKOFF: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../lua/patch_backoff.lua")));

/// Whether `add_standard` serves this job (no delay, no priority).
pub(crate) fn is_standard(opts: &JobOptions) -> bool {
    opts.delay_ms.unwrap_or(0) == 0 && opts.priority.unwrap_or(0) == 0
}

/// A backoff as BullMQ stores it.
pub(crate) fn backoff_json(b: &Backoff) -> Value {
    let kind = match b.kind {
        BackoffKind::Fixed => "fixed",
        BackoffKind::Exponential => "exponential",
    };
    let mut v = json!({"type": kind, "delay": b.delay_ms});
    if b.jitter > 0.0 {
        v["jitter"] = json!(b.jitter);
    }
    v
}

/// The job's options as BullMQ stores them (`attempts` always present, `backoff.jitter`).
pub(crate) fn stored_opts(opts: &JobOptions) -> String {
    let mut v = serde_json::to_value(to_bull_opts(opts)).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut v {
        map.retain(|_, v| !v.is_null());
        map.entry("attempts").or_insert(json!(0));
        if let Some(b) = &opts.backoff {
            map.insert("backoff".into(), backoff_json(b));
        }
    }
    v.to_string()
}

/// Whether the queue is in BullMQ 5's layout (see the module docs).
pub(crate) async fn is_v5_layout(backend: &RedisBackend, keys: &QueueKeys) -> Result<bool> {
    let mut conn = backend.inner.conn.connection();
    let pipe = redis::pipe()
        .cmd("HGET")
        .arg(keys.meta())
        .arg("version")
        .cmd("EXISTS")
        .arg(keys.paused())
        .to_owned();
    let (version, paused): (Option<String>, bool) = backend
        .redis_call("reading the queue layout", async move {
            pipe.query_async(&mut conn).await
        })
        .await?;
    Ok(paused || version.is_some_and(|v| v.starts_with("bullmq:5")))
}

/// Adds a standard job; returns its id (an existing job's for a known custom id or a held
/// deduplication id).
pub(crate) async fn add_standard(
    backend: &RedisBackend,
    keys: &QueueKeys,
    job: &NewJob,
    timestamp: u64,
) -> Result<String> {
    let (dedup_id, dedup_ttl) = match &job.opts.deduplication {
        Some(d) => (d.id.clone(), d.ttl_ms.unwrap_or(0)),
        None => (String::new(), 0),
    };
    let mut inv = ADD_STANDARD.prepare_invoke();
    inv.key(keys.meta())
        .key(keys.id())
        .key(keys.wait())
        .key(keys.paused())
        .key(keys.marker())
        .key(keys.events())
        .key(keys.active())
        .arg(keys.key_prefix())
        .arg(job.opts.job_id.as_deref().unwrap_or(""))
        .arg(&job.name)
        .arg(job.data.to_string())
        .arg(stored_opts(&job.opts))
        .arg(timestamp)
        .arg(if job.opts.lifo { "1" } else { "0" })
        .arg(dedup_id)
        .arg(dedup_ttl);
    let mut conn = backend.inner.conn.connection();
    backend
        .redis_call("adding a job", async move {
            inv.invoke_async::<String>(&mut conn).await
        })
        .await
}

/// Stores the backoff (with its jitter) of a job bullmq-official just added.
pub(crate) async fn patch_backoff(
    backend: &RedisBackend,
    keys: &QueueKeys,
    id: &str,
    backoff: &Backoff,
) -> Result<()> {
    let mut inv = PATCH_BACKOFF.prepare_invoke();
    inv.key(keys.job_key(id))
        .arg(backoff_json(backoff).to_string());
    let mut conn = backend.inner.conn.connection();
    backend
        .redis_call("storing a job's backoff", async move {
            inv.invoke_async::<i64>(&mut conn).await
        })
        .await
        .map(|_| ())
}

async fn pause_or_resume(backend: &RedisBackend, keys: &QueueKeys, what: &str) -> Result<u64> {
    let mut inv = PAUSE_V5.prepare_invoke();
    inv.key(keys.wait())
        .key(keys.paused())
        .key(keys.meta())
        .key(keys.prioritized())
        .key(keys.marker())
        .key(keys.events())
        .key(keys.delayed())
        .arg(what);
    let mut conn = backend.inner.conn.connection();
    backend
        .redis_call(
            what,
            async move { inv.invoke_async::<u64>(&mut conn).await },
        )
        .await
}

/// Pauses a queue in BullMQ 5's layout (`wait` moves to `paused`).
pub(crate) async fn pause(backend: &RedisBackend, keys: &QueueKeys) -> Result<u64> {
    pause_or_resume(backend, keys, "paused").await
}

/// Resumes a queue in BullMQ 5's layout (every paused job back to `wait`).
pub(crate) async fn resume(backend: &RedisBackend, keys: &QueueKeys) -> Result<u64> {
    pause_or_resume(backend, keys, "resumed").await
}

/// The `backoff.jitter` stored in a job's options (BullMQ's field; bullmq-official's parser
/// drops it), 0 when there is none.
pub(crate) fn jitter_in(raw_opts: &str) -> f64 {
    serde_json::from_str::<Value>(raw_opts)
        .ok()
        .and_then(|v| v["backoff"]["jitter"].as_f64())
        .filter(|j| (0.0..=1.0).contains(j))
        .unwrap_or(0.0)
}

/// How many of the job's stalls no worker has reported yet (and marks them reported).
pub(crate) async fn note_stalls(
    conn: &bullmq::redis_connection::RedisConnection,
    keys: &QueueKeys,
    id: &str,
) -> std::result::Result<u32, redis::RedisError> {
    let mut inv = NOTE_STALLS.prepare_invoke();
    inv.key(keys.job_key(id));
    let mut c = conn.connection();
    inv.invoke_async::<u32>(&mut c).await
}
