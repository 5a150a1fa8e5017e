//! Start-up and shutdown of `keel serve`.
//!
//! Order: backend (Redis or memory, said loudly) → records store (DATABASE_URL or a SQLite file
//! under `./data/`) and its migrations → tenants of the configured queues → first owner token
//! (printed once, stored hashed) → realtime hub → run recorder → workflow engine (definitions
//! saved, schedules armed) → workers of every configured queue with a handler, the workflow
//! trigger worker and reconciler → HTTP. On SIGTERM/SIGINT: stop taking requests, let in-flight requests
//! finish, close the workers (in-flight jobs finish within the deadline), flush run records.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel::config::Config;
use keel::{Backend, BackendKind, Error, Heartbeat, Worker};
use keel_records::StoreError;
use tokio::task::JoinHandle;

use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::realtime::Realtime;
use crate::runs::RunRecorder;
use crate::state::{AppState, Inner};
use keel_records::prelude::*;
use keel_records::{PoolSettings, Role, SqlStore};

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The queue backend, or configuration read by the library.
    #[error(transparent)]
    Queue(#[from] keel::Error),
    /// `[server]`, `[database]` or `[runs]`.
    #[error("invalid configuration: {0}")]
    Config(#[from] keel::config::ConfigError),
    /// The records database.
    #[error(transparent)]
    Records(#[from] StoreError),
}

impl From<keel_workflows::WorkflowError> for ServeError {
    fn from(e: keel_workflows::WorkflowError) -> ServeError {
        match e {
            keel_workflows::WorkflowError::Queue(e) => ServeError::Queue(e),
            keel_workflows::WorkflowError::Records(e) => ServeError::Records(e),
        }
    }
}

/// Result of start-up and shutdown.
pub type Result<T, E = ServeError> = std::result::Result<T, E>;

/// The default records database when `DATABASE_URL` is unset.
pub const DEFAULT_DATABASE: &str = "sqlite:./data/keel.db";

/// A prepared server: state plus what must be shut down.
pub struct Server {
    /// The application state.
    pub state: AppState,
    workers: Vec<Worker>,
    /// The handlers' record writer (flushed after the workers close).
    handlers: Option<keel_handlers::Handlers>,
    tasks: Vec<JoinHandle<()>>,
    runs_task: Option<JoinHandle<()>>,
    heartbeat: Option<Heartbeat>,
}

/// Opens the records database of `server` (creating `./data/` for the default SQLite file).
pub async fn open_store(server: &ServerConfig) -> Result<Arc<SqlStore>> {
    let url = server
        .database_url
        .clone()
        .unwrap_or_else(|| DEFAULT_DATABASE.to_string());
    if let Some(path) = url.strip_prefix("sqlite:") {
        let path = path
            .split('?')
            .next()
            .unwrap_or(path)
            .trim_start_matches("//");
        if let Some(dir) = std::path::Path::new(path).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::invalid(
                        "DATABASE_URL",
                        format!("cannot create {}: {e}", dir.display()),
                    )
                })?;
            }
        }
    }
    let settings = PoolSettings {
        max_connections: server.db_max_connections,
        ..PoolSettings::default()
    };
    Ok(Arc::new(SqlStore::connect(&url, &settings).await?))
}

/// Creates the first owner token if there is no live one; returns its secret.
pub async fn first_owner_token(store: &dyn RecordStore) -> Result<Option<String>> {
    if store.count_owner_tokens().await? > 0 {
        return Ok(None);
    }
    let (_, secret) = store.create_token("first owner", Role::Owner, None).await?;
    Ok(Some(secret))
}

/// The tenant id of each tenant-bound queue, creating tenants named in the configuration.
pub async fn queue_tenants(
    config: &Config,
    store: &dyn RecordStore,
) -> Result<HashMap<String, String>> {
    let mut queue_tenants = HashMap::new();
    for (name, qc) in &config.queues {
        if let Some(t) = &qc.tenant {
            let tenant = match store.tenant_by_name(t).await? {
                Some(t) => t,
                None => match store.create_tenant(t).await {
                    Ok(t) => t,
                    // Another instance created it meanwhile.
                    Err(StoreError::Conflict(_)) => store
                        .tenant_by_name(t)
                        .await?
                        .ok_or_else(|| StoreError::NotFound(format!("tenant {t}")))?,
                    Err(e) => return Err(e.into()),
                },
            };
            queue_tenants.insert(name.clone(), tenant.id);
        }
    }
    Ok(queue_tenants)
}

