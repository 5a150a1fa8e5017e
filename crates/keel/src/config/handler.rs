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
            }
        }
    })
}
