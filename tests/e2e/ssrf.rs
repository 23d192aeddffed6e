//! Outbound calls reach public addresses only (unless `CONVEYOR_OUTBOUND_ALLOW` lists the
//! network): loopback, the instance metadata address, private addresses, a name that resolves
//! to loopback and a redirect to loopback all fail permanently, and no request reaches them.

use crate::helpers::{spawn_app, status_is, TestApp, TestServer};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Submit a job of `job_type` to `url` and wait for it to end failed.
async fn fails(app: &TestApp, job_type: &str, url: &str) -> Value {
    let payload = match job_type {
        "webhook.deliver" => json!({ "url": url, "body": { "n": 1 } }),
        _ => json!({ "url": url }),
    };
    let id = app
        .submit_new(&json!({ "type": job_type, "payload": payload, "max_attempts": 3 }))
        .await;
    app.wait_for_status(&id, status_is("failed"), Duration::from_secs(15))
        .await
}

fn assert_refused(job: &Value, address: &str) {
    assert_eq!(job["attempt"], 1, "{job}");
    assert_eq!(job["error"]["kind"], "outbound_refused", "{job}");
    assert_eq!(job["error"]["retryable"], false, "{job}");
    let message = job["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(address) && message.contains("CONVEYOR_OUTBOUND_ALLOW"),
        "{job}"
    );
}

#[tokio::test]
async fn inner_addresses_are_refused_before_any_request() {
    // GIVEN a runtime that allows no inner network, and a server on loopback counting requests
    let server = TestServer::ok().await;
    let app = spawn_app(&[("CONVEYOR_OUTBOUND_ALLOW", "")]).await;
    let port = server.url("").rsplit(':').next().unwrap().to_string();

    // WHEN jobs are sent to loopback (by address and by a name that resolves to it), the
    // instance metadata address and a private address
    let cases = [
        ("http.fetch", server.url("/x"), "127.0.0.1"),
        ("webhook.deliver", server.url("/hook"), "127.0.0.1"),
        (
            "http.fetch",
            format!("http://localhost:{port}/x"),
            "localhost",
        ),
        ("http.fetch", format!("http://[::1]:{port}/x"), "::1"),
        (
            "http.fetch",
            "http://169.254.169.254/latest/meta-data/".to_string(),
            "169.254.169.254",
        ),
        ("http.fetch", "http://10.0.0.1/".to_string(), "10.0.0.1"),
    ];
    for (job_type, url, address) in cases {
        // THEN each fails on its first attempt, permanently, saying what was refused and why
        let job = fails(&app, job_type, &url).await;
        assert_refused(&job, address);
    }
    // AND nothing reached the server
    assert_eq!(server.request_count(), 0);
}

/// A server on `ip` that answers every request with `answer` and counts them.
async fn serve(ip: &str, answer: axum::response::Response) -> (String, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let answer = Arc::new(std::sync::Mutex::new(Some(answer)));
    let app = axum::Router::new().fallback(move || {
        let (seen, answer) = (seen.clone(), answer.clone());
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            answer
                .lock()
                .unwrap()
                .take()
                .unwrap_or_else(|| axum::response::IntoResponse::into_response("again"))
        }
    });
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, count)
}

#[tokio::test]
async fn a_redirect_to_an_inner_address_is_refused_at_that_hop() {
    // GIVEN an allowed server (127.0.0.1) that redirects to another loopback address
    // (127.0.0.2), which is not allowed and counts what reaches it
    let (inner, reached) = serve(
        "127.0.0.2",
        axum::response::IntoResponse::into_response("inner"),
    )
    .await;
    let redirect = axum::response::Redirect::temporary(&format!("{inner}/secret"));
    let (outer, asked) = serve(
        "127.0.0.1",
        axum::response::IntoResponse::into_response(redirect),
    )
    .await;
    let app = spawn_app(&[]).await;

    // WHEN http.fetch follows it
    let job = fails(&app, "http.fetch", &format!("{outer}/start")).await;

    // THEN the first hop was asked, the redirect refused, and nothing reached the inner server
    assert_refused(&job, "127.0.0.2");
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    assert_eq!(reached.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_timeout_or_a_size_past_its_bound_is_refused_at_submit() {
    // GIVEN a runtime reading at most 1 KiB of a body
    let app = spawn_app(&[("CONVEYOR_FETCH_MAX_BYTES", "1024")]).await;
    for (payload, field) in [
        (
            json!({ "url": "https://example.com/", "timeout_ms": 900_001 }),
            "payload.timeout_ms",
        ),
        (
            json!({ "url": "https://example.com/", "max_bytes": 1025 }),
            "payload.max_bytes",
        ),
    ] {
        // WHEN a fetch asks for more
        let (status, body) = app
            .send(
                app.client
                    .post(app.url("/v1/jobs"))
                    .json(&json!({ "type": "http.fetch", "payload": payload })),
            )
            .await;
        // THEN it is a 400 naming the field
        assert_eq!(status.as_u16(), 400, "{body}");
        assert_eq!(body["error"]["field"], field, "{body}");
    }
}
