//! Naming rules. BullMQ forbids `:` in queue names and job ids (its keys are
//! `prefix:queue:id`), and Keel keeps BullMQ's rules on every backend so that a queue that works
//! in memory works on Redis too.

use crate::error::{Error, Result};

/// Prefix of every dead-letter queue: the DLQ of `emails` is `dlq-emails`.
pub const DLQ_PREFIX: &str = "dlq-";

/// Longest accepted queue name or job id, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// The dead-letter queue of `queue`.
pub fn dlq_name(queue: &str) -> String {
    format!("{DLQ_PREFIX}{queue}")
}

/// Checks a queue name: non-empty, at most [`MAX_NAME_LEN`] bytes, no `:`, no whitespace or
/// control characters. The error names the field `queue`.
pub fn validate_queue_name(name: &str) -> Result<()> {
    validate_name("queue", name)
}

/// Checks a caller-chosen job id with the same rules as queue names; additionally an id made
/// only of digits is refused, because BullMQ hands out numeric ids itself and a custom numeric
/// id could collide with a future generated one.
pub fn validate_job_id(id: &str) -> Result<()> {
    validate_name("job_id", id)?;
    if id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::invalid(
            "job_id",
            "a custom job id must not be only digits (those are generated ids)",
        ));
    }
    Ok(())
}

fn validate_name(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_NAME_LEN} bytes"),
        ));
    }
    if value.contains(':') {
        return Err(Error::invalid(
            field,
            format!("{value:?} contains ':', which BullMQ forbids (use '-' instead)"),
        ));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid(
            field,
            format!("{value:?} contains whitespace or control characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colon_is_refused_with_the_field_named() {
        let err = validate_queue_name("dlq:emails").unwrap_err();
        assert_eq!(err.field(), Some("queue"));
        assert!(err.to_string().contains("':'"));
        let err = validate_job_id("a:b").unwrap_err();
        assert_eq!(err.field(), Some("job_id"));
    }

    #[test]
    fn ordinary_names_pass() {
        validate_queue_name("ai-content").unwrap();
        validate_job_id("order-17").unwrap();
        assert_eq!(dlq_name("emails"), "dlq-emails");
    }

    #[test]
    fn numeric_custom_ids_and_blanks_are_refused() {
        assert!(validate_job_id("123").is_err());
        assert!(validate_queue_name("").is_err());
        assert!(validate_queue_name("a b").is_err());
        assert!(validate_queue_name(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
    }
}
