//! The queue contract (`keel_core::QueueBackend`) on the native engine: producers and admin.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use keel_core::{
    BackendKind, Error, EventStream, Job, JobState, NewJob, Processor, QueueBackend, QueueCounts,
    Result, Schedule, SchedulerInfo, WorkerEventSink, WorkerHandle, WorkerOptions,
};
use redis::FromRedisValue;
use serde_json::Value;

use crate::adder::{Encoded, ADD_CHUNK};
use crate::{decode, NativeEngine, NativeWorker, Stored};

impl NativeEngine {
    pub(crate) async fn script<T: FromRedisValue>(
        &self,
        what: &str,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T> {
        let mut conn = self.conn.clone();
        self.bounded(what, inv.invoke_async(&mut conn)).await
    }

    pub(crate) async fn query<T: FromRedisValue>(
        &self,
        what: &str,
        pipe: &redis::Pipeline,
    ) -> Result<T> {
        let mut conn = self.conn.clone();
        self.bounded(what, pipe.query_async(&mut conn)).await
    }

    pub(crate) fn encode(
        job: &NewJob,
        now: u64,
        scheduler: Option<(String, u64)>,
    ) -> Result<String> {
        serde_json::to_string(&Stored {
            name: job.name.clone(),
            data: job.data.clone(),
            opts: job.opts.clone(),
            timestamp: now,
            scheduler,
        })
        .map_err(|e| Error::invalid("data", format!("not serializable: {e}")))
    }

    /// Jobs by id, in order (`None` for ids that are gone), in one round trip.
    pub(crate) async fn get_jobs(&self, queue: &str, ids: &[String]) -> Result<Vec<Option<Job>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self.keys(queue);
        let mut pipe = redis::pipe();
        for k in ["jobs", "att", "stalls", "ret", "err", "progress"] {
            pipe.cmd("HMGET").arg(keys.k(k)).arg(ids);
        }
        for k in ["done", "failed"] {
            pipe.cmd("ZMSCORE").arg(keys.k(k)).arg(ids);
        }
        #[allow(clippy::type_complexity)]
        let (jobs, att, stalls, ret, err, progress, done, failed): (
            Vec<Option<String>>,
            Vec<Option<u32>>,
            Vec<Option<u32>>,
            Vec<Option<String>>,
            Vec<Option<String>>,
            Vec<Option<String>>,
            Vec<Option<f64>>,
            Vec<Option<f64>>,
        ) = self.query("reading jobs", &pipe).await?;
        let mut out = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            let Some(stored) = &jobs[i] else {
                out.push(None);
                continue;
            };
            let (mut job, _) = decode(queue, id.clone(), stored)?;
            job.attempts_made = att[i].unwrap_or(0);
            job.stalled_counter = stalls[i].unwrap_or(0);
            if let Some(r) = ret[i]
                .as_deref()
                .and_then(|r| serde_json::from_str::<Value>(r).ok())
            {
                job.processed_on = r["p"].as_u64();
                job.returnvalue = Some(r["r"].clone());
            }
            if let Some(p) = progress[i]
                .as_deref()
                .and_then(|p| serde_json::from_str(p).ok())
            {
                job.progress = p;
            }
            if let Some(e) = err[i]
                .as_deref()
                .and_then(|e| serde_json::from_str::<Value>(e).ok())
            {
                job.failed_reason = e["reason"].as_str().map(str::to_string);
                job.processed_on = e["p"].as_u64();
                job.stacktrace = e["stack"]
                    .as_str()
                    .map(|s| vec![s.to_string()])
                    .unwrap_or_default();
            }
            job.finished_on = done[i].or(failed[i]).map(|t| t as u64);
            if done[i].is_some() {
                // A completion is an attempt too; `att` counts only the failed ones.
                job.attempts_made += 1;
            }
            out.push(Some(job));
        }
        Ok(out)
    }

    async fn simple(&self, what: &str, pipe: &redis::Pipeline) -> Result<()> {
        self.query::<redis::Value>(what, pipe).await.map(|_| ())
    }
}

#[async_trait]
impl QueueBackend for NativeEngine {
    fn kind(&self) -> BackendKind {
        BackendKind::Redis
    }

    async fn add(&self, queue: &str, job: NewJob) -> Result<Job> {
        let job = Encoded::new(job)?;
        self.add_coalesced(queue, job).await
    }

