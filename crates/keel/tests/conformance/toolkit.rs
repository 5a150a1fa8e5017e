//! The toolkit part of the conformance suite: cache, rate limits, locks, counters, flags,
//! idempotency, sessions, pub/sub and health — the same assertions on both backends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use keel::cache::{CachePolicy, MAX_VALUE_BYTES};
use keel::health::{self, Status};
use keel::ratelimit::DecisionSource;
use keel::store::Flag;
use keel::{
    Backend, Begin, Cache, Counters, Error, Events, Flags, Idempotency, Locks, RateAlgorithm,
    RateLimiter, RatePolicy, Sessions, Write,
};
use serde_json::json;

fn cache(b: &Backend, policy: CachePolicy) -> Cache {
    let ns = format!("ns-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    Cache::new(b, &ns).unwrap().with_policy(policy)
}

pub async fn cache_set_get_delete_with_jittered_ttl(b: Backend) {
    let c = cache(&b, CachePolicy::ttl(Duration::from_secs(100)));
    assert_eq!(c.get::<String>("user:1").await.unwrap(), None);
    assert!(c
        .set("user:1", &json!({"name": "Ada", "n": 1}), Write::default())
        .await
        .unwrap());
    let v: serde_json::Value = c.get("user:1").await.unwrap().unwrap();
    assert_eq!(v, json!({"name": "Ada", "n": 1}));
    // Physical TTL = jittered ttl (90..110 s) + stale_for (60 s).
    let ttl = b
        .kv()
        .ttl(&c.item_key("user:1"))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        ttl > Duration::from_secs(148) && ttl <= Duration::from_secs(170),
        "{ttl:?}"
    );
    // A typed read of the wrong shape is a miss, not a panic, and the entry is dropped.
    assert_eq!(c.get::<u64>("user:1").await.unwrap(), None);
    assert!(c.set("user:2", &7u32, Write::default()).await.unwrap());
    assert!(c.delete("user:2").await.unwrap());
    assert!(!c.delete("user:2").await.unwrap());
    assert_eq!(c.get::<u32>("user:2").await.unwrap(), None);
    let s = c.stats();
    assert_eq!((s.hits, s.misses), (1, 3));
    // Bad keys are refused naming the field.
    let e = c.get::<u32>("a{b}").await.unwrap_err();
    assert_eq!(e.field(), Some("key"));
    assert_eq!(
        Cache::new(&b, "bad ns").unwrap_err().field(),
        Some("namespace")
    );
}

pub async fn cache_computes_once_for_fifty_concurrent_callers(b: Backend) {
    let c = cache(&b, CachePolicy::ttl(Duration::from_secs(60)));
    let computed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (c, computed) = (c.clone(), computed.clone());
        tasks.push(tokio::spawn(async move {
            c.get_or_compute("cold", Write::default(), || async {
                computed.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok::<_, Error>(json!({"answer": 42}))
            })
            .await
            .unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), json!({"answer": 42}));
    }
    assert_eq!(computed.load(Ordering::SeqCst), 1);
    assert_eq!(c.stats().computes, 1);
}

