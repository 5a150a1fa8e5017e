//! The toolkit's in-process store: the same atomic operations as the Redis scripts, each one
//! critical section under one mutex, with lazy expiry plus a sweep at most once a second.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use keel_core::kv::glob_match;
use keel_core::ratemath::{self, WindowState};
use keel_core::{
    BackendKind, Error, KvBackend, PubSubMessage, RateAlgorithm, RateOutcome, Result, ServerInfo,
    SetMode, Subscription,
};
use tokio::sync::broadcast;

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

enum Value {
    Bytes(Vec<u8>),
    Window(WindowState),
    Tat(u64),
    Log(Vec<u64>),
}

impl Value {
    fn size(&self) -> usize {
        match self {
            Value::Bytes(b) => b.len(),
            Value::Window(_) | Value::Tat(_) => 24,
            Value::Log(l) => l.len() * 8,
        }
    }
}

struct Entry {
    value: Value,
    /// Expiry, µs since the epoch.
    expires_at: Option<u64>,
}

#[derive(Default)]
struct Store {
    map: HashMap<String, Entry>,
    last_sweep: u64,
}

impl Store {
    /// Removes `key` if it has expired; returns the live entry.
    fn live(&mut self, key: &str, now: u64) -> Option<&mut Entry> {
        let expired =
            matches!(self.map.get(key), Some(e) if e.expires_at.is_some_and(|t| t <= now));
        if expired {
            self.map.remove(key);
        }
        self.map.get_mut(key)
    }

    fn sweep(&mut self, now: u64) {
        if now.saturating_sub(self.last_sweep) < 1_000_000 {
            return;
        }
        self.last_sweep = now;
        self.map.retain(|_, e| e.expires_at.is_none_or(|t| t > now));
    }

    fn put(&mut self, key: &str, value: Value, ttl_ms: Option<u64>, now: u64) {
        self.map.insert(
            key.to_string(),
            Entry {
                value,
                expires_at: ttl_ms.map(|ms| now + ms * 1000),
            },
        );
    }
}

/// The memory backend's toolkit store. One per [`crate::MemoryBackend`].
pub struct MemoryKv {
    store: Mutex<Store>,
    bus: broadcast::Sender<PubSubMessage>,
    started: Instant,
    hits: AtomicU64,
    misses: AtomicU64,
    ops: AtomicU64,
}

impl Default for MemoryKv {
    fn default() -> Self {
        Self::new()
    }
}

fn wrong_type(key: &str) -> Error {
    Error::Backend(format!("WRONGTYPE: {key} holds a value of another kind"))
}

impl MemoryKv {
    /// An empty store.
    pub fn new() -> MemoryKv {
        let (bus, _) = broadcast::channel(4096);
        MemoryKv {
            store: Mutex::new(Store::default()),
            bus,
            started: Instant::now(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            ops: AtomicU64::new(0),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Store, u64) -> T) -> T {
        self.ops.fetch_add(1, Ordering::Relaxed);
        let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        // Read under the lock, as Redis reads TIME inside its script: calls then see time in
        // the order they run (read before it, a rate-limit log could hold a later time than
        // the `now` of the call that checks it, and answer a reset past the window).
        let now = now_us();
        store.sweep(now);
        f(&mut store, now)
    }

    fn read_bytes(&self, store: &mut Store, key: &str, now: u64) -> Result<Option<Vec<u8>>> {
        let found = match store.live(key, now) {
            None => None,
            Some(Entry {
                value: Value::Bytes(b),
                ..
            }) => Some(b.clone()),
            Some(_) => return Err(wrong_type(key)),
        };
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(found)
    }
}

#[async_trait]
impl KvBackend for MemoryKv {
    fn kind(&self) -> BackendKind {
        BackendKind::Memory
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.with(|s, now| self.read_bytes(s, key, now))
    }

    async fn mget(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        self.with(|s, now| keys.iter().map(|k| self.read_bytes(s, k, now)).collect())
    }

    async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        mode: SetMode,
    ) -> Result<bool> {
        self.with(|s, now| {
            if mode == SetMode::IfAbsent && s.live(key, now).is_some() {
                return Ok(false);
            }
            let ttl_ms = ttl.map(|t| (t.as_millis() as u64).max(1));
            s.put(key, Value::Bytes(value.to_vec()), ttl_ms, now);
            Ok(true)
        })
    }

    async fn del(&self, keys: &[String]) -> Result<u64> {
        self.with(|s, now| {
            Ok(keys
                .iter()
                .filter(|k| s.live(k, now).is_some() && s.map.remove(k.as_str()).is_some())
                .count() as u64)
        })
    }

