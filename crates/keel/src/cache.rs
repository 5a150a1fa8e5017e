//! Typed JSON cache with stampede protection, stale serving, probabilistic early refresh and
//! tag invalidation that survives eviction.
//!
//! Over 600 lines (tests from line ~640): the cache's read, write, stampede and tag paths share
//! one key layout and one set of counters; split them and the invariants between them scatter.
//!
//! # How an item is stored
//! One key per item (`prefix:env:cache:{ns}:item:<key>:v1`) holding a JSON envelope:
//! `{"v": value, "e": fresh_until_ms, "d": compute_ms, "t": {"tag": "version"}}`. The key lives
//! `ttl + stale_for`: for `ttl` (±10 % jitter, so keys written together do not expire together)
//! it is fresh; for the `stale_for` after, [`Cache::get_or_compute`] may serve it to waiters
//! while one caller recomputes.
//!
//! # Stampede protection
//! On a miss, callers race for a short fill lock (`SET NX PX` with a random token). The winner
//! computes and writes; the others poll the item with backoff and return the fresh value as soon
//! as it lands, or the stale one at once if there is one. If the winner fails or dies, the lock
//! expires or is released and the next poller takes over. So a cold key is computed once across
//! every process sharing the backend.
//!
//! # Tags
//! Each tag has a version key holding a random value. An item records the versions of its tags
//! when written; it is valid only while every tag key still holds that version. Invalidating a
//! tag deletes its version key. A missing tag key (invalidated, or evicted by Redis under memory
//! pressure) therefore makes every item carrying the tag a miss: eviction can only cause misses,
//! never resurrect stale data — unlike a tag → members set, which eviction silently empties.
//!
//! # Failure
//! [`Cache::get_or_compute`] never fails because of the backend: if Redis is unreachable it
//! computes and returns the value (counted in `errors`). The plain operations ([`Cache::get`],
//! [`Cache::set`], ...) report backend errors to the caller.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use keel_core::{now_ms, Error, KvBackend, Result, SetMode};
use rand::Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::keys::{validate_name, validate_part, Keys};
use crate::Backend;

/// Values whose JSON is larger than this are not cached (512 KiB).
pub const MAX_VALUE_BYTES: usize = 512 * 1024;

/// TTLs by kind of data, from the seed projects. Look one up with [`ttl_for_kind`].
pub const TTL_BY_KIND: &[(&str, Duration)] = &[
    ("user", Duration::from_secs(3600)),
    ("creator", Duration::from_secs(3600)),
    ("brand", Duration::from_secs(3600)),
    ("project", Duration::from_secs(1800)),
    ("asset", Duration::from_secs(1800)),
    ("license", Duration::from_secs(900)),
    ("account-valid", Duration::from_secs(300)),
    ("platform-status", Duration::from_secs(60)),
    ("credits", Duration::from_secs(60)),
    ("queue-stats", Duration::from_secs(10)),
    ("static", Duration::from_secs(86_400)),
];

/// The TTL the seeds use for a kind of data (`user` → 1 h, `license` → 15 min, ...).
pub fn ttl_for_kind(kind: &str) -> Option<Duration> {
    TTL_BY_KIND
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, d)| *d)
}

/// How a cache namespace stores and refreshes.
#[derive(Debug, Clone)]
pub struct CachePolicy {
    /// How long an item is fresh (before jitter).
    pub ttl: Duration,
    /// ± this fraction of `ttl`, at random per write (default 0.1).
    pub jitter: f64,
    /// How long after going stale an item may still be served while one caller recomputes.
    pub stale_for: Duration,
    /// XFetch β: `Some(1.0)` refreshes early with the probability of Vattani et al. (2015);
    /// larger refreshes earlier; `None` (default) never early.
    pub early_refresh: Option<f64>,
    /// The fill lock's lease; a computation longer than this may be duplicated.
    pub fill_lock_ttl: Duration,
    /// How long a caller waits for another's computation before computing itself.
    pub wait_for_fill: Duration,
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            ttl: Duration::from_secs(300),
            jitter: 0.1,
            stale_for: Duration::from_secs(60),
            early_refresh: None,
            fill_lock_ttl: Duration::from_secs(10),
            wait_for_fill: Duration::from_secs(10),
        }
    }
}

impl CachePolicy {
    /// The default policy with another TTL.
    pub fn ttl(ttl: Duration) -> CachePolicy {
        CachePolicy {
            ttl,
            ..CachePolicy::default()
        }
    }
}

