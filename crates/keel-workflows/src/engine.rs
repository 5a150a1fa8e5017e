//! The engine: starts instances, enqueues ready steps as jobs, and — wrapped around every
//! queue's processor — turns a step job's end into the step's record and its successors' jobs.
//!
//! A step job's life: the engine adds it under the idempotent id `wf-<instance>-<step>`
//! (`-r<n>` on the n-th re-run) with the step's attempts and backoff; a worker of the step's
//! queue takes it and runs the queue's handler for its job name (with the step's timeout). When
//! the handler returns, the wrapper records the outcome and waits for the commit, which settles
//! the instance in the same transaction; it then enqueues the steps that became ready, and only
//! then returns, so the job is acknowledged after its successors exist. A crash anywhere in
//! between leaves the job unacknowledged (it is recovered as stalled and runs again: the
//! wrapper finds the stored output and returns it without running the handler) or leaves a
//! ready step without its job, which the [`crate::Reconciler`] adds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::future::join_all;
use keel::config::Config;
use keel::{Backend, JobContext, JobError, JobOptions, NewJob, Processor, Queue};
use keel_records::workflow::{
    parse_step_job_id, step_job_id, Definition, InstanceStatus, NewDefinition, NewInstance,
    Settled, StepEvent, StepStatus, StepUpdate, Trigger, WorkflowState, WorkflowWrite,
};
use keel_records::{Scope, StoreError, WorkflowStore};
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::task::JoinHandle;

use crate::spec::{Compiled, WorkflowSpec};
use crate::writer::{OnSettled, Writer};
use crate::{template, Result, WorkflowError};

/// The queue whose schedulers start scheduled instances (one scheduler per workflow).
pub const TRIGGER_QUEUE: &str = "keel-workflows";
/// The job name of a scheduled start.
pub const TRIGGER_JOB: &str = "start";
/// How long the latest version of a definition is trusted before it is read again (another
/// process may have saved a new one).
const LATEST_TTL: Duration = Duration::from_secs(5);
/// Instances whose definition version this process remembers (bounded; a miss reads the row).
const INSTANCE_CACHE: usize = 100_000;
/// Tries of a step's final write before the attempt is failed for a retry.
const WRITE_TRIES: u32 = 3;
/// How long a step runs before it is reported running (a quicker one is recorded once, when it
/// ends: one write a step instead of two).
pub const STARTED_AFTER: Duration = Duration::from_millis(250);

/// The attempt a step's end belongs to.
struct Attempt<'a> {
    job_id: &'a str,
    input: &'a Value,
    started_at: i64,
    attempt: i64,
}

/// Something that happened to an instance or one of its steps, for live views.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkflowEvent {
    /// An instance's status changed.
    WorkflowInstance {
        /// Instance id.
        instance_id: String,
        /// Definition.
        workflow: String,
        /// New status.
        status: InstanceStatus,
        /// Why it failed.
        error: Option<String>,
        /// The instance's tenant (live views show a tenant only its own).
        tenant_id: Option<String>,
    },
    /// A step's status changed.
    WorkflowStep {
        /// Instance id.
        instance_id: String,
        /// Definition.
        workflow: String,
        /// Step.
        step: String,
        /// New status.
        status: StepStatus,
        /// Attempts so far.
        attempts: i64,
        /// Its job id.
        job_id: Option<String>,
        /// Its queue.
        queue: String,
        /// The latest error.
        error: Option<String>,
        /// Duration when it ended.
        duration_ms: Option<i64>,
        /// The instance's tenant (live views show a tenant only its own).
        tenant_id: Option<String>,
    },
}

