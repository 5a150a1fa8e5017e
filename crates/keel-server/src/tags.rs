//! The owner API's cache and its tags, in one place: what a cached answer is tagged with and
//! what a change invalidates must name the same thing.

use std::time::Duration;

use keel::{Backend, Cache, CachePolicy};

/// Default time-to-live of the owner API's cached answers.
pub const OWNER_CACHE_TTL: Duration = Duration::from_secs(10);
/// How long a stale answer may be served while one caller recomputes it.
pub const OWNER_CACHE_STALE: Duration = Duration::from_secs(1);

/// The response cache of owner GETs (namespace `owner-api`).
pub fn owner_cache(backend: &Backend) -> keel::Result<Cache> {
    Ok(Cache::new(backend, "owner-api")?.with_policy(CachePolicy {
        ttl: OWNER_CACHE_TTL,
        jitter: 0.0,
        stale_for: OWNER_CACHE_STALE,
        ..CachePolicy::default()
    }))
}

/// Every queue list and all queue stats.
pub const QUEUES: &str = "queues";
/// The audit log's pages.
pub const AUDIT: &str = "audit";
/// The run lists and per-minute counts.
pub const RUNS: &str = "runs";
/// Workflow definitions and instance lists.
pub const WORKFLOWS: &str = "workflows";
/// AI runs, tasks, messages, events and usage (cached 30 s; a recorded call invalidates
/// them, coalesced by the invalidator).
pub const AI: &str = "ai";
/// Email logs (likewise).
pub const EMAILS: &str = "emails";

/// One queue's stats, jobs and dead letters.
pub fn queue(name: &str) -> String {
    format!("queue-{name}")
}