/// Builds the state and starts workers (when `workers`), realtime and the run recorder.
pub async fn prepare(
    config: &Config,
    server: &ServerConfig,
    backend: Backend,
    store: Arc<dyn RecordStore>,
    workers: bool,
) -> Result<Server> {
    store.migrate_up().await?;
    let queue_tenants = queue_tenants(config, &*store).await?;
    let limiter = config.rate_limiter(&backend)?;
    let cache = crate::tags::owner_cache(&backend)?;
    let metrics = Metrics::new();
    let (realtime, mut tasks) = Realtime::start(&backend, config).await?;
    let (logs, logs_task) = crate::logs::LogWriter::start(
        store.clone(),
        Some(cache.clone()),
        crate::logs::LogWriterConfig::default(),
    );
    tasks.push(logs_task);
    let (invalidator, invalidator_task) = crate::invalidate::Invalidator::start(cache.clone());
    tasks.push(invalidator_task);
    let (runs, runs_task) = if server.record_runs {
        let (r, t) = RunRecorder::start(
            store.clone(),
            crate::runs::RunRecorderConfig::with_capacity(server.run_buffer),
            Some(cache.clone()),
            Some(handler_observer(&realtime, &invalidator)),
        );
        (r, Some(t))
    } else {
        (RunRecorder::disabled(), None)
    };
    let observer: keel_workflows::Observer = {
        let (realtime, invalidator) = (realtime.clone(), invalidator.clone());
        Arc::new(move |events: &[keel_workflows::WorkflowEvent]| {
            realtime.workflow_events(events);
            let invalidator = invalidator.clone();
            tokio::spawn(async move { invalidator.invalidate(&[crate::tags::WORKFLOWS]).await });
        })
    };
    let workflow_store: Arc<dyn keel_records::WorkflowStore> = store.clone();
    let (engine, engine_task) = keel_workflows::Engine::new(
        backend.clone(),
        config.clone(),
        workflow_store,
        keel_workflows::EngineConfig::default(),
        Some(observer),
    );
    tasks.push(engine_task);
    // Definitions that do not validate were refused when the configuration was read; this
    // saves them (a new version when changed) and arms their schedules.
    engine.load(&server.workflows).await?;
    let otp = keel_handlers::email::otp_routes(config)?;
    let mut started = Vec::new();
    let mut heartbeat = None;
    let mut factory = None;
    if workers {
        let names = keel::runner::select(config, &[], "queues")?;
        let worker_id = format!(
            "keel-serve-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let wrap = |qc: &keel::config::QueueConfig, p: keel::Processor| {
            // Outermost, the workflow wrapper: a step's record and its successors' jobs are
            // written before the job is acknowledged; inside, each attempt is a run record.
            engine.wrap(
                &qc.name,
                runs.wrap(
                    qc,
                    queue_tenants.get(&qc.name).cloned(),
                    worker_id.clone(),
                    metrics.clone(),
                    realtime.clone(),
                    p,
                ),
            )
        };
        let built = handlers(
            config,
            &backend,
            &store,
            &queue_tenants,
            &limiter,
            &realtime,
            &invalidator,
        );
        started =
            keel::runner::start_workers(config, &backend, &names, &built, Some(&wrap)).await?;
        factory = Some(built);
        started.push(engine.start_trigger_worker().await?);
        let reconciler =
            keel_workflows::Reconciler::new(engine.clone(), server.workflow_reconciler.clone());
        tasks.push(tokio::spawn(keel::service::run(
            reconciler,
            tokio_util::sync::CancellationToken::new(),
        )));
        heartbeat = Some(Heartbeat::start(
            &backend,
            serde_json::json!({"queues": names, "server": true}),
            Duration::from_secs(10),
        ));
    }
    tasks.shrink_to_fit();
    let state = AppState::new(Inner {
        backend,
        config: config.clone(),
        server: server.clone(),
        store,
        limiter,
        cache,
        invalidator,
        queue_tenants,
        metrics,
        runs,
        logs,
        token_cache: Default::default(),
        known_queues: Default::default(),
        realtime,
        workflows: engine,
        otp,
        started: Instant::now(),
    });
    Ok(Server {
        state,
        workers: started,
        handlers: factory,
        tasks,
        runs_task,
        heartbeat,
    })
}

