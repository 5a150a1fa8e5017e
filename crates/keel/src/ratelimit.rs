//! Rate limiting by named policies: one backend round trip per check (one Lua script on Redis),
//! timed by the backend's clock — or, for a policy with a local lease, one per lease.
//!
//! Over 600 lines (~570 of code, the rest tests): the policies, their validation, the seeds'
//! defaults, the decision and its two header forms, and the local leases belong together.
//!
//! Algorithms ([`RateAlgorithm`]): GCRA (the default: smooth, exact, one timestamp per key, with
//! an explicit burst), sliding window counter (two buckets; approximate, see below), sliding log
//! (exact, one sorted-set entry per admitted request) and fixed window (epoch-aligned; a one-day
//! window is a UTC day, as the daily per-platform post limits want).
//!
//! **Error of the sliding window counter**: it weights the previous window's count by the part
//! of it still inside the sliding window, assuming those requests were spread evenly. Within a
//! window whose predecessor was empty it is exact; otherwise it can admit more than the limit
//! in the trailing window when the previous window's requests bunched at its end, and fewer when
//! they bunched at its start — by at most the previous window's count times the overlap
//! fraction. Use the sliding log where the limit must be exact.
//!
//! **Failure**: when the backend is unreachable a policy fails open (admits, the default) or
//! closed (rejects; login). **Dark mode** computes every decision but admits everything,
//! counting what it would have rejected — for trying a policy on live traffic.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_core::{Error, KvBackend, RateAlgorithm, RateOutcome, Result};
use serde::{Deserialize, Serialize};

use crate::keys::{validate_name, validate_part, Keys};
use crate::Backend;

/// What a policy does when the backend cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Admit (availability over enforcement). The default.
    #[default]
    Open,
    /// Reject (enforcement over availability): login and other abuse targets.
    Closed,
}

/// A named rate-limit policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RatePolicy {
    /// The name checks refer to (`api`, `login`, ...).
    pub name: String,
    /// The algorithm and its parameters.
    #[serde(flatten)]
    pub algorithm: RateAlgorithm,
    /// Behaviour when the backend is unreachable.
    #[serde(default)]
    pub on_failure: FailMode,
    /// Count would-be rejections without rejecting.
    #[serde(default)]
    pub dark: bool,
    /// Units one check takes from the shared budget at a time (1: every check asks the
    /// backend). Above 1, an instance takes that many at once and admits the next requests of
    /// the same subject locally until they are used or [`LEASE_TTL`] passes: the limit still
    /// holds across instances (a lease is taken from the shared budget, never added to it);
    /// units a lease leaves unused are lost, so a subject may be refused up to `local_lease`
    /// units early per instance. For high limits only (the tail of a budget is checked one
    /// by one again).
    #[serde(default = "one")]
    pub local_lease: u64,
}

fn one() -> u64 {
    1
}

/// How long a local lease of [`RatePolicy::local_lease`] units lasts at most.
pub const LEASE_TTL: Duration = Duration::from_secs(1);
/// Most subjects holding a lease per instance (the leases are forgotten beyond it).
pub const MAX_LEASES: usize = 10_000;

const HOUR: u64 = 3_600_000;
const DAY: u64 = 86_400_000;

impl RatePolicy {
    /// A GCRA policy: `limit` per `period`, burst `limit`, failing open.
    pub fn gcra(name: &str, limit: u64, period: Duration) -> RatePolicy {
        RatePolicy {
            name: name.into(),
            algorithm: RateAlgorithm::Gcra {
                limit,
                period_ms: period.as_millis() as u64,
                burst: limit,
            },
            on_failure: FailMode::Open,
            dark: false,
            local_lease: 1,
        }
    }

    /// A policy with any algorithm, failing open.
    pub fn new(name: &str, algorithm: RateAlgorithm) -> RatePolicy {
        RatePolicy {
            name: name.into(),
            algorithm,
            on_failure: FailMode::Open,
            dark: false,
            local_lease: 1,
        }
    }

    /// The same policy admitting locally from leases of `units` (see
    /// [`RatePolicy::local_lease`]).
    pub fn local_lease(mut self, units: u64) -> RatePolicy {
        self.local_lease = units.max(1);
        self
    }

