//! The whole runtime on the AWS backend (`CONVEYOR_BACKEND=aws`) against a moto server: it
//! creates its table, bus and queues there, and jobs go through the HTTP API, SQS pollers,
//! the worker and DynamoDB exactly as on the embedded backend.

use crate::helpers::{aws_env, spawn_app_with, status_is, TestApp};
use serde_json::json;
use std::time::Duration;

async fn on_moto() -> TestApp {
    let env = aws_env();
    spawn_app_with(
        &env.iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
    )
    .await
}

#[tokio::test]
async fn jobs_run_end_to_end_on_the_aws_backend() {
    // GIVEN the runtime on moto
    let app = on_moto().await;

    // WHEN a no-op job, a job that fails for good and a job due in an hour are submitted
    let ok = app
        .submit_new(&json!({ "type": "noop", "payload": {} }))
        .await;
    let bad = app
        .submit_new(&json!({ "type": "http.fetch", "payload": { "url": "http://127.0.0.1:9/" }, "max_attempts": 1 }))
        .await;
    let later = app
        .submit_new(&json!({ "type": "noop", "payload": {}, "delay_seconds": 3600 }))
        .await;

    // THEN the first succeeds, the second ends with its error in its log, and the third can
    // be cancelled while it waits
    let done = app
        .wait_for_status(&ok, status_is("succeeded"), Duration::from_secs(30))
        .await;
    assert_eq!(done["attempt"], 1);
    let failed = app
        .wait_for_status(
            &bad,
            |j| j["status"] == "dead" || j["status"] == "failed",
            Duration::from_secs(30),
        )
        .await;
    assert!(failed["error"]["message"].is_string(), "{failed}");
    // (the log line follows the state change: wait for it)
    let logged = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.logs(&bad).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < logged,
            "no log line for {bad}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, cancelled) = app.cancel(&later).await;
    assert_eq!(
        (status.as_u16(), cancelled["status"].as_str()),
        (202, Some("cancelled"))
    );

    // AND listing and stats see all three, by the tenant's indexes
    let listed = app.list("").await;
    assert_eq!(listed["jobs"].as_array().map(Vec::len), Some(3), "{listed}");
    let only_done = app.list("status=succeeded").await;
    assert_eq!(only_done["jobs"][0]["id"], ok.as_str());
    let stats = app.stats_when(|s| s["total"] == 3).await;
    assert_eq!(stats["total"], 3, "{stats}");
}

#[tokio::test]
async fn bootstrap_creates_the_resources_once_and_can_run_again() {
    // GIVEN an empty moto server and names of this test's own
    let endpoint = crate::moto::endpoint();
    let id = ulid::Ulid::new().to_string().to_lowercase();
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_conveyor-under-test"))
            .arg("bootstrap")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CONVEYOR_BACKEND", "aws")
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("CONVEYOR_TABLE", format!("jobs-{id}"))
            .env("CONVEYOR_EVENT_BUS", format!("bus-{id}"))
            .env("CONVEYOR_QUEUE_PREFIX", format!("b{id}-"))
            .output()
            .expect("run conveyor bootstrap")
    };

    // WHEN `conveyor bootstrap` runs, and runs again
    let first = run();
    let second = run();

    // THEN both succeed and say what they made; the queues are there, with their DLQs
    for out in [&first, &second] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("table jobs-{id}")));
    }
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(shared::adapters::aws::http_client())
        .endpoint_url(&endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            "test", "test", None, None, "e2e",
        ))
        .load()
        .await;
    let queues = aws_sdk_sqs::Client::new(&sdk)
        .list_queues()
        .queue_name_prefix(format!("b{id}-"))
        .send()
        .await
        .unwrap()
        .queue_urls
        .unwrap_or_default();
    assert!(
        queues.iter().any(|q| q.ends_with(&format!("b{id}-noop"))),
        "{queues:?}"
    );
    assert!(
        queues
            .iter()
            .any(|q| q.ends_with(&format!("b{id}-noop-dlq"))),
        "{queues:?}"
    );
}
