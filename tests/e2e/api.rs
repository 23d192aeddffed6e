//! The basic API paths: `noop` and `sleep` jobs run to their result, the result endpoint, the
//! health check, and tenant isolation.

use crate::helpers::{assert_error, spawn_app, status_is};
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn health_check_reports_the_writer_the_pollers_and_maintenance() {
    // GIVEN a running app
    let app = spawn_app(&[]).await;

    // WHEN the health check is asked
    let (status, body) = app.get("/healthz").await;

    // THEN it answers ok, and names every part that could fail on its own, each ok
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ok", "{body}");
    let components = body["components"].as_object().expect("components");
    let mut names: Vec<&str> = components.keys().map(String::as_str).collect();
    names.sort();
    // (the embedded backend's writer is one; the AWS backend has none, but has the reader of
    // the table's stream that keeps the stats)
    let prefix = app.setting("CONVEYOR_QUEUE_PREFIX").unwrap_or("conveyor-");
    let mut expected = vec![
        "maintenance".to_string(),
        "live-updates".to_string(),
        "scheduler".to_string(),
    ];
    for queue in [
        "conveyor-bulk",
        "http-fetch",
        "noop",
        "scan-domain",
        "sleep",
        "test-barrier",
        "test-block",
        "test-broken",
        "test-chain",
        "test-count",
        "test-echo",
        "test-fanout",
        "test-keyed",
        "test-lanes",
        "test-panics",
        "test-rated",
        "test-rated-per-key",
        "test-spin",
        "test-steps",
        "webhook-deliver",
        "conveyor-external",
    ] {
        expected.push(format!("poller:{prefix}{queue}"));
    }
    if crate::helpers::on_aws() {
        expected.push("stats".into());
    } else {
        expected.push("writer".into());
    }
    expected.sort();
    assert_eq!(names, expected, "{body}");
    for (name, state) in components {
        assert_eq!(state["ok"], true, "{name}: {state}");
        assert_eq!(state["restarts"], 0, "{name}: {state}");
    }
}

#[tokio::test]
async fn noop_job_runs_once_and_succeeds_with_ok_result() {
    // GIVEN a running app
    let app = spawn_app(&[]).await;

    // WHEN a noop job is submitted
    let (status, accepted) = app.submit(&json!({ "type": "noop" })).await;

    // THEN it is accepted as a new, queued job that has not run yet
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["type"], "noop");
    assert_eq!(accepted["status"], "queued");
    assert_eq!(accepted["attempt"], 0);
    assert_eq!(accepted["result"], json!(null));
    let id = accepted["id"].as_str().unwrap();

    // AND it ends succeeded on its first attempt with the result {"ok": true}
    let job = app
        .wait_for_status(id, status_is("succeeded"), Duration::from_secs(10))
        .await;
    assert_eq!(job["attempt"], 1);
    assert_eq!(job["result"], json!({ "ok": true }));
    assert_eq!(job["error"], json!(null));
    assert!(job["finished_at"].is_string(), "{job}");
    assert!(
        job["version"].as_u64() > accepted["version"].as_u64(),
        "{job}"
    );

    // AND the result endpoint serves the same result, ready
    let (status, result) = app.get(&format!("/v1/jobs/{id}/result")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        result,
        json!({ "id": id, "status": "succeeded", "ready": true, "result": { "ok": true }, "error": null })
    );
}

#[tokio::test]
async fn sleep_job_reports_progress_and_succeeds() {
    // GIVEN a running app
    let app = spawn_app(&[]).await;

    // WHEN a 200 ms sleep job is submitted
    let id = app
        .submit_new(&json!({ "type": "sleep", "payload": { "ms": 200 } }))
        .await;

    // THEN it succeeds, having slept at least that long and reported its last step as progress
    let job = app
        .wait_for_status(&id, status_is("succeeded"), Duration::from_secs(10))
        .await;
    assert_eq!(job["attempt"], 1);
    let slept = job["result"]["slept_ms"].as_u64().expect("result.slept_ms");
    assert!(slept >= 200, "slept {slept} ms of 200: {job}");
    assert_eq!(
        job["progress"],
        json!({ "percent": 100, "message": "slept 200 of 200 ms" })
    );
}