impl WorkflowEvent {
    /// The events a write produced.
    pub fn of(s: &Settled) -> Vec<WorkflowEvent> {
        let inst = &s.state.instance;
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for name in &s.steps_changed {
            if seen.contains(&name) {
                continue;
            }
            seen.push(name);
            if let Some(st) = s.state.step(name) {
                out.push(WorkflowEvent::WorkflowStep {
                    instance_id: inst.id.clone(),
                    workflow: inst.workflow.clone(),
                    step: st.step.clone(),
                    status: st.status,
                    attempts: st.attempts,
                    job_id: st.job_id.clone(),
                    queue: st.queue.clone(),
                    error: st.error.clone(),
                    duration_ms: st.duration_ms,
                    tenant_id: inst.tenant_id.clone(),
                });
            }
        }
        if s.instance_changed {
            out.push(WorkflowEvent::WorkflowInstance {
                instance_id: inst.id.clone(),
                workflow: inst.workflow.clone(),
                status: inst.status,
                error: inst.error.clone(),
                tenant_id: inst.tenant_id.clone(),
            });
        }
        out
    }
}

/// Receives the workflow events of each committed batch (and of each cancel and re-run);
/// called on the writer's task, must not block.
pub type Observer = Arc<dyn Fn(&[WorkflowEvent]) + Send + Sync>;

/// The engine's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Most writes per transaction.
    pub batch: usize,
    /// Progress reports buffered before they are dropped.
    pub capacity: usize,
    /// Writer tasks (transactions committing at once).
    pub shards: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            batch: crate::writer::DEFAULT_BATCH,
            capacity: crate::writer::DEFAULT_CAPACITY,
            shards: crate::writer::DEFAULT_SHARDS,
        }
    }
}

/// How to start an instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    /// Definition name.
    pub workflow: String,
    /// Input.
    pub input: Value,
    /// What starts it.
    pub trigger: Trigger,
    /// Who.
    pub actor: String,
    /// Whose: the caller's tenant (a tenant may only start global or its own definitions).
    pub scope: Scope,
    /// A chosen id (32 hex digits): starting an id that exists returns that instance. A new
    /// time-ordered id when unset.
    pub id: Option<String>,
}

/// A workflow started by the completion of a queue's jobs (of one name, or all).
type Follower = (String, Option<String>);

struct Latest {
    version: i64,
    read: Instant,
}

struct Inner {
    backend: Backend,
    config: Config,
    store: Arc<dyn WorkflowStore>,
    writer: Writer,
    observer: Option<Observer>,
    compiled: RwLock<HashMap<(String, i64), Arc<Compiled>>>,
    latest: RwLock<HashMap<String, Latest>>,
    /// instance id → (workflow, version).
    instances: Mutex<HashMap<String, (String, i64)>>,
    queues: Mutex<HashMap<String, Queue>>,
    /// queue → workflows its completed jobs start.
    on_complete: RwLock<HashMap<String, Vec<Follower>>>,
}

/// The workflow engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// A stable instance id for what triggered it (a scheduler tick, a job), so a retried trigger
/// starts one instance.
pub fn derived_id(key: &str) -> String {
    keel_records::secret::sha256_hex(key)[..32].to_string()
}

impl Engine {
    /// An engine over `backend`'s queues (configured as `config` says) and `store`'s records.
    /// `observer` hears every step and instance change. Returns the writer's task.
    pub fn new(
        backend: Backend,
        config: Config,
        store: Arc<dyn WorkflowStore>,
        settings: EngineConfig,
        observer: Option<Observer>,
    ) -> (Engine, JoinHandle<()>) {
        let observer2 = observer.clone();
        let on_settled: OnSettled = Arc::new(move |settled: &[Settled]| {
            if let Some(o) = &observer2 {
                let events: Vec<WorkflowEvent> =
                    settled.iter().flat_map(WorkflowEvent::of).collect();
                if !events.is_empty() {
                    o(&events);
                }
            }
        });
        let (writer, task) = Writer::start(
            store.clone(),
            settings.batch,
            settings.capacity,
            settings.shards,
            on_settled,
        );
        let engine = Engine {
            inner: Arc::new(Inner {
                backend,
                config,
                store,
                writer,
                observer,
                compiled: Default::default(),
                latest: Default::default(),
                instances: Default::default(),
                queues: Default::default(),
                on_complete: Default::default(),
            }),
        };
        (engine, task)
    }

    /// The records store.
    pub fn store(&self) -> &Arc<dyn WorkflowStore> {
        &self.inner.store
    }

    /// The step writer (its counts).
    pub fn writer(&self) -> &Writer {
        &self.inner.writer
    }

