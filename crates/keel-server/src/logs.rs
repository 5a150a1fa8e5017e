//! Audit and access entries written with group commit: each request hands its entry to one
//! writer task and waits until the transaction holding it has committed, so an answered
//! mutation is always in the audit log, while concurrent requests share transactions
//! (up to 500 entries each) instead of queueing for pool connections one insert at a time.

use std::sync::Arc;
use std::time::Duration;

use keel::{Cache, Error, Result};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use keel_records::{NewAccess, NewAudit, RecordStore};

/// Default most entries one transaction holds.
pub const DEFAULT_BATCH: usize = 500;
/// Default batches committing at once: a commit waits for the WAL flush, so two in flight
/// keep the flushes overlapping; more only split the load into smaller batches (each batch
/// has a fixed cost) and wait for the store's two COPY connections anyway.
pub const DEFAULT_IN_FLIGHT: usize = 2;
/// Default entries waiting for the writer before requests wait to hand theirs over.
pub const DEFAULT_QUEUE: usize = 10_000;

/// The log writer's settings (the shape of every background service: named defaults and
/// `validate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogWriterConfig {
    /// Most entries per transaction.
    pub batch: usize,
    /// Batches committing at once.
    pub in_flight: usize,
    /// Entries waiting for the writer.
    pub queue: usize,
}

impl Default for LogWriterConfig {
    fn default() -> Self {
        LogWriterConfig {
            batch: DEFAULT_BATCH,
            in_flight: DEFAULT_IN_FLIGHT,
            queue: DEFAULT_QUEUE,
        }
    }
}

impl LogWriterConfig {
    /// Checks the settings; errors name the field.
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("logs.batch", self.batch),
            ("logs.in_flight", self.in_flight),
            ("logs.queue", self.queue),
        ] {
            if v == 0 {
                return Err(Error::invalid(field, "must be at least 1"));
            }
        }
        Ok(())
    }
}

/// An entry to write.
pub enum LogEntry {
    /// An audit entry.
    Audit(NewAudit),
    /// A data-access entry.
    Access(NewAccess),
}

impl LogEntry {
    /// The entry with NUL characters replaced by U+FFFD: neither PostgreSQL text nor JSONB
    /// can hold them, and an entry that cannot be written would let its request escape the
    /// trail.
    fn without_nul(self) -> LogEntry {
        fn text(s: String) -> String {
            if s.contains('\0') {
                s.replace('\0', "\u{FFFD}")
            } else {
                s
            }
        }
        fn value(v: serde_json::Value) -> serde_json::Value {
            use serde_json::Value;
            match v {
                Value::String(s) => Value::String(text(s)),
                Value::Array(a) => Value::Array(a.into_iter().map(value).collect()),
                Value::Object(m) => {
                    Value::Object(m.into_iter().map(|(k, v)| (text(k), value(v))).collect())
                }
                other => other,
            }
        }
        match self {
            LogEntry::Audit(mut a) => {
                a.actor = text(a.actor);
                a.action = text(a.action);
                a.resource = text(a.resource);
                a.user_agent = a.user_agent.map(text);
                a.payload = a.payload.map(value);
                LogEntry::Audit(a)
            }
            LogEntry::Access(mut a) => {
                a.actor = text(a.actor);
                a.action = text(a.action);
                a.resource = text(a.resource);
                a.user_agent = a.user_agent.map(text);
                a.fields = a.fields.into_iter().map(text).collect();
                LogEntry::Access(a)
            }
        }
    }
}

struct Item {
    entry: LogEntry,
    ack: oneshot::Sender<std::result::Result<(), String>>,
}

async fn commit(store: &dyn RecordStore, cache: Option<&Cache>, items: Vec<Item>) {
    let mut audit = Vec::new();
    let mut access = Vec::new();
    let mut acks = Vec::with_capacity(items.len());
    for i in items {
        match i.entry {
            LogEntry::Audit(a) => audit.push(a),
            LogEntry::Access(a) => access.push(a),
        }
        acks.push(i.ack);
    }
    let mut result = store.record_logs(&audit, &access).await;
    if result.is_err() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        result = store.record_logs(&audit, &access).await;
    }
    // Audit pages are cached: a committed batch drops them before anyone is answered, so a
    // caller reads its own entry. Access pages are never cached, so an access-only batch
    // costs no round trip.
    if result.is_ok() && !audit.is_empty() {
        if let Some(c) = cache {
            let _ = c.invalidate_tags(&[crate::tags::AUDIT]).await;
        }
    }
    let outcome = result.map_err(|e| e.to_string());
    for ack in acks {
        let _ = ack.send(outcome.clone());
    }
}

/// Hands entries to the writer. Cheap to clone.
#[derive(Clone)]
pub struct LogWriter {
    tx: mpsc::Sender<Item>,
}

impl LogWriter {
    /// Starts the writer; after each committed batch it invalidates the cached log pages.
    pub fn start(
        store: Arc<dyn RecordStore>,
        cache: Option<Cache>,
        config: LogWriterConfig,
    ) -> (LogWriter, JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Item>(config.queue.max(1));
        let (batch, in_flight) = (config.batch.max(1), config.in_flight.max(1));
        let task = tokio::spawn(async move {
            let permits = Arc::new(tokio::sync::Semaphore::new(in_flight));
            while let Some(first) = rx.recv().await {
                let mut items = vec![first];
                while items.len() < batch {
                    match rx.try_recv() {
                        Ok(i) => items.push(i),
                        Err(_) => break,
                    }
                }
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let (store, cache) = (store.clone(), cache.clone());
                tokio::spawn(async move {
                    commit(&*store, cache.as_ref(), items).await;
                    drop(permit);
                });
            }
            // Wait for the batches still committing.
            let _ = permits.acquire_many(in_flight as u32).await;
        });
        (LogWriter { tx }, task)
    }

    /// Writes `entry`; returns once it is committed.
    pub async fn write(&self, entry: LogEntry) -> Result<()> {
        let entry = entry.without_nul();
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Item { entry, ack })
            .await
            .map_err(|_| Error::Backend("the log writer has stopped".into()))?;
        done.await
            .map_err(|_| Error::Backend("the log writer has stopped".into()))?
            .map_err(Error::Backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_have_defaults_and_are_checked() {
        assert!(LogWriterConfig::default().validate().is_ok());
        let e = LogWriterConfig {
            in_flight: 0,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.field(), Some("logs.in_flight"));
        assert!(crate::runs::RunRecorderConfig::default().validate().is_ok());
        let e = crate::runs::RunRecorderConfig::with_capacity(0)
            .validate()
            .unwrap_err();
        assert_eq!(e.field(), Some("runs.buffer"));
    }
}