pub async fn cache_serves_stale_while_one_recomputes(b: Backend) {
    let policy = CachePolicy {
        ttl: Duration::from_millis(200),
        jitter: 0.0,
        stale_for: Duration::from_secs(30),
        ..CachePolicy::default()
    };
    let c = cache(&b, policy);
    c.set("k", &"old", Write::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        c.get::<String>("k").await.unwrap(),
        None,
        "plain get never returns stale"
    );
    let slow = {
        let c = c.clone();
        tokio::spawn(async move {
            c.get_or_compute("k", Write::default(), || async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                Ok::<_, Error>("new".to_string())
            })
            .await
            .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let during: String = c
        .get_or_compute("k", Write::default(), || async {
            Ok::<_, Error>("second computation".to_string())
        })
        .await
        .unwrap();
    assert_eq!(during, "old", "a waiter gets the stale value at once");
    assert!(started.elapsed() < Duration::from_millis(400));
    assert_eq!(slow.await.unwrap(), "new");
    assert_eq!(c.get::<String>("k").await.unwrap().as_deref(), Some("new"));
    assert_eq!(c.stats().stale_hits, 1);
}

pub async fn cache_failed_computation_is_not_cached(b: Backend) {
    let c = cache(&b, CachePolicy::default());
    let r: Result<u32, String> = c
        .get_or_compute("k", Write::default(), || async {
            Err("db down".to_string())
        })
        .await;
    assert_eq!(r, Err("db down".into()));
    // The fill lock was released: the next caller computes at once.
    let started = Instant::now();
    let v: u32 = c
        .get_or_compute("k", Write::default(), || async { Ok::<_, String>(5) })
        .await
        .unwrap();
    assert_eq!(v, 5);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(c.get::<u32>("k").await.unwrap(), Some(5));
}

pub async fn cache_early_refresh_recomputes_before_expiry(b: Backend) {
    // β huge: every read after a computation that took time refreshes early.
    let eager = cache(
        &b,
        CachePolicy {
            early_refresh: Some(1e9),
            ..CachePolicy::default()
        },
    );
    let lazy = cache(&b, CachePolicy::default());
    for c in [&eager, &lazy] {
        let computed = AtomicUsize::new(0);
        for _ in 0..2 {
            let _: u32 = c
                .get_or_compute("k", Write::default(), || async {
                    computed.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok::<_, Error>(1)
                })
                .await
                .unwrap();
        }
        let expected = if c.policy().early_refresh.is_some() {
            2
        } else {
            1
        };
        assert_eq!(
            computed.load(Ordering::SeqCst),
            expected,
            "{:?}",
            c.policy()
        );
    }
}

pub async fn cache_tags_invalidate_and_survive_tag_key_loss(b: Backend) {
    let c = cache(&b, CachePolicy::default());
    c.set("a", &1, Write::tags(&["team-1"])).await.unwrap();
    c.set("b", &2, Write::tags(&["team-1", "org-9"]))
        .await
        .unwrap();
    c.set("c", &3, Write::tags(&["org-9"])).await.unwrap();
    c.invalidate_tags(&["team-1"]).await.unwrap();
    assert_eq!(c.get::<u32>("a").await.unwrap(), None);
    assert_eq!(c.get::<u32>("b").await.unwrap(), None);
    assert_eq!(c.get::<u32>("c").await.unwrap(), Some(3));
    // Written after the invalidation: valid under the new version.
    c.set("a", &10, Write::tags(&["team-1"])).await.unwrap();
    assert_eq!(c.get::<u32>("a").await.unwrap(), Some(10));
    // The tag key disappears behind the cache's back (eviction, a stray DEL) and is then
    // recreated by another write: the old item must not come back.
    assert_eq!(b.kv().del(&[c.tag_key("team-1")]).await.unwrap(), 1);
    c.set("d", &4, Write::tags(&["team-1"])).await.unwrap();
    assert_eq!(c.get::<u32>("a").await.unwrap(), None);
    assert_eq!(c.get::<u32>("d").await.unwrap(), Some(4));
    assert_eq!(c.get::<u32>("c").await.unwrap(), Some(3));
}

pub async fn cache_delete_by_pattern_stays_in_namespace(b: Backend) {
    let c = cache(&b, CachePolicy::default());
    let other = cache(&b, CachePolicy::default());
    for k in ["user:1", "user:2", "team:1"] {
        c.set(k, &1, Write::default()).await.unwrap();
        other.set(k, &1, Write::default()).await.unwrap();
    }
    assert_eq!(c.delete_pattern("user:*").await.unwrap(), 2);
    assert_eq!(c.get::<u32>("user:1").await.unwrap(), None);
    assert_eq!(c.get::<u32>("team:1").await.unwrap(), Some(1));
    assert_eq!(other.get::<u32>("user:1").await.unwrap(), Some(1));
    assert_eq!(c.delete_pattern("").await.unwrap_err_field(), "pattern");
}

trait ErrField {
    fn unwrap_err_field(self) -> String;
}

impl<T: std::fmt::Debug> ErrField for keel::Result<T> {
    fn unwrap_err_field(self) -> String {
        self.unwrap_err().field().unwrap_or("").to_string()
    }
}

pub async fn cache_skips_values_over_512_kib(b: Backend) {
    let c = cache(&b, CachePolicy::default());
    c.set("big", &"small first", Write::default())
        .await
        .unwrap();
    let big = "x".repeat(MAX_VALUE_BYTES + 1);
    assert!(!c.set("big", &big, Write::default()).await.unwrap());
    assert_eq!(c.stats().oversize, 1);
    assert_eq!(
        c.get::<String>("big").await.unwrap(),
        None,
        "the older value is gone too"
    );
    let v: String = c
        .get_or_compute("big2", Write::default(), || async {
            Ok::<_, Error>(big.clone())
        })
        .await
        .unwrap();
    assert_eq!(v.len(), big.len());
    assert_eq!(c.stats().oversize, 2);
}

pub async fn cache_write_through_follows_the_source(b: Backend) {
    let c = cache(&b, CachePolicy::default());
    c.set("p", &"v1", Write::default()).await.unwrap();
    let failed: Result<(), &str> = c
        .write_through("p", &"v2", Write::default(), || async { Err("constraint") })
        .await;
    assert_eq!(failed, Err("constraint"));
    assert_eq!(c.get::<String>("p").await.unwrap().as_deref(), Some("v1"));
    c.write_through("p", &"v3", Write::default(), || async { Ok::<_, ()>(()) })
        .await
        .unwrap();
    assert_eq!(c.get::<String>("p").await.unwrap().as_deref(), Some("v3"));
}

fn limiter(b: &Backend, policies: Vec<RatePolicy>) -> RateLimiter {
    RateLimiter::new(b, policies).unwrap()
}

/// Waits until the current `window_ms`-aligned window has at least `margin_ms` left, so an
/// exact-count test does not straddle a boundary.
async fn away_from_window_edge(window_ms: u64, margin_ms: u64) {
    let now = keel::now_ms();
    let left = window_ms - now % window_ms;
    if left < margin_ms {
        tokio::time::sleep(Duration::from_millis(left + 20)).await;
    }
}

pub async fn ratelimit_parallel_clients_get_exactly_the_limit(b: Backend) {
    const HOUR: u64 = 3_600_000;
    let algorithms = [
        RateAlgorithm::Gcra {
            limit: 10,
            period_ms: HOUR,
            burst: 10,
        },
        RateAlgorithm::SlidingLog {
            limit: 10,
            window_ms: HOUR,
        },
        RateAlgorithm::SlidingWindow {
            limit: 10,
            window_ms: HOUR,
        },
        RateAlgorithm::FixedWindow {
            limit: 10,
            window_ms: HOUR,
        },
    ];
    away_from_window_edge(HOUR, 3000).await;
    for algorithm in algorithms {
        let rl = limiter(&b, vec![RatePolicy::new("p", algorithm)]);
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let rl = rl.clone();
            tasks.push(tokio::spawn(async move {
                rl.check("p", "user-1").await.unwrap()
            }));
        }
        let mut decisions = Vec::new();
        for t in tasks {
            decisions.push(t.await.unwrap());
        }
        let allowed: Vec<_> = decisions.iter().filter(|d| d.allowed).collect();
        // A fresh key in one window: the two-bucket estimate has no previous window and is exact.
        assert_eq!(allowed.len(), 10, "{algorithm:?}");
        let mut remaining: Vec<u64> = allowed.iter().map(|d| d.remaining).collect();
        remaining.sort();
        assert_eq!(remaining, (0..10).collect::<Vec<_>>(), "{algorithm:?}");
        for d in decisions.iter().filter(|d| !d.allowed) {
            assert_eq!(d.source, DecisionSource::Backend);
            assert_eq!(d.limit, 10);
            assert_eq!(d.remaining, 0);
            let r = d.retry_after.expect("a rejection says when to retry");
            assert!(
                r > Duration::ZERO && r <= Duration::from_millis(HOUR),
                "{algorithm:?} {r:?}"
            );
            assert!(
                d.reset_after <= Duration::from_millis(HOUR),
                "{algorithm:?} {:?}",
                d.reset_after
            );
            assert!(d.headers().iter().any(|(h, _)| *h == "Retry-After"));
        }
        // Another subject has its own budget.
        assert!(rl.check("p", "user-2").await.unwrap().allowed);
        rl.reset("p", "user-1").await.unwrap();
        assert!(
            rl.check("p", "user-1").await.unwrap().allowed,
            "{algorithm:?} after reset"
        );
    }
}

/// Local leases: two instances (two limiters on one backend) admitting from leases of 50
/// units never admit more than the shared limit together; the shared budget shows what the
/// leases took; a single instance still admits exactly the limit (the tail is checked one by
/// one when no lease fits).
pub async fn ratelimit_local_leases_never_exceed_the_shared_limit(b: Backend) {
    const HOUR: u64 = 3_600_000;
    away_from_window_edge(HOUR, 3000).await;
    let policy = || {
        RatePolicy::new(
            "leased",
            RateAlgorithm::FixedWindow {
                limit: 230,
                window_ms: HOUR,
            },
        )
        .local_lease(50)
    };
    let exact = RatePolicy::new(
        "leased",
        RateAlgorithm::FixedWindow {
            limit: 230,
            window_ms: HOUR,
        },
    );
    let (one, two) = (limiter(&b, vec![policy()]), limiter(&b, vec![policy()]));
    let first = one.check("leased", "u").await.unwrap();
    assert!(first.allowed);
    assert_eq!(
        first.remaining, 229,
        "the lease is counted in what the caller may still do"
    );
    // The backend saw one check of 50 units.
    let probe = limiter(&b, vec![exact.clone()]);
    let seen = probe.check("leased", "u").await.unwrap();
    assert_eq!(seen.remaining, 230 - 50 - 1, "{seen:?}");
    // Both instances, concurrently, until refused: together exactly what is left.
    let mut tasks = Vec::new();
    for rl in [one.clone(), two.clone()] {
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            for _ in 0..400 {
                if rl.check("leased", "u").await.unwrap().allowed {
                    n += 1;
                }
            }
            n
        }));
    }
    let mut admitted = 1 + 1; // the first check and the probe's
    for t in tasks {
        admitted += t.await.unwrap();
    }
    assert!(admitted <= 230, "never over the shared limit: {admitted}");
    // Leases lost to the other instance are at most one lease each.
    assert!(admitted >= 230 - 2 * 50, "{admitted}");
    // One instance alone on a fresh subject admits exactly the limit.
    let alone = limiter(&b, vec![policy()]);
    let mut n = 0;
    for _ in 0..300 {
        if alone.check("leased", "solo").await.unwrap().allowed {
            n += 1;
        }
    }
    assert_eq!(n, 230);
    assert!(RatePolicy::new(
        "x",
        RateAlgorithm::FixedWindow {
            limit: 10,
            window_ms: HOUR
        }
    )
    .local_lease(11)
    .validate()
    .is_err());
}

