//! Queues on two Redis engines in one process: `engine = "keel"` queues on Keel's own engine,
//! the others on BullMQ's, through one `Backend` from the configuration.

use std::time::{Duration, Instant};

use keel::config::Config;
use keel::{handler_fn, JobOptions, JobState, Queue};
use redis::AsyncCommands;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_queue_runs_on_its_engine() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("ke-{}", uuid::Uuid::new_v4().simple());
    let toml = format!(
        "[redis]\nurl = \"{url}\"\nprefix = \"{prefix}\"\n[queues.fast]\nengine = \"keel\"\n[queues.shared]\n"
    );
    let config = Config::parse(&toml, &|_| None).unwrap();
    assert_eq!(
        config.queue_config("fast").engine,
        keel::engines::Engine::Keel
    );
    assert_eq!(
        config.queue_config("shared").engine,
        keel::engines::Engine::Bullmq
    );
    let backend = config.backend().await.unwrap();
    let (fast, shared) = (
        Queue::new(&backend, "fast").unwrap(),
        Queue::new(&backend, "shared").unwrap(),
    );
    let a = fast
        .add("x", json!({"n": 1}), JobOptions::default())
        .await
        .unwrap();
    let b = shared
        .add("x", json!({"n": 2}), JobOptions::default())
        .await
        .unwrap();
    // Where the jobs are: Keel's layout (one hash field a job, under the queue's hash tag)
    // and BullMQ's (a hash a job).
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let stored: Option<String> = conn
        .hget(format!("{prefix}:keel:{{fast}}:jobs"), &a.id)
        .await
        .unwrap();
    assert!(stored.is_some(), "the keel queue's job is in its jobs hash");
    let name: Option<String> = conn
        .hget(format!("{prefix}:shared:{}", b.id), "name")
        .await
        .unwrap();
    assert_eq!(
        name.as_deref(),
        Some("x"),
        "the bullmq queue's job is BullMQ's hash"
    );
    let names = backend.queue_names().await.unwrap();
    assert_eq!(names, vec!["fast".to_string(), "shared".to_string()]);
    let mut workers = Vec::new();
    for q in [&fast, &shared] {
        workers.push(
            q.worker()
                .fallback(handler_fn(|ctx| async move { Ok(ctx.job.data) }))
                .start()
                .await
                .unwrap(),
        );
    }
    let start = Instant::now();
    for (q, id, n) in [(&fast, &a.id, 1), (&shared, &b.id, 2)] {
        loop {
            if q.job_state(id).await.unwrap() == Some(JobState::Completed) {
                let job = q.get_job(id).await.unwrap().unwrap();
                assert_eq!(job.returnvalue, Some(json!({"n": n})));
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "job {id} never completed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for w in workers {
        w.close(Duration::from_secs(5)).await.unwrap();
    }
    fast.obliterate(true).await.unwrap();
    shared.obliterate(true).await.unwrap();
}

#[test]
fn an_unknown_engine_is_refused_naming_the_key() {
    let err = Config::parse("[queues.a]\nengine = \"fast\"\n", &|_| None).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("queues.a.engine"), "{text}");
    assert!(text.contains("bullmq") && text.contains("keel"), "{text}");
}
