//! The toolkit on Redis: plain commands on the process's one multiplexed connection (shared
//! with the queue handles), Keel's own Lua scripts for the rate limiters and locks, and a
//! dedicated connection per subscription that reconnects and resubscribes by itself.
//!
//! The rate-limit scripts transcribe `keel_core::ratemath` line by line, with `now` from Redis
//! `TIME` (µs) so every process agrees on the clock. Each touches one key. Lock scripts touch
//! the lock and its fencing counter, which share a hash tag (`keel::keys`), so they are
//! Cluster-safe. The scripts are `lua/*.lua`, each opening with its KEYS, ARGV and return value
//! (`lua/redis_now.lua` is prepended to the rate-limit ones).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use keel_core::{
    BackendKind, Error, KvBackend, PubSubMessage, RateAlgorithm, RateOutcome, Result, ServerInfo,
    SetMode, Subscription,
};

use crate::convert::map_redis;
use crate::{redact_url, RedisBackend};

const LATENCY_RING: usize = 1024;

/// How often "Redis unavailable" may be logged.
const DOWN_LOG_EVERY_MS: u64 = 5 * 60 * 1000;

/// Per-backend toolkit state: recent latencies and the outage logger.
pub(crate) struct KvState {
    latencies: Box<[AtomicU32]>,
    next: AtomicUsize,
    down: AtomicBool,
    last_down_log_ms: AtomicU64,
}

impl Default for KvState {
    fn default() -> Self {
        KvState {
            latencies: (0..LATENCY_RING).map(|_| AtomicU32::new(0)).collect(),
            next: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            last_down_log_ms: AtomicU64::new(0),
        }
    }
}

impl KvState {
    fn record(&self, took: Duration) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % LATENCY_RING;
        let us = took.as_micros().min(u32::MAX as u128) as u32;
        self.latencies[i].store(us.max(1), Ordering::Relaxed);
    }

    /// Logs an outage at most once per 5 minutes, and the recovery once. Returns whether it
    /// logged.
    fn observe<T>(&self, url: impl FnOnce() -> String, result: &Result<T>) -> bool {
        match result {
            Err(Error::BackendUnavailable(msg)) => {
                self.down.store(true, Ordering::Relaxed);
                let now = keel_core::now_ms();
                let last = self.last_down_log_ms.load(Ordering::Relaxed);
                if (last == 0 || now.saturating_sub(last) >= DOWN_LOG_EVERY_MS)
                    && self
                        .last_down_log_ms
                        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::warn!(redis = %url(), error = %msg, "Redis unavailable (logged at most once per 5 minutes)");
                    return true;
                }
                false
            }
            Ok(_) if self.down.swap(false, Ordering::Relaxed) => {
                self.last_down_log_ms.store(0, Ordering::Relaxed);
                tracing::info!(redis = %url(), "Redis reachable again");
                true
            }
            _ => false,
        }
    }
}

