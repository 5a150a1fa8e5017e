//! One function per command.

use std::collections::BTreeSet;
use std::time::Duration;

use keel::config::Config;
use keel::{Backend, BackendKind, Backoff, Error, Job, JobOptions, JobState, Queue};
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::{Cli, Command, DlqAction, Failure};

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    let mut config = Config::load_with(cli.config.as_deref(), keel_server::config::SECTIONS)?;
    // keel serve's sections are checked for every command, as the library checks its own.
    keel_server::config::ServerConfig::from_env(&config)?;
    if let Some(url) = cli.redis {
        keel::config::check_redis_url(&url).map_err(|m| Error::invalid("--redis", m))?;
        config.redis_url = Some(url);
    }
    if let Some(prefix) = cli.prefix {
        if prefix.is_empty() || prefix.contains(':') {
            return Err(Error::invalid("--prefix", "must be non-empty and contain no ':'").into());
        }
        config.prefix = prefix;
    }
    let json_out = cli.json;
    match cli.command {
        Command::Bench(args) => crate::bench::run(args, &config).await,
        Command::Serve {
            shutdown_timeout_ms,
        } => Ok(keel_server::serve::run(config, Duration::from_millis(shutdown_timeout_ms)).await?),
        Command::Migrate { action } => crate::server::migrate(&config, action, json_out).await,
        Command::Token { action } => crate::server::token(&config, action, json_out).await,
        Command::User { action } => crate::server::user(&config, action, json_out).await,
        Command::Workflow { action } => crate::workflow::workflow(&config, action, json_out).await,
        Command::Redis { action } => crate::toolkit::redis(&config, action, json_out).await,
        Command::Cache { action } => crate::toolkit::cache(&config, action, json_out).await,
        Command::Ratelimit { action } => crate::toolkit::ratelimit(&config, action, json_out).await,
        Command::Worker {
            queues,
            shutdown_timeout_ms,
        } => worker(&config, queues, Duration::from_millis(shutdown_timeout_ms)).await,
        Command::Enqueue {
            queue,
            name,
            data,
            delay,
            priority,
            job_id,
            attempts,
            backoff,
            lifo,
        } => {
            // Parse everything before connecting: bad input changes nothing.
            let data: Value = serde_json::from_str(&data)
                .map_err(|e| Error::invalid("--data", format!("not valid JSON: {e}")))?;
            let opts = JobOptions {
                delay_ms: parse_num::<u64>("--delay", delay.as_deref())?,
                priority: parse_num::<u32>("--priority", priority.as_deref())?,
                attempts: parse_num::<u32>("--attempts", attempts.as_deref())?,
                backoff: backoff
                    .as_deref()
                    .map(|b| Backoff::parse_spec(b).map_err(|e| rename(e, "--backoff")))
                    .transpose()?,
                job_id,
                lifo,
                ..Default::default()
            };
            opts.validate().map_err(|e| {
                let arg = match e.field() {
                    Some("job_id") => "--job-id",
                    Some("delay") => "--delay",
                    Some("priority") => "--priority",
                    Some("attempts") => "--attempts",
                    _ => "--backoff",
                };
                rename(e, arg)
            })?;
            keel_core_validate_queue(&queue)?;
            let backend = shared_backend(&config, "keel enqueue").await?;
            let q = config.queue(&backend, &queue)?;
            let job = q.add(&name, data, opts).await?;
            if json_out {
                println!("{}", json!({"id": job.id}));
            } else {
                println!("{}", job.id);
            }
            Ok(())
        }
        Command::Queues => queues(&config, json_out).await,
        Command::Jobs {
            queue,
            state,
            limit,
            page,
        } => {
            let state = JobState::parse(&state).map_err(|e| rename(e, "--state"))?;
            let limit = parse_num::<usize>("--limit", Some(&limit))?.unwrap_or(20);
            let page = parse_num::<usize>("--page", Some(&page))?.unwrap_or(1);
            keel_core_validate_queue(&queue)?;
            let backend = shared_backend(&config, "keel jobs").await?;
            let q = known_queue(&config, &backend, &queue).await?;
            let jobs = q.list(state, page, limit).await.map_err(paging_arg)?;
            if json_out {
                let out: Vec<Value> = jobs
                    .iter()
                    .map(|j| job_json(j, Some(state), None))
                    .collect();
                println!("{}", Value::Array(out));
            } else {
                println!(
                    "{:<24} {:<24} {:>8}  {:<13} TIMESTAMP",
                    "ID", "NAME", "ATTEMPTS", "STATE"
                );
                for j in &jobs {
                    println!(
                        "{:<24} {:<24} {:>8}  {:<13} {}",
                        j.id, j.name, j.attempts_made, state, j.timestamp
                    );
                }
            }
            Ok(())
        }
        Command::Job { queue, id } => {
            keel_core_validate_queue(&queue)?;
            let backend = shared_backend(&config, "keel job").await?;
            let q = known_queue(&config, &backend, &queue).await?;
            let job = q
                .get_job(&id)
                .await?
                .ok_or_else(|| Error::not_found(format!("job {id} in queue {queue}")))?;
            let state = q.job_state(&id).await?;
            let (logs, _) = q.job_logs(&id, 0, 1000).await?;
            let out = job_json(&job, state, Some(logs));
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            Ok(())
        }
        Command::Dlq { queue, action } => {
            keel_core_validate_queue(&queue)?;
            // Validate the action's arguments before connecting.
            let list_args = match &action {
                DlqAction::List { limit, page } => Some((
                    parse_num::<usize>("--limit", Some(limit))?.unwrap_or(50),
                    parse_num::<usize>("--page", Some(page))?.unwrap_or(1),
                )),
                DlqAction::Replay { id, all, .. } => {
                    if id.is_none() != *all {
                        return Err(
                            Error::invalid("ID", "give an entry ID or --all (not both)").into()
                        );
                    }
                    None
                }
                DlqAction::Remove { .. } => None,
            };
            let backend = shared_backend(&config, "keel dlq").await?;
            let q = known_queue(&config, &backend, &queue).await?;
            let dlq = q.dlq();
            match action {
                DlqAction::List { .. } => {
                    let (limit, page) = list_args.expect("set above for list");
                    let entries = dlq.entries(page, limit).await.map_err(paging_arg)?;
                    if json_out {
                        println!("{}", serde_json::to_value(&entries).unwrap_or_default());
                    } else {
                        println!(
                            "{:<28} {:<20} {:>8}  {:<14} LAST ERROR",
                            "ID", "NAME", "ATTEMPTS", "FAILED AT"
                        );
                        for e in &entries {
                            println!(
                                "{:<28} {:<20} {:>8}  {:<14} {}",
                                e.id, e.name, e.attempts, e.failed_at, e.last_error
                            );
                        }
                    }
                }
                DlqAction::Replay {
                    all: true, dry_run, ..
                } => {
                    let n = if dry_run {
                        dlq.replay_all_dry_run().await?
                    } else {
                        dlq.replay_all().await?
                    };
                    if json_out {
                        println!(
                            "{}",
                            json!({"replayed": if dry_run { 0 } else { n }, "would_replay": if dry_run { n } else { 0 }, "dry_run": dry_run})
                        );
                    } else if dry_run {
                        println!("{n} entries would be replayed");
                    } else {
                        println!("replayed {n} entries");
                    }
                }
                DlqAction::Replay { id: Some(id), .. } => {
                    let job = dlq.replay(&id).await?;
                    if json_out {
                        println!(
                            "{}",
                            json!({"replayed": id, "job": {"queue": queue, "id": job.id}})
                        );
                    } else {
                        println!("replayed {id} as job {} in {queue}", job.id);
                    }
                }
                DlqAction::Replay { id: None, .. } => unreachable!("checked above"),
                DlqAction::Remove { id } => {
                    if !dlq.remove(&id).await? {
                        return Err(
                            Error::not_found(format!("DLQ entry {id} in {}", dlq.name())).into(),
                        );
                    }
                    if json_out {
                        println!("{}", json!({"removed": id}));
                    } else {
                        println!("removed {id}");
                    }
                }
            }
            Ok(())
        }
        Command::Pause { queue } => pause_resume(&config, &queue, true, json_out).await,
        Command::Resume { queue } => pause_resume(&config, &queue, false, json_out).await,
    }
}

