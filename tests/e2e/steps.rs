//! Durable steps (`JobContext::step`): a job killed in the middle resumes after its last
//! completed step. `test.steps` appends a line per step it runs to a file outside the store, so
//! what ran is counted, not inferred.

use crate::helpers::{spawn_app, spawn_app_on_aws, status_is, TestApp};
use serde_json::json;
use std::time::Duration;

/// How often each step of `id` ran, from the file `test.steps` appends to.
fn runs_of(dir: &std::path::Path, id: &str, step: u32) -> usize {
    std::fs::read_to_string(dir.join("steps"))
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == format!("{id} step-{step}"))
        .count()
}

async fn a_job_killed_in_step_4_resumes_at_step_4(spawn: impl AsyncFn(&[(&str, &str)]) -> TestApp) {
    // GIVEN a job of 5 steps whose step 4 holds the first time it runs
    let counts = tempfile::tempdir().unwrap();
    let dir = counts.path().to_str().unwrap().to_string();
    let mut app = spawn(&[("TEST_COUNT_DIR", dir.as_str())]).await;
    let id = app
        .submit_new(&json!({ "type": "test.steps", "payload": { "steps": 5, "hold": 4 } }))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while runs_of(counts.path(), &id, 4) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "step 4 never began");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // (steps 1 to 3 are recorded before step 4 begins; progress followed them)
    let during = app.get_job(&id).await;
    assert_eq!(during["status"], "running");
    assert_eq!(during["progress"]["percent"], 60, "{during}");

    // WHEN the runtime is killed with SIGKILL during step 4 and started again
    app.kill9().await;
    app.restart().await;

    // THEN the job succeeds, with every step's result
    let done = app
        .wait_for_status(&id, status_is("succeeded"), Duration::from_secs(120))
        .await;
    assert_eq!(done["result"], json!({ "steps": [10, 20, 30, 40, 50] }));
    assert_eq!(done["progress"]["percent"], 100, "{done}");
    // AND steps 1 to 3 ran exactly once in all, step 4 again after the crash, step 5 once
    for step in 1..=3 {
        assert_eq!(runs_of(counts.path(), &id, step), 1, "step {step}");
    }
    assert_eq!(
        runs_of(counts.path(), &id, 4),
        2,
        "step 4: once cut short, once whole"
    );
    assert_eq!(runs_of(counts.path(), &id, 5), 1, "step 5");
    // AND that was the job's second run
    assert_eq!(done["runs"], 2, "{done}");
}

#[tokio::test]
async fn a_job_killed_during_step_4_resumes_at_step_4_and_runs_steps_1_to_3_once() {
    a_job_killed_in_step_4_resumes_at_step_4(async |env: &[(&str, &str)]| spawn_app(env).await)
        .await;
}

#[tokio::test]
async fn a_job_killed_during_step_4_resumes_at_step_4_on_the_aws_backend() {
    a_job_killed_in_step_4_resumes_at_step_4(async |env: &[(&str, &str)]| {
        spawn_app_on_aws(env).await
    })
    .await;
}
