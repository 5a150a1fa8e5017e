//! Choosing and holding a storage tier.

use std::sync::Arc;
use std::time::Duration;

use keel_core::{BackendKind, KvBackend, QueueBackend, Result};

use crate::keys::Keys;
pub use keel_redis::RedisSettings;

/// Default bound on one producer or admin call to Redis (see `RedisSettings::command_timeout`).
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// A cheap-clone handle to the storage tier every [`crate::Queue`] and [`crate::Worker`] of a
/// process shares.
#[derive(Clone)]
pub struct Backend {
    inner: Arc<dyn QueueBackend>,
    kv: Arc<dyn KvBackend>,
    keys: Keys,
}

impl Backend {
    /// The in-process memory backend: zero setup, one process, nothing survives a restart.
    pub fn memory() -> Backend {
        Backend {
            inner: Arc::new(keel_memory::MemoryBackend::new()),
            kv: Arc::new(keel_memory::MemoryKv::new()),
            keys: Keys::default(),
        }
    }

    /// Connects to Redis. Fails with `backend-unavailable` when Redis cannot be reached within
    /// `settings.command_timeout`.
    pub async fn redis(settings: RedisSettings) -> Result<Backend> {
        let redis = Arc::new(keel_redis::RedisBackend::connect(settings).await?);
        Ok(Backend {
            inner: redis.clone(),
            kv: redis,
            keys: Keys::default(),
        })
    }

    /// Connects to Redis with Keel's own queue engine for every queue (`keel-native`); the
    /// toolkit runs on the same Redis as with [`Backend::redis`].
    pub async fn native(settings: RedisSettings) -> Result<Backend> {
        Backend::redis_engines(settings, crate::engines::Engine::Keel, Default::default()).await
    }

    /// Connects to Redis with every queue on `default`'s engine but `others`, which run on the
    /// other one.
    pub async fn redis_engines(
        settings: RedisSettings,
        default: crate::engines::Engine,
        others: std::collections::BTreeSet<String>,
    ) -> Result<Backend> {
        Backend::redis_engines_partitioned(settings, default, others, Default::default()).await
    }

    /// As [`Backend::redis_engines`], with each queue of `partitions` (all on Keel's engine)
    /// spread over so many partitions: the partitions are queues of Keel's engine, each call
    /// reaching them by the queue's own name first (so its engine is chosen by that name).
    pub async fn redis_engines_partitioned(
        settings: RedisSettings,
        default: crate::engines::Engine,
        others: std::collections::BTreeSet<String>,
        partitions: std::collections::BTreeMap<String, u32>,
    ) -> Result<Backend> {
        let mut native: Arc<dyn QueueBackend> = Arc::new(
            keel_native::NativeEngine::connect(
                &settings.url,
                &settings.prefix,
                settings.command_timeout,
            )
            .await?,
        );
        if partitions.values().any(|n| *n > 1) {
            native = Arc::new(crate::partitions::Partitioned::new(native, partitions));
        }
        let redis = Arc::new(keel_redis::RedisBackend::connect(settings).await?);
        Ok(Backend {
            inner: Arc::new(crate::engines::Routed::new(
                redis.clone(),
                native,
                default,
                others,
            )),
            kv: redis,
            keys: Keys::default(),
        })
    }

    /// Wraps any implementation of the two backend contracts.
    pub fn from_parts(inner: Arc<dyn QueueBackend>, kv: Arc<dyn KvBackend>) -> Backend {
        Backend {
            inner,
            kv,
            keys: Keys::default(),
        }
    }

    /// The same backend with each queue of `partitions` spread over so many partitions
    /// ([`crate::partitions`]); a count of 1 is no partitioning. For a backend of one engine
    /// (memory, [`Backend::native`], [`Backend::redis`]); queues on both Redis engines take
    /// their partitions through [`Backend::redis_engines_partitioned`], which partitions below
    /// the choice of engine.
    pub fn with_partitions(
        mut self,
        partitions: std::collections::BTreeMap<String, u32>,
    ) -> Backend {
        if partitions.values().any(|n| *n > 1) {
            self.inner = Arc::new(crate::partitions::Partitioned::new(self.inner, partitions));
        }
        self
    }

    /// The same backend with every queue but dead-letter queues spread over `n` partitions
    /// (the conformance suite runs so).
    pub fn with_every_queue_partitioned(mut self, n: u32) -> Backend {
        self.inner = Arc::new(crate::partitions::Partitioned::every(self.inner, n));
        self
    }

    /// The same backend with the toolkit keys in another key space (`prefix:env:…`).
    pub fn with_keys(mut self, keys: Keys) -> Backend {
        self.keys = keys;
        self
    }

    /// The toolkit key space.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The toolkit contract, for the layers built on it.
    pub fn kv(&self) -> &Arc<dyn KvBackend> {
        &self.kv
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
            .field("keys", &self.keys)
            .finish()
    }
}
