//! Live updates end to end: a real WebSocket client on `/ws`, and server-sent events on
//! `/v1/events`, against the running runtime.

use crate::helpers::{spawn_app, spawn_app_with, status_is, token, TestApp, TENANT};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const WAIT: Duration = Duration::from_secs(30);

/// A WebSocket client of `app`, with `credential` in `?token=`.
async fn connect(app: &TestApp, credential: &str) -> Socket {
    let url = app
        .url(&format!("/ws?token={credential}"))
        .replace("http", "ws");
    tokio_tungstenite::connect_async(url)
        .await
        .expect("the WebSocket upgrade is accepted")
        .0
}

async fn send(socket: &mut Socket, frame: Value) {
    socket
        .send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
}

/// The next messages, a `batch` frame unpacked; `None` when nothing came within `wait`.
async fn next_messages(socket: &mut Socket, wait: Duration) -> Option<Vec<Value>> {
    loop {
        let frame = tokio::time::timeout(wait, socket.next()).await.ok()??;
        let text = match frame.ok()? {
            Message::Text(t) => t,
            Message::Close(_) => return None,
            _ => continue,
        };
        let v: Value = serde_json::from_str(&text).expect("a JSON message");
        return Some(match v["type"].as_str() {
            Some("batch") => v["messages"].as_array().unwrap().clone(),
            _ => vec![v],
        });
    }
}

/// The reply to a frame (the first message that is not a job change).
async fn reply(socket: &mut Socket) -> Value {
    loop {
        let messages = next_messages(socket, WAIT).await.expect("a reply");
        if let Some(r) = messages
            .into_iter()
            .find(|m| !matches!(m["type"].as_str(), Some("job" | "log")))
        {
            return r;
        }
    }
}

/// Job messages about `id` until one is terminal.
async fn job_messages_until_finished(socket: &mut Socket, id: &str) -> Vec<Value> {
    messages_until_finished(socket, id)
        .await
        .into_iter()
        .filter(|m| m["type"] == "job" && m["job"]["id"] == id)
        .map(|m| m["job"].clone())
        .collect()
}

/// Every message the socket gets, about any job, until one says `id` is terminal.
async fn messages_until_finished(socket: &mut Socket, id: &str) -> Vec<Value> {
    let mut seen = vec![];
    loop {
        let messages = next_messages(socket, WAIT)
            .await
            .unwrap_or_else(|| panic!("the job finished within {WAIT:?}; saw {seen:#?}"));
        for m in messages {
            let done = m["type"] == "job"
                && m["job"]["id"] == id
                && crate::helpers::is_terminal(&m["job"]);
            seen.push(m);
            if done {
                return seen;
            }
        }
    }
}

