//! Small stores over the toolkit backend: [`Counters`], feature [`Flags`], [`Idempotency`]
//! records and [`Sessions`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use keel_core::{Error, KvBackend, Result, SetMode};
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::keys::{validate_name, validate_part, Keys};
use crate::Backend;

fn json<T: Serialize>(field: &str, v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::invalid(field, format!("cannot be serialized: {e}")))
}

fn parse<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Backend(format!("{what} holds unreadable data: {e}")))
}

/// Named integer counters (`INCRBY`), optionally expiring.
#[derive(Clone)]
pub struct Counters {
    kv: Arc<dyn KvBackend>,
    keys: Keys,
}

impl Counters {
    /// The counters of `backend`'s key space.
    pub fn new(backend: &Backend) -> Counters {
        Counters {
            kv: backend.kv().clone(),
            keys: backend.keys().clone(),
        }
    }

    /// Adds `by` and returns the new value; a counter created by this call expires after `ttl`.
    pub async fn incr(&self, name: &str, by: i64, ttl: Option<Duration>) -> Result<i64> {
        validate_part("name", name)?;
        self.kv.incr(&self.keys.counter(name), by, ttl).await
    }

    /// The current value (0 when missing).
    pub async fn get(&self, name: &str) -> Result<i64> {
        validate_part("name", name)?;
        match self.kv.get(&self.keys.counter(name)).await? {
            None => Ok(0),
            Some(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| Error::Backend(format!("counter {name} is not an integer"))),
        }
    }

    /// Deletes the counter.
    pub async fn reset(&self, name: &str) -> Result<()> {
        validate_part("name", name)?;
        self.kv.del(&[self.keys.counter(name)]).await?;
        Ok(())
    }
}

/// A feature flag.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flag {
    /// On for everyone (subject to `percent`).
    pub enabled: bool,
    /// With `enabled`, the share of subjects it is on for, 0–100, by a stable hash of the
    /// subject (the same subject always gets the same answer). `None`: everyone.
    #[serde(default)]
    pub percent: Option<u8>,
    /// Subjects it is always on for, enabled or not.
    #[serde(default)]
    pub allow: Vec<String>,
}

/// Feature flags stored in the backend, shared by every process.
#[derive(Clone)]
pub struct Flags {
    kv: Arc<dyn KvBackend>,
    keys: Keys,
}

/// The bucket 0–99 of `subject` for `flag`: stable across processes and releases.
pub fn rollout_bucket(flag: &str, subject: &str) -> u8 {
    let digest = Sha256::digest(format!("{flag}\u{0}{subject}").as_bytes());
    (u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % 100) as u8
}

impl Flags {
    /// The flags of `backend`'s key space.
    pub fn new(backend: &Backend) -> Flags {
        Flags {
            kv: backend.kv().clone(),
            keys: backend.keys().clone(),
        }
    }

    /// Stores a flag.
    pub async fn set(&self, name: &str, flag: &Flag) -> Result<()> {
        validate_name("flag", name)?;
        if flag.percent.is_some_and(|p| p > 100) {
            return Err(Error::invalid("percent", "must be 0 to 100"));
        }
        self.kv
            .set(
                &self.keys.flag(name),
                &json("flag", flag)?,
                None,
                SetMode::Always,
            )
            .await?;
        Ok(())
    }

    /// The flag, if set.
    pub async fn get(&self, name: &str) -> Result<Option<Flag>> {
        validate_name("flag", name)?;
        match self.kv.get(&self.keys.flag(name)).await? {
            Some(b) => Ok(Some(parse(&format!("flag {name}"), &b)?)),
            None => Ok(None),
        }
    }

    /// Whether `name` is on for `subject` (`None`: the flag's global state). Unknown flags are off.
    pub async fn is_enabled(&self, name: &str, subject: Option<&str>) -> Result<bool> {
        let Some(flag) = self.get(name).await? else {
            return Ok(false);
        };
        if let Some(s) = subject {
            if flag.allow.iter().any(|a| a == s) {
                return Ok(true);
            }
        }
        Ok(match (flag.enabled, flag.percent, subject) {
            (false, _, _) => false,
            (true, None, _) => true,
            (true, Some(p), Some(s)) => rollout_bucket(name, s) < p,
            (true, Some(p), None) => p >= 100,
        })
    }

    /// Deletes the flag; true if it existed.
    pub async fn delete(&self, name: &str) -> Result<bool> {
        validate_name("flag", name)?;
        Ok(self.kv.del(&[self.keys.flag(name)]).await? > 0)
    }

