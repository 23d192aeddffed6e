//! Debounce: fifty submits with one key within a 3 s window run one job, once, with the last
//! payload, and it runs the window after the last submit; a submit after it started makes a new
//! job. Errors name the field.

use crate::helpers::spawn_app;
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

fn debounced(key: &str, n: u64) -> serde_json::Value {
    json!({
        "type": "test.echo",
        "payload": { "n": n },
        "debounce": { "key": key, "window_seconds": 3 },
    })
}

#[tokio::test]
async fn fifty_submits_with_one_key_in_the_window_run_once_with_the_last_payload() {
    let app = spawn_app(&[]).await;
    // GIVEN 50 submits with one key, one after the other (each well within the 3 s window of
    // the one before)
    let mut ids = vec![];
    let mut last_submit = chrono::Utc::now();
    for n in 0..50 {
        last_submit = chrono::Utc::now();
        let (status, job) = app.submit(&debounced("report", n)).await;
        let expected = if n == 0 {
            StatusCode::ACCEPTED
        } else {
            StatusCode::OK
        };
        assert_eq!(status, expected, "submit {n}: {job}");
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    // THEN every submit answered the same job
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    // AND it runs once, with the last payload, no sooner than the window after the last submit
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let job = loop {
        let (status, job) = app.get(&format!("/v1/jobs/{}", ids[0])).await;
        if status == StatusCode::OK && job["status"] == "succeeded" {
            break job;
        }
        assert!(tokio::time::Instant::now() < deadline, "not run: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(job["result"]["payload"], json!({ "n": 49 }), "{job}");
    assert_eq!(job["attempt"], 1, "{job}");
    let started = chrono::DateTime::parse_from_rfc3339(job["started_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    assert!(
        started >= last_submit + chrono::Duration::milliseconds(2900),
        "started {started}, last submit {last_submit}"
    );
    let (_, page) = app.get("/v1/jobs?type=test.echo").await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1, "{page}");
    // AND a submit with the key after the job ran makes a new one
    let (status, next) = app.submit(&debounced("report", 50)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{next}");
    assert_ne!(next["id"], job["id"]);
}

#[tokio::test]
async fn a_bad_debounce_is_refused_naming_the_field() {
    let app = spawn_app(&[]).await;
    let cases = [
        (json!({ "key": "k" }), "debounce.window_seconds"),
        (json!({ "key": "", "window_seconds": 2 }), "debounce.key"),
        (
            json!({ "key": "k", "window_seconds": -1 }),
            "debounce.window_seconds",
        ),
        (
            json!({ "key": "k", "window_seconds": 5, "max_wait_seconds": 2 }),
            "debounce.max_wait_seconds",
        ),
        (
            json!({ "key": "k", "window_seconds": 2, "every": 1 }),
            "debounce.every",
        ),
        (json!("k"), "debounce"),
    ];
    for (debounce, field) in cases {
        let (status, body) = app
            .submit(&json!({ "type": "noop", "debounce": debounce }))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{debounce}: {body}");
        assert_eq!(body["error"]["field"], field, "{debounce}: {body}");
    }
    let (status, body) = app
        .submit(&json!({
            "type": "noop",
            "idempotency_key": "once",
            "debounce": { "key": "k", "window_seconds": 2 },
        }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "idempotency_key", "{body}");
}

#[tokio::test]
async fn a_debounced_replacement_counts_against_the_tenants_submit_rate() {
    // GIVEN tenants allowed 2 submissions a second
    let app = spawn_app(&[("CONVEYOR_TENANT_SUBMITS_PER_SECOND", "2")]).await;
    // WHEN 6 debounced submits with one key come one after the other (in at most two of the
    // rate's one-second windows), each but the first replacing the waiting job
    // (on a machine too busy to answer 6 submits within two seconds that does not hold: the
    // burst is made again with another key, a few times at most)
    let mut answers = vec![];
    for round in 0..4 {
        let began = std::time::Instant::now();
        answers.clear();
        for n in 0..6 {
            answers.push(app.submit(&debounced(&format!("burst-{round}"), n)).await);
        }
        if began.elapsed() < std::time::Duration::from_millis(1500) {
            break;
        }
    }
    // THEN some are refused as past the rate, as any submit past it is: a replacement is a
    // submission too
    let refused: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(refused.len() >= 2, "{answers:?}");
    for (_, body) in &refused {
        assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    }
}
