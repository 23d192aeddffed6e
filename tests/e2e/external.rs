//! External job types end to end: the Python example (`examples/python-worker/worker.py`) run as
//! a real process and declared as `py.echo` and `py.long`, its jobs submitted and run through
//! it on each backend: results, retries on a 500 and on no answer in time, a 400 failing for
//! good, progress with the job token (on the job and over WebSocket), a cancel the handler sees
//! through its token, a result posted later; tokens held to their job and attempt; the outbound
//! guard; and tenants kept apart.

use crate::helpers::{
    client_for, spawn_app, spawn_app_on_aws, spawn_app_with, status_is, token, TestApp, TestServer,
    TENANT,
};
use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

const WAIT: Duration = Duration::from_secs(180);

/// The example handler, running: where it listens, and what it printed.
struct PythonWorker {
    url: String,
    printed: Arc<Mutex<Vec<String>>>,
    _child: tokio::process::Child,
}

impl PythonWorker {
    /// Start the example with the tenant's signing secret, on a free port.
    async fn start(app: &TestApp) -> Self {
        let (status, secrets) = app.get("/v1/webhook-secret").await;
        assert_eq!(status, StatusCode::OK, "{secrets}");
        let secret = secrets["secrets"][0]["secret"]
            .as_str()
            .unwrap()
            .to_string();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/python-worker/worker.py"
        );
        let mut child = tokio::process::Command::new("python3")
            .arg(script)
            .env("SIGNING_SECRET", secret)
            .env("PORT", "0")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs the example");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("the example says where it listens")
            .unwrap()
            .unwrap();
        let url = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{first}"))
            .to_string();
        let printed = Arc::new(Mutex::new(vec![]));
        let keep = printed.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                keep.lock().unwrap().push(line);
            }
        });
        Self {
            url: format!("{url}/"),
            printed,
            _child: child,
        }
    }

    fn printed(&self) -> Vec<String> {
        self.printed.lock().unwrap().clone()
    }
}

/// Declare `name` for the suite's tenant, its attempts POSTed to `url`.
async fn declare(app: &TestApp, name: &str, body: Value) -> (StatusCode, Value) {
    let admin = app.as_caller(Some(&token(TENANT, &["admin"])));
    admin
        .send(
            admin
                .client
                .put(app.url(&format!("/v1/types/{name}")))
                .json(&body),
        )
        .await
}

