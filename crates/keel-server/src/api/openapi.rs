//! `GET /api/openapi.json`: the OpenAPI 3 document, generated from [`ROUTES`], the table the
//! router is checked against in the tests (every route is listed, every listed route answers).
//!
//! Over 600 lines because it is one table: every route, its query and body schemas and its
//! answers' schemas side by side, so a new route is added in one place and the tests check it
//! against the router.

use axum::Json;
use serde_json::{json, Map, Value};

/// One route: method, path (axum syntax `{param}`), summary, minimum role (`None`: public).
pub struct Route {
    /// HTTP method, lower case.
    pub method: &'static str,
    /// Path with `{params}`.
    pub path: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// Minimum role; `None` for public routes.
    pub role: Option<&'static str>,
    /// Query parameters.
    pub query: &'static [&'static str],
}

const fn r(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    role: Option<&'static str>,
    query: &'static [&'static str],
) -> Route {
    Route {
        method,
        path,
        summary,
        role,
        query,
    }
}

const V: Option<&str> = Some("viewer");
const A: Option<&str> = Some("admin");
const O: Option<&str> = Some("owner");

/// Every route of the server.
pub const ROUTES: &[Route] = &[
    r("get", "/api/health", "Overall status", None, &[]),
    r("get", "/api/health/live", "Liveness", None, &[]),
    r(
        "get",
        "/api/health/ready",
        "Readiness: Redis and database",
        None,
        &[],
    ),
    r("get", "/api/health/redis", "Redis PING latency", None, &[]),
    r(
        "get",
        "/api/admin/redis/metrics",
        "Redis INFO summary with alerts",
        A,
        &[],
    ),
    r("get", "/metrics", "Prometheus metrics", None, &[]),
    r("get", "/api/openapi.json", "This document", None, &[]),
    r("get", "/api/owner/queues", "Queues with counts", V, &[]),
    r(
        "get",
        "/api/owner/queues/{queue}/stats",
        "One queue's counts",
        V,
        &[],
    ),
    r(
        "post",
        "/api/owner/queues/{queue}/jobs",
        "Enqueue one job or an array",
        A,
        &[],
    ),
    r(
        "get",
        "/api/owner/queues/{queue}/jobs",
        "List jobs, newest first",
        V,
        &["state", "page", "limit", "cursor", "search", "name"],
    ),
    r(
        "get",
        "/api/owner/queues/{queue}/jobs/{id}",
        "One job with logs and runs",
        V,
        &[],
    ),
    r(
        "delete",
        "/api/owner/queues/{queue}/jobs/{id}",
        "Remove a job",
        A,
        &[],
    ),
    r(
        "post",
        "/api/owner/queues/{queue}/jobs/{id}/retry",
        "Retry a failed job",
        A,
        &[],
    ),
    r(
        "post",
        "/api/owner/queues/{queue}/bulk",
        "Retry or remove many jobs (each audited)",
        A,
        &[],
    ),
    r(
        "post",
        "/api/owner/queues/{queue}/pause",
        "Pause a queue everywhere",
        A,
        &[],
    ),
    r(
        "post",
        "/api/owner/queues/{queue}/resume",
        "Resume a queue",
        A,
        &[],
    ),
    r(
        "get",
        "/api/owner/queues/{queue}/dlq",
        "Dead letters",
        V,
        &["page", "limit"],
    ),
    r(
        "post",
        "/api/owner/queues/{queue}/dlq/replay",
        "Replay every dead letter",
        A,
        &["dry_run"],
    ),
    r(
        "post",
        "/api/owner/queues/{queue}/dlq/{id}/replay",
        "Replay one dead letter",
        A,
        &[],
    ),
    r(
        "delete",
        "/api/owner/queues/{queue}/dlq/{id}",
        "Remove a dead letter",
        A,
        &[],
    ),
    r(
        "delete",
        "/api/owner/queues/{queue}/dlq/{id}/remove",
        "Remove a dead letter (the seeds' route)",
        A,
        &[],
    ),
    r(
        "get",
        "/api/owner/logs/audit",
        "Audit log, newest first",
        A,
        &[
            "id", "action", "resource", "actor", "from", "to", "page", "limit",
        ],
    ),
    r(
        "get",
        "/api/owner/logs/access",
        "Data-access log, newest first",
        A,
        &[
            "id", "action", "resource", "actor", "from", "to", "page", "limit",
        ],
    ),
    r(
        "get",
        "/api/owner/runs",
        "Job runs, newest first",
        V,
        &["queue", "plugin", "status", "job_id", "from", "to", "page", "limit"],
    ),
    r(
        "get",
        "/api/owner/runs/per-minute",
        "Attempts completed and failed per minute",
        V,
        &["minutes"],
    ),
    r("get", "/api/owner/workers", "Live workers", V, &[]),
    r(
        "get",
        "/api/owner/runs/{id}",
        "One run with its events",
        V,
        &[],
    ),
    r(
        "get",
        "/api/owner/workflows",
        "Workflow definitions, latest versions",
        V,
        &[],
    ),
    r(
        "put",
        "/api/owner/workflows/{name}",
        "Save a workflow definition as its next version",
        A,
        &[],
    ),
    r(
        "post",
        "/api/owner/workflows/{name}/run",
        "Start a workflow instance",
        A,
        &[],
    ),
    r(
        "get",
        "/api/owner/workflows/instances",
        "Workflow instances, newest first",
        V,
        &["status", "workflow", "from", "to", "page", "limit"],
    ),
    r(
        "get",
        "/api/owner/workflows/instances/{id}",
        "One workflow instance with its steps",
        V,
        &[],
    ),
    r(
        "post",
        "/api/owner/workflows/instances/{id}/cancel",
        "Cancel a workflow instance",
        A,
        &[],
    ),
    r(
        "post",
        "/api/owner/workflows/instances/{id}/rerun",
        "Re-run a workflow instance from its failed steps",
        A,
        &[],
    ),
    r(
        "get",
        "/api/owner/ai/runs",
        "AI calls (one per attempt), newest first",
        V,
        &["status", "model", "queue", "task", "taskId", "from", "to", "page", "limit"],
    ),
    r(
        "get",
        "/api/owner/ai/runs/{id}",
        "One AI call with its messages and events",
        V,
        &[],
    ),
    r(
        "get",
        "/api/owner/ai/messages",
        "The messages of one AI run (runId) or task (taskId)",
        V,
        &["runId", "taskId", "page", "limit"],
    ),
    r(
        "get",
        "/api/owner/ai/event-logs",
        "AI call events, newest first",
        V,
        &["runId", "taskId", "model", "queue", "from", "to", "page", "limit"],
    ),
    r(
        "get",
        "/api/owner/ai/tasks",
        "AI tasks (one per AI job over its attempts)",
        V,
        &["status", "model", "queue", "task", "from", "to", "page", "limit"],
    ),
    r(
        "get",
        "/api/owner/ai/usage",
        "AI calls, tokens, cost and latency per model per hour",
        V,
        &["hours"],
    ),
    r(
        "get",
        "/api/owner/emails",
        "Email sends (one per attempt), newest first",
        V,
        &["status", "template", "queue", "jobId", "from", "to", "page", "limit"],
    ),
    r(
        "post",
        "/api/otp/send",
        "Mail a one-time code (throttled per address)",
        A,
        &[],
    ),
    r(
        "post",
        "/api/otp/verify",
        "Check a one-time code (consumed when right)",
        A,
        &[],
    ),
    r("get", "/api/owner/tokens", "API tokens", O, &[]),
    r(
        "post",
        "/api/owner/tokens",
        "Create a token (secret shown once)",
        O,
        &[],
    ),
    r("delete", "/api/owner/tokens/{id}", "Revoke a token", O, &[]),
    r(
        "get",
        "/api/owner/realtime",
        "WebSocket: queue_stats, job_status, dlq_stats, workflow_step, workflow_instance, ai_task, email_status",
        V,
        &["token"],
    ),
];

