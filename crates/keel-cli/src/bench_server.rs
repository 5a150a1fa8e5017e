//! `keel bench --scenario http_enqueue,process_runs`: the server's costs, in one run.
//!
//! - `http_enqueue`: `concurrency` clients (keep-alive) POST one job each to an in-process
//!   `keel serve` (owner API with auth, rate limit, audit entry per call) — against
//!   `Queue::add` from the library at the same concurrency, alternated per round.
//!   `ratio` = HTTP / library. `http-bulk100` posts arrays of 100 jobs (jobs/s). `http-noop` (GET /api/health/live by the same clients) is the
//!   HTTP floor of this machine: client and server sharing its cores with Redis and the database;
//!   `http-owner-get` (GET …/stats: token, rate limit, cached read — two Redis round trips) is
//!   the floor of an owner route.
//! - `process_runs`: a worker processes `jobs` preloaded jobs with run records on (every attempt
//!   through the recorder into the database) and off, alternated per round. `cost` =
//!   1 − on / off.
//!
//! - `workflow`: `jobs` instances of a 3-step linear workflow of no-op steps (started 64 at a
//!   time while a worker of `concurrency` runs the steps, records through the engine's
//!   group-commit writer) against `3 × jobs` plain no-op jobs on the same worker settings,
//!   alternated per round. `instances_per_s`; `step_ms` and `job_ms` are the wall time per step
//!   and per plain job; `ratio` = step / job.
//!
//! - `email`, `ai`: the handlers of `keel-handlers` (see `bench_handlers.rs`).
//!
//! Records go to `DATABASE_URL` (else a SQLite file in a temporary directory).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel::config::Config;
use keel::{handler_fn, Backend, JobOptions, KeepJobs, NewJob, Queue, RatePolicy};
use keel_records::prelude::*;
use keel_records::{RecordStore, Role};
use serde_json::{json, Value};

/// Server scenario names.
pub const SCENARIOS: &[&str] = &["http_enqueue", "process_runs", "workflow", "email", "ai"];

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let x = v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
    (x * 1000.0).round() / 1000.0
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// What the server scenarios need.
pub struct Setup<'a> {
    /// The configuration (Redis URL, database URL).
    pub config: &'a Config,
    /// The backend.
    pub backend: Backend,
    /// Jobs per round.
    pub jobs: usize,
    /// Clients / worker concurrency.
    pub concurrency: usize,
    /// Rounds.
    pub rounds: usize,
}

pub(crate) async fn store(
    config: &Config,
    dir: &std::path::Path,
) -> Result<Arc<dyn RecordStore>, String> {
    let mut c = keel_server::config::ServerConfig::from_env(config).map_err(|e| e.to_string())?;
    if c.database_url.is_none() {
        c.database_url = Some(format!("sqlite:{}", dir.join("bench.db").display()));
    }
    let s = keel_server::serve::open_store(&c)
        .await
        .map_err(|e| e.to_string())?;
    s.migrate_up().await.map_err(|e| e.to_string())?;
    Ok(s)
}

