//! Batches as objects (`POST /v1/jobs/batch {"batch": {…}}`): live counts by status, callbacks
//! submitted exactly once when every member has ended, members added by a member and listed
//! page by page, cancel.
//! `test.count` as the callback appends a line per run to a file outside the store, so the
//! callback's runs are counted, not inferred.

use crate::helpers::{spawn_app, spawn_app_on_aws, status_is, token, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

const WITHIN: Duration = Duration::from_secs(90);

async fn submit_batch(app: &TestApp, jobs: Vec<Value>, batch: Value) -> Value {
    let (status, body) = app
        .send(
            app.client
                .post(app.url("/v1/jobs/batch"))
                .json(&json!({ "jobs": jobs, "batch": batch })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["batch"]["id"].is_string(), "{body}");
    body
}

/// The batch once it has ended (its callbacks submitted).
async fn finished(app: &TestApp, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let (status, batch) = app.get(&format!("/v1/batches/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{batch}");
        if batch["status"] == "finished" {
            return batch;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "batch {id} did not end: {batch}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs of each job id, from the file `test.count` appends to.
fn counted(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("runs"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(' ').next().unwrap_or_default().to_string())
        .collect()
}

async fn on_complete_runs_once_when_the_last_two_members_end_together(
    app: &TestApp,
    dir: &std::path::Path,
) {
    // GIVEN batches of four quick members and two that wait for each other (a barrier), so the
    // last two members of each end at the same moment
    let mut batches = vec![];
    for round in 0..4 {
        let mut jobs: Vec<Value> = (0..4)
            .map(|i| json!({ "type": "test.echo", "payload": { "i": i } }))
            .collect();
        for _ in 0..2 {
            jobs.push(json!({ "type": "test.barrier", "payload": { "group": format!("r{round}"), "n": 2 } }));
        }
        let body = submit_batch(
            app,
            jobs,
            json!({ "on_complete": { "type": "test.count", "payload": { "round": round } },
                    "on_success": { "type": "test.echo", "payload": { "round": round } } }),
        )
        .await;
        assert_eq!(body["created"], 6, "{body}");
        assert_eq!(body["batch"]["total"], 6, "{body}");
        batches.push(body["batch"]["id"].as_str().unwrap().to_string());
    }

    // WHEN every member has ended
    let mut callbacks = vec![];
    for id in &batches {
        let batch = finished(app, id).await;
        // THEN the batch counts six succeeded, none pending, and names its two callbacks
        assert_eq!(batch["total"], 6, "{batch}");
        assert_eq!(batch["counts"]["succeeded"], 6, "{batch}");
        assert_eq!(batch["counts"]["pending"], 0, "{batch}");
        assert_eq!(batch["progress"], 100, "{batch}");
        let on_complete = batch["callbacks"]["on_complete"]
            .as_str()
            .expect("on_complete ran")
            .to_string();
        assert!(batch["callbacks"]["on_success"].is_string(), "{batch}");
        let done = app
            .wait_for_status(&on_complete, status_is("succeeded"), WITHIN)
            .await;
        assert_eq!(done["payload"]["batch"]["succeeded"], 6, "{done}");
        callbacks.push(on_complete);
    }
    // AND each on_complete ran exactly once, and no other was ever made (counted once the
    // runtime has nothing left to run)
    app.wait_until_idle(WITHIN).await;
    let runs = counted(dir);
    for id in &callbacks {
        assert_eq!(
            runs.iter().filter(|r| *r == id).count(),
            1,
            "{id}: {runs:?}"
        );
    }
    assert_eq!(runs.len(), batches.len(), "{runs:?}");
    let listed = app.list("type=test.count&limit=100").await;
    assert_eq!(
        listed["jobs"].as_array().unwrap().len(),
        batches.len(),
        "{listed}"
    );
}

async fn a_failed_member_ends_the_batch_without_on_success(app: &TestApp) {
    // GIVEN a batch with a member that fails for good
    let body = submit_batch(
        app,
        vec![
            json!({ "type": "test.echo", "payload": {} }),
            json!({ "type": "http.fetch", "payload": { "url": "http://127.0.0.1:9/" }, "max_attempts": 1 }),
        ],
        json!({ "on_complete": { "type": "test.echo", "payload": { "then": "report" } },
                "on_success": { "type": "test.echo", "payload": {} } }),
    )
    .await;
    // WHEN it ends
    let batch = finished(app, body["batch"]["id"].as_str().unwrap()).await;
    // THEN it counts the failure, runs on_complete with the counts, and not on_success
    assert_eq!(batch["counts"]["succeeded"], 1, "{batch}");
    assert_eq!(
        batch["counts"]["dead"].as_u64().unwrap() + batch["counts"]["failed"].as_u64().unwrap(),
        1,
        "{batch}"
    );
    assert!(batch["callbacks"]["on_success"].is_null(), "{batch}");
    let report = batch["callbacks"]["on_complete"].as_str().unwrap();
    let done = app
        .wait_for_status(report, status_is("succeeded"), WITHIN)
        .await;
    assert_eq!(done["result"]["payload"]["then"], "report", "{done}");
    assert_eq!(done["result"]["payload"]["batch"]["total"], 2, "{done}");
}

async fn a_member_adds_members_before_it_ends(app: &TestApp) {
    // GIVEN a batch whose one member adds three more to it as it runs
    let body = submit_batch(
        app,
        vec![json!({ "type": "test.fanout", "payload": { "n": 3 } })],
        json!({ "on_complete": { "type": "test.echo", "payload": {} } }),
    )
    .await;
    assert_eq!(body["batch"]["total"], 1, "{body}");
    // WHEN they have all ended
    let batch = finished(app, body["batch"]["id"].as_str().unwrap()).await;
    // THEN the batch counted all four, and its callback ran after the last of them
    assert_eq!(batch["total"], 4, "{batch}");
    assert_eq!(batch["counts"]["succeeded"], 4, "{batch}");
    let callback = batch["callbacks"]["on_complete"].as_str().unwrap();
    let done = app
        .wait_for_status(callback, status_is("succeeded"), WITHIN)
        .await;
    assert_eq!(done["result"]["payload"]["batch"]["total"], 4, "{done}");
}

async fn a_batch_can_be_cancelled(app: &TestApp) {
    // GIVEN a batch of three long jobs
    let body = submit_batch(
        app,
        (0..3)
            .map(|_| json!({ "type": "sleep", "payload": { "ms": 60000 } }))
            .collect(),
        json!({ "on_complete": { "type": "test.echo", "payload": {} } }),
    )
    .await;
    let id = body["batch"]["id"].as_str().unwrap().to_string();
    // WHEN it is cancelled
    let (status, job) = app.post(&format!("/v1/batches/{id}/cancel")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["type"], "conveyor.bulk");
    // THEN every member ends cancelled, and the batch ends with them
    let batch = finished(app, &id).await;
    assert_eq!(batch["counts"]["cancelled"], 3, "{batch}");
    assert!(batch["callbacks"]["on_complete"].is_string(), "{batch}");
    // AND an unknown batch is a 404
    let (status, body) = app.get("/v1/batches/01J00000000000000000000000").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "batch_not_found");
}

/// `quick` members and a fan-out of three, read `per` a page.
async fn a_batchs_members_are_listed_page_by_page_as_they_are(
    app: &TestApp,
    quick: usize,
    per: usize,
) {
    // GIVEN a batch of quick members and one that adds three more as it runs
    let mut jobs: Vec<Value> = (0..quick)
        .map(|i| json!({ "type": "noop", "payload": { "i": i } }))
        .collect();
    jobs.push(json!({ "type": "test.fanout", "payload": { "n": 3 } }));
    let body = submit_batch(app, jobs, json!({})).await;
    let id = body["batch"]["id"].as_str().unwrap().to_string();
    let submitted: Vec<Value> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["job"]["id"].clone())
        .collect();
    let batch = finished(app, &id).await;
    let total = quick + 4;
    assert_eq!(batch["total"], total, "{batch}");

    // WHEN its members are read a page at a time
    let mut listed: Vec<Value> = vec![];
    let mut pages = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("limit={per}&cursor={c}"),
            None => format!("limit={per}"),
        };
        let (status, page) = app.get(&format!("/v1/batches/{id}/jobs?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let jobs = page["jobs"].as_array().unwrap();
        pages.push(jobs.len());
        listed.extend(jobs.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }

    // THEN each member comes once: the batch's own in the order submitted, then the three the
    // fan-out added, each as it is now (ended), with the batch's id
    let full = total / per;
    let mut expected = vec![per; full];
    expected.extend(Some(total % per).filter(|n| *n > 0));
    assert_eq!(pages, expected);
    let ids: Vec<Value> = listed.iter().map(|j| j["id"].clone()).collect();
    assert_eq!(ids.len(), total);
    assert_eq!(ids[..quick + 1], submitted[..]);
    assert!(
        ids[quick + 1..].iter().all(|i| !submitted.contains(i)),
        "{ids:?}"
    );
    assert!(
        listed.iter().all(|j| j["status"] == "succeeded"),
        "{listed:?}"
    );
    let (_, added) = app
        .get(&format!("/v1/jobs/{}", ids[total - 1].as_str().unwrap()))
        .await;
    assert_eq!(added["batch_id"], id.as_str(), "{added}");

    // AND another tenant finds no such batch, and cannot use this tenant's cursor; a cursor it
    // did not hand out, or a limit out of range, is a 400 naming the field
    let (_, page) = app.get(&format!("/v1/batches/{id}/jobs?limit=1")).await;
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let other = app.as_caller(Some(&token("someone-else", &["reader"])));
    let (status, body) = other.get(&format!("/v1/batches/{id}/jobs")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = other
        .get(&format!("/v1/batches/{id}/jobs?cursor={cursor}"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    for (query, field) in [
        ("cursor=m1nonsense", "cursor"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
    ] {
        let (status, body) = app.get(&format!("/v1/batches/{id}/jobs?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    let (status, body) = app.get("/v1/batches/01J00000000000000000000000/jobs").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn on_complete_runs_exactly_once_when_the_last_two_members_end_at_the_same_moment() {
    let counts = tempfile::tempdir().unwrap();
    let dir = counts.path().to_str().unwrap().to_string();
    let app = spawn_app(&[("TEST_COUNT_DIR", dir.as_str())]).await;
    on_complete_runs_once_when_the_last_two_members_end_together(&app, counts.path()).await;
}

#[tokio::test]
async fn a_failed_member_ends_its_batch_without_on_success_and_members_can_add_members() {
    let app = spawn_app(&[]).await;
    a_failed_member_ends_the_batch_without_on_success(&app).await;
    a_member_adds_members_before_it_ends(&app).await;
    a_batch_can_be_cancelled(&app).await;
    // (more than one DynamoDB transaction holds: 100 items)
    a_batchs_members_are_listed_page_by_page_as_they_are(&app, 110, 50).await;
}

#[tokio::test]
async fn batches_on_the_aws_backend() {
    let counts = tempfile::tempdir().unwrap();
    let dir = counts.path().to_str().unwrap().to_string();
    let app = spawn_app_on_aws(&[("TEST_COUNT_DIR", dir.as_str())]).await;
    on_complete_runs_once_when_the_last_two_members_end_together(&app, counts.path()).await;
    a_failed_member_ends_the_batch_without_on_success(&app).await;
    a_member_adds_members_before_it_ends(&app).await;
    a_batch_can_be_cancelled(&app).await;
    // (fewer: moto answers one request at a time)
    a_batchs_members_are_listed_page_by_page_as_they_are(&app, 40, 15).await;
}
