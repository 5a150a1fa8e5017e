//! The one error shape of the API: `{"error": {"code", "message", "field"}}` with a stable
//! kebab-case [`ErrorCode`], whose status it decides.
//!
//! Errors are not logged where they are made: [`ApiError`]'s response carries it in its
//! extensions and [`log_errors`] (a middleware over every route) logs the server's own
//! failures (5xx) once, with the route (axum's error-handling example).

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keel_records::StoreError;
use serde_json::json;

/// Seconds a client is told to wait after a 503.
pub const UNAVAILABLE_RETRY_AFTER_S: u64 = 5;

/// Every error code the API answers with. The code decides the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 400: a field is invalid (`field` names it).
    InvalidInput,
    /// 400: the body is not JSON.
    MalformedJson,
    /// 400: the body could not be read.
    MalformedBody,
    /// 401.
    Unauthorized,
    /// 403.
    Forbidden,
    /// 404.
    NotFound,
    /// 405.
    MethodNotAllowed,
    /// 408: the request's head or body did not arrive in time.
    RequestTimeout,
    /// 409: the state does not allow it.
    Conflict,
    /// 409: a lock is held by someone else.
    Locked,
    /// 413.
    PayloadTooLarge,
    /// 415.
    UnsupportedMediaType,
    /// 426: a WebSocket route asked without an upgrade.
    UpgradeRequired,
    /// 429 (with `Retry-After`).
    RateLimited,
    /// 431.
    HeadersTooLarge,
    /// 500: the server failed (logged).
    Internal,
    /// 500: the queue backend answered something unexpected.
    BackendError,
    /// 500: a lock's lease was lost before the work finished.
    LockLost,
    /// 500: the records database answered something unexpected.
    DatabaseError,
    /// 503: the queue backend (Redis) did not answer.
    BackendUnavailable,
    /// 503: the operation needs a shared Redis backend.
    NeedsSharedBackend,
    /// 503: the records database (PostgreSQL or SQLite) did not answer.
    DatabaseUnavailable,
}

impl ErrorCode {
    /// The stable kebab-case code.
    pub fn as_str(self) -> &'static str {
        use ErrorCode as C;
        match self {
            C::InvalidInput => "invalid-input",
            C::MalformedJson => "malformed-json",
            C::MalformedBody => "malformed-body",
            C::Unauthorized => "unauthorized",
            C::Forbidden => "forbidden",
            C::NotFound => "not-found",
            C::MethodNotAllowed => "method-not-allowed",
            C::RequestTimeout => "request-timeout",
            C::Conflict => "conflict",
            C::Locked => "locked",
            C::PayloadTooLarge => "payload-too-large",
            C::UnsupportedMediaType => "unsupported-media-type",
            C::UpgradeRequired => "upgrade-required",
            C::RateLimited => "rate-limited",
            C::HeadersTooLarge => "headers-too-large",
            C::Internal => "internal",
            C::BackendError => "backend-error",
            C::LockLost => "lock-lost",
            C::DatabaseError => "database-error",
            C::BackendUnavailable => "backend-unavailable",
            C::NeedsSharedBackend => "needs-shared-backend",
            C::DatabaseUnavailable => "database-unavailable",
        }
    }

    /// The HTTP status of this code.
    pub fn status(self) -> StatusCode {
        use ErrorCode as C;
        match self {
            C::InvalidInput | C::MalformedJson | C::MalformedBody => StatusCode::BAD_REQUEST,
            C::Unauthorized => StatusCode::UNAUTHORIZED,
            C::Forbidden => StatusCode::FORBIDDEN,
            C::NotFound => StatusCode::NOT_FOUND,
            C::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            C::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            C::Conflict | C::Locked => StatusCode::CONFLICT,
            C::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            C::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            C::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            C::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            C::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            C::Internal | C::BackendError | C::LockLost | C::DatabaseError => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            C::BackendUnavailable | C::NeedsSharedBackend | C::DatabaseUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An API error.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// Stable code (decides the status).
    pub code: ErrorCode,
    /// Human message.
    pub message: String,
    /// The input field at fault.
    pub field: Option<String>,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
    /// Members added beside `error` in the body (e.g. what a partly done bulk did).
    pub details: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ApiError {
    /// An error with a code; 503s tell the client when to come back.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            field: None,
            retry_after: (code.status() == StatusCode::SERVICE_UNAVAILABLE)
                .then_some(UNAVAILABLE_RETRY_AFTER_S),
            details: None,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// The same error with `details` beside it in the body.
    pub fn with_details(mut self, details: serde_json::Map<String, serde_json::Value>) -> ApiError {
        self.details = Some(details);
        self
    }

    /// 400 naming a field.
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            field: Some(field.to_string()),
            ..ApiError::new(ErrorCode::InvalidInput, message)
        }
    }

    /// 404.
    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::NotFound, format!("{} not found", what.into()))
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unauthorized, message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Forbidden, message)
    }
}

