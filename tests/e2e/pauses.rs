//! Pausing a job type, on the runtime's backend (embedded, or AWS on an emulator): a paused
//! type keeps taking submits and starts none of its jobs for as long as it is paused, while
//! other types run; its jobs come back round as new messages, so no number of rechecks brings
//! one to its dead-letter queue; resumed, they run. A tenant's admin pauses for the tenant, an
//! operator for every tenant; another tenant's jobs are not held by a tenant's pause.

use crate::helpers::{assert_error, spawn_app, token, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

/// Rechecked every 100 ms (a whole second on SQS), and dead-lettered after 2 receives: a held
/// job's message that kept its receive count would reach its dead-letter queue in the window.
const QUICK: [(&str, &str); 3] = [
    ("CONVEYOR_PAUSE_RECHECK", "100ms"),
    ("CONVEYOR_PAUSE_CACHE", "0s"),
    ("CONVEYOR_MAX_RECEIVE_COUNT", "2"),
];
/// How long a held job is watched.
const WINDOW: Duration = Duration::from_secs(4);
const RUNS_WITHIN: Duration = Duration::from_secs(30);

/// One job, read with `credential` (a token of the job's tenant).
async fn job(app: &TestApp, credential: &str, id: &str) -> Value {
    let (status, job) = app
        .as_caller(Some(credential))
        .get(&format!("/v1/jobs/{id}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{job}");
    job
}

/// Watch the jobs for `WINDOW`: each stays queued with no attempt started.
async fn stay_queued(app: &TestApp, credential: &str, ids: &[&str]) {
    let end = tokio::time::Instant::now() + WINDOW;
    while tokio::time::Instant::now() < end {
        for id in ids {
            let job = job(app, credential, id).await;
            assert_eq!(
                job["status"], "queued",
                "a paused type's job started: {job:#}"
            );
            assert_eq!(job["attempt"], 0, "{job:#}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The job, once succeeded, ran once: its first attempt.
async fn succeeds_first_time(app: &TestApp, credential: &str, id: &str) {
    let deadline = tokio::time::Instant::now() + RUNS_WITHIN;
    loop {
        let job = job(app, credential, id).await;
        if job["status"] == "succeeded" {
            assert_eq!(job["attempt"], 1, "{job:#}");
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not succeeded within {RUNS_WITHIN:?}: {job:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn dead_letters(app: &TestApp, caller: &str, job_type: &str) -> Value {
    let (status, body) = app
        .as_caller(Some(caller))
        .get(&format!("/v1/dead-letters?type={job_type}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn type_entry<'a>(types: &'a Value, name: &str) -> &'a Value {
    types["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == name)
        .unwrap_or_else(|| panic!("{name} is not listed: {types}"))
}

#[tokio::test]
async fn a_paused_type_starts_nothing_while_others_run_and_its_jobs_run_once_resumed() {
    let app = spawn_app(&QUICK).await;
    let admin = token("default", &["admin"]);
    let as_admin = app.as_caller(Some(&admin));
    // GIVEN the tenant's admin pauses `sleep`
    let (status, paused) = as_admin.post("/v1/types/sleep/pause").await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(paused["type"], "sleep");
    assert_eq!(paused["paused"], true, "{paused}");
    assert_eq!(paused["pauses"][0]["scope"], "tenant", "{paused}");
    // THEN the types and the stats say so
    let (_, types) = app.get("/v1/types").await;
    assert_eq!(type_entry(&types, "sleep")["paused"], true, "{types}");
    assert_eq!(type_entry(&types, "noop")["paused"], false, "{types}");
    assert_eq!(app.stats().await["paused"], json!(["sleep"]));

    // WHEN jobs of it are submitted (it keeps taking them), and one of another type
    let mut held = vec![];
    for _ in 0..3 {
        held.push(
            app.submit_new(&json!({ "type": "sleep", "payload": { "ms": 10 } }))
                .await,
        );
    }
    let other = app.submit_new(&json!({ "type": "noop" })).await;
    // THEN the other type runs, and the paused type's jobs stay queued for the whole window
    succeeds_first_time(&app, &admin, &other).await;
    let ids: Vec<&str> = held.iter().map(String::as_str).collect();
    stay_queued(&app, &admin, &ids).await;

    // WHEN it is resumed
    let (status, resumed) = as_admin.post("/v1/types/sleep/resume").await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    assert_eq!(resumed["paused"], false, "{resumed}");
    assert_eq!(app.stats().await["paused"], json!([]));
    // THEN each job runs, once, on its first attempt: none came near its dead-letter queue
    for id in &ids {
        succeeds_first_time(&app, &admin, id).await;
    }
    assert_eq!(dead_letters(&app, &admin, "sleep").await["jobs"], json!([]));
    // AND both changes are in the audit trail
    let (_, trail) = as_admin.get("/v1/audit").await;
    let actions: Vec<&str> = trail["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"type.pause") && actions.contains(&"type.resume"),
        "{trail}"
    );
}

#[tokio::test]
async fn a_tenants_pause_holds_its_jobs_only_and_an_operator_pauses_for_every_tenant() {
    let app = spawn_app(&QUICK).await;
    let (acme_admin, globex) = (token("acme", &["admin"]), token("globex", &["submitter"]));
    let operator = token("ops", &["operator"]);
    let submit = |credential: &str, job_type: &str| {
        let caller = app.as_caller(Some(credential));
        let body = json!({ "type": job_type, "payload": { "ms": 10 } });
        async move {
            let (status, job) = caller.post_json("/v1/jobs", &body).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{job}");
            job["id"].as_str().unwrap().to_string()
        }
    };
    // GIVEN acme's admin pauses `sleep` for acme
    let (status, body) = app
        .as_caller(Some(&acme_admin))
        .post("/v1/types/sleep/pause")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // WHEN acme and globex each submit one
    let acme_job = submit(&acme_admin, "sleep").await;
    let globex_job = submit(&globex, "sleep").await;
    // THEN globex's runs, acme's waits
    succeeds_first_time(&app, &globex, &globex_job).await;
    stay_queued(&app, &acme_admin, &[&acme_job]).await;
    let (_, theirs) = app.as_caller(Some(&globex)).get("/v1/types").await;
    assert_eq!(type_entry(&theirs, "sleep")["paused"], false, "{theirs}");

    // WHEN an operator pauses `noop` for every tenant
    let (status, all) = app
        .as_caller(Some(&operator))
        .post("/v1/types/noop/pause?all_tenants=true")
        .await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(all["pauses"][0]["scope"], "all_tenants", "{all}");
    let noops = [
        submit(&globex, "noop").await,
        submit(&acme_admin, "noop").await,
    ];
    // THEN no tenant's job of it starts, and every tenant is told
    let (g, a) = ([noops[0].as_str()], [noops[1].as_str()]);
    futures::future::join(
        stay_queued(&app, &globex, &g),
        stay_queued(&app, &acme_admin, &a),
    )
    .await;
    let (_, theirs) = app.as_caller(Some(&globex)).get("/v1/types").await;
    assert_eq!(type_entry(&theirs, "noop")["paused"], true, "{theirs}");
    // AND a tenant's admin can neither lift it nor pause for everyone
    for path in [
        "/v1/types/noop/resume?all_tenants=true",
        "/v1/types/noop/pause?all_tenants=true",
    ] {
        let answer = app.as_caller(Some(&acme_admin)).post(path).await;
        assert_error(&answer, StatusCode::FORBIDDEN, "forbidden", None);
    }

    // WHEN the operator resumes it, and acme's admin resumes `sleep`
    let (status, body) = app
        .as_caller(Some(&operator))
        .post("/v1/types/noop/resume?all_tenants=true")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .as_caller(Some(&acme_admin))
        .post("/v1/types/sleep/resume")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // THEN every held job runs, once
    succeeds_first_time(&app, &globex, &noops[0]).await;
    for id in [&noops[1], &acme_job] {
        succeeds_first_time(&app, &acme_admin, id).await;
    }
}

#[tokio::test]
async fn pausing_needs_an_admin_and_a_type_the_deployment_has() {
    let app = spawn_app(&[]).await;
    // A submitter and a reader are refused
    for roles in [&["submitter"][..], &["reader"][..]] {
        let answer = app
            .as_caller(Some(&token("default", roles)))
            .post("/v1/types/noop/pause")
            .await;
        assert_error(&answer, StatusCode::FORBIDDEN, "forbidden", None);
    }
    let as_admin = app.as_caller(Some(&token("default", &["admin"])));
    // A type it does not have is a 404 naming the type
    let answer = as_admin.post("/v1/types/no.such.type/pause").await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found", Some("type"));
    // A scope that is neither true nor false names the parameter
    let answer = as_admin.post("/v1/types/noop/pause?all_tenants=yes").await;
    assert_error(
        &answer,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("all_tenants"),
    );
    // Pausing twice and resuming twice answer the same state
    for _ in 0..2 {
        let (status, body) = as_admin.post("/v1/types/noop/pause").await;
        assert_eq!(
            (status, &body["paused"]),
            (StatusCode::OK, &json!(true)),
            "{body}"
        );
    }
    for _ in 0..2 {
        let (status, body) = as_admin.post("/v1/types/noop/resume").await;
        assert_eq!(
            (status, &body["paused"]),
            (StatusCode::OK, &json!(false)),
            "{body}"
        );
    }
}
