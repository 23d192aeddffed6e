//! The command line: every command answers `--help`, a wrong one exits 2 naming what is
//! wrong, completions are printed; against a running runtime `conveyor watch` exits with its
//! job's outcome, and the other commands speak the API (with `--json` for scripts).

use crate::helpers::{spawn_app, status_is, token, TestApp, TestServer, TENANT};
use serde_json::{json, Value};
use std::process::Output;
use std::time::Duration;

/// Run `conveyor ARGS` against `app` as a client, with a submitter's credential.
async fn conveyor(app: &TestApp, args: &[&str]) -> Output {
    conveyor_as(app, &["submitter"], args).await
}

/// Run `conveyor ARGS` against `app` as a client, with a credential of `roles`.
async fn conveyor_as(app: &TestApp, roles: &[&str], args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_conveyor-under-test"));
    cmd.args(args)
        .env("CONVEYOR_URL", &app.address)
        .env("CONVEYOR_TOKEN", token(TENANT, roles))
        .kill_on_drop(true);
    run(cmd).await
}

/// Run `conveyor ARGS` with no runtime and nothing configured.
async fn offline(args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_conveyor-under-test"));
    for (name, _) in std::env::vars() {
        if name.starts_with("CONVEYOR_") {
            cmd.env_remove(name);
        }
    }
    cmd.args(args).kill_on_drop(true);
    run(cmd).await
}