/// A script from `lua/`, hashed once on first use.
macro_rules! script {
    ($(#[$doc:meta])* $name:ident = $($file:literal),+) => {
        $(#[$doc])*
        static $name: LazyLock<redis::Script> = LazyLock::new(|| {
            redis::Script::new(concat!($(include_str!(concat!("../lua/", $file))),+))
        });
    };
}

script!(GCRA = "redis_now.lua", "gcra.lua");
script!(SLIDING_WINDOW = "redis_now.lua", "sliding_window.lua");
script!(FIXED_WINDOW = "redis_now.lua", "fixed_window.lua");
script!(SLIDING_LOG = "redis_now.lua", "sliding_log.lua");
script!(LOCK_ACQUIRE = "lock_acquire.lua");
script!(LOCK_RELEASE = "lock_release.lua");
script!(LOCK_EXTEND = "lock_extend.lua");
script!(INCR_TTL = "incr_ttl.lua");

/// A trivial script, for benchmarking `EVALSHA` round trips against the toolkit's own.
pub static TRIVIAL_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new("return 1"));

fn ms(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

impl RedisBackend {
    /// Runs one toolkit call: bounded by the command timeout, timed, outages logged once.
    pub(crate) async fn kv_call<T, F>(&self, what: &str, fut: F) -> Result<T>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let started = Instant::now();
        let result = self.redis_call(what, fut).await;
        if result.is_ok() {
            self.inner.kv.record(started.elapsed());
        }
        self.inner
            .kv
            .observe(|| redact_url(&self.inner.settings.url), &result);
        result
    }

    pub(crate) async fn kv_cmd<T: redis::FromRedisValue>(
        &self,
        what: &str,
        cmd: redis::Cmd,
    ) -> Result<T> {
        let mut conn = self.inner.conn.connection();
        self.kv_call(what, async move { cmd.query_async::<T>(&mut conn).await })
            .await
    }

    async fn kv_script<T: redis::FromRedisValue>(
        &self,
        what: &str,
        script: &redis::Script,
        keys: &[&str],
        args: &[String],
    ) -> Result<T> {
        let mut inv = script.prepare_invoke();
        for k in keys {
            inv.key(*k);
        }
        for a in args {
            inv.arg(a);
        }
        let mut conn = self.inner.conn.connection();
        self.kv_call(what, async move { inv.invoke_async::<T>(&mut conn).await })
            .await
    }

    /// Runs the trivial script once (benchmark baseline).
    pub async fn eval_trivial(&self) -> Result<i64> {
        self.kv_script("EVALSHA", &TRIVIAL_SCRIPT, &[], &[]).await
    }
}

#[async_trait]
impl KvBackend for RedisBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Redis
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.kv_cmd("GET", redis::cmd("GET").arg(key).to_owned())
            .await
    }

    async fn mget(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.kv_cmd("MGET", redis::cmd("MGET").arg(keys).to_owned())
            .await
    }

    async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        mode: SetMode,
    ) -> Result<bool> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        if let Some(t) = ttl {
            cmd.arg("PX").arg(ms(t));
        }
        if mode == SetMode::IfAbsent {
            cmd.arg("NX");
        }
        let r: Option<String> = self.kv_cmd("SET", cmd).await?;
        Ok(r.is_some())
    }

    async fn del(&self, keys: &[String]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.kv_cmd("UNLINK", redis::cmd("UNLINK").arg(keys).to_owned())
            .await
    }

    async fn scan(&self, pattern: &str, max: usize) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        'targets: for target in self.scan_targets().await? {
            let mut cursor = 0;
            loop {
                let (next, found) = self.scan_batch(&target, cursor, pattern).await?;
                keys.extend(found);
                if keys.len() >= max {
                    break 'targets;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        keys.sort();
        keys.dedup();
        keys.truncate(max);
        Ok(keys)
    }

    async fn delete_matching(&self, pattern: &str) -> Result<u64> {
        let mut deleted = 0;
        for target in self.scan_targets().await? {
            let mut cursor = 0;
            loop {
                let (next, found) = self.scan_batch(&target, cursor, pattern).await?;
                // On a cluster the keys of one batch may be in many slots: UNLINK is split by
                // slot (redis-rs routes each part to its master).
                deleted += self.del(&found).await?;
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(deleted)
    }

    async fn expire(&self, key: &str, ttl: Duration) -> Result<bool> {
        let n: u64 = self
            .kv_cmd(
                "PEXPIRE",
                redis::cmd("PEXPIRE").arg(key).arg(ms(ttl)).to_owned(),
            )
            .await?;
        Ok(n == 1)
    }

    async fn ttl(&self, key: &str) -> Result<Option<Option<Duration>>> {
        let t: i64 = self
            .kv_cmd("PTTL", redis::cmd("PTTL").arg(key).to_owned())
            .await?;
        Ok(match t {
            -2 => None,
            -1 => Some(None),
            ms => Some(Some(Duration::from_millis(ms.max(0) as u64))),
        })
    }

    async fn incr(&self, key: &str, by: i64, ttl_on_create: Option<Duration>) -> Result<i64> {
        let ttl = ttl_on_create.map(|t| ms(t).to_string()).unwrap_or_default();
        self.kv_script("INCRBY", &INCR_TTL, &[key], &[by.to_string(), ttl])
            .await
    }

    async fn rate_check(
        &self,
        key: &str,
        algorithm: &RateAlgorithm,
        cost: u64,
        nonce: &str,
    ) -> Result<RateOutcome> {
        let (script, args): (&redis::Script, Vec<String>) = match *algorithm {
            RateAlgorithm::Gcra {
                limit,
                period_ms,
                burst,
            } => (
                &GCRA,
                vec![
                    limit.to_string(),
                    period_ms.to_string(),
                    burst.to_string(),
                    cost.to_string(),
                ],
            ),
            RateAlgorithm::SlidingWindow { limit, window_ms } => (
                &SLIDING_WINDOW,
                vec![limit.to_string(), window_ms.to_string(), cost.to_string()],
            ),
            RateAlgorithm::FixedWindow { limit, window_ms } => (
                &FIXED_WINDOW,
                vec![limit.to_string(), window_ms.to_string(), cost.to_string()],
            ),
            RateAlgorithm::SlidingLog { limit, window_ms } => (
                &SLIDING_LOG,
                vec![
                    limit.to_string(),
                    window_ms.to_string(),
                    cost.to_string(),
                    nonce.to_string(),
                ],
            ),
        };
        let r: Vec<i64> = self
            .kv_script("rate limit check", script, &[key], &args)
            .await?;
        match r.as_slice() {
            [allowed, remaining, reset, retry] => Ok(RateOutcome {
                allowed: *allowed == 1,
                remaining: (*remaining).max(0) as u64,
                reset_after_ms: (*reset).max(0) as u64,
                retry_after_ms: (*retry).max(0) as u64,
            }),
            other => Err(Error::Backend(format!(
                "rate limit script answered {other:?}"
            ))),
        }
    }

    async fn lock_acquire(
        &self,
        key: &str,
        fence_key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<Option<u64>> {
        self.kv_script(
            "lock acquire",
            &LOCK_ACQUIRE,
            &[key, fence_key],
            &[token.to_string(), ms(ttl).to_string()],
        )
        .await
    }

    async fn lock_release(&self, key: &str, token: &str) -> Result<bool> {
        let n: i64 = self
            .kv_script("lock release", &LOCK_RELEASE, &[key], &[token.to_string()])
            .await?;
        Ok(n == 1)
    }

    async fn lock_extend(&self, key: &str, token: &str, ttl: Duration) -> Result<bool> {
        let n: i64 = self
            .kv_script(
                "lock extend",
                &LOCK_EXTEND,
                &[key],
                &[token.to_string(), ms(ttl).to_string()],
            )
            .await?;
        Ok(n == 1)
    }

    async fn publish(&self, channel: &str, payload: &[u8]) -> Result<u64> {
        if self.sharded_pubsub() {
            // Routed by the channel's slot to its shard.
            let cmd = redis::cmd("SPUBLISH").arg(channel).arg(payload).to_owned();
            return self.kv_cmd("SPUBLISH", cmd).await;
        }
        let cmd = redis::cmd("PUBLISH").arg(channel).arg(payload).to_owned();
        if let Some(sent) = self.publish_on_first_seed(&cmd).await {
            return sent;
        }
        self.kv_cmd("PUBLISH", cmd).await
    }

    async fn subscribe(&self, channels: &[String], patterns: &[String]) -> Result<Subscription> {
        if self.sharded_pubsub() {
            return self.subscribe_sharded(channels, patterns).await;
        }
        // Tried in turn, each (re)connect (on a cluster, the seeds).
        let clients = self.pubsub_clients();
        let timeout = self.inner.settings.command_timeout;
        let url = redact_url(&self.inner.settings.url);
        let (channels, patterns) = (channels.to_vec(), patterns.to_vec());
        let connect = move || {
            let clients = clients.clone();
            let (channels, patterns) = (channels.clone(), patterns.clone());
            async move {
                let fut = async {
                    let mut last = None;
                    let mut ps = None;
                    for client in &clients {
                        match client.get_async_pubsub().await {
                            Ok(p) => {
                                ps = Some(p);
                                break;
                            }
                            Err(e) => last = Some(e),
                        }
                    }
                    let Some(mut ps) = ps else {
                        return Err(last.unwrap_or_else(|| {
                            redis::RedisError::from((
                                redis::ErrorKind::Io,
                                "no node to subscribe on",
                            ))
                        }));
                    };
                    for c in &channels {
                        ps.subscribe(c).await?;
                    }
                    for p in &patterns {
                        ps.psubscribe(p).await?;
                    }
                    Ok::<_, redis::RedisError>(ps)
                };
                match tokio::time::timeout(timeout, fut).await {
                    Ok(r) => r.map_err(|e| map_redis("SUBSCRIBE", e)),
                    Err(_) => Err(Error::BackendUnavailable(format!(
                        "SUBSCRIBE: Redis did not answer within {timeout:?}"
                    ))),
                }
            }
        };
        let first = connect().await?;
        let (tx, rx) = tokio::sync::mpsc::channel::<PubSubMessage>(1024);
        tokio::spawn(async move {
            let mut pubsub = Some(first);
            let mut delay = Duration::from_millis(100);
            let mut last_log: Option<Instant> = None;
            loop {
                if let Some(ps) = pubsub.take() {
                    delay = Duration::from_millis(100);
                    let mut stream = ps.into_on_message();
                    loop {
                        tokio::select! {
                            _ = tx.closed() => return,
                            msg = stream.next() => match msg {
                                Some(m) => {
                                    let message = PubSubMessage {
                                        channel: m.get_channel_name().to_string(),
                                        pattern: if m.from_pattern() { m.get_pattern::<String>().ok() } else { None },
                                        payload: m.get_payload_bytes().to_vec(),
                                    };
                                    if tx.send(message).await.is_err() {
                                        return;
                                    }
                                }
                                None => break,
                            },
                        }
                    }
                    tracing::warn!(redis = %url, "pub/sub connection lost; resubscribing");
                }
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
                match connect().await {
                    Ok(ps) => {
                        tracing::info!(redis = %url, "pub/sub resubscribed");
                        pubsub = Some(ps);
                    }
                    Err(e) => {
                        if last_log
                            .is_none_or(|t| t.elapsed() >= Duration::from_millis(DOWN_LOG_EVERY_MS))
                        {
                            tracing::warn!(redis = %url, error = %e, "pub/sub cannot reconnect yet (logged at most once per 5 minutes)");
                            last_log = Some(Instant::now());
                        }
                    }
                }
            }
        });
        Ok(
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) })
                .boxed(),
        )
    }

    async fn ping(&self) -> Result<Duration> {
        let started = Instant::now();
        let _: String = self.kv_cmd("PING", redis::cmd("PING")).await?;
        Ok(started.elapsed())
    }

    async fn info(&self) -> Result<ServerInfo> {
        self.server_info().await
    }

    fn latency_samples(&self) -> Vec<u32> {
        self.inner
            .kv
            .latencies
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .filter(|&v| v > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_logged_once_per_five_minutes() {
        let st = KvState::default();
        let down: Result<()> = Err(Error::BackendUnavailable("refused".into()));
        assert!(
            st.observe(|| "redis://x".into(), &down),
            "the first failure is logged"
        );
        for _ in 0..1000 {
            assert!(
                !st.observe(|| "redis://x".into(), &down),
                "repeats within 5 minutes are not"
            );
        }
        // Five minutes later it is logged again.
        st.last_down_log_ms
            .store(keel_core::now_ms() - DOWN_LOG_EVERY_MS, Ordering::Relaxed);
        assert!(st.observe(|| "redis://x".into(), &down));
        // Recovery is logged once, and the next outage is news again.
        assert!(st.observe(|| "redis://x".into(), &Ok(())));
        assert!(!st.observe(|| "redis://x".into(), &Ok(())));
        assert!(st.observe(|| "redis://x".into(), &down));
        // Other errors are not outages.
        let other: Result<()> = Err(Error::Backend("WRONGTYPE".into()));
        assert!(!st.observe(|| "redis://x".into(), &other));
    }
}
