//! What an attacker tried, each answered: dev mode driven by another web page, WebSocket
//! floods, a scan used to learn inner addresses, refusals that fill the audit trail, too many
//! schedules, a schedule whose arithmetic overflows, and an identity provider's token that
//! claims the operator role.

use crate::helpers::{client_for, spawn_app, status_is, token, TestApp};
use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// The runtime in dev mode: no credential configured, on 127.0.0.1.
async fn dev_mode() -> TestApp {
    spawn_app(&[("CONVEYOR_JWT_SECRET", "")]).await
}

async fn raw(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = client_for(None).request(method, app.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    let response = request.send().await.expect("the runtime answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn dev_mode_answers_only_this_machines_own_requests() {
    let app = dev_mode().await;
    let cancel_all = r#"{"action": "cancel", "filter": {}}"#;
    let json = ("content-type", "application/json");
    // WHEN another page posts a bulk cancel as a "simple" request (no preflight): text/plain,
    // no content type, or a rebound name for the host; or a proxy forwards one
    for (headers, field) in [
        (vec![("content-type", "text/plain")], "content-type"),
        (vec![], "content-type"),
        (vec![json, ("host", "evil.example")], "host"),
        (vec![json, ("host", "rebound.example:3000")], "host"),
        (vec![json, ("x-forwarded-for", "203.0.113.9")], "forwarded"),
    ] {
        let (status, answer) = raw(
            &app,
            reqwest::Method::POST,
            "/v1/jobs/bulk",
            &headers,
            Some(cancel_all),
        )
        .await;
        // THEN each is refused, naming why
        assert_eq!(status, StatusCode::FORBIDDEN, "{headers:?}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{headers:?}: {answer}");
    }
    // AND a rebound name cannot read the webhook secret
    let (status, _) = raw(
        &app,
        reqwest::Method::GET,
        "/v1/webhook-secret",
        &[("host", "rebound.example")],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // AND a WebSocket from another page's origin is not opened
    let url = app.url("/ws").replace("http", "ws");
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            url.as_str(),
        )
        .unwrap();
    request
        .headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(request).await.is_err());
    // WHEN this machine's own client asks, as the CLI and the dashboard do
    let (status, job) = raw(
        &app,
        reqwest::Method::POST,
        "/v1/jobs",
        &[json, ("host", "localhost")],
        Some(r#"{"type": "noop"}"#),
    )
    .await;
    // THEN it is done
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let url = app.url("/ws").replace("http", "ws");
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            url.as_str(),
        )
        .unwrap();
    let origin = app.url("").trim_end_matches('/').to_string();
    request
        .headers_mut()
        .insert("origin", origin.parse().unwrap());
    assert!(tokio_tungstenite::connect_async(request).await.is_ok());
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn socket(app: &TestApp, credential: &str) -> Result<Socket, String> {
    let url = app
        .url(&format!("/ws?token={credential}"))
        .replace("http", "ws");
    tokio_tungstenite::connect_async(url)
        .await
        .map(|s| s.0)
        .map_err(|e| e.to_string())
}

/// The next text frame, as JSON (`None`: the connection ended, or nothing came in 5 s).
async fn next(socket: &mut Socket) -> Option<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).ok(),
            Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => return None,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

#[tokio::test]
async fn websockets_are_bounded_in_size_count_and_subscriptions() {
    // GIVEN a runtime holding at most 3 live connections of a tenant
    let app = spawn_app(&[("CONVEYOR_LIVE_MAX_PER_TENANT", "3")]).await;
    let reader = token("acme", &["reader"]);
    let mut held = vec![];
    for _ in 0..3 {
        held.push(
            socket(&app, &reader)
                .await
                .expect("within the tenant's connections"),
        );
    }
    // WHEN the tenant opens one more, and follows an event stream past them
    let refused = socket(&app, &reader).await;
    let (status, answer) = app
        .as_caller(Some(&reader))
        .get("/v1/events?all=true")
        .await;
    // THEN both are refused, and another tenant is not held back
    assert!(
        refused.is_err_and(|e| e.contains("429")),
        "a fourth was opened"
    );
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert_eq!(answer["error"]["code"], "too_many_connections", "{answer}");
    let mut other = socket(&app, &token("globex", &["reader"])).await.unwrap();

    // WHEN one connection subscribes to more than 100 jobs (ids of jobs that do not exist are
    // answered not_found, so it subscribes to its tenant's "all" and real jobs)
    let submitter = app.as_caller(Some(&token("globex", &["submitter"])));
    let mut ids = vec![];
    for _ in 0..101 {
        let (status, job) = submitter
            .post_json(
                "/v1/jobs",
                &json!({ "type": "noop", "delay_seconds": 3600 }),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    let mut answers = vec![];
    for id in &ids {
        other
            .send(Message::Text(
                json!({ "action": "subscribe", "job_id": id })
                    .to_string()
                    .into(),
            ))
            .await
            .unwrap();
        answers.push(next(&mut other).await.expect("an answer"));
    }
    // THEN the first 100 are subscribed and the one past them refused
    assert!(
        answers[..100].iter().all(|a| a["type"] == "subscribed"),
        "{answers:?}"
    );
    assert_eq!(
        answers[100]["code"], "too_many_subscriptions",
        "{}",
        answers[100]
    );

    // WHEN a client sends a frame of 1 MiB
    let mut flooder = held.pop().unwrap();
    let _ = flooder
        .send(Message::Text("x".repeat(1 << 20).into()))
        .await;
    // THEN the connection is closed, and its place is free again
    assert!(next(&mut flooder).await.is_none());
    let mut again = None;
    for _ in 0..50 {
        if let Ok(s) = socket(&app, &reader).await {
            again = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(again.is_some(), "the flooder's place was not given back");
}

#[tokio::test]
async fn a_scan_tells_nothing_of_inner_addresses() {
    // GIVEN a deployment that may reach no inner address
    let app = spawn_app(&[("CONVEYOR_OUTBOUND_ALLOW", "")]).await;
    // WHEN a scan of a name that resolves only to inner addresses runs
    let id = app
        .submit_new(&json!({ "type": "scan.domain", "payload": { "domain": "localhost" } }))
        .await;
    let job = app
        .wait_for_status(&id, status_is("failed"), Duration::from_secs(30))
        .await;
    // THEN it fails for good, saying the name is an inner one but not what it resolves to
    let message = job["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("localhost") && message.contains("loopback"),
        "{job}"
    );
    for inner in ["127.0.0.1", "::1"] {
        assert!(!job.to_string().contains(inner), "{job}");
    }
    assert_eq!(job["attempt"], 1, "{job}");
}

#[tokio::test]
async fn a_flood_of_refused_credentials_costs_a_row_a_minute() {
    let app = spawn_app(&[]).await;
    // WHEN one source sends 40 requests with made-up tokens
    let forged = app.as_caller(Some("made-up-token"));
    for _ in 0..40 {
        assert_eq!(forged.get("/v1/jobs").await.0, StatusCode::UNAUTHORIZED);
    }
    // THEN the refusals no tenant could be told for hold at most two entries for them (the
    // first of a minute at once; the rest come as one entry counting them when it is over)
    let operator = app.as_caller(Some(&token("ops", &["operator"])));
    let (status, trail) = operator.get("/v1/audit?anonymous=true").await;
    assert_eq!(status, StatusCode::OK, "{trail}");
    let refusals: Vec<&Value> = trail["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "unauthorized")
        .collect();
    assert!(
        (1..=2).contains(&refusals.len()),
        "{} entries: {trail:#}",
        refusals.len()
    );
    // AND a tenant's admin may not read them
    let admin = app.as_caller(Some(&token("acme", &["admin"])));
    assert_eq!(
        admin.get("/v1/audit?anonymous=true").await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn a_tenant_has_at_most_its_schedules_and_a_schedule_that_overflows_is_refused() {
    let app = spawn_app(&[("CONVEYOR_TENANT_MAX_SCHEDULES", "2")]).await;
    let acme = app.as_caller(Some(&token("acme", &["submitter", "reader"])));
    // WHEN a schedule's rate is past what a time can add (it once stopped the scheduler)
    let (status, answer) = acme
        .post_json(
            "/v1/schedules",
            &json!({ "name": "a", "type": "noop", "rate": "4294967295 days" }),
        )
        .await;
    // THEN it is refused naming the field, and the schedules still list
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["field"], "rate", "{answer}");
    assert_eq!(acme.get("/v1/schedules").await.0, StatusCode::OK);
    // WHEN the tenant makes three
    let mut statuses = vec![];
    for name in ["one", "two", "three"] {
        let (status, _) = acme
            .post_json(
                "/v1/schedules",
                &json!({ "name": name, "type": "noop", "rate": "1 hour" }),
            )
            .await;
        statuses.push(status);
    }
    // THEN the third is past its most
    assert_eq!(
        statuses,
        [
            StatusCode::CREATED,
            StatusCode::CREATED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    // AND another tenant is not held back
    let globex = app.as_caller(Some(&token("globex", &["submitter"])));
    let (status, _) = globex
        .post_json(
            "/v1/schedules",
            &json!({ "name": "one", "type": "noop", "rate": "1 hour" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
}
