//! The toolkit contract: the few atomic operations the cache, rate limiter, locks, counters,
//! flags, idempotency keys, sessions and pub/sub are built from.
//!
//! Every operation here is one atomic step on the backend: one command or one Lua script on
//! Redis, one critical section on the memory backend. The features themselves (in the `keel`
//! crate) are written once over this trait, so they behave the same on both tiers; the rate-limit
//! algorithms and the lock scripts, which must be atomic, are implemented twice — Lua in
//! `keel-redis`, Rust in `keel-memory`, both from the pure arithmetic in [`crate::ratemath`] —
//! and held together by the conformance suite.

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::{BackendKind, Result};

/// When a [`KvBackend::set`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetMode {
    /// Always (Redis `SET`).
    Always,
    /// Only when the key does not exist (Redis `SET NX`).
    IfAbsent,
}

/// A rate-limiting algorithm with its parameters. Times are whole milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "algorithm")]
pub enum RateAlgorithm {
    /// Generic cell rate algorithm: `limit` per `period_ms` on average, at most `burst`
    /// admitted back to back. One timestamp per key; exact.
    Gcra {
        /// Requests per period.
        limit: u64,
        /// The period, ms.
        period_ms: u64,
        /// How many requests may arrive at once (≥ 1; usually `limit`).
        burst: u64,
    },
    /// Sliding window counter (two buckets): the previous window's count weighted by how much
    /// of it still overlaps the sliding window, plus the current count. Approximate: it assumes
    /// the previous window's requests were spread evenly.
    SlidingWindow {
        /// Requests per window.
        limit: u64,
        /// The window, ms.
        window_ms: u64,
    },
    /// Sliding log: one sorted-set entry per admitted request. Exact, memory O(limit).
    SlidingLog {
        /// Requests per window.
        limit: u64,
        /// The window, ms.
        window_ms: u64,
    },
    /// Fixed window aligned to the Unix epoch (a one-day window is a UTC day).
    FixedWindow {
        /// Requests per window.
        limit: u64,
        /// The window, ms.
        window_ms: u64,
    },
}

impl RateAlgorithm {
    /// The configured limit.
    pub fn limit(&self) -> u64 {
        match *self {
            RateAlgorithm::Gcra { limit, .. }
            | RateAlgorithm::SlidingWindow { limit, .. }
            | RateAlgorithm::SlidingLog { limit, .. }
            | RateAlgorithm::FixedWindow { limit, .. } => limit,
        }
    }

    /// The window (GCRA: the period), ms.
    pub fn window_ms(&self) -> u64 {
        match *self {
            RateAlgorithm::Gcra { period_ms, .. } => period_ms,
            RateAlgorithm::SlidingWindow { window_ms, .. }
            | RateAlgorithm::SlidingLog { window_ms, .. }
            | RateAlgorithm::FixedWindow { window_ms, .. } => window_ms,
        }
    }

    /// The short name used in configuration and keys.
    pub fn name(&self) -> &'static str {
        match self {
            RateAlgorithm::Gcra { .. } => "gcra",
            RateAlgorithm::SlidingWindow { .. } => "sliding_window",
            RateAlgorithm::SlidingLog { .. } => "sliding_log",
            RateAlgorithm::FixedWindow { .. } => "fixed_window",
        }
    }
}

/// What one rate-limit check decided, as the backend computed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateOutcome {
    /// Whether the request is admitted (and was counted).
    pub allowed: bool,
    /// Requests still admissible right now after this one.
    pub remaining: u64,
    /// Until the limit is fully available again (window end; GCRA: bucket empty), ms.
    pub reset_after_ms: u64,
    /// When rejected: how long until the same request would be admitted, ms. 0 when allowed.
    pub retry_after_ms: u64,
}

/// One message received from a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubSubMessage {
    /// The channel it was published on.
    pub channel: String,
    /// The pattern that matched, for pattern subscriptions.
    pub pattern: Option<String>,
    /// The payload as published.
    pub payload: Vec<u8>,
}

/// A live subscription: a stream of messages that ends only when dropped. On Redis it
/// reconnects and resubscribes by itself.
pub type Subscription = Pin<Box<dyn Stream<Item = PubSubMessage> + Send>>;

