//! Realtime: `GET /api/owner/realtime` (WebSocket, token in `Authorization` or `?token=`, or
//! the console's session cookie from a same-origin page).
//!
//! On connect the client gets `{"type":"snapshot","queues":[…]}`; then events:
//! `job_status` (attempts finished by any `keel serve` worker, at most 200 per second per
//! instance), `queue_stats` and
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

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use keel::config::Config;
use keel::{Backend, Events};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::app::AppState;
use crate::error::ApiError;
use keel_records::{NewRun, Role, Scope};

const CONNECTION_BUFFER: usize = 256;

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
        let cache = crate::app::AppState::owner_cache(backend)?;
        let (rt2, backend, config) = (rt.clone(), backend.clone(), config.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let queues: Vec<String> = {
                    let mut p = rt2.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
                    std::mem::take(&mut *p).into_iter().collect()
                };
                if !queues.is_empty() {
                    let mut tags: Vec<String> =
                        queues.iter().map(|q| crate::tags::queue(q)).collect();
                    tags.push(crate::tags::QUEUES.into());
                    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
                    if let Err(e) = cache.invalidate_tags(&tags).await {
                        tracing::debug!(error = %e, "owner cache not invalidated");
                    }
                }
                for name in queues {
                    let Ok(q) = config.queue(&backend, &name) else {
                        continue;
                    };
                    if let Ok(c) = q.counts().await {
                        rt2.send(json!({"type": "queue_stats", "queue": name, "stats": c}));
                    }
                    if let Ok(n) = q.dlq().count().await {
                        rt2.send(json!({"type": "dlq_stats", "queue": name, "count": n}));
                    }
                }
            }
        }));
        Ok((rt, tasks))
    }

    fn send(&self, v: Value) {
        let _ = self.inner.out.try_send(v);
    }

    /// Something changed in `queue`: its stats go out within a second.
    pub fn queue_changed(&self, queue: &str) {
        let mut p = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.insert(queue.to_string());
    }

    /// An attempt finished. At most [`JOB_EVENTS_PER_SECOND`] of these go out per second and
    /// instance; past that only the queue's stats do (a UI cannot show more anyway).
    pub fn job_status(&self, run: &NewRun) {
        self.queue_changed(&run.queue);
        {
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
                return;
            }
            n.1 += 1;
        }
        self.send(json!({
            "type": "job_status", "queue": run.queue, "job_id": run.job_id, "name": run.name,
            "status": run.status, "attempt": run.attempt, "error": run.error,
        }));
    }

    /// How many revocations this instance has heard of; a token cached before the latest one
    /// is read again.
    pub fn revocation_epoch(&self) -> u64 {
        self.inner
            .revocations
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Value>> {
        self.inner.local.subscribe()
    }
}

/// `GET /api/owner/realtime`.
pub async fn socket(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let secret = crate::app::bearer_in(&headers)
        .map(str::to_string)
        .or_else(|| q.get("token").cloned());
    let token = match secret {
        // The same cached, revocation-aware check as every owner route.
        Some(secret) => match state.authenticate(&secret).await {
            Ok(t) => t,
            Err(e) => return e.into_response(),
        },
        // The console's pages: the session cookie (same origin only).
        None => match crate::console::session_token(&state, &headers).await {
            Some(t) => t,
            None => {
                return ApiError::unauthorized(
                    "send Authorization: Bearer <token> or ?token=, or sign in to the console",
                )
                .into_response()
            }
        },
    };
    if token.role < Role::Viewer {
        return ApiError::forbidden("needs the viewer role").into_response();
    }
    let scope = token.scope();
    let token_id = token.id;
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            return ApiError::new(
                crate::error::ErrorCode::UpgradeRequired,
                format!("this is a WebSocket endpoint: {e}"),
            )
            .into_response()
        }
    };
    ws.on_upgrade(move |socket| serve_socket(state, scope, token_id, socket))
}

async fn close_revoked(socket: &mut WebSocket) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: 1008,
            reason: "token revoked".into(),
        })))
        .await;
}

async fn serve_socket(state: AppState, scope: Scope, token_id: String, mut socket: WebSocket) {
    let mut rx = state.realtime.subscribe();
    let snapshot = match crate::owner::all_stats(&state, &scope).await {
        Ok(v) => json!({"type": "snapshot", "queues": v}),
        Err(e) => json!({"type": "error", "message": e.message}),
    };
    if socket
        .send(Message::Text(snapshot.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    let mut recheck = tokio::time::interval(TOKEN_RECHECK);
    recheck.tick().await;
    loop {
        tokio::select! {
            _ = recheck.tick() => {
                if let Ok(None) = state.store.token_by_id(&token_id).await {
                    close_revoked(&mut socket).await;
                    return;
                }
            }
            ev = rx.recv() => match ev {
                Ok(v) => {
                    if v["type"] == "token_revoked" {
                        if v["token_id"] == token_id.as_str() {
                            close_revoked(&mut socket).await;
                            return;
                        }
                        continue;
                    }
                    let visible = v.get("queue").and_then(|q| q.as_str()).is_none_or(|q| state.can_see_queue(&scope, q));
                    if !visible {
                        continue;
                    }
                    let send = socket.send(Message::Text(v.to_string().into()));
                    match tokio::time::timeout(Duration::from_secs(5), send).await {
                        Ok(Ok(())) => {}
                        _ => return,
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::info!(skipped = n, "realtime client too slow; disconnecting");
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame { code: 1008, reason: "too slow: reconnect".into() })))
                        .await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