    /// The same policy failing closed.
    pub fn fail_closed(mut self) -> RatePolicy {
        self.on_failure = FailMode::Closed;
        self
    }

    /// The same policy in dark mode.
    pub fn dark(mut self, dark: bool) -> RatePolicy {
        self.dark = dark;
        self
    }

    /// Checks the parameters; errors name the field (`<name>.limit`, ...).
    pub fn validate(&self) -> Result<()> {
        validate_name("policy", &self.name)?;
        let f = |field: &str| format!("{}.{field}", self.name);
        if self.algorithm.limit() == 0 {
            return Err(Error::invalid(f("limit"), "must be at least 1"));
        }
        if self.algorithm.window_ms() == 0 {
            return Err(Error::invalid(f("window_ms"), "must be at least 1 ms"));
        }
        if self.local_lease == 0 || self.local_lease > self.algorithm.limit() {
            return Err(Error::invalid(
                f("local_lease"),
                "must be between 1 and the policy's limit",
            ));
        }
        if let RateAlgorithm::Gcra { burst, .. } = self.algorithm {
            if burst == 0 {
                return Err(Error::invalid(f("burst"), "must be at least 1"));
            }
        }
        if let RateAlgorithm::SlidingLog { limit, .. } = self.algorithm {
            if limit > 100_000 {
                return Err(Error::invalid(
                    f("limit"),
                    "a sliding log keeps one entry per request: at most 100000; use gcra or sliding_window",
                ));
            }
        }
        Ok(())
    }

    /// The seeds' policies: API 1000/h per user, upload 50/h, message 100/h, export 10/h,
    /// login 5 per 15 min per email (sliding log, fail closed), owner API 60/min per IP, and the
    /// daily per-platform post limits (Twitter/X 50, LinkedIn 100, Facebook 50, Instagram 25;
    /// UTC days).
    pub fn seed_defaults() -> Vec<RatePolicy> {
        let daily = |name: &str, limit| {
            RatePolicy::new(
                name,
                RateAlgorithm::FixedWindow {
                    limit,
                    window_ms: DAY,
                },
            )
        };
        vec![
            RatePolicy::gcra("api", 1000, Duration::from_millis(HOUR)),
            RatePolicy::gcra("upload", 50, Duration::from_millis(HOUR)),
            RatePolicy::gcra("message", 100, Duration::from_millis(HOUR)),
            RatePolicy::gcra("export", 10, Duration::from_millis(HOUR)),
            RatePolicy::new(
                "login",
                RateAlgorithm::SlidingLog {
                    limit: 5,
                    window_ms: 15 * 60_000,
                },
            )
            .fail_closed(),
            RatePolicy::gcra("owner-api", 60, Duration::from_secs(60)),
            daily("post-twitter", 50),
            daily("post-linkedin", 100),
            daily("post-facebook", 50),
            daily("post-instagram", 25),
        ]
    }
}

/// How a decision was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionSource {
    /// The backend decided.
    Backend,
    /// The backend was unreachable; the policy failed open.
    FailedOpen,
    /// The backend was unreachable; the policy failed closed.
    FailedClosed,
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateDecision {
    /// The policy checked.
    pub policy: String,
    /// Whether to serve the request.
    pub allowed: bool,
    /// The policy's limit.
    pub limit: u64,
    /// Requests left right now.
    pub remaining: u64,
    /// Until the limit is fully available again.
    #[serde(with = "ms")]
    pub reset_after: Duration,
    /// When rejected: until the request would be admitted.
    #[serde(with = "opt_ms")]
    pub retry_after: Option<Duration>,
    /// In dark mode: whether it would have been rejected (and was admitted anyway).
    pub would_reject: bool,
    /// How it was reached.
    pub source: DecisionSource,
    /// The window in seconds, for `RateLimit-Policy`.
    pub window_s: u64,
}

mod ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

mod opt_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

