//! `/login` and `/logout`: sign-in with an API token or with a named account (email and
//! password), each against the `login` rate-limit policy per address and, for accounts, per
//! account; a locked address or account is refused even with the right secret until its
//! lockout ends.

use std::time::Duration;

use askama::Template;
use axum::extract::{RawForm, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::auth::{
    constant_time_eq, cookie, new_secret, same_origin, secure, session_caller, sessions,
    set_cookie, SessionData, LOGIN_COOKIE, SESSION_COOKIE, SESSION_TTL,
};
use crate::console::ctx::{is_local_path, Ctx};
use crate::console::page::{bare_error, html, Form, Layout};
use crate::error::ErrorCode;
use crate::extract::{parse_query, Meta};
use crate::state::AppState;

/// How long the sign-in form's CSRF cookie lasts.
const LOGIN_FORM_TTL_S: i64 = 3600;
/// How long sign-in waits when the lockout cannot be read (it fails closed).
const LOCKOUT_UNKNOWN: Duration = Duration::from_secs(60);

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    layout: Layout,
    next: String,
    login_csrf: String,
    error: String,
}

/// `GET /login?next=`: the form, or `/` when the browser's session is still good. A session
/// whose token was revoked or whose account was disabled is ended here (else `/` and `/login`
/// would send the browser back and forth).
pub async fn login_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    meta: Meta,
    RawQuery(raw): RawQuery,
) -> Response {
    #[derive(Deserialize, Default)]
    struct Q {
        next: Option<String>,
    }
    let q: Q = parse_query(raw.as_deref()).unwrap_or_default();
    if let Some(sid) = cookie(&headers, SESSION_COOKIE) {
        if let Ok(Some(s)) = sessions(&state).get::<SessionData>(sid).await {
            match session_caller(&state, &s.data, meta).await {
                Ok(Some(_)) => return Redirect::to("/").into_response(),
                Ok(None) => {
                    let _ = sessions(&state).destroy(sid).await;
                }
                Err(_) => {}
            }
        }
    }
    login_page(
        &state,
        &headers,
        q.next.unwrap_or_default(),
        String::new(),
        StatusCode::OK,
    )
}

fn login_page(
    state: &AppState,
    headers: &HeaderMap,
    next: String,
    error: String,
    status: StatusCode,
) -> Response {
    let token = new_secret();
    let mut resp = html(
        status,
        LoginPage {
            layout: Layout::signed_out("Sign in"),
            next,
            login_csrf: token.clone(),
            error,
        },
    );
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            LOGIN_COOKIE,
            &token,
            LOGIN_FORM_TTL_S,
            "/login",
            secure(state, headers),
        ),
    );
    resp
}

/// Where to go after signing in: a local path, never `/login` itself.
pub fn safe_next(next: Option<&str>) -> String {
    next.filter(|n| is_local_path(n) && !n.starts_with("/login"))
        .unwrap_or("/")
        .to_string()
}