/// Runs one scenario, printing JSON lines (per round and a summary).
pub async fn run(scenario: &str, setup: Setup<'_>) {
    let dir = std::env::temp_dir().join(format!("keel-bench-{}", uuid::Uuid::new_v4().simple()));
    let _ = std::fs::create_dir_all(&dir);
    let result = match scenario {
        "http_enqueue" => http_enqueue(&setup, &dir).await,
        "workflow" => workflow(&setup, &dir).await,
        "email" => crate::bench_handlers::email(&setup, &dir).await,
        "ai" => crate::bench_handlers::ai(&setup, &dir).await,
        _ => process_runs(&setup, &dir).await,
    };
    if let Err(e) = result {
        println!("{}", json!({"scenario": scenario, "error": e}));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

async fn http_enqueue(setup: &Setup<'_>, dir: &std::path::Path) -> Result<(), String> {
    let mut config = setup.config.clone();
    // The benchmark measures the API, not its per-IP limit.
    config.rate_policies.push(RatePolicy::gcra(
        "owner-api",
        1_000_000_000,
        Duration::from_secs(60),
    ));
    let store = store(&config, dir).await?;
    let db = store.database();
    let settings =
        keel_server::config::ServerConfig::from_env(&config).map_err(|e| e.to_string())?;
    let server = keel_server::serve::prepare(
        &config,
        &settings,
        setup.backend.clone(),
        store.clone(),
        false,
    )
    .await
    .map_err(|e| e.to_string())?;
    let (_, token) = store
        .create_token("bench", Role::Owner, None)
        .await
        .map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let app = keel_server::router::router(server.state.clone());
    let http = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .ok();
    });
    let queue_name = format!(
        "bench-http-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let queue = Queue::new(&setup.backend, &queue_name)
        .map_err(|e| e.to_string())?
        .with_defaults(JobOptions {
            remove_on_complete: Some(KeepJobs::remove_all()),
            ..Default::default()
        })
        .map_err(|e| e.to_string())?;
    // Make the queue known to the API (it lists configured queues and queues on the backend).
    queue
        .add("warm", json!({}), JobOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(setup.concurrency)
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("http://{addr}/api/owner/queues/{queue_name}/jobs");
    let n = setup.jobs;
    let (mut http_rates, mut lib_rates, mut http_p99s, mut lib_p99s) =
        (vec![], vec![], vec![], vec![]);
    let mut noop_rates = vec![];
    let mut owner_get_rates = vec![];
    let mut bulk_rates = vec![];
    for round in 1..=setup.rounds {
        // KEEL_BENCH_ENGINES=http,library runs only those (for profiling one path).
        let only = std::env::var("KEEL_BENCH_ENGINES").ok();
        for engine in [
            "library",
            "http",
            "http-bulk100",
            "http-noop",
            "http-owner-get",
        ]
        .into_iter()
        .filter(|e| {
            only.as_deref()
                .is_none_or(|o| o.split(',').any(|x| x == *e))
        }) {
            let next = Arc::new(AtomicUsize::new(0));
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..setup.concurrency {
                let (next, client, url, token, queue) = (
                    next.clone(),
                    client.clone(),
                    url.clone(),
                    token.clone(),
                    queue.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    while next.fetch_add(1, Ordering::Relaxed) < n {
                        let t = Instant::now();
                        let data = json!({"to": "user@example.com", "n": 1});
                        if engine == "http-owner-get" {
                            let r = client
                                .get(format!(
                                    "http://{addr}/api/owner/queues/{qn}/stats",
                                    qn = queue.name()
                                ))
                                .bearer_auth(&token)
                                .send()
                                .await
                                .map_err(|e| e.to_string())?;
                            if r.status().as_u16() != 200 {
                                return Err(format!("HTTP {}", r.status()));
                            }
                        } else if engine == "http-noop" {
                            let r = client
                                .get(format!("http://{addr}/api/health/live"))
                                .send()
                                .await
                                .map_err(|e| e.to_string())?;
                            if r.status().as_u16() != 200 {
                                return Err(format!("HTTP {}", r.status()));
                            }
                        } else if engine == "http-bulk100" {
                            // One request carries 100 jobs; count them all.
                            let batch: Vec<Value> = (0..100)
                                .map(|_| json!({"name": "send", "data": data.clone()}))
                                .collect();
                            let r = client
                                .post(&url)
                                .bearer_auth(&token)
                                .json(&batch)
                                .send()
                                .await
                                .map_err(|e| e.to_string())?;
                            if r.status().as_u16() != 201 {
                                return Err(format!("HTTP {}", r.status()));
                            }
                            next.fetch_add(99, Ordering::Relaxed);
                        } else if engine == "http" {
                            let r = client
                                .post(&url)
                                .bearer_auth(&token)
                                .json(&json!({"name": "send", "data": data}))
                                .send()
                                .await
                                .map_err(|e| e.to_string())?;
                            if r.status().as_u16() != 201 {
                                return Err(format!("HTTP {}", r.status()));
                            }
                        } else {
                            queue
                                .add("send", data, JobOptions::default())
                                .await
                                .map_err(|e| e.to_string())?;
                        }
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    Ok::<_, String>(lat)
                }));
            }
            let mut lat = Vec::new();
            for t in tasks {
                lat.extend(t.await.map_err(|e| e.to_string())??);
            }
            let done = if engine == "http-bulk100" {
                lat.len() * 100
            } else {
                lat.len()
            };
            let rate = (done as f64 / started.elapsed().as_secs_f64()).round();
            let p99 = pct(&mut lat, 0.99);
            println!(
                "{}",
                json!({"scenario": "http_enqueue", "engine": engine, "round": round, "n": n,
                       "concurrency": setup.concurrency, "database": db, "jobs_per_s": rate,
                       "p50_ms": pct(&mut lat, 0.5), "p99_ms": p99})
            );
            match engine {
                "http" => {
                    http_rates.push(rate);
                    http_p99s.push(p99);
                }
                "library" => {
                    lib_rates.push(rate);
                    lib_p99s.push(p99);
                }
                "http-noop" => noop_rates.push(rate),
                "http-bulk100" => bulk_rates.push(rate),
                _ => owner_get_rates.push(rate),
            }
            queue.drain(true).await.map_err(|e| e.to_string())?;
        }
    }
    let (h, l) = (median(http_rates), median(lib_rates));
    println!(
        "{}",
        json!({"scenario": "http_enqueue", "summary": true, "database": db, "concurrency": setup.concurrency,
               "http_jobs_per_s": h, "library_jobs_per_s": l, "http_p99_ms": median(http_p99s),
               "library_p99_ms": median(lib_p99s), "ratio": ((h / l) * 100.0).round() / 100.0,
               "http_noop_per_s": median(noop_rates), "http_owner_get_per_s": median(owner_get_rates),
               "http_bulk100_jobs_per_s": median(bulk_rates)})
    );
    http.abort();
    let _ = queue.obliterate(true).await;
    server
        .shutdown(Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

async fn process_runs(setup: &Setup<'_>, dir: &std::path::Path) -> Result<(), String> {
    let store = store(setup.config, dir).await?;
    let db = store.database();
    let n = setup.jobs;
    let (mut on, mut off) = (vec![], vec![]);
    for round in 1..=setup.rounds {
        for records in [false, true] {
            let name = format!(
                "bench-runs-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            );
            let q = preloaded(setup, &name, "work", n).await?;
            let handler = handler_fn(|_| async { Ok(Value::Null) });
            let served = match records {
                true => Some(Served::start(setup, &store).await?),
                false => None,
            };
            let processor = match &served {
                Some(s) => s.wrap(setup, &name, handler),
                None => handler,
            };
            let secs =
                crate::bench_handlers::drain(&q, "work", processor, n, setup.concurrency).await?;
            let rate = (n as f64 / secs).round();
            let mut line = json!({"scenario": "process_runs", "run_records": records, "round": round, "n": n,
                                  "concurrency": setup.concurrency, "database": db, "jobs_per_s": rate});
            if let Some(s) = served {
                let s = s.finish().await;
                line["records_written"] = json!(s.written);
                line["records_dropped"] = json!(s.dropped);
                on.push(rate);
            } else {
                off.push(rate);
            }
            println!("{line}");
            let _ = q.obliterate(true).await;
        }
    }
    let (on_m, off_m) = (median(on), median(off));
    println!(
        "{}",
        json!({"scenario": "process_runs", "summary": true, "database": db, "concurrency": setup.concurrency,
               "records_on_jobs_per_s": on_m, "records_off_jobs_per_s": off_m,
               "cost": (((1.0 - on_m / off_m) * 1000.0).round() / 1000.0)})
    );
    Ok(())
}

/// Run records as `keel serve` writes them: every attempt through its recorder into the store.
pub(crate) struct Served {
    recorder: keel_server::runs::RunRecorder,
    task: tokio::task::JoinHandle<()>,
    realtime: keel_server::realtime::Realtime,
}

impl Served {
    /// A recorder writing to `store`.
    pub(crate) async fn start(
        setup: &Setup<'_>,
        store: &Arc<dyn RecordStore>,
    ) -> Result<Served, String> {
        let (recorder, task) = keel_server::runs::RunRecorder::start(
            store.clone(),
            keel_server::runs::RunRecorderConfig::default(),
            None,
            None,
        );
        let (realtime, _) = keel_server::realtime::Realtime::start(&setup.backend, setup.config)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Served {
            recorder,
            task,
            realtime,
        })
    }

    /// `p` with each attempt recorded as a run of `queue`.
    pub(crate) fn wrap(
        &self,
        setup: &Setup<'_>,
        queue: &str,
        p: keel::Processor,
    ) -> keel::Processor {
        self.recorder.wrap(
            &setup.config.queue_config(queue),
            None,
            "bench".into(),
            keel_server::metrics::Metrics::new(),
            self.realtime.clone(),
            p,
        )
    }

    /// Writes what is buffered; the recorder's counts.
    pub(crate) async fn finish(self) -> keel_server::runs::RunStats {
        self.recorder.stop();
        let _ = tokio::time::timeout(Duration::from_secs(60), self.task).await;
        self.recorder.stats()
    }
}

/// Queue `name` with `n` jobs named `job` added (removed on completion).
pub(crate) async fn preloaded(
    setup: &Setup<'_>,
    name: &str,
    job: &str,
    n: usize,
) -> Result<Queue, String> {
    let q = Queue::new(&setup.backend, name).map_err(|e| e.to_string())?;
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| NewJob {
            name: job.into(),
            data: json!({"i": i}),
            opts: JobOptions {
                remove_on_complete: Some(KeepJobs::remove_all()),
                ..Default::default()
            },
        })
        .collect();
    for chunk in jobs.chunks(1000) {
        q.add_bulk(chunk.to_vec())
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(q)
}

/// One round of plain no-op jobs: `n` preloaded, processed by one worker; seconds.
async fn plain_round(setup: &Setup<'_>, n: usize) -> Result<f64, String> {
    let name = format!(
        "bench-plain-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let q = preloaded(setup, &name, "step", n).await?;
    let noop = handler_fn(|_| async { Ok(Value::Null) });
    let secs = crate::bench_handlers::drain(&q, "step", noop, n, setup.concurrency).await?;
    let _ = q.obliterate(true).await;
    Ok(secs)
}

/// One round of `n` workflow instances of three no-op steps; seconds from the first start to
/// the last instance completed.
async fn workflow_round(
    setup: &Setup<'_>,
    store: &Arc<dyn RecordStore>,
    n: usize,
) -> Result<(f64, u64), String> {
    let name = format!(
        "bench-wf-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let mut config = setup.config.clone();
    let mut qc = config.queue_config(&name);
    qc.job_defaults.remove_on_complete = Some(KeepJobs::remove_all());
    qc.job_defaults.attempts = Some(1);
    config.queues.insert(name.clone(), qc);
    let completed = Arc::new(AtomicUsize::new(0));
    let c = completed.clone();
    let observer: keel_workflows::Observer = Arc::new(move |events| {
        for e in events {
            if let keel_workflows::WorkflowEvent::WorkflowInstance { status, .. } = e {
                if *status == keel_records::workflow::InstanceStatus::Completed {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    let wstore: Arc<dyn keel_records::WorkflowStore> = store.clone();
    let (engine, writer) = keel_workflows::Engine::new(
        setup.backend.clone(),
        config.clone(),
        wstore,
        keel_workflows::EngineConfig::default(),
        Some(observer),
    );
    let spec: keel_workflows::WorkflowSpec = serde_json::from_value(json!({"steps": [
        {"name": "one", "queue": name},
        {"name": "two", "queue": name, "needs": ["one"]},
        {"name": "three", "queue": name, "needs": ["two"]},
    ]}))
    .map_err(|e| e.to_string())?;
    engine
        .save(
            &keel_records::Scope::All,
            &name,
            spec,
            "api",
            "bench",
            "spec",
        )
        .await
        .map_err(|e| e.to_string())?;
    let q = config
        .queue(&setup.backend, &name)
        .map_err(|e| e.to_string())?;
    let noop = handler_fn(|_| async { Ok(Value::Null) });
    let worker = q
        .worker()
        .fallback(engine.wrap(&name, noop))
        .concurrency(setup.concurrency)
        .start()
        .await
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let starters = (0..64).map(|_| {
        let (engine, next, name) = (engine.clone(), next.clone(), name.clone());
        tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                engine
                    .start(keel_workflows::Start {
                        workflow: name.clone(),
                        input: json!({}),
                        trigger: keel_records::workflow::Trigger {
                            kind: "api".into(),
                            reference: None,
                        },
                        actor: "bench".into(),
                        scope: keel_records::Scope::All,
                        id: None,
                    })
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        })
    });
    for r in futures::future::join_all(starters).await {
        r.map_err(|e| e.to_string())??;
    }
    let cap = Instant::now() + Duration::from_secs(300);
    while completed.load(Ordering::Relaxed) < n {
        if Instant::now() > cap {
            return Err(format!(
                "{} of {n} instances completed in 300 s",
                completed.load(Ordering::Relaxed)
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    worker
        .close(Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    let batches = engine.writer().stats().batches.load(Ordering::Relaxed);
    drop(engine);
    let _ = writer.await;
    let _ = q.obliterate(true).await;
    Ok((secs, batches))
}

async fn workflow(setup: &Setup<'_>, dir: &std::path::Path) -> Result<(), String> {
    let store = store(setup.config, dir).await?;
    let db = store.database();
    let n = setup.jobs;
    let (mut rates, mut steps, mut jobs) = (vec![], vec![], vec![]);
    for round in 1..=setup.rounds {
        let plain = plain_round(setup, n * 3).await?;
        let job_ms = plain * 1000.0 / (n * 3) as f64;
        let (wf, batches) = workflow_round(setup, &store, n).await?;
        let step_ms = wf * 1000.0 / (n * 3) as f64;
        let rate = (n as f64 / wf).round();
        println!(
            "{}",
            json!({"scenario": "workflow", "round": round, "instances": n, "steps": n * 3,
                   "concurrency": setup.concurrency, "database": db,
                   "instances_per_s": rate, "step_ms": (step_ms * 1000.0).round() / 1000.0,
                   "job_ms": (job_ms * 1000.0).round() / 1000.0,
                   "ratio": ((step_ms / job_ms) * 100.0).round() / 100.0,
                   "transactions": batches})
        );
        rates.push(rate);
        steps.push(step_ms);
        jobs.push(job_ms);
    }
    let (s, j) = (median(steps), median(jobs));
    println!(
        "{}",
        json!({"scenario": "workflow", "summary": true, "database": db, "concurrency": setup.concurrency,
               "instances_per_s": median(rates), "step_ms": (s * 1000.0).round() / 1000.0,
               "job_ms": (j * 1000.0).round() / 1000.0, "ratio": ((s / j) * 100.0).round() / 100.0})
    );
    Ok(())
}
