//! The worker's run loop: up to [`IN_FLIGHT`] `cycle.lua` calls at a time.
//!
//! With one call in flight, Redis and the worker take turns: Redis runs a cycle while the
//! worker waits, then the worker runs the jobs while Redis waits. With two, each asking for at
//! most half the slots, the worker runs one batch's jobs while Redis runs the other batch's
//! cycle. Replies come back in the order the calls were sent (one connection), so the last
//! reply is the queue's latest news (empty, rate limited, more jobs).
//!
//! A cycle is sent when a slot is free and it is worth a round trip:
//! - the last reply took jobs (there may be more) and no call is in flight, or
//! - at least a batch's worth of slots are free or acknowledgements wait — a quarter of the
//!   slots when no call is in flight, half of them when one is — or
//! - a finished job or a free slot has waited [`ACK_WINDOW`] for others to share its trip, or
//! - the worker is stopping and acknowledgements wait.
//!
//! When a cycle takes nothing the loop is idle: it asks again when an add wakes it (it blocks
//! on the queue's `notify` list on a connection of its own), when a job finishes, when the next
//! delayed job is due, or after [`IDLE_WAIT`]. A rate-limited reply stops taking until the
//! window turns; a failed call puts its acknowledgements back and waits a second.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use keel_core::backend::WorkerEvent;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::worker::{cycle, process, Ack, Cycle, Shared, ACK_WINDOW, MAX_ACKS};
use crate::{NativeEngine, IDLE_WAIT};

/// Most `cycle` calls of one worker in flight at a time.
pub const IN_FLIGHT: usize = 2;

/// A cycle call in flight: the acknowledgements it carries, the slots it asked for, its answer.
type InFlight = BoxFuture<'static, (Vec<Ack>, usize, keel_core::Result<Cycle>)>;

/// Waits on the queue's `notify` list for up to [`IDLE_WAIT`]; after an error (Redis away or
/// restarted) it waits a little and opens a new connection.
fn wake(
    engine: NativeEngine,
    mut conn: keel_redis::conn::Conn,
    key: String,
) -> BoxFuture<'static, keel_redis::conn::Conn> {
    async move {
        let r: redis::RedisResult<Option<(String, String)>> = redis::cmd("BLPOP")
            .arg(&key)
            .arg(IDLE_WAIT.as_secs_f64())
            .query_async(&mut conn)
            .await;
        if r.is_err() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Ok(fresh) = engine.dedicated().await {
                conn = fresh;
            }
        }
        conn
    }
    .boxed()
}

/// The loop's state between events.
struct Loop {
    s: Arc<Shared>,
    pending: Vec<Ack>,
    /// Jobs running here.
    running: usize,
    /// Slots asked for by the calls in flight.
    asked: usize,
    in_flight: FuturesUnordered<InFlight>,
    stopping: bool,
    /// Since when a finished job or a freed slot waits for a cycle.
    gathering: Option<Instant>,
    /// The last reply took jobs: the queue may hold more.
    more: bool,
    /// The last reply took none: ask again when woken, or at this time.
    idle_until: Option<Instant>,
    /// Rate limited: take nothing before this time.
    limited_until: Option<Instant>,
    /// A call failed: send none before this time.
    retry_at: Option<Instant>,
}

impl Loop {
    fn finished(&mut self, a: Ack) {
        self.running -= 1;
        self.pending.push(a);
        self.gathering.get_or_insert_with(Instant::now);
        // A freed slot is worth asking with, even when the queue looked empty.
        self.idle_until = None;
    }

    /// Slots a new cycle may ask for now.
    fn want(&self, now: Instant) -> usize {
        let concurrency = self.s.opts.concurrency;
        if self.stopping || self.idle_until.is_some() || self.limited_until.is_some_and(|t| t > now)
        {
            return 0;
        }
        (concurrency - self.running - self.asked).min(concurrency.div_ceil(IN_FLIGHT))
    }

    /// Whether to send a cycle now, and for how many slots.
    fn send_now(&self, now: Instant) -> Option<usize> {
        if self.in_flight.len() >= IN_FLIGHT || self.retry_at.is_some_and(|t| t > now) {
            return None;
        }
        let want = self.want(now);
        let concurrency = self.s.opts.concurrency;
        let batch = if self.in_flight.is_empty() {
            (concurrency / 4).max(1)
        } else {
            concurrency.div_ceil(IN_FLIGHT)
        };
        let waited = self.gathering.is_some_and(|t| now >= t + ACK_WINDOW);
        let worth = (self.more && self.in_flight.is_empty() && want > 0)
            || want >= batch
            || self.pending.len() >= batch
            || (waited && (want > 0 || !self.pending.is_empty()))
            || (self.stopping && !self.pending.is_empty());
        worth.then_some(want)
    }

    fn send(&mut self, want: usize) {
        let n = self.pending.len().min(MAX_ACKS);
        let batch: Vec<Ack> = self.pending.drain(..n).collect();
        if self.pending.is_empty() {
            self.gathering = None;
        }
        self.more = false;
        self.asked += want;
        let s = self.s.clone();
        self.in_flight.push(
            async move {
                let reply = cycle(&s, &batch, want).await;
                (batch, want, reply)
            }
            .boxed(),
        );
    }

