//! Realtime: the event hub behind `GET /api/owner/realtime` ([`crate::api::realtime`], a
//! WebSocket with the token in `Authorization` or `?token=`, or the console's session cookie
//! from a same-origin page).
//!
//! On connect the client gets `{"type":"snapshot","queues":[…]}`; then events:
//! `job_status` (attempts finished by any `keel serve` worker, at most 200 per second per
//! instance), `workflow_step` (within the same budget) and `workflow_instance`, `queue_stats` and
//! `dlq_stats` (at most once per second per queue, after anything changed it). Events travel
//! through pub/sub on the backend (Redis, or the memory bus) on the seeds' channel
//! `<prefix>:terminal:events` (the toolkit prefix; one JSON event per message, as the seeds'
//! subscribers read them), so every instance sees every instance's events. Each connection reads from a bounded buffer: a client that falls 256
//! events behind is disconnected (close code 1008) instead of growing memory.
//!
//! Token revocations travel on `<prefix>:<env>:tokens:revoked` (never shown to clients):
//! every instance drops its cached tokens at once and closes the sockets of the revoked token
//! (close code 1008); each socket also re-reads its token every
//! [`TOKEN_RECHECK`], in case a revocation message was missed.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use keel::config::Config;
use keel::{Backend, Events};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use keel_records::NewRun;

/// Events a connection may fall behind before it is disconnected.
pub const CONNECTION_BUFFER: usize = 256;

/// How often an open socket re-reads its token from the store (pub/sub carries revocations
/// at once; this bounds a missed message).
pub const TOKEN_RECHECK: Duration = Duration::from_secs(30);

/// The pub/sub channel of realtime events on `backend`: the seeds' `<prefix>:terminal:events`.
fn channel(backend: &Backend) -> String {
    keel::pubsub::channels::terminal_events(backend.keys().prefix())
}

/// The pub/sub channel of token revocations on `backend`.
fn revocations(backend: &Backend) -> String {
    format!(
        "{}:{}:tokens:revoked",
        backend.keys().prefix(),
        backend.keys().env()
    )
}

/// Tells every `keel serve` on `backend` that token `id` was revoked: they forget cached
/// tokens and close its sockets within a second.
pub async fn announce_revocation(backend: &Backend, id: &str) -> keel::Result<()> {
    Events::new(backend)
        .publish(
            &revocations(backend),
            &json!({"type": "token_revoked", "token_id": id}),
        )
        .await
        .map(|_| ())
}

/// `job_status` events per second and instance, at most.
pub const JOB_EVENTS_PER_SECOND: u32 = 200;

/// The realtime hub of this instance. Cheap to clone.
#[derive(Clone)]
pub struct Realtime {
    inner: Arc<Inner>,
}

struct Inner {
    /// `job_status` events sent in the current second, and which second.
    job_events: Mutex<(u64, u32)>,
    out: mpsc::Sender<Value>,
    local: broadcast::Sender<Arc<Value>>,
    pending: Mutex<BTreeSet<String>>,
    /// Bumped on every revocation seen, so cached tokens older than it are re-read.
    revocations: std::sync::atomic::AtomicU64,
}

