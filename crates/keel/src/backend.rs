//! Choosing and holding a storage tier.

use std::sync::Arc;
use std::time::Duration;

use keel_core::{BackendKind, QueueBackend, Result};
pub use keel_redis::RedisSettings;

/// Default bound on one producer or admin call to Redis (see `RedisSettings::command_timeout`).
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// A cheap-clone handle to the storage tier every [`crate::Queue`] and [`crate::Worker`] of a
/// process shares.
#[derive(Clone)]
pub struct Backend {
    inner: Arc<dyn QueueBackend>,
}

impl Backend {
    /// The in-process memory backend: zero setup, one process, nothing survives a restart.
    pub fn memory() -> Backend {
        Backend {
            inner: Arc::new(keel_memory::MemoryBackend::new()),
        }
    }

    /// Connects to Redis. Fails with `backend-unavailable` when Redis cannot be reached within
    /// `settings.command_timeout`.
    pub async fn redis(settings: RedisSettings) -> Result<Backend> {
        Ok(Backend {
            inner: Arc::new(keel_redis::RedisBackend::connect(settings).await?),
        })
    }

    /// Wraps any implementation of the backend contract.
    pub fn from_arc(inner: Arc<dyn QueueBackend>) -> Backend {
        Backend { inner }
    }

    /// Which tier this is.
    pub fn kind(&self) -> BackendKind {
        self.inner.kind()
    }

    /// The backend contract, for the layers built on it.
    pub fn raw(&self) -> &Arc<dyn QueueBackend> {
        &self.inner
    }

    /// Round trip to the backend.
    pub async fn ping(&self) -> Result<Duration> {
        self.inner.ping().await
    }

    /// Queues known to the backend, sorted.
    pub async fn queue_names(&self) -> Result<Vec<String>> {
        self.inner.queue_names().await
    }

    /// Worker processes whose heartbeat is live.
    pub async fn live_workers(&self) -> Result<Vec<serde_json::Value>> {
        self.inner.live_workers().await
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("kind", &self.kind())
            .finish()
    }
}
