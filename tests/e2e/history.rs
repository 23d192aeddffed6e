//! What ended per type and minute (`GET /v1/stats/history`), on both backends: the jobs that
//! succeeded and failed are counted in the minute they ended, with the p50 and p99 of their run
//! times; another tenant sees none of it.

use crate::helpers::{
    spawn_app, spawn_app_on_aws, token, wait_until_all_ended, TestApp, TestServer,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

/// A type's minutes added up: (succeeded, failed, the largest p50 and p99 seen).
fn totals(history: &Value, job_type: &str) -> (u64, u64, u64, u64) {
    history["types"][job_type]
        .as_array()
        .into_iter()
        .flatten()
        .fold((0, 0, 0, 0), |(s, f, p50, p99), m| {
            (
                s + m["succeeded"].as_u64().unwrap_or(0),
                f + m["failed"].as_u64().unwrap_or(0),
                p50.max(m["p50_ms"].as_u64().unwrap_or(0)),
                p99.max(m["p99_ms"].as_u64().unwrap_or(0)),
            )
        })
}

async fn counts_what_ended(app: TestApp) {
    // GIVEN five sleeps of 300 ms, a no-op, and two fetches of a server that always fails
    let server = TestServer::answering(&[], 500).await;
    let mut jobs: Vec<Value> = (0..5)
        .map(|_| json!({ "type": "sleep", "payload": { "ms": 300 } }))
        .collect();
    jobs.push(json!({ "type": "noop", "payload": {} }));
    for _ in 0..2 {
        jobs.push(json!({ "type": "http.fetch", "payload": { "url": server.url("/down") }, "max_attempts": 1 }));
    }
    app.submit_batch_new(&jobs).await;
    wait_until_all_ended(&app, "limit=100", 8, Duration::from_secs(60)).await;

    // WHEN the last hour's history is read (on AWS it is folded from the table's stream)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let history = loop {
        let (status, history) = app.get("/v1/stats/history?minutes=60").await;
        assert_eq!(status, StatusCode::OK, "{history}");
        let done = totals(&history, "sleep").0 == 5
            && totals(&history, "noop").0 == 1
            && totals(&history, "http.fetch").1 == 2;
        if done {
            break history;
        }
        assert!(tokio::time::Instant::now() < deadline, "{history:#}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    // THEN each type's ends are counted, and the sleeps' run times are where 300 ms falls
    assert_eq!(history["minutes"], 60);
    let (succeeded, failed, p50, p99) = totals(&history, "sleep");
    assert_eq!((succeeded, failed), (5, 0), "{history:#}");
    // (a run of 300 ms falls in the bucket up to 500 ms, or a later one on a busy machine: on
    // an emulator under the whole suite, its writes have taken tens of seconds)
    assert!(
        (500..=60_000).contains(&p50) && (p50..=60_000).contains(&p99),
        "{history:#}"
    );
    assert_eq!(totals(&history, "http.fetch").0, 0, "{history:#}");
    // AND another tenant sees none of it, and a bad window is named
    let (status, theirs) = app
        .as_caller(Some(&token("globex", &["reader"])))
        .get("/v1/stats/history")
        .await;
    assert_eq!(
        (status, &theirs["types"]),
        (StatusCode::OK, &json!({})),
        "{theirs}"
    );
    let (status, bad) = app.get("/v1/stats/history?minutes=0").await;
    assert_eq!(
        (status, bad["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("minutes")),
        "{bad}"
    );
}

#[tokio::test]
async fn the_history_counts_what_ended_per_type_and_minute_with_run_times() {
    counts_what_ended(spawn_app(&[]).await).await;
}

#[tokio::test]
async fn the_history_counts_what_ended_on_the_aws_backend() {
    counts_what_ended(spawn_app_on_aws(&[]).await).await;
}
