//! Writing instance and step rows. PostgreSQL takes a batch as one JSON parameter
//! (`json_to_recordset`): one statement text whatever the batch size, so each connection
//! prepares it once and plans it generically, and the client binds one value instead of 16 or
//! 18 a row. SQLite takes multi-row `VALUES` (it has no planner cost to save and binds cheaply
//! in process).

use serde::Serialize;
use sqlx::{Any, Transaction};

use super::{db_err, multi_insert};
use crate::error::Result;
use crate::workflow::{Instance, StepExecution};

/// Rows per multi-row statement on SQLite (18 columns: far inside its parameter limit).
const CHUNK: usize = 400;

const INSTANCE_COLUMNS: &str = "id, tenant_id, workflow, version, status, input, error, trigger_kind, trigger_ref, actor, reruns, created_at, started_at, finished_at, updated_at, rev";
const INSTANCE_TYPES: &str = "id text, tenant_id text, workflow text, version bigint, status text, input text, error text, trigger_kind text, trigger_ref text, actor text, reruns bigint, created_at bigint, started_at bigint, finished_at bigint, updated_at bigint, rev bigint";
/// A new instance never overwrites one that exists: a create that meets a row another
/// transaction committed meanwhile inserts nothing, and the batch is written again.
const INSTANCE_CREATE: &str = "ON CONFLICT (id) DO NOTHING";
const INSTANCE_UPDATE: &str = "ON CONFLICT (id) DO UPDATE SET status = excluded.status, error = excluded.error, started_at = excluded.started_at, finished_at = excluded.finished_at, reruns = excluded.reruns, updated_at = excluded.updated_at, rev = keel_wf_instances.rev + 1";
const STEP_COLUMNS: &str = "instance_id, step, position, queue, job_name, needs, on_failure, status, attempts, job_id, input, output, error, stack, queued_at, started_at, finished_at, duration_ms";
const STEP_TYPES: &str = "instance_id text, step text, position bigint, queue text, job_name text, needs text, on_failure text, status text, attempts bigint, job_id text, input text, output text, error text, stack text, queued_at bigint, started_at bigint, finished_at bigint, duration_ms bigint";
const STEP_UPDATE: &str = "ON CONFLICT (instance_id, step) DO UPDATE SET status = excluded.status, attempts = excluded.attempts, job_id = excluded.job_id, input = excluded.input, output = excluded.output, error = excluded.error, stack = excluded.stack, queued_at = excluded.queued_at, started_at = excluded.started_at, finished_at = excluded.finished_at, duration_ms = excluded.duration_ms";

/// An instance row, in [`INSTANCE_COLUMNS`] order.
#[derive(Serialize)]
struct InstanceRow<'a> {
    id: &'a str,
    tenant_id: Option<&'a str>,
    workflow: &'a str,
    version: i64,
    status: &'a str,
    input: String,
    error: Option<&'a str>,
    trigger_kind: &'a str,
    trigger_ref: Option<&'a str>,
    actor: &'a str,
    reruns: i64,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    updated_at: i64,
    rev: i64,
}

impl<'a> InstanceRow<'a> {
    fn of(i: &'a Instance, rev: i64) -> InstanceRow<'a> {
        InstanceRow {
            id: &i.id,
            tenant_id: i.tenant_id.as_deref(),
            workflow: &i.workflow,
            version: i.version,
            status: i.status.as_str(),
            input: i.input.to_string(),
            error: i.error.as_deref(),
            trigger_kind: &i.trigger.kind,
            trigger_ref: i.trigger.reference.as_deref(),
            actor: &i.actor,
            reruns: i.reruns,
            created_at: i.created_at,
            started_at: i.started_at,
            finished_at: i.finished_at,
            updated_at: i.updated_at,
            rev,
        }
    }
}

/// A step row, in [`STEP_COLUMNS`] order (JSON values as their text, as stored).
#[derive(Serialize)]
struct StepRow<'a> {
    instance_id: &'a str,
    step: &'a str,
    position: i64,
    queue: &'a str,
    job_name: &'a str,
    needs: String,
    on_failure: &'a str,
    status: &'a str,
    attempts: i64,
    job_id: Option<&'a str>,
    input: Option<String>,
    output: Option<String>,
    error: Option<&'a str>,
    stack: Option<&'a str>,
    queued_at: Option<i64>,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    duration_ms: Option<i64>,
}

impl<'a> StepRow<'a> {
    fn of(instance_id: &'a str, s: &'a StepExecution) -> StepRow<'a> {
        StepRow {
            instance_id,
            step: &s.step,
            position: s.position,
            queue: &s.queue,
            job_name: &s.job_name,
            needs: serde_json::to_string(&s.needs).unwrap_or_else(|_| "[]".into()),
            on_failure: s.on_failure.as_str(),
            status: s.status.as_str(),
            attempts: s.attempts,
            job_id: s.job_id.as_deref(),
            input: s.input.as_ref().map(|v| v.to_string()),
            output: s.output.as_ref().map(|v| v.to_string()),
            error: s.error.as_deref(),
            stack: s.stack.as_deref(),
            queued_at: s.queued_at,
            started_at: s.started_at,
            finished_at: s.finished_at,
            duration_ms: s.duration_ms,
        }
    }
}

/// The statement that upserts a JSON array of rows (parameter `param`) on PostgreSQL.
fn from_json(table: &str, columns: &str, types: &str, update: &str, param: usize) -> String {
    format!(
        "INSERT INTO {table} ({columns}) SELECT {columns} FROM json_to_recordset(${param}::json) AS x({types}) {update}"
    )
}

