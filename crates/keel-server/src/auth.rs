//! Console sessions and their cookies, shared by the console (which signs people in) and the
//! realtime socket (which browsers open with the session cookie, not a bearer token).
//!
//! A session lives on the backend (12 h) and holds who signed in — a token's id or a named
//! account's id — and the session's CSRF token. Every request re-reads the token or account,
//! so revoking the token or disabling the account ends its sessions.

use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue};
use keel::Sessions;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::extract::{Caller, Meta};
use crate::state::AppState;

/// Session cookie name.
pub const SESSION_COOKIE: &str = "keel_session";
/// The sign-in form's double-submit CSRF cookie.
pub const LOGIN_COOKIE: &str = "keel_login_csrf";
/// The one-shot message cookie of the page after a form.
pub const FLASH_COOKIE: &str = "keel_flash";
/// How long a console session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Random bytes of a session id and of a CSRF token.
pub const SESSION_SECRET_BYTES: usize = 32;

/// The console's sessions on the backend.
pub fn sessions(state: &AppState) -> Sessions {
    Sessions::custom(&state.backend, "console", SESSION_TTL, SESSION_TTL)
}

/// What a session holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionData {
    /// The token signed in with (empty for a named account).
    #[serde(default)]
    pub token: String,
    /// The named account signed in as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The session's CSRF token.
    pub csrf: String,
}

/// A new random secret for a session id or CSRF token.
pub fn new_secret() -> String {
    keel_records::secret::random_hex(SESSION_SECRET_BYTES)
}

/// A cookie of the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Equality that takes as long for every mismatch position (CSRF tokens).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Whether the request is over HTTPS (directly or, with `trust_proxy`, per the proxy).
pub fn secure(state: &AppState, headers: &HeaderMap) -> bool {
    state.server.trust_proxy
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value: `HttpOnly; SameSite=Strict`, `Secure` over HTTPS.
pub fn set_cookie(name: &str, value: &str, max_age: i64, path: &str, secure: bool) -> HeaderValue {
    let s = format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Whether an `Origin` header (when sent) names this host.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(origin);
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

/// The caller a session stands for, if its token is live or its account enabled; `Ok(None)`
/// sends the browser to sign in again. A records outage is `database-unavailable`.
pub async fn session_caller(
    state: &AppState,
    data: &SessionData,
    meta: Meta,
) -> ApiResult<Option<Caller>> {
    if let Some(user) = &data.user {
        return Ok(state
            .store
            .user_by_id(user)
            .await?
            .map(|u| Caller::with_user(u, meta)));
    }
    Ok(state
        .store
        .token_by_id(&data.token)
        .await?
        .map(|t| Caller::with_token(t, meta)))
}

/// The session named by the request's cookie (same origin only), if any: its id and data.
pub async fn session_of(
    state: &AppState,
    headers: &HeaderMap,
) -> ApiResult<Option<(String, SessionData)>> {
    if !same_origin(headers) {
        return Ok(None);
    }
    let Some(sid) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    match sessions(state).get::<SessionData>(sid).await {
        Ok(s) => Ok(s.map(|s| (sid.to_string(), s.data))),
        Err(e) => Err(ApiError::new(
            ErrorCode::BackendUnavailable,
            format!("console sessions are kept on the backend, which did not answer: {e}"),
        )),
    }
}

/// The caller of the console session named by the request's cookie, if any and still valid
/// (the realtime socket, which browsers cannot send an `Authorization` header to).
pub async fn cookie_caller(state: &AppState, headers: &HeaderMap, meta: Meta) -> Option<Caller> {
    let (_, data) = session_of(state, headers).await.ok()??;
    session_caller(state, &data, meta).await.ok()?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_origins() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; keel_session=abc; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(
            same_origin(&h),
            "no Origin header: a same-origin navigation"
        );
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_origin(&h));
        assert!(
            constant_time_eq("abc", "abc")
                && !constant_time_eq("abc", "abd")
                && !constant_time_eq("a", "ab")
        );
    }

    #[test]
    fn sessions_of_before_named_accounts_still_read() {
        let old: SessionData = serde_json::from_str(r#"{"token":"t1","csrf":"c"}"#).unwrap();
        assert_eq!((old.token.as_str(), old.user), ("t1", None));
    }
}
