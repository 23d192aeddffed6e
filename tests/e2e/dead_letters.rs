//! Dead letters and bulk actions against the running runtime: a job whose handler always
//! panics ends dead, is listed with why, and succeeds when redriven once the cause is fixed;
//! thousands of dead jobs are retried by one bulk job that reports its progress, the request
//! answering at once; a bulk cancel takes only what its filter names; bad requests name the
//! field at fault.

use crate::helpers::{assert_error, on_aws, spawn_app, status_is, TestApp};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn post_json(app: &TestApp, path: &str, body: &Value) -> (StatusCode, Value) {
    app.send(app.client.post(app.url(path)).json(body)).await
}

fn count_dir() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_string_lossy().to_string();
    (dir, path)
}

#[tokio::test]
async fn a_job_that_always_panics_ends_dead_and_succeeds_when_redriven_after_the_fix() {
    let (dir, path) = count_dir();
    let app = spawn_app(&[("TEST_COUNT_DIR", path.as_str())]).await;
    // GIVEN a job whose handler panics on every attempt
    let id = app
        .submit_new(&json!({
            "type": "test.panics", "max_attempts": 2,
            "backoff": { "base_ms": 10, "cap_ms": 20 },
        }))
        .await;
    let dead = app
        .wait_for_status(&id, status_is("dead"), Duration::from_secs(30))
        .await;
    assert_eq!(dead["error"]["kind"], "panic", "{dead}");
    // THEN it is a dead letter, with why
    let (status, page) = app.get("/v1/dead-letters?type=test.panics").await;
    assert_eq!(status, StatusCode::OK);
    let listed = &page["jobs"][0];
    assert_eq!(listed["id"], id.as_str());
    assert_eq!(listed["error"]["kind"], "panic");
    // WHEN the cause is fixed and it is redriven by id (with a job that is not dead beside it)
    std::fs::write(dir.path().join("fixed"), b"").unwrap();
    let alive = app.submit_new(&json!({ "type": "noop" })).await;
    app.wait_for_status(&alive, status_is("succeeded"), Duration::from_secs(20))
        .await;
    let (status, answer) = post_json(
        &app,
        "/v1/dead-letters/redrive",
        &json!({ "ids": [id, alive] }),
    )
    .await;
    // THEN it goes back with fresh attempts and succeeds; the other is refused, untouched
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["results"][0]["status"], "queued", "{answer}");
    assert_eq!(answer["results"][1]["error"]["code"], "illegal_transition");
    let done = app
        .wait_for_status(&id, status_is("succeeded"), Duration::from_secs(20))
        .await;
    assert_eq!(
        done["attempt"], 1,
        "a redrive starts a fresh set of attempts: {done}"
    );
    let (_, page) = app.get("/v1/dead-letters?type=test.panics").await;
    assert_eq!(page["jobs"], json!([]));
}

