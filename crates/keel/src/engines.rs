//! Two Redis queue engines on one Redis, chosen per queue: BullMQ's layout and scripts
//! (`keel-redis`, shared with Node BullMQ and Bull Board) and Keel's own (`keel-native`,
//! faster, Keel processes only). [`Routed`] sends each queue's calls to its engine; what is
//! not a queue's (workers' heartbeats, `PING`) goes to the BullMQ side, whose keys the native
//! engine shares.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keel_core::{
    BackendKind, EventStream, Job, JobState, NewJob, Processor, QueueBackend, QueueCounts, Result,
    Schedule, SchedulerInfo, WorkerEventSink, WorkerHandle, WorkerOptions,
};
use serde_json::Value;

/// Which engine runs a queue (`[queues.Q] engine`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Engine {
    /// BullMQ's layout and scripts: Node BullMQ and Bull Board share the queue.
    #[default]
    Bullmq,
    /// Keel's own engine: batched claims and acknowledgements, Keel processes only.
    Keel,
}

impl Engine {
    /// Parses `bullmq` or `keel`; the error says what is accepted.
    pub fn parse(s: &str) -> std::result::Result<Engine, String> {
        match s {
            "bullmq" => Ok(Engine::Bullmq),
            "keel" => Ok(Engine::Keel),
            other => Err(format!(
                "unknown engine {other:?}: bullmq (shared with Node BullMQ and Bull Board) or keel (Keel's own, faster; Keel processes only)"
            )),
        }
    }
}

/// Each queue on its engine: `default` for every queue but the `others`, which run on the
/// other engine.
pub struct Routed {
    bullmq: Arc<dyn QueueBackend>,
    keel: Arc<dyn QueueBackend>,
    default: Engine,
    others: BTreeSet<String>,
}

impl Routed {
    /// Queues on `default`, but `others` on the other engine.
    pub fn new(
        bullmq: Arc<dyn QueueBackend>,
        keel: Arc<dyn QueueBackend>,
        default: Engine,
        others: BTreeSet<String>,
    ) -> Routed {
        Routed {
            bullmq,
            keel,
            default,
            others,
        }
    }

    /// The engine of `queue` (a dead-letter queue runs where its queue does).
    pub fn engine(&self, queue: &str) -> Engine {
        let base = queue.strip_prefix(keel_core::DLQ_PREFIX).unwrap_or(queue);
        match (self.default, self.others.contains(base)) {
            (Engine::Bullmq, false) | (Engine::Keel, true) => Engine::Bullmq,
            _ => Engine::Keel,
        }
    }

    fn pick(&self, queue: &str) -> &dyn QueueBackend {
        match self.engine(queue) {
            Engine::Keel => &*self.keel,
            Engine::Bullmq => &*self.bullmq,
        }
    }

    fn mixed(&self) -> bool {
        self.default == Engine::Bullmq || !self.others.is_empty()
    }
}

#[async_trait]
impl QueueBackend for Routed {
    fn kind(&self) -> BackendKind {
        BackendKind::Redis
    }
    async fn add(&self, queue: &str, job: NewJob) -> Result<Job> {
        self.pick(queue).add(queue, job).await
    }
    async fn add_bulk(&self, queue: &str, jobs: Vec<NewJob>) -> Result<Vec<Job>> {
        self.pick(queue).add_bulk(queue, jobs).await
    }
    async fn get_job(&self, queue: &str, id: &str) -> Result<Option<Job>> {
        self.pick(queue).get_job(queue, id).await
    }
    async fn job_state(&self, queue: &str, id: &str) -> Result<Option<JobState>> {
        self.pick(queue).job_state(queue, id).await
    }
    async fn list(
        &self,
        queue: &str,
        state: JobState,
        offset: usize,
        limit: usize,
        asc: bool,
    ) -> Result<Vec<Job>> {
        self.pick(queue)
            .list(queue, state, offset, limit, asc)
            .await
    }
    async fn counts(&self, queue: &str) -> Result<QueueCounts> {
        self.pick(queue).counts(queue).await
    }
    async fn job_logs(
        &self,
        queue: &str,
        id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<String>, u64)> {
        self.pick(queue).job_logs(queue, id, offset, limit).await
    }
    async fn pause(&self, queue: &str) -> Result<()> {
        self.pick(queue).pause(queue).await
    }
    async fn resume(&self, queue: &str) -> Result<()> {
        self.pick(queue).resume(queue).await
    }
    async fn retry_job(&self, queue: &str, id: &str) -> Result<()> {
        self.pick(queue).retry_job(queue, id).await
    }
    async fn remove(&self, queue: &str, id: &str) -> Result<bool> {
        self.pick(queue).remove(queue, id).await
    }
    async fn clean(
        &self,
        queue: &str,
        grace: Duration,
        limit: usize,
        state: JobState,
    ) -> Result<Vec<String>> {
        self.pick(queue).clean(queue, grace, limit, state).await
    }
    async fn drain(&self, queue: &str, delayed: bool) -> Result<()> {
        self.pick(queue).drain(queue, delayed).await
    }
    async fn obliterate(&self, queue: &str, force: bool) -> Result<()> {
        self.pick(queue).obliterate(queue, force).await
    }
    async fn failed_between(
        &self,
        queue: &str,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<Job>> {
        self.pick(queue)
            .failed_between(queue, from_ms, to_ms, limit)
            .await
    }
    async fn upsert_scheduler(
        &self,
        queue: &str,
        id: &str,
        schedule: Schedule,
        template: NewJob,
    ) -> Result<SchedulerInfo> {
        self.pick(queue)
            .upsert_scheduler(queue, id, schedule, template)
            .await
    }
    async fn list_schedulers(&self, queue: &str) -> Result<Vec<SchedulerInfo>> {
        self.pick(queue).list_schedulers(queue).await
    }
    async fn remove_scheduler(&self, queue: &str, id: &str) -> Result<bool> {
        self.pick(queue).remove_scheduler(queue, id).await
    }
    async fn set_rate_limit(&self, queue: &str, limit: Option<(u64, Duration)>) -> Result<()> {
        self.pick(queue).set_rate_limit(queue, limit).await
    }

    async fn set_global_concurrency(&self, queue: &str, limit: Option<u32>) -> Result<()> {
        self.pick(queue).set_global_concurrency(queue, limit).await
    }
    async fn queue_names(&self) -> Result<Vec<String>> {
        let mut names: BTreeSet<String> = self.keel.queue_names().await?.into_iter().collect();
        if self.mixed() {
            // The native engine's keys (`prefix:keel:{q}:…`) never read as a BullMQ queue's
            // (BullMQ's listing skips names with a `:`).
            names.extend(self.bullmq.queue_names().await?);
        }
        Ok(names.into_iter().collect())
    }
    async fn events(&self, queue: &str) -> Result<EventStream> {
        self.pick(queue).events(queue).await
    }
    async fn start_worker(
        &self,
        queue: &str,
        processor: Processor,
        opts: WorkerOptions,
        sink: WorkerEventSink,
    ) -> Result<Box<dyn WorkerHandle>> {
        self.pick(queue)
            .start_worker(queue, processor, opts, sink)
            .await
    }
    async fn heartbeat(&self, id: &str, info: Value, ttl: Duration) -> Result<()> {
        self.bullmq.heartbeat(id, info, ttl).await
    }
    async fn live_workers(&self) -> Result<Vec<Value>> {
        self.bullmq.live_workers().await
    }
    async fn ping(&self) -> Result<Duration> {
        self.bullmq.ping().await
    }
}
