//! The records store suite, run against PostgreSQL (a fresh database per test) and SQLite (a
//! fresh file per test). Over 600 lines: one suite for every record kind (tokens, logs, runs,
//! users, workflows, email and AI records), so that each runs on both databases the same way.

use keel_records::messages::{AiFilter, EmailFilter, NewAiEvent, NewAiMessage, NewAiRun, NewEmail};
use keel_records::testing::{postgres, sqlite};
use keel_records::workflow::{
    InstanceFilter, InstanceStatus, NewDefinition, NewInstance, NewStep, OnFailure, StepEvent,
    StepStatus, StepUpdate, Trigger, WorkflowWrite,
};
use keel_records::{
    Admin, LogFilter, LogStore, NewAccess, NewAudit, NewRun, PoolSettings, Role, RunFilter,
    RunStore, Scope, SqlStore, TenantStore, TokenStore, UserStore,
};
use keel_records::{MessageStore, WorkflowStore};
use serde_json::json;

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = crate::postgres().await;
                    crate::$name(&*db.store).await;
                    db.close().await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = crate::sqlite().await;
                    crate::$name(&*db.store).await;
                    db.close().await;
                }
            )*
        }
    };
}

both!(
    migrations_up_down_up,
    tokens_are_hashed_scoped_and_revocable,
    tenants_never_read_each_others_rows,
    logs_filter_and_page_newest_first,
    runs_are_recorded_with_events,
    users_have_argon2id_passwords,
    users_are_listed_scoped_and_disabled,
    workflow_definitions_are_versioned,
    workflow_instances_settle_in_one_transaction,
    a_fan_in_finishing_at_once_is_seen_ready,
    workflow_instances_are_listed_cancelled_and_rerun,
    emails_are_recorded_filtered_and_scoped,
    ai_runs_messages_events_and_tasks,
);

async fn migrations_up_down_up(s: &SqlStore) {
    let applied = s.migrate_up().await.unwrap();
    assert_eq!(applied.len(), 9, "{applied:?}");
    assert!(s.migrate_up().await.unwrap().is_empty(), "up is idempotent");
    s.create_token("t", Role::Owner, None).await.unwrap();
    // Two AI calls on their runs (20261207): one the handler wrote alone (job j1) and one a
    // run recorder wrote on its attempt's run (j2, failed, to be retried). Going down they are
    // AI runs of the AI tables again, with their messages and events; going up each is on a
    // run again: j2's on the same row, j1's on a run of its own (the handler's run was no run
    // before).
    s.record_ai_runs(&[ai_run(None, "j1", "m", "completed", 1_000)])
        .await
        .unwrap();
    let mut carried = run(None, "ai-content", "j2", "failed");
    carried.ai = Some(Box::new(ai_run(None, "j2", "m", "retrying", 2_000)));
    let j2 = s.insert_runs(&[carried]).await.unwrap()[0];
    let calls = |s: &SqlStore| {
        let s = s.clone();
        async move {
            let runs = s
                .list_ai_runs(&Scope::All, &AiFilter::default(), 1, 50)
                .await
                .unwrap();
            let mut out = Vec::new();
            for r in runs.items {
                let of = AiFilter {
                    run_id: Some(r.id),
                    ..AiFilter::default()
                };
                let m = s.list_ai_messages(&Scope::All, &of, 1, 50).await.unwrap();
                let e = s.list_ai_events(&Scope::All, &of, 1, 50).await.unwrap();
                let m: Vec<_> = m
                    .items
                    .into_iter()
                    .map(|m| (m.role, m.content, m.truncated))
                    .collect();
                let e: Vec<_> = e
                    .items
                    .into_iter()
                    .map(|e| (e.at, e.kind, e.message, e.trace_id))
                    .collect();
                out.push((r.run.job_id, r.run.status, r.run.trace_id, m, e));
            }
            out.sort();
            out
        }
    };
    let runs_of = |s: &SqlStore| {
        let s = s.clone();
        async move {
            let mut runs: Vec<_> = s
                .list_runs(&Scope::All, &RunFilter::default(), 1, 50)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|r| (r.job_id, r.status, r.worker, r.error))
                .collect();
            runs.sort();
            runs
        }
    };
    // What the AI tables hold while the newest is down: runs, messages, events.
    let ai_tables = |s: &SqlStore| {
        let s = s.clone();
        async move {
            let mut n = Vec::new();
            for t in ["keel_ai_runs", "keel_ai_messages", "keel_ai_events"] {
                let c: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {t}"))
                    .fetch_one(s.pool())
                    .await
                    .unwrap();
                n.push(c);
            }
            n
        }
    };
    let before = calls(s).await;
    assert_eq!(before.len(), 2, "{before:?}");
    assert!(
        before.iter().all(|c| c.3.len() == 3 && c.4.len() == 3),
        "{before:?}"
    );
    assert_eq!(before[1].1, "retrying");
    let job_runs = runs_of(s).await;
    assert_eq!(
        job_runs
            .iter()
            .map(|r| (r.0.as_str(), r.1.as_str(), r.2.as_str()))
            .collect::<Vec<_>>(),
        [("j1", "completed", "keel-handlers"), ("j2", "failed", "w1")]
    );
    assert_eq!(s.migrate_down(1).await.unwrap(), vec![applied[8]]);
    // Each call's last event is stored again in the AI tables.
    assert_eq!(ai_tables(s).await, [2, 6, 6]);
    let same_id: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM keel_ai_runs WHERE id = $1")
        .bind(j2)
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert_eq!(same_id, 1, "a call keeps its run's id");
    assert_eq!(
        runs_of(s).await,
        job_runs[1..],
        "the handler's run was no run before"
    );
    assert_eq!(s.migrate_up().await.unwrap(), vec![applied[8]]);
    assert_eq!(calls(s).await, before);
    assert_eq!(runs_of(s).await, job_runs);
    assert_eq!(
        s.ai_run(&Scope::All, j2).await.unwrap().unwrap().run.job_id,
        "j2"
    );
    // The AI records' keys (20261206) go down and up with them kept; on PostgreSQL the
    // messages' own (run_id, position) index is there only while that one is down.
    let run_index = |s: &SqlStore| {
        let s = s.clone();
        async move {
            if s.database() != "postgres" {
                return None;
            }
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_indexes WHERE indexname = 'keel_ai_messages_run'",
            )
            .fetch_one(s.pool())
            .await
            .unwrap();
            Some(n)
        }
    };
    let pg = s.database() == "postgres";
    assert_eq!(s.migrate_down(1).await.unwrap(), vec![applied[8]]);
    assert_eq!(run_index(s).await, pg.then_some(0));
    assert_eq!(s.migrate_down(1).await.unwrap(), vec![applied[7]]);
    assert_eq!(run_index(s).await, pg.then_some(1));
    assert_eq!(ai_tables(s).await, [2, 6, 6]);
    assert_eq!(s.migrate_up().await.unwrap(), vec![applied[7], applied[8]]);
    assert_eq!(run_index(s).await, pg.then_some(0));
    assert_eq!(calls(s).await, before);
    // The next (the instances' revisions) goes down and up again with the instances kept;
    // the state this store remembers at a revision that is gone is read again.
    let wf = hex_id(7);
    s.write_workflows(&[WorkflowWrite::Create(instance(&wf, &[("a", &[])]))])
        .await
        .unwrap();
    assert_eq!(
        s.migrate_down(3).await.unwrap(),
        vec![applied[8], applied[7], applied[6]]
    );
    assert!(s.workflow_state(&Scope::All, &wf).await.unwrap().is_some());
    assert_eq!(
        s.migrate_up().await.unwrap(),
        vec![applied[6], applied[7], applied[8]]
    );
    let done = s
        .write_workflows(&[step(&wf, "a", StepEvent::Completed { output: json!(1) })])
        .await
        .unwrap();
    assert_eq!(done[0].state.instance.status, InstanceStatus::Completed);
    assert_eq!(
        s.migrate_down(3).await.unwrap(),
        vec![applied[8], applied[7], applied[6]]
    );
    assert_eq!(s.migrate_down(1).await.unwrap(), vec![applied[5]]);
    assert_eq!(ai_tables(s).await, [2, 6, 6]);
    assert_eq!(
        s.migrate_up().await.unwrap(),
        vec![applied[5], applied[6], applied[7], applied[8]]
    );
    assert_eq!(calls(s).await, before);
    assert_eq!(
        s.migrate_down(4).await.unwrap(),
        vec![applied[8], applied[7], applied[6], applied[5]]
    );
    // One step further down drops the email and AI tables: the others stay.
    assert_eq!(s.migrate_down(1).await.unwrap(), vec![applied[4]]);
    assert!(s
        .list_emails(&Scope::All, &EmailFilter::default(), 1, 10)
        .await
        .is_err());
    assert_eq!(s.list_tokens(&Scope::All).await.unwrap().len(), 1);
    let reverted = s.migrate_down(4).await.unwrap();
    assert_eq!(
        reverted,
        vec![applied[3], applied[2], applied[1], applied[0]]
    );
    assert!(
        s.list_tokens(&Scope::All).await.is_err(),
        "tables are gone after down"
    );
    assert_eq!(s.migrate_up().await.unwrap(), applied);
    assert!(
        s.list_tokens(&Scope::All).await.unwrap().is_empty(),
        "a fresh schema"
    );
    let h = s.health().await.unwrap();
    assert!(h.size >= 1 && h.max >= 1);
}