/// The tenant a job or log message is about (a log line names its job only: `tenant_of` maps
/// job ids to tenants).
fn tenant_of<'a>(m: &Value, tenants: &'a [(String, &'a str)]) -> &'a str {
    let id = m["job"]["id"]
        .as_str()
        .or(m["job_id"].as_str())
        .unwrap_or("");
    tenants
        .iter()
        .find(|(job, _)| job == id)
        .map(|(_, t)| *t)
        .unwrap_or_else(|| panic!("a message about a job no tenant submitted here: {m}"))
}

/// The job states in order, a repeat of the one before left out.
fn distinct(jobs: &[Value]) -> Vec<Value> {
    let mut out: Vec<Value> = vec![];
    for j in jobs {
        if out.last() != Some(j) {
            out.push(j.clone());
        }
    }
    out
}

fn statuses(jobs: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for j in jobs {
        let s = j["status"].as_str().unwrap().to_string();
        if out.last() != Some(&s) {
            out.push(s);
        }
    }
    out
}

#[tokio::test]
async fn a_subscriber_sees_every_change_of_a_job_in_order() {
    // GIVEN a client subscribed to a sleep job that waits a moment before it runs
    let app = spawn_app(&[]).await;
    let mut socket = connect(&app, &token(TENANT, &["reader"])).await;
    let id = app
        .submit_new(&json!({ "type": "sleep", "payload": { "ms": 1000 }, "delay_seconds": 1 }))
        .await;
    send(&mut socket, json!({ "action": "subscribe", "job_id": id })).await;
    let subscribed = reply(&mut socket).await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    assert_eq!(subscribed["job"]["status"], "queued", "{subscribed}");

    // WHEN it runs to the end
    let mut jobs = vec![subscribed["job"].clone()];
    jobs.extend(job_messages_until_finished(&mut socket, &id).await);

    // THEN the client saw queued → running → succeeded, progress rising while it ran, and
    // never an older state after a newer one
    assert_eq!(
        statuses(&jobs),
        ["queued", "running", "succeeded"],
        "{jobs:#?}"
    );
    let progress: Vec<u64> = jobs
        .iter()
        .filter(|j| j["status"] == "running")
        .filter_map(|j| j["progress"]["percent"].as_u64())
        .collect();
    assert!(progress.len() >= 3, "progress came as it moved: {jobs:#?}");
    assert!(progress.windows(2).all(|w| w[0] < w[1]), "{progress:?}");
    let versions: Vec<u64> = jobs
        .iter()
        .map(|j| j["version"].as_u64().unwrap())
        .collect();
    assert!(versions.windows(2).all(|w| w[0] <= w[1]), "{versions:?}");
    assert_eq!(jobs.last().unwrap()["status"], "succeeded");
}

#[tokio::test]
async fn nothing_comes_after_unsubscribe() {
    // GIVEN a client subscribed to a running job, which has seen it run
    let app = spawn_app(&[]).await;
    let mut socket = connect(&app, &token(TENANT, &["reader"])).await;
    let id = app
        .submit_new(&json!({ "type": "sleep", "payload": { "ms": 1500 } }))
        .await;
    send(&mut socket, json!({ "action": "subscribe", "job_id": id })).await;
    assert_eq!(reply(&mut socket).await["type"], "subscribed");

    // WHEN it unsubscribes
    send(
        &mut socket,
        json!({ "action": "unsubscribe", "job_id": id }),
    )
    .await;
    let mut answer = None;
    while answer.is_none() {
        let messages = next_messages(&mut socket, WAIT).await.expect("an answer");
        answer = messages.into_iter().find(|m| m["type"] == "unsubscribed");
    }
    let unsubscribed_at = chrono::Utc::now();

    // THEN, while the job goes on to succeed, no change made after that arrives (one made
    // before it, already on its way, may)
    app.wait_for_status(&id, status_is("succeeded"), WAIT).await;
    while let Some(late) = next_messages(&mut socket, Duration::from_millis(500)).await {
        for m in late {
            let changed: chrono::DateTime<chrono::Utc> =
                m["job"]["updated_at"].as_str().unwrap().parse().unwrap();
            assert!(changed < unsubscribed_at, "a change after unsubscribe: {m}");
        }
    }
}

#[tokio::test]
async fn subscribing_to_all_sees_only_the_callers_tenant() {
    // GIVEN clients of two tenants, each subscribed to all of its tenant's jobs
    let app = spawn_app(&[]).await;
    let mut ours = connect(&app, &token(TENANT, &["reader"])).await;
    let mut theirs = connect(&app, &token("other", &["reader"])).await;
    for socket in [&mut ours, &mut theirs] {
        send(socket, json!({ "action": "subscribe", "all": true })).await;
        assert_eq!(reply(socket).await["type"], "subscribed");
    }

    // WHEN each tenant submits a job
    let mine = app
        .submit_new(&json!({ "type": "noop", "payload": {} }))
        .await;
    let other = app.as_caller(Some(&token("other", &["submitter"])));
    let (_, job) = other
        .post_json("/v1/jobs", &json!({ "type": "noop", "payload": {} }))
        .await;
    let theirs_id = job["id"].as_str().unwrap().to_string();

    // THEN each client sees its own tenant's job through to the end, and never the other's:
    // every message either socket gets, until a job its tenant submits after both ended has
    // ended too (the socket's messages come in order), is about its own tenant's jobs
    let mut heard_ours = messages_until_finished(&mut ours, &mine).await;
    let mut heard_theirs = messages_until_finished(&mut theirs, &theirs_id).await;
    let mine_after = app
        .submit_new(&json!({ "type": "noop", "payload": {} }))
        .await;
    let (_, job) = other
        .post_json("/v1/jobs", &json!({ "type": "noop", "payload": {} }))
        .await;
    let theirs_after = job["id"].as_str().unwrap().to_string();
    let tenants = [
        (mine.clone(), TENANT),
        (mine_after.clone(), TENANT),
        (theirs_id.clone(), "other"),
        (theirs_after.clone(), "other"),
    ];
    heard_ours.extend(messages_until_finished(&mut ours, &mine_after).await);
    heard_theirs.extend(messages_until_finished(&mut theirs, &theirs_after).await);
    for (heard, tenant, own) in [
        (&heard_ours, TENANT, &mine),
        (&heard_theirs, "other", &theirs_id),
    ] {
        assert!(
            heard
                .iter()
                .filter(|m| matches!(m["type"].as_str(), Some("job" | "log")))
                .all(|m| tenant_of(m, &tenants) == tenant),
            "a message of another tenant's job reached {tenant}: {heard:#?}"
        );
        let own_job: Vec<&Value> = heard
            .iter()
            .filter(|m| m["type"] == "job" && m["job"]["id"] == **own)
            .collect();
        assert_eq!(
            own_job.last().map(|m| m["job"]["status"].clone()),
            Some(json!("succeeded")),
            "{tenant} saw its first job through to the end: {heard:#?}"
        );
    }

    // AND another tenant's job cannot be subscribed to (it does not exist for this caller)
    send(
        &mut ours,
        json!({ "action": "subscribe", "job_id": theirs_id }),
    )
    .await;
    let refused = reply(&mut ours).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "not_found", "{refused}");
}

#[tokio::test]
async fn bad_frames_and_bad_credentials_get_clear_errors() {
    let app = spawn_app(&[]).await;

    // A refused credential: the upgrade is answered 401 with the API's JSON error
    let url = app.url("/ws?token=not-a-token").replace("http", "ws");
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected a 401, got {other:?}"),
    }

    // A credential as the first frame is accepted; then bad frames get typed errors
    let url = app.url("/ws").replace("http", "ws");
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    send(
        &mut socket,
        json!({ "action": "auth", "token": token(TENANT, &["reader"]) }),
    )
    .await;
    for (frame, code) in [
        ("not json".to_string(), "bad_frame"),
        (json!({ "action": "dance" }).to_string(), "unknown_action"),
        (json!({ "action": "subscribe" }).to_string(), "bad_frame"),
        (
            json!({ "action": "subscribe", "job_id": "nope" }).to_string(),
            "bad_frame",
        ),
        (
            json!({ "action": "subscribe", "job_id": ulid::Ulid::new().to_string() }).to_string(),
            "not_found",
        ),
    ] {
        socket
            .send(Message::Text(frame.clone().into()))
            .await
            .unwrap();
        let answer = reply(&mut socket).await;
        assert_eq!(answer["type"], "error", "{frame}: {answer}");
        assert_eq!(answer["code"], code, "{frame}: {answer}");
    }
}