fn secs_up(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

impl RateDecision {
    /// The classic headers: `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`
    /// (seconds until reset) and, when rejected, `Retry-After` (seconds, rounded up).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![
            ("X-RateLimit-Limit", self.limit.to_string()),
            ("X-RateLimit-Remaining", self.remaining.to_string()),
            ("X-RateLimit-Reset", secs_up(self.reset_after).to_string()),
        ];
        if let (false, Some(r)) = (self.allowed, self.retry_after) {
            h.push(("Retry-After", secs_up(r).max(1).to_string()));
        }
        h
    }

    /// The IETF draft (draft-ietf-httpapi-ratelimit-headers) structured headers:
    /// `RateLimit-Policy: "<name>";q=<limit>;w=<window s>` and
    /// `RateLimit: "<name>";r=<remaining>;t=<seconds>`.
    pub fn ietf_headers(&self) -> Vec<(&'static str, String)> {
        let t = match (self.allowed, self.retry_after) {
            (false, Some(r)) => secs_up(r).max(1),
            _ => secs_up(self.reset_after),
        };
        vec![
            (
                "RateLimit-Policy",
                format!("\"{}\";q={};w={}", self.policy, self.limit, self.window_s),
            ),
            (
                "RateLimit",
                format!("\"{}\";r={};t={}", self.policy, self.remaining, t),
            ),
        ]
    }
}

/// Counters of one policy in this process.
#[derive(Debug, Default)]
struct PolicyCounters {
    allowed: AtomicU64,
    rejected: AtomicU64,
    dark_rejected: AtomicU64,
    failed_open: AtomicU64,
    failed_closed: AtomicU64,
}

/// A copy of a policy's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateStats {
    /// Checks admitted.
    pub allowed: u64,
    /// Checks rejected.
    pub rejected: u64,
    /// Checks admitted in dark mode that the policy would have rejected.
    pub dark_rejected: u64,
    /// Checks admitted because the backend was down.
    pub failed_open: u64,
    /// Checks rejected because the backend was down.
    pub failed_closed: u64,
}

struct Inner {
    kv: Arc<dyn KvBackend>,
    keys: Keys,
    policies: BTreeMap<String, (RatePolicy, PolicyCounters)>,
    /// Local leases by (policy, subject): one at a time per subject (a refresh is awaited by
    /// the subject's other requests rather than raced, which would take a lease each).
    leases: std::sync::Mutex<HashMap<(String, String), LeaseSlot>>,
}

/// One subject's lease, locked while it is refreshed.
type LeaseSlot = Arc<tokio::sync::Mutex<Option<Lease>>>;

struct Lease {
    left: u64,
    until: std::time::Instant,
    decision: RateDecision,
}