fn instances_sql(on_conflict: &str, param: usize) -> String {
    from_json(
        "keel_wf_instances",
        INSTANCE_COLUMNS,
        INSTANCE_TYPES,
        on_conflict,
        param,
    )
}

fn steps_sql(param: usize) -> String {
    from_json(
        "keel_wf_steps",
        STEP_COLUMNS,
        STEP_TYPES,
        STEP_UPDATE,
        param,
    )
}

/// `rows` as one JSON array.
fn encode<T: Serialize>(what: &str, rows: &[T]) -> Result<String> {
    serde_json::to_string(rows).map_err(|e| db_err(what, sqlx::Error::Encode(Box::new(e))))
}

/// The instance rows of one batch: those it creates (no row was there when it locked) and
/// those it updates (locked), each with the revision it is written at.
pub(super) struct InstanceWrites<'a> {
    pub(super) created: Vec<(&'a Instance, i64)>,
    pub(super) updated: Vec<(&'a Instance, i64)>,
}

/// Inserts the created instances, updates the updated ones and upserts the step rows of one
/// batch: on PostgreSQL in one statement (data-modifying `WITH`s), one round trip. Returns
/// whether every created instance was inserted — `false` when another transaction created
/// one of them meanwhile (PostgreSQL locks no row that does not exist yet), and the caller
/// must roll back and write the batch again, on the row that now exists.
pub(super) async fn upsert(
    database: &str,
    tx: &mut Transaction<'static, Any>,
    instances: &InstanceWrites<'_>,
    steps: &[(&str, &StepExecution)],
) -> Result<bool> {
    if database != "postgres" {
        let created = insert_instances(tx, &instances.created, INSTANCE_CREATE).await?;
        insert_instances(tx, &instances.updated, INSTANCE_UPDATE).await?;
        upsert_steps(tx, steps).await?;
        return Ok(created == instances.created.len() as u64);
    }
    if instances.created.is_empty() && instances.updated.is_empty() && steps.is_empty() {
        return Ok(true);
    }
    let s: Vec<StepRow> = steps.iter().map(|(id, s)| StepRow::of(id, s)).collect();
    // One statement text whatever the batch: empty arrays insert nothing.
    let sql = format!(
        "WITH c AS ({} RETURNING 1), u AS ({} RETURNING 1), s AS ({} RETURNING 1) \
         SELECT CAST(COUNT(*) AS BIGINT) FROM c",
        instances_sql(INSTANCE_CREATE, 1),
        instances_sql(INSTANCE_UPDATE, 2),
        steps_sql(3)
    );
    let mut q = sqlx::query_scalar::<_, i64>(&sql);
    for p in [
        encode("workflow instances", &instance_rows(&instances.created))?,
        encode("workflow instances", &instance_rows(&instances.updated))?,
        encode("workflow steps", &s)?,
    ] {
        q = q.bind(p);
    }
    let created = q
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| db_err("workflow instances", e))?;
    Ok(created == instances.created.len() as i64)
}

fn instance_rows<'a>(v: &[(&'a Instance, i64)]) -> Vec<InstanceRow<'a>> {
    v.iter().map(|(i, r)| InstanceRow::of(i, *r)).collect()
}

/// Inserts the instance rows `rows` (each with the revision it is written at) with
/// `on_conflict` (SQLite); the number of rows written.
async fn insert_instances(
    tx: &mut Transaction<'static, Any>,
    rows: &[(&Instance, i64)],
    on_conflict: &str,
) -> Result<u64> {
    let mut written = 0;
    for chunk in rows.chunks(CHUNK) {
        let sql = format!(
            "{} {on_conflict}",
            multi_insert(
                &format!("keel_wf_instances ({INSTANCE_COLUMNS})"),
                16,
                chunk.len()
            )
        );
        let mut q = sqlx::query(&sql);
        for (i, rev) in chunk {
            let r = InstanceRow::of(i, *rev);
            q = q
                .bind(r.id)
                .bind(r.tenant_id)
                .bind(r.workflow)
                .bind(r.version)
                .bind(r.status)
                .bind(r.input)
                .bind(r.error)
                .bind(r.trigger_kind)
                .bind(r.trigger_ref)
                .bind(r.actor)
                .bind(r.reruns)
                .bind(r.created_at)
                .bind(r.started_at)
                .bind(r.finished_at)
                .bind(r.updated_at)
                .bind(r.rev);
        }
        written += q
            .execute(&mut **tx)
            .await
            .map_err(|e| db_err("workflow instances", e))?
            .rows_affected();
    }
    Ok(written)
}

/// Inserts or updates the step rows `rows` (instance id, step) (SQLite).
async fn upsert_steps(
    tx: &mut Transaction<'static, Any>,
    rows: &[(&str, &StepExecution)],
) -> Result<()> {
    for chunk in rows.chunks(CHUNK) {
        let sql = format!(
            "{} {STEP_UPDATE}",
            multi_insert(&format!("keel_wf_steps ({STEP_COLUMNS})"), 18, chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for (id, s) in chunk {
            let r = StepRow::of(id, s);
            q = q
                .bind(r.instance_id)
                .bind(r.step)
                .bind(r.position)
                .bind(r.queue)
                .bind(r.job_name)
                .bind(r.needs)
                .bind(r.on_failure)
                .bind(r.status)
                .bind(r.attempts)
                .bind(r.job_id)
                .bind(r.input)
                .bind(r.output)
                .bind(r.error)
                .bind(r.stack)
                .bind(r.queued_at)
                .bind(r.started_at)
                .bind(r.finished_at)
                .bind(r.duration_ms);
        }
        q.execute(&mut **tx)
            .await
            .map_err(|e| db_err("workflow steps", e))?;
    }
    Ok(())
}
