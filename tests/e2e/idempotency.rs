//! Idempotency keys, in the body or the `Idempotency-Key` header: a second submit with the same
//! key answers 200 with the job the first one made, and no second job exists.

use crate::helpers::spawn_app;
use reqwest::StatusCode;
use serde_json::json;
use tokio::task::JoinSet;

#[tokio::test]
async fn the_same_key_in_the_body_yields_the_same_job() {
    // GIVEN a job submitted with an idempotency key
    let app = spawn_app(&[]).await;
    let submit = json!({ "type": "noop", "idempotency_key": "order-42:charge" });
    let (first_status, first) = app.submit(&submit).await;

    // WHEN the same submit is sent again
    let (second_status, second) = app.submit(&submit).await;

    // THEN the first is accepted as new (202), the second answers 200 with the same job
    assert_eq!(first_status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(second_status, StatusCode::OK, "{second}");
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second["idempotency_key"], "order-42:charge");

    // AND only one job exists
    let stats = app.settled_stats().await;
    assert_eq!(stats["total"], 1, "{stats}");
    assert_eq!(app.list("").await["jobs"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_idempotency_key_header_works_like_the_body_field() {
    // GIVEN a job submitted with an Idempotency-Key header
    let app = spawn_app(&[]).await;
    let with_header = |key: &str| {
        app.client
            .post(app.url("/v1/jobs"))
            .header("Idempotency-Key", key.to_string())
            .json(&json!({ "type": "noop" }))
    };
    let (first_status, first) = app.send(with_header("nightly-report-2030-01-01")).await;

    // WHEN the same key comes again in the header, then in the body, and another key in the header
    let (again_status, again) = app.send(with_header("nightly-report-2030-01-01")).await;
    let (body_status, in_body) = app
        .submit(&json!({ "type": "noop", "idempotency_key": "nightly-report-2030-01-01" }))
        .await;
    let (other_status, other) = app.send(with_header("nightly-report-2030-01-02")).await;

    // THEN the same key always answers 200 with the first job; the other key makes a new job
    assert_eq!(first_status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["idempotency_key"], "nightly-report-2030-01-01");
    assert_eq!(again_status, StatusCode::OK, "{again}");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(body_status, StatusCode::OK, "{in_body}");
    assert_eq!(in_body["id"], first["id"]);
    assert_eq!(other_status, StatusCode::ACCEPTED, "{other}");
    assert_ne!(other["id"], first["id"]);

    // AND two jobs exist
    assert_eq!(app.settled_stats().await["total"], 2);
}

#[tokio::test]
async fn concurrent_submits_with_one_key_make_one_job() {
    // GIVEN a running app
    let app = spawn_app(&[]).await;

    // WHEN eight submits with the same key are sent at once
    let mut submits = JoinSet::new();
    for _ in 0..8 {
        let request = app
            .client
            .post(app.url("/v1/jobs"))
            .json(&json!({ "type": "noop", "idempotency_key": "burst" }));
        submits.spawn(async move {
            let response = request.send().await.expect("the API answers");
            let status = response.status();
            let job: serde_json::Value = response.json().await.expect("a job");
            (status, job["id"].as_str().expect("an id").to_string())
        });
    }
    let answers = submits.join_all().await;

    // THEN exactly one is accepted as new, and all name the same job
    let created = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::ACCEPTED)
        .count();
    assert_eq!(created, 1, "{answers:?}");
    assert!(
        answers.iter().all(
            |(status, id)| [StatusCode::ACCEPTED, StatusCode::OK].contains(status)
                && *id == answers[0].1
        ),
        "{answers:?}"
    );

    // AND one job exists
    assert_eq!(app.settled_stats().await["total"], 1);
}

#[tokio::test]
async fn an_unreadable_idempotency_key_header_is_refused_not_ignored() {
    // GIVEN a runtime
    let app = spawn_app(&[]).await;
    // WHEN a submit carries an Idempotency-Key header that is not printable ASCII
    let header = reqwest::header::HeaderValue::from_bytes(b"key-\xff").unwrap();
    let (status, body) = app
        .send(
            app.client
                .post(app.url("/v1/jobs"))
                .header("idempotency-key", header)
                .json(&json!({ "type": "noop" })),
        )
        .await;
    // THEN it is a 400 naming the header, and no job was made (retries would have duplicated it)
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "idempotency-key", "{body}");
    assert_eq!(app.settled_stats().await["total"], 0);
}

#[tokio::test]
async fn the_same_key_with_the_same_request_in_another_key_order_is_the_same_job() {
    // GIVEN a job submitted with a key
    let app = spawn_app(&[]).await;
    let first = json!({
        "type": "sleep",
        "payload": { "ms": 10, "note": { "a": 1, "b": [1, 2] } },
        "delay_seconds": 600,
        "idempotency_key": "same-request",
    });
    let (status, made) = app.submit(&first).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{made}");

    // WHEN the same request is sent again, its object keys in another order, the key in the
    // header instead of the body
    let again = r#"{"payload": {"note": {"b": [1, 2], "a": 1}, "ms": 10}, "delay_seconds": 600, "type": "sleep"}"#;
    let (status, answer) = app
        .send(
            app.client
                .post(app.url("/v1/jobs"))
                .header("content-type", "application/json")
                .header("idempotency-key", "same-request")
                .body(again),
        )
        .await;

    // THEN it is the first job, not a conflict
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["id"], made["id"]);
}
