//! Email logs and AI runs, messages, events and tasks. An AI call is recorded on its job
//! run's row (its messages and events as JSON arrays there): the AI listings read those rows.

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::error::Result;
use crate::messages::{
    AiEvent, AiFilter, AiMessage, AiRun, AiTask, AiUsage, EmailFilter, EmailLog, NewAiRun, NewEmail,
};
use crate::model::{NewRun, Page, Scope};
use crate::store::{MessageStore, RunStore};

use super::{db_err, multi_insert, Listing, SqlStore, Where};

const EMAIL_COLUMNS: &str = "id, tenant_id, queue, job_id, job_name, attempt, template, recipient, subject, status, smtp_code, smtp_reply, message_id, error, actor, trace_id, created_at, duration_ms";
const RUN_COLUMNS: &str = "id, tenant_id, queue, job_id, job_name, attempt, provider, model, status, prompt_tokens, completion_tokens, cost_usd, latency_ms, http_status, error, trace_id, started_at, finished_at";
const MESSAGE_COLUMNS: &str = "id, run_id, position, role, content, truncated, created_at";
const EVENT_COLUMNS: &str = "id, run_id, trace_id, at, kind, message, model, status, prompt_tokens, completion_tokens, cost_usd, latency_ms, error";

/// The AI calls: the job runs that carry one, under an AI run's column names.
macro_rules! ai_runs {
    () => {
        "(SELECT id, tenant_id, queue, job_id, name AS job_name, attempt, \
         ai_provider AS provider, ai_model AS model, ai_status AS status, prompt_tokens, \
         completion_tokens, cost_usd, latency_ms, http_status, error, trace_id, started_at, \
         COALESCE(finished_at, started_at) AS finished_at \
         FROM keel_job_runs WHERE ai_model IS NOT NULL)"
    };
}

/// The run's columns a message or an event is filtered by, after its own.
macro_rules! run_filter_columns {
    () => {
        "r.tenant_id, r.queue, r.job_id, r.name AS job_name, r.ai_model AS model, \
         r.ai_status AS status"
    };
}

/// The run's columns an AI call's last event is made from.
macro_rules! end_columns {
    () => {
        ", r.prompt_tokens, r.completion_tokens, r.cost_usd, r.latency_ms, r.error"
    };
}

// The AI calls' messages and events, one row each (an id is the position in its run). They
// are JSON text on the run's row; PostgreSQL expands them as `json` (read as it is: several
// times faster than parsing into `jsonb`), SQLite with `json_each`.
const MESSAGES_PG: &str = concat!(
    "(SELECT m.ord - 1 AS id, r.id AS run_id, m.ord - 1 AS position, m.v->>'role' AS role, \
     m.v->>'content' AS content, \
     CAST(CASE WHEN (m.v->>'truncated')::boolean THEN 1 ELSE 0 END AS BIGINT) AS truncated, \
     r.started_at AS created_at, ",
    run_filter_columns!(),
    " FROM keel_job_runs r CROSS JOIN LATERAL \
     json_array_elements(r.ai_messages::json) WITH ORDINALITY AS m(v, ord) \
     WHERE r.ai_model IS NOT NULL) t"
);
const MESSAGES_SQLITE: &str = concat!(
    "(SELECT m.key AS id, r.id AS run_id, m.key AS position, \
     json_extract(m.value, '$.role') AS role, json_extract(m.value, '$.content') AS content, \
     CASE WHEN json_extract(m.value, '$.truncated') THEN 1 ELSE 0 END AS truncated, \
     r.started_at AS created_at, ",
    run_filter_columns!(),
    " FROM keel_job_runs r, json_each(r.ai_messages) m WHERE r.ai_model IS NOT NULL) t"
);
// An AI call's last event, `completed` or `failed`, is the row itself, as a job run's end is:
// each run's stored events are followed by it, after their positions, with the detail made
// from the columns when read (see [`CallEnd`]). Within each run (a lateral `UNION ALL` on
// PostgreSQL, one more array element on SQLite), so that the newest page still reads the runs
// newest first by their key and stops.
const EVENTS_PG: &str = concat!(
    "(SELECT e.id, r.id AS run_id, r.trace_id, e.at, e.kind, e.message, ",
    run_filter_columns!(),
    end_columns!(),
    " FROM keel_job_runs r CROSS JOIN LATERAL \
     (SELECT x.ord - 1 AS id, CAST(x.v->>'at' AS BIGINT) AS at, x.v->>'kind' AS kind, \
      x.v->>'message' AS message \
      FROM json_array_elements(r.ai_events::json) WITH ORDINALITY AS x(v, ord) \
      UNION ALL SELECT r.ai_event_count, COALESCE(r.finished_at, r.started_at), \
      CASE WHEN r.ai_status = 'completed' THEN 'completed' ELSE 'failed' END, NULL) e \
     WHERE r.ai_model IS NOT NULL) t"
);
const EVENTS_SQLITE: &str = concat!(
    "(SELECT e.key AS id, r.id AS run_id, r.trace_id, json_extract(e.value, '$.at') AS at, \
     json_extract(e.value, '$.kind') AS kind, json_extract(e.value, '$.message') AS message, ",
    run_filter_columns!(),
    end_columns!(),
    " FROM keel_job_runs r, json_each(json_insert(r.ai_events, '$[#]', json_object(\
     'at', COALESCE(r.finished_at, r.started_at), \
     'kind', CASE WHEN r.ai_status = 'completed' THEN 'completed' ELSE 'failed' END, \
     'message', NULL))) e WHERE r.ai_model IS NOT NULL) t"
);
/// How many messages the AI calls have (`n`), under the columns messages are filtered by:
/// a listing's total without expanding any JSON.
const MESSAGE_COUNTS: &str = "(SELECT id AS run_id, tenant_id, queue, job_id, name AS job_name, \
     ai_model AS model, ai_status AS status, started_at AS created_at, ai_message_count AS n \
     FROM keel_job_runs WHERE ai_model IS NOT NULL) c";
