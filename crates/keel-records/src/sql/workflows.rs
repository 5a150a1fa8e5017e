//! Workflow definitions, instances and step executions.
//!
//! Over 600 lines: one trait's implementation ([`WorkflowStore`]) with the row decoders and the
//! lock/read/write-back helpers its batch write and its reads share; split, each half would
//! import most of the other.
//!
//! [`WorkflowStore::write_workflows`] is the engine's one write: a batch of creations and step
//! events in one transaction that first locks the instance rows it touches (PostgreSQL `FOR
//! UPDATE`, in id order so two batches never deadlock; SQLite by taking the write lock with an
//! `UPDATE`) reading their revisions, takes their state from what this process remembers at
//! that revision ([`super::workflow_cache`]) or reads it, applies [`WorkflowState::apply`] and
//! [`WorkflowState::settle`] and writes back only the rows that changed, raising each written
//! instance's revision ([`super::workflow_rows`]) — three statements per batch whatever its
//! size when the states are remembered.

use std::collections::HashMap;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::error::{Result, StoreError};
use crate::model::{Page, Scope};
use crate::store::WorkflowStore;
use crate::workflow::{
    Definition, Instance, InstanceFilter, InstanceStatus, NewDefinition, OnFailure, Settled,
    StepExecution, StepStatus, Trigger, WorkflowState, WorkflowWrite,
};

use super::{clamp_page, db_err, Listing, SqlStore, Where};

const INSTANCE_COLUMNS: &str = "id, tenant_id, workflow, version, status, input, error, trigger_kind, trigger_ref, actor, reruns, created_at, started_at, finished_at, updated_at";
const STEP_COLUMNS: &str = "instance_id, step, position, queue, job_name, needs, on_failure, status, attempts, job_id, input, output, error, stack, queued_at, started_at, finished_at, duration_ms";
const DEFINITION_COLUMNS: &str = "name, version, tenant_id, spec, source, created_by, created_at";
/// Rows per multi-row statement (18 columns: far inside both databases' parameter limits).
const CHUNK: usize = 400;

/// Tries of a batch whose new instances another writer created meanwhile.
const CREATE_TRIES: usize = 3;

fn json_of(row: &AnyRow, col: &str) -> std::result::Result<Value, sqlx::Error> {
    let s: String = row.try_get(col)?;
    serde_json::from_str(&s).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn opt_json_of(row: &AnyRow, col: &str) -> std::result::Result<Option<Value>, sqlx::Error> {
    let s: Option<String> = row.try_get(col)?;
    s.map(|s| serde_json::from_str(&s).map_err(|e| sqlx::Error::Decode(Box::new(e))))
        .transpose()
}

fn decode<E: std::error::Error + Send + Sync + 'static>(e: E) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(e))
}

