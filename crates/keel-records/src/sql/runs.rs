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

/// The columns a run is inserted with (its id is the database's, or taken before for `COPY`).
pub(super) const INSERT_COLUMNS: &str = "tenant_id, queue, job_id, name, attempt, status, started_at, finished_at, duration_ms, error, worker, trace_id, plugin_id, error_stack, ai_provider, ai_model, ai_status, prompt_tokens, completion_tokens, cost_usd, latency_ms, http_status, ai_messages, ai_events, ai_message_count, ai_event_count";

/// The AI call a run carries, as its columns hold it (all `None` without one).
#[derive(Default)]
pub(super) struct AiColumns<'a> {
    pub(super) provider: Option<&'a str>,
    pub(super) model: Option<&'a str>,
    pub(super) status: Option<&'a str>,
    pub(super) prompt_tokens: Option<i64>,
    pub(super) completion_tokens: Option<i64>,
    pub(super) cost_usd: Option<f64>,
    pub(super) latency_ms: Option<i64>,
    pub(super) http_status: Option<i64>,
    /// `[{role, content, truncated}]`.
    pub(super) messages: Option<String>,
    /// `[{at, kind, message}]` (the last, the call's end, is the row itself).
    pub(super) events: Option<String>,
    pub(super) message_count: Option<i64>,
    pub(super) event_count: Option<i64>,
}

impl<'a> AiColumns<'a> {
    pub(super) fn of(run: &'a NewRun) -> AiColumns<'a> {
        let Some(ai) = run.ai.as_deref() else {
            return AiColumns::default();
        };
        // Vectors of plain structs: serializing them cannot fail.
        let json = |v: serde_json::Result<String>| Some(v.unwrap_or_else(|_| "[]".into()));
        AiColumns {
            provider: Some(&ai.provider),
            model: Some(&ai.model),
            status: Some(&ai.status),
            prompt_tokens: Some(ai.prompt_tokens),
            completion_tokens: Some(ai.completion_tokens),
            cost_usd: Some(ai.cost_usd),
            latency_ms: Some(ai.latency_ms),
            http_status: ai.http_status,
            messages: json(serde_json::to_string(&ai.messages)),
            events: json(serde_json::to_string(&ai.events)),
            message_count: Some(ai.messages.len() as i64),
            event_count: Some(ai.events.len() as i64),
        }
    }
}

impl SqlStore {
    /// Runs by multi-row INSERT (with their failure events), in one transaction; their ids.
    async fn insert_runs_sql(&self, runs: &[NewRun]) -> Result<Vec<i64>> {
        // One multi-row INSERT for the runs and one for their events, per chunk of 500 (26
        // parameters a row: well inside both databases' parameter limits).
        let mut tx = self.pool.begin().await.map_err(|e| db_err("job runs", e))?;
        let mut all = Vec::with_capacity(runs.len());
        for chunk in runs.chunks(500) {
            let sql = format!(
                "{} RETURNING id, queue, job_id, attempt, status, started_at",
                multi_insert(
                    &format!("keel_job_runs ({INSERT_COLUMNS})"),
                    26,
                    chunk.len()
                )
            );
            let mut q = sqlx::query(&sql);
            for r in chunk {
                let ai = AiColumns::of(r);
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
                    .bind(r.error_stack.as_deref())
                    .bind(ai.provider)
                    .bind(ai.model)
                    .bind(ai.status)
                    .bind(ai.prompt_tokens)
                    .bind(ai.completion_tokens)
                    .bind(ai.cost_usd)
                    .bind(ai.latency_ms)
                    .bind(ai.http_status)
                    .bind(ai.messages)
                    .bind(ai.events)
                    .bind(ai.message_count)
                    .bind(ai.event_count);
            }
            let rows = q
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| db_err("job runs", e))?;
            // Match ids back by (queue, job, attempt, status, start): RETURNING order is not
            // promised (a stall and the attempt after it share their attempt number).
            type Key = (String, String, i64, String, i64);
            let mut by_key: std::collections::HashMap<Key, Vec<i64>> =
                std::collections::HashMap::new();
            for row in &rows {
                let key = (|| -> std::result::Result<(Key, i64), sqlx::Error> {
                    Ok((
                        (
                            row.try_get("queue")?,
                            row.try_get("job_id")?,
                            row.try_get("attempt")?,
                            row.try_get("status")?,
                            row.try_get("started_at")?,
                        ),
                        row.try_get("id")?,
                    ))
                })()
                .map_err(|e| db_err("job runs", e))?;
                by_key.entry(key.0).or_default().push(key.1);
            }
            let mut ids = Vec::with_capacity(chunk.len());
            for r in chunk {
                let key = (
                    r.queue.clone(),
                    r.job_id.clone(),
                    r.attempt,
                    r.status.clone(),
                    r.started_at,
                );
                let id = by_key
                    .get_mut(&key)
                    .and_then(|v| v.pop())
                    .ok_or_else(|| StoreError::Database("a run id was not returned".into()))?;
                ids.push(id);
            }
            // The start and the end are the run row itself (`get_run` shows them as events);
            // the events table holds what the row cannot: a failure's detail.
            let failed: Vec<(i64, &NewRun)> = ids
                .iter()
                .zip(chunk)
                .filter(|(_, r)| r.error.is_some())
                .map(|(id, r)| (*id, r))
                .collect();
            if !failed.is_empty() {
                let sql = multi_insert(
                    "keel_job_run_events (run_id, at, kind, detail)",
                    4,
                    failed.len(),
                );
                let mut q = sqlx::query(&sql);
                for (id, r) in failed {
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
            all.extend(ids);
        }
        tx.commit().await.map_err(|e| db_err("job runs", e))?;
        Ok(all)
    }
}

#[async_trait]
impl RunStore for SqlStore {
    async fn insert_runs(&self, runs: &[NewRun]) -> Result<Vec<i64>> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(pg) = &self.copy {
            return copy_runs(pg, runs).await;
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
