//! `keel bench`: the scenarios of `shared/bench/bullmq-peer` (same names and fields), run on
//! Keel's own engine (`engine: "keel"`, `keel-native`), on Keel over BullMQ's scripts
//! (`engine: "bullmq"`) and on raw bullmq-official with no Keel layer
//! (`engine: "bullmq-official"`), one JSON line per scenario and engine on stdout.
//!
//! Over 600 lines on purpose: every scenario shares the timing, round and JSON-line helpers
//! below, and the file mirrors `shared/bench/bullmq-peer/bench.mjs` scenario for scenario so the
//! two can be read side by side.
//!
//! Completions are timed when the handler returns (Node's peer times its `completed` events,
//! which fire right after); at steady state the rates are the same.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use keel::config::Config;
use keel::QueueBackend as _;
use keel::{handler_fn, Backend, BackendKind, JobOptions, KeepJobs, NewJob, Queue};
use serde_json::{json, Map, Value};

use crate::Failure;

/// Jobs per `add_bulk` call (as the peer).
const BULK_CHUNK: usize = 1000;
/// Concurrent single-add loops (as the peer).
const SINGLE_IN_FLIGHT: usize = 16;
/// Key prefix of benchmark queues.
const BENCH_PREFIX: &str = "keelbench";

/// Which implementation runs the scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    /// Keel's own Redis engine (`keel-native`: batched claims and acknowledgements).
    Keel,
    /// Keel's Queue and Worker over BullMQ's scripts (what queues run today).
    Bullmq,
    /// Raw bullmq-official.
    #[value(name = "bullmq-official")]
    BullmqOfficial,
    /// bullmq and bullmq-official, alternated per scenario.
    Both,
}

impl Engine {
    fn label(self, backend: BackendKind) -> &'static str {
        match (self, backend) {
            (_, BackendKind::Memory) => "memory",
            (Engine::Keel, _) => "keel",
            (Engine::BullmqOfficial, _) => "bullmq-official",
            _ => "bullmq",
        }
    }
}

/// `keel bench` arguments.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Jobs per scenario (enqueue_single uses a tenth).
    #[arg(long, default_value_t = 100_000)]
    jobs: usize,
    /// Worker concurrency (process, latency).
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Bytes of each job's payload string.
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Comma list of enqueue_bulk, enqueue_single, process, process_keep, latency, and the
    /// toolkit's ratelimit_check, cache_hit and the server's http_enqueue, process_runs (not in
    /// the default list).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "enqueue_bulk,enqueue_single,process,process_keep,latency"
    )]
    scenario: Vec<String>,
    /// Comma list of keel (Keel's own engine), bullmq (Keel over BullMQ's scripts),
    /// bullmq-official; both = bullmq,bullmq-official. The server scenarios (http_enqueue,
    /// process_runs, workflow, email, ai) run on Keel's engine when the list has keel.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "bullmq")]
    engine: Vec<Engine>,
    /// Open-loop add rate of the latency scenario (jobs/s).
    #[arg(long, default_value_t = 1000)]
    latency_rate: u64,
    /// Duration of the latency scenario.
    #[arg(long, default_value_t = 10)]
    latency_seconds: u64,
    /// Cap per scenario.
    #[arg(long, default_value_t = 120)]
    scenario_timeout_s: u64,
    /// Rounds of each toolkit scenario (raw and Keel alternated), summarised by medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Instead of the scenarios: one queue on Keel's engine spread over every master of the
    /// Redis Cluster the configuration names, against the same queue on one master, alternated
    /// `--rounds` times (jobs/s and each master's CPU).
    #[arg(long)]
    cluster: bool,
}