/// The server figures the toolkit's monitoring reads (Redis `INFO`; the memory backend's own).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// `redis 7.2.4`, `keel-memory 0.1.0`, ...
    pub version: String,
    /// Seconds since the server started.
    pub uptime_s: u64,
    /// Bytes of memory used.
    pub used_memory: u64,
    /// `maxmemory`, bytes; 0 means unlimited.
    pub max_memory: u64,
    /// The eviction policy (`noeviction`, `allkeys-lru`, ...).
    pub eviction_policy: String,
    /// Keyspace hits since start.
    pub keyspace_hits: u64,
    /// Keyspace misses since start.
    pub keyspace_misses: u64,
    /// Operations per second right now.
    pub ops_per_sec: u64,
    /// Connected clients.
    pub connected_clients: u64,
    /// Whether the append-only file is on.
    pub aof_enabled: bool,
    /// Whether RDB snapshots are configured (`save` is not empty).
    pub rdb_enabled: bool,
    /// Unix time of the last RDB save (0: never).
    pub rdb_last_save: u64,
    /// Changes since the last RDB save.
    pub rdb_changes_since_save: u64,
    /// Number of keys in the selected database.
    pub keys: u64,
    /// On a Redis Cluster, each master's own figures (the fields above sum them); empty on
    /// one server.
    #[serde(default)]
    pub nodes: Vec<NodeInfo>,
}

/// One master of a Redis Cluster, from its own `INFO`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `host:port`.
    pub addr: String,
    /// `redis 7.2.4`.
    pub version: String,
    /// Seconds since it started.
    pub uptime_s: u64,
    /// Bytes of memory used.
    pub used_memory: u64,
    /// `maxmemory`, bytes; 0 means unlimited.
    pub max_memory: u64,
    /// Keys it holds (`db0`).
    pub keys: u64,
    /// Operations per second right now.
    pub ops_per_sec: u64,
    /// Connected clients.
    pub connected_clients: u64,
    /// Keyspace hits since start.
    pub keyspace_hits: u64,
    /// Keyspace misses since start.
    pub keyspace_misses: u64,
    /// CPU seconds used since start (user + system).
    pub cpu_s: f64,
}

/// The atomic operations of the toolkit. Keys are full keys (see `keel::keys`); values are
/// opaque bytes (the features store JSON).
#[async_trait]
pub trait KvBackend: Send + Sync + 'static {
    /// Which tier this is.
    fn kind(&self) -> BackendKind;

    /// The value of `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// The values of several keys, in order. The keys must share a hash slot on Redis Cluster.
    async fn mget(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>>;

    /// Stores `value`, with a time to live. Returns whether it was written.
    async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        mode: SetMode,
    ) -> Result<bool>;

    /// Deletes keys (`UNLINK`); returns how many existed.
    async fn del(&self, keys: &[String]) -> Result<u64>;

    /// Up to `max` keys matching a glob `pattern` (Redis `SCAN MATCH`, never `KEYS`).
    async fn scan(&self, pattern: &str, max: usize) -> Result<Vec<String>>;

    /// Deletes every key matching `pattern` by `SCAN` + `UNLINK` in batches; returns how many.
    async fn delete_matching(&self, pattern: &str) -> Result<u64>;

    /// Sets a new time to live on an existing key; false when the key does not exist.
    async fn expire(&self, key: &str, ttl: Duration) -> Result<bool>;

    /// The remaining time to live: `None` when the key does not exist, `Some(None)` when it
    /// has no expiry.
    async fn ttl(&self, key: &str) -> Result<Option<Option<Duration>>>;

    /// Adds `by` to the integer at `key` (missing = 0) and returns the new value; when the key
    /// is created by this call and `ttl_on_create` is set, it expires after that.
    async fn incr(&self, key: &str, by: i64, ttl_on_create: Option<Duration>) -> Result<i64>;

    /// One rate-limit check of `cost` units against `algorithm`, timed by the backend's clock
    /// (Redis `TIME`). `nonce` makes sliding-log entries unique.
    async fn rate_check(
        &self,
        key: &str,
        algorithm: &RateAlgorithm,
        cost: u64,
        nonce: &str,
    ) -> Result<RateOutcome>;

    /// Takes the lock `key` for `token` if it is free (`SET NX PX`) and, if taken, increments
    /// and returns the fencing counter at `fence_key` (same hash slot). `None`: held by another.
    async fn lock_acquire(
        &self,
        key: &str,
        fence_key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<Option<u64>>;

    /// Deletes the lock only if `token` still holds it.
    async fn lock_release(&self, key: &str, token: &str) -> Result<bool>;

    /// Resets the lock's time to live only if `token` still holds it.
    async fn lock_extend(&self, key: &str, token: &str, ttl: Duration) -> Result<bool>;

    /// Publishes `payload` on `channel`; returns how many subscribers received it (on Redis,
    /// of the node it was published on).
    async fn publish(&self, channel: &str, payload: &[u8]) -> Result<u64>;

    /// Subscribes to channels and glob patterns. Fails only if the first connection fails.
    async fn subscribe(&self, channels: &[String], patterns: &[String]) -> Result<Subscription>;

    /// Round trip to the server.
    async fn ping(&self) -> Result<Duration>;

    /// Server figures for monitoring.
    async fn info(&self) -> Result<ServerInfo>;

    /// Recent call latencies recorded by this process, microseconds (for a p99).
    fn latency_samples(&self) -> Vec<u32>;
}

