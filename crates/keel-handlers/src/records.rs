//! What the handlers did, written off the hot path: each email or AI attempt is handed to a
//! bounded buffer (`try_send`, never waiting) and one task writes batches (up to 500 or every
//! 100 ms) in one transaction, then tells the observer (so a live view that reads again finds
//! the record). A full buffer drops the record and counts it; a failed write is retried once,
//! then logged and counted — the send itself is never repeated for a record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_records::messages::{NewAiRun, NewEmail};
use keel_records::MessageStore;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use crate::{HandlerEvent, Observer};

/// Records the buffer holds.
pub const CAPACITY: usize = 10_000;
/// Most records one transaction writes.
pub const BATCH: usize = 500;
/// Longest a record waits for its batch.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

pub(crate) enum Record {
    Email(NewEmail),
    Ai(NewAiRun),
    /// Answered once everything before it is written.
    Flush(oneshot::Sender<()>),
}

/// Counts of the writer.
#[derive(Debug, Default)]
pub struct RecordCounts {
    /// Written.
    pub written: AtomicU64,
    /// Dropped because the buffer was full.
    pub dropped: AtomicU64,
    /// Lost to a failed write.
    pub failed: AtomicU64,
}

pub(crate) struct RecordWriter {
    tx: mpsc::Sender<Record>,
    stop: Arc<Notify>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
    counts: Arc<RecordCounts>,
}

impl RecordWriter {
    pub(crate) fn start(store: Arc<dyn MessageStore>, observer: Option<Observer>) -> RecordWriter {
        let (tx, rx) = mpsc::channel(CAPACITY);
        let stop = Arc::new(Notify::new());
        let counts = Arc::new(RecordCounts::default());
        let task = tokio::spawn(run(store, observer, rx, stop.clone(), counts.clone()));
        RecordWriter {
            tx,
            stop,
            task: std::sync::Mutex::new(Some(task)),
            counts,
        }
    }

    pub(crate) fn submit(&self, r: Record) {
        if self.tx.try_send(r).is_err() {
            let n = self.counts.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "email/AI records dropped: the records buffer is full (the database is slow or down)");
            }
        }
    }

    /// Waits until what was submitted before is written (waits for room in a full buffer).
    pub(crate) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Record::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    pub(crate) fn counts(&self) -> &RecordCounts {
        &self.counts
    }

    /// Writes what is buffered and ends the task.
    pub(crate) async fn close(&self) {
        let task = self.task.lock().expect("not poisoned").take();
        if let Some(task) = task {
            self.stop.notify_one();
            let _ = task.await;
        }
    }
}

async fn run(
    store: Arc<dyn MessageStore>,
    observer: Option<Observer>,
    mut rx: mpsc::Receiver<Record>,
    stop: Arc<Notify>,
    counts: Arc<RecordCounts>,
) {
    let mut stopping = false;
    loop {
        let first = if stopping {
            rx.try_recv().ok()
        } else {
            tokio::select! {
                r = rx.recv() => r,
                _ = stop.notified() => { stopping = true; rx.try_recv().ok() }
            }
        };
        let Some(first) = first else {
            if stopping {
                return;
            }
            // Every sender is gone.
            return;
        };
        let mut batch = Vec::with_capacity(BATCH);
        batch.push(first);
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        // Whatever is waiting is taken at once (one wake-up, not one timer, per many records).
        while batch.len() < BATCH && !batch.iter().any(|r| matches!(r, Record::Flush(_))) {
            let room = BATCH - batch.len();
            let got = if stopping {
                let before = batch.len();
                batch.extend(std::iter::from_fn(|| rx.try_recv().ok()).take(room));
                batch.len() - before
            } else {
                tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room))
                    .await
                    .unwrap_or(0)
            };
            if got == 0 {
                break;
            }
        }
        write(&*store, observer.as_ref(), batch, &counts).await;
    }
}

async fn write(
    store: &dyn MessageStore,
    observer: Option<&Observer>,
    batch: Vec<Record>,
    counts: &RecordCounts,
) {
    let (mut emails, mut runs, mut flushed) = (Vec::new(), Vec::new(), Vec::new());
    for r in batch {
        match r {
            Record::Email(e) => emails.push(e),
            Record::Ai(a) => runs.push(a),
            Record::Flush(done) => flushed.push(done),
        }
    }
    let mut written = store.record_emails(&emails).await;
    if written.is_err() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        written = store.record_emails(&emails).await;
    }
    match written {
        Ok(()) => counts
            .written
            .fetch_add(emails.len() as u64, Ordering::Relaxed),
        Err(e) => {
            tracing::error!(error = %e, rows = emails.len(), "email logs lost");
            counts
                .failed
                .fetch_add(emails.len() as u64, Ordering::Relaxed)
        }
    };
    let mut ids = store.record_ai_runs(&runs).await;
    if ids.is_err() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        ids = store.record_ai_runs(&runs).await;
    }
    let ids = match ids {
        Ok(ids) => {
            counts
                .written
                .fetch_add(runs.len() as u64, Ordering::Relaxed);
            ids.into_iter().map(Some).collect()
        }
        Err(e) => {
            tracing::error!(error = %e, rows = runs.len(), "AI run records lost");
            counts
                .failed
                .fetch_add(runs.len() as u64, Ordering::Relaxed);
            vec![None; runs.len()]
        }
    };
    if let Some(o) = observer {
        let events: Vec<HandlerEvent> = emails
            .into_iter()
            .map(HandlerEvent::Email)
            .chain(
                runs.into_iter()
                    .zip(ids)
                    .map(|(r, id)| HandlerEvent::Ai(r, id)),
            )
            .collect();
        if !events.is_empty() {
            o(&events);
        }
    }
    for done in flushed {
        let _ = done.send(());
    }
}
