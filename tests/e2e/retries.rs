//! Retries: a retryable failure goes back to `queued` with an exponential, jittered delay; the
//! job succeeds when the target recovers, or ends `dead` when its attempts run out; a dead job
//! can be retried by hand.

use crate::helpers::{failed_attempts, spawn_app, status_is, TestServer, Then};
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn retryable_failures_are_retried_with_growing_delays_until_success() {
    // GIVEN a target that answers 503 three times, then 200
    let server = TestServer::answering(&[503, 503, 503], 200).await;
    let app = spawn_app(&[]).await;

    // WHEN an http.fetch job with five attempts and a 100 ms .. 2 s backoff is submitted
    let id = app
        .submit_new(&json!({
            "type": "http.fetch",
            "payload": { "url": server.url("/flaky") },
            "max_attempts": 5,
            "backoff": { "base_ms": 100, "cap_ms": 2000 },
        }))
        .await;

    // THEN it succeeds on its fourth attempt, and the target saw four requests
    let job = app
        .wait_for_status(&id, status_is("succeeded"), Duration::from_secs(15))
        .await;
    assert_eq!(job["attempt"], 4, "{job}");
    assert_eq!(job["result"]["status"], 200, "{job}");
    assert_eq!(job["error"], json!(null), "{job}");
    assert_eq!(server.request_count(), 4);

    // AND its log shows three failed attempts, each sent back to the queue with a delay within
    // its ceiling: base * 2^(attempt-1), i.e. 100, 200 and 400 ms (full jitter: 0 ..= ceiling)
    let failed = failed_attempts(&app, &id).await;
    assert_eq!(failed.len(), 3, "{failed:?}");
    for (failure, (attempt, ceiling_ms)) in failed.iter().zip([(1, 100), (2, 200), (3, 400)]) {
        assert_eq!(failure.attempt, attempt, "{failure:?}");
        assert_eq!(failure.kind, "retryable", "{failure:?}");
        assert!(failure.message.contains("503"), "{failure:?}");
        match failure.then {
            Then::RetryingInMs(ms) => assert!(ms <= ceiling_ms, "{failure:?} over {ceiling_ms} ms"),
            Then::Ended(_) => panic!("attempt {attempt} should have been retried: {failure:?}"),
        }
    }

    // AND the job re-entered the queue after it was created, before its last start
    let parse = |field: &str| {
        chrono::DateTime::parse_from_rfc3339(job[field].as_str().expect(field)).expect(field)
    };
    assert!(parse("queued_at") > parse("created_at"), "{job}");
    assert!(parse("queued_at") <= parse("started_at"), "{job}");
}

#[tokio::test]
async fn a_job_that_always_fails_ends_dead_after_its_last_attempt() {
    // GIVEN a target that always answers 503
    let server = TestServer::answering(&[], 503).await;
    let app = spawn_app(&[]).await;

    // WHEN an http.fetch job with three attempts is submitted
    let id = app
        .submit_new(&json!({
            "type": "http.fetch",
            "payload": { "url": server.url("/down") },
            "max_attempts": 3,
            "backoff": { "base_ms": 50, "cap_ms": 100 },
        }))
        .await;

    // THEN it ends dead after three attempts, with the last error recorded
    let job = app
        .wait_for_status(&id, status_is("dead"), Duration::from_secs(15))
        .await;
    assert_eq!(job["attempt"], 3, "{job}");
    assert_eq!(job["error"]["kind"], "retryable", "{job}");
    assert_eq!(job["error"]["retryable"], true, "{job}");
    assert!(
        job["error"]["message"].as_str().unwrap().contains("503"),
        "{job}"
    );
    assert_eq!(job["result"], json!(null), "{job}");
    assert!(job["finished_at"].is_string(), "{job}");

    // AND the target saw exactly three requests
    assert_eq!(server.request_count(), 3);

    // AND the log shows two retries, then the end
    let failed = failed_attempts(&app, &id).await;
    let thens: Vec<_> = failed.iter().map(|f| f.then.clone()).collect();
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(matches!(thens[0], Then::RetryingInMs(_)), "{failed:?}");
    assert!(matches!(thens[1], Then::RetryingInMs(_)), "{failed:?}");
    assert_eq!(thens[2], Then::Ended("dead".into()), "{failed:?}");
}

#[tokio::test]
async fn a_dead_job_retried_by_hand_runs_again_with_fresh_attempts() {
    // GIVEN a job that died after three 503s, against a target that now answers 200
    let server = TestServer::answering(&[503, 503, 503], 200).await;
    let app = spawn_app(&[]).await;
    let id = app
        .submit_new(&json!({
            "type": "http.fetch",
            "payload": { "url": server.url("/later") },
            "max_attempts": 3,
            "backoff": { "base_ms": 10, "cap_ms": 20 },
        }))
        .await;
    app.wait_for_status(&id, status_is("dead"), Duration::from_secs(15))
        .await;

    // WHEN it is retried
    let (status, requeued) = app.retry(&id).await;

    // THEN it is queued again with its attempts reset
    assert_eq!(status, StatusCode::ACCEPTED, "{requeued}");
    assert_eq!(requeued["status"], "queued", "{requeued}");
    assert_eq!(requeued["attempt"], 0, "{requeued}");
    assert_eq!(requeued["finished_at"], json!(null), "{requeued}");

    // AND it succeeds on the first attempt of the new round
    let job = app
        .wait_for_status(&id, status_is("succeeded"), Duration::from_secs(10))
        .await;
    assert_eq!(job["attempt"], 1, "{job}");
    assert_eq!(job["result"]["status"], 200, "{job}");
    assert_eq!(server.request_count(), 4);
}
