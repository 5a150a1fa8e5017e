//! `keel workflow list | run | instances | instance | cancel | rerun`: workflows from the shell,
//! over the records database and the queues (the same engine `keel serve` runs). Runs and
//! re-runs enqueue step jobs, so they need the shared backend (Redis).

use std::sync::Arc;

use keel::config::Config;
use keel::{BackendKind, Error};
use keel_records::prelude::*;
use keel_records::workflow::{InstanceFilter, InstanceStatus, Trigger, WorkflowState};
use keel_records::Scope;
use keel_workflows::{Engine, EngineConfig, Start};
use serde_json::{json, Value};

use crate::{Failure, WorkflowAction};

fn who() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

fn print_state(st: &WorkflowState, json_out: bool) {
    if json_out {
        println!("{}", json!(st));
        return;
    }
    let i = &st.instance;
    println!(
        "{} {} v{} {}{}",
        i.id,
        i.workflow,
        i.version,
        i.status.as_str(),
        i.error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    );
    println!(
        "  {:<20} {:<10} {:>8} {:>10}  JOB",
        "STEP", "STATUS", "ATTEMPTS", "DURATION"
    );
    for s in &st.steps {
        println!(
            "  {:<20} {:<10} {:>8} {:>10}  {}",
            s.step,
            s.status.as_str(),
            s.attempts,
            s.duration_ms
                .map(|d| format!("{d} ms"))
                .unwrap_or_else(|| "-".into()),
            s.job_id.as_deref().unwrap_or("-")
        );
        if let Some(e) = &s.error {
            println!("  {:<20} error: {e}", "");
        }
    }
}

/// Runs a `keel workflow` command.
pub async fn workflow(
    config: &Config,
    action: WorkflowAction,
    json_out: bool,
) -> Result<(), Failure> {
    let server = keel_server::config::ServerConfig::from_env(config)?;
    let store = keel_server::serve::open_store(&server).await?;
    store.migrate_up().await?;
    let backend = config.backend().await?;
    let needs_queues = matches!(
        action,
        WorkflowAction::Run { .. } | WorkflowAction::Rerun { .. }
    );
    if needs_queues && backend.kind() == BackendKind::Memory {
        return Err(Error::NeedsSharedBackend("keel workflow run/rerun".into()).into());
    }
    let workflow_store: Arc<dyn keel_records::WorkflowStore> = store.clone();
    let (engine, writer) = Engine::new(
        backend,
        config.clone(),
        workflow_store,
        EngineConfig::default(),
        None,
    );
    // The configuration's definitions are saved (a new version when changed), as at start.
    engine.load(&server.workflows).await.map_err(to_failure)?;
    let result = run_action(&engine, &*store, action, json_out).await;
    drop(engine);
    let _ = writer.await;
    result
}

fn to_failure(e: keel_workflows::WorkflowError) -> Failure {
    match e {
        keel_workflows::WorkflowError::Queue(e) => e.into(),
        keel_workflows::WorkflowError::Records(e) => e.into(),
    }
}

async fn run_action(
    engine: &Engine,
    store: &dyn keel_records::RecordStore,
    action: WorkflowAction,
    json_out: bool,
) -> Result<(), Failure> {
    match action {
        WorkflowAction::List => {
            let defs = store.definitions(&Scope::All).await?;
            if json_out {
                println!("{}", json!({ "definitions": defs }));
            } else {
                println!("{:<24} {:>7} {:<7} STEPS", "NAME", "VERSION", "SOURCE");
                for d in defs {
                    let steps: Vec<String> = d.spec["steps"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|s| s["name"].as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    println!(
                        "{:<24} {:>7} {:<7} {}",
                        d.name,
                        d.version,
                        d.source,
                        steps.join(" ")
                    );
                }
            }
        }
        WorkflowAction::Run { name, input } => {
            let input: Value = serde_json::from_str(&input)
                .map_err(|e| Error::invalid("--input", format!("not JSON: {e}")))?;
            let st = engine
                .start(Start {
                    workflow: name,
                    input,
                    trigger: Trigger {
                        kind: "cli".into(),
                        reference: None,
                    },
                    actor: who(),
                    scope: Scope::All,
                    id: None,
                })
                .await
                .map_err(to_failure)?;
            if json_out {
                println!("{}", json!(st));
            } else {
                println!(
                    "started {} ({} v{})",
                    st.instance.id, st.instance.workflow, st.instance.version
                );
            }
        }
        WorkflowAction::Instances {
            workflow,
            status,
            page,
            limit,
        } => {
            let filter = InstanceFilter {
                status: status
                    .as_deref()
                    .map(|s| InstanceStatus::parse(s, "--status"))
                    .transpose()?,
                workflow,
                from: None,
                to: None,
            };
            let page = crate::commands::parse_num::<i64>("--page", Some(&page))?.unwrap_or(1);
            let limit = crate::commands::parse_num::<i64>("--limit", Some(&limit))?.unwrap_or(20);
            // The store checks the ranges; its fields are the arguments here.
            let listed = store
                .list_instances(&Scope::All, &filter, page, limit)
                .await
                .map_err(|e| match e {
                    keel_records::StoreError::Invalid { field, message } => {
                        Failure::from(Error::invalid(format!("--{field}"), message))
                    }
                    other => other.into(),
                })?;
            if json_out {
                println!("{}", json!(listed));
            } else {
                println!(
                    "{:<32} {:<20} {:<10} {:<8} CREATED",
                    "ID", "WORKFLOW", "STATUS", "TRIGGER"
                );
                for i in &listed.items {
                    println!(
                        "{:<32} {:<20} {:<10} {:<8} {}",
                        i.id,
                        i.workflow,
                        i.status.as_str(),
                        i.trigger.kind,
                        i.created_at
                    );
                }
                println!("{} of {}", listed.items.len(), listed.total);
            }
        }
        WorkflowAction::Instance { id } => {
            let st = store
                .workflow_state(&Scope::All, &id)
                .await?
                .ok_or_else(|| Error::not_found(format!("workflow instance {id}")))?;
            print_state(&st, json_out);
        }
        WorkflowAction::Cancel { id } => {
            let s = engine.cancel(&Scope::All, &id).await.map_err(to_failure)?;
            print_state(&s.state, json_out);
        }
        WorkflowAction::Rerun { id } => {
            let s = engine.rerun(&Scope::All, &id).await.map_err(to_failure)?;
            print_state(&s.state, json_out);
        }
    }
    Ok(())
}