#[tokio::test]
async fn result_is_not_ready_while_the_job_waits() {
    // GIVEN a job due in ten minutes
    let app = spawn_app(&[]).await;
    let id = app
        .submit_new(&json!({ "type": "sleep", "payload": { "ms": 10 }, "delay_seconds": 600 }))
        .await;

    // WHEN its result is asked for
    let (status, result) = app.get(&format!("/v1/jobs/{id}/result")).await;

    // THEN the answer says it is not ready and has no result
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        result,
        json!({ "id": id, "status": "queued", "ready": false, "result": null, "error": null })
    );
}

#[tokio::test]
async fn tenants_see_only_their_own_jobs() {
    // GIVEN a job submitted by tenant "acme" with an idempotency key
    let app = spawn_app(&[]).await;
    let as_tenant = |tenant: &str, request: reqwest::RequestBuilder| {
        request.bearer_auth(crate::helpers::token(tenant, &["submitter"]))
    };
    let submit = json!({ "type": "noop", "idempotency_key": "order-1" });
    let (status, acme_job) = app
        .send(as_tenant(
            "acme",
            app.client.post(app.url("/v1/jobs")).json(&submit),
        ))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let acme_id = acme_job["id"].as_str().unwrap();

    // WHEN tenant "globex" reads, lists, counts, cancels and submits with the same key
    let read = app
        .send(as_tenant(
            "globex",
            app.client.get(app.url(&format!("/v1/jobs/{acme_id}"))),
        ))
        .await;
    let cancel = app
        .send(as_tenant(
            "globex",
            app.client
                .post(app.url(&format!("/v1/jobs/{acme_id}/cancel"))),
        ))
        .await;
    let (_, listed) = app
        .send(as_tenant("globex", app.client.get(app.url("/v1/jobs"))))
        .await;
    let (_, stats) = app
        .send(as_tenant("globex", app.client.get(app.url("/v1/stats"))))
        .await;
    let (status, globex_job) = app
        .send(as_tenant(
            "globex",
            app.client.post(app.url("/v1/jobs")).json(&submit),
        ))
        .await;

    // THEN acme's job does not exist for globex, and the same key makes globex a job of its own
    assert_error(&read, StatusCode::NOT_FOUND, "job_not_found", Some("id"));
    assert_error(&cancel, StatusCode::NOT_FOUND, "job_not_found", Some("id"));
    assert_eq!(listed["jobs"], json!([]), "{listed}");
    assert_eq!(stats["total"], 0, "{stats}");
    assert_eq!(status, StatusCode::ACCEPTED, "{globex_job}");
    assert_ne!(globex_job["id"], acme_job["id"]);
    assert_eq!(globex_job["tenant"], "globex");

    // AND acme's job is untouched by globex's cancel
    let (status, acme_now) = app
        .send(as_tenant(
            "acme",
            app.client.get(app.url(&format!("/v1/jobs/{acme_id}"))),
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(acme_now["status"], "cancelled", "{acme_now}");
}

#[tokio::test]
async fn a_delayed_job_does_not_start_before_its_delay() {
    // GIVEN a runtime
    let app = spawn_app(&[]).await;
    // WHEN a job is submitted with a 1 s delay
    let id = app
        .submit_new(&json!({ "type": "noop", "delay_seconds": 1 }))
        .await;
    // THEN it waits queued, then runs, starting no earlier than its run time
    let waiting = app.get_job(&id).await;
    assert_eq!(waiting["status"], "queued");
    let done = app
        .wait_for_status(&id, status_is("succeeded"), Duration::from_secs(10))
        .await;
    let at = |f: &str| chrono::DateTime::parse_from_rfc3339(done[f].as_str().unwrap()).unwrap();
    // (A worker takes a job up to 20 ms before its time, the tolerance it allows for the
    // message's delay rounding: `EARLY_TOLERANCE` in the worker.)
    assert!(
        at("started_at") + chrono::Duration::milliseconds(20) >= at("run_at"),
        "{done:#}"
    );
    assert!(
        at("run_at") - at("created_at") >= chrono::Duration::milliseconds(999),
        "{done:#}"
    );
}
