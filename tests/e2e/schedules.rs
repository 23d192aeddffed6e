//! Recurring jobs through the API and the command line: declared, read, changed, paused and
//! deleted, refused with the field at fault; and the runtime's own scheduler firing a
//! one-time schedule at its time, once, across a restart. (Ticks across whole minutes and a
//! daylight-saving change are driven by a test clock in the contract suite.)

use crate::helpers::{assert_error, spawn_app, status_is, token, TestApp, TENANT};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

async fn put(app: &TestApp, path: &str, body: &Value) -> (StatusCode, Value) {
    app.send(app.client.put(app.url(path)).json(body)).await
}

async fn create(app: &TestApp, body: &Value) -> (StatusCode, Value) {
    app.send(app.client.post(app.url("/v1/schedules")).json(body))
        .await
}

#[tokio::test]
async fn a_schedule_is_declared_read_changed_paused_and_deleted_and_bad_ones_name_their_field() {
    let app = spawn_app(&[]).await;
    // WHEN a schedule is declared
    let (status, s) = create(
        &app,
        &json!({
            "name": "nightly", "type": "noop", "payload": {"n": 1},
            "cron": "30 2 * * *", "timezone": "Europe/Berlin", "overlap": "skip",
        }),
    )
    .await;
    // THEN it is stored as given, with when it fires next (02:30 in Berlin is 00:30 or 01:30
    // UTC)
    assert_eq!(status, StatusCode::CREATED, "{s}");
    assert_eq!(s["expression"], "cron(30 2 * * *)");
    assert_eq!(s["timezone"], "Europe/Berlin");
    assert_eq!(s["paused"], false);
    let next = s["next_run_at"].as_str().expect("a next run");
    assert!(
        next.ends_with("T00:30:00Z") || next.ends_with("T01:30:00Z"),
        "{next}"
    );
    // AND a second with the same name is a conflict
    assert_error(
        &create(
            &app,
            &json!({ "name": "nightly", "type": "noop", "cron": "* * * * *" }),
        )
        .await,
        StatusCode::CONFLICT,
        "schedule_exists",
        Some("name"),
    );
    // AND what cannot be a schedule is refused, naming the field
    for (body, field) in [
        (
            json!({ "name": "a", "type": "noop", "cron": "61 * * * *" }),
            "cron",
        ),
        (
            json!({ "name": "a", "type": "noop", "cron": "0 0 1 * MON" }),
            "cron",
        ),
        (
            json!({ "name": "a", "type": "noop", "rate": "fortnightly" }),
            "rate",
        ),
        (
            json!({ "name": "a", "type": "noop", "at": "tomorrow" }),
            "at",
        ),
        (
            json!({ "name": "a", "type": "noop", "cron": "* * * * *", "rate": "1 minute" }),
            "cron",
        ),
        (json!({ "name": "a", "type": "noop" }), "cron"),
        (
            json!({ "name": "a", "type": "noop", "cron": "* * * * *", "timezone": "Mars/Olympus" }),
            "timezone",
        ),
        (
            json!({ "name": "a b", "type": "noop", "cron": "* * * * *" }),
            "name",
        ),
        (json!({ "type": "noop", "cron": "* * * * *" }), "name"),
        (
            json!({ "name": "a", "type": "noop", "cron": "* * * * *", "overlap": "sometimes" }),
            "overlap",
        ),
        (
            json!({ "name": "a", "type": "noop", "cron": "* * * * *", "when": 1 }),
            "when",
        ),
        (
            json!({ "name": "a", "type": "noop", "cron": "* * * * *", "start_at": "2030-01-02T00:00:00Z", "end_at": "2030-01-01T00:00:00Z" }),
            "end_at",
        ),
    ] {
        assert_error(
            &create(&app, &body).await,
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some(field),
        );
    }
    assert_error(
        &create(
            &app,
            &json!({ "name": "a", "type": "no.such.type", "cron": "* * * * *" }),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "unknown_type",
        Some("type"),
    );
    // AND a job submit may not take a schedule's idempotency keys
    assert_error(
        &app.submit(&json!({ "type": "noop", "idempotency_key": "schedule:nightly:1" }))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("idempotency_key"),
    );
    // WHEN it is listed, changed, paused
    let (_, all) = app.get("/v1/schedules").await;
    let names: Vec<&str> = all["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nightly"]);
    let (status, changed) = put(
        &app,
        "/v1/schedules/nightly",
        &json!({ "type": "noop", "rate": "10 minutes" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["expression"], "rate(10 minutes)");
    assert_eq!(changed["timezone"], "UTC");
    let (status, paused) = app.post("/v1/schedules/nightly/pause").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(paused["paused"], true);
    assert_eq!(paused["next_run_at"], Value::Null);
    let (_, resumed) = app.post("/v1/schedules/nightly/resume").await;
    assert_eq!(resumed["paused"], false);
    let (status, runs) = app.get("/v1/schedules/nightly/runs").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(runs["runs"], json!([]));
    // AND another tenant sees none of it
    let other = crate::helpers::client_for(Some(&token("someone-else", &["submitter"])));
    let (status, _) = app.send(other.get(app.url("/v1/schedules/nightly"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // WHEN it is deleted: gone
    let (status, deleted) = app
        .send(app.client.delete(app.url("/v1/schedules/nightly")))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(deleted["deleted"], "nightly");
    assert_error(
        &app.get("/v1/schedules/nightly").await,
        StatusCode::NOT_FOUND,
        "schedule_not_found",
        Some("name"),
    );
}

#[tokio::test]
async fn the_runtime_fires_a_one_time_schedule_at_its_time_once_across_a_restart() {
    let mut app = spawn_app(&[("CONVEYOR_SCHEDULER_INTERVAL", "100ms")]).await;
    // GIVEN a one-time schedule two seconds ahead (local time in UTC)
    let at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let (status, s) = create(
        &app,
        &json!({
            "name": "once", "type": "noop", "payload": {"hello": "world"},
            "at": at.format("%Y-%m-%dT%H:%M:%S").to_string(),
        }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    // WHEN its time comes
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let run = loop {
        let (_, runs) = app.get("/v1/schedules/once/runs").await;
        if let Some(run) = runs["runs"].as_array().and_then(|r| r.first()).cloned() {
            break run;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tick did not fire"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // THEN one job was submitted with the schedule's payload, and it runs
    assert_eq!(run["outcome"], "submitted");
    let id = run["job_id"].as_str().unwrap().to_string();
    let job = app
        .wait_for_status(&id, status_is("succeeded"), Duration::from_secs(20))
        .await;
    assert_eq!(job["payload"], json!({"hello": "world"}));
    // AND after a restart, and passes of the scheduler (seen: a second one-time schedule, due
    // after the restart, has fired), it is still the one job
    app.restart().await;
    let probe_at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let (status, s) = create(
        &app,
        &json!({
            "name": "probe", "type": "sleep", "payload": {"ms": 1},
            "at": probe_at.format("%Y-%m-%dT%H:%M:%S").to_string(),
        }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, runs) = app.get("/v1/schedules/probe/runs").await;
        if runs["runs"].as_array().is_some_and(|r| !r.is_empty()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the probe did not fire"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let jobs = app.list_all("type=noop").await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let (_, s) = app.get("/v1/schedules/once").await;
    assert_eq!(s["next_run_at"], Value::Null);
}

#[tokio::test]
async fn the_schedules_command_declares_lists_and_deletes() {
    let app = spawn_app(&[]).await;
    let conveyor = |args: &'static [&'static str]| {
        let address = app.address.clone();
        async move {
            let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_conveyor-under-test"));
            cmd.args(args)
                .env("CONVEYOR_URL", address)
                .env("CONVEYOR_TOKEN", token(TENANT, &["submitter"]))
                .kill_on_drop(true);
            cmd.output().await.expect("the command runs")
        }
    };
    let created = conveyor(&[
        "schedules",
        "create",
        "hourly",
        "noop",
        "--cron",
        "0 * * * *",
        "--timezone",
        "Asia/Tokyo",
        "--payload",
        r#"{"k": 1}"#,
        "--json",
    ])
    .await;
    assert!(created.status.success(), "{created:?}");
    let s: Value = serde_json::from_slice(&created.stdout).unwrap();
    assert_eq!(s["expression"], "cron(0 * * * *)");
    assert_eq!(s["timezone"], "Asia/Tokyo");
    let listed = conveyor(&["schedules", "list"]).await;
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.contains("hourly") && text.contains("Asia/Tokyo"),
        "{text}"
    );
    let bad = conveyor(&["schedules", "create", "x", "noop", "--cron", "nope"]).await;
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("field cron"));
    let usage = conveyor(&["schedules", "frobnicate"]).await;
    assert_eq!(usage.status.code(), Some(2));
    assert!(conveyor(&["schedules", "delete", "hourly"])
        .await
        .status
        .success());
    assert_eq!(
        conveyor(&["schedules", "get", "hourly"])
            .await
            .status
            .code(),
        Some(1)
    );
}
