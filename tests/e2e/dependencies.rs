//! Jobs that depend on others (`depends_on`): a dependent waits (`waiting`) until every job it
//! depends on has ended, runs once all succeeded and reads their results, and is cancelled with
//! the reason when one fails (or runs anyway, with `on_dependency_failure: run`).

use crate::helpers::{assert_error, spawn_app, spawn_app_on_aws, status_is, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

const WITHIN: Duration = Duration::from_secs(60);

fn time(job: &Value, field: &str) -> chrono::DateTime<chrono::Utc> {
    job[field]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .unwrap_or_else(|| panic!("{field} of {job}"))
        .with_timezone(&chrono::Utc)
}

async fn a_chain_runs_in_order_and_passes_results(app: &TestApp) {
    // GIVEN a chain a → b → c, b and c submitted while a still runs
    let a = app
        .submit_new(&json!({ "type": "test.chain", "payload": { "ms": 3000, "add": 1 } }))
        .await;
    let b = app
        .submit_new(&json!({ "type": "test.chain", "payload": { "add": 10 }, "depends_on": [a] }))
        .await;
    let c = app
        .submit_new(&json!({ "type": "test.chain", "payload": { "add": 100 }, "depends_on": [b] }))
        .await;
    // THEN b and c wait while a runs
    assert_eq!(app.get_job(&b).await["status"], "waiting");
    assert_eq!(app.get_job(&c).await["status"], "waiting");

    // WHEN a ends
    let c_done = app
        .wait_for_status(&c, status_is("succeeded"), WITHIN)
        .await;
    // THEN each ran after the one it depends on ended, and got its result: 1 + 10 + 100
    let (a_done, b_done) = (app.get_job(&a).await, app.get_job(&b).await);
    assert_eq!(a_done["status"], "succeeded");
    assert!(time(&b_done, "started_at") >= time(&a_done, "finished_at"));
    assert!(time(&c_done, "started_at") >= time(&b_done, "finished_at"));
    assert_eq!(b_done["result"]["n"], 11);
    assert_eq!(
        c_done["result"],
        json!({ "n": 111, "parents": 1, "without_result": 0 })
    );
}

async fn a_failed_dependency_cancels_its_dependents(app: &TestApp) {
    // GIVEN a job that will fail for good (nothing listens on port 9), one that depends on it
    // and on a job that succeeds, one that depends on that one, and one that runs anyway
    let ok = app
        .submit_new(&json!({ "type": "test.chain", "payload": { "add": 5 } }))
        .await;
    let failing = app
        .submit_new(
            &json!({ "type": "http.fetch", "payload": { "url": "http://127.0.0.1:9/" },
                             "max_attempts": 1 }),
        )
        .await;
    let dependent = app
        .submit_new(&json!({ "type": "test.chain", "payload": {}, "depends_on": [ok, failing] }))
        .await;
    let second = app
        .submit_new(&json!({ "type": "test.chain", "payload": {}, "depends_on": [dependent] }))
        .await;
    let anyway = app
        .submit_new(&json!({ "type": "test.chain", "payload": { "add": 1 },
                             "depends_on": [ok, failing], "on_dependency_failure": "run" }))
        .await;

    // WHEN the failing job ends
    let failed = app
        .wait_for_status(
            &failing,
            |j| j["status"] == "dead" || j["status"] == "failed",
            WITHIN,
        )
        .await;

    // THEN its dependent is cancelled, naming it and how it ended, and so is the next in line,
    // naming its own dependency; neither ran
    let cancelled = app
        .wait_for_status(&dependent, status_is("cancelled"), WITHIN)
        .await;
    assert_eq!(cancelled["error"]["kind"], "dependency", "{cancelled}");
    let reason = cancelled["error"]["message"].as_str().unwrap();
    assert!(
        reason.contains(&failing) && reason.contains(failed["status"].as_str().unwrap()),
        "{reason}"
    );
    assert!(cancelled["started_at"].is_null());
    let next = app
        .wait_for_status(&second, status_is("cancelled"), WITHIN)
        .await;
    assert!(
        next["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&dependent),
        "{next}"
    );
    assert!(next["started_at"].is_null());
    // AND the one told to run anyway runs, with the failed job's result missing
    let ran = app
        .wait_for_status(&anyway, status_is("succeeded"), WITHIN)
        .await;
    assert_eq!(
        ran["result"],
        json!({ "n": 6, "parents": 2, "without_result": 1 })
    );
}

async fn dependencies_must_exist_and_a_waiting_job_can_be_cancelled(app: &TestApp) {
    // GIVEN a job that runs for a while, and two that wait for it
    let long = app
        .submit_new(&json!({ "type": "sleep", "payload": { "ms": 3000 } }))
        .await;
    let waiting = app
        .submit_new(&json!({ "type": "noop", "payload": {}, "depends_on": [long] }))
        .await;
    let beside = app
        .submit_new(&json!({ "type": "noop", "payload": {}, "depends_on": [long] }))
        .await;
    // WHEN a job names one that does not exist, or a dependency is combined with a delay
    let unknown = app
        .submit(&json!({ "type": "noop", "payload": {},
                         "depends_on": [long, "01J00000000000000000000000"] }))
        .await;
    let delayed = app
        .submit(&json!({ "type": "noop", "payload": {}, "depends_on": [long], "delay_seconds": 5 }))
        .await;
    // THEN each is refused, naming the field
    assert_error(
        &unknown,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("depends_on[1]"),
    );
    assert_error(
        &delayed,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("delay_seconds"),
    );
    // AND the waiting job is listed as waiting, and cancelled at once on request
    let listed = app.list("status=waiting").await;
    assert!(
        listed["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == waiting.as_str()),
        "{listed}"
    );
    let (status, job) = app.cancel(&waiting).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["status"], "cancelled");
    // AND the end of the job it waited for leaves it cancelled: once the other job that waited
    // has been handed over and has run, the cancelled one was handed over too
    app.wait_for_status(&long, status_is("succeeded"), WITHIN)
        .await;
    app.wait_for_status(&beside, status_is("succeeded"), WITHIN)
        .await;
    assert_eq!(app.get_job(&waiting).await["status"], "cancelled");
}

#[tokio::test]
async fn a_chain_of_three_runs_in_order_and_each_reads_the_result_before_it() {
    a_chain_runs_in_order_and_passes_results(&spawn_app(&[]).await).await;
}

#[tokio::test]
async fn a_failed_dependency_cancels_its_dependents_with_the_reason() {
    a_failed_dependency_cancels_its_dependents(&spawn_app(&[]).await).await;
}

#[tokio::test]
async fn a_dependency_must_exist_and_a_waiting_job_can_be_cancelled() {
    dependencies_must_exist_and_a_waiting_job_can_be_cancelled(&spawn_app(&[]).await).await;
}

#[tokio::test]
async fn dependencies_on_the_aws_backend() {
    let app = spawn_app_on_aws(&[]).await;
    a_chain_runs_in_order_and_passes_results(&app).await;
    a_failed_dependency_cancels_its_dependents(&app).await;
    dependencies_must_exist_and_a_waiting_job_can_be_cancelled(&app).await;
}