/// The schema of a query parameter, by its name (the names mean the same on every route).
fn query_schema(path: &str, name: &str) -> Value {
    match name {
        "page" => json!({"type": "integer", "minimum": 1}),
        "limit" => json!({"type": "integer", "minimum": 1, "maximum": 1000}),
        "minutes" => json!({"type": "integer", "minimum": 1, "maximum": 1440}),
        "id" => json!({"type": "integer", "format": "int64"}),
        "dry_run" => json!({"type": "boolean"}),
        "cursor" => json!({"type": "string", "pattern": "^[0-9]+$"}),
        "search" => json!({"type": "string", "maxLength": 256}),
        "from" | "to" => json!({"type": "string", "format": "date-time"}),
        "state" => json!({"type": "string", "enum": [
            "waiting", "active", "delayed", "prioritized", "completed", "failed", "waiting-children"
        ]}),
        "status" if path == "/api/owner/runs" => {
            json!({"type": "string", "enum": ["completed", "failed", "dead", "stalled", "delayed"]})
        }
        "runId" => json!({"type": "string", "pattern": "^[0-9]{1,18}$"}),
        "hours" => json!({"type": "integer", "minimum": 1, "maximum": 168}),
        "status" if path.starts_with("/api/owner/ai/") => {
            json!({"type": "string", "enum": ["completed", "retrying", "failed"]})
        }
        "status" if path == "/api/owner/emails" => {
            json!({"type": "string", "enum": ["sent", "deferred", "failed"]})
        }
        "status" if path == "/api/owner/workflows/instances" => json!({"type": "string", "enum": [
            "pending", "running", "completed", "failed", "cancelled"
        ]}),
        _ => json!({"type": "string"}),
    }
}

