//! Errors of the queue layer.

/// Errors returned by Keel queue operations, on every backend.
///
/// Each variant has a stable kebab-case [`Error::code`] that the HTTP API and the command line
/// print, so scripts can match on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A job, queue or scheduler that was asked for does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was missing, e.g. `job 42 in queue emails`.
        what: String,
    },
    /// The caller's input is invalid; nothing was changed.
    #[error("invalid {field}: {message}")]
    InvalidInput {
        /// The argument, option or configuration key at fault (e.g. `delay`, `queue`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The operation conflicts with the current state (e.g. retrying a job that is not failed).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The storage backend (Redis) could not be reached in time. Safe to retry later.
    #[error("backend unavailable: {0}")]
    BackendUnavailable(String),
    /// The operation needs a shared backend (Redis) but this process runs the in-process
    /// memory backend, whose queues no other process can see.
    #[error("{0} needs a shared Redis backend (set REDIS_URL or [redis] url); the memory backend lives inside one process")]
    NeedsSharedBackend(String),
    /// The backend answered with something Keel did not expect.
    #[error("backend error: {0}")]
    Backend(String),
    /// A lock is held by someone else (and waiting for it, if asked, timed out).
    #[error("lock {0} is held by another holder")]
    Locked(String),
    /// A lock's lease expired or was taken over while its holder was still working, so the
    /// work's result cannot be trusted.
    #[error("lock {0} was lost before the work finished; its result was discarded")]
    LockLost(String),
}

impl Error {
    /// Shorthand for [`Error::InvalidInput`].
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidInput {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::NotFound`].
    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound { what: what.into() }
    }

    /// The stable kebab-case code of this error (`not-found`, `invalid-input`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "not-found",
            Error::InvalidInput { .. } => "invalid-input",
            Error::Conflict(_) => "conflict",
            Error::BackendUnavailable(_) => "backend-unavailable",
            Error::NeedsSharedBackend(_) => "needs-shared-backend",
            Error::Backend(_) => "backend-error",
            Error::Locked(_) => "locked",
            Error::LockLost(_) => "lock-lost",
        }
    }

    /// The input field this error is about, when it is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::InvalidInput { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// Result alias for queue operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
