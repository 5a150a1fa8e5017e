//! Masks secrets in payloads before they reach the audit log: the rules are
//! [`keel::secrets`]'s (keys at any depth, name/value pairs, credentials inside strings), shared
//! with the `log` handler and start-up errors.

pub use keel::secrets::{is_secret_key, mask};
