//! Workflows through `keel serve`: the owner API (run, list, detail, definitions, cancel,
//! re-run; audit, access log, cache, roles, tenants, errors), realtime events and the console
//! pages — on both databases, the steps run by the configured `http` handlers.

#[macro_use]
mod support;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use futures::StreamExt;
use serde_json::{json, Value};
use support::{App, Db, Web};

fn config(hook: &str) -> String {
    format!(
        r#"
[ratelimit.policies.owner-api]
limit = 100000
window_ms = 60000

[queues.ai-content]
attempts = 1
handler = {{ kind = "http", url = "{hook}" }}

[queues.notify]
attempts = 1
handler = {{ kind = "http", url = "{hook}" }}

[queues.acme-reports]
tenant = "acme"

[workflows.publish]
description = "Draft, then notify"
[[workflows.publish.steps]]
name = "draft"
queue = "ai-content"
job = "generate_article_draft"
input = {{ topic = "${{input.topic}}", fail = "${{input.fail}}" }}
[[workflows.publish.steps]]
name = "notify"
queue = "notify"
needs = ["draft"]
input = {{ draft = "${{steps.draft.output.sent}}" }}
"#
    )
}

async fn app(db: Db) -> App {
    let hook = support::webhook().await;
    App::start_with(&config(&hook), support::redis().await, db, true).await
}