/// `ttl` scaled by a factor in `[1 - fraction, 1 + fraction)` chosen by `u ∈ [0, 1)`.
pub fn jittered(ttl: Duration, fraction: f64, u: f64) -> Duration {
    let fraction = fraction.clamp(0.0, 1.0);
    let factor = 1.0 - fraction + 2.0 * fraction * u.clamp(0.0, 1.0);
    Duration::from_secs_f64((ttl.as_secs_f64() * factor).max(0.001))
}

/// XFetch (Vattani, Chierichetti, Lowenstein 2015): refresh early when
/// `now − δ·β·ln(u) ≥ expiry`, with δ the last computation's duration and `u ∈ (0, 1]`.
pub fn xfetch_should_refresh(
    now_ms: u64,
    expiry_ms: u64,
    delta_ms: u64,
    beta: f64,
    u: f64,
) -> bool {
    let u = u.clamp(f64::MIN_POSITIVE, 1.0);
    let gap = -(delta_ms as f64) * beta * u.ln();
    now_ms as f64 + gap >= expiry_ms as f64
}

/// Counters of one namespace. Shared by every [`Cache`] of that namespace in the process.
#[derive(Debug, Default)]
pub struct CacheCounters {
    hits: AtomicU64,
    stale_hits: AtomicU64,
    misses: AtomicU64,
    computes: AtomicU64,
    errors: AtomicU64,
    oversize: AtomicU64,
}

/// A copy of a namespace's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStats {
    /// Fresh values served.
    pub hits: u64,
    /// Stale values served while another caller recomputed.
    pub stale_hits: u64,
    /// Lookups that found nothing usable.
    pub misses: u64,
    /// Computations run by `get_or_compute`.
    pub computes: u64,
    /// Backend failures and unreadable entries (the caller still got a value).
    pub errors: u64,
    /// Values not cached because they were over 512 KiB.
    pub oversize: u64,
}

impl CacheCounters {
    fn snapshot(&self) -> CacheStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            hits: l(&self.hits),
            stale_hits: l(&self.stale_hits),
            misses: l(&self.misses),
            computes: l(&self.computes),
            errors: l(&self.errors),
            oversize: l(&self.oversize),
        }
    }
}

static COUNTERS: LazyLock<Mutex<BTreeMap<String, Arc<CacheCounters>>>> =
    LazyLock::new(|| Mutex::new(BTreeMap::new()));

fn counters_for(ns: &str) -> Arc<CacheCounters> {
    let mut map = COUNTERS.lock().unwrap_or_else(|p| p.into_inner());
    map.entry(ns.to_string()).or_default().clone()
}

/// The counters of every cache namespace used in this process, by namespace.
pub fn cache_stats() -> BTreeMap<String, CacheStats> {
    let map = COUNTERS.lock().unwrap_or_else(|p| p.into_inner());
    map.iter().map(|(k, v)| (k.clone(), v.snapshot())).collect()
}

#[derive(Serialize)]
struct EnvelopeOut<'a, T> {
    v: &'a T,
    e: u64,
    d: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    t: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct EnvelopeIn<T> {
    v: T,
    e: u64,
    #[serde(default)]
    d: u64,
    #[serde(default)]
    t: BTreeMap<String, String>,
}

enum Lookup<T> {
    Miss,
    Fresh { value: T, expiry: u64, delta: u64 },
    Stale(T),
}

/// Options of one write.
#[derive(Debug, Clone, Default)]
pub struct Write<'a> {
    /// Overrides the policy's TTL.
    pub ttl: Option<Duration>,
    /// Tags to invalidate the item by.
    pub tags: &'a [&'a str],
}

impl<'a> Write<'a> {
    /// A write with tags.
    pub fn tags(tags: &'a [&'a str]) -> Write<'a> {
        Write { ttl: None, tags }
    }
}

/// A cache namespace. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    kv: Arc<dyn KvBackend>,
    keys: Keys,
    ns: String,
    policy: CachePolicy,
    counters: Arc<CacheCounters>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("namespace", &self.ns)
            .field("policy", &self.policy)
            .finish()
    }
}

impl Cache {
    /// The namespace `ns` (letters, digits, `-`, `_`, `.`) with the default policy (5 min).
    pub fn new(backend: &Backend, ns: &str) -> Result<Cache> {
        validate_name("namespace", ns)?;
        Ok(Cache {
            kv: backend.kv().clone(),
            keys: backend.keys().clone(),
            ns: ns.to_string(),
            policy: CachePolicy::default(),
            counters: counters_for(ns),
        })
    }