pub async fn ratelimit_gcra_refills_at_the_emission_interval(b: Backend) {
    // 5 per 5 s, burst 5: one more every second.
    let rl = limiter(
        &b,
        vec![RatePolicy::gcra("fast", 5, Duration::from_secs(5))],
    );
    for i in 0..5 {
        assert!(rl.check("fast", "k").await.unwrap().allowed, "request {i}");
    }
    let d = rl.check("fast", "k").await.unwrap();
    assert!(!d.allowed);
    let retry = d.retry_after.unwrap();
    assert!(retry <= Duration::from_millis(1000), "{retry:?}");
    tokio::time::sleep(retry + Duration::from_millis(30)).await;
    assert!(rl.check("fast", "k").await.unwrap().allowed);
    assert!(!rl.check("fast", "k").await.unwrap().allowed);
}

pub async fn ratelimit_windows_expire(b: Backend) {
    let policies = vec![
        RatePolicy::new(
            "log",
            RateAlgorithm::SlidingLog {
                limit: 2,
                window_ms: 400,
            },
        ),
        RatePolicy::new(
            "fixed",
            RateAlgorithm::FixedWindow {
                limit: 2,
                window_ms: 400,
            },
        ),
    ];
    let rl = limiter(&b, policies);
    for p in ["log", "fixed"] {
        away_from_window_edge(400, 300).await;
        assert!(rl.check(p, "k").await.unwrap().allowed);
        assert!(rl.check(p, "k").await.unwrap().allowed);
        let d = rl.check(p, "k").await.unwrap();
        assert!(!d.allowed, "{p}");
        tokio::time::sleep(d.retry_after.unwrap() + Duration::from_millis(30)).await;
        assert!(
            rl.check(p, "k").await.unwrap().allowed,
            "{p} after the window"
        );
    }
}

