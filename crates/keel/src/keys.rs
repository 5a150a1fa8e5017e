//! Every toolkit key is built here: `prefix:env:category:…:vN`.
//!
//! - `prefix` names the application (default `keel`), `env` the deployment (`dev`, `prod`, ...),
//!   so several apps and stages can share one Redis.
//! - `category` is one of [`Category`].
//! - `vN` is the format version of what the key holds: bump it and old values are simply never
//!   read again (they expire).
//!
//! Where one script or `MGET` touches several keys, they share a Redis Cluster hash tag `{…}`:
//! a cache namespace's items and tag versions (`{ns}`), a lock and its fencing counter
//! (`{name}`). A rate-limit key hash-tags its subject so keys spread over the cluster.
//! Queue keys are not built here: they are BullMQ's (`bull:<queue>:…`, see `keel-redis`).

use keel_core::kv::glob_escape;
use keel_core::{Error, Result};

/// The categories of toolkit keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Cached values and their tag versions.
    Cache,
    /// User and upload sessions.
    Session,
    /// Keel's own job-side keys (queues themselves use BullMQ's layout).
    Jobs,
    /// Rate-limit state.
    RateLimit,
    /// Locks and their fencing counters.
    Lock,
    /// Counters.
    Counter,
    /// Feature flags.
    Flag,
    /// Idempotency records.
    Idempotency,
    /// One-time codes, their failure counters and resend windows.
    Otp,
}

impl Category {
    /// The segment written into keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Cache => "cache",
            Category::Session => "session",
            Category::Jobs => "jobs",
            Category::RateLimit => "ratelimit",
            Category::Lock => "lock",
            Category::Counter => "counter",
            Category::Flag => "flag",
            Category::Idempotency => "idempotency",
            Category::Otp => "otp",
        }
    }
}

/// Maximum length of one caller-supplied key part.
pub const MAX_PART_LEN: usize = 512;

/// Checks a caller-supplied part (a cache key, a lock name, a user id): non-empty, at most
/// 512 bytes, no `{`/`}` (they would move the Cluster hash tag) and no control characters.
pub fn validate_part(field: &str, part: &str) -> Result<()> {
    if part.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if part.len() > MAX_PART_LEN {
        return Err(Error::invalid(
            field,
            format!("is {} bytes; at most {MAX_PART_LEN}", part.len()),
        ));
    }
    if let Some(c) = part
        .chars()
        .find(|c| *c == '{' || *c == '}' || c.is_control())
    {
        return Err(Error::invalid(
            field,
            format!("{part:?} contains {c:?}; braces and control characters are not allowed"),
        ));
    }
    Ok(())
}

pub use keel_core::names::validate_name;

/// The key space of one application and environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
    env: String,
}

impl Default for Keys {
    fn default() -> Self {
        Keys {
            prefix: "keel".into(),
            env: "dev".into(),
        }
    }
}

impl Keys {
    /// A key space; both parts are names (letters, digits, `-`, `_`, `.`).
    pub fn new(prefix: &str, env: &str) -> Result<Keys> {
        validate_name("prefix", prefix)?;
        validate_name("env", env)?;
        Ok(Keys {
            prefix: prefix.into(),
            env: env.into(),
        })
    }

    /// The application prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The environment.
    pub fn env(&self) -> &str {
        &self.env
    }

    /// `prefix:env:category:parts…:vN`. Parts are used as given.
    pub fn build(&self, category: Category, parts: &[&str], version: u32) -> String {
        let mut key = format!("{}:{}:{}", self.prefix, self.env, category.as_str());
        for p in parts {
            key.push(':');
            key.push_str(p);
        }
        key.push_str(&format!(":v{version}"));
        key
    }

    /// The glob that matches every key of `category` (for `SCAN`), escaped.
    pub fn category_pattern(&self, category: Category) -> String {
        format!(
            "{}:{}:{}:*",
            glob_escape(&self.prefix),
            glob_escape(&self.env),
            category.as_str()
        )
    }

    /// A cached item: `…:cache:{ns}:item:<key>:v1`.
    pub fn cache_item(&self, ns: &str, key: &str) -> String {
        self.build(Category::Cache, &[&format!("{{{ns}}}"), "item", key], 1)
    }

    /// The glob matching the items of `ns` whose key matches `key_pattern` (a glob itself).
    pub fn cache_item_pattern(&self, ns: &str, key_pattern: &str) -> String {
        format!(
            "{}:{}:cache:\\{{{}\\}}:item:{}:v1",
            glob_escape(&self.prefix),
            glob_escape(&self.env),
            glob_escape(ns),
            key_pattern
        )
    }