/// An object whose listed members are all required.
fn object(members: &[(&str, Value)]) -> Value {
    let properties: Map<String, Value> = members
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let required: Vec<&str> = members.iter().map(|(k, _)| *k).collect();
    json!({"type": "object", "required": required, "properties": properties})
}

fn int() -> Value {
    json!({"type": "integer"})
}

fn count() -> Value {
    json!({"type": "integer", "minimum": 0})
}

fn text() -> Value {
    json!({"type": "string"})
}

fn nullable(mut v: Value) -> Value {
    v["nullable"] = json!(true);
    v
}

fn array(items: Value) -> Value {
    json!({"type": "array", "items": items})
}

fn any() -> Value {
    json!({})
}

/// A page of a listing: `items` plus `total`, `page`, `limit`.
fn page_of(items: Value) -> Value {
    object(&[
        ("items", array(items)),
        ("total", count()),
        ("page", int()),
        ("limit", int()),
    ])
}

/// The schemas of the answers, by name (see `components.schemas`).
fn schemas() -> Value {
    let queue_stats = object(&[
        ("name", text()),
        ("waiting", count()),
        ("active", count()),
        ("delayed", count()),
        ("prioritized", count()),
        ("completed", count()),
        ("failed", count()),
        ("dlq", count()),
        ("paused", json!({"type": "boolean"})),
        ("tenant", nullable(text())),
    ]);
    let job_summary = object(&[
        ("id", text()),
        ("name", text()),
        ("data", any()),
        ("attemptsMade", count()),
        ("timestamp", int()),
        ("processedOn", nullable(int())),
        ("finishedOn", nullable(int())),
        ("failedReason", nullable(text())),
        ("progress", any()),
    ]);
    let job = object(&[
        ("id", text()),
        ("queue", text()),
        ("name", text()),
        ("data", any()),
        ("opts", json!({"type": "object"})),
        ("attemptsMade", count()),
        ("attemptsStarted", count()),
        ("stalledCounter", count()),
        ("progress", any()),
        ("timestamp", int()),
        ("processedOn", nullable(int())),
        ("finishedOn", nullable(int())),
        ("failedReason", nullable(text())),
        ("stacktrace", array(text())),
        ("returnvalue", any()),
        ("processedBy", nullable(text())),
    ]);
    let dead_letter = object(&[
        ("id", text()),
        ("originalJobId", text()),
        ("originalQueue", text()),
        ("name", text()),
        ("data", any()),
        ("opts", json!({"type": "object"})),
        ("lastError", text()),
        ("stacktrace", array(text())),
        ("failedAt", int()),
        ("attempts", count()),
    ]);
    let log_entry = |extra: &[(&str, Value)]| {
        let mut members = vec![
            ("id", int()),
            ("at", int()),
            ("actor", text()),
            ("action", text()),
            ("resource", text()),
            ("ip", nullable(text())),
            ("user_agent", nullable(text())),
            ("tenant_id", nullable(text())),
        ];
        members.extend(extra.iter().cloned());
        object(&members)
    };
    let token = object(&[
        ("id", text()),
        ("name", text()),
        (
            "role",
            json!({"type": "string", "enum": ["owner", "admin", "viewer"]}),
        ),
        ("hint", text()),
        ("tenant_id", nullable(text())),
        ("created_at", int()),
        ("last_used_at", nullable(int())),
        ("revoked_at", nullable(int())),
    ]);
    json!({
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string", "nullable": true}}
        }}},
        "NewJob": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string"}, "data": {}, "opts": {"type": "object"}
        }},
        "Health": object(&[("status", text()), ("checks", json!({"type": "object"}))]),
        "Status": object(&[("status", text())]),
        "QueueStats": queue_stats,
        "Queues": object(&[("queues", array(json!({"$ref": "#/components/schemas/QueueStats"})))]),
        "JobPage": object(&[
            ("queue", text()),
            ("state", text()),
            ("total", count()),
            ("limit", int()),
            ("next_cursor", nullable(text())),
            ("jobs", array(job_summary)),
        ]),
        "JobDetail": object(&[
            ("job", job),
            ("state", nullable(text())),
            ("logs", array(text())),
            ("log_count", count()),
            ("runs", array(json!({"type": "object"}))),
        ]),
        "DeadLetters": object(&[
            ("queue", text()),
            ("total", count()),
            ("page", int()),
            ("limit", int()),
            ("entries", array(dead_letter)),
            ("unreadable", array(text())),
        ]),
        "Added": object(&[("jobs", array(object(&[("id", text()), ("name", text())])))]),
        "AuditLog": page_of(log_entry(&[("status", int()), ("payload", any())])),
        "AccessLog": page_of(log_entry(&[("cached", json!({"type": "boolean"})), ("fields", array(text()))])),
        "Runs": page_of(json!({"type": "object"})),
        "Run": object(&[("run", json!({"type": "object"})), ("events", array(json!({"type": "object"})))]),
        "PerMinute": object(&[
            ("from", int()),
            ("minutes", array(object(&[("minute", int()), ("completed", count()), ("failed", count())]))),
        ]),
        "Workers": object(&[("workers", array(json!({"type": "object"})))]),
        "Tokens": object(&[("tokens", array(token.clone()))]),
        "NewToken": object(&[("token", token), ("secret", text())]),
        "WorkflowDefinitions": object(&[("definitions", array(json!({"type": "object"})))]),
        "WorkflowSaved": object(&[("definition", json!({"type": "object"})), ("new_version", json!({"type": "boolean"}))]),
        "WorkflowInstances": page_of(json!({"type": "object"})),
        "WorkflowInstance": object(&[("instance", json!({"type": "object"})), ("steps", array(json!({"type": "object"})))]),
        "BulkOutcome": object(&[
            ("action", json!({"type": "string", "enum": ["retry", "remove"]})),
            ("done", count()),
            ("failed", array(object(&[("id", text()), ("code", text()), ("message", text())]))),
        ]),
    })
}

