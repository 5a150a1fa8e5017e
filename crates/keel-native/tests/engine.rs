//! The native engine's core against a real Redis (`REDIS_URL`, default the local one); each
//! test under a prefix of its own, so they run in parallel.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel_core::backend::{JobContext, Processor, WorkerEventSink};
use keel_core::{Backoff, JobError, JobOptions, KeepJobs, NewJob, QueueBackend, WorkerOptions};
use keel_native::{NativeEngine, NativeWorker};
use serde_json::{json, Value};

async fn engine() -> NativeEngine {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("kn-{}", uuid::Uuid::new_v4().simple());
    NativeEngine::connect(&url, &prefix, Duration::from_secs(5))
        .await
        .unwrap()
}

fn processor<F, Fut>(f: F) -> Processor
where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Value, JobError>> + Send + 'static,
{
    Arc::new(move |ctx| Box::pin(f(ctx)))
}

/// A no-op handler that counts the jobs it ran, and its count.
fn counted() -> (Processor, Arc<AtomicUsize>) {
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    let p = processor(move |_| {
        let d = d.clone();
        async move {
            d.fetch_add(1, Ordering::SeqCst);
            Ok(Value::Null)
        }
    });
    (p, done)
}

fn quiet() -> WorkerEventSink {
    Arc::new(|_| {})
}