fn keel_core_validate_queue(queue: &str) -> Result<(), Failure> {
    Queue::new(&Backend::memory(), queue)
        .map(|_| ())
        .map_err(|e| rename(e, "QUEUE").into())
}

fn rename(e: Error, arg: &str) -> Error {
    match e {
        Error::InvalidInput { message, .. } => Error::invalid(arg, message),
        other => other,
    }
}

/// Names the command-line flag when a page or limit is refused.
fn paging_arg(e: Error) -> Error {
    match e.field() {
        Some("limit") => rename(e, "--limit"),
        Some("page") => rename(e, "--page"),
        _ => e,
    }
}

pub(crate) fn parse_num<T: std::str::FromStr>(
    arg: &str,
    v: Option<&str>,
) -> Result<Option<T>, Failure> {
    match v {
        None => Ok(None),
        Some(s) => s.trim().parse::<T>().map(Some).map_err(|_| {
            Error::invalid(
                arg,
                format!("{s:?} is not a non-negative whole number in range"),
            )
            .into()
        }),
    }
}

/// The backend for a command run from a separate process: it must be shared (Redis).
async fn shared_backend(config: &Config, command: &str) -> Result<Backend, Failure> {
    if config.redis_url.is_none() {
        return Err(Error::NeedsSharedBackend(command.to_string()).into());
    }
    Ok(config.backend().await?)
}

