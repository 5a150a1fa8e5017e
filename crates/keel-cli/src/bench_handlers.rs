//! `keel bench --scenario email,ai`: the handlers that do a seed's work.
//!
//! - `email`: `jobs` preloaded `send_email_template` jobs (a template with a subject, text and
//!   HTML body rendered from each job's data) sent by a worker of `concurrency` over one
//!   pooled SMTP transport (connections reused, `pool_size` = `concurrency`) to the SMTP
//!   server at `SMTP_URL` (required; a local one: `python3 -m aiosmtpd -n -c
//!   aiosmtpd.handlers.Sink -l 127.0.0.1:2525` and `SMTP_URL=smtp://127.0.0.1:2525`), with
//!   email logs recorded and not, alternated per round. `messages_per_s`.
//! - `ai`: `jobs` preloaded jobs through the `ai` handler against an in-process server speaking
//!   the chat-completions protocol that answers at once (records on and off), and through the
//!   plain `http` handler against the same server's hook, alternated per round; then both as
//!   `keel serve` runs them (`http_served`, `ai_served`: every attempt a run record, an AI
//!   call's written on its run's row). `overhead` = per-job time of `ai` / per-job time of `http` − 1 (bare, AI
//!   records only, and served).
//!
//! Records go to `DATABASE_URL` (else a SQLite file in a temporary directory).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel::config::Config;
use keel::handlers::HandlerFactory;
use keel::Queue;
use serde_json::{json, Value};

use crate::bench_server::{median, preloaded, store, Served, Setup};

