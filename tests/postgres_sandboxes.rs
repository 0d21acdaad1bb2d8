//! Tests written for the embedded store, run again with the sandbox's store in PostgreSQL:
//! the ones that kill and restart workers and queue from hooks, where the backends differ
//! most (a dead worker's lease lingers until it expires; hooks reach the store through the
//! variable the git server gives them). The whole suite runs so with
//! `LOCKSTEP_TEST_BACKEND=postgres cargo test`.

use crate::util::postgres::on_postgres;
use crate::{crash, delivery};

#[test]
fn crash_during_test_resumes_and_delivers_once() {
    on_postgres(crash::crash_during_test_resumes_and_delivers_once);
}

#[test]
fn crash_between_merge_pushes_completes_every_upstream() {
    on_postgres(crash::crash_between_merge_pushes_completes_every_upstream);
}

#[test]
fn crash_after_the_first_deploy_rolls_back_and_keeps_the_queue() {
    on_postgres(crash::crash_after_the_first_deploy_rolls_back_and_keeps_the_queue);
}

#[test]
fn push_with_deliver_option_queues_and_a_background_worker_delivers() {
    on_postgres(delivery::push_with_deliver_option_queues_and_a_background_worker_delivers);
}

#[test]
fn a_failed_rollback_is_reported_and_can_be_run_again() {
    on_postgres(delivery::a_failed_rollback_is_reported_and_can_be_run_again);
}
