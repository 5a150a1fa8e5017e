//! One queue over several partitions (`[queues.Q] partitions = N`), so over several Redis
//! Cluster masters: [`Partitioned`] wraps a backend and shows each partitioned queue as one
//! while its jobs live in N queues of the engine below, each under its own hash tag.
//! (Over 600 lines: the whole backend contract, each call once for a partitioned queue and
//! passed through for the others, in one place.)
//!
//! # Layout
//! Partition `i` of queue `Q` is the engine's queue `Q~p<i>` (or `Q~p<i>.<k>` with the first
//! `k` that fits), chosen so that its hash slot falls in the `i`-th of N equal ranges of the
//! 16,384 slots. A cluster made by `redis-cli --cluster create` gives each master one such
//! range, so N partitions on N masters land one a master; on other slot maps they still spread
//! evenly over the slot space. The names depend only on `Q` and N: every process computes the
//! same ones, and changing N moves a queue to other partitions (drain it first: the old ones are
//! no longer read).
//!
//! # Where a job goes
//! A job lives in the partition its id hashes to (CRC16 of the id, modulo N) — so a lookup by
//! id (get, state, logs, retry, remove) is one call to one partition. A job with a custom id
//! goes where that id hashes; a job with a deduplication id goes where the deduplication id
//! hashes (so duplicates meet in one partition) and gets a generated id that hashes there too;
//! any other job goes to the next partition in turn, with a generated id that hashes there.
//! Generated ids are UUIDv7s in hex (time-ordered), not the engine's counter, whose values
//! repeat across partitions. Scheduler runs are added by the engine in partition 0 under their
//! own ids; a lookup that misses the id's partition asks the others.
//!
//! # Seen as one
//! Counts are summed (paused when any partition is), listings merged in the order each state
//! lists by, pause, resume, drain, clean and obliterate go to every partition, events of all
//! partitions arrive on one stream, and jobs handed to handlers or returned by any call name
//! the queue, never a partition. A worker on the queue runs one engine worker a partition with
//! its concurrency split evenly (so it needs at least N), taking from every partition at once.
//! A rate limit or global concurrency is split the same way (each partition admits its share;
//! the limit must be at least N). Order (FIFO, LIFO, priorities) holds within a partition, not
//! across them — the price of spreading one queue's load.
//!
//! The dead-letter queue of a partitioned queue is one queue, not partitioned.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::{join_all, try_join_all};
use keel_core::{
    BackendKind, Error, EventStream, Job, JobState, NewJob, Processor, QueueBackend, QueueCounts,
    Result, Schedule, SchedulerInfo, WorkerEventSink, WorkerHandle, WorkerOptions,
};
use serde_json::Value;

/// Redis Cluster's number of hash slots.
const SLOTS: u32 = 16_384;

/// Most partitions a queue may have.
pub const MAX_PARTITIONS: u32 = 256;

/// The Redis Cluster hash slot of a hash tag's content (CRC16/XMODEM, as Redis computes it).
pub fn slot_of(tag: &str) -> u16 {
    (crc16::State::<crc16::XMODEM>::calculate(tag.as_bytes()) as u32 % SLOTS) as u16
}

/// The engine's queue names of `queue`'s `n` partitions, partition `i`'s slot in the `i`-th of
/// `n` equal slot ranges.
pub fn partition_names(queue: &str, n: u32) -> Vec<String> {
    (0..n)
        .map(|i| {
            let (lo, hi) = (i * SLOTS / n, (i + 1) * SLOTS / n);
            (0..)
                .map(|k| match k {
                    0 => format!("{queue}~p{i}"),
                    k => format!("{queue}~p{i}.{k}"),
                })
                .find(|name| (lo..hi).contains(&u32::from(slot_of(name))))
                .expect("a name in every slot range")
        })
        .collect()
}

/// The partition (of `n`) a job id or deduplication id belongs to.
fn route(id: &str, n: usize) -> usize {
    crc16::State::<crc16::XMODEM>::calculate(id.as_bytes()) as usize % n
}

