//! One queue over several partitions (`keel::partitions`): jobs spread evenly over the
//! partitions (on a Redis Cluster, one a master), the queue is seen as one, what is split
//! among partitions is refused below one a partition, and a split rate limit still holds.
//! The conformance suite runs the queue behaviours on partitioned queues too
//! (`partitioned::`, `cluster_partitioned::`); this file checks what only partitions have.

#[path = "support/redis_cluster.rs"]
mod redis_cluster;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel::backend::RedisSettings;
use keel::partitions::{partition_names, slot_of};
use keel::{handler_fn, Backend, JobOptions, JobState, NewJob, Queue};
use serde_json::json;

fn settings(url: String) -> RedisSettings {
    RedisSettings {
        url,
        prefix: format!("kp-{}", uuid::Uuid::new_v4().simple()),
        command_timeout: Duration::from_secs(5),
        sharded_pubsub: false,
    }
}

fn local() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn name(base: &str) -> String {
    format!("{base}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// `n` jobs added one by one and in bulk land evenly on the queue's 3 partitions, and every
/// call sees the queue as one: counts, the merged listing, lookups, names, and handlers.
async fn spread_and_seen_as_one(url: String) {
    let raw = Backend::native(settings(url)).await.unwrap();
    let q_name = name("spread");
    let parted = raw
        .clone()
        .with_partitions(BTreeMap::from([(q_name.clone(), 3)]));
    let q = Queue::new(&parted, &q_name).unwrap();
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(
            q.add("one", json!(i), JobOptions::default())
                .await
                .unwrap()
                .id,
        );
    }
    let bulk = q
        .add_bulk((0..18).map(|i| NewJob::new("bulk", json!(i))).collect())
        .await
        .unwrap();
    assert!(
        bulk.iter().all(|j| j.queue == q_name),
        "jobs name the queue"
    );
    ids.extend(bulk.into_iter().map(|j| j.id));
    // Each partition is a queue of the engine below: 10 jobs each, in turn.
    for part in partition_names(&q_name, 3) {
        let below = Queue::new(&raw, &part).unwrap();
        assert_eq!(below.counts().await.unwrap().waiting, 10, "{part}");
    }
    assert_eq!(q.counts().await.unwrap().waiting, 30);
    let newest: Vec<String> = q
        .list(JobState::Waiting, 1, 30)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(newest, ids.iter().rev().cloned().collect::<Vec<_>>());
    for id in &ids {
        let job = q.get_job(id).await.unwrap().expect("found by id");
        assert_eq!(job.queue, q_name);
    }
    let names = parted.queue_names().await.unwrap();
    assert!(names.contains(&q_name), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("~p")), "{names:?}");
    // One worker takes from every partition; handlers see the queue's name.
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let s2 = seen.clone();
    let qn = q_name.clone();
    let w = q
        .worker()
        .concurrency(3)
        .fallback(handler_fn(move |ctx| {
            assert_eq!(ctx.job.queue, qn);
            s2.lock().unwrap().insert(ctx.job.id.clone());
            async { Ok(json!(null)) }
        }))
        .start()
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(15);
    while q.counts().await.unwrap().completed < 30 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.close(Duration::from_secs(5)).await.unwrap();
    assert_eq!(seen.lock().unwrap().len(), 30);
    assert_eq!(q.counts().await.unwrap().completed, 30);
    q.obliterate(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_spread_evenly_and_the_queue_is_seen_as_one() {
    spread_and_seen_as_one(local()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_each_partition_lives_on_its_own_master() {
    let cluster = tokio::task::spawn_blocking(redis_cluster::LocalCluster::shared)
        .await
        .unwrap();
    // Which master serves each partition's slot: all three differ.
    let q_name = name("masters");
    let mut owners = BTreeSet::new();
    for part in partition_names(&q_name, 3) {
        let slot = slot_of(&part);
        let key = format!("{{{part}}}:x");
        assert_eq!(cluster.slot_of(&key), slot, "Redis agrees on {part}'s slot");
        owners.insert(cluster.master_and_replica(slot).0);
    }
    assert_eq!(owners.len(), 3, "three partitions on three masters");
    spread_and_seen_as_one(cluster.url()).await;
}

/// A configuration whose queues run on BullMQ's engine but for one partitioned queue on
/// Keel's: the partitions are Keel's engine's queues (the engine is chosen by the queue's
/// name, not a partition's), and the BullMQ queue beside it stays BullMQ's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_run_on_the_queues_engine_beside_bullmq_queues() {
    let prefix = format!("kpe{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let (orders, mail) = (name("orders"), name("mail"));
    let text = format!(
        "[redis]\nurl = \"{}\"\nprefix = \"{prefix}\"\n\n[queues.{orders}]\nengine = \"keel\"\npartitions = 3\n\n[queues.{mail}]\n",
        local()
    );
    let config = keel::config::Config::parse(&text, &|_| None).unwrap();
    let b = config.backend().await.unwrap();
    let q = config.queue(&b, &orders).unwrap();
    for i in 0..6 {
        q.add("o", json!(i), JobOptions::default()).await.unwrap();
    }
    config
        .queue(&b, &mail)
        .unwrap()
        .add("m", json!(0), JobOptions::default())
        .await
        .unwrap();
    // Seen through Keel's engine alone: 2 jobs in each partition.
    let native = Backend::native(RedisSettings {
        prefix: prefix.clone(),
        ..settings(local())
    })
    .await
    .unwrap();
    for part in partition_names(&orders, 3) {
        let below = Queue::new(&native, &part).unwrap();
        assert_eq!(below.counts().await.unwrap().waiting, 2, "{part}");
    }
    // And the other queue through BullMQ's engine alone.
    let bullmq = Backend::redis(RedisSettings {
        prefix,
        ..settings(local())
    })
    .await
    .unwrap();
    let m = Queue::new(&bullmq, &mail).unwrap();
    assert_eq!(m.counts().await.unwrap().waiting, 1);
    let names = b.queue_names().await.unwrap();
    assert!(
        names.contains(&orders) && names.contains(&mail),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.contains("~p")), "{names:?}");
    q.obliterate(true).await.unwrap();
    m.obliterate(true).await.unwrap();
}

/// What is split among partitions must give each at least one: a worker's concurrency, the
/// rate limit and the global concurrency; the error names the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splits_below_one_a_partition_are_refused_naming_the_field() {
    let q_name = name("split");
    let b = Backend::memory().with_partitions(BTreeMap::from([(q_name.clone(), 3)]));
    let q = Queue::new(&b, &q_name).unwrap();
    let field = |e: keel::Error| match e {
        keel::Error::InvalidInput { field, .. } => field,
        other => panic!("not invalid input: {other}"),
    };
    let err = q
        .worker()
        .concurrency(2)
        .fallback(handler_fn(|_| async { Ok(json!(null)) }))
        .start()
        .await
        .err()
        .expect("concurrency 2 on 3 partitions");
    assert_eq!(field(err), "concurrency");
    let err = q
        .set_rate_limit(Some((2, Duration::from_secs(1))))
        .await
        .unwrap_err();
    assert_eq!(field(err), "rate_limit.max");
    let err = q.set_global_concurrency(Some(2)).await.unwrap_err();
    assert_eq!(field(err), "global_concurrency");
    q.set_rate_limit(Some((3, Duration::from_secs(1))))
        .await
        .unwrap();
    q.set_global_concurrency(Some(3)).await.unwrap();
}

/// A rate limit of 3 per 600 ms on 3 partitions admits 1 per 600 ms in each: 9 jobs take at
/// least two more windows after the first, across partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_rate_limit_still_spaces_the_queue() {
    let q_name = name("ratelimit");
    let b = Backend::native(settings(local()))
        .await
        .unwrap()
        .with_partitions(BTreeMap::from([(q_name.clone(), 3)]));
    let q = Queue::new(&b, &q_name).unwrap();
    q.set_rate_limit(Some((3, Duration::from_millis(600))))
        .await
        .unwrap();
    q.add_bulk((0..9).map(|i| NewJob::new("r", json!(i))).collect())
        .await
        .unwrap();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let s2 = starts.clone();
    let w = q
        .worker()
        .concurrency(9)
        .fallback(handler_fn(move |_| {
            s2.lock().unwrap().push(Instant::now());
            async { Ok(json!(null)) }
        }))
        .start()
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(15);
    while q.counts().await.unwrap().completed < 9 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.close(Duration::from_secs(5)).await.unwrap();
    let mut s = starts.lock().unwrap().clone();
    assert_eq!(s.len(), 9);
    s.sort();
    let span = s[8] - s[0];
    assert!(
        span >= Duration::from_millis(1100),
        "nine jobs ran within {span:?}"
    );
    q.obliterate(true).await.unwrap();
}
