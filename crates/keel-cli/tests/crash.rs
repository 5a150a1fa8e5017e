//! Crash test: two `keel worker` processes with short locks process 2,000 jobs through an
//! `http` handler (a local receiver that records job ids) while one of them is killed with
//! SIGKILL several times and restarted. Every job must end completed and every id must reach
//! the receiver. Delivery is at least once: a job whose worker died after the POST but before
//! recording completion is recovered as stalled and posted again, so duplicates are allowed;
//! losses are not.
//!
//! The rolling-deploy test kills one of two workers 20 times about 1.5 s apart under 10,000
//! slower jobs with the default stall limit: a job whose worker died under it (even twice) is
//! retried, never failed; only a poison pill that stalls more than the limit fails.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use keel::{JobOptions, NewJob, Queue};
use serde_json::{json, Value};

const JOBS: usize = 2000;

#[derive(Clone, Default)]
struct Seen {
    ids: Arc<Mutex<HashSet<String>>>,
    posts: Arc<Mutex<usize>>,
    delay_ms: u64,
}

async fn hook(State(seen): State<Seen>, Json(body): Json<Value>) -> Json<Value> {
    tokio::time::sleep(Duration::from_millis(seen.delay_ms)).await;
    let id = body["id"].as_str().unwrap_or_default().to_string();
    seen.ids.lock().unwrap().insert(id);
    *seen.posts.lock().unwrap() += 1;
    Json(json!({"ok": true}))
}

fn spawn_worker(config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("--config")
        .arg(config)
        .arg("worker")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("keel binary runs")
}

fn terminate(mut child: Child) {
    // Graceful stop (SIGTERM), then make sure it is gone.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// One crash run: `jobs` jobs through a hook taking `delay_ms`, the victim worker killed
/// `kills` times `every` apart. `queue_extra` is added to the queue's configuration.
struct Run {
    jobs: usize,
    delay_ms: u64,
    kills: usize,
    every: Duration,
    queue_extra: &'static str,
    /// The queue's Redis engine (`bullmq` or `keel`).
    engine: &'static str,
}

fn killed(engine: &'static str) -> Run {
    Run {
        jobs: JOBS,
        delay_ms: 3,
        kills: 3,
        every: Duration::from_millis(700),
        queue_extra: "max_stalled_count = 1000",
        engine,
    }
}

fn rolling(engine: &'static str) -> Run {
    // The default stall limit (no max_stalled_count): 20 kills, 1.5 s apart.
    Run {
        jobs: 10_000,
        delay_ms: 60,
        kills: 20,
        every: Duration::from_millis(1500),
        queue_extra: "",
        engine,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_lose_nothing() {
    crash(killed("bullmq")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_lose_nothing_on_keels_engine() {
    crash(killed("keel")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_deploy_fails_no_job() {
    crash(rolling("bullmq")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_deploy_fails_no_job_on_keels_engine() {
    crash(rolling("keel")).await;
}

async fn crash(run: Run) {
    let Run {
        jobs: job_count,
        delay_ms,
        kills: kill_count,
        every,
        queue_extra,
        engine,
    } = run;
    let seen = Seen {
        delay_ms,
        ..Default::default()
    };
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let prefix = format!("kx-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keel.toml");
    let text = format!(
        r#"
[redis]
url = "redis://127.0.0.1:6379"
prefix = "{prefix}"

[queues.crash]
engine = "{engine}"
concurrency = 20
attempts = 5
backoff = {{ type = "fixed", delay_ms = 100 }}
lock_duration_ms = 1000
stalled_interval_ms = 500
{queue_extra}
remove_on_complete = {{ count = 100000 }}
handler = {{ kind = "http", url = "http://{addr}/hook", timeout_ms = 5000 }}
"#
    );
    std::fs::write(&config, &text).unwrap();

    let backend = keel::config::Config::parse(&text, &|_| None)
        .unwrap()
        .backend()
        .await
        .expect("Redis must be running");
    let q = Queue::new(&backend, "crash").unwrap();
    let opts = JobOptions {
        attempts: Some(5),
        ..Default::default()
    };
    let mut ids = Vec::with_capacity(job_count);
    for chunk in (0..job_count).collect::<Vec<_>>().chunks(500) {
        let jobs = chunk
            .iter()
            .map(|i| NewJob::new("deliver", json!({"n": i})).with_opts(opts.clone()))
            .collect();
        ids.extend(q.add_bulk(jobs).await.unwrap().into_iter().map(|j| j.id));
    }

    let steady = spawn_worker(&config);
    let mut victim = spawn_worker(&config);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(180);
    let mut kills = 0;
    // Kill the victim while jobs flow, restarting it each time.
    while kills < kill_count {
        tokio::time::sleep(every).await;
        victim.kill().expect("SIGKILL");
        victim.wait().unwrap();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
        victim = spawn_worker(&config);
    }
    loop {
        let c = q.counts().await.unwrap();
        if c.completed as usize == job_count || c.failed > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all jobs completed in time: {c:?}, receiver saw {} ids",
            seen.ids.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    terminate(victim);
    terminate(steady);

    let c = q.counts().await.unwrap();
    assert_eq!(
        (c.completed as usize, c.failed, c.waiting, c.active),
        (job_count, 0, 0, 0),
        "every job completes; none fails for its worker dying"
    );
    let seen_ids = seen.ids.lock().unwrap().clone();
    let missing: Vec<_> = ids.iter().filter(|id| !seen_ids.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} ids never reached the receiver: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    // Each recovery is counted on its job (BullMQ's stall counter).
    let (mut stalled, mut most) = (0, 0);
    for page in 1..=job_count.div_ceil(1000) {
        for j in q.list(keel::JobState::Completed, page, 1000).await.unwrap() {
            if j.stalled_counter > 0 {
                stalled += 1;
                most = most.max(j.stalled_counter);
            }
        }
    }
    eprintln!("crash test ({engine}): {stalled} jobs were recovered after a kill, at most {most} times each");
    let posts = *seen.posts.lock().unwrap();
    eprintln!(
        "crash test ({engine}): {job_count} jobs completed after {kills} kills in {:?}; {posts} POSTs ({} duplicates)",
        started.elapsed(),
        posts - job_count
    );
    q.obliterate(true).await.unwrap();
}
