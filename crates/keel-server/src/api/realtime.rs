//! `GET /api/owner/realtime`: the WebSocket of live events (see [`crate::realtime`] for what
//! travels on it). Authenticated by a bearer token (header or `?token=`) or, from the
//! console's pages, by the session cookie; a socket closes (1008) when its token is revoked or
//! its account disabled.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use keel_records::Role;
use serde_json::json;
use tokio::sync::broadcast;

use crate::auth::cookie_caller;
use crate::error::{ApiError, ErrorCode};
use crate::extract::{bearer, Caller, Meta, Principal};
use crate::ops::queues::all_stats;
use crate::realtime::TOKEN_RECHECK;
use crate::state::AppState;

/// `GET /api/owner/realtime`.
pub async fn socket(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let secret = bearer(&headers)
        .map(str::to_string)
        .or_else(|| q.get("token").cloned());
    let meta = Meta {
        ip: String::new(),
        user_agent: None,
    };
    let caller = match secret {
        // The same cached, revocation-aware check as every owner route.
        Some(secret) => match state.authenticate(&secret).await {
            Ok(t) => Caller::with_token(t, meta),
            Err(e) => return e.into_response(),
        },
        // The console's pages: the session cookie (same origin only).
        None => match cookie_caller(&state, &headers, meta).await {
            Some(c) => c,
            None => {
                return ApiError::unauthorized(
                    "send Authorization: Bearer <token> or ?token=, or sign in to the console",
                )
                .into_response()
            }
        },
    };
    if let Err(e) = caller.require(Role::Viewer) {
        return e.into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            return ApiError::new(
                ErrorCode::UpgradeRequired,
                format!("this is a WebSocket endpoint: {e}"),
            )
            .into_response()
        }
    };
    ws.on_upgrade(move |socket| serve_socket(state, caller, socket))
}

async fn close_revoked(socket: &mut WebSocket) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: 1008,
            reason: "token revoked".into(),
        })))
        .await;
}

/// Whether the caller's token is still live, or its account still enabled (unknown on a
/// records error: the socket stays open).
async fn still_valid(state: &AppState, caller: &Caller) -> bool {
    match &caller.principal {
        Principal::Token(t) => !matches!(state.store.token_by_id(&t.id).await, Ok(None)),
        Principal::User(u) => !matches!(state.store.user_by_id(&u.id).await, Ok(None)),
    }
}

async fn serve_socket(state: AppState, caller: Caller, mut socket: WebSocket) {
    let scope = caller.scope.clone();
    let token_id = match &caller.principal {
        Principal::Token(t) => t.id.clone(),
        Principal::User(_) => String::new(),
    };
    let mut rx = state.realtime.subscribe();
    let snapshot = match all_stats(&state, &scope).await {
        Ok(v) => json!({"type": "snapshot", "queues": v}),
        Err(e) => json!({"type": "error", "message": e.message}),
    };
    if socket
        .send(Message::Text(snapshot.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    let mut recheck = tokio::time::interval(TOKEN_RECHECK);
    recheck.tick().await;
    loop {
        tokio::select! {
            _ = recheck.tick() => {
                if !still_valid(&state, &caller).await {
                    close_revoked(&mut socket).await;
                    return;
                }
            }
            ev = rx.recv() => match ev {
                Ok(v) => {
                    if v["type"] == "token_revoked" {
                        if !token_id.is_empty() && v["token_id"] == token_id.as_str() {
                            close_revoked(&mut socket).await;
                            return;
                        }
                        continue;
                    }
                    let visible = v.get("queue").and_then(|q| q.as_str()).is_none_or(|q| state.can_see_queue(&scope, q))
                        // A workflow's events go to its tenant (and to unbound callers).
                        && scope.tenant().is_none_or(|t| v.get("tenant_id").is_none_or(|id| id == t));
                    if !visible {
                        continue;
                    }
                    let send = socket.send(Message::Text(v.to_string().into()));
                    match tokio::time::timeout(Duration::from_secs(5), send).await {
                        Ok(Ok(())) => {}
                        _ => return,
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::info!(skipped = n, "realtime client too slow; disconnecting");
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame { code: 1008, reason: "too slow: reconnect".into() })))
                        .await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
