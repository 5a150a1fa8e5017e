//! PostgreSQL's `COPY … FROM STDIN` for bulk writes (audit and access logs, job runs with the
//! AI calls they carry), which `sqlx::Any` cannot do: a batch costs a fraction of
//! the INSERTs.

use crate::error::Result;
use crate::model::{NewAccess, NewAudit, NewRun};

use super::db_err;
use super::runs::{AiColumns, INSERT_COLUMNS};

/// One COPY field in PostgreSQL's text format: the text between the bytes to escape is copied
/// whole (found with `memchr`: a prompt or an answer is long, its escapes few).
fn copy_field(out: &mut String, v: Option<&str>) {
    let Some(s) = v else {
        out.push_str("\\N");
        return;
    };
    let bytes = s.as_bytes();
    // A carriage return is rare: the three others are searched for together.
    let has_cr = memchr::memchr(b'\r', bytes).is_some();
    let mut from = 0;
    let mut escape = |i: usize, out: &mut String| {
        // An ASCII byte: `i` and `i + 1` are character boundaries.
        out.push_str(&s[from..i]);
        out.push_str(match bytes[i] {
            b'\\' => "\\\\",
            b'\t' => "\\t",
            b'\n' => "\\n",
            _ => "\\r",
        });
        from = i + 1;
    };
    if has_cr {
        let mut at: Vec<usize> = memchr::memchr3_iter(b'\\', b'\t', b'\n', bytes)
            .chain(memchr::memchr_iter(b'\r', bytes))
            .collect();
        at.sort_unstable();
        for i in at {
            escape(i, out);
        }
    } else {
        for i in memchr::memchr3_iter(b'\\', b'\t', b'\n', bytes) {
            escape(i, out);
        }
    }
    out.push_str(&s[from..]);
}

/// Appends one row of COPY text.
fn copy_row(data: &mut String, fields: &[Option<&str>]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            data.push('\t');
        }
        copy_field(data, *f);
    }
    data.push('\n');
}

/// Sends `data` with `COPY <target> FROM STDIN` on `conn`.
pub(super) async fn copy_in(
    conn: &mut sqlx::PgConnection,
    what: &str,
    target: &str,
    data: String,
) -> Result<()> {
    let mut copy = conn
        .copy_in_raw(&format!("COPY {target} FROM STDIN"))
        .await
        .map_err(|e| db_err(what, e))?;
    copy.send(data.into_bytes())
        .await
        .map_err(|e| db_err(what, e))?;
    copy.finish().await.map_err(|e| db_err(what, e))?;
    Ok(())
}

/// Writes audit and access entries with `COPY` (PostgreSQL), in one transaction.
pub(super) async fn copy_logs(
    pg: &sqlx::PgPool,
    audit: &[NewAudit],
    access: &[NewAccess],
) -> Result<()> {
    let now = (keel_core::now_ms() as i64).to_string();
    let audit_data = (!audit.is_empty()).then(|| {
        let mut data = String::with_capacity(audit.len() * 200);
        for e in audit {
            let status = e.status.to_string();
            let payload = e.payload.as_ref().map(|p| p.to_string());
            copy_row(
                &mut data,
                &[
                    e.tenant_id.as_deref(),
                    Some(&now),
                    Some(&e.actor),
                    Some(&e.action),
                    Some(&e.resource),
                    e.ip.as_deref(),
                    e.user_agent.as_deref(),
                    Some(&status),
                    payload.as_deref(),
                ],
            );
        }
        data
    });
    let access_data = (!access.is_empty()).then(|| {
        let mut data = String::with_capacity(access.len() * 200);
        for e in access {
            let cached = (e.cached as i64).to_string();
            let fields = serde_json::to_string(&e.fields).unwrap_or_else(|_| "[]".into());
            copy_row(
                &mut data,
                &[
                    e.tenant_id.as_deref(),
                    Some(&now),
                    Some(&e.actor),
                    Some(&e.action),
                    Some(&e.resource),
                    e.ip.as_deref(),
                    e.user_agent.as_deref(),
                    Some(&cached),
                    Some(&fields),
                ],
            );
        }
        data
    });
    const AUDIT: &str =
        "keel_audit_log (tenant_id, at, actor, action, resource, ip, user_agent, status, payload)";
    const ACCESS: &str =
        "keel_access_log (tenant_id, at, actor, action, resource, ip, user_agent, cached, fields)";
    match (audit_data, access_data) {
        // One table: one COPY, atomic on its own — one round trip, no BEGIN/COMMIT.
        (Some(data), None) | (None, Some(data)) => {
            let (what, target) = if audit.is_empty() {
                ("access log", ACCESS)
            } else {
                ("audit log", AUDIT)
            };
            let mut conn = pg.acquire().await.map_err(|e| db_err(what, e))?;
            copy_in(&mut conn, what, target, data).await
        }
        (Some(a), Some(b)) => {
            let mut tx = pg.begin().await.map_err(|e| db_err("logs", e))?;
            copy_in(&mut tx, "audit log", AUDIT, a).await?;
            copy_in(&mut tx, "access log", ACCESS, b).await?;
            tx.commit().await.map_err(|e| db_err("logs", e))
        }
        (None, None) => Ok(()),
    }
}