/// A client whose socket reads into a tiny buffer and then stops reading.
async fn connect_small(app: &TestApp, credential: &str) -> Socket {
    let addr: std::net::SocketAddr = app
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let url = app
        .url(&format!("/ws?token={credential}"))
        .replace("http", "ws");
    tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
        .await
        .unwrap()
        .0
}

/// Enough changes (about 2 KB each job) to fill the client's socket buffers (the kernel keeps
/// up to 4 MB for a socket here) and then its outbox many times over.
const JOBS: usize = 5000;

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_the_others_keep_receiving() {
    // (The local gateway's own behaviour, the same whatever the backend: run on the embedded
    // one, and left out of the suite's AWS pass by name. On AWS, API Gateway holds the sockets.)
    // GIVEN two clients subscribed to all jobs; one stops reading, and may have few waiting
    let app = spawn_app_with(&[("CONVEYOR_WS_OUTBOX", "512")]).await;
    let reader = token(TENANT, &["reader"]);
    let mut slow = connect_small(&app, &reader).await;
    let mut fast = connect(&app, &reader).await;
    for socket in [&mut slow, &mut fast] {
        send(socket, json!({ "action": "subscribe", "all": true })).await;
        assert_eq!(reply(socket).await["type"], "subscribed");
    }

    // WHEN many jobs run
    let reading = tokio::spawn(async move {
        let mut succeeded = 0;
        while let Some(messages) = next_messages(&mut fast, Duration::from_secs(10)).await {
            succeeded += messages
                .iter()
                .filter(|m| m["job"]["status"] == "succeeded")
                .count();
            if succeeded == JOBS {
                break;
            }
        }
        succeeded
    });
    futures::future::join_all((0..8).map(|_| async {
        for _ in 0..JOBS / 8 {
            app.submit_new(&json!({ "type": "noop", "payload": {} }))
                .await;
        }
    }))
    .await;

    // THEN the reading client sees every job succeed
    let succeeded = tokio::time::timeout(Duration::from_secs(60), reading)
        .await
        .expect("the reader kept receiving")
        .unwrap();
    assert_eq!(succeeded, JOBS);

    // AND the one that stopped reading was dropped: after what was buffered, it is closed
    // with a `too_slow` error
    let mut last = None;
    while let Some(messages) = next_messages(&mut slow, Duration::from_secs(10)).await {
        last = messages.last().cloned();
    }
    let last = last.expect("it got something before it was dropped");
    assert_eq!(last["code"], "too_slow", "{last}");
}

