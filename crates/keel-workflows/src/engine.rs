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
//!
//! Here: definitions, starting, enqueueing, cancel and re-run; `step` runs a step (the
//! processor wrapper), `triggers` the schedule and job-completion starts, `events` what
//! live views hear.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::future::join_all;
use keel::config::Config;
use keel::{Backend, JobOptions, NewJob, Queue};
use keel_records::workflow::{
    step_job_id, Definition, NewDefinition, NewInstance, Settled, StepStatus, Trigger,
    WorkflowState, WorkflowWrite,
};
use keel_records::{Scope, StoreError, WorkflowStore};
use serde_json::{json, Map, Value};
use tokio::task::JoinHandle;

use crate::spec::{Compiled, WorkflowSpec};
use crate::writer::{OnSettled, Writer};
use crate::{template, Result};

mod events;
mod step;
mod triggers;

pub use events::WorkflowEvent;
pub use step::STARTED_AFTER;

/// The queue whose schedulers start scheduled instances (one scheduler per workflow).
pub const TRIGGER_QUEUE: &str = "keel-workflows";
/// The job name of a scheduled start.
pub const TRIGGER_JOB: &str = "start";
/// How long the latest version of a definition is trusted before it is read again (another
/// process may have saved a new one).
const LATEST_TTL: Duration = Duration::from_secs(5);
/// Instances whose definition version this process remembers (bounded; a miss reads the row).
const INSTANCE_CACHE: usize = 100_000;
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

    /// Adds the job of step `name` of `st`.
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
            job_id: Some(job_id),
            attempts: spec.attempts,
            backoff: spec.backoff.clone(),
            ..JobOptions::default()
        };
        // The step was recorded queued under this id by the write that made it ready; its
        // input is recorded with its attempt (the job's data), so adding it writes nothing.
        self.queue(&spec.queue)?
            .add_job(NewJob {
                name: spec.job_name().to_string(),
                data,
                opts,
            })
            .await?;
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

    /// The queue named `name`, as the engine adds to it.
    pub fn queue_named(&self, name: &str) -> Result<Queue> {
        self.queue(name)
    }
}
