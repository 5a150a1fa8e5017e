//! Dead-letter queue behaviours.

use std::time::Duration;

use keel::{handler_fn, Backend, JobError, JobOptions, JobState};
use serde_json::json;

use crate::support::*;

fn failing() -> keel::Processor {
    handler_fn(|_| async {
        Err(JobError::retry("downstream said no").with_stack("at send (mail.rs:10)"))
    })
}

pub async fn terminal_failure_is_dead_lettered(b: Backend) {
    let q = queue(&b, "dead");
    let job = q
        .add(
            "send",
            json!({"to": "x"}),
            JobOptions {
                attempts: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let w = q.worker().fallback(failing()).start().await.unwrap();
    wait_state(&q, &job.id, JobState::Failed).await;
    let dlq = q.dlq();
    assert_eq!(dlq.name(), format!("dlq-{}", q.name()));
    let entry = eventually("DLQ entry", Duration::from_secs(10), || async {
        dlq.get(&keel::dlq::entry_id(&job.id)).await.unwrap()
    })
    .await;
    w.close(Duration::from_secs(5)).await.unwrap();
    assert_eq!(entry.original_job_id, job.id);
    assert_eq!(entry.original_queue, q.name());
    assert_eq!(entry.name, "send");
    assert_eq!(entry.data, json!({"to": "x"}));
    assert_eq!(entry.opts.attempts, Some(2));
    assert_eq!(entry.last_error, "downstream said no");
    assert_eq!(entry.stacktrace, vec!["at send (mail.rs:10)".to_string()]);
    // The job itself carries the reason; handler stacks live in the DLQ entry on both backends
    // (bullmq-official stores none on the job).
    let stored = q.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!(stored.failed_reason.as_deref(), Some("downstream said no"));
    assert!(stored.stacktrace.is_empty());
    assert_eq!(entry.attempts, 2);
    assert!(entry.failed_at > 0);
    assert_eq!(dlq.count().await.unwrap(), 1);
    // Recording again is harmless.
    let stored = q.get_job(&job.id).await.unwrap().unwrap();
    dlq.record(&stored, "again", vec![]).await.unwrap();
    assert_eq!(dlq.count().await.unwrap(), 1);
    assert_eq!(
        dlq.entries(1, 10).await.unwrap()[0].last_error,
        "downstream said no"
    );
}

pub async fn reconciler_heals_a_crash(b: Backend) {
    let q = queue(&b, "heal");
    let job = q.add("x", json!(7), JobOptions::default()).await.unwrap();
    // A worker without dead-lettering stands for a process that died between the two steps.
    let w = q
        .worker()
        .dead_letter(false)
        .fallback(failing())
        .start()
        .await
        .unwrap();
    wait_state(&q, &job.id, JobState::Failed).await;
    w.close(Duration::from_secs(5)).await.unwrap();
    let dlq = q.dlq();
    assert_eq!(dlq.count().await.unwrap(), 0);
    let report = dlq.reconcile_once(Duration::from_secs(3600)).await.unwrap();
    assert_eq!((report.scanned, report.recorded), (1, 1));
    let entry = dlq
        .get(&keel::dlq::entry_id(&job.id))
        .await
        .unwrap()
        .expect("recorded");
    assert_eq!(entry.last_error, "downstream said no");
    assert_eq!(entry.data, json!(7));
    let again = dlq.reconcile_once(Duration::from_secs(3600)).await.unwrap();
    assert_eq!(again.recorded, 0, "idempotent");
    // The background service's pass is the same pass, with its settings.
    use keel::service::Service as _;
    let config = keel::dlq::ReconcilerConfig {
        grace: Duration::ZERO,
        ..Default::default()
    };
    config.validate().unwrap();
    let svc = keel::dlq::Reconciler::new(dlq.clone(), config);
    let pass = svc.run_once().await.unwrap();
    assert_eq!((pass.scanned, pass.recorded), (1, 0), "{pass:?}");
    assert!(keel::dlq::ReconcilerConfig {
        grace: keel::dlq::RECONCILE_WINDOW,
        ..Default::default()
    }
    .validate()
    .is_err());
}

pub async fn replay_and_replay_all(b: Backend) {
    let q = queue(&b, "replay");
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            q.add(
                "x",
                json!(i),
                JobOptions {
                    attempts: Some(1),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .id,
        );
    }
    let w = q.worker().fallback(failing()).start().await.unwrap();
    let dlq = q.dlq();
    eventually("three entries", Duration::from_secs(10), || async {
        (dlq.count().await.unwrap() == 3).then_some(())
    })
    .await;
    w.close(Duration::from_secs(5)).await.unwrap();
    // Replay one: back in the original queue under its id, fresh attempts, entry gone.
    let replayed = dlq.replay(&keel::dlq::entry_id(&ids[0])).await.unwrap();
    assert_eq!(replayed.id, ids[0]);
    assert_eq!(replayed.attempts_made, 0);
    assert_eq!(q.job_state(&ids[0]).await.unwrap(), Some(JobState::Waiting));
    assert_eq!(dlq.count().await.unwrap(), 2);
    assert_eq!(
        dlq.replay("failed-nope").await.unwrap_err().code(),
        "not-found"
    );
    assert_eq!(dlq.replay_all_dry_run().await.unwrap(), 2);
    assert_eq!(dlq.count().await.unwrap(), 2, "a dry run changes nothing");
    assert_eq!(dlq.replay_all().await.unwrap(), 2);
    assert_eq!(dlq.count().await.unwrap(), 0);
    let w = q
        .worker()
        .fallback(handler_fn(|_| async { Ok(json!("fixed")) }))
        .start()
        .await
        .unwrap();
    for id in &ids {
        assert_eq!(
            wait_state(&q, id, JobState::Completed).await.returnvalue,
            Some(json!("fixed"))
        );
    }
    w.close(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        dlq.reconcile_once(Duration::from_secs(3600))
            .await
            .unwrap()
            .recorded,
        0
    );
}

pub async fn remove_is_not_resurrected(b: Backend) {
    let q = queue(&b, "rmdlq");
    let job = q.add("x", json!(1), JobOptions::default()).await.unwrap();
    let w = q.worker().fallback(failing()).start().await.unwrap();
    let dlq = q.dlq();
    let id = keel::dlq::entry_id(&job.id);
    eventually("entry", Duration::from_secs(10), || async {
        dlq.get(&id).await.unwrap()
    })
    .await;
    w.close(Duration::from_secs(5)).await.unwrap();
    assert!(dlq.remove(&id).await.unwrap());
    assert!(!dlq.remove(&id).await.unwrap());
    assert_eq!(
        q.job_state(&job.id).await.unwrap(),
        None,
        "the original failed job went too"
    );
    assert_eq!(
        dlq.reconcile_once(Duration::from_secs(3600))
            .await
            .unwrap()
            .recorded,
        0
    );
    assert_eq!(dlq.count().await.unwrap(), 0);
}

/// A job retried outside the DLQ (Bull Board, Node's `job.retry()`, `Queue::retry`) loses its
/// stale entry once it is no longer failed, and an entry is refreshed when its job fails again.
pub async fn reconciler_drops_and_refreshes_stale_entries(b: Backend) {
    let q = queue(&b, "stale");
    let job = q
        .add(
            "x",
            json!({"n": 1}),
            JobOptions {
                attempts: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let id = keel::dlq::entry_id(&job.id);
    let dlq = q.dlq();
    let w = q.worker().fallback(failing()).start().await.unwrap();
    let first = eventually("entry", Duration::from_secs(10), || async {
        dlq.get(&id).await.unwrap()
    })
    .await;
    w.close(Duration::from_secs(5)).await.unwrap();

    // Retried elsewhere and failed again, with no dead-lettering worker to see it.
    tokio::time::sleep(Duration::from_millis(5)).await;
    q.retry(&job.id).await.unwrap();
    let w = q
        .worker()
        .dead_letter(false)
        .fallback(failing())
        .start()
        .await
        .unwrap();
    let failed_again = eventually("failed again", Duration::from_secs(10), || async {
        let j = q.get_job(&job.id).await.unwrap()?;
        let failed = q.job_state(&job.id).await.unwrap() == Some(JobState::Failed);
        (failed && j.finished_on > Some(first.failed_at)).then_some(j)
    })
    .await;
    w.close(Duration::from_secs(5)).await.unwrap();
    let report = dlq.reconcile_once(Duration::from_secs(3600)).await.unwrap();
    assert_eq!(
        (report.recorded, report.refreshed, report.removed),
        (0, 1, 0)
    );
    let refreshed = dlq.get(&id).await.unwrap().expect("still there");
    assert_eq!(Some(refreshed.failed_at), failed_again.finished_on);
    assert_eq!(refreshed.attempts, failed_again.attempts_made);
    assert_eq!(
        refreshed.stacktrace, first.stacktrace,
        "the handler's stack is kept"
    );
    let again = dlq.reconcile_once(Duration::from_secs(3600)).await.unwrap();
    assert_eq!((again.refreshed, again.removed), (0, 0), "idempotent");

    // Retried elsewhere and completed: the entry goes, so a replay cannot run it again.
    q.retry(&job.id).await.unwrap();
    let report = dlq.reconcile_once(Duration::from_secs(3600)).await.unwrap();
    assert_eq!(report.removed, 1, "a waiting job is no dead letter");
    assert!(dlq.get(&id).await.unwrap().is_none());
    let w = q
        .worker()
        .fallback(handler_fn(|_| async { Ok(json!("ok")) }))
        .start()
        .await
        .unwrap();
    wait_state(&q, &job.id, JobState::Completed).await;
    w.close(Duration::from_secs(5)).await.unwrap();
    let report = dlq.reconcile_once(Duration::from_secs(3600)).await.unwrap();
    assert_eq!((report.recorded, report.removed), (0, 0));
    assert_eq!(dlq.count().await.unwrap(), 0);
}

/// `dlq-*` queues are written by Keel only; a job put there by another tool is listed as
/// unreadable, never breaks the listing or replay-all, and can be removed.
pub async fn dlq_queues_refuse_enqueues_and_survive_foreign_jobs(b: Backend) {
    let q = queue(&b, "foreign");
    let dlq = q.dlq();
    let err = dlq
        .queue()
        .add("x", json!({}), JobOptions::default())
        .await
        .unwrap_err();
    assert_eq!((err.code(), err.field()), ("invalid-input", Some("queue")));
    let err = dlq
        .queue()
        .add_bulk(vec![keel::NewJob {
            name: "x".into(),
            data: json!(1),
            opts: JobOptions::default(),
        }])
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("queue"));
    assert_eq!(dlq.count().await.unwrap(), 0, "nothing added");

    // What another client could still write there: a job that is not a dead letter.
    b.raw()
        .add(
            dlq.name(),
            keel::NewJob {
                name: "x".into(),
                data: json!({"not": "an entry"}),
                opts: JobOptions {
                    job_id: Some("failed-999".into()),
                    ..Default::default()
                },
            },
        )
        .await
        .unwrap();
    let job = q
        .add(
            "x",
            json!(1),
            JobOptions {
                attempts: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let w = q.worker().fallback(failing()).start().await.unwrap();
    let real = keel::dlq::entry_id(&job.id);
    eventually("entry", Duration::from_secs(10), || async {
        dlq.get(&real).await.unwrap()
    })
    .await;
    w.close(Duration::from_secs(5)).await.unwrap();
    let page = dlq.page(1, 50).await.unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].id, real);
    assert_eq!(page.unreadable, vec!["failed-999".to_string()]);
    assert_eq!(
        dlq.replay("failed-999").await.unwrap_err().code(),
        "conflict"
    );
    let report = dlq.reconcile_once(Duration::from_secs(3600)).await.unwrap();
    assert_eq!(report.removed, 0);
    assert_eq!(dlq.replay_all().await.unwrap(), 1, "the real entry only");
    assert!(dlq.remove("failed-999").await.unwrap());
    assert_eq!(dlq.count().await.unwrap(), 0);
}
