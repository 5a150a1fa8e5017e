//! Email logs and AI runs, messages, events and tasks.

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::error::{Result, StoreError};
use crate::messages::{
    AiEvent, AiFilter, AiMessage, AiRun, AiTask, AiUsage, EmailFilter, EmailLog, NewAiRun, NewEmail,
};
use crate::model::{Page, Scope};
use crate::store::MessageStore;

use super::{db_err, multi_insert, Listing, SqlStore, Where};

const EMAIL_COLUMNS: &str = "id, tenant_id, queue, job_id, job_name, attempt, template, recipient, subject, status, smtp_code, smtp_reply, message_id, error, actor, trace_id, created_at, duration_ms";
const RUN_COLUMNS: &str = "id, tenant_id, queue, job_id, job_name, attempt, provider, model, status, prompt_tokens, completion_tokens, cost_usd, latency_ms, http_status, error, trace_id, started_at, finished_at";
const MESSAGE_COLUMNS: &str = "id, run_id, position, role, content, truncated, created_at";
const EVENT_COLUMNS: &str = "id, run_id, trace_id, at, kind, message";
/// One row per AI job: its latest attempt's status and model, totals over all attempts.
const TASKS: &str = "(SELECT r.tenant_id, r.queue, r.job_id, r.job_name, r.status, r.model, \
     g.runs, g.last_run_id, g.total_tokens, g.cost_usd, g.started_at, g.finished_at \
     FROM (SELECT queue, job_id, COUNT(*) AS runs, MAX(id) AS last_run_id, \
     CAST(SUM(prompt_tokens + completion_tokens) AS BIGINT) AS total_tokens, \
     SUM(cost_usd) AS cost_usd, MIN(started_at) AS started_at, MAX(finished_at) AS finished_at \
     FROM keel_ai_runs GROUP BY queue, job_id) g JOIN keel_ai_runs r ON r.id = g.last_run_id) t";
const TASK_COLUMNS: &str = "queue, job_id, job_name, status, model, runs, last_run_id, total_tokens, cost_usd, started_at, finished_at";

fn email_from(r: &AnyRow) -> std::result::Result<EmailLog, sqlx::Error> {
    Ok(EmailLog {
        id: r.try_get("id")?,
        email: NewEmail {
            tenant_id: r.try_get("tenant_id")?,
            queue: r.try_get("queue")?,
            job_id: r.try_get("job_id")?,
            job_name: r.try_get("job_name")?,
            attempt: r.try_get("attempt")?,
            template: r.try_get("template")?,
            recipient: r.try_get("recipient")?,
            subject: r.try_get("subject")?,
            status: r.try_get("status")?,
            smtp_code: r.try_get("smtp_code")?,
            smtp_reply: r.try_get("smtp_reply")?,
            message_id: r.try_get("message_id")?,
            error: r.try_get("error")?,
            actor: r.try_get("actor")?,
            trace_id: r.try_get("trace_id")?,
            created_at: r.try_get("created_at")?,
            duration_ms: r.try_get("duration_ms")?,
        },
    })
}

fn run_from(r: &AnyRow) -> std::result::Result<AiRun, sqlx::Error> {
    let prompt_tokens: i64 = r.try_get("prompt_tokens")?;
    let completion_tokens: i64 = r.try_get("completion_tokens")?;
    Ok(AiRun {
        id: r.try_get("id")?,
        total_tokens: prompt_tokens + completion_tokens,
        run: NewAiRun {
            tenant_id: r.try_get("tenant_id")?,
            queue: r.try_get("queue")?,
            job_id: r.try_get("job_id")?,
            job_name: r.try_get("job_name")?,
            attempt: r.try_get("attempt")?,
            provider: r.try_get("provider")?,
            model: r.try_get("model")?,
            status: r.try_get("status")?,
            prompt_tokens,
            completion_tokens,
            cost_usd: r.try_get("cost_usd")?,
            latency_ms: r.try_get("latency_ms")?,
            http_status: r.try_get("http_status")?,
            error: r.try_get("error")?,
            trace_id: r.try_get("trace_id")?,
            started_at: r.try_get("started_at")?,
            finished_at: r.try_get("finished_at")?,
            messages: Vec::new(),
            events: Vec::new(),
        },
    })
}

fn message_from(r: &AnyRow) -> std::result::Result<AiMessage, sqlx::Error> {
    Ok(AiMessage {
        id: r.try_get("id")?,
        run_id: r.try_get("run_id")?,
        position: r.try_get("position")?,
        role: r.try_get("role")?,
        content: r.try_get("content")?,
        truncated: r.try_get::<i64, _>("truncated")? != 0,
        created_at: r.try_get("created_at")?,
    })
}