pub async fn ratelimit_dark_mode_counts_without_rejecting(b: Backend) {
    let rl = limiter(
        &b,
        vec![RatePolicy::gcra("trial", 2, Duration::from_secs(3600)).dark(true)],
    );
    let mut would = 0;
    for _ in 0..5 {
        let d = rl.check("trial", "k").await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.retry_after, None);
        would += d.would_reject as u32;
    }
    assert_eq!(would, 3);
    let s = rl.stats()["trial"];
    assert_eq!((s.allowed, s.dark_rejected, s.rejected), (2, 3, 0));
}

pub async fn ratelimit_seed_daily_platform_limits(b: Backend) {
    away_from_window_edge(86_400_000, 3000).await;
    let rl = RateLimiter::with_seed_defaults(&b).unwrap();
    for i in 0..25 {
        assert!(
            rl.check("post-instagram", "brand-1").await.unwrap().allowed,
            "post {i}"
        );
    }
    let d = rl.check("post-instagram", "brand-1").await.unwrap();
    assert!(!d.allowed);
    // Resets at the next UTC midnight.
    let to_midnight = 86_400_000 - keel::now_ms() % 86_400_000;
    let reset = d.reset_after.as_millis() as u64;
    assert!(
        reset.abs_diff(to_midnight) < 5_000,
        "{reset} vs {to_midnight}"
    );
    assert!(rl.check("post-linkedin", "brand-1").await.unwrap().allowed);
    assert_eq!(
        rl.check("post-linkedin", "brand-1").await.unwrap().limit,
        100
    );
    // Login: 5 per 15 minutes, then closed.
    for _ in 0..5 {
        assert!(rl.check("login", "a@example.com").await.unwrap().allowed);
    }
    assert!(!rl.check("login", "a@example.com").await.unwrap().allowed);
    let e = rl.check("nope", "k").await.unwrap_err();
    assert_eq!(e.code(), "not-found");
    assert_eq!(rl.check("api", "").await.unwrap_err().field(), Some("key"));
    assert_eq!(
        rl.check_n("api", "k", 0).await.unwrap_err().field(),
        Some("cost")
    );
}

