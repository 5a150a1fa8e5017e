//! `keel serve`'s own sections of `keel.toml` — `[server]`, `[database]`, `[runs]` — and their
//! environment variables (`PORT`, `DATABASE_URL`), which the `keel` library keeps as written
//! ([`keel::config::Config::parse_with`] with [`SECTIONS`]) and this module reads, with errors
//! naming the key like the library's.
//!
//! ```toml
//! [server]
//! host = "127.0.0.1"            # an IP address
//! port = 8080                   # PORT overrides
//! body_limit_bytes = 1048576
//! request_timeout_ms = 30000
//! header_read_timeout_ms = 10000
//! trust_proxy = false           # X-Forwarded-For is the client (only behind your proxy)
//!
//! [database]
//! url = "sqlite:./data/keel.db" # DATABASE_URL overrides; postgres://… or sqlite:…
//! max_connections = 10
//!
//! [runs]
//! record = true
//! buffer = 10000
//!
//! [workflow_engine]
//! reconcile_interval_ms = 15000 # how often stuck instances are looked for
//! reconcile_grace_ms = 10000    # how long an instance must be quiet to be looked at
//!
//! [workflows.NAME]                # workflow definitions: see keel_workflows::spec
//! ```

use std::time::Duration;

use keel::config::{Config, ConfigError};
use serde::Deserialize;

/// The top-level sections this crate owns.
pub const SECTIONS: &[&str] = &["server", "database", "runs", "workflow_engine", "workflows"];

