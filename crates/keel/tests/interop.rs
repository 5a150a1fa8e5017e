//! Interop with real Node BullMQ 6 on the same Redis: either side adds, either side processes,
//! each sees the other's results and failures. Needs `node` and
//! `npm install --prefix ../shared/bench/bullmq-peer` (bullmq 6.7.0); `.ci/run` installs it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use keel::backend::RedisSettings;
use keel::{handler_fn, Backend, JobError, JobOptions, JobState, Queue};
use serde_json::{json, Value};
use tokio::process::Command;

fn node_modules() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/bench/bullmq-peer/node_modules");
    assert!(
        dir.join("bullmq").is_dir(),
        "Node BullMQ is not installed: run `npm install --prefix ../shared/bench/bullmq-peer` from the repo root (.ci/run does)"
    );
    dir
}

fn node(cmd: &str, queue: &str, prefix: &str, arg: Option<&str>) -> Command {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/node.cjs");
    let mut c = Command::new("node");
    c.arg(script).arg(cmd).arg(queue).arg(prefix);
    if let Some(a) = arg {
        c.arg(a);
    }
    c.env("NODE_PATH", node_modules())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

async fn run_node(cmd: &str, queue: &str, prefix: &str, arg: Option<&str>) -> Value {
    let out = tokio::time::timeout(
        Duration::from_secs(40),
        node(cmd, queue, prefix, arg).output(),
    )
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
    })
    .await
    .expect("Redis must be running");
    let q = Queue::new(&b, &format!("interop-{tag}")).unwrap();
    (b, q, prefix)
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
    let job = q
        .add(
            "x",
            json!({}),
            JobOptions {
                attempts: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
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
