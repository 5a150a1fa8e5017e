//! The audit and data-access logs.

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::error::Result;
use crate::model::{AccessEntry, AuditEntry, LogFilter, NewAccess, NewAudit, Page, Scope};
use crate::store::LogStore;

use super::copy::copy_logs;
use super::{db_err, multi_insert, Listing, SqlStore, Where};

const INSERT_AUDIT: &str = "INSERT INTO keel_audit_log (tenant_id, at, actor, action, resource, ip, user_agent, status, payload) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id";
const INSERT_ACCESS: &str = "INSERT INTO keel_access_log (tenant_id, at, actor, action, resource, ip, user_agent, cached, fields) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id";

fn bind_audit<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    e: &'q NewAudit,
    payload: Option<String>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    q.bind(e.tenant_id.as_deref())
        .bind(keel_core::now_ms() as i64)
        .bind(e.actor.as_str())
        .bind(e.action.as_str())
        .bind(e.resource.as_str())
        .bind(e.ip.as_deref())
        .bind(e.user_agent.as_deref())
        .bind(e.status)
        .bind(payload)
}

fn bind_access<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    e: &'q NewAccess,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    let fields = serde_json::to_string(&e.fields).unwrap_or_else(|_| "[]".into());
    q.bind(e.tenant_id.as_deref())
        .bind(keel_core::now_ms() as i64)
        .bind(e.actor.as_str())
        .bind(e.action.as_str())
        .bind(e.resource.as_str())
        .bind(e.ip.as_deref())
        .bind(e.user_agent.as_deref())
        .bind(e.cached as i64)
        .bind(fields)
}

const AUDIT_COLUMNS: &str =
    "id, at, tenant_id, actor, action, resource, ip, user_agent, status, payload";
const ACCESS_COLUMNS: &str =
    "id, at, tenant_id, actor, action, resource, ip, user_agent, cached, fields";

fn json_opt(s: Option<String>) -> Option<serde_json::Value> {
    s.and_then(|s| serde_json::from_str(&s).ok())
}

fn audit_from(row: &AnyRow) -> std::result::Result<AuditEntry, sqlx::Error> {
    Ok(AuditEntry {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        tenant_id: row.try_get("tenant_id")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        resource: row.try_get("resource")?,
        ip: row.try_get("ip")?,
        user_agent: row.try_get("user_agent")?,
        status: row.try_get("status")?,
        payload: json_opt(row.try_get("payload")?),
    })
}

fn access_from(row: &AnyRow) -> std::result::Result<AccessEntry, sqlx::Error> {
    let fields: String = row.try_get("fields")?;
    Ok(AccessEntry {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        tenant_id: row.try_get("tenant_id")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        resource: row.try_get("resource")?,
        ip: row.try_get("ip")?,
        user_agent: row.try_get("user_agent")?,
        cached: row.try_get::<i64, _>("cached")? != 0,
        fields: serde_json::from_str(&fields).unwrap_or_default(),
    })
}

#[async_trait]
impl LogStore for SqlStore {
    async fn record_audit(&self, e: NewAudit) -> Result<i64> {
        let payload = e.payload.as_ref().map(|p| p.to_string());
        bind_audit(sqlx::query(INSERT_AUDIT), &e, payload)
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get("id"))
            .map_err(|err| db_err("audit log", err))
    }

    async fn record_logs(&self, audit: &[NewAudit], access: &[NewAccess]) -> Result<()> {
        if audit.is_empty() && access.is_empty() {
            return Ok(());
        }
        if let Some(pg) = &self.copy {
            return copy_logs(pg, audit, access).await;
        }
        // One multi-row INSERT per table: a batch costs two round trips, not one per entry.
        let mut tx = self.pool.begin().await.map_err(|e| db_err("logs", e))?;
        let now = keel_core::now_ms() as i64;
        if !audit.is_empty() {
            let sql = multi_insert(
                "keel_audit_log (tenant_id, at, actor, action, resource, ip, user_agent, status, payload)",
                9,
                audit.len(),
            );
            let payloads: Vec<Option<String>> = audit
                .iter()
                .map(|e| e.payload.as_ref().map(|p| p.to_string()))
                .collect();
            let mut q = sqlx::query(&sql);
            for (e, payload) in audit.iter().zip(&payloads) {
                q = q
                    .bind(e.tenant_id.as_deref())
                    .bind(now)
                    .bind(e.actor.as_str())
                    .bind(e.action.as_str())
                    .bind(e.resource.as_str())
                    .bind(e.ip.as_deref())
                    .bind(e.user_agent.as_deref())
                    .bind(e.status)
                    .bind(payload.as_deref());
            }
            q.execute(&mut *tx)
                .await
                .map_err(|err| db_err("audit log", err))?;
        }
        if !access.is_empty() {
            let sql = multi_insert(
                "keel_access_log (tenant_id, at, actor, action, resource, ip, user_agent, cached, fields)",
                9,
                access.len(),
            );
            let fields: Vec<String> = access
                .iter()
                .map(|e| serde_json::to_string(&e.fields).unwrap_or_else(|_| "[]".into()))
                .collect();
            let mut q = sqlx::query(&sql);
            for (e, f) in access.iter().zip(&fields) {
                q = q
                    .bind(e.tenant_id.as_deref())
                    .bind(now)
                    .bind(e.actor.as_str())
                    .bind(e.action.as_str())
                    .bind(e.resource.as_str())
                    .bind(e.ip.as_deref())
                    .bind(e.user_agent.as_deref())
                    .bind(e.cached as i64)
                    .bind(f.as_str());
            }
            q.execute(&mut *tx)
                .await
                .map_err(|err| db_err("access log", err))?;
        }
        tx.commit().await.map_err(|e| db_err("logs", e))
    }

    async fn list_audit(
        &self,
        scope: &Scope,
        filter: &LogFilter,
        page: i64,
        limit: i64,
    ) -> Result<Page<AuditEntry>> {
        let mut w = Where::default();
        w.log_filter(scope, filter);
        self.page(
            Listing {
                what: "audit log",
                table: "keel_audit_log",
                columns: AUDIT_COLUMNS,
                order: "id DESC",
            },
            &w,
            (page, limit),
            audit_from,
        )
        .await
    }

    async fn record_access(&self, e: NewAccess) -> Result<i64> {
        bind_access(sqlx::query(INSERT_ACCESS), &e)
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get("id"))
            .map_err(|err| db_err("access log", err))
    }

    async fn list_access(
        &self,
        scope: &Scope,
        filter: &LogFilter,
        page: i64,
        limit: i64,
    ) -> Result<Page<AccessEntry>> {
        let mut w = Where::default();
        w.log_filter(scope, filter);
        self.page(
            Listing {
                what: "access log",
                table: "keel_access_log",
                columns: ACCESS_COLUMNS,
                order: "id DESC",
            },
            &w,
            (page, limit),
            access_from,
        )
        .await
    }
}