async fn run(mut cmd: tokio::process::Command) -> Output {
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the command ends")
        .expect("the command runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
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

#[tokio::test]
async fn every_command_and_subcommand_answers_help() {
    // GIVEN every command of the command line's definition, however deep
    let mut paths: Vec<Vec<String>> = vec![];
    let root = local::cli::command();
    let mut stack = vec![(vec![], &root)];
    while let Some((path, command)) = stack.pop() {
        for sub in command.get_subcommands() {
            let mut deeper: Vec<String> = path.clone();
            deeper.push(sub.get_name().to_string());
            stack.push((deeper, sub));
        }
        paths.push(path);
    }
    assert!(paths.len() > 30, "{paths:?}");

    // WHEN each is asked for --help
    let mut failures = vec![];
    for chunk in paths.chunks(8) {
        let runs = chunk.iter().map(|path| async move {
            let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
            args.push("--help");
            (path, offline(&args).await)
        });
        for (path, out) in futures::future::join_all(runs).await {
            // THEN it prints its usage on stdout and exits 0
            let usage = format!("Usage: conveyor {}", path.join(" "));
            if out.status.code() != Some(0) || !text(&out.stdout).contains(usage.trim_end()) {
                failures.push(format!("{path:?}: {out:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn an_unknown_flag_exits_2_naming_it() {
    for args in [
        &["--frobnicate"][..],
        &["serve", "--frobnicate", "x"],
        &["submit", "noop", "--frobnicate"],
        &["schedules", "list", "--frobnicate"],
        &[
            "keys",
            "create",
            "--tenant",
            "acme",
            "--role",
            "reader",
            "--frobnicate",
        ],
        &["bench", "--frobnicate", "1"],
        &["bulk", "retry", "--status", "dead", "--frobnicate"],
    ] {
        // WHEN a command is given a flag it does not take
        let out = offline(args).await;
        // THEN it exits 2, naming the flag, and does nothing
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(
            text(&out.stderr).contains("--frobnicate"),
            "{args:?}: {out:?}"
        );
    }
    // AND a value the flag cannot take is named too
    let out = offline(&["bench-aws", "--jobs", "0"]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("--jobs"), "{out:?}");
}

#[tokio::test]
async fn completions_are_printed_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "complete -F _conveyor"),
        ("zsh", "#compdef conveyor"),
        ("fish", "complete -c conveyor"),
    ] {
        let out = offline(&["completions", shell]).await;
        assert_eq!(out.status.code(), Some(0), "{shell}: {out:?}");
        let script = text(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("dead-letters"), "{shell}");
    }
}

#[tokio::test]
async fn batches_are_submitted_and_followed() {
    let app = spawn_app(&[]).await;
    // WHEN two jobs are submitted as a batch with a callback
    let out = conveyor(
        &app,
        &[
            "batches",
            "create",
            "--job",
            r#"{"type": "noop"}"#,
            "--job",
            r#"{"type": "noop", "payload": {"n": 2}}"#,
            "--on-complete",
            r#"{"type": "noop"}"#,
            "--json",
        ],
    )
    .await;
    // THEN both are created in one batch
    assert!(out.status.success(), "{out:?}");
    let created = stdout_json(&out);
    assert_eq!(created["created"], 2, "{created}");
    let batch = created["batch"]["id"].as_str().unwrap().to_string();
    // AND the batch is followed to its end by its counts
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let finished = loop {
        let b = stdout_json(&conveyor(&app, &["batches", "get", &batch, "--json"]).await);
        if b["status"] == "finished" {
            break b;
        }
        assert!(tokio::time::Instant::now() < deadline, "{b}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(finished["counts"]["succeeded"], 2, "{finished}");
    let human = conveyor(&app, &["batches", "get", &batch]).await;
    assert!(
        text(&human.stdout).contains("finished") && text(&human.stdout).contains("succeeded 2"),
        "{human:?}"
    );
    // AND its members are listed, a line each with its status, a page at a time
    let ids: Vec<&str> = created["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["job"]["id"].as_str().unwrap())
        .collect();
    let first = conveyor(&app, &["batches", "jobs", &batch, "--limit", "1"]).await;
    let lines: Vec<String> = text(&first.stdout).lines().map(String::from).collect();
    assert!(first.status.success(), "{first:?}");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with(ids[0]) && lines[0].contains("succeeded"),
        "{lines:?}"
    );
    let cursor = lines[1]
        .strip_prefix("(more: --cursor ")
        .and_then(|l| l.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{lines:?}"));
    let rest = conveyor(
        &app,
        &["batches", "members", &batch, "--cursor", cursor, "--json"],
    )
    .await;
    let rest = stdout_json(&rest);
    assert_eq!(rest["jobs"][0]["id"], ids[1], "{rest}");
    assert_eq!(rest["jobs"].as_array().unwrap().len(), 1, "{rest}");
    assert!(rest["next_cursor"].is_null(), "{rest}");
    // AND a batch with a refused job says which, exiting 1
    let out = conveyor(
        &app,
        &[
            "batches",
            "create",
            "--job",
            r#"{"type": "noop"}"#,
            "--job",
            r#"{"type": "no.such.type"}"#,
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stdout).contains("#1"), "{out:?}");
}

#[tokio::test]
async fn a_dead_letter_is_listed_and_redriven_and_jobs_are_retried_in_bulk() {
    // GIVEN a job that ends dead (one attempt at a server that is always down), and three
    // waiting jobs
    let app = spawn_app(&[]).await;
    let down = TestServer::answering(&[], 503).await;
    let (_, dead) = app
        .submit(&json!({ "type": "http.fetch", "payload": { "url": down.url("/x") }, "max_attempts": 1 }))
        .await;
    let dead = dead["id"].as_str().unwrap().to_string();
    app.wait_for_status(&dead, status_is("dead"), Duration::from_secs(60))
        .await;
    let mut waiting = vec![];
    for _ in 0..3 {
        let (_, job) = app
            .submit(&json!({ "type": "noop", "delay_seconds": 600 }))
            .await;
        waiting.push(job["id"].as_str().unwrap().to_string());
    }

    // WHEN the dead letters are listed, THEN it is there, with why
    let listed = stdout_json(
        &conveyor(
            &app,
            &["dead-letters", "list", "--type", "http.fetch", "--json"],
        )
        .await,
    );
    assert!(
        listed["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == dead),
        "{listed}"
    );
    let human = conveyor(&app, &["dead-letters", "list"]).await;
    assert!(text(&human.stdout).contains(&dead), "{human:?}");
    // WHEN it is redriven, THEN it is queued again
    let out = conveyor(&app, &["dead-letters", "redrive", &dead, "--json"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout_json(&out)["results"][0]["status"],
        "queued",
        "{out:?}"
    );
    // AND a redrive by filter is a bulk job
    let out = conveyor(
        &app,
        &["dead-letters", "redrive", "--type", "sleep", "--json"],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout_json(&out)["type"], "conveyor.bulk", "{out:?}");

    // WHEN the waiting jobs are cancelled by id
    let mut args = vec!["bulk", "cancel"];
    args.extend(waiting.iter().map(String::as_str));
    let out = conveyor(&app, &args).await;
    assert!(out.status.success(), "{out:?}");
    for id in &waiting {
        assert_eq!(app.get_job(id).await["status"], "cancelled");
    }
    // AND retried by a filter, as a bulk job followed to its end
    let out = conveyor(
        &app,
        &[
            "bulk",
            "retry",
            "--status",
            "cancelled",
            "--type",
            "noop",
            "--json",
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let bulk = stdout_json(&out)["id"].as_str().unwrap().to_string();
    let watched = conveyor(&app, &["watch", &bulk]).await;
    assert_eq!(watched.status.code(), Some(0), "{watched:?}");
    // THEN its progress and counts are shown, and the jobs are back
    let shown = stdout_json(&conveyor(&app, &["bulk", "show", &bulk, "--json"]).await);
    assert_eq!(shown["result"]["changed"], 3, "{shown}");
    let human = conveyor(&app, &["bulk", "show", &bulk]).await;
    assert!(text(&human.stdout).contains("changed 3"), "{human:?}");
    for id in &waiting {
        assert_ne!(app.get_job(id).await["status"], "cancelled");
    }
}

#[tokio::test]
async fn a_tenants_limits_are_set_and_read_back() {
    let app = spawn_app(&[]).await;
    // WHEN an operator sets one limit
    let out = conveyor_as(
        &app,
        &["operator"],
        &[
            "limits",
            "set",
            TENANT,
            "--max-active",
            "1000",
            "--submits-per-second",
            "50",
            "--json",
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    // THEN it reads back, as set and as it applies
    let read =
        stdout_json(&conveyor_as(&app, &["operator"], &["limits", "get", TENANT, "--json"]).await);
    assert_eq!(read["limits"]["max_active"], 1000, "{read}");
    assert_eq!(read["effective"]["max_active"], 1000, "{read}");
    // AND setting another keeps it; `default` gives one back to the deployment's
    let out = conveyor_as(
        &app,
        &["operator"],
        &[
            "limits",
            "set",
            TENANT,
            "--submits-per-second",
            "default",
            "--json",
        ],
    )
    .await;
    let set = stdout_json(&out);
    assert_eq!(set["limits"]["max_active"], 1000, "{set}");
    assert_eq!(set["limits"]["submits_per_second"], Value::Null, "{set}");
    let human = conveyor_as(&app, &["operator"], &["limits", "get", TENANT]).await;
    assert!(text(&human.stdout).contains("max_active"), "{human:?}");
    // AND a submitter may not: the API's refusal, exit 1
    let refused = conveyor(&app, &["limits", "set", TENANT, "--max-active", "5"]).await;
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    // AND --url wins over CONVEYOR_URL
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_conveyor-under-test"));
    cmd.args(["stats", "--json", "--url", &app.address])
        .env("CONVEYOR_URL", "http://127.0.0.1:9")
        .env("CONVEYOR_TOKEN", token(TENANT, &["reader"]))
        .kill_on_drop(true);
    let out = run(cmd).await;
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test]
async fn a_type_is_paused_listed_and_resumed() {
    let app = spawn_app(&[]).await;
    // WHEN the tenant's admin pauses `sleep`
    let out = conveyor_as(&app, &["admin"], &["types", "pause", "sleep", "--json"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout_json(&out)["paused"], true);
    // THEN the list says so, in JSON and to a reader
    let listed = stdout_json(&conveyor(&app, &["types", "list", "--json"]).await);
    let sleep = listed["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == "sleep")
        .cloned()
        .unwrap();
    assert_eq!(sleep["paused"], true, "{listed}");
    let human = conveyor(&app, &["types", "list"]).await;
    let line = text(&human.stdout)
        .lines()
        .find(|l| l.starts_with("sleep "))
        .map(str::to_string);
    assert!(
        line.as_deref()
            .is_some_and(|l| l.contains("paused (tenant)")),
        "{human:?}"
    );
    // AND a submitter may not resume it, nor the admin for every tenant: the API's refusal
    let refused = conveyor(&app, &["types", "resume", "sleep"]).await;
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let refused = conveyor_as(
        &app,
        &["admin"],
        &["types", "resume", "sleep", "--all-tenants"],
    )
    .await;
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(text(&refused.stderr).contains("operator"), "{refused:?}");
    // WHEN the admin resumes it
    let out = conveyor_as(&app, &["admin"], &["types", "resume", "sleep"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout).trim(), "sleep: running");
}

#[tokio::test]
async fn an_external_type_is_registered_listed_and_deleted() {
    let app = spawn_app(&[]).await;
    // WHEN the tenant's admin registers an external type
    let out = conveyor_as(
        &app,
        &["admin"],
        &[
            "types",
            "register",
            "py.echo",
            "--handler",
            "http://127.0.0.1:9/run",
            "--timeout-ms",
            "5000",
            "--rate",
            "10",
            "--rate-period-ms",
            "1000",
            "--json",
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let declared = stdout_json(&out);
    assert_eq!(declared["timeout_ms"], 5000, "{declared}");
    assert_eq!(
        declared["rate"],
        json!({ "per": 10, "period_ms": 1000 }),
        "{declared}"
    );
    // THEN it is listed beside the shipped types, with its handler
    let human = conveyor(&app, &["types", "list"]).await;
    let line = text(&human.stdout)
        .lines()
        .find(|l| l.starts_with("py.echo "))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        line.contains("external (tenant): http://127.0.0.1:9/run"),
        "{human:?}"
    );
    let one = stdout_json(&conveyor(&app, &["types", "get", "py.echo", "--json"]).await);
    assert_eq!(one["external"], true, "{one}");
    // AND a submitter may not delete it; the admin does
    let refused = conveyor(&app, &["types", "delete", "py.echo"]).await;
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let out = conveyor_as(&app, &["admin"], &["types", "delete", "py.echo"]).await;
    assert_eq!(text(&out.stdout).trim(), "deleted py.echo", "{out:?}");
    let gone = conveyor(&app, &["types", "get", "py.echo"]).await;
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
}

#[tokio::test]
async fn a_job_is_replayed_with_another_payload() {
    let app = spawn_app(&[]).await;
    let id = app
        .submit_new(&json!({ "type": "sleep", "payload": { "ms": 10 } }))
        .await;
    app.wait_for_status(&id, status_is("succeeded"), Duration::from_secs(20))
        .await;
    // WHEN it is replayed with another payload
    let out = conveyor(
        &app,
        &["replay", &id, "--payload", r#"{"ms": 20}"#, "--json"],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let new = stdout_json(&out);
    // THEN the new job has it and names the old; the old names the new
    assert_eq!(new["payload"], json!({ "ms": 20 }), "{new}");
    assert_eq!(new["replay_of"], id.as_str(), "{new}");
    assert_eq!(app.get_job(&id).await["replayed_as"], json!([new["id"]]));
    // AND a payload that is not JSON is the command line's error
    let bad = conveyor(&app, &["replay", &id, "--payload", "{"]).await;
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
}
