//! Keel on a Redis Cluster that speaks only TLS and wants a password (a private local cluster
//! of 3 masters and 3 replicas, its certificate self-signed, so the URL says `#insecure`):
//! both queue engines, the toolkit and pub/sub work through `rediss+cluster://:pw@…`, and a
//! wrong password fails fast with an error that never shows it.

#[path = "support/redis_cluster.rs"]
mod redis_cluster;

use std::time::{Duration, Instant};

use futures::StreamExt;
use keel::backend::RedisSettings;
use keel::{handler_fn, Backend, Cache, Events, JobOptions, JobState, Queue, Write};
use redis_cluster::LocalCluster;
use serde_json::json;

fn settings(url: String) -> RedisSettings {
    RedisSettings {
        url,
        prefix: format!("kt-{}", uuid::Uuid::new_v4().simple()),
        command_timeout: Duration::from_secs(5),
        sharded_pubsub: false,
    }
}

async fn a_job_runs(b: &Backend, name: &str) {
    let q = Queue::new(b, name).unwrap();
    let job = q
        .add("tls", json!({"n": 1}), JobOptions::default())
        .await
        .unwrap();
    let w = q
        .worker()
        .fallback(handler_fn(|ctx| async move { Ok(ctx.job.data) }))
        .start()
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(15);
    while q.job_state(&job.id).await.unwrap() != Some(JobState::Completed) {
        assert!(Instant::now() < until, "{name}: the job never completed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.close(Duration::from_secs(5)).await.unwrap();
    let done = q.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!(done.returnvalue, Some(json!({"n": 1})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keel_runs_on_a_tls_cluster_with_a_password() {
    let cluster = tokio::task::spawn_blocking(|| LocalCluster::start_secure("s3cret-pw"))
        .await
        .unwrap();
    let url = cluster.url();
    assert!(url.starts_with("rediss+cluster://:s3cret-pw@"), "{url}");
    // BullMQ's engine and the toolkit.
    let bullmq = Backend::redis(settings(url.clone())).await.unwrap();
    a_job_runs(&bullmq, "tls-bullmq").await;
    let cache = Cache::new(&bullmq, "tls").unwrap();
    cache
        .set("k", &json!({"v": 1}), Write::default())
        .await
        .unwrap();
    assert_eq!(
        cache.get::<serde_json::Value>("k").await.unwrap(),
        Some(json!({"v": 1}))
    );
    let events = Events::new(&bullmq);
    let mut sub = events.subscribe(&["tls:events"], &[]).await.unwrap();
    events
        .publish("tls:events", &json!({"x": 1}))
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("a message within 5 s")
        .unwrap();
    assert_eq!(m.data, json!({"x": 1}));
    // Keel's engine.
    let native = Backend::native(settings(url.clone())).await.unwrap();
    a_job_runs(&native, "tls-keel").await;
    // A wrong password: refused at once, the error naming no password.
    let wrong = url.replace("s3cret-pw", "not-it");
    let started = Instant::now();
    let err = Backend::redis(settings(wrong))
        .await
        .unwrap_err()
        .to_string();
    assert!(started.elapsed() < Duration::from_secs(10), "{err}");
    assert!(!err.contains("not-it") && !err.contains("s3cret"), "{err}");
    // Plain TCP to a TLS-only cluster: an error, not a hang.
    let plain = format!("redis+cluster://127.0.0.1:{}", cluster.ports[0]);
    let started = Instant::now();
    assert!(Backend::redis(settings(plain)).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(10));
}