    async fn scan(&self, pattern: &str, max: usize) -> Result<Vec<String>> {
        self.with(|s, now| {
            let mut keys: Vec<String> = s
                .map
                .iter()
                .filter(|(k, e)| e.expires_at.is_none_or(|t| t > now) && glob_match(pattern, k))
                .map(|(k, _)| k.clone())
                .collect();
            keys.sort();
            keys.truncate(max);
            Ok(keys)
        })
    }

    async fn delete_matching(&self, pattern: &str) -> Result<u64> {
        self.with(|s, now| {
            let before = s.map.len();
            s.map
                .retain(|k, e| e.expires_at.is_some_and(|t| t <= now) || !glob_match(pattern, k));
            Ok((before - s.map.len()) as u64)
        })
    }

    async fn expire(&self, key: &str, ttl: Duration) -> Result<bool> {
        self.with(|s, now| match s.live(key, now) {
            Some(e) => {
                e.expires_at = Some(now + (ttl.as_micros() as u64).max(1));
                Ok(true)
            }
            None => Ok(false),
        })
    }

    async fn ttl(&self, key: &str) -> Result<Option<Option<Duration>>> {
        self.with(|s, now| {
            Ok(s.live(key, now).map(|e| {
                e.expires_at
                    .map(|t| Duration::from_millis((t - now).div_ceil(1000)))
            }))
        })
    }