/// A generated job id that routes to partition `p` of `n`.
fn id_for(p: usize, n: usize) -> String {
    loop {
        let id = uuid::Uuid::now_v7().simple().to_string();
        if route(&id, n) == p {
            return id;
        }
    }
}

/// Which queues are partitioned.
#[derive(Debug, Clone)]
enum Which {
    /// These, into so many partitions.
    Some(BTreeMap<String, u32>),
    /// Every queue but dead-letter queues (tests run whole suites so).
    Every(u32),
}

/// A backend whose partitioned queues spread over several engine queues; every other queue
/// goes through unchanged.
pub struct Partitioned {
    inner: Arc<dyn QueueBackend>,
    which: Which,
    /// Partition names by queue, computed once.
    names: Mutex<HashMap<String, Arc<[String]>>>,
    /// The next partition of a job without an id to route by.
    turn: AtomicUsize,
}

impl Partitioned {
    /// `inner` with each queue of `partitions` spread over so many partitions (1 is none).
    /// Counts are checked by the caller (`Config` refuses 0 and more than [`MAX_PARTITIONS`]).
    pub fn new(inner: Arc<dyn QueueBackend>, partitions: BTreeMap<String, u32>) -> Partitioned {
        let partitions = partitions.into_iter().filter(|(_, n)| *n > 1).collect();
        Partitioned::with(inner, Which::Some(partitions))
    }

    /// `inner` with every queue but dead-letter queues spread over `n` partitions.
    pub fn every(inner: Arc<dyn QueueBackend>, n: u32) -> Partitioned {
        Partitioned::with(inner, Which::Every(n))
    }

    fn with(inner: Arc<dyn QueueBackend>, which: Which) -> Partitioned {
        Partitioned {
            inner,
            which,
            names: Mutex::default(),
            // Where this process starts its turns: at random, so that many processes adding
            // a job or two each do not all start with partition 0.
            turn: AtomicUsize::new(rand::random::<u16>() as usize),
        }
    }

    fn count_of(&self, queue: &str) -> Option<u32> {
        match &self.which {
            Which::Some(map) => map.get(queue).copied(),
            Which::Every(n) if *n > 1 && !queue.starts_with(keel_core::DLQ_PREFIX) => Some(*n),
            Which::Every(_) => None,
        }
    }

    /// The partitions of `queue`, or `None` when it is not partitioned.
    fn parts(&self, queue: &str) -> Option<Arc<[String]>> {
        let n = self.count_of(queue)?;
        let mut names = self.names.lock().expect("partition names");
        Some(
            names
                .entry(queue.to_string())
                .or_insert_with(|| partition_names(queue, n).into())
                .clone(),
        )
    }

    /// The queue a partition name belongs to, if it is one.
    fn queue_of(&self, name: &str) -> Option<String> {
        let (base, rest) = name.rsplit_once("~p")?;
        let i: u32 = rest.split('.').next()?.parse().ok()?;
        let parts = self.parts(base)?;
        (parts.get(i as usize).map(String::as_str) == Some(name)).then(|| base.to_string())
    }

    /// The partition a new job goes to, and the job with the id it will have there.
    fn place(&self, parts: &[String], mut job: NewJob) -> (usize, NewJob) {
        let n = parts.len();
        if let Some(id) = &job.opts.job_id {
            return (route(id, n), job);
        }
        let p = match &job.opts.deduplication {
            Some(d) => route(&d.id, n),
            None => self.turn.fetch_add(1, Ordering::Relaxed) % n,
        };
        job.opts.job_id = Some(id_for(p, n));
        (p, job)
    }
}

/// `job` as the queue's, not a partition's.
fn named(mut job: Job, queue: &str) -> Job {
    queue.clone_into(&mut job.queue);
    job
}

/// `total` split over `n` shares, the first `total % n` one larger.
fn shares(total: u64, n: usize) -> impl Iterator<Item = u64> {
    let n64 = n as u64;
    (0..n64).map(move |i| total / n64 + u64::from(i < total % n64))
}

