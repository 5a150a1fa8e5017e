//! The `sql` handler: runs a statement written in keel.toml (never taken from job data)
//! against a named PostgreSQL database, with `:name` parameters bound from the job's data, in
//! a transaction under a statement timeout — the seeds' analytics rollups on a scheduler.
//!
//! ```toml
//! [queues.analytics.handlers.rollup_daily_stats]
//! kind = "sql"
//! database_url_env = "ANALYTICS_DATABASE_URL"
//! statement = """
//! INSERT INTO analytics_aggregate (bucket, period, event_type, count)
//! SELECT :day::date, 'day', event_type, count(*) FROM analytics_event
//!  WHERE created_at >= :day::date AND created_at < :day::date + 1 GROUP BY event_type
//! ON CONFLICT (bucket, period, event_type) DO UPDATE SET count = EXCLUDED.count
//! RETURNING event_type, count
//! """
//! timeout_ms = 30000                # statement_timeout, per attempt
//! max_rows = 1000                   # rows of a RETURNING (or SELECT) kept as the result
//! pool_size = 4
//! connect_timeout_ms = 5000         # an unreachable database fails the attempt this soon
//! ```
//! A parameter is the job data's field of that name (strings, numbers, booleans, null; cast
//! in SQL as needed, e.g. `:day::date`); a missing one is unrecoverable, naming it. The
//! result is `{"rowsAffected": n}`, or `{"rows": [...], "truncated": bool}` for a statement
//! that returns rows. Constraint, syntax and data errors are unrecoverable; connection
//! errors, serialization failures, deadlocks and timeouts retry.

use std::sync::Arc;
use std::time::Duration;

use keel_core::{Error, JobContext, JobError, Processor, Result};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::postgres::{PgArguments, PgPoolOptions};
use sqlx::{Arguments, PgPool, Row};

use crate::{settings, Shared};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    database_url_env: String,
    statement: String,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "default_max_rows")]
    max_rows: usize,
    #[serde(default = "default_pool")]
    pool_size: u32,
    #[serde(default = "default_connect_ms")]
    connect_timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    30_000
}
fn default_max_rows() -> usize {
    1000
}
fn default_pool() -> u32 {
    4
}
fn default_connect_ms() -> u64 {
    5_000
}

/// A statement with `:name` parameters rewritten to `$n`, and the names in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The SQL with `$1`, `$2`, ...
    pub sql: String,
    /// The parameter of each `$n`.
    pub names: Vec<String>,
}

/// Rewrites `:name` to `$n` outside quotes, comments and `::` casts; the same name is the
/// same `$n`.
pub fn prepare(statement: &str) -> std::result::Result<Prepared, String> {
    let chars: Vec<char> = statement.chars().collect();
    let mut sql = String::with_capacity(statement.len());
    let mut names: Vec<String> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\'' | '"' => {
                // A quoted literal or identifier, doubled quotes inside.
                let q = c;
                sql.push(c);
                i += 1;
                while i < chars.len() {
                    sql.push(chars[i]);
                    if chars[i] == q {
                        if chars.get(i + 1) == Some(&q) {
                            sql.push(q);
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                if i >= chars.len() {
                    return Err("an unterminated quote".into());
                }
                i += 1;
            }
            '-' if chars.get(i + 1) == Some(&'-') => {
                while i < chars.len() && chars[i] != '\n' {
                    sql.push(chars[i]);
                    i += 1;
                }
            }
            ':' if chars.get(i + 1) == Some(&':') => {
                sql.push_str("::");
                i += 2;
            }
            ':' if chars
                .get(i + 1)
                .is_some_and(|n| n.is_ascii_alphabetic() || *n == '_') =>
            {
                let start = i + 1;
                let mut end = start;
                while end < chars.len() && (chars[end].is_ascii_alphanumeric() || chars[end] == '_')
                {
                    end += 1;
                }
                let name: String = chars[start..end].iter().collect();
                let n = match names.iter().position(|x| *x == name) {
                    Some(p) => p + 1,
                    None => {
                        names.push(name);
                        names.len()
                    }
                };
                sql.push_str(&format!("${n}"));
                i = end;
            }
            '$' if chars.get(i + 1).is_some_and(|n| n.is_ascii_digit()) => {
                return Err("use :name parameters, not $n".into());
            }
            _ => {
                sql.push(c);
                i += 1;
            }
        }
    }
    Ok(Prepared { sql, names })
}

/// Whether the statement returns rows (a `RETURNING`, a `SELECT` or `WITH` query).
fn returns_rows(sql: &str) -> bool {
    let lower = sql.to_lowercase();
    let first = lower.split_whitespace().next().unwrap_or("");
    first == "select" || first == "with" || lower.split_whitespace().any(|w| w == "returning")
}

struct SqlHandler {
    pool: PgPool,
    prepared: Prepared,
    rows: bool,
    timeout: Duration,
    max_rows: usize,
}

/// Builds the handler configured at `key`.
pub(crate) fn build(
    shared: &Arc<Shared>,
    _queue: &str,
    key: &str,
    table: &toml::Table,
) -> Result<Processor> {
    let s: Settings = settings(key, table)?;
    let k = |f: &str| format!("{key}.{f}");
    let url = (shared.env)(&s.database_url_env).ok_or_else(|| {
        Error::invalid(
            k("database_url_env"),
            format!("environment variable {} is not set", s.database_url_env),
        )
    })?;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(Error::invalid(
            k("database_url_env"),
            format!("{} must be a postgres:// URL", s.database_url_env),
        ));
    }
    let prepared = prepare(s.statement.trim().trim_end_matches(';'))
        .map_err(|e| Error::invalid(k("statement"), e))?;
    if prepared.sql.trim().is_empty() {
        return Err(Error::invalid(k("statement"), "must not be empty"));
    }
    for (field, v) in [
        ("timeout_ms", s.timeout_ms),
        ("pool_size", s.pool_size as u64),
        ("max_rows", s.max_rows as u64),
        ("connect_timeout_ms", s.connect_timeout_ms),
    ] {
        if v == 0 {
            return Err(Error::invalid(k(field), "must be at least 1"));
        }
    }
    let pool = PgPoolOptions::new()
        .max_connections(s.pool_size)
        // An unreachable database fails the attempt (which retries) this soon.
        .acquire_timeout(Duration::from_millis(s.connect_timeout_ms))
        .connect_lazy(&url)
        .map_err(|e| {
            Error::invalid(
                k("database_url_env"),
                keel_core::secrets::mask_str(&e.to_string()),
            )
        })?;
    let handler = Arc::new(SqlHandler {
        pool,
        rows: returns_rows(&prepared.sql),
        prepared,
        timeout: Duration::from_millis(s.timeout_ms),
        max_rows: s.max_rows,
    });
    Ok(Arc::new(move |ctx| {
        let h = handler.clone();
        Box::pin(async move { h.run(ctx).await })
    }))
}