fn lock_name() -> String {
    format!("lock-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

pub async fn locks_are_exclusive_and_fenced(b: Backend) {
    let locks = Locks::new(&b);
    let name = lock_name();
    let ttl = Duration::from_secs(10);
    let a = locks.try_acquire(&name, ttl).await.unwrap().unwrap();
    assert!(locks.try_acquire(&name, ttl).await.unwrap().is_none());
    let e = locks
        .acquire(&name, ttl, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "locked");
    let fa = a.fence();
    assert!(a.release().await.unwrap());
    let bguard = locks.try_acquire(&name, ttl).await.unwrap().unwrap();
    assert_eq!(bguard.fence(), fa + 1, "fences increase by one per acquire");
    // A holder whose lease expired cannot release or extend the new holder's lock.
    let short = lock_name();
    let old = locks
        .try_acquire(&short, Duration::from_millis(50))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    let new = locks.try_acquire(&short, ttl).await.unwrap().unwrap();
    assert!(!old.extend().await.unwrap());
    assert!(!old.release().await.unwrap());
    assert!(locks.try_acquire(&short, ttl).await.unwrap().is_none());
    assert!(new.fence() > 0);
    assert!(new.release().await.unwrap());
    assert!(bguard.release().await.unwrap());
    assert_eq!(
        locks.try_acquire("", ttl).await.unwrap_err().field(),
        Some("name")
    );
}

pub async fn locks_two_holders_never_overlap(b: Backend) {
    let locks = Locks::new(&b);
    let name = lock_name();
    let inside = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (locks, name, inside, done) =
            (locks.clone(), name.clone(), inside.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            locks
                .with_lock(
                    &name,
                    Duration::from_secs(5),
                    Duration::from_secs(30),
                    |_| async {
                        assert_eq!(
                            inside.fetch_add(1, Ordering::SeqCst),
                            0,
                            "two holders at once"
                        );
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        inside.fetch_sub(1, Ordering::SeqCst);
                        done.fetch_add(1, Ordering::SeqCst);
                    },
                )
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), 20);
}

pub async fn with_lock_extends_and_detects_a_lost_lease(b: Backend) {
    let locks = Locks::new(&b);
    // Work longer than the TTL completes: the lease is extended meanwhile.
    let name = lock_name();
    let l2 = locks.clone();
    let n2 = name.clone();
    let out = locks
        .with_lock(
            &name,
            Duration::from_millis(300),
            Duration::ZERO,
            |fence| async move {
                tokio::time::sleep(Duration::from_millis(800)).await;
                assert!(l2
                    .try_acquire(&n2, Duration::from_secs(1))
                    .await
                    .unwrap()
                    .is_none());
                fence
            },
        )
        .await
        .unwrap();
    assert!(out >= 1);
    // The lease is lost under the work (the key vanishes and someone else takes it): the work
    // is cancelled and the call fails lock-lost.
    let name = lock_name();
    let (key, _) = b.keys().lock(&name);
    let finished = Arc::new(AtomicUsize::new(0));
    let f2 = finished.clone();
    let kv = b.kv().clone();
    let thief = locks.clone();
    let n2 = name.clone();
    let r = locks
        .with_lock(
            &name,
            Duration::from_millis(300),
            Duration::ZERO,
            |_| async move {
                kv.del(&[key]).await.unwrap();
                let _stolen = thief
                    .try_acquire(&n2, Duration::from_secs(5))
                    .await
                    .unwrap()
                    .unwrap();
                tokio::time::sleep(Duration::from_secs(2)).await;
                f2.fetch_add(1, Ordering::SeqCst);
            },
        )
        .await;
    assert_eq!(r.unwrap_err().code(), "lock-lost");
    assert_eq!(finished.load(Ordering::SeqCst), 0, "the work was cancelled");
}

pub async fn counters_flags_idempotency(b: Backend) {
    let counters = Counters::new(&b);
    assert_eq!(counters.get("signups").await.unwrap(), 0);
    assert_eq!(counters.incr("signups", 1, None).await.unwrap(), 1);
    assert_eq!(counters.incr("signups", 5, None).await.unwrap(), 6);
    assert_eq!(counters.incr("signups", -2, None).await.unwrap(), 4);
    assert_eq!(counters.get("signups").await.unwrap(), 4);
    counters
        .incr("daily", 1, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    let ttl = b
        .kv()
        .ttl(&b.keys().counter("daily"))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(ttl > Duration::from_secs(55));
    counters.reset("signups").await.unwrap();
    assert_eq!(counters.get("signups").await.unwrap(), 0);

    let flags = Flags::new(&b);
    assert!(
        !flags.is_enabled("beta", Some("u1")).await.unwrap(),
        "unknown flags are off"
    );
    flags
        .set(
            "beta",
            &Flag {
                enabled: true,
                percent: Some(30),
                allow: vec!["vip".into()],
            },
        )
        .await
        .unwrap();
    let mut on = 0;
    for i in 0..1000 {
        on += flags
            .is_enabled("beta", Some(&format!("u{i}")))
            .await
            .unwrap() as u32;
    }
    assert!((220..380).contains(&on), "about 30 % of subjects: {on}");
    flags
        .set(
            "off",
            &Flag {
                enabled: false,
                percent: None,
                allow: vec!["vip".into()],
            },
        )
        .await
        .unwrap();
    assert!(flags.is_enabled("off", Some("vip")).await.unwrap());
    assert!(!flags.is_enabled("off", Some("u1")).await.unwrap());
    assert_eq!(
        flags.list().await.unwrap(),
        vec!["beta".to_string(), "off".to_string()]
    );
    assert!(flags.delete("beta").await.unwrap());
    assert_eq!(flags.get("beta").await.unwrap(), None);
    let bad = Flag {
        enabled: true,
        percent: Some(101),
        allow: vec![],
    };
    assert_eq!(
        flags.set("x", &bad).await.unwrap_err().field(),
        Some("percent")
    );

    let idem = Idempotency::new(&b, "payments").unwrap();
    let calls = AtomicUsize::new(0);
    for _ in 0..3 {
        let r: serde_json::Value = idem
            .run("req-1", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(json!({"charged": 100}))
            })
            .await
            .unwrap();
        assert_eq!(r, json!({"charged": 100}));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let Begin::Started(claim) = idem.begin("req-2").await.unwrap() else {
        panic!("fresh key must start")
    };
    assert!(matches!(
        idem.begin("req-2").await.unwrap(),
        Begin::InFlight
    ));
    let conflict = idem.run("req-2", || async { Ok(1) }).await.unwrap_err();
    assert_eq!(conflict.code(), "conflict");
    idem.abandon(claim).await.unwrap();
    let failed: keel::Result<u32> = idem
        .run("req-3", || async {
            Err(Error::Conflict("card declined".into()))
        })
        .await;
    assert!(failed.is_err());
    assert_eq!(
        idem.run("req-3", || async { Ok(7u32) }).await.unwrap(),
        7,
        "a failure frees the key"
    );
    let ttl = b
        .kv()
        .ttl(&b.keys().idempotency("payments", "req-1"))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        ttl > Duration::from_secs(23 * 3600),
        "responses are kept 24 h: {ttl:?}"
    );
}

pub async fn sessions_live_for_their_kind(b: Backend) {
    let users = Sessions::user(&b);
    let short = users.create(&json!({"user": "u1"}), false).await.unwrap();
    let long = users.create(&json!({"user": "u2"}), true).await.unwrap();
    assert_eq!(short.len(), 64);
    assert_ne!(short, long);
    let s = users
        .get::<serde_json::Value>(&short)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.data, json!({"user": "u1"}));
    assert!(!s.remember);
    let day = 86_400;
    let t = users.ttl(&short).await.unwrap().unwrap();
    assert!(t > Duration::from_secs(7 * day - 60) && t <= Duration::from_secs(7 * day));
    let t = users.ttl(&long).await.unwrap().unwrap();
    assert!(t > Duration::from_secs(30 * day - 60) && t <= Duration::from_secs(30 * day));
    assert!(users
        .update(&short, &json!({"user": "u1", "step": 2}))
        .await
        .unwrap());
    assert_eq!(
        users
            .get::<serde_json::Value>(&short)
            .await
            .unwrap()
            .unwrap()
            .data["step"],
        2
    );
    assert!(users.touch(&short).await.unwrap());
    assert!(users.destroy(&short).await.unwrap());
    assert!(users
        .get::<serde_json::Value>(&short)
        .await
        .unwrap()
        .is_none());
    assert!(!users.touch(&short).await.unwrap());

    let uploads = Sessions::upload(&b);
    let up = uploads
        .create(&json!({"file": "a.png"}), true)
        .await
        .unwrap();
    let t = uploads.ttl(&up).await.unwrap().unwrap();
    assert!(t > Duration::from_secs(14 * 60) && t <= Duration::from_secs(15 * 60));
    // Kinds do not see each other's sessions.
    assert!(users.get::<serde_json::Value>(&up).await.unwrap().is_none());
}