/// The schema of a route's 200 (or 201) answer.
fn ok_schema(method: &str, path: &str) -> Value {
    let named = |n: &str| json!({"$ref": format!("#/components/schemas/{n}")});
    match (method, path) {
        ("get", "/api/health") | ("get", "/api/health/ready") => named("Health"),
        ("get", "/api/health/live") | ("get", "/api/health/redis") => named("Status"),
        ("get", "/api/owner/queues") => named("Queues"),
        ("get", "/api/owner/queues/{queue}/stats") => named("QueueStats"),
        ("get", "/api/owner/queues/{queue}/jobs") => named("JobPage"),
        ("post", "/api/owner/queues/{queue}/jobs") => named("Added"),
        ("get", "/api/owner/queues/{queue}/jobs/{id}") => named("JobDetail"),
        ("get", "/api/owner/queues/{queue}/dlq") => named("DeadLetters"),
        ("get", "/api/owner/logs/audit") => named("AuditLog"),
        ("get", "/api/owner/logs/access") => named("AccessLog"),
        ("get", "/api/owner/runs") => named("Runs"),
        ("get", "/api/owner/runs/{id}") => named("Run"),
        ("get", "/api/owner/runs/per-minute") => named("PerMinute"),
        ("get", "/api/owner/workers") => named("Workers"),
        ("get", "/api/owner/tokens") => named("Tokens"),
        ("post", "/api/owner/tokens") => named("NewToken"),
        ("post", "/api/owner/queues/{queue}/bulk") => named("BulkOutcome"),
        ("get", "/api/owner/ai/usage") => array(object(&[
            ("hour", int()),
            ("model", text()),
            ("runs", count()),
            ("failed", count()),
            ("totalTokens", count()),
            ("costUsd", json!({"type": "number"})),
            ("avgLatencyMs", json!({"type": "number"})),
        ])),
        ("get", "/api/owner/workflows") => named("WorkflowDefinitions"),
        ("put", "/api/owner/workflows/{name}") => named("WorkflowSaved"),
        ("get", "/api/owner/workflows/instances") => named("WorkflowInstances"),
        ("post", "/api/owner/workflows/{name}/run")
        | ("get", "/api/owner/workflows/instances/{id}")
        | ("post", "/api/owner/workflows/instances/{id}/cancel")
        | ("post", "/api/owner/workflows/instances/{id}/rerun") => named("WorkflowInstance"),
        _ => json!({"type": "object"}),
    }
}