/// Checks requests against named policies. Cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("policies", &self.inner.policies.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl RateLimiter {
    /// A limiter with `policies` (validated; a later policy of the same name replaces an
    /// earlier one, so config can override the seed defaults).
    pub fn new(
        backend: &Backend,
        policies: impl IntoIterator<Item = RatePolicy>,
    ) -> Result<RateLimiter> {
        let mut map = BTreeMap::new();
        for p in policies {
            p.validate()?;
            map.insert(p.name.clone(), (p, PolicyCounters::default()));
        }
        Ok(RateLimiter {
            inner: Arc::new(Inner {
                kv: backend.kv().clone(),
                keys: backend.keys().clone(),
                policies: map,
                leases: Default::default(),
            }),
        })
    }

    /// A limiter with the seeds' policies ([`RatePolicy::seed_defaults`]).
    pub fn with_seed_defaults(backend: &Backend) -> Result<RateLimiter> {
        RateLimiter::new(backend, RatePolicy::seed_defaults())
    }

    /// The policy called `name`.
    pub fn policy(&self, name: &str) -> Option<&RatePolicy> {
        self.inner.policies.get(name).map(|(p, _)| p)
    }

    /// Every policy, by name.
    pub fn policies(&self) -> impl Iterator<Item = &RatePolicy> {
        self.inner.policies.values().map(|(p, _)| p)
    }

    /// Counters per policy, in this process.
    pub fn stats(&self) -> BTreeMap<String, RateStats> {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        self.inner
            .policies
            .iter()
            .map(|(n, (_, c))| {
                (
                    n.clone(),
                    RateStats {
                        allowed: l(&c.allowed),
                        rejected: l(&c.rejected),
                        dark_rejected: l(&c.dark_rejected),
                        failed_open: l(&c.failed_open),
                        failed_closed: l(&c.failed_closed),
                    },
                )
            })
            .collect()
    }

    /// One request by `subject` (a user id, an email, an IP) against `policy`.
    pub async fn check(&self, policy: &str, subject: &str) -> Result<RateDecision> {
        self.check_n(policy, subject, 1).await
    }

    /// `cost` units at once. Errors only for an unknown policy or a bad subject or cost; a
    /// backend failure becomes the policy's fail-open or fail-closed decision.
    pub async fn check_n(&self, policy: &str, subject: &str, cost: u64) -> Result<RateDecision> {
        let Some((p, counters)) = self.inner.policies.get(policy) else {
            return Err(Error::not_found(format!("rate-limit policy {policy}")));
        };
        validate_part("key", subject)?;
        if cost == 0 {
            return Err(Error::invalid("cost", "must be at least 1"));
        }
        if p.local_lease > cost && !p.dark {
            let slot = {
                let mut leases = self.inner.leases.lock().unwrap_or_else(|e| e.into_inner());
                if leases.len() >= MAX_LEASES {
                    leases.clear();
                }
                leases
                    .entry((p.name.clone(), subject.to_string()))
                    .or_default()
                    .clone()
            };
            let mut lease = slot.lock().await;
            if let Some(l) = lease.as_mut() {
                if l.until > std::time::Instant::now() && l.left >= cost {
                    l.left -= cost;
                    counters.allowed.fetch_add(1, Ordering::Relaxed);
                    let mut d = l.decision.clone();
                    d.remaining += l.left;
                    return Ok(d);
                }
            }
            *lease = None;
            let d = self.check_backend(p, None, subject, p.local_lease).await?;
            if d.allowed && d.source == DecisionSource::Backend {
                counters.allowed.fetch_add(1, Ordering::Relaxed);
                let left = p.local_lease - cost;
                // GCRA units may be spent later (less burst, never more); a window's units
                // must not outlive their window.
                let ttl = match p.algorithm {
                    RateAlgorithm::Gcra { .. } => LEASE_TTL,
                    _ => LEASE_TTL.min(d.reset_after.max(Duration::from_millis(1))),
                };
                *lease = Some(Lease {
                    left,
                    until: std::time::Instant::now() + ttl,
                    decision: d.clone(),
                });
                return Ok(RateDecision {
                    remaining: d.remaining + left,
                    ..d
                });
            }
            // Not enough budget for a lease: the tail is checked one request at a time.
        }
        self.check_backend(p, Some(counters), subject, cost).await
    }

    /// One check by the backend, counted in `counters` when given.
    async fn check_backend(
        &self,
        p: &RatePolicy,
        counters: Option<&PolicyCounters>,
        subject: &str,
        cost: u64,
    ) -> Result<RateDecision> {
        let key = self
            .inner
            .keys
            .ratelimit(&p.name, p.algorithm.name(), subject);
        // Only the sliding log stores per-request members; the others need no nonce.
        let nonce = match p.algorithm {
            RateAlgorithm::SlidingLog { .. } => uuid::Uuid::new_v4().simple().to_string(),
            _ => String::new(),
        };
        let limit = p.algorithm.limit();
        let window_s = p.algorithm.window_ms().div_ceil(1000);
        let decision = match self
            .inner
            .kv
            .rate_check(&key, &p.algorithm, cost, &nonce)
            .await
        {
            Ok(RateOutcome {
                allowed,
                remaining,
                reset_after_ms,
                retry_after_ms,
            }) => {
                let would_reject = p.dark && !allowed;
                RateDecision {
                    policy: p.name.clone(),
                    allowed: allowed || p.dark,
                    limit,
                    remaining,
                    reset_after: Duration::from_millis(reset_after_ms),
                    retry_after: (!allowed && !p.dark)
                        .then(|| Duration::from_millis(retry_after_ms)),
                    would_reject,
                    source: DecisionSource::Backend,
                    window_s,
                }
            }
            Err(e @ (Error::BackendUnavailable(_) | Error::Backend(_))) => {
                tracing::debug!(policy = %p.name, error = %e, "rate limit backend failure");
                let open = p.on_failure == FailMode::Open;
                RateDecision {
                    policy: p.name.clone(),
                    allowed: open,
                    limit,
                    remaining: if open { limit } else { 0 },
                    reset_after: Duration::from_millis(p.algorithm.window_ms()),
                    retry_after: (!open).then(|| Duration::from_secs(window_s.clamp(1, 60))),
                    would_reject: false,
                    source: if open {
                        DecisionSource::FailedOpen
                    } else {
                        DecisionSource::FailedClosed
                    },
                    window_s,
                }
            }
            Err(e) => return Err(e),
        };
        if let Some(counters) = counters {
            let c = match decision.source {
                DecisionSource::FailedOpen => &counters.failed_open,
                DecisionSource::FailedClosed => &counters.failed_closed,
                DecisionSource::Backend if decision.would_reject => &counters.dark_rejected,
                DecisionSource::Backend if decision.allowed => &counters.allowed,
                DecisionSource::Backend => &counters.rejected,
            };
            c.fetch_add(1, Ordering::Relaxed);
        }
        if decision.would_reject {
            tracing::info!(policy = %p.name, subject, "dark rate limit would have rejected");
        }
        Ok(decision)
    }

    /// Forgets `subject`'s state under `policy` (e.g. after a successful login).
    pub async fn reset(&self, policy: &str, subject: &str) -> Result<()> {
        let Some((p, _)) = self.inner.policies.get(policy) else {
            return Err(Error::not_found(format!("rate-limit policy {policy}")));
        };
        validate_part("key", subject)?;
        let key = self
            .inner
            .keys
            .ratelimit(&p.name, p.algorithm.name(), subject);
        self.inner.kv.del(&[key]).await?;
        Ok(())
    }
}