    /// Whether `queue` is configured (a step's queue must be).
    pub fn knows_queue(&self, queue: &str) -> bool {
        self.inner.config.queues.contains_key(queue)
    }

    fn queue(&self, name: &str) -> Result<Queue> {
        let mut queues = self.inner.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(q) = queues.get(name) {
            return Ok(q.clone());
        }
        let q = self.inner.config.queue(&self.inner.backend, name)?;
        queues.insert(name.to_string(), q.clone());
        Ok(q)
    }

    /// Validates and saves the definitions of keel.toml (`[workflows.NAME]`) as global ones,
    /// each as a new version when it changed, then loads every stored definition (the API's
    /// too) for triggers and schedules. Returns the definitions in effect.
    pub async fn load(&self, specs: &[(String, WorkflowSpec)]) -> Result<Vec<Definition>> {
        for (name, spec) in specs {
            spec.validate(name, &format!("workflows.{name}"), &|q| self.knows_queue(q))?;
        }
        for (name, spec) in specs {
            self.save(
                &Scope::All,
                name,
                spec.clone(),
                "config",
                "config",
                &format!("workflows.{name}"),
            )
            .await?;
        }
        let all = self.inner.store.definitions(&Scope::All).await?;
        for d in &all {
            match self.compile(d) {
                Ok(c) => self.arm(&c).await?,
                // A stored definition that no longer validates (its queue was removed from
                // keel.toml): it cannot start, and says why when asked to.
                Err(e) => {
                    tracing::warn!(workflow = d.name, error = %e, "workflow definition not loaded")
                }
            }
        }
        Ok(all)
    }

