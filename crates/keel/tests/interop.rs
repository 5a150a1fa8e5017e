//! Interop with real Node BullMQ 6 (and 5, which the seed projects pin) on the same Redis:
//! either side adds, either side processes, each sees the other's results and failures; pause
//! and resume from either side lose nothing; on a Redis Cluster too, with the queue named
//! `{queue}` on Node's side as Keel names it there. (Over 600 lines: every interop scenario shares
//! the Node helper and setup above, so they stay in one file.) Needs `node`,
//! `npm install --prefix ../shared/bench/bullmq-peer` (bullmq 6.7.0) and
//! `npm install --prefix crates/keel/tests/interop/bullmq5` (bullmq 5.81.5); `.ci/run` installs
//! both.

#[path = "support/redis_cluster.rs"]
mod redis_cluster;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use keel::backend::RedisSettings;
use keel::{handler_fn, Backend, JobError, JobOptions, JobState, Queue};
use serde_json::{json, Value};
use tokio::process::Command;

fn node_modules(major: u8) -> PathBuf {
    let (dir, install) = match major {
        5 => (
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/bullmq5/node_modules"),
            "crates/keel/tests/interop/bullmq5",
        ),
        _ => (
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/bench/bullmq-peer/node_modules"),
            "../shared/bench/bullmq-peer",
        ),
    };
    assert!(
        dir.join("bullmq").is_dir(),
        "Node BullMQ {major} is not installed: run `npm install --prefix {install}` from the repo root (.ci/run does)"
    );
    dir
}

