//! Crash recovery: SIGKILL the runtime mid-work, start it again on the same data directory, and
//! every accepted job still ends, exactly once.

use crate::helpers::{
    count_status as count, jobs_by_id, spawn_app, status_is, wait_until_all_ended, TestApp,
    TestServer,
};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

async fn all_jobs(app: &TestApp) -> BTreeMap<String, Value> {
    jobs_by_id(app, "limit=500").await
}

#[tokio::test]
async fn every_accepted_job_ends_exactly_once_across_a_sigkill() {
    // GIVEN an app delivering 20 webhooks (the first already delivered), running 200 noop jobs,
    // a 6 s sleep job and 40 sleep jobs of 1 s (sleep runs 16 at once, so some wait for seconds:
    // the moment looked for below lasts long enough to be seen on a loaded machine)
    let receiver = TestServer::ok().await;
    let mut app = spawn_app(&[]).await;
    let mut accepted = vec![];
    let mut webhooks = vec![];
    for n in 0..20 {
        let id = app
            .submit_new(&json!({
                "type": "webhook.deliver",
                "payload": { "url": receiver.url("/hook"), "body": { "n": n } },
            }))
            .await;
        webhooks.push(id.clone());
        accepted.push(id);
    }
    app.wait_for_status(
        &webhooks[0],
        status_is("succeeded"),
        Duration::from_secs(10),
    )
    .await;
    for _ in 0..200 {
        accepted.push(app.submit_new(&json!({ "type": "noop" })).await);
    }
    let long_sleep = app
        .submit_new(&json!({ "type": "sleep", "payload": { "ms": 6000 } }))
        .await;
    accepted.push(long_sleep.clone());
    for _ in 0..40 {
        accepted.push(
            app.submit_new(&json!({ "type": "sleep", "payload": { "ms": 1000 } }))
                .await,
        );
    }

    // AND a moment where jobs are running and queued, the 6 s sleep at most half done
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let before_kill = loop {
        let jobs = all_jobs(&app).await;
        let long = &jobs[&long_sleep];
        let long_has_time_left =
            long["status"] == "running" && long["progress"]["percent"].as_u64().unwrap_or(0) <= 50;
        if long_has_time_left && count(&jobs, "queued") > 0 {
            break jobs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never saw running and queued jobs together: {} running, {} queued, long sleep {long}",
            count(&jobs, "running"),
            count(&jobs, "queued"),
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };

    // WHEN the process is killed with SIGKILL and started again on the same data directory
    app.kill9().await;
    app.restart().await;

    // THEN every job that got a 202 ends succeeded, and no other job appears
    let after =
        wait_until_all_ended(&app, "limit=500", accepted.len(), Duration::from_secs(120)).await;
    let mut listed: Vec<&String> = after.keys().collect();
    let mut expected: Vec<&String> = accepted.iter().collect();
    listed.sort();
    expected.sort();
    assert_eq!(
        listed, expected,
        "the jobs after the restart are the accepted ones"
    );
    let not_succeeded: Vec<&Value> = after
        .values()
        .filter(|j| j["status"] != "succeeded")
        .collect();
    assert!(not_succeeded.is_empty(), "{not_succeeded:#?}");
    let stats = app.settled_stats().await;
    assert_eq!(stats["total"], accepted.len(), "{stats}");
    assert_eq!(stats["by_status"]["succeeded"], accepted.len(), "{stats}");

    // AND the sleep that was cut off counts its lost attempt and ran again to the end
    let long = &after[&long_sleep];
    assert_eq!(long["attempt"], 2, "{long}");
    assert_eq!(long["progress"]["percent"], 100, "{long}");

    // AND jobs that had succeeded before the kill are exactly as they were
    let done_before: Vec<&String> = before_kill
        .iter()
        .filter(|(_, j)| j["status"] == "succeeded")
        .map(|(id, _)| id)
        .collect();
    assert!(
        done_before.contains(&&webhooks[0]),
        "premise: a webhook was delivered"
    );
    for id in &done_before {
        assert_eq!(
            after[*id], before_kill[*id],
            "job {id} changed after the restart"
        );
    }

    // AND every webhook was delivered, and those that had succeeded before the kill only once
    let mut deliveries: HashMap<String, usize> = HashMap::new();
    for request in receiver.requests() {
        let id = request.header("x-conveyor-job-id").expect("job id header");
        *deliveries.entry(id.to_string()).or_default() += 1;
    }
    for id in &webhooks {
        let n = deliveries.get(id).copied().unwrap_or(0);
        assert!(n >= 1, "webhook {id} never delivered");
        if done_before.contains(&id) {
            assert_eq!(
                n, 1,
                "webhook {id} succeeded before the kill, then was delivered again"
            );
        }
    }

    // AND once everything has ended, nothing moves again: not after the stall and orphan
    // windows (6 s each) and a couple of dozen maintenance sweeps have passed
    let delivered = receiver.request_count();
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let later = all_jobs(&app).await;
    for (id, job) in &after {
        assert_eq!(&later[id], job, "job {id} changed after it had ended");
    }
    assert_eq!(
        receiver.request_count(),
        delivered,
        "no webhook is delivered again"
    );
}

#[tokio::test]
async fn an_attempt_lost_in_a_crash_is_explained_in_the_job_log() {
    // GIVEN a sleep job killed mid-run with its process, and the process started again
    let mut app = spawn_app(&[]).await;
    let id = app
        .submit_new(&json!({ "type": "sleep", "payload": { "ms": 1000 } }))
        .await;
    app.wait_for_status(&id, status_is("running"), Duration::from_secs(10))
        .await;
    app.kill9().await;
    app.restart().await;

    // WHEN the job has run again to its end (on the AWS backend, where a restart never reaps a
    // shared fleet's jobs, once maintenance has found it stalled)
    let job = app
        .wait_for_status(
            &id,
            status_is("succeeded"),
            Duration::from_millis(crate::helpers::slower_on_aws(15_000)),
        )
        .await;
    assert_eq!(job["attempt"], 2, "{job}");

    // THEN its log says why attempt 1 ended, as it does for every other failed attempt
    let failed = crate::helpers::failed_attempts(&app, &id).await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].attempt, 1, "{failed:?}");
    assert_eq!(failed[0].kind, "stalled", "{failed:?}");
}
