//! Extractors: the authenticated [`Caller`] (an API token or a signed-in person, with the
//! request facts the logs record), [`Meta`], JSON bodies and query strings with errors in the
//! API's shape.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use keel_records::{ApiToken, Role, Scope, User};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::state::AppState;

/// Most characters of a user agent kept for the logs.
pub const MAX_USER_AGENT_CHARS: usize = 512;

/// Who is calling: an API token (automation) or a person signed in to the console with a
/// named account.
#[derive(Debug, Clone)]
pub enum Principal {
    /// An API token.
    Token(ApiToken),
    /// A named account.
    User(User),
}

/// The authenticated caller and the request facts its log entries record.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who.
    pub principal: Principal,
    /// What it may read.
    pub scope: Scope,
    /// Where from.
    pub meta: Meta,
}

impl Caller {
    /// A caller authenticated by `token`.
    pub fn with_token(token: ApiToken, meta: Meta) -> Caller {
        Caller {
            scope: token.scope(),
            principal: Principal::Token(token),
            meta,
        }
    }

    /// A caller signed in as `user`.
    pub fn with_user(user: User, meta: Meta) -> Caller {
        Caller {
            scope: user.scope(),
            principal: Principal::User(user),
            meta,
        }
    }

    /// The role.
    pub fn role(&self) -> Role {
        match &self.principal {
            Principal::Token(t) => t.role,
            Principal::User(u) => u.role,
        }
    }

    /// What the logs record as the actor: `token:<id>` or `user:<email>`.
    pub fn actor(&self) -> String {
        match &self.principal {
            Principal::Token(t) => format!("token:{}", t.id),
            Principal::User(u) => u.actor(),
        }
    }

    /// How the console names the caller: the token's name and hint, or the email.
    pub fn label(&self) -> String {
        match &self.principal {
            Principal::Token(t) => format!("{} ({})", t.name, t.hint),
            Principal::User(u) => u.email.clone(),
        }
    }

    /// Fails 403 unless the caller has at least `role`.
    pub fn require(&self, role: Role) -> ApiResult<()> {
        if self.role() >= role {
            return Ok(());
        }
        let who = match self.principal {
            Principal::Token(_) => "the token",
            Principal::User(_) => "the account",
        };
        Err(ApiError::forbidden(format!(
            "this needs the {} role; {who} has {}",
            role.as_str(),
            self.role().as_str()
        )))
    }

    /// The tenant id, if bound.
    pub fn tenant(&self) -> Option<String> {
        match &self.principal {
            Principal::Token(t) => t.tenant_id.clone(),
            Principal::User(u) => u.tenant_id.clone(),
        }
    }
}

/// Reads `Authorization: Bearer <secret>`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, secret) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| secret.trim())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Caller> {
        let secret = bearer(&parts.headers).ok_or_else(|| {
            ApiError::unauthorized("send Authorization: Bearer <token> (keel token create)")
        })?;
        let token = state.authenticate(secret).await?;
        Ok(Caller::with_token(token, Meta::of(parts, state)))
    }
}

/// Facts about the request for the logs.
#[derive(Debug, Clone)]
pub struct Meta {
    /// Client IP.
    pub ip: String,
    /// User agent.
    pub user_agent: Option<String>,
}

/// The client IP: the socket peer, or the first `X-Forwarded-For` hop when trusted.
pub fn client_ip(parts: &Parts, trust_proxy: bool) -> String {
    keel::http::client_ip(parts, trust_proxy)
}

impl Meta {
    /// The facts of the request with these parts.
    pub fn of(parts: &Parts, state: &AppState) -> Meta {
        Meta {
            ip: client_ip(parts, state.server.trust_proxy),
            user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(MAX_USER_AGENT_CHARS).collect()),
        }
    }
}

impl FromRequestParts<AppState> for Meta {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Meta> {
        Ok(Meta::of(parts, state))
    }
}

/// A JSON body, with errors in the API's shape: 400 `malformed-json` naming the field path, 413
/// when over the body limit, 415 without a JSON content type.
pub struct JsonBody<T>(pub T, pub serde_json::Value);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> ApiResult<JsonBody<T>> {
        let json_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    format!(
                        "the body is over the limit of {} bytes",
                        state.server.body_limit_bytes
                    ),
                )
            } else {
                ApiError::new(ErrorCode::MalformedBody, e.body_text())
            }
        })?;
        if !json_type {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "send the body as Content-Type: application/json",
            ));
        }
        let raw: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| ApiError {
            field: None,
            ..ApiError::new(
                ErrorCode::MalformedJson,
                format!("the body is not valid JSON: {e}"),
            )
        })?;
        let value = serde_path_to_error::deserialize(raw.clone()).map_err(|e| {
            let path = e.path().to_string();
            ApiError {
                field: Some(if path == "." { "body".into() } else { path }),
                ..ApiError::new(ErrorCode::InvalidInput, e.inner().to_string())
            }
        })?;
        Ok(JsonBody(value, raw))
    }
}

/// An optional JSON body: a request without one (no `Content-Type` and no bytes) is `None`;
/// any other is read as [`JsonBody`] is, with its errors.
impl<T: DeserializeOwned> axum::extract::OptionalFromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> ApiResult<Option<JsonBody<T>>> {
        let typed = req.headers().contains_key(header::CONTENT_TYPE);
        let empty = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v.trim() == "0");
        if !typed && empty {
            return Ok(None);
        }
        <JsonBody<T> as FromRequest<AppState>>::from_request(req, state)
            .await
            .map(Some)
    }
}

/// A query string parsed into `T`; an error names the parameter at fault (400).
pub struct Params<T>(pub T);

impl<T: DeserializeOwned> FromRequestParts<AppState> for Params<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> ApiResult<Params<T>> {
        parse_query(parts.uri.query()).map(Params)
    }
}

/// Parses a query string (without its `?`) into `T`, errors naming the parameter: the one
/// parser of the API and the console.
pub fn parse_query<T: DeserializeOwned>(query: Option<&str>) -> ApiResult<T> {
    let uri: axum::http::Uri = format!("/?{}", query.unwrap_or(""))
        .parse()
        .map_err(|_| ApiError::invalid("query", "the query string is not valid"))?;
    Query::<T>::try_from_uri(&uri)
        .map(|Query(v)| v)
        .map_err(|e| {
            let text = e.body_text();
            ApiError::invalid(&query_field(&text), text)
        })
}

/// The parameter a query-string error is about: `…query string: limit: invalid digit…` or
/// `…unknown field `bogus`…`.
fn query_field(text: &str) -> String {
    if let Some(rest) = text.split("query string: ").nth(1) {
        if let Some((head, _)) = rest.split_once(':') {
            if !head.is_empty() && head.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return head.to_string();
            }
        }
    }
    text.split('`')
        .nth(1)
        .map(str::to_string)
        .unwrap_or_else(|| "query".into())
}

/// A JSON value into `T`, errors naming the field path (`body` for the whole).
pub fn from_json<T: DeserializeOwned>(v: serde_json::Value) -> ApiResult<T> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        ApiError::invalid(
            if path == "." { "body" } else { &path },
            e.inner().to_string(),
        )
    })
}
