//! Workflow crash test, on Redis and PostgreSQL: two `keel worker` processes run 300
//! instances of a fan-out/fan-in workflow (`fetch` → `enrich` and `score` → `publish`, over two
//! queues, through an `http` handler that records every POST) while one worker is killed with
//! SIGKILL again and again and restarted — so kills land between a step's end and its
//! successors' enqueue, in the middle of a fan-in, mid-handler. Every instance must complete,
//! every step of every instance must have reached the receiver with its stored output being
//! one of the receiver's answers for that job, and the fan-in must have seen both outputs.
//! Delivery is at least once, as for plain jobs: a step whose worker died after the POST and
//! before its record is run again (the test counts those repeats); none is lost.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use keel::config::Config;
use keel_records::workflow::{InstanceFilter, InstanceStatus, StepStatus, Trigger};
use keel_records::{Scope, WorkflowStore};
use keel_workflows::{Engine, EngineConfig, Start};
use serde_json::{json, Value};

const INSTANCES: usize = 300;

#[derive(Clone, Default)]
struct Seen {
    posts: Arc<Mutex<HashMap<String, usize>>>,
}

async fn hook(State(seen): State<Seen>, Json(body): Json<Value>) -> Json<Value> {
    tokio::time::sleep(Duration::from_millis(40)).await;
    let id = body["id"].as_str().unwrap_or_default().to_string();
    *seen.posts.lock().unwrap().entry(id.clone()).or_default() += 1;
    Json(json!({"job": id, "n": body["data"]["n"]}))
}

fn spawn_worker(config: &std::path::Path, database: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("--config")
        .arg(config)
        .arg("worker")
        .env("RUST_LOG", "warn")
        .env("DATABASE_URL", database)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("keel binary runs")
}

fn terminate(mut child: Child) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_finish_every_instance() {
    let seen = Seen::default();
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let db = keel_records::testing::postgres().await;
    let prefix = format!("kwx-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("keel.toml");
    let text = format!(
        r#"
[redis]
url = "redis://127.0.0.1:6379"
prefix = "{prefix}"

[workflow_engine]
reconcile_interval_ms = 1000
reconcile_grace_ms = 1500

[queues.wx-a]
concurrency = 6
attempts = 3
lock_duration_ms = 1000
stalled_interval_ms = 500
max_stalled_count = 1000
handler = {{ kind = "http", url = "http://{addr}/hook", timeout_ms = 5000 }}

[queues.wx-b]
concurrency = 6
attempts = 3
lock_duration_ms = 1000
stalled_interval_ms = 500
max_stalled_count = 1000
handler = {{ kind = "http", url = "http://{addr}/hook", timeout_ms = 5000 }}

[workflows.fanout]
[[workflows.fanout.steps]]
name = "fetch"
queue = "wx-a"
input = {{ n = "${{input.n}}" }}
[[workflows.fanout.steps]]
name = "enrich"
queue = "wx-b"
needs = ["fetch"]
input = {{ n = "${{steps.fetch.output.n}}" }}
[[workflows.fanout.steps]]
name = "score"
queue = "wx-a"
needs = ["fetch"]
input = {{ n = "${{steps.fetch.output.n}}" }}
[[workflows.fanout.steps]]
name = "publish"
queue = "wx-b"
needs = ["enrich", "score"]
input = {{ n = "${{steps.enrich.output.n}}", also = "${{steps.score.output.job}}" }}
"#
    );
    std::fs::write(&config_path, &text).unwrap();

    // The test starts the instances with the same engine the workers run (no worker here).
    let config = Config::parse_with(&text, &|_| None, keel_server::config::SECTIONS).unwrap();
    let server = keel_server::config::ServerConfig::from_config(&config, &|_| None).unwrap();
    let backend = config.backend().await.expect("Redis must be running");
    keel_records::Admin::migrate_up(&*db.store).await.unwrap();
    let store: Arc<dyn WorkflowStore> = db.store.clone();
    let (engine, _writer) = Engine::new(
        backend,
        config.clone(),
        store.clone(),
        EngineConfig::default(),
        None,
    );
    engine.load(&server.workflows).await.unwrap();

    let steady = spawn_worker(&config_path, &db.url());
    let mut victim = spawn_worker(&config_path, &db.url());
    let started = Instant::now();
    // Instances are started while the kills go on.
    let starter = engine.clone();
    let starting = tokio::spawn(async move {
        let mut ids = Vec::new();
        for n in 0..INSTANCES {
            let st = starter
                .start(Start {
                    workflow: "fanout".into(),
                    input: json!({"n": n}),
                    trigger: Trigger {
                        kind: "api".into(),
                        reference: None,
                    },
                    actor: "test".into(),
                    scope: Scope::All,
                    id: None,
                })
                .await
                .unwrap();
            ids.push(st.instance.id);
        }
        ids
    });
    let mut kills = 0;
    let deadline = started + Duration::from_secs(240);
    loop {
        let done = store
            .list_instances(
                &Scope::All,
                &InstanceFilter {
                    status: Some(InstanceStatus::Completed),
                    ..Default::default()
                },
                1,
                1,
            )
            .await
            .unwrap()
            .total as usize;
        if done == INSTANCES {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {INSTANCES} instances completed in time after {kills} kills"
        );
        if kills < 10 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            victim.kill().expect("SIGKILL");
            victim.wait().unwrap();
            kills += 1;
            tokio::time::sleep(Duration::from_millis(150)).await;
            victim = spawn_worker(&config_path, &db.url());
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    terminate(victim);
    terminate(steady);
    let ids = starting.await.unwrap();

    let posts = seen.posts.lock().unwrap().clone();
    let mut duplicates = 0;
    for id in &ids {
        let st = store
            .workflow_state(&Scope::All, id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(st.instance.status, InstanceStatus::Completed, "{st:#?}");
        for s in &st.steps {
            assert_eq!(s.status, StepStatus::Completed, "{st:#?}");
            let job = s.job_id.clone().unwrap();
            let n = posts.get(&job).copied().unwrap_or(0);
            assert!(n >= 1, "step {} of {id} never reached the receiver", s.step);
            duplicates += n - 1;
            // The output stored is one of the answers the receiver gave for this job.
            assert_eq!(s.output.as_ref().unwrap()["job"], job.as_str());
        }
        let publish = st.step("publish").unwrap();
        assert_eq!(
            publish.input.as_ref().unwrap()["also"],
            format!("wf-{id}-score").as_str(),
            "the fan-in saw both outputs"
        );
    }
    eprintln!(
        "workflow crash test: {INSTANCES} instances ({} steps) completed after {kills} kills in {:?}; {duplicates} step POSTs repeated after kills",
        INSTANCES * 4,
        started.elapsed()
    );
    db.close().await;
}
