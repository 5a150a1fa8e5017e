//! The engine's behaviours, in the conformance style: every case runs on the queue backends
//! (memory and Redis, a unique prefix per test) and both record databases (a fresh PostgreSQL
//! database or SQLite file per test), and on Keel's own Redis engine with PostgreSQL.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel::backend::RedisSettings;
use keel::config::Config;
use keel::{handler_fn, Backend, JobError, Keys, Worker};
use keel_records::testing::{postgres, sqlite, TestDb};
use keel_records::workflow::{
    step_job_id, InstanceStatus, NewInstance, StepEvent, StepStatus, StepUpdate, Trigger,
    WorkflowState, WorkflowWrite,
};
use keel_records::{Scope, WorkflowStore};
use keel_workflows::spec::from_toml;
use keel_workflows::{Engine, EngineConfig, Reconciler, ReconcilerConfig, Start};
use serde_json::{json, Value};

macro_rules! matrix {
    ($($name:ident),* $(,)?) => {
        mod memory_postgres { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { crate::$name(crate::memory(), crate::postgres().await).await; }
        )* }
        mod memory_sqlite { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { crate::$name(crate::memory(), crate::sqlite().await).await; }
        )* }
        mod redis_postgres { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { crate::$name(crate::redis().await, crate::postgres().await).await; }
        )* }
        mod redis_sqlite { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { crate::$name(crate::redis().await, crate::sqlite().await).await; }
        )* }
        mod native_postgres { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { crate::$name(crate::native().await, crate::postgres().await).await; }
        )* }
    };
}

matrix!(
    a_dag_runs_in_order_and_outputs_flow,
    steps_retry_with_their_own_attempts_and_time_out,
    a_failure_fails_the_instance_or_continues,
    cancel_mid_run_starts_nothing_more,
    a_rerun_skips_completed_steps,
    schedules_and_job_completions_start_instances,
    the_reconciler_enqueues_what_a_crash_left_out,
    a_step_found_recorded_hands_out_what_it_queued,
);

fn memory() -> Backend {
    Backend::memory()
}

async fn redis() -> Backend {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let id = uuid::Uuid::new_v4().simple().to_string();
    Backend::redis(RedisSettings {
        url,
        prefix: format!("kw-{id}"),
        command_timeout: Duration::from_secs(5),
        sharded_pubsub: false,
    })
    .await
    .expect("Redis must be running (see README)")
    .with_keys(Keys::new(&format!("kw-{id}"), "test").unwrap())
}

/// Keel's own Redis engine for every queue.
async fn native() -> Backend {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let id = uuid::Uuid::new_v4().simple().to_string();
    Backend::native(RedisSettings {
        url,
        prefix: format!("kwn-{id}"),
        command_timeout: Duration::from_secs(5),
        sharded_pubsub: false,
    })
    .await
    .expect("Redis must be running (see README)")
    .with_keys(Keys::new(&format!("kwn-{id}"), "test").unwrap())
}

const QUEUES: &str = r#"
[queues.wa]
concurrency = 10
[queues.wb]
concurrency = 10
"#;

/// What the handlers saw: per job name, the data of each attempt.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, Value)>>>);

impl Seen {
    fn push(&self, name: &str, data: &Value) {
        self.0
            .lock()
            .unwrap()
            .push((name.to_string(), data.clone()));
    }
    fn names(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(n, _)| n.clone())
            .collect()
    }
    fn data_of(&self, name: &str) -> Vec<Value> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, d)| d.clone())
            .collect()
    }
}

struct Rig {
    engine: Engine,
    store: Arc<dyn WorkflowStore>,
    workers: Vec<Worker>,
    db: Option<TestDb>,
    seen: Seen,
}

type Handler = Arc<
    dyn Fn(String, Value, u32) -> futures::future::BoxFuture<'static, Result<Value, JobError>>
        + Send
        + Sync,
>;