    async fn add_bulk(&self, queue: &str, jobs: Vec<NewJob>) -> Result<Vec<Job>> {
        let keys = self.keys(queue);
        let mut out = Vec::with_capacity(jobs.len());
        let mut jobs = jobs.into_iter().peekable();
        while jobs.peek().is_some() {
            let chunk = jobs
                .by_ref()
                .take(ADD_CHUNK)
                .map(Encoded::new)
                .collect::<Result<Vec<_>>>()?;
            out.extend(self.add_chunk(queue, &keys, chunk).await?);
        }
        Ok(out)
    }

    async fn get_job(&self, queue: &str, id: &str) -> Result<Option<Job>> {
        Ok(self
            .get_jobs(queue, &[id.to_string()])
            .await?
            .pop()
            .flatten())
    }

    async fn job_state(&self, queue: &str, id: &str) -> Result<Option<JobState>> {
        let keys = self.keys(queue);
        let mut pipe = redis::pipe();
        pipe.hexists(keys.k("jobs"), id);
        for k in ["active", "prio", "delayed", "done", "failed"] {
            pipe.zscore(keys.k(k), id);
        }
        #[allow(clippy::type_complexity)]
        let (exists, active, prio, delayed, done, failed): (
            bool,
            Option<f64>,
            Option<f64>,
            Option<f64>,
            Option<f64>,
            Option<f64>,
        ) = self.query("reading a job's state", &pipe).await?;
        Ok(match () {
            _ if !exists => None,
            _ if active.is_some() => Some(JobState::Active),
            _ if prio.is_some() => Some(JobState::Prioritized),
            _ if delayed.is_some() => Some(JobState::Delayed),
            _ if done.is_some() => Some(JobState::Completed),
            _ if failed.is_some() => Some(JobState::Failed),
            _ => Some(JobState::Waiting),
        })
    }

