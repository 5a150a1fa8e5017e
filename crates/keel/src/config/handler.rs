//! A queue's `handler` (its fallback) and `handlers.JOB_NAME` (per job name): which kind runs
//! the jobs.
//!
//! ```toml
//! [queues.email-otp]
//! handler = { kind = "log" }                     # every job name without its own handler
//! [queues.email-otp.handlers.send_otp]
//! kind = "email"                                 # built by keel-handlers, settings as written
//! template = "otp"
//! ```
//! `http` and `log` are this crate's; `email`, `ai` and `sql` are built by `keel-handlers`
//! (they write records), which reads their settings from [`HandlerConfig::External`] and
//! names the key of any fault. A job whose name has no handler and no fallback fails
//! unrecoverably, naming the job name.

use serde::Deserialize;

use super::ConfigError;

/// Kinds built by another crate (`keel-handlers`), their settings kept as written.
pub const EXTERNAL_KINDS: &[&str] = &["email", "ai", "sql"];

/// What runs a queue's jobs (or one job name's) when `keel worker` or `keel serve` runs it.
#[derive(Debug, Clone, PartialEq)]
pub enum HandlerConfig {
    /// POST each job to `url` (see `keel::handlers::http`).
    Http {
        /// Where to POST.
        url: String,
        /// Per-request timeout.
        timeout_ms: u64,
        /// Name of the environment variable holding the HMAC secret.
        secret_env: Option<String>,
        /// The plugin this endpoint is (recorded on its runs: the seeds' PluginExecutionLog);
        /// a job's `pluginId` names it otherwise.
        plugin: Option<String>,
    },
    /// Logs each job and completes it (returns `{"logged": true}`): for trying Keel out and for
    /// queues whose jobs only need to be recorded.
    Log,
    /// `email`, `ai` or `sql`: built by `keel-handlers` from `settings` (the table as written,
    /// without `kind`).
    External {
        /// The kind.
        kind: String,
        /// The rest of the table.
        settings: toml::Table,
    },
}

impl HandlerConfig {
    /// The plugin an `http` handler is configured as.
    pub fn plugin(&self) -> Option<&str> {
        match self {
            HandlerConfig::Http { plugin, .. } => plugin.as_deref(),
            _ => None,
        }
    }

    /// The kind as written (`http`, `log`, `email`, ...).
    pub fn kind(&self) -> &str {
        match self {
            HandlerConfig::Http { .. } => "http",
            HandlerConfig::Log => "log",
            HandlerConfig::External { kind, .. } => kind,
        }
    }
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum Builtin {
    Http {
        url: String,
        #[serde(default = "default_http_timeout_ms")]
        timeout_ms: u64,
        #[serde(default)]
        secret_env: Option<String>,
        #[serde(default)]
        plugin: Option<String>,
    },
    Log,
}

fn default_http_timeout_ms() -> u64 {
    10_000
}

/// Reads the handler table at `key` (e.g. `queues.q.handlers.send_otp`).
pub(super) fn parse(
    key: &str,
    value: &toml::Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<HandlerConfig, ConfigError> {
    let k = |field: &str| format!("{key}.{field}");
    let table = value
        .as_table()
        .ok_or_else(|| ConfigError::invalid(key, "must be a table with a kind"))?;
    let kind = match table.get("kind") {
        Some(toml::Value::String(s)) => s.as_str(),
        Some(_) => return Err(ConfigError::invalid(k("kind"), "must be a string")),
        None => {
            return Err(ConfigError::invalid(
                k("kind"),
                "missing: one of http, log, email, ai, sql",
            ))
        }
    };
    if EXTERNAL_KINDS.contains(&kind) {
        let mut settings = table.clone();
        settings.remove("kind");
        return Ok(HandlerConfig::External {
            kind: kind.to_string(),
            settings,
        });
    }
    if !matches!(kind, "http" | "log") {
        return Err(ConfigError::invalid(
            k("kind"),
            format!("unknown kind {kind:?}: one of http, log, email, ai, sql"),
        ));
    }
    if kind == "log" {
        if let Some(extra) = table.keys().find(|k| *k != "kind") {
            return Err(ConfigError::invalid(
                k(extra),
                "unknown field: the log handler has no settings",
            ));
        }
    }
    let builtin: Builtin = serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            key.to_string()
        } else {
            k(&path)
        };
        ConfigError::invalid(at, e.into_inner().message().to_string())
    })?;
    Ok(match builtin {
        Builtin::Log => HandlerConfig::Log,
        Builtin::Http {
            url,
            timeout_ms,
            secret_env,
            plugin,
        } => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::invalid(
                    k("url"),
                    "must start with http:// or https://",
                ));
            }
            if timeout_ms == 0 {
                return Err(ConfigError::invalid(k("timeout_ms"), "must be at least 1"));
            }
            if let Some(var) = &secret_env {
                if env(var).is_none() {
                    return Err(ConfigError::invalid(
                        k("secret_env"),
                        format!("environment variable {var} is not set"),
                    ));
                }
            }
            HandlerConfig::Http {
                url,
                timeout_ms,
                secret_env,
                plugin,
            }
        }
    })
}