/// How many events (`n`, with the last), likewise; not by an event's own time.
const EVENT_COUNTS: &str = "(SELECT id AS run_id, tenant_id, queue, job_id, name AS job_name, \
     ai_model AS model, ai_status AS status, ai_event_count + 1 AS n \
     FROM keel_job_runs WHERE ai_model IS NOT NULL) c";
/// One row per AI job: its latest attempt's status and model, totals over all attempts.
const TASKS: &str = concat!(
    "(SELECT r.tenant_id, r.queue, r.job_id, r.job_name, r.status, r.model, \
     g.runs, g.last_run_id, g.total_tokens, g.cost_usd, g.started_at, g.finished_at \
     FROM (SELECT queue, job_id, COUNT(*) AS runs, MAX(id) AS last_run_id, \
     CAST(SUM(prompt_tokens + completion_tokens) AS BIGINT) AS total_tokens, \
     SUM(cost_usd) AS cost_usd, MIN(started_at) AS started_at, MAX(finished_at) AS finished_at \
     FROM ",
    ai_runs!(),
    " a GROUP BY queue, job_id) g JOIN ",
    ai_runs!(),
    " r ON r.id = g.last_run_id) t"
);
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

/// The detail of an AI call's last event, from its run's columns (its keys in order, as a
/// JSON object's are printed).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct CallEnd<'a> {
    completion_tokens: i64,
    cost_usd: f64,
    duration_ms: i64,
    error: Option<&'a str>,
    model: &'a str,
    prompt_tokens: i64,
    status: &'a str,
}

fn event_from(r: &AnyRow) -> std::result::Result<AiEvent, sqlx::Error> {
    let message = match r.try_get::<Option<String>, _>("message")? {
        Some(m) => m,
        None => {
            let (error, model, status): (Option<String>, String, String) = (
                r.try_get("error")?,
                r.try_get("model")?,
                r.try_get("status")?,
            );
            serde_json::to_string(&CallEnd {
                completion_tokens: r.try_get("completion_tokens")?,
                cost_usd: r.try_get("cost_usd")?,
                duration_ms: r.try_get("latency_ms")?,
                error: error.as_deref(),
                model: &model,
                prompt_tokens: r.try_get("prompt_tokens")?,
                status: &status,
            })
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?
        }
    };
    Ok(AiEvent {
        id: r.try_get("id")?,
        run_id: r.try_get("run_id")?,
        trace_id: r.try_get("trace_id")?,
        at: r.try_get("at")?,
        kind: r.try_get("kind")?,
        message,
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
            w.text(&format!("{column} = ?"), v);
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
        let rows: Vec<NewRun> = runs
            .iter()
            .map(|r| NewRun {
                tenant_id: r.tenant_id.clone(),
                queue: r.queue.clone(),
                job_id: r.job_id.clone(),
                name: r.job_name.clone(),
                attempt: r.attempt,
                status: match r.status.as_str() {
                    "completed" => "completed",
                    "retrying" => "failed",
                    _ => "dead",
                }
                .into(),
                started_at: r.started_at,
                finished_at: r.finished_at,
                error: r.error.clone(),
                worker: "keel-handlers".into(),
                trace_id: r.trace_id.clone(),
                plugin_id: None,
                error_stack: None,
                ai: Some(Box::new(r.clone())),
            })
            .collect();
        self.insert_runs(&rows).await
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
                table: concat!(ai_runs!(), " a"),
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
        self.page_counted(
            Listing {
                what: "AI messages",
                table: if self.database == "postgres" {
                    MESSAGES_PG
                } else {
                    MESSAGES_SQLITE
                },
                columns: MESSAGE_COLUMNS,
                order: "run_id, position",
            },
            &child_where(scope, f, "created_at"),
            (page, limit),
            message_from,
            // A message's time is its run's start: every filter is the run's.
            Some(MESSAGE_COUNTS),
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
        self.page_counted(
            Listing {
                what: "AI events",
                table: if self.database == "postgres" {
                    EVENTS_PG
                } else {
                    EVENTS_SQLITE
                },
                columns: EVENT_COLUMNS,
                // Newest first: a later run's events, and a run's later events, first.
                order: "run_id DESC, id DESC",
            },
            &child_where(scope, f, "at"),
            (page, limit),
            event_from,
            // By an event's own time, the events are counted one by one.
            (f.from.is_none() && f.to.is_none()).then_some(EVENT_COUNTS),
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
             FROM {} a{} GROUP BY started_at / 3600000, model ORDER BY h, model",
            ai_runs!(),
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