/// Runs a worker of `concurrency` with `p` for jobs named `job` on `q` until `n` attempts
/// ended; the seconds that took.
pub(crate) async fn drain(
    q: &Queue,
    job: &str,
    p: keel::Processor,
    n: usize,
    concurrency: usize,
) -> Result<f64, String> {
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    let counted: keel::Processor = Arc::new(move |ctx| {
        let (p, d) = (p.clone(), d.clone());
        Box::pin(async move {
            let r = p(ctx).await;
            d.fetch_add(1, Ordering::Relaxed);
            r
        })
    });
    let started = Instant::now();
    let worker = q
        .worker()
        .handler(job, counted)
        .concurrency(concurrency)
        .start()
        .await
        .map_err(|e| e.to_string())?;
    while done.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    worker
        .close(Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    Ok(secs)
}

/// One round: `n` preloaded jobs named `job` on a fresh queue through the handler configured
/// by `handler_toml` (a `[queues.Q.handlers.JOB]` body), each attempt a run record in `runs`
/// when given (as `keel serve` does); jobs per second and CPU µs per job (see [`Cpu`]).
async fn round(
    setup: &Setup<'_>,
    handlers: &keel_handlers::Handlers,
    job: &str,
    handler_toml: &str,
    n: usize,
    runs: Option<&Arc<dyn keel_records::RecordStore>>,
) -> Result<(f64, serde_json::Value), String> {
    let name = format!(
        "bench-h-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let config = Config::parse(
        &format!("[queues.{name}]\nattempts = 1\n[queues.{name}.handlers.{job}]\n{handler_toml}"),
        &|_| None,
    )
    .map_err(|e| e.to_string())?;
    let qc = config.queue_config(&name);
    let processor = handlers
        .build(&qc, "bench", &qc.handlers[job])
        .map_err(|e| e.to_string())?;
    let q = preloaded(setup, &name, job, n).await?;
    let served = match runs {
        Some(store) => Some(Served::start(setup, store).await?),
        None => None,
    };
    let processor = match &served {
        Some(s) => s.wrap(setup, &name, processor),
        None => processor,
    };
    let cpu = Cpu::now();
    let secs = drain(&q, job, processor, n, setup.concurrency).await?;
    if let Some(s) = served {
        let stats = s.finish().await;
        if stats.dropped > 0 || stats.failed_writes > 0 {
            return Err(format!("run records lost: {stats:?}"));
        }
    }
    // The records written after the last job (at most a batch) count with the round.
    handlers.flush().await;
    let cpu = cpu.per_job_us(&Cpu::now(), n);
    let counts = q.counts().await.map_err(|e| e.to_string())?;
    let _ = q.obliterate(true).await;
    if counts.failed > 0 {
        return Err(format!("{} of {n} jobs failed", counts.failed));
    }
    Ok(((n as f64 / secs).round(), cpu))
}

/// The `email` scenario.
pub async fn email(setup: &Setup<'_>, dir: &std::path::Path) -> Result<(), String> {
    let url = std::env::var("SMTP_URL").map_err(|_| {
        "SMTP_URL is not set: start a local SMTP server (python3 -m aiosmtpd -n -c aiosmtpd.handlers.Sink -l 127.0.0.1:2525) and set SMTP_URL=smtp://127.0.0.1:2525".to_string()
    })?;
    let store = store(setup.config, dir).await?;
    let db = store.database();
    let messages: Arc<dyn keel_records::MessageStore> = store.clone();
    let env: keel_handlers::Env = Arc::new(move |k| (k == "SMTP_URL").then(|| url.clone()));
    let plain = keel_handlers::Handlers::new(&setup.backend).env(env.clone());
    let recorded = keel_handlers::Handlers::new(&setup.backend)
        .env(env)
        .records(messages);
    // The template inline, its variables from the job's data (`i`).
    let handler = format!(
        "kind = \"email\"\nfrom = \"Keel <bench@keel.example>\"\nto = \"user{{{{ i }}}}@example.com\"\n\
         template = \"welcome\"\npool_size = {}\n\
         templates.welcome = {{ subject = \"Welcome {{{{ i }}}}\", text = \"Hello {{{{ i }}}}, welcome.\", html = \"<p>Hello <b>{{{{ i }}}}</b></p>\" }}\n",
        setup.concurrency
    );
    let (mut on, mut off) = (vec![], vec![]);
    for r in 1..=setup.rounds {
        for records in [false, true] {
            let h = if records { &recorded } else { &plain };
            let (rate, cpu) =
                round(setup, h, "send_email_template", &handler, setup.jobs, None).await?;
            println!(
                "{}",
                json!({"scenario": "email", "round": r, "records": records, "n": setup.jobs,
                       "concurrency": setup.concurrency, "database": db, "messages_per_s": rate,
                       "cpu_us_per_job": cpu})
            );
            if records {
                on.push(rate)
            } else {
                off.push(rate)
            }
        }
    }
    recorded.close().await;
    let (written, dropped, failed) = recorded.record_counts();
    println!(
        "{}",
        json!({"scenario": "email", "summary": true, "records_written": written,
               "records_dropped": dropped, "records_failed": failed, "database": db, "concurrency": setup.concurrency,
               "records_on_messages_per_s": median(on), "records_off_messages_per_s": median(off)})
    );
    Ok(())
}

/// A server answering chat completions (with usage) and a plain hook at once, each with a
/// body made once: it stands in for a remote provider and a remote hook, so what it spends per
/// request (in this process) is kept small and the same for both.
async fn provider() -> Result<String, String> {
    use axum::http::header::CONTENT_TYPE;
    use axum::routing::post;
    const COMPLETION: &str = r#"{"id":"gen","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"A short summary."},"finish_reason":"stop"}],"usage":{"prompt_tokens":120,"completion_tokens":30,"total_tokens":150}}"#;
    const HOOK: &str = r#"{"ok":true}"#;
    let json =
        |body: &'static str| move || async move { ([(CONTENT_TYPE, "application/json")], body) };
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(json(COMPLETION)))
        .route("/hook", post(json(HOOK)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}"))
}

/// The `ai` scenario.
pub async fn ai(setup: &Setup<'_>, dir: &std::path::Path) -> Result<(), String> {
    let base = provider().await?;
    let store = store(setup.config, dir).await?;
    let db = store.database();
    let messages: Arc<dyn keel_records::MessageStore> = store.clone();
    let env: keel_handlers::Env =
        Arc::new(|k| (k == "OPENROUTER_API_KEY").then(|| "sk-bench".to_string()));
    let plain = keel_handlers::Handlers::new(&setup.backend).env(env.clone());
    let recorded = keel_handlers::Handlers::new(&setup.backend)
        .env(env)
        .records(messages);
    let ai = format!(
        "kind = \"ai\"\nbase_url = \"{base}/v1\"\nmodel = \"openai/gpt-4o-mini\"\nsystem = \"You summarize.\"\nprompt = \"Summarize article {{{{ i }}}}.\"\nprices = {{ \"openai/gpt-4o-mini\" = {{ prompt = 0.15, completion = 0.60 }} }}\n"
    );
    let http = format!("kind = \"http\"\nurl = \"{base}/hook\"\n");
    // Each handler bare, and as `keel serve` runs it: every attempt a run record, an AI call
    // (with its messages and events) on its run's row.
    let rounds: [(&str, &keel_handlers::Handlers, &String, bool); 5] = [
        ("http", &plain, &http, false),
        ("ai", &plain, &ai, false),
        ("ai_recorded", &recorded, &ai, false),
        ("http_served", &plain, &http, true),
        ("ai_served", &recorded, &ai, true),
    ];
    let mut rates: Vec<Vec<f64>> = vec![vec![]; rounds.len()];
    let mut cpus: Vec<Vec<f64>> = vec![vec![]; rounds.len()];
    for r in 1..=setup.rounds {
        // Every other round in the reverse order, so that no handler always runs after the
        // same one (after another's writes, say) or at the same point of a round.
        let mut order: Vec<usize> = (0..rounds.len()).collect();
        if r % 2 == 0 {
            order.reverse();
        }
        for i in order {
            let (what, handlers, toml, runs) = &rounds[i];
            let runs = runs.then_some(&store);
            let (rate, cpu) =
                round(setup, handlers, "summarize_article", toml, setup.jobs, runs).await?;
            println!(
                "{}",
                json!({"scenario": "ai", "round": r, "handler": what, "n": setup.jobs,
                       "concurrency": setup.concurrency, "database": db, "jobs_per_s": rate,
                       "cpu_us_per_job": cpu})
            );
            rates[i].push(rate);
            cpus[i].push(cpu["total"].as_f64().unwrap_or(0.0));
        }
    }
    // What the recorded rounds wrote, dropped (buffer full) and lost, once flushed.
    recorded.close().await;
    let (written, dropped, failed) = recorded.record_counts();
    let m: Vec<f64> = rates.into_iter().map(median).collect();
    let c: Vec<f64> = cpus.into_iter().map(median).collect();
    // Per-job time of the `ai` handler over that of `http`, minus one.
    let overhead = |ai: f64, http: f64| ((http / ai - 1.0) * 1000.0).round() / 1000.0;
    let cpu_overhead = |ai: f64, http: f64| ((ai / http - 1.0) * 1000.0).round() / 1000.0;
    println!(
        "{}",
        json!({"scenario": "ai", "summary": true, "database": db, "concurrency": setup.concurrency,
               "http_jobs_per_s": m[0], "ai_jobs_per_s": m[1], "ai_recorded_jobs_per_s": m[2],
               "http_served_jobs_per_s": m[3], "ai_served_jobs_per_s": m[4],
               "overhead": overhead(m[1], m[0]), "overhead_recorded": overhead(m[2], m[0]),
               "overhead_served": overhead(m[4], m[3]),
               "cpu_us_per_job": {"http": c[0], "ai": c[1], "ai_recorded": c[2], "http_served": c[3], "ai_served": c[4]},
               "cpu_overhead": cpu_overhead(c[1], c[0]), "cpu_overhead_recorded": cpu_overhead(c[2], c[0]),
               "cpu_overhead_served": cpu_overhead(c[4], c[3]),
               "records_written": written, "records_dropped": dropped, "records_failed": failed})
    );
    Ok(())
}

/// CPU seconds used so far by this process, by every `redis-server` and by every `postgres`
/// process of the machine (from `/proc`): what a job costs, which on a shared 2-core machine
/// is steadier than the jobs per second it gets.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cpu {
    keel: f64,
    redis: f64,
    postgres: f64,
}

impl Cpu {
    /// The counters now.
    pub(crate) fn now() -> Cpu {
        let mut cpu = Cpu {
            keel: proc_cpu("self").unwrap_or(0.0),
            ..Cpu::default()
        };
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            match comm.trim() {
                "redis-server" => cpu.redis += proc_cpu(pid).unwrap_or(0.0),
                "postgres" => cpu.postgres += proc_cpu(pid).unwrap_or(0.0),
                _ => {}
            }
        }
        cpu
    }

    /// Microseconds of CPU per job from `self` to `later`, by process and in total.
    pub(crate) fn per_job_us(&self, later: &Cpu, n: usize) -> Value {
        let us = |a: f64, b: f64| ((b - a).max(0.0) * 1e6 / n.max(1) as f64 * 10.0).round() / 10.0;
        let (k, r, p) = (
            us(self.keel, later.keel),
            us(self.redis, later.redis),
            us(self.postgres, later.postgres),
        );
        json!({"keel": k, "redis": r, "postgres": p, "total": ((k + r + p) * 10.0).round() / 10.0})
    }
}

/// utime + stime of `/proc/<pid>/stat`, in seconds (the kernel's 100 ticks a second).
fn proc_cpu(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}
