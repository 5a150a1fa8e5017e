//! Job runs and their events.

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::error::{Result, StoreError};
use crate::model::{JobRun, MinuteCounts, NewRun, Page, RunEvent, RunFilter, Scope};
use crate::store::RunStore;

use super::copy::copy_runs;
use super::{db_err, multi_insert, Listing, SqlStore, Where};

const RUN_COLUMNS: &str = "id, tenant_id, queue, job_id, name, attempt, status, started_at, finished_at, duration_ms, error, worker, trace_id, plugin_id, error_stack";

fn run_from(row: &AnyRow) -> std::result::Result<JobRun, sqlx::Error> {
    Ok(JobRun {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        queue: row.try_get("queue")?,
        job_id: row.try_get("job_id")?,
        name: row.try_get("name")?,
        attempt: row.try_get("attempt")?,
        status: row.try_get("status")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        duration_ms: row.try_get("duration_ms")?,
        error: row.try_get("error")?,
        worker: row.try_get("worker")?,
        trace_id: row.try_get("trace_id")?,
        plugin_id: row.try_get("plugin_id")?,
        error_stack: row.try_get("error_stack")?,
    })
}

impl SqlStore {
    /// Runs by multi-row INSERT (with their failure events), in one transaction.
    async fn insert_runs_sql(&self, runs: &[NewRun]) -> Result<()> {
        // One multi-row INSERT for the runs and one for their events, per chunk of 500 (well
        // inside both databases' parameter limits).
        let mut tx = self.pool.begin().await.map_err(|e| db_err("job runs", e))?;
        for chunk in runs.chunks(500) {
            let sql = format!(
                "{} RETURNING id, queue, job_id, attempt",
                multi_insert(
                    "keel_job_runs (tenant_id, queue, job_id, name, attempt, status, started_at, finished_at, duration_ms, error, worker, trace_id, plugin_id, error_stack)",
                    14,
                    chunk.len(),
                )
            );
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q
                    .bind(r.tenant_id.as_deref())
                    .bind(r.queue.as_str())
                    .bind(r.job_id.as_str())
                    .bind(r.name.as_str())
                    .bind(r.attempt)
                    .bind(r.status.as_str())
                    .bind(r.started_at)
                    .bind(r.finished_at)
                    .bind(r.finished_at - r.started_at)
                    .bind(r.error.as_deref())
                    .bind(r.worker.as_str())
                    .bind(r.trace_id.as_str())
                    .bind(r.plugin_id.as_deref())
                    .bind(r.error_stack.as_deref());
            }
            let rows = q
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| db_err("job runs", e))?;
            // Match ids back by (queue, job, attempt): RETURNING order is not promised.
            let mut ids = std::collections::HashMap::new();
            for row in &rows {
                let key: (String, String, i64) = (
                    row.try_get("queue").map_err(|e| db_err("job runs", e))?,
                    row.try_get("job_id").map_err(|e| db_err("job runs", e))?,
                    row.try_get("attempt").map_err(|e| db_err("job runs", e))?,
                );
                let id: i64 = row.try_get("id").map_err(|e| db_err("job runs", e))?;
                ids.entry(key).or_insert_with(Vec::new).push(id);
            }
            // The start and the end are the run row itself (`get_run` shows them as events);
            // the events table holds what the row cannot: a failure's detail.
            let failed: Vec<&NewRun> = chunk.iter().filter(|r| r.error.is_some()).collect();
            if !failed.is_empty() {
                let sql = multi_insert(
                    "keel_job_run_events (run_id, at, kind, detail)",
                    4,
                    failed.len(),
                );
                let mut q = sqlx::query(&sql);
                for r in failed {
                    let id = ids
                        .get_mut(&(r.queue.clone(), r.job_id.clone(), r.attempt))
                        .and_then(|v| v.pop())
                        .ok_or_else(|| StoreError::Database("a run id was not returned".into()))?;
                    q = q
                        .bind(id)
                        .bind(r.finished_at)
                        .bind("error")
                        .bind(r.error.as_deref());
                }
                q.execute(&mut *tx)
                    .await
                    .map_err(|e| db_err("job run events", e))?;
            }
        }
        tx.commit().await.map_err(|e| db_err("job runs", e))
    }
}