fn opts(concurrency: usize) -> WorkerOptions {
    WorkerOptions {
        concurrency,
        ..WorkerOptions::default()
    }
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn removed() -> JobOptions {
    JobOptions {
        remove_on_complete: Some(KeepJobs::remove_all()),
        ..JobOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_every_job_once_in_batches() {
    let e = engine().await;
    let jobs: Vec<NewJob> = (0..3000)
        .map(|i| NewJob::new("work", json!({ "i": i })).with_opts(removed()))
        .collect();
    let added = e.add_bulk("q", jobs).await.unwrap();
    assert_eq!(added.len(), 3000);
    assert_eq!(e.counts("q").await.unwrap().waiting, 3000);
    let seen = Arc::new(Mutex::new(vec![0u32; 3000]));
    let s = seen.clone();
    let w = NativeWorker::start(
        &e,
        "q",
        processor(move |ctx| {
            let s = s.clone();
            async move {
                let i = ctx.job.data["i"].as_u64().unwrap() as usize;
                s.lock().unwrap()[i] += 1;
                Ok(Value::Null)
            }
        }),
        opts(50),
        quiet(),
    )
    .await
    .unwrap();
    let s = seen.clone();
    until("all processed", || {
        s.lock().unwrap().iter().all(|&n| n == 1)
    })
    .await;
    w.close(Duration::from_secs(5)).await.unwrap();
    assert!(
        seen.lock().unwrap().iter().all(|&n| n == 1),
        "each job exactly once"
    );
    let c = e.counts("q").await.unwrap();
    assert_eq!((c.waiting, c.active, c.completed, c.failed), (0, 0, 0, 0));
    assert!(
        e.get_job("q", &added[0].id).await.unwrap().is_none(),
        "removed on complete"
    );
    e.obliterate("q", true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_completed_jobs_are_trimmed_to_their_count() {
    let e = engine().await;
    let keep = JobOptions {
        remove_on_complete: Some(KeepJobs::count(5)),
        ..JobOptions::default()
    };
    let jobs: Vec<NewJob> = (0..40)
        .map(|i| NewJob::new("work", json!({ "i": i })).with_opts(keep.clone()))
        .collect();
    let added = e.add_bulk("q", jobs).await.unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    let w = NativeWorker::start(
        &e,
        "q",
        processor(move |ctx| {
            let d = d.clone();
            async move {
                d.fetch_add(1, Ordering::SeqCst);
                Ok(json!({ "double": ctx.job.data["i"].as_u64().unwrap() * 2 }))
            }
        }),
        opts(4),
        quiet(),
    )
    .await
    .unwrap();
    let d = done.clone();
    until("all processed", || d.load(Ordering::SeqCst) == 40).await;
    w.close(Duration::from_secs(5)).await.unwrap();
    let c = e.counts("q").await.unwrap();
    assert_eq!((c.waiting, c.active, c.completed), (0, 0, 5));
    let last = e.get_job("q", &added[39].id).await.unwrap().unwrap();
    assert_eq!(last.returnvalue, Some(json!({ "double": 78 })));
    assert!(
        e.get_job("q", &added[0].id).await.unwrap().is_none(),
        "trimmed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_with_backoff_then_fails_with_the_error() {
    let e = engine().await;
    let job = NewJob::new("flaky", json!({})).with_opts(JobOptions {
        attempts: Some(3),
        backoff: Some(Backoff::fixed(150)),
        ..JobOptions::default()
    });
    let added = e.add("q", job).await.unwrap();
    let times = Arc::new(Mutex::new(Vec::new()));
    let t = times.clone();
    let w = NativeWorker::start(
        &e,
        "q",
        processor(move |ctx| {
            let t = t.clone();
            async move {
                t.lock()
                    .unwrap()
                    .push((Instant::now(), ctx.job.attempts_made));
                Err(JobError::retry("upstream said no").with_stack("at step 2"))
            }
        }),
        opts(2),
        quiet(),
    )
    .await
    .unwrap();
    let t = times.clone();
    until("three attempts", || t.lock().unwrap().len() == 3).await;
    let e2 = e.clone();
    let start = Instant::now();
    loop {
        if e2.counts("q").await.unwrap().failed == 1 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "never failed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    w.close(Duration::from_secs(5)).await.unwrap();
    let t = times.lock().unwrap().clone();
    assert_eq!(t.iter().map(|(_, a)| *a).collect::<Vec<_>>(), vec![0, 1, 2]);
    for pair in t.windows(2) {
        assert!(
            pair[1].0 - pair[0].0 >= Duration::from_millis(140),
            "the backoff was honoured: {:?}",
            pair[1].0 - pair[0].0
        );
    }
    let job = e.get_job("q", &added.id).await.unwrap().unwrap();
    assert_eq!(job.attempts_made, 3);
    assert_eq!(job.failed_reason.as_deref(), Some("upstream said no"));
    assert!(job.stacktrace.is_empty(), "stacks go to the DLQ entry");
    // Unrecoverable: one attempt.
    let once = e
        .add(
            "q2",
            NewJob::new("bad", json!({})).with_opts(JobOptions {
                attempts: Some(5),
                ..JobOptions::default()
            }),
        )
        .await
        .unwrap();
    let w = NativeWorker::start(
        &e,
        "q2",
        processor(|_| async { Err(JobError::unrecoverable("malformed")) }),
        opts(1),
        quiet(),
    )
    .await
    .unwrap();
    let start = Instant::now();
    while e.counts("q2").await.unwrap().failed == 0 {
        assert!(start.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    w.close(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        e.get_job("q2", &once.id)
            .await
            .unwrap()
            .unwrap()
            .attempts_made,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_priority_and_lifo_order_taking() {
    let e = engine().await;
    let with = |o: JobOptions, n: &str| NewJob::new(n, json!({})).with_opts(o);
    e.add(
        "q",
        with(
            JobOptions {
                delay_ms: Some(400),
                ..JobOptions::default()
            },
            "delayed",
        ),
    )
    .await
    .unwrap();
    e.add("q", with(JobOptions::default(), "fifo-1"))
        .await
        .unwrap();
    e.add("q", with(JobOptions::default(), "fifo-2"))
        .await
        .unwrap();
    e.add(
        "q",
        with(
            JobOptions {
                lifo: true,
                ..JobOptions::default()
            },
            "lifo",
        ),
    )
    .await
    .unwrap();
    for (p, n) in [(5, "prio-5"), (1, "prio-1")] {
        e.add(
            "q",
            with(
                JobOptions {
                    priority: Some(p),
                    ..JobOptions::default()
                },
                n,
            ),
        )
        .await
        .unwrap();
    }
    let c = e.counts("q").await.unwrap();
    assert_eq!((c.waiting, c.prioritized, c.delayed), (3, 2, 1));
    let order = Arc::new(Mutex::new(Vec::new()));
    let o = order.clone();
    let added_at = Instant::now();
    let w = NativeWorker::start(
        &e,
        "q",
        processor(move |ctx| {
            let o = o.clone();
            async move {
                o.lock()
                    .unwrap()
                    .push((ctx.job.name.clone(), Instant::now()));
                Ok(Value::Null)
            }
        }),
        opts(1),
        quiet(),
    )
    .await
    .unwrap();
    let o = order.clone();
    until("six jobs", || o.lock().unwrap().len() == 6).await;
    w.close(Duration::from_secs(5)).await.unwrap();
    let order = order.lock().unwrap().clone();
    let names: Vec<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        vec!["lifo", "fifo-1", "fifo-2", "prio-1", "prio-5", "delayed"]
    );
    assert!(order[5].1 - added_at >= Duration::from_millis(350));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_ids_return_the_existing_job() {
    let e = engine().await;
    let first = NewJob::new("a", json!({ "v": 1 })).with_opts(JobOptions {
        job_id: Some("order-7".into()),
        ..JobOptions::default()
    });
    let again = NewJob::new("a", json!({ "v": 2 })).with_opts(JobOptions {
        job_id: Some("order-7".into()),
        ..JobOptions::default()
    });
    let a = e.add("q", first).await.unwrap();
    let b = e.add("q", again).await.unwrap();
    assert_eq!((a.id.as_str(), b.id.as_str()), ("order-7", "order-7"));
    assert_eq!(b.data, json!({ "v": 1 }), "the existing job, unchanged");
    assert_eq!(b.opts.job_id.as_deref(), Some("order-7"));
    assert_eq!(e.counts("q").await.unwrap().waiting, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_single_adds_each_get_their_own_job() {
    // Adds in flight together share `add.lua` calls: each caller still gets its own job back,
    // a custom id taken twice answers the first job, and a caller that stops waiting neither
    // loses its job nor anyone else's.
    let e = engine().await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..300u32 {
        let e = e.clone();
        calls.spawn(async move {
            let job_id = (i % 10 == 0).then(|| format!("dup-{}", i % 20));
            let job = NewJob::new(format!("n{i}"), json!({ "i": i })).with_opts(JobOptions {
                job_id,
                ..JobOptions::default()
            });
            (i, e.add("q", job).await.unwrap())
        });
    }
    let dropped = {
        let e = e.clone();
        tokio::spawn(async move { e.add("q", NewJob::new("gone", json!({}))).await })
    };
    dropped.abort();
    let mut ids = std::collections::HashSet::new();
    while let Some(r) = calls.join_next().await {
        let (i, job) = r.unwrap();
        if i % 10 == 0 {
            assert_eq!(job.id, format!("dup-{}", i % 20));
            assert_eq!(job.data["i"].as_u64().unwrap() % 20, u64::from(i % 20));
        } else {
            assert_eq!(
                (job.name.as_str(), &job.data),
                (format!("n{i}").as_str(), &json!({ "i": i }))
            );
            assert!(ids.insert(job.id.clone()), "job {} answered twice", job.id);
        }
    }
    let waiting = e.counts("q").await.unwrap().waiting;
    // 270 plain adds, 2 custom ids, and the abandoned add if it reached Redis before it was
    // dropped (it is sent on a task of its own, so dropping its caller does not undo it).
    assert!((272..=273).contains(&waiting), "{waiting} waiting");
    let (p, done) = counted();
    let w = NativeWorker::start(&e, "q", p, opts(20), quiet())
        .await
        .unwrap();
    until("every added job ran", || {
        done.load(Ordering::SeqCst) as u64 == waiting
    })
    .await;
    w.close(Duration::from_secs(5)).await.unwrap();
}

/// A worker takes the one job of `queue` and "dies": its close deadline passes with the job
/// still running, so the job is abandoned with its lease.
async fn abandon(e: &NativeEngine, queue: &str, opts: WorkerOptions) {
    let taken = Arc::new(AtomicUsize::new(0));
    let t = taken.clone();
    let dying = NativeWorker::start(
        e,
        queue,
        processor(move |_| {
            let t = t.clone();
            async move {
                t.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>().await;
                Ok(Value::Null)
            }
        }),
        opts,
        quiet(),
    )
    .await
    .unwrap();
    until("taken", || taken.load(Ordering::SeqCst) == 1).await;
    dying.close(Duration::from_millis(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_lease_is_recovered_and_a_poison_pill_fails() {
    let e = engine().await;
    let short = |max_stalled_count| WorkerOptions {
        concurrency: 1,
        lock_duration: Duration::from_millis(300),
        stalled_interval: Duration::from_millis(100),
        max_stalled_count,
        name: None,
    };
    let added = e.add("q", NewJob::new("slow", json!({}))).await.unwrap();
    abandon(&e, "q", short(5)).await;
    assert_eq!(e.counts("q").await.unwrap().active, 1, "still leased");
    let stalls = Arc::new(Mutex::new(None));
    let s = stalls.clone();
    let w = NativeWorker::start(
        &e,
        "q",
        processor(move |ctx| {
            let s = s.clone();
            async move {
                *s.lock().unwrap() = Some((ctx.job.stalled_counter, ctx.recovered_stalls));
                Ok(Value::Null)
            }
        }),
        short(5),
        quiet(),
    )
    .await
    .unwrap();
    let s = stalls.clone();
    until("recovered and run", || s.lock().unwrap().is_some()).await;
    w.close(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        *stalls.lock().unwrap(),
        Some((1, 1)),
        "one stall, reported to this attempt"
    );
    let done = e.get_job("q", &added.id).await.unwrap().unwrap();
    assert_eq!(done.returnvalue, Some(Value::Null));

    // With no stall allowed, its first stall fails it as a poison pill.
    let pill = e.add("p", NewJob::new("pill", json!({}))).await.unwrap();
    abandon(&e, "p", short(0)).await;
    let recoverer = NativeWorker::start(
        &e,
        "p",
        processor(|_| async { Ok(Value::Null) }),
        short(0),
        quiet(),
    )
    .await
    .unwrap();
    let start = Instant::now();
    while e.counts("p").await.unwrap().failed == 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "never failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    recoverer.close(Duration::from_secs(5)).await.unwrap();
    let failed = e.get_job("p", &pill.id).await.unwrap().unwrap();
    assert!(failed
        .failed_reason
        .unwrap()
        .contains("stalled more than allowable limit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_jobs_and_resume_wakes_the_worker() {
    let e = engine().await;
    e.pause("q").await.unwrap();
    let (counting, done) = counted();
    let w = NativeWorker::start(&e, "q", counting, opts(5), quiet())
        .await
        .unwrap();
    e.add("q", NewJob::new("a", json!({}))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(done.load(Ordering::SeqCst), 0, "paused");
    let c = e.counts("q").await.unwrap();
    assert!(c.paused && c.waiting == 1);
    let resumed = Instant::now();
    e.resume("q").await.unwrap();
    let d = done.clone();
    until("run after resume", || d.load(Ordering::SeqCst) == 1).await;
    assert!(
        resumed.elapsed() < Duration::from_millis(500),
        "woken, not polled"
    );
    // An add wakes an idle worker at once too.
    let added = Instant::now();
    e.add("q", NewJob::new("b", json!({}))).await.unwrap();
    let d = done.clone();
    until("run after add", || d.load(Ordering::SeqCst) == 2).await;
    assert!(added.elapsed() < Duration::from_millis(500));
    w.close(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_close_acknowledges_what_finished() {
    let e = engine().await;
    let jobs: Vec<NewJob> = (0..10)
        .map(|i| NewJob::new("w", json!({ "i": i })))
        .collect();
    e.add_bulk("q", jobs).await.unwrap();
    let w = NativeWorker::start(
        &e,
        "q",
        processor(|_| async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(Value::Null)
        }),
        opts(10),
        quiet(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    w.close(Duration::from_secs(5)).await.unwrap();
    let c = e.counts("q").await.unwrap();
    assert_eq!((c.active, c.completed, c.waiting), (0, 10, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_wakes_at_once_however_long_it_waited() {
    // Idle longer than a client reply timeout would allow a blocking wait: every add must still
    // wake the worker at once (not at its next look a second later).
    let e = engine().await;
    let (counting, done) = counted();
    let w = NativeWorker::start(&e, "q", counting, opts(2), quiet())
        .await
        .unwrap();
    for round in 1..=3 {
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let added = Instant::now();
        e.add("q", NewJob::new("a", json!({}))).await.unwrap();
        let d = done.clone();
        until("run", || d.load(Ordering::SeqCst) == round).await;
        assert!(
            added.elapsed() < Duration::from_millis(300),
            "round {round}: woken after {:?}",
            added.elapsed()
        );
    }
    w.close(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_fails_its_attempt_and_frees_its_slot() {
    let e = engine().await;
    let job = e
        .add(
            "q",
            NewJob::new("boom", json!({})).with_opts(JobOptions {
                attempts: Some(2),
                ..JobOptions::default()
            }),
        )
        .await
        .unwrap();
    let ok = e.add("q", NewJob::new("fine", json!({}))).await.unwrap();
    let w = NativeWorker::start(
        &e,
        "q",
        processor(|ctx| async move {
            if ctx.job.name == "boom" {
                panic!("handler bug");
            }
            Ok(json!("ran"))
        }),
        // One slot: a leaked slot would leave the second job waiting forever.
        opts(1),
        quiet(),
    )
    .await
    .unwrap();
    let start = Instant::now();
    loop {
        let c = e.counts("q").await.unwrap();
        if c.failed == 1 && c.completed == 1 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "stuck: {c:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.close(Duration::from_secs(5)).await.unwrap();
    let failed = e.get_job("q", &job.id).await.unwrap().unwrap();
    assert_eq!(failed.attempts_made, 2);
    assert!(failed.failed_reason.unwrap().contains("handler bug"));
    let done = e.get_job("q", &ok.id).await.unwrap().unwrap();
    assert_eq!(done.returnvalue, Some(json!("ran")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_job_fails_alone_and_its_batch_runs() {
    let e = engine().await;
    let good = e
        .add_bulk(
            "q",
            (0..5)
                .map(|i| NewJob::new("ok", json!({ "i": i })))
                .collect(),
        )
        .await
        .unwrap();
    // A job another version wrote, with an option this one does not know.
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys = e.key_of("q", "jobs");
    let _: () = redis::pipe()
        .hset(
            &keys,
            "from-the-future",
            r#"{"n":"x","d":1,"o":{"warp":9},"t":1}"#,
        )
        .rpush(e.key_of("q", "wait"), "from-the-future")
        .query_async(&mut conn)
        .await
        .unwrap();
    let (counting, done) = counted();
    let w = NativeWorker::start(&e, "q", counting, opts(10), quiet())
        .await
        .unwrap();
    let d = done.clone();
    until("the readable jobs ran", || d.load(Ordering::SeqCst) == 5).await;
    let start = Instant::now();
    while e.counts("q").await.unwrap().failed == 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "never failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.close(Duration::from_secs(5)).await.unwrap();
    let c = e.counts("q").await.unwrap();
    assert_eq!((c.completed, c.failed, c.active, c.waiting), (5, 1, 0, 0));
    assert_eq!(good.len(), 5);
}
