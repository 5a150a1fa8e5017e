//! The shared state every handler and operation reaches: the backend, the records, the
//! owner API's limiter and cache, the background services' handles, and the token cache.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel::config::Config;
use keel::{Backend, Cache, RateLimiter};
use keel_records::{ApiToken, RecordStore, Scope};

use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;
use crate::realtime::Realtime;
use crate::runs::RunRecorder;

/// How long an authenticated token is trusted without reading the store again (a revocation
/// anywhere ends it at once through the revocation epoch).
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(10);
/// Most tokens kept in the cache before it is emptied.
pub const TOKEN_CACHE_MAX: usize = 10_000;
/// How long the queue names read from the backend are trusted.
pub const KNOWN_QUEUES_TTL: Duration = Duration::from_secs(5);
/// How often, at most, an unknown queue name makes the names be read again.
pub const UNKNOWN_QUEUE_RECHECK: Duration = Duration::from_millis(500);

/// Everything a request handler reaches. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

/// The parts of [`AppState`].
pub struct Inner {
    /// The queue and toolkit backend.
    pub backend: Backend,
    /// The configuration.
    pub config: Config,
    /// `keel serve`'s own settings (`[server]`, `[database]`, `[runs]`).
    pub server: crate::config::ServerConfig,
    /// The records.
    pub store: Arc<dyn RecordStore>,
    /// The owner API rate limit (`owner-api` policy).
    pub limiter: RateLimiter,
    /// Response cache of owner GETs.
    pub cache: Cache,
    /// Coalesced invalidation of the owner cache's tags.
    pub invalidator: crate::invalidate::Invalidator,
    /// Queue → tenant id, for queues bound to a tenant.
    pub queue_tenants: HashMap<String, String>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Job-run recorder.
    pub runs: RunRecorder,
    /// Audit and access log writer (group commit).
    pub logs: crate::logs::LogWriter,
    /// Authenticated tokens by secret hash, for 10 s, with the revocation epoch they were
    /// read in: a revocation anywhere (announced through [`crate::realtime`]) makes every
    /// instance read tokens again at once.
    pub token_cache: std::sync::Mutex<HashMap<String, (ApiToken, Instant, u64)>>,
    /// Queue names found on the backend, and when they were last read.
    pub known_queues: std::sync::Mutex<(std::collections::HashSet<String>, Option<Instant>)>,
    /// Live events.
    pub realtime: Realtime,
    /// The workflow engine.
    pub workflows: keel_workflows::Engine,
    /// The email handlers that mail one-time codes, by purpose.
    pub otp: Vec<keel_handlers::email::OtpRoute>,
    /// Start time.
    pub started: Instant,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl AppState {
    /// Assembles the state.
    pub fn new(inner: Inner) -> AppState {
        AppState {
            inner: Arc::new(inner),
        }
    }

    /// Whether `scope` may see `queue`: every queue for an unbound token, only its own for a
    /// tenant's.
    pub fn can_see_queue(&self, scope: &Scope, queue: &str) -> bool {
        match scope {
            Scope::All => true,
            Scope::Tenant(t) => self.queue_tenants.get(queue) == Some(t),
        }
    }

    /// The token whose secret this is, from the 10 s cache or the store.
    pub async fn authenticate(&self, secret: &str) -> ApiResult<ApiToken> {
        let key = keel_records::secret::sha256_hex(secret);
        let epoch = self.realtime.revocation_epoch();
        {
            let cache = self.token_cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((t, at, seen)) = cache.get(&key) {
                if at.elapsed() < TOKEN_CACHE_TTL && *seen == epoch {
                    return Ok(t.clone());
                }
            }
        }
        let token = self
            .store
            .authenticate(secret)
            .await?
            .ok_or_else(|| ApiError::unauthorized("the token is unknown or revoked"))?;
        let mut cache = self.token_cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > TOKEN_CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, (token.clone(), Instant::now(), epoch));
        Ok(token)
    }

    /// Forgets cached tokens (after a revocation).
    pub fn forget_tokens(&self) {
        self.token_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Whether `name` is a queue on the backend (names are re-read at most every 500 ms when
    /// an unknown one is asked for, and kept 5 s).
    pub async fn queue_exists(&self, name: &str) -> ApiResult<bool> {
        {
            let k = self.known_queues.lock().unwrap_or_else(|p| p.into_inner());
            let fresh = k.1.is_some_and(|t| t.elapsed() < KNOWN_QUEUES_TTL);
            let recent = k.1.is_some_and(|t| t.elapsed() < UNKNOWN_QUEUE_RECHECK);
            if (fresh && k.0.contains(name)) || (recent && !k.0.contains(name)) {
                return Ok(k.0.contains(name));
            }
        }
        let names = self.backend.queue_names().await?;
        let mut k = self.known_queues.lock().unwrap_or_else(|p| p.into_inner());
        *k = (names.into_iter().collect(), Some(Instant::now()));
        Ok(k.0.contains(name))
    }
}
