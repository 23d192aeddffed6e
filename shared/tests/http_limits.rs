//! The HTTP API's limits, in-process over the embedded backend: a request that takes too long
//! is a 504, requests past the in-flight limit and submits past a full writer are 503s with
//! `Retry-After` (nothing is stored), a list page is capped in bytes, and `/healthz` names a
//! stopped writer. Every answer is the JSON error body.

use axum::body::{to_bytes, Body};
use axum::http::{Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use shared::adapters::embedded::{Durability, EmbeddedBackend, WAL_RESTART_BYTES};
use shared::domain::Tenant;
use shared::entrypoints::http::{router, ApiState, HttpLimits};
use shared::health::Health;
use shared::jobs::{BuiltinSettings, Registry};
use shared::service::JobService;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

struct App {
    router: Router,
    backend: EmbeddedBackend,
    _dir: tempfile::TempDir,
}

fn app(limits: HttpLimits, write_queue: usize) -> App {
    let dir = tempfile::tempdir().unwrap();
    let registry = Arc::new(Registry::builtin("conveyor-", &BuiltinSettings::default()));
    let backend = EmbeddedBackend::open_with(
        dir.path(),
        Durability::Process,
        WAL_RESTART_BYTES,
        write_queue,
        shared::adapters::queue_settings(
            &shared::Config::from_lookup(&|_| None).unwrap(),
            &registry,
        ),
    )
    .unwrap();
    let health = Arc::new(Health::new());
    let db = backend.db.clone();
    health.probe("writer", move || {
        db.writer_alive()
            .then_some(())
            .ok_or_else(|| "the database writer has stopped".to_string())
    });
    let ports = backend.ports();
    let auth = shared::auth::Authenticator::new(Default::default(), ports.keys.clone())
        .open(Tenant::parse("t").unwrap());
    let state = ApiState {
        service: JobService::new(ports, registry, 1024 * 1024),
        auth: Arc::new(auth),
        audit_retention: Duration::from_secs(3600),
        audit_submits: true,
        webhook_master: None,
        limits,
        health,
        live: Some(Arc::new(backend.feed.clone())),
        ws_url: None,
    };
    App {
        router: router(Arc::new(state)),
        backend,
        _dir: dir,
    }
}

const GENEROUS: HttpLimits = HttpLimits {
    timeout: Duration::from_secs(30),
    max_in_flight: 64,
};

async fn call(router: &Router, request: Request<Body>) -> (StatusCode, Option<String>, Value) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, retry_after, body)
}