fn instance_from(row: &AnyRow) -> std::result::Result<Instance, sqlx::Error> {
    let status: String = row.try_get("status")?;
    Ok(Instance {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        workflow: row.try_get("workflow")?,
        version: row.try_get("version")?,
        status: InstanceStatus::parse(&status, "status").map_err(decode)?,
        input: json_of(row, "input")?,
        error: row.try_get("error")?,
        trigger: Trigger {
            kind: row.try_get("trigger_kind")?,
            reference: row.try_get("trigger_ref")?,
        },
        actor: row.try_get("actor")?,
        reruns: row.try_get("reruns")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn step_from(row: &AnyRow) -> std::result::Result<(String, StepExecution), sqlx::Error> {
    let status: String = row.try_get("status")?;
    let on_failure: String = row.try_get("on_failure")?;
    let needs: String = row.try_get("needs")?;
    Ok((
        row.try_get("instance_id")?,
        StepExecution {
            step: row.try_get("step")?,
            position: row.try_get("position")?,
            queue: row.try_get("queue")?,
            job_name: row.try_get("job_name")?,
            needs: serde_json::from_str(&needs).map_err(decode)?,
            on_failure: OnFailure::parse(&on_failure).map_err(decode)?,
            status: StepStatus::parse(&status).map_err(decode)?,
            attempts: row.try_get("attempts")?,
            job_id: row.try_get("job_id")?,
            input: opt_json_of(row, "input")?,
            output: opt_json_of(row, "output")?,
            error: row.try_get("error")?,
            stack: row.try_get("stack")?,
            queued_at: row.try_get("queued_at")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            duration_ms: row.try_get("duration_ms")?,
        },
    ))
}

fn definition_from(row: &AnyRow) -> std::result::Result<Definition, sqlx::Error> {
    Ok(Definition {
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        tenant_id: row.try_get("tenant_id")?,
        spec: json_of(row, "spec")?,
        source: row.try_get("source")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
    })
}

fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

type AnyQuery<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>;

/// Binds `ids` in order (the `$n` of [`placeholders`]).
fn bind_ids<'q>(mut q: AnyQuery<'q>, ids: &'q [String]) -> AnyQuery<'q> {
    for id in ids {
        q = q.bind(id.as_str());
    }
    q
}

/// A definition is visible to a tenant when it is global or the tenant's own.
fn definition_scope(w: &mut Where, scope: &Scope) {
    if let Some(t) = scope.tenant() {
        w.text("(tenant_id IS NULL OR tenant_id = ?)", t);
    }
}

/// Column `col` of a locked row.
fn rev_of<T>(row: &AnyRow, col: &str) -> Result<T>
where
    T: for<'r> sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    row.try_get(col)
        .map_err(|e| db_err("workflow instances", e))
}

/// Instances locked by a transaction: their states, and the revision each was at.
struct Locked {
    states: Vec<WorkflowState>,
    revs: HashMap<String, i64>,
}

impl SqlStore {
    /// Locks the instance rows `ids` for the rest of `tx` and loads their state: what this
    /// process remembers when the row's revision is the remembered one, else the rows.
    async fn lock_states(
        &self,
        tx: &mut Transaction<'static, Any>,
        ids: &[String],
    ) -> Result<Locked> {
        let mut sorted = ids.to_vec();
        sorted.sort();
        sorted.dedup();
        let mut revs = HashMap::new();
        for chunk in sorted.chunks(CHUNK) {
            let sql = if self.database == "postgres" {
                // Locked in id order, so two batches never wait on each other in a circle. One
                // parameter an id (not one JSON array): the planner then knows each matches at
                // most one row and looks them up by key, even in a plan made when the table was
                // small.
                format!(
                    "SELECT id, rev FROM keel_wf_instances WHERE id IN ({}) ORDER BY id FOR UPDATE",
                    placeholders(1, chunk.len())
                )
            } else {
                // SQLite: begin with a write, so the transaction holds the write lock before it
                // reads (a read-then-write transaction can fail to upgrade under WAL).
                let sql = format!(
                    "UPDATE keel_wf_instances SET rev = rev WHERE id IN ({})",
                    placeholders(1, chunk.len())
                );
                let q = bind_ids(sqlx::query(&sql), chunk);
                q.execute(&mut **tx)
                    .await
                    .map_err(|e| db_err("workflow instances", e))?;
                format!(
                    "SELECT id, rev FROM keel_wf_instances WHERE id IN ({})",
                    placeholders(1, chunk.len())
                )
            };
            let q = bind_ids(sqlx::query(&sql), chunk);
            for row in q
                .fetch_all(&mut **tx)
                .await
                .map_err(|e| db_err("workflow instances", e))?
            {
                revs.insert(rev_of(&row, "id")?, rev_of(&row, "rev")?);
            }
        }
        let mut states = HashMap::new();
        let mut missed = Vec::new();
        for id in &sorted {
            let Some(rev) = revs.get(id) else { continue };
            match self.wf_states.take(id, *rev) {
                Some(st) => {
                    states.insert(id.clone(), st);
                }
                None => missed.push(id.clone()),
            }
        }
        for chunk in missed.chunks(CHUNK) {
            self.read_states(tx, chunk, &mut states).await?;
        }
        Ok(Locked {
            states: ids.iter().filter_map(|id| states.remove(id)).collect(),
            revs,
        })
    }

    /// Reads the instances `ids` (locked already) and their steps into `states`.
    async fn read_states(
        &self,
        tx: &mut Transaction<'static, Any>,
        ids: &[String],
        states: &mut HashMap<String, WorkflowState>,
    ) -> Result<()> {
        let sql = format!(
            "SELECT {INSTANCE_COLUMNS} FROM keel_wf_instances WHERE id IN ({})",
            placeholders(1, ids.len())
        );
        for row in bind_ids(sqlx::query(&sql), ids)
            .fetch_all(&mut **tx)
            .await
            .map_err(|e| db_err("workflow instances", e))?
        {
            let i = instance_from(&row).map_err(|e| db_err("workflow instances", e))?;
            states.insert(
                i.id.clone(),
                WorkflowState {
                    instance: i,
                    steps: Vec::new(),
                },
            );
        }
        let sql = format!(
            "SELECT {STEP_COLUMNS} FROM keel_wf_steps WHERE instance_id IN ({}) ORDER BY instance_id, position",
            placeholders(1, ids.len())
        );
        for row in bind_ids(sqlx::query(&sql), ids)
            .fetch_all(&mut **tx)
            .await
            .map_err(|e| db_err("workflow steps", e))?
        {
            let (id, s) = step_from(&row).map_err(|e| db_err("workflow steps", e))?;
            if let Some(st) = states.get_mut(&id) {
                st.steps.push(s);
            }
        }
        Ok(())
    }

    /// Writes back the instances and steps of `after` that differ from `before`, raising the
    /// revision of every instance written (`revs`: the revisions locked; a new instance starts
    /// at 1). Returns the revision of each state of `after` once committed, or `None` when
    /// another transaction created one of the new instances meanwhile: the caller rolls back
    /// and writes again.
    async fn write_back(
        &self,
        tx: &mut Transaction<'static, Any>,
        before: &HashMap<String, WorkflowState>,
        after: &[WorkflowState],
        revs: &HashMap<String, i64>,
    ) -> Result<Option<Vec<i64>>> {
        let mut instances = super::workflow_rows::InstanceWrites {
            created: Vec::new(),
            updated: Vec::new(),
        };
        let mut steps = Vec::new();
        let mut committed = Vec::with_capacity(after.len());
        for st in after {
            let old = before.get(&st.instance.id);
            let mut changed = old.map(|o| o.instance != st.instance).unwrap_or(true);
            for s in &st.steps {
                let unchanged = old
                    .and_then(|o| o.step(&s.step))
                    .map(|o| o == s)
                    .unwrap_or(false);
                if !unchanged {
                    steps.push((st.instance.id.as_str(), s));
                    changed = true;
                }
            }
            match revs.get(&st.instance.id) {
                None => {
                    instances.created.push((&st.instance, 1));
                    committed.push(1);
                }
                Some(rev) if changed => {
                    instances.updated.push((&st.instance, rev + 1));
                    committed.push(rev + 1);
                }
                Some(rev) => committed.push(*rev),
            }
        }
        let all_created =
            super::workflow_rows::upsert(self.database, tx, &instances, &steps).await?;
        Ok(all_created.then_some(committed))
    }

    /// Remembers each state at the revision it was committed at.
    fn remember(&self, states: &[&WorkflowState], revs: &[i64]) {
        for (st, rev) in states.iter().zip(revs) {
            self.wf_states.put(*rev, st);
        }
    }

    /// A transaction for workflow rows.
    async fn begin_workflows(&self) -> Result<Transaction<'static, Any>> {
        self.pool
            .begin()
            .await
            .map_err(|e| db_err("workflow instances", e))
    }

    /// One try of [`WorkflowStore::write_workflows`]: `None` (rolled back) when another
    /// transaction created one of its new instances meanwhile.
    async fn try_write_workflows(&self, writes: &[WorkflowWrite]) -> Result<Option<Vec<Settled>>> {
        if writes.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let now = keel_core::now_ms() as i64;
        let mut tx = self.begin_workflows().await?;
        let mut ids: Vec<String> = Vec::new();
        for w in writes {
            if !ids.iter().any(|i| i == w.instance_id()) {
                ids.push(w.instance_id().to_string());
            }
        }
        // Lock and read what exists; creations of new ids are written with the rest.
        let Locked { mut states, revs } = self.lock_states(&mut tx, &ids).await?;
        let before: HashMap<String, WorkflowState> = states
            .iter()
            .map(|s| (s.instance.id.clone(), s.clone()))
            .collect();
        let mut changed: HashMap<String, Vec<String>> = HashMap::new();
        for w in writes {
            match w {
                WorkflowWrite::Create(n) => {
                    if !states.iter().any(|s| s.instance.id == n.id) {
                        states.push(n.state(now));
                    }
                }
                WorkflowWrite::Step(u) => {
                    if let Some(st) = states.iter_mut().find(|s| s.instance.id == u.instance_id) {
                        let was = st.step(&u.step).map(|s| s.status);
                        if st.apply(u) && st.step(&u.step).map(|s| s.status) != was {
                            changed
                                .entry(u.instance_id.clone())
                                .or_default()
                                .push(u.step.clone());
                        }
                    }
                }
            }
        }
        let mut settled = Vec::with_capacity(states.len());
        for mut st in states {
            let was = before.get(&st.instance.id).map(|b| b.instance.status);
            let (ready, more) = st.settle(now);
            let mut steps_changed = changed.remove(&st.instance.id).unwrap_or_default();
            steps_changed.extend(more);
            // `updated_at` marks progress for the reconciler: a new instance, a change of its
            // own, or a step ending. Progress reports (queued, started) leave the instance row
            // alone — rewriting it at every report only made dead rows.
            let progressed = match before.get(&st.instance.id) {
                None => true,
                Some(b) => {
                    b.instance != st.instance
                        || st.steps.iter().any(|s| {
                            s.status.is_final()
                                && b.step(&s.step).map(|o| o.status) != Some(s.status)
                        })
                }
            };
            if progressed {
                st.instance.updated_at = now;
            }
            settled.push(Settled {
                instance_changed: was != Some(st.instance.status),
                state: st,
                ready,
                steps_changed,
            });
        }
        let states: Vec<WorkflowState> = settled.iter().map(|s| s.state.clone()).collect();
        let Some(committed) = self.write_back(&mut tx, &before, &states, &revs).await? else {
            return Ok(None);
        };
        tx.commit()
            .await
            .map_err(|e| db_err("workflow instances", e))?;
        self.remember(&states.iter().collect::<Vec<_>>(), &committed);
        Ok(Some(settled))
    }

    /// Locks one instance in scope, lets `change` alter it, writes it back.
    async fn change_instance(
        &self,
        scope: &Scope,
        id: &str,
        change: impl FnOnce(&mut WorkflowState, i64) -> Result<Vec<String>> + Send,
    ) -> Result<Settled> {
        let now = keel_core::now_ms() as i64;
        let mut tx = self.begin_workflows().await?;
        let Locked { mut states, revs } = self.lock_states(&mut tx, &[id.to_string()]).await?;
        let Some(mut st) = states.pop() else {
            return Err(StoreError::NotFound(format!("workflow instance {id}")));
        };
        if let Some(t) = scope.tenant() {
            if st.instance.tenant_id.as_deref() != Some(t) {
                return Err(StoreError::NotFound(format!("workflow instance {id}")));
            }
        }
        let before = HashMap::from([(st.instance.id.clone(), st.clone())]);
        let was = st.instance.status;
        let mut changed = change(&mut st, now)?;
        let (ready, more) = st.settle(now);
        changed.extend(more);
        st.instance.updated_at = now;
        // The instance was locked, so it is updated, never created.
        let committed = self
            .write_back(&mut tx, &before, std::slice::from_ref(&st), &revs)
            .await?
            .ok_or_else(|| StoreError::Database(format!("workflow instance {id} vanished")))?;
        tx.commit()
            .await
            .map_err(|e| db_err("workflow instances", e))?;
        self.remember(&[&st], &committed);
        Ok(Settled {
            instance_changed: st.instance.status != was,
            state: st,
            ready,
            steps_changed: changed,
        })
    }
}

#[async_trait]
impl WorkflowStore for SqlStore {
    async fn save_definition(&self, d: NewDefinition) -> Result<(Definition, bool)> {
        for _ in 0..3 {
            let latest = self.definition(&Scope::All, &d.name, None).await?;
            if let Some(l) = &latest {
                if l.tenant_id != d.tenant_id {
                    return Err(StoreError::Conflict(format!(
                        "workflow {} is defined by another tenant",
                        d.name
                    )));
                }
                if l.spec == d.spec {
                    return Ok((l.clone(), false));
                }
            }
            let version = latest.map(|l| l.version + 1).unwrap_or(1);
            let now = keel_core::now_ms() as i64;
            let r = sqlx::query(&format!(
                "INSERT INTO keel_wf_definitions ({DEFINITION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            ))
            .bind(d.name.as_str())
            .bind(version)
            .bind(d.tenant_id.as_deref())
            .bind(d.spec.to_string())
            .bind(d.source.as_str())
            .bind(d.created_by.as_str())
            .bind(now)
            .execute(&self.pool)
            .await;
            match r.map_err(|e| db_err("workflow definitions", e)) {
                Ok(_) => {
                    return Ok((
                        Definition {
                            name: d.name,
                            version,
                            tenant_id: d.tenant_id,
                            spec: d.spec,
                            source: d.source,
                            created_by: d.created_by,
                            created_at: now,
                        },
                        true,
                    ))
                }
                // Another process saved a version meanwhile: look again.
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict(format!(
            "workflow {} is being saved concurrently",
            d.name
        )))
    }

    async fn definitions(&self, scope: &Scope) -> Result<Vec<Definition>> {
        let mut w = Where::default();
        definition_scope(&mut w, scope);
        w.clauses.push(
            "version = (SELECT MAX(version) FROM keel_wf_definitions d2 WHERE d2.name = keel_wf_definitions.name)".into(),
        );
        let sql = format!(
            "SELECT {DEFINITION_COLUMNS} FROM keel_wf_definitions{} ORDER BY name",
            w.sql()
        );
        let rows = w
            .bind(sqlx::query(&sql))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_err("workflow definitions", e))?;
        rows.iter()
            .map(definition_from)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| db_err("workflow definitions", e))
    }

    async fn definition(
        &self,
        scope: &Scope,
        name: &str,
        version: Option<i64>,
    ) -> Result<Option<Definition>> {
        let mut w = Where::default();
        definition_scope(&mut w, scope);
        w.text("name = ?", name);
        if let Some(v) = version {
            w.int("version = ?", v);
        }
        let sql = format!(
            "SELECT {DEFINITION_COLUMNS} FROM keel_wf_definitions{} ORDER BY version DESC LIMIT 1",
            w.sql()
        );
        let row = w
            .bind(sqlx::query(&sql))
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_err("workflow definitions", e))?;
        row.as_ref()
            .map(definition_from)
            .transpose()
            .map_err(|e| db_err("workflow definitions", e))
    }

    async fn write_workflows(&self, writes: &[WorkflowWrite]) -> Result<Vec<Settled>> {
        // A create that met an instance another process created meanwhile writes the batch
        // again: then the row is there, locked and read, and the create changes nothing.
        for _ in 0..CREATE_TRIES {
            if let Some(settled) = self.try_write_workflows(writes).await? {
                return Ok(settled);
            }
        }
        Err(StoreError::Conflict(format!(
            "workflow instances created by another writer at each of {CREATE_TRIES} tries"
        )))
    }

    async fn workflow_state(&self, scope: &Scope, id: &str) -> Result<Option<WorkflowState>> {
        let mut w = Where::default();
        w.scope(scope);
        w.text("id = ?", id);
        let sql = format!(
            "SELECT {INSTANCE_COLUMNS} FROM keel_wf_instances{}",
            w.sql()
        );
        let Some(row) = w
            .bind(sqlx::query(&sql))
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_err("workflow instances", e))?
        else {
            return Ok(None);
        };
        let instance = instance_from(&row).map_err(|e| db_err("workflow instances", e))?;
        let rows = sqlx::query(&format!(
            "SELECT {STEP_COLUMNS} FROM keel_wf_steps WHERE instance_id = $1 ORDER BY position"
        ))
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_err("workflow steps", e))?;
        let steps = rows
            .iter()
            .map(|r| step_from(r).map(|(_, s)| s))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| db_err("workflow steps", e))?;
        Ok(Some(WorkflowState { instance, steps }))
    }

    async fn list_instances(
        &self,
        scope: &Scope,
        f: &InstanceFilter,
        page: i64,
        limit: i64,
    ) -> Result<Page<Instance>> {
        let (page, limit) = clamp_page(page, limit)?;
        let mut w = Where::default();
        w.scope(scope);
        if let Some(s) = f.status {
            w.text("status = ?", s.as_str());
        }
        if let Some(n) = &f.workflow {
            w.text("workflow = ?", n);
        }
        if let Some(v) = f.from {
            w.int("created_at >= ?", v);
        }
        if let Some(v) = f.to {
            w.int("created_at <= ?", v);
        }
        self.page(
            Listing {
                what: "workflow instances",
                table: "keel_wf_instances",
                columns: INSTANCE_COLUMNS,
                order: "created_at DESC, id DESC",
            },
            &w,
            (page, limit),
            instance_from,
        )
        .await
    }

    async fn cancel_instance(&self, scope: &Scope, id: &str) -> Result<Settled> {
        self.change_instance(scope, id, |st, now| {
            if st.instance.status.is_final() {
                return Err(StoreError::Conflict(format!(
                    "instance {} is {}: only pending or running instances are cancelled",
                    st.instance.id,
                    st.instance.status.as_str()
                )));
            }
            let mut changed = Vec::new();
            st.end(
                InstanceStatus::Cancelled,
                Some("cancelled".into()),
                now,
                &mut changed,
            );
            Ok(changed)
        })
        .await
    }

    async fn rerun_instance(&self, scope: &Scope, id: &str) -> Result<Settled> {
        self.change_instance(scope, id, |st, now| st.rerun(now))
            .await
    }

    async fn quiet_instances(
        &self,
        updated_before: i64,
        after: &str,
        limit: i64,
    ) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT id FROM keel_wf_instances WHERE status IN ('pending', 'running') AND updated_at < $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(updated_before)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_err("workflow instances", e))?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("id"))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| db_err("workflow instances", e))
    }
}