async fn tokens_are_hashed_scoped_and_revocable(s: &SqlStore) {
    s.migrate_up().await.unwrap();
    let acme = s.create_tenant("acme").await.unwrap();
    assert_eq!(
        s.create_tenant("acme").await.unwrap_err().code(),
        "conflict"
    );
    let (owner, secret) = s.create_token("ops", Role::Owner, None).await.unwrap();
    let (viewer, vsecret) = s
        .create_token("acme-ro", Role::Viewer, Some(&acme.id))
        .await
        .unwrap();
    assert!(secret.starts_with("keel_"));
    assert_eq!(owner.hint, secret[..12]);
    let found = s.authenticate(&secret).await.unwrap().unwrap();
    assert_eq!(
        (found.id.as_str(), found.role),
        (owner.id.as_str(), Role::Owner)
    );
    assert!(found.last_used_at.is_some());
    assert!(s.authenticate("keel_wrong").await.unwrap().is_none());
    assert!(s.authenticate("").await.unwrap().is_none());
    assert_eq!(s.count_owner_tokens().await.unwrap(), 1);
    // The secret is stored only hashed.
    let raw: Vec<String> = sqlx::query_scalar("SELECT secret_hash FROM keel_api_tokens")
        .fetch_all(s.pool())
        .await
        .unwrap();
    assert!(raw
        .iter()
        .all(|h| h.len() == 64 && !h.contains(&secret[5..])));
    // A tenant sees only its own tokens and cannot revoke others'.
    let mine = s
        .list_tokens(&Scope::Tenant(acme.id.clone()))
        .await
        .unwrap();
    assert_eq!(
        mine.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
        vec![viewer.id.clone()]
    );
    assert!(!s
        .revoke_token(&Scope::Tenant(acme.id.clone()), &owner.id)
        .await
        .unwrap());
    assert_eq!(s.list_tokens(&Scope::All).await.unwrap().len(), 2);
    assert!(s.revoke_token(&Scope::All, &viewer.id).await.unwrap());
    assert!(
        !s.revoke_token(&Scope::All, &viewer.id).await.unwrap(),
        "already revoked"
    );
    assert!(s.authenticate(&vsecret).await.unwrap().is_none());
    assert!(
        s.token_by_id(&viewer.id).await.unwrap().is_none(),
        "revoked"
    );
    assert_eq!(
        s.token_by_id(&owner.id).await.unwrap().map(|t| t.role),
        Some(Role::Owner)
    );
    assert!(s.token_by_id("nope").await.unwrap().is_none());
    let listed = s.list_tokens(&Scope::All).await.unwrap();
    assert!(listed
        .iter()
        .any(|t| t.id == viewer.id && t.revoked_at.is_some()));
}

fn audit(tenant: Option<&str>, action: &str, resource: &str) -> NewAudit {
    NewAudit {
        tenant_id: tenant.map(str::to_string),
        actor: format!("token:{}", tenant.unwrap_or("root")),
        action: action.into(),
        resource: resource.into(),
        ip: Some("127.0.0.1".into()),
        user_agent: Some("test".into()),
        status: 200,
        payload: Some(json!({"password": "***"})),
    }
}

fn run(tenant: Option<&str>, queue: &str, job: &str, status: &str) -> NewRun {
    NewRun {
        tenant_id: tenant.map(str::to_string),
        queue: queue.into(),
        job_id: job.into(),
        name: "send".into(),
        attempt: 1,
        status: status.into(),
        started_at: 1_000,
        finished_at: 1_250,
        error: (status != "completed").then(|| "boom".to_string()),
        worker: "w1".into(),
        trace_id: "t1".into(),
        plugin_id: None,
        error_stack: None,
        ai: None,
    }
}