/// Runs the benchmark.
pub async fn run(args: BenchArgs, config: &Config) -> Result<(), Failure> {
    for s in &args.scenario {
        if ![
            "enqueue_bulk",
            "enqueue_single",
            "process",
            "process_keep",
            "latency",
        ]
        .contains(&s.as_str())
            && !crate::bench_toolkit::SCENARIOS.contains(&s.as_str())
            && !crate::bench_server::SCENARIOS.contains(&s.as_str())
        {
            return Err(
                keel::Error::invalid("--scenario", format!("unknown scenario {s:?}")).into(),
            );
        }
    }
    if args.rounds == 0 {
        return Err(keel::Error::invalid("--rounds", "must be at least 1").into());
    }
    if args.jobs < 2 || args.concurrency == 0 {
        return Err(
            keel::Error::invalid("--jobs", "needs --jobs >= 2 and --concurrency >= 1").into(),
        );
    }
    if args.cluster {
        return crate::bench_cluster::run(
            config,
            crate::bench_cluster::Sizes {
                jobs: args.jobs,
                concurrency: args.concurrency,
                payload: args.payload,
                rounds: args.rounds,
                timeout: Duration::from_secs(args.scenario_timeout_s),
            },
        )
        .await;
    }
    let keel_backend = match &config.redis_url {
        Some(url) => {
            Backend::redis(keel::backend::RedisSettings {
                url: url.clone(),
                prefix: BENCH_PREFIX.into(),
                command_timeout: config.command_timeout,
                sharded_pubsub: false,
            })
            .await?
        }
        None => Backend::memory(),
    };
    let mut engines: Vec<Engine> = Vec::new();
    for e in &args.engine {
        let add: &[Engine] = match (e, keel_backend.kind()) {
            (_, BackendKind::Memory) => &[Engine::Bullmq],
            (Engine::Both, _) => &[Engine::Bullmq, Engine::BullmqOfficial],
            (e, _) => std::slice::from_ref(e),
        };
        for a in add {
            if !engines.contains(a) {
                engines.push(*a);
            }
        }
    }
    let native = match (&config.redis_url, engines.contains(&Engine::Keel)) {
        (Some(url), true) => Some(
            keel_native::NativeEngine::connect(url, BENCH_PREFIX, config.command_timeout).await?,
        ),
        _ => None,
    };
    let redis = match &config.redis_url {
        Some(url) => Some(
            redis::Client::open(url.as_str())
                .map_err(|e| keel::Error::invalid("--redis", e.to_string()))?
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| keel::Error::BackendUnavailable(e.to_string()))?,
        ),
        None => None,
    };
    let bench = Bench {
        args,
        backend: keel_backend,
        redis,
        url: config.redis_url.clone(),
        native,
    };
    // The server scenarios run on one engine: Keel's own with `--engine keel`, else BullMQ's.
    let server_backend = match (&config.redis_url, engines.contains(&Engine::Keel)) {
        (Some(url), true) => {
            Backend::native(keel::backend::RedisSettings {
                url: url.clone(),
                prefix: BENCH_PREFIX.into(),
                command_timeout: config.command_timeout,
                sharded_pubsub: false,
            })
            .await?
        }
        _ => bench.backend.clone(),
    };
    for scenario in bench.args.scenario.clone() {
        if crate::bench_server::SCENARIOS.contains(&scenario.as_str()) {
            crate::bench_server::run(
                &scenario,
                crate::bench_server::Setup {
                    config,
                    backend: server_backend.clone().with_keys(
                        keel::Keys::new(BENCH_PREFIX, "bench").expect("a valid key space"),
                    ),
                    jobs: bench.args.jobs,
                    concurrency: bench.args.concurrency,
                    rounds: bench.args.rounds,
                },
            )
            .await;
            continue;
        }
        if crate::bench_toolkit::SCENARIOS.contains(&scenario.as_str()) {
            let backend = bench
                .backend
                .clone()
                .with_keys(keel::Keys::new(BENCH_PREFIX, "bench").expect("a valid key space"));
            crate::bench_toolkit::run(
                &scenario,
                &backend,
                bench.redis.as_ref(),
                bench.url.as_deref(),
                crate::bench_toolkit::Sizes {
                    ops: bench.args.jobs,
                    concurrency: bench.args.concurrency,
                    payload: bench.args.payload,
                    rounds: bench.args.rounds,
                },
            )
            .await;
            continue;
        }
        for engine in &engines {
            let line = bench.scenario(&scenario, *engine).await;
            println!("{line}");
        }
    }
    Ok(())
}