    /// A cache tag's current version: `…:cache:{ns}:tag:<tag>:v1` (same slot as the items).
    pub fn cache_tag(&self, ns: &str, tag: &str) -> String {
        self.build(Category::Cache, &[&format!("{{{ns}}}"), "tag", tag], 1)
    }

    /// The short lock that lets one process fill a cache key.
    pub fn cache_fill_lock(&self, ns: &str, key: &str) -> (String, String) {
        self.lock(&format!("cache.{ns}.{key}"))
    }

    /// A lock and its fencing counter: `…:lock:{name}:v1`, `…:lock:{name}:fence:v1`.
    pub fn lock(&self, name: &str) -> (String, String) {
        let tag = format!("{{{name}}}");
        (
            self.build(Category::Lock, &[&tag], 1),
            self.build(Category::Lock, &[&tag, "fence"], 1),
        )
    }

    /// Rate-limit state: `…:ratelimit:<policy>:<algorithm>:{subject}:v1`.
    pub fn ratelimit(&self, policy: &str, algorithm: &str, subject: &str) -> String {
        self.build(
            Category::RateLimit,
            &[policy, algorithm, &format!("{{{subject}}}")],
            1,
        )
    }

    /// A counter: `…:counter:<name>:v1`.
    pub fn counter(&self, name: &str) -> String {
        self.build(Category::Counter, &[name], 1)
    }

    /// A feature flag: `…:flag:<name>:v1`.
    pub fn flag(&self, name: &str) -> String {
        self.build(Category::Flag, &[name], 1)
    }

    /// An idempotency record: `…:idempotency:<scope>:<key>:v1`.
    pub fn idempotency(&self, scope: &str, key: &str) -> String {
        self.build(Category::Idempotency, &[scope, key], 1)
    }

    /// A session: `…:session:<kind>:<id>:v1`.
    pub fn session(&self, kind: &str, id: &str) -> String {
        self.build(Category::Session, &[kind, id], 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::kv::glob_match;

    #[test]
    fn keys_follow_the_hierarchy() {
        let k = Keys::new("app", "prod").unwrap();
        assert_eq!(
            k.cache_item("users", "42"),
            "app:prod:cache:{users}:item:42:v1"
        );
        assert_eq!(
            k.cache_tag("users", "team-7"),
            "app:prod:cache:{users}:tag:team-7:v1"
        );
        assert_eq!(
            k.lock("payout"),
            (
                "app:prod:lock:{payout}:v1".to_string(),
                "app:prod:lock:{payout}:fence:v1".to_string()
            )
        );
        assert_eq!(
            k.ratelimit("login", "sliding_log", "a@b.c"),
            "app:prod:ratelimit:login:sliding_log:{a@b.c}:v1"
        );
        assert_eq!(k.counter("signups"), "app:prod:counter:signups:v1");
        assert_eq!(k.session("upload", "s1"), "app:prod:session:upload:s1:v1");
        assert_eq!(k.flag("beta"), "app:prod:flag:beta:v1");
        assert_eq!(k.idempotency("api", "k1"), "app:prod:idempotency:api:k1:v1");
        assert_eq!(k.category_pattern(Category::Cache), "app:prod:cache:*");
    }

    #[test]
    fn item_patterns_match_only_their_namespace() {
        let k = Keys::default();
        let p = k.cache_item_pattern("users", "user:*");
        assert!(glob_match(&p, &k.cache_item("users", "user:1")));
        assert!(!glob_match(&p, &k.cache_item("users", "team:1")));
        assert!(!glob_match(&p, &k.cache_item("teams", "user:1")));
        assert!(!glob_match(&p, &k.cache_tag("users", "user:1")));
    }

    #[test]
    fn parts_and_names_are_checked() {
        assert!(validate_part("key", "user:1").is_ok());
        let e = validate_part("key", "a{b").unwrap_err();
        assert_eq!(e.field(), Some("key"));
        assert!(validate_part("key", "").is_err());
        assert!(validate_part("key", &"x".repeat(513)).is_err());
        assert!(validate_name("namespace", "users.v2").is_ok());
        assert_eq!(
            validate_name("namespace", "a b").unwrap_err().field(),
            Some("namespace")
        );
        assert!(Keys::new("a:b", "dev").is_err());
    }
}
