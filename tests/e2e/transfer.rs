//! Moving a tenant's jobs between backends with `conveyor export` and `conveyor import`: jobs in
//! every state, exported from one runtime and imported into another on the other backend, list
//! and count the same there; importing again changes nothing; no finished job runs again, and
//! the queued ones run once their type is resumed.

use crate::helpers::{
    jobs_by_id, spawn_app_on_aws, spawn_app_with, token, TestApp, TestServer, TENANT,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::Output;
use std::time::Duration;

/// A paused type's jobs looked at again every 30 s (not 10), and maintenance every 2 s (not
/// 250 ms): an emulator serving one request at a time is kept for the export and the import,
/// not for sending held messages back and sweeping. And a request may take as long as the
/// command line waits for it (120 s, not 30): a page of an export from that emulator, busy
/// with the whole suite, has taken longer.
const HELD: [(&str, &str); 3] = [
    ("CONVEYOR_PAUSE_RECHECK", "30s"),
    ("CONVEYOR_MAINTENANCE_INTERVAL", "2s"),
    ("CONVEYOR_HTTP_TIMEOUT", "120s"),
];

/// Run `conveyor ARGS` against `app` with a credential of `roles`.
async fn conveyor(app: &TestApp, roles: &[&str], args: &[&str]) -> Output {
    let out = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_conveyor-under-test"))
            .args(args)
            .env("CONVEYOR_URL", &app.address)
            .env("CONVEYOR_TOKEN", token(TENANT, roles))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the command ends")
    .expect("the command runs");
    assert!(
        out.status.success(),
        "conveyor {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

async fn pause(app: &TestApp, job_type: &str, pause: bool) {
    let action = if pause { "pause" } else { "resume" };
    let (status, body) = app
        .as_caller(Some(&token(TENANT, &["admin"])))
        .post(&format!("/v1/types/{job_type}/{action}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Submit `jobs` in one batch request, each new; their ids, in order.
async fn batch(app: &TestApp, jobs: &[Value]) -> Vec<String> {
    let (status, body) = app
        .send(
            // (an emulator under the whole suite has taken past 15 s for a hundred)
            app.client
                .post(app.url("/v1/jobs/batch"))
                .timeout(std::time::Duration::from_secs(120))
                .json(&json!({ "jobs": jobs })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| match r["job"]["id"].as_str() {
            Some(id) => id.to_string(),
            None => panic!("refused: {r}"),
        })
        .collect()
}

/// The jobs in the given mix of states, on `app` (whose `sleep` type is paused, holding the
/// queued ones): `done` no-op jobs that succeed, `failing` fetches that fail, `later` jobs due in
/// an hour, `cancelled` of those cancelled, `queued` sleeps, and `waiting` jobs that depend on
/// one due in an hour. Returns once every one that can end has.
async fn make_jobs(app: &TestApp, n: [usize; 6]) {
    let [done, failing, later, cancelled, queued, waiting] = n;
    let server = TestServer::answering(&[], 500).await;
    let mut jobs: Vec<Value> = vec![];
    jobs.extend((0..done).map(|i| json!({ "type": "noop", "payload": { "i": i } })));
    jobs.extend((0..failing).map(|_| {
        json!({ "type": "http.fetch", "payload": { "url": server.url("/gone") }, "max_attempts": 1 })
    }));
    jobs.extend((0..later + cancelled).map(|i| {
        json!({ "type": "noop", "payload": { "later": i }, "delay_seconds": 3600, "priority": (i % 3) as i32 })
    }));
    jobs.extend((0..queued).map(|_| json!({ "type": "sleep", "payload": { "ms": 10 } })));
    let mut ids = vec![];
    for chunk in jobs.chunks(50) {
        ids.extend(batch(app, chunk).await);
    }
    let first_later = done + failing;
    for id in &ids[first_later + later..first_later + later + cancelled] {
        let (status, body) = app.cancel(id).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let parent = &ids[first_later];
    // (a job with dependencies is submitted on its own)
    for i in 0..waiting {
        app.submit_new(
            &json!({ "type": "noop", "payload": { "waits": i }, "depends_on": [parent] }),
        )
        .await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let jobs = jobs_by_id(app, "limit=500").await;
        let ended = jobs
            .values()
            .filter(|j| matches!(j["status"].as_str(), Some("succeeded" | "failed" | "dead")))
            .count();
        if ended == done + failing {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{ended} of {} jobs ended",
            done + failing
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What a listing shows of each job that must be the same on both sides (a waiting job's run
/// time is when maintenance next looks at its dependencies, which each side does on its own).
fn listing(jobs: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    jobs.iter()
        .map(|(id, j)| {
            let kept: BTreeMap<&str, &Value> = [
                "type",
                "status",
                "priority",
                "attempt",
                "max_attempts",
                "error",
                "created_at",
                "run_at",
                "started_at",
                "finished_at",
                "expires_at",
            ]
            .into_iter()
            .filter(|k| !(*k == "run_at" && j["status"] == "waiting"))
            .map(|k| (k, &j[k]))
            .collect();
            (id.clone(), json!(kept))
        })
        .collect()
}

/// The counts of `/v1/stats` (by status, and by type without the zeros).
fn counts(stats: &Value) -> Value {
    let by_type: BTreeMap<&String, BTreeMap<&String, &Value>> = stats["by_type"]
        .as_object()
        .expect("by_type")
        .iter()
        .map(|(t, per)| {
            let per = per
                .as_object()
                .expect("counts")
                .iter()
                .filter(|(_, n)| n.as_u64() != Some(0))
                .collect();
            (t, per)
        })
        .filter(|(_, per): &(_, BTreeMap<_, _>)| !per.is_empty())
        .collect();
    json!({ "by_status": stats["by_status"], "total": stats["total"], "by_type": by_type })
}

/// Export every job of `from`, import them into `to` (whose `sleep` type is paused too), and
/// check what the issue asks: the same listing and counts, a second import that changes nothing,
/// the finished jobs never run again, the queued ones run once resumed.
async fn move_jobs(from: &TestApp, to: &TestApp, total: usize, queued: usize) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("jobs.jsonl");
    let path = file.to_str().expect("a path");
    let out = conveyor(from, &["reader"], &["export", "--output", path, "--json"]).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).expect("JSON"),
        json!({ "exported": total })
    );
    let lines: Vec<Value> = std::fs::read_to_string(&file)
        .expect("the export")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), total);
    let ids: Vec<&str> = lines
        .iter()
        .map(|l| l["job"]["id"].as_str().expect("id"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first");
    // (a failed fetch took its error and log line with it)
    let failed = lines
        .iter()
        .find(|l| l["job"]["type"] == "http.fetch")
        .expect("a failed fetch");
    assert!(failed["job"]["error"]["message"].is_string(), "{failed}");
    assert!(
        !failed["logs"].as_array().expect("logs").is_empty(),
        "{failed}"
    );

    pause(to, "sleep", true).await;
    let started = std::time::Instant::now();
    let out = conveyor(to, &["admin"], &["import", path, "--json"]).await;
    eprintln!("imported {total} jobs in {:?}", started.elapsed());
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).expect("JSON"),
        json!({ "imported": total, "exists": 0, "expired": 0, "failed": 0 })
    );

    let source = jobs_by_id(from, "limit=500").await;
    let target = jobs_by_id(to, "limit=500").await;
    assert_eq!(listing(&target), listing(&source));
    let expected = counts(&from.stats().await);
    let seen = to
        .stats_when_within(Duration::from_secs(30), |s| counts(s) == expected)
        .await;
    assert_eq!(counts(&seen), expected);
    let failed_id = failed["job"]["id"].as_str().expect("id");
    assert_eq!(to.logs(failed_id).await, from.logs(failed_id).await);

    // AND importing again takes nothing in twice
    let again = dir.path().join("again.jsonl");
    let some: Vec<String> = lines.iter().take(60).map(Value::to_string).collect();
    std::fs::write(&again, some.join("\n") + "\n").expect("a file");
    let again = again.to_str().expect("a path");
    let out = conveyor(to, &["admin"], &["import", again, "--json"]).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).expect("JSON"),
        json!({ "imported": 0, "exists": 60, "expired": 0, "failed": 0 })
    );

    // AND once resumed there the queued jobs run, and nothing that had ended runs again
    pause(to, "sleep", false).await;
    let sleeps: Vec<&String> = source
        .iter()
        .filter(|(_, j)| j["type"] == "sleep")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(sleeps.len(), queued);
    // (read as a listing every half second: an emulator serving one request at a time is not
    // kept busy by a poll of each job)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    loop {
        let done = jobs_by_id(to, "type=sleep&status=succeeded&limit=500").await;
        if sleeps.iter().all(|id| done.contains_key(*id)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {queued} queued jobs succeeded after the resume",
            done.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let after = jobs_by_id(to, "limit=500").await;
    for (id, before) in source.iter().filter(|(_, j)| {
        matches!(
            j["status"].as_str(),
            Some("succeeded" | "failed" | "dead" | "cancelled")
        )
    }) {
        let now = &after[id];
        for field in ["status", "attempt", "started_at", "finished_at", "version"] {
            assert_eq!(now[field], before[field], "{field} of {id}: {now}");
        }
    }
}

#[tokio::test]
async fn a_thousand_jobs_exported_from_embedded_list_and_count_the_same_on_aws() {
    // GIVEN 1,000 jobs in every state on the embedded backend
    let from = spawn_app_with(&HELD).await;
    pause(&from, "sleep", true).await;
    make_jobs(&from, [490, 100, 200, 100, 60, 50]).await;

    // WHEN they are exported and imported into a runtime on the AWS backend
    let to = spawn_app_on_aws(&HELD).await;

    // THEN the AWS backend lists and counts them the same, and runs only the queued ones
    move_jobs(&from, &to, 1000, 60).await;
}

#[tokio::test]
async fn jobs_exported_from_aws_list_and_count_the_same_on_embedded() {
    // GIVEN jobs in every state on the AWS backend
    let from = spawn_app_on_aws(&HELD).await;
    pause(&from, "sleep", true).await;
    make_jobs(&from, [40, 10, 20, 10, 15, 5]).await;

    // WHEN they are exported and imported into an embedded runtime
    let to = spawn_app_with(&HELD).await;

    // THEN it lists and counts them the same, and runs only the queued ones
    move_jobs(&from, &to, 100, 15).await;
}

#[tokio::test]
async fn a_tenants_jobs_are_exported_and_imported_only_by_that_tenant_and_bad_records_are_named() {
    // GIVEN a job of the suite's tenant, exported by that tenant
    let app = crate::helpers::spawn_app(&[]).await;
    let id = app
        .submit_new(&json!({ "type": "noop", "payload": {}, "delay_seconds": 3600 }))
        .await;
    let (status, page) = app.get(&format!("/v1/jobs/export?ids={id}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let record = page["jobs"][0].clone();
    assert_eq!(record["job"]["id"], id.as_str(), "{page}");
    assert_eq!(record["job"]["payload"], json!({}), "{page}");

    // WHEN another tenant exports it by id, and imports it
    let theirs = app.as_caller(Some(&token("globex", &["admin"])));
    let (status, seen) = theirs.get(&format!("/v1/jobs/export?ids={id}")).await;
    assert_eq!(
        (status, &seen["jobs"]),
        (StatusCode::OK, &json!([])),
        "{seen}"
    );
    let (status, answer) = theirs
        .post_json("/v1/jobs/import", &json!({ "jobs": [record] }))
        .await;

    // THEN it sees nothing, and its import is refused for that job, naming the field
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["failed"], 1, "{answer}");
    assert_eq!(
        answer["results"][0]["error"]["field"], "jobs[0].job.tenant",
        "{answer}"
    );

    // AND a record that is not an exported job is named by its place, and nothing is written
    let admin = app.as_caller(Some(&token(TENANT, &["admin"])));
    let (status, answer) = admin
        .post_json(
            "/v1/jobs/import",
            &json!({ "jobs": [{ "job": { "id": id, "status": "sideways" } }] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["results"][0]["outcome"], "failed", "{answer}");
    let field = answer["results"][0]["error"]["field"]
        .as_str()
        .unwrap_or("");
    assert!(field.starts_with("jobs[0].job"), "{answer}");
    // (and a whole body out of bounds is refused as a whole)
    let (status, answer) = admin
        .post_json("/v1/jobs/import", &json!({ "jobs": [] }))
        .await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("jobs")),
        "{answer}"
    );
    // AND a reader may export but not import
    let reader = app.as_caller(Some(&token(TENANT, &["reader"])));
    let (status, _) = reader.get("/v1/jobs/export").await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) = reader
        .post_json("/v1/jobs/import", &json!({ "jobs": [page["jobs"][0]] }))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(app.get_job(&id).await["status"], "scheduled");
}
