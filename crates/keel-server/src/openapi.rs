//! `GET /api/openapi.json`: the OpenAPI 3 document, generated from [`ROUTES`], the table the
//! router is checked against in the tests (every route is listed, every listed route answers).

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
        &["queue", "status", "job_id", "from", "to", "page", "limit"],
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
        "WebSocket: queue_stats, job_status, dlq_stats",
        V,
        &["token"],
    ),
];

fn operation(route: &Route) -> Value {
    let mut params: Vec<Value> = route
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    params.extend(route.query.iter().map(
        |q| json!({"name": q, "in": "query", "required": false, "schema": {"type": "string"}}),
    ));
    let mut responses = json!({
        "200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}},
        "400": {"$ref": "#/components/responses/Error"},
        "404": {"$ref": "#/components/responses/Error"},
        "429": {"$ref": "#/components/responses/Error"},
        "503": {"$ref": "#/components/responses/Error"},
    });
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
        responses["201"] = json!({"description": "Added"});
        responses["413"] = json!({"$ref": "#/components/responses/Error"});
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
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string", "nullable": true}}
                }}},
                "NewJob": {"type": "object", "required": ["name"], "properties": {
                    "name": {"type": "string"}, "data": {}, "opts": {"type": "object"}
                }}
            },
            "responses": {"Error": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}
        }
    })
}

/// `GET /api/openapi.json`.
pub async fn document() -> Json<Value> {
    Json(spec())
}