#[async_trait]
impl RunStore for SqlStore {
    async fn insert_runs(&self, runs: &[NewRun]) -> Result<()> {
        if runs.is_empty() {
            return Ok(());
        }
        if let Some(pg) = &self.copy {
            // Runs without an error need no id back (they have no event rows): COPY them.
            let (plain, failed): (Vec<&NewRun>, Vec<&NewRun>) =
                runs.iter().partition(|r| r.error.is_none());
            if !plain.is_empty() {
                copy_runs(pg, &plain).await?;
            }
            if failed.is_empty() {
                return Ok(());
            }
            let failed: Vec<NewRun> = failed.into_iter().cloned().collect();
            return self.insert_runs_sql(&failed).await;
        }
        self.insert_runs_sql(runs).await
    }

    async fn list_runs(
        &self,
        scope: &Scope,
        f: &RunFilter,
        page: i64,
        limit: i64,
    ) -> Result<Page<JobRun>> {
        let mut w = Where::default();
        w.scope(scope);
        if let Some(q) = &f.queue {
            w.text("queue = ?", q);
        }
        if let Some(s) = &f.status {
            w.text("status = ?", s);
        }
        if let Some(p) = &f.plugin {
            w.text("plugin_id = ?", p);
        }
        if let Some(j) = &f.job_id {
            w.text("job_id = ?", j);
        }
        if let Some(v) = f.from {
            w.int("started_at >= ?", v);
        }
        if let Some(v) = f.to {
            w.int("started_at <= ?", v);
        }
        self.page(
            Listing {
                what: "job runs",
                table: "keel_job_runs",
                columns: RUN_COLUMNS,
                order: "id DESC",
            },
            &w,
            (page, limit),
            run_from,
        )
        .await
    }

    async fn get_run(&self, scope: &Scope, id: i64) -> Result<Option<(JobRun, Vec<RunEvent>)>> {
        let mut w = Where::default();
        w.int("id = ?", id);
        w.scope(scope);
        let sql = format!("SELECT {RUN_COLUMNS} FROM keel_job_runs{}", w.sql());
        let row = w
            .bind(sqlx::query(&sql))
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_err("job run", e))?;
        let Some(row) = row else { return Ok(None) };
        let run = run_from(&row).map_err(|e| db_err("job run", e))?;
        let stored = sqlx::query(
            "SELECT at, kind, detail FROM keel_job_run_events WHERE run_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_err("job run events", e))?
        .iter()
        .map(|r| {
            Ok(RunEvent {
                at: r.try_get("at")?,
                kind: r.try_get("kind")?,
                detail: r.try_get("detail")?,
            })
        })
        .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
        .map_err(|e| db_err("job run events", e))?;
        let mut events = vec![RunEvent {
            at: run.started_at,
            kind: "started".into(),
            detail: None,
        }];
        events.extend(stored);
        if let Some(at) = run.finished_at {
            events.push(RunEvent {
                at,
                kind: run.status.clone(),
                detail: run.error.clone(),
            });
        }
        Ok(Some((run, events)))
    }

    async fn runs_per_minute(&self, scope: &Scope, since: i64) -> Result<Vec<MinuteCounts>> {
        let mut w = Where::default();
        w.int("finished_at >= ?", since);
        // A postponement by a rate limit is not an attempt.
        w.text("status <> ?", "delayed");
        w.scope(scope);
        let sql = format!(
            "SELECT finished_at / 60000 AS m, \
             SUM(CASE WHEN status = 'completed' THEN 1 ELSE 0 END) AS completed, \
             SUM(CASE WHEN status = 'completed' THEN 0 ELSE 1 END) AS failed \
             FROM keel_job_runs{} GROUP BY finished_at / 60000 ORDER BY m",
            w.sql()
        );
        w.bind(sqlx::query(&sql))
            .fetch_all(&self.pool)
            .await
            .and_then(|rows| {
                rows.iter()
                    .map(|r| {
                        Ok(MinuteCounts {
                            minute: r.try_get::<i64, _>("m")? * 60_000,
                            completed: r.try_get("completed")?,
                            failed: r.try_get("failed")?,
                        })
                    })
                    .collect()
            })
            .map_err(|e| db_err("job runs per minute", e))
    }
}