impl Realtime {
    /// Starts the publisher, the subscriber and the once-a-second stats task.
    pub async fn start(
        backend: &Backend,
        config: &Config,
    ) -> keel::Result<(Realtime, Vec<JoinHandle<()>>)> {
        let events = Events::new(backend);
        let channel = channel(backend);
        let (out, mut out_rx) = mpsc::channel::<Value>(10_000);
        let (local, _) = broadcast::channel(CONNECTION_BUFFER);
        let rt = Realtime {
            inner: Arc::new(Inner {
                job_events: Mutex::new((0, 0)),
                out,
                local: local.clone(),
                pending: Mutex::new(BTreeSet::new()),
                revocations: Default::default(),
            }),
        };
        let mut tasks = Vec::new();
        let revoked = revocations(backend);
        let mut sub = events.subscribe(&[&channel, &revoked], &[]).await?;
        let hub = rt.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(e) = sub.next().await {
                // Earlier versions batched events into arrays: still read.
                let items = match e.data {
                    Value::Array(items) => items,
                    v => vec![v],
                };
                for v in items {
                    if e.channel == revoked && v["type"] == "token_revoked" {
                        hub.inner
                            .revocations
                            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    let _ = local.send(Arc::new(v));
                }
            }
        }));
        let (ev, ch) = (events.clone(), channel.clone());
        tasks.push(tokio::spawn(async move {
            // One event per message, as the seeds' subscribers read them (at most
            // JOB_EVENTS_PER_SECOND job events and one stats pair per queue and second).
            while let Some(v) = out_rx.recv().await {
                if let Err(e) = ev.publish(&ch, &v).await {
                    tracing::debug!(error = %e, "realtime events not published");
                }
            }
        }));
        // The owner API's cached lists and stats of a queue that changed are dropped with the
        // same once-a-second beat, so they follow the served workers too (not only API calls).
        let beat = Beat {
            hub: rt.clone(),
            cache: crate::tags::owner_cache(backend)?,
            backend: backend.clone(),
            config: config.clone(),
        };
        tasks.push(tokio::spawn(keel::service::run(
            beat,
            tokio_util::sync::CancellationToken::new(),
        )));
        Ok((rt, tasks))
    }

    /// The queues that changed since the last beat (and forgets them).
    fn take_pending(&self) -> Vec<String> {
        let mut p = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *p).into_iter().collect()
    }

    fn send(&self, v: Value) {
        let _ = self.inner.out.try_send(v);
    }

    /// Something changed in `queue`: its stats go out within a second.
    pub fn queue_changed(&self, queue: &str) {
        let mut p = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.insert(queue.to_string());
    }

    /// Counts one event against this second's [`JOB_EVENTS_PER_SECOND`]; false when spent.
    fn within_budget(&self) -> bool {
        let second = keel::now_ms() / 1000;
        let mut n = self
            .inner
            .job_events
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if n.0 != second {
            *n = (second, 0);
        }
        if n.1 >= JOB_EVENTS_PER_SECOND {
            return false;
        }
        n.1 += 1;
        true
    }

    /// An attempt finished. At most [`JOB_EVENTS_PER_SECOND`] of these go out per second and
    /// instance; past that only the queue's stats do (a UI cannot show more anyway).
    pub fn job_status(&self, run: &NewRun) {
        self.queue_changed(&run.queue);
        if !self.within_budget() {
            return;
        }
        self.send(json!({
            "type": "job_status", "queue": run.queue, "job_id": run.job_id, "name": run.name,
            "status": run.status, "attempt": run.attempt, "error": run.error,
        }));
    }

    /// Workflow events (`workflow_step` within the same per-second budget as `job_status`;
    /// `workflow_instance` always).
    pub fn workflow_events(&self, events: &[keel_workflows::WorkflowEvent]) {
        for e in events {
            if matches!(e, keel_workflows::WorkflowEvent::WorkflowStep { .. })
                && !self.within_budget()
            {
                continue;
            }
            if let Ok(v) = serde_json::to_value(e) {
                self.send(v);
            }
        }
    }

    /// An email or AI attempt (`email_status`, `ai_task`), within the per-second budget of
    /// `job_status`.
    pub fn handler_event(&self, e: &keel_handlers::HandlerEvent) {
        if !self.within_budget() {
            return;
        }
        self.send(match e {
            keel_handlers::HandlerEvent::Email(m) => json!({
                "type": "email_status", "queue": m.queue, "job_id": m.job_id,
                "name": m.job_name, "attempt": m.attempt, "status": m.status,
                "template": m.template, "recipient": m.recipient, "smtp_code": m.smtp_code,
                "error": m.error, "tenant_id": m.tenant_id,
            }),
            keel_handlers::HandlerEvent::Ai(r, id) => json!({
                "type": "ai_task", "queue": r.queue, "job_id": r.job_id, "name": r.job_name,
                "attempt": r.attempt, "status": r.status, "run_id": id, "model": r.model,
                "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                "cost_usd": r.cost_usd, "latency_ms": r.latency_ms, "error": r.error,
                "tenant_id": r.tenant_id,
            }),
        });
    }

    /// How many revocations this instance has heard of; a token cached before the latest one
    /// is read again.
    pub fn revocation_epoch(&self) -> u64 {
        self.inner
            .revocations
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A receiver of this instance's events.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Value>> {
        self.inner.local.subscribe()
    }
}

/// How often the realtime beat runs.
pub const BEAT_INTERVAL: Duration = Duration::from_secs(1);

/// The realtime beat, a background service ([`keel::service`]): each pass drops the cached
/// answers of the queues that changed since the last one and sends their `queue_stats` and
/// `dlq_stats`.
struct Beat {
    hub: Realtime,
    cache: keel::Cache,
    backend: Backend,
    config: Config,
}

/// What one beat did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BeatReport {
    /// Queues whose stats went out.
    pub queues: usize,
}

#[async_trait::async_trait]
impl keel::service::Service for Beat {
    type Report = BeatReport;

    fn name(&self) -> String {
        "realtime-beat".into()
    }

    fn interval(&self) -> Duration {
        BEAT_INTERVAL
    }

    async fn run_once(&self) -> keel::Result<BeatReport> {
        let queues = self.hub.take_pending();
        if !queues.is_empty() {
            let mut tags: Vec<String> = queues.iter().map(|q| crate::tags::queue(q)).collect();
            tags.push(crate::tags::QUEUES.into());
            let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
            if let Err(e) = self.cache.invalidate_tags(&tags).await {
                tracing::debug!(error = %e, "owner cache not invalidated");
            }
        }
        let mut sent = 0;
        for name in queues {
            let Ok(q) = self.config.queue(&self.backend, &name) else {
                continue;
            };
            if let Ok(c) = q.counts().await {
                self.hub
                    .send(json!({"type": "queue_stats", "queue": name, "stats": c}));
                sent += 1;
            }
            if let Ok(n) = q.dlq().count().await {
                self.hub
                    .send(json!({"type": "dlq_stats", "queue": name, "count": n}));
            }
        }
        Ok(BeatReport { queues: sent })
    }
}
