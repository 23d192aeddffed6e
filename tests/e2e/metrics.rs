//! What operators graph: `GET /metrics` in Prometheus's text format, and the runtime's logs as
//! JSON lines when they go to a file.

use crate::helpers::{on_aws, spawn_app, status_is, token, TENANT};
use serde_json::json;
use std::time::Duration;

/// The value of the sample `series` (name and labels exactly as written) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_count_jobs_requests_and_run_time_for_an_operator() {
    // GIVEN a job that succeeded and one that waits
    let app = spawn_app(&[]).await;
    let id = app.submit_new(&json!({ "type": "noop" })).await;
    app.wait_for_status(&id, status_is("succeeded"), Duration::from_secs(30))
        .await;
    app.submit_new(&json!({ "type": "noop", "delay_seconds": 600 }))
        .await;

    // WHEN an operator reads /metrics (its figures are every tenant's: a tenant's admin may
    // not)
    let tenant_admin = app.as_caller(Some(&token(TENANT, &["admin"])));
    let refused = tenant_admin
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let admin = app.as_caller(Some(&token(TENANT, &["operator"])));
    let response = admin.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();

    // THEN it has the job's changes, the submits and their latency, the run time and the
    // HTTP requests by route and code
    let changes = |status: &str| {
        sample(
            &text,
            &format!("conveyor_job_changes_total{{type=\"noop\",status=\"{status}\"}}"),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(changes("succeeded"), 1.0, "{text}");
    assert!(changes("queued") >= 2.0, "{text}");
    assert_eq!(
        sample(&text, "conveyor_submit_seconds_count"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "conveyor_http_requests_total{route=\"/v1/jobs\",method=\"POST\",code=\"202\"}"
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "conveyor_job_run_seconds_count{type=\"noop\",outcome=\"succeeded\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(text.contains("# TYPE conveyor_submit_seconds histogram"));
    // AND, on the embedded backend, the stored jobs and the queue holding the waiting one
    if !on_aws() {
        assert_eq!(
            sample(&text, "conveyor_jobs{type=\"noop\",status=\"queued\"}"),
            Some(1.0),
            "{text}"
        );
        let prefix = app.setting("CONVEYOR_QUEUE_PREFIX").unwrap_or("conveyor-");
        assert_eq!(
            sample(
                &text,
                &format!("conveyor_queue_messages{{queue=\"{prefix}noop\"}}")
            ),
            Some(1.0),
            "{text}"
        );
    }

    // AND a caller who is not an admin is refused
    let reader = app.as_caller(Some(&token(TENANT, &["reader"])));
    let refused = reader.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(refused.status(), 403);
}

#[tokio::test]
async fn logs_written_to_a_file_are_json_lines_without_escape_codes() {
    // GIVEN a runtime whose logs go to a file (the suite's harness), ours at the debug level
    let app = spawn_app(&[("RUST_LOG", "warn,shared=debug,local=debug")]).await;
    let id = app.submit_new(&json!({ "type": "noop" })).await;
    app.wait_for_status(&id, status_is("succeeded"), Duration::from_secs(30))
        .await;

    // THEN every line of it is a JSON object with a level and a message, and no line has a
    // terminal escape code
    let log = std::fs::read_to_string(app.log_path()).unwrap();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("WARNING: DEV MODE"))
        .collect();
    assert!(!lines.is_empty());
    for line in lines {
        assert!(!line.contains('\u{1b}'), "{line}");
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
}