/// The handler factory of `keel serve`: email and AI attempts are recorded in `store` (with
/// their queue's tenant), told to the realtime socket and dropped from the owner cache;
/// one-time code checks use `limiter`; template paths are relative to the configuration file.
pub fn handlers(
    config: &Config,
    backend: &Backend,
    store: &Arc<dyn RecordStore>,
    tenants: &HashMap<String, String>,
    limiter: &keel::RateLimiter,
    realtime: &Realtime,
    invalidator: &crate::invalidate::Invalidator,
) -> keel_handlers::Handlers {
    let messages: Arc<dyn keel_records::MessageStore> = store.clone();
    keel_handlers::Handlers::new(backend)
        .records(messages)
        .tenants(tenants.clone())
        .limiter(limiter.clone())
        .base_dir(config_dir(config))
        .observer(handler_observer(realtime, invalidator))
}

/// Tells the live view of written email and AI records (`email_status`, `ai_task`) and
/// invalidates the owner API's cached listings of them: the handlers' observer, and the run
/// recorder's for the AI calls it writes on their runs.
fn handler_observer(
    realtime: &Realtime,
    invalidator: &crate::invalidate::Invalidator,
) -> keel_handlers::Observer {
    let (realtime, invalidator) = (realtime.clone(), invalidator.clone());
    Arc::new(move |batch| {
        let mut tags = Vec::new();
        for e in batch {
            realtime.handler_event(e);
            let tag = match e {
                keel_handlers::HandlerEvent::Email(_) => crate::tags::EMAILS,
                keel_handlers::HandlerEvent::Ai(..) => crate::tags::AI,
            };
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        // One invalidation per written batch (coalesced further by the invalidator).
        if !tags.is_empty() {
            let invalidator = invalidator.clone();
            tokio::spawn(async move { invalidator.invalidate(&tags).await });
        }
    })
}

/// The directory relative paths of the configuration are read from.
pub fn config_dir(config: &Config) -> std::path::PathBuf {
    config
        .source
        .as_ref()
        .and_then(|p| p.parent())
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| std::path::PathBuf::from("."))
}

impl Server {
    /// Closes workers (in-flight jobs finish within `deadline`), flushes run records, stops
    /// background tasks.
    pub async fn shutdown(self, deadline: Duration) -> Result<()> {
        let Server {
            state,
            workers,
            handlers,
            tasks,
            runs_task,
            heartbeat,
        } = self;
        keel::runner::close_all(workers, deadline).await?;
        if let Some(h) = &handlers {
            h.close().await;
        }
        if let Some(h) = heartbeat {
            h.stop().await;
        }
        for t in tasks {
            t.abort();
        }
        state.runs.stop();
        if let Some(t) = runs_task {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        Ok(())
    }
}

/// `keel serve`: binds the configured address and serves until SIGTERM/SIGINT.
pub async fn run(config: Config, shutdown_deadline: Duration) -> Result<()> {
    let server = ServerConfig::from_env(&config)?;
    let addr: SocketAddr = format!("{}:{}", server.host, server.port)
        .parse()
        .map_err(|_| Error::invalid("server.host", "not an address"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::invalid("PORT", format!("cannot listen on {addr}: {e}")))?;
    serve(
        config,
        server,
        listener,
        keel::shutdown_signal(),
        shutdown_deadline,
    )
    .await
}

/// Serves on `listener` until `shutdown` resolves: stops taking requests, lets in-flight
/// requests finish, closes the workers (in-flight jobs finish within `shutdown_deadline`) and
/// flushes the run records.
pub async fn serve(
    config: Config,
    settings: ServerConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    shutdown_deadline: Duration,
) -> Result<()> {
    let backend = config.backend().await?;
    if backend.kind() == BackendKind::Memory {
        tracing::warn!("MEMORY BACKEND: no Redis configured (REDIS_URL or [redis] url). Queues and toolkit state live only in this process and are lost when it exits.");
    }
    let store = open_store(&settings).await?;
    store.migrate_up().await?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::invalid("PORT", e.to_string()))?;
    if let Some(secret) = first_owner_token(&*store).await? {
        println!("Owner token (shown once; stored only as a hash):\n\n    {secret}\n\nUse it as: Authorization: Bearer <token>, or sign in to the console at http://{addr}/");
    }
    let server = prepare(&config, &settings, backend, store, true).await?;
    let app = crate::router::router(server.state.clone());
    tracing::info!(%addr, database = server.state.store.database(), "keel serve listening");
    let limits = crate::listener::ConnectionLimits {
        header_read_timeout: settings.header_read_timeout,
        ..Default::default()
    };
    crate::listener::serve(listener, app, limits, shutdown).await;
    tracing::info!("shutting down: finishing in-flight jobs");
    server.shutdown(shutdown_deadline).await?;
    tracing::info!("keel serve stopped");
    Ok(())
}