/// A per-key rate limit on jobs (`limit = { policy = "post-twitter", key = "{data.userId}" }`
/// on a queue or a job name's handler): a job the policy does not admit yet goes back to
/// delayed until it does — not failed, no attempt counted, the reason in its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLimit {
    /// The rate-limit policy (`[ratelimit.policies.NAME]` or a built-in one).
    pub policy: String,
    /// The key, as written.
    pub key: String,
    parts: Vec<KeyPart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyPart {
    Text(String),
    Data(Vec<String>),
    Name,
    Queue,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    policy: String,
    key: String,
}

impl JobLimit {
    /// Reads `limit` at `key`; `{data.a.b}`, `{name}` and `{queue}` are filled per job.
    pub(super) fn parse(key: &str, value: &toml::Value) -> Result<JobLimit, ConfigError> {
        let raw: RawLimit = serde_path_to_error::deserialize(value.clone()).map_err(|e| {
            let path = e.path().to_string();
            let at = if path == "." {
                key.to_string()
            } else {
                format!("{key}.{path}")
            };
            ConfigError::invalid(at, e.into_inner().message().to_string())
        })?;
        let kk = format!("{key}.key");
        let mut parts = Vec::new();
        let mut rest = raw.key.as_str();
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(KeyPart::Text(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| ConfigError::invalid(&kk, "an unclosed {"))?
                + open;
            let field = rest[open + 1..close].trim();
            parts.push(match field {
                "name" => KeyPart::Name,
                "queue" => KeyPart::Queue,
                f => match f.strip_prefix("data.") {
                    Some(path) if !path.is_empty() && path.split('.').all(|p| !p.is_empty()) => {
                        KeyPart::Data(path.split('.').map(str::to_string).collect())
                    }
                    _ => {
                        return Err(ConfigError::invalid(
                            &kk,
                            format!("{{{f}}}: use {{data.FIELD}}, {{name}} or {{queue}}"),
                        ))
                    }
                },
            });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(KeyPart::Text(rest.to_string()));
        }
        if !parts.iter().any(|p| !matches!(p, KeyPart::Text(_))) {
            return Err(ConfigError::invalid(
                &kk,
                "names nothing of the job: a constant key is the queue's rate_limit",
            ));
        }
        Ok(JobLimit {
            policy: raw.policy,
            key: raw.key,
            parts,
        })
    }

    /// The key of `job` on `queue`; `Err` names the data field the job lacks.
    pub fn key_of(&self, queue: &str, job: &keel_core::Job) -> Result<String, String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                KeyPart::Text(t) => out.push_str(t),
                KeyPart::Name => out.push_str(&job.name),
                KeyPart::Queue => out.push_str(queue),
                KeyPart::Data(path) => {
                    let mut v = &job.data;
                    for seg in path {
                        v = v
                            .get(seg)
                            .ok_or_else(|| format!("the job's data has no {}", path.join(".")))?;
                    }
                    match v {
                        serde_json::Value::String(s) => out.push_str(s),
                        serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {
                            out.push_str(&v.to_string())
                        }
                        _ => {
                            return Err(format!(
                                "data.{} must be a string, number or boolean",
                                path.join(".")
                            ))
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Takes `limit` out of a handler table, leaving the handler's own settings.
pub(super) fn split_limit(
    key: &str,
    value: &toml::Value,
) -> Result<(toml::Value, Option<JobLimit>), ConfigError> {
    let Some(table) = value.as_table() else {
        return Ok((value.clone(), None));
    };
    let mut rest = table.clone();
    let limit = match rest.remove("limit") {
        Some(l) => Some(JobLimit::parse(&format!("{key}.limit"), &l)?),
        None => None,
    };
    Ok((toml::Value::Table(rest), limit))
}
