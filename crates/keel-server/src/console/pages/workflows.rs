//! `/workflows`: instances with filters (live); `/workflows/instances/{id}`: one instance's
//! steps as a timeline, with cancel and re-run for admins; `/workflows/definitions`: the
//! definitions, with a run form for admins.

use askama::Template;
use axum::extract::{Path, RawForm, RawQuery};
use axum::response::Response;
use keel_records::workflow::{Instance, StepExecution};
use serde::Deserialize;
use serde_json::Value;

use super::logs::Range;
use crate::console::ctx::Ctx;
use crate::console::page::{Form, Layout, PAGE_SIZE};
use crate::console::view::{self, enc, query, short, time_of, Pager};
use crate::extract::parse_query;
use crate::ops;
use crate::ops::workflows::InstancesQuery;

/// The instance list's query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowParams {
    status: Option<String>,
    workflow: Option<String>,
    from: Option<String>,
    to: Option<String>,
    tz: Option<String>,
    page: Option<usize>,
}

struct InstanceRow {
    id: String,
    href: String,
    workflow: String,
    version: i64,
    status: String,
    trigger: String,
    actor: String,
    created: String,
    duration: String,
    error: String,
}

fn instance_duration(i: &Instance) -> String {
    match (i.started_at, i.finished_at) {
        (Some(s), Some(f)) => view::duration(f - s),
        (Some(_), None) => "running".into(),
        _ => "—".into(),
    }
}

impl From<&Instance> for InstanceRow {
    fn from(i: &Instance) -> InstanceRow {
        InstanceRow {
            href: format!("/workflows/instances/{}", enc(&i.id)),
            id: i.id.clone(),
            workflow: i.workflow.clone(),
            version: i.version,
            status: i.status.as_str().into(),
            trigger: match &i.trigger.reference {
                Some(r) => format!("{} ({r})", i.trigger.kind),
                None => i.trigger.kind.clone(),
            },
            actor: i.actor.clone(),
            created: time_of(Some(i.created_at)),
            duration: instance_duration(i),
            error: short(i.error.as_deref().unwrap_or_default(), 120),
        }
    }
}

#[derive(Template)]
#[template(path = "console/workflows.html")]
struct InstancesPage {
    layout: Layout,
    instances: Vec<InstanceRow>,
    pager: Pager,
    status: String,
    workflow: String,
    from: String,
    to: String,
    tz: String,
    filter_error: String,
    workflows: Vec<String>,
}

/// `GET /workflows?status=&workflow=&from=&to=&tz=&page=`.
pub async fn instances(ctx: Ctx, RawQuery(raw): RawQuery) -> Response {
    let p: WorkflowParams = match parse_query(raw.as_deref()) {
        Ok(p) => p,
        Err(e) => return ctx.failed(e),
    };
    let page = p.page.unwrap_or(1).max(1);
    let status = p.status.clone().unwrap_or_default();
    let workflow = p.workflow.clone().unwrap_or_default();
    let Range {
        from,
        to,
        tz,
        from_api,
        to_api,
        error: filter_error,
    } = Range::new(p.from.as_deref(), p.to.as_deref(), p.tz.as_deref());
    let nonempty = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
    let q = InstancesQuery {
        status: nonempty(&status),
        workflow: nonempty(&workflow),
        from: nonempty(&from_api),
        to: nonempty(&to_api),
        page: Some(page),
        limit: Some(PAGE_SIZE),
    };
    let (listed, defs) = tokio::join!(
        ops::workflows::instances(&ctx.state, &ctx.caller, &q),
        ops::workflows::definitions(&ctx.state, &ctx.caller)
    );
    let listed = match listed {
        Ok(r) => r.value,
        Err(e) => return ctx.failed(e),
    };
    let link = |n: usize| {
        format!(
            "/workflows{}",
            query(&[
                ("status", &status),
                ("workflow", &workflow),
                ("from", &from),
                ("to", &to),
                ("tz", &tz),
                ("page", &n.to_string()),
            ])
        )
    };
    ctx.page(InstancesPage {
        layout: ctx.layout("Workflows", "workflows").live("workflows"),
        instances: listed.items.iter().map(InstanceRow::from).collect(),
        pager: Pager::new(page, PAGE_SIZE, listed.total as u64, link).of("instances"),
        workflows: defs
            .map(|d| d.value.definitions.into_iter().map(|d| d.name).collect())
            .unwrap_or_default(),
        status,
        workflow,
        from,
        to,
        tz,
        filter_error,
    })
}

