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
    // GIVEN 3 jobs that block their thread for 8 s and 2 that spin for 4 s (more than the
    // machine's cores), each with a 500 ms timeout and one attempt, all running
    let app = spawn_app(&[]).await;
    let mut blockers = vec![];
    for _ in 0..3 {
        blockers.push(
            app.submit_new(&json!({ "type": "test.block", "payload": { "ms": 8000 } }))
                .await,
        );
    }
    for _ in 0..2 {
        blockers.push(
            app.submit_new(&json!({ "type": "test.spin", "payload": { "ms": 4000 } }))
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

    // THEN they all succeed, on their first attempt ...
    let mut finished = vec![];
    for id in noops.iter().chain([&sleeper]) {
        let job = app
            .wait_for_status(id, status_is("succeeded"), Duration::from_secs(60))
            .await;
        assert_eq!(job["attempt"], 1, "{job}");
        finished.push(at(&job, "finished_at"));
    }
    // ... while the blocked threads were still blocked: before the first blocker could have
    // returned by itself (a runtime whose threads they held would have run nothing until then)
    let mut blocked_until = vec![];
    for id in &blockers {
        let job = app
            .wait_for_status(id, is_terminal, Duration::from_secs(60))
            .await;
        let ms = if job["type"] == "test.spin" {
            4000
        } else {
            8000
        };
        blocked_until.push(at(&job, "started_at") + chrono::Duration::milliseconds(ms));
        // AND each blocking job's attempt was ended by its timeout, not by its return
        assert_eq!(job["status"], "dead", "{job}");
        assert_eq!(job["error"]["kind"], "timeout", "{job}");
        assert!(
            at(&job, "finished_at") < *blocked_until.last().unwrap(),
            "{job}"
        );
    }
    let last_ordinary = finished.iter().max().unwrap();
    let first_unblocked = blocked_until.iter().min().unwrap();
    assert!(
        last_ordinary < first_unblocked,
        "ordinary jobs finished at {last_ordinary}, the first blocked thread was free at {first_unblocked}"
    );
}
