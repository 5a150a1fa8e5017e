//! The toolkit with Redis going away and coming back. The test starts its own `redis-server` on
//! a spare loopback port (never touching the shared one), stops it, and starts it again.

use std::time::{Duration, Instant};

use futures::StreamExt;
use keel::backend::RedisSettings;
use keel::health::{self, Status};
use keel::ratelimit::DecisionSource;
use keel::{Backend, Cache, CachePolicy, Error, Events, RateLimiter, RatePolicy, Write};

#[path = "support/private_redis.rs"]
mod private_redis;
use private_redis::PrivateRedis;

async fn eventually(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let until = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_fail_closed_and_recovery() {
    let port = PrivateRedis::spare_port();
    let mut redis = PrivateRedis::start(port);
    let b = Backend::redis(RedisSettings {
        url: format!("redis://127.0.0.1:{port}"),
        prefix: "ko".into(),
        command_timeout: Duration::from_secs(1),
        sharded_pubsub: false,
    })
    .await
    .unwrap();
    let rl = RateLimiter::new(
        &b,
        vec![
            RatePolicy::gcra("api", 100, Duration::from_secs(3600)),
            RatePolicy::gcra("login", 5, Duration::from_secs(900)).fail_closed(),
        ],
    )
    .unwrap();
    let cache = Cache::new(&b, "outage")
        .unwrap()
        .with_policy(CachePolicy::default());
    let events = Events::new(&b);
    let mut sub = events
        .subscribe(&["system:maintenance"], &[])
        .await
        .unwrap();

    assert_eq!(
        rl.check("api", "u").await.unwrap().source,
        DecisionSource::Backend
    );
    let v: u32 = cache
        .get_or_compute("k", Write::default(), || async { Ok::<_, Error>(1) })
        .await
        .unwrap();
    assert_eq!(v, 1);

    redis.stop();

    let open = rl.check("api", "u").await.unwrap();
    assert!(open.allowed);
    assert_eq!(open.source, DecisionSource::FailedOpen);
    let closed = rl.check("login", "a@example.com").await.unwrap();
    assert!(!closed.allowed);
    assert_eq!(closed.source, DecisionSource::FailedClosed);
    assert!(closed.retry_after.is_some());
    assert!(closed.headers().iter().any(|(h, _)| *h == "Retry-After"));
    let stats = rl.stats();
    assert_eq!(
        (stats["api"].failed_open, stats["login"].failed_closed),
        (1, 1)
    );

    // The cache computes instead of failing; the plain read reports the outage.
    let v: u32 = cache
        .get_or_compute("k2", Write::default(), || async { Ok::<_, Error>(2) })
        .await
        .unwrap();
    assert_eq!(v, 2);
    assert!(cache.stats().errors >= 1);
    assert_eq!(
        cache.get::<u32>("k").await.unwrap_err().code(),
        "backend-unavailable"
    );
    assert_eq!(health::ping(&b).await.status, Status::Critical);
    assert_eq!(
        health::info(&b).await.unwrap_err().code(),
        "backend-unavailable"
    );

    // Redis comes back (empty: it keeps nothing on disk). Everything recovers by itself.
    let _redis = PrivateRedis::start(port);
    eventually("ping after restart", Duration::from_secs(20), async || {
        health::ping(&b).await.status != Status::Critical
    })
    .await;
    assert_eq!(
        rl.check("api", "u").await.unwrap().source,
        DecisionSource::Backend
    );
    let v: u32 = cache
        .get_or_compute("k", Write::default(), || async { Ok::<_, Error>(3) })
        .await
        .unwrap();
    assert_eq!(v, 3, "recomputed: the restarted Redis is empty");
    assert_eq!(cache.get::<u32>("k").await.unwrap(), Some(3));

    // The subscription reconnected and resubscribed on its own.
    let received = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            events
                .publish("system:maintenance", &serde_json::json!({"at": "now"}))
                .await
                .unwrap();
            if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await
            {
                return m;
            }
        }
    })
    .await
    .expect("the subscription resubscribed after the restart");
    assert_eq!(received.channel, "system:maintenance");
    assert_eq!(received.data["at"], "now");
}
