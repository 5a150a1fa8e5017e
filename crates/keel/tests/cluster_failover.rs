//! A master of a Redis Cluster fails over while a queue on Keel's engine is being fed and
//! processed: the queue's master hands its slots to its replica (`CLUSTER FAILOVER` on the
//! replica), the clients follow the new slot map, and every job whose add was answered runs,
//! on both Redis engines,
//! on both Redis engines
//! (a batch taken by a cycle whose reply was lost runs once its lease expires).
//! On a private local cluster (3 masters, 3 replicas), stopped when the test ends.

#[path = "support/redis_cluster.rs"]
mod redis_cluster;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel::backend::RedisSettings;
use keel::{handler_fn, Backend, JobOptions, KeepJobs, Queue};
use redis_cluster::LocalCluster;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_failover_under_keels_engine_loses_no_job() {
    failover(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_failover_under_bullmqs_engine_loses_no_job() {
    failover(false).await;
}

/// One failover test at a time: two clusters beside each other on 2 cores slow the nodes.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The cluster's configuration epoch, as one node sees it (each failover raises it).
fn epoch(c: &LocalCluster) -> String {
    c.cli(c.ports[0], &["cluster", "info"])
        .lines()
        .find_map(|l| l.strip_prefix("cluster_current_epoch:"))
        .unwrap_or("?")
        .trim()
        .to_string()
}

async fn failover(keels_engine: bool) {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = tokio::task::spawn_blocking(LocalCluster::start)
        .await
        .unwrap();
    let epoch_before = epoch(&cluster);
    let settings = RedisSettings {
        url: cluster.url(),
        prefix: "kfo".into(),
        command_timeout: Duration::from_secs(5),
        sharded_pubsub: false,
    };
    let backend = if keels_engine {
        Backend::native(settings).await.unwrap()
    } else {
        Backend::redis(settings).await.unwrap()
    };
    let q = Queue::new(&backend, "orders").unwrap();
    let ran = Arc::new(Mutex::new(HashSet::new()));
    let seen = ran.clone();
    // A cycle whose reply the failover cut off took its jobs under a lease nobody renews: they
    // run again once it expires (at-least-once), here within seconds.
    let worker = q
        .worker()
        .concurrency(20)
        .lock_duration(Duration::from_secs(2))
        .stalled_interval(Duration::from_secs(1))
        .fallback(handler_fn(move |ctx| {
            let seen = seen.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                seen.lock().unwrap().insert(ctx.job.id.clone());
                Ok(json!(null))
            }
        }))
        .start()
        .await
        .unwrap();
    // A producer adds jobs one at a time the whole while, retrying an add that failed (as a
    // caller does): every add that was answered is a job that must run.
    let producer = {
        let q = q.clone();
        tokio::spawn(async move {
            let mut added = Vec::new();
            let mut failures = 0;
            for i in 0..3000 {
                let opts = JobOptions {
                    job_id: Some(format!("o-{i}")),
                    remove_on_complete: Some(KeepJobs::remove_all()),
                    ..Default::default()
                };
                loop {
                    match q.add("order", json!({ "i": i }), opts.clone()).await {
                        Ok(job) => {
                            // The answer is this add's (not another call's).
                            assert_eq!(
                                job.id,
                                format!("o-{i}"),
                                "the add of o-{i} answered {job:?}"
                            );
                            added.push(job.id);
                            break;
                        }
                        Err(_) => {
                            failures += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                if i % 100 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            (added, failures)
        })
    };
    let until = Instant::now() + Duration::from_secs(30);
    while ran.lock().unwrap().len() < 600 {
        assert!(Instant::now() < until, "processing did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every key of the queue shares the tag `{orders}`: its slot is that of "orders".
    let slot = cluster.slot_of("orders");
    let (master, replica) = cluster.master_and_replica(slot);
    let replica = replica.expect("the master has a replica");
    let answer = cluster.cli(replica, &["cluster", "failover"]);
    assert!(
        answer.trim() == "OK",
        "CLUSTER FAILOVER answered {answer:?}"
    );
    let until = Instant::now() + Duration::from_secs(20);
    while cluster.master_and_replica(slot).0 != replica {
        assert!(Instant::now() < until, "the replica did not take over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(master, replica);
    let (added, failures) = producer.await.unwrap();
    assert_eq!(added.len(), 3000);
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let missing: Vec<String> = {
            let ran = ran.lock().unwrap();
            added
                .iter()
                .filter(|id| !ran.contains(*id))
                .cloned()
                .collect()
        };
        if missing.is_empty() {
            break;
        }
        if Instant::now() >= until {
            let mut states = Vec::new();
            for id in &missing {
                states.push((id.clone(), q.job_state(id).await.ok().flatten()));
            }
            let logs = format!(
                "old master {master}:\n{}\nreplica {replica}:\n{}",
                cluster.log_tail(master, 40),
                cluster.log_tail(replica, 40)
            );
            panic!(
                "{} answered adds never ran ({failures} adds failed and were retried): {states:?}, {:?}; \
                 cluster epoch {epoch_before} -> {} (more than one step: a failover besides ours, \
                 which drops unreplicated writes)\n{logs}",
                missing.len(),
                q.counts().await,
                epoch(&cluster)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counts = q.counts().await.unwrap();
    assert_eq!(
        (counts.waiting, counts.active, counts.delayed),
        (0, 0, 0),
        "{counts:?}"
    );
    worker.close(Duration::from_secs(5)).await.unwrap();
    drop(cluster);
}