    /// The names of every flag (by `SCAN`), sorted.
    pub async fn list(&self) -> Result<Vec<String>> {
        let pattern = self.keys.category_pattern(crate::keys::Category::Flag);
        let head = format!("{}:{}:flag:", self.keys.prefix(), self.keys.env());
        let mut names: Vec<String> = self
            .kv
            .scan(&pattern, 10_000)
            .await?
            .into_iter()
            .filter_map(|k| {
                k.strip_prefix(&head)?
                    .strip_suffix(":v1")
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        Ok(names)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum IdemRecord {
    InFlight { token: String },
    Done { response: serde_json::Value },
}

/// What [`Idempotency::begin`] found.
#[derive(Debug)]
pub enum Begin {
    /// First time: do the work, then [`Claim::complete`] (or [`Claim::abandon`]).
    Started(Claim),
    /// Someone is doing it right now (answer 409 and let the client retry).
    InFlight,
    /// Done before: here is the stored response.
    Completed(serde_json::Value),
}

/// The right to do the work of one idempotency key.
#[derive(Debug)]
pub struct Claim {
    key: String,
    token: String,
    ttl: Duration,
}

/// Idempotency keys: the response to a request is stored under the client's key for `ttl`
/// (default 24 h) and returned for a repeat instead of doing the work again.
#[derive(Clone)]
pub struct Idempotency {
    kv: Arc<dyn KvBackend>,
    keys: Keys,
    scope: String,
    ttl: Duration,
    in_flight_ttl: Duration,
}

impl Idempotency {
    /// Keys of `scope` (e.g. `payments`) kept 24 h; an unfinished claim lapses after 60 s.
    pub fn new(backend: &Backend, scope: &str) -> Result<Idempotency> {
        validate_name("scope", scope)?;
        Ok(Idempotency {
            kv: backend.kv().clone(),
            keys: backend.keys().clone(),
            scope: scope.into(),
            ttl: Duration::from_secs(24 * 3600),
            in_flight_ttl: Duration::from_secs(60),
        })
    }

    /// Keeps responses for `ttl` instead.
    pub fn with_ttl(mut self, ttl: Duration) -> Idempotency {
        self.ttl = ttl;
        self
    }

    /// Lets an unfinished claim lapse after `ttl` instead (a crashed worker's key frees up).
    pub fn with_in_flight_ttl(mut self, ttl: Duration) -> Idempotency {
        self.in_flight_ttl = ttl;
        self
    }

    /// Claims `key`, or reports it in flight or done.
    pub async fn begin(&self, key: &str) -> Result<Begin> {
        validate_part("key", key)?;
        let full = self.keys.idempotency(&self.scope, key);
        let token = uuid::Uuid::new_v4().simple().to_string();
        let marker = json(
            "record",
            &IdemRecord::InFlight {
                token: token.clone(),
            },
        )?;
        if self
            .kv
            .set(&full, &marker, Some(self.in_flight_ttl), SetMode::IfAbsent)
            .await?
        {
            return Ok(Begin::Started(Claim {
                key: full,
                token,
                ttl: self.ttl,
            }));
        }
        match self.kv.get(&full).await? {
            // Expired between the two calls: try once more.
            None => Box::pin(self.begin(key)).await,
            Some(b) => match parse::<IdemRecord>("idempotency record", &b)? {
                IdemRecord::InFlight { .. } => Ok(Begin::InFlight),
                IdemRecord::Done { response } => Ok(Begin::Completed(response)),
            },
        }
    }

    /// Stores the response of a claim for the scope's TTL.
    pub async fn complete<T: Serialize>(&self, claim: Claim, response: &T) -> Result<()> {
        let response = serde_json::to_value(response)
            .map_err(|e| Error::invalid("response", format!("cannot be serialized: {e}")))?;
        let record = json("record", &IdemRecord::Done { response })?;
        self.kv
            .set(&claim.key, &record, Some(claim.ttl), SetMode::Always)
            .await?;
        Ok(())
    }

    /// Gives a claim up (the work failed and may be tried again).
    pub async fn abandon(&self, claim: Claim) -> Result<()> {
        // Only our own in-flight marker: the lock release script compares the whole value.
        let marker = json("record", &IdemRecord::InFlight { token: claim.token })?;
        let marker = String::from_utf8(marker).unwrap_or_default();
        self.kv.lock_release(&claim.key, &marker).await?;
        Ok(())
    }

    /// Runs `work` once per key: a repeat gets the stored response; a repeat while the first
    /// is running fails `conflict`; a failed `work` frees the key.
    pub async fn run<T, F, Fut>(&self, key: &str, work: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        match self.begin(key).await? {
            Begin::Completed(v) => serde_json::from_value(v)
                .map_err(|e| Error::Backend(format!("stored response does not fit: {e}"))),
            Begin::InFlight => Err(Error::Conflict(format!(
                "a request with idempotency key {key} is in progress"
            ))),
            Begin::Started(claim) => match work().await {
                Ok(v) => {
                    self.complete(claim, &v).await?;
                    Ok(v)
                }
                Err(e) => {
                    let _ = self.abandon(claim).await;
                    Err(e)
                }
            },
        }
    }
}

#[derive(Serialize, Deserialize)]
struct SessionRecord<T> {
    data: T,
    remember: bool,
    created_ms: u64,
}

/// Sessions with a time to live: user sessions (7 days, 30 days with "remember me") and upload
/// sessions (15 minutes). Ids are 256 random bits, URL-safe.
#[derive(Clone)]
pub struct Sessions {
    kv: Arc<dyn KvBackend>,
    keys: Keys,
    kind: String,
    ttl: Duration,
    remember_ttl: Duration,
}

/// A session's data with its facts.
#[derive(Debug, Clone, PartialEq)]
pub struct Session<T> {
    /// The id.
    pub id: String,
    /// What was stored.
    pub data: T,
    /// Whether it was created with "remember me".
    pub remember: bool,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
}

impl Sessions {
    /// User sessions: 7 days, 30 with "remember me".
    pub fn user(backend: &Backend) -> Sessions {
        Sessions::custom(
            backend,
            "user",
            Duration::from_secs(7 * 86_400),
            Duration::from_secs(30 * 86_400),
        )
    }

    /// Upload sessions: 15 minutes.
    pub fn upload(backend: &Backend) -> Sessions {
        let ttl = Duration::from_secs(15 * 60);
        Sessions::custom(backend, "upload", ttl, ttl)
    }

    /// Sessions of another kind (`kind` is a name: letters, digits, `-`, `_`, `.`).
    pub fn custom(
        backend: &Backend,
        kind: &str,
        ttl: Duration,
        remember_ttl: Duration,
    ) -> Sessions {
        Sessions {
            kv: backend.kv().clone(),
            keys: backend.keys().clone(),
            kind: kind.into(),
            ttl,
            remember_ttl,
        }
    }

    fn ttl_for(&self, remember: bool) -> Duration {
        if remember {
            self.remember_ttl
        } else {
            self.ttl
        }
    }

    /// Creates a session and returns its id.
    pub async fn create<T: Serialize>(&self, data: &T, remember: bool) -> Result<String> {
        validate_name("kind", &self.kind)?;
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let id = hex::encode(raw);
        let record = SessionRecord {
            data,
            remember,
            created_ms: keel_core::now_ms(),
        };
        self.kv
            .set(
                &self.keys.session(&self.kind, &id),
                &json("data", &record)?,
                Some(self.ttl_for(remember)),
                SetMode::IfAbsent,
            )
            .await?;
        Ok(id)
    }

    /// The session, if it exists and has not expired.
    pub async fn get<T: DeserializeOwned>(&self, id: &str) -> Result<Option<Session<T>>> {
        validate_part("id", id)?;
        match self.kv.get(&self.keys.session(&self.kind, id)).await? {
            None => Ok(None),
            Some(b) => {
                let r: SessionRecord<T> = parse("session", &b)?;
                Ok(Some(Session {
                    id: id.to_string(),
                    data: r.data,
                    remember: r.remember,
                    created_ms: r.created_ms,
                }))
            }
        }
    }

    /// Replaces the data, keeping the session's kind of lifetime and restarting it.
    pub async fn update<T: Serialize>(&self, id: &str, data: &T) -> Result<bool> {
        validate_part("id", id)?;
        let key = self.keys.session(&self.kind, id);
        let Some(b) = self.kv.get(&key).await? else {
            return Ok(false);
        };
        let old: SessionRecord<serde_json::Value> = parse("session", &b)?;
        let record = SessionRecord {
            data,
            remember: old.remember,
            created_ms: old.created_ms,
        };
        self.kv
            .set(
                &key,
                &json("data", &record)?,
                Some(self.ttl_for(old.remember)),
                SetMode::Always,
            )
            .await
    }

    /// Restarts the session's lifetime (sliding expiry); false when it is gone.
    pub async fn touch(&self, id: &str) -> Result<bool> {
        validate_part("id", id)?;
        let key = self.keys.session(&self.kind, id);
        let Some(b) = self.kv.get(&key).await? else {
            return Ok(false);
        };
        let r: SessionRecord<serde_json::Value> = parse("session", &b)?;
        self.kv.expire(&key, self.ttl_for(r.remember)).await
    }

    /// How long the session has left.
    pub async fn ttl(&self, id: &str) -> Result<Option<Duration>> {
        validate_part("id", id)?;
        Ok(self
            .kv
            .ttl(&self.keys.session(&self.kind, id))
            .await?
            .flatten())
    }

    /// Ends the session; true if it existed.
    pub async fn destroy(&self, id: &str) -> Result<bool> {
        validate_part("id", id)?;
        Ok(self.kv.del(&[self.keys.session(&self.kind, id)]).await? > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_buckets_are_stable_and_spread() {
        assert_eq!(rollout_bucket("beta", "u1"), rollout_bucket("beta", "u1"));
        let on = (0..10_000)
            .filter(|i| rollout_bucket("beta", &format!("user-{i}")) < 25)
            .count();
        assert!(
            (2_000..3_000).contains(&on),
            "25 % of 10000 subjects, got {on}"
        );
    }
}
