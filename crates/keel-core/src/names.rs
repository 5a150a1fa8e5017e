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
    validate_bullmq_name("queue", name)
}

/// Checks a caller-chosen job id with the same rules as queue names, plus BullMQ's own rule for
/// custom ids: an id that JavaScript's `String(parseInt(id, 10))` gives back unchanged is an
/// "integer" (`123`, `-1`, and — as `parseInt` answers `NaN` — `NaN`) and refused, because
/// BullMQ refuses it ("Custom Id cannot be integers") and hands out numeric ids itself. `007`,
/// `+5` or `1e3` are not integers by that rule and pass, as they do in BullMQ.
pub fn validate_job_id(id: &str) -> Result<()> {
    validate_bullmq_name("job_id", id)?;
    if is_bullmq_integer_id(id) {
        return Err(Error::invalid(
            "job_id",
            format!("{id:?} is an integer id, which BullMQ refuses for custom ids (it generates those itself)"),
        ));
    }
    Ok(())
}

/// Whether `String(parseInt(id, 10)) === id` holds in JavaScript.
fn is_bullmq_integer_id(id: &str) -> bool {
    // parseInt skips leading white space, takes an optional sign and the longest run of
    // decimal digits; none → NaN, and String(NaN) is "NaN".
    let s = id.trim_start();
    let (negative, unsigned) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let digits_len = unsigned.bytes().take_while(u8::is_ascii_digit).count();
    if digits_len == 0 {
        return id == "NaN";
    }
    let magnitude: f64 = unsigned[..digits_len].parse().unwrap_or(f64::INFINITY);
    let value = if negative { -magnitude } else { magnitude };
    // Number → String: "0" for ±0, exponent form from 1e21 on (never equal to a digit run),
    // otherwise the shortest round-trip digits, which Rust's `Display` prints the same way.
    let shown = if value == 0.0 {
        "0".to_string()
    } else if value.abs() >= 1e21 || value.is_infinite() {
        return false;
    } else {
        format!("{value}")
    };
    shown == id
}

fn validate_bullmq_name(field: &str, value: &str) -> Result<()> {
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

/// A name Keel chooses among a small set (namespace, policy, session kind): letters, digits,
/// `-`, `_`, `.`.
pub fn validate_name(field: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 128 {
        return Err(Error::invalid(field, "must be 1 to 128 characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(Error::invalid(
            field,
            format!("{name:?} contains {c:?}; use letters, digits, '-', '_' or '.'"),
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
        // BullMQ's rule exactly: String(parseInt(id, 10)) === id.
        for integer in [
            "0",
            "1",
            "-1",
            "-5",
            "NaN",
            "9007199254740992",
            "100000000000000000000",
        ] {
            let err = validate_job_id(integer).unwrap_err();
            assert_eq!(err.field(), Some("job_id"), "{integer}");
        }
        for not_integer in [
            "007",
            "+5",
            "-0",
            "1e3",
            "1.5",
            "0x10",
            "Infinity",
            "nan",
            "-",
            "12a",
            "9007199254740993",
            "1000000000000000000000",
            "order-1",
        ] {
            validate_job_id(not_integer).unwrap_or_else(|e| panic!("{not_integer}: {e}"));
        }
        assert!(validate_queue_name("").is_err());
        assert!(validate_queue_name("a b").is_err());
        assert!(validate_queue_name(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
    }
}
