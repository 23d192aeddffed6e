//! Exactly-once, counted: `test.count` appends a line per execution to a file outside the store
//! (with `O_APPEND`, so a SIGKILL loses none), and the counts are checked against what the API
//! says after a SIGKILL in the middle of the work and a restart.

use crate::helpers::{
    count_status as count, failed_attempts, jobs_by_id, slower_on_aws, spawn_app,
    wait_until_all_ended,
};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

const QUERY: &str = "limit=500&type=test.count";

/// Executions per job id, from the file the handler appends to.
fn executions(dir: &std::path::Path) -> HashMap<String, usize> {
    let mut runs = HashMap::new();
    if let Ok(text) = std::fs::read_to_string(dir.join("runs")) {
        for line in text.lines() {
            let id = line.split(' ').next().expect("a job id").to_string();
            *runs.entry(id).or_insert(0) += 1;
        }
    }
    runs
}

#[tokio::test]
async fn after_a_sigkill_each_job_that_had_succeeded_ran_once_and_every_other_at_least_once() {
    // GIVEN 200 counted jobs of 1 s each (80 run at once), and a moment when some have
    // succeeded, some are running and some still wait
    let counts = tempfile::tempdir().unwrap();
    let dir = counts.path().to_str().unwrap().to_string();
    let mut app = spawn_app(&[("TEST_COUNT_DIR", dir.as_str())]).await;
    let mut accepted = vec![];
    for _ in 0..200 {
        accepted.push(
            app.submit_new(
                &json!({ "type": "test.count", "payload": { "ms": slower_on_aws(1000) } }),
            )
            .await,
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let before_kill = loop {
        let jobs = jobs_by_id(&app, QUERY).await;
        if count(&jobs, "succeeded") > 0
            && count(&jobs, "running") > 0
            && count(&jobs, "queued") > 0
        {
            break jobs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never saw succeeded, running and queued jobs together"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // WHEN the process is killed with SIGKILL and started again
    app.kill9().await;
    app.restart().await;

    // THEN every accepted job ends succeeded
    let after = wait_until_all_ended(&app, QUERY, accepted.len(), Duration::from_secs(120)).await;
    assert!(after.values().all(|j| j["status"] == "succeeded"));
    let runs = executions(counts.path());
    let mut interrupted = 0;
    for (id, job) in &after {
        let executed = runs.get(id).copied().unwrap_or(0);
        let attempt = job["attempt"].as_u64().unwrap() as usize;
        // AND each ran at least once, and never more often than it was attempted
        assert!(executed >= 1, "job {id} never ran: {job}");
        assert!(
            executed <= attempt,
            "job {id} ran {executed} times in {attempt} attempts"
        );
        if before_kill[id]["status"] == "succeeded" {
            // AND a job that had succeeded before the kill ran exactly once
            assert_eq!(executed, 1, "job {id} had succeeded, then ran again");
            assert_eq!(
                job, &before_kill[id],
                "job {id} changed after it had succeeded"
            );
        }
        // AND a job whose attempt was not cut off by the kill kept attempt 1, executed once
        let stalled = failed_attempts(&app, id)
            .await
            .iter()
            .filter(|f| f.kind == "stalled")
            .count();
        if stalled == 0 {
            assert_eq!(
                (attempt, executed),
                (1, 1),
                "job {id} was not interrupted: {job}"
            );
        } else {
            interrupted += 1;
            assert_eq!(attempt, 2, "job {id} lost one attempt to the kill: {job}");
        }
    }
    // (the premise: the kill did cut some runs off)
    assert!(interrupted > 0, "no run was cut off by the kill");
}
