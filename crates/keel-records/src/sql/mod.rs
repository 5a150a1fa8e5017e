//! [`SqlStore`]: the records on PostgreSQL or SQLite (sqlx, runtime queries through
//! `sqlx::Any`, each database with its own migrations, up and down, under `migrations/<db>/`).
//! The queries are written once in the SQL both databases share (`$n` parameters, `BIGINT`
//! times in ms, `LIMIT/OFFSET`); where they differ the migrations say so.
//!
//! Tenant isolation lives here, not in callers: every read of tenant-owned rows takes a
//! [`Scope`], and a tenant scope adds `tenant_id = $n` to the query itself.
//!
//! One module per record kind: [`accounts`] (tenants, users, tokens), [`logs`] (audit and
//! access), [`runs`] (job runs), [`workflows`] (definitions, instances, steps); [`copy`] is PostgreSQL's `COPY` for bulk writes.

mod accounts;
mod copy;
mod logs;
mod messages;
mod runs;
mod workflow_cache;
mod workflow_rows;
mod workflows;

use std::time::Duration;

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::error::{Result, StoreError};
use crate::model::{LogFilter, Page, PoolHealth, Scope};
use crate::store::Admin;

#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Maximum connections (default 10; SQLite 5).
    pub max_connections: u32,
    /// Minimum kept open (default 0).
    pub min_connections: u32,
    /// Wait for a connection at most this long (default 5 s).
    pub acquire_timeout: Duration,
    /// Close connections idle this long (default 10 min).
    pub idle_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: 10,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
        }
    }
}

static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// [`RecordStore`] on PostgreSQL or SQLite.
#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
    database: &'static str,
    max: u32,
    /// PostgreSQL only: a small native pool for `COPY`, which `sqlx::Any` cannot do (bulk run
    /// records cost a fraction of INSERTs that way).
    copy: Option<sqlx::PgPool>,
    /// The live workflow instances this process wrote, at their revisions.
    wf_states: std::sync::Arc<workflow_cache::StateCache>,
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("database", &self.database)
            .finish()
    }
}

fn db_err(what: &str, e: sqlx::Error) -> StoreError {
    StoreError::from_sqlx(what, e)
}

/// The database URL with any password replaced by `***`.
pub fn redact_database_url(url: &str) -> String {
    keel_core::secrets::redact_url(url)
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn clamp_page(page: i64, limit: i64) -> Result<(i64, i64)> {
    if page < 1 {
        return Err(StoreError::invalid("page", "must be at least 1"));
    }
    if !(1..=1000).contains(&limit) {
        return Err(StoreError::invalid("limit", "must be between 1 and 1000"));
    }
    Ok((page, limit))
}

/// A WHERE clause built with `$n` parameters in order.
#[derive(Default)]
struct Where {
    clauses: Vec<String>,
    args: Vec<Arg>,
}

enum Arg {
    Text(String),
    Int(i64),
}

impl Where {
    fn next(&self) -> usize {
        self.args.len() + 1
    }
    fn text(&mut self, clause: &str, v: &str) {
        let n = self.next();
        self.clauses.push(clause.replace("?", &format!("${n}")));
        self.args.push(Arg::Text(v.to_string()));
    }
    fn int(&mut self, clause: &str, v: i64) {
        let n = self.next();
        self.clauses.push(clause.replace("?", &format!("${n}")));
        self.args.push(Arg::Int(v));
    }
    fn scope(&mut self, scope: &Scope) {
        if let Some(t) = scope.tenant() {
            self.text("tenant_id = ?", t);
        }
    }
    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }
    fn bind<'q>(
        &'q self,
        mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        for a in &self.args {
            q = match a {
                Arg::Text(s) => q.bind(s.as_str()),
                Arg::Int(i) => q.bind(*i),
            };
        }
        q
    }
    fn log_filter(&mut self, scope: &Scope, f: &LogFilter) {
        self.scope(scope);
        if let Some(id) = f.id {
            self.int("id = ?", id);
        }
        if let Some(a) = &f.action {
            self.text("action = ?", a);
        }
        if let Some(a) = &f.actor {
            self.text("actor = ?", a);
        }
        if let Some(r) = &f.resource {
            // Prefix match without LIKE wildcards in the value mattering.
            let n = self.next();
            self.clauses.push(format!(
                "(resource = ${n} OR substr(resource, 1, length(${n}) + 1) = ${n} || '/')"
            ));
            self.args.push(Arg::Text(r.clone()));
        }
        if let Some(v) = f.from {
            self.int("at >= ?", v);
        }
        if let Some(v) = f.to {
            self.int("at <= ?", v);
        }
    }
}

/// What a paged listing reads: its name in errors, table, columns and order.
struct Listing<'a> {
    what: &'a str,
    table: &'a str,
    columns: &'a str,
    order: &'a str,
}

/// `INSERT INTO <table> VALUES ($1..$n), (...), ...` for `rows` rows of `cols` columns.
fn multi_insert(table: &str, cols: usize, rows: usize) -> String {
    let mut sql = format!("INSERT INTO {table} VALUES ");
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..cols {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", r * cols + c + 1));
        }
        sql.push(')');
    }
    sql
}