/// What a route's 200 answer is.
fn ok_content(method: &str, path: &str) -> Value {
    match path {
        "/metrics" => json!({"application/openmetrics-text": {"schema": {"type": "string"}}}),
        _ => json!({"application/json": {"schema": ok_schema(method, path)}}),
    }
}

fn operation(route: &Route) -> Value {
    let mut params: Vec<Value> = route
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string", "minLength": 1}}))
        .collect();
    params.extend(route.query.iter().map(|q| {
        json!({"name": q, "in": "query", "required": false, "schema": query_schema(route.path, q)})
    }));
    let error = json!({"$ref": "#/components/responses/Error"});
    // Every route can answer these: bad input, unknown route or resource, the rate limit or a
    // head over the limits, a backend outage, a timeout, a fault (always in the error shape).
    let mut responses = json!({
        "200": {"description": "OK", "content": ok_content(route.method, route.path)},
        "400": error, "404": error, "408": error, "429": error, "431": error,
        "500": error, "503": error,
    });
    if route.method != "get" {
        // Changes can collide with the current state (a job that is active, a token revoked).
        responses["409"] = error.clone();
    }
    if route.path == "/api/owner/realtime" {
        responses["101"] = json!({"description": "Switching to the WebSocket protocol"});
        responses["426"] = error.clone();
    }
    let mut op = json!({
        "summary": route.summary,
        "operationId": format!("{}{}", route.method, route.path.replace(['/', '{', '}', '.'], "_")),
        "parameters": params,
    });
    if let Some(role) = route.role {
        op["security"] = json!([{"bearer": []}]);
        op["description"] = json!(format!("Needs the {role} role or higher."));
        responses["401"] = json!({"$ref": "#/components/responses/Error"});
        responses["403"] = json!({"$ref": "#/components/responses/Error"});
    }
    if route.method == "post" && route.path.ends_with("/jobs") {
        op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"oneOf": [
            {"$ref": "#/components/schemas/NewJob"},
            {"type": "array", "items": {"$ref": "#/components/schemas/NewJob"}, "maxItems": 1000}
        ]}}}});
        responses["201"] =
            json!({"description": "Added", "content": ok_content("post", route.path)});
        responses["413"] = error.clone();
        responses["415"] = error.clone();
    }
    if route.method == "post" && route.path.ends_with("/bulk") {
        op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {
            "type": "object", "required": ["action"], "additionalProperties": false,
            "properties": {
                "action": {"type": "string", "enum": ["retry", "remove"]},
                "ids": {"type": "array", "items": {"type": "string"}, "maxItems": 10000},
                "state": {"type": "string", "enum": ["waiting", "active", "delayed", "prioritized", "completed", "failed", "waiting-children"]},
                "limit": {"type": "integer", "minimum": 1, "maximum": 10000}
            }
        }}}});
        responses["413"] = error.clone();
        responses["415"] = error.clone();
    }
    if route.method == "put" && route.path == "/api/owner/workflows/{name}" {
        op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {
            "type": "object", "required": ["steps"], "additionalProperties": false,
            "properties": {
                "description": {"type": "string"},
                "steps": {"type": "array", "items": {"type": "object", "required": ["name", "queue"], "properties": {
                    "name": {"type": "string"}, "queue": {"type": "string"}, "job": {"type": "string"},
                    "needs": {"type": "array", "items": {"type": "string"}},
                    "input": {}, "attempts": {"type": "integer", "minimum": 1},
                    "timeout_ms": {"type": "integer", "minimum": 1},
                    "on_failure": {"type": "string", "enum": ["fail", "continue"]}
                }}},
                "schedule": {"type": "object"},
                "on_complete": {"type": "array", "items": {"type": "object"}}
            }
        }}}});
        responses["413"] = error.clone();
        responses["415"] = error.clone();
    }
    if route.method == "post" && route.path == "/api/owner/workflows/{name}/run" {
        op["requestBody"] = json!({"required": false, "content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": false,
            "properties": {"input": {}}
        }}}});
        responses["201"] =
            json!({"description": "Started", "content": ok_content("post", route.path)});
        responses["413"] = error.clone();
        responses["415"] = error.clone();
    }
    if route.method == "post" && route.path.starts_with("/api/otp/") {
        let mut properties = json!({
            "email": {"type": "string", "format": "email", "maxLength": 320},
            "purpose": {"type": "string"}
        });
        let mut required = vec!["email"];
        if route.path.ends_with("/verify") {
            properties["code"] = json!({"type": "string", "minLength": 1, "maxLength": 64});
            required.push("code");
        } else {
            responses["201"] =
                json!({"description": "Sent", "content": ok_content("post", route.path)});
        }
        op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {
            "type": "object", "required": required, "additionalProperties": false,
            "properties": properties
        }}}});
        responses["413"] = error.clone();
        responses["415"] = error.clone();
    }
    if route.method == "post" && route.path == "/api/owner/tokens" {
        op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {
            "type": "object", "required": ["name", "role"], "additionalProperties": false,
            "properties": {
                "name": {"type": "string"},
                "role": {"type": "string", "enum": ["owner", "admin", "viewer"]},
                "tenant": {"type": "string", "nullable": true}
            }
        }}}});
        responses["201"] = json!({"description": "Created (the secret is shown once)", "content": ok_content("post", route.path)});
        responses["413"] = error.clone();
        responses["415"] = error.clone();
    }
    op["responses"] = responses;
    op
}

/// The document.
pub fn spec() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        entry[route.method] = operation(route);
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Keel owner API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
            "responses": {"Error": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}
        }
    })
}

/// `GET /api/openapi.json`.
pub async fn document() -> Json<Value> {
    Json(spec())
}
