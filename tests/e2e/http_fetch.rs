//! `http.fetch` against a local test server: the answer becomes the result.

use crate::helpers::{spawn_app, status_is, TestServer, SERVER_BODY};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn fetch_records_status_size_and_content_type() {
    // GIVEN a server answering 200 with a short text body
    let server = TestServer::ok().await;
    let app = spawn_app(&[]).await;
    let url = server.url("/page?q=1");

    // WHEN an http.fetch job for it is submitted
    let id = app
        .submit_new(&json!({ "type": "http.fetch", "payload": { "url": url } }))
        .await;

    // THEN it succeeds with what the server answered
    let job = app
        .wait_for_status(&id, status_is("succeeded"), Duration::from_secs(10))
        .await;
    let result = &job["result"];
    assert_eq!(result["url"], url.as_str(), "{job}");
    assert_eq!(result["status"], 200, "{job}");
    assert_eq!(result["bytes"], SERVER_BODY.len(), "{job}");
    assert_eq!(result["truncated"], false, "{job}");
    assert!(result["elapsed_ms"].is_u64(), "{job}");
    assert!(
        result["content_type"]
            .as_str()
            .is_some_and(|c| c.starts_with("text/plain")),
        "{job}"
    );
    assert_eq!(job["attempt"], 1);

    // AND the server got exactly one GET for that path
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].path, "/page");
}

#[tokio::test]
async fn a_not_found_answer_is_a_result_not_a_failure() {
    // GIVEN a server answering 404
    let server = TestServer::answering(&[], 404).await;
    let app = spawn_app(&[]).await;

    // WHEN an http.fetch job for it is submitted
    let id = app
        .submit_new(&json!({ "type": "http.fetch", "payload": { "url": server.url("/gone") } }))
        .await;

    // THEN it succeeds on the first attempt with status 404 in its result (no retry)
    let job = app
        .wait_for_status(&id, status_is("succeeded"), Duration::from_secs(10))
        .await;
    assert_eq!(job["result"]["status"], 404, "{job}");
    assert_eq!(job["attempt"], 1);
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn a_body_over_max_bytes_is_cut_and_marked_truncated() {
    // GIVEN a server whose answer is longer than 5 bytes
    let server = TestServer::ok().await;
    let app = spawn_app(&[]).await;

    // WHEN an http.fetch job reads at most 5 bytes of it
    let id = app
        .submit_new(&json!({
            "type": "http.fetch",
            "payload": { "url": server.url("/big"), "max_bytes": 5 },
        }))
        .await;

    // THEN it succeeds, counting 5 bytes and saying the body was cut
    let job = app
        .wait_for_status(&id, status_is("succeeded"), Duration::from_secs(10))
        .await;
    assert_eq!(job["result"]["bytes"], 5, "{job}");
    assert_eq!(job["result"]["truncated"], true, "{job}");
}
