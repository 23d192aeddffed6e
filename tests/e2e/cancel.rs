//! Cancel: a waiting job ends at once, a running one stops at its next heartbeat or progress
//! report, and a finished one cannot be cancelled.

use crate::helpers::{assert_error, failed_attempts, spawn_app, status_is, Then};
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn cancelling_a_waiting_job_ends_it_at_once() {
    // GIVEN a job queued for a minute from now and one scheduled for an hour from now
    let app = spawn_app(&[]).await;
    let sleep =
        |delay: u64| json!({ "type": "sleep", "payload": { "ms": 10 }, "delay_seconds": delay });
    let (_, queued) = app.submit(&sleep(60)).await;
    let (_, scheduled) = app.submit(&sleep(3600)).await;
    assert_eq!(queued["status"], "queued", "{queued}");
    assert_eq!(scheduled["status"], "scheduled", "{scheduled}");

    for waiting in [queued, scheduled] {
        let id = waiting["id"].as_str().unwrap();

        // WHEN it is cancelled
        let (status, answer) = app.cancel(id).await;

        // THEN the answer already shows it cancelled and finished, never having run
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        assert_eq!(answer["status"], "cancelled", "{answer}");
        assert_eq!(answer["error"]["kind"], "cancelled", "{answer}");
        assert!(answer["finished_at"].is_string(), "{answer}");
        assert_eq!(answer["attempt"], 0, "{answer}");

        // AND reading it back says the same
        let job = app.get_job(id).await;
        assert_eq!(job["status"], "cancelled", "{job}");
        assert_eq!(job["version"], answer["version"], "{job}");
    }
}

#[tokio::test]
async fn cancelling_a_running_job_stops_it_early() {
    // GIVEN a 60 s sleep job that is running and has reported progress
    let app = spawn_app(&[]).await;
    let id = app
        .submit_new(&json!({ "type": "sleep", "payload": { "ms": 60_000 } }))
        .await;
    app.wait_for_status(
        &id,
        |job| job["status"] == "running" && job["progress"].is_object(),
        Duration::from_secs(30),
    )
    .await;

    // WHEN it is cancelled
    let (status, answer) = app.cancel(&id).await;

    // THEN the answer says the running job was asked to stop
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["status"], "running", "{answer}");
    assert_eq!(answer["cancel_requested"], true, "{answer}");

    // AND it ends cancelled well before the sleep would have finished, on its first attempt,
    // without a result
    let job = app
        .wait_for_status(&id, status_is("cancelled"), Duration::from_secs(30))
        .await;
    let percent = job["progress"]["percent"]
        .as_u64()
        .expect("progress.percent");
    assert!(percent < 100, "stopped early, not at {percent}%: {job}");
    assert_eq!(job["attempt"], 1, "{job}");
    assert_eq!(job["result"], json!(null), "{job}");
    assert_eq!(job["error"]["kind"], "cancelled", "{job}");
    assert!(job["finished_at"].is_string(), "{job}");

    // AND the log says the attempt ended the job as cancelled, with no retry
    let failed = failed_attempts(&app, &id).await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(
        failed[0].then,
        Then::Ended("cancelled".into()),
        "{failed:?}"
    );
}

#[tokio::test]
async fn cancelling_a_finished_job_is_a_conflict_and_changes_nothing() {
    // GIVEN a job that succeeded
    let app = spawn_app(&[]).await;
    let id = app.submit_new(&json!({ "type": "noop" })).await;
    let done = app
        .wait_for_status(&id, status_is("succeeded"), Duration::from_secs(10))
        .await;

    // WHEN it is cancelled
    let answer = app.cancel(&id).await;

    // THEN the answer is 409 illegal_transition and the job is unchanged
    assert_error(
        &answer,
        StatusCode::CONFLICT,
        "illegal_transition",
        Some("status"),
    );
    assert_eq!(app.get_job(&id).await, done);
}
