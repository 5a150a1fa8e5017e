//! Helpers shared by the conformance tests.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel::backend::RedisSettings;
use keel::{handler_fn, Backend, Processor, Queue};

/// A key space no other test uses, for the toolkit's keys.
pub fn unique_keys() -> keel::Keys {
    keel::Keys::new(&format!("kc-{}", uuid::Uuid::new_v4().simple()), "test").unwrap()
}

/// A fresh memory backend.
pub fn memory() -> Backend {
    Backend::memory().with_keys(unique_keys())
}

/// A Redis backend with a prefix no other test uses.
pub async fn redis() -> Backend {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    Backend::redis(RedisSettings {
        url,
        prefix: format!("kc-{}", uuid::Uuid::new_v4().simple()),
        command_timeout: Duration::from_secs(5),
        sharded_pubsub: false,
    })
    .await
    .expect("Redis must be running for the conformance suite (see README)")
    .with_keys(unique_keys())
}

/// Keel's own Redis engine with a prefix no other test uses (the toolkit on the same Redis).
pub async fn native() -> Backend {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    Backend::native(RedisSettings {
        url,
        prefix: format!("kn-{}", uuid::Uuid::new_v4().simple()),
        command_timeout: Duration::from_secs(5),
        sharded_pubsub: false,
    })
    .await
    .expect("Redis must be running for the conformance suite (see README)")
    .with_keys(unique_keys())
}

/// The suite's local Redis Cluster (3 masters, 3 replicas; started on first use, stopped when
/// the test process ends), under a prefix no other test uses.
async fn cluster_settings(prefix: &str) -> RedisSettings {
    let url = tokio::task::spawn_blocking(|| crate::redis_cluster::LocalCluster::shared().url())
        .await
        .unwrap();
    RedisSettings {
        url,
        prefix: format!("{prefix}-{}", uuid::Uuid::new_v4().simple()),
        command_timeout: Duration::from_secs(5),
        sharded_pubsub: false,
    }
}

/// Keel's own engine and the toolkit on the suite's local Redis Cluster.
pub async fn cluster() -> Backend {
    Backend::native(cluster_settings("kx").await)
        .await
        .expect("the local Redis Cluster must answer")
        .with_keys(unique_keys())
}

/// BullMQ's engine and the toolkit on the suite's local Redis Cluster.
pub async fn cluster_bullmq() -> Backend {
    Backend::redis(cluster_settings("kb").await)
        .await
        .expect("the local Redis Cluster must answer")
        .with_keys(unique_keys())
}

/// Keel's own engine with every queue spread over 3 partitions (`partitions = 3`), on one
/// Redis.
pub async fn partitioned() -> Backend {
    native().await.with_every_queue_partitioned(3)
}

/// Keel's own engine on the suite's local Redis Cluster with every queue spread over 3
/// partitions — one a master.
pub async fn cluster_partitioned() -> Backend {
    cluster().await.with_every_queue_partitioned(3)
}

/// A queue with a unique name.
pub fn queue(b: &Backend, base: &str) -> Queue {
    Queue::new(
        b,
        &format!("{base}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
    )
    .unwrap()
}

/// Polls `check` until it returns `Some`, failing after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until job `id` of `q` is in `state`.
pub async fn wait_state(q: &Queue, id: &str, state: keel::JobState) -> keel::Job {
    eventually(
        &format!("job {id} {state}"),
        Duration::from_secs(15),
        || async {
            match q.job_state(id).await.unwrap() {
                Some(s) if s == state => q.get_job(id).await.unwrap(),
                _ => None,
            }
        },
    )
    .await
}

/// Short lock settings so Redis stall recovery happens within a test.
pub const SHORT_LOCK: Duration = Duration::from_millis(1000);
pub const SHORT_STALL_CHECK: Duration = Duration::from_millis(500);

/// A handler whose jobs take `ms` each, and the most of them that ran at once (across every
/// worker it is given to).
pub fn peak_counting(ms: u64) -> (Processor, Arc<AtomicUsize>) {
    let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let p = peak.clone();
    let handler = handler_fn(move |_| {
        let (now, peak) = (now.clone(), p.clone());
        async move {
            let at = now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(at, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            Ok(serde_json::Value::Null)
        }
    });
    (handler, peak)
}
