//! The step writer: every workflow write of a process goes through one task that commits them
//! in batches (group commit). A caller that must know the outcome before it goes on (a step
//! completing: its successors are enqueued from the answer, and only then is its job
//! acknowledged) waits for its batch; progress reports (an attempt started, a job enqueued) are
//! handed over without waiting. While one batch is being committed the next one gathers, so the
//! batch grows with the load and a step costs a fraction of a transaction.
//!
//! Writes are spread over a few writer tasks by instance id (every write of one instance goes
//! to the same task, in order), so transactions of different instances commit side by side.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_records::workflow::{Settled, WorkflowWrite};
use keel_records::{StoreError, WorkflowStore};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Default most writes per transaction.
pub const DEFAULT_BATCH: usize = 500;
/// Default writes waiting for the writer before progress reports are dropped (and counted).
pub const DEFAULT_CAPACITY: usize = 20_000;
/// Default writer tasks (transactions committing at once). Two: one batch commits while the
/// other gathers, and each batch is as large as the load makes it — a transaction costs the
/// database more than the rows in it (`keel bench --scenario workflow --engine keel
/// --concurrency 200` on 2 cores: 2487 and 2532 instances/s with 2, 2380 and 2205 with 4).
pub const DEFAULT_SHARDS: usize = 2;
/// How long a failed batch waits before its one retry.
const RETRY_AFTER: Duration = Duration::from_millis(200);

type Reply = oneshot::Sender<Result<Settled, StoreError>>;

struct Msg {
    write: WorkflowWrite,
    reply: Option<Reply>,
}

/// Counts of the writer.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Writes committed.
    pub written: AtomicU64,
    /// Transactions committed.
    pub batches: AtomicU64,
    /// Progress reports dropped because the buffer was full.
    pub dropped: AtomicU64,
    /// Writes lost to database errors (waiting callers were told).
    pub failed: AtomicU64,
}

/// Hands writes to the writer task. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    shards: Arc<Vec<mpsc::Sender<Msg>>>,
    stats: Arc<WriterStats>,
}

/// Called with every batch's outcome after it commits (realtime events).
pub type OnSettled = Arc<dyn Fn(&[Settled]) + Send + Sync>;

impl Writer {
    /// Starts `shards` writer tasks over `store`; the handle ends when they all have.
    pub fn start(
        store: Arc<dyn WorkflowStore>,
        batch: usize,
        capacity: usize,
        shards: usize,
        on_settled: OnSettled,
    ) -> (Writer, JoinHandle<()>) {
        let stats = Arc::new(WriterStats::default());
        let shards = shards.max(1);
        let mut senders = Vec::with_capacity(shards);
        let mut tasks = Vec::with_capacity(shards);
        for _ in 0..shards {
            let (tx, mut rx) = mpsc::channel::<Msg>((capacity / shards).max(1));
            senders.push(tx);
            let (store, s, on_settled) = (store.clone(), stats.clone(), on_settled.clone());
            tasks.push(tokio::spawn(async move {
                let mut msgs = Vec::with_capacity(batch);
                while let Some(first) = rx.recv().await {
                    msgs.push(first);
                    while msgs.len() < batch {
                        match rx.try_recv() {
                            Ok(m) => msgs.push(m),
                            Err(_) => break,
                        }
                    }
                    commit(&*store, &mut msgs, &s, &on_settled).await;
                }
            }));
        }
        let task = tokio::spawn(async move {
            for t in tasks {
                let _ = t.await;
            }
        });
        (
            Writer {
                shards: Arc::new(senders),
                stats,
            },
            task,
        )
    }

    fn shard(&self, write: &WorkflowWrite) -> &mpsc::Sender<Msg> {
        let id = write.instance_id();
        // FNV-1a: stable, and ids are random or hashes already.
        let h = id.bytes().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        });
        &self.shards[(h % self.shards.len() as u64) as usize]
    }

    /// Writes and waits for the commit; the answer is the instance after the write.
    pub async fn write(&self, write: WorkflowWrite) -> Result<Settled, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.shard(&write)
            .clone()
            .send(Msg {
                write,
                reply: Some(reply),
            })
            .await
            .map_err(|_| StoreError::Unavailable("the workflow writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the workflow writer has stopped".into()))?
    }

    /// Hands a progress report over without waiting; dropped (counted) when the buffer is full.
    pub fn report(&self, write: WorkflowWrite) {
        if self
            .shard(&write)
            .try_send(Msg { write, reply: None })
            .is_err()
        {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The writer's counts.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }
}

async fn commit(
    store: &dyn WorkflowStore,
    msgs: &mut Vec<Msg>,
    stats: &WriterStats,
    on_settled: &OnSettled,
) {
    let writes: Vec<WorkflowWrite> = msgs.iter().map(|m| m.write.clone()).collect();
    let mut result = store.write_workflows(&writes).await;
    if result.is_err() {
        // A deadlock victim or a dropped connection: once more, then give up on this batch.
        tokio::time::sleep(RETRY_AFTER).await;
        result = store.write_workflows(&writes).await;
    }
    match result {
        Ok(settled) => {
            stats
                .written
                .fetch_add(msgs.len() as u64, Ordering::Relaxed);
            stats.batches.fetch_add(1, Ordering::Relaxed);
            on_settled(&settled);
            let by_id: HashMap<&str, &Settled> = settled
                .iter()
                .map(|s| (s.state.instance.id.as_str(), s))
                .collect();
            for m in msgs.drain(..) {
                if let Some(reply) = m.reply {
                    let answer = by_id
                        .get(m.write.instance_id())
                        .map(|s| (*s).clone())
                        .ok_or_else(|| {
                            StoreError::NotFound(format!(
                                "workflow instance {}",
                                m.write.instance_id()
                            ))
                        });
                    let _ = reply.send(answer);
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, writes = msgs.len(), "workflow writes failed");
            stats.failed.fetch_add(msgs.len() as u64, Ordering::Relaxed);
            for m in msgs.drain(..) {
                if let Some(reply) = m.reply {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