impl From<keel::Error> for ApiError {
    fn from(e: keel::Error) -> ApiError {
        use keel::Error as E;
        let code = match &e {
            E::InvalidInput { .. } => ErrorCode::InvalidInput,
            E::NotFound { .. } => ErrorCode::NotFound,
            E::Conflict(_) => ErrorCode::Conflict,
            E::Locked(_) => ErrorCode::Locked,
            E::BackendUnavailable(_) => ErrorCode::BackendUnavailable,
            E::NeedsSharedBackend(_) => ErrorCode::NeedsSharedBackend,
            E::Backend(_) => ErrorCode::BackendError,
            E::LockLost(_) => ErrorCode::LockLost,
        };
        ApiError {
            field: e.field().map(str::to_string),
            ..ApiError::new(code, e.to_string())
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let code = match &e {
            StoreError::NotFound(_) => ErrorCode::NotFound,
            StoreError::Conflict(_) => ErrorCode::Conflict,
            StoreError::Invalid { .. } => ErrorCode::InvalidInput,
            StoreError::Unavailable(_) => ErrorCode::DatabaseUnavailable,
            StoreError::Database(_) => ErrorCode::DatabaseError,
        };
        ApiError {
            field: e.field().map(str::to_string),
            ..ApiError::new(code, e.to_string())
        }
    }
}

impl From<keel_workflows::WorkflowError> for ApiError {
    fn from(e: keel_workflows::WorkflowError) -> ApiError {
        match e {
            keel_workflows::WorkflowError::Queue(e) => e.into(),
            keel_workflows::WorkflowError::Records(e) => e.into(),
        }
    }
}

/// What [`log_errors`] finds in an error response's extensions.
#[derive(Debug, Clone)]
struct Logged {
    code: ErrorCode,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": {"code": self.code.as_str(), "message": self.message, "field": self.field}});
        if let (Some(details), Some(map)) = (self.details, body.as_object_mut()) {
            map.extend(details);
        }
        let mut resp = (self.code.status(), axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.code.status().is_server_error() {
            resp.extensions_mut().insert(Logged {
                code: self.code,
                message: self.message,
            });
        }
        resp
    }
}

/// Logs the server's own failures once per request: 500s as errors, 503s (a dependency down)
/// as warnings, each with its method, route and code.
pub async fn log_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    if let Some(l) = resp.extensions().get::<Logged>() {
        if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(%method, %path, code = %l.code, error = %l.message, "dependency unavailable");
        } else {
            tracing::error!(%method, %path, code = %l.code, error = %l.message, "request failed");
        }
    }
    resp
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_outage_is_not_a_redis_outage() {
        let db: ApiError = StoreError::Unavailable("tokens: pool timed out".into()).into();
        assert_eq!(db.code.as_str(), "database-unavailable");
        assert_eq!(db.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(db.retry_after, Some(UNAVAILABLE_RETRY_AFTER_S));
        let redis: ApiError = keel::Error::BackendUnavailable("down".into()).into();
        assert_eq!(redis.code.as_str(), "backend-unavailable");
        let field: ApiError = StoreError::invalid("email", "must be an email address").into();
        assert_eq!(
            (field.status(), field.field.as_deref()),
            (StatusCode::BAD_REQUEST, Some("email"))
        );
    }
}
