//! Producer and admin behaviours (no worker needed).

use std::time::Duration;

use keel::{Backend, Backoff, Deduplication, JobOptions, JobState, KeepJobs, NewJob, Schedule};
use serde_json::json;

use crate::support::*;

pub async fn add_and_get_round_trip(b: Backend) {
    let q = queue(&b, "roundtrip")
        .with_defaults(JobOptions {
            attempts: Some(3),
            backoff: Some(Backoff::exponential(1000)),
            remove_on_complete: Some(KeepJobs {
                count: Some(1000),
                age_s: Some(86400),
            }),
            ..Default::default()
        })
        .unwrap();
    let job = q
        .add(
            "send",
            json!({"to": "a@example.com", "n": [1, 2]}),
            JobOptions {
                attempts: Some(5),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let got = q.get_job(&job.id).await.unwrap().expect("stored");
    assert_eq!(got.name, "send");
    assert_eq!(got.data, json!({"to": "a@example.com", "n": [1, 2]}));
    assert_eq!(got.opts.attempts, Some(5), "job options win over defaults");
    assert_eq!(
        got.opts.backoff,
        Some(Backoff::exponential(1000)),
        "defaults fill the rest"
    );
    assert_eq!(
        got.opts.remove_on_complete,
        Some(KeepJobs {
            count: Some(1000),
            age_s: Some(86400)
        })
    );
    assert_eq!(got.attempts_made, 0);
    assert!(got.timestamp > 0);
    assert_eq!(q.job_state(&job.id).await.unwrap(), Some(JobState::Waiting));
    assert_eq!(q.get_job("nope").await.unwrap(), None);
    assert_eq!(q.job_state("nope").await.unwrap(), None);
    let c = q.counts().await.unwrap();
    assert_eq!((c.waiting, c.active, c.failed, c.paused), (1, 0, 0, false));
}

pub async fn bulk_validates_everything_first(b: Backend) {
    let q = queue(&b, "bulk");
    let mut jobs: Vec<NewJob> = (0..5).map(|i| NewJob::new("j", json!(i))).collect();
    jobs[3].opts.attempts = Some(0);
    let err = q.add_bulk(jobs.clone()).await.unwrap_err();
    assert_eq!(err.field(), Some("jobs[3].attempts"));
    assert_eq!(q.counts().await.unwrap().waiting, 0, "nothing added");
    jobs[3].opts.attempts = Some(2);
    let added = q.add_bulk(jobs).await.unwrap();
    assert_eq!(added.len(), 5);
    assert_eq!(q.counts().await.unwrap().waiting, 5);
    for (i, j) in added.iter().enumerate() {
        assert_eq!(q.get_job(&j.id).await.unwrap().unwrap().data, json!(i));
    }
}

pub async fn custom_id_returns_existing_job(b: Backend) {
    let q = queue(&b, "customid");
    let opts = JobOptions {
        job_id: Some("order-17".into()),
        ..Default::default()
    };
    let first = q.add("a", json!({"v": 1}), opts.clone()).await.unwrap();
    assert_eq!(first.id, "order-17");
    let second = q.add("a", json!({"v": 2}), opts).await.unwrap();
    assert_eq!(second.id, "order-17");
    assert_eq!(second.data, json!({"v": 1}), "the existing job, unchanged");
    assert_eq!(q.counts().await.unwrap().waiting, 1);
}

pub async fn deduplication_holds_until_finished(b: Backend) {
    let q = queue(&b, "dedup");
    let de = JobOptions {
        deduplication: Some(Deduplication {
            id: "user-9".into(),
            ttl_ms: None,
        }),
        ..Default::default()
    };
    let a = q.add("x", json!(1), de.clone()).await.unwrap();
    let b2 = q.add("x", json!(2), de.clone()).await.unwrap();
    assert_eq!(a.id, b2.id);
    assert_eq!(q.counts().await.unwrap().waiting, 1);
    let w = q
        .worker()
        .fallback(keel::handler_fn(|_| async { Ok(json!(null)) }))
        .start()
        .await
        .unwrap();
    wait_state(&q, &a.id, JobState::Completed).await;
    w.close(Duration::from_secs(5)).await.unwrap();
    let c = q.add("x", json!(3), de).await.unwrap();
    assert_ne!(c.id, a.id, "a finished job releases its deduplication id");
}

pub async fn bad_input_is_refused_with_field(b: Backend) {
    let err = keel::Queue::new(&b, "dlq:emails").unwrap_err();
    assert_eq!((err.code(), err.field()), ("invalid-input", Some("queue")));
    let q = queue(&b, "bad");
    let cases = [
        (
            JobOptions {
                job_id: Some("a:b".into()),
                ..Default::default()
            },
            "job_id",
        ),
        (
            JobOptions {
                attempts: Some(0),
                ..Default::default()
            },
            "attempts",
        ),
        (
            JobOptions {
                priority: Some(3_000_000),
                ..Default::default()
            },
            "priority",
        ),
        (
            JobOptions {
                delay_ms: Some(u64::MAX),
                ..Default::default()
            },
            "delay",
        ),
    ];
    for (opts, field) in cases {
        let err = q.add("x", json!({}), opts).await.unwrap_err();
        assert_eq!(err.field(), Some(field));
    }
    assert_eq!(
        q.add("", json!({}), JobOptions::default())
            .await
            .unwrap_err()
            .field(),
        Some("name")
    );
    assert_eq!(
        q.list(JobState::Waiting, 0, 10).await.unwrap_err().field(),
        Some("page")
    );
    assert_eq!(
        q.list(JobState::Waiting, 1, 0).await.unwrap_err().field(),
        Some("limit")
    );
    assert_eq!(q.counts().await.unwrap().waiting, 0, "nothing was added");
}

pub async fn counts_and_pagination_newest_first(b: Backend) {
    let q = queue(&b, "pages");
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            q.add("p", json!(i), JobOptions::default())
                .await
                .unwrap()
                .id,
        );
    }
    let page1: Vec<_> = q
        .list(JobState::Waiting, 1, 3)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    let page2: Vec<_> = q
        .list(JobState::Waiting, 2, 3)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    let page3: Vec<_> = q
        .list(JobState::Waiting, 3, 3)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(page1, vec![ids[6].clone(), ids[5].clone(), ids[4].clone()]);
    assert_eq!(page2, vec![ids[3].clone(), ids[2].clone(), ids[1].clone()]);
    assert_eq!(page3, vec![ids[0].clone()]);
    q.add(
        "d",
        json!(0),
        JobOptions {
            delay_ms: Some(60_000),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    q.add(
        "p",
        json!(0),
        JobOptions {
            priority: Some(4),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let c = q.counts().await.unwrap();
    assert_eq!((c.waiting, c.delayed, c.prioritized), (7, 1, 1));
}

pub async fn remove_clean_drain_obliterate(b: Backend) {
    let q = queue(&b, "admin");
    let a = q.add("a", json!(1), JobOptions::default()).await.unwrap();
    assert!(q.remove(&a.id).await.unwrap());
    assert!(
        !q.remove(&a.id).await.unwrap(),
        "second remove finds nothing"
    );
    for _ in 0..3 {
        q.add("a", json!(1), JobOptions::default()).await.unwrap();
    }
    q.add(
        "d",
        json!(1),
        JobOptions {
            delay_ms: Some(60_000),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // clean: nothing is older than an hour, everything is older than 0 ms (after a tick).
    assert!(q
        .clean(Duration::from_secs(3600), 100, JobState::Waiting)
        .await
        .unwrap()
        .is_empty());
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cleaned = q.clean(Duration::ZERO, 2, JobState::Waiting).await.unwrap();
    assert_eq!(cleaned.len(), 2, "limit respected");
    q.drain(false).await.unwrap();
    let c = q.counts().await.unwrap();
    assert_eq!(
        (c.waiting, c.delayed),
        (0, 1),
        "drain keeps delayed unless asked"
    );
    q.drain(true).await.unwrap();
    assert_eq!(q.counts().await.unwrap().delayed, 0);
    q.add("a", json!(1), JobOptions::default()).await.unwrap();
    q.obliterate(false).await.unwrap();
    let c = q.counts().await.unwrap();
    assert_eq!(c.waiting + c.delayed + c.completed, 0);
}

pub async fn schedulers_every_and_cron(b: Backend) {
    let q = queue(&b, "sched");
    let info = q
        .upsert_scheduler(
            "tick",
            Schedule::Every { every_ms: 200 },
            "tick",
            json!({"k": 1}),
            JobOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(info.id, "tick");
    q.upsert_scheduler(
        "nightly",
        Schedule::Cron {
            pattern: "0 0 3 * * *".into(),
            tz: Some("Europe/Berlin".into()),
        },
        "report",
        json!({}),
        JobOptions::default(),
    )
    .await
    .unwrap();
    let list = q.schedulers().await.unwrap();
    assert_eq!(
        list.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        vec!["nightly", "tick"]
    );
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c2 = count.clone();
    let w = q
        .worker()
        .handler(
            "tick",
            keel::handler_fn(move |ctx| {
                let c = c2.clone();
                async move {
                    assert_eq!(ctx.job.data, json!({"k": 1}));
                    c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok(json!(null))
                }
            }),
        )
        .start()
        .await
        .unwrap();
    eventually(
        "interval scheduler fires repeatedly",
        Duration::from_secs(10),
        || async { (count.load(std::sync::atomic::Ordering::SeqCst) >= 3).then_some(()) },
    )
    .await;
    assert!(q.remove_scheduler("tick").await.unwrap());
    assert!(!q.remove_scheduler("tick").await.unwrap());
    w.close(Duration::from_secs(5)).await.unwrap();
    let bad = q
        .upsert_scheduler(
            "x",
            Schedule::Cron {
                pattern: "not a cron".into(),
                tz: None,
            },
            "x",
            json!({}),
            JobOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(bad.field(), Some("pattern"));
    let bad = q
        .upsert_scheduler(
            "x",
            Schedule::Cron {
                pattern: "* * * * *".into(),
                tz: Some("Mars/Olympus".into()),
            },
            "x",
            json!({}),
            JobOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(bad.field(), Some("tz"));
}

pub async fn pause_blocks_taking(b: Backend) {
    let q = queue(&b, "pause");
    q.pause().await.unwrap();
    assert!(q.counts().await.unwrap().paused);
    let job = q.add("a", json!(1), JobOptions::default()).await.unwrap();
    let w = q
        .worker()
        .fallback(keel::handler_fn(|_| async { Ok(json!("done")) }))
        .start()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        q.job_state(&job.id).await.unwrap(),
        Some(JobState::Waiting),
        "not taken while paused"
    );
    q.resume().await.unwrap();
    assert!(!q.counts().await.unwrap().paused);
    let done = wait_state(&q, &job.id, JobState::Completed).await;
    assert_eq!(done.returnvalue, Some(json!("done")));
    w.close(Duration::from_secs(5)).await.unwrap();
}

pub async fn heartbeat_and_queue_names(b: Backend) {
    let q = queue(&b, "names");
    q.add("a", json!(1), JobOptions::default()).await.unwrap();
    assert!(b
        .queue_names()
        .await
        .unwrap()
        .contains(&q.name().to_string()));
    let hb = keel::Heartbeat::start(
        &b,
        json!({"queues": [q.name()]}),
        Duration::from_millis(100),
    );
    let id = hb.id().to_string();
    let live = eventually("heartbeat visible", Duration::from_secs(5), || async {
        b.live_workers()
            .await
            .unwrap()
            .into_iter()
            .find(|w| w["id"] == json!(id))
    })
    .await;
    assert_eq!(live["queues"], json!([q.name()]));
    assert!(live["pid"].as_u64().is_some());
    hb.stop().await;
    // The heartbeat lives three intervals after the last beat, then is gone.
    eventually("heartbeat expired", Duration::from_secs(5), || async {
        (!b.live_workers()
            .await
            .unwrap()
            .iter()
            .any(|w| w["id"] == json!(id)))
        .then_some(())
    })
    .await;
}

pub async fn deduplication_ttl_expires(b: Backend) {
    let q = queue(&b, "dedupttl");
    let de = JobOptions {
        deduplication: Some(Deduplication {
            id: "burst".into(),
            ttl_ms: Some(300),
        }),
        ..Default::default()
    };
    let a = q.add("x", json!(1), de.clone()).await.unwrap();
    assert_eq!(
        q.add("x", json!(2), de.clone()).await.unwrap().id,
        a.id,
        "held within the ttl"
    );
    let later = eventually("ttl passes", Duration::from_secs(5), || async {
        let j = q.add("x", json!(3), de.clone()).await.unwrap();
        (j.id != a.id).then_some(j)
    })
    .await;
    assert_eq!(later.data, json!(3));
    assert_eq!(
        q.counts().await.unwrap().waiting,
        2,
        "the first job is still there, unfinished"
    );
}

pub async fn cron_scheduler_fires(b: Backend) {
    let q = queue(&b, "cronfire");
    q.upsert_scheduler(
        "every-second",
        Schedule::Cron {
            pattern: "* * * * * *".into(),
            tz: Some("America/New_York".into()),
        },
        "beat",
        json!({"c": true}),
        JobOptions::default(),
    )
    .await
    .unwrap();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let s2 = seen.clone();
    let w = q
        .worker()
        .handler(
            "beat",
            keel::handler_fn(move |_| {
                let s = s2.clone();
                async move {
                    s.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok(json!(null))
                }
            }),
        )
        .start()
        .await
        .unwrap();
    eventually("cron fired twice", Duration::from_secs(8), || async {
        (seen.load(std::sync::atomic::Ordering::SeqCst) >= 2).then_some(())
    })
    .await;
    let info = q.schedulers().await.unwrap();
    assert!(info[0].next_run_ms.unwrap() > keel::now_ms() - 1000);
    assert!(q.remove_scheduler("every-second").await.unwrap());
    w.close(Duration::from_secs(5)).await.unwrap();
}

pub async fn workers_survive_obliterate(b: Backend) {
    let q = queue(&b, "obliterate");
    let w = q
        .worker()
        .fallback(keel::handler_fn(|ctx| async move { Ok(ctx.job.data) }))
        .start()
        .await
        .unwrap();
    let first = q.add("a", json!(1), JobOptions::default()).await.unwrap();
    wait_state(&q, &first.id, JobState::Completed).await;
    q.pause().await.unwrap();
    q.obliterate(false).await.unwrap();
    let c = q.counts().await.unwrap();
    assert_eq!(
        (c.completed, c.paused),
        (0, false),
        "jobs and the pause flag are gone"
    );
    let second = q.add("b", json!(2), JobOptions::default()).await.unwrap();
    let done = wait_state(&q, &second.id, JobState::Completed).await;
    assert_eq!(
        done.returnvalue,
        Some(json!(2)),
        "the running worker sees jobs added after"
    );
    w.close(Duration::from_secs(5)).await.unwrap();
}

/// Custom ids follow BullMQ's rule exactly (`String(parseInt(id, 10)) === id` is refused):
/// what BullMQ refuses is a 400 naming the field before anything is written, what it accepts
/// is stored under that id.
pub async fn custom_ids_follow_bullmq_rule(b: Backend) {
    let q = queue(&b, "ids");
    for bad in ["-1", "-5", "NaN", "42", "0"] {
        let err = q
            .add(
                "x",
                json!(1),
                JobOptions {
                    job_id: Some(bad.into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), err.field()),
            ("invalid-input", Some("job_id")),
            "{bad}: {err}"
        );
    }
    for good in ["007", "+5", "-0", "1e3", "1.5", "Infinity"] {
        let job = q
            .add(
                "x",
                json!(1),
                JobOptions {
                    job_id: Some(good.into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{good}: {e}"));
        assert_eq!(job.id, good);
    }
    assert_eq!(
        q.counts().await.unwrap().waiting,
        6,
        "only the accepted ids"
    );
}