fn node_v(major: u8, cmd: &str, queue: &str, prefix: &str, arg: Option<&str>) -> Command {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/node.cjs");
    let mut c = Command::new("node");
    c.arg(script).arg(cmd).arg(queue).arg(prefix);
    if let Some(a) = arg {
        c.arg(a);
    }
    c.env("NODE_PATH", node_modules(major))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

async fn run_node(cmd: &str, queue: &str, prefix: &str, arg: Option<&str>) -> Value {
    run_node_v(6, cmd, queue, prefix, arg).await
}

async fn run_node_v(major: u8, cmd: &str, queue: &str, prefix: &str, arg: Option<&str>) -> Value {
    run(node_v(major, cmd, queue, prefix, arg), cmd).await
}

/// The helper on a Redis Cluster (`seeds`: `host:port,…`).
async fn run_node_on(
    seeds: &str,
    major: u8,
    cmd: &str,
    queue: &str,
    prefix: &str,
    arg: Option<&str>,
) -> Value {
    let mut c = node_v(major, cmd, queue, prefix, arg);
    c.env("REDIS_CLUSTER", seeds);
    run(c, cmd).await
}

async fn run(mut c: Command, cmd: &str) -> Value {
    let out = tokio::time::timeout(Duration::from_secs(40), c.output())
        .await
        .expect("node helper timed out")
        .expect("node runs");
    assert!(
        out.status.success(),
        "node {cmd} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("null")).expect("node printed JSON")
}

async fn setup(tag: &str) -> (Backend, Queue, String) {
    let prefix = format!("ki-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let b = Backend::redis(RedisSettings {
        url: "redis://127.0.0.1:6379".into(),
        prefix: prefix.clone(),
        command_timeout: Duration::from_secs(5),
        sharded_pubsub: false,
    })
    .await
    .expect("Redis must be running");
    let q = Queue::new(&b, &format!("interop-{tag}")).unwrap();
    (b, q, prefix)
}

fn one_attempt() -> JobOptions {
    JobOptions {
        attempts: Some(1),
        ..Default::default()
    }
}

async fn wait_state(q: &Queue, id: &str, state: JobState) -> keel::Job {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if q.job_state(id).await.unwrap() == Some(state) {
            return q.get_job(id).await.unwrap().unwrap();
        }
        assert!(Instant::now() < until, "job {id} never reached {state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_adds_keel_processes_node_sees_the_result() {
    let (_b, q, prefix) = setup("n2k").await;
    let id = run_node("add", q.name(), &prefix, None).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let waiter = tokio::spawn({
        let (name, prefix, id) = (q.name().to_string(), prefix.clone(), id.clone());
        async move { run_node("wait", &name, &prefix, Some(&id)).await }
    });
    // Let Node's QueueEvents subscribe before the job can complete.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let w = q
        .worker()
        .fallback(handler_fn(|ctx| async move {
            assert_eq!(ctx.job.name, "from-node");
            Ok(json!({"by": "keel", "got": ctx.job.data}))
        }))
        .start()
        .await
        .unwrap();
    let seen = waiter.await.unwrap();
    w.close(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        seen,
        json!({"state": "completed", "returnvalue": {"by": "keel", "got": {"n": 1}}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keel_adds_node_processes_keel_reads_completed() {
    let (_b, q, prefix) = setup("k2n").await;
    let job = q
        .add("from-keel", json!({"x": 2}), JobOptions::default())
        .await
        .unwrap();
    run_node("work", q.name(), &prefix, Some("2500")).await;
    let done = wait_state(&q, &job.id, JobState::Completed).await;
    assert_eq!(
        done.returnvalue,
        Some(json!({"echo": {"x": 2}, "by": "node"}))
    );
    assert_eq!(done.attempts_made, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_in_node_shows_in_keel() {
    let (_b, q, prefix) = setup("nfail").await;
    let job = q.add("x", json!({}), one_attempt()).await.unwrap();
    run_node("fail", q.name(), &prefix, Some("2500")).await;
    let failed = wait_state(&q, &job.id, JobState::Failed).await;
    assert_eq!(failed.failed_reason.as_deref(), Some("node says no"));
    assert_eq!(failed.attempts_made, 1);
    assert!(!failed.stacktrace.is_empty(), "Node stores its stack trace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_in_keel_shows_in_node() {
    let (_b, q, prefix) = setup("kfail").await;
    let id = run_node("add", q.name(), &prefix, None).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let w = q
        .worker()
        .fallback(handler_fn(|_| async {
            Err(JobError::unrecoverable("keel says no"))
        }))
        .start()
        .await
        .unwrap();
    wait_state(&q, &id, JobState::Failed).await;
    w.close(Duration::from_secs(5)).await.unwrap();
    let seen = run_node("get", q.name(), &prefix, Some(&id)).await;
    assert_eq!(seen["state"], json!("failed"));
    assert_eq!(seen["failedReason"], json!("keel says no"));
    assert_eq!(seen["attemptsMade"], json!(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keel_writes_the_meta_version_node_reads() {
    let (_b, q, prefix) = setup("version").await;
    q.add("x", json!({}), JobOptions::default()).await.unwrap();
    // Read the meta hash before any Node Queue touches it (Node's own constructor rewrites it).
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let stored: Option<String> = redis::cmd("HGET")
        .arg(format!("{prefix}:{}:meta", q.name()))
        .arg("version")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some(keel_redis::META_VERSION));
    let v = run_node("version", q.name(), &prefix, None).await;
    assert!(v["version"].is_string(), "Node's getVersion() answers: {v}");
}

/// Node pauses, Keel adds, Node resumes: with BullMQ 5 (whose resume renames `paused` over
/// `wait`) and 6, every job Keel added keeps its state and runs.
async fn node_pause_keel_add_node_resume(major: u8) {
    let (_b, q, prefix) = setup(&format!("pause{major}")).await;
    let node_ids = run_node_v(major, "addn", q.name(), &prefix, Some("1")).await["ids"].clone();
    let mut ids: Vec<String> = vec![node_ids[0].as_str().unwrap().to_string()];
    for i in 0..2 {
        ids.push(
            q.add("before", json!({"i": i}), JobOptions::default())
                .await
                .unwrap()
                .id,
        );
    }
    assert_eq!(
        run_node_v(major, "pause", q.name(), &prefix, None).await["paused"],
        true
    );
    for i in 0..2 {
        ids.push(
            q.add("during", json!({"i": i}), JobOptions::default())
                .await
                .unwrap()
                .id,
        );
    }
    let lifo = JobOptions {
        lifo: true,
        ..Default::default()
    };
    ids.push(q.add("during-lifo", json!({}), lifo).await.unwrap().id);
    let during = run_node_v(major, "addn", q.name(), &prefix, Some("1")).await["ids"].clone();
    ids.push(during[0].as_str().unwrap().to_string());
    // While paused, Keel's counts and listing agree.
    let c = q.counts().await.unwrap();
    assert!(c.paused);
    assert_eq!(c.waiting as usize, ids.len(), "{c:?}");
    let listed = q.list(JobState::Waiting, 1, 100).await.unwrap();
    assert_eq!(
        listed.len(),
        ids.len(),
        "keel jobs lists what keel queues counts"
    );
    for id in &ids {
        assert_eq!(
            q.job_state(id).await.unwrap(),
            Some(JobState::Waiting),
            "{id}"
        );
    }
    assert_eq!(
        run_node_v(major, "resume", q.name(), &prefix, None).await["paused"],
        false
    );
    let counts = run_node_v(major, "counts", q.name(), &prefix, None).await;
    assert_eq!(
        counts["wait"].as_u64().unwrap() + counts["paused"].as_u64().unwrap_or(0),
        ids.len() as u64,
        "Node sees every job after its resume: {counts}"
    );
    let w = q
        .worker()
        .fallback(handler_fn(|_| async { Ok(json!("ok")) }))
        .start()
        .await
        .unwrap();
    for id in &ids {
        wait_state(&q, id, JobState::Completed).await;
    }
    w.close(Duration::from_secs(5)).await.unwrap();
}

/// Keel pauses, a Node producer adds, Keel adds, Node resumes (and the other way round).
async fn keel_pause_node_add_node_resume(major: u8) {
    let (_b, q, prefix) = setup(&format!("kpause{major}")).await;
    // A Node Queue on the queue first (its constructor writes the meta version).
    let mut ids: Vec<String> = run_node_v(major, "addn", q.name(), &prefix, Some("2")).await["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    ids.push(
        q.add("before", json!({}), JobOptions::default())
            .await
            .unwrap()
            .id,
    );
    q.pause().await.unwrap();
    for v in run_node_v(major, "addn", q.name(), &prefix, Some("2")).await["ids"]
        .as_array()
        .unwrap()
    {
        ids.push(v.as_str().unwrap().to_string());
    }
    ids.push(
        q.add("during", json!({}), JobOptions::default())
            .await
            .unwrap()
            .id,
    );
    assert_eq!(q.counts().await.unwrap().waiting as usize, ids.len());
    assert_eq!(
        run_node_v(major, "resume", q.name(), &prefix, None).await["paused"],
        false
    );
    // Pause and resume once more, from Keel, with Node jobs waiting.
    q.pause().await.unwrap();
    ids.push(
        q.add("again", json!({}), JobOptions::default())
            .await
            .unwrap()
            .id,
    );
    q.resume().await.unwrap();
    let w = q
        .worker()
        .fallback(handler_fn(|_| async { Ok(json!("ok")) }))
        .start()
        .await
        .unwrap();
    for id in &ids {
        wait_state(&q, id, JobState::Completed).await;
    }
    w.close(Duration::from_secs(5)).await.unwrap();
    let c = q.counts().await.unwrap();
    assert_eq!((c.completed as usize, c.waiting), (ids.len(), 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bullmq5_pause_then_keel_adds_then_resume_loses_nothing() {
    node_pause_keel_add_node_resume(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bullmq6_pause_then_keel_adds_then_resume_loses_nothing() {
    node_pause_keel_add_node_resume(6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keel_pause_beside_bullmq5_loses_nothing() {
    keel_pause_node_add_node_resume(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keel_pause_beside_bullmq6_loses_nothing() {
    keel_pause_node_add_node_resume(6).await;
}

/// A jittered backoff is stored in BullMQ's own field, so a Node worker retries such a job
/// (it used to be left active under a Keel-only custom type), and the stored options read
/// back with their jitter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitter_is_stored_the_bullmq_way_and_node_retries_it() {
    let (_b, q, prefix) = setup("jitter").await;
    let opts = |delay_ms| JobOptions {
        attempts: Some(2),
        delay_ms,
        backoff: Some(keel::Backoff::exponential(50).with_jitter(0.5)),
        ..Default::default()
    };
    let standard = q.add("x", json!({}), opts(None)).await.unwrap();
    let delayed = q.add("x", json!({}), opts(Some(1))).await.unwrap();
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    for id in [&standard.id, &delayed.id] {
        let raw: String = redis::cmd("HGET")
            .arg(format!("{prefix}:{}:{id}", q.name()))
            .arg("opts")
            .query_async(&mut c)
            .await
            .unwrap();
        let stored: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(
            stored["backoff"],
            json!({"type": "exponential", "delay": 50, "jitter": 0.5}),
            "{raw}"
        );
        assert_eq!(stored["attempts"], 2);
    }
    // A Node worker that always fails: both jobs use their two attempts and end failed.
    run_node("fail", q.name(), &prefix, Some("3000")).await;
    for id in [&standard.id, &delayed.id] {
        let j = wait_state(&q, id, JobState::Failed).await;
        assert_eq!(j.attempts_made, 2, "{id} was retried by Node");
        assert_eq!(j.opts.backoff.unwrap().jitter, 0.5);
    }
}

/// Node's `Queue.getWorkers()` (what Bull Board lists) finds Keel's worker by its connection
/// name, and a DLQ leaves no key in Redis until it holds an entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sees_keel_workers_and_dlqs_appear_only_when_written() {
    let (_b, q, prefix) = setup("workers").await;
    let job = q.add("x", json!({}), one_attempt()).await.unwrap();
    let w = q
        .worker()
        .name("keel-w1")
        .fallback(handler_fn(|ctx| async move {
            if ctx.job.name == "x" {
                Ok(json!("ok"))
            } else {
                Err(JobError::retry("no"))
            }
        }))
        .start()
        .await
        .unwrap();
    wait_state(&q, &job.id, JobState::Completed).await;
    let seen = run_node("workers", q.name(), &prefix, None).await;
    assert_eq!(seen["workers"].as_array().map(Vec::len), Some(1), "{seen}");
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let dlq_meta = format!("{prefix}:dlq-{}:meta", q.name());
    // The reconciler and counts ran over the DLQ: still nothing written.
    assert_eq!(q.dlq().count().await.unwrap(), 0);
    let exists: bool = redis::cmd("EXISTS")
        .arg(&dlq_meta)
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(!exists, "an empty DLQ leaves no meta key");
    let bad = q
        .add(
            "y",
            json!({}),
            JobOptions {
                attempts: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    wait_state(&q, &bad.id, JobState::Failed).await;
    let until = Instant::now() + Duration::from_secs(10);
    while q.dlq().count().await.unwrap() == 0 {
        assert!(Instant::now() < until, "the entry is written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let exists: bool = redis::cmd("EXISTS")
        .arg(&dlq_meta)
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(exists);
    w.close(Duration::from_secs(5)).await.unwrap();
}

/// A Node-produced job's jitter is read (bullmq-official's parser drops it) and applied by
/// Keel's worker: its retries wait a jittered backoff and the job ends completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keel_keeps_and_applies_the_jitter_of_node_jobs() {
    let (_b, q, prefix) = setup("njitter").await;
    let id = run_node("addjitter", q.name(), &prefix, None).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let job = q.get_job(&id).await.unwrap().unwrap();
    assert_eq!(
        job.opts.backoff,
        Some(keel::Backoff::exponential(40).with_jitter(0.5))
    );
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{prefix}:{}:{id}", q.name());
    let w = q
        .worker()
        .fallback(handler_fn(|ctx| async move {
            if ctx.job.attempts_made < 2 {
                Err(JobError::retry("not yet"))
            } else {
                Ok(json!("third time"))
            }
        }))
        .start()
        .await
        .unwrap();
    // The first retry waits 40 ms less up to half: within [20, 40), never the plain 40 (should
    // the poll miss it, the second waits within [40, 80), never the plain 80).
    let until = Instant::now() + Duration::from_secs(10);
    let delay: u64 = loop {
        let d: Option<String> = redis::cmd("HGET")
            .arg(&key)
            .arg("delay")
            .query_async(&mut c)
            .await
            .unwrap();
        match d.and_then(|d| d.parse().ok()) {
            Some(d) if d > 0 => break d,
            _ => {}
        }
        assert!(Instant::now() < until, "no retry delay was written");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    assert!(
        (20..80).contains(&delay) && delay != 40,
        "jittered delay {delay}"
    );
    let done = wait_state(&q, &id, JobState::Completed).await;
    w.close(Duration::from_secs(5)).await.unwrap();
    assert_eq!(done.attempts_made, 3);
}

/// The configuration is the source of truth for a queue's rate limit at start: one that is no
/// longer configured is cleared from the queue's meta (where Node workers read it too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_removed_from_the_config_is_cleared_at_start() {
    let prefix = format!("ki-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let b = Backend::redis(RedisSettings {
        url: "redis://127.0.0.1:6379".into(),
        prefix: prefix.clone(),
        command_timeout: Duration::from_secs(5),
        sharded_pubsub: false,
    })
    .await
    .unwrap();
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let meta = format!("{prefix}:limited:meta");
    let limited = "[queues.limited]\nhandler = { kind = \"log\" }\nrate_limit = { max = 5, duration_ms = 1000 }\n";
    let unlimited = "[queues.limited]\nhandler = { kind = \"log\" }\n";
    for (text, expect) in [(limited, Some("5".to_string())), (unlimited, None)] {
        let config = keel::config::Config::parse(text, &|_| None).unwrap();
        let workers = keel::runner::start_workers(
            &config,
            &b,
            &["limited".into()],
            &keel::handlers::Builtin,
            None,
        )
        .await
        .unwrap();
        let max: Option<String> = redis::cmd("HGET")
            .arg(&meta)
            .arg("max")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(max, expect, "{text}");
        keel::runner::close_all(workers, Duration::from_secs(5))
            .await
            .unwrap();
    }
}

/// On a local Redis Cluster (3 masters, 3 replicas): Node BullMQ (ioredis' Cluster client,
/// queue `{name}`) and Keel on BullMQ's engine share a queue both ways, and count it alike.
async fn shares_a_queue_on_a_cluster(major: u8) {
    let cluster = tokio::task::spawn_blocking(redis_cluster::LocalCluster::shared)
        .await
        .unwrap();
    let seeds = cluster
        .ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let prefix = format!("kic-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let b = Backend::redis(RedisSettings {
        url: cluster.url(),
        prefix: prefix.clone(),
        command_timeout: Duration::from_secs(5),
        sharded_pubsub: false,
    })
    .await
    .expect("the cluster answers");
    let q = Queue::new(&b, &format!("interop-c{major}")).unwrap();
    let tagged = format!("{{{}}}", q.name());
    // Node adds, Keel processes, Node reads the result.
    let from_node = run_node_on(&seeds, major, "add", &tagged, &prefix, None).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let w = q
        .worker()
        .fallback(handler_fn(|ctx| async move {
            Ok(json!({"by": "keel", "got": ctx.job.data}))
        }))
        .start()
        .await
        .unwrap();
    wait_state(&q, &from_node, JobState::Completed).await;
    w.close(Duration::from_secs(5)).await.unwrap();
    let seen = run_node_on(&seeds, major, "get", &tagged, &prefix, Some(&from_node)).await;
    assert_eq!(seen["state"], "completed", "{seen}");
    assert_eq!(seen["returnvalue"], json!({"by": "keel", "got": {"n": 1}}));
    // Keel adds, Node processes, Keel reads the result.
    let job = q
        .add("from-keel", json!({"x": 2}), one_attempt())
        .await
        .unwrap();
    run_node_on(&seeds, major, "work", &tagged, &prefix, Some("2500")).await;
    let done = wait_state(&q, &job.id, JobState::Completed).await;
    assert_eq!(
        done.returnvalue,
        Some(json!({"echo": {"x": 2}, "by": "node"}))
    );
    let counts = run_node_on(&seeds, major, "counts", &tagged, &prefix, None).await;
    assert_eq!(counts["completed"], 2, "{counts}");
    assert_eq!(q.counts().await.unwrap().completed, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_bullmq6_and_keel_share_a_queue_on_a_cluster() {
    shares_a_queue_on_a_cluster(6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_bullmq5_and_keel_share_a_queue_on_a_cluster() {
    shares_a_queue_on_a_cluster(5).await;
}