impl SqlStore {
    /// Connects to `url` (`postgres://…` or `sqlite:…`; a SQLite file is created if missing).
    pub async fn connect(url: &str, settings: &PoolSettings) -> Result<SqlStore> {
        sqlx::any::install_default_drivers();
        let database = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            "postgres"
        } else if url.starts_with("sqlite:") {
            "sqlite"
        } else {
            return Err(StoreError::invalid(
                "DATABASE_URL",
                "must start with postgres://, postgresql:// or sqlite:",
            ));
        };
        let url = if database == "sqlite" && !url.contains("mode=") && !url.contains(":memory:") {
            format!("{url}{}mode=rwc", if url.contains('?') { "&" } else { "?" })
        } else {
            url.to_string()
        };
        let max = if database == "sqlite" {
            settings.max_connections.min(5)
        } else {
            settings.max_connections
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max.max(1))
            .min_connections(settings.min_connections)
            .acquire_timeout(settings.acquire_timeout)
            .idle_timeout(settings.idle_timeout)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if database == "sqlite" {
                        // WAL lets readers run beside the run-record writer; wait, not fail,
                        // when another connection holds the write lock.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        // With WAL, NORMAL syncs at checkpoints, not at every commit: a power
                        // loss can lose the last transactions, never corrupt the file.
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 5000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA foreign_keys = ON")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot open the database {}: {e}",
                    redact_database_url(&url)
                ))
            })?;
        let copy = if database == "postgres" {
            Some(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(2)
                    // No ping before each COPY: a dead connection fails the COPY, which the
                    // log writer retries once, and a ping per batch was a round trip each.
                    .test_before_acquire(false)
                    .acquire_timeout(settings.acquire_timeout)
                    .idle_timeout(settings.idle_timeout)
                    .connect_lazy(&url)
                    .map_err(|e| StoreError::invalid("DATABASE_URL", e.to_string()))?,
            )
        } else {
            None
        };
        Ok(SqlStore {
            pool,
            database,
            max,
            copy,
            wf_states: Default::default(),
        })
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        if self.database == "postgres" {
            &PG_MIGRATOR
        } else {
            &SQLITE_MIGRATOR
        }
    }

    async fn applied_versions(&self) -> Result<Vec<i64>> {
        let rows = sqlx::query(
            "SELECT version FROM _sqlx_migrations WHERE success = TRUE ORDER BY version",
        )
        .fetch_all(&self.pool)
        .await;
        match rows {
            Ok(rows) => rows
                .iter()
                .map(|r| {
                    r.try_get::<i64, _>("version")
                        .map_err(|e| db_err("migrations", e))
                })
                .collect(),
            Err(_) => Ok(Vec::new()), // no table yet: nothing applied
        }
    }

    /// The pool, for tests and tools.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    async fn page<T>(
        &self,
        listing: Listing<'_>,
        w: &Where,
        page: (i64, i64),
        map: fn(&AnyRow) -> std::result::Result<T, sqlx::Error>,
    ) -> Result<Page<T>> {
        self.page_counted(listing, w, page, map, None).await
    }

    /// [`Self::page`], its total the sum of `n` over the rows of `counts` (which `w` filters
    /// as it does `table`) when given, instead of counting `table`'s rows.
    async fn page_counted<T>(
        &self,
        Listing {
            what,
            table,
            columns,
            order,
        }: Listing<'_>,
        w: &Where,
        (page, limit): (i64, i64),
        map: fn(&AnyRow) -> std::result::Result<T, sqlx::Error>,
        counts: Option<&str>,
    ) -> Result<Page<T>> {
        let (page, limit) = clamp_page(page, limit)?;
        let count_sql = match counts {
            Some(counts) => format!(
                "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) AS n FROM {counts}{}",
                w.sql()
            ),
            None => format!("SELECT COUNT(*) AS n FROM {table}{}", w.sql()),
        };
        let total: i64 = w
            .bind(sqlx::query(&count_sql))
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get("n"))
            .map_err(|e| db_err(what, e))?;
        let n = w.next();
        let sql = format!(
            "SELECT {columns} FROM {table}{} ORDER BY {order} LIMIT ${n} OFFSET ${}",
            w.sql(),
            n + 1
        );
        let rows = w
            .bind(sqlx::query(&sql))
            .bind(limit)
            .bind((page - 1) * limit)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_err(what, e))?;
        let items = rows
            .iter()
            .map(map)
            .collect::<std::result::Result<Vec<T>, _>>()
            .map_err(|e| db_err(what, e))?;
        Ok(Page {
            items,
            total,
            page,
            limit,
        })
    }
}

#[async_trait]
impl Admin for SqlStore {
    fn database(&self) -> &'static str {
        self.database
    }

    async fn migrate_up(&self) -> Result<Vec<i64>> {
        let before = self.applied_versions().await?;
        self.migrator()
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Database(format!("migrating up: {e}")))?;
        let after = self.applied_versions().await?;
        Ok(after.into_iter().filter(|v| !before.contains(v)).collect())
    }

    async fn migrate_down(&self, steps: usize) -> Result<Vec<i64>> {
        let applied = self.applied_versions().await?;
        if steps == 0 || applied.is_empty() {
            return Ok(Vec::new());
        }
        let keep = applied.len().saturating_sub(steps);
        let target = if keep == 0 { 0 } else { applied[keep - 1] };
        self.migrator()
            .undo(&self.pool, target)
            .await
            .map_err(|e| StoreError::Database(format!("migrating down: {e}")))?;
        Ok(applied[keep..].iter().rev().copied().collect())
    }

    async fn health(&self) -> Result<PoolHealth> {
        let started = std::time::Instant::now();
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(|e| db_err("health", e))?;
        Ok(PoolHealth {
            database: self.database.into(),
            size: self.pool.size(),
            idle: self.pool.num_idle() as u32,
            max: self.max,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_row_inserts_number_their_parameters() {
        assert_eq!(
            multi_insert("t (a, b)", 2, 2),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)"
        );
    }
}