async fn tenants_never_read_each_others_rows(s: &SqlStore) {
    s.migrate_up().await.unwrap();
    let a = s.create_tenant("a").await.unwrap().id;
    let b = s.create_tenant("b").await.unwrap().id;
    s.record_audit(audit(Some(&a), "owner.queue.pause", "queue:qa"))
        .await
        .unwrap();
    s.record_audit(audit(Some(&b), "owner.queue.pause", "queue:qb"))
        .await
        .unwrap();
    s.record_audit(audit(None, "owner.token.create", "token:x"))
        .await
        .unwrap();
    s.record_access(NewAccess {
        tenant_id: Some(b.clone()),
        actor: "token:b".into(),
        action: "owner.read.queue_job".into(),
        resource: "job:qb/1".into(),
        cached: true,
        fields: vec!["data".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    s.insert_runs(&[
        run(Some(&a), "qa", "1", "completed"),
        run(Some(&b), "qb", "2", "failed"),
    ])
    .await
    .unwrap();
    let f = LogFilter::default();
    let ta = Scope::Tenant(a.clone());
    let seen = s.list_audit(&ta, &f, 1, 50).await.unwrap();
    assert_eq!(seen.total, 1);
    assert_eq!(seen.items[0].resource, "queue:qa");
    assert_eq!(s.list_audit(&Scope::All, &f, 1, 50).await.unwrap().total, 3);
    assert_eq!(s.list_access(&ta, &f, 1, 50).await.unwrap().total, 0);
    let access = s
        .list_access(&Scope::Tenant(b.clone()), &f, 1, 50)
        .await
        .unwrap();
    assert_eq!(access.items.len(), 1);
    assert!(access.items[0].cached);
    assert_eq!(access.items[0].fields, vec!["data".to_string()]);
    let runs = s
        .list_runs(&ta, &RunFilter::default(), 1, 50)
        .await
        .unwrap();
    assert_eq!(
        runs.items
            .iter()
            .map(|r| r.queue.as_str())
            .collect::<Vec<_>>(),
        vec!["qa"]
    );
    let b_run = s
        .list_runs(&Scope::Tenant(b.clone()), &RunFilter::default(), 1, 50)
        .await
        .unwrap()
        .items[0]
        .id;
    assert!(
        s.get_run(&ta, b_run).await.unwrap().is_none(),
        "another tenant's run is invisible"
    );
    assert!(s.get_run(&Scope::All, b_run).await.unwrap().is_some());
}

async fn logs_filter_and_page_newest_first(s: &SqlStore) {
    s.migrate_up().await.unwrap();
    for i in 0..25 {
        let action = if i % 5 == 0 {
            "owner.dlq.replay"
        } else {
            "owner.queue.pause"
        };
        s.record_audit(audit(None, action, &format!("queue:q{}/job{i}", i % 2)))
            .await
            .unwrap();
    }
    let all = LogFilter::default();
    let p1 = s.list_audit(&Scope::All, &all, 1, 10).await.unwrap();
    assert_eq!(
        (p1.total, p1.items.len(), p1.page, p1.limit),
        (25, 10, 1, 10)
    );
    assert!(
        p1.items.windows(2).all(|w| w[0].id > w[1].id),
        "newest first"
    );
    let p3 = s.list_audit(&Scope::All, &all, 3, 10).await.unwrap();
    assert_eq!(p3.items.len(), 5);
    assert!(p3.items[0].id < p1.items[9].id);
    let by_action = LogFilter {
        action: Some("owner.dlq.replay".into()),
        ..Default::default()
    };
    assert_eq!(
        s.list_audit(&Scope::All, &by_action, 1, 50)
            .await
            .unwrap()
            .total,
        5
    );
    let one = LogFilter {
        id: Some(p3.items[0].id),
        ..Default::default()
    };
    let got = s.list_audit(&Scope::All, &one, 1, 50).await.unwrap();
    assert_eq!(
        got.items.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![p3.items[0].id]
    );
    let by_resource = LogFilter {
        resource: Some("queue:q1".into()),
        ..Default::default()
    };
    let r = s
        .list_audit(&Scope::All, &by_resource, 1, 50)
        .await
        .unwrap();
    assert_eq!(r.total, 12);
    assert!(r.items.iter().all(|e| e.resource.starts_with("queue:q1/")));
    // `%` and `_` in a filter are not wildcards.
    let wild = LogFilter {
        resource: Some("queue:q%".into()),
        ..Default::default()
    };
    assert_eq!(
        s.list_audit(&Scope::All, &wild, 1, 50).await.unwrap().total,
        0
    );
    let at = p1.items[0].at;
    let window = LogFilter {
        from: Some(at + 1),
        ..Default::default()
    };
    assert_eq!(
        s.list_audit(&Scope::All, &window, 1, 50)
            .await
            .unwrap()
            .total,
        0
    );
    let until = LogFilter {
        to: Some(at),
        actor: Some("token:root".into()),
        ..Default::default()
    };
    assert_eq!(
        s.list_audit(&Scope::All, &until, 1, 50)
            .await
            .unwrap()
            .total,
        25
    );
    assert_eq!(p1.items[0].payload, Some(json!({"password": "***"})));
    let e = s.list_audit(&Scope::All, &all, 0, 10).await.unwrap_err();
    assert_eq!(e.field(), Some("page"));
    let e = s.list_audit(&Scope::All, &all, 1, 1001).await.unwrap_err();
    assert_eq!(e.field(), Some("limit"));
}

async fn runs_are_recorded_with_events(s: &SqlStore) {
    s.migrate_up().await.unwrap();
    let batch: Vec<NewRun> = (0..50)
        .map(|i| {
            run(
                None,
                if i % 2 == 0 { "mail" } else { "hooks" },
                &i.to_string(),
                if i % 10 == 0 { "dead" } else { "completed" },
            )
        })
        .collect();
    s.insert_runs(&batch).await.unwrap();
    let mail = RunFilter {
        queue: Some("mail".into()),
        ..Default::default()
    };
    assert_eq!(
        s.list_runs(&Scope::All, &mail, 1, 100).await.unwrap().total,
        25
    );
    let dead = RunFilter {
        status: Some("dead".into()),
        ..Default::default()
    };
    let d = s.list_runs(&Scope::All, &dead, 1, 100).await.unwrap();
    assert_eq!(d.total, 5);
    let (r, events) = s
        .get_run(&Scope::All, d.items[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (r.duration_ms, r.error.as_deref()),
        (Some(250), Some("boom"))
    );
    assert_eq!(
        events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        vec!["started", "error", "dead"]
    );
    let job = RunFilter {
        job_id: Some("7".into()),
        ..Default::default()
    };
    assert_eq!(
        s.list_runs(&Scope::All, &job, 1, 10).await.unwrap().total,
        1
    );
    assert!(s.get_run(&Scope::All, 999_999).await.unwrap().is_none());

    // The http handler's runs carry the plugin and the failure's stack (PluginExecutionLog),
    // over both write paths (PostgreSQL COPYs runs without an error).
    let plugin_runs = vec![
        NewRun {
            plugin_id: Some("seo-pack".into()),
            ..run(None, "plugin", "p1", "completed")
        },
        NewRun {
            plugin_id: Some("seo-pack".into()),
            error_stack: Some("Error: boom\n    at hook (seo.js:3)".into()),
            ..run(None, "plugin", "p2", "dead")
        },
        NewRun {
            plugin_id: Some("other".into()),
            ..run(None, "plugin", "p3", "completed")
        },
        // A postponement by a rate limit: listed, not counted per minute.
        run(None, "plugin", "p4", "delayed"),
    ];
    s.insert_runs(&plugin_runs).await.unwrap();
    let seo = RunFilter {
        plugin: Some("seo-pack".into()),
        ..Default::default()
    };
    let mut got = s.list_runs(&Scope::All, &seo, 1, 10).await.unwrap().items;
    got.sort_by(|a, b| a.job_id.cmp(&b.job_id));
    assert_eq!(
        got.iter().map(|r| r.job_id.as_str()).collect::<Vec<_>>(),
        ["p1", "p2"]
    );
    assert_eq!(got[0].plugin_id.as_deref(), Some("seo-pack"));
    assert_eq!(
        got[1].error_stack.as_deref(),
        Some("Error: boom\n    at hook (seo.js:3)")
    );

    // Per minute: the 50 above finished at 1 250 ms (minute 0); three more in minute 2
    // (120 000-179 999 ms), one of them in another tenant.
    let mut later: Vec<NewRun> = ["completed", "failed", "completed"]
        .iter()
        .enumerate()
        .map(|(i, st)| NewRun {
            finished_at: 150_000 + i as i64,
            ..run(None, "mail", &format!("m{i}"), st)
        })
        .collect();
    later[2].tenant_id = Some(s.create_tenant("runs-t").await.unwrap().id);
    s.insert_runs(&later).await.unwrap();
    let all = s.runs_per_minute(&Scope::All, 0).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|m| (m.minute, m.completed, m.failed))
            .collect::<Vec<_>>(),
        vec![(0, 47, 6), (120_000, 2, 1)],
        "the plugin runs above too; not the delayed one"
    );
    let since = s.runs_per_minute(&Scope::All, 60_000).await.unwrap();
    assert_eq!(since.len(), 1);
    let t = Scope::Tenant(later[2].tenant_id.clone().unwrap());
    let mine = s.runs_per_minute(&t, 0).await.unwrap();
    assert_eq!(
        mine.iter()
            .map(|m| (m.minute, m.completed, m.failed))
            .collect::<Vec<_>>(),
        vec![(120_000, 1, 0)]
    );
}

async fn users_have_argon2id_passwords(s: &SqlStore) {
    s.migrate_up().await.unwrap();
    let u = s
        .create_user(
            "Ada@Example.com",
            "correct horse battery",
            Role::Admin,
            None,
        )
        .await
        .unwrap();
    assert_eq!(u.email, "ada@example.com");
    let ok = s
        .verify_user("ada@example.com", "correct horse battery")
        .await
        .unwrap();
    assert_eq!(ok.map(|u| u.role), Some(Role::Admin));
    assert!(s
        .verify_user("ada@example.com", "wrong password!!")
        .await
        .unwrap()
        .is_none());
    assert!(s
        .verify_user("nobody@example.com", "correct horse battery")
        .await
        .unwrap()
        .is_none());
    let e = s
        .create_user("ada@example.com", "another long one", Role::Viewer, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "conflict");
    assert_eq!(
        s.create_user("b@example.com", "short", Role::Viewer, None)
            .await
            .unwrap_err()
            .field(),
        Some("password")
    );
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM keel_users")
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$"));
}

async fn users_are_listed_scoped_and_disabled(s: &SqlStore) {
    s.migrate_up().await.unwrap();
    let acme = s.create_tenant("acme").await.unwrap();
    let pw = "a long enough password";
    let ada = s
        .create_user("ada@example.com", pw, Role::Owner, None)
        .await
        .unwrap();
    let bob = s
        .create_user("bob@acme.test", pw, Role::Viewer, Some(&acme.id))
        .await
        .unwrap();
    assert_eq!(ada.actor(), "user:ada@example.com");
    assert_eq!(bob.scope(), Scope::Tenant(acme.id.clone()));
    let all: Vec<String> = s
        .list_users(&Scope::All)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.email)
        .collect();
    assert_eq!(all, ["ada@example.com", "bob@acme.test"]);
    let mine = s.list_users(&bob.scope()).await.unwrap();
    assert_eq!(mine.len(), 1, "a tenant sees only its own users");
    assert_eq!(mine[0].id, bob.id);
    // A tenant cannot disable someone outside it.
    assert!(!s
        .disable_user(&bob.scope(), "ADA@example.com")
        .await
        .unwrap());
    assert!(s.user_by_id(&ada.id).await.unwrap().is_some());
    for bad in ["no-at-sign", "a@", "@b", "a b@c.d", "a@b@c"] {
        let e = s
            .create_user(bad, pw, Role::Viewer, None)
            .await
            .unwrap_err();
        assert_eq!(e.field(), Some("email"), "{bad}");
    }
    // Disabled: the right password no longer signs in, and the session re-check fails.
    assert!(s
        .disable_user(&Scope::All, "ADA@example.com")
        .await
        .unwrap());
    assert!(!s
        .disable_user(&Scope::All, "ada@example.com")
        .await
        .unwrap());
    assert!(s
        .verify_user("ada@example.com", pw)
        .await
        .unwrap()
        .is_none());
    assert!(s.user_by_id(&ada.id).await.unwrap().is_none());
    let listed = s.list_users(&Scope::All).await.unwrap();
    assert!(listed[0].disabled_at.is_some() && listed[1].disabled_at.is_none());
    assert!(s.verify_user("bob@acme.test", pw).await.unwrap().is_some());
}

/// A database that does not answer is `database-unavailable` (503 in the server), not the
/// queue backend's `backend-unavailable`.
#[tokio::test]
async fn an_unreachable_database_is_database_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let settings = PoolSettings {
        acquire_timeout: std::time::Duration::from_millis(500),
        ..PoolSettings::default()
    };
    let url = format!("postgres://keel:hunter2secret@127.0.0.1:{port}/x");
    let e = SqlStore::connect(&url, &settings).await.unwrap_err();
    assert_eq!(e.code(), "database-unavailable", "{e}");
    assert!(!e.to_string().contains("hunter2secret"), "{e}");
}