    async fn incr(&self, key: &str, by: i64, ttl_on_create: Option<Duration>) -> Result<i64> {
        self.with(|s, now| match s.live(key, now) {
            Some(Entry {
                value: Value::Bytes(b),
                ..
            }) => {
                let current: i64 = std::str::from_utf8(b)
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| Error::Backend(format!("{key} does not hold an integer")))?;
                let next = current
                    .checked_add(by)
                    .ok_or_else(|| Error::invalid("by", "the counter would overflow"))?;
                *b = next.to_string().into_bytes();
                Ok(next)
            }
            Some(_) => Err(wrong_type(key)),
            None => {
                let ttl_ms = ttl_on_create.map(|t| (t.as_millis() as u64).max(1));
                s.put(key, Value::Bytes(by.to_string().into_bytes()), ttl_ms, now);
                Ok(by)
            }
        })
    }

    async fn rate_check(
        &self,
        key: &str,
        algorithm: &RateAlgorithm,
        cost: u64,
        _nonce: &str,
    ) -> Result<RateOutcome> {
        self.with(|s, now| match *algorithm {
            RateAlgorithm::Gcra {
                limit,
                period_ms,
                burst,
            } => {
                let tat = match s.live(key, now) {
                    None => None,
                    Some(Entry {
                        value: Value::Tat(t),
                        ..
                    }) => Some(*t),
                    Some(_) => return Err(wrong_type(key)),
                };
                let (outcome, next) = ratemath::gcra(now, tat, limit, period_ms, burst, cost);
                if let Some((tat, keep_ms)) = next {
                    s.put(key, Value::Tat(tat), Some(keep_ms), now);
                }
                Ok(outcome)
            }
            RateAlgorithm::SlidingWindow { limit, window_ms }
            | RateAlgorithm::FixedWindow { limit, window_ms } => {
                let state = match s.live(key, now) {
                    None => None,
                    Some(Entry {
                        value: Value::Window(w),
                        ..
                    }) => Some(*w),
                    Some(_) => return Err(wrong_type(key)),
                };
                let (outcome, next) = if matches!(algorithm, RateAlgorithm::FixedWindow { .. }) {
                    ratemath::fixed_window(now, state, limit, window_ms, cost)
                } else {
                    ratemath::sliding_window(now, state, limit, window_ms, cost)
                };
                if let Some((st, keep_ms)) = next {
                    s.put(key, Value::Window(st), Some(keep_ms), now);
                }
                Ok(outcome)
            }
            RateAlgorithm::SlidingLog { limit, window_ms } => {
                let cutoff = ratemath::sliding_log_cutoff(now, window_ms);
                let mut log = match s.live(key, now) {
                    None => Vec::new(),
                    Some(Entry {
                        value: Value::Log(l),
                        ..
                    }) => std::mem::take(l),
                    Some(_) => return Err(wrong_type(key)),
                };
                log.retain(|&t| t > cutoff);
                let outcome = ratemath::sliding_log(now, &log, limit, window_ms, cost);
                if outcome.allowed {
                    log.extend(std::iter::repeat_n(now, cost as usize));
                }
                if log.is_empty() {
                    s.map.remove(key);
                } else {
                    s.put(key, Value::Log(log), Some(window_ms.max(1)), now);
                }
                Ok(outcome)
            }
        })
    }

    async fn lock_acquire(
        &self,
        key: &str,
        fence_key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<Option<u64>> {
        self.with(|s, now| {
            if s.live(key, now).is_some() {
                return Ok(None);
            }
            s.put(
                key,
                Value::Bytes(token.as_bytes().to_vec()),
                Some((ttl.as_millis() as u64).max(1)),
                now,
            );
            let fence = match s.live(fence_key, now) {
                Some(Entry {
                    value: Value::Bytes(b),
                    ..
                }) => {
                    let n: u64 = std::str::from_utf8(b)
                        .ok()
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(0)
                        + 1;
                    *b = n.to_string().into_bytes();
                    n
                }
                _ => {
                    s.put(fence_key, Value::Bytes(b"1".to_vec()), None, now);
                    1
                }
            };
            Ok(Some(fence))
        })
    }

    async fn lock_release(&self, key: &str, token: &str) -> Result<bool> {
        self.with(|s, now| {
            let held = matches!(s.live(key, now), Some(Entry { value: Value::Bytes(b), .. }) if b == token.as_bytes());
            if held {
                s.map.remove(key);
            }
            Ok(held)
        })
    }

    async fn lock_extend(&self, key: &str, token: &str, ttl: Duration) -> Result<bool> {
        self.with(|s, now| match s.live(key, now) {
            Some(e) if matches!(&e.value, Value::Bytes(b) if b == token.as_bytes()) => {
                e.expires_at = Some(now + (ttl.as_micros() as u64).max(1));
                Ok(true)
            }
            _ => Ok(false),
        })
    }

    async fn publish(&self, channel: &str, payload: &[u8]) -> Result<u64> {
        self.ops.fetch_add(1, Ordering::Relaxed);
        let message = PubSubMessage {
            channel: channel.to_string(),
            pattern: None,
            payload: payload.to_vec(),
        };
        // Every subscriber receives every message and filters; the count returned is of
        // subscriptions that exist, as close to Redis's "receivers" as a bus can say.
        Ok(self.bus.send(message).map(|n| n as u64).unwrap_or(0))
    }

    async fn subscribe(&self, channels: &[String], patterns: &[String]) -> Result<Subscription> {
        let rx = self.bus.subscribe();
        let channels = channels.to_vec();
        let patterns = patterns.to_vec();
        let stream = futures::stream::unfold(rx, move |mut rx| {
            let channels = channels.clone();
            let patterns = patterns.clone();
            async move {
                loop {
                    match rx.recv().await {
                        Ok(mut m) => {
                            if channels.contains(&m.channel) {
                                return Some((m, rx));
                            }
                            if let Some(p) = patterns.iter().find(|p| glob_match(p, &m.channel)) {
                                m.pattern = Some(p.clone());
                                return Some((m, rx));
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(skipped = n, "slow subscriber skipped messages");
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        Ok(stream.boxed())
    }

    async fn ping(&self) -> Result<Duration> {
        let t = Instant::now();
        self.with(|_, _| ());
        Ok(t.elapsed())
    }

    async fn info(&self) -> Result<ServerInfo> {
        let (used, keys) = self.with(|s, now| {
            s.map.retain(|_, e| e.expires_at.is_none_or(|t| t > now));
            let used: usize = s
                .map
                .iter()
                .map(|(k, e)| k.len() + e.value.size() + 48)
                .sum();
            (used as u64, s.map.len() as u64)
        });
        let uptime = self.started.elapsed();
        Ok(ServerInfo {
            version: format!("keel-memory {}", env!("CARGO_PKG_VERSION")),
            uptime_s: uptime.as_secs(),
            used_memory: used,
            max_memory: 0,
            eviction_policy: "noeviction".into(),
            keyspace_hits: self.hits.load(Ordering::Relaxed),
            keyspace_misses: self.misses.load(Ordering::Relaxed),
            ops_per_sec: self.ops.load(Ordering::Relaxed) / uptime.as_secs().max(1),
            connected_clients: 1 + self.bus.receiver_count() as u64,
            aof_enabled: false,
            rdb_enabled: false,
            rdb_last_save: 0,
            rdb_changes_since_save: 0,
            keys,
            nodes: Vec::new(),
        })
    }

    fn latency_samples(&self) -> Vec<u32> {
        Vec::new()
    }
}