/// An engine over `workflows` (TOML of `[workflows.*]`), with workers on both queues running
/// `handler(job name, data, attempt)`.
async fn rig(backend: Backend, db: TestDb, workflows: &str, handler: Handler) -> Rig {
    db.store.migrate_up_for_tests().await;
    let config = Config::parse(QUEUES, &|_| None).unwrap();
    let store: Arc<dyn WorkflowStore> = db.store.clone();
    let (engine, _writer) = Engine::new(
        backend.clone(),
        config.clone(),
        store.clone(),
        EngineConfig::default(),
        None,
    );
    let table: toml::Value = toml::from_str(workflows).unwrap();
    let specs = from_toml(&table["workflows"], &|q| config.queues.contains_key(q)).unwrap();
    engine
        .load(&specs.into_iter().collect::<Vec<_>>())
        .await
        .unwrap();
    let seen = Seen::default();
    let mut workers = Vec::new();
    for q in ["wa", "wb"] {
        let (h, s) = (handler.clone(), seen.clone());
        let p = handler_fn(move |ctx| {
            let (h, s) = (h.clone(), s.clone());
            async move {
                s.push(&ctx.job.name, &ctx.job.data);
                h(
                    ctx.job.name.clone(),
                    ctx.job.data.clone(),
                    ctx.job.attempts_made + 1,
                )
                .await
            }
        });
        let queue = config.queue(&backend, q).unwrap();
        workers.push(
            queue
                .worker()
                .fallback(engine.wrap(q, p))
                .concurrency(10)
                .start()
                .await
                .unwrap(),
        );
    }
    workers.push(engine.start_trigger_worker().await.unwrap());
    Rig {
        engine,
        store,
        workers,
        db: Some(db),
        seen,
    }
}

impl Rig {
    async fn start(&self, workflow: &str, input: Value) -> String {
        self.engine
            .start(Start {
                workflow: workflow.into(),
                input,
                trigger: Trigger {
                    kind: "api".into(),
                    reference: None,
                },
                actor: "test".into(),
                scope: Scope::All,
                id: None,
            })
            .await
            .unwrap()
            .instance
            .id
    }

    async fn state(&self, id: &str) -> WorkflowState {
        self.store
            .workflow_state(&Scope::All, id)
            .await
            .unwrap()
            .unwrap()
    }

