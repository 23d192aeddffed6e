//! The client commands against a running runtime: `conveyor watch` exits with its job's
//! outcome, and the other commands speak the API (with `--json` for scripts).

use crate::helpers::{spawn_app, token, TestApp, TestServer, TENANT};
use serde_json::{json, Value};
use std::process::Output;
use std::time::Duration;

/// Run `conveyor ARGS` against `app` as a client, with a submitter's credential.
async fn conveyor(app: &TestApp, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_conveyor-under-test"));
    cmd.args(args)
        .env("CONVEYOR_URL", &app.address)
        .env("CONVEYOR_TOKEN", token(TENANT, &["submitter"]))
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the command ends")
        .expect("the command runs")
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test]
async fn watch_exits_zero_when_its_job_succeeds_and_non_zero_when_it_ends_dead() {
    // GIVEN a sleep job that will succeed, and a fetch of a server that is always down, with
    // one attempt, which will end dead
    let app = spawn_app(&[]).await;
    let down = TestServer::answering(&[], 503).await;
    let submitted = conveyor(
        &app,
        &["submit", "sleep", "--payload", r#"{"ms": 800}"#, "--json"],
    )
    .await;
    assert!(submitted.status.success(), "{submitted:?}");
    let good = stdout_json(&submitted)["id"].as_str().unwrap().to_string();
    let (_, bad) = app
        .submit(&json!({ "type": "http.fetch", "payload": { "url": down.url("/x") }, "max_attempts": 1 }))
        .await;
    let bad = bad["id"].as_str().unwrap().to_string();

    // WHEN each is watched
    let watched_good = conveyor(&app, &["watch", &good, "--json"]).await;
    let watched_bad = conveyor(&app, &["watch", &bad]).await;

    // THEN watching the one that succeeded exits 0, having printed its states as they came,
    // ending with succeeded; and the dead one exits 4
    assert_eq!(watched_good.status.code(), Some(0), "{watched_good:?}");
    let states: Vec<Value> = String::from_utf8_lossy(&watched_good.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(states.last().unwrap()["status"], "succeeded", "{states:#?}");
    assert_eq!(watched_bad.status.code(), Some(4), "{watched_bad:?}");
    assert_eq!(app.get_job(&bad).await["status"], "dead");
}

#[tokio::test]
async fn the_client_commands_speak_the_api() {
    let app = spawn_app(&[]).await;

    // submit, get, list, logs, stats: --json gives the API's own JSON
    let out = conveyor(&app, &["submit", "noop", "--json"]).await;
    assert!(out.status.success(), "{out:?}");
    let id = stdout_json(&out)["id"].as_str().unwrap().to_string();
    let out = conveyor(&app, &["watch", &id]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let got = stdout_json(&conveyor(&app, &["get", &id, "--json"]).await);
    assert_eq!(got["status"], "succeeded");
    let listed = stdout_json(&conveyor(&app, &["list", "--status", "succeeded", "--json"]).await);
    assert!(listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|j| j["id"] == id));
    let stats = stdout_json(&conveyor(&app, &["stats", "--json"]).await);
    assert!(stats["total"].as_u64().unwrap() >= 1, "{stats}");
    let human = conveyor(&app, &["get", &id]).await;
    assert!(
        String::from_utf8_lossy(&human.stdout).contains("succeeded"),
        "{human:?}"
    );

    // cancel of a waiting job, and retry of the cancelled one
    let out = conveyor(&app, &["submit", "noop", "--delay", "600", "--json"]).await;
    let later = stdout_json(&out)["id"].as_str().unwrap().to_string();
    let cancelled = stdout_json(&conveyor(&app, &["cancel", &later, "--json"]).await);
    assert_eq!(cancelled["status"], "cancelled");
    let retried = stdout_json(&conveyor(&app, &["retry", &later, "--json"]).await);
    assert_eq!(retried["status"], "queued");

    // A refusal is the API's message and exit code 1; a wrong command line exit code 2
    let refused = conveyor(&app, &["submit", "no.such.type"]).await;
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("400"),
        "{refused:?}"
    );
    let wrong = conveyor(&app, &["submit", "noop", "--payload", "{not json"]).await;
    assert_eq!(wrong.status.code(), Some(2), "{wrong:?}");
    let wrong = conveyor(&app, &["get"]).await;
    assert_eq!(wrong.status.code(), Some(2), "{wrong:?}");
}

#[tokio::test]
async fn the_client_commands_work_against_dev_mode() {
    // GIVEN the runtime in dev mode (no credential configured), and a job waiting in it
    let app = crate::helpers::spawn_app(&[("CONVEYOR_JWT_SECRET", "")]).await;
    let (status, job) = app
        .as_caller(None)
        .post_json("/v1/jobs", &json!({ "type": "noop", "delay_seconds": 600 }))
        .await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap();
    // WHEN the command line cancels it, with no credential (its writes carry no body)
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_conveyor-under-test"));
    cmd.args(["cancel", id, "--json"])
        .env("CONVEYOR_URL", &app.address)
        .env_remove("CONVEYOR_TOKEN")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap()
        .unwrap();
    // THEN it is done: dev mode takes this machine's own client
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout_json(&out)["status"], "cancelled");
}
