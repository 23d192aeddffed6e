//! The harness: `spawn_app` starts the real local runtime as a process on its own data
//! directory and a free port and talks to it over HTTP; `TestServer` is a scripted HTTP target
//! on 127.0.0.1 for `http.fetch` and `webhook.deliver` that records every request it gets.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The signing secret every test runtime gets (unless a test overrides it).
pub const WEBHOOK_SECRET: &str = "test-webhook-master-key-of-32-bytes-or-more";

/// The JWT secret every test runtime gets: the suite calls the API as a real client would, with
/// a token (`TestApp::client` sends one for tenant `default`, roles submitter).
pub const JWT_SECRET: &str = "test-jwt-secret-of-thirty-two-bytes-or-more";

/// The tenant the suite's client acts for.
pub const TENANT: &str = "default";

/// Short timings so that stall and orphan handling happen within a test, yet generous enough
/// (30 heartbeats per stall window) that a loaded machine never makes a live job look stalled;
/// and the test servers' address (127.0.0.1) allowed for outbound calls, and nothing else inner.
const TEST_TIMINGS: [(&str, &str); 8] = [
    ("CONVEYOR_JWT_SECRET", JWT_SECRET),
    ("CONVEYOR_OUTBOUND_ALLOW", "127.0.0.1/32"),
    ("CONVEYOR_HEARTBEAT_INTERVAL", "200ms"),
    ("CONVEYOR_STALL_AFTER", "6s"),
    ("CONVEYOR_ORPHAN_AFTER", "6s"),
    ("CONVEYOR_MAINTENANCE_INTERVAL", "250ms"),
    ("CONVEYOR_SHUTDOWN_GRACE", "5s"),
    ("CONVEYOR_WEBHOOK_SECRET", WEBHOOK_SECRET),
];

const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
const POLL_EVERY: Duration = Duration::from_millis(25);

/// One runtime process and a client for its API. Dropping it kills the process (SIGKILL) and
/// removes its data directory; if the test is failing, the runtime's log is printed first.
pub struct TestApp {
    /// `http://127.0.0.1:PORT` of the current process (a restart gets a new port).
    pub address: String,
    pub client: reqwest::Client,
    child: Option<Child>,
    env: Vec<(String, String)>,
    root: TempDir,
}

/// The backend the suite runs the runtime on: `CONVEYOR_TEST_E2E_BACKEND=aws` runs every
/// runtime test with `CONVEYOR_BACKEND=aws` against the emulator (LocalStack in CI, or moto),
/// each app with a table, bus and queues of its own; otherwise the embedded backend.
pub fn on_aws() -> bool {
    std::env::var("CONVEYOR_TEST_E2E_BACKEND").is_ok_and(|b| b == "aws")
}

/// How much longer the crash tests' jobs run on the AWS backend: a snapshot of a few hundred
/// jobs through an emulator takes a second or two, and the moment it looks for (jobs running
/// when the kill comes) must outlast it.
pub fn slower_on_aws(ms: u64) -> u64 {
    if on_aws() {
        ms * 4
    } else {
        ms
    }
}

/// The settings that put one app on the AWS backend, with resources no other app shares.
pub fn aws_env() -> Vec<(String, String)> {
    // (a maintenance sweep queries every shard of the `due` index: one, not 64, for runtimes
    // that sweep four times a second on an emulator that serves one request at a time; the
    // spread itself is the contract suite's to check)
    crate::aws::aws_env("e", 1)
}

/// Start the runtime with the test timings, overridden or extended by `env`, on the suite's
/// backend (see [`on_aws`]).
pub async fn spawn_app(env: &[(&str, &str)]) -> TestApp {
    if on_aws() {
        return spawn_app_on_aws(env).await;
    }
    spawn_app_with(env).await
}