struct Bench {
    args: BenchArgs,
    backend: Backend,
    redis: Option<redis::aio::MultiplexedConnection>,
    url: Option<String>,
    native: Option<keel_native::NativeEngine>,
}

/// Raw, Keel or native handles for one scenario's queue.
#[derive(Clone)]
enum Target {
    Keel(Queue),
    Raw(Arc<bullmq::Queue>),
    /// The native engine, the queue's name and the retention of its completed jobs.
    Native(Box<keel_native::NativeEngine>, String, Option<KeepJobs>),
}

impl Target {
    fn native_job(keep: &Option<KeepJobs>, name: &str, data: Value) -> NewJob {
        NewJob::new(name, data).with_opts(JobOptions {
            remove_on_complete: keep.clone(),
            ..JobOptions::default()
        })
    }

    async fn add(&self, name: &str, data: Value) -> Result<(), String> {
        match self {
            Target::Keel(q) => q.add(name, data, JobOptions::default()).await.map(|_| ()),
            Target::Raw(q) => {
                return q
                    .add(name, data)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            Target::Native(e, q, keep) => e
                .add(q, Target::native_job(keep, name, data))
                .await
                .map(|_| ()),
        }
        .map_err(|e| e.to_string())
    }
}

impl Bench {
    async fn scenario(&self, scenario: &str, engine: Engine) -> Value {
        let name = format!(
            "{scenario}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let mut out = Map::new();
        out.insert(
            "scenario".into(),
            json!(if scenario == "process_keep" {
                "process"
            } else {
                scenario
            }),
        );
        out.insert("engine".into(), json!(engine.label(self.backend.kind())));
        out.insert(
            "backend".into(),
            json!(if self.backend.kind() == BackendKind::Memory {
                "memory"
            } else {
                "redis"
            }),
        );
        out.insert("n".into(), json!(self.args.jobs));
        out.insert("concurrency".into(), json!(self.args.concurrency));
        out.insert("payload_bytes".into(), json!(self.args.payload));
        out.insert("queue".into(), json!(name));
        if let Some(v) = self.info_field("server", "redis_version").await {
            out.insert("redis".into(), json!(v));
        }
        let cap = Duration::from_secs(self.args.scenario_timeout_s);
        let target = match self.target(&name, engine, scenario).await {
            Ok(t) => t,
            Err(e) => {
                out.insert("error".into(), json!(e));
                return Value::Object(out);
            }
        };
        let body = async {
            match scenario {
                "enqueue_bulk" => self.enqueue_bulk(&target, &mut out).await,
                "enqueue_single" => self.enqueue_single(&target, &mut out).await,
                "process" => self.process(&target, "remove", &mut out).await,
                "process_keep" => self.process(&target, "keep1000", &mut out).await,
                _ => self.latency(&target, &mut out).await,
            }
        };
        let result = tokio::time::timeout(cap, body).await;
        match result {
            Err(_) => {
                out.insert("timed_out".into(), json!(true));
            }
            Ok(Err(e)) => {
                out.insert("timed_out".into(), json!(false));
                out.insert("error".into(), json!(e));
            }
            Ok(Ok(())) => {
                out.insert("timed_out".into(), json!(false));
            }
        }
        let c0 = Instant::now();
        let cleanup = match &target {
            Target::Keel(q) => q.obliterate(true).await.map_err(|e| e.to_string()),
            Target::Native(e, q, _) => e.obliterate(q, true).await.map_err(|e| e.to_string()),
            Target::Raw(q) => {
                async {
                    q.pause().await.map_err(|e| e.to_string())?;
                    q.obliterate(true, 5000).await.map_err(|e| e.to_string())
                }
                .await
            }
        };
        if let Err(e) = cleanup {
            out.entry("error").or_insert(json!(format!("cleanup: {e}")));
        }
        out.insert("cleanup_ms".into(), json!(c0.elapsed().as_millis() as u64));
        Value::Object(out)
    }

    async fn target(&self, name: &str, engine: Engine, scenario: &str) -> Result<Target, String> {
        let keep = match scenario {
            "process" | "latency" => Some(KeepJobs::remove_all()),
            "process_keep" => Some(KeepJobs::count(1000)),
            _ => None,
        };
        match engine {
            Engine::Keel => {
                let e = self.native.clone().ok_or("the keel engine needs Redis")?;
                Ok(Target::Native(Box::new(e), name.to_string(), keep))
            }
            Engine::BullmqOfficial => {
                let url = self.url.clone().ok_or("bullmq-official needs Redis")?;
                let defaults = bullmq::JobOptions {
                    remove_on_complete: keep.map(|k| match k.count {
                        Some(0) => bullmq::types::RemoveOnFinish::Bool(true),
                        Some(c) => bullmq::types::RemoveOnFinish::Count(c),
                        None => bullmq::types::RemoveOnFinish::Bool(false),
                    }),
                    ..Default::default()
                };
                let opts = bullmq::QueueOptions::new()
                    .connection(bullmq::options::RedisConnectionOptions::new().url(url))
                    .prefix(BENCH_PREFIX)
                    .default_job_options(defaults);
                bullmq::Queue::with_options(name, opts)
                    .await
                    .map(|q| Target::Raw(Arc::new(q)))
                    .map_err(|e| e.to_string())
            }
            _ => Queue::new(&self.backend, name)
                .and_then(|q| {
                    q.with_defaults(JobOptions {
                        remove_on_complete: keep,
                        ..Default::default()
                    })
                })
                .map(Target::Keel)
                .map_err(|e| e.to_string()),
        }
    }

    fn payload(&self) -> Value {
        json!({"p": "x".repeat(self.args.payload)})
    }

    async fn add_bulk(&self, t: &Target, n: usize) -> Result<(), String> {
        let mut left = n;
        while left > 0 {
            let k = left.min(BULK_CHUNK);
            match t {
                Target::Keel(q) => {
                    let jobs = (0..k)
                        .map(|_| NewJob::new("bulk", self.payload()))
                        .collect();
                    q.add_bulk(jobs).await.map_err(|e| e.to_string())?;
                }
                Target::Raw(q) => {
                    let jobs = (0..k)
                        .map(|_| bullmq::BulkJob::new("bulk", self.payload()))
                        .collect();
                    q.add_bulk(jobs).await.map_err(|e| e.to_string())?;
                }
                Target::Native(e, q, keep) => {
                    let jobs = (0..k)
                        .map(|_| Target::native_job(keep, "bulk", self.payload()))
                        .collect();
                    e.add_bulk(q, jobs).await.map_err(|e| e.to_string())?;
                }
            }
            left -= k;
        }
        Ok(())
    }

    async fn add_one(&self, t: &Target, name: &str, data: Value) -> Result<(), String> {
        t.add(name, data).await
    }

    async fn waiting(&self, t: &Target) -> u64 {
        match t {
            Target::Keel(q) => q.counts().await.map(|c| c.waiting).unwrap_or(0),
            Target::Raw(q) => q.get_waiting_count().await.unwrap_or(0),
            Target::Native(e, q, _) => e.counts(q).await.map(|c| c.waiting).unwrap_or(0),
        }
    }

    async fn enqueue_bulk(&self, t: &Target, out: &mut Map<String, Value>) -> Result<(), String> {
        let n = self.args.jobs;
        let mem0 = self.info_u64("memory", "used_memory").await;
        let cpu0 = self.redis_cpu().await;
        let t0 = Instant::now();
        self.add_bulk(t, n).await?;
        let elapsed = t0.elapsed();
        self.put_cpu(out, cpu0, elapsed, n).await;
        let waiting = self.waiting(t).await;
        let mem1 = self.info_u64("memory", "used_memory").await;
        out.insert("chunk".into(), json!(BULK_CHUNK));
        out.insert("jobs".into(), json!(n));
        out.insert("elapsed_ms".into(), json!(ms(elapsed)));
        out.insert("jobs_per_s".into(), json!(rate(n, elapsed)));
        out.insert("waiting_after".into(), json!(waiting));
        if let (Some(a), Some(b)) = (mem0, mem1) {
            out.insert(
                "redis_bytes_per_job".into(),
                json!(((b as f64 - a as f64) / n as f64).round()),
            );
        }
        if waiting != n as u64 {
            return Err(format!("expected {n} waiting, found {waiting}"));
        }
        Ok(())
    }

    async fn enqueue_single(&self, t: &Target, out: &mut Map<String, Value>) -> Result<(), String> {
        let total = (self.args.jobs / 10).max(1);
        let lanes = SINGLE_IN_FLIGHT.min(total);
        let next = AtomicUsize::new(0);
        let lat = Mutex::new(Vec::with_capacity(total));
        let cpu0 = self.redis_cpu().await;
        let t0 = Instant::now();
        let lane = || async {
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let s = Instant::now();
                self.add_one(t, "single", self.payload()).await?;
                lat.lock().unwrap().push(s.elapsed().as_secs_f64() * 1000.0);
            }
            Ok::<(), String>(())
        };
        futures::future::try_join_all((0..lanes).map(|_| lane())).await?;
        let elapsed = t0.elapsed();
        self.put_cpu(out, cpu0, elapsed, total).await;
        out.insert("in_flight".into(), json!(lanes));
        out.insert("jobs".into(), json!(total));
        out.insert("elapsed_ms".into(), json!(ms(elapsed)));
        out.insert("jobs_per_s".into(), json!(rate(total, elapsed)));
        out.insert(
            "add_latency".into(),
            summary(&mut lat.into_inner().unwrap()),
        );
        Ok(())
    }