    /// The same namespace with another policy.
    pub fn with_policy(mut self, policy: CachePolicy) -> Cache {
        self.policy = policy;
        self
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// The policy.
    pub fn policy(&self) -> &CachePolicy {
        &self.policy
    }

    /// This namespace's counters.
    pub fn stats(&self) -> CacheStats {
        self.counters.snapshot()
    }

    /// The full backend key of `key` (for tools and tests).
    pub fn item_key(&self, key: &str) -> String {
        self.keys.cache_item(&self.ns, key)
    }

    /// The backend key holding `tag`'s current version (for tools and tests).
    pub fn tag_key(&self, tag: &str) -> String {
        self.keys.cache_tag(&self.ns, tag)
    }

    fn count(&self, which: &AtomicU64) {
        which.fetch_add(1, Ordering::Relaxed);
    }

    async fn lookup<T: DeserializeOwned>(&self, key: &str) -> Result<Lookup<T>> {
        let item_key = self.item_key(key);
        let Some(bytes) = self.kv.get(&item_key).await? else {
            return Ok(Lookup::Miss);
        };
        let env: EnvelopeIn<T> = match serde_json::from_slice(&bytes) {
            Ok(e) => e,
            Err(e) => {
                // Written by another version or another type: a miss, and out of the way.
                tracing::debug!(key = %item_key, error = %e, "unreadable cache entry dropped");
                self.count(&self.counters.errors);
                let _ = self.kv.del(&[item_key]).await;
                return Ok(Lookup::Miss);
            }
        };
        if !env.t.is_empty() {
            let tag_keys: Vec<String> = env.t.keys().map(|t| self.tag_key(t)).collect();
            let current = self.kv.mget(&tag_keys).await?;
            let valid = env
                .t
                .values()
                .zip(&current)
                .all(|(stored, now)| now.as_deref() == Some(stored.as_bytes()));
            if !valid {
                let _ = self.kv.del(&[item_key]).await;
                return Ok(Lookup::Miss);
            }
        }
        if now_ms() < env.e {
            Ok(Lookup::Fresh {
                value: env.v,
                expiry: env.e,
                delta: env.d,
            })
        } else {
            Ok(Lookup::Stale(env.v))
        }
    }

    /// The fresh value of `key`, if any.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        validate_part("key", key)?;
        match self.lookup(key).await {
            Ok(Lookup::Fresh { value, .. }) => {
                self.count(&self.counters.hits);
                Ok(Some(value))
            }
            Ok(_) => {
                self.count(&self.counters.misses);
                Ok(None)
            }
            Err(e) => {
                self.count(&self.counters.errors);
                Err(e)
            }
        }
    }