struct StepRow {
    name: String,
    queue: String,
    job_name: String,
    needs: String,
    status: String,
    attempts: i64,
    started: String,
    duration: String,
    job_href: String,
    job_id: String,
    runs_href: String,
    on_failure: String,
    error: String,
    stack: String,
    input: String,
    output: String,
    /// Where the step's bar starts and how wide it is, in % of the instance's span.
    bar_left: f64,
    bar_width: f64,
}

fn json_or_dash(id: &str, v: &Option<Value>) -> String {
    match v {
        Some(v) => view::json_viewer(id, v),
        None => String::new(),
    }
}

fn step_row(s: &StepExecution, span: (i64, i64)) -> StepRow {
    let (t0, t1) = span;
    let total = (t1 - t0).max(1) as f64;
    let (left, width) = match s.started_at {
        Some(st) => {
            let end = s.finished_at.unwrap_or(t1);
            let l = ((st - t0) as f64 / total * 100.0).clamp(0.0, 100.0);
            let w = ((end - st) as f64 / total * 100.0).clamp(0.5, 100.0 - l);
            (l, w)
        }
        None => (0.0, 0.0),
    };
    let job_id = s.job_id.clone().unwrap_or_default();
    StepRow {
        name: s.step.clone(),
        queue: s.queue.clone(),
        job_name: s.job_name.clone(),
        needs: s.needs.join(", "),
        status: s.status.as_str().into(),
        attempts: s.attempts,
        started: time_of(s.started_at),
        duration: s
            .duration_ms
            .map(view::duration)
            .unwrap_or_else(|| "—".into()),
        job_href: if job_id.is_empty() {
            String::new()
        } else {
            format!("/queues/{}/jobs/{}", enc(&s.queue), enc(&job_id))
        },
        runs_href: if job_id.is_empty() {
            String::new()
        } else {
            format!(
                "/runs{}",
                query(&[("queue", &s.queue), ("job_id", &job_id)])
            )
        },
        job_id,
        on_failure: s.on_failure.as_str().into(),
        error: s.error.clone().unwrap_or_default(),
        stack: s.stack.clone().unwrap_or_default(),
        input: json_or_dash(&format!("in-{}", s.step), &s.input),
        output: json_or_dash(&format!("out-{}", s.step), &s.output),
        bar_left: left,
        bar_width: width,
    }
}

#[derive(Template)]
#[template(path = "console/workflow.html")]
struct InstancePage {
    layout: Layout,
    i: InstanceRow,
    input: String,
    started: String,
    finished: String,
    reruns: i64,
    steps: Vec<StepRow>,
    can_cancel: bool,
    can_rerun: bool,
    cancel_href: String,
    rerun_href: String,
}

/// `GET /workflows/instances/{id}`.
pub async fn instance(ctx: Ctx, Path(id): Path<String>) -> Response {
    let st = match ops::workflows::instance(&ctx.state, &ctx.caller, &id).await {
        Ok(v) => v,
        Err(e) => return ctx.failed(e),
    };
    let inst = &st.instance;
    let t0 = st
        .steps
        .iter()
        .filter_map(|s| s.started_at)
        .min()
        .unwrap_or(inst.created_at);
    let t1 = inst
        .finished_at
        .unwrap_or_else(|| keel::now_ms() as i64)
        .max(
            st.steps
                .iter()
                .filter_map(|s| s.finished_at)
                .max()
                .unwrap_or(t0),
        );
    let href = format!("/workflows/instances/{}", enc(&inst.id));
    ctx.page(InstancePage {
        layout: ctx
            .layout(format!("Workflow {}", inst.workflow), "workflows")
            .live(format!("workflow:{}", inst.id)),
        input: view::json_viewer("input", &inst.input),
        started: time_of(inst.started_at),
        finished: time_of(inst.finished_at),
        reruns: inst.reruns,
        can_cancel: !inst.status.is_final(),
        can_rerun: matches!(
            inst.status,
            keel_records::workflow::InstanceStatus::Failed
                | keel_records::workflow::InstanceStatus::Cancelled
        ),
        cancel_href: format!("{href}/cancel"),
        rerun_href: format!("{href}/rerun"),
        steps: st.steps.iter().map(|s| step_row(s, (t0, t1))).collect(),
        i: InstanceRow::from(inst),
    })
}

/// `POST /workflows/instances/{id}/cancel`.
pub async fn cancel(ctx: Ctx, Path(id): Path<String>, RawForm(raw): RawForm) -> Response {
    let form = Form::parse(&raw);
    if let Some(r) = ctx.refuse(&form) {
        return r;
    }
    let back = format!("/workflows/instances/{}", enc(&id));
    let result = ops::workflows::cancel(&ctx.state, &ctx.caller, &id)
        .await
        .map(|_| format!("Instance {id} cancelled."));
    ctx.outcome(&form, &back, result)
}