    /// The earliest time the loop must look again without any other event.
    /// (A gathering window already over is not one: the loop sent what it could, and a reply
    /// or a finished job is what lets it send more.)
    fn next_timer(&self, now: Instant) -> Option<Instant> {
        [
            self.gathering.map(|t| t + ACK_WINDOW).filter(|t| *t > now),
            self.idle_until,
            self.limited_until,
            self.retry_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

pub(crate) async fn run(
    s: Arc<Shared>,
    blocker: keel_redis::conn::Conn,
    mut stop: watch::Receiver<bool>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Ack>();
    let mut tasks = JoinSet::new();
    let mut idle_conn = Some(blocker);
    let mut waking: Option<BoxFuture<'static, keel_redis::conn::Conn>> = None;
    let mut l = Loop {
        s: s.clone(),
        pending: Vec::new(),
        running: 0,
        asked: 0,
        in_flight: FuturesUnordered::new(),
        stopping: false,
        gathering: None,
        more: true,
        idle_until: None,
        limited_until: None,
        retry_at: None,
    };
    loop {
        while let Ok(a) = rx.try_recv() {
            l.finished(a);
        }
        while tasks.try_join_next().is_some() {}
        l.stopping |= *stop.borrow();
        if l.stopping && l.running == 0 && l.pending.is_empty() && l.in_flight.is_empty() {
            return;
        }
        let now = Instant::now();
        if l.limited_until.is_some_and(|t| t <= now) {
            l.limited_until = None;
            l.more = true;
        }
        if l.idle_until.is_some_and(|t| t <= now) {
            l.idle_until = None;
            l.more = true;
        }
        if l.retry_at.is_some_and(|t| t <= now) {
            l.retry_at = None;
            l.more = true;
        }
        if let Some(want) = l.send_now(now) {
            l.send(want);
            continue;
        }
        if l.idle_until.is_some() && waking.is_none() {
            if let Some(conn) = idle_conn.take() {
                waking = Some(wake(s.engine.clone(), conn, s.keys.k("notify")));
            }
        }
        let timer = l.next_timer(now);
        tokio::select! {
            a = rx.recv() => if let Some(a) = a { l.finished(a) },
            Some((batch, want, reply)) = l.in_flight.next(), if !l.in_flight.is_empty() => {
                l.asked -= want;
                match reply {
                    Ok(reply) => {
                        applied(&s, batch);
                        take(&mut l, &tx, &mut tasks, reply, want);
                    }
                    Err(e) => {
                        (s.sink)(WorkerEvent::Error { message: e.to_string() });
                        l.pending.splice(0..0, batch);
                        l.gathering.get_or_insert_with(Instant::now);
                        l.retry_at = Some(Instant::now() + Duration::from_secs(1));
                    }
                }
            }
            conn = async { waking.as_mut().expect("guarded").await }, if waking.is_some() => {
                idle_conn = Some(conn);
                waking = None;
                if l.idle_until.is_some() {
                    l.idle_until = None;
                    l.more = true;
                }
            }
            _ = async { tokio::time::sleep_until(timer.expect("guarded")).await }, if timer.is_some() => {}
            r = stop.changed(), if !l.stopping => { let _ = r; l.stopping = true; }
        }
    }
}

/// The acknowledgements of a cycle are applied: their leases are no longer renewed (a job
/// taken again under a newer lease keeps that one) and their events go out.
fn applied(s: &Shared, batch: Vec<Ack>) {
    {
        let mut leased = s.leased.lock().expect("not poisoned");
        for a in &batch {
            if leased.get(&a.id) == Some(&a.lease) {
                leased.remove(&a.id);
            }
        }
    }
    for a in batch {
        if let Some(e) = a.event {
            (s.sink)(e);
        }
    }
}

/// Starts the jobs a cycle took and notes what its reply says of the queue.
fn take(
    l: &mut Loop,
    tx: &mpsc::UnboundedSender<Ack>,
    tasks: &mut JoinSet<()>,
    reply: Cycle,
    want: usize,
) {
    if !reply.unreadable.is_empty() {
        l.pending.extend(reply.unreadable);
        l.gathering.get_or_insert_with(Instant::now);
    }
    let took = !reply.jobs.is_empty();
    for taken in reply.jobs {
        l.running += 1;
        l.s.leased
            .lock()
            .expect("not poisoned")
            .insert(taken.job.id.clone(), taken.lease.clone());
        tasks.spawn(process(l.s.clone(), taken, tx.clone()));
    }
    let now = Instant::now();
    if let Some(wait) = reply.limited {
        l.limited_until = Some(now + wait);
        l.more = false;
    } else if took {
        l.more = true;
        l.idle_until = None;
    } else if want > 0 {
        // Nothing to take: look again when woken or when the next delayed job is due.
        let pause = reply
            .next_delayed
            .map(|at| Duration::from_millis(at.saturating_sub(keel_core::now_ms())))
            .unwrap_or(IDLE_WAIT)
            .clamp(Duration::from_millis(1), IDLE_WAIT);
        l.idle_until = Some(now + pause);
        l.more = false;
    }
}
