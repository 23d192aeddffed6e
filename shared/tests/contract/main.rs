//! The port contract: one suite every backend must pass. Each test in `on_every_backend!` runs
//! against the embedded backend and against the AWS adapters on an emulator (moto, or LocalStack); the few that
//! check what only one backend has (a restart of the embedded store, its queue's index) are
//! plain tests of their own.

mod access;
mod aws_flow;
mod aws_scale;
mod flow;
mod helpers;
mod live;
mod queue;
mod runs;
mod schedules;
mod store;

/// A test per backend for each named contract test: `embedded::<name>`, and `aws::<name>` (the
/// AWS adapters on an emulator: a moto server the suite starts, or the one
/// `CONVEYOR_TEST_AWS_ENDPOINT` names, e.g. LocalStack).
macro_rules! on_every_backend {
    ($($module:ident :: $name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::$module::$name(crate::helpers::embedded_under()).await
                }
            )*
        }
        mod aws {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::$module::$name(crate::helpers::moto_under().await).await
                }
            )*
        }
    };
}

/// For a test of what holds between processes sharing a store: `aws::<name>`, where a second
/// process is a second set of clients on the same table and queues (`Under::another_process`);
/// and `embedded::<embedded_name>`, the same rules between concurrent callers of the one
/// process that owns an embedded store (a second process is refused its data directory:
/// `tests/e2e/storage.rs`).
macro_rules! across_processes {
    ($($module:ident :: $name:ident => $embedded_name:ident),* $(,)?) => {
        mod across_processes_on_aws {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let b = crate::helpers::moto_under().await;
                    let other = b.another_process().await;
                    crate::$module::$name(b, other).await
                }
            )*
        }
        mod one_process_on_embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $embedded_name() {
                    let b = crate::helpers::embedded_under();
                    let same = b.ports.clone();
                    crate::$module::$name(b, same).await
                }
            )*
        }
    };
}

across_processes!(
    access::a_quota_holds_across_processes_and_a_finished_job_gives_its_slot_back
        => a_quota_holds_between_concurrent_callers_and_a_finished_job_gives_its_slot_back,
    flow::a_start_rate_is_shared_by_every_process_and_admits_no_start_past_it
        => a_start_rate_admits_no_start_past_it_whoever_asks,
    flow::running_slots_are_shared_by_every_process_and_free_when_given_back_or_expired
        => running_slots_free_when_given_back_or_expired_whoever_holds_them,
);

on_every_backend!(
    access::api_keys_are_kept_as_digests_listed_by_tenant_and_revoked_for_good,
    access::the_audit_trail_is_per_tenant_in_order_and_a_submit_is_written_with_its_job,
    access::submissions_are_counted_per_second_and_refused_past_the_rate,
    access::tenant_limits_are_stored_per_tenant,
    access::types_are_paused_per_tenant_or_for_all_and_resumed,
    store::a_transition_is_written_only_from_the_expected_state,
    store::paging_across_shards_returns_every_job_once_in_order_with_each_filter,
    store::start_is_one_write_that_returns_the_started_job_or_the_job_as_it_is,
    store::start_refuses_a_job_queued_for_later_than_due_by,
    store::an_idempotency_key_yields_the_first_job,
    runs::a_batch_is_written_together_each_job_new_or_its_keys_earlier_one,
    runs::a_steps_first_record_stays_and_every_run_reads_the_steps_back_in_order,
    runs::the_write_that_ends_a_job_hands_over_the_jobs_waiting_for_it_once,
    runs::maintenance_decides_a_waiting_job_whose_dependencies_ended_unheard,
    runs::a_batch_counts_its_members_as_written_and_as_they_end,
    runs::a_batch_lists_its_members_in_the_order_they_joined_page_by_page,
    store::heartbeats_reach_only_the_running_attempt_and_report_cancel_requests,
    store::listing_is_newest_first_filtered_and_scoped_to_the_tenant,
    store::stats_count_a_tenants_jobs_by_type_and_status_as_they_move,
    store::a_payload_and_a_result_come_back_exactly_as_given,
    store::due_finds_stalled_jobs_and_expired_jobs_are_deleted_with_their_logs,
    runs::a_stall_is_not_recorded_over_a_heartbeat_that_came_after_the_read,
    runs::an_old_run_cannot_heartbeat_into_a_newer_run_after_a_manual_retry,
    runs::a_transition_from_an_older_read_keeps_a_newer_heartbeat_and_progress,
    runs::a_new_run_starts_with_its_own_heartbeat_and_no_progress,
    queue::a_received_message_is_invisible_until_its_visibility_timeout,
    queue::a_delayed_message_is_delivered_only_after_its_delay,
    queue::after_max_receives_a_message_moves_to_the_dead_letter_queue,
    queue::a_waiting_receiver_wakes_when_a_message_is_sent,
    live::connections_are_subscribed_per_tenant_and_forgotten_with_their_subscriptions,
    schedules::a_schedule_fires_once_per_tick_across_a_daylight_saving_change,
    schedules::skip_and_queue_one_hold_while_the_previous_run_is_active,
    schedules::a_restart_fires_the_tick_that_came_due_once,
    schedules::a_paused_schedule_fires_nothing_and_resumes_from_then_on,
    schedules::a_schedule_whose_times_are_out_of_range_fails_alone,
    schedules::a_schedulers_pass_reads_the_schedules_due_and_fires_them,
    flow::debounced_submits_replace_the_waiting_job_until_it_starts,
    flow::jobs_waiting_for_a_slot_get_it_in_submit_order,
);
