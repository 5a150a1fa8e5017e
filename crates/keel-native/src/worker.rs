//! The worker: one task owns the queue's round trips — each `cycle.lua` call hands back the
//! acknowledgements gathered since the last one and takes as many jobs as there are free
//! slots — while each job runs on a task of its own. Beside it, a heartbeat renews every lease
//! in one call (`extend.lua`) and the stall recovery returns expired leases (`recover.lua`).
//!
//! When a cycle is sent, and how two share the slots, is the run loop's (`run.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use keel_core::backend::{JobContext, Processor, WorkerEvent, WorkerEventSink};
use keel_core::{Error, Job, JobError, Result, WorkerOptions};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::control::{control_log, Control};
use crate::lease::{heartbeat, recovery};
use crate::{decode, Keys, NativeEngine};

#[async_trait]
impl keel_core::WorkerHandle for NativeWorker {
    fn id(&self) -> &str {
        &self.id
    }

    async fn close(&self, deadline: Duration) -> Result<()> {
        NativeWorker::close(self, deadline).await
    }
}

/// Longest a finished job waits for others to share its acknowledgement's round trip.
pub const ACK_WINDOW: Duration = Duration::from_millis(1);
/// Most acknowledgements one `cycle` call carries.
pub(crate) const MAX_ACKS: usize = 500;

/// How an attempt ended, for `cycle.lua`.
pub(crate) struct Ack {
    pub(crate) id: String,
    /// The lease the attempt ran under: only the job's current lease's ack counts.
    pub(crate) lease: String,
    pub(crate) kind: &'static str,
    pub(crate) value: String,
    /// Retention of completed (kind `k`) or failed (`f`) jobs by count; -1: no count.
    pub(crate) keep: i64,
    /// And by age (ms); -1: no age.
    pub(crate) age_ms: i64,
    /// Reported to the sink once the acknowledgement is applied (the job is stored so).
    pub(crate) event: Option<WorkerEvent>,
}

pub(crate) struct Shared {
    pub(crate) engine: NativeEngine,
    pub(crate) keys: Keys,
    pub(crate) queue: String,
    pub(crate) token: String,
    pub(crate) processor: Processor,
    pub(crate) opts: WorkerOptions,
    pub(crate) sink: WorkerEventSink,
    /// The jobs running here: id → lease (what the heartbeat renews).
    pub(crate) leased: Mutex<HashMap<String, String>>,
}

/// A running worker of the native engine.
pub struct NativeWorker {
    id: String,
    stop: watch::Sender<bool>,
    main: Mutex<Option<JoinHandle<()>>>,
    aux: Vec<JoinHandle<()>>,
}

