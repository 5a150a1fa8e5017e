//! The one error shape of the API: `{"error": {"code", "message", "field"}}` with a stable
//! kebab-case code and the right status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An API error.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable kebab-case code.
    pub code: &'static str,
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
    /// An error with a status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
            details: None,
        }
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
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid-input", message)
        }
    }

    /// 404.
    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("{} not found", what.into()),
        )
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
}

impl From<keel::Error> for ApiError {
    fn from(e: keel::Error) -> ApiError {
        use keel::Error as E;
        let status = match &e {
            E::InvalidInput { .. } => StatusCode::BAD_REQUEST,
            E::NotFound { .. } => StatusCode::NOT_FOUND,
            E::Conflict(_) | E::Locked(_) => StatusCode::CONFLICT,
            E::BackendUnavailable(_) | E::NeedsSharedBackend(_) => StatusCode::SERVICE_UNAVAILABLE,
            E::Backend(_) | E::LockLost(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "backend error");
        }
        ApiError {
            status,
            code: e.code(),
            field: e.field().map(str::to_string),
            message: e.to_string(),
            retry_after: (status == StatusCode::SERVICE_UNAVAILABLE).then_some(5),
            details: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body =
            json!({"error": {"code": self.code, "message": self.message, "field": self.field}});
        if let (Some(details), Some(map)) = (self.details, body.as_object_mut()) {
            map.extend(details);
        }
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