async fn submit(app: &TestApp, job_type: &str, payload: Value) -> String {
    let (status, job) = app
        .submit(&json!({ "type": job_type, "payload": payload }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    job["id"].as_str().unwrap().to_string()
}

fn ended(job: &Value) -> bool {
    matches!(
        job["status"].as_str(),
        Some("succeeded" | "failed" | "dead" | "cancelled")
    )
}

async fn jobs_through_the_python_example(app: &TestApp) {
    // GIVEN the example running, declared as py.echo (10 s an attempt: the worker's own reads
    // count too, and an emulator busy with the suite has taken seconds over them) and py.long
    let worker = PythonWorker::start(app).await;
    let quick = json!({
        "handler": { "url": worker.url },
        "timeout_ms": 10000,
        "max_attempts": 3,
        "backoff": { "base_ms": 100, "cap_ms": 200 },
    });
    let (status, declared) = declare(app, "py.echo", quick.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{declared}");
    assert_eq!(declared["external"], true, "{declared}");
    let (status, _) = declare(app, "py.echo", quick).await;
    assert_eq!(status, StatusCode::OK, "declared again: replaced");
    let (status, declared) = declare(
        app,
        "py.long",
        json!({ "handler": { "url": worker.url }, "timeout_ms": 60000, "max_attempts": 1 }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{declared}");
    let (_, types) = app.get("/v1/types").await;
    let listed: Vec<&str> = types["types"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["external"] == true)
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["py.echo", "py.long"], "{types}");

    // WHEN 100 jobs are submitted to it, THEN each succeeds with the handler's answer
    let (status, batch) = app
        .send(app.client.post(app.url("/v1/jobs/batch")).timeout(Duration::from_secs(120)).json(&json!({
            "jobs": (0..100).map(|i| json!({ "type": "py.echo", "payload": { "i": i } })).collect::<Vec<_>>(),
        })))
        .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    for (i, item) in batch["results"].as_array().unwrap().iter().enumerate() {
        let id = item["job"]["id"].as_str().unwrap();
        let job = app.wait_for_status(id, status_is("succeeded"), WAIT).await;
        assert_eq!(job["result"], json!({ "echo": { "i": i } }), "{job}");
    }

    // AND a 500 is retried and then succeeds; no answer in time is retried too; a 400 fails the
    // job for good, with the handler's body
    let flaky = submit(app, "py.echo", json!({ "fail_first": true })).await;
    let slow = submit(
        app,
        "py.echo",
        json!({ "sleep_ms": 12000, "sleep_first": true }),
    )
    .await;
    let refused = submit(app, "py.echo", json!({ "reject": "no such customer" })).await;
    let job = app
        .wait_for_status(&flaky, status_is("succeeded"), WAIT)
        .await;
    assert_eq!(job["attempt"], 2, "{job}");
    let job = app
        .wait_for_status(&slow, status_is("succeeded"), WAIT)
        .await;
    assert_eq!(job["attempt"], 2, "{job}");
    let job = app.wait_for_status(&refused, ended, WAIT).await;
    assert_eq!(
        (job["status"].as_str(), job["attempt"].as_u64()),
        (Some("failed"), Some(1)),
        "{job}"
    );
    let message = job["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("400") && message.contains("no such customer"),
        "{job}"
    );

    // AND a long job answered 202 reports its progress with its token (on the job, and over
    // WebSocket), and succeeds with the result it posts later
    let ws_url = app
        .url(&format!("/ws?token={}", token(TENANT, &["reader"])))
        .replace("http", "ws");
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    let long = submit(app, "py.long", json!({ "steps": 6, "step_ms": 300 })).await;
    socket
        .send(tokio_tungstenite::tungstenite::Message::Text(
            json!({ "action": "subscribe", "job_id": long })
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    let running = app
        .wait_for_status(
            &long,
            |j| j["status"] == "running" && j["progress"]["percent"].as_u64().unwrap_or(0) > 0,
            WAIT,
        )
        .await;
    assert!(
        running["progress"]["message"]
            .as_str()
            .unwrap()
            .starts_with("step "),
        "{running}"
    );
    let mut pushed = vec![];
    let deadline = tokio::time::Instant::now() + WAIT;
    while pushed.len() < 2 && tokio::time::Instant::now() < deadline {
        let Ok(Some(Ok(frame))) = tokio::time::timeout(WAIT, socket.next()).await else {
            break;
        };
        let text = frame.into_text().unwrap_or_default();
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let messages = match v["type"].as_str() {
            Some("batch") => v["messages"].as_array().unwrap().clone(),
            _ => vec![v],
        };
        for m in messages {
            if m["type"] == "job" && m["job"]["id"] == long.as_str() {
                if let Some(p) = m["job"]["progress"]["percent"].as_u64() {
                    if !pushed.contains(&p) {
                        pushed.push(p);
                    }
                }
            }
        }
    }
    assert!(
        pushed.len() >= 2,
        "progress pushed over WebSocket: {pushed:?}"
    );
    let done = app
        .wait_for_status(&long, status_is("succeeded"), WAIT)
        .await;
    assert_eq!(done["result"]["steps"], 6, "{done}");
    assert_eq!(done["progress"]["percent"], 100, "{done}");

    // AND a running long job cancelled is seen by the handler through its token, and ends
    // cancelled
    let cancelled = submit(app, "py.long", json!({ "steps": 100, "step_ms": 200 })).await;
    app.wait_for_status(
        &cancelled,
        |j| j["progress"]["percent"].as_u64().unwrap_or(0) > 0,
        WAIT,
    )
    .await;
    let (status, body) = app.post(&format!("/v1/jobs/{cancelled}/cancel")).await;
    assert!(status.is_success(), "{body}");
    let job = app.wait_for_status(&cancelled, ended, WAIT).await;
    assert_eq!(job["status"], "cancelled", "{job}");
    let seen = format!("cancel seen for {cancelled}");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !worker.printed().contains(&seen) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            worker.printed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_job_token_holds_for_its_own_attempt_only(app: &TestApp) {
    // GIVEN a handler that answers every call 202 (and keeps the calls), declared as t.later
    let handler = TestServer::answering(&[], 202).await;
    let (status, body) = declare(
        app,
        "t.later",
        json!({ "handler": { "url": handler.url("/") }, "timeout_ms": 30000, "max_attempts": 1 }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // WHEN two of its jobs have been called
    let (a, b) = (
        submit(app, "t.later", json!({})).await,
        submit(app, "t.later", json!({})).await,
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    let calls = loop {
        let calls: Vec<Value> = handler
            .requests()
            .iter()
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect();
        if calls.len() >= 2 {
            break calls;
        }
        assert!(tokio::time::Instant::now() < deadline, "{calls:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let token_of = |id: &str| {
        calls.iter().find(|c| c["job"]["id"] == id).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let api = calls[0]["api"].as_str().unwrap().to_string();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let post = |id: String, route: &'static str, bearer: String, body: Value| {
        let (http, api) = (http.clone(), api.clone());
        async move {
            let r = http
                .post(format!("{api}/v1/jobs/{id}/handler/{route}"))
                .bearer_auth(bearer)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // THEN a's token is refused on b, and an ordinary credential on a
    let (status, body) = post(b.clone(), "heartbeat", token_of(&a), json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = post(a.clone(), "heartbeat", token(TENANT, &["admin"]), json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // AND with its own token a is completed, once
    let (status, body) = post(a.clone(), "heartbeat", token_of(&a), json!({})).await;
    assert_eq!(
        (status, &body["cancel_requested"]),
        (StatusCode::OK, &json!(false)),
        "{body}"
    );
    let (status, body) = post(
        a.clone(),
        "complete",
        token_of(&a),
        json!({ "result": { "ok": 1 } }),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job = app.wait_for_status(&a, status_is("succeeded"), WAIT).await;
    assert_eq!(job["result"], json!({ "ok": 1 }), "{job}");
    // AND once its attempt has ended, its token gets a 403 on every route
    for route in ["heartbeat", "progress", "complete"] {
        let (status, body) = post(
            a.clone(),
            route,
            token_of(&a),
            json!({ "percent": 50, "result": 1 }),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{route}: {body}");
    }
    // AND b fails with the error its handler posts
    let (status, _) = post(
        b.clone(),
        "complete",
        token_of(&b),
        json!({ "error": { "message": "the ledger said no" } }),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let job = app.wait_for_status(&b, ended, WAIT).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["message"], "the ledger said no", "{job}");
}

async fn tenants_keep_their_types_apart(app: &TestApp) {
    // GIVEN the suite's tenant's py.echo, and another tenant's admin
    let other = app.as_caller(Some(&token("globex", &["admin"])));
    // THEN the other tenant does not see it, cannot submit to it, nor delete it
    let (status, body) = other.get("/v1/types/py.echo").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = other
        .send(
            other
                .client
                .post(app.url("/v1/jobs"))
                .json(&json!({ "type": "py.echo", "payload": {} })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "type", "{body}");
    let (status, body) = other
        .send(other.client.delete(app.url("/v1/types/py.echo")))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // AND its own declaration of the name is its own: the first tenant's stays as it was
    let (status, body) = other
        .send(
            other
                .client
                .put(app.url("/v1/types/py.echo"))
                .json(&json!({ "handler": { "url": "http://127.0.0.1:9/" } })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, mine) = app.get("/v1/types/py.echo").await;
    assert_ne!(mine["handler"]["url"], "http://127.0.0.1:9/", "{mine}");
    // AND a shipped type's name, or the deployment's own, cannot be taken
    for name in ["http.fetch", "conveyor.mine"] {
        let (status, body) = declare(
            app,
            name,
            json!({ "handler": { "url": "http://127.0.0.1:9/" } }),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {body}");
        assert_eq!(body["error"]["field"], "type", "{body}");
    }
    // AND a declaration is removed by its tenant's admin
    let admin = app.as_caller(Some(&token(TENANT, &["admin"])));
    let (status, body) = admin
        .send(admin.client.delete(app.url("/v1/types/t.later")))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = app.get("/v1/types/t.later").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn external_types_run_through_a_python_handler() {
    let app = spawn_app(&[("CONVEYOR_OUTBOUND_ALLOW", "127.0.0.1")]).await;
    jobs_through_the_python_example(&app).await;
    a_job_token_holds_for_its_own_attempt_only(&app).await;
    tenants_keep_their_types_apart(&app).await;
}

#[tokio::test]
async fn external_types_run_through_a_python_handler_on_the_aws_backend() {
    let app = spawn_app_on_aws(&[("CONVEYOR_OUTBOUND_ALLOW", "127.0.0.1")]).await;
    jobs_through_the_python_example(&app).await;
    a_job_token_holds_for_its_own_attempt_only(&app).await;
    tenants_keep_their_types_apart(&app).await;
}

#[tokio::test]
async fn a_handler_on_loopback_is_refused_unless_allowed() {
    // GIVEN a runtime whose outbound guard allows no private address
    let app = spawn_app_with(&[("CONVEYOR_OUTBOUND_ALLOW", "")]).await;
    // WHEN a type is declared with a handler on loopback, THEN it is refused, naming the field
    let (status, body) = declare(
        &app,
        "py.echo",
        json!({ "handler": { "url": "http://127.0.0.1:8000/" } }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "handler.url", "{body}");
    // AND a bad declaration names its field
    for (body, field) in [
        (json!({}), "handler"),
        (json!({ "handler": { "url": "ftp://x" } }), "handler.url"),
        (
            json!({ "handler": { "url": "https://example.com" }, "timeout_ms": 0 }),
            "timeout_ms",
        ),
        (
            json!({ "handler": { "url": "https://example.com" }, "rate": { "per": 1 } }),
            "rate.period_ms",
        ),
        // (a Lambda function is a handler on the AWS backend only)
        (
            json!({ "handler": { "lambda": "arn:aws:lambda:us-east-1:000000000000:function:conveyor-handler-x" } }),
            "handler.lambda",
        ),
    ] {
        let (status, answer) = declare(&app, "py.echo", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
}

#[tokio::test]
async fn dev_mode_calls_a_handler_on_loopback() {
    // GIVEN the runtime in dev mode (no credential configured: it serves only loopback), its
    // outbound guard allowing no private address, and the example handler on loopback
    let mut app =
        spawn_app_with(&[("CONVEYOR_JWT_SECRET", ""), ("CONVEYOR_OUTBOUND_ALLOW", "")]).await;
    app.client = client_for(None);
    let worker = PythonWorker::start(&app).await;
    // WHEN a type is declared with that handler, THEN it is taken
    let (status, declared) =
        declare(&app, "py.echo", json!({ "handler": { "url": worker.url } })).await;
    assert_eq!(status, StatusCode::CREATED, "{declared}");
    // AND its job is run there
    let id = submit(&app, "py.echo", json!({ "n": 1 })).await;
    let job = app.wait_for_status(&id, status_is("succeeded"), WAIT).await;
    assert_eq!(job["result"], json!({ "echo": { "n": 1 } }), "{job}");
}