/// Start the runtime on the AWS backend whatever the suite's (on the suite's emulator: moto,
/// or the one `CONVEYOR_TEST_AWS_ENDPOINT` names), with `env` over the test timings.
pub async fn spawn_app_on_aws(env: &[(&str, &str)]) -> TestApp {
    let aws = aws_env();
    let mut all: Vec<(&str, &str)> = aws.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    all.extend_from_slice(env);
    spawn_app_with(&all).await
}

/// Start the runtime with exactly the test timings and `env` (no backend chosen for it).
pub async fn spawn_app_with(env: &[(&str, &str)]) -> TestApp {
    let root = tempfile::Builder::new()
        .prefix("conveyor-e2e-")
        .tempdir()
        .expect("a temporary directory");
    let mut app = TestApp {
        address: String::new(),
        client: client_for(Some(&token(TENANT, &["submitter"]))),
        child: None,
        env: TEST_TIMINGS
            .iter()
            .chain(env)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        root,
    };
    app.start().await;
    app
}

/// A JWT for `tenant` with `roles`, signed with the suite's secret, valid for an hour.
pub fn token(tenant: &str, roles: &[&str]) -> String {
    let roles: Vec<shared::domain::Role> = roles
        .iter()
        .map(|r| shared::domain::Role::parse(r).expect("a role name"))
        .collect();
    shared::auth::issue_token(
        JWT_SECRET,
        &shared::domain::Tenant::parse(tenant).expect("a tenant name"),
        "e2e",
        &roles,
        Duration::from_secs(3600),
        None,
        None,
        chrono::Utc::now(),
    )
    .expect("a token")
}

/// An HTTP client that sends `Authorization: Bearer <credential>` on every request (or none).
pub fn client_for(credential: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(credential) = credential {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {credential}")
                .parse()
                .expect("a header value"),
        );
    }
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .default_headers(headers)
        .build()
        .expect("HTTP client")
}