fn too_few(field: &str, what: &str, n: usize) -> Error {
    Error::invalid(
        field,
        format!("{what} must be at least the queue's {n} partitions (it is split among them)"),
    )
}

/// The order `state` lists by, for merging partitions' pages; ties by id.
fn order_key(state: JobState, job: &Job) -> (u64, u64, &str) {
    let (a, b) = order_of(state, job);
    (a, b, &job.id)
}

/// When a job was added: a generated id is a UUIDv7 whose time (and, as the id breaks ties,
/// counter) orders every add of its process — a bulk's jobs, stamped by several partitions'
/// clocks, keep their order so; a custom id has the stored add time.
fn added_at(job: &Job) -> u64 {
    match uuid::Uuid::try_parse(&job.id) {
        Ok(u) if u.get_version_num() == 7 && job.id.len() == 32 => {
            u.get_timestamp().map_or(job.timestamp, |t| {
                let (s, n) = t.to_unix();
                s * 1000 + u64::from(n) / 1_000_000
            })
        }
        _ => job.timestamp,
    }
}

fn order_of(state: JobState, job: &Job) -> (u64, u64) {
    match state {
        JobState::Completed | JobState::Failed => (job.finished_on.unwrap_or(0), job.timestamp),
        JobState::Delayed => (
            job.timestamp + job.opts.delay_ms.unwrap_or(0),
            job.timestamp,
        ),
        JobState::Prioritized => (u64::from(job.opts.priority.unwrap_or(0)), added_at(job)),
        _ => (added_at(job), 0),
    }
}

/// A worker a partition, closed together.
struct Workers {
    id: String,
    each: Vec<Box<dyn WorkerHandle>>,
}

#[async_trait]
impl WorkerHandle for Workers {
    fn id(&self) -> &str {
        &self.id
    }
    async fn close(&self, deadline: Duration) -> Result<()> {
        let closed = join_all(self.each.iter().map(|w| w.close(deadline))).await;
        closed.into_iter().collect()
    }
}

#[async_trait]
impl QueueBackend for Partitioned {
    fn kind(&self) -> BackendKind {
        self.inner.kind()
    }

    async fn add(&self, queue: &str, job: NewJob) -> Result<Job> {
        let Some(parts) = self.parts(queue) else {
            return self.inner.add(queue, job).await;
        };
        let (p, job) = self.place(&parts, job);
        Ok(named(self.inner.add(&parts[p], job).await?, queue))
    }

    async fn add_bulk(&self, queue: &str, jobs: Vec<NewJob>) -> Result<Vec<Job>> {
        let Some(parts) = self.parts(queue) else {
            return self.inner.add_bulk(queue, jobs).await;
        };
        // Each partition's share in one bulk add, in order; the answers put back in order.
        let mut by_part: Vec<(Vec<usize>, Vec<NewJob>)> = vec![Default::default(); parts.len()];
        for (i, job) in jobs.into_iter().enumerate() {
            let (p, job) = self.place(&parts, job);
            by_part[p].0.push(i);
            by_part[p].1.push(job);
        }
        let total = by_part.iter().map(|(at, _)| at.len()).sum();
        let added = try_join_all(by_part.into_iter().enumerate().map(|(p, (at, jobs))| {
            let name = &parts[p];
            async move {
                let added = match jobs.is_empty() {
                    true => Vec::new(),
                    false => self.inner.add_bulk(name, jobs).await?,
                };
                Ok::<_, Error>(at.into_iter().zip(added))
            }
        }))
        .await?;
        let mut out: Vec<Option<Job>> = vec![None; total];
        for (i, job) in added.into_iter().flatten() {
            out[i] = Some(named(job, queue));
        }
        out.into_iter()
            .map(|j| j.ok_or_else(|| Error::Backend("a partition's bulk add lost a job".into())))
            .collect()
    }

