//! `scan.domain`, the shipped workflow, end to end: resolve, one `http.fetch` per page (to a
//! scripted server on 127.0.0.1), and a summary that depends on the fetches and reads them.

use crate::helpers::{spawn_app, spawn_app_on_aws, status_is, TestApp, TestServer};
use serde_json::json;
use std::time::Duration;

const WITHIN: Duration = Duration::from_secs(90);

async fn a_scan_fetches_each_page_and_summarises_them(app: &TestApp) {
    // GIVEN a site that answers 200, then 404 for its second page
    let site = TestServer::answering(&[200, 404], 200).await;
    let port: u64 = site.url("").rsplit(':').next().unwrap().parse().unwrap();
    // WHEN a scan of it is submitted
    let scan = app
        .submit_new(&json!({ "type": "scan.domain", "payload": {
            "domain": "127.0.0.1", "scheme": "http", "port": port,
            "paths": ["/", "/robots.txt", "/about"] } }))
        .await;
    // THEN it resolves, fans out three fetches and a summary, in three recorded steps
    let done = app
        .wait_for_status(&scan, status_is("succeeded"), WITHIN)
        .await;
    assert_eq!(done["result"]["addresses"], json!(["127.0.0.1"]), "{done}");
    assert_eq!(
        done["result"]["pages"].as_array().unwrap().len(),
        3,
        "{done}"
    );
    assert_eq!(done["progress"]["percent"], 100, "{done}");
    // AND the summary runs once the fetches have ended, with each page's answer
    let summary = done["result"]["summary"].as_str().unwrap();
    let summary = app
        .wait_for_status(summary, status_is("succeeded"), WITHIN)
        .await;
    let result = &summary["result"];
    assert_eq!(result["domain"], "127.0.0.1", "{summary}");
    let statuses: Vec<u64> = result["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].as_u64().unwrap())
        .collect();
    let mut sorted = statuses.clone();
    sorted.sort();
    assert_eq!(sorted, vec![200, 200, 404], "{summary}");
    assert_eq!(result["reachable"], 2, "{summary}");
    assert_eq!(site.request_count(), 3);
    // AND a scan of something that is not a host name is refused at submit
    let (status, body) = app
        .submit(&json!({ "type": "scan.domain", "payload": { "domain": "a b" } }))
        .await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "payload.domain");
}

#[tokio::test]
async fn a_domain_scan_fetches_its_pages_and_summarises_them() {
    a_scan_fetches_each_page_and_summarises_them(&spawn_app(&[]).await).await;
}

#[tokio::test]
async fn a_domain_scan_on_the_aws_backend() {
    a_scan_fetches_each_page_and_summarises_them(&spawn_app_on_aws(&[]).await).await;
}