async fn ended(app: &App, id: &str) -> Value {
    support::eventually("the instance ends", || async {
        let (s, v) = app
            .get_json(
                &format!("/api/owner/workflows/instances/{id}"),
                Some(&app.viewer),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let status = v["instance"]["status"].as_str().unwrap_or("").to_string();
        ["completed", "failed", "cancelled"]
            .contains(&status.as_str())
            .then_some(v)
    })
    .await
}

both!(
    the_api_runs_lists_and_shows_instances,
    definitions_are_versioned_and_bad_ones_refused,
    failed_instances_rerun_and_finished_ones_refuse,
    workflow_events_reach_the_terminal_channel,
    the_console_lists_shows_and_runs_workflows,
);

async fn the_api_runs_lists_and_shows_instances(db: Db) {
    let app = app(db).await;
    let (s, v) = app
        .call(
            Method::POST,
            "/api/owner/workflows/publish/run",
            Some(&app.admin),
            Some(json!({"input": {"topic": "rust"}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["instance"]["id"].as_str().unwrap().to_string();
    assert_eq!(v["instance"]["workflow"], "publish");
    assert_eq!(v["instance"]["trigger"]["kind"], "api");
    assert_eq!(v["steps"].as_array().unwrap().len(), 2);
    let v = ended(&app, &id).await;
    assert_eq!(v["instance"]["status"], "completed", "{v}");
    let draft = &v["steps"][0];
    assert_eq!(draft["step"], "draft");
    assert_eq!(draft["input"], json!({"topic": "rust", "fail": null}));
    assert_eq!(
        draft["output"],
        json!({"sent": format!("wf-{id}-draft")}),
        "the webhook's answer is the step's output"
    );
    assert_eq!(
        v["steps"][1]["input"],
        json!({"draft": format!("wf-{id}-draft")})
    );
    // The step's job is a job like any other: its runs are recorded.
    let (s, runs) = app
        .get_json(
            &format!("/api/owner/runs?queue=ai-content&job_id=wf-{id}-draft"),
            Some(&app.viewer),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    support::eventually("the step's run is recorded", || async {
        let (_, runs) = app
            .get_json(
                &format!("/api/owner/runs?queue=ai-content&job_id=wf-{id}-draft"),
                Some(&app.viewer),
            )
            .await;
        (runs["total"] == 1).then_some(())
    })
    .await;
    let _ = runs;
    // Lists: filtered, cached 30 s, access-logged.
    let path = "/api/owner/workflows/instances?workflow=publish&status=completed";
    let (s, h, list) = app.raw(Method::GET, path, Some(&app.viewer), None).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(list["total"], 1);
    assert_eq!(list["items"][0]["id"], id.as_str());
    assert_eq!(h["x-keel-cache"], "miss");
    let (_, h, _) = app.raw(Method::GET, path, Some(&app.viewer), None).await;
    assert_eq!(h["x-keel-cache"], "hit");
    let (s, v) = app
        .get_json(
            "/api/owner/workflows/instances?status=bogus",
            Some(&app.viewer),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["field"], "status");
    // Roles, tenants, unknown names.
    let (s, _) = app
        .call(
            Method::POST,
            "/api/owner/workflows/publish/run",
            Some(&app.viewer),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = app
        .call(
            Method::POST,
            "/api/owner/workflows/nope/run",
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"]["code"], "not-found");
    let (s, _) = app
        .get_json(
            &format!("/api/owner/workflows/instances/{id}"),
            Some(&app.acme),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "a tenant does not see others' instances"
    );
    let (s, _) = app
        .call(
            Method::POST,
            "/api/owner/workflows/publish/run",
            Some(&app.acme),
            None,
        )
        .await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "a tenant cannot run a workflow on queues it does not see"
    );
    // Audit and access entries, as the seeds name them.
    let audit = support::eventually("the run is audited", || async {
        let (_, v) = app
            .get_json(
                "/api/owner/logs/audit?action=owner.workflow.run",
                Some(&app.admin),
            )
            .await;
        (v["total"].as_i64() >= Some(1)).then_some(v)
    })
    .await;
    assert_eq!(audit["items"][0]["resource"], "workflow:publish");
    support::eventually("the detail read is access-logged", || async {
        let (_, v) = app
            .get_json(
                "/api/owner/logs/access?action=owner.read.workflow_instance",
                Some(&app.admin),
            )
            .await;
        (v["total"].as_i64() >= Some(1)).then_some(())
    })
    .await;
    app.stop().await;
}

async fn definitions_are_versioned_and_bad_ones_refused(db: Db) {
    let app = app(db).await;
    let (s, v) = app
        .get_json("/api/owner/workflows", Some(&app.viewer))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["definitions"][0]["name"], "publish");
    assert_eq!(v["definitions"][0]["version"], 1);
    assert_eq!(v["definitions"][0]["source"], "config");
    let spec = json!({"steps": [
        {"name": "one", "queue": "notify"},
        {"name": "two", "queue": "notify", "needs": ["one"], "on_failure": "continue"}
    ]});
    let (s, v) = app
        .call(
            Method::PUT,
            "/api/owner/workflows/adhoc",
            Some(&app.admin),
            Some(spec.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["definition"]["version"], 1);
    assert_eq!(v["new_version"], true);
    let (_, v) = app
        .call(
            Method::PUT,
            "/api/owner/workflows/adhoc",
            Some(&app.admin),
            Some(spec),
        )
        .await;
    assert_eq!(v["new_version"], false, "unchanged: no new version");
    let (_, v) = app
        .call(
            Method::PUT,
            "/api/owner/workflows/adhoc",
            Some(&app.admin),
            Some(json!({"steps": [{"name": "one", "queue": "notify", "attempts": 2}]})),
        )
        .await;
    assert_eq!(v["definition"]["version"], 2);
    for (body, field) in [
        (
            json!({"steps": [{"name": "a", "queue": "nope"}]}),
            "spec.steps[0].queue",
        ),
        (
            json!({"steps": [{"name": "a", "queue": "notify", "needs": ["a"]}]}),
            "spec.steps[0].needs[0]",
        ),
        (
            json!({"steps": [
                {"name": "a", "queue": "notify", "needs": ["b"]},
                {"name": "b", "queue": "notify", "needs": ["a"]}
            ]}),
            "spec.steps[0].needs",
        ),
        (json!({"steps": []}), "spec.steps"),
        (
            json!({"steps": [{"name": "a", "queue": "notify", "bogus": 1}]}),
            "steps[0]",
        ),
    ] {
        let (s, v) = app
            .call(
                Method::PUT,
                "/api/owner/workflows/bad",
                Some(&app.admin),
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(
            v["error"]["field"].as_str().unwrap_or("").contains(field),
            "{body}: {v}"
        );
    }
    let (s, v) = app
        .call(
            Method::PUT,
            "/api/owner/workflows/adhoc",
            Some(&app.viewer),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    // A tenant defines only on the queues it sees, and its definition is its own.
    let (s, v) = app
        .call(
            Method::PUT,
            "/api/owner/workflows/acme-flow",
            Some(&app.acme),
            Some(json!({"steps": [{"name": "a", "queue": "notify"}]})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["field"], "spec.steps[0].queue");
    let (s, v) = app
        .call(
            Method::PUT,
            "/api/owner/workflows/acme-flow",
            Some(&app.acme),
            Some(json!({"steps": [{"name": "a", "queue": "acme-reports"}]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["definition"]["tenant_id"].is_string());
    let (_, v) = app.get_json("/api/owner/workflows", Some(&app.acme)).await;
    let acme_sees: Vec<&str> = v["definitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(acme_sees.contains(&"acme-flow"), "{v}");
    let (_, v) = app
        .get_json("/api/owner/workflows", Some(&app.viewer))
        .await;
    let names: Vec<&str> = v["definitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["acme-flow", "adhoc", "publish"],
        "nothing was saved for `bad`"
    );
    // A saved definition runs.
    let (s, v) = app
        .call(
            Method::POST,
            "/api/owner/workflows/adhoc/run",
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["instance"]["version"], 2);
    let id = v["instance"]["id"].as_str().unwrap().to_string();
    assert_eq!(ended(&app, &id).await["instance"]["status"], "completed");
    app.stop().await;
}

async fn failed_instances_rerun_and_finished_ones_refuse(db: Db) {
    let app = app(db).await;
    // The webhook answers 500 when the job's data has "fail": true.
    let (_, v) = app
        .call(
            Method::POST,
            "/api/owner/workflows/publish/run",
            Some(&app.admin),
            Some(json!({"input": {"topic": "x", "fail": true}})),
        )
        .await;
    let id = v["instance"]["id"].as_str().unwrap().to_string();
    let v = ended(&app, &id).await;
    assert_eq!(v["instance"]["status"], "failed", "{v}");
    assert_eq!(v["steps"][0]["status"], "failed");
    assert!(
        v["steps"][0]["error"].as_str().unwrap().contains("500"),
        "{v}"
    );
    assert_eq!(v["steps"][1]["status"], "cancelled");
    let (s, v) = app
        .call(
            Method::POST,
            &format!("/api/owner/workflows/instances/{id}/cancel"),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    // Retrying the failed step's job itself is refused, pointing at the instance's re-run.
    let (s, v) = app
        .call(
            Method::POST,
            &format!("/api/owner/queues/ai-content/jobs/wf-{id}-draft/retry"),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("/api/owner/workflows/instances/{id}/rerun")),
        "{v}"
    );
    let (s, v) = app
        .call(
            Method::POST,
            &format!("/api/owner/workflows/instances/{id}/rerun"),
            Some(&app.viewer),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = app
        .call(
            Method::POST,
            &format!("/api/owner/workflows/instances/{id}/rerun"),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["instance"]["reruns"], 1);
    assert_eq!(v["instance"]["status"], "running");
    let v = ended(&app, &id).await;
    // The input still says fail: the re-run fails the same way, under a new job id.
    assert_eq!(v["instance"]["status"], "failed");
    assert_eq!(v["steps"][0]["job_id"], format!("wf-{id}-draft-r1"));
    let (s, _) = app
        .call(
            Method::POST,
            "/api/owner/workflows/instances/0000/rerun",
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let audit = support::eventually("re-runs are audited", || async {
        let (_, v) = app
            .get_json(
                "/api/owner/logs/audit?action=owner.workflow.rerun",
                Some(&app.admin),
            )
            .await;
        (v["total"].as_i64() >= Some(2)).then_some(v)
    })
    .await;
    assert!(audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["status"] == 403));
    app.stop().await;
}

async fn workflow_events_reach_the_terminal_channel(db: Db) {
    let app = app(db).await;
    let backend = app.state().backend.clone();
    let channel = keel::pubsub::channels::terminal_events(backend.keys().prefix());
    let mut events = keel::Events::new(&backend)
        .subscribe(&[&channel], &[])
        .await
        .unwrap();
    let (_, v) = app
        .call(
            Method::POST,
            "/api/owner/workflows/publish/run",
            Some(&app.admin),
            None,
        )
        .await;
    let id = v["instance"]["id"].as_str().unwrap().to_string();
    let mut steps = Vec::new();
    let done = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let e = events.next().await.unwrap();
            if e.data["instance_id"] != id.as_str() {
                continue;
            }
            match e.data["type"].as_str() {
                Some("workflow_step") => steps.push((
                    e.data["step"].as_str().unwrap().to_string(),
                    e.data["status"].as_str().unwrap().to_string(),
                )),
                Some("workflow_instance") if e.data["status"] == "completed" => return e.data,
                _ => {}
            }
        }
    })
    .await
    .expect("a workflow_instance completed event");
    assert_eq!(done["workflow"], "publish");
    assert!(
        steps.contains(&("draft".into(), "completed".into())),
        "{steps:?}"
    );
    assert!(
        steps.contains(&("notify".into(), "completed".into())),
        "{steps:?}"
    );
    app.stop().await;
}

async fn the_console_lists_shows_and_runs_workflows(db: Db) {
    let app = app(db).await;
    let mut web = Web::signed_in(&app, &app.admin).await;
    let page = web.get("/workflows").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("No workflow instance matches"),
        "{}",
        page.body
    );
    let defs = web.get("/workflows/definitions").await;
    assert!(defs.body.contains("publish") && defs.body.contains("Draft, then notify"));
    let csrf = defs.csrf();
    let started = web
        .post(
            "/workflows/publish/run",
            &[("csrf", &csrf), ("input", r#"{"topic": "console"}"#)],
            None,
        )
        .await;
    assert_eq!(started.status, StatusCode::SEE_OTHER, "{}", started.body);
    let to = started.location.clone().unwrap();
    assert!(to.starts_with("/workflows/instances/"), "{to}");
    let id = to.rsplit('/').next().unwrap().to_string();
    let v = ended(&app, &id).await;
    assert_eq!(v["instance"]["trigger"]["kind"], "console");
    let detail = web.get(&to).await;
    assert_eq!(detail.status, StatusCode::OK);
    for needle in [
        "draft",
        "notify",
        "state-completed",
        "Output of draft",
        "/runs?queue=ai-content",
    ] {
        assert!(detail.body.contains(needle), "{needle}: {}", detail.body);
    }
    assert!(
        !detail.body.contains("Cancel instance"),
        "a finished instance has no cancel"
    );
    let list = web
        .get("/workflows?workflow=publish&status=completed")
        .await;
    assert!(list.body.contains(&id), "{}", list.body);
    let bad = web
        .post(
            "/workflows/publish/run",
            &[("csrf", &csrf), ("input", "{nope")],
            None,
        )
        .await;
    assert_eq!(bad.status, StatusCode::SEE_OTHER);
    // A viewer sees no run form and cannot post one.
    let mut viewer = Web::signed_in(&app, &app.viewer).await;
    let defs = viewer.get("/workflows/definitions").await;
    assert!(!defs.body.contains("Run publish"), "{}", defs.body);
    app.stop().await;
}