fn event_from(r: &AnyRow) -> std::result::Result<AiEvent, sqlx::Error> {
    Ok(AiEvent {
        id: r.try_get("id")?,
        run_id: r.try_get("run_id")?,
        trace_id: r.try_get("trace_id")?,
        at: r.try_get("at")?,
        kind: r.try_get("kind")?,
        message: r.try_get("message")?,
    })
}

fn task_from(r: &AnyRow) -> std::result::Result<AiTask, sqlx::Error> {
    Ok(AiTask {
        queue: r.try_get("queue")?,
        job_id: r.try_get("job_id")?,
        job_name: r.try_get("job_name")?,
        status: r.try_get("status")?,
        model: r.try_get("model")?,
        runs: r.try_get("runs")?,
        last_run_id: r.try_get("last_run_id")?,
        total_tokens: r.try_get("total_tokens")?,
        cost_usd: r.try_get("cost_usd")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

/// The filter of runs (and tasks, whose rows have the same column names); `at` is the time
/// column.
fn run_where(scope: &Scope, f: &AiFilter, at: &str) -> Where {
    let mut w = Where::default();
    w.scope(scope);
    if let Some(v) = &f.status {
        w.text("status = ?", v);
    }
    if let Some(v) = &f.model {
        w.text("model = ?", v);
    }
    if let Some(v) = &f.queue {
        w.text("queue = ?", v);
    }
    if let Some(v) = &f.job_name {
        w.text("job_name = ?", v);
    }
    if let Some(v) = &f.job_id {
        w.text("job_id = ?", v);
    }
    if let Some(v) = f.run_id {
        w.int("id = ?", v);
    }
    if let Some(v) = f.from {
        w.int(&format!("{at} >= ?"), v);
    }
    if let Some(v) = f.to {
        w.int(&format!("{at} <= ?"), v);
    }
    w
}

/// The filter of messages and events: by their run, or by the run's job, model or queue.
fn child_where(scope: &Scope, f: &AiFilter, at: &str) -> Where {
    let mut w = Where::default();
    w.scope(scope);
    if let Some(v) = f.run_id {
        w.int("run_id = ?", v);
    }
    for (column, value) in [
        ("job_id", &f.job_id),
        ("model", &f.model),
        ("queue", &f.queue),
        ("job_name", &f.job_name),
        ("status", &f.status),
    ] {
        if let Some(v) = value {
            w.text(
                &format!("run_id IN (SELECT id FROM keel_ai_runs WHERE {column} = ?)"),
                v,
            );
        }
    }
    if let Some(v) = f.from {
        w.int(&format!("{at} >= ?"), v);
    }
    if let Some(v) = f.to {
        w.int(&format!("{at} <= ?"), v);
    }
    w
}

#[async_trait]
impl MessageStore for SqlStore {
    async fn record_emails(&self, emails: &[NewEmail]) -> Result<()> {
        if emails.is_empty() {
            return Ok(());
        }
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| db_err("email logs", e))?;
        // 17 parameters a row: 200 rows stay well inside both databases' limits.
        for chunk in emails.chunks(200) {
            let sql = multi_insert(
                "keel_email_logs (tenant_id, queue, job_id, job_name, attempt, template, recipient, subject, status, smtp_code, smtp_reply, message_id, error, actor, trace_id, created_at, duration_ms)",
                17,
                chunk.len(),
            );
            let mut q = sqlx::query(&sql);
            for e in chunk {
                q = q
                    .bind(e.tenant_id.as_deref())
                    .bind(e.queue.as_str())
                    .bind(e.job_id.as_str())
                    .bind(e.job_name.as_str())
                    .bind(e.attempt)
                    .bind(e.template.as_str())
                    .bind(e.recipient.as_str())
                    .bind(e.subject.as_str())
                    .bind(e.status.as_str())
                    .bind(e.smtp_code)
                    .bind(e.smtp_reply.as_deref())
                    .bind(e.message_id.as_deref())
                    .bind(e.error.as_deref())
                    .bind(e.actor.as_deref())
                    .bind(e.trace_id.as_str())
                    .bind(e.created_at)
                    .bind(e.duration_ms);
            }
            q.execute(&mut *tx)
                .await
                .map_err(|e| db_err("email logs", e))?;
        }
        tx.commit().await.map_err(|e| db_err("email logs", e))
    }

    async fn list_emails(
        &self,
        scope: &Scope,
        f: &EmailFilter,
        page: i64,
        limit: i64,
    ) -> Result<Page<EmailLog>> {
        let mut w = Where::default();
        w.scope(scope);
        if let Some(v) = &f.status {
            w.text("status = ?", v);
        }
        if let Some(v) = &f.template {
            w.text("template = ?", v);
        }
        if let Some(v) = &f.queue {
            w.text("queue = ?", v);
        }
        if let Some(v) = &f.job_id {
            w.text("job_id = ?", v);
        }
        if let Some(v) = f.from {
            w.int("created_at >= ?", v);
        }
        if let Some(v) = f.to {
            w.int("created_at <= ?", v);
        }
        self.page(
            Listing {
                what: "email logs",
                table: "keel_email_logs",
                columns: EMAIL_COLUMNS,
                order: "id DESC",
            },
            &w,
            (page, limit),
            email_from,
        )
        .await
    }

    async fn record_ai_runs(&self, runs: &[NewAiRun]) -> Result<Vec<i64>> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(pg) = &self.copy {
            return super::copy::copy_ai_runs(pg, runs).await;
        }
        let mut tx = self.pool.begin().await.map_err(|e| db_err("AI runs", e))?;
        let mut ids = Vec::with_capacity(runs.len());
        for chunk in runs.chunks(200) {
            let sql = format!(
                "{} RETURNING id, queue, job_id, attempt, started_at",
                multi_insert(
                    "keel_ai_runs (tenant_id, queue, job_id, job_name, attempt, provider, model, status, prompt_tokens, completion_tokens, cost_usd, latency_ms, http_status, error, trace_id, started_at, finished_at)",
                    17,
                    chunk.len(),
                )
            );
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q
                    .bind(r.tenant_id.as_deref())
                    .bind(r.queue.as_str())
                    .bind(r.job_id.as_str())
                    .bind(r.job_name.as_str())
                    .bind(r.attempt)
                    .bind(r.provider.as_str())
                    .bind(r.model.as_str())
                    .bind(r.status.as_str())
                    .bind(r.prompt_tokens)
                    .bind(r.completion_tokens)
                    .bind(r.cost_usd)
                    .bind(r.latency_ms)
                    .bind(r.http_status)
                    .bind(r.error.as_deref())
                    .bind(r.trace_id.as_str())
                    .bind(r.started_at)
                    .bind(r.finished_at);
            }
            let rows = q
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| db_err("AI runs", e))?;
            // Match ids back by (queue, job, attempt, start): RETURNING order is not promised.
            let mut by_key = std::collections::HashMap::new();
            for row in &rows {
                let key: (String, String, i64, i64) = (
                    row.try_get("queue").map_err(|e| db_err("AI runs", e))?,
                    row.try_get("job_id").map_err(|e| db_err("AI runs", e))?,
                    row.try_get("attempt").map_err(|e| db_err("AI runs", e))?,
                    row.try_get("started_at")
                        .map_err(|e| db_err("AI runs", e))?,
                );
                let id: i64 = row.try_get("id").map_err(|e| db_err("AI runs", e))?;
                by_key.entry(key).or_insert_with(Vec::new).push(id);
            }
            let mut chunk_ids = Vec::with_capacity(chunk.len());
            for r in chunk {
                let key = (r.queue.clone(), r.job_id.clone(), r.attempt, r.started_at);
                let id = by_key
                    .get_mut(&key)
                    .and_then(|v| v.pop())
                    .ok_or_else(|| StoreError::Database("an AI run id was not returned".into()))?;
                chunk_ids.push(id);
            }
            let messages: Vec<(i64, &NewAiRun, usize)> = chunk
                .iter()
                .zip(&chunk_ids)
                .flat_map(|(r, id)| (0..r.messages.len()).map(move |i| (*id, r, i)))
                .collect();
            for part in messages.chunks(500) {
                let sql = multi_insert(
                    "keel_ai_messages (run_id, tenant_id, position, role, content, truncated, created_at)",
                    7,
                    part.len(),
                );
                let mut q = sqlx::query(&sql);
                for (id, r, i) in part {
                    let m = &r.messages[*i];
                    q = q
                        .bind(*id)
                        .bind(r.tenant_id.as_deref())
                        .bind(*i as i64)
                        .bind(m.role.as_str())
                        .bind(m.content.as_str())
                        .bind(m.truncated as i64)
                        .bind(r.started_at);
                }
                q.execute(&mut *tx)
                    .await
                    .map_err(|e| db_err("AI messages", e))?;
            }
            let events: Vec<(i64, &NewAiRun, usize)> = chunk
                .iter()
                .zip(&chunk_ids)
                .flat_map(|(r, id)| (0..r.events.len()).map(move |i| (*id, r, i)))
                .collect();
            for part in events.chunks(500) {
                let sql = multi_insert(
                    "keel_ai_events (run_id, tenant_id, trace_id, at, kind, message)",
                    6,
                    part.len(),
                );
                let mut q = sqlx::query(&sql);
                for (id, r, i) in part {
                    let e = &r.events[*i];
                    q = q
                        .bind(*id)
                        .bind(r.tenant_id.as_deref())
                        .bind(r.trace_id.as_str())
                        .bind(e.at)
                        .bind(e.kind.as_str())
                        .bind(e.message.as_str());
                }
                q.execute(&mut *tx)
                    .await
                    .map_err(|e| db_err("AI events", e))?;
            }
            ids.extend(chunk_ids);
        }
        tx.commit().await.map_err(|e| db_err("AI runs", e))?;
        Ok(ids)
    }

    async fn list_ai_runs(
        &self,
        scope: &Scope,
        f: &AiFilter,
        page: i64,
        limit: i64,
    ) -> Result<Page<AiRun>> {
        self.page(
            Listing {
                what: "AI runs",
                table: "keel_ai_runs",
                columns: RUN_COLUMNS,
                order: "id DESC",
            },
            &run_where(scope, f, "started_at"),
            (page, limit),
            run_from,
        )
        .await
    }

    async fn ai_run(&self, scope: &Scope, id: i64) -> Result<Option<AiRun>> {
        let f = AiFilter {
            run_id: Some(id),
            ..Default::default()
        };
        Ok(self.list_ai_runs(scope, &f, 1, 1).await?.items.pop())
    }

    async fn list_ai_messages(
        &self,
        scope: &Scope,
        f: &AiFilter,
        page: i64,
        limit: i64,
    ) -> Result<Page<AiMessage>> {
        self.page(
            Listing {
                what: "AI messages",
                table: "keel_ai_messages",
                columns: MESSAGE_COLUMNS,
                order: "run_id, position",
            },
            &child_where(scope, f, "created_at"),
            (page, limit),
            message_from,
        )
        .await
    }

    async fn list_ai_events(
        &self,
        scope: &Scope,
        f: &AiFilter,
        page: i64,
        limit: i64,
    ) -> Result<Page<AiEvent>> {
        self.page(
            Listing {
                what: "AI events",
                table: "keel_ai_events",
                columns: EVENT_COLUMNS,
                // Newest first, in the events' key: run ids grow as event ids do.
                order: "run_id DESC, id DESC",
            },
            &child_where(scope, f, "at"),
            (page, limit),
            event_from,
        )
        .await
    }

    async fn list_ai_tasks(
        &self,
        scope: &Scope,
        f: &AiFilter,
        page: i64,
        limit: i64,
    ) -> Result<Page<AiTask>> {
        let mut f = f.clone();
        // A task has no run id of its own: the filter names its latest run.
        let last = f.run_id.take();
        let mut w = run_where(scope, &f, "started_at");
        if let Some(v) = last {
            w.int("last_run_id = ?", v);
        }
        self.page(
            Listing {
                what: "AI tasks",
                table: TASKS,
                columns: TASK_COLUMNS,
                order: "last_run_id DESC",
            },
            &w,
            (page, limit),
            task_from,
        )
        .await
    }

    async fn ai_usage(&self, scope: &Scope, since: i64) -> Result<Vec<AiUsage>> {
        let mut w = Where::default();
        w.int("started_at >= ?", since);
        w.scope(scope);
        let sql = format!(
            "SELECT started_at / 3600000 AS h, model, COUNT(*) AS runs, \
             CAST(SUM(CASE WHEN status = 'completed' THEN 0 ELSE 1 END) AS BIGINT) AS failed, \
             CAST(SUM(prompt_tokens + completion_tokens) AS BIGINT) AS total_tokens, \
             SUM(cost_usd) AS cost_usd, CAST(AVG(latency_ms) AS DOUBLE PRECISION) AS latency \
             FROM keel_ai_runs{} GROUP BY started_at / 3600000, model ORDER BY h, model",
            w.sql()
        );
        w.bind(sqlx::query(&sql))
            .fetch_all(&self.pool)
            .await
            .and_then(|rows| {
                rows.iter()
                    .map(|r| {
                        Ok(AiUsage {
                            hour: r.try_get::<i64, _>("h")? * 3_600_000,
                            model: r.try_get("model")?,
                            runs: r.try_get("runs")?,
                            failed: r.try_get("failed")?,
                            total_tokens: r.try_get("total_tokens")?,
                            cost_usd: r.try_get("cost_usd")?,
                            avg_latency_ms: r.try_get("latency")?,
                        })
                    })
                    .collect()
            })
            .map_err(|e| db_err("AI usage", e))
    }
}