pub async fn pubsub_channels_and_patterns(b: Backend) {
    let events = Events::new(&b);
    let user = uuid::Uuid::new_v4().simple().to_string();
    let completed = keel::pubsub::channels::jobs_completed(&user);
    let failed = keel::pubsub::channels::jobs_failed(&user);
    let mut direct = events.subscribe(&[&completed], &[]).await.unwrap();
    let pattern = format!("jobs:*:{user}");
    let mut by_pattern = events.subscribe(&[], &[&pattern]).await.unwrap();
    // Subscriptions are live once subscribe returns.
    let n = events
        .publish(&completed, &json!({"jobId": "1"}))
        .await
        .unwrap();
    assert!(n >= 2, "two subscribers received it: {n}");
    events
        .publish(&failed, &json!({"jobId": "2"}))
        .await
        .unwrap();
    let limit = Duration::from_secs(5);
    let m = tokio::time::timeout(limit, direct.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (m.channel.as_str(), &m.data, &m.pattern),
        (completed.as_str(), &json!({"jobId": "1"}), &None)
    );
    let m1 = tokio::time::timeout(limit, by_pattern.next())
        .await
        .unwrap()
        .unwrap();
    let m2 = tokio::time::timeout(limit, by_pattern.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m1.channel, completed);
    assert_eq!(m2.channel, failed);
    assert_eq!(m2.pattern.as_deref(), Some(pattern.as_str()));
    assert_eq!(m2.data, json!({"jobId": "2"}));
    // The direct subscriber never sees the other channel.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), direct.next())
            .await
            .is_err()
    );
    assert_eq!(
        events.subscribe(&[], &[]).await.err().unwrap().field(),
        Some("channels")
    );
}