/// Retry or not, by SQLSTATE class: serialization failures (40001), deadlocks (40P01),
/// cancellations and timeouts (57014), resource and operator-intervention classes (53, 57,
/// 58) and connection errors (08) retry; the rest (constraints 23, syntax 42, data 22, ...)
/// cannot succeed by trying again.
fn classify(e: sqlx::Error) -> JobError {
    match &e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            let message = format!("SQL error {code}: {}", db.message());
            let retry = matches!(code.get(..2), Some("40" | "53" | "57" | "58" | "08"));
            if retry {
                JobError::retry(message)
            } else {
                JobError::unrecoverable(message)
            }
        }
        _ => JobError::retry(format!(
            "the database: {}",
            keel_core::secrets::mask_str(&e.to_string())
        )),
    }
}

impl SqlHandler {
    async fn run(&self, ctx: JobContext) -> std::result::Result<Value, JobError> {
        let mut args = PgArguments::default();
        for name in &self.prepared.names {
            let v = ctx.job.data.get(name).ok_or_else(|| {
                JobError::unrecoverable(format!("parameter :{name} is not in the job's data"))
            })?;
            let added = match v {
                Value::Null => args.add(Option::<String>::None),
                Value::Bool(b) => args.add(*b),
                Value::Number(n) if n.is_i64() => args.add(n.as_i64()),
                Value::Number(n) => args.add(n.as_f64()),
                Value::String(s) => args.add(s.clone()),
                other => args.add(other.to_string()),
            };
            added.map_err(|e| JobError::unrecoverable(format!("parameter :{name}: {e}")))?;
        }
        let mut tx = self.pool.begin().await.map_err(classify)?;
        sqlx::query(&format!(
            "SET LOCAL statement_timeout = {}",
            self.timeout.as_millis()
        ))
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        let result = if self.rows {
            let sql = format!(
                "WITH keel_statement AS ({}) SELECT row_to_json(keel_statement)::text AS r FROM keel_statement",
                self.prepared.sql
            );
            let rows = sqlx::query_with(&sql, args)
                .fetch_all(&mut *tx)
                .await
                .map_err(classify)?;
            let truncated = rows.len() > self.max_rows;
            let rows = rows
                .iter()
                .take(self.max_rows)
                .map(|r| {
                    r.try_get::<String, _>("r")
                        .ok()
                        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                        .unwrap_or(Value::Null)
                })
                .collect::<Vec<_>>();
            json!({"rows": rows, "truncated": truncated})
        } else {
            let done = sqlx::query_with(&self.prepared.sql, args)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            json!({"rowsAffected": done.rows_affected()})
        };
        tx.commit().await.map_err(classify)?;
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_parameters_become_positional() {
        let p = prepare("SELECT :day::date, ':not', \"a:b\", :n + :day -- :c\n, x::int").unwrap();
        assert_eq!(
            p.sql,
            "SELECT $1::date, ':not', \"a:b\", $2 + $1 -- :c\n, x::int"
        );
        assert_eq!(p.names, ["day", "n"]);
        assert!(prepare("SELECT 'x").is_err());
        assert!(prepare("SELECT $1").is_err());
        assert!(returns_rows("insert into t values (1) RETURNING id"));
        assert!(returns_rows("SELECT 1"));
        assert!(!returns_rows("UPDATE t SET a = 1"));
    }
}