/// Writes runs (with the AI calls they carry) and their failure events with `COPY … FROM
/// STDIN` (PostgreSQL); their ids, in order. The ids are taken from the runs' sequence first
/// (one statement for the whole batch), so the events can name their run without a
/// `RETURNING` round trip per row.
pub(super) async fn copy_runs(pg: &sqlx::PgPool, runs: &[NewRun]) -> Result<Vec<i64>> {
    const WHAT: &str = "job runs";
    let mut conn = pg.acquire().await.map_err(|e| db_err(WHAT, e))?;
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT nextval(pg_get_serial_sequence('keel_job_runs', 'id')) FROM generate_series(1, $1)",
    )
    .bind(runs.len() as i64)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| db_err(WHAT, e))?;
    // Room for the rows at once (an AI call's messages and events are most of its row).
    let size: usize = runs
        .iter()
        .map(|r| {
            200 + r.ai.as_deref().map_or(0, |a| {
                200 + a
                    .messages
                    .iter()
                    .map(|m| m.content.len() + 48)
                    .sum::<usize>()
                    + a.events
                        .iter()
                        .map(|e| 2 * e.message.len() + 48)
                        .sum::<usize>()
            })
        })
        .sum();
    let mut data = String::with_capacity(size);
    let mut events = String::new();
    for (r, id) in runs.iter().zip(&ids) {
        let id = id.to_string();
        let attempt = r.attempt.to_string();
        let started = r.started_at.to_string();
        let finished = r.finished_at.to_string();
        let duration = (r.finished_at - r.started_at).to_string();
        let ai = AiColumns::of(r);
        let number = |v: Option<i64>| v.map(|v| v.to_string());
        let (prompt, completion, latency, http) = (
            number(ai.prompt_tokens),
            number(ai.completion_tokens),
            number(ai.latency_ms),
            number(ai.http_status),
        );
        let cost = ai.cost_usd.map(|c| c.to_string());
        let (messages, events_n) = (number(ai.message_count), number(ai.event_count));
        let fields: [Option<&str>; 27] = [
            Some(&id),
            r.tenant_id.as_deref(),
            Some(&r.queue),
            Some(&r.job_id),
            Some(&r.name),
            Some(&attempt),
            Some(&r.status),
            Some(&started),
            Some(&finished),
            Some(&duration),
            r.error.as_deref(),
            Some(&r.worker),
            Some(&r.trace_id),
            r.plugin_id.as_deref(),
            r.error_stack.as_deref(),
            ai.provider,
            ai.model,
            ai.status,
            prompt.as_deref(),
            completion.as_deref(),
            cost.as_deref(),
            latency.as_deref(),
            http.as_deref(),
            ai.messages.as_deref(),
            ai.events.as_deref(),
            messages.as_deref(),
            events_n.as_deref(),
        ];
        copy_row(&mut data, &fields);
        // The start and the end are the run row itself; a failure's detail is an event.
        if let Some(error) = &r.error {
            copy_row(
                &mut events,
                &[Some(&id), Some(&finished), Some("error"), Some(error)],
            );
        }
    }
    let target = format!("keel_job_runs (id, {INSERT_COLUMNS})");
    if events.is_empty() {
        // One table: one COPY, atomic on its own (no BEGIN/COMMIT round trips).
        copy_in(&mut conn, WHAT, &target, data).await?;
    } else {
        let mut tx = sqlx::Acquire::begin(&mut *conn)
            .await
            .map_err(|e| db_err(WHAT, e))?;
        copy_in(&mut tx, WHAT, &target, data).await?;
        copy_in(
            &mut tx,
            "job run events",
            "keel_job_run_events (run_id, at, kind, detail)",
            events,
        )
        .await?;
        tx.commit().await.map_err(|e| db_err(WHAT, e))?;
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_fields_escape_the_text_format() {
        let mut out = String::new();
        copy_field(&mut out, Some("a\tb\nc\\d\re"));
        assert_eq!(out, "a\\tb\\nc\\\\d\\re");
        let mut out = String::new();
        copy_field(&mut out, Some("é\tü\\🦀\n"));
        assert_eq!(out, "é\\tü\\\\🦀\\n");
        let mut out = String::new();
        copy_field(&mut out, None);
        assert_eq!(out, "\\N");
        let mut out = String::new();
        copy_field(&mut out, Some("plain"));
        copy_field(&mut out, Some("\r\n|\n\r"));
        copy_field(&mut out, Some(""));
        assert_eq!(out, "plain\\r\\n|\\n\\r");
    }
}