    /// Saves `spec` as the next version of `name` (unless unchanged), in `scope`'s tenant.
    /// `field` names where the spec came from in errors. Returns the version in effect and
    /// whether it is new.
    pub async fn save(
        &self,
        scope: &Scope,
        name: &str,
        spec: WorkflowSpec,
        source: &str,
        actor: &str,
        field: &str,
    ) -> Result<(Definition, bool)> {
        spec.validate(name, field, &|q| self.knows_queue(q))?;
        let value =
            serde_json::to_value(&spec).map_err(|e| keel::Error::invalid(field, e.to_string()))?;
        let (def, new) = self
            .inner
            .store
            .save_definition(NewDefinition {
                name: name.to_string(),
                tenant_id: scope.tenant().map(str::to_string),
                spec: value,
                source: source.to_string(),
                created_by: actor.to_string(),
            })
            .await?;
        let c = self.compile(&def)?;
        self.inner
            .latest
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                name.to_string(),
                Latest {
                    version: def.version,
                    read: Instant::now(),
                },
            );
        self.arm(&c).await?;
        Ok((def, new))
    }

    fn compile(&self, d: &Definition) -> Result<Arc<Compiled>> {
        let key = (d.name.clone(), d.version);
        if let Some(c) = self
            .inner
            .compiled
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(c.clone());
        }
        let field = format!("workflows.{}", d.name);
        let spec: WorkflowSpec = serde_json::from_value(d.spec.clone())
            .map_err(|e| keel::Error::invalid(field.as_str(), e.to_string()))?;
        spec.validate(&d.name, &field, &|q| self.knows_queue(q))?;
        let c = Arc::new(Compiled {
            name: d.name.clone(),
            version: d.version,
            spec,
        });
        self.inner
            .compiled
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, c.clone());
        Ok(c)
    }

    /// Sets up a definition's triggers: its schedule on [`TRIGGER_QUEUE`] (or removes it) and
    /// its `on_complete` queues.
    async fn arm(&self, c: &Compiled) -> Result<()> {
        let q = self.queue(TRIGGER_QUEUE)?;
        let id = format!("workflow-{}", c.name);
        match &c.spec.schedule {
            Some(s) => {
                let field = format!("workflows.{}.schedule", c.name);
                q.upsert_scheduler(
                    &id,
                    s.schedule(&field)?,
                    TRIGGER_JOB,
                    json!({"workflow": c.name, "input": s.input}),
                    JobOptions::default(),
                )
                .await
                .map_err(|e| match e {
                    keel::Error::InvalidInput { message, .. } => {
                        keel::Error::invalid(field.as_str(), message)
                    }
                    other => other,
                })?;
            }
            None => {
                q.remove_scheduler(&id).await?;
            }
        }
        let mut on = self
            .inner
            .on_complete
            .write()
            .unwrap_or_else(|p| p.into_inner());
        for list in on.values_mut() {
            list.retain(|(w, _)| w != &c.name);
        }
        for t in &c.spec.on_complete {
            on.entry(t.queue.clone())
                .or_default()
                .push((c.name.clone(), t.job.clone()));
        }
        Ok(())
    }

    /// The definition an instance runs.
    async fn definition_of(&self, workflow: &str, version: i64) -> Result<Arc<Compiled>> {
        if let Some(c) = self
            .inner
            .compiled
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(workflow.to_string(), version))
        {
            return Ok(c.clone());
        }
        let d = self
            .inner
            .store
            .definition(&Scope::All, workflow, Some(version))
            .await?
            .ok_or_else(|| {
                StoreError::NotFound(format!("workflow {workflow} version {version}"))
            })?;
        self.compile(&d)
    }

    /// The latest definition of `workflow` visible in `scope`.
    pub async fn latest(&self, scope: &Scope, workflow: &str) -> Result<Arc<Compiled>> {
        let cached = self
            .inner
            .latest
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(workflow)
            .filter(|l| l.read.elapsed() < LATEST_TTL)
            .map(|l| l.version);
        let d = match cached {
            Some(v) if matches!(scope, Scope::All) => return self.definition_of(workflow, v).await,
            _ => self
                .inner
                .store
                .definition(scope, workflow, None)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("workflow {workflow}")))?,
        };
        self.inner
            .latest
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                workflow.to_string(),
                Latest {
                    version: d.version,
                    read: Instant::now(),
                },
            );
        self.compile(&d)
    }

    fn remember(&self, id: &str, workflow: &str, version: i64) {
        let mut m = self
            .inner
            .instances
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if m.len() >= INSTANCE_CACHE {
            m.clear();
        }
        m.insert(id.to_string(), (workflow.to_string(), version));
    }

    /// Starts an instance of the latest version of `start.workflow` and enqueues its first
    /// steps. Returns it as created (or as it stands, for an id that exists).
    pub async fn start(&self, start: Start) -> Result<WorkflowState> {
        let c = self.latest(&start.scope, &start.workflow).await?;
        let id = match start.id {
            Some(id) => id,
            None => uuid::Uuid::now_v7().simple().to_string(),
        };
        self.remember(&id, &c.name, c.version);
        let settled = self
            .inner
            .writer
            .write(WorkflowWrite::Create(NewInstance {
                id,
                tenant_id: start.scope.tenant().map(str::to_string),
                workflow: c.name.clone(),
                version: c.version,
                input: start.input,
                trigger: start.trigger,
                actor: start.actor,
                steps: c.new_steps(),
            }))
            .await?;
        self.enqueue(&settled).await?;
        Ok(settled.state)
    }

    /// Enqueues the ready steps of `settled` (idempotent job ids: enqueuing twice is harmless).
    pub async fn enqueue(&self, settled: &Settled) -> Result<()> {
        if settled.ready.is_empty() {
            return Ok(());
        }
        let st = &settled.state;
        let c = self
            .definition_of(&st.instance.workflow, st.instance.version)
            .await?;
        let adds = settled.ready.iter().map(|name| self.add_step(st, &c, name));
        for r in join_all(adds).await {
            r?;
        }
        Ok(())
    }

    /// Adds the job of step `name` of `st` and reports it queued.
    async fn add_step(&self, st: &WorkflowState, c: &Compiled, name: &str) -> Result<()> {
        let Some(spec) = c.step(name) else {
            return Err(StoreError::NotFound(format!("step {name} of {}", c.name)).into());
        };
        let inst = &st.instance;
        let outputs: Map<String, Value> = st
            .steps
            .iter()
            .filter(|s| s.status.is_final())
            .map(|s| {
                (
                    s.step.clone(),
                    json!({"output": s.output.clone().unwrap_or(Value::Null)}),
                )
            })
            .collect();
        let data = match &spec.input {
            Some(t) => template::render(t, &json!({"input": inst.input, "steps": outputs})),
            None => json!({
                "input": inst.input,
                "steps": spec.needs.iter().map(|n| {
                    (n.clone(), st.step(n).and_then(|s| s.output.clone()).unwrap_or(Value::Null))
                }).collect::<Map<_, _>>(),
            }),
        };
        let job_id = step_job_id(&inst.id, name, inst.reruns);
        let opts = JobOptions {
            job_id: Some(job_id.clone()),
            attempts: spec.attempts,
            backoff: spec.backoff.clone(),
            ..JobOptions::default()
        };
        self.queue(&spec.queue)?
            .add_job(NewJob {
                name: spec.job_name().to_string(),
                data: data.clone(),
                opts,
            })
            .await?;
        self.inner.writer.report(
            StepUpdate::now(
                &inst.id,
                name,
                StepEvent::Queued {
                    job_id,
                    input: data,
                },
            )
            .write(),
        );
        Ok(())
    }

    /// Cancels an instance: steps not started are cancelled and their waiting or delayed jobs
    /// removed; running attempts finish, and their outcome no longer moves the instance.
    pub async fn cancel(&self, scope: &Scope, id: &str) -> Result<Settled> {
        let before = self.inner.store.workflow_state(scope, id).await?;
        let settled = self.inner.store.cancel_instance(scope, id).await?;
        let steps = before.map(|b| b.steps).unwrap_or_default();
        for s in steps
            .iter()
            .filter(|s| matches!(s.status, StepStatus::Queued | StepStatus::Running))
        {
            if let Some(job) = &s.job_id {
                match self.queue(&s.queue)?.remove(job).await {
                    Ok(_) | Err(keel::Error::Conflict(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        self.observe(&settled);
        Ok(settled)
    }

    fn observe(&self, settled: &Settled) {
        if let Some(o) = &self.inner.observer {
            let events = WorkflowEvent::of(settled);
            if !events.is_empty() {
                o(&events);
            }
        }
    }

    /// Re-runs a failed or cancelled instance from its failed steps.
    pub async fn rerun(&self, scope: &Scope, id: &str) -> Result<Settled> {
        let settled = self.inner.store.rerun_instance(scope, id).await?;
        self.observe(&settled);
        self.enqueue(&settled).await?;
        Ok(settled)
    }

    /// Wraps `inner`, the processor of `queue`: step jobs are recorded and move their instance
    /// forward; other jobs start the workflows their completion triggers.
    pub fn wrap(&self, queue: &str, inner: Processor) -> Processor {
        let engine = self.clone();
        let queue = queue.to_string();
        Arc::new(move |ctx: JobContext| {
            let engine = engine.clone();
            let inner = inner.clone();
            let queue = queue.clone();
            Box::pin(async move {
                match parse_step_job_id(&ctx.job.id) {
                    Some((instance, step)) => {
                        let (instance, step) = (instance.to_string(), step.to_string());
                        engine.run_step(ctx, inner, &instance, &step).await
                    }
                    None => {
                        let job = ctx.job.clone();
                        let out = inner(ctx).await?;
                        engine.triggered_by(&queue, &job, &out).await?;
                        Ok(out)
                    }
                }
            })
        })
    }

    async fn run_step(
        &self,
        ctx: JobContext,
        inner: Processor,
        instance: &str,
        step: &str,
    ) -> std::result::Result<Value, JobError> {
        let job = ctx.job.clone();
        let attempt = job.attempts_made as i64 + 1;
        let cached = self
            .inner
            .instances
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(instance)
            .cloned();
        // A retry, a recovered stall, or another process's instance: read the stored state,
        // which also memoizes — a step whose output is stored is not run again.
        let stored = if cached.is_none() || job.attempts_made > 0 || ctx.recovered_stalls > 0 {
            let st = self
                .inner
                .store
                .workflow_state(&Scope::All, instance)
                .await
                .map_err(|e| records_down(&e))?;
            let Some(st) = st else {
                return Err(JobError::unrecoverable(format!(
                    "workflow instance {instance} does not exist"
                )));
            };
            self.remember(instance, &st.instance.workflow, st.instance.version);
            Some(st)
        } else {
            None
        };
        let (workflow, version) = match (&stored, cached) {
            (Some(st), _) => (st.instance.workflow.clone(), st.instance.version),
            (None, Some(c)) => c,
            (None, None) => unreachable!("read above"),
        };
        if let Some(st) = &stored {
            if st.instance.status.is_final() {
                return Ok(json!({"skipped": format!("instance {}", st.instance.status.as_str())}));
            }
            if let Some(s) = st.step(step) {
                if s.status == StepStatus::Completed {
                    let output = s.output.clone().unwrap_or(Value::Null);
                    let at = Attempt {
                        job_id: &job.id,
                        input: &job.data,
                        started_at: keel::now_ms() as i64,
                        attempt,
                    };
                    let settled = self
                        .finish(
                            &at,
                            instance,
                            step,
                            StepEvent::Completed {
                                output: output.clone(),
                            },
                        )
                        .await?;
                    self.enqueue(&settled).await.map_err(|e| queue_down(&e))?;
                    return Ok(output);
                }
                if s.status == StepStatus::Failed {
                    // Recorded as failed before the job could fail (a crash in between).
                    return Err(JobError::unrecoverable(
                        s.error.clone().unwrap_or_else(|| "step failed".into()),
                    ));
                }
            }
        }
        let c = self
            .definition_of(&workflow, version)
            .await
            .map_err(|e| JobError::retry(e.to_string()))?;
        let timeout = c
            .step(step)
            .and_then(|s| s.timeout_ms)
            .map(Duration::from_millis);
        // A step that ends within STARTED_AFTER is recorded in one write (its end, with the
        // attempt's start); a longer one is reported running once that time has passed, so
        // live views show it.
        let started = StepUpdate::now(instance, step, StepEvent::Started { attempt })
            .of_job(&job.id, &job.data);
        let started_at = started.at;
        let run = async {
            match timeout {
                Some(t) => tokio::time::timeout(t, inner(ctx))
                    .await
                    .unwrap_or_else(|_| {
                        Err(JobError::retry(format!(
                            "step timed out after {} ms",
                            t.as_millis()
                        )))
                    }),
                None => inner(ctx).await,
            }
        };
        tokio::pin!(run);
        let result = tokio::select! {
            r = &mut run => r,
            _ = tokio::time::sleep(STARTED_AFTER) => {
                self.inner.writer.report(WorkflowWrite::Step(started));
                run.await
            }
        };
        let at = Attempt {
            job_id: &job.id,
            input: &job.data,
            started_at,
            attempt,
        };
        match result {
            Ok(output) => {
                let settled = self
                    .finish(
                        &at,
                        instance,
                        step,
                        StepEvent::Completed {
                            output: output.clone(),
                        },
                    )
                    .await?;
                self.enqueue(&settled).await.map_err(|e| queue_down(&e))?;
                Ok(output)
            }
            Err(e) => {
                let terminal = e.is_final_for(&job);
                let event = StepEvent::Failed {
                    attempt,
                    error: e.message().to_string(),
                    stack: e.stack().map(str::to_string),
                    terminal,
                };
                if terminal {
                    // Recorded before the job fails, so the instance's outcome is never behind
                    // the job's; a `continue` failure lets the next steps run.
                    let settled = self.finish(&at, instance, step, event).await?;
                    self.enqueue(&settled).await.map_err(|e| queue_down(&e))?;
                } else {
                    self.inner.writer.report(
                        StepUpdate::now(instance, step, event)
                            .of_job(&job.id, &job.data)
                            .of_attempt(started_at, attempt)
                            .write(),
                    );
                }
                Err(e)
            }
        }
    }

    /// Records a step's end, waiting for the commit (a few tries: the job is acknowledged
    /// only once it is recorded).
    async fn finish(
        &self,
        at: &Attempt<'_>,
        instance: &str,
        step: &str,
        event: StepEvent,
    ) -> std::result::Result<Settled, JobError> {
        let mut last = None;
        for i in 0..WRITE_TRIES {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(500 << i)).await;
            }
            match self
                .inner
                .writer
                .write(
                    StepUpdate::now(instance, step, event.clone())
                        .of_job(at.job_id, at.input)
                        .of_attempt(at.started_at, at.attempt)
                        .write(),
                )
                .await
            {
                Ok(s) => return Ok(s),
                Err(StoreError::NotFound(_)) => {
                    return Err(JobError::unrecoverable(format!(
                        "workflow instance {instance} does not exist"
                    )))
                }
                Err(e) => last = Some(e),
            }
        }
        Err(records_down(&last.expect("a failed try")))
    }

    /// Starts the workflows whose `on_complete` names `queue` (and this job's name).
    async fn triggered_by(
        &self,
        queue: &str,
        job: &keel::Job,
        result: &Value,
    ) -> std::result::Result<(), JobError> {
        let workflows: Vec<String> = self
            .inner
            .on_complete
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(queue)
            .map(|l| {
                l.iter()
                    .filter(|(_, name)| name.as_deref().map(|n| n == job.name).unwrap_or(true))
                    .map(|(w, _)| w.clone())
                    .collect()
            })
            .unwrap_or_default();
        for w in workflows {
            let start = Start {
                workflow: w.clone(),
                input: json!({
                    "queue": queue, "job_id": job.id, "name": job.name,
                    "data": job.data, "result": result,
                }),
                trigger: Trigger {
                    kind: "job".into(),
                    reference: Some(format!("{queue}/{}", job.id)),
                },
                actor: format!("job:{queue}"),
                scope: Scope::All,
                id: Some(derived_id(&format!("job:{w}:{queue}:{}", job.id))),
            };
            // Before the job is acknowledged: a crash here re-runs the job, and the derived id
            // makes the second start find the first instance.
            self.start(start)
                .await
                .map_err(|e| JobError::retry(format!("starting workflow {w}: {e}")))?;
        }
        Ok(())
    }

    /// The processor of [`TRIGGER_QUEUE`]: a scheduler tick starts its workflow.
    pub fn trigger_processor(&self) -> Processor {
        let engine = self.clone();
        Arc::new(move |ctx: JobContext| {
            let engine = engine.clone();
            Box::pin(async move {
                let job = ctx.job;
                let workflow = job
                    .data
                    .get("workflow")
                    .and_then(Value::as_str)
                    .ok_or_else(|| JobError::unrecoverable("the start job names no workflow"))?
                    .to_string();
                let state = engine
                    .start(Start {
                        workflow: workflow.clone(),
                        input: job.data.get("input").cloned().unwrap_or(json!({})),
                        trigger: Trigger {
                            kind: "schedule".into(),
                            reference: Some(format!("workflow-{workflow}")),
                        },
                        actor: "schedule".into(),
                        scope: Scope::All,
                        id: Some(derived_id(&format!("schedule:{}", job.id))),
                    })
                    .await
                    .map_err(|e| match &e {
                        WorkflowError::Records(StoreError::NotFound(_)) => {
                            JobError::unrecoverable(e.to_string())
                        }
                        _ => JobError::retry(e.to_string()),
                    })?;
                Ok(json!({"instance": state.instance.id}))
            })
        })
    }

    /// Starts the worker of [`TRIGGER_QUEUE`] (scheduled starts).
    pub async fn start_trigger_worker(&self) -> Result<keel::Worker> {
        Ok(self
            .queue(TRIGGER_QUEUE)?
            .worker()
            .handler(TRIGGER_JOB, self.trigger_processor())
            .concurrency(2)
            .start()
            .await?)
    }

    /// The queue named `name`, as the engine adds to it.
    pub fn queue_named(&self, name: &str) -> Result<Queue> {
        self.queue(name)
    }
}

fn records_down(e: &StoreError) -> JobError {
    // The attempt is not lost: it runs again once the records can be written.
    JobError::retry(format!("workflow records unavailable: {e}"))
        .with_retry_after(Duration::from_secs(5))
}

fn queue_down(e: &WorkflowError) -> JobError {
    JobError::retry(format!("enqueuing the next steps failed: {e}"))
}
