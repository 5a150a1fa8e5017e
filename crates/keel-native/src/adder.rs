//! Adding jobs: one `add.lua` call a batch (`add_chunk`), and single adds coalesced —
//! concurrent `add` calls on one queue share `add.lua` calls.
//!
//! Each queue has a lane. An `add` encodes its job, puts it on the lane and waits for its
//! answer. When no call of the lane is in flight, the add starts a task that sends every job
//! waiting on the lane in one `add.lua` call and, when it answers, sends the jobs that arrived
//! meanwhile, until none is left. A lone add therefore goes out at once (no waiting to gather
//! others), and adds arriving while a call is in flight share the next one: the producer side
//! of the engine's rule that a batch, not a job, is what costs a round trip.
//!
//! The call runs on a task of its own, so a caller that stops waiting (a dropped future)
//! neither cancels the jobs of the others nor leaves its own half-added: its job is added and
//! nobody hears of it, as with a single call whose answer was not awaited.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use keel_core::{Error, Job, NewJob, Result};
use tokio::sync::oneshot;

use crate::{parse, Keys, NativeEngine};

/// Jobs added by one `add.lua` call at most (a bulk is split).
pub(crate) const ADD_CHUNK: usize = 1000;

/// A job to add, encoded as stored, with the time it was encoded at (its `timestamp`).
pub(crate) struct Encoded {
    pub(crate) job: NewJob,
    pub(crate) stored: String,
    pub(crate) now: u64,
}

impl Encoded {
    pub(crate) fn new(job: NewJob) -> Result<Encoded> {
        let now = keel_core::now_ms();
        let stored = NativeEngine::encode(&job, now, None)?;
        Ok(Encoded { job, stored, now })
    }
}

/// The lanes of an engine, one a queue (made on its first add).
#[derive(Default)]
pub(crate) struct Adds {
    lanes: Mutex<HashMap<String, Arc<Lane>>>,
}

#[derive(Default)]
struct Lane {
    state: Mutex<LaneState>,
}

#[derive(Default)]
struct LaneState {
    waiting: Vec<(Encoded, oneshot::Sender<Result<Job>>)>,
    /// A task is sending this lane's jobs.
    busy: bool,
}

impl NativeEngine {
    /// Adds up to [`ADD_CHUNK`] encoded jobs in one `add.lua` call; the jobs, in order (an
    /// existing job where a custom id or a deduplication id was already taken).
    pub(crate) async fn add_chunk(
        &self,
        queue: &str,
        keys: &Keys,
        chunk: Vec<Encoded>,
    ) -> Result<Vec<Job>> {
        let mut inv = keys.invoke(&self.scripts.add);
        inv.arg(0);
        for e in &chunk {
            let j = &e.job;
            let (dedup, ttl) = match &j.opts.deduplication {
                Some(d) => (d.id.as_str(), d.ttl_ms.unwrap_or(0)),
                None => ("", 0),
            };
            inv.arg(j.opts.job_id.as_deref().unwrap_or(""))
                .arg(&e.stored)
                .arg(j.opts.delay_ms.unwrap_or(0))
                .arg(j.opts.priority.unwrap_or(0))
                .arg(if j.opts.lifo { "1" } else { "0" })
                .arg(dedup)
                .arg(ttl)
                .arg(&j.name);
        }
        let reply: Vec<redis::Value> = self.script("adding jobs", inv).await?;
        let mut out = Vec::with_capacity(chunk.len());
        let mut existing = Vec::new();
        for (e, pair) in chunk.into_iter().zip(reply.chunks(2)) {
            let id: String = parse(&pair[0])?;
            let added: i64 = parse(&pair[1])?;
            if added == 1 {
                out.push(Some(Job::added(id, queue, e.job, e.now)));
            } else {
                existing.push((out.len(), id));
                out.push(None);
            }
        }
        if !existing.is_empty() {
            let ids: Vec<String> = existing.iter().map(|(_, id)| id.clone()).collect();
            for ((at, id), job) in existing.into_iter().zip(self.get_jobs(queue, &ids).await?) {
                out[at] = Some(job.ok_or_else(|| {
                    Error::Backend(format!("job {id} vanished while being added"))
                })?);
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Adds one encoded job, in the next `add.lua` call of its queue's lane.
    pub(crate) async fn add_coalesced(&self, queue: &str, job: Encoded) -> Result<Job> {
        let lane = {
            let mut lanes = self.adds.lanes.lock().expect("not poisoned");
            lanes.entry(queue.to_string()).or_default().clone()
        };
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut st = lane.state.lock().expect("not poisoned");
            st.waiting.push((job, tx));
            !std::mem::replace(&mut st.busy, true)
        };
        if start {
            tokio::spawn(send_lane(self.clone(), queue.to_string(), lane));
        }
        rx.await
            .unwrap_or_else(|_| Err(Error::Backend("the add was dropped unanswered".into())))
    }
}

/// Sends the lane's waiting jobs, a call at a time, until none is waiting.
async fn send_lane(engine: NativeEngine, queue: String, lane: Arc<Lane>) {
    let keys = engine.keys(&queue);
    loop {
        let batch: Vec<_> = {
            let mut st = lane.state.lock().expect("not poisoned");
            if st.waiting.is_empty() {
                st.busy = false;
                return;
            }
            let n = st.waiting.len().min(ADD_CHUNK);
            st.waiting.drain(..n).collect()
        };
        let (jobs, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        match engine.add_chunk(&queue, &keys, jobs).await {
            Ok(added) => {
                for (job, reply) in added.into_iter().zip(replies) {
                    let _ = reply.send(Ok(job));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(copy(&e)));
                }
            }
        }
    }
}

/// The same error for every add of a failed call.
fn copy(e: &Error) -> Error {
    match e {
        Error::BackendUnavailable(m) => Error::BackendUnavailable(m.clone()),
        Error::InvalidInput { field, message } => Error::InvalidInput {
            field: field.clone(),
            message: message.clone(),
        },
        Error::Backend(m) => Error::Backend(m.clone()),
        other => Error::Backend(other.to_string()),
    }
}
