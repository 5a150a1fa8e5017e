//! [`Ctx`]: a signed-in console request — who (a token or a named account, re-read on every
//! request), the session's CSRF token and flash message — and how pages answer: rendered,
//! failed, refused (CSRF) or redirected with a message.

use askama::Template;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use keel_records::Role;

use super::page::{asset_version, bare_error, html, ErrorPage, Form, Layout};
use super::view::query;
use crate::auth::{
    constant_time_eq, cookie, same_origin, secure, session_caller, sessions, set_cookie,
    SessionData, FLASH_COOKIE, SESSION_COOKIE,
};
use crate::error::{ApiError, ErrorCode};
use crate::extract::{Caller, Meta};
use crate::state::AppState;

/// Longest flash message shown.
const MAX_FLASH_CHARS: usize = 500;
/// How long a flash message waits for the next page.
const FLASH_TTL_S: i64 = 30;

/// A signed-in request.
pub struct Ctx {
    /// The state.
    pub state: AppState,
    /// Who, with the request's facts (the audit and access logs record them).
    pub caller: Caller,
    csrf: String,
    sid: String,
    flash: Option<(bool, String)>,
    origin_ok: bool,
    secure: bool,
    path: String,
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Ctx, Response> {
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let to_login = || {
            let next = if parts.method == Method::GET {
                path.clone()
            } else {
                "/".into()
            };
            Redirect::to(&format!("/login{}", query(&[("next", &next)]))).into_response()
        };
        let Some(sid) = cookie(&parts.headers, SESSION_COOKIE).map(str::to_string) else {
            return Err(to_login());
        };
        let data = match sessions(state).get::<SessionData>(&sid).await {
            Ok(Some(s)) => s.data,
            Ok(None) => return Err(to_login()),
            Err(e) => {
                return Err(bare_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Redis unreachable",
                    &format!("Console sessions are kept on the backend, which did not answer: {e}"),
                ))
            }
        };
        let caller = match session_caller(state, &data, Meta::of(parts, state)).await {
            Ok(Some(c)) => c,
            Ok(None) => return Err(to_login()),
            Err(e) => {
                return Err(bare_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Database unreachable",
                    &format!("The records database did not answer: {}", e.message),
                ))
            }
        };
        let flash = cookie(&parts.headers, FLASH_COOKIE).and_then(|v| {
            let text: String = form_urlencoded::parse(format!("m={v}").as_bytes())
                .next()
                .map(|(_, m)| m.into_owned())?;
            let (err, msg) = match text.strip_prefix('!') {
                Some(m) => (true, m.to_string()),
                None => (false, text),
            };
            Some((err, msg.chars().take(MAX_FLASH_CHARS).collect()))
        });
        Ok(Ctx {
            state: state.clone(),
            caller,
            csrf: data.csrf,
            sid,
            flash,
            origin_ok: same_origin(&parts.headers),
            secure: secure(state, &parts.headers),
            path,
        })
    }
}

impl Ctx {
    /// Whether the caller may change things (the operations' mutations need admin).
    pub fn can_act(&self) -> bool {
        self.caller.role() >= Role::Admin
    }

    /// The session id.
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// Whether cookies are set `Secure`.
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// The frame of a page titled `title`, with `nav` highlighted.
    pub fn layout(&self, title: impl Into<String>, nav: &'static str) -> Layout {
        Layout {
            title: title.into(),
            nav,
            signed_in: true,
            role: self.caller.role().as_str().into(),
            who: self.caller.label(),
            tenant: self.caller.tenant().unwrap_or_default(),
            csrf: self.csrf.clone(),
            can_act: self.can_act(),
            flash: self.flash.as_ref().map(|f| f.1.clone()).unwrap_or_default(),
            flash_error: self.flash.as_ref().is_some_and(|f| f.0),
            live: String::new(),
            back: self.path.clone(),
            v: asset_version(),
        }
    }

    /// Renders a page (200), clearing a shown flash message.
    pub fn page<T: Template>(&self, t: T) -> Response {
        self.page_with(StatusCode::OK, t)
    }

    /// Renders a page with `status`, clearing a shown flash message.
    pub fn page_with<T: Template>(&self, status: StatusCode, t: T) -> Response {
        let mut resp = html(status, t);
        if self.flash.is_some() {
            resp.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(FLASH_COOKIE, "", 0, "/", self.secure),
            );
        }
        resp
    }

    /// The error page of a failed operation.
    pub fn failed(&self, e: ApiError) -> Response {
        if e.code == ErrorCode::Unauthorized {
            return Redirect::to("/login").into_response();
        }
        let status = e.status();
        let heading = match (status.as_u16(), e.code) {
            (_, ErrorCode::BackendUnavailable) => "Redis unreachable".to_string(),
            (_, ErrorCode::DatabaseUnavailable) => "Database unreachable".to_string(),
            (404, _) => "Not found".to_string(),
            (403, _) => "Not allowed".to_string(),
            (400, _) => "Bad request".to_string(),
            (s, _) => format!("The request failed ({s})"),
        };
        self.page_with(
            status,
            ErrorPage {
                layout: self.layout(heading.clone(), ""),
                status: status.as_u16(),
                heading,
                message: e.message,
                code: e.code.as_str().into(),
            },
        )
    }

    /// The 403 page for a form without this session's CSRF token or from a foreign origin;
    /// `None` when the form may go ahead.
    pub fn refuse(&self, form: &Form) -> Option<Response> {
        let ok = self.origin_ok
            && form
                .get("csrf")
                .is_some_and(|t| constant_time_eq(t, &self.csrf));
        if ok {
            return None;
        }
        Some(
            self.page_with(
                StatusCode::FORBIDDEN,
                ErrorPage {
                    layout: self.layout("Form refused", ""),
                    status: 403,
                    heading: "Form refused".into(),
                    message: "The form's security token is missing or does not match this \
                          session (CSRF check), so nothing was changed. Reload the page and \
                          try again."
                        .into(),
                    code: "csrf".into(),
                },
            ),
        )
    }

    /// Redirects to the form's `back` (a local path) or `fallback`, with a flash message.
    pub fn done(&self, form: &Form, fallback: &str, ok: bool, message: &str) -> Response {
        let back = form
            .get("back")
            .filter(|b| is_local_path(b))
            .unwrap_or(fallback);
        let text = if ok {
            message.to_string()
        } else {
            format!("!{message}")
        };
        let value: String = form_urlencoded::byte_serialize(text.as_bytes()).collect();
        let mut resp = Redirect::to(back).into_response();
        resp.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(FLASH_COOKIE, &value, FLASH_TTL_S, "/", self.secure),
        );
        resp
    }

    /// [`Ctx::done`] with an operation's outcome: its message on success, its error's on
    /// failure.
    pub fn outcome(
        &self,
        form: &Form,
        fallback: &str,
        result: Result<String, ApiError>,
    ) -> Response {
        match result {
            Ok(m) => self.done(form, fallback, true, &m),
            Err(e) => self.done(form, fallback, false, &e.message),
        }
    }
}

/// A path on this site (`/x`), never another origin (`//host`, `/\\host`, `https://…`):
/// where a redirect after a form may go.
pub fn is_local_path(p: &str) -> bool {
    p.starts_with('/') && !p.starts_with("//") && !p.contains('\\')
}