    async fn process(
        &self,
        t: &Target,
        variant: &str,
        out: &mut Map<String, Value>,
    ) -> Result<(), String> {
        let n = self.args.jobs;
        out.insert("variant".into(), json!(variant));
        out.insert(
            "remove_on_complete".into(),
            if variant == "remove" {
                json!(true)
            } else {
                json!({"count": 1000})
            },
        );
        let p0 = Instant::now();
        self.add_bulk(t, n).await?;
        out.insert("preload_ms".into(), json!(ms(p0.elapsed())));
        let base = Instant::now();
        let done = Arc::new(AtomicUsize::new(0));
        let first = Arc::new(AtomicU64::new(u64::MAX));
        let last = Arc::new(AtomicU64::new(0));
        let mark = {
            let (done, first, last) = (done.clone(), first.clone(), last.clone());
            move || {
                let now = base.elapsed().as_micros() as u64;
                first.fetch_min(now, Ordering::Relaxed);
                last.fetch_max(now, Ordering::Relaxed);
                done.fetch_add(1, Ordering::Relaxed);
            }
        };
        let cpu0 = self.redis_cpu().await;
        let t0 = base.elapsed().as_micros() as u64;
        let running = self.start_worker(t, Arc::new(move |_| mark())).await?;
        while done.load(Ordering::Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let wall = base.elapsed();
        self.put_cpu(out, cpu0, wall - Duration::from_micros(t0), n)
            .await;
        running.stop().await;
        let (f, l) = (first.load(Ordering::Relaxed), last.load(Ordering::Relaxed));
        let span = Duration::from_micros(l.saturating_sub(f));
        out.insert("jobs".into(), json!(n));
        out.insert("completed".into(), json!(done.load(Ordering::Relaxed)));
        out.insert("failed".into(), json!(0));
        out.insert(
            "startup_ms".into(),
            json!(ms(Duration::from_micros(f.saturating_sub(t0)))),
        );
        out.insert("elapsed_ms".into(), json!(ms(span)));
        out.insert("jobs_per_s".into(), json!(rate(n - 1, span)));
        out.insert("wall_ms".into(), json!(ms(Duration::from_micros(l - t0))));
        out.insert(
            "wall_jobs_per_s".into(),
            json!(rate(n, Duration::from_micros(l - t0))),
        );
        out.insert("worker_rss_kb".into(), json!(rss_kb()));
        Ok(())
    }

    async fn latency(&self, t: &Target, out: &mut Map<String, Value>) -> Result<(), String> {
        let base = Instant::now();
        let lat = Arc::new(Mutex::new(Vec::new()));
        let warm = Arc::new(AtomicUsize::new(0));
        let running = {
            let (lat, warm) = (lat.clone(), warm.clone());
            self.start_worker_with_data(
                t,
                Arc::new(move |data: &Value| {
                    let now = base.elapsed().as_secs_f64() * 1000.0;
                    match data.get("t").and_then(Value::as_f64) {
                        Some(sent) => lat.lock().unwrap().push(now - sent),
                        None => {
                            warm.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }),
            )
            .await?
        };
        for _ in 0..100 {
            self.add_one(
                t,
                "warm",
                json!({"w": 1, "p": "x".repeat(self.args.payload)}),
            )
            .await?;
        }
        while warm.load(Ordering::Relaxed) < 100 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let total = (self.args.latency_rate * self.args.latency_seconds) as usize;
        let add_lat = Arc::new(Mutex::new(Vec::with_capacity(total)));
        let errors = Arc::new(AtomicUsize::new(0));
        let mut sent = 0usize;
        let mut tasks = tokio::task::JoinSet::new();
        let cpu0 = self.redis_cpu().await;
        let t0 = Instant::now();
        while sent < total {
            let due = ((t0.elapsed().as_secs_f64() * self.args.latency_rate as f64) as usize + 1)
                .min(total);
            while sent < due {
                let target = t.clone();
                let (add_lat, errors) = (add_lat.clone(), errors.clone());
                let data = json!({"t": base.elapsed().as_secs_f64() * 1000.0, "p": "x".repeat(self.args.payload)});
                tasks.spawn(async move {
                    let s = Instant::now();
                    let r = target.add("lat", data).await;
                    match r {
                        Ok(()) => add_lat
                            .lock()
                            .unwrap()
                            .push(s.elapsed().as_secs_f64() * 1000.0),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
                sent += 1;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let send_elapsed = t0.elapsed();
        while tasks.join_next().await.is_some() {}
        let expect = sent - errors.load(Ordering::Relaxed);
        while lat.lock().unwrap().len() < expect {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.put_cpu(out, cpu0, t0.elapsed(), sent).await;
        running.stop().await;
        out.insert("target_rate".into(), json!(self.args.latency_rate));
        out.insert("seconds".into(), json!(self.args.latency_seconds));
        out.insert("sent".into(), json!(sent));
        out.insert("received".into(), json!(lat.lock().unwrap().len()));
        out.insert("add_errors".into(), json!(errors.load(Ordering::Relaxed)));
        out.insert("achieved_rate".into(), json!(rate(sent, send_elapsed)));
        if let Value::Object(s) = summary(&mut lat.lock().unwrap()) {
            out.extend(s);
        }
        out.insert("add_latency".into(), summary(&mut add_lat.lock().unwrap()));
        Ok(())
    }

    async fn start_worker(
        &self,
        t: &Target,
        on_job: Arc<dyn Fn(&Value) + Send + Sync>,
    ) -> Result<Running, String> {
        self.start_worker_with_data(t, on_job).await
    }

    async fn start_worker_with_data(
        &self,
        t: &Target,
        on_job: Arc<dyn Fn(&Value) + Send + Sync>,
    ) -> Result<Running, String> {
        match t {
            Target::Keel(q) => {
                let w = q
                    .worker()
                    .concurrency(self.args.concurrency)
                    .dead_letter(false)
                    .fallback(handler_fn(move |ctx| {
                        on_job(&ctx.job.data);
                        async { Ok(Value::Null) }
                    }))
                    .start()
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Running::Keel(w))
            }
            Target::Raw(q) => {
                let url = self.url.clone().ok_or("needs Redis")?;
                let opts = bullmq::WorkerOptions::new()
                    .connection(bullmq::options::RedisConnectionOptions::new().url(url))
                    .prefix(BENCH_PREFIX)
                    .concurrency(self.args.concurrency);
                let w = bullmq::Worker::with_options(
                    q.name(),
                    move |job: bullmq::Job, _t| {
                        on_job(job.data());
                        async { Ok(Value::Null) }
                    },
                    opts,
                )
                .await
                .map_err(|e| e.to_string())?;
                let w = Arc::new(w);
                // bullmq's event channel is unbounded: drain it for a fair comparison.
                let drain = {
                    let w = w.clone();
                    tokio::spawn(async move { while w.next_event().await.is_some() {} })
                };
                Ok(Running::Raw(w, drain))
            }
            Target::Native(e, q, _) => {
                let w = keel_native::NativeWorker::start(
                    e,
                    q,
                    Arc::new(move |ctx: keel::JobContext| {
                        on_job(&ctx.job.data);
                        Box::pin(async { Ok(Value::Null) })
                    }),
                    keel::WorkerOptions {
                        concurrency: self.args.concurrency,
                        ..keel::WorkerOptions::default()
                    },
                    Arc::new(|_| {}),
                )
                .await
                .map_err(|e| e.to_string())?;
                Ok(Running::Native(w))
            }
        }
    }

    async fn info_field(&self, section: &str, field: &str) -> Option<String> {
        let mut c = self.redis.clone()?;
        let info: String = redis::cmd("INFO")
            .arg(section)
            .query_async(&mut c)
            .await
            .ok()?;
        info.lines().find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_string())
        })
    }

    async fn info_u64(&self, section: &str, field: &str) -> Option<u64> {
        self.info_field(section, field).await?.parse().ok()
    }

    async fn redis_cpu(&self) -> Option<f64> {
        let sys: f64 = self.info_field("cpu", "used_cpu_sys").await?.parse().ok()?;
        let user: f64 = self
            .info_field("cpu", "used_cpu_user")
            .await?
            .parse()
            .ok()?;
        Some(sys + user)
    }

    /// Redis's CPU over `window` (percent of a core) and per job of the `jobs` it served.
    async fn put_cpu(
        &self,
        out: &mut Map<String, Value>,
        before: Option<f64>,
        window: Duration,
        jobs: usize,
    ) {
        if let (Some(a), Some(b)) = (before, self.redis_cpu().await) {
            out.insert(
                "redis_cpu_pct".into(),
                json!(((b - a) / window.as_secs_f64() * 100.0).round()),
            );
            out.insert(
                "redis_cpu_us_per_job".into(),
                json!(((b - a) * 1e6 / jobs.max(1) as f64 * 10.0).round() / 10.0),
            );
        }
    }
}

enum Running {
    Keel(keel::Worker),
    Raw(Arc<bullmq::Worker>, tokio::task::JoinHandle<()>),
    Native(keel_native::NativeWorker),
}

impl Running {
    async fn stop(self) {
        match self {
            Running::Keel(w) => {
                let _ = w.close(Duration::from_secs(10)).await;
            }
            Running::Raw(w, drain) => {
                let _ = w.close(10_000).await;
                drain.abort();
            }
            Running::Native(w) => {
                let _ = w.close(Duration::from_secs(10)).await;
            }
        }
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

fn rate(n: usize, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        (n as f64 / d.as_secs_f64()).round()
    }
}

fn summary(v: &mut [f64]) -> Value {
    if v.is_empty() {
        return json!({"count": 0});
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    json!({
        "count": v.len(),
        "mean_ms": r(v.iter().sum::<f64>() / v.len() as f64),
        "p50_ms": r(pct(0.50)), "p95_ms": r(pct(0.95)), "p99_ms": r(pct(0.99)),
        "max_ms": r(v[v.len() - 1]),
    })
}

fn rss_kb() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
}