/// `POST /login`: `token`, or `email` and `password`.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    meta: Meta,
    RawForm(raw): RawForm,
) -> Response {
    let form = Form::parse(&raw);
    let next = safe_next(form.get("next"));
    let csrf_ok = same_origin(&headers)
        && match (form.get("csrf"), cookie(&headers, LOGIN_COOKIE)) {
            (Some(a), Some(b)) => !a.is_empty() && constant_time_eq(a, b),
            _ => false,
        };
    if !csrf_ok {
        return login_page(
            &state,
            &headers,
            next,
            "The sign-in form expired or came from another site (CSRF check). Try again.".into(),
            StatusCode::FORBIDDEN,
        );
    }
    let email = form
        .get("email")
        .map(|e| e.trim().to_lowercase())
        .filter(|e| !e.is_empty());
    // Lockouts set by the `login` policy: the address's, and the account's when one is named.
    // A locked one is refused whatever it sends, the right secret included.
    let mut lockouts = vec![LoginLockout::new(&state, &format!("ip-{}", meta.ip))];
    if let Some(e) = &email {
        lockouts.push(LoginLockout::new(&state, &format!("account-{e}")));
    }
    for l in &lockouts {
        if let Some(wait) = l.remaining().await {
            return too_many_sign_ins(&state, &headers, next, wait);
        }
    }
    let who = match &email {
        Some(e) => {
            let password = form.get("password").unwrap_or_default();
            match state.store.verify_user(e, password).await {
                Ok(Some(u)) => Ok(SessionData {
                    token: String::new(),
                    user: Some(u.id),
                    csrf: new_secret(),
                }),
                Ok(None) => Err("That email and password do not match an enabled account."),
                Err(e) => {
                    return bare_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Sign-in unavailable",
                        &e.to_string(),
                    )
                }
            }
        }
        None => {
            let secret = form.get("token").unwrap_or_default().trim().to_string();
            match state.authenticate(&secret).await {
                Ok(t) => Ok(SessionData {
                    token: t.id,
                    user: None,
                    csrf: new_secret(),
                }),
                Err(e) if e.code == ErrorCode::Unauthorized => Err(
                    "That token is unknown or revoked. Use the owner token printed at first start, or one from `keel token create`.",
                ),
                Err(e) => return bare_error(e.status(), "Sign-in unavailable", &e.message),
            }
        }
    };
    let data = match who {
        Ok(d) => d,
        Err(message) => {
            // Failed sign-ins count against the `login` policy (5 per 15 minutes) per address
            // and per account; the failure that uses up the last one locks it.
            let subjects: Vec<String> = std::iter::once(format!("ip-{}", meta.ip))
                .chain(email.iter().map(|e| format!("account-{e}")))
                .collect();
            for (subject, lockout) in subjects.iter().zip(&lockouts) {
                let locked = match state.limiter.check("login", subject).await {
                    Ok(d) if !d.allowed => {
                        Some(d.retry_after.unwrap_or(d.reset_after).as_secs().max(1))
                    }
                    Ok(d) if d.remaining == 0 => {
                        lockout.lock(d.reset_after).await;
                        None
                    }
                    Ok(_) => None,
                    Err(_) => Some(LOCKOUT_UNKNOWN.as_secs()),
                };
                if let Some(wait) = locked {
                    lockout.lock(Duration::from_secs(wait)).await;
                    return too_many_sign_ins(&state, &headers, next, wait);
                }
            }
            return login_page(
                &state,
                &headers,
                next,
                message.into(),
                StatusCode::UNAUTHORIZED,
            );
        }
    };
    let sid = match sessions(&state).create(&data, false).await {
        Ok(s) => s,
        Err(e) => {
            return bare_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Redis unreachable",
                &format!("The session could not be stored: {e}"),
            )
        }
    };
    let secure = secure(&state, &headers);
    let mut resp = Redirect::to(&next).into_response();
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(
            SESSION_COOKIE,
            &sid,
            SESSION_TTL.as_secs() as i64,
            "/",
            secure,
        ),
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, "", 0, "/login", secure),
    );
    resp
}

/// The sign-in lockout of one address or account: set when the `login` policy is used up,
/// holding the time (epoch seconds) it ends; while it holds, every sign-in for it is refused.
struct LoginLockout {
    counters: keel::Counters,
    name: String,
}

impl LoginLockout {
    fn new(state: &AppState, subject: &str) -> LoginLockout {
        let subject: String = subject
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        LoginLockout {
            counters: keel::Counters::new(&state.backend),
            name: format!("console-login-lockout-{subject}"),
        }
    }

    /// Seconds left of the lockout, if locked. Fails closed.
    async fn remaining(&self) -> Option<u64> {
        let now = (keel::now_ms() / 1000) as i64;
        match self.counters.get(&self.name).await {
            Ok(until) if until > now => Some((until - now) as u64),
            Ok(_) => None,
            Err(_) => Some(LOCKOUT_UNKNOWN.as_secs()),
        }
    }

    async fn lock(&self, for_: Duration) {
        let secs = for_.as_secs().max(1);
        let until = (keel::now_ms() / 1000) as i64 + secs as i64;
        let _ = self.counters.reset(&self.name).await;
        if let Err(e) = self
            .counters
            .incr(&self.name, until, Some(Duration::from_secs(secs)))
            .await
        {
            tracing::warn!(error = %e, "could not store a sign-in lockout");
        }
    }
}

fn too_many_sign_ins(state: &AppState, headers: &HeaderMap, next: String, wait: u64) -> Response {
    state.metrics.rate_limited("login");
    let mut resp = login_page(
        state,
        headers,
        next,
        format!("Too many failed sign-ins. Try again in {wait} s."),
        StatusCode::TOO_MANY_REQUESTS,
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(wait));
    resp
}

/// `POST /logout`.
pub async fn logout(ctx: Ctx, RawForm(raw): RawForm) -> Response {
    let form = Form::parse(&raw);
    if let Some(r) = ctx.refuse(&form) {
        return r;
    }
    if let Err(e) = sessions(&ctx.state).destroy(ctx.sid()).await {
        tracing::warn!(error = %e, "console session not destroyed");
    }
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", 0, "/", ctx.secure()),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_targets_stay_on_the_site() {
        assert_eq!(
            safe_next(Some("/queues/a?state=failed")),
            "/queues/a?state=failed"
        );
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(Some("/login")), "/");
    }
}
