//! Redis itself crashing under a running worker: a private `redis-server` with AOF
//! (`appendfsync everysec`) is killed with SIGKILL two seconds into processing 600 jobs and
//! restarted on the same files three seconds later; the jobs in flight at the crash finish
//! only after Redis is back, when their locks have expired (bullmq reports "Missing lock for
//! job X. moveToFinished"). Every job must end completed and run at least once (up to a second
//! of writes is lost, and lost locks are recovered as stalled, so some run twice: counted, not
//! failed), and no job may be dead-lettered: losing a lock is not the job failing.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel::backend::RedisSettings;
use keel::{handler_fn, Backend, JobOptions, JobState, NewJob, Queue};
use serde_json::json;

const JOBS: usize = 600;

/// A private Redis with AOF in `dir`, stopped with SIGKILL on drop.
struct Redis {
    child: Child,
}

impl Redis {
    fn start(port: u16, dir: &std::path::Path) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (see README)");
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(out) = Command::new("redis-cli")
                .args(["-p", &port.to_string(), "ping"])
                .output()
            {
                if String::from_utf8_lossy(&out.stdout).trim() == "PONG" {
                    break;
                }
            }
            assert!(Instant::now() < until, "private redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child }
    }

    fn kill(mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_loses_nothing_and_dead_letters_nothing() {
    redis_killed_mid_run(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_loses_nothing_on_keels_engine() {
    redis_killed_mid_run(true).await;
}

/// The crash, on BullMQ's engine or (`native`) on Keel's.
async fn redis_killed_mid_run(native: bool) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(port, dir.path());
    let settings = RedisSettings {
        url: format!("redis://127.0.0.1:{port}"),
        prefix: "kcrash".into(),
        command_timeout: Duration::from_secs(2),
        sharded_pubsub: false,
    };
    let backend = if native {
        Backend::native(settings).await.unwrap()
    } else {
        Backend::redis(settings).await.unwrap()
    };
    let q = Queue::new(&backend, "crash").unwrap();
    let opts = JobOptions {
        attempts: Some(3),
        ..Default::default()
    };
    let mut ids = Vec::new();
    for chunk in (0..JOBS).collect::<Vec<_>>().chunks(200) {
        let jobs = chunk
            .iter()
            .map(|i| NewJob::new("work", json!({"i": i})).with_opts(opts.clone()))
            .collect();
        ids.extend(q.add_bulk(jobs).await.unwrap().into_iter().map(|j| j.id));
    }
    // Past the AOF's one-second fsync: the jobs themselves survive the crash.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let runs: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let seen = runs.clone();
    // While set, running handlers hold on: the jobs in flight at the crash finish after it.
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let held = down.clone();
    let worker = q
        .worker()
        .concurrency(5)
        .lock_duration(Duration::from_secs(2))
        .stalled_interval(Duration::from_secs(1))
        .fallback(handler_fn(move |ctx| {
            let (seen, held) = (seen.clone(), held.clone());
            async move {
                *seen.lock().unwrap().entry(ctx.job.id.clone()).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(30)).await;
                while held.load(std::sync::atomic::Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(json!({"ok": true}))
            }
        }))
        .start()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = runs.lock().unwrap().len();
    assert!(
        before > 0 && before < JOBS,
        "the crash lands mid-run ({before} started)"
    );
    down.store(true, std::sync::atomic::Ordering::SeqCst);
    redis.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _redis = Redis::start(port, dir.path());
    tokio::time::sleep(Duration::from_millis(300)).await;
    down.store(false, std::sync::atomic::Ordering::SeqCst);

    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match q.counts().await {
            Ok(c) if c.completed as usize == JOBS => break,
            Ok(c) => assert!(Instant::now() < deadline, "not all completed: {c:?}"),
            Err(e) => assert!(Instant::now() < deadline, "Redis not back: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Dead letters are written asynchronously: give a wrongly recorded one time to appear.
    tokio::time::sleep(Duration::from_millis(500)).await;
    worker.close(Duration::from_secs(5)).await.unwrap();

    let c = q.counts().await.unwrap();
    assert_eq!(
        (c.completed as usize, c.failed, c.waiting, c.active),
        (JOBS, 0, 0, 0)
    );
    for id in &ids {
        assert_eq!(
            q.job_state(id).await.unwrap(),
            Some(JobState::Completed),
            "{id}"
        );
    }
    let runs = runs.lock().unwrap().clone();
    let missing = ids.iter().filter(|id| !runs.contains_key(*id)).count();
    assert_eq!(missing, 0, "every job ran");
    let duplicates: u32 = runs.values().map(|n| n - 1).sum();
    let dead = q.dlq().count().await.unwrap();
    eprintln!(
        "Redis crash (native: {native}): {JOBS} jobs completed, {before} had started before the kill, {duplicates} ran twice or more, {dead} dead letters"
    );
    assert_eq!(dead, 0, "no completed job is dead-lettered");
}