fn instance(id: &str, steps: &[(&str, &[&str])]) -> NewInstance {
    NewInstance {
        id: id.to_string(),
        tenant_id: None,
        workflow: "publish".into(),
        version: 1,
        input: json!({"topic": "rust"}),
        trigger: Trigger {
            kind: "api".into(),
            reference: None,
        },
        actor: "token:t".into(),
        steps: steps
            .iter()
            .map(|(n, needs)| NewStep {
                step: n.to_string(),
                queue: "q".into(),
                job_name: "j".into(),
                needs: needs.iter().map(|s| s.to_string()).collect(),
                on_failure: OnFailure::Fail,
            })
            .collect(),
    }
}

fn step(id: &str, step: &str, event: StepEvent) -> WorkflowWrite {
    WorkflowWrite::Step(StepUpdate {
        instance_id: id.to_string(),
        step: step.to_string(),
        at: keel_core::now_ms() as i64,
        job_id: None,
        input: None,
        started_at: None,
        attempt: None,
        event,
    })
}

fn hex_id(n: u32) -> String {
    format!("{n:032x}")
}

async fn workflow_definitions_are_versioned(s: &SqlStore) {
    s.migrate_up().await.unwrap();
    let acme = s.create_tenant("acme").await.unwrap();
    let def = |spec: serde_json::Value, tenant: Option<&str>| NewDefinition {
        name: "publish".into(),
        tenant_id: tenant.map(str::to_string),
        spec,
        source: "config".into(),
        created_by: "config".into(),
    };
    let (v1, new) = s
        .save_definition(def(json!({"steps": [1]}), None))
        .await
        .unwrap();
    assert!(new);
    assert_eq!(v1.version, 1);
    let (same, new) = s
        .save_definition(def(json!({"steps": [1]}), None))
        .await
        .unwrap();
    assert!(!new, "an unchanged spec is not a new version");
    assert_eq!(same.version, 1);
    let (v2, new) = s
        .save_definition(def(json!({"steps": [2]}), None))
        .await
        .unwrap();
    assert!(new);
    assert_eq!(v2.version, 2);
    let err = s
        .save_definition(def(json!({"steps": [3]}), Some(&acme.id)))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        "conflict",
        "another tenant cannot take the name"
    );
    let latest = s.definitions(&Scope::All).await.unwrap();
    assert_eq!(latest.len(), 1);
    assert_eq!(latest[0].version, 2);
    let old = s
        .definition(&Scope::All, "publish", Some(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(old.spec, json!({"steps": [1]}));
    // A tenant sees global definitions and its own, never another tenant's.
    let other = s.create_tenant("other").await.unwrap();
    let mine = NewDefinition {
        name: "acme-only".into(),
        tenant_id: Some(acme.id.clone()),
        spec: json!({}),
        source: "api".into(),
        created_by: "user:a@acme.test".into(),
    };
    s.save_definition(mine).await.unwrap();
    let names = |d: Vec<keel_records::workflow::Definition>| {
        d.into_iter().map(|d| d.name).collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            s.definitions(&Scope::Tenant(acme.id.clone()))
                .await
                .unwrap()
        ),
        vec!["acme-only", "publish"]
    );
    assert_eq!(
        names(
            s.definitions(&Scope::Tenant(other.id.clone()))
                .await
                .unwrap()
        ),
        vec!["publish"]
    );
    assert!(s
        .definition(&Scope::Tenant(other.id), "acme-only", None)
        .await
        .unwrap()
        .is_none());
}

