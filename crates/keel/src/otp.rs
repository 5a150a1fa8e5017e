//! One-time codes (email OTP): a code from the OS RNG, stored only as a salted HMAC-SHA256
//! with a time to live and a failure counter, checked in constant time, consumed once, locked
//! after too many failures; the resend throttle and the verify rate limit are the toolkit's.
//!
//! Where: the toolkit's key space (Redis, or memory), not the records database. A code lives
//! minutes, is read and deleted on the request path and must expire by itself — Redis TTLs do
//! this atomically with no sweeper, and `DEL` returning 1 to exactly one caller is what
//! makes "consumed once" hold across processes. Keys (`prefix:env:otp:...`) carry a hash of
//! the address, never the address.
//!
//! ```no_run
//! # async fn f(backend: keel::Backend) -> keel::Result<()> {
//! use keel::otp::{Otp, OtpPolicy, Verdict};
//! let otp = Otp::new(&backend, OtpPolicy::default());
//! otp.claim_send("login", "ana@example.com").await?; // Err(Throttled) inside the window
//! let issued = otp.issue("login", "ana@example.com").await?; // mail issued.code
//! assert_eq!(otp.verify("login", "ana@example.com", &issued.code).await?, Verdict::Valid);
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use keel_core::kv::{KvBackend, SetMode};
use keel_core::{Error, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::keys::{Category, Keys};
use crate::ratelimit::RateLimiter;
use crate::Backend;

/// How codes are made and checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtpPolicy {
    /// Characters per code (4 to 32).
    pub length: usize,
    /// The characters codes are drawn from (2 to 64 distinct ASCII characters).
    pub alphabet: String,
    /// How long a code is valid, seconds.
    pub ttl_s: u64,
    /// Failed checks after which the code is void (and the address locked until it expires).
    pub max_attempts: u32,
    /// Least seconds between two sends to one address.
    pub resend_after_s: u64,
    /// The rate-limit policy applied to checks per address (`login`: the seeds' 5 per 15 min).
    pub verify_policy: Option<String>,
}

impl Default for OtpPolicy {
    fn default() -> Self {
        OtpPolicy {
            length: 6,
            alphabet: "0123456789".into(),
            ttl_s: 600,
            max_attempts: 5,
            resend_after_s: 60,
            verify_policy: Some("login".into()),
        }
    }
}

impl OtpPolicy {
    /// Checks the settings; errors name the field.
    pub fn validate(&self) -> Result<()> {
        if !(4..=32).contains(&self.length) {
            return Err(Error::invalid("otp.length", "must be between 4 and 32"));
        }
        let mut chars: Vec<char> = self.alphabet.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        if chars.len() != self.alphabet.chars().count()
            || !(2..=64).contains(&chars.len())
            || !chars.iter().all(|c| c.is_ascii_graphic())
        {
            return Err(Error::invalid(
                "otp.alphabet",
                "2 to 64 distinct printable ASCII characters",
            ));
        }
        if self.ttl_s == 0 {
            return Err(Error::invalid("otp.ttl_s", "must be at least 1"));
        }
        if self.max_attempts == 0 {
            return Err(Error::invalid("otp.max_attempts", "must be at least 1"));
        }
        Ok(())
    }
}

/// A code just issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The code, to send (never stored).
    pub code: String,
    /// How long it is valid.
    pub ttl: Duration,
}

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Verdict {
    /// The code was right; it is consumed.
    Valid,
    /// Wrong code; `remaining` checks before the code is void.
    Invalid {
        /// Checks left.
        remaining: u32,
    },
    /// No live code for this address (never sent, expired or already used).
    Expired,
    /// Too many failed checks: the address is locked until `retry_after`.
    Locked {
        /// Until a new code can be used, ms.
        retry_after_ms: u64,
    },
    /// The verify rate limit refused the check.
    RateLimited {
        /// Until a check is admitted, ms.
        retry_after_ms: u64,
    },
}

/// Why a send was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendRefused {
    /// Inside the resend window; retry after this.
    Throttled(Duration),
}

#[derive(Serialize, Deserialize)]
struct Stored {
    salt: String,
    mac: String,
}

/// One-time codes over the toolkit's key space.
#[derive(Clone)]
pub struct Otp {
    kv: Arc<dyn KvBackend>,
    keys: Keys,
    policy: OtpPolicy,
    limiter: Option<RateLimiter>,
}

impl std::fmt::Debug for Otp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Otp").field("policy", &self.policy).finish()
    }
}

/// A stable, non-reversible handle of an address (case-insensitive), for keys and limits.
pub fn address_key(address: &str) -> String {
    let digest = Sha256::digest(address.trim().to_lowercase().as_bytes());
    hex::encode(&digest[..16])
}

fn mac(salt: &[u8], code: &str) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(salt).expect("HMAC takes keys of any size");
    m.update(code.as_bytes());
    m
}

impl Otp {
    /// Codes of `backend`'s key space under `policy` (validate it first).
    pub fn new(backend: &Backend, policy: OtpPolicy) -> Otp {
        Otp {
            kv: backend.kv().clone(),
            keys: backend.keys().clone(),
            policy,
            limiter: None,
        }
    }

