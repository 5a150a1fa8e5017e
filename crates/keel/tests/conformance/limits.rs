//! Queue-wide limits, across all workers: the rate limit and the global concurrency.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel::{handler_fn, Backend, Worker};
use serde_json::json;

use crate::support::*;

pub async fn rate_limit_spaces_jobs(b: Backend) {
    let q = queue(&b, "ratelimit");
    q.set_rate_limit(Some((2, Duration::from_millis(500))))
        .await
        .unwrap();
    q.add_bulk((0..6).map(|i| keel::NewJob::new("r", json!(i))).collect())
        .await
        .unwrap();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let s2 = starts.clone();
    let w = q
        .worker()
        .concurrency(6)
        .fallback(handler_fn(move |_| {
            let s = s2.clone();
            async move {
                s.lock().unwrap().push(Instant::now());
                Ok(json!(null))
            }
        }))
        .start()
        .await
        .unwrap();
    eventually("all ran", Duration::from_secs(15), || async {
        (q.counts().await.unwrap().completed == 6).then_some(())
    })
    .await;
    w.close(Duration::from_secs(5)).await.unwrap();
    let mut s = starts.lock().unwrap().clone();
    s.sort();
    // 6 jobs at 2 per 500 ms need at least two more windows after the first.
    let span = s[5] - s[0];
    assert!(
        span >= Duration::from_millis(900),
        "six jobs ran within {span:?}"
    );
}

/// Two workers of 4 slots each on a queue whose jobs take 60 ms; runs `n` jobs and returns the
/// most that ran at once, and how long they all took from their add.
async fn most_at_once(q: &keel::Queue, n: u64) -> (usize, Duration) {
    let (handler, most) = peak_counting(60);
    let before = q.counts().await.unwrap().completed;
    let started = Instant::now();
    q.add_bulk((0..n).map(|i| keel::NewJob::new("g", json!(i))).collect())
        .await
        .unwrap();
    let mut workers: Vec<Worker> = Vec::new();
    for _ in 0..2 {
        let w = q
            .worker()
            .concurrency(4)
            .fallback(handler.clone())
            .start()
            .await
            .unwrap();
        workers.push(w);
    }
    eventually("all ran", Duration::from_secs(15), || async {
        (q.counts().await.unwrap().completed == before + n).then_some(())
    })
    .await;
    let took = started.elapsed();
    for w in workers {
        w.close(Duration::from_secs(5)).await.unwrap();
    }
    (most.load(Ordering::SeqCst), took)
}

pub async fn global_concurrency_caps_active_jobs_across_workers(b: Backend) {
    let q = queue(&b, "global");
    assert!(matches!(
        q.set_global_concurrency(Some(0)).await,
        Err(keel::Error::InvalidInput { field, .. }) if field == "global_concurrency"
    ));
    q.set_global_concurrency(Some(3)).await.unwrap();
    let (most, took) = most_at_once(&q, 12).await;
    assert_eq!(most, 3, "three at once, never more");
    // 12 jobs of 60 ms, three at a time: four rounds, and a freed slot is taken at once (not
    // after an idle worker's periodic look, a second apart).
    assert!(took < Duration::from_millis(900), "12 jobs took {took:?}");
    q.set_global_concurrency(None).await.unwrap();
    let (most, _) = most_at_once(&q, 16).await;
    assert!(most > 3, "lifted: {most} at most at once");
}