/// Server-sent events of `/v1/events?{query}`, read until `done` says stop: (id, message).
async fn read_events(
    app: &TestApp,
    query: &str,
    last_event_id: Option<&str>,
    done: impl Fn(&Value) -> bool,
) -> Vec<(String, Value)> {
    let mut request = app.client.get(app.url(&format!("/v1/events?{query}")));
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut body = response.bytes_stream();
    let (mut buffer, mut events) = (String::new(), vec![]);
    loop {
        let chunk = tokio::time::timeout(WAIT, body.next())
            .await
            .expect("events keep coming")
            .expect("the stream stays open")
            .unwrap();
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let (mut id, mut data) = (None, None);
            for line in event.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_string());
                }
                if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str::<Value>(v).unwrap());
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                let stop = done(&data);
                events.push((id, data));
                if stop {
                    return events;
                }
            }
        }
    }
}

#[tokio::test]
async fn server_sent_events_resume_after_a_disconnect_without_gaps() {
    // GIVEN a WebSocket subscriber and an SSE reader of the same sleep job
    let app = spawn_app(&[]).await;
    let mut socket = connect(&app, &token(TENANT, &["reader"])).await;
    let id = app
        .submit_new(&json!({ "type": "sleep", "payload": { "ms": 2000 }, "delay_seconds": 1 }))
        .await;
    send(&mut socket, json!({ "action": "subscribe", "job_id": id })).await;
    let subscribed = reply(&mut socket).await;

    // WHEN the SSE reader leaves once the job runs, and comes back with Last-Event-ID
    let query = format!("job_id={id}");
    let first = read_events(&app, &query, None, |m| m["job"]["status"] == "running").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let last_id = first.last().unwrap().0.clone();
    let second = read_events(&app, &query, Some(&last_id), |m| {
        m["job"]["status"] == "succeeded"
    })
    .await;

    // THEN between them the SSE reader got every change the WebSocket client got, in the
    // same order: nothing was lost while it was away
    let mut over_sse: Vec<Value> = first
        .iter()
        .chain(&second)
        .map(|(_, m)| m.clone())
        .collect();
    over_sse.retain(|m| m["type"] == "job");
    let mut over_ws = vec![subscribed["job"].clone()];
    over_ws.extend(job_messages_until_finished(&mut socket, &id).await);
    let sse_jobs: Vec<Value> = over_sse.iter().map(|m| m["job"].clone()).collect();
    // (A state may come twice, as a subscription's snapshot and again from the feed: the
    // distinct states are compared, in order.)
    assert_eq!(distinct(&sse_jobs), distinct(&over_ws));
    assert!(
        second.len() >= 3,
        "the changes while away came on return: {second:#?}"
    );
    assert_eq!(statuses(&sse_jobs), ["queued", "running", "succeeded"]);
}

#[tokio::test]
async fn polling_by_updated_since_sees_each_change() {
    // GIVEN a time before a job is submitted
    let app = spawn_app(&[]).await;
    let since = chrono::Utc::now() - chrono::Duration::seconds(1);
    let id = app
        .submit_new(&json!({ "type": "noop", "payload": {} }))
        .await;
    app.wait_for_status(&id, status_is("succeeded"), WAIT).await;

    // WHEN a client polls for jobs changed since then
    let path = format!(
        "/v1/jobs?updated_since={}",
        since.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    );
    let (status, page) = app.get(&path.replace('+', "%2B")).await;

    // THEN it gets the job as it is now, and where to poll from next
    assert_eq!(status, 200, "{page}");
    let jobs = page["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{page}");
    assert_eq!(jobs[0]["status"], "succeeded");
    let next = page["next_updated_since"].as_str().unwrap();
    let updated_at = jobs[0]["updated_at"].as_str().unwrap();
    assert!(
        updated_at.starts_with(next.trim_end_matches('Z')),
        "{next} {updated_at}"
    );

    // AND a poll from there has nothing newer than what it saw (a repeat, told by version)
    let (_, again) = app.get(&format!("/v1/jobs?updated_since={next}")).await;
    let again = again["jobs"].as_array().unwrap();
    assert!(again
        .iter()
        .all(|j| j["id"] == id && j["version"] == jobs[0]["version"]));

    // AND a time that is not one is a 400 naming the field
    let (status, body) = app.get("/v1/jobs?updated_since=yesterday").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["field"], "updated_since");
}
