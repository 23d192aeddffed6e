//! Replay, on the runtime's backend: a failed job replayed with an edited payload runs as a new
//! job of its type and options, each naming the other; replayed as it was, it keeps its
//! payload; a payload its type refuses names the field; another tenant's job is a 404.

use crate::helpers::{assert_error, spawn_app, status_is, token, TestServer};
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn a_failed_job_replayed_with_an_edited_payload_succeeds_and_each_names_the_other() {
    // GIVEN a webhook job that failed for good against a receiver that refuses it
    let refusing = TestServer::answering(&[], 400).await;
    let accepting = TestServer::ok().await;
    let app = spawn_app(&[]).await;
    let failed = app
        .submit_new(&json!({
            "type": "webhook.deliver",
            "payload": { "url": refusing.url("/hook"), "body": { "n": 1 } },
            "max_attempts": 4,
            "priority": 7,
        }))
        .await;
    app.wait_for_status(&failed, status_is("failed"), Duration::from_secs(20))
        .await;

    // WHEN it is replayed with the receiver's address fixed
    let fixed = json!({ "url": accepting.url("/hook"), "body": { "n": 1 } });
    let (status, new) = app
        .send(
            app.client
                .post(app.url(&format!("/v1/jobs/{failed}/replay")))
                .json(&json!({ "payload": fixed })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{new}");
    let replay = new["id"].as_str().unwrap().to_string();
    // THEN a new job of its type and options runs with the new payload, and succeeds
    assert_ne!(replay, failed);
    assert_eq!(new["replay_of"], failed.as_str(), "{new}");
    assert_eq!(new["type"], "webhook.deliver");
    assert_eq!(
        (&new["priority"], &new["max_attempts"]),
        (&json!(7), &json!(4))
    );
    assert_eq!(new["payload"], fixed);
    let done = app
        .wait_for_status(&replay, status_is("succeeded"), Duration::from_secs(20))
        .await;
    assert_eq!(done["replay_of"], failed.as_str(), "{done}");
    assert_eq!(accepting.request_count(), 1);
    // AND the old job stays as it ended, naming its replay
    let old = app.get_job(&failed).await;
    assert_eq!(old["status"], "failed", "{old}");
    assert_eq!(old["replayed_as"], json!([replay]), "{old}");

    // WHEN it is replayed again with no body
    let (status, again) = app.post(&format!("/v1/jobs/{failed}/replay")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    // THEN the new job has the old payload, and the old job names both replays in order
    assert_eq!(again["payload"]["url"], refusing.url("/hook"), "{again}");
    let old = app.get_job(&failed).await;
    assert_eq!(old["replayed_as"], json!([replay, again["id"]]), "{old}");
    // AND the replay is in the audit trail with its job
    let (_, trail) = app
        .as_caller(Some(&token("default", &["admin"])))
        .get("/v1/audit")
        .await;
    assert!(
        trail["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "job.replay" && e["job_id"] == json!(replay)),
        "{trail}"
    );
}

#[tokio::test]
async fn a_bad_replay_names_what_is_wrong_and_makes_nothing() {
    let app = spawn_app(&[]).await;
    let id = app
        .submit_new(&json!({ "type": "sleep", "payload": { "ms": 10 } }))
        .await;
    let replay = |body: serde_json::Value| {
        let request = app
            .client
            .post(app.url(&format!("/v1/jobs/{id}/replay")))
            .json(&body);
        app.send(request)
    };
    // A payload its type refuses names the payload's field
    let answer = replay(json!({ "payload": { "ms": "soon" } })).await;
    assert_error(
        &answer,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("payload.ms"),
    );
    // A field a replay does not take is named
    let answer = replay(json!({ "payload": { "ms": 1 }, "priority": 5 })).await;
    assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{}", answer.1);
    // Another tenant's job is a missing one; a reader may not replay
    let theirs = app
        .as_caller(Some(&token("globex", &["submitter"])))
        .post(&format!("/v1/jobs/{id}/replay"))
        .await;
    assert_error(&theirs, StatusCode::NOT_FOUND, "job_not_found", Some("id"));
    let reader = app
        .as_caller(Some(&token("default", &["reader"])))
        .post(&format!("/v1/jobs/{id}/replay"))
        .await;
    assert_error(&reader, StatusCode::FORBIDDEN, "forbidden", None);
    // AND none of these made a job, nor marked the original
    let page = app.list("").await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1, "{page}");
    assert!(app.get_job(&id).await.get("replayed_as").is_none());
}