    /// Checks are rate-limited by `limiter`'s `verify_policy`, per address.
    pub fn with_limiter(mut self, limiter: RateLimiter) -> Otp {
        self.limiter = Some(limiter);
        self
    }

    /// The policy.
    pub fn policy(&self) -> &OtpPolicy {
        &self.policy
    }

    fn key(&self, kind: &str, purpose: &str, address: &str) -> Result<String> {
        crate::keys::validate_name("purpose", purpose)?;
        if address.trim().is_empty() {
            return Err(Error::invalid("address", "must not be empty"));
        }
        Ok(self
            .keys
            .build(Category::Otp, &[purpose, kind, &address_key(address)], 1))
    }

    /// Claims the resend window of `address` (before enqueueing a send): refused, with the
    /// time left, when a send was claimed less than `resend_after_s` ago.
    pub async fn claim_send(
        &self,
        purpose: &str,
        address: &str,
    ) -> Result<std::result::Result<(), SendRefused>> {
        if self.policy.resend_after_s == 0 {
            return Ok(Ok(()));
        }
        let key = self.key("sent", purpose, address)?;
        let window = Duration::from_secs(self.policy.resend_after_s);
        if self
            .kv
            .set(&key, b"1", Some(window), SetMode::IfAbsent)
            .await?
        {
            return Ok(Ok(()));
        }
        let left = self.kv.ttl(&key).await?.flatten().unwrap_or(window);
        Ok(Err(SendRefused::Throttled(
            left.max(Duration::from_secs(1)),
        )))
    }

    /// A new code for `address`, replacing any earlier one and clearing its failures.
    pub async fn issue(&self, purpose: &str, address: &str) -> Result<Issued> {
        let alphabet: Vec<char> = self.policy.alphabet.chars().collect();
        let (code, salt) = {
            // The OS RNG itself (rand's `OsRng`), not a userspace generator seeded from it.
            let mut rng = rand::rand_core::UnwrapErr(rand::rngs::OsRng);
            let code: String = (0..self.policy.length)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            let salt: [u8; 16] = rng.random();
            (code, salt)
        };
        let stored = Stored {
            salt: hex::encode(salt),
            mac: hex::encode(mac(&salt, &code).finalize().into_bytes()),
        };
        let ttl = Duration::from_secs(self.policy.ttl_s);
        let value = serde_json::to_vec(&stored).expect("plain struct");
        self.kv.del(&[self.key("fails", purpose, address)?]).await?;
        self.kv
            .set(
                &self.key("code", purpose, address)?,
                &value,
                Some(ttl),
                SetMode::Always,
            )
            .await?;
        Ok(Issued { code, ttl })
    }

    /// Checks `code` for `address`: right once (then consumed), wrong counted, void after
    /// `max_attempts` failures. The comparison is constant-time.
    pub async fn verify(&self, purpose: &str, address: &str, code: &str) -> Result<Verdict> {
        let code_key = self.key("code", purpose, address)?;
        let fails_key = self.key("fails", purpose, address)?;
        if let (Some(limiter), Some(policy)) = (&self.limiter, &self.policy.verify_policy) {
            let d = limiter
                .check(policy, &format!("otp:{}", address_key(address)))
                .await?;
            if !d.allowed {
                return Ok(Verdict::RateLimited {
                    retry_after_ms: d.retry_after.unwrap_or_default().as_millis() as u64,
                });
            }
        }
        let fails = self
            .kv
            .get(&fails_key)
            .await?
            .and_then(|b| String::from_utf8(b).ok()?.parse::<u32>().ok())
            .unwrap_or(0);
        if fails >= self.policy.max_attempts {
            let left = self.kv.ttl(&fails_key).await?.flatten().unwrap_or_default();
            return Ok(Verdict::Locked {
                retry_after_ms: left.as_millis() as u64,
            });
        }
        let Some(bytes) = self.kv.get(&code_key).await? else {
            return Ok(Verdict::Expired);
        };
        let stored: Stored = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Backend(format!("an OTP record is unreadable: {e}")))?;
        let (Ok(salt), Ok(expected)) = (hex::decode(&stored.salt), hex::decode(&stored.mac)) else {
            return Err(Error::Backend("an OTP record is unreadable".into()));
        };
        if mac(&salt, code.trim()).verify_slice(&expected).is_ok() {
            // DEL answers 1 to exactly one caller: a code is consumed once.
            return Ok(if self.kv.del(&[code_key]).await? == 1 {
                Verdict::Valid
            } else {
                Verdict::Expired
            });
        }
        let ttl = self
            .kv
            .ttl(&code_key)
            .await?
            .flatten()
            .unwrap_or(Duration::from_secs(self.policy.ttl_s));
        let n = self.kv.incr(&fails_key, 1, Some(ttl)).await?.max(0) as u32;
        if n >= self.policy.max_attempts {
            self.kv.del(&[code_key]).await?;
            return Ok(Verdict::Locked {
                retry_after_ms: ttl.as_millis() as u64,
            });
        }
        Ok(Verdict::Invalid {
            remaining: self.policy.max_attempts - n,
        })
    }
}
