//! What a store call can fail with, in the records' own terms: a database outage is
//! [`StoreError::Unavailable`], never mistaken for the queue backend's.

/// A records error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The row asked for does not exist (or is not visible in the caller's scope).
    #[error("{0} not found")]
    NotFound(String),
    /// The write conflicts with a row that exists (a unique name or email).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The input is invalid; nothing was written.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The field at fault (`email`, `limit`, `DATABASE_URL`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The database could not be reached in time (pool timeout, I/O, TLS). Safe to retry.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database answered with something the store did not expect (a failed migration, a
    /// malformed row).
    #[error("database error: {0}")]
    Database(String),
}

impl StoreError {
    /// Shorthand for [`StoreError::Invalid`].
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> StoreError {
        StoreError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The stable kebab-case code: `not-found`, `conflict`, `invalid-input`,
    /// `database-unavailable`, `database-error`.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::NotFound(_) => "not-found",
            StoreError::Conflict(_) => "conflict",
            StoreError::Invalid { .. } => "invalid-input",
            StoreError::Unavailable(_) => "database-unavailable",
            StoreError::Database(_) => "database-error",
        }
    }

    /// The input field at fault, for [`StoreError::Invalid`].
    pub fn field(&self) -> Option<&str> {
        match self {
            StoreError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }

    /// Maps a sqlx error met while doing `what`.
    pub(crate) fn from_sqlx(what: &str, e: sqlx::Error) -> StoreError {
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::Io(_)
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_) => StoreError::Unavailable(format!("{what}: {e}")),
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                StoreError::Conflict(format!("{what}: already exists"))
            }
            other => StoreError::Database(format!("{what}: {other}")),
        }
    }
}

/// A records result.
pub type Result<T> = std::result::Result<T, StoreError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_the_databases_not_the_backends() {
        let e = StoreError::from_sqlx("tokens", sqlx::Error::PoolTimedOut);
        assert_eq!(e.code(), "database-unavailable");
        assert!(
            e.to_string().starts_with("database unavailable: tokens"),
            "{e}"
        );
        assert_eq!(StoreError::invalid("email", "x").field(), Some("email"));
    }
}