pub async fn health_ping_and_info(b: Backend) {
    let h = health::ping(&b).await;
    assert_ne!(h.status, Status::Critical, "{h:?}");
    assert!(h.error.is_none());
    assert!(h.latency_ms.unwrap() >= 0.0);
    let c = cache(&b, CachePolicy::default());
    c.set("k", &1, Write::default()).await.unwrap();
    c.get::<u32>("k").await.unwrap();
    let info = health::info(&b).await.unwrap();
    assert!(!info.version.is_empty());
    assert!(info.used_memory > 0);
    assert!(info.keys >= 1);
    assert!(info.keyspace_hits >= 1);
    assert!(info.connected_clients >= 1);
    assert!(["none", "aof", "rdb", "aof+rdb"].contains(&info.persistence.as_str()));
    let json = serde_json::to_value(&info).unwrap();
    for field in [
        "status",
        "memory_percent",
        "hit_rate_percent",
        "ops_per_sec",
        "p99_ms",
        "alerts",
    ] {
        assert!(json.get(field).is_some(), "{field} missing from {json}");
    }
}

/// One-time codes: drawn from the alphabet, right once, wrong counted down to a lock, a
/// resend inside the window refused with the time left, checks rate-limited per address.
pub async fn otp_codes_verify_once_and_lock(b: Backend) {
    use keel::otp::{Otp, OtpPolicy, SendRefused, Verdict};
    let policy = OtpPolicy {
        length: 8,
        alphabet: "ABC123".into(),
        max_attempts: 3,
        resend_after_s: 30,
        verify_policy: None,
        ..OtpPolicy::default()
    };
    policy.validate().unwrap();
    let otp = Otp::new(&b, policy);
    let who = format!("ana-{}@example.com", uuid::Uuid::new_v4().simple());
    assert_eq!(otp.claim_send("login", &who).await.unwrap(), Ok(()));
    match otp.claim_send("login", &who).await.unwrap() {
        Err(SendRefused::Throttled(left)) => {
            assert!(left <= Duration::from_secs(30) && left >= Duration::from_secs(1))
        }
        other => panic!("a resend inside the window: {other:?}"),
    }
    let issued = otp.issue("login", &who).await.unwrap();
    assert_eq!(issued.code.len(), 8);
    assert!(
        issued.code.chars().all(|c| "ABC123".contains(c)),
        "{}",
        issued.code
    );
    let wrong = if issued.code == "AAAAAAAA" {
        "BBBBBBBB"
    } else {
        "AAAAAAAA"
    };
    assert_eq!(
        otp.verify("login", &who, wrong).await.unwrap(),
        Verdict::Invalid { remaining: 2 }
    );
    // The address is case-insensitive; the code is consumed once.
    assert_eq!(
        otp.verify("login", &who.to_uppercase(), &issued.code)
            .await
            .unwrap(),
        Verdict::Valid
    );
    assert_eq!(
        otp.verify("login", &who, &issued.code).await.unwrap(),
        Verdict::Expired,
        "a code is used once"
    );
    // Another purpose is another code.
    assert_eq!(
        otp.verify("reset", &who, &issued.code).await.unwrap(),
        Verdict::Expired
    );
    // Three failures void a fresh code and lock the address.
    let fresh = otp.issue("login", &who).await.unwrap();
    for remaining in [2, 1] {
        assert_eq!(
            otp.verify("login", &who, wrong).await.unwrap(),
            Verdict::Invalid { remaining }
        );
    }
    assert!(matches!(
        otp.verify("login", &who, wrong).await.unwrap(),
        Verdict::Locked { .. }
    ));
    assert!(
        matches!(
            otp.verify("login", &who, &fresh.code).await.unwrap(),
            Verdict::Locked { .. }
        ),
        "locked even for the right code"
    );
    // A new code clears the lock.
    let again = otp.issue("login", &who).await.unwrap();
    assert_eq!(
        otp.verify("login", &who, &again.code).await.unwrap(),
        Verdict::Valid
    );

    // With the verify policy, checks per address are rate-limited.
    let limiter = RateLimiter::new(
        &b,
        vec![RatePolicy::new(
            "otp-verify",
            RateAlgorithm::FixedWindow {
                limit: 2,
                window_ms: 60_000,
            },
        )],
    )
    .unwrap();
    let limited = Otp::new(
        &b,
        OtpPolicy {
            verify_policy: Some("otp-verify".into()),
            ..OtpPolicy::default()
        },
    )
    .with_limiter(limiter);
    for _ in 0..2 {
        assert!(matches!(
            limited.verify("login", &who, "000000").await.unwrap(),
            Verdict::Expired
        ));
    }
    assert!(matches!(
        limited.verify("login", &who, "000000").await.unwrap(),
        Verdict::RateLimited { retry_after_ms } if retry_after_ms > 0
    ));
    assert!(otp.verify("bad:purpose", &who, "1").await.is_err());
}