impl TestApp {
    /// The same app, called with another credential (or none).
    pub fn as_caller(&self, credential: Option<&str>) -> Caller<'_> {
        Caller {
            app: self,
            client: client_for(credential),
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// A setting this app's runtime was started with.
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A file in the runtime's data directory.
    pub fn data_path(&self, name: &str) -> PathBuf {
        self.data_dir().join(name)
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.path().join("runtime.log")
    }

    /// Start a process on this app's data directory and read the address it prints.
    async fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("runtime log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_conveyor-under-test"));
        // Hermetic: nothing from the caller's environment configures the runtime or routes its
        // requests to 127.0.0.1 through a proxy.
        for (name, _) in std::env::vars() {
            if name.starts_with("CONVEYOR_") || name.to_ascii_lowercase().ends_with("_proxy") {
                cmd.env_remove(name);
            }
        }
        cmd.env("CONVEYOR_ADDR", "127.0.0.1:0")
            .env("CONVEYOR_DATA_DIR", self.data_dir())
            .env("RUST_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("the runtime binary starts");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let first = tokio::time::timeout(STARTUP_TIMEOUT, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no address line within {STARTUP_TIMEOUT:?}"))
            .expect("reading the runtime's stdout");
        let Some(line) = first else {
            let status = child.wait().await;
            panic!(
                "the runtime exited before listening ({status:?}); its log:\n{}",
                self.log_tail()
            );
        };
        // `conveyor listening on http://ADDR (backend …)`
        self.address = line
            .strip_prefix("conveyor listening on ")
            .and_then(|rest| rest.split_once(" (backend "))
            .map(|(url, _)| url.to_string())
            .unwrap_or_else(|| panic!("unexpected first line from the runtime: {line:?}"));
        // Keep the pipe drained so the runtime never blocks on a write to stdout.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
    }

    /// SIGKILL the process and reap it: no graceful shutdown, no final writes.
    pub async fn kill9(&mut self) {
        let mut child = self.child.take().expect("the runtime is running");
        child.kill().await.expect("SIGKILL the runtime");
    }

    /// SIGTERM the process (what Ctrl-C or a service manager sends) and wait for it to exit.
    pub async fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the runtime is running");
        let pid = child.id().expect("a running process has a pid");
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("the kill command runs");
        assert!(sent.success(), "SIGTERM could not be sent");
        tokio::time::timeout(within, child.wait())
            .await
            .unwrap_or_else(|_| panic!("the runtime did not exit within {within:?} of SIGTERM"))
            .expect("waiting for the runtime")
    }

    /// Start a new process on the same data directory (killing the old one if still running).
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            self.kill9().await;
        }
        self.start().await;
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Send a request and read its JSON answer.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.expect("the API answers");
        let status = response.status();
        let text = response.text().await.expect("a response body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("answer {status} is not JSON ({e}): {text:?}"));
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.client.get(self.url(path))).await
    }

    /// POST with an empty body (cancel, retry).
    pub async fn post(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.client.post(self.url(path))).await
    }

    pub async fn submit(&self, body: &Value) -> (StatusCode, Value) {
        self.send(self.client.post(self.url("/v1/jobs")).json(body))
            .await
    }

    /// Submit a job that must be accepted as new (202); its id.
    pub async fn submit_new(&self, body: &Value) -> String {
        let (status, job) = self.submit(body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "submit {body}: {job}");
        job["id"].as_str().expect("the job has an id").to_string()
    }

    pub async fn get_job(&self, id: &str) -> Value {
        let (status, job) = self.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(status, StatusCode::OK, "GET job {id}: {job}");
        job
    }

    pub async fn cancel(&self, id: &str) -> (StatusCode, Value) {
        self.post(&format!("/v1/jobs/{id}/cancel")).await
    }

    pub async fn retry(&self, id: &str) -> (StatusCode, Value) {
        self.post(&format!("/v1/jobs/{id}/retry")).await
    }

    /// The job's log as `(attempt, line)`, in order.
    pub async fn logs(&self, id: &str) -> Vec<(u64, String)> {
        let (status, body) = self.get(&format!("/v1/jobs/{id}/logs")).await;
        assert_eq!(status, StatusCode::OK, "GET logs {id}: {body}");
        body["logs"]
            .as_array()
            .expect("logs is an array")
            .iter()
            .map(|l| {
                (
                    l["attempt"].as_u64().expect("attempt"),
                    l["line"].as_str().expect("line").to_string(),
                )
            })
            .collect()
    }

    pub async fn stats(&self) -> Value {
        let (status, body) = self.get("/v1/stats").await;
        assert_eq!(status, StatusCode::OK, "GET stats: {body}");
        body
    }

    /// `GET /v1/stats` once `done` holds of it (panics if it does not within 15 s): on the AWS
    /// backend the counts are kept from the table's stream, a second or so behind the jobs.
    pub async fn stats_when(&self, done: impl Fn(&Value) -> bool) -> Value {
        self.stats_when_within(Duration::from_secs(15), done).await
    }

    /// `stats_when`, waiting up to `within`.
    pub async fn stats_when_within(
        &self,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + within;
        loop {
            let stats = self.stats().await;
            if done(&stats) {
                return stats;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the counts did not reach the awaited state within {within:?}; last seen: {stats:#}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `GET /v1/stats` once whatever was written before has reached the counts.
    pub async fn settled_stats(&self) -> Value {
        if on_aws() {
            tokio::time::sleep(Duration::from_millis(2500)).await;
        }
        self.stats().await
    }

    /// One page of `GET /v1/jobs?{query}`.
    pub async fn list(&self, query: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/jobs?{query}")).await;
        assert_eq!(status, StatusCode::OK, "GET /v1/jobs?{query}: {body}");
        body
    }

    /// Every job the list returns for `query`, following `next_cursor` to the end.
    pub async fn list_all(&self, query: &str) -> Vec<Value> {
        let mut jobs = vec![];
        let mut cursor: Option<String> = None;
        loop {
            let page = match &cursor {
                None => self.list(query).await,
                Some(c) => self.list(&format!("{query}&cursor={c}")).await,
            };
            jobs.extend(page["jobs"].as_array().expect("jobs").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return jobs,
            }
        }
    }

    /// Submit `jobs` in one batch request, every one of them new; their ids, in order.
    pub async fn submit_batch_new(&self, jobs: &[Value]) -> Vec<String> {
        let body = serde_json::json!({ "jobs": jobs });
        let (status, body) = self
            .send(self.client.post(self.url("/v1/jobs/batch")).json(&body))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let ids: Vec<String> = body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["job"]["id"].as_str().expect("each created").to_string())
            .collect();
        assert_eq!(ids.len(), jobs.len(), "{body}");
        ids
    }

    /// Wait until the runtime has no job left to run: none queued, running or waiting (the
    /// moment after which no job starts unless another is submitted). Panics after `within`.
    pub async fn wait_until_idle(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mut busy = vec![];
            for status in ["queued", "running", "waiting", "scheduled"] {
                let page = self.list(&format!("status={status}&limit=1")).await;
                if page["jobs"].as_array().is_some_and(|j| !j.is_empty()) {
                    busy.push(page["jobs"][0].clone());
                }
            }
            if busy.is_empty() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "jobs still to run after {within:?}: {busy:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Poll the job every 25 ms until `pred` holds; its state then. Panics after `timeout`.
    pub async fn wait_for_status(
        &self,
        id: &str,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let job = self.get_job(id).await;
            if pred(&job) {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {id} did not reach the awaited state within {timeout:?}; last seen: {job:#}"
            );
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- runtime log ({}) ---\n{}\n--- end of runtime log ---",
                self.log_path().display(),
                self.log_tail()
            );
        }
    }
}

/// A `wait_for_status` predicate: the job is in `status`.
pub fn status_is(status: &'static str) -> impl Fn(&Value) -> bool {
    move |job| job["status"] == status
}

pub fn is_terminal(job: &Value) -> bool {
    matches!(
        job["status"].as_str(),
        Some("succeeded" | "failed" | "dead" | "cancelled")
    )
}

/// Assert an error answer: `{"error": {"code", "message", "field"}}`.
#[track_caller]
pub fn assert_error(
    (status, body): &(StatusCode, Value),
    expected_status: StatusCode,
    code: &str,
    field: Option<&str>,
) {
    assert_eq!(*status, expected_status, "answer: {body}");
    assert_eq!(body["error"]["code"], code, "answer: {body}");
    assert_eq!(body["error"]["field"].as_str(), field, "answer: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "an error says what is wrong: {body}"
    );
}

/// What the worker logs when an attempt fails:
/// `attempt N failed (KIND): MESSAGE; retrying in X ms` or `...; job STATUS`.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedAttempt {
    pub attempt: u64,
    pub kind: String,
    pub message: String,
    pub then: Then,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Then {
    RetryingInMs(u64),
    Ended(String),
}

impl FailedAttempt {
    pub fn parse(line: &str) -> Option<Self> {
        let rest = line.strip_prefix("attempt ")?;
        let (attempt, rest) = rest.split_once(" failed (")?;
        let (kind, rest) = rest.split_once("): ")?;
        let (message, then) = rest.rsplit_once("; ")?;
        let then = if let Some(ms) = then
            .strip_prefix("retrying in ")
            .and_then(|t| t.strip_suffix(" ms"))
        {
            Then::RetryingInMs(ms.parse().ok()?)
        } else {
            Then::Ended(then.strip_prefix("job ")?.to_string())
        };
        Some(Self {
            attempt: attempt.parse().ok()?,
            kind: kind.to_string(),
            message: message.to_string(),
            then,
        })
    }
}

/// The failed-attempt lines of a job's log, in order.
pub async fn failed_attempts(app: &TestApp, id: &str) -> Vec<FailedAttempt> {
    // A log line is written just after the change it explains (on the AWS backend a second
    // request), so a reader that has just seen the change may be ahead of it: read until the
    // log explains every attempt the job says ended without success (all of them once it has
    // ended other than succeeded; all but the last otherwise).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let job = app.get_job(id).await;
        let attempts = job["attempt"].as_u64().unwrap_or(0) as usize;
        let expected = if is_terminal(&job) && job["status"] != "succeeded" {
            attempts
        } else {
            attempts.saturating_sub(1)
        };
        let failed: Vec<FailedAttempt> = app
            .logs(id)
            .await
            .into_iter()
            .filter_map(|(attempt, line)| {
                let failed = FailedAttempt::parse(&line)?;
                assert_eq!(
                    failed.attempt, attempt,
                    "log line under its attempt: {line}"
                );
                Some(failed)
            })
            .collect();
        if failed.len() >= expected {
            return failed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the log explains {} of the {expected} failed attempts of {job:#}",
            failed.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The body `TestServer` answers with.
pub const SERVER_BODY: &str = "hello from the test server\n";

/// A request the test server received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

struct ServerState {
    script: Mutex<VecDeque<u16>>,
    then: u16,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// An HTTP server on 127.0.0.1 answering requests (any method, any path) with the scripted
/// statuses in order, then `then` forever, and recording every request.
pub struct TestServer {
    address: String,
    state: Arc<ServerState>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn answering(script: &[u16], then: u16) -> Self {
        let state = Arc::new(ServerState {
            script: Mutex::new(script.iter().copied().collect()),
            then,
            requests: Mutex::new(vec![]),
        });
        let app = axum::Router::new()
            .fallback(record_and_answer)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the test server");
        let address = format!("http://{}", listener.local_addr().expect("local address"));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("test server runs");
        });
        Self {
            address,
            state,
            task,
        }
    }

    /// Always 200.
    pub async fn ok() -> Self {
        Self::answering(&[], 200).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record_and_answer(
    State(state): State<Arc<ServerState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (axum::http::StatusCode, &'static str) {
    state.requests.lock().unwrap().push(RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into(),
                )
            })
            .collect(),
        body: body.to_vec(),
    });
    let status = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(state.then);
    (
        axum::http::StatusCode::from_u16(status).expect("a valid scripted status"),
        SERVER_BODY,
    )
}

/// Every job the listing `query` returns (all pages), by id.
pub async fn jobs_by_id(app: &TestApp, query: &str) -> BTreeMap<String, Value> {
    app.list_all(query)
        .await
        .into_iter()
        .map(|job| (job["id"].as_str().expect("id").to_string(), job))
        .collect()
}

/// How many of `jobs` are in `status`.
pub fn count_status(jobs: &BTreeMap<String, Value>, status: &str) -> usize {
    jobs.values().filter(|j| j["status"] == status).count()
}

/// Wait until the listing `query` holds `n` jobs, every one ended; they are returned.
pub async fn wait_until_all_ended(
    app: &TestApp,
    query: &str,
    n: usize,
    within: Duration,
) -> BTreeMap<String, Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let jobs = jobs_by_id(app, query).await;
        if jobs.len() == n && jobs.values().all(is_terminal) {
            return jobs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all {n} jobs ended within {within:?}: {} listed, {} queued, {} running",
            jobs.len(),
            count_status(&jobs, "queued"),
            count_status(&jobs, "running"),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An app seen by another caller: `send` and the request builders use that caller's credential.
pub struct Caller<'a> {
    pub app: &'a TestApp,
    pub client: reqwest::Client,
}

impl Caller<'_> {
    pub async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        self.app.send(request).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.client.get(self.app.url(path))).await
    }

    pub async fn post(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.client.post(self.app.url(path))).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(self.client.post(self.app.url(path)).json(body))
            .await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.client.delete(self.app.url(path))).await
    }
}