/// Redis-style glob matching (`*`, `?`, `[abc]`, `[^a]`, `[a-z]`, `\x`), as `SCAN MATCH`
/// and `PSUBSCRIBE` use it; the memory backend matches with this.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    fn class(p: &[u8], mut i: usize, c: u8) -> Option<(bool, usize)> {
        // `p[i]` is just after '['. Returns (matched, index after ']').
        let negate = i < p.len() && p[i] == b'^';
        if negate {
            i += 1;
        }
        let mut matched = false;
        let mut first = true;
        while i < p.len() && (p[i] != b']' || first) {
            first = false;
            if p[i] == b'\\' && i + 1 < p.len() {
                i += 1;
                matched |= p[i] == c;
                i += 1;
            } else if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
                let (lo, hi) = (p[i].min(p[i + 2]), p[i].max(p[i + 2]));
                matched |= lo <= c && c <= hi;
                i += 3;
            } else {
                matched |= p[i] == c;
                i += 1;
            }
        }
        if i >= p.len() {
            return None; // unterminated class: Redis treats it as literal-ish; we refuse a match
        }
        Some((matched != negate, i + 1))
    }
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        let step = if pi < p.len() {
            match p[pi] {
                b'*' => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                b'?' => Some(pi + 1),
                b'[' => match class(p, pi + 1, t[ti]) {
                    Some((true, next)) => Some(next),
                    _ => None,
                },
                b'\\' if pi + 1 < p.len() => (p[pi + 1] == t[ti]).then_some(pi + 2),
                c => (c == t[ti]).then_some(pi + 1),
            }
        } else {
            None
        };
        match step {
            Some(next) => {
                pi = next;
                ti += 1;
            }
            None => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// Escapes glob metacharacters so `text` matches only itself inside a pattern.
pub fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_redis() {
        assert!(glob_match("*", ""));
        assert!(glob_match("a*c", "abbbc"));
        assert!(!glob_match("a*c", "abbbd"));
        assert!(glob_match("h?llo", "hello"));
        assert!(!glob_match("h?llo", "hllo"));
        assert!(glob_match("h[ae]llo", "hallo"));
        assert!(!glob_match("h[ae]llo", "hillo"));
        assert!(glob_match("h[^e]llo", "hallo"));
        assert!(!glob_match("h[^e]llo", "hello"));
        assert!(glob_match("h[a-c]llo", "hbllo"));
        assert!(glob_match("jobs:*:u1", "jobs:completed:u1"));
        assert!(glob_match("a\\*b", "a*b"));
        assert!(!glob_match("a\\*b", "axb"));
        assert!(glob_match("*:v1", "k:cache:{ns}:x:v1"));
        assert!(!glob_match("k*", "x"));
    }

    #[test]
    fn escaped_text_matches_only_itself() {
        let raw = "we?ird*[key]\\";
        let p = glob_escape(raw);
        assert!(glob_match(&p, raw));
        assert!(!glob_match(&p, "weXird*[key]\\"));
        assert!(glob_match(&format!("{p}*"), &format!("{raw}tail")));
    }
}
