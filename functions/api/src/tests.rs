//! The `api` function as shipped (the shared crate without `handlers`: the shipped types only
//! check payloads here), driven by API Gateway HTTP API events on the AWS adapters against the
//! suite's emulator.

use serde_json::{json, Value};
use shared::ports::QueueConsumer;
use std::time::Duration;
use tower::ServiceExt;

#[path = "../../../shared/tests/support/moto.rs"]
mod moto;

/// An API Gateway HTTP API (payload 2.0) event for `POST /v1/jobs` with `body`, as the
/// authorizer let it through for tenant acme, a submitter.
fn submit_event(body: &Value) -> lambda_http::Request {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/apigw-http-submit.json"
    );
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(fixture).unwrap())
        .expect("the fixture is JSON");
    event["body"] = Value::String(body.to_string());
    lambda_http::request::from_str(&event.to_string()).expect("an API Gateway event")
}

async fn call(app: &axum::Router, request: lambda_http::Request) -> (u16, Value) {
    let response = app.clone().oneshot(request).await;
    let response = response.expect("the router answers");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_api_function_checks_payloads_of_types_it_cannot_run_and_queues_them() {
    // GIVEN the api function's app, built as its main builds it, on a table and queues of its
    // own on the emulator (this test binary's only test: the settings are its environment)
    let id = ulid::Ulid::new().to_string().to_lowercase();
    for (name, value) in [
        ("CONVEYOR_BACKEND", "aws".to_string()),
        ("AWS_ENDPOINT_URL", moto::endpoint()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("CONVEYOR_TABLE", format!("jobs-{id}")),
        ("CONVEYOR_EVENT_BUS", format!("bus-{id}")),
        ("CONVEYOR_QUEUE_PREFIX", format!("a{id}-")),
        (
            "CONVEYOR_WEBHOOK_SECRET",
            "api-test-master-key-of-32-bytes-or-more".into(),
        ),
    ] {
        std::env::set_var(name, value);
    }
    let config = shared::Config::from_env().expect("settings");
    let registry = shared::jobs::Registry::builtin(
        &config.queue_prefix,
        &shared::jobs::BuiltinSettings::from_config(&config),
    );
    let sdk = shared::adapters::aws::sdk_config_from_env().await;
    let backend = shared::adapters::aws::AwsBackend::new(
        &sdk,
        shared::adapters::aws::AwsSettings::of(&config),
    );
    backend
        .bootstrap(&shared::adapters::queue_specs(&config, &registry))
        .await
        .expect("bootstrap on the emulator");
    let app = super::app(&config).await.expect("the app");

    // WHEN an http.fetch job with a URL that is no URL is submitted
    let (status, refused) = call(
        &app,
        submit_event(&json!({ "type": "http.fetch", "payload": { "url": "not a url" } })),
    )
    .await;
    // THEN it is refused as the type's own check refuses it, naming the field
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["field"], "payload.url", "{refused}");

    // WHEN a valid one is submitted
    let (status, job) = call(
        &app,
        submit_event(
            &json!({ "type": "http.fetch", "payload": { "url": "https://example.com/" } }),
        ),
    )
    .await;
    // THEN it is accepted for the tenant the authorizer named, queued, and once the table's
    // stream is read (the `stats` function's part: the table's outbox), its message is on the
    // type's queue for the worker function (which alone runs it)
    assert_eq!(status, 202, "{job}");
    assert_eq!(
        (job["tenant"].as_str(), job["status"].as_str()),
        (Some("acme"), Some("queued")),
        "{job}"
    );
    let registry = std::sync::Arc::new(registry);
    backend
        .stream_reader()
        .with_outbox(std::sync::Arc::new(shared::lifecycle::Messages::new(
            backend.queue.clone(),
            registry.clone(),
        )))
        .catch_up()
        .await
        .expect("reading the table's stream");
    let queue = registry
        .get("http.fetch")
        .map(|r| registry.queue_name(&r.job_type))
        .expect("http.fetch is a shipped type");
    let messages = backend
        .queue
        .receive(&queue, 10, Duration::from_secs(30), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].body.contains(job["id"].as_str().unwrap()),
        "{:?}",
        messages[0]
    );
}
