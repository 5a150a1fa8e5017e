//! Stampede protection across processes: two OS processes (this test binary run again as
//! children) each fire 25 concurrent `get_or_compute` calls at one cold key on the shared Redis,
//! at the same instant. The computation must run once in total.

use std::process::Command;
use std::time::Duration;

use keel::backend::RedisSettings;
use keel::{Backend, Cache, CachePolicy, Counters, Error, Keys, Write};

const SPEC: &str = "KEEL_STAMPEDE_SPEC";

async fn backend(prefix: &str) -> Backend {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    Backend::redis(RedisSettings {
        url,
        prefix: "kp".into(),
        command_timeout: Duration::from_secs(5),
        sharded_pubsub: false,
    })
    .await
    .expect("Redis must be running (see README)")
    .with_keys(Keys::new(prefix, "test").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_callers_in_two_processes_compute_once() {
    let prefix = format!("kp-{}", uuid::Uuid::new_v4().simple());
    let start_at = keel::now_ms() + 1500;
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            Command::new(&exe)
                .args(["--exact", "stampede_child", "--ignored", "--nocapture"])
                .env(SPEC, format!("{prefix} {start_at}"))
                .spawn()
                .expect("re-run the test binary")
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success(), "a child process failed");
    }
    let b = backend(&prefix).await;
    let counters = Counters::new(&b);
    assert_eq!(counters.get("computations").await.unwrap(), 1);
    assert_eq!(
        counters.get("answers").await.unwrap(),
        50,
        "every caller got the value"
    );
}

/// One of the two processes; does nothing unless started by the test above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by fifty_callers_in_two_processes_compute_once"]
async fn stampede_child() {
    let Ok(spec) = std::env::var(SPEC) else {
        return;
    };
    let (prefix, at) = spec.split_once(' ').unwrap();
    let at: u64 = at.parse().unwrap();
    let b = backend(prefix).await;
    let cache = Cache::new(&b, "shared")
        .unwrap()
        .with_policy(CachePolicy::ttl(Duration::from_secs(60)));
    let counters = Counters::new(&b);
    tokio::time::sleep(Duration::from_millis(at.saturating_sub(keel::now_ms()))).await;
    let mut tasks = Vec::new();
    for _ in 0..25 {
        let (cache, counters) = (cache.clone(), counters.clone());
        tasks.push(tokio::spawn(async move {
            let v: String = cache
                .get_or_compute("report", Write::default(), || async {
                    counters.incr("computations", 1, None).await?;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Ok::<_, Error>("the expensive answer".to_string())
                })
                .await
                .unwrap();
            assert_eq!(v, "the expensive answer");
            counters.incr("answers", 1, None).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}
