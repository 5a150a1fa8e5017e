//! Workflows: definitions (list, save a version), instances (list, one with its steps), run,
//! cancel and re-run.
//!
//! A caller bound to a tenant sees global definitions and its tenant's, may run one only when
//! it sees every queue its steps use, and sees only its tenant's instances (others answer 404).

use std::time::Duration;

use keel_records::workflow::{
    Definition, Instance, InstanceFilter, InstanceStatus, Trigger, WorkflowState,
};
use keel_records::{Page, Role};
use keel_workflows::{Start, WorkflowSpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{accessed, audited, cached, page_limit, parse_time, Audit, Read};
use crate::error::{ApiError, ApiResult};
use crate::extract::{from_json, Caller};
use crate::state::AppState;
use crate::tags;

/// How long definition and instance lists are cached (the seeds' 30 s; every workflow write
/// invalidates them).
pub const WORKFLOWS_TTL: Duration = Duration::from_secs(30);
/// Default page size of instance lists.
pub const DEFAULT_INSTANCES_LIMIT: usize = 50;

/// A definition as listed: its latest version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefinitionView {
    /// Name.
    pub name: String,
    /// Latest version.
    pub version: i64,
    /// `config` or `api`.
    pub source: String,
    /// Whose (`None`: global).
    pub tenant_id: Option<String>,
    /// Who saved this version.
    pub created_by: String,
    /// Saved, ms.
    pub created_at: i64,
    /// The definition.
    pub spec: Value,
}

impl From<Definition> for DefinitionView {
    fn from(d: Definition) -> DefinitionView {
        DefinitionView {
            name: d.name,
            version: d.version,
            source: d.source,
            tenant_id: d.tenant_id,
            created_by: d.created_by,
            created_at: d.created_at,
            spec: d.spec,
        }
    }
}

/// The definitions in effect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Definitions {
    /// By name.
    pub definitions: Vec<DefinitionView>,
}

/// Definitions in scope, latest versions (viewer; cached 30 s).
pub async fn definitions(state: &AppState, caller: &Caller) -> ApiResult<Read<Definitions>> {
    caller.require(Role::Viewer)?;
    cached(
        state,
        caller,
        "workflow-definitions",
        &[tags::WORKFLOWS],
        WORKFLOWS_TTL,
        || async {
            let defs = state.store.definitions(&caller.scope).await?;
            Ok(Definitions {
                definitions: defs.into_iter().map(DefinitionView::from).collect(),
            })
        },
    )
    .await
}

/// What saving a definition answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    /// The version in effect.
    pub definition: DefinitionView,
    /// Whether this call made a new version (false when the spec was unchanged).
    pub new_version: bool,
}

/// Saves `body` (a definition, as in keel.toml) as the next version of `name` (admin;
/// audited `owner.workflow.define`). Bad definitions are refused with the field named
/// (`spec.steps[1].needs[0]`); a running instance keeps the version it started with.
pub async fn define(
    state: &AppState,
    caller: &Caller,
    name: &str,
    body: Value,
) -> ApiResult<Saved> {
    audited(
        state,
        caller,
        Audit::new("owner.workflow.define", format!("workflow:{name}")).payload(body.clone()),
        async {
            caller.require(Role::Admin)?;
            let spec: WorkflowSpec = from_json(body)?;
            spec_visible(state, caller, &spec)?;
            let (def, new) = state
                .workflows
                .save(&caller.scope, name, spec, "api", &caller.actor(), "spec")
                .await?;
            state.invalidator.invalidate(&[tags::WORKFLOWS]).await;
            Ok(Saved {
                definition: def.into(),
                new_version: new,
            })
        },
    )
    .await
}

/// A tenant may only use the queues it sees.
fn spec_visible(state: &AppState, caller: &Caller, spec: &WorkflowSpec) -> ApiResult<()> {
    for (i, s) in spec.steps.iter().enumerate() {
        if !state.can_see_queue(&caller.scope, &s.queue) {
            return Err(ApiError::invalid(
                &format!("spec.steps[{i}].queue"),
                format!("unknown queue {:?}", s.queue),
            ));
        }
    }
    Ok(())
}

/// A manual run's body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    /// The workflow's input (default `{}`).
    #[serde(default)]
    pub input: Option<Value>,
}

