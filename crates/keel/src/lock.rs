//! Distributed locks: `SET NX PX` with a random token, release and extend by compare-and-set
//! scripts, and a fencing token on every acquire.
//!
//! # Which uses are safe
//! - **Efficiency** (avoid doing the same work twice: one royalty run, one report build): the
//!   lease is enough. If a holder stalls past its lease (GC pause, network partition), two may
//!   briefly run; the cost is duplicated work. [`Locks::with_lock`] keeps extending the lease and
//!   cancels the work if the lease is lost anyway, so that window is small.
//! - **Correctness** (two holders would corrupt data: a payout, a balance): a lease cannot
//!   promise mutual exclusion — a paused holder wakes up not knowing its lease ended. Pass the
//!   [`LockGuard::fence`] to the resource you write and have it refuse writes carrying a fence
//!   lower than the highest it has seen (e.g. `UPDATE … WHERE last_fence < $fence`). The fence
//!   increases by one at every acquire of the same lock, across processes.
//!
//! The fencing counter never expires. With an eviction policy that may evict keys without a TTL
//! (`allkeys-*`), Redis could drop it and restart the sequence: run such Redis with
//! `volatile-*` or `noeviction` when you rely on fences.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_core::{Error, KvBackend, Result};

use crate::keys::{validate_part, Keys};
use crate::Backend;

/// Acquires and releases locks. Cheap to clone.
#[derive(Clone)]
pub struct Locks {
    kv: Arc<dyn KvBackend>,
    keys: Keys,
}

impl std::fmt::Debug for Locks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locks").field("keys", &self.keys).finish()
    }
}

/// A held lock. Release it with [`LockGuard::release`]; dropping it without releasing leaves the
/// lease to expire.
pub struct LockGuard {
    kv: Arc<dyn KvBackend>,
    name: String,
    key: String,
    token: String,
    fence: u64,
    ttl: Duration,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.name)
            .field("fence", &self.fence)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl LockGuard {
    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fencing token: strictly greater than every earlier acquire's of this lock.
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// The random token that identifies this holder.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Resets the lease to its full TTL; false when the lease was already lost.
    pub async fn extend(&self) -> Result<bool> {
        self.kv.lock_extend(&self.key, &self.token, self.ttl).await
    }

    /// Releases the lock if this holder still has it; false when it had been lost.
    pub async fn release(self) -> Result<bool> {
        self.kv.lock_release(&self.key, &self.token).await
    }
}

impl Locks {
    /// The locks of `backend`'s key space.
    pub fn new(backend: &Backend) -> Locks {
        Locks {
            kv: backend.kv().clone(),
            keys: backend.keys().clone(),
        }
    }

    fn check(name: &str, ttl: Duration) -> Result<()> {
        validate_part("name", name)?;
        if ttl < Duration::from_millis(10) {
            return Err(Error::invalid("ttl", "must be at least 10 ms"));
        }
        Ok(())
    }

    /// Takes `name` for `ttl` if it is free; `None` when someone holds it.
    pub async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Option<LockGuard>> {
        Self::check(name, ttl)?;
        let (key, fence_key) = self.keys.lock(name);
        let token = uuid::Uuid::new_v4().simple().to_string();
        Ok(self
            .kv
            .lock_acquire(&key, &fence_key, &token, ttl)
            .await?
            .map(|fence| LockGuard {
                kv: self.kv.clone(),
                name: name.to_string(),
                key,
                token,
                fence,
                ttl,
            }))
    }

    /// Takes `name`, retrying with backoff (10 ms doubling to 200 ms, with jitter) for up to
    /// `wait`. Fails `locked` when it stays held.
    pub async fn acquire(&self, name: &str, ttl: Duration, wait: Duration) -> Result<LockGuard> {
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(10);
        loop {
            if let Some(g) = self.try_acquire(name, ttl).await? {
                return Ok(g);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Locked(name.to_string()));
            }
            let jitter = rand::random::<f64>() * 0.5 + 0.75;
            tokio::time::sleep(pause.mul_f64(jitter).min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Runs `work` holding `name`: waits up to `wait` for the lock, extends the lease every
    /// `ttl / 3` while `work` runs, and releases it after. If the lease is lost (an extension
    /// finds another holder, or the backend stays unreachable until the lease must have ended)
    /// `work` is cancelled and the call fails `lock-lost`: its result would not be trustworthy.
    /// `work` receives the fencing token.
    pub async fn with_lock<T, F, Fut>(
        &self,
        name: &str,
        ttl: Duration,
        wait: Duration,
        work: F,
    ) -> Result<T>
    where
        F: FnOnce(u64) -> Fut,
        Fut: Future<Output = T>,
    {
        let guard = self.acquire(name, ttl, wait).await?;
        let every = ttl / 3;
        let keeper = async {
            let mut lease_end = Instant::now() + ttl;
            loop {
                tokio::time::sleep(every).await;
                match guard.extend().await {
                    Ok(true) => lease_end = Instant::now() + ttl,
                    Ok(false) => return,
                    Err(e) => {
                        tracing::warn!(lock = %guard.name, error = %e, "could not extend lock lease");
                        if Instant::now() >= lease_end {
                            return;
                        }
                    }
                }
            }
        };
        let outcome = tokio::select! {
            out = work(guard.fence) => Some(out),
            _ = keeper => None,
        };
        match outcome {
            Some(out) => {
                // Whether the lease held to the very end: a release that finds another
                // holder means it expired while the work was finishing.
                match guard.release().await {
                    Ok(true) => Ok(out),
                    Ok(false) => Err(Error::LockLost(name.to_string())),
                    Err(e) => {
                        tracing::warn!(lock = %name, error = %e, "lock release failed; the lease will expire");
                        Ok(out)
                    }
                }
            }
            None => Err(Error::LockLost(name.to_string())),
        }
    }
}
