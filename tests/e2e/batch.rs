//! Batch submit: a batch with three invalid jobs creates the others and names each refusal
//! (index, status, field); with `atomic` it creates nothing; the same batch again creates
//! nothing new; an atomic batch of valid jobs is created whole; and every created job runs.

use crate::helpers::{on_aws, spawn_app};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn a_batch_creates_its_valid_jobs_names_each_refusal_and_is_idempotent() {
    // (a request may take 2 minutes, not 30 s: an emulator busy with the suite has taken longer
    // over a batch of keyed jobs, a transaction each)
    let app = spawn_app(&[("CONVEYOR_HTTP_TIMEOUT", "120s")]).await;
    // GIVEN a batch of 1,000 jobs (250 on an emulator, whose transactions are slow: still
    // three of DynamoDB's 100-item transactions), each with its own idempotency key, three of
    // them invalid
    let n: usize = if on_aws() { 250 } else { 1000 };
    let bad = [
        (10, "type"),
        (n / 2, "max_attempts"),
        (n - 1, "idempotency_key"),
    ];
    let jobs: Vec<Value> = (0..n)
        .map(|i| {
            let mut job = json!({
                "type": "noop", "payload": { "i": i }, "idempotency_key": format!("b-{i}"),
            });
            match bad.iter().find(|b| b.0 == i).map(|b| b.1) {
                Some("type") => job["type"] = json!("no.such.type"),
                Some("max_attempts") => job["max_attempts"] = json!(0),
                Some(_) => job["idempotency_key"] = json!("schedule:mine"),
                None => {}
            }
            job
        })
        .collect();
    let submit = |atomic: bool| {
        let body = json!({ "jobs": jobs, "atomic": atomic });
        let app = &app;
        async move {
            app.send(
                app.client
                    .post(app.url("/v1/jobs/batch"))
                    .timeout(Duration::from_secs(120))
                    .json(&body),
            )
            .await
        }
    };
    let refusals_are_named = |results: &Value| {
        for (index, field) in bad {
            let r = results
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["index"] == index)
                .unwrap_or_else(|| panic!("no result for {index}: {results}"));
            assert_eq!(r["status"], 400, "{r}");
            assert_eq!(r["error"]["field"], field, "{r}");
        }
    };
    // WHEN it is sent atomic: a 400 naming the three, and nothing created
    let (status, body) = submit(true).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_batch", "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 3, "{body}");
    refusals_are_named(&body["results"]);
    let (_, page) = app.get("/v1/jobs?limit=5").await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 0, "{page}");
    // WHEN it is sent as it is: the valid ones are created, in order, and the three refused
    let (status, first) = submit(false).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["created"], n - 3, "{}", first["created"]);
    assert_eq!(first["refused"], 3);
    let results = first["results"].as_array().unwrap();
    assert_eq!(results.len(), n);
    assert!(results.iter().enumerate().all(|(i, r)| r["index"] == i));
    refusals_are_named(&first["results"]);
    // AND sent again, it creates nothing: each key answers its job
    let (status, again) = submit(false).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["created"], 0);
    assert_eq!(again["existing"], n - 3);
    for (a, b) in results.iter().zip(again["results"].as_array().unwrap()) {
        assert_eq!(a["job"]["id"], b["job"]["id"]);
    }
    // AND every created job runs once
    let stats = app
        .stats_when_within(Duration::from_secs(120), |s| {
            s["by_status"]["succeeded"] == n as u64 - 3
        })
        .await;
    assert_eq!(stats["by_status"]["succeeded"], n as u64 - 3, "{stats}");
    // AND an atomic batch of valid jobs is created whole
    let valid: Vec<Value> = (0..20)
        .map(|i| json!({ "type": "noop", "idempotency_key": format!("whole-{i}") }))
        .collect();
    let (status, whole) = app
        .send(
            app.client
                .post(app.url("/v1/jobs/batch"))
                .json(&json!({ "jobs": valid, "atomic": true })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{whole}");
    assert_eq!(whole["created"], 20, "{whole}");
}

#[tokio::test]
async fn a_bad_batch_is_refused_naming_the_field() {
    let app = spawn_app(&[]).await;
    let too_many: Vec<Value> = (0..1001).map(|_| json!({ "type": "noop" })).collect();
    for (body, field) in [
        (json!({}), "jobs"),
        (json!({ "jobs": [] }), "jobs"),
        (json!({ "jobs": too_many }), "jobs"),
        (
            json!({ "jobs": [{ "type": "noop" }], "atomic": "yes" }),
            "atomic",
        ),
        (json!({ "jobs": [{ "type": "noop" }], "also": 1 }), "also"),
    ] {
        let (status, answer) = app
            .send(app.client.post(app.url("/v1/jobs/batch")).json(&body))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    // A debounced job is submitted on its own, not in a batch
    let (status, answer) = app
        .send(app.client.post(app.url("/v1/jobs/batch")).json(&json!({
            "jobs": [{ "type": "noop", "debounce": { "key": "k", "window_seconds": 1 } }],
        })))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["results"][0]["error"]["field"], "debounce",
        "{answer}"
    );
}