    async fn until(
        &self,
        id: &str,
        what: &str,
        f: impl Fn(&WorkflowState) -> bool,
    ) -> WorkflowState {
        for _ in 0..400 {
            let st = self.state(id).await;
            if f(&st) {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{what}: {:#?}", self.state(id).await);
    }

    async fn ended(&self, id: &str) -> WorkflowState {
        self.until(id, "the instance ends", |s| s.instance.status.is_final())
            .await
    }

    async fn close(mut self) {
        for w in self.workers.drain(..) {
            w.close(Duration::from_secs(2)).await.unwrap();
        }
        if let Some(db) = self.db.take() {
            db.close().await;
        }
    }
}

trait MigrateForTests {
    async fn migrate_up_for_tests(&self);
}

impl MigrateForTests for keel_records::SqlStore {
    async fn migrate_up_for_tests(&self) {
        use keel_records::Admin;
        self.migrate_up().await.unwrap();
    }
}

fn ok_handler(
    f: impl Fn(&str, &Value, u32) -> Result<Value, JobError> + Send + Sync + 'static,
) -> Handler {
    let f = Arc::new(f);
    Arc::new(move |name, data, attempt| {
        let f = f.clone();
        Box::pin(async move { f(&name, &data, attempt) })
    })
}

async fn a_dag_runs_in_order_and_outputs_flow(backend: Backend, db: TestDb) {
    let r = rig(
        backend,
        db,
        r#"
        [[workflows.article.steps]]
        name = "draft"
        queue = "wa"
        input = { topic = "${input.topic}" }
        [[workflows.article.steps]]
        name = "seo"
        queue = "wb"
        needs = ["draft"]
        input = { text = "${steps.draft.output.text}" }
        [[workflows.article.steps]]
        name = "images"
        queue = "wa"
        needs = ["draft"]
        [[workflows.article.steps]]
        name = "publish"
        queue = "wb"
        job = "publish_article"
        needs = ["seo", "images"]
        input = { line = "${steps.draft.output.text} scored ${steps.seo.output.score}", pics = "${steps.images.output}" }
        "#,
        ok_handler(|name, data, _| {
            Ok(match name {
                "draft" => json!({"text": format!("about {}", data["topic"].as_str().unwrap_or("?"))}),
                "seo" => json!({"score": data["text"].as_str().map(|t| t.len()).unwrap_or(0)}),
                "images" => json!(["a.png", "b.png"]),
                _ => json!({"published": true}),
            })
        }),
    )
    .await;
    let id = r.start("article", json!({"topic": "rust"})).await;
    let st = r.ended(&id).await;
    assert_eq!(st.instance.status, InstanceStatus::Completed, "{st:#?}");
    assert_eq!(st.instance.workflow, "article");
    assert_eq!(st.instance.version, 1);
    assert!(st.instance.started_at.is_some() && st.instance.finished_at.is_some());
    let names = r.seen.names();
    assert_eq!(names.len(), 4, "each step ran once: {names:?}");
    assert_eq!(names[0], "draft");
    assert_eq!(
        names[3], "publish_article",
        "the fan-in runs last: {names:?}"
    );
    // The images step had no template: the default input names the workflow input and needs.
    assert_eq!(
        r.seen.data_of("images")[0],
        json!({"input": {"topic": "rust"}, "steps": {"draft": {"text": "about rust"}}})
    );
    assert_eq!(
        r.seen.data_of("publish_article")[0],
        json!({"line": "about rust scored 10", "pics": ["a.png", "b.png"]})
    );
    for s in &st.steps {
        assert_eq!(s.status, StepStatus::Completed, "{s:#?}");
        assert_eq!(s.attempts, 1);
        assert!(s
            .job_id
            .as_deref()
            .unwrap()
            .starts_with(&format!("wf-{id}-")));
        assert!(s.duration_ms.is_some() && s.input.is_some());
    }
    assert_eq!(st.step("seo").unwrap().output, Some(json!({"score": 10})));
    r.close().await;
}

async fn steps_retry_with_their_own_attempts_and_time_out(backend: Backend, db: TestDb) {
    let r = rig(
        backend,
        db,
        r#"
        [[workflows.flaky.steps]]
        name = "call"
        queue = "wa"
        attempts = 3
        backoff = { type = "fixed", delay = 20 }
        [[workflows.slow.steps]]
        name = "wait"
        queue = "wb"
        attempts = 2
        timeout_ms = 100
        "#,
        Arc::new(|name, _, attempt| {
            Box::pin(async move {
                if name == "wait" {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    return Ok(json!("too late"));
                }
                if attempt < 3 {
                    Err(JobError::retry(format!("503 on attempt {attempt}")))
                } else {
                    Ok(json!({"attempt": attempt}))
                }
            })
        }),
    )
    .await;
    let flaky = r.start("flaky", json!({})).await;
    let slow = r.start("slow", json!({})).await;
    let st = r.ended(&flaky).await;
    assert_eq!(st.instance.status, InstanceStatus::Completed);
    let call = st.step("call").unwrap();
    assert_eq!(call.attempts, 3);
    assert_eq!(call.output, Some(json!({"attempt": 3})));
    assert_eq!(call.error, None);
    let st = r.ended(&slow).await;
    assert_eq!(st.instance.status, InstanceStatus::Failed);
    let wait = st.step("wait").unwrap();
    assert_eq!(wait.status, StepStatus::Failed);
    assert_eq!(wait.attempts, 2);
    assert_eq!(wait.error.as_deref(), Some("step timed out after 100 ms"));
    assert_eq!(
        st.instance.error.as_deref(),
        Some("step wait failed: step timed out after 100 ms")
    );
    r.close().await;
}

async fn a_failure_fails_the_instance_or_continues(backend: Backend, db: TestDb) {
    let r = rig(
        backend,
        db,
        r#"
        [[workflows.lenient.steps]]
        name = "optional"
        queue = "wa"
        job = "broken"
        on_failure = "continue"
        [[workflows.lenient.steps]]
        name = "after"
        queue = "wb"
        needs = ["optional"]
        [[workflows.strict.steps]]
        name = "first"
        queue = "wa"
        job = "broken"
        [[workflows.strict.steps]]
        name = "second"
        queue = "wb"
        needs = ["first"]
        "#,
        ok_handler(|name, _, _| match name {
            "broken" => Err(JobError::unrecoverable("bad request").with_stack("at broken()")),
            _ => Ok(json!("ok")),
        }),
    )
    .await;
    let lenient = r.start("lenient", json!({})).await;
    let strict = r.start("strict", json!({})).await;
    let st = r.ended(&lenient).await;
    assert_eq!(st.instance.status, InstanceStatus::Completed, "{st:#?}");
    let opt = st.step("optional").unwrap();
    assert_eq!(opt.status, StepStatus::Failed);
    assert_eq!(opt.error.as_deref(), Some("bad request"));
    assert_eq!(opt.stack.as_deref(), Some("at broken()"));
    assert_eq!(st.step("after").unwrap().status, StepStatus::Completed);
    let st = r.ended(&strict).await;
    assert_eq!(st.instance.status, InstanceStatus::Failed);
    assert_eq!(st.step("second").unwrap().status, StepStatus::Cancelled);
    assert_eq!(r.seen.data_of("second").len(), 0, "never ran");
    // The failed step's job went to the queue's DLQ like any job.
    let q = r.engine.queue_named("wa").unwrap();
    let job_id = st.step("first").unwrap().job_id.clone().unwrap();
    let dlq = q.dlq();
    for _ in 0..200 {
        if dlq
            .page(1, 50)
            .await
            .unwrap()
            .entries
            .iter()
            .any(|e| e.original_job_id == job_id)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        dlq.page(1, 50)
            .await
            .unwrap()
            .entries
            .iter()
            .any(|e| e.original_job_id == job_id),
        "dead-lettered"
    );
    r.close().await;
}

async fn cancel_mid_run_starts_nothing_more(backend: Backend, db: TestDb) {
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let r = rig(
        backend,
        db,
        r#"
        [[workflows.long.steps]]
        name = "slow"
        queue = "wa"
        [[workflows.long.steps]]
        name = "next"
        queue = "wb"
        needs = ["slow"]
        "#,
        Arc::new(move |name, _, _| {
            let gate = gate.clone();
            Box::pin(async move {
                if name == "slow" {
                    gate.notified().await;
                }
                Ok(json!(name))
            })
        }),
    )
    .await;
    let id = r.start("long", json!({})).await;
    r.until(&id, "slow runs", |s| {
        s.step("slow")
            .map(|s| s.status == StepStatus::Running)
            .unwrap_or(false)
    })
    .await;
    let settled = r.engine.cancel(&Scope::All, &id).await.unwrap();
    assert_eq!(settled.state.instance.status, InstanceStatus::Cancelled);
    assert_eq!(
        r.engine.cancel(&Scope::All, &id).await.unwrap_err().code(),
        "conflict"
    );
    release.notify_waiters();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let st = r.state(&id).await;
    assert_eq!(st.instance.status, InstanceStatus::Cancelled);
    assert_eq!(st.step("next").unwrap().status, StepStatus::Cancelled);
    assert!(
        r.seen.data_of("next").is_empty(),
        "nothing starts after a cancel"
    );
    r.close().await;
}

async fn a_rerun_skips_completed_steps(backend: Backend, db: TestDb) {
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = fail.clone();
    let r = rig(
        backend,
        db,
        r#"
        [[workflows.pipeline.steps]]
        name = "fetch"
        queue = "wa"
        [[workflows.pipeline.steps]]
        name = "store"
        queue = "wb"
        needs = ["fetch"]
        input = "${steps.fetch.output}"
        "#,
        ok_handler(move |name, data, _| match name {
            "fetch" => Ok(json!({"rows": 3})),
            _ if flag.load(Ordering::SeqCst) => Err(JobError::unrecoverable("disk full")),
            _ => Ok(json!({"stored": data["rows"]})),
        }),
    )
    .await;
    let id = r.start("pipeline", json!({})).await;
    let st = r.ended(&id).await;
    assert_eq!(st.instance.status, InstanceStatus::Failed);
    fail.store(false, Ordering::SeqCst);
    let again = r.engine.rerun(&Scope::All, &id).await.unwrap();
    assert_eq!(again.state.instance.reruns, 1);
    let st = r.ended(&id).await;
    assert_eq!(st.instance.status, InstanceStatus::Completed, "{st:#?}");
    assert_eq!(r.seen.data_of("fetch").len(), 1, "fetch was not run again");
    assert_eq!(r.seen.data_of("store").len(), 2);
    let store = st.step("store").unwrap();
    assert_eq!(store.output, Some(json!({"stored": 3})));
    assert_eq!(
        store.job_id.as_deref(),
        Some(format!("wf-{id}-store-r1").as_str())
    );
    r.close().await;
}

async fn schedules_and_job_completions_start_instances(backend: Backend, db: TestDb) {
    let r = rig(
        backend.clone(),
        db,
        r#"
        [workflows.ticker]
        schedule = { every_ms = 1000, input = { kind = "tick" } }
        [[workflows.ticker.steps]]
        name = "tick"
        queue = "wa"
        [workflows.follow]
        on_complete = [{ queue = "wb", job = "import" }]
        [[workflows.follow.steps]]
        name = "index"
        queue = "wa"
        input = { imported = "${input.result.count}", job = "${input.job_id}" }
        "#,
        ok_handler(|name, _, _| {
            Ok(if name == "import" {
                json!({"count": 7})
            } else {
                json!("ok")
            })
        }),
    )
    .await;
    // A job of another queue completes: `follow` starts with its result, once.
    let wb = r.engine.queue_named("wb").unwrap();
    let job = wb
        .add("import", json!({"file": "a.csv"}), Default::default())
        .await
        .unwrap();
    let mut counts: HashMap<String, i64> = HashMap::new();
    for _ in 0..200 {
        counts.clear();
        // Two ticks of a 1 s schedule: up to ~3 s.
        for w in ["ticker", "follow"] {
            let page = r
                .store
                .list_instances(
                    &Scope::All,
                    &keel_records::workflow::InstanceFilter {
                        workflow: Some(w.into()),
                        status: Some(InstanceStatus::Completed),
                        ..Default::default()
                    },
                    1,
                    50,
                )
                .await
                .unwrap();
            counts.insert(w.into(), page.total);
        }
        if counts["ticker"] >= 2 && counts["follow"] >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        counts["ticker"] >= 2,
        "the schedule started instances: {counts:?}"
    );
    assert_eq!(counts["follow"], 1, "{counts:?}");
    assert_eq!(
        r.seen.data_of("index"),
        vec![json!({"imported": 7, "job": job.id})]
    );
    let follow = r
        .store
        .list_instances(
            &Scope::All,
            &keel_records::workflow::InstanceFilter {
                workflow: Some("follow".into()),
                ..Default::default()
            },
            1,
            5,
        )
        .await
        .unwrap();
    let f = &follow.items[0];
    assert_eq!(f.trigger.kind, "job");
    assert_eq!(
        f.trigger.reference.as_deref(),
        Some(format!("wb/{}", job.id).as_str())
    );
    let ticks = r
        .store
        .list_instances(
            &Scope::All,
            &keel_records::workflow::InstanceFilter {
                workflow: Some("ticker".into()),
                ..Default::default()
            },
            1,
            5,
        )
        .await
        .unwrap();
    assert_eq!(ticks.items[0].trigger.kind, "schedule");
    assert_eq!(ticks.items[0].input, json!({"kind": "tick"}));
    r.close().await;
}

/// Workflow `name`: step `a` on queue `wa`, then `b` on `wb`.
fn a_then_b(name: &str) -> String {
    format!(
        r#"
        [[workflows.{name}.steps]]
        name = "a"
        queue = "wa"
        [[workflows.{name}.steps]]
        name = "b"
        queue = "wb"
        needs = ["a"]
        "#
    )
}

/// A handler answering with the job's name, and how many times it ran.
fn counting() -> (Arc<AtomicU32>, Handler) {
    let runs = Arc::new(AtomicU32::new(0));
    let n = runs.clone();
    let h = ok_handler(move |name, _, _| {
        n.fetch_add(1, Ordering::SeqCst);
        Ok(json!(name))
    });
    (runs, h)
}

impl Rig {
    /// An instance of `workflow` written straight to the records, no job added: as if a
    /// process died after committing it and before adding its first job.
    async fn created_without_jobs(&self, workflow: &str) -> String {
        let def = self.engine.latest(&Scope::All, workflow).await.unwrap();
        let id = format!("{:032x}", rand_id());
        self.store
            .write_workflows(&[WorkflowWrite::Create(NewInstance {
                id: id.clone(),
                tenant_id: None,
                workflow: workflow.into(),
                version: def.version,
                input: json!({}),
                trigger: Trigger {
                    kind: "api".into(),
                    reference: None,
                },
                actor: "test".into(),
                steps: def.new_steps(),
            })])
            .await
            .unwrap();
        id
    }
}

async fn the_reconciler_enqueues_what_a_crash_left_out(backend: Backend, db: TestDb) {
    let (runs, handler) = counting();
    let r = rig(backend, db, &a_then_b("repair"), handler).await;
    let id = r.created_without_jobs("repair").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let left = r.state(&id).await;
    assert_eq!(left.instance.status, InstanceStatus::Pending);
    // The write that created it queued `a` under its job id; the job does not exist.
    let a = left.step("a").unwrap();
    assert_eq!(a.status, StepStatus::Queued);
    assert_eq!(a.job_id, Some(step_job_id(&id, "a", 0)));
    let reconciler = Reconciler::new(
        r.engine.clone(),
        ReconcilerConfig {
            grace: Duration::ZERO,
            ..Default::default()
        },
    );
    use keel::service::Service;
    let report = reconciler.run_once().await.unwrap();
    assert_eq!(report.looked_at, 1);
    assert_eq!(report.enqueued, 1);
    let st = r.ended(&id).await;
    assert_eq!(st.instance.status, InstanceStatus::Completed);
    assert_eq!(runs.load(Ordering::SeqCst), 2, "each step ran once");
    // A finished instance is not looked at again.
    assert_eq!(reconciler.run_once().await.unwrap().looked_at, 0);
    r.close().await;
}

async fn a_step_found_recorded_hands_out_what_it_queued(backend: Backend, db: TestDb) {
    let (runs, handler) = counting();
    let r = rig(backend, db, &a_then_b("again"), handler).await;
    // `a`'s end committed (queuing `b`) and `b`'s job never added, then `a`'s job delivered
    // again. The instance's end is recorded without any reconciler.
    let redeliver = |id: String| {
        let r = &r;
        async move {
            let done = r
                .store
                .write_workflows(&[StepUpdate::now(
                    &id,
                    "a",
                    StepEvent::Completed {
                        output: json!("stored"),
                    },
                )
                .write()])
                .await
                .unwrap();
            let b = done[0].state.step("b").unwrap();
            assert_eq!(
                b.status,
                StepStatus::Queued,
                "the write that ended `a` queued `b`"
            );
            assert!(done[0].ready.contains(&"b".to_string()));
            let mut again = done[0].clone();
            again.ready = vec!["a".into()];
            r.engine.enqueue(&again).await.unwrap();
            r.ended(&id).await
        }
    };
    // An instance this engine does not know (another process's, which died after the
    // commit): `a`'s job reads the stored state, is not run again, and adds `b`.
    let st = redeliver(r.created_without_jobs("again").await).await;
    assert_eq!(st.instance.status, InstanceStatus::Completed);
    assert_eq!(
        st.step("a").unwrap().output,
        Some(json!("stored")),
        "`a` is not run again"
    );
    assert_eq!(st.step("b").unwrap().output, Some(json!("b")));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "only `b` ran");
    // An instance this engine started, so `a`'s job runs on what it remembers (as when the
    // commit of `a`'s end succeeded but was reported failed, and the job was tried again):
    // its `finish` finds the end recorded and adds `b` again.
    let known = r.created_without_jobs("again").await;
    let same = r
        .engine
        .start(Start {
            workflow: "again".into(),
            input: json!({}),
            trigger: Trigger {
                kind: "api".into(),
                reference: None,
            },
            actor: "test".into(),
            scope: Scope::All,
            id: Some(known.clone()),
        })
        .await
        .unwrap();
    assert_eq!(
        same.step("a").unwrap().status,
        StepStatus::Queued,
        "an existing id is returned as it stands"
    );
    let st = redeliver(known).await;
    assert_eq!(st.instance.status, InstanceStatus::Completed);
    assert_eq!(st.step("b").unwrap().output, Some(json!("b")));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        3,
        "`a` ran on the remembered path, then `b`"
    );
    r.close().await;
}

fn rand_id() -> u128 {
    uuid::Uuid::new_v4().as_u128()
}
