//! MemoryBackend (being written; temporary scaffold replaced by the real implementation)
#![allow(unused_variables)]
use async_trait::async_trait;
use keel_core::backend::BackendKind;
use keel_core::*;
use serde_json::Value;
use std::time::Duration;
/// scaffold
#[derive(Default)]
pub struct MemoryBackend;
impl MemoryBackend {
    /// scaffold
    pub fn new() -> Self {
        MemoryBackend
    }
}
#[async_trait]
impl QueueBackend for MemoryBackend {
    fn kind(&self) -> BackendKind {
        unimplemented!()
    }
    async fn add(&self, queue: &str, job: NewJob) -> Result<Job> {
        unimplemented!()
    }
    async fn add_bulk(&self, queue: &str, jobs: Vec<NewJob>) -> Result<Vec<Job>> {
        unimplemented!()
    }
    async fn get_job(&self, queue: &str, id: &str) -> Result<Option<Job>> {
        unimplemented!()
    }
    async fn job_state(&self, queue: &str, id: &str) -> Result<Option<JobState>> {
        unimplemented!()
    }
    async fn list(
        &self,
        queue: &str,
        state: JobState,
        offset: usize,
        limit: usize,
        asc: bool,
    ) -> Result<Vec<Job>> {
        unimplemented!()
    }
    async fn counts(&self, queue: &str) -> Result<QueueCounts> {
        unimplemented!()
    }
    async fn job_logs(
        &self,
        queue: &str,
        id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<String>, u64)> {
        unimplemented!()
    }
    async fn pause(&self, queue: &str) -> Result<()> {
        unimplemented!()
    }
    async fn resume(&self, queue: &str) -> Result<()> {
        unimplemented!()
    }
    async fn retry_job(&self, queue: &str, id: &str) -> Result<()> {
        unimplemented!()
    }
    async fn remove(&self, queue: &str, id: &str) -> Result<bool> {
        unimplemented!()
    }
    async fn clean(
        &self,
        queue: &str,
        grace: Duration,
        limit: usize,
        state: JobState,
    ) -> Result<Vec<String>> {
        unimplemented!()
    }
    async fn drain(&self, queue: &str, delayed: bool) -> Result<()> {
        unimplemented!()
    }
    async fn obliterate(&self, queue: &str, force: bool) -> Result<()> {
        unimplemented!()
    }
    async fn failed_between(
        &self,
        queue: &str,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<Job>> {
        unimplemented!()
    }
    async fn upsert_scheduler(
        &self,
        queue: &str,
        id: &str,
        schedule: Schedule,
        template: NewJob,
    ) -> Result<SchedulerInfo> {
        unimplemented!()
    }
    async fn list_schedulers(&self, queue: &str) -> Result<Vec<SchedulerInfo>> {
        unimplemented!()
    }
    async fn remove_scheduler(&self, queue: &str, id: &str) -> Result<bool> {
        unimplemented!()
    }
    async fn set_rate_limit(&self, queue: &str, limit: Option<(u64, Duration)>) -> Result<()> {
        unimplemented!()
    }
    async fn queue_names(&self) -> Result<Vec<String>> {
        unimplemented!()
    }
    async fn events(&self, queue: &str) -> Result<EventStream> {
        unimplemented!()
    }
    async fn start_worker(
        &self,
        queue: &str,
        processor: Processor,
        opts: WorkerOptions,
        sink: WorkerEventSink,
    ) -> Result<Box<dyn WorkerHandle>> {
        unimplemented!()
    }
    async fn heartbeat(&self, id: &str, info: Value, ttl: Duration) -> Result<()> {
        unimplemented!()
    }
    async fn live_workers(&self) -> Result<Vec<Value>> {
        unimplemented!()
    }
    async fn ping(&self) -> Result<Duration> {
        unimplemented!()
    }
}
