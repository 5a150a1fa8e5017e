//! Coalesced cache invalidation: a change hands its tags to one task and waits for the next
//! flush that *starts after* it asked, so its own invalidation always follows its write; one
//! flush (one `UNLINK` of the tags' generation keys) serves every change that asked while
//! the previous flush ran. Under load, concurrent enqueues into a queue share one round trip
//! instead of making one each.

use std::collections::BTreeSet;

use keel::Cache;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Most changes one flush serves.
pub const MAX_FLUSH: usize = 1000;

struct Ask {
    tags: Vec<String>,
    done: oneshot::Sender<()>,
}

/// Hands tags to the flusher. Cheap to clone.
#[derive(Clone)]
pub struct Invalidator {
    tx: mpsc::UnboundedSender<Ask>,
}

/// What one flush did (for tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Changes served.
    pub asks: usize,
    /// Distinct tags invalidated.
    pub tags: usize,
    /// Whether the backend refused it (the entries then expire by their TTL).
    pub failed: bool,
}

async fn flush(cache: &Cache, asks: Vec<Ask>) -> FlushReport {
    let tags: BTreeSet<String> = asks.iter().flat_map(|a| a.tags.iter().cloned()).collect();
    let list: Vec<&str> = tags.iter().map(String::as_str).collect();
    let failed = match cache.invalidate_tags(&list).await {
        Ok(()) => false,
        Err(e) => {
            tracing::warn!(error = %e, tags = ?list, "owner cache invalidation failed");
            true
        }
    };
    let report = FlushReport {
        asks: asks.len(),
        tags: tags.len(),
        failed,
    };
    for a in asks {
        let _ = a.done.send(());
    }
    report
}

impl Invalidator {
    /// Starts the flusher over `cache`.
    pub fn start(cache: Cache) -> (Invalidator, JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Ask>();
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut asks = vec![first];
                while asks.len() < MAX_FLUSH {
                    match rx.try_recv() {
                        Ok(a) => asks.push(a),
                        Err(_) => break,
                    }
                }
                flush(&cache, asks).await;
            }
        });
        (Invalidator { tx }, task)
    }

    /// Invalidates `tags`; returns once a flush that started after this call has run.
    pub async fn invalidate(&self, tags: &[&str]) {
        let (done, wait) = oneshot::channel();
        let ask = Ask {
            tags: tags.iter().map(|t| t.to_string()).collect(),
            done,
        };
        if self.tx.send(ask).is_ok() {
            let _ = wait.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel::{Backend, Write};
    use std::time::Duration;

    #[tokio::test]
    async fn one_flush_serves_the_changes_that_asked_meanwhile() {
        let cache = Cache::new(&Backend::memory(), "t").unwrap();
        for (key, tag) in [("a", "qa"), ("b", "qb"), ("c", "qc")] {
            let write = Write {
                ttl: Some(Duration::from_secs(60)),
                tags: &[tag],
            };
            cache.set(key, &1, write).await.unwrap();
        }
        let (done_a, _) = oneshot::channel();
        let (done_b, _) = oneshot::channel();
        let asks = vec![
            Ask {
                tags: vec!["qa".into()],
                done: done_a,
            },
            Ask {
                tags: vec!["qa".into(), "qb".into()],
                done: done_b,
            },
        ];
        let r = flush(&cache, asks).await;
        assert_eq!(
            r,
            FlushReport {
                asks: 2,
                tags: 2,
                failed: false
            }
        );
        assert_eq!(cache.get::<i32>("a").await.unwrap(), None);
        assert_eq!(cache.get::<i32>("b").await.unwrap(), None);
        assert_eq!(
            cache.get::<i32>("c").await.unwrap(),
            Some(1),
            "other tags stay"
        );
        // Through the task: the answer comes after the invalidation.
        let (inv, _task) = Invalidator::start(cache.clone());
        inv.invalidate(&["qc"]).await;
        assert_eq!(cache.get::<i32>("c").await.unwrap(), None);
    }
}
