//! Graceful shutdown: on SIGTERM no new work is taken, in-flight jobs get the grace period to
//! finish, and whatever does not finish returns to the queue (without using up an attempt) and
//! completes after a restart.

use crate::helpers::{spawn_app, status_is, TestApp};
use serde_json::json;
use std::time::Duration;

/// A runtime with the given shutdown grace and a `sleep` job of `ms` that is running.
async fn app_with_a_running_job(grace: &str, ms: u64) -> (TestApp, String) {
    let app = spawn_app(&[("CONVEYOR_SHUTDOWN_GRACE", grace)]).await;
    let id = app
        .submit_new(&json!({"type": "sleep", "payload": {"ms": ms}}))
        .await;
    app.wait_for_status(&id, status_is("running"), Duration::from_secs(10))
        .await;
    (app, id)
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_job_finish_and_exits_cleanly() {
    // GIVEN a runtime with a 5 s grace period and a 1 s job running
    let (mut app, id) = app_with_a_running_job("5s", 1000).await;

    // WHEN the process is sent SIGTERM
    let status = app.terminate(Duration::from_secs(15)).await;

    // THEN it exits successfully, and after a restart the job is found finished by its first
    // attempt: it completed during the shutdown and was not run again
    assert!(status.success(), "exit status {status:?}");
    app.restart().await;
    let job = app.get_job(&id).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(job["attempt"], 1, "{job:#}");
}

#[tokio::test]
async fn a_job_outlasting_the_grace_period_returns_to_the_queue_and_runs_after_restart() {
    // GIVEN a runtime with a short grace period and a job that needs longer than it
    let (mut app, id) = app_with_a_running_job("300ms", 3000).await;

    // WHEN the process is sent SIGTERM, exits, and is started again
    let status = app.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status:?}");
    app.restart().await;

    // THEN the job runs again and succeeds; the interrupted run did not use up an attempt, and
    // the log says what happened to it
    let job = app
        .wait_for_status(&id, status_is("succeeded"), Duration::from_secs(20))
        .await;
    assert_eq!(job["attempt"], 1, "{job:#}");
    let logs = app.logs(&id).await;
    assert!(
        logs.iter()
            .any(|(_, line)| line.starts_with("attempt 1 interrupted by a shutdown")),
        "{logs:?}"
    );
}
