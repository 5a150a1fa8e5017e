//! Worker behaviours.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use keel::{handler_fn, Backend, Backoff, JobError, JobOptions, JobState, QueueEvent};
use serde_json::json;

use crate::support::*;

pub async fn fifo_lifo_priority_order(b: Backend) {
    let q = queue(&b, "order");
    let a = q
        .add("o", json!("a"), JobOptions::default())
        .await
        .unwrap()
        .id;
    let bb = q
        .add("o", json!("b"), JobOptions::default())
        .await
        .unwrap()
        .id;
    let c = q
        .add(
            "o",
            json!("c"),
            JobOptions {
                lifo: true,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .id;
    let p2 = q
        .add(
            "o",
            json!("p2"),
            JobOptions {
                priority: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .id;
    let p1 = q
        .add(
            "o",
            json!("p1"),
            JobOptions {
                priority: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .id;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let w = q
        .worker()
        .concurrency(1)
        .fallback(handler_fn(move |ctx| {
            let s = s2.clone();
            async move {
                s.lock().unwrap().push(ctx.job.id.clone());
                Ok(json!(null))
            }
        }))
        .start()
        .await
        .unwrap();
    eventually("all five ran", Duration::from_secs(10), || async {
        (seen.lock().unwrap().len() == 5).then_some(())
    })
    .await;
    w.close(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![c, a, bb, p1, p2],
        "LIFO first, FIFO, then by priority"
    );
}

pub async fn delay_is_honoured(b: Backend) {
    let q = queue(&b, "delay");
    let added = Instant::now();
    let job = q
        .add(
            "d",
            json!(1),
            JobOptions {
                delay_ms: Some(400),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(q.job_state(&job.id).await.unwrap(), Some(JobState::Delayed));
    let started = Arc::new(Mutex::new(None));
    let s2 = started.clone();
    let w = q
        .worker()
        .fallback(handler_fn(move |_| {
            let s = s2.clone();
            async move {
                *s.lock().unwrap() = Some(Instant::now());
                Ok(json!(null))
            }
        }))
        .start()
        .await
        .unwrap();
    wait_state(&q, &job.id, JobState::Completed).await;
    w.close(Duration::from_secs(5)).await.unwrap();
    let ran = started.lock().unwrap().unwrap();
    assert!(
        ran.duration_since(added) >= Duration::from_millis(390),
        "ran after {:?}",
        ran.duration_since(added)
    );
}

pub async fn retries_with_backoff_then_fail(b: Backend) {
    let q = queue(&b, "retry");
    let job = q
        .add(
            "r",
            json!(1),
            JobOptions {
                attempts: Some(3),
                backoff: Some(Backoff::fixed(200)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let s2 = starts.clone();
    let w = q
        .worker()
        .fallback(handler_fn(move |ctx| {
            let s = s2.clone();
            async move {
                s.lock()
                    .unwrap()
                    .push((Instant::now(), ctx.job.attempts_made));
                Err(JobError::retry("boom"))
            }
        }))
        .start()
        .await
        .unwrap();
    let failed = wait_state(&q, &job.id, JobState::Failed).await;
    w.close(Duration::from_secs(5)).await.unwrap();
    assert_eq!(failed.attempts_made, 3);
    assert_eq!(failed.failed_reason.as_deref(), Some("boom"));
    let starts = starts.lock().unwrap().clone();
    assert_eq!(
        starts.iter().map(|s| s.1).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    for pair in starts.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(gap >= Duration::from_millis(190), "backoff gap {gap:?}");
    }
}

pub async fn unrecoverable_skips_attempts(b: Backend) {
    let q = queue(&b, "unrec");
    let job = q
        .add(
            "u",
            json!(1),
            JobOptions {
                attempts: Some(5),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let w = q
        .worker()
        .fallback(handler_fn(|_| async {
            Err(JobError::unrecoverable("bad payload"))
        }))
        .start()
        .await
        .unwrap();
    let failed = wait_state(&q, &job.id, JobState::Failed).await;
    w.close(Duration::from_secs(5)).await.unwrap();
    assert_eq!(failed.attempts_made, 1);
    assert_eq!(failed.failed_reason.as_deref(), Some("bad payload"));
}

pub async fn timeout_cancels_the_handler(b: Backend) {
    struct DropFlag(Arc<AtomicUsize>);
    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let q = queue(&b, "timeout");
    let job = q.add("t", json!(1), JobOptions::default()).await.unwrap();
    let dropped = Arc::new(AtomicUsize::new(0));
    let d2 = dropped.clone();
    let w = q
        .worker()
        .timeout(Some(Duration::from_millis(150)))
        .fallback(handler_fn(move |_| {
            let flag = DropFlag(d2.clone());
            async move {
                let _flag = flag;
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(json!(null))
            }
        }))
        .start()
        .await
        .unwrap();
    let failed = wait_state(&q, &job.id, JobState::Failed).await;
    w.close(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        failed.failed_reason.as_deref(),
        Some("job timed out after 150 ms")
    );
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        1,
        "the handler future was dropped"
    );
}

pub async fn progress_logs_and_events(b: Backend) {
    let q = queue(&b, "progress");
    let mut events = q.events().await.unwrap();
    // Give a Redis stream reader a moment to be in place before the first event.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let job = q.add("p", json!(1), JobOptions::default()).await.unwrap();
    let w = q
        .worker()
        .fallback(handler_fn(|ctx| async move {
            ctx.log("first")
                .await
                .map_err(|e| JobError::retry(e.to_string()))?;
            ctx.progress(json!(50))
                .await
                .map_err(|e| JobError::retry(e.to_string()))?;
            ctx.log("second")
                .await
                .map_err(|e| JobError::retry(e.to_string()))?;
            Ok(json!({"ok": true}))
        }))
        .start()
        .await
        .unwrap();
    let done = wait_state(&q, &job.id, JobState::Completed).await;
    assert_eq!(done.progress, json!(50));
    assert_eq!(done.returnvalue, Some(json!({"ok": true})));
    let (lines, total) = q.job_logs(&job.id, 0, 10).await.unwrap();
    assert_eq!(
        (lines, total),
        (vec!["first".to_string(), "second".to_string()], 2)
    );
    let mut kinds = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !kinds.contains(&"completed") && Instant::now() < deadline {
        if let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(1), events.next()).await {
            if e.job_id() == Some(job.id.as_str()) {
                kinds.push(match e {
                    QueueEvent::Added { .. } => "added",
                    QueueEvent::Active { .. } => "active",
                    QueueEvent::Progress { .. } => "progress",
                    QueueEvent::Completed { .. } => "completed",
                    _ => "other",
                });
            }
        }
    }
    kinds.retain(|k| *k != "other");
    assert_eq!(kinds, vec!["added", "active", "progress", "completed"]);
    w.close(Duration::from_secs(5)).await.unwrap();
}

pub async fn routes_by_name_and_fallback(b: Backend) {
    let q = queue(&b, "routes");
    let a = q
        .add("resize", json!(1), JobOptions::default())
        .await
        .unwrap();
    let other = q
        .add(
            "other",
            json!(1),
            JobOptions {
                attempts: Some(3),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let w = q
        .worker()
        .handler("resize", handler_fn(|_| async { Ok(json!("resized")) }))
        .start()
        .await
        .unwrap();
    assert_eq!(
        wait_state(&q, &a.id, JobState::Completed).await.returnvalue,
        Some(json!("resized"))
    );
    let failed = wait_state(&q, &other.id, JobState::Failed).await;
    assert_eq!(
        failed.failed_reason.as_deref(),
        Some("no handler for job name \"other\"")
    );
    assert_eq!(
        failed.attempts_made, 1,
        "a missing handler is unrecoverable"
    );
    w.close(Duration::from_secs(5)).await.unwrap();
}

/// `[queues.Q.handlers.JOB]` routes job names to their configured handlers; a name with no
/// handler and no fallback fails unrecoverably, naming the job name, and goes to the DLQ.
pub async fn configured_handlers_route_by_job_name(b: Backend) {
    let config = keel::config::Config::parse(
        "[queues.mail]\nattempts = 3\n[queues.mail.handlers.send_otp]\nkind = \"log\"\n",
        &|_| None,
    )
    .unwrap();
    let q = config.queue(&b, "mail").unwrap();
    let otp = q
        .add("send_otp", json!({"to": "a@b.c"}), JobOptions::default())
        .await
        .unwrap();
    let other = q
        .add("send_email_template", json!({}), JobOptions::default())
        .await
        .unwrap();
    let workers = keel::runner::start_workers(
        &config,
        &b,
        &keel::runner::select(&config, &[], "queues").unwrap(),
        &keel::handlers::Builtin,
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        wait_state(&q, &otp.id, JobState::Completed)
            .await
            .returnvalue,
        Some(json!({"logged": true}))
    );
    let failed = wait_state(&q, &other.id, JobState::Failed).await;
    let reason = failed.failed_reason.unwrap_or_default();
    assert!(
        reason.contains("\"send_email_template\"")
            && reason.contains("queues.mail.handlers.send_email_template"),
        "{reason}"
    );
    assert_eq!(failed.attempts_made, 1, "no handler is unrecoverable");
    let dlq = q.dlq();
    for _ in 0..200 {
        if dlq.count().await.unwrap() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(dlq.count().await.unwrap(), 1, "it went to the DLQ");
    keel::runner::close_all(workers, Duration::from_secs(5))
        .await
        .unwrap();
}

pub async fn concurrency_is_bounded_and_reached(b: Backend) {
    let q = queue(&b, "conc");
    let jobs = (0..12).map(|i| keel::NewJob::new("c", json!(i))).collect();
    q.add_bulk(jobs).await.unwrap();
    let (handler, peak) = peak_counting(100);
    let w = q
        .worker()
        .concurrency(4)
        .fallback(handler)
        .start()
        .await
        .unwrap();
    eventually("all completed", Duration::from_secs(15), || async {
        (q.counts().await.unwrap().completed == 12).then_some(())
    })
    .await;
    w.close(Duration::from_secs(5)).await.unwrap();
    assert_eq!(peak.load(Ordering::SeqCst), 4);
}

pub async fn graceful_close_finishes_in_flight(b: Backend) {
    let q = queue(&b, "graceful");
    let job = q.add("g", json!(1), JobOptions::default()).await.unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let s2 = started.clone();
    let w = q
        .worker()
        .fallback(handler_fn(move |_| {
            let s = s2.clone();
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok(json!("finished"))
            }
        }))
        .start()
        .await
        .unwrap();
    eventually("started", Duration::from_secs(10), || async {
        (started.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    w.close(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        q.job_state(&job.id).await.unwrap(),
        Some(JobState::Completed),
        "in-flight job finished before close returned"
    );
}

pub async fn close_deadline_hands_back_unfinished(b: Backend) {
    let q = queue(&b, "handback");
    let job = q
        .add(
            "h",
            json!(1),
            JobOptions {
                attempts: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let s2 = started.clone();
    let w = q
        .worker()
        .lock_duration(SHORT_LOCK)
        .stalled_interval(SHORT_STALL_CHECK)
        .fallback(handler_fn(move |_| {
            let s = s2.clone();
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(json!(null))
            }
        }))
        .start()
        .await
        .unwrap();
    eventually("started", Duration::from_secs(10), || async {
        (started.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    w.close(Duration::from_millis(100)).await.unwrap();
    // Another worker takes the job over: at once in memory, after the lock expires on Redis.
    let w2 = q
        .worker()
        .lock_duration(SHORT_LOCK)
        .stalled_interval(SHORT_STALL_CHECK)
        .max_stalled_count(5)
        .fallback(handler_fn(|_| async { Ok(json!("recovered")) }))
        .start()
        .await
        .unwrap();
    let done = wait_state(&q, &job.id, JobState::Completed).await;
    assert_eq!(done.returnvalue, Some(json!("recovered")));
    assert!(
        done.stalled_counter >= 1 || done.attempts_started >= 2,
        "the job was handed back, not lost"
    );
    w2.close(Duration::from_secs(5)).await.unwrap();
}

pub async fn retry_failed_job_and_conflicts(b: Backend) {
    let q = queue(&b, "retryjob");
    let job = q.add("r", json!(1), JobOptions::default()).await.unwrap();
    let err = q.retry(&job.id).await.unwrap_err();
    assert_eq!(err.code(), "conflict", "a waiting job cannot be retried");
    assert_eq!(q.retry("missing").await.unwrap_err().code(), "not-found");
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let w = q
        .worker()
        .dead_letter(false)
        .fallback(handler_fn(move |_| {
            let c = c2.clone();
            async move {
                if c.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(JobError::retry("first time fails"))
                } else {
                    Ok(json!("second time works"))
                }
            }
        }))
        .start()
        .await
        .unwrap();
    wait_state(&q, &job.id, JobState::Failed).await;
    q.retry(&job.id).await.unwrap();
    let done = wait_state(&q, &job.id, JobState::Completed).await;
    assert_eq!(done.attempts_made, 1, "attempts were reset by the retry");
    w.close(Duration::from_secs(5)).await.unwrap();
}

pub async fn exponential_and_jittered_backoff(b: Backend) {
    async fn gaps(b: &Backend, backoff: Backoff) -> Vec<Duration> {
        let q = queue(b, "backoff");
        let job = q
            .add(
                "b",
                json!(1),
                JobOptions {
                    attempts: Some(3),
                    backoff: Some(backoff.clone()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            q.get_job(&job.id).await.unwrap().unwrap().opts.backoff,
            Some(backoff),
            "stored as given"
        );
        let starts = Arc::new(Mutex::new(Vec::new()));
        let s2 = starts.clone();
        let w = q
            .worker()
            .dead_letter(false)
            .fallback(handler_fn(move |_| {
                let s = s2.clone();
                async move {
                    s.lock().unwrap().push(Instant::now());
                    Err(JobError::retry("again"))
                }
            }))
            .start()
            .await
            .unwrap();
        wait_state(&q, &job.id, JobState::Failed).await;
        w.close(Duration::from_secs(5)).await.unwrap();
        let s = starts.lock().unwrap().clone();
        s.windows(2).map(|p| p[1] - p[0]).collect()
    }
    // Exponential from 150 ms: 150 ms, then 300 ms.
    let g = gaps(&b, Backoff::exponential(150)).await;
    // Lower bounds carry the meaning (the delay was waited, and it doubled); upper bounds are
    // loose so that a loaded CI machine cannot fail them.
    assert!(g[0] >= Duration::from_millis(140), "{g:?}");
    assert!(g[1] >= Duration::from_millis(290), "{g:?}");
    assert!(g[0] < Duration::from_millis(2000), "{g:?}");
    // Fixed 600 ms with jitter 0.5: each gap within [300, 600] ms (plus scheduling slack).
    let g = gaps(&b, Backoff::fixed(600).with_jitter(0.5)).await;
    for gap in &g {
        assert!(
            *gap >= Duration::from_millis(290) && *gap < Duration::from_millis(2000),
            "{g:?}"
        );
    }
}

pub async fn finished_jobs_list_and_clean(b: Backend) {
    let q = queue(&b, "finished");
    let mut ok_ids = Vec::new();
    for i in 0..3 {
        ok_ids.push(
            q.add("ok", json!(i), JobOptions::default())
                .await
                .unwrap()
                .id,
        );
    }
    let bad = q
        .add(
            "bad",
            json!(9),
            JobOptions {
                attempts: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let w = q
        .worker()
        .concurrency(1)
        .dead_letter(false)
        .handler("ok", handler_fn(|ctx| async move { Ok(ctx.job.data) }))
        .handler(
            "bad",
            handler_fn(|_| async { Err(JobError::retry("nope")) }),
        )
        .start()
        .await
        .unwrap();
    for id in &ok_ids {
        let j = wait_state(&q, id, JobState::Completed).await;
        let (p, f) = (j.processed_on.unwrap(), j.finished_on.unwrap());
        assert!(j.timestamp <= p && p <= f, "timestamps in order: {j:?}");
        assert_eq!(j.attempts_made, 1);
    }
    let failed = wait_state(&q, &bad.id, JobState::Failed).await;
    assert!(failed.finished_on.is_some());
    w.close(Duration::from_secs(5)).await.unwrap();
    // Completed jobs list newest-finished first (one worker slot: they finished in add order).
    let listed: Vec<_> = q
        .list(JobState::Completed, 1, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(listed, ok_ids.iter().rev().cloned().collect::<Vec<_>>());
    assert_eq!(q.list(JobState::Failed, 1, 10).await.unwrap()[0].id, bad.id);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cleaned = q
        .clean(Duration::ZERO, 2, JobState::Completed)
        .await
        .unwrap();
    assert_eq!(cleaned.len(), 2);
    let c = q.counts().await.unwrap();
    assert_eq!((c.completed, c.failed), (1, 1));
    assert_eq!(
        q.clean(Duration::ZERO, 10, JobState::Failed).await.unwrap(),
        vec![bad.id.clone()]
    );
    assert_eq!(q.counts().await.unwrap().failed, 0);
}

/// A per-key limit on a job name: jobs over the policy's window go back to delayed (no
/// attempt counted, the reason in their log) and run when the next window admits them;
/// other keys are not held back.
pub async fn per_key_limits_delay_jobs_until_the_window_admits_them(b: Backend) {
    let config = keel::config::Config::parse(
        r#"
[ratelimit.policies.post-twitter]
algorithm = "fixed_window"
limit = 5
window_ms = 3000
[queues.publish]
concurrency = 4
[queues.publish.handlers.publish-post]
kind = "log"
limit = { policy = "post-twitter", key = "{data.userId}:{name}" }
"#,
        &|_| None,
    )
    .unwrap();
    // Start at the beginning of a window, so the first 5 of a key share it.
    while keel::now_ms() % 3000 > 300 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let q = config.queue(&b, "publish").unwrap();
    let mut u1 = Vec::new();
    for i in 0..8 {
        u1.push(
            q.add(
                "publish-post",
                json!({"userId": "u1", "n": i}),
                JobOptions::default(),
            )
            .await
            .unwrap()
            .id,
        );
    }
    let mut u2 = Vec::new();
    for i in 0..2 {
        u2.push(
            q.add(
                "publish-post",
                json!({"userId": "u2", "n": i}),
                JobOptions::default(),
            )
            .await
            .unwrap()
            .id,
        );
    }
    let missing = q
        .add("publish-post", json!({"n": 0}), JobOptions::default())
        .await
        .unwrap();
    let workers = keel::runner::start_workers(
        &config,
        &b,
        &["publish".into()],
        &keel::handlers::Builtin,
        None,
    )
    .await
    .unwrap();
    for id in &u2 {
        wait_state(&q, id, JobState::Completed).await;
    }
    let failed = wait_state(&q, &missing.id, JobState::Failed).await;
    assert!(
        failed
            .failed_reason
            .unwrap_or_default()
            .contains("data has no userId"),
        "a job without the key's field fails, naming it"
    );
    // Within the first window: 5 of u1 ran, 3 wait as delayed, no attempt counted.
    let deadline = std::time::Instant::now() + Duration::from_millis(2500);
    let (mut done, mut delayed) = (0, 0);
    while std::time::Instant::now() < deadline {
        done = 0;
        delayed = 0;
        for id in &u1 {
            match q.job_state(id).await.unwrap() {
                Some(JobState::Completed) => done += 1,
                Some(JobState::Delayed) => delayed += 1,
                _ => {}
            }
        }
        if done == 5 && delayed == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!((done, delayed), (5, 3), "5 ran in the window, 3 wait");
    let waiting = q.list(JobState::Delayed, 1, 10).await.unwrap();
    let job = &waiting[0];
    assert_eq!(job.attempts_made, 0, "a postponement is not an attempt");
    let (logs, _) = q.job_logs(&job.id, 0, 10).await.unwrap();
    assert!(
        logs.iter()
            .any(|l| l.contains("rate limit post-twitter for u1:publish-post")),
        "{logs:?}"
    );
    // The next window admits them.
    for id in &u1 {
        let j = wait_state(&q, id, JobState::Completed).await;
        assert_eq!(j.attempts_made, 1);
    }
    keel::runner::close_all(workers, Duration::from_secs(5))
        .await
        .unwrap();
}