/// The queue, if it is configured or exists on the backend.
async fn known_queue(config: &Config, backend: &Backend, name: &str) -> Result<Queue, Failure> {
    if !config.queues.contains_key(name) && !backend.queue_names().await?.iter().any(|n| n == name)
    {
        return Err(Error::invalid(
            "QUEUE",
            format!("unknown queue {name:?}: not in the configuration and not found on Redis"),
        )
        .into());
    }
    Ok(config.queue(backend, name)?)
}

async fn pause_resume(
    config: &Config,
    queue: &str,
    pause: bool,
    json_out: bool,
) -> Result<(), Failure> {
    keel_core_validate_queue(queue)?;
    let backend = shared_backend(config, if pause { "keel pause" } else { "keel resume" }).await?;
    // Any valid name, as `keel enqueue` takes: pausing a queue before its first job is how
    // an operator holds jobs that are about to arrive.
    let q = config.queue(&backend, queue)?;
    if pause {
        q.pause().await?;
    } else {
        q.resume().await?;
    }
    if json_out {
        println!("{}", json!({"queue": queue, "paused": pause}));
    } else {
        println!("{} {queue}", if pause { "paused" } else { "resumed" });
    }
    Ok(())
}

async fn queues(config: &Config, json_out: bool) -> Result<(), Failure> {
    let backend = shared_backend(config, "keel queues").await?;
    let mut names: BTreeSet<String> = config.queues.keys().cloned().collect();
    for n in backend.queue_names().await? {
        if !n.starts_with(keel::dlq_name("").as_str()) {
            names.insert(n);
        }
    }
    let mut rows = Vec::new();
    for name in names {
        let q = config.queue(&backend, &name)?;
        let c = q.counts().await?;
        let dlq = q.dlq().count().await?;
        rows.push(json!({
            "name": name, "waiting": c.waiting, "active": c.active, "delayed": c.delayed,
            "prioritized": c.prioritized, "completed": c.completed, "failed": c.failed,
            "paused": c.paused, "dlq": dlq,
        }));
    }
    if json_out {
        println!("{}", Value::Array(rows));
    } else {
        println!(
            "{:<24} {:>8} {:>7} {:>8} {:>11} {:>10} {:>7} {:>7} {:>6}",
            "NAME",
            "WAITING",
            "ACTIVE",
            "DELAYED",
            "PRIORITIZED",
            "COMPLETED",
            "FAILED",
            "PAUSED",
            "DLQ"
        );
        for r in rows {
            println!(
                "{:<24} {:>8} {:>7} {:>8} {:>11} {:>10} {:>7} {:>7} {:>6}",
                r["name"].as_str().unwrap_or(""),
                r["waiting"],
                r["active"],
                r["delayed"],
                r["prioritized"],
                r["completed"],
                r["failed"],
                r["paused"],
                r["dlq"]
            );
        }
    }
    Ok(())
}