impl NativeWorker {
    /// Starts a worker on `queue`.
    pub async fn start(
        engine: &NativeEngine,
        queue: &str,
        processor: Processor,
        opts: WorkerOptions,
        sink: WorkerEventSink,
    ) -> Result<NativeWorker> {
        if opts.concurrency == 0 {
            return Err(Error::invalid("concurrency", "must be at least 1"));
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        let blocker = engine.dedicated().await?;
        let shared = Arc::new(Shared {
            engine: engine.clone(),
            keys: engine.keys(queue),
            queue: queue.to_string(),
            token: token.clone(),
            processor,
            opts,
            sink,
            leased: Mutex::new(HashMap::new()),
        });
        let (stop, stopped) = watch::channel(false);
        let main = tokio::spawn(crate::run::run(shared.clone(), blocker, stopped.clone()));
        let aux = vec![
            tokio::spawn(heartbeat(shared.clone(), stopped.clone())),
            tokio::spawn(recovery(shared, stopped)),
        ];
        Ok(NativeWorker {
            id: token,
            stop,
            main: Mutex::new(Some(main)),
            aux,
        })
    }

    /// The worker's id (its leases' token).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Stops taking jobs, lets in-flight jobs finish and be acknowledged for up to `deadline`,
    /// then stops; a job still running then is abandoned: its lease expires and a worker
    /// recovers it as stalled.
    pub async fn close(&self, deadline: Duration) -> Result<()> {
        let _ = self.stop.send(true);
        let main = self.main.lock().expect("not poisoned").take();
        if let Some(mut main) = main {
            if tokio::time::timeout(deadline, &mut main).await.is_err() {
                main.abort();
            }
        }
        for t in &self.aux {
            t.abort();
        }
        Ok(())
    }
}

impl Drop for NativeWorker {
    fn drop(&mut self) {
        if let Some(main) = self.main.lock().expect("not poisoned").take() {
            main.abort();
        }
        for t in &self.aux {
            t.abort();
        }
    }
}

/// What a `cycle` call answered.
pub(crate) struct Cycle {
    pub(crate) next_delayed: Option<u64>,
    /// The queue's rate limit admits no job for this long.
    pub(crate) limited: Option<Duration>,
    /// The jobs taken.
    pub(crate) jobs: Vec<Taken>,
    /// Jobs taken that this worker cannot read (a newer version's options, say): failed.
    pub(crate) unreadable: Vec<Ack>,
}

/// A job taken by a `cycle` call.
pub(crate) struct Taken {
    pub(crate) job: Job,
    /// Its scheduler and run, when it is a scheduler's run.
    pub(crate) scheduled: Option<(String, u64)>,
    /// Stalls of the job this attempt is the first to hear of.
    pub(crate) fresh: u32,
    /// The lease of this take.
    pub(crate) lease: String,
}

pub(crate) async fn cycle(s: &Shared, acks: &[Ack], want: usize) -> Result<Cycle> {
    let mut inv = s.keys.invoke(&s.engine.scripts.cycle);
    // The strictest retention among the batch's jobs (they share their queue's defaults).
    let keep = |kind: &str, f: fn(&Ack) -> i64| {
        acks.iter()
            .filter(|a| a.kind == kind)
            .map(f)
            .filter(|v| *v >= 0)
            .min()
            .unwrap_or(-1)
    };
    inv.arg(&s.token)
        .arg(s.opts.lock_duration.as_millis() as u64)
        .arg(want)
        .arg(keep("k", |a| a.keep))
        .arg(keep("k", |a| a.age_ms))
        .arg(keep("f", |a| a.keep))
        .arg(keep("f", |a| a.age_ms))
        .arg(acks.len());
    for a in acks {
        inv.arg(&a.id).arg(&a.lease).arg(a.kind).arg(&a.value);
    }
    let mut conn = s.engine.conn.clone();
    let reply: Vec<redis::Value> = s
        .engine
        .bounded("a worker's cycle", inv.invoke_async(&mut conn))
        .await?;
    let num = |i: usize| -> Result<i64> {
        match reply.get(i) {
            Some(v) => crate::parse(v),
            None => Ok(0),
        }
    };
    let (next, limited) = (num(1)?, num(2)?);
    let (mut jobs, mut unreadable) = (Vec::new(), Vec::new());
    for six in reply.get(3..).unwrap_or_default().chunks(6) {
        let [id, stored, att, stalls, fresh, lease] = six else {
            return Err(Error::Backend("a cycle answered a partial job".into()));
        };
        let id: String = crate::parse(id)?;
        let lease: String = crate::parse(lease)?;
        let stored: Option<String> = crate::parse(stored)?;
        let Some(stored) = stored else {
            // Removed while waiting: nothing to run; its lease goes with the next cycle.
            unreadable.push(Ack {
                id,
                lease,
                kind: "c",
                value: String::new(),
                keep: 0,
                age_ms: -1,
                event: None,
            });
            continue;
        };
        let (mut job, scheduled) = match decode(&s.queue, id.clone(), &stored) {
            Ok(j) => j,
            Err(e) => {
                // One unreadable job fails alone; the rest of the batch runs.
                let reason = format!("this worker cannot read the job: {e}");
                unreadable.push(Ack {
                    event: Some(WorkerEvent::Failed {
                        job_id: id.clone(),
                        reason: reason.clone(),
                        terminal: true,
                    }),
                    id,
                    lease,
                    kind: "f",
                    value: json!({ "reason": reason }).to_string(),
                    keep: -1,
                    age_ms: -1,
                });
                continue;
            }
        };
        let count = |v: &redis::Value| -> u32 {
            crate::parse::<String>(v)
                .ok()
                .and_then(|x| x.parse().ok())
                .unwrap_or(0)
        };
        job.attempts_made = count(att);
        job.stalled_counter = count(stalls);
        job.attempts_started = job.attempts_made + job.stalled_counter + 1;
        job.processed_on = Some(keel_core::now_ms());
        job.processed_by = s.opts.name.clone();
        jobs.push(Taken {
            job,
            scheduled,
            fresh: count(fresh),
            lease,
        });
    }
    Ok(Cycle {
        next_delayed: u64::try_from(next).ok(),
        limited: (limited > 0).then(|| Duration::from_millis(limited as u64)),
        jobs,
        unreadable,
    })
}

pub(crate) async fn process(s: Arc<Shared>, taken: Taken, done: mpsc::UnboundedSender<Ack>) {
    let Taken {
        job,
        scheduled,
        fresh,
        lease,
    } = taken;
    let id = job.id.clone();
    if let Some((scheduler, run)) = scheduled {
        // The next run is added before this one runs, as BullMQ's schedulers do. When that
        // fails, the run waits a second and is taken again (never a run without a next one).
        if let Err(e) = s.engine.fire_next(&s.queue, &scheduler, run).await {
            (s.sink)(WorkerEvent::Error {
                message: format!("adding the next run of scheduler {scheduler}: {e}"),
            });
            let _ = done.send(Ack {
                id,
                lease,
                kind: "d",
                value: "1000".into(),
                keep: -1,
                age_ms: -1,
                event: None,
            });
            return;
        }
    }
    (s.sink)(WorkerEvent::Active { job_id: id.clone() });
    let control = Arc::new(Control {
        engine: s.engine.clone(),
        keys: s.keys.clone(),
        id: id.clone(),
    });
    let ctx = JobContext {
        job: job.clone(),
        control,
        recovered_stalls: fresh,
        run_note: None,
    };
    // A handler that panics fails its attempt like an error (its job is never left leased).
    let processor = s.processor.clone();
    let result = std::panic::AssertUnwindSafe(async move { processor(ctx).await })
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|m| m.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(JobError::retry(format!("the handler panicked: {what}")))
        });
    let keep = |k: &Option<keel_core::KeepJobs>| -> Option<i64> {
        k.as_ref().and_then(|k| k.count).map(|c| c as i64)
    };
    let age = |k: &Option<keel_core::KeepJobs>| -> i64 {
        k.as_ref()
            .and_then(|k| k.age_s)
            .map(|a| a as i64 * 1000)
            .unwrap_or(-1)
    };
    let processed_on = job.processed_on.unwrap_or_else(keel_core::now_ms);
    let ack = match result {
        Ok(value) => {
            let event = Some(WorkerEvent::Completed { job_id: id.clone() });
            match keep(&job.opts.remove_on_complete) {
                Some(0) => Ack {
                    id: id.clone(),
                    lease: String::new(),
                    kind: "c",
                    value: String::new(),
                    keep: 0,
                    age_ms: -1,
                    event,
                },
                k => Ack {
                    id: id.clone(),
                    lease: String::new(),
                    kind: "k",
                    value: json!({"p": processed_on, "r": value}).to_string(),
                    keep: k.unwrap_or(-1),
                    age_ms: age(&job.opts.remove_on_complete),
                    event,
                },
            }
        }
        Err(e) => {
            if let Some(wait) = e.delayed_for() {
                let wait = (wait.as_millis() as u64).max(1);
                let line = keel_core::delay_log_line(keel_core::now_ms() + wait, e.message());
                if let Err(err) = control_log(&s, &id, &line).await {
                    (s.sink)(WorkerEvent::Error {
                        message: format!("writing the delay of job {id} to its log: {err}"),
                    });
                }
                Ack {
                    id: id.clone(),
                    lease: String::new(),
                    kind: "d",
                    value: wait.to_string(),
                    keep: -1,
                    age_ms: -1,
                    event: None,
                }
            } else {
                let terminal = e.is_final_for(&job);
                let event = Some(WorkerEvent::Failed {
                    job_id: id.clone(),
                    reason: e.message().to_string(),
                    terminal,
                });
                if terminal {
                    Ack {
                        id: id.clone(),
                        lease: String::new(),
                        kind: "f",
                        // The stack goes to the DLQ entry, not the job: as on the other
                        // backends (bullmq-official stores none).
                        value: json!({"reason": e.message(), "p": processed_on}).to_string(),
                        keep: keep(&job.opts.remove_on_fail).unwrap_or(-1),
                        age_ms: age(&job.opts.remove_on_fail),
                        event,
                    }
                } else {
                    Ack {
                        kind: "r",
                        value: e.retry_delay_ms(&job).to_string(),
                        id: id.clone(),
                        lease: String::new(),
                        keep: -1,
                        age_ms: -1,
                        event,
                    }
                }
            }
        }
    };
    // The lease is renewed until the acknowledgement is applied (the run loop lets it go).
    let _ = done.send(Ack { lease, ..ack });
}

impl std::fmt::Debug for NativeWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeWorker")
            .field("id", &self.id)
            .finish()
    }
}