#[tokio::test]
async fn thousands_of_dead_jobs_are_retried_by_one_bulk_job_that_reports_its_progress() {
    let (dir, path) = count_dir();
    let app = spawn_app(&[("TEST_COUNT_DIR", path.as_str())]).await;
    let n: usize = if on_aws() { 150 } else { 10_000 };
    let mut slowest = Duration::ZERO;
    // GIVEN n jobs that died (their handler was broken)
    let client = app.client.clone();
    let submits = futures::stream::iter(0..n)
        .map(|i| {
            let (client, url) = (client.clone(), app.url("/v1/jobs"));
            async move {
                let started = Instant::now();
                let r = client
                    .post(url)
                    .json(
                        &json!({ "type": "test.broken", "max_attempts": 1, "payload": { "i": i } }),
                    )
                    .send()
                    .await
                    .expect("the API answers");
                assert_eq!(r.status(), StatusCode::ACCEPTED);
                started.elapsed()
            }
        })
        .buffer_unordered(16);
    let times: Vec<Duration> = submits.collect().await;
    slowest = slowest.max(times.into_iter().max().unwrap());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let stats = app.stats().await;
        if stats["by_type"]["test.broken"]["dead"] == json!(n) {
            break;
        }
        assert!(Instant::now() < deadline, "not all died: {stats}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // WHEN the cause is fixed and every dead one of the type is retried in bulk
    std::fs::write(dir.path().join("fixed"), b"").unwrap();
    let started = Instant::now();
    let (status, bulk) = post_json(
        &app,
        "/v1/jobs/bulk",
        &json!({ "action": "retry", "filter": { "status": "dead", "type": "test.broken" } }),
    )
    .await;
    slowest = slowest.max(started.elapsed());
    // THEN the request answers at once with the bulk job, not yet done
    assert_eq!(status, StatusCode::ACCEPTED, "{bulk}");
    assert_eq!(bulk["type"], "conveyor.bulk");
    assert_ne!(bulk["status"], "succeeded");
    let id = bulk["id"].as_str().unwrap().to_string();
    // AND the bulk job reports its progress as it goes, and ends with what it did
    let mut seen = vec![];
    let deadline = Instant::now() + Duration::from_secs(180);
    let finished = loop {
        let started = Instant::now();
        let job = app.get_job(&id).await;
        slowest = slowest.max(started.elapsed());
        if let Some(p) = job["progress"]["percent"].as_u64() {
            seen.push(p);
        }
        if job["status"] == "succeeded" {
            break job;
        }
        assert!(
            Instant::now() < deadline,
            "the bulk job did not finish: {job}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(finished["result"]["matched"], json!(n), "{finished}");
    assert_eq!(finished["result"]["changed"], json!(n), "{finished}");
    assert_eq!(finished["progress"]["percent"], 100);
    assert_eq!(
        finished["progress"]["message"],
        format!("{n} of {n}"),
        "{finished}"
    );
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "progress only grows: {seen:?}"
    );
    if !on_aws() {
        assert!(
            seen.iter().any(|p| *p > 0 && *p < 100),
            "progress was seen on its way: {seen:?}"
        );
    }
    // AND every job runs again and succeeds
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let stats = app.stats().await;
        if stats["by_type"]["test.broken"]["succeeded"] == json!(n) {
            break;
        }
        assert!(Instant::now() < deadline, "not all succeeded: {stats}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("bulk retry of {n} dead jobs: slowest request {slowest:?}");
}

#[tokio::test]
async fn a_bulk_cancel_takes_only_what_its_filter_names_and_bad_requests_name_their_field() {
    let app = spawn_app(&[]).await;
    // GIVEN a delayed job from before, and five after a moment t
    let before = app
        .submit_new(&json!({ "type": "noop", "delay_seconds": 600 }))
        .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let t = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut after = vec![];
    for _ in 0..5 {
        after.push(
            app.submit_new(&json!({ "type": "noop", "delay_seconds": 600 }))
                .await,
        );
    }
    // WHEN the queued noop jobs created from t on are cancelled in bulk
    let (status, bulk) = post_json(
        &app,
        "/v1/jobs/bulk",
        &json!({ "action": "cancel", "filter": { "status": "queued", "type": "noop",
                 "created_after": t.to_rfc3339() } }),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{bulk}");
    let done = app
        .wait_for_status(
            bulk["id"].as_str().unwrap(),
            status_is("succeeded"),
            Duration::from_secs(30),
        )
        .await;
    // THEN those five are cancelled, the earlier one is not
    assert_eq!(done["result"]["changed"], 5, "{done}");
    for id in &after {
        assert_eq!(app.get_job(id).await["status"], "cancelled");
    }
    assert_eq!(app.get_job(&before).await["status"], "queued");
    // AND requests that cannot be carried out name the field at fault
    for (path, body, field) in [
        ("/v1/jobs/bulk", json!({ "action": "explode" }), "action"),
        ("/v1/jobs/bulk", json!({}), "action"),
        (
            "/v1/jobs/bulk",
            json!({ "action": "retry", "filter": { "status": "nope" } }),
            "filter.status",
        ),
        (
            "/v1/jobs/bulk",
            json!({ "action": "retry", "filter": { "colour": "red" } }),
            "filter.colour",
        ),
        (
            "/v1/jobs/bulk",
            json!({ "action": "retry", "filter": { "created_after": "2030-01-02T00:00:00Z", "created_before": "2030-01-01T00:00:00Z" } }),
            "filter.created_before",
        ),
        ("/v1/dead-letters/redrive", json!({ "ids": [] }), "ids"),
        (
            "/v1/dead-letters/redrive",
            json!({ "ids": ["nope"] }),
            "ids",
        ),
        (
            "/v1/dead-letters/redrive",
            json!({ "ids": [before], "type": "noop" }),
            "ids",
        ),
        (
            "/v1/dead-letters/redrive",
            json!({ "status": "failed" }),
            "status",
        ),
    ] {
        assert_error(
            &post_json(&app, path, &body).await,
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some(field),
        );
    }
    assert_error(
        &app.get("/v1/dead-letters?limit=0").await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("limit"),
    );
}
