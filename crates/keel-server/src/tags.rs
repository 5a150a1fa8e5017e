//! The owner API cache's tags, in one place: what a cached answer is tagged with and what a
//! change invalidates must name the same thing.

/// Every queue list and all queue stats.
pub const QUEUES: &str = "queues";
/// The audit log's pages.
pub const AUDIT: &str = "audit";
/// The access log's pages (not cached today; writes still invalidate it).
pub const ACCESS: &str = "access";
/// The run lists and per-minute counts.
pub const RUNS: &str = "runs";

/// One queue's stats, jobs and dead letters.
pub fn queue(name: &str) -> String {
    format!("queue-{name}")
}