async fn workflow_instances_settle_in_one_transaction(s: &SqlStore) {
    s.migrate_up().await.unwrap();
    let id = hex_id(1);
    let created = s
        .write_workflows(&[WorkflowWrite::Create(instance(
            &id,
            &[("draft", &[]), ("seo", &["draft"])],
        ))])
        .await
        .unwrap();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].ready, vec!["draft"]);
    assert_eq!(created[0].state.instance.status, InstanceStatus::Pending);
    // Creating the same id again changes nothing.
    let again = s
        .write_workflows(&[WorkflowWrite::Create(instance(&id, &[("other", &[])]))])
        .await
        .unwrap();
    assert_eq!(again[0].state.steps.len(), 2);
    let r = s
        .write_workflows(&[
            step(
                &id,
                "draft",
                StepEvent::Queued {
                    job_id: "wf-x".into(),
                    input: json!({"topic": "rust"}),
                },
            ),
            step(&id, "draft", StepEvent::Started { attempt: 1 }),
            step(
                &id,
                "draft",
                StepEvent::Completed {
                    output: json!({"text": "hello"}),
                },
            ),
        ])
        .await
        .unwrap();
    assert_eq!(r[0].ready, vec!["seo"]);
    assert!(r[0].instance_changed, "pending -> running");
    // Started and completed; seo queued under its job id by the same write.
    assert_eq!(r[0].steps_changed, vec!["draft", "draft", "seo"]);
    let seo = r[0].state.step("seo").unwrap();
    assert_eq!(seo.status, StepStatus::Queued);
    assert_eq!(
        seo.job_id,
        Some(keel_records::workflow::step_job_id(&id, "seo", 0))
    );
    assert!(seo.queued_at.is_some());
    let st = s.workflow_state(&Scope::All, &id).await.unwrap().unwrap();
    assert_eq!(st.instance.status, InstanceStatus::Running);
    let draft = st.step("draft").unwrap();
    assert_eq!(draft.status, StepStatus::Completed);
    assert_eq!(draft.output, Some(json!({"text": "hello"})));
    assert_eq!(draft.input, Some(json!({"topic": "rust"})));
    assert_eq!(draft.attempts, 1);
    assert!(draft.duration_ms.is_some());
    let r = s
        .write_workflows(&[
            step(&id, "seo", StepEvent::Started { attempt: 1 }),
            step(
                &id,
                "seo",
                StepEvent::Failed {
                    attempt: 1,
                    error: "503".into(),
                    stack: Some("at seo".into()),
                    terminal: false,
                },
            ),
            step(&id, "seo", StepEvent::Started { attempt: 2 }),
            step(&id, "seo", StepEvent::Completed { output: json!(1) }),
        ])
        .await
        .unwrap();
    assert!(r[0].ready.is_empty());
    let st = s.workflow_state(&Scope::All, &id).await.unwrap().unwrap();
    assert_eq!(st.instance.status, InstanceStatus::Completed);
    assert!(st.instance.finished_at.is_some());
    assert_eq!(st.step("seo").unwrap().attempts, 2);
    assert_eq!(st.step("seo").unwrap().error, None, "the success clears it");
    // Events of unknown instances are ignored, not errors.
    assert!(s
        .write_workflows(&[step(&hex_id(99), "a", StepEvent::Started { attempt: 1 })])
        .await
        .unwrap()
        .is_empty());
}

/// Two stores on one database, as two processes: each remembers the states it wrote, and a
/// write never builds on a state the other has moved on.
mod two_processes {
    use keel_records::{PoolSettings, SqlStore};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let db = crate::postgres().await;
        let other = SqlStore::connect(&db.url(), &PoolSettings::default())
            .await
            .unwrap();
        crate::a_write_builds_on_the_other_process_s_writes(&db.store, &other).await;
        db.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let db = crate::sqlite().await;
        let other = SqlStore::connect(&db.url(), &PoolSettings::default())
            .await
            .unwrap();
        crate::a_write_builds_on_the_other_process_s_writes(&db.store, &other).await;
        db.close().await;
    }

    /// PostgreSQL only: SQLite's write lock, taken by the batch's first statement, keeps a
    /// row from appearing under a transaction that found none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_creates_at_once() {
        let db = crate::postgres().await;
        let other = SqlStore::connect(&db.url(), &PoolSettings::default())
            .await
            .unwrap();
        crate::a_create_meeting_another_keeps_the_other(&db.store, &other).await;
        db.close().await;
    }
}

