//! End-to-end tests: a real server on port 0 over a real database per test. Every
//! story in `stories!` runs once on SQLite and once on PostgreSQL.

mod support;

mod audit;
mod audit_file;
mod booking;
mod detection;
mod fuzz;
mod inputs;
mod loadtest;
mod metrics;
mod processes;

/// Runs each listed story on both stores: `sqlite::name` and `postgres::name`.
macro_rules! stories {
    ($($module:ident :: $name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    crate::$module::$name(crate::support::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    crate::$module::$name(crate::support::Backend::Postgres).await
                }
            )*
        }
    };
}

// Declared after `stories!` so that each lists its own stories, named
// `dashboard::sqlite::…` and `browser::…`: `scripts/test.sh dashboard` runs them alone.
mod alerts;
mod browser;
mod dashboard;

stories! {
    booking::two_patients_racing_for_slot_5_get_one_booking,
    booking::two_hundred_concurrent_bookings_of_one_slot_have_one_winner,
    booking::a_hundred_concurrent_walk_ins_get_distinct_slots_and_tokens_101_to_200,
    booking::walk_ins_and_advance_bookings_racing_over_one_session_keep_the_invariants,
    booking::fifty_requests_with_one_idempotency_key_make_one_appointment,
    booking::an_idempotency_key_reused_with_another_body_is_refused,
    booking::cancel_frees_the_slot_at_once_and_walk_in_tokens_are_not_reissued,
    booking::no_show_frees_the_slot_but_every_occupying_status_holds_it,
    booking::reschedule_moves_the_booking_or_changes_nothing,
    booking::earliest_bookable_slot_skips_taken_reserved_and_too_soon_slots,
    booking::availability_shows_taken_reserved_and_past_slots,
    booking::validate_answers_without_writing,
    booking::a_forced_walk_in_goes_after_the_last_slot,
    booking::a_day_off_set_through_this_server_refuses_the_next_booking_at_once,
    booking::the_readme_tour_works_late_in_the_evening_and_in_the_morning,
    detection::a_watched_duplicate_is_one_incident_alerted_on_every_channel_until_cancelled,
    detection::two_duplicates_inside_group_wait_are_one_message,
    detection::a_document_sent_twice_or_out_of_order_makes_no_phantom_incident,
    detection::with_wakeups_off_the_rescan_still_finds_the_duplicate,
    detection::bad_documents_are_refused_naming_the_field_and_nothing_is_stored,
    detection::the_sample_export_imports_clean_and_one_altered_document_is_one_incident,
    detection::silences_hold_alerts_back_and_refused_deliveries_are_dead_letters,
    detection::the_incident_list_pages_with_a_cursor_and_loses_none,
    detection::a_server_that_stops_cleanly_hands_detection_over_at_once,
    detection::a_resolve_racing_the_detector_is_never_undone,
    detection::a_watch_key_held_to_a_clinic_cannot_touch_another,
    detection::with_no_channel_an_open_incident_is_reminded_once_per_interval,
    detection::a_duplicate_written_before_a_long_outage_is_found_at_the_next_start,
    detection::events_out_of_order_never_undo_a_newer_one,
    detection::many_days_checked_together_find_what_each_day_alone_finds,
    detection::a_duplicate_amid_a_steady_stream_of_writes_is_found_while_it_lasts,
    detection::a_document_moved_is_checked_where_it_was_and_where_it_went,
    detection::documents_sent_at_once_are_each_stored_once_and_their_duplicates_found,
    audit::documents_naming_their_doctor_only_by_name_are_checked_by_that_name,
    audit::the_audit_runs_at_23_00_india_time_and_opens_what_detection_missed,
    audit::a_clean_day_says_so_and_an_audit_on_demand_resolves_a_fixed_duplicate,
    audit::nights_missed_while_no_server_ran_are_caught_up_at_start,
    audit::a_day_without_a_successful_audit_by_23_30_alerts_and_a_stuck_run_is_taken_over,
    audit::slotguard_audit_prints_the_day_and_exits_1_on_duplicates,
    audit::the_weekly_report_matches_the_bookings_and_goes_out_monday_09_00_once,
    audit::an_export_listing_one_id_twice_audits_as_the_mirror_keeps_it,
    audit::appointments_checked_is_one_number_in_the_file_audit_audit_run_stats_and_weekly_report,
    audit::a_clinic_only_in_watched_data_is_audited_at_23_00_in_its_sources_zone_and_counted_everywhere,
    audit::a_clinic_only_in_watched_data_alarms_when_its_night_goes_unaudited,
    audit::slotguard_audit_clinic_audits_a_clinic_only_in_watched_data_in_its_sources_zone,
    inputs::bad_inputs_get_the_documented_4xx_and_change_nothing,
    inputs::keys_are_held_to_their_role_and_clinic,
    inputs::bad_keys_are_rate_limited_per_address_and_keys_per_key,
    inputs::slow_and_silent_clients_lock_nobody_out,
    fuzz::random_bodies_and_query_strings_never_panic_or_get_a_5xx,
    processes::a_server_killed_after_answering_201_loses_none_of_them,
    processes::a_short_load_run_checks_clean_and_a_lost_booking_is_caught,
    processes::an_alert_survives_crashes_and_is_delivered_once,
    processes::serve_demo_prints_a_login_that_opens_the_overview,
    metrics::booking_counts_survive_a_restart,
    metrics::two_servers_on_one_database_add_up,
    metrics::stats_match_the_bookings_made_with_conflicts_in_kolkata_hours,
    metrics::the_metrics_page_is_prometheus_text_with_the_counts,
    metrics::bad_stats_queries_get_a_4xx_naming_the_field_and_change_nothing,
    metrics::a_metrics_listener_needs_no_key_and_sigterm_keeps_the_counts,
    loadtest::loadtest_of_the_clinics_rush_script_with_target_key_date_and_name_added_books_one_and_refuses_the_rest,
    loadtest::loadtest_fails_saying_why_when_a_run_books_nothing_or_meets_an_unexpected_4xx,
    loadtest::loadtest_runs_a_scripts_two_step_flow_in_order_per_user_with_variables_and_payload,
    loadtest::loadtest_scripts_may_name_the_doctor_at_book_appointment_and_unknown_or_ambiguous_names_are_refused,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_serve_processes_on_one_postgresql_never_double_book() {
    processes::two_serve_processes_on_one_database_never_double_book(support::Backend::Postgres)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_in_utc_audit_each_india_night_once_on_postgresql() {
    audit::two_servers_in_utc_audit_each_india_night_once(support::Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicate_written_through_one_postgresql_server_is_found_by_the_other() {
    detection::a_duplicate_written_through_one_server_is_found_by_the_other(
        support::Backend::Postgres,
    )
    .await
}

#[test]
fn keys_create_prints_only_the_key_and_bad_flags_exit_2() {
    processes::keys_create_prints_only_the_key_and_bad_flags_exit_2()
}
