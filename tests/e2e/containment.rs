//! A handler that blocks its thread (a `std::thread::sleep`, a CPU-bound loop) costs its own
//! slot only: other jobs, heartbeats and the HTTP API go on, and its timeout still ends its
//! attempt.

use crate::helpers::{is_terminal, spawn_app, status_is};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::time::Duration;

fn at(job: &Value, field: &str) -> DateTime<Utc> {
    job[field]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .unwrap_or_else(|| panic!("{field} in {job}"))
        .with_timezone(&Utc)
}

#[tokio::test]
async fn handlers_that_block_their_thread_starve_nothing_else() {
    // GIVEN 3 jobs that block their thread and 2 that spin (more than the machine's cores),
    // until the test releases them, each with a 500 ms timeout and one attempt, all started
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let app = spawn_app(&[("TEST_COUNT_DIR", path.as_str())]).await;
    let mut blockers = vec![];
    for _ in 0..3 {
        blockers.push(
            app.submit_new(&json!({ "type": "test.block", "payload": { "ms": 300000 } }))
                .await,
        );
    }
    for _ in 0..2 {
        blockers.push(
            app.submit_new(&json!({ "type": "test.spin", "payload": { "ms": 300000 } }))
                .await,
        );
    }
    for id in &blockers {
        app.wait_for_status(id, |j| j["status"] != "queued", Duration::from_secs(30))
            .await;
    }

    // WHEN ordinary jobs are submitted meanwhile: no-ops, and a sleep that sends heartbeats
    let sleeper = app
        .submit_new(&json!({ "type": "sleep", "payload": { "ms": 1000 } }))
        .await;
    let mut noops = vec![];
    for _ in 0..20 {
        noops.push(app.submit_new(&json!({ "type": "noop" })).await);
    }

    // THEN they all succeed, on their first attempt, while the blocked threads are still held
    // (nothing has released them yet: a runtime whose threads they held would run nothing)
    for id in noops.iter().chain([&sleeper]) {
        let job = app
            .wait_for_status(id, status_is("succeeded"), Duration::from_secs(60))
            .await;
        assert_eq!(job["attempt"], 1, "{job}");
    }
    // AND each blocking job's attempt was ended by its timeout while its thread was held
    let released_at = Utc::now();
    for id in &blockers {
        let job = app
            .wait_for_status(id, is_terminal, Duration::from_secs(60))
            .await;
        assert_eq!(job["status"], "dead", "{job}");
        assert_eq!(job["error"]["kind"], "timeout", "{job}");
        assert!(at(&job, "finished_at") < released_at, "{job}");
    }
    std::fs::write(dir.path().join("release"), b"").unwrap();
}