fn submit(body: Value) -> Request<Body> {
    Request::post("/v1/jobs")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

/// Hold the database writer until the returned sender is dropped.
async fn hold_writer(backend: &EmbeddedBackend) -> (mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
    let (release, wait) = mpsc::channel::<()>();
    let (held_tx, held) = tokio::sync::oneshot::channel();
    let db = backend.db.clone();
    let task = tokio::spawn(async move {
        db.write(move |_| {
            let _ = held_tx.send(());
            let _ = wait.recv();
            Ok(())
        })
        .await
        .unwrap();
    });
    held.await.unwrap();
    (release, task)
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error body: {body}"))
}

#[tokio::test]
async fn a_request_that_takes_too_long_is_a_504_with_the_json_error() {
    // GIVEN a 200 ms request timeout and a writer that is held up
    let app = app(
        HttpLimits {
            timeout: Duration::from_millis(200),
            ..GENEROUS
        },
        8192,
    );
    let (release, held) = hold_writer(&app.backend).await;

    // WHEN a submit waits for its commit
    let (status, _, body) = call(&app.router, submit(json!({"type": "noop"}))).await;

    // THEN it is answered 504 timeout, saying to retry with the same key
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(error_code(&body), "timeout");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Idempotency-Key"));
    drop(release);
    held.await.unwrap();
}

#[tokio::test]
async fn requests_past_the_in_flight_limit_are_shed_with_retry_after() {
    // GIVEN one request allowed in flight, and a submit in flight (held at the writer)
    let app = app(
        HttpLimits {
            max_in_flight: 1,
            ..GENEROUS
        },
        8192,
    );
    let (release, held) = hold_writer(&app.backend).await;
    let first = tokio::spawn({
        let router = app.router.clone();
        async move { call(&router, submit(json!({"type": "noop"}))).await }
    });
    // (wait until the first request holds the only slot)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (status, retry_after, body) = loop {
        // (a request that awaits nothing, so it is never the one in flight when the submit
        // comes: `/v1/types` reads the paused types)
        let answer = call(&app.router, get("/v1/openapi.json")).await;
        if answer.0 != StatusCode::OK || tokio::time::Instant::now() > deadline {
            break answer;
        }
        tokio::task::yield_now().await;
    };

    // THEN another request is refused at once: 503 unavailable with Retry-After
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(error_code(&body), "unavailable");
    assert_eq!(retry_after.as_deref(), Some("1"));
    // AND the first one completes once the writer moves on
    drop(release);
    held.await.unwrap();
    assert_eq!(first.await.unwrap().0, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_submit_to_a_full_writer_is_refused_with_retry_after_and_stores_nothing() {
    // GIVEN a writer with room for one waiting write, held up, and one write waiting
    let app = app(GENEROUS, 1);
    let (release, held) = hold_writer(&app.backend).await;
    let mut waiting = Box::pin(app.backend.db.write(|_| Ok(())));
    // (polled once: it takes the one place in the writer's queue, then waits for its commit)
    assert!(futures::FutureExt::now_or_never(&mut waiting).is_none());

    // WHEN a job is submitted
    let (status, retry_after, body) = call(
        &app.router,
        submit(json!({"type": "noop", "idempotency_key": "k1"})),
    )
    .await;

    // THEN it is refused: 503 unavailable, Retry-After, nothing accepted
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(error_code(&body), "unavailable");
    assert_eq!(retry_after.as_deref(), Some("1"));
    drop(release);
    held.await.unwrap();
    waiting.await.unwrap();
    let (_, _, page) = call(&app.router, get("/v1/jobs")).await;
    assert_eq!(page["jobs"], json!([]), "{page}");
    // AND the same submit later is a new job (the key was never taken)
    let (status, _, _) = call(
        &app.router,
        submit(json!({"type": "noop", "idempotency_key": "k1"})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_list_page_is_capped_in_bytes_and_paging_reaches_every_job() {
    // GIVEN 25 jobs whose summaries are about 100 KiB each (2.5 MB in all: a long error from
    // an earlier attempt; a payload is not part of a listing), waiting
    let app = app(GENEROUS, 8192);
    let store = app.backend.ports().store;
    let filler = "x".repeat(100 * 1024);
    let mut submitted = vec![];
    for n in 0..25 {
        let mut job = shared::domain::Job::create(
            shared::domain::NewJob {
                tenant: shared::domain::Tenant::parse("t").unwrap(),
                job_type: shared::domain::JobType::parse("noop").unwrap(),
                priority: 0,
                payload: json!({ "n": n, "filler": filler }),
                max_attempts: 3,
                backoff: shared::domain::Backoff::new(
                    std::time::Duration::from_secs(1),
                    std::time::Duration::from_secs(60),
                ),
                timeout: std::time::Duration::from_secs(60),
                retention: std::time::Duration::from_secs(3600),
                idempotency_key: None,
                request_fingerprint: None,
                run_at: chrono::Utc::now() + chrono::Duration::seconds(600),
            },
            chrono::Utc::now(),
        );
        job.error = Some(shared::domain::JobError::retryable(format!(
            "{n}: {filler}"
        )));
        store.create(&job).await.unwrap();
        submitted.push(job.id.to_string());
    }

    // WHEN they are listed 500 at a time
    let mut seen = vec![];
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/v1/jobs?limit=500".to_string(),
            Some(c) => format!("/v1/jobs?limit=500&cursor={c}"),
        };
        let response = app.router.clone().oneshot(get(&path)).await.unwrap();
        let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        // THEN no page is much over 1 MiB (the cap, plus the job that crossed it)
        assert!(
            bytes.len() < 1024 * 1024 + 110 * 1024,
            "a page of {} bytes",
            bytes.len()
        );
        let page: Value = serde_json::from_slice(&bytes).unwrap();
        pages += 1;
        seen.extend(page["jobs"].as_array().unwrap().iter().map(|j| {
            assert!(j.get("payload").is_none(), "a listing carries no payload");
            j["id"].as_str().unwrap().to_string()
        }));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    // AND paging reaches every job exactly once, newest first
    assert!(pages >= 3, "{pages} pages");
    submitted.reverse();
    assert_eq!(seen, submitted);
}

#[tokio::test]
async fn health_is_a_503_naming_the_writer_once_it_has_stopped() {
    // GIVEN a healthy app
    let app = app(GENEROUS, 8192);
    let (status, _, body) = call(&app.router, get("/healthz")).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // WHEN its database writer stops
    app.backend.db.close().await;

    // THEN the health check is a 503 that names the writer
    let (status, _, body) = call(&app.router, get("/healthz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(error_code(&body), "unhealthy");
    assert_eq!(body["components"]["writer"]["ok"], false, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("writer"));
}
