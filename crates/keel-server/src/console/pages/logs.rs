//! `/audit` and `/access`: the logs with filters (dates in the browser's zone); `/audit/{id}`
//! and `/access/{id}`: one entry with its payload or returned fields.

use askama::Template;
use axum::extract::{Path, RawQuery};
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use crate::console::ctx::Ctx;
use crate::console::page::{Layout, PAGE_SIZE};
use crate::console::view::{self, query, time_of, Pager};
use crate::error::ApiError;
use crate::extract::parse_query;
use crate::ops;
use crate::ops::logs::LogQuery;

/// The filters of the log and run pages, as the forms send them.
#[derive(Deserialize)]
pub struct LogParams {
    pub action: Option<String>,
    pub resource: Option<String>,
    pub actor: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub tz: Option<String>,
    pub page: Option<usize>,
    pub queue: Option<String>,
    pub status: Option<String>,
    /// Runs of one job (a workflow step's links here).
    pub job_id: Option<String>,
}

/// A `datetime-local` value (`2026-11-29T10:30`) in the browser's zone (`tz`: minutes west of
/// UTC, as `Date.getTimezoneOffset` gives; UTC without it) as RFC 3339.
pub fn local_to_rfc3339(v: &str, tz: Option<&str>) -> Result<String, String> {
    let t = chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S"))
        .map_err(|_| format!("{v} is not a date and time (2026-11-29T10:30)"))?;
    let offset_min: i64 = tz
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
        .clamp(-1440, 1440);
    let utc = t + chrono::Duration::minutes(offset_min);
    Ok(utc
        .and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// The date range of a log or run filter: the browser's `datetime-local` values as typed, its
/// zone, and the same instants as RFC 3339 for the operation (or why they could not be read).
pub struct Range {
    pub from: String,
    pub to: String,
    pub tz: String,
    pub from_api: String,
    pub to_api: String,
    pub error: String,
}

impl Range {
    /// The range of the filters `p`.
    pub fn of(p: &LogParams) -> Range {
        Range::new(p.from.as_deref(), p.to.as_deref(), p.tz.as_deref())
    }

    /// The range of a page's `from`, `to` and `tz` parameters.
    pub fn new(from: Option<&str>, to: Option<&str>, tz: Option<&str>) -> Range {
        let from = from.unwrap_or_default().to_string();
        let to = to.unwrap_or_default().to_string();
        let tz = tz.unwrap_or_default().to_string();
        let mut error = String::new();
        let zone = Some(tz.as_str()).filter(|t| !t.is_empty());
        let mut conv = |v: &str, field: &str| {
            if v.is_empty() {
                return String::new();
            }
            local_to_rfc3339(v, zone).unwrap_or_else(|e| {
                error = format!("{field}: {e}");
                String::new()
            })
        };
        let (from_api, to_api) = (conv(&from, "From"), conv(&to, "To"));
        Range {
            from,
            to,
            tz,
            from_api,
            to_api,
            error,
        }
    }
}

struct LogRow {
    id: i64,
    href: String,
    at: String,
    actor: String,
    action: String,
    resource: String,
    ip: String,
    /// Audit: HTTP status; access: whether the cache served it.
    outcome: String,
    failed: bool,
}

#[derive(Template)]
#[template(path = "console/logs.html")]
struct LogsPage {
    layout: Layout,
    kind: &'static str,
    heading: &'static str,
    rows: Vec<LogRow>,
    pager: Pager,
    action: String,
    resource: String,
    actor: String,
    from: String,
    to: String,
    tz: String,
    filter_error: String,
    empty: &'static str,
}

/// `GET /audit`.
pub async fn audit_log(ctx: Ctx, RawQuery(raw): RawQuery) -> Response {
    logs(ctx, raw, "audit").await
}

/// `GET /access`.
pub async fn access_log(ctx: Ctx, RawQuery(raw): RawQuery) -> Response {
    logs(ctx, raw, "access").await
}

fn nonempty(s: &str) -> Option<String> {
    Some(s.to_string()).filter(|s| !s.is_empty())
}

async fn logs(ctx: Ctx, raw: Option<String>, kind: &'static str) -> Response {
    let p: LogParams = match parse_query(raw.as_deref()) {
        Ok(p) => p,
        Err(e) => return ctx.failed(e),
    };
    let page = p.page.unwrap_or(1).max(1);
    let (action, resource, actor) = (
        p.action.clone().unwrap_or_default(),
        p.resource.clone().unwrap_or_default(),
        p.actor.clone().unwrap_or_default(),
    );
    let Range {
        from,
        to,
        tz,
        from_api,
        to_api,
        error: filter_error,
    } = Range::of(&p);
    let filter = LogQuery {
        id: None,
        action: nonempty(&action),
        resource: nonempty(&resource),
        actor: nonempty(&actor),
        from: nonempty(&from_api),
        to: nonempty(&to_api),
        page: Some(page),
        limit: Some(PAGE_SIZE),
    };
    let (rows, total) = if kind == "audit" {
        match ops::logs::audit(&ctx.state, &ctx.caller, &filter).await {
            Ok(r) => (
                r.value
                    .items
                    .into_iter()
                    .map(|e| LogRow {
                        id: e.id,
                        href: format!("/audit/{}", e.id),
                        at: time_of(Some(e.at)),
                        actor: e.actor,
                        action: e.action,
                        resource: e.resource,
                        ip: e.ip.unwrap_or_default(),
                        outcome: e.status.to_string(),
                        failed: e.status >= 400,
                    })
                    .collect::<Vec<_>>(),
                r.value.total,
            ),
            Err(e) => return ctx.failed(e),
        }
    } else {
        match ops::logs::access(&ctx.state, &ctx.caller, &filter).await {
            Ok(p) => (
                p.items
                    .into_iter()
                    .map(|e| LogRow {
                        id: e.id,
                        href: format!("/access/{}", e.id),
                        at: time_of(Some(e.at)),
                        actor: e.actor,
                        action: e.action,
                        resource: e.resource,
                        ip: e.ip.unwrap_or_default(),
                        outcome: if e.cached { "cache" } else { "store" }.into(),
                        failed: false,
                    })
                    .collect(),
                p.total,
            ),
            Err(e) => return ctx.failed(e),
        }
    };
    let link = |n: usize| {
        format!(
            "/{kind}{}",
            query(&[
                ("action", &action),
                ("resource", &resource),
                ("actor", &actor),
                ("from", &from),
                ("to", &to),
                ("tz", &tz),
                ("page", &n.to_string()),
            ])
        )
    };
    let (heading, empty) = if kind == "audit" {
        (
            "Audit log",
            "No audit entry matches. Every change made through the owner API or this console (enqueue, pause, retry, replay, remove, tokens) is recorded here with its masked payload.",
        )
    } else {
        (
            "Access log",
            "No access entry matches. Reads of sensitive data (jobs, logs, runs) through the owner API or this console are recorded here with the fields returned.",
        )
    };
    ctx.page(LogsPage {
        layout: ctx.layout(heading, kind),
        kind,
        heading,
        rows,
        pager: Pager::new(page, PAGE_SIZE, total as u64, link).of("entries"),
        action,
        resource,
        actor,
        from,
        to,
        tz,
        filter_error,
        empty,
    })
}

#[derive(Template)]
#[template(path = "console/log_entry.html")]
struct LogEntryPage {
    layout: Layout,
    kind: &'static str,
    id: i64,
    fields: Vec<(&'static str, String)>,
    at: String,
    payload: String,
    returned: Vec<String>,
}

/// `GET /audit/{id}`.
pub async fn audit_entry(ctx: Ctx, Path(id): Path<String>) -> Response {
    log_entry(ctx, id, "audit").await
}

/// `GET /access/{id}`.
pub async fn access_entry(ctx: Ctx, Path(id): Path<String>) -> Response {
    log_entry(ctx, id, "access").await
}

fn dash(v: Option<String>) -> String {
    v.unwrap_or_else(|| "—".into())
}

async fn log_entry(ctx: Ctx, id: String, kind: &'static str) -> Response {
    let missing = || ApiError::not_found(format!("{kind} entry {id}"));
    let Ok(n) = id.parse::<i64>() else {
        return ctx.failed(missing());
    };
    let filter = LogQuery {
        id: Some(n),
        ..LogQuery::default()
    };
    // (fields, at, payload, returned)
    let found = if kind == "audit" {
        ops::logs::audit(&ctx.state, &ctx.caller, &filter)
            .await
            .map(|r| {
                r.value.items.into_iter().next().map(|e| {
                    let fields = vec![
                        ("Actor", e.actor),
                        ("Action", e.action),
                        ("Resource", e.resource),
                        ("IP", dash(e.ip)),
                        ("User agent", dash(e.user_agent)),
                        ("Tenant", dash(e.tenant_id)),
                        ("Status", e.status.to_string()),
                    ];
                    let payload = match &e.payload {
                        None | Some(Value::Null) => String::new(),
                        Some(p) => view::json_viewer("payload", p),
                    };
                    (fields, e.at, payload, Vec::new())
                })
            })
    } else {
        ops::logs::access(&ctx.state, &ctx.caller, &filter)
            .await
            .map(|p| {
                p.items.into_iter().next().map(|e| {
                    let fields = vec![
                        ("Actor", e.actor),
                        ("Action", e.action),
                        ("Resource", e.resource),
                        ("IP", dash(e.ip)),
                        ("User agent", dash(e.user_agent)),
                        ("Tenant", dash(e.tenant_id)),
                        (
                            "Served from",
                            if e.cached { "cache" } else { "store" }.into(),
                        ),
                    ];
                    (fields, e.at, String::new(), e.fields)
                })
            })
    };
    let (fields, at, payload, returned) = match found {
        Ok(Some(f)) => f,
        Ok(None) => return ctx.failed(missing()),
        Err(e) => return ctx.failed(e),
    };
    ctx.page(LogEntryPage {
        layout: ctx.layout(format!("{kind} entry {n}"), kind),
        at: time_of(Some(at)),
        kind,
        id: n,
        fields,
        payload,
        returned,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browser_local_times_become_utc() {
        assert_eq!(
            local_to_rfc3339("2026-11-29T10:30", Some("-60")).unwrap(),
            "2026-11-29T09:30:00Z"
        );
        assert_eq!(
            local_to_rfc3339("2026-11-29T10:30", None).unwrap(),
            "2026-11-29T10:30:00Z"
        );
        assert!(local_to_rfc3339("yesterday", None).is_err());
    }
}