async fn a_create_meeting_another_keeps_the_other(a: &SqlStore, other: &SqlStore) {
    a.migrate_up().await.unwrap();
    let id = hex_id(600);
    // Another process creates the same id and has not committed yet (its step already
    // running): `a`'s lock finds no row, and its insert waits on the other's.
    let mut tx = other.pool().begin().await.unwrap();
    sqlx::query(
        "INSERT INTO keel_wf_instances (id, workflow, version, status, input, trigger_kind, actor, reruns, created_at, updated_at, rev) \
         VALUES ($1, 'publish', 1, 'running', '{\"by\":\"other\"}', 'api', 'other', 0, 1, 1, 1)",
    )
    .bind(&id)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO keel_wf_steps (instance_id, step, position, queue, job_name, needs, on_failure, status, attempts, job_id, queued_at, started_at) \
         VALUES ($1, 'one', 0, 'q', 'j', '[]', 'fail', 'running', 1, 'job-1', 1, 1)",
    )
    .bind(&id)
    .execute(&mut *tx)
    .await
    .unwrap();
    let create = {
        let (a, id) = (a.clone(), id.clone());
        tokio::spawn(async move {
            a.write_workflows(&[WorkflowWrite::Create(instance(&id, &[("one", &[])]))])
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!create.is_finished(), "the create waits on the other's row");
    tx.commit().await.unwrap();
    let r = create.await.unwrap().unwrap();
    // The create changed nothing: the instance is the other's, as it stands.
    assert_eq!(r[0].state.instance.input, json!({"by": "other"}));
    assert_eq!(r[0].state.step("one").unwrap().status, StepStatus::Running);
    assert!(r[0].ready.is_empty(), "{:?}", r[0].ready);
    let stored = a.workflow_state(&Scope::All, &id).await.unwrap().unwrap();
    assert_eq!(stored, r[0].state);
    let rev: i64 = sqlx::query_scalar("SELECT rev FROM keel_wf_instances WHERE id = $1")
        .bind(&id)
        .fetch_one(a.pool())
        .await
        .unwrap();
    assert_eq!(rev, 1, "not written over");
    // What `a` remembers builds on it: the step's end completes the instance.
    let done = a
        .write_workflows(&[step(&id, "one", StepEvent::Completed { output: json!(1) })])
        .await
        .unwrap();
    assert_eq!(done[0].state.instance.status, InstanceStatus::Completed);
    assert_eq!(done[0].state.instance.input, json!({"by": "other"}));
}

async fn a_write_builds_on_the_other_process_s_writes(a: &SqlStore, b: &SqlStore) {
    a.migrate_up().await.unwrap();
    let id = hex_id(500);
    a.write_workflows(&[WorkflowWrite::Create(instance(
        &id,
        &[("one", &[]), ("two", &["one"]), ("three", &["two"])],
    ))])
    .await
    .unwrap();
    // b completes `one` (a remembers the instance before that), then a completes `two`.
    let r = b
        .write_workflows(&[step(&id, "one", StepEvent::Completed { output: json!(1) })])
        .await
        .unwrap();
    assert_eq!(r[0].ready, vec!["two"]);
    let r = a
        .write_workflows(&[step(&id, "two", StepEvent::Completed { output: json!(2) })])
        .await
        .unwrap();
    assert_eq!(r[0].ready, vec!["three"], "a saw b's write");
    assert_eq!(r[0].state.step("one").unwrap().output, Some(json!(1)));
    // And back: b remembers the instance at its own write; a moved it on since.
    let r = b
        .write_workflows(&[step(
            &id,
            "three",
            StepEvent::Completed { output: json!(3) },
        )])
        .await
        .unwrap();
    assert_eq!(r[0].state.instance.status, InstanceStatus::Completed);
    let st = a.workflow_state(&Scope::All, &id).await.unwrap().unwrap();
    let outputs: Vec<_> = st.steps.iter().map(|s| s.output.clone()).collect();
    assert_eq!(
        outputs,
        vec![Some(json!(1)), Some(json!(2)), Some(json!(3))]
    );
    assert_eq!(st.instance.status, InstanceStatus::Completed);
    // A cancel through a (the API's path) after b's last write is refused: a reads it ended.
    assert_eq!(
        a.cancel_instance(&Scope::All, &id)
            .await
            .unwrap_err()
            .code(),
        "conflict"
    );
}

async fn a_fan_in_finishing_at_once_is_seen_ready(s: &SqlStore) {
    s.migrate_up().await.unwrap();
    let s = std::sync::Arc::new(s.clone());
    for n in 0..10 {
        let id = hex_id(100 + n);
        s.write_workflows(&[WorkflowWrite::Create(instance(
            &id,
            &[("a", &[]), ("b", &[]), ("c", &["a", "b"])],
        ))])
        .await
        .unwrap();
        let done = |step_name: &'static str| {
            let (s, id) = (s.clone(), id.clone());
            tokio::spawn(async move {
                s.write_workflows(&[step(
                    &id,
                    step_name,
                    StepEvent::Completed {
                        output: json!(step_name),
                    },
                )])
                .await
                .unwrap()
            })
        };
        let (a, b) = (done("a"), done("b"));
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        let seen = a[0].ready.contains(&"c".to_string()) as u32
            + b[0].ready.contains(&"c".to_string()) as u32;
        assert_eq!(seen, 1, "exactly the later write sees the fan-in ready");
    }
}

async fn workflow_instances_are_listed_cancelled_and_rerun(s: &SqlStore) {
    s.migrate_up().await.unwrap();
    let acme = s.create_tenant("acme").await.unwrap();
    let mut writes = Vec::new();
    for n in 0..5 {
        let mut i = instance(&hex_id(200 + n), &[("a", &[]), ("b", &["a"])]);
        if n == 4 {
            i.tenant_id = Some(acme.id.clone());
            i.workflow = "other".into();
        }
        writes.push(WorkflowWrite::Create(i));
    }
    s.write_workflows(&writes).await.unwrap();
    let all = s
        .list_instances(&Scope::All, &InstanceFilter::default(), 1, 3)
        .await
        .unwrap();
    assert_eq!((all.total, all.items.len()), (5, 3));
    let by_name = s
        .list_instances(
            &Scope::All,
            &InstanceFilter {
                workflow: Some("other".into()),
                ..Default::default()
            },
            1,
            10,
        )
        .await
        .unwrap();
    assert_eq!(by_name.total, 1);
    let tenant = Scope::Tenant(acme.id.clone());
    let mine = s
        .list_instances(&tenant, &InstanceFilter::default(), 1, 10)
        .await
        .unwrap();
    assert_eq!(mine.total, 1, "a tenant lists only its instances");
    assert!(s
        .workflow_state(&tenant, &hex_id(200))
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        s.cancel_instance(&tenant, &hex_id(200))
            .await
            .unwrap_err()
            .code(),
        "not-found"
    );
    // Cancel: steps not started are cancelled; a second cancel is a conflict.
    let c = s.cancel_instance(&Scope::All, &hex_id(200)).await.unwrap();
    assert!(c.instance_changed);
    assert_eq!(c.state.instance.status, InstanceStatus::Cancelled);
    assert!(c
        .state
        .steps
        .iter()
        .all(|s| s.status == StepStatus::Cancelled));
    assert_eq!(
        s.cancel_instance(&Scope::All, &hex_id(200))
            .await
            .unwrap_err()
            .code(),
        "conflict"
    );
    let cancelled = s
        .list_instances(
            &Scope::All,
            &InstanceFilter {
                status: Some(InstanceStatus::Cancelled),
                ..Default::default()
            },
            1,
            10,
        )
        .await
        .unwrap();
    assert_eq!(cancelled.total, 1);
    // Re-run after a failure: the completed step keeps its output, the failed one is pending.
    let id = hex_id(201);
    s.write_workflows(&[
        step(
            &id,
            "a",
            StepEvent::Completed {
                output: json!("kept"),
            },
        ),
        step(
            &id,
            "b",
            StepEvent::Failed {
                attempt: 1,
                error: "boom".into(),
                stack: None,
                terminal: true,
            },
        ),
    ])
    .await
    .unwrap();
    let st = s.workflow_state(&Scope::All, &id).await.unwrap().unwrap();
    assert_eq!(st.instance.status, InstanceStatus::Failed);
    assert_eq!(st.instance.error.as_deref(), Some("step b failed: boom"));
    let r = s.rerun_instance(&Scope::All, &id).await.unwrap();
    assert_eq!(r.ready, vec!["b"]);
    assert_eq!(r.state.instance.reruns, 1);
    assert_eq!(r.state.instance.status, InstanceStatus::Running);
    assert_eq!(r.state.step("a").unwrap().output, Some(json!("kept")));
    assert_eq!(
        s.rerun_instance(&Scope::All, &id).await.unwrap_err().code(),
        "conflict"
    );
    // The reconciler's view: quiet running or pending instances.
    let future = keel_core::now_ms() as i64 + 1000;
    let quiet = s.quiet_instances(future, "", 100).await.unwrap();
    assert_eq!(quiet.len(), 4, "{quiet:?}");
    assert!(!quiet.contains(&hex_id(200)), "cancelled is not quiet");
    let first = s.quiet_instances(future, "", 2).await.unwrap();
    let rest = s.quiet_instances(future, &first[1], 100).await.unwrap();
    assert_eq!(
        [first, rest].concat(),
        quiet,
        "pages continue after the last id"
    );
    assert!(s.quiet_instances(0, "", 100).await.unwrap().is_empty());
}