    async fn list(
        &self,
        queue: &str,
        state: JobState,
        offset: usize,
        limit: usize,
        asc: bool,
    ) -> Result<Vec<Job>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let keys = self.keys(queue);
        let (start, stop) = (offset as isize, (offset + limit - 1) as isize);
        let mut pipe = redis::pipe();
        match state {
            JobState::Waiting if asc => pipe.lrange(keys.k("wait"), -stop - 1, -start - 1),
            JobState::Waiting => pipe.lrange(keys.k("wait"), start, stop),
            JobState::WaitingChildren => return Ok(Vec::new()),
            _ => {
                let z = match state {
                    JobState::Active => "active",
                    JobState::Delayed => "delayed",
                    JobState::Prioritized => "prio",
                    JobState::Completed => "done",
                    _ => "failed",
                };
                if asc {
                    pipe.zrange(keys.k(z), start, stop)
                } else {
                    pipe.zrevrange(keys.k(z), start, stop)
                }
            }
        };
        let (mut ids,): (Vec<String>,) = self.query("listing jobs", &pipe).await?;
        if asc && state == JobState::Waiting {
            ids.reverse();
        }
        Ok(self
            .get_jobs(queue, &ids)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    async fn counts(&self, queue: &str) -> Result<QueueCounts> {
        let keys = self.keys(queue);
        let mut pipe = redis::pipe();
        pipe.llen(keys.k("wait"));
        for k in ["prio", "delayed", "active", "done", "failed"] {
            pipe.zcard(keys.k(k));
        }
        pipe.hexists(keys.k("meta"), "paused");
        let (waiting, prioritized, delayed, active, completed, failed, paused): (
            u64,
            u64,
            u64,
            u64,
            u64,
            u64,
            bool,
        ) = self.query("counting jobs", &pipe).await?;
        Ok(QueueCounts {
            waiting,
            active,
            delayed,
            prioritized,
            completed,
            failed,
            paused,
        })
    }

    async fn job_logs(
        &self,
        queue: &str,
        id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<String>, u64)> {
        let key = self.keys(queue).k(&format!("log:{id}"));
        let mut pipe = redis::pipe();
        pipe.lrange(&key, offset as isize, offset as isize + limit as isize - 1)
            .llen(&key);
        if limit == 0 {
            let (_, n): (Vec<String>, u64) = self.query("reading a job's log", &pipe).await?;
            return Ok((Vec::new(), n));
        }
        self.query("reading a job's log", &pipe).await
    }

    async fn pause(&self, queue: &str) -> Result<()> {
        let keys = self.keys(queue);
        self.simple(
            "pausing",
            redis::pipe()
                .hset(keys.k("meta"), "paused", 1)
                .cmd("XADD")
                .arg(keys.k("events"))
                .arg("MAXLEN")
                .arg("~")
                .arg(1000)
                .arg("*")
                .arg("e")
                .arg("paused"),
        )
        .await
    }

    async fn resume(&self, queue: &str) -> Result<()> {
        let keys = self.keys(queue);
        self.simple(
            "resuming",
            redis::pipe()
                .hdel(keys.k("meta"), "paused")
                .lpush(keys.k("notify"), "1")
                .ltrim(keys.k("notify"), 0, 0)
                .cmd("XADD")
                .arg(keys.k("events"))
                .arg("MAXLEN")
                .arg("~")
                .arg(1000)
                .arg("*")
                .arg("e")
                .arg("resumed"),
        )
        .await
    }

    async fn retry_job(&self, queue: &str, id: &str) -> Result<()> {
        let mut inv = self.keys(queue).invoke(&self.scripts.retry);
        inv.arg(id);
        match self.script::<i64>("retrying a job", inv).await? {
            1 => Ok(()),
            0 => Err(Error::not_found(format!("job {id} in queue {queue}"))),
            _ => Err(Error::Conflict(format!(
                "job {id} is not failed: only failed jobs can be retried"
            ))),
        }
    }

    async fn remove(&self, queue: &str, id: &str) -> Result<bool> {
        let mut inv = self.keys(queue).invoke(&self.scripts.remove);
        inv.arg(id);
        match self.script::<i64>("removing a job", inv).await? {
            1 => Ok(true),
            0 => Ok(false),
            _ => Err(Error::Conflict(format!(
                "job {id} is active (a worker holds it): it cannot be removed now"
            ))),
        }
    }

    async fn clean(
        &self,
        queue: &str,
        grace: Duration,
        limit: usize,
        state: JobState,
    ) -> Result<Vec<String>> {
        let name = match state {
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Waiting => "waiting",
            JobState::Prioritized => "prioritized",
            JobState::Delayed => "delayed",
            JobState::Active | JobState::WaitingChildren => {
                return Err(Error::invalid(
                    "state",
                    "active jobs are held by workers and cannot be cleaned",
                ))
            }
        };
        let mut inv = self.keys(queue).invoke(&self.scripts.clean);
        inv.arg(name).arg(grace.as_millis() as u64).arg(limit);
        self.script("cleaning jobs", inv).await
    }

    async fn drain(&self, queue: &str, delayed: bool) -> Result<()> {
        let mut inv = self.keys(queue).invoke(&self.scripts.drain);
        inv.arg(if delayed { "1" } else { "0" });
        self.script::<i64>("draining", inv).await.map(|_| ())
    }

    async fn obliterate(&self, queue: &str, force: bool) -> Result<()> {
        let keys = self.keys(queue);
        if !force {
            let (active,): (u64,) = self
                .query("obliterating", redis::pipe().zcard(keys.k("active")))
                .await?;
            if active > 0 {
                return Err(Error::Conflict(format!(
                    "queue {queue} has {active} active jobs: obliterate with force to delete it anyway"
                )));
            }
        }
        let pattern = format!("{}*", glob_escape(&keys.k("")));
        let found = self.scan(&pattern).await?;
        for part in found.chunks(500) {
            self.simple("obliterating", redis::pipe().del(part)).await?;
        }
        Ok(())
    }

    async fn failed_between(
        &self,
        queue: &str,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<Job>> {
        let (ids,): (Vec<String>,) = self
            .query(
                "listing failed jobs",
                redis::pipe()
                    .cmd("ZRANGEBYSCORE")
                    .arg(self.keys(queue).k("failed"))
                    .arg(from_ms)
                    .arg(to_ms)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit),
            )
            .await?;
        Ok(self
            .get_jobs(queue, &ids)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    async fn upsert_scheduler(
        &self,
        queue: &str,
        id: &str,
        schedule: Schedule,
        template: NewJob,
    ) -> Result<SchedulerInfo> {
        self.save_scheduler(queue, id, schedule, template).await
    }

    async fn list_schedulers(&self, queue: &str) -> Result<Vec<SchedulerInfo>> {
        self.schedulers(queue).await
    }

    async fn remove_scheduler(&self, queue: &str, id: &str) -> Result<bool> {
        self.drop_scheduler(queue, id).await
    }

    async fn set_rate_limit(&self, queue: &str, limit: Option<(u64, Duration)>) -> Result<()> {
        let meta = self.keys(queue).k("meta");
        let mut pipe = redis::pipe();
        match limit {
            Some((max, every)) => pipe.hset(&meta, "rl_max", max).hset(
                &meta,
                "rl_ms",
                every.as_millis().max(1) as u64,
            ),
            None => pipe.hdel(&meta, &["rl_max", "rl_ms"]),
        };
        self.simple("setting the rate limit", &pipe).await
    }

    async fn set_global_concurrency(&self, queue: &str, limit: Option<u32>) -> Result<()> {
        let keys = self.keys(queue);
        let meta = keys.k("meta");
        let mut pipe = redis::pipe();
        match limit {
            Some(n) => pipe.hset(&meta, "gc", n),
            None => pipe.hdel(&meta, "gc"),
        };
        // A raised or lifted limit may free an idle worker: wake one (it wakes the next).
        pipe.lpush(keys.k("notify"), 1)
            .ltrim(keys.k("notify"), 0, 0);
        self.simple("setting the global concurrency", &pipe).await
    }

    async fn queue_names(&self) -> Result<Vec<String>> {
        let keys = self
            .scan(&format!("{}:keel:{{*}}:*", glob_escape(&self.prefix)))
            .await?;
        let skip = self.prefix.len() + ":keel:{".len();
        let mut names: Vec<String> = keys
            .iter()
            .filter_map(|k| {
                let rest = k.get(skip..)?;
                let end = rest.find("}:")?;
                Some(rest[..end].to_string())
            })
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn events(&self, queue: &str) -> Result<EventStream> {
        crate::events::stream(self, queue).await
    }

    async fn start_worker(
        &self,
        queue: &str,
        processor: Processor,
        opts: WorkerOptions,
        sink: WorkerEventSink,
    ) -> Result<Box<dyn WorkerHandle>> {
        Ok(Box::new(
            NativeWorker::start(self, queue, processor, opts, sink).await?,
        ))
    }

    async fn heartbeat(&self, id: &str, info: Value, ttl: Duration) -> Result<()> {
        self.simple(
            "writing the worker heartbeat",
            redis::pipe()
                .cmd("SET")
                .arg(format!("{}:health:worker:{id}:heartbeat", self.prefix))
                .arg(info.to_string())
                .arg("PX")
                .arg(ttl.as_millis().max(1) as u64),
        )
        .await
    }

    async fn live_workers(&self) -> Result<Vec<Value>> {
        let pattern = format!("{}:health:worker:*:heartbeat", glob_escape(&self.prefix));
        let mut keys = self.scan(&pattern).await?;
        keys.sort();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let (values,): (Vec<Option<String>>,) = self
            .query("listing workers", redis::pipe().mget(&keys))
            .await?;
        Ok(values
            .into_iter()
            .flatten()
            .filter_map(|v| serde_json::from_str(&v).ok())
            .collect())
    }

    async fn ping(&self) -> Result<Duration> {
        let started = Instant::now();
        let (pong,): (String,) = self.query("PING", redis::pipe().cmd("PING")).await?;
        if pong != "PONG" {
            return Err(Error::Backend(format!("PING answered {pong:?}")));
        }
        Ok(started.elapsed())
    }
}

impl NativeEngine {
    /// Every key matching `pattern` (`SCAN`; on a cluster, of every master), bounded by the
    /// command timeout as a whole.
    async fn scan(&self, pattern: &str) -> Result<Vec<String>> {
        let mut conn = self.conn.clone();
        let fut = async {
            let masters = match conn.masters().await? {
                Some(m) => m.into_iter().map(Some).collect(),
                None => vec![None],
            };
            let mut found = Vec::new();
            for master in &masters {
                let mut cursor = 0u64;
                loop {
                    let mut cmd = redis::cmd("SCAN");
                    cmd.arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000);
                    let reply = conn.on(master.as_ref(), &cmd).await?;
                    let (next, keys): (u64, Vec<String>) = redis::from_redis_value(reply)?;
                    found.extend(keys);
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
            Ok::<_, redis::RedisError>(found)
        };
        self.bounded("scanning keys", fut).await
    }
}

/// `s` with the glob characters of `SCAN MATCH` escaped.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '{' | '}') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