/// `POST /workflows/instances/{id}/rerun`.
pub async fn rerun(ctx: Ctx, Path(id): Path<String>, RawForm(raw): RawForm) -> Response {
    let form = Form::parse(&raw);
    if let Some(r) = ctx.refuse(&form) {
        return r;
    }
    let back = format!("/workflows/instances/{}", enc(&id));
    let result = ops::workflows::rerun(&ctx.state, &ctx.caller, &id)
        .await
        .map(|_| format!("Instance {id} re-runs from its failed steps."));
    ctx.outcome(&form, &back, result)
}

struct DefinitionRow {
    name: String,
    version: i64,
    source: String,
    description: String,
    steps: Vec<(String, String, String)>,
    triggers: String,
    spec: String,
    run_href: String,
    list_href: String,
}

#[derive(Template)]
#[template(path = "console/workflow_definitions.html")]
struct DefinitionsPage {
    layout: Layout,
    definitions: Vec<DefinitionRow>,
}

/// `GET /workflows/definitions`.
pub async fn definitions(ctx: Ctx) -> Response {
    let defs = match ops::workflows::definitions(&ctx.state, &ctx.caller).await {
        Ok(d) => d.value.definitions,
        Err(e) => return ctx.failed(e),
    };
    let rows = defs
        .into_iter()
        .map(|d| {
            let spec: Option<keel_workflows::WorkflowSpec> =
                serde_json::from_value(d.spec.clone()).ok();
            let steps = spec
                .as_ref()
                .map(|s| {
                    s.steps
                        .iter()
                        .map(|st| {
                            (
                                st.name.clone(),
                                format!("{} / {}", st.queue, st.job_name()),
                                st.needs.join(", "),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let mut triggers = vec!["API".to_string()];
            if let Some(s) = spec.as_ref().and_then(|s| s.schedule.as_ref()) {
                triggers.push(match (&s.cron, s.every_ms) {
                    (Some(c), _) => format!(
                        "cron {c}{}",
                        s.tz.as_deref()
                            .map(|t| format!(" ({t})"))
                            .unwrap_or_default()
                    ),
                    (None, Some(ms)) => format!("every {}", view::duration(ms as i64)),
                    _ => "schedule".into(),
                });
            }
            for t in spec.iter().flat_map(|s| s.on_complete.iter()) {
                triggers.push(format!(
                    "completion of {}{}",
                    t.queue,
                    t.job
                        .as_deref()
                        .map(|j| format!(" / {j}"))
                        .unwrap_or_default()
                ));
            }
            DefinitionRow {
                run_href: format!("/workflows/{}/run", enc(&d.name)),
                list_href: format!("/workflows{}", query(&[("workflow", &d.name)])),
                description: spec
                    .as_ref()
                    .and_then(|s| s.description.clone())
                    .unwrap_or_default(),
                spec: view::json_viewer(&format!("spec-{}", d.name), &d.spec),
                name: d.name,
                version: d.version,
                source: d.source,
                steps,
                triggers: triggers.join(", "),
            }
        })
        .collect();
    ctx.page(DefinitionsPage {
        layout: ctx.layout("Workflow definitions", "workflows"),
        definitions: rows,
    })
}

/// `POST /workflows/{name}/run` with `input` (JSON; empty for `{}`).
pub async fn run(ctx: Ctx, Path(name): Path<String>, RawForm(raw): RawForm) -> Response {
    let form = Form::parse(&raw);
    if let Some(r) = ctx.refuse(&form) {
        return r;
    }
    let text = form.get("input").unwrap_or("").trim();
    let input: Value = if text.is_empty() {
        Value::Object(Default::default())
    } else {
        match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                return ctx.done(
                    &form,
                    "/workflows/definitions",
                    false,
                    &format!("input: not JSON ({e})"),
                )
            }
        }
    };
    match ops::workflows::run(
        &ctx.state,
        &ctx.caller,
        &name,
        serde_json::json!({ "input": input }),
        "console",
    )
    .await
    {
        Ok(st) => {
            let form = Form::parse(
                format!("back=/workflows/instances/{}", enc(&st.instance.id)).as_bytes(),
            );
            ctx.done(
                &form,
                "/workflows",
                true,
                &format!("Instance {} of {name} started.", st.instance.id),
            )
        }
        Err(e) => ctx.done(&form, "/workflows/definitions", false, &e.message),
    }
}
