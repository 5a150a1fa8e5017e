//! `POST /queues/{queue}/bulk`: retry or remove the selected jobs, or every job in a state —
//! asking first, saying how many, then doing it through the bulk operation.

use axum::extract::{Path, RawForm, RawQuery};
use axum::response::Response;
use serde_json::json;

use super::jobs::STATES;
use crate::console::ctx::Ctx;
use crate::console::page::{ConfirmPage, Form};
use crate::console::view::enc;
use crate::ops;
use crate::ops::bulk::MAX_BULK_ACTION;

/// `POST /queues/{queue}/bulk[?all=1]`.
pub async fn bulk(
    ctx: Ctx,
    Path(q): Path<String>,
    RawQuery(rq): RawQuery,
    RawForm(raw): RawForm,
) -> Response {
    let form = Form::parse(&raw);
    if let Some(r) = ctx.refuse(&form) {
        return r;
    }
    let qe = enc(&q);
    let fallback = format!("/queues/{qe}");
    let retry = match form.get("action") {
        Some("retry") => true,
        Some("remove") => false,
        _ => return ctx.done(&form, &fallback, false, "Choose retry or remove."),
    };
    let state = form.get("state").unwrap_or("waiting").to_string();
    if !STATES.contains(&state.as_str()) {
        return ctx.done(&form, &fallback, false, &format!("Unknown state {state}."));
    }
    // "… all" buttons post to `bulk?all=1`; the confirmation form sends `scope=all`.
    let all = form.get("scope") == Some("all")
        || rq
            .as_deref()
            .is_some_and(|q| q.split('&').any(|p| p == "all=1"));
    let ids = form.all("ids");
    let verb = if retry { "Retry" } else { "Remove" };
    if form.get("confirm") != Some("yes") {
        let count = if all {
            match ops::queues::stats(&ctx.state, &ctx.caller, &q).await {
                Ok(s) => s.value.count(&state).min(MAX_BULK_ACTION as u64),
                Err(e) => return ctx.failed(e),
            }
        } else {
            ids.len() as u64
        };
        if count == 0 {
            let msg = if all {
                format!("There is no {state} job in {q}.")
            } else {
                "Select jobs first (the boxes in the first column).".into()
            };
            return ctx.done(&form, &fallback, false, &msg);
        }
        let mut fields = vec![
            (
                "action".to_string(),
                form.get("action").unwrap_or_default().to_string(),
            ),
            ("state".into(), state.clone()),
            ("scope".into(), if all { "all" } else { "selected" }.into()),
            ("expected".into(), count.to_string()),
            (
                "back".into(),
                form.get("back").unwrap_or(&fallback).to_string(),
            ),
            ("confirm".into(), "yes".into()),
        ];
        if !all {
            fields.extend(ids.iter().map(|i| ("ids".to_string(), i.clone())));
        }
        let plural = if count == 1 { "job" } else { "jobs" };
        let which = if all {
            format!("every {state} job in {q} ({count} {plural})")
        } else {
            format!("{count} selected {plural} in {q}")
        };
        return ctx.page(ConfirmPage {
            layout: ctx.layout(format!("{verb} {count} {plural}?"), "queues"),
            heading: format!("{verb} {count} {plural}?"),
            message: format!(
                "This will {} {which}.{}",
                verb.to_lowercase(),
                if retry {
                    " Each goes back to waiting with its attempts reset."
                } else {
                    " Removed jobs cannot be brought back."
                }
            ),
            action: format!("/queues/{qe}/bulk"),
            fields,
            confirm: format!("{verb} {count} {plural}"),
            cancel: form.get("back").unwrap_or(&fallback).to_string(),
            danger: !retry,
        });
    }
    let action = if retry { "retry" } else { "remove" };
    let body = if all {
        let expected = form
            .get("expected")
            .and_then(|e| e.parse::<usize>().ok())
            .unwrap_or(0)
            .min(MAX_BULK_ACTION);
        if expected == 0 {
            return ctx.done(&form, &fallback, false, "Nothing was confirmed.");
        }
        json!({"action": action, "state": state, "limit": expected})
    } else {
        let ids: Vec<&String> = ids.iter().take(MAX_BULK_ACTION).collect();
        json!({"action": action, "ids": ids})
    };
    let outcome = match ops::bulk::bulk(&ctx.state, &ctx.caller, &q, body).await {
        Ok(o) => o,
        Err(e) => return ctx.done(&form, &fallback, false, &e.message),
    };
    let done = if retry { "Retried" } else { "Removed" };
    let ok = outcome.done;
    let plural = if ok == 1 { "job" } else { "jobs" };
    match outcome.failed.first() {
        None => ctx.done(&form, &fallback, true, &format!("{done} {ok} {plural}.")),
        Some(f) => ctx.done(
            &form,
            &fallback,
            false,
            &format!(
                "{done} {ok} {plural}; {} failed (first: job {}: {}).",
                outcome.failed.len(),
                f.id,
                f.message
            ),
        ),
    }
}
