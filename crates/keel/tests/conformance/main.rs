//! The conformance suite: every queue and toolkit behaviour, run against every backend. Each
//! test body is an `async fn(Backend)`; the `conformance!` macro generates a `memory::`, a
//! `redis::` (BullMQ's engine), a `native::` (Keel's own engine), a `cluster::` (Keel's own
//! engine and the toolkit on a local Redis Cluster of 3 masters and 3 replicas, started once for
//! the suite) and a `cluster_bullmq::` (BullMQ's engine on that cluster) test for it. Redis tests use a unique key prefix each, so they run in parallel on
//! one Redis (or cluster).

#[path = "../support/redis_cluster.rs"]
mod redis_cluster;
mod support;

mod dlq;
mod limits;
mod processing;
mod producing;
mod toolkit;

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
        mod native {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::$module::$name(crate::support::native().await).await;
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::$module::$name(crate::support::cluster().await).await;
                }
            )*
        }
        mod cluster_bullmq {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::$module::$name(crate::support::cluster_bullmq().await).await;
                }
            )*
        }
    };
}

/// The queue behaviours again with every queue spread over 3 partitions
/// (`keel::partitions`), on one Redis and on the cluster: a partitioned queue is seen as one.
macro_rules! partitioned {
    ($($module:ident :: $name:ident),* $(,)?) => {
        mod partitioned {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::$module::$name(crate::support::partitioned().await).await;
                }
            )*
        }
        mod cluster_partitioned {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::$module::$name(crate::support::cluster_partitioned().await).await;
                }
            )*
        }
    };
}

partitioned!(
    // Not here: fifo_lifo_priority_order and finished_jobs_list_and_clean (order across
    // partitions, with one worker slot, which a 3-partition queue refuses) and
    // rate_limit_spaces_jobs (2 a window, under one a partition); tests/partitions.rs
    // checks the split rate limit.
    producing::add_and_get_round_trip,
    producing::bulk_validates_everything_first,
    producing::custom_id_returns_existing_job,
    producing::custom_ids_follow_bullmq_rule,
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
    processing::delay_is_honoured,
    processing::retries_with_backoff_then_fail,
    processing::exponential_and_jittered_backoff,
    processing::unrecoverable_skips_attempts,
    processing::timeout_cancels_the_handler,
    processing::progress_logs_and_events,
    processing::routes_by_name_and_fallback,
    processing::configured_handlers_route_by_job_name,
    processing::per_key_limits_delay_jobs_until_the_window_admits_them,
    processing::concurrency_is_bounded_and_reached,
    processing::graceful_close_finishes_in_flight,
    processing::close_deadline_hands_back_unfinished,
    processing::retry_failed_job_and_conflicts,
    limits::global_concurrency_caps_active_jobs_across_workers,
    dlq::terminal_failure_is_dead_lettered,
    dlq::reconciler_heals_a_crash,
    dlq::replay_and_replay_all,
    dlq::remove_is_not_resurrected,
    dlq::reconciler_drops_and_refreshes_stale_entries,
    dlq::dlq_queues_refuse_enqueues_and_survive_foreign_jobs,
);

conformance!(
    producing::add_and_get_round_trip,
    producing::bulk_validates_everything_first,
    producing::custom_id_returns_existing_job,
    producing::custom_ids_follow_bullmq_rule,
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
    processing::configured_handlers_route_by_job_name,
    processing::per_key_limits_delay_jobs_until_the_window_admits_them,
    processing::concurrency_is_bounded_and_reached,
    processing::graceful_close_finishes_in_flight,
    processing::close_deadline_hands_back_unfinished,
    processing::retry_failed_job_and_conflicts,
    processing::finished_jobs_list_and_clean,
    limits::rate_limit_spaces_jobs,
    limits::global_concurrency_caps_active_jobs_across_workers,
    dlq::terminal_failure_is_dead_lettered,
    dlq::reconciler_heals_a_crash,
    dlq::replay_and_replay_all,
    dlq::remove_is_not_resurrected,
    dlq::reconciler_drops_and_refreshes_stale_entries,
    dlq::dlq_queues_refuse_enqueues_and_survive_foreign_jobs,
    toolkit::cache_set_get_delete_with_jittered_ttl,
    toolkit::cache_computes_once_for_fifty_concurrent_callers,
    toolkit::cache_serves_stale_while_one_recomputes,
    toolkit::cache_failed_computation_is_not_cached,
    toolkit::cache_early_refresh_recomputes_before_expiry,
    toolkit::cache_tags_invalidate_and_survive_tag_key_loss,
    toolkit::cache_delete_by_pattern_stays_in_namespace,
    toolkit::cache_skips_values_over_512_kib,
    toolkit::cache_write_through_follows_the_source,
    toolkit::ratelimit_parallel_clients_get_exactly_the_limit,
    toolkit::ratelimit_local_leases_never_exceed_the_shared_limit,
    toolkit::ratelimit_gcra_refills_at_the_emission_interval,
    toolkit::ratelimit_windows_expire,
    toolkit::ratelimit_dark_mode_counts_without_rejecting,
    toolkit::ratelimit_seed_daily_platform_limits,
    toolkit::locks_are_exclusive_and_fenced,
    toolkit::locks_two_holders_never_overlap,
    toolkit::with_lock_extends_and_detects_a_lost_lease,
    toolkit::counters_flags_idempotency,
    toolkit::sessions_live_for_their_kind,
    toolkit::pubsub_channels_and_patterns,
    toolkit::health_ping_and_info,
    toolkit::otp_codes_verify_once_and_lock,
);