/// Validates a policy name for configuration.
pub fn validate_policy_name(name: &str) -> Result<()> {
    validate_name("policy", name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(allowed: bool) -> RateDecision {
        RateDecision {
            policy: "api".into(),
            allowed,
            limit: 1000,
            remaining: if allowed { 998 } else { 0 },
            reset_after: Duration::from_millis(3_600_500),
            retry_after: (!allowed).then(|| Duration::from_millis(3_599)),
            would_reject: false,
            source: DecisionSource::Backend,
            window_s: 3600,
        }
    }

    #[test]
    fn headers_render_limits_and_retry_after() {
        let ok = decision(true).headers();
        assert_eq!(
            ok,
            vec![
                ("X-RateLimit-Limit", "1000".to_string()),
                ("X-RateLimit-Remaining", "998".to_string()),
                ("X-RateLimit-Reset", "3601".to_string()),
            ]
        );
        let no = decision(false).headers();
        assert_eq!(no.last().unwrap(), &("Retry-After", "4".to_string()));
        let ietf = decision(false).ietf_headers();
        assert_eq!(
            ietf[0],
            ("RateLimit-Policy", "\"api\";q=1000;w=3600".to_string())
        );
        assert_eq!(ietf[1], ("RateLimit", "\"api\";r=0;t=4".to_string()));
    }

    #[test]
    fn seed_defaults_are_valid_and_login_fails_closed() {
        let all = RatePolicy::seed_defaults();
        for p in &all {
            p.validate().unwrap();
        }
        let login = all.iter().find(|p| p.name == "login").unwrap();
        assert_eq!(login.on_failure, FailMode::Closed);
        assert_eq!(login.algorithm.limit(), 5);
        let ig = all.iter().find(|p| p.name == "post-instagram").unwrap();
        assert_eq!(
            ig.algorithm,
            RateAlgorithm::FixedWindow {
                limit: 25,
                window_ms: DAY
            }
        );
    }

    #[test]
    fn bad_policies_name_the_field() {
        let p = RatePolicy::gcra("api", 0, Duration::from_secs(1));
        assert_eq!(p.validate().unwrap_err().field(), Some("api.limit"));
        let mut p = RatePolicy::gcra("api", 5, Duration::from_secs(1));
        p.algorithm = RateAlgorithm::Gcra {
            limit: 5,
            period_ms: 1000,
            burst: 0,
        };
        assert_eq!(p.validate().unwrap_err().field(), Some("api.burst"));
        assert_eq!(
            RatePolicy::gcra("a b", 5, Duration::from_secs(1))
                .validate()
                .unwrap_err()
                .field(),
            Some("policy")
        );
    }
}