fn email(tenant: Option<&str>, job: &str, template: &str, status: &str, at: i64) -> NewEmail {
    NewEmail {
        tenant_id: tenant.map(str::to_string),
        queue: "email-otp".into(),
        job_id: job.into(),
        job_name: "send_email_template".into(),
        attempt: 1,
        template: template.into(),
        recipient: "a***@example.com".into(),
        subject: "Welcome".into(),
        status: status.into(),
        smtp_code: Some(250),
        smtp_reply: Some("2.0.0 Ok: queued".into()),
        message_id: Some(format!("<{job}@keel>")),
        error: None,
        actor: None,
        trace_id: "t".repeat(32),
        created_at: at,
        duration_ms: 3,
    }
}

async fn emails_are_recorded_filtered_and_scoped(s: &SqlStore) {
    s.migrate_up().await.unwrap();
    let a = s.create_tenant("a").await.unwrap().id;
    s.record_emails(&[email(Some(&a), "1", "welcome", "sent", 1_000)])
        .await
        .unwrap();
    let mut failed = email(None, "2", "otp", "failed", 2_000);
    failed.smtp_code = Some(550);
    failed.error = Some("550 5.1.1 no such user".into());
    failed.actor = Some("token:ops".into());
    // A batch: both rows in one transaction.
    s.record_emails(&[failed.clone(), email(None, "3", "otp", "sent", 3_000)])
        .await
        .unwrap();
    s.record_emails(&[]).await.unwrap();
    let all = s
        .list_emails(&Scope::All, &EmailFilter::default(), 1, 10)
        .await
        .unwrap();
    assert_eq!(all.total, 3);
    assert_eq!(
        all.items
            .iter()
            .map(|e| e.email.job_id.as_str())
            .collect::<Vec<_>>(),
        ["3", "2", "1"],
        "newest first"
    );
    assert_eq!(all.items[1].email, failed, "stored as given");
    assert!(all.items[2].id < all.items[1].id);
    let by = |f: EmailFilter| async move {
        s.list_emails(&Scope::All, &f, 1, 10)
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|e| e.email.job_id)
            .collect::<Vec<_>>()
    };
    let status = |v: &str| EmailFilter {
        status: Some(v.into()),
        ..Default::default()
    };
    assert_eq!(by(status("failed")).await, ["2"]);
    let otp = EmailFilter {
        template: Some("otp".into()),
        ..Default::default()
    };
    assert_eq!(by(otp).await, ["3", "2"]);
    let range = EmailFilter {
        from: Some(1_500),
        to: Some(2_500),
        ..Default::default()
    };
    assert_eq!(by(range).await, ["2"]);
    let tenant = s
        .list_emails(&Scope::Tenant(a), &EmailFilter::default(), 1, 10)
        .await
        .unwrap();
    assert_eq!(tenant.total, 1, "a tenant sees its own");
    assert!(s
        .list_emails(&Scope::All, &EmailFilter::default(), 0, 10)
        .await
        .is_err());
}

fn ai_run(tenant: Option<&str>, job: &str, model: &str, status: &str, at: i64) -> NewAiRun {
    NewAiRun {
        tenant_id: tenant.map(str::to_string),
        queue: "ai-content".into(),
        job_id: job.into(),
        job_name: "summarize_article".into(),
        attempt: 1,
        provider: "openrouter".into(),
        model: model.into(),
        status: status.into(),
        prompt_tokens: 100,
        completion_tokens: 20,
        cost_usd: 0.0015,
        latency_ms: 40,
        http_status: Some(200),
        error: None,
        trace_id: format!("trace-{job}"),
        started_at: at,
        finished_at: at + 40,
        messages: vec![
            NewAiMessage {
                role: "system".into(),
                content: "You summarize.".into(),
                truncated: false,
            },
            NewAiMessage {
                role: "user".into(),
                content: "Text".into(),
                truncated: false,
            },
            NewAiMessage {
                role: "assistant".into(),
                content: "Summary".into(),
                truncated: true,
            },
        ],
        events: vec![
            NewAiEvent {
                at,
                kind: "request".into(),
                message: format!("model {model}"),
            },
            NewAiEvent {
                at: at + 40,
                kind: "response".into(),
                message: "200".into(),
            },
        ],
    }
}

