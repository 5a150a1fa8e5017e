//! The conformance suite: every queue behaviour, run against both backends. Each test body is an
//! `async fn(Backend)`; the `conformance!` macro generates a `memory::` and a `redis::` test
//! for it. Redis tests use a unique key prefix each, so they run in parallel on one Redis.

mod support;

mod dlq;
mod processing;
mod producing;

pub use support::*;

macro_rules! conformance {
    ($($module:ident :: $name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::$module::$name(crate::support::memory()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::$module::$name(crate::support::redis().await).await;
                }
            )*
        }
    };
}

conformance!(
    producing::add_and_get_round_trip,
    producing::bulk_validates_everything_first,
    producing::custom_id_returns_existing_job,
    producing::deduplication_holds_until_finished,
    producing::deduplication_ttl_expires,
    producing::cron_scheduler_fires,
    producing::bad_input_is_refused_with_field,
    producing::counts_and_pagination_newest_first,
    producing::remove_clean_drain_obliterate,
    producing::workers_survive_obliterate,
    producing::schedulers_every_and_cron,
    producing::pause_blocks_taking,
    producing::heartbeat_and_queue_names,
    processing::fifo_lifo_priority_order,
    processing::delay_is_honoured,
    processing::retries_with_backoff_then_fail,
    processing::exponential_and_jittered_backoff,
    processing::unrecoverable_skips_attempts,
    processing::timeout_cancels_the_handler,
    processing::progress_logs_and_events,
    processing::routes_by_name_and_fallback,
    processing::concurrency_is_bounded_and_reached,
    processing::graceful_close_finishes_in_flight,
    processing::close_deadline_hands_back_unfinished,
    processing::retry_failed_job_and_conflicts,
    processing::finished_jobs_list_and_clean,
    processing::rate_limit_spaces_jobs,
    dlq::terminal_failure_is_dead_lettered,
    dlq::reconciler_heals_a_crash,
    dlq::replay_and_replay_all,
    dlq::remove_is_not_resurrected,
);