/// Default address to bind.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// Default port.
pub const DEFAULT_PORT: u16 = 8080;
/// Default largest request body.
pub const DEFAULT_BODY_LIMIT_BYTES: usize = 1024 * 1024;
/// Smallest body limit accepted.
pub const MIN_BODY_LIMIT_BYTES: usize = 1024;
/// Default per-request time limit.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default longest wait for a request's head.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default database pool size.
pub const DEFAULT_DB_MAX_CONNECTIONS: u32 = 10;
/// Default run records waiting to be written before new ones are dropped.
pub const DEFAULT_RUN_BUFFER: usize = 10_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    host: Option<String>,
    port: Option<u16>,
    body_limit_bytes: Option<usize>,
    request_timeout_ms: Option<u64>,
    header_read_timeout_ms: Option<u64>,
    trust_proxy: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: Option<String>,
    max_connections: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkflowEngine {
    reconcile_interval_ms: Option<u64>,
    reconcile_grace_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuns {
    record: Option<bool>,
    buffer: Option<usize>,
}

/// `[server]`: the HTTP server of `keel serve`. Its `Debug` masks the database password.
#[derive(Clone, PartialEq)]
pub struct ServerConfig {
    /// Address to bind (default 127.0.0.1).
    pub host: String,
    /// Port (default 8080; `PORT` overrides).
    pub port: u16,
    /// Largest request body (default 1 MiB).
    pub body_limit_bytes: usize,
    /// Per-request time limit (default 30 s).
    pub request_timeout: Duration,
    /// Longest wait for a request's head: bounds slow (slowloris) and silent clients and idle
    /// keep-alive connections (default 10 s).
    pub header_read_timeout: Duration,
    /// Take the client IP from `X-Forwarded-For` (only behind a proxy you control).
    pub trust_proxy: bool,
    /// Database URL (`DATABASE_URL` overrides; default a SQLite file under `./data/`).
    pub database_url: Option<String>,
    /// Pool size (default 10).
    pub db_max_connections: u32,
    /// Record every job run (default true).
    pub record_runs: bool,
    /// Run records waiting to be written before new ones are dropped (default 10000).
    pub run_buffer: usize,
    /// `[workflows.NAME]`: workflow definitions, validated (steps, needs, queues, templates).
    pub workflows: Vec<(String, keel_workflows::WorkflowSpec)>,
    /// `[workflow_engine]`: the workflow reconciler's settings.
    pub workflow_reconciler: keel_workflows::ReconcilerConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSections {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    database: RawDatabase,
    #[serde(default)]
    runs: RawRuns,
    #[serde(default)]
    workflow_engine: RawWorkflowEngine,
}

impl ServerConfig {
    /// The server's settings of `config` (its [`SECTIONS`]), with `env` for `PORT` and
    /// `DATABASE_URL`.
    pub fn from_config(
        config: &Config,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ServerConfig, ConfigError> {
        let table: toml::Table = config
            .sections
            .iter()
            .filter(|(k, _)| SECTIONS.contains(&k.as_str()) && k.as_str() != "workflows")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let raw: RawSections = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                ConfigError::invalid(e.path().to_string(), e.inner().message().to_string())
            })?;
        let mut server = server_config(&raw, env)?;
        if let Some(w) = config.sections.get("workflows") {
            let specs = keel_workflows::spec::from_toml(w, &|q| config.queues.contains_key(q))
                .map_err(|e| match e {
                    keel::Error::InvalidInput { field, message } => {
                        ConfigError::invalid(field, message)
                    }
                    other => ConfigError::invalid("workflows", other.to_string()),
                })?;
            server.workflows = specs.into_iter().collect();
        }
        Ok(server)
    }

    /// [`ServerConfig::from_config`] with the process's environment.
    pub fn from_env(config: &Config) -> Result<ServerConfig, ConfigError> {
        ServerConfig::from_config(config, &|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("body_limit_bytes", &self.body_limit_bytes)
            .field("request_timeout", &self.request_timeout)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("trust_proxy", &self.trust_proxy)
            .field(
                "database_url",
                &self.database_url.as_deref().map(keel_redis::redact_url),
            )
            .field("db_max_connections", &self.db_max_connections)
            .field("record_runs", &self.record_runs)
            .field("run_buffer", &self.run_buffer)
            .field(
                "workflows",
                &self.workflows.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("workflow_reconciler", &self.workflow_reconciler)
            .finish()
    }
}

fn workflow_reconciler(
    raw: &RawWorkflowEngine,
) -> Result<keel_workflows::ReconcilerConfig, ConfigError> {
    let d = keel_workflows::ReconcilerConfig::default();
    let c = keel_workflows::ReconcilerConfig {
        interval: raw
            .reconcile_interval_ms
            .map(Duration::from_millis)
            .unwrap_or(d.interval),
        grace: raw
            .reconcile_grace_ms
            .map(Duration::from_millis)
            .unwrap_or(d.grace),
        page: d.page,
    };
    if c.interval.is_zero() {
        return Err(ConfigError::invalid(
            "workflow_engine.reconcile_interval_ms",
            "must be at least 1",
        ));
    }
    Ok(c)
}

fn server_config(
    raw: &RawSections,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ServerConfig, ConfigError> {
    let port = match env("PORT") {
        Some(p) => p
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                ConfigError::invalid("PORT", format!("{p:?} is not a port (1-65535)"))
            })?,
        None => match raw.server.port {
            Some(0) => return Err(ConfigError::invalid("server.port", "must be 1-65535")),
            Some(p) => p,
            None => DEFAULT_PORT,
        },
    };
    let host = raw
        .server
        .host
        .clone()
        .unwrap_or_else(|| DEFAULT_HOST.into());
    if host.parse::<std::net::IpAddr>().is_err() {
        return Err(ConfigError::invalid(
            "server.host",
            format!("{host:?} is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)"),
        ));
    }
    let body_limit_bytes = raw
        .server
        .body_limit_bytes
        .unwrap_or(DEFAULT_BODY_LIMIT_BYTES);
    if body_limit_bytes < MIN_BODY_LIMIT_BYTES {
        return Err(ConfigError::invalid(
            "server.body_limit_bytes",
            "must be at least 1024",
        ));
    }
    let request_timeout = match raw.server.request_timeout_ms {
        Some(0) => {
            return Err(ConfigError::invalid(
                "server.request_timeout_ms",
                "must be at least 1",
            ))
        }
        Some(ms) => Duration::from_millis(ms),
        None => DEFAULT_REQUEST_TIMEOUT,
    };
    let header_read_timeout = match raw.server.header_read_timeout_ms {
        Some(0) => {
            return Err(ConfigError::invalid(
                "server.header_read_timeout_ms",
                "must be at least 1",
            ))
        }
        Some(ms) => Duration::from_millis(ms),
        None => DEFAULT_HEADER_READ_TIMEOUT,
    };
    let database_url = env("DATABASE_URL").or(raw.database.url.clone());
    if let Some(url) = &database_url {
        let ok = ["postgres://", "postgresql://", "sqlite:"]
            .iter()
            .any(|p| url.starts_with(p));
        if !ok {
            let key = if env("DATABASE_URL").is_some() {
                "DATABASE_URL"
            } else {
                "database.url"
            };
            return Err(ConfigError::invalid(
                key,
                "must start with postgres://, postgresql:// or sqlite:",
            ));
        }
    }
    let db_max_connections = match raw.database.max_connections {
        Some(0) => {
            return Err(ConfigError::invalid(
                "database.max_connections",
                "must be at least 1",
            ))
        }
        Some(n) => n,
        None => DEFAULT_DB_MAX_CONNECTIONS,
    };
    let run_buffer = match raw.runs.buffer {
        Some(0) => return Err(ConfigError::invalid("runs.buffer", "must be at least 1")),
        Some(n) => n,
        None => DEFAULT_RUN_BUFFER,
    };
    Ok(ServerConfig {
        host,
        port,
        body_limit_bytes,
        request_timeout,
        header_read_timeout,
        trust_proxy: raw.server.trust_proxy.unwrap_or(false),
        database_url,
        db_max_connections,
        record_runs: raw.runs.record.unwrap_or(true),
        run_buffer,
        workflows: Vec::new(),
        workflow_reconciler: workflow_reconciler(&raw.workflow_engine)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ServerConfig, ConfigError> {
        let c = Config::parse_with(text, env, SECTIONS)?;
        ServerConfig::from_config(&c, env)
    }

    #[test]
    fn debug_output_masks_database_and_redis_passwords() {
        let env = |k: &str| match k {
            "DATABASE_URL" => Some("postgres://app:hunter2@db/app?password=hunter3".to_string()),
            "REDIS_URL" => Some("redis://:hunter4@cache:6379".to_string()),
            _ => None,
        };
        let c = Config::parse_with("", &env, SECTIONS).unwrap();
        let server = ServerConfig::from_config(&c, &env).unwrap();
        for shown in [format!("{c:?}"), format!("{server:?}")] {
            for secret in ["hunter2", "hunter3", "hunter4"] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
        }
        assert!(format!("{server:?}").contains("postgres://app:***@db/app"));
    }

    #[test]
    fn bad_values_name_their_key() {
        let no_env = |_: &str| None;
        for (text, key) in [
            ("[server]\nhost = \"localhost:80\"", "server.host"),
            ("[server]\nport = 0", "server.port"),
            ("[server]\nbogus = 1", "server.bogus"),
            ("[database]\nurl = \"mysql://x\"", "database.url"),
            (
                "[database]\nmax_connections = 0",
                "database.max_connections",
            ),
            ("[runs]\nbuffer = 0", "runs.buffer"),
            ("server = 3", "server"),
        ] {
            let err = parse(text, &no_env).unwrap_err();
            assert_eq!(err.key(), Some(key), "{text}: {err}");
        }
        let d = parse("", &no_env).unwrap();
        assert_eq!(
            (d.host.as_str(), d.port, d.run_buffer),
            (DEFAULT_HOST, DEFAULT_PORT, DEFAULT_RUN_BUFFER)
        );
        let port = parse("[server]\nport = 9000", &|k: &str| {
            (k == "PORT").then(|| "9100".to_string())
        })
        .unwrap();
        assert_eq!(port.port, 9100, "PORT overrides the file");
        // The library alone refuses the server's sections: they are not its own.
        assert!(Config::parse("[server]\nport = 9000", &no_env).is_err());
    }
}