async fn ai_runs_messages_events_and_tasks(s: &SqlStore) {
    s.migrate_up().await.unwrap();
    let a = s.create_tenant("a").await.unwrap().id;
    // Job 1 failed once then completed; job 2 (tenant a, another model) completed.
    let mut retry = ai_run(None, "1", "m-small", "retrying", 3_600_000);
    retry.error = Some("429 Too Many Requests".into());
    retry.http_status = Some(429);
    retry.completion_tokens = 0;
    retry.messages.truncate(2);
    let mut second = ai_run(None, "1", "m-small", "completed", 3_600_100);
    second.attempt = 2;
    // One batch; the ids come back in order.
    let ids = s
        .record_ai_runs(&[
            retry.clone(),
            second,
            ai_run(Some(&a), "2", "m-large", "completed", 7_200_000),
        ])
        .await
        .unwrap();
    let (r1, r2, r3) = (ids[0], ids[1], ids[2]);
    let all = AiFilter::default();
    let runs = s.list_ai_runs(&Scope::All, &all, 1, 10).await.unwrap();
    assert_eq!(
        runs.items.iter().map(|r| r.id).collect::<Vec<_>>(),
        [r3, r2, r1]
    );
    let got = s.ai_run(&Scope::All, r1).await.unwrap().unwrap();
    assert_eq!(got.total_tokens, 100);
    assert_eq!(got.run.cost_usd, 0.0015);
    assert_eq!(got.run.error.as_deref(), Some("429 Too Many Requests"));
    assert!(got.run.messages.is_empty(), "messages are listed apart");
    assert_eq!(s.ai_run(&Scope::Tenant(a.clone()), r1).await.unwrap(), None);
    let model = AiFilter {
        model: Some("m-large".into()),
        ..Default::default()
    };
    assert_eq!(
        s.list_ai_runs(&Scope::All, &model, 1, 10)
            .await
            .unwrap()
            .total,
        1
    );

    let of_run = AiFilter {
        run_id: Some(r2),
        ..Default::default()
    };
    let messages = s
        .list_ai_messages(&Scope::All, &of_run, 1, 10)
        .await
        .unwrap();
    assert_eq!(
        messages
            .items
            .iter()
            .map(|m| m.role.as_str())
            .collect::<Vec<_>>(),
        ["system", "user", "assistant"],
        "in order"
    );
    assert!(messages.items[2].truncated && !messages.items[0].truncated);
    let of_job = AiFilter {
        job_id: Some("1".into()),
        ..Default::default()
    };
    assert_eq!(
        s.list_ai_messages(&Scope::All, &of_job, 1, 10)
            .await
            .unwrap()
            .total,
        5,
        "both attempts of the task"
    );
    let events = s.list_ai_events(&Scope::All, &of_job, 1, 10).await.unwrap();
    assert_eq!(events.total, 6, "two stored and the end, each attempt");
    assert_eq!(events.items.len(), 6);
    assert!(events.items.iter().all(|e| e.trace_id == "trace-1"));
    assert_eq!(
        s.list_ai_events(&Scope::Tenant(a.clone()), &all, 1, 10)
            .await
            .unwrap()
            .total,
        3
    );
    // By the events' own time (counted one by one): the second attempt's.
    let later = AiFilter {
        from: Some(3_600_050),
        ..of_job.clone()
    };
    let events = s.list_ai_events(&Scope::All, &later, 1, 10).await.unwrap();
    assert_eq!(
        (events.total, events.items.len()),
        (3, 3),
        "{:?}",
        events.items
    );
    assert!(events.items.iter().all(|e| e.run_id == r2));

    let tasks = s.list_ai_tasks(&Scope::All, &all, 1, 10).await.unwrap();
    assert_eq!(tasks.total, 2);
    let t1 = tasks.items.iter().find(|t| t.job_id == "1").unwrap();
    assert_eq!(
        (t1.runs, t1.last_run_id, t1.status.as_str()),
        (2, r2, "completed")
    );
    assert_eq!(t1.total_tokens, 220);
    assert!((t1.cost_usd - 0.003).abs() < 1e-9);
    assert_eq!((t1.started_at, t1.finished_at), (3_600_000, 3_600_140));
    let failed = AiFilter {
        status: Some("retrying".into()),
        ..Default::default()
    };
    assert_eq!(
        s.list_ai_tasks(&Scope::All, &failed, 1, 10)
            .await
            .unwrap()
            .total,
        0,
        "a task's status is its latest attempt's"
    );
    assert_eq!(
        s.list_ai_tasks(&Scope::Tenant(a.clone()), &all, 1, 10)
            .await
            .unwrap()
            .items[0]
            .job_id,
        "2"
    );

    let usage = s.ai_usage(&Scope::All, 0).await.unwrap();
    assert_eq!(usage.len(), 2, "{usage:?}");
    assert_eq!(
        (
            usage[0].hour,
            usage[0].model.as_str(),
            usage[0].runs,
            usage[0].failed
        ),
        (3_600_000, "m-small", 2, 1)
    );
    assert_eq!(usage[0].total_tokens, 220);
    assert_eq!(usage[1].model, "m-large");
    assert!((usage[0].avg_latency_ms - 40.0).abs() < 1e-9);

    // Each call is its job's run: written by the handler alone, a run of worker
    // `keel-handlers` with the call's status as a run's.
    let job_1 = RunFilter {
        job_id: Some("1".into()),
        ..Default::default()
    };
    let runs_1 = s.list_runs(&Scope::All, &job_1, 1, 10).await.unwrap().items;
    assert_eq!(
        runs_1
            .iter()
            .map(|r| (r.id, r.status.as_str(), r.worker.as_str()))
            .collect::<Vec<_>>(),
        [
            (r2, "completed", "keel-handlers"),
            (r1, "failed", "keel-handlers")
        ]
    );
    // A run recorder's run carrying a call is one row that the AI listings read, with the
    // run's trace id and error; a run without a call is no AI run. Contents survive both
    // write paths whatever they hold (COPY's and JSON's escapes).
    let tricky = "line one\nline\ttwo \"quoted\" back\\slash \\N é 🦀";
    let mut call = ai_run(None, "3", "m-small", "failed", 9_000_000);
    call.messages[1].content = tricky.into();
    call.events[1].message = tricky.into();
    let carried = NewRun {
        ai: Some(Box::new(call)),
        ..run(None, "ai-content", "3", "dead")
    };
    let plain = run(None, "ai-content", "4", "completed");
    let ids = s.insert_runs(&[carried, plain]).await.unwrap();
    let got = s.ai_run(&Scope::All, ids[0]).await.unwrap().unwrap();
    assert_eq!(
        (
            got.run.status.as_str(),
            got.run.trace_id.as_str(),
            got.run.error.as_deref(),
            got.run.job_name.as_str()
        ),
        ("failed", "t1", Some("boom"), "send")
    );
    assert_eq!(s.ai_run(&Scope::All, ids[1]).await.unwrap(), None);
    let of_3 = AiFilter {
        run_id: Some(ids[0]),
        ..Default::default()
    };
    let m = s.list_ai_messages(&Scope::All, &of_3, 1, 10).await.unwrap();
    assert_eq!(
        m.items.iter().map(|m| m.position).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(m.items[1].content, tricky);
    assert_eq!(m.items[1].created_at, 1_000, "the run's start");
    let e = s.list_ai_events(&Scope::All, &of_3, 1, 10).await.unwrap();
    assert_eq!(
        e.items
            .iter()
            .map(|e| (e.kind.as_str(), e.message.as_str()))
            .collect::<Vec<_>>(),
        [
            (
                "failed",
                r#"{"completionTokens":20,"costUsd":0.0015,"durationMs":40,"error":"boom","model":"m-small","promptTokens":100,"status":"failed"}"#
            ),
            ("response", tricky),
            ("request", "model m-small")
        ],
        "newest first, the last made from the row"
    );
    assert_eq!(e.items[0].at, 1_250, "the run's end");
    let (_, events) = s.get_run(&Scope::All, ids[0]).await.unwrap().unwrap();
    assert!(events
        .iter()
        .any(|e| e.kind == "error" && e.detail.as_deref() == Some("boom")));
    assert_eq!(
        s.list_ai_runs(&Scope::All, &all, 1, 10)
            .await
            .unwrap()
            .total,
        4
    );
}