    /// Current versions of `tags`, creating the missing ones.
    async fn tag_versions(&self, tags: &[&str]) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        if tags.is_empty() {
            return Ok(out);
        }
        for t in tags {
            validate_part("tag", t)?;
        }
        let keys: Vec<String> = tags.iter().map(|t| self.tag_key(t)).collect();
        let current = self.kv.mget(&keys).await?;
        for ((tag, key), version) in tags.iter().zip(&keys).zip(current) {
            let version = match version {
                Some(v) => String::from_utf8_lossy(&v).into_owned(),
                None => {
                    let fresh = format!("{:016x}", rand::rng().random::<u64>());
                    if self
                        .kv
                        .set(key, fresh.as_bytes(), None, SetMode::IfAbsent)
                        .await?
                    {
                        fresh
                    } else {
                        // Someone created it first: theirs is the version.
                        match self.kv.get(key).await? {
                            Some(v) => String::from_utf8_lossy(&v).into_owned(),
                            None => fresh, // invalidated again meanwhile: the item will miss
                        }
                    }
                }
            };
            out.insert(tag.to_string(), version);
        }
        Ok(out)
    }

    async fn store<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        write: &Write<'_>,
        delta_ms: u64,
    ) -> Result<bool> {
        let ttl = jittered(
            write.ttl.unwrap_or(self.policy.ttl),
            self.policy.jitter,
            rand::rng().random::<f64>(),
        );
        let tags = self.tag_versions(write.tags).await?;
        let envelope = EnvelopeOut {
            v: value,
            e: now_ms() + ttl.as_millis() as u64,
            d: delta_ms,
            t: tags,
        };
        let bytes = serde_json::to_vec(&envelope)
            .map_err(|e| Error::invalid("value", format!("cannot be serialized as JSON: {e}")))?;
        let item_key = self.item_key(key);
        if bytes.len() > MAX_VALUE_BYTES {
            self.count(&self.counters.oversize);
            tracing::debug!(key = %item_key, bytes = bytes.len(), "value over 512 KiB not cached");
            // An older, smaller value must not be served in its place.
            self.kv.del(&[item_key]).await?;
            return Ok(false);
        }
        self.kv
            .set(
                &item_key,
                &bytes,
                Some(ttl + self.policy.stale_for),
                SetMode::Always,
            )
            .await
    }

    /// Stores `value` under `key`. Returns false when it was not cached (over 512 KiB).
    pub async fn set<T: Serialize>(&self, key: &str, value: &T, write: Write<'_>) -> Result<bool> {
        validate_part("key", key)?;
        self.store(key, value, &write, 0).await
    }

    /// Write-through: runs `write` (the source of truth) first and, when it succeeds, caches
    /// `value`. A cache failure is logged and counted, never reported: the write happened.
    pub async fn write_through<T, E, F, Fut>(
        &self,
        key: &str,
        value: &T,
        write: Write<'_>,
        persist: F,
    ) -> Result<(), E>
    where
        T: Serialize,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        persist().await?;
        if let Err(e) = self.set(key, value, write).await {
            self.count(&self.counters.errors);
            tracing::debug!(namespace = %self.ns, error = %e, "write-through cache update failed");
            // The old value must not outlive the write.
            let _ = self.kv.del(&[self.item_key(key)]).await;
        }
        Ok(())
    }

    /// Deletes `key`; true if it existed.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        validate_part("key", key)?;
        Ok(self.kv.del(&[self.item_key(key)]).await? > 0)
    }

    /// Deletes every item of this namespace whose key matches the glob `pattern`
    /// (`user:*`), by `SCAN` + `UNLINK`. Returns how many.
    pub async fn delete_pattern(&self, pattern: &str) -> Result<u64> {
        if pattern.is_empty() || pattern.contains(['{', '}']) {
            return Err(Error::invalid(
                "pattern",
                "must be a non-empty glob without braces",
            ));
        }
        self.kv
            .delete_matching(&self.keys.cache_item_pattern(&self.ns, pattern))
            .await
    }

    /// Invalidates every item carrying any of `tags`.
    pub async fn invalidate_tags(&self, tags: &[&str]) -> Result<()> {
        for t in tags {
            validate_part("tag", t)?;
        }
        let keys: Vec<String> = tags.iter().map(|t| self.tag_key(t)).collect();
        self.kv.del(&keys).await?;
        Ok(())
    }

    async fn try_fill_lock(&self, lock_key: &str, token: &str) -> Result<bool> {
        self.kv
            .set(
                lock_key,
                token.as_bytes(),
                Some(self.policy.fill_lock_ttl),
                SetMode::IfAbsent,
            )
            .await
    }

    /// Computes, stores and releases the fill lock.
    async fn fill<T, E, F, Fut>(
        &self,
        key: &str,
        write: &Write<'_>,
        lock: (&str, &str),
        compute: F,
    ) -> Result<T, E>
    where
        T: Serialize,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.count(&self.counters.computes);
        let started = Instant::now();
        let result = compute().await;
        if let Ok(value) = &result {
            let delta = started.elapsed().as_millis() as u64;
            if let Err(e) = self.store(key, value, write, delta).await {
                self.count(&self.counters.errors);
                tracing::debug!(namespace = %self.ns, error = %e, "cache fill not stored");
            }
        }
        let _ = self.kv.lock_release(lock.0, lock.1).await;
        result
    }

    /// Cache-aside: the cached value of `key`, or `compute`'s, stored for next time — computed
    /// once per key across every process sharing the backend (see the module docs). Errors only
    /// when `compute` does; backend trouble means computing without the cache.
    pub async fn get_or_compute<T, E, F, Fut>(
        &self,
        key: &str,
        write: Write<'_>,
        compute: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if let Err(e) = validate_part("key", key) {
            self.count(&self.counters.errors);
            tracing::warn!(namespace = %self.ns, error = %e, "uncacheable key; computing without the cache");
            self.count(&self.counters.computes);
            return compute().await;
        }
        let (lock_key, _) = self.keys.cache_fill_lock(&self.ns, key);
        let token = uuid::Uuid::new_v4().simple().to_string();
        let lock = (lock_key.as_str(), token.as_str());
        let degraded = |this: &Self, e: Error| {
            this.count(&this.counters.errors);
            tracing::debug!(namespace = %this.ns, error = %e, "cache unavailable; computing without it");
        };
        match self.lookup::<T>(key).await {
            Err(e) => {
                degraded(self, e);
                self.count(&self.counters.computes);
                return compute().await;
            }
            Ok(Lookup::Fresh {
                value,
                expiry,
                delta,
            }) => {
                let early = self.policy.early_refresh.is_some_and(|beta| {
                    xfetch_should_refresh(
                        now_ms(),
                        expiry,
                        delta,
                        beta,
                        rand::rng().random::<f64>(),
                    )
                });
                if early && matches!(self.try_fill_lock(&lock_key, &token).await, Ok(true)) {
                    return self.fill(key, &write, lock, compute).await;
                }
                self.count(&self.counters.hits);
                return Ok(value);
            }
            Ok(Lookup::Stale(value)) => match self.try_fill_lock(&lock_key, &token).await {
                Ok(true) => return self.fill(key, &write, lock, compute).await,
                Ok(false) => {
                    self.count(&self.counters.stale_hits);
                    return Ok(value);
                }
                Err(e) => {
                    degraded(self, e);
                    self.count(&self.counters.stale_hits);
                    return Ok(value);
                }
            },
            Ok(Lookup::Miss) => {}
        }
        self.count(&self.counters.misses);
        let deadline = Instant::now() + self.policy.wait_for_fill;
        let mut pause = Duration::from_millis(5);
        loop {
            match self.try_fill_lock(&lock_key, &token).await {
                Ok(true) => return self.fill(key, &write, lock, compute).await,
                Ok(false) => {}
                Err(e) => {
                    degraded(self, e);
                    self.count(&self.counters.computes);
                    return compute().await;
                }
            }
            if Instant::now() >= deadline {
                // The holder is slow beyond our patience: compute without the lock.
                self.count(&self.counters.computes);
                let value = compute().await?;
                let _ = self.store(key, &value, &write, 0).await;
                return Ok(value);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
            match self.lookup::<T>(key).await {
                Ok(Lookup::Fresh { value, .. }) => {
                    self.count(&self.counters.hits);
                    return Ok(value);
                }
                Ok(Lookup::Stale(value)) => {
                    self.count(&self.counters.stale_hits);
                    return Ok(value);
                }
                Ok(Lookup::Miss) => {}
                Err(e) => {
                    degraded(self, e);
                    self.count(&self.counters.computes);
                    return compute().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        let ttl = Duration::from_secs(100);
        assert_eq!(jittered(ttl, 0.1, 0.0), Duration::from_secs(90));
        assert_eq!(jittered(ttl, 0.1, 0.5), Duration::from_secs(100));
        assert!(jittered(ttl, 0.1, 0.999_999) < Duration::from_secs(110));
        assert!(jittered(ttl, 0.1, 0.999_999) > Duration::from_secs(109));
        assert_eq!(jittered(ttl, 0.0, 0.7), ttl);
        let mut rng = rand::rng();
        for _ in 0..1000 {
            let d = jittered(ttl, 0.1, rng.random::<f64>());
            assert!(d >= Duration::from_secs(90) && d < Duration::from_secs(110));
        }
    }

    #[test]
    fn xfetch_refreshes_only_near_expiry() {
        // δ = 100 ms, β = 1: with u = 1/e the gap is exactly δ.
        let u = (-1.0f64).exp();
        assert!(xfetch_should_refresh(10_000, 10_100, 100, 1.0, u));
        assert!(!xfetch_should_refresh(10_000, 10_101, 100, 1.0, u));
        // Far from expiry: essentially never (u would have to be < e^-1000).
        let mut rng = rand::rng();
        assert!((0..10_000).all(|_| !xfetch_should_refresh(
            0,
            100_000,
            100,
            1.0,
            rng.random::<f64>()
        )));
        // β = 0 disables early refresh; expiry reached always refreshes.
        assert!(!xfetch_should_refresh(9_999, 10_000, 100, 0.0, 0.01));
        assert!(xfetch_should_refresh(10_000, 10_000, 100, 0.0, 0.5));
        // Larger β refreshes earlier for the same draw.
        assert!(xfetch_should_refresh(10_000, 10_250, 100, 3.0, u));
    }

    #[test]
    fn seed_ttls_by_kind() {
        assert_eq!(ttl_for_kind("user"), Some(Duration::from_secs(3600)));
        assert_eq!(ttl_for_kind("license"), Some(Duration::from_secs(900)));
        assert_eq!(ttl_for_kind("nope"), None);
    }
}