/// Starts an instance of workflow `name` (admin; audited `owner.workflow.run`); 201 with the
/// instance and its steps. `via` is the trigger recorded (`api`, `console`).
pub async fn run(
    state: &AppState,
    caller: &Caller,
    name: &str,
    body: Value,
    via: &str,
) -> ApiResult<WorkflowState> {
    audited(
        state,
        caller,
        Audit::new("owner.workflow.run", format!("workflow:{name}"))
            .payload(body.clone())
            .created(),
        async {
            caller.require(Role::Admin)?;
            let body: RunBody = if body.is_null() {
                RunBody::default()
            } else {
                from_json(body)?
            };
            let def = state.workflows.latest(&caller.scope, name).await?;
            spec_visible(state, caller, &def.spec)
                .map_err(|_| ApiError::not_found(format!("workflow {name}")))?;
            let st = state
                .workflows
                .start(Start {
                    workflow: name.to_string(),
                    input: body
                        .input
                        .unwrap_or_else(|| Value::Object(Default::default())),
                    trigger: Trigger {
                        kind: via.into(),
                        reference: None,
                    },
                    actor: caller.actor(),
                    scope: caller.scope.clone(),
                    id: None,
                })
                .await?;
            Ok(st)
        },
    )
    .await
}

/// An instance listing's query.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstancesQuery {
    /// `pending`, `running`, `completed`, `failed` or `cancelled`.
    pub status: Option<String>,
    /// Definition name.
    pub workflow: Option<String>,
    /// Created from (ms or RFC 3339).
    pub from: Option<String>,
    /// Created until (ms or RFC 3339).
    pub to: Option<String>,
    /// Page, from 1.
    pub page: Option<usize>,
    /// Per page (1-1000, default 50).
    pub limit: Option<usize>,
}

/// Instances, newest first (viewer; cached 30 s; access-logged
/// `owner.read.workflow_instances`).
pub async fn instances(
    state: &AppState,
    caller: &Caller,
    q: &InstancesQuery,
) -> ApiResult<Read<Page<Instance>>> {
    caller.require(Role::Viewer)?;
    let status = q
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| InstanceStatus::parse(s, "status"))
        .transpose()?;
    let filter = InstanceFilter {
        status,
        workflow: q.workflow.clone().filter(|w| !w.is_empty()),
        from: parse_time("from", q.from.as_deref())?,
        to: parse_time("to", q.to.as_deref())?,
    };
    let (page, limit) = page_limit(q.page, q.limit, DEFAULT_INSTANCES_LIMIT)?;
    let key = format!(
        "workflow-instances|{}|{page}|{limit}",
        serde_json::to_string(&filter).unwrap_or_default()
    );
    let read = cached(
        state,
        caller,
        &key,
        &[tags::WORKFLOWS],
        WORKFLOWS_TTL,
        || async {
            Ok(state
                .store
                .list_instances(&caller.scope, &filter, page as i64, limit as i64)
                .await?)
        },
    )
    .await?;
    accessed(
        state,
        caller,
        "owner.read.workflow_instances",
        "workflows",
        read.cached,
        &read.value,
    )
    .await;
    Ok(read)
}

/// One instance with its steps (viewer; access-logged `owner.read.workflow_instance`). Not
/// cached: the detail page follows a running instance.
pub async fn instance(state: &AppState, caller: &Caller, id: &str) -> ApiResult<WorkflowState> {
    caller.require(Role::Viewer)?;
    let st = state
        .store
        .workflow_state(&caller.scope, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("workflow instance {id}")))?;
    accessed(
        state,
        caller,
        "owner.read.workflow_instance",
        &format!("workflow_instance:{id}"),
        false,
        &st,
    )
    .await;
    Ok(st)
}

/// Cancels a pending or running instance (admin; audited `owner.workflow.cancel`): steps not
/// started are cancelled, their waiting jobs removed; running attempts finish.
pub async fn cancel(state: &AppState, caller: &Caller, id: &str) -> ApiResult<WorkflowState> {
    audited(
        state,
        caller,
        Audit::new("owner.workflow.cancel", format!("workflow_instance:{id}")),
        async {
            caller.require(Role::Admin)?;
            let s = state.workflows.cancel(&caller.scope, id).await?;
            state.invalidator.invalidate(&[tags::WORKFLOWS]).await;
            Ok(s.state)
        },
    )
    .await
}

/// Re-runs a failed or cancelled instance from its failed steps (admin; audited
/// `owner.workflow.rerun`); completed steps keep their outputs and are not run again.
pub async fn rerun(state: &AppState, caller: &Caller, id: &str) -> ApiResult<WorkflowState> {
    audited(
        state,
        caller,
        Audit::new("owner.workflow.rerun", format!("workflow_instance:{id}")),
        async {
            caller.require(Role::Admin)?;
            let s = state.workflows.rerun(&caller.scope, id).await?;
            state.invalidator.invalidate(&[tags::WORKFLOWS]).await;
            Ok(s.state)
        },
    )
    .await
}