    async fn get_job(&self, queue: &str, id: &str) -> Result<Option<Job>> {
        let Some(parts) = self.parts(queue) else {
            return self.inner.get_job(queue, id).await;
        };
        for name in homeward(&parts, id) {
            if let Some(job) = self.inner.get_job(name, id).await? {
                return Ok(Some(named(job, queue)));
            }
        }
        Ok(None)
    }

    async fn job_state(&self, queue: &str, id: &str) -> Result<Option<JobState>> {
        let Some(parts) = self.parts(queue) else {
            return self.inner.job_state(queue, id).await;
        };
        for name in homeward(&parts, id) {
            if let Some(state) = self.inner.job_state(name, id).await? {
                return Ok(Some(state));
            }
        }
        Ok(None)
    }

    async fn list(
        &self,
        queue: &str,
        state: JobState,
        offset: usize,
        limit: usize,
        asc: bool,
    ) -> Result<Vec<Job>> {
        let Some(parts) = self.parts(queue) else {
            return self.inner.list(queue, state, offset, limit, asc).await;
        };
        // The page of the whole is within the first offset + limit of every partition.
        let want = offset.saturating_add(limit);
        let pages = try_join_all(
            parts
                .iter()
                .map(|name| self.inner.list(name, state, 0, want, asc)),
        )
        .await?;
        let mut all: Vec<Job> = pages.into_iter().flatten().collect();
        all.sort_by(|a, b| {
            let (ka, kb) = (order_key(state, a), order_key(state, b));
            if asc {
                ka.cmp(&kb)
            } else {
                kb.cmp(&ka)
            }
        });
        Ok(all
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|j| named(j, queue))
            .collect())
    }

    async fn counts(&self, queue: &str) -> Result<QueueCounts> {
        let Some(parts) = self.parts(queue) else {
            return self.inner.counts(queue).await;
        };
        let each = try_join_all(parts.iter().map(|name| self.inner.counts(name))).await?;
        Ok(each.into_iter().fold(QueueCounts::default(), |mut t, c| {
            t.waiting += c.waiting;
            t.active += c.active;
            t.delayed += c.delayed;
            t.prioritized += c.prioritized;
            t.completed += c.completed;
            t.failed += c.failed;
            t.paused |= c.paused;
            t
        }))
    }

    async fn job_logs(
        &self,
        queue: &str,
        id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<String>, u64)> {
        let Some(parts) = self.parts(queue) else {
            return self.inner.job_logs(queue, id, offset, limit).await;
        };
        let mut found = (Vec::new(), 0);
        for name in homeward(&parts, id) {
            found = self.inner.job_logs(name, id, offset, limit).await?;
            if found.1 > 0 {
                break;
            }
        }
        Ok(found)
    }

    async fn pause(&self, queue: &str) -> Result<()> {
        match self.parts(queue) {
            None => self.inner.pause(queue).await,
            Some(parts) => every(parts.iter().map(|p| self.inner.pause(p))).await,
        }
    }

    async fn resume(&self, queue: &str) -> Result<()> {
        match self.parts(queue) {
            None => self.inner.resume(queue).await,
            Some(parts) => every(parts.iter().map(|p| self.inner.resume(p))).await,
        }
    }

    async fn retry_job(&self, queue: &str, id: &str) -> Result<()> {
        let Some(parts) = self.parts(queue) else {
            return self.inner.retry_job(queue, id).await;
        };
        let mut last = Ok(());
        for name in homeward(&parts, id) {
            last = self.inner.retry_job(name, id).await;
            if !matches!(last, Err(Error::NotFound { .. })) {
                return last;
            }
        }
        last
    }

    async fn remove(&self, queue: &str, id: &str) -> Result<bool> {
        let Some(parts) = self.parts(queue) else {
            return self.inner.remove(queue, id).await;
        };
        for name in homeward(&parts, id) {
            if self.inner.remove(name, id).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn clean(
        &self,
        queue: &str,
        grace: Duration,
        limit: usize,
        state: JobState,
    ) -> Result<Vec<String>> {
        let Some(parts) = self.parts(queue) else {
            return self.inner.clean(queue, grace, limit, state).await;
        };
        let mut removed = Vec::new();
        for name in parts.iter() {
            let left = limit - removed.len();
            if left == 0 {
                break;
            }
            removed.extend(self.inner.clean(name, grace, left, state).await?);
        }
        Ok(removed)
    }

    async fn drain(&self, queue: &str, delayed: bool) -> Result<()> {
        match self.parts(queue) {
            None => self.inner.drain(queue, delayed).await,
            Some(parts) => every(parts.iter().map(|p| self.inner.drain(p, delayed))).await,
        }
    }

    async fn obliterate(&self, queue: &str, force: bool) -> Result<()> {
        let Some(parts) = self.parts(queue) else {
            return self.inner.obliterate(queue, force).await;
        };
        if !force {
            // Refuse before deleting anything: no partition may hold active jobs.
            let counts = self.counts(queue).await?;
            if counts.active > 0 {
                return Err(Error::Conflict(format!(
                    "queue {queue} has {} active jobs; obliterate with force to delete it anyway",
                    counts.active
                )));
            }
        }
        every(parts.iter().map(|p| self.inner.obliterate(p, force))).await
    }

    async fn failed_between(
        &self,
        queue: &str,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<Job>> {
        let Some(parts) = self.parts(queue) else {
            return self
                .inner
                .failed_between(queue, from_ms, to_ms, limit)
                .await;
        };
        let each = try_join_all(
            parts
                .iter()
                .map(|p| self.inner.failed_between(p, from_ms, to_ms, limit)),
        )
        .await?;
        let mut all: Vec<Job> = each.into_iter().flatten().collect();
        all.sort_by_key(|j| (j.finished_on.unwrap_or(0), j.timestamp));
        all.truncate(limit);
        Ok(all.into_iter().map(|j| named(j, queue)).collect())
    }

    async fn upsert_scheduler(
        &self,
        queue: &str,
        id: &str,
        schedule: Schedule,
        template: NewJob,
    ) -> Result<SchedulerInfo> {
        let home = self.parts(queue).map(|p| p[0].clone());
        self.inner
            .upsert_scheduler(home.as_deref().unwrap_or(queue), id, schedule, template)
            .await
    }

    async fn list_schedulers(&self, queue: &str) -> Result<Vec<SchedulerInfo>> {
        let home = self.parts(queue).map(|p| p[0].clone());
        self.inner
            .list_schedulers(home.as_deref().unwrap_or(queue))
            .await
    }

    async fn remove_scheduler(&self, queue: &str, id: &str) -> Result<bool> {
        let home = self.parts(queue).map(|p| p[0].clone());
        self.inner
            .remove_scheduler(home.as_deref().unwrap_or(queue), id)
            .await
    }

    async fn set_rate_limit(&self, queue: &str, limit: Option<(u64, Duration)>) -> Result<()> {
        let Some(parts) = self.parts(queue) else {
            return self.inner.set_rate_limit(queue, limit).await;
        };
        let n = parts.len();
        let share: Vec<Option<(u64, Duration)>> = match limit {
            None => vec![None; n],
            Some((max, _)) if max < n as u64 => return Err(too_few("rate_limit.max", "max", n)),
            Some((max, window)) => shares(max, n).map(|m| Some((m, window))).collect(),
        };
        every(
            parts
                .iter()
                .zip(share)
                .map(|(p, l)| self.inner.set_rate_limit(p, l)),
        )
        .await
    }

    async fn set_global_concurrency(&self, queue: &str, limit: Option<u32>) -> Result<()> {
        let Some(parts) = self.parts(queue) else {
            return self.inner.set_global_concurrency(queue, limit).await;
        };
        let n = parts.len();
        let share: Vec<Option<u32>> = match limit {
            None => vec![None; n],
            Some(l) if (l as usize) < n => {
                return Err(too_few("global_concurrency", "global concurrency", n))
            }
            Some(l) => shares(u64::from(l), n).map(|s| Some(s as u32)).collect(),
        };
        every(
            parts
                .iter()
                .zip(share)
                .map(|(p, l)| self.inner.set_global_concurrency(p, l)),
        )
        .await
    }

    async fn queue_names(&self) -> Result<Vec<String>> {
        let names: BTreeSet<String> = self
            .inner
            .queue_names()
            .await?
            .into_iter()
            .map(|name| self.queue_of(&name).unwrap_or(name))
            .collect();
        Ok(names.into_iter().collect())
    }

    async fn events(&self, queue: &str) -> Result<EventStream> {
        let Some(parts) = self.parts(queue) else {
            return self.inner.events(queue).await;
        };
        let streams = try_join_all(parts.iter().map(|p| self.inner.events(p))).await?;
        Ok(Box::pin(futures::stream::select_all(streams)))
    }

    async fn start_worker(
        &self,
        queue: &str,
        processor: Processor,
        opts: WorkerOptions,
        sink: WorkerEventSink,
    ) -> Result<Box<dyn WorkerHandle>> {
        let Some(parts) = self.parts(queue) else {
            return self.inner.start_worker(queue, processor, opts, sink).await;
        };
        let n = parts.len();
        if opts.concurrency < n {
            return Err(too_few("concurrency", "a worker's concurrency", n));
        }
        let name: Arc<str> = queue.into();
        let processor: Processor = Arc::new(move |mut ctx| {
            ctx.job.queue = name.to_string();
            processor(ctx)
        });
        let mut each = Vec::with_capacity(n);
        for (part, slots) in parts.iter().zip(shares(opts.concurrency as u64, n)) {
            let opts = WorkerOptions {
                concurrency: slots as usize,
                ..opts.clone()
            };
            match self
                .inner
                .start_worker(part, processor.clone(), opts, sink.clone())
                .await
            {
                Ok(w) => each.push(w),
                Err(e) => {
                    join_all(each.iter().map(|w| w.close(Duration::ZERO))).await;
                    return Err(e);
                }
            }
        }
        Ok(Box::new(Workers {
            id: each[0].id().to_string(),
            each,
        }))
    }

    async fn heartbeat(&self, id: &str, info: Value, ttl: Duration) -> Result<()> {
        self.inner.heartbeat(id, info, ttl).await
    }

    async fn live_workers(&self) -> Result<Vec<Value>> {
        self.inner.live_workers().await
    }

    async fn ping(&self) -> Result<Duration> {
        self.inner.ping().await
    }
}

/// The partitions in the order a lookup of `id` asks them: its own first.
fn homeward<'a>(parts: &'a [String], id: &str) -> impl Iterator<Item = &'a String> {
    let home = route(id, parts.len());
    std::iter::once(&parts[home]).chain(
        parts
            .iter()
            .enumerate()
            .filter(move |(p, _)| *p != home)
            .map(|(_, name)| name),
    )
}

/// Every call, at once; the first error.
async fn every(
    calls: impl Iterator<Item = impl std::future::Future<Output = Result<()>>>,
) -> Result<()> {
    try_join_all(calls).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_fall_in_their_slot_ranges_and_are_stable() {
        let names = partition_names("orders", 3);
        assert_eq!(names.len(), 3);
        for (i, name) in names.iter().enumerate() {
            let slot = u32::from(slot_of(name));
            assert!(
                (i as u32 * SLOTS / 3..(i as u32 + 1) * SLOTS / 3).contains(&slot),
                "{name} has slot {slot}"
            );
        }
        assert_eq!(names, partition_names("orders", 3));
        // Redis's own answer for a known key (CLUSTER KEYSLOT foo = 12182).
        assert_eq!(slot_of("foo"), 12182);
    }

    #[test]
    fn generated_ids_route_to_their_partition_and_shares_add_up() {
        for p in 0..4 {
            let id = id_for(p, 4);
            assert_eq!(route(&id, 4), p);
            assert_eq!(id.len(), 32);
        }
        assert_eq!(shares(10, 3).collect::<Vec<_>>(), vec![4, 3, 3]);
        assert_eq!(shares(3, 3).sum::<u64>(), 3);
    }
}