/// A job as `keel job` prints it (BullMQ's field names).
fn job_json(j: &Job, state: Option<JobState>, logs: Option<Vec<String>>) -> Value {
    let mut v = json!({
        "id": j.id, "name": j.name, "data": j.data, "opts": j.opts,
        "state": state.map(|s| s.as_str()),
        "attemptsMade": j.attempts_made, "failedReason": j.failed_reason,
        "stacktrace": j.stacktrace, "returnvalue": j.returnvalue, "progress": j.progress,
        "timestamp": j.timestamp, "processedOn": j.processed_on, "finishedOn": j.finished_on,
    });
    if let Some(logs) = logs {
        v["logs"] = json!(logs);
    }
    v
}

/// `keel worker`: the configured queues' workers, the heartbeat and the DLQ reconciler, until
/// SIGTERM/SIGINT; then a graceful close.
async fn worker(config: &Config, only: Vec<String>, deadline: Duration) -> Result<(), Failure> {
    let selected = keel::runner::select(config, &only, "--queues")?;
    if selected.is_empty() {
        return Err(Error::invalid(
            "queues",
            "no configured queue has a handler: add [queues.<name>] with handler = { kind = ... } to keel.toml",
        )
        .into());
    }
    let backend = config.backend().await?;
    if backend.kind() == BackendKind::Memory {
        warn!("MEMORY BACKEND: no Redis configured (REDIS_URL or [redis] url). Jobs live only in this process and are lost when it exits; other processes cannot see them.");
    }
    // Workflow steps move forward wherever their jobs run: with workflows configured or a
    // records database named, this worker records steps and enqueues their successors too.
    // Email and AI handlers record every attempt: they open the records too (the embedded
    // database when none is named, as keel serve does).
    let server = keel_server::config::ServerConfig::from_env(config)?;
    let records_kinds = selected.iter().any(|q| {
        let qc = config.queue_config(q);
        qc.handler
            .iter()
            .chain(qc.handlers.values())
            .any(|h| matches!(h.kind(), "email" | "ai"))
    });
    let wants_engine = !server.workflows.is_empty() || server.database_url.is_some();
    let store = if wants_engine || records_kinds {
        let store = keel_server::serve::open_store(&server).await?;
        keel_records::Admin::migrate_up(&*store).await?;
        Some(store)
    } else {
        None
    };
    let engine = match (&store, wants_engine) {
        (Some(store), true) => {
            let store: std::sync::Arc<dyn keel_records::WorkflowStore> = store.clone();
            let (engine, _writer) = keel_workflows::Engine::new(
                backend.clone(),
                config.clone(),
                store,
                keel_workflows::EngineConfig::default(),
                None,
            );
            engine
                .load(&server.workflows)
                .await
                .map_err(keel_server::serve::ServeError::from)?;
            Some(engine)
        }
        _ => None,
    };
    let mut factory = keel_handlers::Handlers::new(&backend)
        .base_dir(keel_server::serve::config_dir(config))
        .limiter(config.rate_limiter(&backend)?);
    if let Some(store) = &store {
        let messages: std::sync::Arc<dyn keel_records::MessageStore> = store.clone();
        factory = factory
            .records(messages)
            .tenants(keel_server::serve::queue_tenants(config, &**store).await?);
    }
    let wrap = |qc: &keel::config::QueueConfig, p: keel::Processor| match &engine {
        Some(e) => e.wrap(&qc.name, p),
        None => p,
    };
    let mut workers =
        keel::runner::start_workers(config, &backend, &selected, &factory, Some(&wrap)).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    if let Some(e) = &engine {
        workers.push(
            e.start_trigger_worker()
                .await
                .map_err(keel_server::serve::ServeError::from)?,
        );
        tokio::spawn(keel::service::run(
            keel_workflows::Reconciler::new(e.clone(), server.workflow_reconciler.clone()),
            stop.clone(),
        ));
    }
    let heartbeat = keel::Heartbeat::start(
        &backend,
        json!({"queues": selected}),
        Duration::from_secs(10),
    );
    info!(queues = ?selected, worker = heartbeat.id(), "keel worker running; SIGTERM or Ctrl-C to stop");
    keel::shutdown_signal().await;
    info!(
        deadline_ms = deadline.as_millis() as u64,
        "shutting down: finishing in-flight jobs"
    );
    keel::runner::close_all(workers, deadline).await?;
    // What the email and AI handlers did, still buffered, is written before exiting.
    factory.close().await;
    stop.cancel();
    heartbeat.stop().await;
    info!("keel worker stopped");
    Ok(())
}
